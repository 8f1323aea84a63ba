//! Host operations: what a program asks QEMU to do over QMP (virtio-mem resize, wait and
//! hot-add, pc-dimm add/remove, balloon). They are implemented once, here, on top of the
//! [`Monitor`] trait: hotfuzz's runner drives them through its own QMP client, and
//! `hotfuzz-executor drive` (what `repro.sh` runs) through [`super::qmp::UnixQmp`].

use crate::protocol::{ExecArg, Outcome};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Why a QMP command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorError {
    /// QEMU refused the command (bad size, no such device, no slot): the program's doing.
    Refused(String),
    /// The monitor is gone (QEMU exited).
    Gone(String),
    /// No answer in time.
    Timeout(String),
}

impl std::fmt::Display for MonitorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MonitorError::Refused(m) | MonitorError::Gone(m) | MonitorError::Timeout(m) => {
                f.write_str(m)
            }
        }
    }
}

/// A QMP monitor as host operations need it.
pub trait Monitor: Sync {
    /// Runs `command` with `arguments`; the `return` value.
    fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, MonitorError>;
    /// A position in the stream of asynchronous events.
    fn event_mark(&self) -> usize;
    /// Events (name, data) received at or after `mark`.
    fn events_since(&self, mark: usize) -> Vec<(String, Value)>;
    /// Whether a command went unanswered: QEMU's main loop is stuck (a `device_add` that
    /// never returned has been seen), and a program waiting for the guest waits for nothing.
    fn unanswered(&self) -> bool {
        false
    }
}

/// What host operations need to know about the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostMachine {
    /// virtio-mem device ids at boot, by index (the `vmem_dev` resource).
    pub vmem: Vec<String>,
    /// Spare PCIe root ports `hp0`, `hp1`, ... for hot-added devices.
    pub hotplug_ports: u32,
    /// More than one NUMA node (`dimm_add` passes its node only then).
    pub numa: bool,
}

/// Host-side device state the programs of one guest share: which virtio-mem devices and
/// DIMMs exist. It belongs to the guest: a snapshot restore resets it with the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOps {
    /// virtio-mem device ids by index.
    pub vmem: Vec<String>,
    /// DIMM ids by index (None once removed).
    pub dimms: Vec<Option<String>>,
    ports_used: u32,
    ports: u32,
    numa: bool,
}

/// Host operation names [`HostOps::run`] implements.
pub const IMPLEMENTED: &[&str] = &[
    "virtio_mem_resize",
    "virtio_mem_wait",
    "virtio_mem_hot_add",
    "dimm_add",
    "dimm_remove",
    "balloon",
];

/// The longest `virtio_mem_wait` waits, whatever the program asks for.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// How long `virtio_mem_wait` waits for a device whose plugged size does not change: for a
/// plug from the wait's start (the guest plugs block by block, and a size that does not grow
/// for this long is one the guest refused, such as a 4 GiB device stuck at 1 GiB, which made
/// 3.6 s waits the largest deadline item of a campaign); for an unplug only once the size
/// has changed at all, since the guest unplugs a fully plugged memory block by offlining and
/// removing all of it, and the size drops only when that is done (seconds for 128 MiB under
/// TCG). A guest whose steps took longer than this so far gets one and a half times its
/// longest step.
pub const WAIT_STALL: Duration = Duration::from_millis(1500);

/// How long `virtio_mem_wait` waits for an unplug whose size has not changed at all. The
/// guest's first step of an unplug is one whole memory block (128 MiB fake-offlined or
/// offlined and removed in one go: at most 1.7 s in 27 offlines of a 30-minute campaign
/// under TCG); when nothing of the device can be freed, its driver gives up with -EBUSY and
/// tries again no sooner than 50 s later (`VIRTIO_MEM_RETRY_TIMER_MIN_MS`), so sitting out a
/// 5 s wait buys nothing: such waits were 220 s of the 265 s of wait deadlines in two
/// 30-minute campaigns' kept run logs.
pub const UNPLUG_STALL: Duration = Duration::from_millis(3000);

/// The argument the guest's executor adds to every host request: the guest's `MemAvailable`
/// in bytes at the moment it asked.
pub const MEM_AVAILABLE: &str = "_mem_available";

