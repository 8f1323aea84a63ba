//! After a program ran: the reports its console output contains, the harness's own oracles,
//! and filing them into the report store with the evidence a developer needs.

use crate::program::prog::Program;
pub mod oracle;
pub mod symbolize;

use self::oracle::GuestCheck;
use crate::report::{Report, ReportType};
use crate::run::runner::RunResult;
use crate::store::{programs_from_run_log, Evidence, Filed, KernelInfo, Store};
use anyhow::Result;
use hotfuzz_vm::{Kernel, Vm};
use std::path::Path;
use std::time::{Duration, Instant};

/// Programs of the run log kept as evidence (the last ones before a report).
pub const HISTORY: usize = 5;

/// The reports a run produced: console reports first, then harness oracles. `settle` is how
/// long virtio-mem devices get to reach their requested size before that counts as a bug.
pub fn reports(vm: &Vm, prog: &Program, r: &RunResult, settle: Duration) -> Vec<Report> {
    let console = r.console_reports();
    let check = GuestCheck::probe(vm, settle);
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

/// [`reports`], judged the way the fuzzer and the reproducer judge a run: a stuck operation
/// waits for the hung task detector (whose report names the function; the guest's
/// `hung_task_timeout_secs` should be [`HUNG_TASK_TIMEOUT`]), and a kernel report replaces
/// the harness's own stuck/lost/silent reports it explains.
pub fn judge(vm: &Vm, prog: &Program, run: &RunResult, settle: Duration) -> Vec<Report> {
    let mut reports = reports(vm, prog, run, settle);
    let kernel_says = |rs: &[Report]| rs.iter().any(|r| !is_oracle(r.kind));
    if reports.iter().any(|r| r.kind == ReportType::StuckOp) && !kernel_says(&reports) {
        let mark = run.console.first().map(|l| l.index).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(3 * HUNG_TASK_TIMEOUT + 5);
        let _ = vm
            .console()
            .wait_for_text(mark, deadline, "blocked for more than");
        std::thread::sleep(Duration::from_secs(1));
        let mut later = run.clone();
        later.console = vm.console().lines_since(mark);
        reports = self::reports(vm, prog, &later, Duration::ZERO);
    }
    if kernel_says(&reports) {
        reports.retain(|r| {
            !matches!(
                r.kind,
                ReportType::StuckOp | ReportType::LostConnection | ReportType::NoOutput
            )
        });
    }
    reports
}

/// The hung task detector's timeout set in guests that run programs (Debian's 120 s is longer
/// than an operation deadline by far; a stuck operation should get the kernel's own report).
pub const HUNG_TASK_TIMEOUT: u64 = 10;

/// What the kernel is, for reports.
pub fn kernel_info(k: &Kernel) -> KernelInfo {
    KernelInfo {
        release: k.release.clone().unwrap_or_default(),
        origin: k.origin.clone(),
        config_hash: k
            .config
            .as_ref()
            .and_then(|c| std::fs::read(c).ok())
            .map(|d| blake3::hash(&d).to_hex()[..16].to_string()),
    }
}

/// Files every report of a run into `store`, with the console excerpt, the full console log,
/// the run log and the programs that ran before it.
pub fn file(
    store: &Store,
    reports: &[Report],
    r: &RunResult,
    vm: &Vm,
    run_log: &Path,
    kernel: &KernelInfo,
) -> Result<Vec<Filed>> {
    file_with_profile(store, reports, r, vm, run_log, kernel, None, None)
}

/// [`file`], recording the name of the fuzzing profile the guest was booted with and the bug
/// zoo bugs armed in it (a reproducer needs both).
#[allow(clippy::too_many_arguments)]
pub fn file_with_profile(
    store: &Store,
    reports: &[Report],
    r: &RunResult,
    vm: &Vm,
    run_log: &Path,
    kernel: &KernelInfo,
    profile_name: Option<&str>,
    bugzoo: Option<&str>,
) -> Result<Vec<Filed>> {
    let programs = std::fs::read_to_string(run_log)
        .map(|t| programs_from_run_log(&t))
        .unwrap_or_default();
    let history: Vec<String> = programs
        .iter()
        .skip(programs.len().saturating_sub(HISTORY))
        .cloned()
        .collect();
    let profile = format!(
        "{}{}cmdline: {}\nmachine: {} cpus, {} MiB, {} nodes, virtio-mem {:?}, accel {:?}",
        profile_name
            .map(|n| format!("profile: {n}\n"))
            .unwrap_or_default(),
        bugzoo.map(|b| format!("bugzoo: {b}\n")).unwrap_or_default(),
        vm.machine().kernel_cmdline(),
        vm.machine().cpus,
        vm.machine().memory >> 20,
        vm.machine().numa_nodes.max(1),
        vm.machine()
            .virtio_mem
            .iter()
            .map(|d| format!(
                "{}:{}M/{}",
                d.id,
                d.size >> 20,
                d.block_size
                    .map(|b| format!("{}K", b >> 10))
                    .unwrap_or_else(|| "default".into())
            ))
            .collect::<Vec<_>>(),
        vm.accel()
    );
    let mut filed = Vec::new();
    for rep in reports {
        let excerpt = excerpt(r, rep);
        let ev = Evidence {
            console_log: Some(vm.console_log()),
            excerpt,
            programs: history.clone(),
            run_log: Some(run_log.to_path_buf()),
            kernel: kernel.clone(),
            profile: Some(profile.clone()),
            symbolized: None,
        };
        filed.push(store.file(rep, &ev)?);
    }
    Ok(filed)
}

/// The console lines of a report plus 30 before it, with host timestamps.
fn excerpt(r: &RunResult, rep: &Report) -> String {
    let lo = rep.start_line.saturating_sub(30);
    let hi = if rep.end_line >= rep.start_line && !r.console.is_empty() {
        rep.end_line + 1
    } else {
        r.console.len()
    };
    r.console
        .iter()
        .enumerate()
        .filter(|(i, _)| *i >= lo && *i < hi.min(r.console.len()))
        .map(|(_, l)| format!("{} {}\n", hotfuzz_vm::console::format_time(l.time), l.text))
        .collect()
}
