//! The script contract: which names and contents are scripts, the schedule a script may ask
//! for in a comment, what a run prints (one JSON object) and the cooldown it asks for.

use std::time::Duration;

use serde::Deserialize;

use crate::error::{NotifyError, Result};

/// Longest script name.
const MAX_NAME: usize = 64;
/// Lines at the top of a script searched for its `# schedule:` comment.
const HEADER_LINES: usize = 20;
/// The cooldown of a notification that names none, or names one that does not parse.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(3600);

/// Whether `name` may name a script: a plain file name, so it can never leave its folder.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NotifyError::BadName {
            name: name.chars().take(80).collect(),
        })
    }
}

/// How a script is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptKind {
    /// `*.py`: the configured interpreter runs it.
    Python,
    /// Any other file starting with `#!`: run as itself, where the administrator allows it.
    Executable,
}

impl ScriptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::Executable => "executable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "python" => Some(Self::Python),
            "executable" => Some(Self::Executable),
            _ => None,
        }
    }
}

/// The kind of a script from its name and content; refused when it is neither.
pub fn kind_of(name: &str, content: &[u8], allow_executables: bool) -> Result<ScriptKind> {
    if name.ends_with(".py") {
        return Ok(ScriptKind::Python);
    }
    if !content.starts_with(b"#!") {
        return Err(NotifyError::refused(format!(
            "'{name}' is neither a Python script (*.py) nor an executable with a '#!' line"
        )));
    }
    if !allow_executables {
        return Err(NotifyError::refused(format!(
            "'{name}' is not a Python script (*.py), and this server runs only Python scripts \
             (an administrator may allow other executables with notify.allow_executables)"
        )));
    }
    Ok(ScriptKind::Executable)
}

/// The schedule a script asks for with a comment near its top (`# schedule: every 1h`): how
/// often it runs instead of at every run of the `notify:run` job.
pub fn schedule_of(content: &[u8]) -> Result<Option<String>> {
    let text = String::from_utf8_lossy(&content[..content.len().min(8192)]);
    for line in text.lines().take(HEADER_LINES) {
        let Some(rest) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let Some(value) = rest.trim_start().strip_prefix("schedule:") else {
            continue;
        };
        let value = value.trim();
        let interval = value.strip_prefix("every").map(str::trim);
        return match interval.and_then(parse_interval) {
            Some(_) => Ok(Some(format!("every {}", interval.unwrap_or_default()))),
            None => Err(NotifyError::refused(format!(
                "the script's schedule '{value}' is not 'every <n>m', 'every <n>h' or 'every <n>d'"
            ))),
        };
    }
    Ok(None)
}

/// The interval of a schedule (`every 30m`).
pub fn schedule_interval(schedule: &str) -> Option<Duration> {
    parse_interval(schedule.strip_prefix("every")?.trim())
}

/// `^(\d+)(m|h|d)$`, at least a minute.
pub fn parse_interval(s: &str) -> Option<Duration> {
    let unit = s.chars().last()?;
    let scale: u64 = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = digits.parse::<u64>().ok()?.checked_mul(scale)?;
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// A cooldown as the script wrote it: `^(\d+)(m|h|d)$`, anything else one hour.
pub fn cooldown(value: Option<&serde_json::Value>) -> Duration {
    value
        .and_then(|v| v.as_str())
        .and_then(parse_interval)
        .unwrap_or(DEFAULT_COOLDOWN)
}

/// What one run printed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ScriptOutput {
    pub notify: bool,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// Kept raw: anything but a well-formed duration means the default.
    #[serde(default)]
    pub cooldown: Option<serde_json::Value>,
    #[serde(default)]
    pub image_path: Option<String>,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
}

/// What a run's stdout says.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// Nothing was printed.
    Empty,
    Output(Box<ScriptOutput>),
    /// Not the contract; the reason.
    Invalid(String),
}

