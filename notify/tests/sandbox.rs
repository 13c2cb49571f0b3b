//! Scripts as real processes: what stops them, and what they are given.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dataport_notify::sandbox::{self, Launch, Limits, Stop};

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(5),
        memory_bytes: 512 << 20,
        cpu_seconds: 10,
        max_processes: 64,
        max_output_bytes: 64 * 1024,
        max_file_bytes: 1 << 20,
    }
}

fn shell(dir: &std::path::Path, script: &str, limits: Limits) -> Launch {
    Launch {
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), script.into()],
        workdir: dir.to_path_buf(),
        script_dir: dir.to_path_buf(),
        env: vec![("ONLY".into(), "this".into())],
        limits,
        run_as: None,
        sandbox: None,
        prlimit: sandbox::find_prlimit().expect("prlimit (util-linux)"),
    }
}

#[tokio::test]
async fn a_clean_exit_keeps_its_output_and_gets_only_the_given_environment() {
    let dir = tempfile::tempdir().unwrap();
    let done = sandbox::run(&shell(dir.path(), "env; pwd", limits())).await;
    assert_eq!(done.stop, Stop::Exited(0));
    let out = String::from_utf8(done.stdout).unwrap();
    assert!(out.contains("ONLY=this"), "{out}");
    // Nothing of the parent's environment (cargo sets CARGO_* for tests).
    assert!(!out.contains("CARGO"), "{out}");
    assert!(out.contains(dir.path().to_str().unwrap()), "{out}");
}

#[tokio::test]
async fn a_non_zero_exit_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let done = sandbox::run(&shell(dir.path(), "echo oops >&2; exit 3", limits())).await;
    assert_eq!(done.stop, Stop::Exited(3));
    assert_eq!(done.stderr, b"oops\n");
    assert_eq!(done.stop.reason(&limits()).unwrap(), "exited with code 3");
}

#[tokio::test]
async fn a_hanging_script_is_stopped_at_its_timeout_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = limits();
    l.timeout = Duration::from_millis(500);
    let marker = dir.path().join("child-alive");
    // A background child that would outlive its parent, then a hang.
    let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
    let started = Instant::now();
    let done = sandbox::run(&shell(dir.path(), &script, l.clone())).await;
    assert_eq!(done.stop, Stop::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        done.stop
            .reason(&l)
            .unwrap()
            .contains("timed out after 0 s")
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !marker.exists(),
        "the background child was killed with the run"
    );
}

#[tokio::test]
async fn a_child_left_running_after_a_clean_exit_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("child-alive");
    let script = format!(
        "(sleep 1; touch {}) >/dev/null 2>&1 & echo done",
        marker.display()
    );
    let done = sandbox::run(&shell(dir.path(), &script, limits())).await;
    assert_eq!(done.stop, Stop::Exited(0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!marker.exists());
}

#[tokio::test]
async fn flooding_stdout_is_stopped_at_the_output_limit() {
    let dir = tempfile::tempdir().unwrap();
    let done = sandbox::run(&shell(dir.path(), "yes flood", limits())).await;
    assert_eq!(done.stop, Stop::OutputLimit);
    assert!(done.stdout.len() <= 64 * 1024);
    let done = sandbox::run(&shell(dir.path(), "yes flood >&2", limits())).await;
    assert_eq!(done.stop, Stop::OutputLimit, "stderr counts too");
}

#[tokio::test]
async fn the_cpu_limit_stops_a_busy_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = limits();
    l.cpu_seconds = 1;
    l.timeout = Duration::from_secs(20);
    let done = sandbox::run(&shell(dir.path(), "while :; do :; done", l.clone())).await;
    assert!(matches!(done.stop, Stop::Signaled(_)), "{:?}", done.stop);
    assert!(
        done.stop.reason(&l).unwrap().contains("CPU"),
        "{:?}",
        done.stop.reason(&l)
    );
}

#[tokio::test]
async fn writing_a_file_over_the_limit_fails() {
    let dir = tempfile::tempdir().unwrap();
    let done = sandbox::run(&shell(
        dir.path(),
        "head -c 2000000 /dev/zero > big; echo $?",
        limits(),
    ))
    .await;
    let big = std::fs::metadata(dir.path().join("big"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(big <= 1 << 20, "{big}");
    let _ = done;
}

#[tokio::test]
async fn a_program_that_does_not_exist_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut launch = shell(dir.path(), "", limits());
    launch.program = PathBuf::from("/nonexistent/interpreter");
    let done = sandbox::run(&launch).await;
    assert_eq!(done.stop, Stop::Exited(127));
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(err.contains("/nonexistent/interpreter"), "{err}");
    let mut launch = shell(dir.path(), "", limits());
    launch.prlimit = PathBuf::from("/nonexistent/prlimit");
    assert!(matches!(
        sandbox::run(&launch).await.stop,
        Stop::NotStarted(_)
    ));
}
