//! Judging a run: the kernel reports its console output contains, the harness's own oracles
//! (stuck operation, lost guest, silence, virtio-mem not settling), and whether the run says
//! anything about the kernel at all. [`judge`] is the one place these rules live; the fuzzer,
//! the reproducer and `hotfuzz run` all use it, so they cannot judge the same run differently.

pub mod oracle;
pub mod slow;
pub mod symbolize;

use self::oracle::GuestCheck;
use crate::program::prog::Program;
use crate::report::{Report, ReportType};
use crate::run::agent::Agent;
use crate::run::guest::HUNG_TASK_TIMEOUT;
use crate::run::runner::RunResult;
use hotfuzz_executor::protocol::Outcome;
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
    /// Set when the kernel ran out of memory during the run (the program's own allocations,
    /// pools, balloon or offlined memory): an outcome to count, not a bug. The reports that
    /// follow from it (a panic because nothing was left to kill, a lost guest, a hang) are
    /// dropped; other kernel reports stay.
    pub oom: Option<String>,
    /// Fault injection armed in the guest when the reports were made (notifier errors,
    /// fail_page_alloc, poisoned pages).
    pub injections: Vec<String>,
    /// How long judging waited for the hung task detector to name a stuck operation, or to
    /// see whether a blocked task went on.
    pub hang_wait: Duration,
    /// Set when an operation was stuck or a task blocked for longer than the hung task
    /// timeout, and then went on (see [`slow`]): counted, not filed.
    pub slow: Option<String>,
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
    r: &mut RunResult,
    settle: Duration,
) -> Vec<Report> {
    let check = GuestCheck::probe(vm, agent, settle);
    // What the kernel printed while the devices settled belongs to the run (a WARN from a
    // worker the program started): the probe is the console's grace period.
    r.console = vm.console().lines_since(r.console_mark);
    let mut console = console_reports(r);
    // A report the kernel is still printing would be read cut short (a WARN's registers and
    // call trace take tens of milliseconds on the serial console) and titled `in corrupted`:
    // seen in a soak, where the guest was then restored and the rest of the splat lost.
    let deadline = Instant::now() + CONSOLE_QUIET_MAX;
    while let Some(wait) = still_printing(&console, vm.console().last_output().map(|t| t.elapsed()))
    {
        if Instant::now() + wait > deadline {
            break;
        }
        std::thread::sleep(wait);
        r.console = vm.console().lines_since(r.console_mark);
        console = console_reports(r);
    }
    let mut all = console.clone();
    all.extend(oracle::check(prog, r, &check, &console));
    all
}

/// How long the console must have been quiet before a run's reports are read.
pub const CONSOLE_QUIET: Duration = Duration::from_millis(300);

/// The longest the judge waits for a report that is still being printed.
pub const CONSOLE_QUIET_MAX: Duration = Duration::from_secs(3);

