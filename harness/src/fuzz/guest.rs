//! The real [`Target`]: a guest booted with a profile and reused across programs. Once booted
//! and probed it is saved as a snapshot; after a report, a hang, a lost guest or every
//! `restart_every` programs (`reset: snapshot`), or before every program
//! (`reset: per-program`), it is restored from that snapshot instead of booted again. A QEMU
//! that died is started again from the snapshot; a guest whose devices changed (hot-added
//! virtio-mem or DIMMs cannot be restored) or whose restore failed is booted again. Every
//! `profile_every` programs, and in `reset: reboot` mode at every reset, the next profile
//! boots. Reports are filed into the store as they happen (a killed fuzzer loses none).
//!
//! A guest that misbehaves in the harness is not a kernel bug: QEMU dying without a kernel
//! report (killed from outside), a runner that cannot start the executor, a boot that fails.
//! The program is retried on a fresh guest; a second failure gives up on the program, and
//! guests that keep failing to boot stop the campaign with the boot error.

use super::config::{FuzzConfig, Profile, ResetMode};
use super::features;
use super::target::{Execution, Found, Target, TargetCounters};
use crate::program::desc::Descriptions;
use crate::program::prog::Program;
use crate::program::state::GuestState;
use crate::report::Report;
use crate::run::guest::GuestConfig;
use crate::run::reset::Guest;
use crate::run::runner::{RunOptions, RunResult, CAMPAIGN_REPEAT_BUDGET};
use crate::store::{KernelInfo, Store};
use anyhow::{Context, Result};
use hotfuzz_executor::protocol::Outcome;
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
    /// How the guest gets back to a clean state.
    pub reset: ResetMode,
    /// Programs per reset (per boot in reboot mode).
    pub restart_every: u64,
    /// Programs per boot in the snapshot modes (then the next profile boots).
    pub profile_every: u64,
    /// Where the VM directories (and their snapshots) go: the campaign's work directory.
    pub vm_dir: PathBuf,
    /// How long devices get to settle after a program.
    pub settle: Duration,
    /// Suppressed titles.
    pub suppressions: Vec<String>,
    /// Whether programs collect KCOV coverage.
    pub coverage: bool,
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
            reset: c.reset,
            restart_every: c.restart_every,
            profile_every: c.profile_every,
            vm_dir: c.workdir.join("vms"),
            settle: c.settle().unwrap_or(Duration::from_secs(10)),
            suppressions: c.suppressions.clone(),
            coverage: c.coverage,
        }
    }

    /// The guest set-up for `profile`.
    pub fn config_for(&self, profile: &Profile) -> Result<GuestConfig> {
        profile.apply(&self.base)
    }
}

/// How long the console gets after a program for the kernel's late messages (a WARN from a
/// worker the program kicked off).
const CONSOLE_GRACE: Duration = Duration::from_millis(20);

struct Running {
    guest: Guest,
    record: crate::store::GuestRecord,
    /// Programs since the last reset.
    programs: u64,
    /// Programs since the boot.
    programs_since_boot: u64,
    run_log: PathBuf,
    /// Set when the guest must be reset before the next program.
    dirty: bool,
}

