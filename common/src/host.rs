//! The machine the server runs on, as an administrator checks it: load, memory, and the space
//! of the disk that holds a path. Read from `/proc` and `statvfs` on Linux; elsewhere the
//! figures are absent (`None`), never made up.

use std::path::Path;

use serde::Serialize;

/// Memory in bytes (`/proc/meminfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub total: u64,
    /// What can be used without swapping (`MemAvailable`).
    pub available: u64,
}

/// A file system's size and free space in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Disk {
    pub total: u64,
    /// Free for an unprivileged process.
    pub available: u64,
}

/// The load averages over 1, 5 and 15 minutes (`/proc/loadavg`).
pub fn load_average() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// Physical memory and what is available.
pub fn memory() -> Option<Memory> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_meminfo(text: &str) -> Option<Memory> {
    let kib = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let value: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(value * 1024)
    };
    Some(Memory {
        total: kib("MemTotal:")?,
        available: kib("MemAvailable:").or_else(|| kib("MemFree:"))?,
    })
}

/// The size and free space of the file system holding `path`.
pub fn disk(path: &Path) -> Option<Disk> {
    let stat = rustix::fs::statvfs(path).ok()?;
    let unit = stat.f_frsize.max(1);
    Some(Disk {
        total: stat.f_blocks.saturating_mul(unit),
        available: stat.f_bavail.saturating_mul(unit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_as_the_kernel_writes_them() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 2/1234 56789\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_loadavg("garbage"), None);
        let meminfo =
            "MemTotal:       16314508 kB\nMemFree:         1234 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            Some(Memory {
                total: 16_314_508 * 1024,
                available: 8_000_000 * 1024
            })
        );
    }

    #[test]
    fn the_disk_of_a_folder_has_room() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let disk = disk(dir.path()).unwrap_or_else(|| panic!("statvfs of a temp dir"));
        assert!(disk.total > 0 && disk.available <= disk.total);
    }
}
