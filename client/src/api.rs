//! The HTTP calls the client makes, and the shapes it reads back.

use std::time::Duration;

use dataport_common::ErrorBody;
use dataport_common::sync::DocFiles;
pub use dataport_common::sync::{
    Manifest, ManifestColumn, ManifestFile, ManifestTable, RuleFile, RuleFiles, Uploaded,
};
use reqwest::{StatusCode, Url, header};
use serde::Deserialize;

use crate::error::ClientError;

/// A Dataport server, with or without a token.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// A token from `login` or `refresh`.
#[derive(Clone, Deserialize)]
pub struct Session {
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Who a token belongs to (`GET /api/v1/auth/me`).
#[derive(Debug, Clone, Deserialize)]
pub struct Me {
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Api {
    /// `server` is the HTTP API's base URL (`http://host:8080`, `https://data.example.com`).
    pub fn new(server: &str, token: Option<String>) -> Result<Self, ClientError> {
        let bad = || ClientError::BadServerUrl {
            url: server.to_string(),
        };
        let mut base = Url::parse(server.trim_end_matches('/')).map_err(|_| bad())?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad());
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("dataport-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ClientError::Http {
                url: server.to_string(),
                source,
            })?;
        Ok(Self { http, base, token })
    }

    /// The base URL as given (without a trailing `/`).
    pub fn server(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    pub fn with_token(mut self, token: String) -> Self {
        self.token = Some(token);
        self
    }

    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut parts) = url.path_segments_mut() {
            parts.pop_if_empty();
            parts.extend(segments);
        }
        url
    }

    pub(crate) fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub(crate) async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|source| ClientError::Http {
            url: self.server(),
            source,
        })?;
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| text.chars().take(300).collect());
        if status == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized { message });
        }
        Err(ClientError::Server {
            what: what.to_string(),
            status: status.as_u16(),
            message,
        })
    }

    pub(crate) async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        response: reqwest::Response,
    ) -> Result<T, ClientError> {
        response.json().await.map_err(|source| ClientError::Http {
            url: format!("{} ({what})", self.server()),
            source,
        })
    }

    /// `POST /api/v1/auth/login`.
    pub async fn login(&self, user: &str, password: &str) -> Result<Session, ClientError> {
        let url = self.url(&["api", "v1", "auth", "login"]);
        let body = serde_json::json!({"username": user, "password": password});
        let r = self
            .send(
                "the login",
                self.http.post(url).json(&body), // no token on a login
            )
            .await?;
        self.json("login", r).await
    }

    /// `POST /api/v1/auth/cli/token`: a session token for a code the browser approved
    /// ([`crate::BrowserSignIn`]), with the verifier of its challenge.
    pub async fn redeem_login_code(
        &self,
        code: &str,
        verifier: &str,
    ) -> Result<Session, ClientError> {
        let url = self.url(&["api", "v1", "auth", "cli", "token"]);
        let body = serde_json::json!({"code": code, "verifier": verifier});
        let r = self
            .send("the sign-in code", self.http.post(url).json(&body))
            .await?;
        self.json("sign-in code", r).await
    }

    /// The address of a page of the server (`path` with its query).
    pub fn page_url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.server())
    }

    /// `POST /api/v1/auth/refresh`: a new session token for the current one.
    pub async fn refresh(&self) -> Result<Session, ClientError> {
        let url = self.url(&["api", "v1", "auth", "refresh"]);
        let r = self
            .send(
                "the token refresh",
                self.request(reqwest::Method::POST, url),
            )
            .await?;
        self.json("refresh", r).await
    }

    /// `POST /api/v1/auth/logout`: revokes the token.
    pub async fn logout(&self) -> Result<(), ClientError> {
        let url = self.url(&["api", "v1", "auth", "logout"]);
        self.send("the logout", self.request(reqwest::Method::POST, url))
            .await?;
        Ok(())
    }

    /// `GET /api/v1/auth/me`.
    pub async fn me(&self) -> Result<Me, ClientError> {
        let url = self.url(&["api", "v1", "auth", "me"]);
        let r = self
            .send(
                "the identity check",
                self.request(reqwest::Method::GET, url),
            )
            .await?;
        self.json("me", r).await
    }

    /// `GET /api/v1/sync/manifest` (`all`: ignore the caller's sync settings).
    pub async fn manifest(&self, all: bool) -> Result<Manifest, ClientError> {
        let mut url = self.url(&["api", "v1", "sync", "manifest"]);
        if all {
            url.set_query(Some("all=true"));
        }
        let r = self
            .send("the manifest", self.request(reqwest::Method::GET, url))
            .await?;
        r.json().await.map_err(|e| ClientError::BadManifest {
            message: e.to_string(),
        })
    }

    /// `GET /api/v1/sync/rules`: the caller's rule files (the corporate-memory items they
    /// upvoted, and the pinned ones).
    ///
    /// `None` when the server has no rules to offer: 404 (a server older than the endpoint) or
    /// 503 (a server without corporate memory set up, which is how such a server answers).
    /// A pull then leaves `rules/` as it is. Any other refusal is an error.
    pub async fn rules(&self) -> Result<Option<RuleFiles>, ClientError> {
        let url = self.url(&["api", "v1", "sync", "rules"]);
        let r = match self
            .send("the rule files", self.request(reqwest::Method::GET, url))
            .await
        {
            Ok(r) => r,
            Err(ClientError::Server {
                status: 404 | 503,
                message,
                ..
            }) => {
                tracing::debug!(%message, "the server offers no rule files");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        self.json("rules", r).await.map(Some)
    }

    /// `GET /api/v1/sync/docs`: the caller's `docs/` files (their catalog, and a page and a
    /// profile for each table they pull; `all`: as for a pull that ignores the sync settings).
    ///
    /// `None` from a server older than the endpoint (404): a pull then leaves `docs/` as it
    /// is. Any other refusal is an error.
    pub async fn docs(&self, all: bool) -> Result<Option<DocFiles>, ClientError> {
        let mut url = self.url(&["api", "v1", "sync", "docs"]);
        if all {
            url.set_query(Some("all=true"));
        }
        let r = match self
            .send("the docs", self.request(reqwest::Method::GET, url))
            .await
        {
            Ok(r) => r,
            Err(ClientError::Server {
                status: 404,
                message,
                ..
            }) => {
                tracing::debug!(%message, "the server offers no docs");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        self.json("docs", r).await.map(Some)
    }

    /// `GET /api/v1/sync/files/{path}`, from byte `from` on when the server still has the
    /// version whose digest is `sha256` (otherwise the whole current file comes back, 200).
    pub async fn download(
        &self,
        path: &str,
        from: u64,
        sha256: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let mut segments = vec!["api", "v1", "sync", "files"];
        segments.extend(path.split('/'));
        let mut request = self.request(reqwest::Method::GET, self.url(&segments));
        if from > 0 {
            request = request
                .header(header::RANGE, format!("bytes={from}-"))
                .header(header::IF_RANGE, format!("\"{sha256}\""));
        }
        self.send(&format!("the download of {path}"), request).await
    }

    /// `POST /api/v1/sync/upload?kind=…[&name=…]`.
    pub async fn upload(
        &self,
        kind: &str,
        name: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Uploaded, ClientError> {
        let mut url = self.url(&["api", "v1", "sync", "upload"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("kind", kind);
            if let Some(n) = name {
                q.append_pair("name", n);
            }
        }
        let what = format!("the upload of {}", name.unwrap_or(kind));
        let r = self
            .send(&what, self.request(reqwest::Method::POST, url).body(body))
            .await?;
        self.json("upload", r).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_a_base_path_and_encode_file_names() {
        let api = Api::new("https://example.com/dataport/", None).unwrap();
        let mut segments = vec!["api", "v1", "sync", "files"];
        segments.extend("parquet/s/t/k=a b/x#1.parquet".split('/'));
        assert_eq!(
            api.url(&segments).as_str(),
            "https://example.com/dataport/api/v1/sync/files/parquet/s/t/k=a%20b/x%231.parquet"
        );
        assert_eq!(api.server(), "https://example.com/dataport");
        assert!(Api::new("ftp://example.com", None).is_err());
        assert!(Api::new("example.com", None).is_err());
    }
}
