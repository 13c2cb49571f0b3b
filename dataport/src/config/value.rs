//! The value types of configuration keys: how each is read from text (a flag, an environment
//! variable, a default) or from YAML, and how `dataport config` shows it. Every parser names
//! the key in its error.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use yaml_serde::Value;

use super::ConfigError;

/// Where a key's value may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// One value: file, environment, flag.
    Scalar,
    /// A list: a YAML sequence, or comma-separated text in the environment or a flag.
    List,
    /// A structure (a map or a list of records): the YAML file only.
    Structured,
}

/// A type a configuration key can have.
pub(crate) trait Setting: Sized {
    const FORM: Form = Form::Scalar;
    /// Shown masked by `dataport config`, never given as a flag.
    const SECRET: bool = false;
    /// The value's placeholder in `--help`.
    const HINT: &'static str = "VALUE";

    fn from_text(key: &str, text: &str) -> Result<Self, ConfigError>;

    fn from_yaml(key: &str, value: &Value) -> Result<Self, ConfigError> {
        Self::from_text(key, &scalar_text(key, value)?)
    }

    /// The value of a key without a default that nobody set; `None` when the type has none.
    fn unset() -> Option<Self> {
        None
    }

    /// The effective value, as `dataport config` prints it.
    fn show(&self) -> String;
}

pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// A YAML scalar as text (`8080`, `true` and `'8080'` alike).
fn scalar_text(key: &str, value: &Value) -> Result<String, ConfigError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err(invalid(key, "has no value")),
        _ => Err(invalid(key, "must be a single value, not a list or a map")),
    }
}

impl Setting for SocketAddr {
    const HINT: &'static str = "ADDR";

    fn from_text(key: &str, text: &str) -> Result<Self, ConfigError> {
        let value = text.trim();
        let candidate = value
            .strip_prefix("localhost:")
            .map(|p| format!("127.0.0.1:{p}"));
        candidate.as_deref().unwrap_or(value).parse().map_err(|_| {
            invalid(
                key,
                format!("'{value}' is not an address like 127.0.0.1:8080"),
            )
        })
    }

    fn show(&self) -> String {
        self.to_string()
    }
}

impl Setting for Duration {
    const HINT: &'static str = "DURATION";

    fn from_text(key: &str, text: &str) -> Result<Self, ConfigError> {
        parse_duration(key, text)
    }

    fn show(&self) -> String {
        let ms = self.as_millis();
        let secs = self.as_secs();
        if !ms.is_multiple_of(1000) || ms == 0 {
            return format!("{ms}ms");
        }
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if secs.is_multiple_of(size) {
                return format!("{}{unit}", secs / size);
            }
        }
        format!("{secs}s")
    }
}

