//! `hotfuzz nightly`: a whole night in one command, within a wall-clock budget.
//!
//! ```text
//!  ci/nightly.yaml ─> prepare (kernel under test, guest image, bug zoo)
//!                 ─> regression suite (corpus/regressions/*: expected vs. seen) ─┐
//!                 ─> fuzz (most of what is left; corpus kept in DIR/fuzz)        ├─> report store
//!                 ─> repro (the night's new bugs, sized to the time left)       ─┘   (DIR/reports,
//!                 ─> results: classify against the store, summary.json,              status per bug)
//!                    junit.xml, index.html, mails; DIR/index.html, DIR/latest
//! ```
//!
//! ```text
//! DIR/reports/          the store: one directory per bug, with its status
//! DIR/fuzz/             the campaign's working directory (its corpus carries over)
//! DIR/nights/<ID>/      summary.json junit.xml index.html stats.jsonl bugs/<bug>/ regression/ repro/
//! DIR/index.html        every night, with trend plots
//! DIR/latest            -> nights/<ID>
//! ```
//!
//! Exit codes: 0 nothing new, 1 a person has to look (a new bug, a regression, a regression
//! entry whose outcome changed), 2 the night could not run everything (infrastructure, a
//! signal). The night's record is written after every stage; `--resume` continues a night
//! that was killed, from the stage it was in, with what is left of its budget.

pub mod budget;
pub mod classify;
pub mod config;
pub mod entry;
pub mod html;
pub mod junit;
pub mod kernel;
pub mod mail;
pub mod nights;
pub mod results;
pub mod stages;
pub mod suite;
pub mod summary;
pub mod svg;

use crate::judge::symbolize::Symbolizer;
use anyhow::{Context as _, Result};
use budget::Budget;
use config::NightConfig;
use stages::{say, Ctx};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use summary::{Night, Stage, StageState};

/// What `hotfuzz nightly` was asked to do.
#[derive(Debug, Clone)]
pub struct NightOptions {
    /// The configuration (the budget override already applied).
    pub config: NightConfig,
    /// The file it came from.
    pub config_file: Option<PathBuf>,
    /// Stages to run (prepare and results always run); `None`: all.
    pub stages: Option<Vec<Stage>>,
    /// Continue the newest unfinished night instead of starting one.
    pub resume: bool,
    /// Never run apt-get.
    pub no_install: bool,
}

/// How the night ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The exit code for CI.
    pub exit_code: i32,
    /// The night's directory.
    pub dir: PathBuf,
    /// Its record.
    pub night: Night,
}

/// The symbolizer for the night's mails: the kernel under test and the bug zoo's module.
fn symbolizer(ctx: &Ctx, p: &crate::run::guest::Prepared) -> Symbolizer {
    let zoo: Vec<PathBuf> = ctx
        .guest
        .bugzoo
        .as_ref()
        .and_then(|_| crate::run::bugzoo::build(&p.kernel).ok())
        .into_iter()
        .collect();
    Symbolizer::new(&p.kernel, &zoo)
}

/// Writes the results of what has finished so far (a failure is logged: the night goes on).
fn checkpoint(n: &mut Night, ctx: &Ctx, sym: Option<&Symbolizer>) {
    n.spent_s = ctx.budget.spent().as_secs_f64();
    if let Err(e) = results::write(n, &ctx.store, &ctx.cfg.dir, &ctx.dir, sym) {
        tracing::warn!("writing the night's results: {e:#}");
    }
}

