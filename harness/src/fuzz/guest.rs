//! The real [`Target`]: a guest booted with a profile, reused across programs, rebooted after
//! a report, a hang, a lost guest or every `restart_every` programs, with the next profile.
//! Reports are filed into the store as they happen (a killed fuzzer loses none).
//!
//! A guest that misbehaves in the harness is not a kernel bug: QEMU dying without a kernel
//! report (killed from outside), a runner that cannot start the executor, a boot that fails.
//! The program is retried on a fresh guest; a second failure gives up on the program, and
//! guests that keep failing to boot stop the campaign with the boot error.

use super::config::{FuzzConfig, Profile};
use super::features;
use super::target::{Execution, Found, Target, TargetCounters};
use crate::program::desc::Descriptions;
use crate::program::prog::Program;
use crate::program::state::GuestState;
use crate::report::Report;
use crate::run::guest::GuestConfig;
use crate::run::runner::{RunOptions, Runner};
use crate::store::{KernelInfo, Store};
use anyhow::{Context, Result};
use hotfuzz_vm::Vm;
use regex::Regex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Consecutive failed boots after which the campaign stops.
const MAX_BOOT_FAILURES: u32 = 3;

/// How a guest target is set up.
#[derive(Debug, Clone)]
pub struct GuestSetup {
    /// Kernel, arch, accel, bug zoo (the profile adds the rest).
    pub base: GuestConfig,
    /// Profiles to rotate through.
    pub profiles: Vec<Profile>,
    /// Where reports go.
    pub reports: PathBuf,
    /// Run logs of this guest slot.
    pub log_dir: PathBuf,
    /// Which guest this is (0-based): names the VM and offsets the profile rotation.
    pub slot: usize,
    /// Programs per boot.
    pub restart_every: u64,
    /// How long devices get to settle after a program.
    pub settle: Duration,
    /// Suppressed titles.
    pub suppressions: Vec<String>,
}

impl GuestSetup {
    /// The set-up of guest `slot` of a campaign.
    pub fn from_config(c: &FuzzConfig, slot: usize) -> GuestSetup {
        GuestSetup {
            base: c.guest(),
            profiles: c.profiles.clone(),
            reports: c.reports.clone(),
            log_dir: c.workdir.join("logs").join(format!("vm{slot}")),
            slot,
            restart_every: c.restart_every,
            settle: c.settle().unwrap_or(Duration::from_secs(10)),
            suppressions: c.suppressions.clone(),
        }
    }

    /// The guest set-up for `profile`.
    pub fn config_for(&self, profile: &Profile) -> Result<GuestConfig> {
        profile.apply(&self.base)
    }
}

struct Running {
    // Declared first: dropped before the guest it has a session with.
    runner: Runner<Arc<Vm>>,
    vm: Arc<Vm>,
    record: crate::store::GuestRecord,
    programs: u64,
    run_log: PathBuf,
}

/// A guest that runs programs, files their reports and restarts itself when it must.
pub struct GuestTarget {
    setup: GuestSetup,
    d: Arc<Descriptions>,
    store: Store,
    suppress: Vec<Regex>,
    running: Option<Running>,
    state: GuestState,
    kinfo: Option<KernelInfo>,
    counters: TargetCounters,
    failed_boots_in_a_row: u32,
}

impl GuestTarget {
    /// A target for `setup` (no guest is booted until the first program).
    pub fn new(setup: GuestSetup, d: Arc<Descriptions>) -> Result<GuestTarget> {
        std::fs::create_dir_all(&setup.log_dir)
            .with_context(|| format!("creating {}", setup.log_dir.display()))?;
        let store = Store::open(&setup.reports)?;
        let suppress = setup
            .suppressions
            .iter()
            .map(|s| Regex::new(s).with_context(|| format!("suppression {s:?}")))
            .collect::<Result<Vec<_>>>()?;
        let machine = setup.config_for(&setup.profiles[0])?.machine()?;
        Ok(GuestTarget {
            state: GuestState::model(&machine),
            setup,
            d,
            store,
            suppress,
            running: None,
            kinfo: None,
            counters: TargetCounters::default(),
            failed_boots_in_a_row: 0,
        })
    }