/// `250ms`, `30s`, `5m`, `1h`, `2d`, or plain seconds.
pub(crate) fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let (num, unit) = split_unit(value.trim());
    let n: f64 = num.parse().map_err(|_| {
        invalid(
            key,
            format!("'{value}' is not a duration like 30s, 5m or 250ms"),
        )
    })?;
    let secs = match unit.to_ascii_lowercase().as_str() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => {
            return Err(invalid(
                key,
                format!("'{value}' has an unknown unit (use ms, s, m, h or d)"),
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(invalid(key, format!("'{value}' must be zero or positive")));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A number of bytes: `1024`, `512KiB`, `64MB`, `8GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bytes(pub(crate) usize);

impl Setting for Bytes {
    const HINT: &'static str = "SIZE";

    fn from_text(key: &str, text: &str) -> Result<Self, ConfigError> {
        parse_size(key, text).map(Bytes)
    }

    fn show(&self) -> String {
        human_bytes(self.0)
    }
}

/// `1024`, `512KiB`, `64MB`, `8GiB`, `1TB`.
pub(crate) fn parse_size(key: &str, value: &str) -> Result<usize, ConfigError> {
    let (num, unit) = split_unit(value.trim());
    let n: f64 = num
        .parse()
        .map_err(|_| invalid(key, format!("'{value}' is not a size like 512MiB or 8GiB")))?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0f64.powi(4),
        _ => {
            return Err(invalid(
                key,
                format!("'{value}' has an unknown unit (use B, KiB, MiB, GiB, KB, MB, GB)"),
            ));
        }
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(invalid(key, format!("'{value}' must be at least 1 byte")));
    }
    Ok(bytes as usize)
}

/// `4 MiB`, or the exact count when no binary unit divides it.
fn human_bytes(n: usize) -> String {
    for (unit, size) in [("TiB", 1usize << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    if n >= 1 << 30 {
        return format!("{:.1}GiB", n as f64 / (1u64 << 30) as f64);
    }
    if n.is_multiple_of(1024) && n > 0 {
        return format!("{}KiB", n / 1024);
    }
    format!("{n}B")
}

/// Memory: bytes, or a share of physical memory (`60%`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Memory {
    pub(crate) bytes: usize,
    /// The percentage it was given as, if it was.
    share: Option<f64>,
}

impl Setting for Memory {
    const HINT: &'static str = "SIZE|PERCENT";

    fn from_text(key: &str, text: &str) -> Result<Self, ConfigError> {
        let Some(p) = text.trim().strip_suffix('%') else {
            return parse_size(key, text).map(|bytes| Memory { bytes, share: None });
        };
        let pct: f64 = p
            .trim()
            .parse()
            .map_err(|_| invalid(key, format!("'{text}' is not a percentage like 60%")))?;
        if !(1.0..=95.0).contains(&pct) {
            return Err(invalid(
                key,
                format!("'{text}' must be between 1% and 95% of memory"),
            ));
        }
        let total = physical_memory().unwrap_or(8 << 30);
        Ok(Memory {
            bytes: (total as f64 * pct / 100.0) as usize,
            share: Some(pct),
        })
    }

    fn show(&self) -> String {
        match self.share {
            Some(pct) => format!("{pct}% ({})", human_bytes(self.bytes)),
            None => human_bytes(self.bytes),
        }
    }
}

/// Bytes of memory for a text that may be a share of RAM (`60%`) or a size.
#[cfg(test)]
pub(crate) fn parse_memory(key: &str, value: &str) -> Result<usize, ConfigError> {
    Memory::from_text(key, value).map(|m| m.bytes)
}

fn split_unit(v: &str) -> (&str, &str) {
    let idx = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    (v[..idx].trim(), v[idx..].trim())
}

/// Total physical memory (Linux).
fn physical_memory() -> Option<usize> {
    dataport_common::host::memory().and_then(|m| usize::try_from(m.total).ok())
}

/// A path, made absolute against the working directory once, at start: every later use
/// (object store locations, links, child processes, the log) sees one unambiguous path.
/// Nothing is resolved through symbolic links, and the path need not exist yet.
impl Setting for PathBuf {
    const HINT: &'static str = "PATH";

    fn from_text(key: &str, text: &str) -> Result<Self, ConfigError> {
        absolute(key, Path::new(text))
    }

    fn show(&self) -> String {
        self.display().to_string()
    }
}

pub(crate) fn absolute(key: &str, path: &Path) -> Result<PathBuf, ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    std::path::absolute(path).map_err(|e| {
        invalid(
            key,
            format!(
                "cannot resolve {} against the working directory: {e}",
                path.display()
            ),
        )
    })
}

impl Setting for bool {
    const HINT: &'static str = "true|false";

    fn from_text(key: &str, text: &str) -> Result<Self, ConfigError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(invalid(key, format!("'{text}' is not true or false"))),
        }
    }

    fn show(&self) -> String {
        self.to_string()
    }
}

macro_rules! whole_number {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            const HINT: &'static str = "N";

            fn from_text(key: &str, text: &str) -> Result<Self, ConfigError> {
                text.trim().parse().map_err(|_| {
                    invalid(key, format!("'{text}' is not a whole number from 0 to {}", <$t>::MAX))
                })
            }

            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
whole_number!(u16, u32, usize);

impl Setting for String {
    const HINT: &'static str = "TEXT";

    fn from_text(_key: &str, text: &str) -> Result<Self, ConfigError> {
        Ok(text.to_string())
    }

    fn show(&self) -> String {
        self.clone()
    }
}

/// A secret value whose `Debug` output never shows it; `dataport config` masks it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Setting for Secret {
    const SECRET: bool = true;
    const HINT: &'static str = "SECRET";

    fn from_text(_key: &str, text: &str) -> Result<Self, ConfigError> {
        Ok(Secret(text.to_string()))
    }

    fn show(&self) -> String {
        "******** (set)".into()
    }
}

impl<T: Setting> Setting for Option<T> {
    const FORM: Form = T::FORM;
    const SECRET: bool = T::SECRET;
    const HINT: &'static str = T::HINT;

    fn from_text(key: &str, text: &str) -> Result<Self, ConfigError> {
        T::from_text(key, text).map(Some)
    }

    fn from_yaml(key: &str, value: &Value) -> Result<Self, ConfigError> {
        T::from_yaml(key, value).map(Some)
    }

    fn unset() -> Option<Self> {
        Some(None)
    }

    fn show(&self) -> String {
        self.as_ref().map(T::show).unwrap_or_default()
    }
}

/// An element of a list-valued key.
pub(crate) trait Item: Sized {
    fn parse(key: &str, text: &str) -> Result<Self, ConfigError>;
    fn show(&self) -> String;
}

impl Item for String {
    fn parse(_key: &str, text: &str) -> Result<Self, ConfigError> {
        Ok(text.to_string())
    }

    fn show(&self) -> String {
        self.clone()
    }
}

/// An address (`10.0.0.5`) or a CIDR range (`10.0.0.0/8`).
impl Item for ipnet::IpNet {
    fn parse(key: &str, v: &str) -> Result<Self, ConfigError> {
        v.parse::<ipnet::IpNet>()
            .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| invalid(key, format!("'{v}' is not an address or CIDR range")))
    }

    fn show(&self) -> String {
        self.to_string()
    }
}

impl<T: Item> Setting for Vec<T> {
    const FORM: Form = Form::List;
    const HINT: &'static str = "A,B,…";

    fn from_text(key: &str, text: &str) -> Result<Self, ConfigError> {
        text.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| T::parse(key, t))
            .collect()
    }

    fn from_yaml(key: &str, value: &Value) -> Result<Self, ConfigError> {
        match value {
            Value::Sequence(items) => items
                .iter()
                .map(|v| scalar_text(key, v))
                .filter(|t| t.as_ref().map_or(true, |t| !t.trim().is_empty()))
                .map(|t| T::parse(key, t?.trim()))
                .collect(),
            Value::Null => Ok(Vec::new()),
            other => Self::from_text(key, &scalar_text(key, other)?),
        }
    }

    fn unset() -> Option<Self> {
        Some(Vec::new())
    }

    fn show(&self) -> String {
        self.iter().map(T::show).collect::<Vec<_>>().join(", ")
    }
}

/// A map of settings passed on as text (`engine.datafusion`).
impl Setting for BTreeMap<String, String> {
    const FORM: Form = Form::Structured;

    fn from_text(key: &str, _text: &str) -> Result<Self, ConfigError> {
        Err(invalid(key, "is a map: set it in the YAML file"))
    }

    fn from_yaml(key: &str, value: &Value) -> Result<Self, ConfigError> {
        let Value::Mapping(map) = value else {
            return match value {
                Value::Null => Ok(BTreeMap::new()),
                _ => Err(invalid(key, "must be a map of names to values")),
            };
        };
        map.iter()
            .map(|(k, v)| {
                let name = scalar_text(key, k)?;
                let text = scalar_text(&format!("{key}.{name}"), v)?;
                Ok((name, text))
            })
            .collect()
    }

    fn unset() -> Option<Self> {
        Some(BTreeMap::new())
    }

    fn show(&self) -> String {
        self.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A structure read by serde from the YAML file (`sources`, `jobs`); its own type refuses
/// unknown fields.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Yaml<T>(pub(crate) T);

impl<T: DeserializeOwned + Serialize + Default> Setting for Yaml<T> {
    const FORM: Form = Form::Structured;

    fn from_text(key: &str, _text: &str) -> Result<Self, ConfigError> {
        Err(invalid(key, "is a structure: set it in the YAML file"))
    }

    fn from_yaml(key: &str, value: &Value) -> Result<Self, ConfigError> {
        if value.is_null() {
            return Ok(Yaml(T::default()));
        }
        yaml_serde::from_value(value.clone())
            .map(Yaml)
            .map_err(|e| invalid(key, e.to_string()))
    }

    fn unset() -> Option<Self> {
        Some(Yaml(T::default()))
    }

    fn show(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Human,
    Json,
}

impl Setting for LogFormat {
    const HINT: &'static str = "human|json";

    fn from_text(key: &str, text: &str) -> Result<Self, ConfigError> {
        match text.trim() {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(invalid(key, format!("'{other}' is not one of human, json"))),
        }
    }

    fn show(&self) -> String {
        match self {
            LogFormat::Human => "human".into(),
            LogFormat::Json => "json".into(),
        }
    }
}

/// How SMTP is secured (`mail.smtp_security`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MailSecurity(pub(crate) dataport_mail::Security);

impl Setting for MailSecurity {
    const HINT: &'static str = "starttls|tls|none";

    fn from_text(key: &str, text: &str) -> Result<Self, ConfigError> {
        text.parse().map(MailSecurity).map_err(|m| invalid(key, m))
    }

    fn show(&self) -> String {
        match self.0 {
            dataport_mail::Security::StartTls => "starttls".into(),
            dataport_mail::Security::Tls => "tls".into(),
            dataport_mail::Security::None => "none".into(),
        }
    }
}
