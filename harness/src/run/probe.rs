//! Looking at a running guest: its memory layout and operations it cannot run (for the
//! generator), and after a program what the judge needs to know (QEMU, ssh, console silence,
//! virtio-mem devices that do not reach their requested size).

use crate::program::state::{parse_node_list, BlockState, DeviceState, GuestState};
use crate::run::agent::Agent;
use anyhow::{Context, Result};
use hotfuzz_vm::{Arch, Vm};
use std::collections::BTreeSet;
use std::time::Duration;

/// Reads the state of a running guest (sysfs through its agent, devices over QMP, unsupported
/// operations from the executor's probe).
pub fn guest_state(vm: &Vm, agent: &Agent) -> Result<GuestState> {
    let script = r#"
cat /sys/devices/system/memory/block_size_bytes
getconf PAGESIZE 2>/dev/null || echo 4096
for n in /sys/devices/system/node/possible; do cat $n 2>/dev/null || echo 0; done
for d in /sys/devices/system/memory/memory*; do
  node=$(ls -d $d/node* 2>/dev/null | head -n1)
  echo "B ${d##*/memory} $(cat $d/state) $(cat $d/valid_zones 2>/dev/null | tr ' ' ,) ${node##*/node}"
done
[ -x /usr/bin/hotfuzz-executor ] && /usr/bin/hotfuzz-executor --probe
"#;
    let out = agent
        .run(script, Duration::from_secs(30))
        .context("reading the guest's memory state")?;
    let mut lines = out.lines();
    let block_size = u64::from_str_radix(lines.next().unwrap_or("").trim(), 16)
        .context("bad block_size_bytes")?;
    let page_size: u64 = lines
        .next()
        .unwrap_or("4096")
        .trim()
        .parse()
        .unwrap_or(4096);
    let nodes = parse_node_list(lines.next().unwrap_or("0"));
    let mut blocks = Vec::new();
    let mut unsupported = BTreeSet::new();
    for l in lines {
        if let Some(rest) = l.strip_prefix("B ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() >= 2 {
                blocks.push(BlockState {
                    id: f[0].parse().unwrap_or(0),
                    online: f[1] == "online",
                    zones: f.get(2).copied().unwrap_or("").replace(',', " "),
                    node: f.get(3).and_then(|n| n.parse().ok()).unwrap_or(0),
                });
            }
        } else if l.starts_with('{') {
            if let Ok(p) = serde_json::from_str::<hotfuzz_executor::protocol::ProbeResult>(l) {
                unsupported.extend(p.unsupported.into_keys());
            }
        }
    }
    blocks.sort_by_key(|b| b.id);
    let machine = vm.machine();
    let mut devices = Vec::new();
    if machine.arch == Arch::X86_64 {
        let devs = vm.qmp().query_memory_devices()?;
        for (i, d) in devs.iter().filter(|d| d.kind == "virtio-mem").enumerate() {
            devices.push(DeviceState {
                index: i as u32,
                id: d.id.clone().unwrap_or_default(),
                memaddr: d.memaddr.unwrap_or(0),
                max: d.max_size.unwrap_or(0),
                block_size: d.block_size.unwrap_or(2 << 20),
                requested: d.requested_size.unwrap_or(0),
                size: d.size,
                node: d.node.unwrap_or(0) as u32,
            });
        }
    }
    Ok(GuestState {
        arch: machine.arch,
        page_size,
        block_size,
        blocks,
        nodes,
        devices,
        boot_ram: machine.memory,
        unsupported,
    })
}

/// What the harness knows about the guest after a run.
#[derive(Debug, Clone, Default)]
pub struct GuestCheck {
    /// QEMU is still running.
    pub qemu_alive: bool,
    /// QEMU's exit status, if it exited.
    pub qemu_exit: Option<String>,
    /// The guest answers a trivial ssh command.
    pub agent_alive: bool,
    /// How long the console has been silent.
    pub console_silent_for: Duration,
    /// virtio-mem devices that did not settle.
    pub unsettled: Vec<Unsettled>,
}

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

