//! What a webhook must prove before it is stored: its signature (HMAC-SHA256 of the raw body
//! with the shared secret, compared in constant time) and, for every issue key it names, a
//! key that cannot be anything but a key (so no path built from it leaves its folder).

use hmac::{KeyInit, Mac};
use sha2::Sha256;

/// The signature headers Jira sends (the second is what other senders use).
pub const SIGNATURE_HEADERS: [&str; 2] = ["x-hub-signature", "x-hub-signature-256"];

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Malformed,
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Missing => "the webhook carries no X-Hub-Signature header",
            Self::Malformed => {
                "the webhook's signature is not a hex HMAC-SHA256 (optionally prefixed sha256=)"
            }
            Self::Mismatch => "the webhook's signature does not match its body and the secret",
        })
    }
}

/// Checks `signature` (a header value: hex, optionally `sha256=`-prefixed) against `body`.
///
/// ```
/// use dataport_connectors::jira::verify::{SignatureError, check_signature, sign};
///
/// let body = br#"{"webhookEvent":"jira:issue_created"}"#;
/// let signature = format!("sha256={}", sign(b"s3cret", body));
/// assert_eq!(check_signature(b"s3cret", body, Some(&signature)), Ok(()));
/// assert_eq!(check_signature(b"other", body, Some(&signature)), Err(SignatureError::Mismatch));
/// assert_eq!(check_signature(b"s3cret", body, None), Err(SignatureError::Missing));
/// ```
pub fn check_signature(
    secret: &[u8],
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    let value = signature.map(str::trim).ok_or(SignatureError::Missing)?;
    let hex_part = match value.split_once('=') {
        Some((prefix, rest)) if prefix.eq_ignore_ascii_case("sha256") => rest,
        Some(_) => return Err(SignatureError::Malformed),
        None => value,
    };
    let given = hex::decode(hex_part).map_err(|_| SignatureError::Malformed)?;
    if given.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// The hex HMAC-SHA256 of `body` under `secret` (what a sender puts in the header).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `key` is a Jira issue key: `^[A-Z][A-Z0-9_]{0,31}-\d{1,12}$`.
///
/// ```
/// use dataport_connectors::jira::verify::is_issue_key;
///
/// assert!(is_issue_key("SUP-123"));
/// assert!(is_issue_key("A_1-9"));
/// assert!(!is_issue_key("../SUP-1"));
/// assert!(!is_issue_key("sup-1"));
/// assert!(!is_issue_key("SUP-1/.."));
/// ```
pub fn is_issue_key(key: &str) -> bool {
    let Some((project, number)) = key.split_once('-') else {
        return false;
    };
    let mut chars = project.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && project.len() <= 32
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && (1..=12).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `id` is a Jira numeric id (issue, attachment, comment): 1 to 18 digits.
pub fn is_numeric_id(id: &str) -> bool {
    (1..=18).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_with_and_without_prefix_and_in_either_case() {
        let body = b"{}";
        let hex = sign(b"k", body);
        assert_eq!(check_signature(b"k", body, Some(&hex)), Ok(()));
        assert_eq!(
            check_signature(b"k", body, Some(&format!("sha256={hex}"))),
            Ok(())
        );
        assert_eq!(
            check_signature(b"k", body, Some(&format!("SHA256={}", hex.to_uppercase()))),
            Ok(())
        );
        assert_eq!(
            check_signature(b"k", body, Some(&format!("sha1={hex}"))),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check_signature(b"k", body, Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check_signature(b"k", body, Some(&hex[..40])),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check_signature(b"k", b"{ }", Some(&hex)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn keys_are_exactly_the_pattern() {
        for good in [
            "SUP-1",
            "A-123456789012",
            "ENG_2-7",
            &format!("{}-1", "A".repeat(32)),
        ] {
            assert!(is_issue_key(good), "{good}");
        }
        for bad in [
            "",
            "SUP",
            "SUP-",
            "-1",
            "1SUP-1",
            "SUP-1-2",
            "SUP-1234567890123",
            "SUP-１",
            "SUP-1\n",
            "SUP-1/",
            "../SUP-1",
            "SUP-..",
            &format!("{}-1", "A".repeat(33)),
        ] {
            assert!(!is_issue_key(bad), "{bad:?}");
        }
    }
}
