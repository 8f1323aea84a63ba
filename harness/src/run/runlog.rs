//! The run log: one line per event of a program run on the host's clock (the same clock as
//! the console log), and the programs themselves, so a report can be traced back to the
//! operation that ran when it appeared. This module writes the format and reads it back.
//!
//! ```text
//! 2026-12-02T10:00:00.123456Z executing program 0123abcd4567ef89: 3 ops, 1 threads
//!     # devices at start: dev 0x0 plugged 0x100000000 requested 0x20000000
//!     virtio_mem_resize(dev=0x0, size=0x10000000)
//!     ...
//! 2026-12-02T10:00:00.130000Z executing op 0 (thread 0, guest time 12.345678): virtio_mem_resize(...)
//! 2026-12-02T10:00:00.131000Z op 0 done (thread 0) in 0.512 ms: ok
//! ```

use anyhow::{Context, Result};
use hotfuzz_vm::console::format_time;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The words that start a program in the log.
const PROGRAM: &str = " executing program ";

/// Starts the comment line that heads a logged program with its virtio-mem devices' sizes
/// when it started. It travels with the program into `programs.prog`, so that a replay of
/// the program on a fresh guest can first put the devices back where they were: a shrink
/// that races a PFN walker needs the memory it shrinks from.
pub const DEVICES_AT_START: &str = "# devices at start:";

/// A virtio-mem device as a program found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAtStart {
    /// The device's index (a program's `dev` argument).
    pub dev: u32,
    /// Bytes plugged.
    pub plugged: u64,
    /// Bytes requested (differs from `plugged` while the device is still resizing).
    pub requested: u64,
}

/// The [`DEVICES_AT_START`] line for `devs` (no newline).
pub fn devices_line(devs: &[DeviceAtStart]) -> String {
    let parts: Vec<String> = devs
        .iter()
        .map(|d| {
            format!(
                "dev {:#x} plugged {:#x} requested {:#x}",
                d.dev, d.plugged, d.requested
            )
        })
        .collect();
    format!("{DEVICES_AT_START} {}", parts.join("; "))
}

/// The devices a program's text says it started with (empty when it says nothing, or the
/// line is not one [`devices_line`] wrote).
pub fn devices_at_start(program_text: &str) -> Vec<DeviceAtStart> {
    let Some(rest) = program_text
        .lines()
        .find_map(|l| l.trim().strip_prefix(DEVICES_AT_START))
    else {
        return Vec::new();
    };
    let hex = |s: &str| u64::from_str_radix(s.strip_prefix("0x")?, 16).ok();
    let mut out = Vec::new();
    for part in rest.split(';') {
        let w: Vec<&str> = part.split_whitespace().collect();
        let ["dev", dev, "plugged", plugged, "requested", requested] = w.as_slice() else {
            return Vec::new();
        };
        match (hex(dev), hex(plugged), hex(requested)) {
            (Some(dev), Some(plugged), Some(requested)) if dev <= u64::from(u32::MAX) => {
                out.push(DeviceAtStart {
                    dev: dev as u32,
                    plugged,
                    requested,
                })
            }
            _ => return Vec::new(),
        }
    }
    out
}

/// An append-only log of program runs with host timestamps.
pub struct RunLog {
    w: BufWriter<File>,
    path: PathBuf,
}

impl RunLog {
    /// Opens (appends to) `path`.
    pub fn open(path: &Path) -> Result<RunLog> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening run log {}", path.display()))?;
        Ok(RunLog {
            w: BufWriter::new(f),
            path: path.to_path_buf(),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one timestamped line (and flushes, so a crash loses nothing).
    pub fn line(&mut self, text: &str) {
        let _ = writeln!(self.w, "{} {text}", format_time(SystemTime::now()));
        let _ = self.w.flush();
    }

    /// Starts a program: its id, size and text (what [`programs`] reads back).
    pub fn program(&mut self, id: &str, ops: usize, threads: usize, text: &str) {
        self.line(&format!(
            "{}{id}: {ops} ops, {threads} threads",
            PROGRAM.trim_start()
        ));
        for l in text.lines() {
            let _ = writeln!(self.w, "    {l}");
        }
        let _ = self.w.flush();
    }
}

/// A program found in a run log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// Its id (the hash of its text).
    pub id: String,
    /// Its text.
    pub text: String,
}

/// The programs of a run log, oldest first.
pub fn programs(log: &str) -> Vec<Logged> {
    let mut out = Vec::new();
    let mut cur: Option<Logged> = None;
    for l in log.lines() {
        if let Some(rest) = l.split(PROGRAM).nth(1) {
            if let Some(p) = cur.take().filter(|p| !p.text.is_empty()) {
                out.push(p);
            }
            let id = rest.split(':').next().unwrap_or("").trim().to_string();
            cur = Some(Logged {
                id,
                text: String::new(),
            });
        } else if let Some(p) = cur.as_mut() {
            if let Some(op) = l.strip_prefix("    ") {
                p.text.push_str(op);
                p.text.push('\n');
            } else if !p.text.is_empty() {
                out.extend(cur.take());
            }
        }
    }
    out.extend(cur.filter(|p| !p.text.is_empty()));
    out
}

/// The texts of [`programs`].
pub fn program_texts(log: &str) -> Vec<String> {
    programs(log).into_iter().map(|p| p.text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lines_round_trip_and_junk_reads_as_nothing() {
        let devs = [
            DeviceAtStart {
                dev: 0,
                plugged: 4 << 30,
                requested: 512 << 20,
            },
            DeviceAtStart {
                dev: 1,
                plugged: 0,
                requested: 0,
            },
        ];
        let line = devices_line(&devs);
        assert_eq!(
            line,
            "# devices at start: dev 0x0 plugged 0x100000000 requested 0x20000000; \
             dev 0x1 plugged 0x0 requested 0x0"
        );
        let text = format!("{line}\nvirtio_mem_wait(dev=0x0, ms=0x1)\n");
        assert_eq!(devices_at_start(&text), devs);
        assert!(devices_at_start("yield()\n").is_empty());
        assert!(devices_at_start("# devices at start: dev 0x0 plugged lots\n").is_empty());
        assert!(
            devices_at_start("# devices at start: dev 0x0 plugged 0x1 requested 12\n").is_empty()
        );
    }

    #[test]
    fn programs_written_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.log");
        let mut log = RunLog::open(&p).unwrap();
        log.program("aa", 2, 1, "yield()\nsleep_ms(ms=0x1)\n");
        log.line("executing op 0 (thread 0, guest time 1.000000): yield()");
        log.line("op 0 done (thread 0) in 0.1 ms: ok");
        log.program("bb", 1, 1, "yield()\n");
        drop(log);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            programs(&text),
            vec![
                Logged {
                    id: "aa".into(),
                    text: "yield()\nsleep_ms(ms=0x1)\n".into()
                },
                Logged {
                    id: "bb".into(),
                    text: "yield()\n".into()
                }
            ]
        );
    }
}
