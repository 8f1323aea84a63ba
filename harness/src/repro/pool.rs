//! The guests a reproduction runs on: a pool of worker threads, each with its own guest that
//! is booted once, saved as a snapshot when ready and restored before every run (so every run
//! starts from the same freshly booted state, in a fraction of a boot), running a candidate's
//! programs in order and judging what happened.
//!
//! A run counts as a crash only when a report with the target's title (or one of its
//! alternative titles) appears. Without a known title (a bare program), the first kernel report
//! a run produces becomes the target. A guest that fails to boot or a QEMU that dies without a
//! kernel report is an infrastructure failure, not a run.

use super::minimize::{Candidate, Evidence, Oracle, RunOutcome};
use crate::judge::{is_oracle, judge};
use crate::program::desc::Descriptions;
use crate::program::prog::Program;
use crate::report::{Report, ReportType};
use crate::run::guest::Prepared;
use crate::run::reset::Guest;
use crate::run::runner::{RunOptions, RunResult};
use anyhow::Result;
use hotfuzz_executor::protocol::{parse_kmsg_marker, Outcome};
use regex::Regex;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The bug being reproduced.
#[derive(Debug, Clone, Default)]
pub struct TargetBug {
    /// Titles that count (title first).
    pub titles: Vec<String>,
}

impl TargetBug {
    /// Whether `r` is this bug.
    pub fn matches(&self, r: &Report) -> bool {
        r.titles().any(|t| self.titles.iter().any(|x| x == t))
    }
}

/// How the pool's guests are set up.
#[derive(Clone)]
pub struct PoolSetup {
    /// Kernel, image and VM options (the profile is already applied).
    pub prepared: Arc<Prepared>,
    /// Descriptions.
    pub d: Arc<Descriptions>,
    /// How long virtio-mem devices get to settle after a program.
    pub settle: Duration,
    /// Limit for one program (default: the sum of its operations' deadlines).
    pub timeout: Option<Duration>,
    /// Titles never taken as the target when it is not known.
    pub suppressions: Vec<Regex>,
    /// Where run logs and the console logs of crashing runs go.
    pub log_dir: PathBuf,
}

/// The last crashing run's files, for the report directory.
#[derive(Debug, Clone, Default)]
pub struct CrashFiles {
    /// Console log of the guest.
    pub console: String,
    /// Run log.
    pub run_log: String,
    /// The report.
    pub report: Option<Report>,
    /// The accelerator the guest ran with.
    pub accel: Option<hotfuzz_vm::Accel>,
    /// Fault injection armed when the report fired (see `judge::Verdict::injections`).
    pub injections: Vec<String>,
}

struct Job {
    id: u64,
    cand: Candidate,
    reply: mpsc::Sender<(u64, RunOutcome)>,
}

/// Guests running candidates, one worker thread per guest.
pub struct GuestPool {
    workers: Vec<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    target: Arc<Mutex<TargetBug>>,
    last_crash: Arc<Mutex<CrashFiles>>,
    next: u64,
}

impl GuestPool {
    /// A pool of `n` guests for `target` (empty titles: the first kernel report decides).
    pub fn new(setup: PoolSetup, n: usize, target: TargetBug) -> Result<GuestPool> {
        std::fs::create_dir_all(&setup.log_dir)?;
        let target = Arc::new(Mutex::new(target));
        let last_crash = Arc::new(Mutex::new(CrashFiles::default()));
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for slot in 0..n.max(1) {
            let (tx, rx) = mpsc::channel::<Job>();
            let setup = setup.clone();
            let target = target.clone();
            let last = last_crash.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("repro-vm{slot}"))
                    .spawn(move || {
                        let mut guest: Option<Guest> = None;
                        for job in rx {
                            let out = run_one(
                                &setup, slot, &mut guest, job.id, &job.cand, &target, &last,
                            );
                            let _ = job.reply.send((job.id, out));
                        }
                        if let Some(g) = guest {
                            g.vm().kill();
                        }
                    })?,
            );
            workers.push(tx);
        }
        Ok(GuestPool {
            workers,
            threads,
            target,
            last_crash,
            next: 0,
        })
    }

    /// The bug's titles as known now.
    pub fn target(&self) -> TargetBug {
        lock(&self.target).clone()
    }

    /// Files of the most recent crashing run.
    pub fn last_crash(&self) -> CrashFiles {
        lock(&self.last_crash).clone()
    }
}