/// Runs (or resumes) a night.
pub fn run(o: &NightOptions) -> Result<Outcome> {
    let cfg = &o.config;
    cfg.validate()?;
    let stages: Vec<Stage> = match &o.stages {
        Some(s) => Stage::ALL
            .into_iter()
            .filter(|x| matches!(x, Stage::Prepare | Stage::Results) || s.contains(x))
            .collect(),
        None => Stage::ALL.to_vec(),
    };
    let d = Arc::new(crate::program::desc::Descriptions::embedded());
    // Bad entries are found before the night spends its budget.
    let entries = if stages.contains(&Stage::Regression) {
        entry::load_suite(&cfg.regression.dirs, &d)?
    } else {
        Vec::new()
    };
    let _lock = nights::DirLock::take(&cfg.dir)?;
    let store = crate::store::Store::open(&cfg.reports())?;
    let mut night = if o.resume {
        let n = nights::unfinished(&cfg.dir).ok_or_else(|| {
            anyhow::anyhow!(
                "no unfinished night in {} to resume",
                cfg.dir.join("nights").display()
            )
        })?;
        say(format!(
            "resuming night {} ({} of its budget spent)",
            n.id,
            html::duration(n.spent_s)
        ));
        n
    } else {
        nights::start(cfg, o.config_file.as_ref(), &stages, &store)?
    };
    let night_dir = cfg.dir.join("nights").join(&night.id);
    std::fs::create_dir_all(&night_dir)
        .with_context(|| format!("creating {}", night_dir.display()))?;
    let mut ctx = Ctx {
        cfg,
        fuzz: cfg.fuzz_config()?,
        guest: stages::night_guest(cfg, o.no_install),
        d,
        store,
        dir: night_dir.clone(),
        budget: Budget::new(
            Duration::from_secs_f64(night.budget_s),
            Duration::from_secs_f64(night.spent_s),
            cfg.results_reserve()?,
        ),
        prep: suite::Prepare::default(),
    };
    say(format!(
        "night {} in {} (budget {})",
        night.id,
        night_dir.display(),
        html::duration(night.budget_s)
    ));
    hotfuzz_vm::process::set_graceful(true);
    // 1. Prepare: always (a resumed night needs the kernel again).
    night.begin(Stage::Prepare, None);
    let t = Instant::now();
    let prepared = stages::prepare(&mut ctx);
    let (state, note) = match &prepared {
        Ok((k, _)) => {
            night.kernel = Some(k.facts.clone());
            (
                StageState::Done,
                format!("{} ({})", k.facts.release, k.facts.origin),
            )
        }
        Err(e) => {
            let why = format!("{e:#}");
            say(format!("prepare failed: {why}"));
            night.problems.push(format!(
                "the kernel under test could not be prepared: {why}"
            ));
            (StageState::Failed, why)
        }
    };
    night.end(Stage::Prepare, state, t.elapsed().as_secs_f64(), note);
    let sym = prepared.as_ref().ok().map(|(_, p)| symbolizer(&ctx, p));
    checkpoint(&mut night, &ctx, sym.as_ref());
    // 2-4. The suite, fuzzing, reproduction.
    for s in [Stage::Regression, Stage::Fuzz, Stage::Repro] {
        if !night.pending(s) {
            continue;
        }
        let Ok((kernel, _)) = &prepared else {
            night.end(s, StageState::Skipped, 0.0, "no kernel to test".into());
            continue;
        };
        if hotfuzz_vm::process::stop_requested() {
            night.end(
                s,
                StageState::Interrupted,
                0.0,
                "stopped by a signal".into(),
            );
            continue;
        }
        let t = Instant::now();
        let (state, note) = stages::run(s, &mut ctx, &mut night, kernel, &entries, &stages);
        let state = if state == StageState::Done && hotfuzz_vm::process::stop_requested() {
            StageState::Interrupted
        } else {
            state
        };
        night.end(s, state, t.elapsed().as_secs_f64(), note);
        checkpoint(&mut night, &ctx, sym.as_ref());
    }
    // 5. Results: classified for the exit code, written, then the news marked reported.
    night.begin(Stage::Results, None);
    let t = Instant::now();
    night.bugs = classify::classify(&ctx.store, &night.started, &night.store_at_start)?;
    night.count();
    night.end(
        Stage::Results,
        StageState::Done,
        t.elapsed().as_secs_f64(),
        String::new(),
    );
    night.finished =
        Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
    night.exit_code = Some(night.decide_exit());
    night.spent_s = ctx.budget.spent().as_secs_f64();
    results::write(&mut night, &ctx.store, &cfg.dir, &night_dir, sym.as_ref())?;
    if let Err(e) = classify::acknowledge(&ctx.store, &night.bugs, &night.id) {
        night
            .problems
            .push(format!("marking the night's bugs reported: {e:#}"));
        night.exit_code = Some(night.decide_exit());
        night.save(&night_dir.join(results::files::SUMMARY))?;
    }
    hotfuzz_vm::process::set_graceful(false);
    Ok(Outcome {
        exit_code: night.exit_code.unwrap_or(2),
        dir: night_dir,
        night,
    })
}
