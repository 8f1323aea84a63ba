//! Filing a judged run's reports with the evidence a developer needs: the console excerpt, the
//! whole console log, the run log, the programs that ran before the report, the kernel and
//! the guest it ran on (as typed fields of `meta.yaml`, so a reproducer reads them back
//! exactly).

use super::{Evidence, Filed, KernelInfo, Store, Unfiled};
use crate::report::Report;
use crate::run::runner::RunResult;
use hotfuzz_vm::{Accel, Kernel, MachineConfig, Vm};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The guest a report happened on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestRecord {
    /// The fuzzing profile it was booted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Bug-zoo bugs armed in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bugzoo: Option<String>,
    /// The kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub cpus: u32,
    /// Boot RAM in MiB.
    pub memory_mib: u64,
    /// NUMA nodes.
    pub nodes: u32,
    /// virtio-mem devices at boot (`id: size, block size`).
    #[serde(default)]
    pub virtio_mem: Vec<String>,
    /// The accelerator it ran with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
}

impl GuestRecord {
    /// The record of a guest of `machine` booted with `profile` and `bugzoo`.
    pub fn new(
        machine: &MachineConfig,
        profile: Option<&str>,
        bugzoo: Option<&str>,
        accel: Option<Accel>,
    ) -> GuestRecord {
        GuestRecord {
            profile: profile.map(str::to_string),
            bugzoo: bugzoo.map(str::to_string),
            cmdline: machine.kernel_cmdline(),
            cpus: machine.cpus,
            memory_mib: machine.memory >> 20,
            nodes: machine.numa_nodes.max(1),
            virtio_mem: machine
                .virtio_mem
                .iter()
                .map(|d| {
                    format!(
                        "{}: {} MiB, block {}",
                        d.id,
                        d.size >> 20,
                        d.block_size
                            .map(|b| format!("{} KiB", b >> 10))
                            .unwrap_or_else(|| "default".into())
                    )
                })
                .collect(),
            accel: accel.map(|a| format!("{a:?}").to_lowercase()),
        }
    }
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

/// Where and under what conditions a run happened: recorded with every report it files.
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a> {
    /// The kernel the guest booted.
    pub kernel: &'a KernelInfo,
    /// The guest machine.
    pub guest: &'a GuestRecord,
    /// Fault injection armed during the run (`judge::Verdict::injections`).
    pub injections: &'a [String],
}

/// Files every report of a judged run into `store`: the console excerpt, the full console log,
/// the run log and every program in it (all of them since the guest booted: state a program
/// left behind belongs to a later report's history). Reports waiting in `unfiled` are filed
/// first; one the store cannot take now joins them (its entry is `None`).
pub fn file_run(
    store: &Store,
    unfiled: &mut Unfiled,
    reports: &[Report],
    r: &RunResult,
    vm: &Vm,
    run_log: &Path,
    prov: Provenance<'_>,
) -> Vec<Option<Filed>> {
    unfiled.retry(store);
    let programs = std::fs::read_to_string(run_log)
        .map(|t| crate::run::runlog::program_texts(&t))
        .unwrap_or_default();
    let mut filed = Vec::new();
    for rep in reports {
        let ev = Evidence {
            console_log: Some(vm.console_log()),
            excerpt: crate::judge::excerpt(&r.console, rep),
            programs: programs.clone(),
            run_log: Some(run_log.to_path_buf()),
            kernel: prov.kernel.clone(),
            guest: Some(prov.guest.clone()),
            symbolized: None,
            injections: prov.injections.to_vec(),
        };
        filed.push(unfiled.file(store, rep, &ev));
    }
    filed
}