impl Drop for GuestPool {
    fn drop(&mut self) {
        self.workers.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Oracle for GuestPool {
    fn slots(&self) -> usize {
        self.workers.len()
    }

    fn run(&mut self, jobs: &[Candidate]) -> Vec<RunOutcome> {
        let (tx, rx) = mpsc::channel();
        let base = self.next;
        for (i, c) in jobs.iter().enumerate() {
            let w = &self.workers[i % self.workers.len()];
            let _ = w.send(Job {
                id: base + i as u64,
                cand: c.clone(),
                reply: tx.clone(),
            });
        }
        self.next += jobs.len() as u64;
        drop(tx);
        let mut out: Vec<RunOutcome> = vec![RunOutcome::Infra("no answer".into()); jobs.len()];
        for (id, o) in rx {
            out[(id - base) as usize] = o;
        }
        out
    }
}

/// A guest in its freshly booted state for the next run: the worker's guest restored from
/// its snapshot, or a new one booted (and saved) when there is none or the restore failed.
fn fresh_guest<'g>(
    setup: &PoolSetup,
    slot: usize,
    guest: &'g mut Option<Guest>,
    run_log: &std::path::Path,
) -> std::result::Result<&'g mut Guest, String> {
    if let Some(g) = guest.as_mut() {
        match g.reset(run_log) {
            Ok(t) => tracing::debug!("repro guest {slot}: restored in {t:.2?}"),
            Err(e) => {
                tracing::warn!("repro guest {slot}: restore failed ({e:#}); booting again");
                *guest = None;
            }
        }
    }
    if guest.is_none() {
        let g = Guest::boot(
            &setup.prepared,
            &format!("hotfuzz-repro{slot}"),
            true,
            None,
            Some(run_log),
            |_| Ok(()),
        )
        .map_err(|e| format!("the guest did not boot: {e:#}"))?;
        *guest = Some(g);
    }
    Ok(guest.as_mut().expect("just set"))
}

