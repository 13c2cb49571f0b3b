//! Move stage: originals to `processed/` after the write, or to `rejected/` with a report.

use std::path::{Path, PathBuf};

use super::Rejected;
use super::Run;
use super::discover::DropFile;
use crate::error::{ConnectorError, Result};

impl Run<'_> {
    /// Moves the files loaded and those superseded to the processed folder (after the
    /// table was written). All are tried; the first that could not be moved is the error.
    pub(super) fn move_processed(
        &self,
        loaded: &[DropFile],
        superseded: &[DropFile],
    ) -> Result<()> {
        let (source, qualified) = (&self.files.name, &self.qualified);
        let stamp = stamp();
        let mut failed: Option<ConnectorError> = None;
        let done = loaded
            .iter()
            .map(|f| (f, "loaded"))
            .chain(superseded.iter().map(|f| (f, "superseded")));
        for (file, how) in done {
            match move_into(&self.files.processed, &file.path, &file.name, &stamp) {
                Ok(dest) => tracing::info!(
                    source = %source, table = %qualified, file = %file.name,
                    to = %dest.display(), "dropped file {how}"
                ),
                Err(e) => {
                    tracing::warn!(
                        source = %source, table = %qualified, file = %file.name, error = %e,
                        "dropped file {how}, but moving it to the processed folder failed"
                    );
                    if failed.is_none() {
                        failed = Some(e);
                    }
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Moves rejected files to the rejected folder with their reports; the error to return
    /// (`kept`: the other files of the table, which stay in the drop folder).
    pub(super) fn reject(&self, rejected: Rejected, kept: usize) -> ConnectorError {
        let qualified = self.qualified.as_str();
        let stamp = stamp();
        let count = rejected.len();
        let mut first: Option<ConnectorError> = None;
        for (file, error) in rejected {
            let note = self.reject_file(&file, &error, &stamp);
            if first.is_none() {
                first = Some(annotate(error, &note));
            }
        }
        let mut error = first.unwrap_or_else(|| ConnectorError::Table {
            table: qualified.to_string(),
            message: "a dropped file was rejected".into(),
        });
        if count > 1 {
            error = annotate(error, &format!("{} more files were rejected", count - 1));
        }
        if kept > 0 {
            error = annotate(
                error,
                &format!(
                    "{kept} other files of the table stay in the drop folder for the next run"
                ),
            );
        }
        error
    }

    /// Moves one rejected file, with its report, to the rejected folder; where it went.
    fn reject_file(&self, file: &DropFile, error: &ConnectorError, stamp: &str) -> String {
        let (source, qualified) = (&self.files.name, &self.qualified);
        let text = error.to_string();
        match move_into(&self.files.rejected, &file.path, &file.name, stamp) {
            Ok(dest) => {
                let report = report_path(&dest);
                if let Err(e) = std::fs::write(&report, report_text(qualified, file, error, stamp))
                {
                    tracing::warn!(path = %report.display(), error = %e, "cannot write the rejection report");
                }
                tracing::info!(
                    source = %source, table = %qualified, file = %file.name,
                    to = %dest.display(), error = %text, "dropped file rejected"
                );
                format!("{} was moved to {}", file.name, dest.display())
            }
            Err(e) => {
                tracing::warn!(
                    source = %source, table = %qualified, file = %file.name,
                    error = %text, move_error = %e, "dropped file rejected but not moved"
                );
                format!(
                    "{} stays in the drop folder: moving it to the rejected folder failed ({e})",
                    file.name
                )
            }
        }
    }
}

/// Errors that are the file's fault: the file is rejected. Others (local I/O, writing the
/// staged file) leave it in the drop folder.
pub(super) fn is_file_fault(e: &ConnectorError) -> bool {
    match e {
        ConnectorError::BadValue { .. }
        | ConnectorError::Decode { .. }
        | ConnectorError::Table { .. } => true,
        ConnectorError::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::InvalidData
                | std::io::ErrorKind::InvalidInput
                | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// `e` with `note` appended to its message.
fn annotate(e: ConnectorError, note: &str) -> ConnectorError {
    match e {
        ConnectorError::BadValue {
            table,
            row,
            column,
            reason,
        } => ConnectorError::BadValue {
            table,
            row,
            column,
            reason: format!("{reason}; {note}"),
        },
        ConnectorError::Decode {
            table,
            what,
            message,
        } => ConnectorError::Decode {
            table,
            what,
            message: format!("{message}; {note}"),
        },
        ConnectorError::Table { table, message } => ConnectorError::Table {
            table,
            message: format!("{message}; {note}"),
        },
        ConnectorError::Io { path, source } => ConnectorError::Io {
            path,
            source: std::io::Error::new(source.kind(), format!("{source}; {note}")),
        },
        other => other,
    }
}

/// `YYYYMMDDTHHMMSSZ`, prefixed to processed and rejected files.
fn stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

/// Moves `from` into `dir` as `<stamp>-<name>` (with a counter when that is taken).
fn move_into(dir: &Path, from: &Path, name: &str, stamp: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| ConnectorError::io(dir, e))?;
    let mut dest = dir.join(format!("{stamp}-{name}"));
    let mut n = 1u32;
    while dest.exists() || report_path(&dest).exists() {
        dest = dir.join(format!("{stamp}-{n}-{name}"));
        n += 1;
    }
    if let Err(e) = std::fs::rename(from, &dest) {
        // Another file system: copy, then remove the original.
        if std::fs::copy(from, &dest).is_err() {
            let _ = std::fs::remove_file(&dest);
            return Err(ConnectorError::io(from, e));
        }
        std::fs::remove_file(from).map_err(|e| ConnectorError::io(from, e))?;
    }
    Ok(dest)
}

/// `<file>.error.txt` next to a rejected file.
fn report_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".error.txt");
    PathBuf::from(name)
}

fn report_text(table: &str, file: &DropFile, error: &ConnectorError, stamp: &str) -> String {
    let mut text = format!(
        "file: {}\ntable: {table}\nrejected: {stamp}\n",
        file.path.display()
    );
    if let ConnectorError::BadValue {
        row,
        column,
        reason,
        ..
    } = error
    {
        text.push_str(&format!("row: {row}\ncolumn: {column}\nreason: {reason}\n"));
    }
    text.push_str(&format!(
        "error: {error}\n\nNothing of this file was loaded. Correct it and drop it again.\n"
    ));
    text
}
