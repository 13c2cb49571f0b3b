//! The compiled-in connectors: the `sources:` configuration that names one ([`SourceConfig`])
//! and [`build`], which makes it. The one module that knows every implementation.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::connector::Connector;
use crate::error::{ConnectorError, Result};
use crate::{files, keboola};

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
}

/// The compiled-in connectors' type names.
pub const CONNECTOR_TYPES: &[&str] = &["keboola", "files"];

/// Builds the connector of a source. `env` resolves secret references (environment
/// variables); `data_dir` is where table descriptions live.
pub fn build(
    config: &SourceConfig,
    data_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Connector>> {
    if config.name.is_empty()
        || !config
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ConnectorError::Config {
            source_name: config.name.clone(),
            message: "a source name may only use letters, digits, '_' and '-'".into(),
        });
    }
    match &config.kind {
        SourceKind::Keboola(k) => Ok(Arc::new(keboola::KeboolaConnector::new(
            &config.name,
            k,
            data_dir,
            env,
        )?)),
        SourceKind::Files(f) => Ok(Arc::new(files::FilesConnector::new(
            &config.name,
            f,
            data_dir,
        )?)),
    }
}
