//! `dataport push`: the analyst's notes file, session transcripts and notification scripts to
//! the server.

use std::path::PathBuf;

use serde::Serialize;

use crate::api::Api;
use crate::error::ClientError;

#[derive(Debug, Clone)]
pub struct PushOptions {
    /// The notes file; skipped when it does not exist.
    pub notes: PathBuf,
    /// Folder of `*.jsonl` transcripts; skipped when it does not exist.
    pub transcripts: PathBuf,
    /// Folder of notification scripts; skipped when it does not exist.
    pub notifications: PathBuf,
    /// Remove the server's scripts that the notifications folder no longer has.
    pub prune_scripts: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PushReport {
    /// `None` when there was no notes file.
    pub notes: Option<Sent>,
    pub transcripts: Vec<Sent>,
    /// The notification scripts (none when the folder does not exist).
    pub notifications: crate::notify::ScriptsPushed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    pub name: String,
    pub bytes: u64,
    /// The server had this content already.
    pub unchanged: bool,
}

/// Uploads the notes file, every transcript and every notification script; the server keeps
/// one copy of each content, so pushing again sends the same bytes but stores nothing new.
pub async fn push(api: &Api, options: &PushOptions) -> Result<PushReport, ClientError> {
    let mut report = PushReport::default();
    match std::fs::read(&options.notes) {
        Ok(body) => {
            let r = api.upload("notes", None, body).await?;
            report.notes = Some(Sent {
                name: r.name,
                bytes: r.bytes,
                unchanged: r.unchanged,
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ClientError::io(&options.notes, e)),
    }
    let mut names: Vec<PathBuf> = match std::fs::read_dir(&options.transcripts) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "jsonl"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(ClientError::io(&options.transcripts, e)),
    };
    names.sort();
    for path in names {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let body = std::fs::read(&path).map_err(|e| ClientError::io(&path, e))?;
        let r = api.upload("transcript", Some(name), body).await?;
        report.transcripts.push(Sent {
            name: r.name,
            bytes: r.bytes,
            unchanged: r.unchanged,
        });
    }
    report.notifications =
        crate::notify::push_scripts(api, &options.notifications, options.prune_scripts).await?;
    Ok(report)
}
