//! The [`Notifier`]: scripts stored per account, runs (scheduled, by hand, tests), what a run
//! sends and where, Telegram links and desktop tokens.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dataport_auth::{Authenticator, Principal, TokenScope};
use dataport_common::digest::sha256_hex;
use dataport_common::fs::write_bytes_atomic;
use dataport_state::{
    DesktopToken, NewNotifyRun, NotifyRun, NotifyRunEnd, NotifyScript, StateStore,
    StoredNotification, TelegramLink,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{NotifyError, Result};
use crate::sandbox::{self, Bubblewrap, Launch, RunAs, Stop};
use crate::script::{self, Parsed, ScriptKind, ScriptOutput};
use crate::telegram::{Photo, Telegram, TelegramError};
use crate::{LiveChannel, NotifyOptions, SandboxMode};

/// How much of stdout and stderr a run's record keeps.
const EXCERPT: usize = 4096;
/// Longest title and message kept.
const MAX_TITLE: usize = 256;
const MAX_MESSAGE: usize = 64 * 1024;
/// Largest `data` kept with a notification.
const MAX_DATA: usize = 64 * 1024;
/// A scheduled script is due this much before its interval has fully passed (the job's own
/// schedule jitters).
const SCHEDULE_SLACK: Duration = Duration::from_secs(60);
/// A script's token outlives its run's timeout by this much, and is revoked when it ends.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The `notify:run` job: the cooldown applies.
    Schedule,
    /// By hand (portal, command line, desktop app, Telegram button): the cooldown does not
    /// hold it back, but a delivery still starts it.
    Manual,
    Desktop,
    Telegram,
    /// Runs the script and shows what it would send; sends nothing, touches no cooldown.
    Test,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Desktop => "desktop",
            Self::Telegram => "telegram",
            Self::Test => "test",
        }
    }
}

/// A script as its owner sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptInfo {
    #[serde(flatten)]
    pub script: NotifyScript,
    pub last_run: Option<NotifyRun>,
    /// Until when (Unix ms) a scheduled run will not notify again.
    pub cooldown_until_ms: Option<i64>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run: NotifyRun,
    pub notification: Option<StoredNotification>,
    /// A test's notification as it would be sent.
    pub preview: Option<Value>,
}

/// What one run of the `notify:run` job did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DueSummary {
    pub ran: u32,
    pub sent: u32,
    /// Scripts that failed (their owners see why in their runs).
    pub failed: u32,
    /// Notifications a channel did not take (their cooldown did not start).
    pub undelivered: u32,
    /// Scripts of disabled accounts, not run.
    pub skipped: u32,
    /// The runner itself failed (the state store).
    pub error: Option<String>,
}

impl DueSummary {
    pub fn line(&self) -> String {
        format!(
            "{} scripts run: {} notified, {} not delivered, {} failed; {} of disabled accounts skipped",
            self.ran, self.sent, self.undelivered, self.failed, self.skipped
        )
    }
}

/// A script to run: stored, or (a test) given.
struct ToRun {
    name: String,
    sha256: String,
    kind: ScriptKind,
    content: Vec<u8>,
}

/// An image a run referred to, read and checked.
struct Image {
    bytes: Vec<u8>,
    ext: &'static str,
    mime: &'static str,
}