/// One run of `cand` on a guest in its freshly booted state.
fn run_one(
    setup: &PoolSetup,
    slot: usize,
    guest: &mut Option<Guest>,
    id: u64,
    cand: &Candidate,
    target: &Mutex<TargetBug>,
    last: &Mutex<CrashFiles>,
) -> RunOutcome {
    if hotfuzz_vm::process::stop_requested() {
        return RunOutcome::Infra("stopping".into());
    }
    let run_log = setup.log_dir.join(format!("run-{id:04}.log"));
    let g = match fresh_guest(setup, slot, guest, &run_log) {
        Ok(g) => g,
        Err(why) => return RunOutcome::Infra(why),
    };
    let vm = g.vm().clone();
    let console_mark = vm.console().mark();
    let mut base = 0usize;
    let mut started = Vec::new();
    let mut ok = Vec::new();
    let mut outcome = RunOutcome::Clean;
    for prog in cand {
        let runner = g.runner_mut();
        let mut run = match runner.run(
            &setup.d,
            prog,
            &RunOptions {
                kcov: false,
                timeout: setup.timeout,
                settle: Duration::from_millis(300),
                repeat_budget: None,
            },
        ) {
            Ok(r) => r,
            Err(e) => {
                outcome = RunOutcome::Infra(format!("the runner failed: {e:#}"));
                break;
            }
        };
        let verdict = judge(&vm, g.runner().agent(), prog, &mut run, setup.settle);
        if let Some(why) = verdict.infra {
            outcome = RunOutcome::Infra(why);
            break;
        }
        let injections = verdict.injections;
        let reports = verdict.reports;
        let hit = {
            let mut t = lock(target);
            if t.titles.is_empty() {
                // A bare program: the first kernel report (or stuck operation) is the bug.
                if let Some(r) = reports.iter().find(|r| {
                    (!is_oracle(r.kind) || r.kind == ReportType::StuckOp)
                        && !setup.suppressions.iter().any(|s| s.is_match(&r.title))
                }) {
                    t.titles = r.titles().map(str::to_string).collect();
                }
            }
            reports.iter().find(|r| t.matches(r)).cloned()
        };
        if let Some(rep) = hit {
            let (s, o, crash) = op_facts(prog, &run, &rep);
            started.extend(s);
            ok.extend(o);
            let ev = Evidence {
                title: rep.title.clone(),
                report: rep.text.clone(),
                console: crate::judge::excerpt(&run.console, &rep),
                started,
                ok,
                crash_op: crash.map(|c| base + c),
            };
            // This run's console (the guest's log goes on across restores).
            let console: String = vm
                .console()
                .lines_since(console_mark)
                .iter()
                .map(|l| format!("{} {}\n", hotfuzz_vm::console::format_time(l.time), l.text))
                .collect();
            *lock(last) = CrashFiles {
                console,
                run_log: std::fs::read_to_string(&run_log).unwrap_or_default(),
                report: Some(rep),
                accel: Some(vm.accel()),
                injections,
            };
            let _ = std::fs::remove_file(&run_log);
            return RunOutcome::Crashed(Box::new(ev));
        }
        if !vm.is_alive() || run.lost.is_some() {
            // Another bug (or a lost guest) ended the run: the rest cannot run.
            if let Some(other) = reports.iter().find(|r| !is_oracle(r.kind)) {
                outcome = RunOutcome::Masked(other.title.clone());
            }
            break;
        }
        base += prog.ops.len();
        started.extend(std::iter::repeat_n(true, prog.ops.len()));
        ok.extend(
            run.ops
                .iter()
                .map(|o| matches!(o.outcome, Some(Outcome::Ok { .. }))),
        );
    }
    let _ = std::fs::remove_file(&run_log);
    outcome
}

/// Per operation of `prog`: started before the report, succeeded; and the operation running
/// when the report appeared (kernel-log markers before the report's first line; for the
/// harness's own reports, every operation that started and the stuck one).
fn op_facts(
    prog: &Program,
    run: &RunResult,
    rep: &Report,
) -> (Vec<bool>, Vec<bool>, Option<usize>) {
    let n = prog.ops.len();
    let ok: Vec<bool> = (0..n)
        .map(|i| {
            run.ops
                .get(i)
                .is_some_and(|o| matches!(o.outcome, Some(Outcome::Ok { .. })))
        })
        .collect();
    if is_oracle(rep.kind) {
        let started: Vec<bool> = (0..n)
            .map(|i| run.ops.get(i).is_some_and(|o| o.started.is_some()))
            .collect();
        let stuck = run.ops.iter().position(|o| {
            matches!(
                o.outcome,
                Some(Outcome::Stuck) | Some(Outcome::Timeout { .. })
            )
        });
        return (started, ok, stuck);
    }
    let mut started = vec![false; n];
    let mut crash = None;
    for l in run.console.iter().take(rep.start_line) {
        if let Some(i) = parse_kmsg_marker(&l.text)
            .filter(|m| m.program == run.program_id)
            .map(|m| m.op)
        {
            if i < n {
                started[i] = true;
                crash = Some(i);
            }
        }
    }
    if crash.is_none() {
        // No markers (a kernel without /dev/kmsg writes?): say nothing rather than guess.
        return (Vec::new(), ok, None);
    }
    (started, ok, crash)
}