    /// The running guest, if any (tests kill it from outside).
    pub fn vm(&self) -> Option<Arc<Vm>> {
        self.running.as_ref().map(|r| r.vm.clone())
    }

    fn next_profile(&self) -> &Profile {
        let n = self.setup.profiles.len();
        &self.setup.profiles[(self.setup.slot + self.counters.boots as usize) % n]
    }

    fn boot(&mut self) -> Result<()> {
        let profile = self.next_profile().clone();
        let p = self.setup.config_for(&profile)?.prepare()?;
        self.counters.boots += 1;
        self.counters.profile = profile.name.clone();
        let t = Instant::now();
        let vm = Arc::new(p.boot(&format!("hotfuzz-fuzz{}", self.setup.slot))?);
        let booted = t.elapsed();
        // One run log per boot (the store copies it into reports); the last few are kept.
        let run_log = self
            .setup
            .log_dir
            .join(format!("run-{:06}.log", self.counters.boots));
        self.prune_logs();
        let runner = Runner::new(vm.clone(), &run_log)?;
        self.state = crate::run::probe::guest_state(&vm, runner.agent())?;
        tracing::info!(
            "guest {} restarted with profile {}: ssh-ready in {:.2?}, ready for programs in {:.2?}",
            self.setup.slot,
            profile.name,
            booted,
            t.elapsed()
        );
        if self.kinfo.is_none() {
            self.kinfo = Some(crate::store::kernel_info(&p.kernel));
        }
        let record = crate::store::GuestRecord::new(
            vm.machine(),
            Some(&profile.name),
            self.setup.base.bugzoo.as_deref(),
            Some(vm.accel()),
        );
        self.running = Some(Running {
            runner,
            vm,
            record,
            programs: 0,
            run_log,
        });
        Ok(())
    }

