//! The guest's serial console: read by its own thread into memory and a log file, every line
//! stamped with the host's wall-clock time so the console lines up with run logs.

use crate::error::{IoContext, Result};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Lines kept in memory at most (older ones stay in the log file).
const MAX_MEMORY_BYTES: usize = 64 << 20;
/// A line longer than this is split (a guest printing without newlines must not grow memory).
const MAX_LINE: usize = 64 << 10;

/// One line of console output.
#[derive(Debug, Clone)]
pub struct ConsoleLine {
    /// Position in the whole output (0-based), stable even when old lines are dropped.
    pub index: u64,
    /// Host wall-clock time the line was read.
    pub time: SystemTime,
    /// Host monotonic time the line was read.
    pub at: Instant,
    /// Text without the line terminator (`\r` removed, invalid UTF-8 replaced).
    pub text: String,
}

/// Formats a host timestamp as it appears in logs: RFC 3339 UTC with microseconds.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

#[derive(Debug)]
struct State {
    lines: VecDeque<ConsoleLine>,
    bytes_in_memory: usize,
    next_index: u64,
    eof: bool,
    total_bytes: u64,
    last_output: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

/// Handle to a console being read in the background. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Console {
    shared: Arc<Shared>,
    log_path: PathBuf,
}

/// Outcome of waiting for a console line.
#[derive(Debug, Clone)]
pub enum Wait<T> {
    /// The predicate matched this line.
    Found(T, ConsoleLine),
    /// The console closed (QEMU exited) first.
    Eof,
    /// The deadline passed first.
    Timeout,
}

