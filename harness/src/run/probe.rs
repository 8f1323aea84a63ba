//! Looking at a running guest: its memory layout and operations it cannot run (for the
//! generator), and after a program what the judge needs to know (QEMU, ssh, console silence,
//! virtio-mem devices that do not reach their requested size).

use crate::program::state::{parse_node_list, BlockState, DeviceState, GuestState};
use crate::run::agent::Agent;
pub use crate::run::settle::Unsettled;
use anyhow::{Context, Result};
use hotfuzz_vm::{Arch, Vm};
use std::collections::BTreeSet;
use std::time::Duration;

/// Reads the state of a running guest (sysfs through its agent, devices over QMP, unsupported
/// operations from the executor's probe).
pub fn guest_state(vm: &Vm, agent: &Agent) -> Result<GuestState> {
    // Shell builtins in the loop (read, globs): a fork costs milliseconds under TCG.
    let script = r#"
read b < /sys/devices/system/memory/block_size_bytes; echo $b
getconf PAGESIZE 2>/dev/null || echo 4096
n=0; read n < /sys/devices/system/node/possible; echo $n
for d in /sys/devices/system/memory/memory*; do
  node=; for x in $d/node*; do [ -e "$x" ] && node=${x##*/node}; break; done
  st=; z=; read st < $d/state; read z < $d/valid_zones
  set -- $z; IFS=,; z="$*"; unset IFS
  echo "B ${d##*/memory} $st ${z:--} ${node:-0}"
done
[ -x /usr/bin/hotfuzz-executor ] && /usr/bin/hotfuzz-executor --probe
"#;
    let out = agent
        .run(script, Duration::from_secs(30))
        .context("reading the guest's memory state")?;
    let machine = vm.machine();
    parse_state(&out, machine.arch, machine.memory, virtio_mem_devices(vm)?)
}

/// The guest's virtio-mem devices over QMP, each with the index programs name it by (its
/// place among the virtio-mem devices QEMU lists); none on machines without them.
pub fn virtio_mem_devices(vm: &Vm) -> Result<Vec<DeviceState>> {
    if vm.machine().arch != Arch::X86_64 {
        return Ok(Vec::new());
    }
    let devs = vm.qmp().query_memory_devices()?;
    Ok(devs
        .iter()
        .filter(|d| d.kind == "virtio-mem")
        .enumerate()
        .map(|(i, d)| DeviceState {
            index: i as u32,
            id: d.id.clone().unwrap_or_default(),
            memaddr: d.memaddr.unwrap_or(0),
            max: d.max_size.unwrap_or(0),
            block_size: d.block_size.unwrap_or(2 << 20),
            requested: d.requested_size.unwrap_or(0),
            size: d.size,
            node: d.node.unwrap_or(0) as u32,
        })
        .collect())
}

/// The guest's state from what the probe script printed, `devices` from QMP; an impossible
/// state (a block size of 0, blocks that do not fit) is an error, not a divide by zero later.
pub fn parse_state(
    out: &str,
    arch: Arch,
    boot_ram: u64,
    devices: Vec<DeviceState>,
) -> Result<GuestState> {
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
                    zones: f
                        .get(2)
                        .copied()
                        .filter(|z| *z != "-")
                        .unwrap_or("")
                        .replace(',', " "),
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
    let st = GuestState {
        arch,
        page_size,
        block_size,
        blocks,
        nodes,
        devices,
        boot_ram,
        unsupported,
    };
    st.check()
        .map_err(|e| anyhow::anyhow!("the guest reported an impossible state: {e}"))?;
    Ok(st)
}

/// How long the agent gets to answer after a run before the guest counts as not answering.
pub const AGENT_ANSWERS_WITHIN: Duration = Duration::from_secs(20);

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

impl GuestCheck {
    /// Looks at a guest after a run: QEMU, its agent (one quick answer), console silence, and
    /// virtio-mem devices that stop short of their requested size ([`super::settle`], waiting
    /// at most `settle` for devices that make progress).
    pub fn probe(vm: &Vm, agent: &Agent, settle: Duration) -> GuestCheck {
        // A stopped QEMU answers neither the agent nor QMP: nothing to wait for.
        let stopped = vm.stopped();
        let agent_alive = vm.is_alive() && !stopped && agent.alive(AGENT_ANSWERS_WITHIN);
        // Looked at after the agent: a QEMU that died while the agent was asked is a dead
        // QEMU, not a lost connection.
        let qemu_alive = vm.is_alive();
        let qemu_exit = vm.exit_status().map(|s| s.to_string()).or_else(|| {
            vm.halted()
                .then(|| "the guest shut down; QEMU keeps it paused".to_string())
        });
        let console_silent_for = vm
            .console()
            .last_output()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let unsettled = if qemu_alive && !stopped {
            super::settle::settle(vm, agent, agent_alive, settle)
        } else {
            Vec::new()
        };
        GuestCheck {
            qemu_alive,
            qemu_exit,
            agent_alive,
            console_silent_for,
            unsettled,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const PROBED: &str = "8000000\n4096\n0\nB 0 online Normal 0\nB 1 online Movable,Normal 0\n\
                          B 32 offline - 0\n{\"unsupported\":{\"gup_test_run\":\"no gup_test\"},\"implemented\":[]}\n";

    #[test]
    fn a_probe_gives_the_blocks_and_what_the_kernel_lacks() {
        let st = parse_state(PROBED, Arch::X86_64, 1 << 30, Vec::new()).unwrap();
        assert_eq!((st.block_size, st.page_size), (128 << 20, 4096));
        assert_eq!(st.blocks.len(), 3);
        assert_eq!(st.blocks[1].zones, "Movable Normal");
        assert!(!st.blocks[2].online && st.blocks[2].zones.is_empty());
        assert!(st.unsupported.contains("gup_test_run"));
    }

    #[test]
    fn a_guest_reporting_a_zero_block_size_is_an_error_not_a_division_by_zero() {
        let zero = PROBED.replacen("8000000", "0", 1);
        let e = parse_state(&zero, Arch::X86_64, 1 << 30, Vec::new()).unwrap_err();
        assert!(format!("{e:#}").contains("impossible state"), "{e:#}");
        let junk = PROBED.replacen("8000000", "lots", 1);
        let e = parse_state(&junk, Arch::X86_64, 1 << 30, Vec::new()).unwrap_err();
        assert!(format!("{e:#}").contains("block_size_bytes"), "{e:#}");
    }
}