/// How much of the guest's memory the balloon must always leave usable, in bytes on top of
/// what the guest uses at the moment of the request (see [`HostOps::run`]'s `balloon`).
pub const BALLOON_MARGIN: u64 = 256 << 20;

fn int(args: &BTreeMap<String, ExecArg>, k: &str) -> Result<u64, Outcome> {
    match args.get(k) {
        Some(ExecArg::Int(v)) => Ok(*v),
        _ => Err(Outcome::Errno {
            errno: libc::EINVAL,
            msg: format!("argument {k}: expected an integer"),
        }),
    }
}

fn mon_err(e: MonitorError) -> Outcome {
    let errno = match &e {
        MonitorError::Refused(_) => libc::EINVAL,
        MonitorError::Gone(_) => libc::EIO,
        MonitorError::Timeout(_) => libc::ETIMEDOUT,
    };
    Outcome::Errno {
        errno,
        msg: e.to_string(),
    }
}

fn device_path(id: &str) -> String {
    format!("/machine/peripheral/{id}")
}

fn qom_u64(m: &dyn Monitor, id: &str, prop: &str) -> Result<u64, Outcome> {
    let v = m
        .execute(
            "qom-get",
            Some(json!({"path": device_path(id), "property": prop})),
        )
        .map_err(mon_err)?;
    v.as_u64().ok_or_else(|| Outcome::Errno {
        errno: libc::EIO,
        msg: format!("{id}.{prop} is not a number: {v}"),
    })
}

impl HostOps {
    /// State for a freshly booted guest of `machine`.
    pub fn new(machine: &HostMachine) -> HostOps {
        HostOps {
            vmem: machine.vmem.clone(),
            dimms: Vec::new(),
            ports_used: 0,
            ports: machine.hotplug_ports,
            numa: machine.numa,
        }
    }

    fn device(&self, args: &BTreeMap<String, ExecArg>) -> Result<String, Outcome> {
        let i = int(args, "dev")?;
        self.vmem
            .get(i as usize)
            .cloned()
            .ok_or_else(|| Outcome::Errno {
                errno: libc::ENODEV,
                msg: format!("no virtio-mem device {i}"),
            })
    }

    /// Runs host operation `name`. `args` are the operation's arguments with references
    /// resolved, plus what the guest's executor measured when it asked ([`MEM_AVAILABLE`]).
    pub fn run(
        &mut self,
        m: &dyn Monitor,
        name: &str,
        args: &BTreeMap<String, ExecArg>,
    ) -> Outcome {
        match self.run_inner(m, name, args) {
            Ok(o) | Err(o) => o,
        }
    }

