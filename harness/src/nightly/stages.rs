//! The stages that use guests: preparing the kernel under test, the regression suite, the
//! fuzzing campaign and the reproduction of the night's new bugs. Each records what it did in
//! the night (saved by the caller after it, and by the suite and reproduction after every
//! entry or bug, so a killed night loses at most the one in flight).

use super::budget::{repro_runs, Budget, REPRO_RUN_FACTOR};
use super::config::NightConfig;
use super::entry::Entry;
use super::kernel::KernelUnderTest;
use super::suite::{run_entry, Prepare, SuiteContext};
use super::summary::{FuzzRecord, Night, ReproRecord, Stage, StageState, Verdict};
use crate::fuzz::config::FuzzConfig;
use crate::program::desc::Descriptions;
use crate::run::guest::{GuestConfig, Prepared};
use crate::store::Store;
use anyhow::{Context as _, Result};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the stages share.
pub struct Ctx<'a> {
    /// The configuration.
    pub cfg: &'a NightConfig,
    /// The campaign configuration (profiles, suppressions, settle).
    pub fuzz: FuzzConfig,
    /// The night's guest: kernel, accelerator, bug zoo.
    pub guest: GuestConfig,
    /// Descriptions.
    pub d: Arc<Descriptions>,
    /// The report store.
    pub store: Store,
    /// The night's directory.
    pub dir: PathBuf,
    /// The budget.
    pub budget: Budget,
    /// Guests prepared per profile.
    pub prep: Prepare,
}

/// Says what the night is doing (stderr, one line).
pub fn say(msg: impl AsRef<str>) {
    eprintln!("hotfuzz nightly: {}", msg.as_ref());
}

/// The night's guest from the configuration.
pub fn night_guest(cfg: &NightConfig, no_install: bool) -> GuestConfig {
    let mut g = GuestConfig::new(cfg.arch);
    g.kernel = cfg.kernel.source();
    g.accel = cfg.accel;
    g.bugzoo = cfg.bugzoo.clone().filter(|b| !b.trim().is_empty());
    g.no_install = no_install;
    g
}

/// Saves the night's record as it is now (from inside a stage: after an entry or a bug).
fn save(ctx: &Ctx, n: &Night) {
    let mut n = n.clone();
    n.spent_s = ctx.budget.spent().as_secs_f64();
    n.updated = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    if let Err(e) = n.save(&ctx.dir.join(super::results::files::SUMMARY)) {
        tracing::warn!("{e:#}");
    }
}

/// Runs stage `s` (regression, fuzz or repro) with the time the budget gives it; says how it
/// went and what it did.
pub fn run(
    s: Stage,
    ctx: &mut Ctx,
    night: &mut Night,
    kernel: &KernelUnderTest,
    entries: &[Entry],
    selected: &[Stage],
) -> (StageState, String) {
    let cfg = ctx.cfg;
    let time = match s {
        Stage::Regression => ctx.budget.regression(cfg.regression.max_share),
        Stage::Fuzz => ctx
            .budget
            .fuzz(selected.contains(&Stage::Repro).then_some(cfg.repro.share)),
        _ => ctx.budget.left(),
    };
    night.begin(s, Some(time));
    say(format!(
        "{} ({} given)",
        s.name(),
        super::html::duration(time.as_secs_f64())
    ));
    match s {
        Stage::Regression if entries.is_empty() => (StageState::Skipped, "no entries".into()),
        Stage::Regression => {
            regression(ctx, night, kernel, entries, time);
            let c = &night.regression;
            let n = |v: Verdict| c.iter().filter(|e| e.verdict == v).count();
            let note = format!(
                "{} entries: {} passed, {} failed, {} skipped, {} errors",
                c.len(),
                n(Verdict::Passed),
                n(Verdict::Failed),
                n(Verdict::Skipped),
                n(Verdict::Error)
            );
            (StageState::Done, note)
        }
        Stage::Fuzz => {
            let min = cfg.fuzz_min().unwrap_or(Duration::from_secs(60));
            if time < min {
                let note = format!(
                    "not run: {} left for it, fuzz.min_time is {}",
                    super::html::duration(time.as_secs_f64()),
                    cfg.fuzz.min_time
                );
                return (StageState::Skipped, note);
            }
            match fuzz(ctx, night, time) {
                Ok(f) => {
                    let note = format!(
                        "{} executions, {} bugs seen; {}",
                        f.execs,
                        f.reports.len(),
                        f.stopped
                    );
                    night.fuzz = Some(f);
                    (StageState::Done, note)
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    say(format!("fuzzing failed: {why}"));
                    night
                        .problems
                        .push(format!("the fuzzing campaign failed: {why}"));
                    (StageState::Failed, why)
                }
            }
        }
        _ => match repro(ctx, night) {
            Ok(note) => (StageState::Done, note),
            Err(e) => {
                let why = format!("{e:#}");
                night.problems.push(format!("reproducing failed: {why}"));
                (StageState::Failed, why)
            }
        },
    }
}

