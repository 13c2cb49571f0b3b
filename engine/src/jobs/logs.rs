//! The log of each job run: every event logged inside a run (by the scheduler, the connector,
//! the profiler — anything under the run's `job_run` span) is also kept, as the server's log
//! prints it in one line, and stored with the run when it ends, for the jobs page.
//!
//! [`JobLogs::layer`] is a `tracing` layer the binary installs beside its log output; the
//! [`Scheduler`](super::Scheduler) given the same [`JobLogs`] takes each run's lines when the
//! run ends. The layer sees what the server's log filter lets through.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Name of the span a run executes in; its `run` field is the run's id.
pub const RUN_SPAN: &str = "job_run";
/// Lines kept per run: the first ones, then a note of how many more there were.
pub const MAX_LINES: usize = 400;
/// Longest line kept.
const MAX_LINE_CHARS: usize = 2000;

#[derive(Debug, Default)]
struct RunLog {
    lines: Vec<String>,
    dropped: usize,
}

/// The logs of the runs under way. Clone freely.
#[derive(Debug, Clone, Default)]
pub struct JobLogs {
    runs: Arc<Mutex<HashMap<i64, RunLog>>>,
}

impl JobLogs {
    pub fn new() -> Self {
        Self::default()
    }

    /// The layer that fills these logs.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        Capture { logs: self.clone() }
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<i64, RunLog>> {
        match self.runs.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Starts keeping the lines of run `id`.
    pub(crate) fn begin(&self, id: i64) {
        self.runs().insert(id, RunLog::default());
    }

    /// The lines of run `id`, one per event, and stops keeping them.
    pub(crate) fn take(&self, id: i64) -> String {
        let Some(log) = self.runs().remove(&id) else {
            return String::new();
        };
        let mut text = log.lines.join("\n");
        if log.dropped > 0 {
            let _ = write!(text, "\n… {} more lines not kept", log.dropped);
        }
        text
    }

    fn push(&self, id: i64, line: String) {
        if let Some(log) = self.runs().get_mut(&id) {
            if log.lines.len() < MAX_LINES {
                log.lines.push(line);
            } else {
                log.dropped += 1;
            }
        }
    }
}

/// The run a span belongs to (kept in the span's extensions).
struct RunId(i64);

struct Capture {
    logs: JobLogs,
}

/// Reads the `run` field of a run's span.
#[derive(Default)]
struct RunField(Option<i64>);

impl Visit for RunField {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "run" {
            self.0 = Some(value);
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "run" {
            self.0 = i64::try_from(value).ok();
        }
    }
    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

/// An event as one line: `message key=value …`.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != RUN_SPAN {
            return;
        }
        let mut run = RunField::default();
        attrs.record(&mut run);
        if let (Some(run), Some(span)) = (run.0, ctx.span(id)) {
            span.extensions_mut().insert(RunId(run));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(run) = scope
            .from_root()
            .find_map(|span| span.extensions().get::<RunId>().map(|r| r.0))
        else {
            return;
        };
        let mut line = Line::default();
        event.record(&mut line);
        let meta = event.metadata();
        let mut text = format!(
            "{} {:>5} {}: {}{}",
            chrono::Utc::now().format("%H:%M:%S%.3f"),
            meta.level(),
            meta.target(),
            line.message,
            line.fields
        );
        if text.chars().count() > MAX_LINE_CHARS {
            text = text.chars().take(MAX_LINE_CHARS).collect::<String>() + "…";
        }
        self.logs.push(run, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[tokio::test]
    async fn events_inside_a_run_are_kept_with_their_fields() {
        let logs = JobLogs::new();
        let subscriber = tracing_subscriber::registry().with(logs.layer());
        let _default = tracing::subscriber::set_default(subscriber);
        logs.begin(7);
        async {
            tracing::info!(table = "tpch.orders", rows = 3, "synced");
            tracing::warn!("slow source");
            // nested spans belong to the run too
            tracing::info_span!("inner").in_scope(|| tracing::info!("inside"));
        }
        .instrument(tracing::info_span!(RUN_SPAN, job = "sync:crm", run = 7))
        .await;
        tracing::info!("outside any run");
        let text = logs.take(7);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].ends_with(
                " INFO dataport_engine::jobs::logs::tests: synced table=tpch.orders rows=3"
            ),
            "{text}"
        );
        assert!(lines[1].contains(" WARN ") && lines[1].ends_with("slow source"));
        assert!(lines[2].ends_with("inside"));
        assert_eq!(logs.take(7), "", "taken once");

        logs.begin(8);
        async {
            for i in 0..MAX_LINES + 5 {
                tracing::info!(i, "line");
            }
        }
        .instrument(tracing::info_span!(RUN_SPAN, run = 8))
        .await;
        let text = logs.take(8);
        assert_eq!(text.lines().count(), MAX_LINES + 1);
        assert!(text.ends_with("… 5 more lines not kept"));
    }
}
