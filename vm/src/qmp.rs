//! A QMP client: commands with ids and timeouts, asynchronous events collected (and logged)
//! by a reader thread so none is lost while a command waits.

use crate::console::format_time;
use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Default time a QMP command may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// An asynchronous QMP event.
#[derive(Debug, Clone, Serialize)]
pub struct QmpEvent {
    /// Position among all events of this connection.
    pub index: usize,
    /// Event name, e.g. `MEMORY_DEVICE_SIZE_CHANGE`.
    pub name: String,
    /// Event data.
    pub data: Value,
    /// Host time the event was received.
    #[serde(skip)]
    pub received: SystemTime,
}

/// One entry of `query-memory-devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryDevice {
    /// `virtio-mem`, `dimm`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Device id.
    pub id: Option<String>,
    /// Bytes currently plugged (virtio-mem) or the DIMM size.
    pub size: u64,
    /// virtio-mem: requested size.
    #[serde(rename = "requested-size")]
    pub requested_size: Option<u64>,
    /// virtio-mem: maximum size (backend size).
    #[serde(rename = "max-size")]
    pub max_size: Option<u64>,
    /// virtio-mem: device block size.
    #[serde(rename = "block-size")]
    pub block_size: Option<u64>,
    /// NUMA node.
    pub node: Option<u64>,
    /// Guest physical base address.
    pub memaddr: Option<u64>,
}

type Pending = Arc<Mutex<HashMap<u64, mpsc::Sender<Value>>>>;

#[derive(Debug, Default)]
struct Events {
    list: Vec<QmpEvent>,
    closed: bool,
}

/// A connected QMP monitor. Commands may be issued from several threads.
#[derive(Debug)]
pub struct Qmp {
    writer: Mutex<UnixStream>,
    pending: Pending,
    events: Arc<(Mutex<Events>, Condvar)>,
    next_id: AtomicU64,
    socket: PathBuf,
}

