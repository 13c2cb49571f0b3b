//! `dataport login` through the browser, for accounts that sign in with an identity provider
//! and have no password: the loopback redirect of RFC 8252. The command line listens on
//! `127.0.0.1` (a free port), sends the browser to the server's approval page with that port,
//! a random `state` and a PKCE challenge, and waits for the browser to come back to
//! `http://127.0.0.1:<port>/callback` with a one-time code, which it redeems with the verifier.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::api::{Api, Session};
use crate::error::ClientError;

/// A sign-in under way: open [`BrowserSignIn::url`] in a browser, then [`BrowserSignIn::finish`].
pub struct BrowserSignIn {
    listener: TcpListener,
    state: String,
    verifier: String,
    url: String,
}

impl std::fmt::Debug for BrowserSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserSignIn")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn random(bytes: usize) -> Result<String, ClientError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| ClientError::BrowserSignIn {
        message: format!("the operating system's random source failed: {e}"),
    })?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

fn failed(message: impl Into<String>) -> ClientError {
    ClientError::BrowserSignIn {
        message: message.into(),
    }
}

impl BrowserSignIn {
    /// Listens on a free loopback port and makes the approval page's address on `api`'s server.
    pub async fn start(api: &Api) -> Result<Self, ClientError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| failed(format!("cannot listen on 127.0.0.1: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| failed(format!("cannot listen on 127.0.0.1: {e}")))?
            .port();
        let state = random(24)?;
        let verifier = random(32)?;
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let url = api.page_url(&format!(
            "/auth/cli?port={port}&state={state}&challenge={challenge}"
        ));
        Ok(Self {
            listener,
            state,
            verifier,
            url,
        })
    }

    /// The page to open in the browser.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Waits (at most `timeout`) for the browser to come back with a code, and redeems it.
    /// Requests to the port that are not this sign-in's answer are turned away.
    pub async fn finish(self, api: &Api, timeout: Duration) -> Result<Session, ClientError> {
        tokio::time::timeout(timeout, self.wait(api))
            .await
            .map_err(|_| {
                failed(format!(
                    "no answer from the browser within {} s",
                    timeout.as_secs()
                ))
            })?
    }

    async fn wait(&self, api: &Api) -> Result<Session, ClientError> {
        loop {
            let Ok((mut stream, _)) = self.listener.accept().await else {
                continue;
            };
            let Some(target) = read_target(&mut stream).await else {
                continue;
            };
            let Ok(url) = reqwest::Url::parse(&format!("http://127.0.0.1{target}")) else {
                respond(&mut stream, 400, "Not a sign-in answer.").await;
                continue;
            };
            if url.path() != "/callback" {
                respond(&mut stream, 404, "Not a sign-in answer.").await;
                continue;
            }
            let param = |name: &str| {
                url.query_pairs()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
            };
            if param("state").as_deref() != Some(self.state.as_str()) {
                respond(&mut stream, 400, "This answer belongs to another sign-in.").await;
                continue;
            }
            if let Some(error) = param("error") {
                respond(
                    &mut stream,
                    200,
                    "Sign-in cancelled. You can close this tab.",
                )
                .await;
                return Err(failed(format!("the browser answered {error}")));
            }
            let Some(code) = param("code") else {
                respond(&mut stream, 400, "The answer has no code.").await;
                return Err(failed("the browser's answer had no code"));
            };
            return match api.redeem_login_code(&code, &self.verifier).await {
                Ok(session) => {
                    respond(
                        &mut stream,
                        200,
                        &format!(
                            "Signed in as {}. You can close this tab and go back to the terminal.",
                            session.user
                        ),
                    )
                    .await;
                    Ok(session)
                }
                Err(e) => {
                    respond(&mut stream, 500, "The sign-in failed; see the terminal.").await;
                    Err(e)
                }
            };
        }
    }
}

/// The request target of an HTTP request's first line (`/callback?…`), read within 10 s and
/// 16 KiB.
async fn read_target(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()??;
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.lines().next()?.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) if target.starts_with('/') => Some(target.to_string()),
        _ => None,
    }
}

async fn respond(stream: &mut TcpStream, status: u16, message: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Dataport</title></head>\
         <body style=\"font-family:system-ui,sans-serif;margin:4rem auto;max-width:30rem\">\
         <h1>Dataport</h1><p>{}</p></body></html>",
        message
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    );
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/html; charset=utf-8\r\n\
         content-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}
