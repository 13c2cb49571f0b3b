//! How connectors talk to remote APIs: one retry rule for every client. Requests are retried
//! on HTTP 5xx, 429 and 408, timeouts and connection errors, with exponential backoff that
//! waits at least as long as the server's `Retry-After` asks; other answers fail at once.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::error::{ConnectorError, Result};

/// How requests are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// First retry delay; doubles each time, capped at `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured; a server asking for more fails the request.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(15),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`, at least what the server asked for.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        let backoff = (self.backoff * factor).min(self.max_backoff);
        retry_after.map_or(backoff, |r| r.max(backoff))
    }
}

/// A remote error answer, kept whole for callers that tell answers apart (a 404).
pub(crate) fn http_error(url: &str, status: StatusCode, body: &[u8]) -> ConnectorError {
    ConnectorError::Http {
        url: url.to_string(),
        status: status.as_u16(),
        message: error_message(body),
    }
}

/// Sends `request()` until it succeeds or a failure is not worth retrying; returns the
/// successful answer's body. `shown` is the URL as it may appear in errors and logs.
pub(crate) async fn send(
    policy: &RetryPolicy,
    shown: &str,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Bytes> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = attempt >= policy.attempts;
        let failure = match request().send().await {
            Ok(response) => {
                let status = response.status();
                let wait = retry_after(response.headers());
                match response.bytes().await {
                    Ok(body) if status.is_success() => return Ok(body),
                    Ok(body) => {
                        let error = http_error(shown, status, &body);
                        if !retryable(status) {
                            return Err(error);
                        }
                        if wait.is_some_and(|w| w > policy.max_retry_after) {
                            return Err(ConnectorError::Http {
                                url: shown.to_string(),
                                status: status.as_u16(),
                                message: format!(
                                    "the server asks to wait {}s before retrying, longer than this client waits",
                                    wait.unwrap_or_default().as_secs()
                                ),
                            });
                        }
                        (error, wait)
                    }
                    Err(e) => (unreachable(shown, &e), None),
                }
            }
            Err(e) => (unreachable(shown, &e), None),
        };
        let (error, wait) = failure;
        if last {
            return Err(error);
        }
        let delay = policy.delay(attempt, wait);
        tracing::debug!(url = %shown, error = %error, attempt, delay_ms = delay.as_millis() as u64, "retrying");
        tokio::time::sleep(delay).await;
    }
}

fn unreachable(shown: &str, e: &reqwest::Error) -> ConnectorError {
    ConnectorError::Unreachable {
        url: shown.to_string(),
        message: e.to_string(),
    }
}

/// `Retry-After` in seconds, or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ms = (at.timestamp_millis() - chrono::Utc::now().timestamp_millis()).max(0);
    Some(Duration::from_millis(ms as u64))
}

/// Whether a failed answer is worth another attempt.
pub(crate) fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// The message of an error answer: `{"error": …}`, `{"message": …}`, Jira's
/// `{"errorMessages": […], "errors": {field: …}}`, else the body's start.
pub(crate) fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in ["error", "message"] {
            if let Some(s) = v.get(key).and_then(|m| m.as_str()) {
                return short(s);
            }
        }
        let mut parts: Vec<String> = v
            .get("errorMessages")
            .and_then(|m| m.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(errors) = v.get("errors").and_then(|e| e.as_object()) {
            parts.extend(
                errors
                    .iter()
                    .map(|(k, m)| format!("{k}: {}", m.as_str().unwrap_or_default())),
            );
        }
        if !parts.is_empty() {
            return short(&parts.join("; "));
        }
    }
    short(&String::from_utf8_lossy(body))
}

/// At most 300 characters of `s`.
pub(crate) fn short(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A URL without its query (signed file URLs carry credentials there).
pub(crate) fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_waits_at_least_what_the_server_asks() {
        let p = RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
        };
        assert_eq!(p.delay(1, None), Duration::from_millis(100));
        assert_eq!(p.delay(3, None), Duration::from_millis(400));
        assert_eq!(p.delay(10, None), Duration::from_secs(1));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(p.delay(5, Some(Duration::ZERO)), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn jira_error_answers_are_summarised() {
        let body = br#"{"errorMessages":["Issue does not exist"],"errors":{"jql":"bad"}}"#;
        assert_eq!(error_message(body), "Issue does not exist; jql: bad");
        assert_eq!(error_message(br#"{"message":"down"}"#), "down");
        assert_eq!(error_message(b"plain"), "plain");
    }
}