/// A guest that runs programs, files their reports and resets itself when it must.
pub struct GuestTarget {
    setup: GuestSetup,
    d: Arc<Descriptions>,
    store: Store,
    /// Reports the store could not take yet.
    unfiled: crate::store::Unfiled,
    suppress: Vec<Regex>,
    running: Option<Running>,
    state: GuestState,
    kinfo: Option<KernelInfo>,
    counters: TargetCounters,
    failed_boots_in_a_row: u32,
    logs: u64,
    created: Instant,
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
            unfiled: Default::default(),
            suppress,
            running: None,
            kinfo: None,
            counters: TargetCounters::default(),
            failed_boots_in_a_row: 0,
            logs: 0,
            created: Instant::now(),
        })
    }

    /// The running guest, if any (tests kill it from outside).
    pub fn vm(&self) -> Option<Arc<Vm>> {
        self.running.as_ref().map(|r| r.guest.vm().clone())
    }

    fn next_profile(&self) -> &Profile {
        let n = self.setup.profiles.len();
        &self.setup.profiles[(self.setup.slot + self.counters.boots as usize) % n]
    }

    /// A new run log (one per boot and per reset: a report's history starts at either).
    fn next_run_log(&mut self) -> PathBuf {
        self.logs += 1;
        let p = self.setup.log_dir.join(format!("run-{:06}.log", self.logs));
        self.prune_logs();
        p
    }

    fn boot(&mut self) -> Result<()> {
        let t = Instant::now();
        let r = self.boot_guest();
        self.counters.time.boot_ms += t.elapsed().as_millis() as u64;
        r
    }

    fn boot_guest(&mut self) -> Result<()> {
        let profile = self.next_profile().clone();
        let p = self.setup.config_for(&profile)?.prepare()?;
        self.counters.boots += 1;
        self.counters.profile = profile.name.clone();
        let t = Instant::now();
        let run_log = self.next_run_log();
        let mut state = None;
        let guest = Guest::boot(
            &p,
            &format!("hotfuzz-fuzz{}", self.setup.slot),
            self.setup.reset != ResetMode::Reboot,
            Some(&self.setup.vm_dir),
            Some(&run_log),
            |runner| {
                state = Some(crate::run::probe::guest_state(runner.vm(), runner.agent())?);
                Ok(())
            },
        )?;
        if let Some(st) = state {
            self.state = st;
        }
        if let Some(why) = &guest.first_boot_failed {
            // The first attempt is a boot like any other: counted, so a campaign whose guests
            // need two tries each shows it.
            self.counters.boots += 1;
            self.counters.boot_failures += 1;
            tracing::warn!("guest {}: first boot failed: {why}", self.setup.slot);
        }
        tracing::info!(
            "guest {} booted with profile {}: guest ready in {:.2?}, ready for programs in {:.2?}",
            self.setup.slot,
            profile.name,
            guest.vm().timings().ready,
            t.elapsed()
        );
        if self.kinfo.is_none() {
            self.kinfo = Some(crate::store::kernel_info(&p.kernel));
        }
        let record = crate::store::GuestRecord::new(
            guest.vm().machine(),
            Some(&profile.name),
            self.setup.base.bugzoo.as_deref(),
            Some(guest.vm().accel()),
        );
        self.running = Some(Running {
            guest,
            record,
            programs: 0,
            programs_since_boot: 0,
            run_log,
            dirty: false,
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
            r.guest.vm().kill();
        }
    }

    /// Restores the running guest from its snapshot; false when it has to be booted again
    /// (no snapshot, devices hot-added or removed since, or the restore failed).
    fn restore(&mut self) -> bool {
        let t = Instant::now();
        let ok = self.try_restore();
        let took = t.elapsed();
        self.counters.time.reset_ms += took.as_millis() as u64;
        match &ok {
            Ok(true) => {
                self.counters.resets += 1;
                tracing::info!("guest {}: restored in {took:.2?}", self.setup.slot);
            }
            Ok(false) => {}
            Err(e) => {
                self.counters.reset_failures += 1;
                tracing::warn!(
                    "guest {}: restoring the snapshot failed ({e:#}); booting again",
                    self.setup.slot
                );
            }
        }
        matches!(ok, Ok(true))
    }

    fn try_restore(&mut self) -> Result<bool> {
        let run_log = self.next_run_log();
        let Some(r) = self.running.as_mut() else {
            return Ok(false);
        };
        if !r.guest.can_reset() {
            return Ok(false);
        }
        if let Err(e) = r.guest.reset(&run_log) {
            // What is left of the guest cannot be trusted: boot again.
            self.running = None;
            return Err(e);
        }
        r.programs = 0;
        r.dirty = false;
        r.run_log = run_log;
        Ok(true)
    }

    /// Brings the guest to a clean state for the next program: restored, booted again when
    /// that fails or the profile's turn is over, or booted for the first time.
    fn ensure_ready(&mut self) -> Result<()> {
        if let Some(r) = self.running.as_ref() {
            let reboot_mode = self.setup.reset == ResetMode::Reboot;
            let profile_done =
                r.programs_since_boot >= self.setup.profile_every && self.setup.profiles.len() > 1;
            let due = r.dirty
                || r.programs >= self.setup.restart_every
                || (self.setup.reset == ResetMode::PerProgram && r.programs > 0);
            if r.guest.vm().exit_status().is_some() && !r.dirty {
                // Killed or crashed while no program ran: nothing to blame on a program.
                self.counters.infra_errors += 1;
                tracing::warn!(
                    "guest {}: QEMU died between programs ({})",
                    self.setup.slot,
                    r.guest
                        .vm()
                        .exit_status()
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                );
            }
            let dead = !r.guest.vm().is_alive();
            if profile_done || ((due || dead) && (reboot_mode || !self.restore())) {
                self.restart();
            }
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

    /// The guest must be reset before the next program.
    fn dirty(&mut self) {
        if let Some(r) = self.running.as_mut() {
            r.dirty = true;
        }
    }

    fn suppressed(&self, title: &str) -> bool {
        self.suppress.iter().any(|r| r.is_match(title))
    }

    /// One attempt; `Err(reason)` when the attempt says nothing about the kernel.
    fn attempt(&mut self, prog: &Program) -> Result<std::result::Result<Execution, String>> {
        self.ensure_ready()?;
        let t0 = Instant::now();
        if self.counters.first_program_ms.is_none() {
            self.counters.first_program_ms = Some(self.created.elapsed().as_millis() as u64);
        }
        let run = {
            let r = self.running.as_mut().expect("booted");
            r.programs += 1;
            r.programs_since_boot += 1;
            r.guest.runner_mut().run(
                &self.d,
                prog,
                &RunOptions {
                    kcov: self.setup.coverage,
                    timeout: None,
                    settle: CONSOLE_GRACE,
                    repeat_budget: Some(CAMPAIGN_REPEAT_BUDGET),
                },
            )
        };
        let mut run = match run {
            Ok(run) => run,
            Err(e) => {
                self.dirty();
                return Ok(Err(format!("the runner failed: {e:#}")));
            }
        };
        self.counters.time.program_ms += run.duration.as_millis() as u64;
        self.counters.time.deadline_ms += deadline_time(&run).as_millis() as u64;
        if hotfuzz_vm::process::stop_requested() {
            return Ok(Err("stopping".into()));
        }
        let vm = self.running.as_ref().expect("booted").guest.vm().clone();
        let judged = Instant::now();
        let verdict = {
            let r = self.running.as_ref().expect("booted");
            crate::judge::judge(
                &vm,
                r.guest.runner().agent(),
                prog,
                &mut run,
                self.setup.settle,
            )
        };
        self.counters.time.hang_ms += verdict.hang_wait.as_millis() as u64;
        self.counters.time.settle_ms +=
            (judged.elapsed().saturating_sub(verdict.hang_wait) + CONSOLE_GRACE).as_millis() as u64;
        if let Some(why) = verdict.infra {
            self.dirty();
            return Ok(Err(why));
        }
        if verdict.oom.is_some() {
            self.counters.oom += 1;
        }
        if let Some(what) = &verdict.slow {
            self.counters.slow += 1;
            tracing::info!("guest {}: slow, not hung: {what}", self.setup.slot);
        }
        let injections = verdict.injections;
        let reports = verdict.reports;
        let mut ex = Execution {
            features: features::features(prog, &run),
            cover: run.cover.values().flatten().copied().collect(),
            duration: t0.elapsed(),
            oom: verdict.oom.is_some(),
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
                &mut self.unfiled,
                &filed,
                &run,
                r.guest.vm(),
                &r.run_log,
                crate::store::Provenance {
                    kernel: &kinfo,
                    guest: &r.record,
                    injections: &injections,
                },
            );
            self.counters.unfiled = self.unfiled.len() as u64;
            self.counters.filing_failures = self.unfiled.failures;
            for (rep, f) in filed.iter().zip(stored) {
                ex.reports.push(Found {
                    title: rep.title.clone(),
                    kind: rep.kind,
                    new_in_store: f.as_ref().is_some_and(|f| f.new),
                    dir: f.map(|f| f.dir),
                });
            }
        }
        if vm.exit_status().is_some() && run.lost.is_none() && !crate::judge::kernel_says(&filed) {
            // The program finished; QEMU died afterwards (while its reports were gathered).
            self.counters.infra_errors += 1;
            tracing::warn!(
                "guest {}: QEMU died after the program finished",
                self.setup.slot
            );
        }
        if !ex.reports.is_empty()
            || !ex.suppressed.is_empty()
            || ex.oom
            || run.lost.is_some()
            || !run.abandoned.is_empty()
            || !vm.is_alive()
        {
            self.dirty();
        }
        Ok(Ok(ex))
    }
}

/// Program time spent running into deadlines on purpose: operations that timed out (a wait
/// for a size the device never reaches, an offline that gave up) or got stuck. Repeated and
/// looping operations are left out: their time is the kernel's work.
fn deadline_time(run: &RunResult) -> Duration {
    let t: Duration = run
        .ops
        .iter()
        .filter(|o| o.runs <= 1)
        .filter(|o| {
            matches!(
                o.outcome,
                Some(Outcome::Timeout { .. }) | Some(Outcome::Stuck)
            ) || matches!(o.outcome, Some(Outcome::Errno { errno: 110, .. }))
        })
        .map(|o| o.duration)
        .sum();
    t.min(run.duration)
}

impl Target for GuestTarget {
    fn execute(&mut self, prog: &Program) -> Result<Execution> {
        self.retry_unfiled();
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
            r.guest.shutdown();
        }
        self.retry_unfiled();
        if !self.unfiled.is_empty() {
            tracing::error!(
                "{} report(s) could never be filed into {}",
                self.unfiled.len(),
                self.store.root().display()
            );
        }
    }
}

impl GuestTarget {
    /// Files the reports the store could not take before, when there are any (a disk that was
    /// full may have room again); keeps the counters up to date.
    fn retry_unfiled(&mut self) {
        if !self.unfiled.is_empty() {
            self.unfiled.retry(&self.store);
            self.counters.unfiled = self.unfiled.len() as u64;
            self.counters.filing_failures = self.unfiled.failures;
        }
    }
}

impl Drop for GuestTarget {
    fn drop(&mut self) {
        self.restart();
    }
}
