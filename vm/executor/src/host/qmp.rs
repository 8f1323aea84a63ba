//! A small blocking QMP client for `hotfuzz-executor drive`: one command at a time, events
//! kept for [`Monitor::events_since`]. hotfuzz itself uses its own client (with a reader
//! thread and an event log); this one exists so a standalone `repro.sh` can run host
//! operations with the same code hotfuzz runs them with.

use super::ops::{Monitor, MonitorError};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    events: Vec<(String, Value)>,
}

/// A QMP connection over a unix socket.
pub struct UnixQmp {
    conn: Mutex<Conn>,
    /// A command got no answer in time.
    unanswered: std::sync::atomic::AtomicBool,
}

impl UnixQmp {
    /// Connects to `path` and negotiates capabilities.
    pub fn connect(path: &Path) -> Result<UnixQmp, MonitorError> {
        let s = UnixStream::connect(path)
            .map_err(|e| MonitorError::Gone(format!("connecting to {}: {e}", path.display())))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| MonitorError::Gone(e.to_string()))?;
        let writer = s
            .try_clone()
            .map_err(|e| MonitorError::Gone(e.to_string()))?;
        let mut reader = BufReader::new(s);
        let mut greeting = String::new();
        reader
            .read_line(&mut greeting)
            .map_err(|e| MonitorError::Gone(format!("no QMP greeting: {e}")))?;
        if !greeting.contains("\"QMP\"") {
            return Err(MonitorError::Gone(format!(
                "not a QMP monitor: {greeting:?}"
            )));
        }
        let q = UnixQmp {
            conn: Mutex::new(Conn {
                reader,
                writer,
                next_id: 1,
                events: Vec::new(),
            }),
            unanswered: Default::default(),
        };
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }
}

impl Monitor for UnixQmp {
    fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, MonitorError> {
        let mut c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let id = c.next_id;
        c.next_id += 1;
        let mut msg = json!({"execute": command, "id": id});
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        c.writer
            .write_all(format!("{msg}\n").as_bytes())
            .map_err(|e| MonitorError::Gone(format!("sending {command}: {e}")))?;
        loop {
            let mut line = String::new();
            match c.reader.read_line(&mut line) {
                Ok(0) => return Err(MonitorError::Gone(format!("QMP closed during {command}"))),
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    self.unanswered
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    return Err(MonitorError::Timeout(format!(
                        "QMP {command} did not answer"
                    )));
                }
                Err(e) => return Err(MonitorError::Gone(format!("reading QMP: {e}"))),
            }
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Some(name) = v.get("event").and_then(Value::as_str) {
                let data = v.get("data").cloned().unwrap_or(Value::Null);
                c.events.push((name.to_string(), data));
                continue;
            }
            if v.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(err) = v.get("error") {
                return Err(MonitorError::Refused(format!(
                    "{command}: {} ({})",
                    err.get("desc").and_then(Value::as_str).unwrap_or("?"),
                    err.get("class").and_then(Value::as_str).unwrap_or("?")
                )));
            }
            return Ok(v.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    fn unanswered(&self) -> bool {
        self.unanswered.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn event_mark(&self) -> usize {
        self.conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .events
            .len()
    }

    fn events_since(&self, mark: usize) -> Vec<(String, Value)> {
        // Events arrive only while a command is read; ask for something cheap to collect them.
        let _ = self.execute("query-status", None);
        let c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        c.events.get(mark..).map(<[_]>::to_vec).unwrap_or_default()
    }
}
