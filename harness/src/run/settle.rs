//! After a program: do the virtio-mem devices reach their requested size? The wait follows
//! the driver's progress instead of a fixed time. A device whose plugged size keeps changing
//! is given time (up to the settle limit); one that stops changing is re-requested once (the
//! driver otherwise retries a failed request only on its timer, 50 s at first), and one that
//! stops again is unsettled. Devices the guest cannot be expected to settle are not waited
//! for: asked to shrink with memory in kernel zones, hwpoison or `unplug_online` off; asked
//! to grow with hwpoison or fault injection armed. The decisions are [`step`], pure.

use super::agent::Agent;
use hotfuzz_vm::Vm;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a device may make no progress before it is re-requested.
pub const STALL_BEFORE_KICK: Duration = Duration::from_millis(1500);
/// How long it may make no progress after that before it counts as unsettled.
pub const STALL_AFTER_KICK: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(100);

/// A virtio-mem device whose plugged size differs from its requested size.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unsettled {
    /// QOM id.
    pub id: String,
    /// Requested size.
    pub requested: u64,
    /// Plugged size.
    pub size: u64,
    /// The unit the driver plugs in: the device block size, or in Big Block Mode the big
    /// block. A shortfall below it is the requested size rounded down, not a failure.
    pub granularity: u64,
    /// Unplugging should be able to finish: `unplug_online` is on and every block of the
    /// device is offline or in ZONE_MOVABLE.
    pub unplug_expected: bool,
    /// Plugging should be able to finish: no page is hardware-poisoned and no memory
    /// notifier or page allocation fault injection is armed.
    pub plug_expected: bool,
}

/// What the guest says about a device's memory and the driver's mode.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Every present block of the device's range is offline or in ZONE_MOVABLE, and no page
    /// is hardware-poisoned.
    pub all_movable: bool,
    /// `virtio_mem.unplug_online` is on.
    pub unplug_online: bool,
    /// `virtio_mem.force_bbm` is on.
    pub bbm: bool,
    /// The big block size in Big Block Mode (`bbm_block_size`, else the memory block size).
    pub big_block: u64,
    /// Some page is hardware-poisoned.
    pub poisoned: bool,
    /// Onlining or page allocation failures are being injected.
    pub injected: bool,
}

/// One device being watched.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Requested size.
    pub requested: u64,
    /// Plugged size at the last poll.
    pub size: u64,
    /// The device block size.
    pub block: u64,
    /// When the plugged size last changed (or the device was last re-requested).
    pub last_change: Instant,
    /// Re-requested already.
    pub kicked: bool,
    /// What the guest said about it (asked once, when it was first seen unsettled).
    pub facts: DeviceFacts,
}

impl Watch {
    /// The unit the driver plugs in.
    pub fn granularity(&self) -> u64 {
        if self.facts.bbm {
            self.block.max(self.facts.big_block)
        } else {
            self.block
        }
        .max(1)
    }
}

/// What to do about a device at a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// At its requested size (to the driver's granularity).
    Settled,
    /// Cannot be expected to get there: not waited for, not reported.
    Hopeless,
    /// Making progress, or not stalled long enough: poll again.
    Wait,
    /// Stalled: re-request its size.
    Kick,
    /// Stalled after it was re-requested: unsettled.
    Stalled,
}

/// The decision for `w` at `now`.
pub fn step(w: &Watch, now: Instant) -> Step {
    let g = w.granularity();
    let settled = if w.size <= w.requested {
        w.requested - w.size < g
    } else {
        w.size - w.requested < g
    };
    if settled {
        return Step::Settled;
    }
    let hopeless = if w.requested < w.size {
        !(w.facts.unplug_online && w.facts.all_movable)
    } else {
        w.facts.poisoned || w.facts.injected
    };
    if hopeless {
        return Step::Hopeless;
    }
    let still = now.saturating_duration_since(w.last_change);
    match (w.kicked, still) {
        (false, s) if s >= STALL_BEFORE_KICK => Step::Kick,
        (true, s) if s >= STALL_AFTER_KICK => Step::Stalled,
        _ => Step::Wait,
    }
}