/// Notifications: see the crate's documentation. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    options: NotifyOptions,
    store: Arc<StateStore>,
    auth: Authenticator,
    live: Arc<dyn LiveChannel>,
    telegram: Option<Telegram>,
    sandbox: Option<Bubblewrap>,
    /// None: scripts cannot be limited, so they do not run.
    prlimit: Option<PathBuf>,
    /// Root: scripts get their own user ids.
    privileged: bool,
    /// One run at a time per account.
    locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl Notifier {
    /// Checks the configuration against the machine (the interpreter, `bwrap` when required)
    /// and prepares the folders.
    pub fn new(
        options: NotifyOptions,
        store: Arc<StateStore>,
        auth: Authenticator,
        live: Arc<dyn LiveChannel>,
    ) -> Result<Self> {
        let bwrap = match options.sandbox {
            SandboxMode::Off => None,
            SandboxMode::Auto => Bubblewrap::find(),
            SandboxMode::Required => Some(Bubblewrap::find().ok_or_else(|| {
                NotifyError::refused(
                    "notify.sandbox is 'required' but this machine has no bwrap: install \
                     bubblewrap (apt install bubblewrap) or set notify.sandbox to auto",
                )
            })?),
        };
        let mut options = options;
        options.python = resolve_program(&options.python);
        let sandbox = bwrap.map(|program| {
            let mut read_only = options.sandbox_paths.clone();
            read_only.extend(install_prefixes(&options.python));
            Bubblewrap { program, read_only }
        });
        let privileged = sandbox::is_root();
        let prlimit = sandbox::find_prlimit();
        if prlimit.is_none() {
            tracing::warn!(
                "this machine has no prlimit (util-linux): notification scripts cannot be                  limited, so none will run; install util-linux"
            );
        }
        make_dir(&options.work_dir, 0o711)?;
        make_dir(&options.work_dir.join("home"), 0o711)?;
        make_dir(&options.work_dir.join("scripts"), 0o711)?;
        let telegram = options.telegram.clone().map(Telegram::new).transpose()?;
        if privileged && let Some(closed) = closed_ancestor(&options.work_dir) {
            tracing::warn!(
                work_dir = %options.work_dir.display(),
                closed = %closed.display(),
                "scripts run as their own users but cannot enter {}: set notify.work_dir to a \
                 folder others may enter (e.g. /var/lib/dataport-notify) or `chmod o+x` it",
                closed.display()
            );
        }
        let interrupted = store.interrupt_notify_runs()?;
        if interrupted > 0 {
            tracing::warn!(
                runs = interrupted,
                "notification runs interrupted by the last stop"
            );
        }
        tracing::info!(
            sandbox = sandbox.is_some(),
            own_users = privileged,
            python = %options.python.display(),
            telegram = telegram.is_some(),
            "notifications ready"
        );
        if sandbox.is_none() && !privileged {
            tracing::warn!(
                "notification scripts run as the server's own user without a sandbox: they can \
                 read what the server can read; install bubblewrap or run the server as root"
            );
        }
        Ok(Self(Arc::new(Inner {
            options,
            store,
            auth,
            live,
            telegram,
            sandbox,
            prlimit,
            privileged,
            locks: Mutex::new(HashMap::new()),
        })))
    }

    pub fn options(&self) -> &NotifyOptions {
        &self.0.options
    }

    pub fn store(&self) -> &Arc<StateStore> {
        &self.0.store
    }

    pub fn telegram(&self) -> Option<&Telegram> {
        self.0.telegram.as_ref()
    }

    /// Whether scripts run in a bubblewrap sandbox.
    pub fn sandboxed(&self) -> bool {
        self.0.sandbox.is_some()
    }

    // ---- scripts ----

    fn blob_path(&self, account: i64, sha256: &str) -> PathBuf {
        self.0
            .options
            .data_dir
            .join("notify/scripts")
            .join(account.to_string())
            .join(sha256)
    }

    /// Store `content` as the current version of `name`; false when it already was.
    pub fn put_script(
        &self,
        account: i64,
        name: &str,
        content: &[u8],
    ) -> Result<(NotifyScript, bool)> {
        script::check_name(name)?;
        let limit = self.0.options.max_script_bytes;
        if content.len() > limit {
            return Err(NotifyError::TooLarge {
                bytes: content.len(),
                limit,
            });
        }
        let kind = script::kind_of(name, content, self.0.options.allow_executables)?;
        let schedule = script::schedule_of(content)?;
        let sha256 = sha256_hex(content);
        let blob = self.blob_path(account, &sha256);
        if !blob.is_file() {
            write_bytes_atomic(&blob, content)?;
        }
        let now = now_ms();
        let record = NotifyScript {
            account_id: account,
            name: name.to_string(),
            sha256,
            bytes: content.len() as u64,
            kind: kind.as_str().to_string(),
            schedule,
            created_ms: now,
            updated_ms: now,
        };
        let changed = self.0.store.put_notify_script(&record)?;
        let stored = self.0.store.notify_script(account, name)?.unwrap_or(record);
        if changed {
            tracing::info!(account, script = name, sha256 = %stored.sha256, "notification script stored");
            self.remove_unused_blobs(account);
        }
        Ok((stored, changed))
    }

    /// Remove a script; false when there was none.
    pub fn delete_script(&self, account: i64, name: &str) -> Result<bool> {
        script::check_name(name)?;
        let removed = self.0.store.delete_notify_script(account, name)?;
        if removed {
            // The copy it last ran from goes too.
            let staged = self
                .0
                .options
                .work_dir
                .join("scripts")
                .join(account.to_string())
                .join(name);
            let _ = std::fs::remove_file(staged);
            tracing::info!(account, script = name, "notification script removed");
            self.remove_unused_blobs(account);
        }
        Ok(removed)
    }

    fn remove_unused_blobs(&self, account: i64) {
        let Ok(used) = self.0.store.notify_script_hashes(account) else {
            return;
        };
        let dir = self
            .0
            .options
            .data_dir
            .join("notify/scripts")
            .join(account.to_string());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.len() == 64 && !used.contains(&name) {
                let _ = dataport_common::fs::remove_file_synced(&entry.path());
            }
        }
    }

    /// The content of `account`'s script `name`.
    pub fn script_content(&self, account: i64, name: &str) -> Result<(NotifyScript, Vec<u8>)> {
        script::check_name(name)?;
        let record = self
            .0
            .store
            .notify_script(account, name)?
            .ok_or_else(|| NotifyError::NoSuchScript { name: name.into() })?;
        let path = self.blob_path(account, &record.sha256);
        let content = std::fs::read(&path).map_err(|e| NotifyError::io(&path, e))?;
        Ok((record, content))
    }

    /// `account`'s scripts with their last runs and cooldowns.
    pub fn scripts(&self, account: i64) -> Result<Vec<ScriptInfo>> {
        let store = &self.0.store;
        let mut last: HashMap<String, NotifyRun> = store
            .last_notify_runs(account)?
            .into_iter()
            .map(|r| (r.script.clone(), r))
            .collect();
        let mut out = Vec::new();
        for s in store.notify_scripts(Some(account))? {
            let cooldown_until_ms = store
                .notify_cooldown(account, &s.name)?
                .map(|(sent, secs)| sent.saturating_add(secs.saturating_mul(1000)))
                .filter(|&until| until > now_ms());
            out.push(ScriptInfo {
                last_run: last.remove(&s.name),
                cooldown_until_ms,
                script: s,
            });
        }
        Ok(out)
    }

    /// Every account's scripts (for administrators and `dataport notify list`).
    pub fn all_scripts(&self) -> Result<Vec<NotifyScript>> {
        Ok(self.0.store.notify_scripts(None)?)
    }

    pub fn runs(&self, account: i64, name: Option<&str>, n: usize) -> Result<Vec<NotifyRun>> {
        Ok(self.0.store.notify_runs(Some(account), name, n)?)
    }

    /// Run `id`, if it is `account`'s.
    pub fn run_record(&self, account: i64, id: i64) -> Result<Option<NotifyRun>> {
        Ok(self
            .0
            .store
            .notify_run(id)?
            .filter(|r| r.account_id == account))
    }

    // ---- running ----

    fn account_lock(&self, account: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(account).or_default())
    }

    /// Run `principal`'s stored script `name` now.
    pub async fn run_script(
        &self,
        principal: &Principal,
        name: &str,
        trigger: Trigger,
    ) -> Result<RunReport> {
        let (record, content) = self.script_content(principal.id, name)?;
        let kind = ScriptKind::parse(&record.kind).unwrap_or(ScriptKind::Python);
        self.run(
            principal,
            ToRun {
                name: record.name,
                sha256: record.sha256,
                kind,
                content,
            },
            trigger,
        )
        .await
    }

    /// Test `content` as script `name` without storing it: it runs as a stored script
    /// would, and the report shows what it would send.
    pub async fn test_content(
        &self,
        principal: &Principal,
        name: &str,
        content: Vec<u8>,
    ) -> Result<RunReport> {
        script::check_name(name)?;
        let limit = self.0.options.max_script_bytes;
        if content.len() > limit {
            return Err(NotifyError::TooLarge {
                bytes: content.len(),
                limit,
            });
        }
        let kind = script::kind_of(name, &content, self.0.options.allow_executables)?;
        let sha256 = sha256_hex(&content);
        self.run(
            principal,
            ToRun {
                name: name.to_string(),
                sha256,
                kind,
                content,
            },
            Trigger::Test,
        )
        .await
    }

    /// The `notify:run` job: every active account's scripts that are due, account by account,
    /// each account's in name order; then old runs and notifications go.
    pub async fn run_due(&self) -> DueSummary {
        let mut summary = DueSummary::default();
        let scripts = match self.0.store.notify_scripts(None) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot list notification scripts");
                summary.error = Some(format!("cannot list the scripts: {e}"));
                return summary;
            }
        };
        let now = now_ms();
        let mut principals: HashMap<i64, Option<Principal>> = HashMap::new();
        for s in scripts {
            let principal = principals
                .entry(s.account_id)
                .or_insert_with(|| self.0.auth.principal_by_id(s.account_id).ok().flatten())
                .clone();
            let Some(principal) = principal else {
                summary.skipped += 1;
                continue;
            };
            if let Some(every) = s.schedule.as_deref().and_then(script::schedule_interval) {
                let last = self
                    .0
                    .store
                    .last_notify_run_by(s.account_id, &s.name, Trigger::Schedule.as_str())
                    .ok()
                    .flatten();
                let due_after = every.saturating_sub(SCHEDULE_SLACK).as_millis() as i64;
                if last.is_some_and(|l| now - l < due_after) {
                    continue;
                }
            }
            summary.ran += 1;
            match self
                .run_script(&principal, &s.name, Trigger::Schedule)
                .await
            {
                Ok(r) if r.run.outcome == "sent" => summary.sent += 1,
                Ok(r) if r.run.outcome == "delivery_failed" => summary.undelivered += 1,
                Ok(r) if r.run.outcome == "failed" => summary.failed += 1,
                Ok(_) => {}
                Err(e) => {
                    summary.failed += 1;
                    tracing::warn!(account = s.account_id, script = %s.name, error = %e, "notification script not run");
                }
            }
        }
        self.prune();
        summary
    }

    fn prune(&self) {
        let store = &self.0.store;
        if let Err(e) = store.prune_notify_runs(self.0.options.keep_runs) {
            tracing::warn!(error = %e, "cannot prune notification runs");
        }
        let before = now_ms() - i64::from(self.0.options.keep_days) * 86_400_000;
        match store.prune_notifications(before) {
            Ok(images) => {
                for (account, image) in images {
                    let _ = std::fs::remove_file(self.image_path(account, &image));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot prune notifications"),
        }
    }

    /// The user a script of `account` runs as (root only).
    fn run_as(&self, account: i64) -> Option<RunAs> {
        if !self.0.privileged {
            return None;
        }
        let id = self
            .0
            .options
            .uid_base
            .saturating_add(u32::try_from(account).unwrap_or(u32::MAX));
        Some(RunAs { uid: id, gid: id })
    }

    /// `account`'s working folder, created (owned by its user) if needed.
    fn workspace(&self, account: i64, run_as: Option<RunAs>) -> Result<PathBuf> {
        let dir = self
            .0
            .options
            .work_dir
            .join("home")
            .join(account.to_string());
        if !dir.is_dir() {
            make_dir(&dir, 0o700)?;
        }
        let tmp = dir.join(".tmp");
        if !tmp.is_dir() {
            make_dir(&tmp, 0o700)?;
        }
        if let Some(user) = run_as {
            for d in [&dir, &tmp] {
                std::os::unix::fs::lchown(d, Some(user.uid), Some(user.gid))
                    .map_err(|e| NotifyError::io(d, e))?;
            }
        }
        Ok(dir)
    }

    /// The script's file where it runs from: a folder only the server writes (the
    /// account's group may read it).
    fn stage(&self, account: i64, run: &ToRun, run_as: Option<RunAs>) -> Result<PathBuf> {
        let dir = self
            .0
            .options
            .work_dir
            .join("scripts")
            .join(account.to_string());
        make_dir(&dir, 0o750)?;
        let path = dir.join(&run.name);
        write_bytes_atomic(&path, &run.content)?;
        let mode = match run.kind {
            ScriptKind::Python => 0o640,
            ScriptKind::Executable => 0o750,
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| NotifyError::io(&path, e))?;
        if let Some(user) = run_as {
            for p in [&dir, &path] {
                std::os::unix::fs::lchown(p, Some(0), Some(user.gid))
                    .map_err(|e| NotifyError::io(p, e))?;
            }
        }
        Ok(path)
    }

    async fn run(&self, principal: &Principal, run: ToRun, trigger: Trigger) -> Result<RunReport> {
        let lock = self.account_lock(principal.id);
        let _one_at_a_time = lock.lock().await;
        let store = &self.0.store;
        let started = now_ms();
        let run_id = store.start_notify_run(&NewNotifyRun {
            account_id: principal.id,
            script: &run.name,
            sha256: &run.sha256,
            trigger: trigger.as_str(),
            started_ms: started,
        })?;
        let outcome = self.execute(principal, &run, trigger, run_id).await;
        let (end, notification, preview) = match outcome {
            Ok(done) => done,
            Err(e) => (
                NotifyRunEnd::failed(format!("the runner failed: {e}")),
                None,
                None,
            ),
        };
        store.finish_notify_run(run_id, &end)?;
        tracing::info!(
            account = principal.id,
            user = %principal.name,
            script = %run.name,
            trigger = trigger.as_str(),
            outcome = %end.outcome,
            reason = end.reason.as_deref().unwrap_or(""),
            duration_ms = end.duration_ms,
            "notification script ran"
        );
        let record = store.notify_run(run_id)?.ok_or_else(|| {
            NotifyError::refused(format!("run {run_id} vanished from the state store"))
        })?;
        if trigger == Trigger::Desktop {
            self.0.live.publish(
                principal.id,
                &json!({
                    "type": "run",
                    "run_id": record.id,
                    "script": record.script,
                    "outcome": record.outcome,
                    "reason": record.reason,
                    "notification": record.notification,
                }),
            );
        }
        Ok(RunReport {
            run: record,
            notification,
            preview,
        })
    }

    async fn execute(
        &self,
        principal: &Principal,
        run: &ToRun,
        trigger: Trigger,
        run_id: i64,
    ) -> Result<(NotifyRunEnd, Option<StoredNotification>, Option<Value>)> {
        let options = &self.0.options;
        let Some(prlimit) = self.0.prlimit.clone() else {
            let end = NotifyRunEnd::failed(
                "the server has no prlimit (util-linux) to limit scripts with; an administrator must install it",
            );
            return Ok((end, None, None));
        };
        let run_as = self.run_as(principal.id);
        if run_as.is_some()
            && let Some(closed) = closed_ancestor(&options.work_dir)
        {
            let end = NotifyRunEnd::failed(format!(
                "scripts run as their own users, who cannot enter {}; an administrator must \
                     set notify.work_dir to a folder others may enter, or `chmod o+x` it",
                closed.display()
            ));
            return Ok((end, None, None));
        }
        let workdir = self.workspace(principal.id, run_as)?;
        let script_path = self.stage(principal.id, run, run_as)?;
        let (session, jti) = self.0.auth.issue_scoped(
            principal.clone(),
            TokenScope::Script,
            options.limits.timeout + TOKEN_MARGIN,
        )?;
        let env = vec![
            (
                "PATH".to_string(),
                "/usr/local/bin:/usr/bin:/bin".to_string(),
            ),
            ("HOME".into(), workdir.display().to_string()),
            ("TMPDIR".into(), workdir.join(".tmp").display().to_string()),
            ("LANG".into(), "C.UTF-8".into()),
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
            ("PYTHONUNBUFFERED".into(), "1".into()),
            ("DATAPORT_URL".into(), options.server_url.clone()),
            ("DATAPORT_TOKEN".into(), session.token.clone()),
            ("DATAPORT_USER".into(), principal.name.clone()),
            ("DATAPORT_SCRIPT".into(), run.name.clone()),
            ("DATAPORT_RUN_ID".into(), run_id.to_string()),
        ];
        let (program, args): (PathBuf, Vec<OsString>) = match run.kind {
            ScriptKind::Python => (options.python.clone(), vec![script_path.clone().into()]),
            ScriptKind::Executable => (script_path.clone(), Vec::new()),
        };
        let launch = Launch {
            program,
            args,
            workdir: workdir.clone(),
            script_dir: script_path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            env,
            limits: options.limits.clone(),
            run_as,
            sandbox: self.0.sandbox.clone(),
            prlimit,
        };
        let finished = sandbox::run(&launch).await;
        // The token dies with the run, whatever the script left behind.
        if let Err(e) = self.0.auth.revoke_id(&jti, session.expires_at) {
            tracing::warn!(error = %e, "cannot revoke a script's token");
        }
        let mut end = NotifyRunEnd {
            duration_ms: finished.duration.as_millis() as i64,
            exit_code: match finished.stop {
                Stop::Exited(code) => Some(code),
                _ => None,
            },
            stdout: excerpt_head(&finished.stdout),
            stderr: excerpt_tail(&finished.stderr),
            deliveries: "[]".into(),
            ..Default::default()
        };
        if let Some(reason) = finished.stop.reason(&options.limits) {
            end.outcome = "failed".into();
            end.reason = Some(reason);
            return Ok((end, None, None));
        }
        let output = match script::parse_output(&finished.stdout) {
            Parsed::Empty => {
                end.outcome = "quiet".into();
                end.reason = Some("printed nothing".into());
                return Ok((end, None, None));
            }
            Parsed::Invalid(why) => {
                end.outcome = "failed".into();
                end.reason = Some(why);
                return Ok((end, None, None));
            }
            Parsed::Output(o) if !o.notify => {
                end.outcome = "quiet".into();
                end.reason = Some("notify: false".into());
                return Ok((end, None, None));
            }
            Parsed::Output(o) => o,
        };
        let cooldown = script::cooldown(output.cooldown.as_ref());
        if trigger == Trigger::Schedule
            && let Some((sent, secs)) = self.0.store.notify_cooldown(principal.id, &run.name)?
        {
            let until = sent.saturating_add(secs.saturating_mul(1000));
            if now_ms() < until {
                end.outcome = "cooldown".into();
                end.reason = Some(format!(
                    "in cooldown until {}",
                    timestamp(until).unwrap_or_default()
                ));
                return Ok((end, None, None));
            }
        }
        let (image, image_note) = match output.image_path.as_deref() {
            None => (None, None),
            Some(p) => match self.read_image(&workdir, p) {
                Ok(img) => (Some(img), None),
                Err(why) => (None, Some(format!("image not attached: {why}"))),
            },
        };
        let (title, message) = text_of(&output, &run.name);
        if trigger == Trigger::Test {
            end.outcome = "tested".into();
            end.reason = image_note;
            let preview = json!({
                "title": title,
                "message": message,
                "cooldown_seconds": cooldown.as_secs(),
                "image": image.as_ref().map(|i| json!({"bytes": i.bytes.len(), "type": i.mime})),
                "data": output.data,
            });
            return Ok((end, None, Some(preview)));
        }
        let (notification, deliveries, delivered) = self
            .deliver(principal, run_id, &run.name, title, message, &output, image)
            .await?;
        end.deliveries = Value::Array(deliveries).to_string();
        end.notification = Some(notification.id.clone());
        if delivered {
            self.0.store.set_notify_cooldown(
                principal.id,
                &run.name,
                now_ms(),
                cooldown.as_secs() as i64,
            )?;
            end.outcome = "sent".into();
            end.reason = image_note;
        } else {
            end.outcome = "delivery_failed".into();
            end.reason = Some(
                [
                    Some("Telegram did not take it; the cooldown did not start".to_string()),
                    image_note,
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; "),
            );
        }
        Ok((end, Some(notification), None))
    }

    /// Reads the image a run named: inside its working folder (links resolved, never
    /// followed out of it), a regular file within the size limit, a PNG, JPEG, GIF or WebP.
    fn read_image(&self, workdir: &Path, path: &str) -> std::result::Result<Image, String> {
        let given = Path::new(path);
        let full = if given.is_absolute() {
            given.to_path_buf()
        } else {
            workdir.join(given)
        };
        let real = full
            .canonicalize()
            .map_err(|_| format!("{path} does not exist"))?;
        let home = workdir
            .canonicalize()
            .map_err(|e| format!("the working folder: {e}"))?;
        if !real.starts_with(&home) {
            return Err(format!(
                "{path} is outside the script's working folder; write images there"
            ));
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&real)
            .map_err(|e| format!("{path}: {e}"))?;
        let meta = file.metadata().map_err(|e| format!("{path}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{path} is not a file"));
        }
        let limit = self.0.options.max_image_bytes;
        if meta.len() > limit {
            return Err(format!(
                "{path} is {} bytes; the limit is {limit} (notify.max_image_bytes)",
                meta.len()
            ));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.by_ref()
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{path}: {e}"))?;
        let (ext, mime) = image_type(&bytes)
            .ok_or_else(|| format!("{path} is not a PNG, JPEG, GIF or WebP image"))?;
        Ok(Image { bytes, ext, mime })
    }

    fn image_path(&self, account: i64, file: &str) -> PathBuf {
        self.0
            .options
            .data_dir
            .join("notify/images")
            .join(account.to_string())
            .join(file)
    }

    #[allow(clippy::too_many_arguments)]
    async fn deliver(
        &self,
        principal: &Principal,
        run_id: i64,
        script_name: &str,
        title: String,
        message: String,
        output: &ScriptOutput,
        image: Option<Image>,
    ) -> Result<(StoredNotification, Vec<Value>, bool)> {
        let id = uuid::Uuid::new_v4().to_string();
        let image_file = match &image {
            Some(img) => {
                let file = format!("{id}.{}", img.ext);
                write_bytes_atomic(&self.image_path(principal.id, &file), &img.bytes)?;
                Some(file)
            }
            None => None,
        };
        let data = output
            .data
            .as_ref()
            .map(Value::to_string)
            .filter(|d| d.len() <= MAX_DATA)
            .unwrap_or_else(|| "{}".into());
        let stored = StoredNotification {
            id: id.clone(),
            account_id: principal.id,
            script: script_name.to_string(),
            run_id: Some(run_id),
            title,
            message,
            image: image_file,
            data,
            created_ms: now_ms(),
        };
        self.0.store.insert_notification(&stored)?;
        let mut deliveries = vec![json!({"channel": "portal", "ok": true})];
        let connections = self
            .0
            .live
            .publish(principal.id, &self.live_message(&stored));
        deliveries.push(
            json!({"channel": "websocket", "ok": connections > 0, "connections": connections}),
        );
        let mut delivered = true;
        if let Some(telegram) = &self.0.telegram
            && let Some(chat) = self
                .0
                .store
                .telegram_link(principal.id)?
                .and_then(|l| l.chat_id)
        {
            let photo = image.map(|img| Photo {
                file_name: format!("{}.{}", script_name, img.ext),
                bytes: img.bytes,
                mime: img.mime,
            });
            match telegram
                .send_notification(chat, &stored.title, &stored.message, photo)
                .await
            {
                Ok(()) => deliveries.push(json!({"channel": "telegram", "ok": true})),
                Err(e) => {
                    delivered = false;
                    self.unlink_if_gone(principal.id, &e);
                    tracing::warn!(account = principal.id, error = %e, "Telegram delivery failed");
                    deliveries
                        .push(json!({"channel": "telegram", "ok": false, "error": e.to_string()}));
                }
            }
        }
        Ok((stored, deliveries, delivered))
    }

    /// A chat that cannot receive messages (blocked bot, deleted chat) is unlinked, saying so.
    pub(crate) fn unlink_if_gone(&self, account: i64, error: &TelegramError) {
        let reason = match error {
            TelegramError::Blocked { .. } => "the bot was blocked in Telegram",
            TelegramError::ChatGone { .. } => "the Telegram chat no longer exists",
            _ => return,
        };
        match self.0.store.unlink_telegram(account, reason, now_ms()) {
            Ok(true) => tracing::warn!(account, reason, "Telegram chat unlinked"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "cannot unlink a Telegram chat"),
        }
    }

    /// The gateway's message for a notification.
    pub fn live_message(&self, n: &StoredNotification) -> Value {
        json!({
            "type": "notification",
            "id": n.id,
            "title": n.title,
            "message": n.message,
            "script": n.script,
            "timestamp": timestamp(n.created_ms).unwrap_or_default(),
            "image_url": n.image.as_ref().map(|_| self.image_url(&n.id)),
        })
    }

    /// Where the owner fetches a notification's image.
    pub fn image_url(&self, id: &str) -> String {
        format!(
            "{}/api/v1/notify/notifications/{id}/image",
            self.0.options.public_url.trim_end_matches('/')
        )
    }

    // ---- the inbox ----

    pub fn notifications(
        &self,
        account: i64,
        before_ms: Option<i64>,
        n: usize,
    ) -> Result<Vec<StoredNotification>> {
        Ok(self.0.store.notifications(account, before_ms, n)?)
    }

    /// The image of `account`'s notification `id`: its file and content type.
    pub fn image(&self, account: i64, id: &str) -> Result<(PathBuf, &'static str)> {
        let missing = || NotifyError::NoSuchNotification {
            id: id.chars().take(64).collect(),
        };
        let n = self
            .0
            .store
            .notification(id)?
            .filter(|n| n.account_id == account)
            .ok_or_else(missing)?;
        let file = n.image.ok_or_else(missing)?;
        let mime = match file.rsplit('.').next() {
            Some("png") => "image/png",
            Some("jpg") => "image/jpeg",
            Some("gif") => "image/gif",
            Some("webp") => "image/webp",
            _ => "application/octet-stream",
        };
        Ok((self.image_path(account, &file), mime))
    }

    // ---- Telegram links ----

    pub fn telegram_link(&self, account: i64) -> Result<Option<TelegramLink>> {
        Ok(self.0.store.telegram_link(account)?)
    }

    /// Link the chat that was given `code` by the bot to `account`.
    pub async fn link_telegram(&self, account: i64, code: &str) -> Result<TelegramLink> {
        if self.0.telegram.is_none() {
            return Err(NotifyError::TelegramOff);
        }
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NotifyError::BadCode);
        }
        let linked = self
            .0
            .store
            .link_telegram(account, &sha256_hex(code.as_bytes()), now_ms())?
            .ok_or(NotifyError::BadCode)?;
        tracing::info!(account, chat = %linked.chat_name, "Telegram chat linked");
        if let (Some(telegram), Some(chat)) = (&self.0.telegram, linked.chat_id) {
            let name = self
                .0
                .auth
                .principal_by_id(account)
                .ok()
                .flatten()
                .map(|p| p.name)
                .unwrap_or_default();
            let text = format!("Linked: this chat now receives Dataport notifications for {name}.");
            if let Err(e) = telegram.send_message(chat, &text, false, None).await {
                tracing::warn!(error = %e, "cannot confirm a Telegram link in the chat");
            }
        }
        Ok(linked)
    }

    /// Unlink `account`'s chat by its own wish.
    pub fn unlink_telegram(&self, account: i64) -> Result<bool> {
        Ok(self
            .0
            .store
            .unlink_telegram(account, "unlinked in the portal", now_ms())?)
    }

    // ---- desktop tokens ----

    /// A desktop app's token for `principal`, and its record.
    pub fn issue_desktop_token(
        &self,
        principal: &Principal,
        label: &str,
    ) -> Result<(String, DesktopToken)> {
        let label = label.trim();
        let label = if label.is_empty() {
            "desktop app"
        } else {
            label
        };
        let (session, jti) = self.0.auth.issue_scoped(
            principal.clone(),
            TokenScope::Desktop,
            self.0.options.desktop_token_ttl,
        )?;
        let record = DesktopToken {
            id: jti,
            account_id: principal.id,
            label: label.chars().take(100).collect(),
            created_ms: now_ms(),
            expires_ms: session.expires_at.saturating_mul(1000),
            revoked_ms: None,
        };
        self.0.store.add_desktop_token(&record)?;
        tracing::info!(account = principal.id, token = %record.id, "desktop token issued");
        Ok((session.token, record))
    }

    pub fn desktop_tokens(&self, account: i64) -> Result<Vec<DesktopToken>> {
        Ok(self.0.store.desktop_tokens(account)?)
    }

    /// Revoke `account`'s desktop token `id`; false when it has none by that id.
    pub fn revoke_desktop_token(&self, account: i64, id: &str) -> Result<bool> {
        let Some(token) = self.0.store.revoke_desktop_token(account, id, now_ms())? else {
            return Ok(false);
        };
        self.0.auth.revoke_id(&token.id, token.expires_ms / 1000)?;
        tracing::info!(account, token = %token.id, "desktop token revoked");
        Ok(true)
    }

    /// Telegram link codes are kept hashed; the bot calls this for `/start`.
    pub(crate) fn put_link_code(&self, chat_id: i64, chat_name: &str, code: &str) -> Result<()> {
        let now = now_ms();
        self.0.store.put_telegram_code(
            &sha256_hex(code.as_bytes()),
            chat_id,
            chat_name,
            now,
            now + 600_000,
        )?;
        Ok(())
    }

    pub(crate) fn principal(&self, account: i64) -> Option<Principal> {
        self.0.auth.principal_by_id(account).ok().flatten()
    }
}

