//! The regression suite stage: every entry that applies runs its reproducer on fresh guests of
//! the kernel under test (the reproducer's guest pool: one fresh guest per run, the title or an
//! alternative title counts), and the outcome is compared with what the entry expects. What
//! it learns goes into the report store: a reproduced bug is filed (a fixed one turns
//! regressed), an open bug whose reproducer stopped reproducing is marked fixed (detected).

use super::entry::{decide, Decision, Entry};
use super::kernel::KernelUnderTest;
use super::summary::{EntryResult, Expect, Verdict};
use crate::fuzz::config::FuzzConfig;
use crate::program::desc::Descriptions;
use crate::repro::minimize::{Evidence as RunEvidence, Oracle, RunOutcome};
use crate::repro::pool::{GuestPool, PoolSetup, TargetBug};
use crate::run::guest::{GuestConfig, Prepared};
use crate::store::status::{FixedBy, State};
use crate::store::{Evidence, GuestRecord, Store};
use anyhow::{anyhow, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the suite runs with.
pub struct SuiteContext<'a> {
    /// Descriptions.
    pub d: Arc<Descriptions>,
    /// The kernel under test.
    pub kernel: &'a KernelUnderTest,
    /// The report store.
    pub store: &'a Store,
    /// The night's guest (kernel, accelerator, bug zoo); profiles are applied to it.
    pub guest: &'a GuestConfig,
    /// Profiles, settle time.
    pub fuzz: &'a FuzzConfig,
    /// Where each entry's logs go (`<dir>/<entry>/`).
    pub log_dir: PathBuf,
    /// Runs per entry unless it says.
    pub runs: u32,
    /// Guests at once.
    pub vms: usize,
    /// Profile unless the entry names one.
    pub profile: &'a str,
    /// No run starts after this.
    pub deadline: Instant,
}

/// Guests prepared per profile (resolving the kernel and building the image once).
#[derive(Default)]
pub struct Prepare(HashMap<String, (GuestConfig, Arc<Prepared>)>);

