//! Where notifications meet the server: the notifier's options from the configuration, the
//! gateway's, and the `notify:run` job for the engine's scheduler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dataport_engine::jobs::{JobAction, JobOutcome, JobResult, JobSpec};
use dataport_notify::{Limits, Notifier, NotifyOptions, SandboxMode, TelegramOptions};

use crate::config::{Config, NOTIFY_JOB};

/// The runner's default schedule.
const NOTIFY_EVERY: Duration = Duration::from_secs(15 * 60);

/// The notifier's options: `notify.*`, with the HTTP address scripts reach the server at.
pub(crate) fn options(config: &Config, http: SocketAddr) -> NotifyOptions {
    let s = &config.settings;
    let loopback = {
        let mut addr = http;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    };
    NotifyOptions {
        data_dir: s.data_dir.clone(),
        work_dir: s
            .work_dir
            .clone()
            .unwrap_or_else(|| s.data_dir.join("notify").join("work")),
        python: s.python.clone(),
        allow_executables: s.allow_executables,
        limits: Limits {
            timeout: s.timeout,
            memory_bytes: s.script_memory.0 as u64,
            cpu_seconds: s.cpu_time.as_secs().max(1),
            max_processes: u64::from(s.max_processes),
            max_output_bytes: s.max_output.0,
            max_file_bytes: s.max_file_size.0 as u64,
        },
        sandbox: SandboxMode::parse(&s.sandbox).unwrap_or(SandboxMode::Auto),
        sandbox_paths: s.sandbox_paths.iter().map(Into::into).collect(),
        uid_base: s.uid_base,
        server_url: s.server_url.clone().unwrap_or(loopback),
        public_url: config.public_url_or(http),
        max_script_bytes: s.max_script_size.0,
        max_image_bytes: s.max_image_size.0 as u64,
        keep_runs: s.keep_runs.max(1),
        keep_days: s.keep_days.max(1),
        telegram: s.telegram_token.as_ref().map(|token| TelegramOptions {
            base_url: s.telegram_api_url.clone(),
            token: token.0.clone(),
            poll_timeout: s.telegram_poll_timeout,
            max_retry_wait: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }),
        desktop_token_ttl: s.desktop_token_ttl,
    }
}

/// The gateway's rules: `notify.gateway_*`.
pub(crate) fn gateway(config: &Config) -> dataport_web::GatewayOptions {
    let s = &config.settings;
    dataport_web::GatewayOptions {
        auth_timeout: s.gateway_auth_timeout,
        ping_interval: s.gateway_ping_interval,
        missed_pongs: 3,
        max_connections_per_account: s.gateway_max_connections,
    }
}

/// `notify:run`: every account's due scripts.
struct NotifyRunJob {
    notifier: Notifier,
}

#[async_trait]
impl JobAction for NotifyRunJob {
    fn describe(&self) -> String {
        "runs the analysts' notification scripts and delivers what they report".into()
    }

    async fn run(&self) -> JobResult {
        let summary = self.notifier.run_due().await;
        // A failing script is its owner's to fix (its runs say why); a notification that
        // could not be delivered, or a runner that cannot work, is the server's problem.
        let outcome = if summary.error.is_some() {
            JobOutcome::Error
        } else if summary.undelivered > 0 {
            JobOutcome::Partial
        } else {
            JobOutcome::Ok
        };
        JobResult {
            outcome,
            summary: summary.line(),
            error: summary.error.clone().or_else(|| {
                (summary.undelivered > 0).then(|| {
                    format!(
                        "{} notifications were not delivered (Telegram); they are retried at the next run",
                        summary.undelivered
                    )
                })
            }),
        }
    }
}

/// The `notify:run` job, every 15 minutes unless `jobs:` schedules it.
pub(crate) fn job(config: &Config, notifier: &Notifier) -> JobSpec {
    crate::jobs::scheduled(
        config,
        NOTIFY_JOB,
        NOTIFY_EVERY,
        Arc::new(NotifyRunJob {
            notifier: notifier.clone(),
        }),
    )
}