/// Resolves the kernel under test and builds the guest (with the bug zoo when armed).
pub fn prepare(ctx: &mut Ctx) -> Result<(KernelUnderTest, Arc<Prepared>)> {
    if let Some(b) = ctx.cfg.kernel.build.clone() {
        // The tree the night tracks: built now (from the cache when nothing changed), and
        // every stage boots the result.
        say(format!("building the kernel from {}", b.tree.display()));
        let k = crate::fuzz::config::KernelConfig {
            build: Some(b),
            ..Default::default()
        }
        .built(ctx.cfg.arch)?;
        ctx.guest.kernel = hotfuzz_vm::KernelSource::Path {
            path: k.path.expect("a built kernel has a path"),
            modules: None,
            system_map: None,
        };
    }
    let profile = ctx.cfg.regression.profile.clone();
    let (_, prepared) = ctx
        .prep
        .get(&ctx.guest, &ctx.fuzz, &profile)
        .context("preparing the kernel under test")?;
    let k = KernelUnderTest::new(&prepared.kernel, ctx.guest.bugzoo.as_deref());
    Ok((k, prepared))
}

/// Runs the regression suite within `time`, saving the night after each entry.
pub fn regression(
    ctx: &mut Ctx,
    night: &mut Night,
    kernel: &KernelUnderTest,
    entries: &[Entry],
    time: Duration,
) {
    let deadline = Instant::now() + time;
    let mut costs = Vec::new();
    for e in entries {
        if night.regression.iter().any(|r| r.name == e.name) {
            continue; // done in an earlier session of this night
        }
        if hotfuzz_vm::process::stop_requested() {
            return;
        }
        say(format!("regression entry {}: {}", e.name, e.spec.title));
        let sctx = SuiteContext {
            d: ctx.d.clone(),
            kernel,
            store: &ctx.store,
            guest: &ctx.guest,
            fuzz: &ctx.fuzz,
            log_dir: ctx.dir.join("regression"),
            runs: ctx.cfg.regression.runs,
            vms: ctx.cfg.regression.vms,
            profile: &ctx.cfg.regression.profile,
            deadline,
        };
        let (res, cost) = run_entry(&sctx, &mut ctx.prep, e);
        say(format!("  {:?}: {}", res.verdict, res.message).to_lowercase());
        costs.extend(cost);
        night.regression.push(res);
        if !costs.is_empty() {
            night.run_cost_s = Some(costs.iter().sum::<f64>() / costs.len() as f64);
        }
        save(ctx, night);
    }
}

/// Bytes in a file (0 when it does not exist).
fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Copies what the campaign appended to its stats file since `offset` into the night.
pub fn copy_stats(from: &Path, offset: u64, to: &Path) -> Result<()> {
    let mut f = match std::fs::File::open(from) {
        Ok(f) => f,
        Err(_) => return Ok(()),
    };
    f.seek(SeekFrom::Start(offset.min(file_len(from))))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    Ok(hotfuzz_vm::cache::atomic_write(to, &data)?)
}

/// The campaign's configuration for tonight.
pub fn campaign(ctx: &Ctx, time: Duration) -> FuzzConfig {
    let mut c = ctx.fuzz.clone();
    c.use_guest(&ctx.guest);
    c.bugzoo = ctx.guest.bugzoo.clone();
    c.duration = Some(format!("{}s", time.as_secs().max(1)));
    c.workdir = ctx.cfg.dir.join("fuzz");
    c.reports = ctx.store.root().to_path_buf();
    if let Some(v) = ctx.cfg.fuzz.vms {
        c.vms = v;
    }
    c
}

