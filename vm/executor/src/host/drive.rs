//! Driving a program from the host: send it to the executor, read its events, run its host
//! operations when its threads ask for them (each on its own thread, so a slow wait does not
//! hold up the others' replies), and stop at its `end` event, at the deadline or when the
//! channel breaks. hotfuzz's runner and `hotfuzz-executor drive` both drive programs with
//! this loop; they differ in the channel (ssh, the guest agent's serial port) and in what they
//! do with each event (run log, terminal).

use super::ops::{HostOps, Monitor};
use crate::protocol::{BlockSnapshot, Event, HostReply, Outcome};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// What a read from a channel gave.
#[derive(Debug)]
pub enum Recv {
    /// Bytes.
    Data(Vec<u8>),
    /// Nothing within the timeout.
    Timeout,
    /// The other side closed the channel.
    Eof,
}

/// A byte channel to the executor.
pub trait Channel {
    /// Writes all of `data`.
    fn send(&mut self, data: &[u8]) -> std::io::Result<()>;
    /// Waits up to `timeout` for bytes.
    fn recv(&mut self, timeout: Duration) -> std::io::Result<Recv>;
}

/// What the driver tells its user as the program runs.
pub trait Observer {
    /// An event from the executor.
    fn event(&mut self, ev: &Event);
    /// A host operation finished (its reply is being sent).
    fn host_done(&mut self, i: usize, outcome: &Outcome);
    /// A line that is not an event.
    fn noise(&mut self, line: &str);
    /// Polled between reads: `Some(why)` when the run cannot go on (QEMU exited).
    fn check(&mut self) -> Option<String>;
}

/// How a driven program ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Driven {
    /// The executor said hello.
    pub hello: bool,
    /// The executor sent `end`.
    pub ended: bool,
    /// Threads left stuck in the kernel.
    pub abandoned: Vec<u32>,
    /// The memory blocks as the program left them.
    pub memory: Option<Vec<BlockSnapshot>>,
    /// Why the run did not end normally.
    pub lost: Option<String>,
}

/// Drives one program: `start` (the request line that starts it) goes out first, then events
/// are read until `end`, `deadline`, a broken channel or the observer's `check` says stop.
pub fn drive(
    ch: &mut dyn Channel,
    start: &[u8],
    host: &mut HostOps,
    names: &[String],
    mon: &dyn Monitor,
    obs: &mut dyn Observer,
    deadline: Instant,
) -> Driven {
    let mut out = Driven::default();
    if let Err(e) = ch.send(start) {
        out.lost = Some(format!("cannot send the program: {e}"));
        return out;
    }
    let host = Mutex::new(host);
    let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
    std::thread::scope(|s| {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            while let Ok((i, o)) = rx.try_recv() {
                obs.host_done(i, &o);
                let reply =
                    serde_json::to_string(&HostReply { i, outcome: o }).unwrap_or_default() + "\n";
                if let Err(e) = ch.send(reply.as_bytes()) {
                    out.lost = Some(format!("cannot answer host operation {i}: {e}"));
                    return;
                }
            }
            let chunk = match ch.recv(Duration::from_millis(20)) {
                Ok(c) => c,
                Err(e) => {
                    out.lost = Some(format!("lost the executor: {e}"));
                    return;
                }
            };
            let eof = matches!(chunk, Recv::Eof);
            if let Recv::Data(d) = chunk {
                buf.extend_from_slice(&d);
            }
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = buf.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&raw);
                let text = text.trim();
                let ev: Event = match serde_json::from_str(text) {
                    Ok(e) => e,
                    Err(_) => {
                        if !text.is_empty() {
                            obs.noise(text);
                        }
                        continue;
                    }
                };
                obs.event(&ev);
                match ev {
                    Event::Hello { .. } => out.hello = true,
                    Event::Host { i, args } => {
                        let name = names.get(i).cloned().unwrap_or_default();
                        let tx = tx.clone();
                        let host = &host;
                        s.spawn(move || {
                            let o = host
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .run(mon, &name, &args);
                            let _ = tx.send((i, o));
                        });
                    }
                    Event::Died { status, signal } => {
                        out.lost = Some(match signal {
                            Some(s) => format!("the executor was killed by signal {s}"),
                            None => format!("the executor exited early (status {status:?})"),
                        });
                        return;
                    }
                    Event::End { abandoned, memory } => {
                        out.abandoned = abandoned;
                        out.memory = memory;
                        out.ended = true;
                        return;
                    }
                    _ => {}
                }
            }
            if eof {
                out.lost = Some("the executor exited before finishing".into());
                return;
            }
            if let Some(why) = obs.check() {
                out.lost = Some(why);
                return;
            }
            if mon.unanswered() {
                // The guest's I/O goes through the main loop that stopped answering: waiting
                // out the program's deadline (minutes) would show nothing more.
                out.lost = Some("QEMU's monitor stopped answering during the program".into());
                return;
            }
            if Instant::now() >= deadline {
                out.lost = Some("the program did not finish before its deadline".into());
                return;
            }
        }
    });
    out
}

/// A [`Channel`] over a unix socket (the guest agent's port, as QEMU's chardev serves it).
pub struct StreamChannel {
    stream: std::os::unix::net::UnixStream,
}

impl StreamChannel {
    /// Wraps a connected socket.
    pub fn new(stream: std::os::unix::net::UnixStream) -> StreamChannel {
        StreamChannel { stream }
    }