impl Console {
    /// Starts reading `reader` on a new thread, appending every line to `log_path`.
    pub fn spawn<R: Read + Send + 'static>(reader: R, log_path: &Path) -> Result<Console> {
        let file = crate::cache::open_private(log_path, false)
            .ctx(|| format!("creating console log {}", log_path.display()))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                lines: VecDeque::new(),
                bytes_in_memory: 0,
                next_index: 0,
                eof: false,
                total_bytes: 0,
                last_output: None,
            }),
            cond: Condvar::new(),
        });
        let s2 = shared.clone();
        std::thread::Builder::new()
            .name("console-reader".into())
            .spawn(move || read_loop(reader, BufWriter::new(file), &s2))
            .ctx(|| "starting the console reader thread".into())?;
        Ok(Console {
            shared,
            log_path: log_path.to_path_buf(),
        })
    }

    /// Continues the console with a new source (a QEMU started again to restore a
    /// snapshot): lines keep their numbering and are appended to the same log.
    pub fn reattach<R: Read + Send + 'static>(&self, reader: R) -> Result<()> {
        let file = crate::cache::open_private(&self.log_path, true)
            .ctx(|| format!("opening console log {}", self.log_path.display()))?;
        self.lock().eof = false;
        let s2 = self.shared.clone();
        std::thread::Builder::new()
            .name("console-reader".into())
            .spawn(move || read_loop(reader, BufWriter::new(file), &s2))
            .ctx(|| "starting the console reader thread".into())?;
        Ok(())
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Index the next line will get; pass it to [`Console::lines_since`] or
    /// [`Console::wait_for`] to look only at output from now on.
    pub fn mark(&self) -> u64 {
        self.lock().next_index
    }

    /// Lines with index >= `from` still held in memory.
    pub fn lines_since(&self, from: u64) -> Vec<ConsoleLine> {
        let st = self.lock();
        st.lines
            .iter()
            .filter(|l| l.index >= from)
            .cloned()
            .collect()
    }

    /// The last `n` lines.
    pub fn last_lines(&self, n: usize) -> Vec<ConsoleLine> {
        let st = self.lock();
        let skip = st.lines.len().saturating_sub(n);
        st.lines.iter().skip(skip).cloned().collect()
    }

    /// When the guest last printed anything.
    pub fn last_output(&self) -> Option<Instant> {
        self.lock().last_output
    }

    /// True once the console has closed.
    pub fn is_eof(&self) -> bool {
        self.lock().eof
    }

    /// Bytes read so far.
    pub fn total_bytes(&self) -> u64 {
        self.lock().total_bytes
    }

    /// Waits until a line with index >= `from` makes `pred` return `Some`, the console closes,
    /// or `deadline` passes.
    pub fn wait_for<T>(
        &self,
        from: u64,
        deadline: Instant,
        mut pred: impl FnMut(&str) -> Option<T>,
    ) -> Wait<T> {
        let mut next = from;
        let mut st = self.lock();
        loop {
            for l in st.lines.iter().filter(|l| l.index >= next) {
                if let Some(t) = pred(&l.text) {
                    return Wait::Found(t, l.clone());
                }
            }
            next = st.next_index;
            if st.eof {
                return Wait::Eof;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wait::Timeout;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for a line containing `needle`.
    pub fn wait_for_text(&self, from: u64, deadline: Instant, needle: &str) -> Wait<()> {
        self.wait_for(from, deadline, |l| l.contains(needle).then_some(()))
    }

    /// Waits until the console closes or `timeout` passes; true if it closed.
    pub fn wait_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while !st.eof {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn read_loop<R: Read>(mut reader: R, mut log: BufWriter<File>, shared: &Shared) {
    let mut buf = vec![0u8; 16 << 10];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => 0,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut complete: Vec<Vec<u8>> = Vec::new();
        if n == 0 {
            if !partial.is_empty() {
                complete.push(std::mem::take(&mut partial));
            }
        } else {
            for &b in &buf[..n] {
                if b == b'\n' {
                    complete.push(std::mem::take(&mut partial));
                } else {
                    partial.push(b);
                    if partial.len() >= MAX_LINE {
                        complete.push(std::mem::take(&mut partial));
                    }
                }
            }
        }
        let stamp = format_time(wall);
        let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.total_bytes += n as u64;
        if n > 0 {
            st.last_output = Some(now);
        }
        for raw in complete {
            let mut text = String::from_utf8_lossy(&raw).into_owned();
            while text.ends_with('\r') {
                text.pop();
            }
            let _ = writeln!(log, "{stamp} {text}");
            let index = st.next_index;
            st.next_index += 1;
            st.bytes_in_memory += text.len() + 64;
            st.lines.push_back(ConsoleLine {
                index,
                time: wall,
                at: now,
                text,
            });
            while st.bytes_in_memory > MAX_MEMORY_BYTES {
                match st.lines.pop_front() {
                    Some(old) => st.bytes_in_memory -= old.text.len() + 64,
                    None => break,
                }
            }
        }
        let _ = log.flush();
        if n == 0 {
            st.eof = true;
        }
        drop(st);
        shared.cond.notify_all();
        if n == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn splits_lines_and_logs_with_timestamps() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("console.log");
        let c = Console::spawn(
            Cursor::new(b"one\r\ntwo\nthree-without-newline".to_vec()),
            &log,
        )
        .unwrap();
        assert!(c.wait_eof(Duration::from_secs(5)));
        let lines: Vec<String> = c.lines_since(0).into_iter().map(|l| l.text).collect();
        assert_eq!(lines, ["one", "two", "three-without-newline"]);
        let text = std::fs::read_to_string(&log).unwrap();
        let first = text.lines().next().unwrap();
        // 2026-11-21T15:30:01.123456Z one
        let (stamp, rest) = first.split_once(' ').unwrap();
        assert_eq!(rest, "one");
        assert!(stamp.ends_with('Z') && stamp.len() == 27, "{stamp}");
        assert!(humantime::parse_rfc3339(stamp).is_ok());
    }

    #[test]
    fn wait_for_finds_and_times_out() {
        let d = tempfile::tempdir().unwrap();
        let (r, mut w) = std::io::pipe().unwrap();
        let c = Console::spawn(r, &d.path().join("c.log")).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            w.write_all(b"noise\nLinux version 6.12\n").unwrap();
            std::thread::sleep(Duration::from_millis(200));
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        match c.wait_for(0, deadline, |l| {
            l.strip_prefix("Linux version ").map(str::to_string)
        }) {
            Wait::Found(v, line) => {
                assert_eq!(v, "6.12");
                assert_eq!(line.index, 1);
            }
            other => panic!("{other:?}"),
        }
        let from = c.mark();
        let r = c.wait_for_text(from, Instant::now() + Duration::from_millis(50), "never");
        assert!(matches!(r, Wait::Timeout));
        t.join().unwrap();
        assert!(matches!(
            c.wait_for_text(from, Instant::now() + Duration::from_secs(5), "never"),
            Wait::Eof
        ));
    }

    #[test]
    fn reattached_console_continues_numbering_and_log() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("c.log");
        let c = Console::spawn(Cursor::new(b"one\ntwo\n".to_vec()), &log).unwrap();
        assert!(c.wait_eof(Duration::from_secs(5)));
        c.reattach(Cursor::new(b"three\n".to_vec())).unwrap();
        assert!(c.wait_eof(Duration::from_secs(5)));
        let lines: Vec<(u64, String)> = c
            .lines_since(0)
            .into_iter()
            .map(|l| (l.index, l.text))
            .collect();
        assert_eq!(lines[2], (2, "three".to_string()));
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn endless_line_is_split() {
        let d = tempfile::tempdir().unwrap();
        let c = Console::spawn(
            Cursor::new(vec![b'x'; MAX_LINE * 2 + 5]),
            &d.path().join("c"),
        )
        .unwrap();
        assert!(c.wait_eof(Duration::from_secs(5)));
        let lens: Vec<usize> = c.lines_since(0).iter().map(|l| l.text.len()).collect();
        assert_eq!(lens, [MAX_LINE, MAX_LINE, 5]);
    }
}
