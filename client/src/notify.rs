//! Notification scripts from the analyst's side: the calls behind `dataport notify` and the
//! upload of the `notifications/` folder by `dataport push`. Answers are kept as JSON: the
//! command line shows what it needs of them and `--json` prints them whole.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::api::Api;
use crate::error::ClientError;

impl Api {
    async fn notify_call(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<Value, ClientError> {
        let mut path = vec!["api", "v1", "notify"];
        path.extend_from_slice(segments);
        let mut url = self.url(&path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self.request(method, url);
        if let Some(b) = body {
            request = request.body(b);
        }
        let response = self.send(what, request).await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        self.json(what, response).await
    }

    /// `GET /api/v1/notify/scripts`: mine, with their last runs.
    pub async fn notify_scripts(&self) -> Result<Value, ClientError> {
        self.notify_call(
            reqwest::Method::GET,
            &["scripts"],
            &[],
            None,
            "the list of your scripts",
        )
        .await
    }

    /// `PUT /api/v1/notify/scripts/{name}`.
    pub async fn put_script(&self, name: &str, content: Vec<u8>) -> Result<Value, ClientError> {
        let what = format!("the script {name}");
        self.notify_call(
            reqwest::Method::PUT,
            &["scripts", name],
            &[],
            Some(content),
            &what,
        )
        .await
    }

    /// `DELETE /api/v1/notify/scripts/{name}`.
    pub async fn delete_script(&self, name: &str) -> Result<(), ClientError> {
        let what = format!("removing the script {name}");
        self.notify_call(
            reqwest::Method::DELETE,
            &["scripts", name],
            &[],
            None,
            &what,
        )
        .await
        .map(drop)
    }

    /// `POST /api/v1/notify/scripts/{name}/run`: run it now and deliver.
    pub async fn run_script(&self, name: &str) -> Result<Value, ClientError> {
        let what = format!("the run of {name}");
        self.notify_call(
            reqwest::Method::POST,
            &["scripts", name, "run"],
            &[],
            None,
            &what,
        )
        .await
    }

    /// `POST /api/v1/notify/scripts/{name}/test`: run the stored script without delivering.
    pub async fn test_script(&self, name: &str) -> Result<Value, ClientError> {
        let what = format!("the test of {name}");
        self.notify_call(
            reqwest::Method::POST,
            &["scripts", name, "test"],
            &[],
            None,
            &what,
        )
        .await
    }

    /// `POST /api/v1/notify/test?name=`: run `content` as script `name` without storing it.
    pub async fn test_content(&self, name: &str, content: Vec<u8>) -> Result<Value, ClientError> {
        let what = format!("the test of {name}");
        self.notify_call(
            reqwest::Method::POST,
            &["test"],
            &[("name", name)],
            Some(content),
            &what,
        )
        .await
    }
}

/// What `dataport push` did with the `notifications/` folder.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScriptsPushed {
    /// Uploaded: name, bytes, and whether the server had this content already.
    pub scripts: Vec<crate::push::Sent>,
    /// Refused by the server, with why.
    pub refused: Vec<(String, String)>,
    /// Removed from the server because the folder no longer has them (`--prune`).
    pub removed: Vec<String>,
}

/// The scripts of a folder: `*.py` files and files that start with `#!`, by name.
pub fn script_files(dir: &Path) -> Result<Vec<PathBuf>, ClientError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ClientError::io(dir, e)),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            !name.starts_with('.') && (name.ends_with(".py") || starts_with_shebang(p))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn starts_with_shebang(path: &Path) -> bool {
    use std::io::Read as _;
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"#!")
}

/// Uploads every script of `dir`; with `prune`, removes the server's scripts the folder does
/// not have.
pub async fn push_scripts(
    api: &Api,
    dir: &Path,
    prune: bool,
) -> Result<ScriptsPushed, ClientError> {
    let mut report = ScriptsPushed::default();
    let files = script_files(dir)?;
    let mut names = Vec::new();
    for path in files {
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let content = std::fs::read(&path).map_err(|e| ClientError::io(&path, e))?;
        let bytes = content.len() as u64;
        match api.put_script(&name, content).await {
            Ok(answer) => report.scripts.push(crate::push::Sent {
                name: name.clone(),
                bytes,
                unchanged: answer["changed"] == Value::Bool(false),
            }),
            Err(ClientError::Server {
                message, status, ..
            }) if (400..500).contains(&status) => {
                report.refused.push((name.clone(), message));
            }
            Err(e) => return Err(e),
        }
        names.push(name);
    }
    if prune && dir.is_dir() {
        let listed = api.notify_scripts().await?;
        let stored = listed["scripts"].as_array().cloned().unwrap_or_default();
        for s in stored {
            let Some(name) = s["name"].as_str() else {
                continue;
            };
            if !names.iter().any(|n| n == name) {
                api.delete_script(name).await?;
                report.removed.push(name.to_string());
            }
        }
    }
    Ok(report)
}