    /// The socket.
    pub fn stream(&self) -> &std::os::unix::net::UnixStream {
        &self.stream
    }
}

impl Channel for StreamChannel {
    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.stream
            .set_write_timeout(Some(Duration::from_secs(30)))?;
        self.stream.write_all(data)
    }

    fn recv(&mut self, timeout: Duration) -> std::io::Result<Recv> {
        use std::io::Read;
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut buf = vec![0u8; 64 << 10];
        match self.stream.read(&mut buf) {
            Ok(0) => Ok(Recv::Eof),
            Ok(n) => {
                buf.truncate(n);
                Ok(Recv::Data(buf))
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::Interrupted =>
            {
                Ok(Recv::Timeout)
            }
            Err(e) => Err(e),
        }
    }
}

/// Sends [`crate::protocol::Request::Sync`] and reads until its answer, dropping everything
/// before it; `Err` when no answer came by `deadline`. Lines read before the answer go to
/// `skipped` (a booting guest's agent is not there yet; a restored one may have old output).
pub fn sync(
    ch: &mut dyn Channel,
    nonce: u64,
    deadline: Instant,
    mut skipped: impl FnMut(&str),
) -> Result<(), String> {
    let req = serde_json::to_string(&crate::protocol::Request::Sync { nonce })
        .map_err(|e| e.to_string())?
        + "\n";
    let mut buf: Vec<u8> = Vec::new();
    let mut last_send: Option<Instant> = None;
    loop {
        // The port may not be open in the guest yet: ask again now and then.
        if last_send.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
            ch.send(req.as_bytes()).map_err(|e| e.to_string())?;
            last_send = Some(Instant::now());
        }
        match ch
            .recv(Duration::from_millis(20))
            .map_err(|e| e.to_string())?
        {
            Recv::Data(d) => buf.extend_from_slice(&d),
            Recv::Timeout => {}
            Recv::Eof => return Err("the agent's channel closed".into()),
        }
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&raw);
            match serde_json::from_str::<Event>(text.trim()) {
                Ok(Event::Sync { nonce: n }) if n == nonce => return Ok(()),
                _ => skipped(text.trim()),
            }
        }
        if Instant::now() >= deadline {
            return Err("the guest agent did not answer".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::ops::{HostMachine, MonitorError};
    use serde_json::Value;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// An executor that says hello, asks for one host operation, then says nothing.
    struct Quiet(Vec<Vec<u8>>);

    impl Channel for Quiet {
        fn send(&mut self, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn recv(&mut self, timeout: Duration) -> std::io::Result<Recv> {
            if self.0.is_empty() {
                std::thread::sleep(timeout);
                return Ok(Recv::Timeout);
            }
            Ok(Recv::Data(self.0.remove(0)))
        }
    }

    /// A QEMU whose monitor never answers.
    #[derive(Default)]
    struct Stuck(AtomicBool);

    impl Monitor for Stuck {
        fn execute(&self, c: &str, _: Option<Value>) -> Result<Value, MonitorError> {
            self.0.store(true, Ordering::SeqCst);
            Err(MonitorError::Timeout(format!("QMP {c} did not answer")))
        }
        fn event_mark(&self) -> usize {
            0
        }
        fn events_since(&self, _: usize) -> Vec<(String, Value)> {
            Vec::new()
        }
        fn unanswered(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    struct Nothing;

    impl Observer for Nothing {
        fn event(&mut self, _: &Event) {}
        fn host_done(&mut self, _: usize, _: &Outcome) {}
        fn noise(&mut self, _: &str) {}
        fn check(&mut self) -> Option<String> {
            None
        }
    }

    #[test]
    fn a_monitor_that_stops_answering_ends_the_run_before_its_deadline() {
        let lines = vec![
            b"{\"ev\":\"hello\",\"version\":1,\"kcov\":false}\n".to_vec(),
            b"{\"ev\":\"host\",\"i\":0,\"args\":{\"dev\":{\"int\":0},\"size\":{\"int\":268435456}}}\n"
                .to_vec(),
        ];
        let mut host = HostOps::new(&HostMachine {
            vmem: vec!["vm0".into()],
            hotplug_ports: 1,
            numa: false,
        });
        let t0 = Instant::now();
        let d = drive(
            &mut Quiet(lines),
            b"run\n",
            &mut host,
            &["virtio_mem_resize".to_string()],
            &Stuck::default(),
            &mut Nothing,
            t0 + Duration::from_secs(120),
        );
        assert!(d.hello);
        assert!(
            d.lost
                .as_deref()
                .is_some_and(|l| l.contains("monitor stopped answering")),
            "{d:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        // A monitor that answers leaves the run to its deadline.
        let mut host = HostOps::new(&HostMachine::default());
        let t0 = Instant::now();
        let d = drive(
            &mut Quiet(Vec::new()),
            b"run\n",
            &mut host,
            &[],
            &Answers,
            &mut Nothing,
            t0 + Duration::from_millis(300),
        );
        assert!(
            d.lost.as_deref().is_some_and(|l| l.contains("deadline")),
            "{d:?}"
        );
    }

    struct Answers;

    impl Monitor for Answers {
        fn execute(&self, _: &str, _: Option<Value>) -> Result<Value, MonitorError> {
            Ok(Value::Null)
        }
        fn event_mark(&self) -> usize {
            0
        }
        fn events_since(&self, _: usize) -> Vec<(String, Value)> {
            Vec::new()
        }
    }
}
