//! After a program ran: the reports its console output contains, the harness's own oracles,
//! and filing them into the report store with the evidence a developer needs.

use crate::prog::Program;
use crate::report::oracle::{self, GuestCheck};
use crate::report::Report;
use crate::runner::RunResult;
use crate::store::{programs_from_run_log, Evidence, Filed, KernelInfo, Store};
use anyhow::Result;
use hotfuzz_vm::{Kernel, Vm};
use std::path::Path;
use std::time::Duration;

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
    file_with_profile(store, reports, r, vm, run_log, kernel, None)
}

/// [`file`], recording the name of the fuzzing profile the guest was booted with.
pub fn file_with_profile(
    store: &Store,
    reports: &[Report],
    r: &RunResult,
    vm: &Vm,
    run_log: &Path,
    kernel: &KernelInfo,
    profile_name: Option<&str>,
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
        "{}cmdline: {}\nmachine: {} cpus, {} MiB, {} nodes, virtio-mem {:?}, accel {:?}",
        profile_name
            .map(|n| format!("profile: {n}\n"))
            .unwrap_or_default(),
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
