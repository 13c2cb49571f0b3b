//! The compiled-in connectors: the `sources:` configuration that names one ([`SourceConfig`])
//! and [`build`], which makes it. The one module that knows every implementation.

use std::path::Path;
use std::sync::Arc;

use dataport_state::StateStore;
use serde::{Deserialize, Serialize};

use crate::connector::Connector;
use crate::error::{ConnectorError, Result};
use crate::{files, jira, keboola};

/// `sources:` entries of the configuration.
/// Unknown keys are refused by the connector's own settings (`deny_unknown_fields` there).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct SourceConfig {
    /// Unique name, used in job names, state and commands (`dataport sync NAME`).
    pub name: String,
    #[serde(flatten)]
    pub kind: SourceKind,
}

/// The connector and its settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceKind {
    Keboola(keboola::KeboolaConfig),
    Files(files::FilesConfig),
    Jira(Box<jira::JiraConfig>),
}

/// The compiled-in connectors' type names.
pub const CONNECTOR_TYPES: &[&str] = &["keboola", "files", "jira"];

/// A built source: pulled on a schedule, or pushed to (webhooks) and polled.
#[derive(Clone)]
pub enum Source {
    Pull(Arc<dyn Connector>),
    Jira(Arc<jira::JiraSource>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pull(c) => write!(f, "Source::Pull({} '{}')", c.kind(), c.source()),
            Self::Jira(j) => write!(f, "Source::Jira('{}')", j.name()),
        }
    }
}

impl Source {
    pub fn name(&self) -> &str {
        match self {
            Self::Pull(c) => c.source(),
            Self::Jira(j) => j.name(),
        }
    }
}

/// Whether `name` may name a source or schema: letters, digits, `_` and `-`.
pub(crate) fn check_name(name: &str) -> std::result::Result<(), ()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok { Ok(()) } else { Err(()) }
}

/// Builds the connector of a source. `env` resolves secret references (environment
/// variables); `data_dir` is where table descriptions live; push sources keep their queue in
/// `state`.
pub fn build(
    config: &SourceConfig,
    data_dir: &Path,
    state: &Arc<StateStore>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Source> {
    if check_name(&config.name).is_err() {
        return Err(ConnectorError::Config {
            source_name: config.name.clone(),
            message: "a source name may only use letters, digits, '_' and '-'".into(),
        });
    }
    Ok(match &config.kind {
        SourceKind::Keboola(k) => Source::Pull(Arc::new(keboola::KeboolaConnector::new(
            &config.name,
            k,
            data_dir,
            env,
        )?)),
        SourceKind::Files(f) => Source::Pull(Arc::new(files::FilesConnector::new(
            &config.name,
            f,
            data_dir,
        )?)),
        SourceKind::Jira(j) => Source::Jira(Arc::new(jira::JiraSource::new(
            &config.name,
            j,
            data_dir,
            Arc::clone(state),
            env,
        )?)),
    })
}
