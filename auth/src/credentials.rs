//! Parsing `Authorization` header values.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::AuthError;

/// What a caller presented.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic { user: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .finish_non_exhaustive(),
            Self::Bearer(_) => f.write_str("Bearer(..)"),
        }
    }
}

/// Standard base64 that accepts input with or without `=` padding: the ADBC Go driver sends
/// Basic credentials unpadded.
const BASE64_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Parse `Basic <base64(user:password)>` or `Bearer <token>` (scheme case-insensitive).
pub fn parse_authorization(value: &str) -> Result<Credentials, AuthError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASE64_ANY_PADDING
            .decode(rest)
            .map_err(|_| malformed("Basic credentials are not valid base64"))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| malformed("Basic credentials are not valid UTF-8"))?;
        let (user, password) = text
            .split_once(':')
            .ok_or_else(|| malformed("Basic credentials must be 'user:password'"))?;
        if user.is_empty() {
            return Err(malformed("the user name is empty"));
        }
        Ok(Credentials::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(malformed("the bearer token is empty"));
        }
        Ok(Credentials::Bearer(rest.to_owned()))
    } else {
        Err(malformed("the scheme must be Basic or Bearer"))
    }
}

fn malformed(reason: &str) -> AuthError {
    AuthError::Malformed {
        reason: reason.into(),
    }
}