/// Fuzzes for `time`.
pub fn fuzz(ctx: &mut Ctx, night: &mut Night, time: Duration) -> Result<FuzzRecord> {
    let c = campaign(ctx, time);
    let w = crate::fuzz::Workdir {
        root: c.workdir.clone(),
    };
    if night.stats_offset.is_none() {
        night.stats_offset = Some(file_len(&w.stats()));
    }
    say(format!(
        "fuzzing for {} with {} guest(s), profiles {}",
        super::html::duration(time.as_secs_f64()),
        c.vms,
        c.profiles
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let result = crate::fuzz::run(&c);
    hotfuzz_vm::process::set_graceful(true);
    let copied = copy_stats(
        &w.stats(),
        night.stats_offset.unwrap_or(0),
        &ctx.dir.join("stats.jsonl"),
    );
    let s = result.context("the fuzzing campaign")?;
    copied.context("copying the campaign's stats")?;
    let secs = s.elapsed.as_secs_f64().max(0.001);
    let k = &s.counters;
    Ok(FuzzRecord {
        seconds: s.elapsed.as_secs_f64(),
        execs: s.execs,
        execs_per_sec: s.execs as f64 / secs,
        corpus: s.corpus,
        states: s.states,
        coverage: s.coverage,
        boots: k.boots,
        boot_failures: k.boot_failures,
        infra_errors: k.infra_errors,
        suppressed: k.suppressed,
        oom: k.oom,
        slow: k.slow,
        time: k.time.describe(s.elapsed.as_millis() as u64 * c.vms as u64),
        stopped: s.stopped.clone(),
        reports: s.reports.iter().map(|r| r.0.clone()).collect(),
    })
}

/// Reproduces the night's new and regressed bugs that have no reproducer, most urgent first,
/// each sized to the time left, saving the night after each.
pub fn repro(ctx: &mut Ctx, night: &mut Night) -> Result<String> {
    let bugs = super::classify::classify(&ctx.store, &night.started, &night.store_at_start)?;
    let todo: Vec<_> = bugs
        .into_iter()
        .filter(|b| b.class.is_news())
        .filter(|b| !Path::new(&b.dir).join("repro.prog").exists())
        .filter(|b| !night.repro.iter().any(|r| r.dir == b.dir))
        .take(ctx.cfg.repro.max_bugs)
        .collect();
    if todo.is_empty() {
        return Ok("no new bug without a reproducer".into());
    }
    // A guest run's cost: the suite's (longer for a history of fuzzed programs) until a
    // reproduction tonight measured its own.
    let mut cost =
        Duration::from_secs_f64((night.run_cost_s.unwrap_or(8.0) * REPRO_RUN_FACTOR).max(1.0));
    let measured: Vec<&ReproRecord> = night.repro.iter().filter(|r| r.runs > 0).collect();
    if !measured.is_empty() {
        let (secs, runs) = measured
            .iter()
            .fold((0.0, 0u32), |(s, n), r| (s + r.seconds, n + r.runs));
        cost = Duration::from_secs_f64(secs / f64::from(runs.max(1)));
    }
    let rc = &ctx.cfg.repro;
    let mut done = 0;
    for (i, b) in todo.iter().enumerate() {
        if hotfuzz_vm::process::stop_requested() {
            break;
        }
        // The time left is shared by the bugs still to do.
        let left = ctx.budget.left() / (todo.len() - i) as u32;
        let Some(max_runs) = repro_runs(left, cost, rc.runs, rc.max_runs) else {
            let why = format!(
                "{} of {} bugs left without a reproducer: {} left, one guest run costs {}",
                todo.len() - i,
                todo.len(),
                super::html::duration(ctx.budget.left().as_secs_f64()),
                super::html::duration(cost.as_secs_f64())
            );
            return Ok(format!("reproduced {done}; {why}"));
        };
        say(format!(
            "reproducing {} ({} minimization runs at most)",
            b.title, max_runs
        ));
        let t0 = Instant::now();
        let opts = crate::repro::ReproOptions {
            input: PathBuf::from(&b.dir),
            run_log: None,
            guest: ctx.guest.clone(),
            config: ctx.fuzz.clone(),
            profile: None,
            reports: ctx.store.root().to_path_buf(),
            work: ctx.dir.join("repro"),
            vms: rc.vms,
            timeout: None,
            minimize: crate::repro::minimize::Options {
                runs: rc.runs,
                threshold: rc.threshold,
                max_runs,
                ..Default::default()
            },
            no_minimize: max_runs == 0,
        };
        let rec = match crate::repro::reproduce(&opts, |p| {
            tracing::info!(
                "repro: [{} runs] {} {} ops {}",
                p.runs,
                p.step,
                p.ops,
                p.msg
            )
        }) {
            Ok(s) => ReproRecord {
                dir: b.dir.clone(),
                title: b.title.clone(),
                reproduced: s.reproduced(),
                reliability: s
                    .result
                    .reliability
                    .unwrap_or(s.result.original)
                    .to_string(),
                ops: (
                    s.result.original_ops,
                    crate::repro::minimize::ops(&s.result.candidate),
                ),
                runs: s.result.total_runs,
                seconds: t0.elapsed().as_secs_f64(),
                script: s.script.as_ref().ok().map(|p| p.display().to_string()),
                note: s
                    .script
                    .as_ref()
                    .err()
                    .cloned()
                    .or(s.result.gave_up.clone()),
            },
            Err(e) => ReproRecord {
                dir: b.dir.clone(),
                title: b.title.clone(),
                reproduced: false,
                reliability: "0/0".into(),
                ops: (0, 0),
                runs: 0,
                seconds: t0.elapsed().as_secs_f64(),
                script: None,
                note: Some(format!("{e:#}")),
            },
        };
        say(format!(
            "  {}: {}",
            if rec.reproduced {
                "reproduced"
            } else {
                "not reproduced"
            },
            rec.reliability
        ));
        done += usize::from(rec.reproduced);
        if rec.runs > 0 {
            cost = Duration::from_secs_f64(rec.seconds / f64::from(rec.runs));
        }
        night.repro.push(rec);
        save(ctx, night);
    }
    Ok(format!("reproduced {done} of {}", todo.len()))
}
