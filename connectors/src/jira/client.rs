//! The Jira Cloud REST API (v3) as the connector uses it: one issue with everything on it,
//! the SLA fields as a second account sees them, JQL search with paging, attachment content.
//! Basic auth (account email and API token) goes only to the configured site; requests are
//! retried by [`crate::http`]'s rule (429 with `Retry-After`, 5xx, timeouts).

use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::config::JiraFields;
use super::rows::Bundle;
use crate::error::{ConnectorError, Result};
use crate::http::{self, RetryPolicy};

/// Page size asked for comments, histories and search results.
const PAGE: usize = 100;

/// An account's credentials.
#[derive(Clone)]
pub struct Credentials {
    pub email: String,
    pub token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("email", &self.email)
            .field("token", &"***")
            .finish()
    }
}

/// A client of one Jira site.
#[derive(Debug, Clone)]
pub struct JiraClient {
    http: reqwest::Client,
    site: String,
    main: Credentials,
    sla: Option<Credentials>,
    retry: RetryPolicy,
}

/// An issue as fetched: found, or gone (deleted, moved out of reach, or never existed).
#[derive(Debug)]
pub enum Fetched {
    Found(Box<Bundle>),
    Gone,
}

/// One hit of a JQL search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub id: String,
    pub key: String,
    /// Jira's `updated`.
    pub updated: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SearchPage {
    #[serde(default)]
    issues: Vec<Value>,
    #[serde(default, rename = "nextPageToken")]
    next_page_token: Option<String>,
    #[serde(default, rename = "isLast")]
    is_last: Option<bool>,
}

impl JiraClient {
    pub fn new(
        site: &str,
        main: Credentials,
        sla: Option<Credentials>,
        retry: RetryPolicy,
        timeout: Duration,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(30))
            .user_agent(concat!("dataport/", env!("CARGO_PKG_VERSION")))
            // Redirects (attachment content goes to Atlassian's media store) never carry our
            // Authorization header to another host: reqwest drops it on a cross-origin hop.
            .build()
            .map_err(|e| ConnectorError::Unreachable {
                url: site.to_string(),
                message: format!("cannot create the HTTP client: {e}"),
            })?;
        Ok(Self {
            http,
            site: site.trim_end_matches('/').to_string(),
            main,
            sla,
            retry,
        })
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    fn api(&self, path: &str) -> String {
        format!("{}/rest/api/3/{path}", self.site)
    }