    fn prune_logs(&self) {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.setup.log_dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("run-") && n.ends_with(".log"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        logs.sort();
        let keep = 3;
        if logs.len() > keep {
            for old in &logs[..logs.len() - keep] {
                let _ = std::fs::remove_file(old);
            }
        }
    }

    /// Stops the guest (it is booted again for the next program).
    pub fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            drop(r.runner);
            r.vm.kill();
        }
    }

    fn ensure_booted(&mut self) -> Result<()> {
        if let Some(r) = self.running.as_ref().filter(|r| !r.vm.is_alive()) {
            // Killed or crashed while no program ran: nothing to blame on a program.
            self.counters.infra_errors += 1;
            tracing::warn!(
                "guest {}: QEMU died between programs ({})",
                self.setup.slot,
                r.vm.exit_status()
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            );
            self.restart();
        }
        while self.running.is_none() {
            match self.boot() {
                Ok(()) => self.failed_boots_in_a_row = 0,
                Err(e) => {
                    self.counters.boot_failures += 1;
                    self.failed_boots_in_a_row += 1;
                    tracing::warn!("guest {} did not boot: {e:#}", self.setup.slot);
                    if self.failed_boots_in_a_row >= MAX_BOOT_FAILURES {
                        return Err(e.context(format!(
                            "{MAX_BOOT_FAILURES} boots in a row failed; stopping"
                        )));
                    }
                    if hotfuzz_vm::process::stop_requested() {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    fn suppressed(&self, title: &str) -> bool {
        self.suppress.iter().any(|r| r.is_match(title))
    }

    /// One attempt; `Err(reason)` when the attempt says nothing about the kernel.
    fn attempt(&mut self, prog: &Program) -> Result<std::result::Result<Execution, String>> {
        self.ensure_booted()?;
        let t0 = Instant::now();
        let run = {
            let r = self.running.as_mut().expect("booted");
            r.programs += 1;
            r.runner.run(
                &self.d,
                prog,
                &RunOptions {
                    kcov: true,
                    timeout: None,
                    settle: Duration::from_millis(300),
                },
            )
        };
        let run = match run {
            Ok(run) => run,
            Err(e) => {
                self.restart();
                return Ok(Err(format!("the runner failed: {e:#}")));
            }
        };
        if hotfuzz_vm::process::stop_requested() {
            return Ok(Err("stopping".into()));
        }
        let vm = self.running.as_ref().expect("booted").vm.clone();
        let verdict = {
            let r = self.running.as_ref().expect("booted");
            crate::judge::judge(&vm, r.runner.agent(), prog, &run, self.setup.settle)
        };
        if let Some(why) = verdict.infra {
            self.restart();
            return Ok(Err(why));
        }
        let injections = verdict.injections;
        let reports = verdict.reports;
        let mut ex = Execution {
            features: features::features(prog, &run),
            cover: run.cover.values().flatten().copied().collect(),
            duration: t0.elapsed(),
            ..Execution::default()
        };
        let (suppressed, mut filed): (Vec<Report>, Vec<Report>) =
            reports.into_iter().partition(|r| self.suppressed(&r.title));
        // One program that fires the same WARN on every block it touches is one finding:
        // the store counts programs that hit a bug, not splats.
        let mut seen = std::collections::HashSet::new();
        filed.retain(|r| seen.insert(r.title.clone()));
        ex.suppressed = suppressed.iter().map(|r| r.title.clone()).collect();
        self.counters.suppressed += suppressed.len() as u64;
        if !filed.is_empty() {
            let r = self.running.as_ref().expect("booted");
            let kinfo = self.kinfo.clone().unwrap_or_default();
            let stored = crate::store::file_run(
                &self.store,
                &filed,
                &run,
                &r.vm,
                &r.run_log,
                crate::store::Provenance {
                    kernel: &kinfo,
                    guest: &r.record,
                    injections: &injections,
                },
            )?;
            for (rep, f) in filed.iter().zip(stored) {
                ex.reports.push(Found {
                    title: rep.title.clone(),
                    kind: rep.kind,
                    dir: Some(f.dir),
                    new_in_store: f.new,
                });
            }
        }
        let r = self.running.as_ref().expect("booted");
        if !vm.is_alive() && run.lost.is_none() && !crate::judge::kernel_says(&filed) {
            // The program finished; QEMU died afterwards (while its reports were gathered).
            self.counters.infra_errors += 1;
            tracing::warn!(
                "guest {}: QEMU died after the program finished",
                self.setup.slot
            );
        }
        let restart = !ex.reports.is_empty()
            || !ex.suppressed.is_empty()
            || run.lost.is_some()
            || !run.abandoned.is_empty()
            || !vm.is_alive()
            || r.programs >= self.setup.restart_every;
        if restart {
            self.restart();
        }
        Ok(Ok(ex))
    }
}

impl Target for GuestTarget {
    fn execute(&mut self, prog: &Program) -> Result<Execution> {
        let mut last = String::new();
        for _ in 0..2 {
            match self.attempt(prog)? {
                Ok(ex) => return Ok(ex),
                Err(why) => {
                    self.counters.infra_errors += 1;
                    tracing::warn!("guest {}: {why}", self.setup.slot);
                    last = why;
                    if hotfuzz_vm::process::stop_requested() {
                        break;
                    }
                }
            }
        }
        Ok(Execution {
            infra: Some(last),
            ..Execution::default()
        })
    }

    fn guest_state(&self) -> GuestState {
        self.state.clone()
    }

    fn counters(&self) -> TargetCounters {
        self.counters.clone()
    }

    fn shutdown(&mut self) {
        if let Some(r) = self.running.take() {
            drop(r.runner);
            match Arc::try_unwrap(r.vm) {
                Ok(vm) => {
                    vm.poweroff(Duration::from_secs(5));
                }
                Err(vm) => vm.kill(),
            }
        }
    }
}

impl Drop for GuestTarget {
    fn drop(&mut self) {
        self.restart();
    }
}
