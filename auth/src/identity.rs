//! Identities from email addresses: the login email as stored, and the username the spec
//! derives from it.

use crate::{AuthError, valid_name};

/// `email` trimmed and lower-cased, if it is an address: one `@`, a local part, a domain with
/// a dot, no spaces, at most 254 characters.
pub fn normalize_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim().to_ascii_lowercase();
    let invalid = || AuthError::InvalidInput {
        message: format!("'{email}' is not an email address like ann@example.com"),
    };
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let ok = !local.is_empty()
        && email.len() <= 254
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(email) } else { Err(invalid()) }
}

/// The username of `email` (normalized): its local part when its domain is one of the
/// organisation's `domains`, else the whole email with `@` and `.` replaced by `_` (and any
/// other character a username may not have, such as the `+` of a sub-address). When the local
/// part is `taken` (two organisation domains with the same local part) or is no valid name, the
/// whole-email form is used.
pub fn username_for(
    email: &str,
    domains: &[String],
    taken: impl Fn(&str) -> bool,
) -> Result<String, AuthError> {
    let (local, domain) = email.split_once('@').unwrap_or((email, ""));
    let full: String = email
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            _ => '_',
        })
        .collect();
    let own = domains.iter().any(|d| d.eq_ignore_ascii_case(domain));
    let name = if own && valid_name(local) && !taken(local) {
        local.to_string()
    } else {
        full
    };
    if valid_name(&name) {
        Ok(name)
    } else {
        Err(AuthError::InvalidInput {
            message: format!(
                "no username can be made of '{email}': a username is 1-64 of a-z, 0-9, '.', '_' and '-'"
            ),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_spec() {
        let org = vec!["example.com".to_string(), "example.org".to_string()];
        let none = |_: &str| false;
        assert_eq!(username_for("ann@example.com", &org, none).unwrap(), "ann");
        assert_eq!(
            username_for("bob@partner.io", &org, none).unwrap(),
            "bob_partner_io"
        );
        assert_eq!(
            username_for("j.doe@gmail.com", &org, none).unwrap(),
            "j_doe_gmail_com"
        );
        // the same local part in a second organisation domain
        let ann_taken = |n: &str| n == "ann";
        assert_eq!(
            username_for("ann@example.org", &org, ann_taken).unwrap(),
            "ann_example_org"
        );
        assert_eq!(
            username_for("ann+x@example.com", &org, none).unwrap(),
            "ann_x_example_com"
        );
    }

    #[test]
    fn emails_are_normalized_or_refused() {
        assert_eq!(
            normalize_email("  Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        for bad in [
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "a@b@c.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
