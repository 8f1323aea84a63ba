//! Reports the console cannot give: what the harness observes about a run. An operation that
//! did not return after its deadline and signal, a guest that stopped answering, a console
//! that went silent, QEMU exiting, a reboot, a virtio-mem device that does not reach its
//! requested size.

use crate::program::prog::Program;
use crate::report::{Report, ReportType};
use crate::run::runner::RunResult;
use hotfuzz_executor::protocol::Outcome;
use std::time::Duration;

/// What the harness knows about the guest after a run.
#[derive(Debug, Clone, Default)]
pub struct GuestCheck {
    /// QEMU is still running.
    pub qemu_alive: bool,
    /// QEMU's exit status, if it exited.
    pub qemu_exit: Option<String>,
    /// The guest answers a trivial ssh command.
    pub ssh_alive: bool,
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
    /// Looks at a guest after a run: QEMU, ssh (one quick command), console silence, and
    /// virtio-mem devices whose plugged size has not reached the requested size within
    /// `settle`, nor within twice that after the device re-requested its size.
    pub fn probe(vm: &hotfuzz_vm::Vm, settle: Duration) -> GuestCheck {
        let qemu_alive = vm.is_alive();
        let qemu_exit = vm.exit_status().map(|s| s.to_string());
        let ssh_alive = qemu_alive
            && vm
                .exec_with(
                    "true",
                    &hotfuzz_vm::ssh::ExecOptions {
                        stdin: None,
                        silence_timeout: Duration::from_secs(20),
                        deadline: Some(std::time::Instant::now() + Duration::from_secs(20)),
                    },
                )
                .map(|o| o.success())
                .unwrap_or(false);
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
                        if req < d.size && ssh_alive {
                            let f =
                                device_facts(vm, d.memaddr.unwrap_or(0), d.max_size.unwrap_or(0));
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
                        if req > size && ssh_alive && {
                            let f = device_facts(vm, *addr, *max);
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
                let facts = if ssh_alive {
                    device_facts(vm, addr, max)
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
            ssh_alive,
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

fn device_facts(vm: &hotfuzz_vm::Vm, addr: u64, max: u64) -> DeviceFacts {
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
    let Ok(out) = vm.run(&script) else {
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

/// Console silence that counts as "no output" while a program is running.
pub const NO_OUTPUT_AFTER: Duration = Duration::from_secs(120);

fn report(kind: ReportType, title: &str, text: String) -> Report {
    Report {
        title: title.to_string(),
        alt_titles: Vec::new(),
        kind,
        frame: None,
        corrupted: None,
        page_dump_reasons: Vec::new(),
        start_line: 0,
        end_line: 0,
        host_time: None,
        text,
        interleaved: false,
        panicked: false,
    }
}

/// The harness's own reports for a run. `console` are the reports parsed from the run's
/// console output: a guest that died with a kernel report is that report, not "lost
/// connection".
pub fn check(prog: &Program, r: &RunResult, g: &GuestCheck, console: &[Report]) -> Vec<Report> {
    let mut out = Vec::new();
    for o in &r.ops {
        if let Some(Outcome::Stuck) = &o.outcome {
            let name = prog
                .ops
                .get(o.index)
                .map(|x| x.name.as_str())
                .unwrap_or("?");
            out.push(report(
                ReportType::StuckOp,
                &format!("hang: {name} did not return"),
                format!(
                    "operation {} (thread {}) did not return after its deadline and a signal: {}",
                    o.index,
                    o.thread,
                    prog.ops
                        .get(o.index)
                        .map(|x| x.name.clone())
                        .unwrap_or_default()
                ),
            ));
        }
    }
    let explained = console.iter().any(|c| c.panicked || c.corrupted.is_none());
    if !g.qemu_alive {
        if !console.iter().any(|c| c.panicked) {
            let rebooted = r.console.iter().any(|l| {
                l.text.contains("reboot: Restarting system") || l.text.contains("Linux version ")
            });
            if rebooted {
                out.push(report(
                    ReportType::UnexpectedReboot,
                    "unexpected kernel reboot",
                    "the guest rebooted during the program".into(),
                ));
            } else if !explained {
                out.push(report(
                    ReportType::QemuExited,
                    "qemu exited unexpectedly",
                    format!(
                        "QEMU exited during the program: {}",
                        g.qemu_exit.clone().unwrap_or_default()
                    ),
                ));
            }
        }
    } else if !g.ssh_alive && !explained {
        out.push(report(
            ReportType::LostConnection,
            "lost connection to test machine",
            format!(
                "the guest stopped answering ssh: {}",
                r.lost.clone().unwrap_or_default()
            ),
        ));
    } else if r.lost.is_some() && g.console_silent_for >= NO_OUTPUT_AFTER && !explained {
        out.push(report(
            ReportType::NoOutput,
            "no output from test machine",
            format!(
                "no console output for {} s while the program ran: {}",
                g.console_silent_for.as_secs(),
                r.lost.clone().unwrap_or_default()
            ),
        ));
    }
    for u in &g.unsettled {
        if u.size < u.requested && u.requested - u.size >= u.granularity.max(1) && u.plug_expected {
            out.push(report(
                ReportType::VirtioMemNotSettled,
                "virtio-mem: plugged size stays below the requested size",
                format!(
                    "{}: requested {:#x}, plugged {:#x} (plugs in units of {:#x})",
                    u.id, u.requested, u.size, u.granularity
                ),
            ));
        } else if u.size > u.requested && u.unplug_expected {
            out.push(report(
                ReportType::VirtioMemNotSettled,
                "virtio-mem: unplug of movable memory does not complete",
                format!(
                    "{}: requested {:#x}, plugged {:#x}, all of its memory movable or offline, unplug_online on",
                    u.id, u.requested, u.size
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::desc::Descriptions;
    use crate::run::runner::OpResult;

    fn run(outcomes: Vec<Option<Outcome>>, lost: Option<&str>) -> RunResult {
        RunResult {
            program_id: "x".into(),
            ops: outcomes
                .into_iter()
                .enumerate()
                .map(|(index, outcome)| OpResult {
                    index,
                    thread: 0,
                    outcome,
                    duration: Duration::ZERO,
                    started: None,
                    kt_start_ns: None,
                })
                .collect(),
            console: Vec::new(),
            started: std::time::SystemTime::now(),
            duration: Duration::ZERO,
            abandoned: Vec::new(),
            memory: None,
            lost: lost.map(str::to_string),
            cover: Default::default(),
            executor_stderr: String::new(),
        }
    }

    fn alive() -> GuestCheck {
        GuestCheck {
            qemu_alive: true,
            ssh_alive: true,
            ..Default::default()
        }
    }

    #[test]
    fn stuck_operation_is_a_hang_report() {
        let d = Descriptions::embedded();
        let p = Program::parse(
            "yield()\nmemblock_state(block=0x21, state=\"offline\")\n",
            &d,
        )
        .unwrap();
        let r = run(vec![Some(Outcome::ok()), Some(Outcome::Stuck)], None);
        let reps = check(&p, &r, &alive(), &[]);
        assert_eq!(reps.len(), 1);
        assert_eq!(reps[0].title, "hang: memblock_state did not return");
        assert_eq!(reps[0].kind, ReportType::StuckOp);
        // A timed-out (interrupted) offline is not a hang.
        let r = run(
            vec![Some(Outcome::ok()), Some(Outcome::Timeout { errno: 4 })],
            None,
        );
        assert!(check(&p, &r, &alive(), &[]).is_empty());
    }

    #[test]
    fn dead_guest_without_a_console_report() {
        let d = Descriptions::embedded();
        let p = Program::parse("yield()\n", &d).unwrap();
        let r = run(vec![None], Some("QEMU exited during the program"));
        let g = GuestCheck {
            qemu_alive: false,
            qemu_exit: Some("signal 9".into()),
            ..Default::default()
        };
        let reps = check(&p, &r, &g, &[]);
        assert_eq!(reps[0].title, "qemu exited unexpectedly");
        // With a panic on the console, the panic is the report.
        let panic =
            crate::report::parse("[ 1.0] Kernel panic - not syncing: sysrq triggered crash\n");
        assert!(check(&p, &r, &g, &panic).is_empty());
        // Alive QEMU, dead ssh.
        let g = GuestCheck {
            qemu_alive: true,
            ssh_alive: false,
            ..Default::default()
        };
        assert_eq!(
            check(&p, &r, &g, &[])[0].title,
            "lost connection to test machine"
        );
    }

    #[test]
    fn virtio_mem_that_does_not_settle() {
        let d = Descriptions::embedded();
        let p = Program::parse("yield()\n", &d).unwrap();
        let r = run(vec![Some(Outcome::ok())], None);
        let mut g = alive();
        let dev = |requested: u64, size: u64, granularity: u64, unplug_expected: bool| Unsettled {
            id: "vm0".into(),
            requested,
            size,
            granularity,
            unplug_expected,
            plug_expected: true,
        };
        g.unsettled = vec![dev(256 << 20, 128 << 20, 2 << 20, false)];
        assert_eq!(
            check(&p, &r, &g, &[])[0].kind,
            ReportType::VirtioMemNotSettled
        );
        // Big Block Mode plugs whole big blocks: a request between two is rounded down.
        g.unsettled = vec![dev(0xb4e0_0000, 0xb000_0000, 128 << 20, false)];
        assert!(check(&p, &r, &g, &[]).is_empty());
        // Unplug that cannot finish because memory is in kernel zones, or because
        // unplug_online is off, is not a bug.
        g.unsettled = vec![dev(0, 128 << 20, 2 << 20, false)];
        assert!(check(&p, &r, &g, &[]).is_empty());
        g.unsettled = vec![dev(0, 128 << 20, 2 << 20, true)];
        assert_eq!(check(&p, &r, &g, &[]).len(), 1);
        // A guest with poisoned pages or armed fault injection may rightly fall short.
        g.unsettled = vec![Unsettled {
            plug_expected: false,
            ..dev(256 << 20, 128 << 20, 2 << 20, false)
        }];
        assert!(check(&p, &r, &g, &[]).is_empty());
    }
}