impl GuestCheck {
    /// Looks at a guest after a run: QEMU, its agent (one quick answer), console silence, and
    /// virtio-mem devices whose plugged size has not reached the requested size within
    /// `settle`, nor within twice that after the device re-requested its size.
    pub fn probe(vm: &Vm, agent: &Agent, settle: Duration) -> GuestCheck {
        let qemu_alive = vm.is_alive();
        let qemu_exit = vm.exit_status().map(|s| s.to_string());
        let agent_alive = qemu_alive && agent.alive(Duration::from_secs(20));
        let console_silent_for = vm
            .console()
            .last_output()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let mut unsettled = Vec::new();
        if qemu_alive && !vm.machine().virtio_mem.is_empty() {
            let mut deadline = std::time::Instant::now() + settle;
            let mut kicked = false;
            // Devices the guest cannot be expected to settle: asked to shrink with memory in
            // kernel zones, hwpoison or unplug_online off; asked to grow with hwpoison or
            // fault injection armed. Nothing to wait for, nothing to report.
            let mut hopeless: std::collections::HashSet<String> = Default::default();
            loop {
                unsettled.clear();
                if let Ok(devs) = vm.qmp().query_memory_devices() {
                    for d in devs.iter().filter(|d| d.kind == "virtio-mem") {
                        let req = d.requested_size.unwrap_or(0);
                        let id = d.id.clone().unwrap_or_default();
                        if hopeless.contains(&id) {
                            continue;
                        }
                        if req < d.size && agent_alive {
                            let f = device_facts(
                                agent,
                                d.memaddr.unwrap_or(0),
                                d.max_size.unwrap_or(0),
                            );
                            if !(f.unplug_online && f.all_movable) {
                                hopeless.insert(id);
                                continue;
                            }
                        }
                        if req != d.size {
                            unsettled.push((
                                d.id.clone().unwrap_or_default(),
                                req,
                                d.size,
                                d.memaddr.unwrap_or(0),
                                d.max_size.unwrap_or(0),
                            ));
                        }
                    }
                }
                if !unsettled.is_empty() && !kicked && std::time::Instant::now() >= deadline {
                    // The driver retries a failed plug or unplug on a timer (50 s at first,
                    // backing off to 5 min): a page pinned while the program ran can delay
                    // it past any settle time. Now the program's resources are gone, so
                    // re-request the same size (QEMU notifies the guest even when the value
                    // does not change) and give the driver a fresh try.
                    kicked = true;
                    for (id, req, size, addr, max) in &unsettled {
                        if req > size && agent_alive && {
                            let f = device_facts(agent, *addr, *max);
                            f.poisoned || f.injected
                        } {
                            // A plug that may rightly fall short: not worth waiting for.
                            hopeless.insert(id.clone());
                            continue;
                        }
                        let _ = vm.qmp().set_virtio_mem_requested_size(id, *req);
                    }
                    unsettled.retain(|u| !hopeless.contains(&u.0));
                    deadline = std::time::Instant::now() + settle.max(Duration::from_secs(10)) * 2;
                }
                if unsettled.is_empty() || std::time::Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        let unsettled = unsettled
            .into_iter()
            .map(|(id, req, size, addr, max)| {
                let block = vm
                    .machine()
                    .virtio_mem
                    .iter()
                    .find(|d| d.id == id)
                    .and_then(|d| d.block_size)
                    .unwrap_or(2 << 20);
                let facts = if agent_alive {
                    device_facts(agent, addr, max)
                } else {
                    DeviceFacts::default()
                };
                let granularity = if facts.bbm {
                    block.max(facts.big_block)
                } else {
                    block
                };
                Unsettled {
                    id,
                    requested: req,
                    size,
                    granularity,
                    unplug_expected: facts.unplug_online && facts.all_movable,
                    plug_expected: !facts.poisoned && !facts.injected,
                }
            })
            .collect();
        GuestCheck {
            qemu_alive,
            qemu_exit,
            agent_alive,
            console_silent_for,
            unsettled,
        }
    }
}

/// What the guest says about a device's memory and the driver's mode.
#[derive(Debug, Default)]
struct DeviceFacts {
    /// Every present block of the device's range is offline or in ZONE_MOVABLE, and no page
    /// is hardware-poisoned.
    all_movable: bool,
    /// `virtio_mem.unplug_online` is on.
    unplug_online: bool,
    /// `virtio_mem.force_bbm` is on.
    bbm: bool,
    /// The big block size in Big Block Mode (`bbm_block_size`, else the memory block size).
    big_block: u64,
    /// Some page is hardware-poisoned.
    poisoned: bool,
    /// Onlining or page allocation failures are being injected.
    injected: bool,
}

fn device_facts(agent: &Agent, addr: u64, max: u64) -> DeviceFacts {
    let script = format!(
        r#"m=/sys/module/virtio_mem/parameters; bs=$((0x$(cat /sys/devices/system/memory/block_size_bytes)));
echo "P $(cat $m/unplug_online 2>/dev/null) $(cat $m/force_bbm 2>/dev/null) $(cat $m/bbm_block_size 2>/dev/null) $bs";
grep -q '^HardwareCorrupted: *[1-9]' /proc/meminfo && echo poisoned;
for f in /sys/kernel/debug/notifier-error-inject/memory/actions/*/error /sys/kernel/debug/fail_page_alloc/probability; do
[ -r $f ] && [ "$(cat $f)" != 0 ] && echo injected; done;
i=$(({addr} / bs)); e=$((({addr} + {max}) / bs));
while [ $i -lt $e ]; do d=/sys/devices/system/memory/memory$i;
if [ -d $d ] && [ "$(cat $d/state)" = online ] && [ "$(cat $d/valid_zones)" != Movable ]; then echo kernel; fi; i=$((i+1)); done"#
    );
    let Ok(out) = agent.run(&script, Duration::from_secs(30)) else {
        return DeviceFacts::default();
    };
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

/// Fault injection armed in the guest now: memory notifier errors, fail_page_alloc, and
/// hardware-poisoned memory (`HardwareCorrupted` in /proc/meminfo).
pub fn injections(agent: &Agent) -> Vec<String> {
    let script = r#"d=/sys/kernel/debug/notifier-error-inject/memory/actions
for a in MEM_GOING_OFFLINE MEM_GOING_ONLINE; do
  [ -r $d/$a/error ] && v=$(cat $d/$a/error) && [ "$v" != 0 ] && echo "notifier: $a fails with errno $v"
done
f=/sys/kernel/debug/fail_page_alloc/probability
[ -r $f ] && v=$(cat $f) && [ "$v" != 0 ] && echo "fail_page_alloc: probability $v"
grep '^HardwareCorrupted: *[1-9]' /proc/meminfo | sed 's/^HardwareCorrupted: */hwpoison: /;s/ kB/ KiB poisoned/'
true"#;
    agent
        .run(script, Duration::from_secs(10))
        .map(|o| {
            o.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
