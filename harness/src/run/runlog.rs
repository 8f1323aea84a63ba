//! The run log: one line per event of a program run on the host's clock (the same clock as
//! the console log), and the programs themselves, so a report can be traced back to the
//! operation that ran when it appeared. This module writes the format and reads it back.
//!
//! ```text
//! 2026-12-02T10:00:00.123456Z executing program 0123abcd4567ef89: 3 ops, 1 threads
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
