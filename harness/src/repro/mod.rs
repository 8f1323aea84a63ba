//! Reproducers: replaying a report's programs on fresh guests, measuring how reliably they
//! reproduce it, minimizing them, and writing a standalone `repro.sh`.
//!
//! ```text
//! source (report dir | console+run log | program) ──> history of programs
//!     ──> Minimizer (pure; minimize.rs) ──runs──> GuestPool (one thread + fresh guest per run)
//!     ──> report directory: repro.prog, repro.sh, repro.log, repro-report.txt, meta.yaml
//! ```

pub mod minimize;
pub mod output;
pub mod plant;
pub mod pool;
pub mod script;
pub mod source;
pub mod splat;

use crate::fuzz::config::FuzzConfig;
use crate::program::desc::Descriptions;
use crate::run::guest::GuestConfig;
use anyhow::{anyhow, Context, Result};
use minimize::{Minimized, Minimizer, Options, Progress};
use pool::{GuestPool, PoolSetup, TargetBug};
use source::Source;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `hotfuzz repro` was asked to do.
#[derive(Debug, Clone)]
pub struct ReproOptions {
    /// Report directory, program file or console log.
    pub input: PathBuf,
    /// The run log belonging to a console log.
    pub run_log: Option<PathBuf>,
    /// Guest flags (kernel, accel, ...); the profile and the bug zoo are added to them.
    pub guest: GuestConfig,
    /// Profiles and suppressions (the fuzzing configuration).
    pub config: FuzzConfig,
    /// Profile to use instead of the report's.
    pub profile: Option<String>,
    /// Report store for sources that are not a report directory.
    pub reports: PathBuf,
    /// Where run logs go.
    pub work: PathBuf,
    /// Guests at once.
    pub vms: usize,
    /// Limit for one program run.
    pub timeout: Option<Duration>,
    /// Minimizer tuning.
    pub minimize: Options,
    /// Only measure reliability; do not minimize.
    pub no_minimize: bool,
}

/// What came out.
#[derive(Debug, Clone)]
pub struct ReproSummary {
    /// The report directory the outputs went to (none when nothing reproduced and the source
    /// was not a report directory).
    pub dir: Option<PathBuf>,
    /// The bug's title.
    pub title: Option<String>,
    /// The minimization result.
    pub result: Minimized,
    /// Wall time.
    pub wall: Duration,
    /// Whether `repro.sh` could be written, or why not.
    pub script: Result<PathBuf, String>,
}

impl ReproSummary {
    /// Reproduced reliably enough to count.
    pub fn reproduced(&self) -> bool {
        self.result.reliability.is_some_and(|r| r.crashes > 0)
            && self
                .result
                .gave_up
                .as_deref()
                .is_none_or(|g| !g.contains("reproduce"))
    }
}

/// The guest flags for a source: the chosen or recorded profile applied to the base flags,
/// plus the recorded bug zoo unless the flags name one.
pub fn guest_for(o: &ReproOptions, src: &Source) -> Result<(GuestConfig, String)> {
    let name = o
        .profile
        .clone()
        .or_else(|| src.profile.clone())
        .unwrap_or_else(|| "default".into());
    let profile = o
        .config
        .profiles
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            anyhow!(
                "profile {name:?} is not in the configuration (known: {})",
                o.config
                    .profiles
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let mut args = profile.apply(&o.guest)?;
    if args.bugzoo.is_none() {
        args.bugzoo = src.bugzoo.clone();
    }
    Ok((args, name))
}

/// The pool set-up for guests prepared as `prepared`: settle time and suppressions from the
/// configuration, run logs under the working directory.
pub fn pool_setup(
    o: &ReproOptions,
    prepared: Arc<crate::run::guest::Prepared>,
    d: Arc<Descriptions>,
) -> Result<PoolSetup> {
    let suppressions = o
        .config
        .suppressions
        .iter()
        .map(|s| regex::Regex::new(s).with_context(|| format!("suppression {s:?}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(PoolSetup {
        prepared,
        d,
        settle: o.config.settle().unwrap_or(Duration::from_secs(10)),
        timeout: o.timeout,
        suppressions,
        log_dir: o.work.join("repro-logs"),
    })
}

/// Reproduces and minimizes; `progress` sees every step.
pub fn reproduce(o: &ReproOptions, progress: impl FnMut(&Progress)) -> Result<ReproSummary> {
    let t0 = Instant::now();
    let d = Arc::new(Descriptions::embedded());
    let src = Source::load(&o.input, o.run_log.as_deref(), &d)?;
    let (args, profile) = guest_for(o, &src)?;
    let prepared = Arc::new(args.prepare().context("preparing the guest")?);
    let setup = pool_setup(o, prepared.clone(), d.clone())?;
    let mut pool = GuestPool::new(
        setup,
        o.vms,
        TargetBug {
            titles: src.titles.clone(),
        },
    )?;
    let mut opts = o.minimize.clone();
    if o.no_minimize {
        opts.max_runs = 0;
        opts.simplify_args = false;
    }
    let starts = src
        .devices
        .iter()
        .map(|devs| source::restore_devices(devs, &d))
        .collect();
    let result = Minimizer::new(&d, &mut pool, opts)
        .on_progress(progress)
        .with_starts(starts)
        .run(&src.history);
    let target = pool.target();
    let crash = pool.last_crash();
    drop(pool);
    let ctx = output::Context {
        d: &d,
        src: &src,
        profile: &profile,
        args: &args,
        prepared: &prepared,
        reports: &o.reports,
    };
    let (dir, script) = output::write(&ctx, &result, &target, &crash)?;
    Ok(ReproSummary {
        dir,
        title: target.titles.first().cloned(),
        result,
        wall: t0.elapsed(),
        script,
    })
}