impl Prepare {
    /// The prepared guest of `profile`.
    pub fn get(
        &mut self,
        base: &GuestConfig,
        fuzz: &FuzzConfig,
        profile: &str,
    ) -> Result<(GuestConfig, Arc<Prepared>)> {
        if let Some(p) = self.0.get(profile) {
            return Ok(p.clone());
        }
        let p = fuzz
            .profiles
            .iter()
            .find(|p| p.name == profile)
            .ok_or_else(|| {
                anyhow!("no guest profile named {profile:?} in the fuzz configuration")
            })?;
        let args = p.apply(base)?;
        let prepared = Arc::new(args.prepare()?);
        self.0
            .insert(profile.to_string(), (args.clone(), prepared.clone()));
        Ok((args, prepared))
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// What the runs of one entry showed.
struct Runs {
    crashes: u32,
    clean: u32,
    infra: u32,
    last_infra: Option<String>,
    evidence: Option<RunEvidence>,
    out_of_time: bool,
}

fn runs_of(ctx: &SuiteContext, e: &Entry, pool: &mut GuestPool, want: u32) -> Runs {
    let mut r = Runs {
        crashes: 0,
        clean: 0,
        infra: 0,
        last_infra: None,
        evidence: None,
        out_of_time: false,
    };
    while r.crashes + r.clean < want {
        if Instant::now() >= ctx.deadline {
            r.out_of_time = true;
            break;
        }
        if hotfuzz_vm::process::stop_requested() || r.infra > want + 2 {
            break;
        }
        let n = (want - r.crashes - r.clean).min(ctx.vms as u32) as usize;
        for o in pool.run(&vec![vec![e.program.clone()]; n]) {
            match o {
                RunOutcome::Crashed(ev) => {
                    r.crashes += 1;
                    r.evidence = Some(*ev);
                }
                RunOutcome::Clean => r.clean += 1,
                // Another bug ended the run first: it says nothing about this entry's bug
                // either way (counting it as clean could mark an open bug fixed).
                RunOutcome::Masked(title) => {
                    r.infra += 1;
                    r.last_infra = Some(format!("masked by another report: {title}"));
                }
                RunOutcome::Infra(why) => {
                    r.infra += 1;
                    r.last_infra = Some(why);
                }
            }
        }
        // One crash decides both ways: an open bug is still open, a fixed one regressed.
        if r.crashes > 0 {
            break;
        }
    }
    r
}

/// Runs one entry (or skips it), files what it learned, and says how it came out. The second
/// value is the wall time per guest run, when it ran any.
pub fn run_entry(ctx: &SuiteContext, prep: &mut Prepare, e: &Entry) -> (EntryResult, Option<f64>) {
    let t0 = Instant::now();
    let mut res = EntryResult {
        name: e.name.clone(),
        title: e.spec.title.clone(),
        expected: None,
        why: String::new(),
        verdict: Verdict::Skipped,
        crashes: 0,
        runs: 0,
        infra: 0,
        seconds: 0.0,
        message: String::new(),
        report: None,
        bug_dir: None,
    };
    let fail = |mut res: EntryResult, v: Verdict, msg: String| {
        res.verdict = v;
        res.message = msg;
        res.seconds = t0.elapsed().as_secs_f64();
        (res, None)
    };
    let (expect, why) = match decide(e, ctx.kernel, ctx.store) {
        Ok(Decision::Skip(why)) => {
            res.why = why.clone();
            return fail(res, Verdict::Skipped, why);
        }
        Ok(Decision::Run(x, why)) => (x, why),
        Err(err) => return fail(res, Verdict::Error, format!("{err:#}")),
    };
    res.expected = Some(expect);
    res.why = why.clone();
    if Instant::now() >= ctx.deadline {
        return fail(
            res,
            Verdict::Skipped,
            "not run: the suite's share of the budget was used up".into(),
        );
    }
    let profile = e.spec.profile.as_deref().unwrap_or(ctx.profile);
    let (args, prepared) = match prep.get(ctx.guest, ctx.fuzz, profile) {
        Ok(p) => p,
        Err(err) => return fail(res, Verdict::Error, format!("preparing the guest: {err:#}")),
    };
    let log_dir = ctx.log_dir.join(&e.name);
    let setup = PoolSetup {
        prepared: prepared.clone(),
        d: ctx.d.clone(),
        settle: ctx.fuzz.settle().unwrap_or(Duration::from_secs(10)),
        timeout: e.timeout(),
        suppressions: Vec::new(),
        log_dir: log_dir.clone(),
    };
    let mut pool = match GuestPool::new(setup, ctx.vms, TargetBug { titles: e.titles() }) {
        Ok(p) => p,
        Err(err) => return fail(res, Verdict::Error, format!("starting guests: {err:#}")),
    };
    let want = e.spec.runs.unwrap_or(ctx.runs);
    let t_runs = Instant::now();
    let r = runs_of(ctx, e, &mut pool, want);
    let crash = pool.last_crash();
    drop(pool);
    let started = r.crashes + r.clean + r.infra;
    let cost = (started > 0).then(|| t_runs.elapsed().as_secs_f64() / f64::from(started));
    res.crashes = r.crashes;
    res.runs = r.crashes + r.clean;
    res.infra = r.infra;
    let rel = format!("{}/{}", r.crashes, res.runs);
    let short = if r.out_of_time {
        format!(" (of {want} asked: out of time)")
    } else {
        String::new()
    };
    let bug = ctx.store.find_title(&e.spec.title).ok().flatten();
    if r.crashes > 0 {
        if let Some(ev) = &r.evidence {
            res.report = Some(format!(
                "{}\n\n{}\n\n--- console ---\n{}",
                ev.title, ev.report, ev.console
            ));
        }
        match file_crash(
            ctx, e, &args, &prepared, profile, &crash, &r, expect, &why, &log_dir,
        ) {
            Ok(dir) => res.bug_dir = Some(dir.display().to_string()),
            Err(err) => tracing::warn!("filing the report of regression entry {}: {err:#}", e.name),
        }
        res.verdict = if expect == Expect::Reproduces {
            Verdict::Passed
        } else {
            Verdict::Failed
        };
        res.message = match expect {
            Expect::Reproduces => format!("reproduced {rel}, as expected ({why})"),
            Expect::Fixed => format!("REGRESSION: reproduced {rel}, expected fixed ({why})"),
        };
    } else if res.runs == 0 {
        res.verdict = if r.out_of_time {
            Verdict::Skipped
        } else {
            Verdict::Error
        };
        res.message = if r.out_of_time {
            // Say why the time went when guests failed: the night's page is all there is.
            match (r.infra, r.last_infra.as_deref()) {
                (0, _) | (_, None) => "not run: the suite's share of the budget was used up".into(),
                (n, Some(why)) => format!(
                    "not run: the suite's share of the budget was used up by {n} \
                     infrastructure failure(s) (last: {why})"
                ),
            }
        } else {
            format!(
                "no run counted: {}",
                r.last_infra.as_deref().unwrap_or("stopped")
            )
        };
    } else if expect == Expect::Fixed {
        res.verdict = Verdict::Passed;
        res.message = format!(
            "did not reproduce in {} runs{short}, as expected ({why})",
            res.runs
        );
        res.bug_dir = bug.map(|b| b.dir.display().to_string());
    } else {
        res.verdict = Verdict::Failed;
        res.message = format!("did not reproduce in {rel} runs{short}; expected to ({why})");
        if let Some(b) = bug.filter(|b| b.meta.status.state.is_open()) {
            let release = ctx.kernel.facts.release.clone();
            let note = format!(
                "regression entry {} did not reproduce it in {rel} runs on {release}",
                e.name
            );
            match ctx.store.update(&b.dir, |m| {
                m.status
                    .mark_fixed(&release, FixedBy::Detected, &now(), note.clone())
            }) {
                Ok(_) => res
                    .message
                    .push_str(&format!("; marked fixed in the store (on {release})")),
                Err(err) => tracing::warn!("marking {} fixed: {err:#}", b.dir.display()),
            }
            res.bug_dir = Some(b.dir.display().to_string());
        }
    }
    res.seconds = t0.elapsed().as_secs_f64();
    (res, cost)
}

/// Files a reproduced entry's report, with the status the suite learned: a bug the suite
/// expected is known (not new), one it expected fixed has regressed.
#[allow(clippy::too_many_arguments)]
fn file_crash(
    ctx: &SuiteContext,
    e: &Entry,
    args: &GuestConfig,
    prepared: &Prepared,
    profile: &str,
    crash: &crate::repro::pool::CrashFiles,
    r: &Runs,
    expect: Expect,
    why: &str,
    log_dir: &std::path::Path,
) -> Result<PathBuf> {
    let rep = crash
        .report
        .as_ref()
        .ok_or_else(|| anyhow!("the crashing run left no report"))?;
    std::fs::create_dir_all(log_dir)?;
    let console = log_dir.join("console.log");
    let run_log = log_dir.join("run.log");
    hotfuzz_vm::cache::atomic_write(&console, crash.console.as_bytes())?;
    hotfuzz_vm::cache::atomic_write(&run_log, crash.run_log.as_bytes())?;
    let ev = Evidence {
        console_log: Some(console),
        excerpt: r
            .evidence
            .as_ref()
            .map(|v| v.console.clone())
            .unwrap_or_default(),
        programs: vec![e.text.clone()],
        run_log: Some(run_log),
        kernel: crate::store::kernel_info(&prepared.kernel),
        guest: Some(GuestRecord::new(
            &prepared.options.machine,
            Some(profile),
            args.bugzoo.as_deref(),
            crash.accel,
        )),
        symbolized: None,
        injections: crash.injections.clone(),
    };
    let filed = ctx.store.file(rep, &ev)?;
    let at = now();
    let rel = format!("{}/{}", r.crashes, r.crashes + r.clean);
    ctx.store.update(&filed.dir, |m| {
        match expect {
            Expect::Reproduces if m.status.state == State::New => m.status.change(
                &at,
                State::Known,
                format!("known: regression entry {} expects it", e.name),
            ),
            Expect::Fixed if !matches!(m.status.state, State::Regressed | State::Invalid) => {
                m.status.change(
                    &at,
                    State::Regressed,
                    format!(
                        "regression entry {} reproduced it on {}; expected fixed ({why})",
                        e.name, ctx.kernel.facts.release
                    ),
                )
            }
            _ => {}
        }
        if m.reproducibility.is_none() {
            m.reproducibility = Some(format!("{rel} (regression entry {})", e.name));
        }
    })?;
    let prog = filed.dir.join("repro.prog");
    if !prog.exists() {
        let text = format!(
            "# {}\n# from regression entry {} ({})\n{}",
            e.spec.title,
            e.name,
            e.dir.display(),
            e.text
        );
        hotfuzz_vm::cache::atomic_write(&prog, text.as_bytes())?;
    }
    Ok(filed.dir)
}
