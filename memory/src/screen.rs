//! The sensitive-content screen: what must not reach anyone but an item's author. Secrets (by
//! the shape of well-known keys and tokens, private key blocks, passwords in URLs and
//! assignments, and long random-looking strings), and emails and phone numbers other than the
//! author's own. A finding holds the item for its author's review; the screen never says more
//! of the secret than its kind and where it is.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

/// What was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A key or token of a known service, or a private key.
    Secret,
    /// A password in a URL or an assignment.
    Password,
    /// A long string that looks random (a token of an unknown kind).
    RandomString,
    Email,
    Phone,
}

/// One finding: its kind, a name for the rule, and the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub rule: &'static str,
    pub line: usize,
}

struct Rule {
    name: &'static str,
    kind: FindingKind,
    re: Regex,
}

fn rule(name: &'static str, kind: FindingKind, pattern: &str) -> Option<Rule> {
    Regex::new(pattern).ok().map(|re| Rule { name, kind, re })
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    use FindingKind::*;
    [
        rule("aws access key", Secret, r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        rule("aws secret key", Secret, r"(?i)aws.{0,20}(?:secret|key).{0,5}[:=]\s*[A-Za-z0-9/+]{40}\b"),
        rule("github token", Secret, r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b"),
        rule("gitlab token", Secret, r"\bglpat-[A-Za-z0-9_-]{20,}\b"),
        rule("slack token", Secret, r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
        rule("slack webhook", Secret, r"https://hooks\.slack\.com/services/[A-Za-z0-9/]+"),
        rule("stripe key", Secret, r"\b[rs]k_live_[A-Za-z0-9]{16,}\b"),
        rule("google api key", Secret, r"\bAIza[0-9A-Za-z_-]{35}\b"),
        rule("anthropic key", Secret, r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
        rule("openai key", Secret, r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}"),
        rule("dataport token", Secret, r"\bdpk_[0-9a-f]{8,}_[A-Za-z0-9]{16,}"),
        rule("keboola token", Secret, r"\b\d{3,6}-\d{3,9}-[A-Za-z0-9]{30,}\b"),
        rule("telegram bot token", Secret, r"\b\d{8,10}:[A-Za-z0-9_-]{35}\b"),
        rule("json web token", Secret, r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        rule("private key", Secret, r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"),
        rule("password in url", Password, r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),
        rule(
            "password assignment",
            Password,
            r#"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token)\b\s*[:=]\s*["']?[^\s"'`]{6,}"#,
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
});

static EMAIL: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b").ok());
static PHONE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?:\+|\b00)?\d[\d ().-]{7,}\d\b").ok());
static TOKEN: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/=_-]{24,}").ok());

/// Bits per character of `s`.
fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// A string that looks like a random token: long, of letters and digits mixed, and high
/// entropy. Identifiers (`revenue_net_by_customer_region`) and hex digests of files are not.
fn looks_random(s: &str) -> bool {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let upper = s.bytes().filter(u8::is_ascii_uppercase).count();
    let lower = s.bytes().filter(u8::is_ascii_lowercase).count();
    let classes = [digits, upper, lower].iter().filter(|&&n| n > 0).count();
    classes >= 3 && digits >= 2 && entropy(s) >= 4.0
}

/// What in `text` must not reach anyone but its author (`author_emails`: the author's own
/// addresses, which may appear).
pub fn screen(text: &str, author_emails: &[&str]) -> Vec<Finding> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let mut add = |kind, rule| {
            if !found
                .iter()
                .any(|f: &Finding| f.line == line_no && f.rule == rule)
            {
                found.push(Finding {
                    kind,
                    rule,
                    line: line_no,
                });
            }
        };
        let mut secret_here = false;
        for r in RULES.iter() {
            if r.re.is_match(line) {
                add(r.kind, r.name);
                secret_here = true;
            }
        }
        if let Some(re) = EMAIL.as_ref() {
            for m in re.find_iter(line) {
                let email = m.as_str();
                // `user:password@host` and `scheme://user@host` are a URL's credentials (the
                // password rule has them), not someone's address.
                let in_url = line[..m.start()].ends_with([':', '/']);
                if !in_url && !author_emails.iter().any(|a| a.eq_ignore_ascii_case(email)) {
                    add(FindingKind::Email, "email");
                }
            }
        }
        if let Some(re) = PHONE.as_ref() {
            for m in re.find_iter(line) {
                let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
                let dateish = m.as_str().contains('-') && digits == 8;
                if (9..=15).contains(&digits) && !dateish {
                    add(FindingKind::Phone, "phone number");
                }
            }
        }
        if !secret_here && let Some(re) = TOKEN.as_ref() {
            for m in re.find_iter(line) {
                if looks_random(m.as_str()) {
                    add(FindingKind::RandomString, "random-looking string");
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real-looking secrets (made up for this test; none is valid anywhere).
    const SECRETS: &[(&str, &str)] = &[
        (
            "aws access key",
            "the loader uses AKIAIOSFODNN7EXAMPLE for s3",
        ),
        (
            "aws secret key",
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        (
            "github token",
            "export GH=ghp_16C7e42F292c6912E7710c838347Ae178B4a01ab",
        ),
        (
            "github token",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP",
        ),
        ("gitlab token", "glpat-xF3kd9LmQ2vB8nR4tY7w"),
        (
            "slack token",
            "bot token xoxb-2048-1024-AbCdEfGhIjKlMnOpQrSt",
        ),
        (
            "slack webhook",
            "post to https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXX",
        ),
        ("stripe key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        (
            "google api key",
            "key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
        ),
        (
            "anthropic key",
            "ANTHROPIC_API_KEY sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx",
        ),
        ("openai key", "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34"),
        ("dataport token", "dpk_3f9a2b7c_Zx8Qm2Lp9Rt4Vw6Yb1Nc"),
        (
            "keboola token",
            "Storage token 1234-567890-aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789ab",
        ),
        (
            "telegram bot token",
            "bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq",
        ),
        (
            "json web token",
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbmEifQ.dBjftJeZ4CVPmB92K27uhbUJU1p1r",
        ),
        ("private key", "-----BEGIN OPENSSH PRIVATE KEY-----"),
        ("private key", "-----BEGIN RSA PRIVATE KEY-----"),
        (
            "password in url",
            "postgres://etl:S3cr3t-pass@db.internal:5432/dwh",
        ),
        ("password assignment", "password: hunter2-but-longer"),
        ("password assignment", "API_KEY=\"9f8e7d6c5b4a\""),
    ];

    #[test]
    fn every_secret_of_the_corpus_is_found_by_its_rule() {
        for (rule, line) in SECRETS {
            let found = screen(line, &[]);
            assert!(
                found.iter().any(|f| f.rule == *rule),
                "{rule} not found in {line:?}: {found:?}"
            );
        }
    }

    #[test]
    fn random_looking_tokens_of_unknown_kinds_are_found() {
        let found = screen("token for the vendor: q7Xk2Lp9Vz4Rt8Wm3Nb6Hj1Yc5Fd0Ga", &[]);
        assert!(
            found.iter().any(|f| f.kind == FindingKind::RandomString),
            "{found:?}"
        );
    }

    #[test]
    fn people_are_screened_but_the_author_is_not() {
        let found = screen(
            "ask jo.novak@example.com or me (ana@corp.example)",
            &["ana@corp.example"],
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, FindingKind::Email);
        for phone in [
            "call +420 777 123 456",
            "tel. (555) 010-4477",
            "0044 20 7946 0958",
        ] {
            assert!(
                screen(phone, &[])
                    .iter()
                    .any(|f| f.kind == FindingKind::Phone),
                "{phone}"
            );
        }
    }

    #[test]
    fn credentials_in_a_url_are_a_password_not_an_email() {
        let found = screen("postgres://etl:S3cr3t-pass@db.internal.example/dwh", &[]);
        let rules: Vec<&str> = found.iter().map(|f| f.rule).collect();
        assert_eq!(rules, ["password in url"]);
    }

    #[test]
    fn ordinary_notes_pass() {
        let notes = "\
# Orders
- `orders.status` 7 means refunded; use `revenue_net_by_customer_region`.
- Data since 2024-01-31; 1,234,567 rows in lineitem, 25 nations.
- The file's sha256 is 3f9a2b7c8d1e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a.
- Dashboard: https://bi.example.com/d/revenue?from=2024-01-01
- SELECT count(*) FROM tpch.orders WHERE o_orderdate >= DATE '1998-01-01'
- The password policy asks for 12 characters.";
        assert_eq!(screen(notes, &[]), []);
    }
}