    fn run_inner(
        &mut self,
        m: &dyn Monitor,
        name: &str,
        args: &BTreeMap<String, ExecArg>,
    ) -> Result<Outcome, Outcome> {
        match name {
            "virtio_mem_resize" => {
                let id = self.device(args)?;
                let size = int(args, "size")?;
                m.execute(
                    "qom-set",
                    Some(json!({"path": device_path(&id), "property": "requested-size", "value": size})),
                )
                .map_err(mon_err)?;
                Ok(Outcome::ok())
            }
            "virtio_mem_wait" => {
                let id = self.device(args)?;
                // A wait is a synchronisation point, not a test of patience: the program
                // cannot ask for more than MAX_WAIT (a longer one would look like a hang).
                // Nor does it wait for a device that stopped getting closer (a plug the
                // guest refused, an unplug of memory it cannot give back).
                let ms = Duration::from_millis(int(args, "ms")?).min(MAX_WAIT);
                let deadline = Instant::now() + ms;
                let mut first: Option<u64> = None;
                let start = Instant::now();
                let mut last = (u64::MAX, start);
                // The longest the size took to change so far: a guest that needs 2 s per
                // block (a loaded host) is not stalled after 1.5 s without a change.
                let mut step = Duration::ZERO;
                loop {
                    let want = qom_u64(m, &id, "requested-size")?;
                    let size = qom_u64(m, &id, "size")?;
                    if size == want {
                        return Ok(Outcome::val(size));
                    }
                    let first = *first.get_or_insert(size);
                    if size != last.0 {
                        if last.0 != u64::MAX {
                            step = step.max(last.1.elapsed());
                        }
                        last = (size, Instant::now());
                    }
                    let moving = size != first || size < want;
                    let patience = if moving { WAIT_STALL } else { UNPLUG_STALL };
                    let stalled = last.1.elapsed() >= patience.max(step * 3 / 2);
                    if Instant::now() >= deadline || stalled {
                        return Err(Outcome::Errno {
                            errno: libc::ETIMEDOUT,
                            msg: format!(
                                "{id}: size {size:#x} != requested {want:#x}{}",
                                if stalled { " (no progress)" } else { "" }
                            ),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            "virtio_mem_hot_add" => {
                if self.ports_used >= self.ports {
                    return Err(Outcome::Errno {
                        errno: libc::ENOSPC,
                        msg: format!("all {} spare PCIe ports are used", self.ports),
                    });
                }
                let id = format!("hot{}", self.vmem.len());
                let mem = format!("{id}-mem");
                m.execute(
                    "object-add",
                    Some(json!({"qom-type": "memory-backend-ram", "id": mem,
                                "size": int(args, "max")?, "reserve": false})),
                )
                .map_err(mon_err)?;
                let dev = json!({
                    "driver": "virtio-mem-pci", "id": id, "memdev": mem,
                    "node": int(args, "node")?, "requested-size": int(args, "requested")?,
                    "block-size": int(args, "block_size")?,
                    "bus": format!("hp{}", self.ports_used),
                });
                if let Err(e) = m.execute("device_add", Some(dev)) {
                    let _ = m.execute("object-del", Some(json!({"id": mem})));
                    return Err(mon_err(e));
                }
                self.ports_used += 1;
                self.vmem.push(id);
                Ok(Outcome::val(self.vmem.len() as u64 - 1))
            }
            "dimm_add" => {
                let id = format!("dimm{}", self.dimms.len());
                let mem = format!("{id}-mem");
                m.execute(
                    "object-add",
                    Some(json!({"qom-type": "memory-backend-ram", "id": mem, "size": int(args, "size")?})),
                )
                .map_err(mon_err)?;
                let mut dev = json!({"driver": "pc-dimm", "id": id, "memdev": mem});
                if self.numa {
                    dev["node"] = json!(int(args, "node")?);
                }
                if let Err(e) = m.execute("device_add", Some(dev)) {
                    let _ = m.execute("object-del", Some(json!({"id": mem})));
                    return Err(mon_err(e));
                }
                self.dimms.push(Some(id));
                Ok(Outcome::val(self.dimms.len() as u64 - 1))
            }
            "dimm_remove" => {
                let i = int(args, "d")? as usize;
                let id = self
                    .dimms
                    .get(i)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| Outcome::Errno {
                        errno: libc::ENODEV,
                        msg: format!("no dimm {i}"),
                    })?;
                let mark = m.event_mark();
                m.execute("device_del", Some(json!({"id": id})))
                    .map_err(mon_err)?;
                let deadline = Instant::now() + MAX_WAIT;
                loop {
                    let evs = m.events_since(mark);
                    // The guest's _OST answer to the eject request: anything but success (0)
                    // or "ejection in progress" (0x84, ACPI_OST_SC_EJECT_IN_PROGRESS, which
                    // Linux sends first) means it kept the memory (offlining failed).
                    let refused = evs.iter().any(|(n, d)| {
                        let info = &d["info"];
                        n == "ACPI_DEVICE_OST"
                            && info["device"].as_str() == Some(&id)
                            && info["status"].as_u64().is_some_and(|s| s != 0 && s != 0x84)
                    });
                    if evs.iter().any(|(n, d)| {
                        n == "DEVICE_DELETED"
                            && d.get("device").and_then(Value::as_str) == Some(&id)
                    }) {
                        let _ = m.execute("object-del", Some(json!({"id": format!("{id}-mem")})));
                        self.dimms[i] = None;
                        return Ok(Outcome::ok());
                    }
                    if evs
                        .iter()
                        .any(|(n, _)| n == "DEVICE_UNPLUG_GUEST_ERROR" || n == "MEM_UNPLUG_ERROR")
                        || refused
                        || Instant::now() >= deadline
                    {
                        return Err(Outcome::Errno {
                            errno: libc::EBUSY,
                            msg: format!("the guest did not release {id}"),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            "balloon" => {
                // The balloon takes (logical size - target) away from the guest. It may never
                // take what the guest is using right now plus a margin: the executor measured
                // that (`floor`: logical size the guest needs) when the request was made. An
                // inflated balloon that leaves nothing to allocate is the harness's doing, not
                // a kernel bug.
                let asked = int(args, "target")?;
                let floor = match int(args, MEM_AVAILABLE) {
                    Ok(avail) => {
                        let actual = m
                            .execute("query-balloon", None)
                            .ok()
                            .and_then(|v| v.get("actual").and_then(Value::as_u64))
                            .unwrap_or(0);
                        actual.saturating_sub(avail) + BALLOON_MARGIN
                    }
                    Err(_) => 0,
                };
                let target = asked.max(floor);
                match m.execute("balloon", Some(json!({"value": target}))) {
                    Ok(_) if target != asked => Ok(Outcome::Ok { val: Some(target) }),
                    Ok(_) => Ok(Outcome::ok()),
                    Err(MonitorError::Refused(e)) if e.contains("No balloon device") => {
                        Err(Outcome::Unsupported {
                            why: "the VM has no balloon device".into(),
                        })
                    }
                    Err(e) => Err(mon_err(e)),
                }
            }
            other => Err(Outcome::Unsupported {
                why: format!("hotfuzz has no host operation {other}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A monitor that records commands and answers from a script.
    #[derive(Default)]
    struct Fake {
        log: Mutex<Vec<(String, Value)>>,
        size: Mutex<u64>,
        requested: Mutex<u64>,
        events: Mutex<Vec<(String, Value)>>,
    }

    impl Monitor for Fake {
        fn execute(&self, c: &str, a: Option<Value>) -> Result<Value, MonitorError> {
            let a = a.unwrap_or(Value::Null);
            self.log.lock().unwrap().push((c.to_string(), a.clone()));
            match c {
                "qom-set" => {
                    *self.requested.lock().unwrap() = a["value"].as_u64().unwrap();
                    Ok(Value::Null)
                }
                "qom-get" if a["property"] == "size" => Ok(json!(*self.size.lock().unwrap())),
                "qom-get" => Ok(json!(*self.requested.lock().unwrap())),
                "query-balloon" => Ok(json!({"actual": 1u64 << 30})),
                "device_add" if a["driver"] == "pc-dimm" => {
                    Err(MonitorError::Refused("no free slots".into()))
                }
                "device_del" => {
                    self.events
                        .lock()
                        .unwrap()
                        .push(("DEVICE_DELETED".into(), json!({"device": a["id"]})));
                    Ok(Value::Null)
                }
                _ => Ok(Value::Null),
            }
        }
        fn event_mark(&self) -> usize {
            self.events.lock().unwrap().len()
        }
        fn events_since(&self, mark: usize) -> Vec<(String, Value)> {
            self.events.lock().unwrap()[mark..].to_vec()
        }
    }

    #[test]
    fn an_unplug_as_slow_per_block_as_its_first_block_is_not_stalled() {
        // A loaded guest unplugging 512M to 128M, 1.8 s for the first block and 2.2 s for the
        // next: more than WAIT_STALL between changes, but steady.
        let m = std::sync::Arc::new(Fake::default());
        *m.size.lock().unwrap() = 512 << 20;
        *m.requested.lock().unwrap() = 128 << 20;
        let mut h = HostOps::new(&HostMachine {
            vmem: vec!["vm0".into()],
            hotplug_ports: 0,
            numa: false,
        });
        let guest = {
            let m = m.clone();
            std::thread::spawn(move || {
                // (ms after the previous change, new size)
                for (after, size) in [(1800, 384u64 << 20), (2200, 256 << 20), (300, 128 << 20)] {
                    std::thread::sleep(Duration::from_millis(after));
                    *m.size.lock().unwrap() = size;
                }
            })
        };
        let o = h.run(&*m, "virtio_mem_wait", &args(&[("dev", 0), ("ms", 5000)]));
        guest.join().unwrap();
        assert_eq!(o, Outcome::val(128 << 20));
    }

    fn args(v: &[(&str, u64)]) -> BTreeMap<String, ExecArg> {
        v.iter()
            .map(|(k, x)| (k.to_string(), ExecArg::Int(*x)))
            .collect()
    }

    #[test]
    fn waits_are_bounded_and_balloons_leave_the_guest_its_memory() {
        let m = Fake::default();
        let mut h = HostOps::new(&HostMachine {
            vmem: vec!["vm0".into()],
            hotplug_ports: 1,
            numa: false,
        });
        assert_eq!(
            h.run(
                &m,
                "virtio_mem_resize",
                &args(&[("dev", 0), ("size", 1 << 28)])
            ),
            Outcome::ok()
        );
        // A plug the guest never starts: a wait asked for 3.4 days gives up once the size
        // has not grown for WAIT_STALL.
        let t = Instant::now();
        let o = h.run(
            &m,
            "virtio_mem_wait",
            &args(&[("dev", 0), ("ms", 0x1165_3371)]),
        );
        assert!(
            matches!(&o, Outcome::Errno { errno, msg } if *errno == libc::ETIMEDOUT && msg.contains("no progress")),
            "{o:?}"
        );
        assert!(
            t.elapsed() < WAIT_STALL + Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
        // An unplug whose size has not moved yet may be a whole block going offline: a wait
        // shorter than UNPLUG_STALL runs to its own deadline ...
        *m.size.lock().unwrap() = 1 << 29;
        let t = Instant::now();
        let o = h.run(&m, "virtio_mem_wait", &args(&[("dev", 0), ("ms", 2500)]));
        assert!(
            matches!(&o, Outcome::Errno { errno, msg } if *errno == libc::ETIMEDOUT && !msg.contains("no progress")),
            "{o:?}"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(2400),
            "{:?}",
            t.elapsed()
        );
        assert!(t.elapsed() < UNPLUG_STALL, "{:?}", t.elapsed());
        // ... and a longer one gives up at UNPLUG_STALL, not at MAX_WAIT.
        let t = Instant::now();
        let o = h.run(&m, "virtio_mem_wait", &args(&[("dev", 0), ("ms", 5000)]));
        assert!(
            matches!(&o, Outcome::Errno { errno, msg } if *errno == libc::ETIMEDOUT && msg.contains("no progress")),
            "{o:?}"
        );
        assert!(
            t.elapsed() >= UNPLUG_STALL && t.elapsed() < UNPLUG_STALL + Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
        // A balloon below what the guest needs is raised to the floor.
        // (The guest is 1 GiB and has 256 MiB available: the balloon may take at most
        // 256 MiB - BALLOON_MARGIN = nothing.)
        let o = h.run(
            &m,
            "balloon",
            &args(&[("target", 1 << 26), (MEM_AVAILABLE, 256 << 20)]),
        );
        assert_eq!(o, Outcome::val(1 << 30));
        let last = m.log.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last.1["value"], json!(1u64 << 30));
        // No such device; a refused DIMM rolls its backend back.
        let o = h.run(&m, "virtio_mem_resize", &args(&[("dev", 5), ("size", 0)]));
        assert!(matches!(o, Outcome::Errno { errno, .. } if errno == libc::ENODEV));
        let o = h.run(&m, "dimm_add", &args(&[("size", 1 << 27), ("node", 0)]));
        assert!(matches!(o, Outcome::Errno { errno, .. } if errno == libc::EINVAL));
        assert_eq!(m.log.lock().unwrap().last().unwrap().0, "object-del");
        // Hot-add uses the spare port, then there is none.
        let add = args(&[
            ("max", 1 << 30),
            ("requested", 0),
            ("node", 0),
            ("block_size", 2 << 20),
        ]);
        assert_eq!(h.run(&m, "virtio_mem_hot_add", &add), Outcome::val(1));
        let o = h.run(&m, "virtio_mem_hot_add", &add);
        assert!(matches!(o, Outcome::Errno { errno, .. } if errno == libc::ENOSPC));
    }
}