/// Reads a run's stdout: one JSON object. Lines printed before it (a script's own progress
/// output) are tolerated: when the whole output is not one object, its last non-empty line is
/// tried.
pub fn parse_output(stdout: &[u8]) -> Parsed {
    let Ok(text) = std::str::from_utf8(stdout) else {
        return Parsed::Invalid("the output is not UTF-8 text".into());
    };
    let text = text.trim();
    if text.is_empty() {
        return Parsed::Empty;
    }
    let first = serde_json::from_str::<serde_json::Value>(text);
    let value = match first {
        Ok(v) => v,
        Err(e) => {
            let last = text.lines().rev().map(str::trim).find(|l| !l.is_empty());
            match last.map(serde_json::from_str::<serde_json::Value>) {
                Some(Ok(v)) if v.is_object() => v,
                _ => return Parsed::Invalid(format!("the output is not a JSON object: {e}")),
            }
        }
    };
    if !value.is_object() {
        return Parsed::Invalid("the output is JSON but not an object".into());
    }
    if !value.get("notify").is_some_and(|v| v.is_boolean()) {
        return Parsed::Invalid("the object has no boolean 'notify'".into());
    }
    match serde_json::from_value::<ScriptOutput>(value) {
        Ok(out) => Parsed::Output(Box::new(out)),
        Err(e) => Parsed::Invalid(format!("the object does not follow the contract: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["revenue.py", "a", "check-stock_2.sh", "A.B"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "..",
            "a b",
            "é.py",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(
            kind_of("a.py", b"print(1)", false).ok(),
            Some(ScriptKind::Python)
        );
        assert!(kind_of("a.sh", b"#!/bin/sh\necho", false).is_err());
        assert_eq!(
            kind_of("a.sh", b"#!/bin/sh\necho", true).ok(),
            Some(ScriptKind::Executable)
        );
        assert!(kind_of("a.sh", b"echo", true).is_err());
    }

    #[test]
    fn cooldowns_follow_the_pattern() {
        let d = |s: &str| cooldown(Some(&serde_json::Value::String(s.into())));
        assert_eq!(d("30m"), Duration::from_secs(1800));
        assert_eq!(d("6h"), Duration::from_secs(6 * 3600));
        assert_eq!(d("2d"), Duration::from_secs(2 * 86_400));
        for bad in [
            "", "6", "h", "6 h", "6H", "-1h", "1.5h", "0m", "6hours", " 6h", "1w",
        ] {
            assert_eq!(d(bad), DEFAULT_COOLDOWN, "{bad}");
        }
        assert_eq!(cooldown(Some(&serde_json::json!(5))), DEFAULT_COOLDOWN);
        assert_eq!(cooldown(None), DEFAULT_COOLDOWN);
    }

    #[test]
    fn schedules() {
        assert_eq!(
            schedule_of(b"#!/usr/bin/env python3\n# schedule: every 2h\n").ok(),
            Some(Some("every 2h".into()))
        );
        assert_eq!(schedule_of(b"print(1)\n").ok(), Some(None));
        assert!(schedule_of(b"# schedule: hourly\n").is_err());
        assert_eq!(
            schedule_interval("every 2h"),
            Some(Duration::from_secs(7200))
        );
    }

    #[test]
    fn outputs() {
        assert!(matches!(parse_output(b"  \n"), Parsed::Empty));
        assert!(matches!(parse_output(b"{\"notify\": false}"), Parsed::Output(o) if !o.notify));
        assert!(matches!(
            parse_output(b"checking...\n{\"notify\": true, \"title\": \"t\"}\n"),
            Parsed::Output(o) if o.notify && o.title.as_deref() == Some("t")
        ));
        assert!(matches!(parse_output(b"not json"), Parsed::Invalid(_)));
        assert!(matches!(parse_output(b"[1]"), Parsed::Invalid(_)));
        assert!(matches!(
            parse_output(b"{\"title\": \"x\"}"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse_output(b"{\"notify\": \"yes\"}"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(parse_output(&[0xff, 0xfe]), Parsed::Invalid(_)));
    }
}
