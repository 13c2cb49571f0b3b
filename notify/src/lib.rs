//! Notifications: analysts' alert scripts, run by the server and delivered to their owner.
//!
//! This crate owns the script store (per account, versioned by content hash), the runner (a
//! script reads data only through the server, with a short-lived token scoped to its owner's
//! grants, confined by [`sandbox`]: its own working folder, resource limits, its own OS user
//! when the server runs as root, bubblewrap where the machine has it), the script contract
//! (one JSON object on stdout, cooldowns: [`script`]), the record of runs and notifications
//! (in the state store), and delivery: the owner's inbox, Telegram ([`telegram`]: the Bot
//! API client and the bot's conversation) and live connections, which it reaches through the
//! [`LiveChannel`] trait.
//!
//! It must not know HTTP serving or WebSockets (`web` implements [`LiveChannel`] with its
//! gateway and calls [`Notifier`] from its routes), DataFusion or the catalog (scripts query
//! the server like any client), or the job scheduler (the binary wraps
//! [`Notifier::run_due`] in the `notify:run` job).

pub mod error;
mod runner;
pub mod sandbox;
pub mod script;
pub mod telegram;

use std::path::PathBuf;
use std::time::Duration;

pub use dataport_state::{DesktopToken, NotifyRun, NotifyScript, StoredNotification, TelegramLink};
pub use error::{NotifyError, Result};
pub use runner::{DueSummary, Notifier, RunReport, ScriptInfo, Trigger};
pub use sandbox::Limits;
pub use telegram::TelegramOptions;

/// Whether scripts run in a bubblewrap sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// Where the machine has `bwrap`.
    Auto,
    /// Always; the server refuses to start without `bwrap`.
    Required,
    /// Never.
    Off,
}

impl SandboxMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "required" => Some(Self::Required),
            "off" => Some(Self::Off),
            _ => None,
        }
    }
}

/// How notifications work on this server.
#[derive(Debug, Clone)]
pub struct NotifyOptions {
    /// The data dir: scripts' contents under `notify/scripts/`, images under `notify/images/`.
    pub data_dir: PathBuf,
    /// Where scripts run: `home/<account id>/` is each account's working folder.
    pub work_dir: PathBuf,
    /// The interpreter of `*.py` scripts.
    pub python: PathBuf,
    /// Whether scripts other than Python (any executable with a `#!` line) may run.
    pub allow_executables: bool,
    pub limits: Limits,
    pub sandbox: SandboxMode,
    /// Extra folders shown read-only in the sandbox (a virtualenv, a data tool).
    pub sandbox_paths: Vec<PathBuf>,
    /// When the server runs as root, account `n`'s scripts run as user and group id
    /// `uid_base + n`: no two accounts share one, and none is the server's.
    pub uid_base: u32,
    /// `DATAPORT_URL` given to scripts: where they reach this server.
    pub server_url: String,
    /// Where people reach the portal (links in messages).
    pub public_url: String,
    /// Largest script.
    pub max_script_bytes: usize,
    /// Largest image a notification may carry.
    pub max_image_bytes: u64,
    /// Runs kept per script.
    pub keep_runs: usize,
    /// Notifications (and their images) older than this are removed.
    pub keep_days: u32,
    /// The Telegram bot, if configured.
    pub telegram: Option<TelegramOptions>,
    /// How long a desktop app's token lasts.
    pub desktop_token_ttl: Duration,
}

/// Connections that want an account's notifications as they happen (the desktop app's
/// WebSocket gateway).
pub trait LiveChannel: Send + Sync + std::fmt::Debug {
    /// Send `message` to every open connection of `account_id`; how many got it.
    fn publish(&self, account_id: i64, message: &serde_json::Value) -> usize;
}

/// No live connections.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLiveChannel;

impl LiveChannel for NoLiveChannel {
    fn publish(&self, _account_id: i64, _message: &serde_json::Value) -> usize {
        0
    }
}
