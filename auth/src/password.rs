//! Password hashing (Argon2id) and the password rules.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::AuthError;

/// Shortest accepted password.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest accepted password (hashing cost grows with it).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// The password rules: at least 8 characters with an upper-case letter, a lower-case letter
/// and a digit.
pub fn check_password_rules(password: &str) -> Result<(), AuthError> {
    let chars = password.chars().count();
    let weak = |reason: &str| {
        Err(AuthError::WeakPassword {
            reason: reason.into(),
        })
    };
    if chars < MIN_PASSWORD_LEN {
        return weak("it must have at least 8 characters");
    }
    if password.len() > MAX_PASSWORD_LEN {
        return weak("it must have at most 1024 bytes");
    }
    if !password.chars().any(char::is_uppercase) {
        return weak("it must contain an upper-case letter");
    }
    if !password.chars().any(char::is_lowercase) {
        return weak("it must contain a lower-case letter");
    }
    if !password.chars().any(|c| c.is_ascii_digit()) {
        return weak("it must contain a digit");
    }
    Ok(())
}

/// An Argon2id PHC string for `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal {
            message: format!("hashing a password: {e}"),
        })
}

/// Whether `password` matches the PHC string `hash`. A malformed hash never matches.
pub fn verify_password(hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_LEN {
        return false;
    }
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A hash of a password nobody has, checked for unknown users so that they take as long
/// as a wrong password.
pub(crate) fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        crate::random_token(16)
            .and_then(|p| hash_password(&p))
            .unwrap_or_default()
    })
}
