//! Where corporate memory meets the server: its options from the configuration (`memory.*`,
//! the LLM's key from the environment) and its two jobs for the engine's scheduler,
//! `memory:collect` and `memory:sessions`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use dataport_engine::jobs::{JobAction, JobOutcome, JobResult, JobSpec};
use dataport_memory::{LlmOptions, Memory, MemoryOptions};

use crate::config::{Config, MEMORY_COLLECT_JOB, MEMORY_SESSIONS_JOB};

/// The collector's default schedule.
const COLLECT_EVERY: Duration = Duration::from_secs(30 * 60);
/// The session collector's default schedule.
const SESSIONS_EVERY: Duration = Duration::from_secs(6 * 60 * 60);
/// Longest wait for a rate-limited LLM before the attempt counts as failed.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// Corporate memory as configured: with `memory.extractor: llm`, the key must be in the
/// environment variable `memory.llm_api_key_env` names.
pub(crate) fn memory(
    config: &Config,
    store: &Arc<dataport_state::StateStore>,
) -> anyhow::Result<Memory> {
    let s = &config.settings;
    let llm = if s.extractor == "llm" {
        let key = std::env::var(&s.llm_api_key_env)
            .ok()
            .filter(|k| !k.trim().is_empty())
            .with_context(|| {
                format!(
                    "memory.extractor is llm but the environment variable {} (memory.llm_api_key_env) is not set; set it to the API key, or use memory.extractor: offline",
                    s.llm_api_key_env
                )
            })?;
        Some(LlmOptions {
            base_url: s.llm_base_url.clone(),
            model: s.llm_model.clone(),
            api_key: key,
            timeout: s.llm_timeout,
            max_tokens: s.llm_max_tokens,
            max_retry_wait: MAX_RETRY_WAIT,
        })
    } else {
        None
    };
    let memory = Memory::new(
        Arc::clone(store),
        MemoryOptions {
            data_dir: s.data_dir.clone(),
            llm,
            max_notes_bytes: s.max_notes_size.0,
        },
    )
    .context("cannot set up corporate memory (memory.*)")?;
    tracing::info!(extractor = %memory.extractor(), "corporate memory");
    Ok(memory)
}

/// `memory:collect`: every account's changed notes.
struct CollectJob {
    memory: Memory,
}

#[async_trait]
impl JobAction for CollectJob {
    fn describe(&self) -> String {
        "extracts knowledge items from analysts' changed notes, screens and publishes them".into()
    }

    async fn run(&self) -> JobResult {
        let summary = self.memory.collect().await;
        // One account's failed extraction keeps its previous items and is retried next time:
        // partial. Nothing collected because nothing works: an error.
        let outcome = match (summary.failed, summary.changed) {
            (0, _) if summary.error.is_none() => JobOutcome::Ok,
            (f, c) if f > 0 && f == c => JobOutcome::Error,
            (0, _) => JobOutcome::Error,
            _ => JobOutcome::Partial,
        };
        JobResult {
            outcome,
            summary: summary.line(),
            error: summary.error,
        }
    }
}

/// `memory:sessions`: analysts' session transcripts into central storage.
struct SessionsJob {
    memory: Memory,
}

#[async_trait]
impl JobAction for SessionsJob {
    fn describe(&self) -> String {
        "stores analysts' session transcripts centrally, once per content".into()
    }

    async fn run(&self) -> JobResult {
        let summary = self.memory.collect_sessions(None).await;
        JobResult {
            outcome: if summary.error.is_none() {
                JobOutcome::Ok
            } else if summary.stored + summary.known > 0 {
                JobOutcome::Partial
            } else {
                JobOutcome::Error
            },
            summary: summary.line(),
            error: summary.error,
        }
    }
}

/// The two memory jobs, on their default schedules unless `jobs:` names them.
pub(crate) fn jobs(config: &Config, memory: &Memory) -> Vec<JobSpec> {
    vec![
        crate::jobs::scheduled(
            config,
            MEMORY_COLLECT_JOB,
            COLLECT_EVERY,
            Arc::new(CollectJob {
                memory: memory.clone(),
            }),
        ),
        crate::jobs::scheduled(
            config,
            MEMORY_SESSIONS_JOB,
            SESSIONS_EVERY,
            Arc::new(SessionsJob {
                memory: memory.clone(),
            }),
        ),
    ]
}
