//! Judging a run: the kernel reports its console output contains, the harness's own oracles
//! (stuck operation, lost guest, silence, virtio-mem not settling), and whether the run says
//! anything about the kernel at all. [`judge`] is the one place these rules live; the fuzzer,
//! the reproducer and `hotfuzz run` all use it, so they cannot judge the same run differently.

pub mod oracle;
pub mod symbolize;

use self::oracle::GuestCheck;
use crate::program::prog::Program;
use crate::report::{Report, ReportType};
use crate::run::agent::Agent;
use crate::run::guest::HUNG_TASK_TIMEOUT;
use crate::run::runner::RunResult;
use hotfuzz_vm::console::ConsoleLine;
use hotfuzz_vm::Vm;
use std::time::{Duration, Instant};

/// What a run means.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// The reports to file: kernel reports, and the harness's own where no kernel report
    /// explains them.
    pub reports: Vec<Report>,
    /// Set when the run says nothing about the kernel (QEMU died without a kernel report:
    /// killed from outside, or QEMU's own crash). Then `reports` is empty.
    pub infra: Option<String>,
}

/// The kernel reports in a run's console output.
pub fn console_reports(run: &RunResult) -> Vec<Report> {
    let text: String = run
        .console
        .iter()
        .map(|l| format!("{}\n", l.text))
        .collect();
    crate::report::parse(&text)
}

/// Every report a run produced before judging: console reports first, then harness oracles.
/// `settle` is how long virtio-mem devices get to reach their requested size before that
/// counts as a bug.
pub fn reports(
    vm: &Vm,
    agent: &Agent,
    prog: &Program,
    r: &RunResult,
    settle: Duration,
) -> Vec<Report> {
    let console = console_reports(r);
    let check = GuestCheck::probe(vm, agent, settle);
    let mut all = console.clone();
    all.extend(oracle::check(prog, r, &check, &console));
    all
}

/// Report types the harness produces (as opposed to the kernel).
pub fn is_oracle(k: ReportType) -> bool {
    matches!(
        k,
        ReportType::StuckOp
            | ReportType::LostConnection
            | ReportType::NoOutput
            | ReportType::QemuExited
            | ReportType::UnexpectedReboot
            | ReportType::VirtioMemNotSettled
    )
}

/// Whether any report came from the kernel.
pub fn kernel_says(reports: &[Report]) -> bool {
    reports.iter().any(|r| !is_oracle(r.kind))
}

/// Judges a run: [`reports`], then
/// - a stuck operation waits for the hung task detector (its report names the function; the
///   guest's timeout is [`HUNG_TASK_TIMEOUT`]);
/// - a kernel report replaces the harness's stuck/lost/silent reports it explains;
/// - QEMU exiting with no kernel report is an infrastructure failure, whatever else the
///   harness saw: the rest (a lost connection, operations without results) follows from it.
pub fn judge(vm: &Vm, agent: &Agent, prog: &Program, run: &RunResult, settle: Duration) -> Verdict {
    let mut reports = reports(vm, agent, prog, run, settle);
    if reports.iter().any(|r| r.kind == ReportType::StuckOp) && !kernel_says(&reports) {
        let mark = run.console.first().map(|l| l.index).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(3 * HUNG_TASK_TIMEOUT + 5);
        let _ = vm
            .console()
            .wait_for_text(mark, deadline, "blocked for more than");
        std::thread::sleep(Duration::from_secs(1));
        let mut later = run.clone();
        later.console = vm.console().lines_since(mark);
        reports = self::reports(vm, agent, prog, &later, Duration::ZERO);
    }
    decide(
        reports,
        vm.exit_status().map(|s| s.to_string()).unwrap_or_default(),
    )
}

/// The pure part of [`judge`]: what the reports of a run add up to. `qemu_exit` describes
/// QEMU's exit status, for the infrastructure failure's message.
pub fn decide(mut reports: Vec<Report>, qemu_exit: String) -> Verdict {
    if reports.iter().any(|r| r.kind == ReportType::QemuExited) && !kernel_says(&reports) {
        return Verdict {
            reports: Vec::new(),
            infra: Some(format!("QEMU exited without a kernel report ({qemu_exit})")),
        };
    }
    if kernel_says(&reports) {
        reports.retain(|r| {
            !matches!(
                r.kind,
                ReportType::StuckOp | ReportType::LostConnection | ReportType::NoOutput
            )
        });
    }
    Verdict {
        reports,
        infra: None,
    }
}

/// Console lines shown with a report: from 30 lines before it to 5 after, with host
/// timestamps.
pub fn excerpt(console: &[ConsoleLine], rep: &Report) -> String {
    let lo = rep.start_line.saturating_sub(30);
    let hi = if rep.end_line >= rep.start_line && !console.is_empty() {
        rep.end_line + 6
    } else {
        console.len()
    };
    console
        .get(lo.min(console.len())..hi.min(console.len()))
        .unwrap_or_default()
        .iter()
        .map(|l| format!("{} {}\n", hotfuzz_vm::console::format_time(l.time), l.text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(kind: ReportType, title: &str) -> Report {
        let mut r = crate::report::parse("[ 1.0] Kernel panic - not syncing: x\n").remove(0);
        r.kind = kind;
        r.title = title.into();
        r
    }

    #[test]
    fn qemu_dying_without_a_kernel_report_is_infrastructure() {
        // Whatever else the harness saw: QEMU's death explains it.
        let v = decide(
            vec![
                rep(ReportType::QemuExited, "qemu exited unexpectedly"),
                rep(ReportType::StuckOp, "hang: sleep_ms did not return"),
            ],
            "signal: 9".into(),
        );
        assert!(v.reports.is_empty());
        assert!(v.infra.unwrap().contains("signal: 9"));
        // With a kernel report it is a finding, and the harness's explained reports go.
        let v = decide(
            vec![
                rep(ReportType::Warning, "WARNING in f"),
                rep(ReportType::StuckOp, "hang: x did not return"),
                rep(ReportType::QemuExited, "qemu exited unexpectedly"),
            ],
            String::new(),
        );
        assert!(v.infra.is_none());
        let titles: Vec<&str> = v.reports.iter().map(|r| r.title.as_str()).collect();
        assert_eq!(titles, ["WARNING in f", "qemu exited unexpectedly"]);
        // A stuck operation alone stays.
        let v = decide(vec![rep(ReportType::StuckOp, "hang")], String::new());
        assert_eq!(v.reports.len(), 1);
    }
}