impl Qmp {
    /// Connects to the QMP socket at `path`, retrying until `deadline` (QEMU creates it shortly
    /// after starting), negotiates capabilities and starts the event reader. Events are appended
    /// to `event_log` with host timestamps. `alive` is polled while retrying so a QEMU that
    /// exited is noticed at once.
    pub fn connect(
        path: &Path,
        event_log: &Path,
        deadline: Instant,
        mut alive: impl FnMut() -> bool,
    ) -> Result<Qmp> {
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    if !alive() {
                        return Err(Error::QemuGone(format!(
                            "before its QMP socket {} appeared",
                            path.display()
                        )));
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::Qmp(format!(
                            "cannot connect to {}: {e}",
                            path.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(5));
        stream
            .set_read_timeout(Some(remaining))
            .ctx(|| "setting QMP timeout".into())?;
        let mut reader = BufReader::new(stream.try_clone().ctx(|| "cloning QMP socket".into())?);
        let mut greeting = String::new();
        reader
            .read_line(&mut greeting)
            .map_err(|e| Error::Qmp(format!("no greeting: {e}")))?;
        let g: Value = serde_json::from_str(&greeting)
            .map_err(|e| Error::Qmp(format!("bad greeting {greeting:?}: {e}")))?;
        if g.get("QMP").is_none() {
            return Err(Error::Qmp(format!("unexpected greeting {greeting:?}")));
        }
        stream
            .set_read_timeout(None)
            .ctx(|| "clearing QMP timeout".into())?;
        let log = crate::cache::open_private(event_log, false)
            .ctx(|| format!("creating QMP event log {}", event_log.display()))?;
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let events = Arc::new((Mutex::new(Events::default()), Condvar::new()));
        {
            let pending = pending.clone();
            let events = events.clone();
            std::thread::Builder::new()
                .name("qmp-reader".into())
                .spawn(move || reader_loop(reader, BufWriter::new(log), &pending, &events))
                .ctx(|| "starting the QMP reader thread".into())?;
        }
        let qmp = Qmp {
            writer: Mutex::new(stream),
            pending,
            events,
            next_id: AtomicU64::new(1),
            socket: path.to_path_buf(),
        };
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    pub fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value> {
        self.execute_timeout(command, arguments, DEFAULT_TIMEOUT)
    }

    /// Like [`Qmp::execute`] with an explicit timeout.
    pub fn execute_timeout(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut msg = json!({"execute": command, "id": id});
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let (tx, rx) = mpsc::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let line = format!("{msg}\n");
        let write = {
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            w.write_all(line.as_bytes())
        };
        if let Err(e) = write {
            self.forget(id);
            return Err(Error::Qmp(format!("sending {command}: {e}")));
        }
        let reply = match rx.recv_timeout(timeout) {
            Ok(v) => v,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.forget(id);
                return Err(Error::Timeout(format!(
                    "QMP {command} did not answer within {timeout:?}"
                )));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::QemuGone(format!(
                    "QMP connection closed during {command}"
                )));
            }
        };
        if let Some(err) = reply.get("error") {
            return Err(Error::Qmp(format!(
                "{command}: {} ({})",
                err.get("desc").and_then(Value::as_str).unwrap_or("?"),
                err.get("class").and_then(Value::as_str).unwrap_or("?")
            )));
        }
        Ok(reply.get("return").cloned().unwrap_or(Value::Null))
    }

    fn forget(&self, id: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Path of the socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Number of events received so far (use as a mark for [`Qmp::events_since`]).
    pub fn event_mark(&self) -> usize {
        self.events
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list
            .len()
    }

    /// Events with index >= `from`.
    pub fn events_since(&self, from: usize) -> Vec<QmpEvent> {
        let ev = self.events.0.lock().unwrap_or_else(|e| e.into_inner());
        ev.list
            .get(from..)
            .map(<[QmpEvent]>::to_vec)
            .unwrap_or_default()
    }

    /// Whether an event named `name` with index >= `from` arrived.
    pub fn has_event_since(&self, name: &str, from: usize) -> bool {
        let ev = self.events.0.lock().unwrap_or_else(|e| e.into_inner());
        ev.list.iter().skip(from).any(|e| e.name == name)
    }

    /// Waits for an event named `name` with index >= `from`.
    pub fn wait_event(&self, name: &str, from: usize, timeout: Duration) -> Option<QmpEvent> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.events;
        let mut ev = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(e) = ev.list.iter().skip(from).find(|e| e.name == name) {
                return Some(e.clone());
            }
            let now = Instant::now();
            if now >= deadline || ev.closed {
                return None;
            }
            ev = cond
                .wait_timeout(ev, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// True once QEMU closed the monitor.
    pub fn is_closed(&self) -> bool {
        self.events
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed
    }

    // ---- memory devices -------------------------------------------------------------------

    /// `qom-get PATH PROPERTY`.
    pub fn qom_get(&self, path: &str, property: &str) -> Result<Value> {
        self.execute("qom-get", Some(json!({"path": path, "property": property})))
    }

    /// `qom-set PATH PROPERTY VALUE`.
    pub fn qom_set(&self, path: &str, property: &str, value: Value) -> Result<()> {
        self.execute(
            "qom-set",
            Some(json!({"path": path, "property": property, "value": value})),
        )
        .map(|_| ())
    }

    fn u64_prop(&self, device: &str, property: &str) -> Result<u64> {
        let v = self.qom_get(&device_path(device), property)?;
        v.as_u64()
            .ok_or_else(|| Error::Qmp(format!("{device}.{property} is not a number: {v}")))
    }

    /// Bytes a virtio-mem device currently has plugged (`size`).
    pub fn virtio_mem_size(&self, device: &str) -> Result<u64> {
        self.u64_prop(device, "size")
    }

    /// A virtio-mem device's `requested-size`.
    pub fn virtio_mem_requested_size(&self, device: &str) -> Result<u64> {
        self.u64_prop(device, "requested-size")
    }

    /// Asks the guest to plug or unplug memory by setting `requested-size`. QEMU refuses sizes
    /// that are not block-size multiples or exceed the backend; those errors are returned.
    pub fn set_virtio_mem_requested_size(&self, device: &str, bytes: u64) -> Result<()> {
        self.qom_set(&device_path(device), "requested-size", json!(bytes))
    }

    /// Polls `size` until it equals `requested-size` or `timeout` passes; returns the last size.
    pub fn wait_virtio_mem_settled(&self, device: &str, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let want = self.virtio_mem_requested_size(device)?;
        loop {
            let size = self.virtio_mem_size(device)?;
            if size == want || Instant::now() >= deadline {
                return Ok(size);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `query-memory-devices`.
    pub fn query_memory_devices(&self) -> Result<Vec<MemoryDevice>> {
        let v = self.execute("query-memory-devices", None)?;
        let arr = v
            .as_array()
            .ok_or_else(|| Error::Qmp(format!("query-memory-devices: not a list: {v}")))?;
        arr.iter()
            .map(|d| {
                let mut data = d.get("data").cloned().unwrap_or(Value::Null);
                if let Some(o) = data.as_object_mut() {
                    o.insert("type".into(), d.get("type").cloned().unwrap_or(Value::Null));
                }
                serde_json::from_value(data)
                    .map_err(|e| Error::Qmp(format!("query-memory-devices entry {d}: {e}")))
            })
            .collect()
    }

    /// Hot-adds a virtio-mem device: a RAM backend of `max_size` bytes plus the device on PCIe
    /// port `bus`. QEMU 7.2 cannot unplug virtio-mem devices; shrink them to 0 instead.
    pub fn hot_add_virtio_mem(&self, spec: &HotAddVirtioMem) -> Result<()> {
        let mem = format!("{}-mem", spec.id);
        self.execute(
            "object-add",
            Some(json!({"qom-type": "memory-backend-ram", "id": mem, "size": spec.max_size, "reserve": false})),
        )?;
        let mut dev = json!({
            "driver": "virtio-mem-pci", "id": spec.id, "memdev": mem,
            "node": spec.node, "requested-size": spec.requested_size, "bus": spec.bus,
        });
        if let Some(bs) = spec.block_size {
            dev["block-size"] = json!(bs);
        }
        if let Err(e) = self.execute("device_add", Some(dev)) {
            let _ = self.execute("object-del", Some(json!({"id": mem})));
            return Err(e);
        }
        Ok(())
    }

    /// Hot-adds a pc-dimm of `size` bytes (needs a free DIMM slot).
    pub fn pc_dimm_add(&self, id: &str, size: u64, node: Option<u32>) -> Result<()> {
        let mem = format!("{id}-mem");
        self.execute(
            "object-add",
            Some(json!({"qom-type": "memory-backend-ram", "id": mem, "size": size})),
        )?;
        let mut dev = json!({"driver": "pc-dimm", "id": id, "memdev": mem});
        if let Some(n) = node {
            dev["node"] = json!(n);
        }
        if let Err(e) = self.execute("device_add", Some(dev)) {
            let _ = self.execute("object-del", Some(json!({"id": mem})));
            return Err(e);
        }
        Ok(())
    }

    /// Requests removal of a pc-dimm. The guest has to offline its memory first; returns true
    /// when `DEVICE_DELETED` arrived within `timeout` (the backend is then deleted too), false if
    /// the guest refused or did not answer in time.
    pub fn pc_dimm_remove(&self, id: &str, timeout: Duration) -> Result<bool> {
        let mark = self.event_mark();
        self.execute("device_del", Some(json!({"id": id})))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let evs = self.events_since(mark);
            if evs.iter().any(|e| {
                e.name == "DEVICE_DELETED"
                    && e.data.get("device").and_then(Value::as_str) == Some(id)
            }) {
                let _ = self.execute("object-del", Some(json!({"id": format!("{id}-mem")})));
                return Ok(true);
            }
            if evs
                .iter()
                .any(|e| e.name == "DEVICE_UNPLUG_GUEST_ERROR" || e.name == "MEM_UNPLUG_ERROR")
                || left.is_zero()
            {
                return Ok(false);
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Sets the balloon target (logical guest RAM size in bytes).
    pub fn balloon(&self, target: u64) -> Result<()> {
        self.execute("balloon", Some(json!({"value": target})))
            .map(|_| ())
    }

    /// `query-balloon`: the guest's current logical RAM size.
    pub fn query_balloon(&self) -> Result<u64> {
        let v = self.execute("query-balloon", None)?;
        v.get("actual")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::Qmp(format!("query-balloon: {v}")))
    }

    /// Asks QEMU to exit at once.
    pub fn quit(&self) -> Result<()> {
        match self.execute_timeout("quit", None, Duration::from_secs(5)) {
            Ok(_) | Err(Error::QemuGone(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        // Ends the reader thread, which holds a clone of the socket.
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = w.shutdown(std::net::Shutdown::Both);
    }
}

/// Arguments for [`Qmp::hot_add_virtio_mem`].
#[derive(Debug, Clone)]
pub struct HotAddVirtioMem {
    /// Device id.
    pub id: String,
    /// Backend (maximum) size.
    pub max_size: u64,
    /// Initially requested size.
    pub requested_size: u64,
    /// NUMA node.
    pub node: u32,
    /// Device block size (default: QEMU's).
    pub block_size: Option<u64>,
    /// PCIe root port to plug into (q35 has spare ports `hp0`, `hp1`, ...).
    pub bus: String,
}

/// QOM path of a device created with `-device ...,id=ID`.
pub fn device_path(id: &str) -> String {
    format!("/machine/peripheral/{id}")
}

fn reader_loop(
    reader: BufReader<UnixStream>,
    mut log: BufWriter<File>,
    pending: &Pending,
    events: &(Mutex<Events>, Condvar),
) {
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            let _ = writeln!(log, "{} unparsable: {line}", format_time(SystemTime::now()));
            continue;
        };
        if let Some(name) = v.get("event").and_then(Value::as_str) {
            let now = SystemTime::now();
            let _ = writeln!(log, "{} {line}", format_time(now));
            let _ = log.flush();
            let mut ev = events.0.lock().unwrap_or_else(|e| e.into_inner());
            let index = ev.list.len();
            ev.list.push(QmpEvent {
                index,
                name: name.to_string(),
                data: v.get("data").cloned().unwrap_or(Value::Null),
                received: now,
            });
            drop(ev);
            events.1.notify_all();
        } else if let Some(id) = v.get("id").and_then(Value::as_u64) {
            if let Some(tx) = pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id)
            {
                let _ = tx.send(v);
            }
        }
    }
    // Closed: fail every waiting command by dropping its sender.
    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
    events.0.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
    events.1.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A scripted QMP server: greets, answers capabilities, emits an event, answers one command.
    fn fake_server(path: &Path) -> std::thread::JoinHandle<()> {
        let l = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut line = String::new();
            while r.read_line(&mut line).unwrap() > 0 {
                let v: Value = serde_json::from_str(&line).unwrap();
                let id = v["id"].clone();
                match v["execute"].as_str().unwrap() {
                    "qmp_capabilities" => {
                        writeln!(w, "{}", json!({"return": {}, "id": id})).unwrap()
                    }
                    "qom-get" => {
                        writeln!(w, r#"{{"event": "MEMORY_DEVICE_SIZE_CHANGE", "data": {{"id": "vm0", "size": 268435456}}, "timestamp": {{"seconds": 1, "microseconds": 2}}}}"#).unwrap();
                        writeln!(w, "{}", json!({"return": 268435456u64, "id": id})).unwrap();
                    }
                    _ => writeln!(
                        w,
                        "{}",
                        json!({"error": {"class": "GenericError", "desc": "nope"}, "id": id})
                    )
                    .unwrap(),
                }
                line.clear();
            }
        })
    }

    #[test]
    fn commands_errors_and_events() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("qmp.sock");
        let srv = fake_server(&sock);
        let q = Qmp::connect(
            &sock,
            &d.path().join("ev.log"),
            Instant::now() + Duration::from_secs(5),
            || true,
        )
        .unwrap();
        assert_eq!(q.virtio_mem_size("vm0").unwrap(), 256 << 20);
        let e = q.execute("device_del", None).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("GenericError"), "{e}");
        let ev = q
            .wait_event("MEMORY_DEVICE_SIZE_CHANGE", 0, Duration::from_secs(5))
            .unwrap();
        assert_eq!(ev.data["size"], 268435456u64);
        let log = std::fs::read_to_string(d.path().join("ev.log")).unwrap();
        assert!(log.contains("MEMORY_DEVICE_SIZE_CHANGE"));
        drop(q);
        srv.join().unwrap();
    }

    #[test]
    fn gives_up_when_qemu_is_gone() {
        let d = tempfile::tempdir().unwrap();
        let e = Qmp::connect(
            &d.path().join("none.sock"),
            &d.path().join("ev.log"),
            Instant::now() + Duration::from_secs(5),
            || false,
        )
        .unwrap_err();
        assert!(matches!(e, Error::QemuGone(_)), "{e}");
    }
}
