//! Reports the console cannot give: what the harness observes about a run. An operation that
//! did not return after its deadline and signal, a guest that stopped answering, a console
//! that went silent, QEMU exiting, a reboot, a virtio-mem device that does not reach its
//! requested size.

use super::{Report, ReportType};
use crate::prog::Program;
use crate::runner::RunResult;
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
    /// virtio-mem devices that did not settle: (id, requested, plugged, all of its memory
    /// movable or offline).
    pub unsettled: Vec<(String, u64, u64, bool)>,
}

impl GuestCheck {
    /// Looks at a guest after a run: QEMU, ssh (one quick command), console silence, and
    /// virtio-mem devices whose plugged size has not reached the requested size within
    /// `settle`.
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
            let deadline = std::time::Instant::now() + settle;
            loop {
                unsettled.clear();
                if let Ok(devs) = vm.qmp().query_memory_devices() {
                    for d in devs.iter().filter(|d| d.kind == "virtio-mem") {
                        let req = d.requested_size.unwrap_or(0);
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
                if unsettled.is_empty() || std::time::Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        let unsettled = unsettled
            .into_iter()
            .map(|(id, req, size, addr, max)| {
                let movable = ssh_alive && device_memory_movable(vm, addr, max);
                (id, req, size, movable)
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

/// True when every present memory block of a device's range is offline or in ZONE_MOVABLE.
fn device_memory_movable(vm: &hotfuzz_vm::Vm, addr: u64, max: u64) -> bool {
    let script = format!(
        r#"bs=$((0x$(cat /sys/devices/system/memory/block_size_bytes))); i=$(({addr} / bs)); e=$((({addr} + {max}) / bs));
while [ $i -lt $e ]; do d=/sys/devices/system/memory/memory$i;
if [ -d $d ] && [ "$(cat $d/state)" = online ] && [ "$(cat $d/valid_zones)" != Movable ]; then echo kernel; fi; i=$((i+1)); done"#
    );
    match vm.run(&script) {
        Ok(out) => !out.contains("kernel"),
        Err(_) => false,
    }
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
    for (id, requested, size, movable) in &g.unsettled {
        if size < requested {
            out.push(report(
                ReportType::VirtioMemNotSettled,
                "virtio-mem: plugged size stays below the requested size",
                format!("{id}: requested {requested:#x}, plugged {size:#x}"),
            ));
        } else if *movable {
            out.push(report(
                ReportType::VirtioMemNotSettled,
                "virtio-mem: unplug of movable memory does not complete",
                format!("{id}: requested {requested:#x}, plugged {size:#x}, all of its memory movable or offline"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desc::Descriptions;
    use crate::runner::OpResult;

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
        g.unsettled = vec![("vm0".into(), 256 << 20, 128 << 20, false)];
        assert_eq!(
            check(&p, &r, &g, &[])[0].kind,
            ReportType::VirtioMemNotSettled
        );
        // Unplug that cannot finish because memory is in kernel zones is not a bug.
        g.unsettled = vec![("vm0".into(), 0, 128 << 20, false)];
        assert!(check(&p, &r, &g, &[]).is_empty());
        g.unsettled = vec![("vm0".into(), 0, 128 << 20, true)];
        assert_eq!(check(&p, &r, &g, &[]).len(), 1);
    }
}