/// How much longer to wait before reading the console again, when `reports` were read while
/// the console was still printing (its last output `silent_for` ago): a report's end may not
/// be there yet. `None` when there is no report to complete, or the console has been quiet
/// for [`CONSOLE_QUIET`].
pub fn still_printing(reports: &[Report], silent_for: Option<Duration>) -> Option<Duration> {
    let silent_for = silent_for?;
    (!reports.is_empty() && silent_for < CONSOLE_QUIET).then(|| CONSOLE_QUIET - silent_for)
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

/// Which of a log's reports is its finding: the kernel's first clean report, a bare page dump
/// (`page dumped because: ...`, a fragment of another report) only when nothing else is
/// clean, then the first kernel report even if corrupted, then the harness's first.
pub fn primary(reports: &[Report]) -> Option<usize> {
    let kernel = |r: &Report| !is_oracle(r.kind);
    reports
        .iter()
        .position(|r| kernel(r) && r.kind != ReportType::PageDump && r.corrupted.is_none())
        .or_else(|| {
            reports
                .iter()
                .position(|r| kernel(r) && r.corrupted.is_none())
        })
        .or_else(|| reports.iter().position(kernel))
        .or_else(|| (!reports.is_empty()).then_some(0))
}

/// How long QEMU's monitor gets to answer `query-status` when the guest went quiet.
pub const QMP_ANSWERS_WITHIN: Duration = Duration::from_secs(10);

/// How long a guest that stopped answering gets to answer again before it counts as lost.
pub const LOST_AGAIN: Duration = Duration::from_secs(60);

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
pub fn judge(
    vm: &Vm,
    agent: &Agent,
    prog: &Program,
    run: &mut RunResult,
    settle: Duration,
) -> Verdict {
    let mut reports = reports(vm, agent, prog, run, settle);
    if vm.stopped() && !kernel_says(&reports) {
        // Stopped from outside: the silence, the lost agent and the stuck operations are the
        // host's doing.
        return Verdict {
            infra: Some("QEMU was stopped from outside (SIGSTOP) during the run".into()),
            ..Verdict::default()
        };
    }
    if vm.is_alive()
        && !kernel_says(&reports)
        && reports.iter().any(|r| {
            matches!(
                r.kind,
                ReportType::LostConnection | ReportType::NoOutput | ReportType::StuckOp
            )
        })
    {
        // A guest that went quiet while QEMU's own monitor does not answer either: QEMU is
        // stuck (seen: a device_add that never returned, with the whole guest frozen behind
        // it). Nothing the kernel did can be told from that.
        if let Err(e) = vm
            .qmp()
            .execute_timeout("query-status", None, QMP_ANSWERS_WITHIN)
        {
            return Verdict {
                infra: Some(format!("QEMU itself stopped answering: {e}")),
                ..Verdict::default()
            };
        }
    }
    let t = Instant::now();
    let stuck: Vec<usize> = run
        .ops
        .iter()
        .filter(|o| matches!(o.outcome, Some(Outcome::Stuck)))
        .map(|o| o.index)
        .collect();
    if reports.iter().any(|r| r.kind == ReportType::StuckOp) && !kernel_says(&reports) {
        // A stuck operation: wait for the hung task detector to name the function, or for
        // the operation to come back (it was slow, not stuck).
        let deadline = Instant::now() + Duration::from_secs(3 * HUNG_TASK_TIMEOUT + 5);
        while Instant::now() < deadline && vm.is_alive() {
            let lines = vm.console().lines_since(run.console_mark);
            let back = slow::came_back(&lines, &run.program_id);
            if stuck.iter().all(|i| back.contains_key(i))
                || lines
                    .iter()
                    .any(|l| l.text.contains("blocked for more than"))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(1));
        reports = self::reports(vm, agent, prog, run, Duration::ZERO);
    }
    let pids = slow::hung_pids(&reports);
    if !pids.is_empty() {
        // A blocked task: hung only if the detector still reports it after three timeouts.
        let deadline =
            Instant::now() + Duration::from_secs(slow::HUNG_REPORTS as u64 * HUNG_TASK_TIMEOUT + 5);
        while Instant::now() < deadline && vm.is_alive() && !vm.stopped() {
            let counts = slow::blocked_counts(&vm.console().lines_since(run.console_mark));
            if pids
                .iter()
                .any(|p| counts.get(p).copied().unwrap_or(0) >= slow::HUNG_REPORTS)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let mut slow_note = None;
    if vm.is_alive() && !vm.stopped() && (!stuck.is_empty() || !pids.is_empty()) {
        let console = vm.console().lines_since(run.console_mark);
        let back = slow::came_back(&console, &run.program_id);
        let counts = slow::blocked_counts(&console);
        let (kept, note) = slow::sift(reports, &stuck, &back, &counts);
        reports = kept;
        slow_note = note;
    }
    let mut waited_again = false;
    if reports.iter().any(|r| r.kind == ReportType::LostConnection)
        && !kernel_says(&reports)
        && vm.is_alive()
        && !vm.stopped()
    {
        // The agent did not answer for 20 s, and the kernel said nothing: no soft lockup, no
        // RCU stall, no hung task, which it would have for a CPU or a task stuck that long.
        // Ask once more: a guest that answers again was slow (TCG, memory pressure), not lost.
        waited_again = true;
        let asked = Instant::now();
        if agent.alive(LOST_AGAIN) {
            reports.retain(|r| r.kind != ReportType::LostConnection);
            let again = format!(
                "the guest answered again {:.0} s after it stopped answering",
                (asked.elapsed() + crate::run::probe::AGENT_ANSWERS_WITHIN).as_secs_f64()
            );
            slow_note = Some(match slow_note {
                Some(n) => format!("{n}; {again}"),
                None => again,
            });
        } else {
            // Still silent: what the kernel printed meanwhile may explain it.
            run.console = vm.console().lines_since(run.console_mark);
            let mut all = console_reports(run);
            all.extend(reports.into_iter().filter(|r| is_oracle(r.kind)));
            reports = all;
        }
    }
    let hang_wait = if stuck.is_empty() && pids.is_empty() && !waited_again {
        Duration::ZERO
    } else {
        t.elapsed()
    };
    if let Some(status) = vm.exit_status() {
        // QEMU died while the run was being judged (after the probe saw it alive, e.g. killed
        // from outside while the agent was asked): whatever the probe concluded from the
        // silence follows from that, so it is judged as QEMU's exit.
        if !reports.iter().any(|r| r.kind == ReportType::QemuExited) {
            reports.push(oracle::report(
                ReportType::QemuExited,
                "qemu exited unexpectedly",
                format!("QEMU exited while the run was judged: {status}"),
            ));
        }
    }
    let oom = oom_in(&run.console);
    let mut v = decide(
        reports,
        vm.exit_status().map(|s| s.to_string()).unwrap_or_default(),
        oom,
    );
    if !v.reports.is_empty() && vm.is_alive() {
        v.injections = crate::run::probe::injections(agent);
    }
    v.injections.extend(injected_by(prog, run));
    v.injections.extend(injected_on_console(&run.console));
    v.injections.sort();
    v.injections.dedup();
    v.hang_wait = hang_wait;
    v.slow = slow_note;
    v
}

/// The OOM killer's work in a run's console lines, if any (the first line that says so).
pub fn oom_in(console: &[ConsoleLine]) -> Option<String> {
    console.iter().find_map(|l| {
        let t = l.text.as_str();
        let hit = t.contains("invoked oom-killer")
            || t.contains("Out of memory: Killed process")
            || t.contains("Memory cgroup out of memory")
            || t.contains("Out of memory and no killable processes")
            || t.contains("System is deadlocked on memory");
        hit.then(|| {
            crate::report::lines::parse_line(0, t)
                .text
                .trim()
                .chars()
                .take(200)
                .collect()
        })
    })
}

/// What the program itself armed, even if it disarmed it again before the end.
fn injected_by(prog: &Program, run: &RunResult) -> Vec<String> {
    let mut v = Vec::new();
    for o in &run.ops {
        let ok = matches!(
            o.outcome,
            Some(hotfuzz_executor::protocol::Outcome::Ok { .. })
        ) || o.oks > 0;
        if !ok {
            continue;
        }
        let op = &prog.ops[o.index];
        let arg = |i: usize| match op.args.get(i) {
            Some(crate::program::prog::Arg::Str(s)) => s.clone(),
            Some(crate::program::prog::Arg::Int(v)) => format!("{v:#x}"),
            _ => String::new(),
        };
        match op.name.as_str() {
            "notifier_fail_offline" if arg(0) != "none" => {
                v.push(format!("notifier: MEM_GOING_OFFLINE fails with {}", arg(0)))
            }
            "notifier_fail_online" if arg(0) != "none" => {
                v.push(format!("notifier: MEM_GOING_ONLINE fails with {}", arg(0)))
            }
            "fail_page_alloc" if arg(0) != "0x0" => {
                v.push(format!("fail_page_alloc: probability {}", arg(0)))
            }
            "hard_offline" | "hwpoison_corrupt" | "madvise_poison" | "cec_pfn" => {
                v.push(format!("hwpoison: {} by the program", op.name))
            }
            _ => {}
        }
    }
    v
}

/// Fault injection the console shows failing during the run (`FAULT_INJECTION: forcing a
/// failure.` and its `name fail_page_alloc, interval 1, probability 73, ...` line). The only
/// evidence left when the guest cannot be asked any more (a lost or silent guest) and the
/// injection was armed by an earlier program.
fn injected_on_console(console: &[ConsoleLine]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for l in console {
        let Some(rest) = l.text.split("name ").nth(1) else {
            continue;
        };
        let mut parts = rest.split(", ");
        let (Some(name), Some(interval), Some(prob)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Some(_), Some(p)) = (
            interval.strip_prefix("interval "),
            prob.strip_prefix("probability "),
        ) else {
            continue;
        };
        let s = format!("{}: probability {}", name.trim(), p.trim());
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

/// Whether a report follows from running out of memory rather than from a kernel bug.
fn follows_from_oom(r: &Report) -> bool {
    let t = r.title.as_str();
    matches!(
        r.kind,
        ReportType::LostConnection
            | ReportType::NoOutput
            | ReportType::QemuExited
            | ReportType::StuckOp
            | ReportType::HungTask
            | ReportType::VirtioMemNotSettled
    ) || (r.kind == ReportType::Panic
        && (t.contains("deadlocked on memory")
            || t.contains("Out of memory")
            || t.contains("out of memory")))
}

/// The pure part of [`judge`]: what the reports of a run add up to. `qemu_exit` describes
/// QEMU's exit status, for the infrastructure failure's message; `oom` is the console's OOM
/// line, if the kernel ran out of memory.
pub fn decide(mut reports: Vec<Report>, qemu_exit: String, oom: Option<String>) -> Verdict {
    if let Some(o) = &oom {
        reports.retain(|r| !follows_from_oom(r));
        let _ = o;
    }
    if oom.is_none()
        && reports.iter().any(|r| r.kind == ReportType::QemuExited)
        && !kernel_says(&reports)
    {
        return Verdict {
            infra: Some(format!("QEMU exited without a kernel report ({qemu_exit})")),
            ..Verdict::default()
        };
    }
    if kernel_says(&reports) {
        // One run, one finding, as syzkaller files it: the kernel's first clean report (the
        // first one when all are corrupted). What follows it in the log (the page it freed
        // going bad, the dump it printed, the guest dying) is its aftermath; it stays in the
        // report's console log.
        let primary = primary(&reports).expect("a kernel report");
        reports = vec![reports.swap_remove(primary)];
    }
    Verdict {
        reports,
        oom,
        ..Verdict::default()
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
    fn a_bare_page_dump_is_not_the_finding_when_a_warning_follows() {
        // A pasted splat that starts inside another CPU's Bad page state: the dump's tail
        // comes first, the WARNING is the bug.
        let log = "[ 1.0] page dumped because: nonzero mapcount\n\
                   [ 1.1] WARNING: CPU: 0 PID: 10 at drivers/virtio/virtio_mem.c:1275 virtio_mem_fake_offline_going_offline+0x40/0x60 [virtio_mem]\n\
                   [ 1.2] Modules linked in: virtio_mem\n\
                   [ 1.3] RIP: 0010:virtio_mem_fake_offline_going_offline+0x40/0x60 [virtio_mem]\n\
                   [ 1.4] Call Trace:\n\
                   [ 1.5]  <TASK>\n\
                   [ 1.6]  virtio_mem_memory_notifier_cb+0x1e/0x60 [virtio_mem]\n\
                   [ 1.7]  notifier_call_chain+0x5b/0xd0\n\
                   [ 1.8]  </TASK>\n\
                   [ 1.9] ---[ end trace 0000000000000000 ]---\n";
        let reports = crate::report::parse(log);
        assert_eq!(reports[0].kind, ReportType::PageDump, "{reports:?}");
        let p = primary(&reports).unwrap();
        assert_eq!(
            reports[p].title,
            "WARNING in virtio_mem_fake_offline_going_offline"
        );
        // Alone, the dump is all there is.
        let only = crate::report::parse("[ 1.0] page dumped because: nonzero mapcount\n");
        assert_eq!(primary(&only), Some(0));
        assert_eq!(primary(&[]), None);
    }

    #[test]
    fn a_report_read_while_the_console_prints_is_read_again() {
        // The soak's case: the WARN's header, then the console still printing its trace.
        let cut = crate::report::parse(
            "[ 1.0] ------------[ cut here ]------------\n\
             [ 1.1] WARNING: CPU: 0 PID: 117 at harness/bugzoo/bugzoo.c:155 bugzoo_warn_reonline+0x14/0x20 [bugzoo]\n\
             [ 1.2] Modules linked in: bugzoo(OE)\n\
             [ 1.3] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009)\n",
        );
        assert_eq!(cut[0].title, "WARNING in corrupted", "{cut:?}");
        let ms = Duration::from_millis;
        assert_eq!(
            still_printing(&cut, Some(ms(20))),
            Some(CONSOLE_QUIET - ms(20))
        );
        // Quiet long enough, no report, or no output at all: read as it is.
        assert_eq!(still_printing(&cut, Some(CONSOLE_QUIET)), None);
        assert_eq!(still_printing(&[], Some(ms(20))), None);
        assert_eq!(still_printing(&cut, None), None);
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
            None,
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
            None,
        );
        assert!(v.infra.is_none());
        let titles: Vec<&str> = v.reports.iter().map(|r| r.title.as_str()).collect();
        assert_eq!(titles, ["WARNING in f"]);
        // A stuck operation alone stays.
        let v = decide(vec![rep(ReportType::StuckOp, "hang")], String::new(), None);
        assert_eq!(v.reports.len(), 1);
    }

    #[test]
    fn a_run_files_its_first_clean_kernel_report() {
        let unsettled = || {
            rep(
                ReportType::VirtioMemNotSettled,
                "virtio-mem: plugged size stays below the requested size",
            )
        };
        // The race's aftermath: a corrupted Bad page state interleaved before the WARN, the
        // page dump after it.
        let mut bad = rep(ReportType::BadPage, "BUG: Bad page state in corrupted");
        bad.corrupted = Some("interleaved".into());
        let v = decide(
            vec![
                bad.clone(),
                rep(
                    ReportType::Warning,
                    "WARNING in virtio_mem_fake_offline_going_offline",
                ),
                rep(
                    ReportType::BadPage,
                    "page dumped because: fake-offline page referenced",
                ),
                unsettled(),
            ],
            String::new(),
            None,
        );
        let titles: Vec<&str> = v.reports.iter().map(|r| r.title.as_str()).collect();
        assert_eq!(titles, ["WARNING in virtio_mem_fake_offline_going_offline"]);
        // All corrupted: the first.
        let v = decide(vec![bad.clone(), bad], String::new(), None);
        assert_eq!(v.reports.len(), 1);
        // Harness reports alone are all kept.
        let v = decide(
            vec![
                rep(ReportType::StuckOp, "hang: x did not return"),
                unsettled(),
            ],
            String::new(),
            None,
        );
        assert_eq!(v.reports.len(), 2);
    }

    #[test]
    fn running_out_of_memory_is_an_outcome_not_a_bug() {
        // The guest deadlocked on memory and stopped answering: an OOM, nothing filed.
        let v = decide(
            vec![
                rep(
                    ReportType::Panic,
                    "kernel panic: System is deadlocked on memory",
                ),
                rep(
                    ReportType::LostConnection,
                    "lost connection to test machine",
                ),
            ],
            String::new(),
            Some("Out of memory: Killed process 230 (hotfuzz-executor)".into()),
        );
        assert!(v.reports.is_empty(), "{:?}", v.reports);
        assert!(v.infra.is_none());
        assert!(v.oom.is_some());
        // A WARN before the OOM is still a finding.
        let v = decide(
            vec![
                rep(ReportType::Warning, "WARNING in f"),
                rep(
                    ReportType::Panic,
                    "kernel panic: Out of memory and no killable processes...",
                ),
            ],
            String::new(),
            Some("x invoked oom-killer".into()),
        );
        assert_eq!(v.reports.len(), 1);
        assert_eq!(v.reports[0].title, "WARNING in f");
        // QEMU dying after an OOM panic is the OOM, not infrastructure.
        let v = decide(
            vec![rep(ReportType::QemuExited, "qemu exited unexpectedly")],
            "exit status: 0".into(),
            Some("Out of memory: Killed process 1".into()),
        );
        assert!(v.infra.is_none() && v.reports.is_empty() && v.oom.is_some());
        let line = |t: &str| hotfuzz_vm::console::ConsoleLine {
            index: 0,
            time: std::time::SystemTime::now(),
            at: std::time::Instant::now(),
            text: t.into(),
        };
        assert!(oom_in(&[line(
            "[ 5.0] hotfuzz-t0 invoked oom-killer: gfp_mask=0x140cca"
        )])
        .is_some());
        assert!(oom_in(&[line("[ 5.0] something else")]).is_none());
    }

    #[test]
    fn a_fault_injection_the_console_shows_is_recorded_without_asking_the_guest() {
        let line = |t: &str| hotfuzz_vm::console::ConsoleLine {
            index: 0,
            time: std::time::SystemTime::now(),
            at: std::time::Instant::now(),
            text: t.into(),
        };
        // The console of the silent guest a campaign filed as `no output from test machine`.
        let console = [
            line("[   99.356480][  T528] FAULT_INJECTION: forcing a failure."),
            line("[   99.356480][  T528] name fail_page_alloc, interval 1, probability 73, space 0, times -1"),
            line("[   99.357140][  T528] FAULT_INJECTION: forcing a failure."),
            line("[   99.357140][  T528] name fail_page_alloc, interval 1, probability 73, space 0, times -1"),
            line("[  100.1] name failslab, interval 1, probability 5, space 0, times 3"),
            line("[  100.2] Comm: hotfuzz-t0 name mismatch, whatever"),
        ];
        assert_eq!(
            injected_on_console(&console),
            vec![
                "fail_page_alloc: probability 73".to_string(),
                "failslab: probability 5".to_string()
            ]
        );
        assert!(injected_on_console(&[line("[ 1.0] nothing injected")]).is_empty());
    }
}