    async fn get_json(
        &self,
        url: &str,
        query: &[(&str, String)],
        as_: &Credentials,
    ) -> Result<Value> {
        let mut full = url::Url::parse(url).map_err(|e| ConnectorError::Config {
            source_name: self.site.clone(),
            message: format!("'{url}' is not a URL: {e}"),
        })?;
        if !query.is_empty() {
            full.query_pairs_mut().extend_pairs(query);
        }
        let body = http::send(&self.retry, url, || {
            self.http
                .get(full.clone())
                .basic_auth(&as_.email, Some(&as_.token))
                .header(reqwest::header::ACCEPT, "application/json")
        })
        .await?;
        serde_json::from_slice(&body).map_err(|e| ConnectorError::Protocol {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    /// The account the client acts as (a connection test).
    pub async fn myself(&self) -> Result<Value> {
        self.get_json(&self.api("myself"), &[], &self.main).await
    }

    /// The issue `key_or_id` with every comment, history and remote link, and the SLA fields
    /// from the SLA account if there is one. Attachments are not downloaded here.
    pub async fn issue(&self, key_or_id: &str, fields: &JiraFields) -> Result<Fetched> {
        let url = self.api(&format!("issue/{key_or_id}"));
        let query = [
            ("expand", "renderedFields,changelog".to_string()),
            ("fields", "*all".to_string()),
        ];
        let mut issue = match self.get_json(&url, &query, &self.main).await {
            Ok(v) => v,
            Err(ConnectorError::Http { status: 404, .. }) => return Ok(Fetched::Gone),
            Err(e) => return Err(e),
        };
        let key = issue
            .get("key")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ConnectorError::Protocol {
                url: url.clone(),
                message: "an issue without a key".into(),
            })?;
        // The rendered HTML is not kept: it doubles the snapshot and no column uses it.
        if let Some(o) = issue.as_object_mut() {
            o.remove("renderedFields");
        }
        let comments = self.comments(&key, &mut issue).await?;
        let histories = self.histories(&key, &mut issue).await?;
        let remote_links = match self
            .get_json(
                &self.api(&format!("issue/{key}/remotelink")),
                &[],
                &self.main,
            )
            .await?
        {
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        let sla = match &self.sla {
            Some(account) if !fields.sla().is_empty() => {
                let answer = self
                    .get_json(&url, &[("fields", fields.sla().join(","))], account)
                    .await;
                match answer {
                    Ok(v) => Some(v.get("fields").cloned().unwrap_or(Value::Null)),
                    Err(ConnectorError::Http { status: 404, .. }) => return Ok(Fetched::Gone),
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        Ok(Fetched::Found(Box::new(Bundle {
            issue,
            comments,
            histories,
            remote_links,
            sla,
            attachments: Default::default(),
        })))
    }

    /// Only the SLA fields (the SLA account's, or the main account's view).
    pub async fn sla_fields(&self, key: &str, fields: &JiraFields) -> Result<Option<Value>> {
        let account = self.sla.as_ref().unwrap_or(&self.main);
        let url = self.api(&format!("issue/{key}"));
        match self
            .get_json(&url, &[("fields", fields.sla().join(","))], account)
            .await
        {
            Ok(v) => Ok(Some(v.get("fields").cloned().unwrap_or(Value::Null))),
            Err(ConnectorError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether SLA fields come from a second account.
    pub fn has_sla_account(&self) -> bool {
        self.sla.is_some()
    }

    /// Every comment: those embedded in the issue, then the rest page by page.
    async fn comments(&self, key: &str, issue: &mut Value) -> Result<Vec<Value>> {
        let embedded = issue
            .get_mut("fields")
            .and_then(|f| f.get_mut("comment"))
            .map(Value::take)
            .unwrap_or(Value::Null);
        let total = embedded.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
        let mut all = take_array(embedded.get("comments"));
        let url = self.api(&format!("issue/{key}/comment"));
        self.page_in(&url, "comments", total, &mut all).await?;
        Ok(all)
    }

    /// Every changelog history: those embedded, then the rest page by page.
    async fn histories(&self, key: &str, issue: &mut Value) -> Result<Vec<Value>> {
        let embedded = issue
            .as_object_mut()
            .and_then(|o| o.remove("changelog"))
            .unwrap_or(Value::Null);
        let total = embedded.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
        let mut all = take_array(embedded.get("histories"));
        let url = self.api(&format!("issue/{key}/changelog"));
        self.page_in(&url, "values", total, &mut all).await?;
        Ok(all)
    }

    /// Reads `url?startAt=…` pages (items under `field`) until `all` holds `total` items.
    async fn page_in(
        &self,
        url: &str,
        field: &str,
        total: usize,
        all: &mut Vec<Value>,
    ) -> Result<()> {
        if all.len() >= total {
            return Ok(());
        }
        // Pages are read from the start: what was embedded may not be the first items.
        all.clear();
        while all.len() < total {
            let page = self
                .get_json(
                    url,
                    &[
                        ("startAt", all.len().to_string()),
                        ("maxResults", PAGE.to_string()),
                    ],
                    &self.main,
                )
                .await?;
            let items = take_array(page.get(field));
            if items.is_empty() {
                break;
            }
            all.extend(items);
        }
        Ok(())
    }

    /// Every issue matching `jql` (id, key, updated), page by page.
    pub async fn search(&self, jql: &str, on_page: impl FnMut(usize)) -> Result<Vec<Hit>> {
        let issues = self
            .search_issues(jql, &["updated"], false, on_page)
            .await?;
        Ok(issues
            .iter()
            .filter_map(|issue| {
                Some(Hit {
                    id: issue.get("id")?.as_str()?.to_string(),
                    key: issue.get("key")?.as_str()?.to_string(),
                    updated: issue
                        .get("fields")
                        .and_then(|f| f.get("updated"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                })
            })
            .collect())
    }

    /// The SLA fields of `keys` in one search (as the SLA account, if there is one): key →
    /// fields. Jira refuses the whole query when one key no longer exists; then each issue is
    /// read on its own and the missing ones are left out.
    pub async fn sla_of(
        &self,
        keys: &[String],
        fields: &JiraFields,
    ) -> Result<Vec<(String, Value)>> {
        if keys.is_empty() || fields.sla().is_empty() {
            return Ok(Vec::new());
        }
        let jql = format!("key in ({}) ORDER BY key ASC", keys.join(", "));
        let found = self
            .search_issues(&jql, &fields.sla(), self.sla.is_some(), |_| {})
            .await;
        match found {
            Ok(issues) => Ok(issues
                .into_iter()
                .filter_map(|mut issue| {
                    let key = issue.get("key")?.as_str()?.to_string();
                    let f = issue
                        .get_mut("fields")
                        .map(Value::take)
                        .unwrap_or(Value::Null);
                    Some((key, f))
                })
                .collect()),
            Err(ConnectorError::Http { status: 400, .. }) => {
                let mut out = Vec::new();
                for key in keys {
                    if let Some(f) = self.sla_fields(key, fields).await? {
                        out.push((key.clone(), f));
                    }
                }
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }

    /// The issues matching `jql` with `fields`, page by page (`nextPageToken`).
    async fn search_issues(
        &self,
        jql: &str,
        fields: &[&str],
        as_sla: bool,
        mut on_page: impl FnMut(usize),
    ) -> Result<Vec<Value>> {
        let url = self.api("search/jql");
        let account = match (&self.sla, as_sla) {
            (Some(sla), true) => sla,
            _ => &self.main,
        };
        let mut issues = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("jql", jql.to_string()),
                ("fields", fields.join(",")),
                ("maxResults", PAGE.to_string()),
            ];
            if let Some(t) = &token {
                query.push(("nextPageToken", t.clone()));
            }
            let value = self.get_json(&url, &query, account).await?;
            let page: SearchPage =
                serde_json::from_value(value).map_err(|e| ConnectorError::Protocol {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
            let empty = page.issues.is_empty();
            issues.extend(page.issues);
            on_page(issues.len());
            match page.next_page_token {
                Some(t) if page.is_last != Some(true) && !empty => token = Some(t),
                _ => return Ok(issues),
            }
        }
    }

    /// The content of attachment `id`, if it is at most `limit` bytes.
    pub async fn attachment(&self, id: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        // Built from the id, never from a URL in an answer: credentials go only to the site.
        let url = self.api(&format!("attachment/content/{id}"));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.download_once(&url, limit).await;
            match result {
                Err(ConnectorError::Http { status, .. })
                    if http::retryable(
                        reqwest::StatusCode::from_u16(status).unwrap_or_default(),
                    ) && attempt < self.retry.attempts =>
                {
                    tokio::time::sleep(self.retry.delay(attempt, None)).await;
                }
                Err(ConnectorError::Unreachable { .. }) if attempt < self.retry.attempts => {
                    tokio::time::sleep(self.retry.delay(attempt, None)).await;
                }
                other => return other,
            }
        }
    }

    async fn download_once(&self, url: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let response = self
            .http
            .get(url)
            .basic_auth(&self.main.email, Some(&self.main.token))
            .send()
            .await
            .map_err(|e| ConnectorError::Unreachable {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(http::http_error(url, status, &body));
        }
        if response.content_length().is_some_and(|n| n > limit) {
            return Ok(None);
        }
        let mut stream = response.bytes_stream();
        let mut content = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ConnectorError::Unreachable {
                url: url.to_string(),
                message: format!("download interrupted: {e}"),
            })?;
            if (content.len() + chunk.len()) as u64 > limit {
                return Ok(None);
            }
            content.extend_from_slice(&chunk);
        }
        Ok(Some(content))
    }
}

fn take_array(v: Option<&Value>) -> Vec<Value> {
    v.and_then(Value::as_array).cloned().unwrap_or_default()
}
