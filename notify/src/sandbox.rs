//! Running one script as a confined process: a clean environment, its own working folder,
//! resource limits (memory, CPU time, processes, file size, open files), a bound on its output,
//! a wall-clock timeout, an unprivileged user when the server runs as root, and a bubblewrap
//! sandbox where the machine has `bwrap`. Whatever happens, every process the run started is
//! killed before [`run`] returns.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::Command;
use tokio::sync::Notify;

/// How much of stderr a run keeps (its end).
const STDERR_KEPT: usize = 16 * 1024;
/// How long output is still read after the run's processes were killed.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What a run may use.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock time.
    pub timeout: Duration,
    /// Address space (RLIMIT_AS).
    pub memory_bytes: u64,
    /// CPU time (RLIMIT_CPU).
    pub cpu_seconds: u64,
    /// Processes of the user the script runs as (RLIMIT_NPROC); applied only when scripts run
    /// as their own user, since the count is per user.
    pub max_processes: u64,
    /// stdout and stderr together.
    pub max_output_bytes: usize,
    /// Largest file the script may write (RLIMIT_FSIZE).
    pub max_file_bytes: u64,
}

/// A user to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// Whether this process runs as root (and so must drop privileges for scripts).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `prlimit` (util-linux), which sets a run's resource limits before it starts the script.
pub fn find_prlimit() -> Option<PathBuf> {
    ["/usr/bin/prlimit", "/bin/prlimit", "/usr/local/bin/prlimit"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The bubblewrap sandbox: the system's programs and libraries read-only, the working folder
/// and the script's folder, nothing else of the file system; own PID, IPC and UTS namespaces;
/// the network shared (scripts reach the server over it).
#[derive(Debug, Clone)]
pub struct Bubblewrap {
    pub program: PathBuf,
    /// Extra folders to show read-only (the interpreter's installation, a virtualenv).
    pub read_only: Vec<PathBuf>,
}

/// Paths of the system shown read-only inside the sandbox when they exist.
const SYSTEM_PATHS: &[&str] = &[
    "/usr",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
];
/// Top-level folders that are links into `/usr` on merged systems, folders elsewhere.
const SYSTEM_DIRS: &[&str] = &["/bin", "/sbin", "/lib", "/lib64", "/lib32"];

impl Bubblewrap {
    /// `bwrap` on the search path, if the machine has it.
    pub fn find() -> Option<PathBuf> {
        ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    }

    fn args(&self, workdir: &Path, script_dir: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = [
            "--unshare-all",
            "--share-net",
            "--die-with-parent",
            "--new-session",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let mut ro = |path: &Path| {
            a.push("--ro-bind-try".into());
            a.push(path.into());
            a.push(path.into());
        };
        for p in SYSTEM_PATHS {
            ro(Path::new(p));
        }
        for p in &self.read_only {
            ro(p);
        }
        ro(script_dir);
        for dir in SYSTEM_DIRS {
            match std::fs::read_link(dir) {
                Ok(target) => {
                    a.push("--symlink".into());
                    a.push(target.into());
                    a.push((*dir).into());
                }
                Err(_) => {
                    a.push("--ro-bind-try".into());
                    a.push((*dir).into());
                    a.push((*dir).into());
                }
            }
        }
        a.push("--bind".into());
        a.push(workdir.into());
        a.push(workdir.into());
        a.push("--chdir".into());
        a.push(workdir.into());
        a.push("--".into());
        a
    }
}

/// One process to run.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The working folder (the only writable place).
    pub workdir: PathBuf,
    /// Where the script file is (shown read-only in the sandbox).
    pub script_dir: PathBuf,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    pub run_as: Option<RunAs>,
    pub sandbox: Option<Bubblewrap>,
    /// The `prlimit` program that applies the limits.
    pub prlimit: PathBuf,
}

/// How a run stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    OutputLimit,
    /// It could not be started.
    NotStarted(String),
}

impl Stop {
    /// Why the run failed, for its record; None when it exited with 0.
    pub fn reason(&self, limits: &Limits) -> Option<String> {
        match self {
            Self::Exited(0) => None,
            Self::Exited(code) if *code > 128 && *code <= 128 + 64 => Some(format!(
                "exited with code {code} ({})",
                signal_reason(code - 128, limits)
            )),
            Self::Exited(127) => {
                Some("exited with code 127 (the program was not found; see stderr)".into())
            }
            Self::Exited(code) => Some(format!("exited with code {code}")),
            Self::Signaled(sig) => Some(signal_reason(*sig, limits)),
            Self::TimedOut => Some(format!(
                "timed out after {} s and was stopped (notify.timeout)",
                limits.timeout.as_secs()
            )),
            Self::OutputLimit => Some(format!(
                "wrote more than {} bytes of output and was stopped (notify.max_output_bytes)",
                limits.max_output_bytes
            )),
            Self::NotStarted(why) => Some(format!("could not be started: {why}")),
        }
    }
}

fn signal_reason(sig: i32, limits: &Limits) -> String {
    match sig {
        libc::SIGXCPU => format!(
            "stopped at its CPU time limit of {} s (notify.cpu_seconds)",
            limits.cpu_seconds
        ),
        libc::SIGXFSZ => format!(
            "stopped writing a file larger than {} bytes (notify.max_file_bytes)",
            limits.max_file_bytes
        ),
        libc::SIGKILL => "killed (signal 9; at its memory or CPU limit?)".into(),
        libc::SIGSEGV => "crashed (segmentation fault; at its memory limit?)".into(),
        other => format!("killed by signal {other}"),
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Finished {
    pub stop: Stop,
    /// All of stdout, unless it passed the limit.
    pub stdout: Vec<u8>,
    /// The end of stderr.
    pub stderr: Vec<u8>,
    pub duration: Duration,
}

/// Runs `launch` to its end (or its limits') and kills whatever it left running.
pub async fn run(launch: &Launch) -> Finished {
    let started = Instant::now();
    // prlimit sets the limits on itself, then starts bwrap or the program with them; the
    // user is changed before prlimit starts.
    let mut cmd = Command::new(&launch.prlimit);
    cmd.args(limit_args(&launch.limits, launch.run_as.is_some()));
    cmd.arg("--");
    if let Some(bwrap) = &launch.sandbox {
        cmd.arg(&bwrap.program);
        cmd.args(bwrap.args(&launch.workdir, &launch.script_dir));
    }
    cmd.arg(&launch.program)
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(user) = launch.run_as {
        // The standard library also drops the supplementary groups when it changes user.
        cmd.uid(user.uid).gid(user.gid);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Finished {
                stop: Stop::NotStarted(e.to_string()),
                stdout: Vec::new(),
                stderr: Vec::new(),
                duration: started.elapsed(),
            };
        }
    };
    let group = child.id().map(|id| id as i32);
    let total = Arc::new(AtomicUsize::new(0));
    let over = Arc::new(Notify::new());
    let limit = launch.limits.max_output_bytes;
    let out = child.stdout.take().map(|r| {
        tokio::spawn(pump(
            r,
            Keep::Head(limit),
            limit,
            Arc::clone(&total),
            Arc::clone(&over),
        ))
    });
    let err = child.stderr.take().map(|r| {
        tokio::spawn(pump(
            r,
            Keep::Tail(STDERR_KEPT),
            limit,
            Arc::clone(&total),
            Arc::clone(&over),
        ))
    });
    let stop = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => Stop::Exited(code),
                (None, Some(sig)) => Stop::Signaled(sig),
                (None, None) => Stop::Exited(-1),
            },
            Err(e) => Stop::NotStarted(e.to_string()),
        },
        () = over.notified() => Stop::OutputLimit,
        () = tokio::time::sleep(launch.limits.timeout) => Stop::TimedOut,
    };
    // The script's own processes may outlive it (a forked child): the whole group goes.
    if let Some(pgid) = group.and_then(rustix::process::Pid::from_raw) {
        // A group that is gone already answers ESRCH.
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    let _ = child.wait().await;
    let collect = |task: Option<tokio::task::JoinHandle<Vec<u8>>>| async move {
        match task {
            Some(t) => tokio::time::timeout(DRAIN_GRACE, t)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => Vec::new(),
        }
    };
    let stdout = collect(out).await;
    let stderr = collect(err).await;
    Finished {
        stop,
        stdout,
        stderr,
        duration: started.elapsed(),
    }
}

/// prlimit's options for `limits` (the process count only when the run has its own user:
/// it counts every process of the user).
fn limit_args(limits: &Limits, own_user: bool) -> Vec<String> {
    let mut args = vec![
        format!("--as={0}:{0}", limits.memory_bytes),
        format!(
            "--cpu={}:{}",
            limits.cpu_seconds,
            limits.cpu_seconds.saturating_add(1)
        ),
        format!("--fsize={0}:{0}", limits.max_file_bytes),
        "--core=0:0".to_string(),
        "--nofile=256:256".to_string(),
    ];
    if own_user {
        args.push(format!("--nproc={0}:{0}", limits.max_processes));
    }
    args
}

enum Keep {
    Head(usize),
    Tail(usize),
}

async fn pump(
    mut reader: impl AsyncRead + Unpin,
    keep: Keep,
    limit: usize,
    total: Arc<AtomicUsize>,
    over: Arc<Notify>,
) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let seen = total.fetch_add(n, Ordering::Relaxed) + n;
        match keep {
            Keep::Head(cap) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
            Keep::Tail(cap) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > cap {
                    kept.drain(..kept.len() - cap);
                }
            }
        }
        if seen > limit {
            over.notify_one();
            break;
        }
    }
    kept
}
