//! Reports the console cannot give: what the harness observes about a run. An operation that
//! did not return after its deadline and signal, a guest that stopped answering, a console
//! that went silent, QEMU exiting, a reboot, a virtio-mem device that does not reach its
//! requested size.

use crate::program::prog::Program;
use crate::report::{Report, ReportType};
pub use crate::run::probe::{GuestCheck, Unsettled};
use crate::run::runner::RunResult;
use hotfuzz_executor::protocol::Outcome;
use std::time::Duration;

/// Console silence that counts as "no output" while a program is running.
pub const NO_OUTPUT_AFTER: Duration = Duration::from_secs(120);

/// A report the harness makes itself (not parsed from the console).
pub(crate) fn report(kind: ReportType, title: &str, text: String) -> Report {
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
    } else if !g.agent_alive && !explained {
        out.push(report(
            ReportType::LostConnection,
            "lost connection to test machine",
            format!(
                "the guest stopped answering: {}",
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
            console_mark: 0,
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
                    kt_end_ns: None,
                    runs: 1,
                    oks: 0,
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
            agent_alive: true,
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
            agent_alive: false,
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