/// Watches `vm`'s virtio-mem devices until each is settled, hopeless or stalled, or `limit`
/// passes (a device still making progress then is given the benefit of the doubt). Returns
/// the stalled ones.
pub fn settle(vm: &Vm, agent: &Agent, agent_alive: bool, limit: Duration) -> Vec<Unsettled> {
    let start = Instant::now();
    let mut watches: BTreeMap<String, (Watch, u64, u64)> = BTreeMap::new();
    let mut stalled: Vec<String> = Vec::new();
    loop {
        let Ok(devs) = vm.qmp().query_memory_devices() else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut waiting = false;
        for d in devs.iter().filter(|d| d.kind == "virtio-mem") {
            let id = d.id.clone().unwrap_or_default();
            if stalled.contains(&id) {
                continue;
            }
            let requested = d.requested_size.unwrap_or(0);
            let (addr, max) = (d.memaddr.unwrap_or(0), d.max_size.unwrap_or(0));
            let block = d
                .block_size
                .or_else(|| {
                    let m = vm.machine().virtio_mem.iter().find(|m| m.id == id);
                    m.and_then(|m| m.block_size)
                })
                .unwrap_or(2 << 20);
            let (w, _, _) = watches.entry(id.clone()).or_insert_with(|| {
                let mut w = Watch {
                    requested,
                    size: d.size,
                    block,
                    last_change: now,
                    kicked: false,
                    facts: DeviceFacts::default(),
                };
                if requested != d.size && agent_alive {
                    w.facts = device_facts(agent, addr, max);
                }
                (w, addr, max)
            });
            if w.size != d.size || w.requested != requested {
                w.size = d.size;
                w.requested = requested;
                w.last_change = now;
            }
            match step(w, now) {
                Step::Settled | Step::Hopeless => {}
                Step::Wait => waiting = true,
                Step::Kick => {
                    // QEMU notifies the guest even when the value does not change: the
                    // driver tries again at once.
                    let _ = vm.qmp().set_virtio_mem_requested_size(&id, requested);
                    w.kicked = true;
                    w.last_change = now;
                    waiting = true;
                }
                Step::Stalled => stalled.push(id),
            }
        }
        if !waiting || start.elapsed() >= limit {
            tracing::debug!(
                "settle: {:?}, {}",
                start.elapsed(),
                watches
                    .iter()
                    .map(|(id, (w, _, _))| format!(
                        "{id} {:#x}/{:#x}{}",
                        w.size,
                        w.requested,
                        if w.kicked { " kicked" } else { "" }
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            break;
        }
        std::thread::sleep(POLL);
    }
    stalled
        .into_iter()
        .filter_map(|id| {
            let (w, _, _) = watches.get(&id)?;
            Some(Unsettled {
                id,
                requested: w.requested,
                size: w.size,
                granularity: w.granularity(),
                unplug_expected: w.facts.unplug_online && w.facts.all_movable,
                plug_expected: !w.facts.poisoned && !w.facts.injected,
            })
        })
        .collect()
}

/// Asks the guest about the memory of the device at `addr` (`max` bytes) and the driver.
pub fn device_facts(agent: &Agent, addr: u64, max: u64) -> DeviceFacts {
    // Shell builtins only (read, test, arithmetic): a fork costs milliseconds under TCG.
    let script = format!(
        r#"m=/sys/module/virtio_mem/parameters; u=; b=; bb=; read u < $m/unplug_online; read b < $m/force_bbm; read bb < $m/bbm_block_size
read bs < /sys/devices/system/memory/block_size_bytes; bs=$((0x$bs)); echo "P $u $b ${{bb:-0}} $bs"
while read k v r; do [ "$k" = HardwareCorrupted: ] && [ "$v" != 0 ] && echo poisoned; done < /proc/meminfo
for f in /sys/kernel/debug/notifier-error-inject/memory/actions/*/error /sys/kernel/debug/fail_page_alloc/probability; do
[ -r $f ] && read v < $f && [ "$v" != 0 ] && echo injected; done
i=$(({addr} / bs)); e=$((({addr} + {max}) / bs))
while [ $i -lt $e ]; do d=/sys/devices/system/memory/memory$i
if [ -d $d ]; then read st < $d/state; read z < $d/valid_zones; [ "$st" = online ] && [ "$z" != Movable ] && echo kernel; fi; i=$((i+1)); done; true"#
    );
    let Ok(out) = agent.run(&script, Duration::from_secs(30)) else {
        return DeviceFacts::default();
    };
    parse_facts(&out)
}

fn parse_facts(out: &str) -> DeviceFacts {
    let mut f = DeviceFacts {
        // Hardware-poisoned pages cannot be unplugged: nothing to expect then.
        all_movable: !out.contains("kernel") && !out.contains("poisoned"),
        poisoned: out.contains("poisoned"),
        injected: out.contains("injected"),
        ..DeviceFacts::default()
    };
    if let Some(p) = out.lines().find_map(|l| l.strip_prefix("P ")) {
        let v: Vec<&str> = p.split_whitespace().collect();
        f.unplug_online = v.first().is_some_and(|x| *x == "Y" || *x == "1");
        f.bbm = v.get(1).is_some_and(|x| *x == "Y" || *x == "1");
        let memory_block: u64 = v.get(3).and_then(|x| x.parse().ok()).unwrap_or(128 << 20);
        f.big_block = v
            .get(2)
            .and_then(|x| x.parse::<u64>().ok())
            .filter(|b| *b > 0)
            .unwrap_or(memory_block);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(requested: u64, size: u64, facts: DeviceFacts, t: Instant) -> Watch {
        Watch {
            requested,
            size,
            block: 2 << 20,
            last_change: t,
            kicked: false,
            facts,
        }
    }

    const MOVABLE: DeviceFacts = DeviceFacts {
        all_movable: true,
        unplug_online: true,
        bbm: false,
        big_block: 128 << 20,
        poisoned: false,
        injected: false,
    };

    #[test]
    fn progress_is_waited_for_and_a_stall_is_kicked_then_unsettled() {
        let t = Instant::now();
        let mut w = watch(512 << 20, 128 << 20, MOVABLE, t);
        assert_eq!(step(&w, t + Duration::from_millis(500)), Step::Wait);
        assert_eq!(step(&w, t + STALL_BEFORE_KICK), Step::Kick);
        w.kicked = true;
        w.last_change = t + STALL_BEFORE_KICK;
        assert_eq!(
            step(&w, t + STALL_BEFORE_KICK + Duration::from_secs(1)),
            Step::Wait
        );
        assert_eq!(
            step(&w, t + STALL_BEFORE_KICK + STALL_AFTER_KICK),
            Step::Stalled
        );
        w.size = 512 << 20;
        assert_eq!(step(&w, t + Duration::from_secs(60)), Step::Settled);
    }

    #[test]
    fn what_cannot_settle_is_not_waited_for() {
        let t = Instant::now();
        let late = t + Duration::from_secs(60);
        // Shrinking with memory in kernel zones, or unplug_online off.
        let kernel = DeviceFacts {
            all_movable: false,
            ..MOVABLE
        };
        assert_eq!(step(&watch(0, 256 << 20, kernel, t), late), Step::Hopeless);
        let no_unplug = DeviceFacts {
            unplug_online: false,
            ..MOVABLE
        };
        assert_eq!(
            step(&watch(0, 256 << 20, no_unplug, t), late),
            Step::Hopeless
        );
        // Growing with injection armed; but growing with memory in kernel zones can finish.
        let injected = DeviceFacts {
            injected: true,
            ..kernel
        };
        assert_eq!(step(&watch(1 << 30, 0, injected, t), late), Step::Hopeless);
        assert_eq!(step(&watch(1 << 30, 0, kernel, t), late), Step::Kick);
    }

    #[test]
    fn big_block_mode_rounds_to_its_big_blocks() {
        let t = Instant::now();
        let bbm = DeviceFacts {
            bbm: true,
            ..MOVABLE
        };
        // 100 MiB asked, BBM with 128 MiB blocks: nothing can be plugged, and that is right.
        assert_eq!(step(&watch(100 << 20, 0, bbm, t), t), Step::Settled);
        assert_eq!(step(&watch(200 << 20, 128 << 20, bbm, t), t), Step::Settled);
        assert_eq!(step(&watch(300 << 20, 128 << 20, bbm, t), t), Step::Wait);
        // The same request in Sub Block Mode must be met exactly.
        assert_eq!(step(&watch(100 << 20, 0, MOVABLE, t), t), Step::Wait);
    }

    #[test]
    fn facts_are_read_from_the_guest_script_output() {
        let f = parse_facts("P Y N 0 134217728\nkernel\n");
        assert!(f.unplug_online && !f.bbm && !f.all_movable);
        assert_eq!(f.big_block, 128 << 20);
        let f = parse_facts("P Y Y 268435456 134217728\npoisoned\ninjected\n");
        assert!(f.bbm && f.poisoned && f.injected && !f.all_movable);
        assert_eq!(f.big_block, 256 << 20);
    }
}
