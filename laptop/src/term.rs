//! Terminal output shared by every `dataport` command-line tool: plain lines on standard
//! output, logs on standard error, human-readable sizes and times.

use std::io::Write as _;

use anyhow::Context as _;

/// Prints one line to standard output; a closed pipe is an error, not a panic.
pub fn out(text: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").context("cannot write to standard output")
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SSZ`.
pub fn time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// `1536` → `1.5 KiB`.
///
/// ```
/// assert_eq!(dataport_laptop::term::human_bytes(512), "512 B");
/// assert_eq!(dataport_laptop::term::human_bytes(1536), "1.5 KiB");
/// ```
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Logs of a command-line run to standard error: warnings only when `quiet`, else also
/// Dataport's info lines; colours only on a terminal; `RUST_LOG` wins.
pub fn init_cli_logging(quiet: bool) {
    let level = if quiet { "warn" } else { "warn,dataport=info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