fn text_of(output: &ScriptOutput, script_name: &str) -> (String, String) {
    let title = output
        .title
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or(script_name);
    let message = output.message.as_deref().unwrap_or_default();
    (
        title.chars().take(MAX_TITLE).collect(),
        message.chars().take(MAX_MESSAGE).collect(),
    )
}

fn image_type(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(("png", "image/png"))
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(("jpg", "image/jpeg"))
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(("gif", "image/gif"))
    } else if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(("webp", "image/webp"))
    } else {
        None
    }
}

fn excerpt_head(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT)]);
    s.into_owned()
}

fn excerpt_tail(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(EXCERPT)..]);
    s.into_owned()
}

/// `%Y-%m-%dT%H:%M:%SZ` of Unix ms.
pub(crate) fn timestamp(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The first folder above `dir` that other users may not enter (no `o+x`), if any.
fn closed_ancestor(dir: &Path) -> Option<PathBuf> {
    let dir = std::path::absolute(dir).ok()?;
    dir.ancestors()
        .skip(1)
        .find(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
        .map(Path::to_path_buf)
}

fn make_dir(dir: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| NotifyError::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| NotifyError::io(dir, e))
}

/// A program named without a folder, found on the search path (so the sandbox can show its
/// installation); otherwise as given.
fn resolve_program(program: &Path) -> PathBuf {
    if program.components().count() != 1 {
        return program.to_path_buf();
    }
    std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
                .unwrap_or_else(|| program.to_path_buf())
        })
        .unwrap_or_else(|| program.to_path_buf())
}

/// The installation folders of an interpreter (`/opt/venv` of `/opt/venv/bin/python`, and of
/// what it links to) outside `/usr`, which the sandbox shows anyway.
fn install_prefixes(program: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let real = program.canonicalize().ok();
    for p in [Some(program.to_path_buf()), real].into_iter().flatten() {
        if let Some(prefix) = p.parent().and_then(Path::parent)
            && !prefix.starts_with("/usr")
            && prefix != Path::new("/")
            && !out.iter().any(|o: &PathBuf| o == prefix)
        {
            out.push(prefix.to_path_buf());
        }
    }
    // A virtualenv names the installation it was made from.
    if let Some(venv) = program.parent().and_then(Path::parent)
        && let Ok(cfg) = std::fs::read_to_string(venv.join("pyvenv.cfg"))
    {
        for line in cfg.lines() {
            if let Some(home) = line
                .strip_prefix("home")
                .map(|r| r.trim_start_matches([' ', '=']))
            {
                let home = Path::new(home.trim());
                if let Some(prefix) = home.parent()
                    && !prefix.starts_with("/usr")
                    && !out.iter().any(|o| o == prefix)
                {
                    out.push(prefix.to_path_buf());
                }
            }
        }
    }
    out
}
