//! The stored login: server, user and token, in a file only its owner can read.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::Api;
use crate::error::ClientError;

/// A session token closer than this to its expiry is exchanged for a new one before use.
const REFRESH_BEFORE_SECS: i64 = 7 * 24 * 3600;

/// What `dataport login` stores.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// Base URL, without a trailing `/`.
    pub server: String,
    pub user: String,
    pub token: String,
    /// Unix seconds; absent for API tokens whose expiry is not known.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("user", &self.user)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// `$DATAPORT_HOME/credentials.json`, else `$XDG_CONFIG_HOME/dataport/credentials.json`, else
/// `~/.config/dataport/credentials.json`.
pub fn credentials_path() -> Result<PathBuf, ClientError> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let dir = if let Some(home) = var("DATAPORT_HOME") {
        PathBuf::from(home)
    } else if let Some(config) = var("XDG_CONFIG_HOME") {
        PathBuf::from(config).join("dataport")
    } else if let Some(home) = var("HOME") {
        PathBuf::from(home).join(".config").join("dataport")
    } else {
        return Err(ClientError::NoConfigDir);
    };
    Ok(dir.join("credentials.json"))
}

impl Credentials {
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClientError::NotLoggedIn {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(ClientError::io(path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Credentials {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Writes the file atomically, mode 0600, in a folder only the owner can enter.
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        let body = serde_json::to_vec_pretty(self).map_err(|e| ClientError::Credentials {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        dataport_common::fs::write_private_atomic(path, &body)?;
        Ok(())
    }

    /// Forgets the login; no error when there was none.
    pub fn remove(path: &Path) -> Result<(), ClientError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ClientError::io(path, e)),
        }
    }
}

impl Credentials {
    /// The API with the stored token, refreshed first when it expires within a week (the
    /// new token is saved; a refresh that fails for a still-valid token is not an error).
    pub async fn connect(path: &Path) -> Result<(Api, Credentials), ClientError> {
        let mut creds = Credentials::load(path)?;
        let api = Api::new(&creds.server, Some(creds.token.clone()))?;
        let Some(expires_at) = creds.expires_at else {
            return Ok((api, creds));
        };
        let now = chrono::Utc::now().timestamp();
        if expires_at - now > REFRESH_BEFORE_SECS {
            return Ok((api, creds));
        }
        match api.refresh().await {
            Ok(session) => {
                creds.token = session.token;
                creds.expires_at = Some(session.expires_at);
                creds.save(path)?;
                let api = api.with_token(creds.token.clone());
                Ok((api, creds))
            }
            Err(e) if expires_at > now && !matches!(e, ClientError::Unauthorized { .. }) => {
                tracing::warn!(error = %e, "could not refresh the token; using it until it expires");
                Ok((api, creds))
            }
            Err(e) => Err(e),
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<(), ClientError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| ClientError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_credentials_round_trip_and_hide_the_token() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("home/credentials.json");
        let c = Credentials {
            server: "http://127.0.0.1:1".into(),
            user: "analyst".into(),
            token: "secret-token".into(),
            expires_at: Some(42),
        };
        c.save(&path).unwrap();
        let back = Credentials::load(&path).unwrap();
        assert_eq!(back.token, "secret-token");
        assert!(!format!("{back:?}").contains("secret-token"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let dir = std::fs::metadata(path.parent().unwrap()).unwrap();
            assert_eq!(dir.permissions().mode() & 0o777, 0o700);
        }
        Credentials::remove(&path).unwrap();
        assert!(matches!(
            Credentials::load(&path),
            Err(ClientError::NotLoggedIn { .. })
        ));
    }
}
