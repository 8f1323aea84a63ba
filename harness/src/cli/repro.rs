//! `hotfuzz repro`: reproduce, measure, minimize, write the reproducer.

use anyhow::{bail, Result};
use hotfuzz::fuzz::config::FuzzConfig;
use hotfuzz::repro::minimize::{Options, Progress};
use hotfuzz::repro::{reproduce, ReproOptions, ReproSummary};
use std::time::Duration;

use crate::cli::guest_flags::GuestArgs;
/// Arguments of `hotfuzz repro`.
#[derive(Debug, clap::Args)]
pub struct ReproArgs {
    /// A report directory, a program file, or a console log (with --run-log, or a run log).
    #[arg(required_unless_present = "splat")]
    pub input: Option<std::path::PathBuf>,
    /// The run log that goes with a console log.
    #[arg(long)]
    pub run_log: Option<std::path::PathBuf>,
    /// A splat pasted from a mail or bug tracker: fuzz towards its title (biased to the
    /// operations its stack names) until it appears, then minimize that.
    #[arg(long, conflicts_with = "input", value_name = "FILE")]
    pub splat: Option<std::path::PathBuf>,
    /// How long --splat fuzzes before giving up (30m, 2h).
    #[arg(long, default_value = "30m")]
    pub splat_duration: String,
    /// Runs when measuring reliability (before and after minimizing).
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// Guests running candidates at once.
    #[arg(long, default_value_t = 1)]
    pub vms: usize,
    /// Limit for one program run, in seconds (default: the sum of its operations' deadlines).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Most guest runs minimization may spend.
    #[arg(long, default_value_t = 60)]
    pub max_runs: u32,
    /// Reliability (crashes/runs) below which the bug counts as not reproduced.
    #[arg(long, default_value_t = 0.2)]
    pub threshold: f64,
    /// Only replay and measure; do not minimize.
    #[arg(long)]
    pub no_minimize: bool,
    /// Profile (from the configuration) instead of the one the report recorded.
    #[arg(long)]
    pub profile: Option<String>,
    /// Fuzzing configuration with the profiles and suppressions (default: embedded).
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
    /// Report store for inputs that are not a report directory.
    #[arg(long, default_value = "reports")]
    pub reports: std::path::PathBuf,
    /// Working directory (run logs).
    #[arg(long, default_value = "hotfuzz-work")]
    pub workdir: std::path::PathBuf,
    /// Guest flags.
    #[command(flatten)]
    pub guest: GuestArgs,
}

/// The fuzzing configuration (a file or the embedded one) and the guest flags, the kernel
/// taken from the configuration when no kernel flag names one.
pub fn config_and_guest(
    config: Option<&std::path::Path>,
    guest: &GuestArgs,
) -> Result<(FuzzConfig, hotfuzz::run::guest::GuestConfig)> {
    let config = match config {
        Some(p) => FuzzConfig::load(p)?,
        None => FuzzConfig::default(),
    };
    let mut g = guest.config()?;
    if guest.kernel.kernel_source().is_none() {
        // A configuration that builds its kernel from a tree: built (or cached) now.
        let mut c = config.clone();
        c.kernel = config.kernel.built(config.arch)?;
        g.kernel = c.guest().kernel;
    }
    Ok((config, g))
}

/// Runs `hotfuzz repro`; exit status 0 when the bug reproduced, 1 when it did not.
pub fn run(a: ReproArgs) -> Result<i32> {
    if !(0.0..=1.0).contains(&a.threshold) {
        bail!("--threshold must be between 0 and 1");
    }
    if a.runs == 0 || a.vms == 0 {
        bail!("--runs and --vms must be at least 1");
    }
    let (config, guest) = config_and_guest(a.config.as_deref(), &a.guest)?;
    let opts = ReproOptions {
        input: a.input.clone().unwrap_or_default(),
        run_log: a.run_log.clone(),
        guest,
        config,
        profile: a.profile.clone(),
        reports: a.reports.clone(),
        work: a.workdir.clone(),
        vms: a.vms,
        timeout: a.timeout.map(Duration::from_secs),
        minimize: Options {
            runs: a.runs,
            threshold: a.threshold,
            max_runs: a.max_runs,
            ..Options::default()
        },
        no_minimize: a.no_minimize,
    };
    let progress = |p: &Progress| {
        eprintln!(
            "hotfuzz repro: [{:>3} runs] {:<9} {:>3} ops  {}",
            p.runs, p.step, p.ops, p.msg
        );
    };
    let s = match &a.splat {
        Some(splat) => {
            let dur = humantime::parse_duration(&a.splat_duration)
                .map_err(|e| anyhow::anyhow!("--splat-duration {:?}: {e}", a.splat_duration))?;
            hotfuzz::repro::splat::reproduce_splat(&opts, splat, dur, progress)?
        }
        None => reproduce(&opts, progress)?,
    };
    print_summary(&s)?;
    Ok(if s.reproduced() { 0 } else { 1 })
}

fn print_summary(s: &ReproSummary) -> Result<()> {
    let m = &s.result;
    outln!("title:       {}", s.title.as_deref().unwrap_or("(none)"))?;
    outln!(
        "reliability: {} before minimizing, {} after",
        m.original,
        m.reliability
            .map(|r| r.to_string())
            .unwrap_or_else(|| "-".into())
    )?;
    outln!(
        "size:        {} ops -> {} ops",
        m.original_ops,
        hotfuzz::repro::minimize::ops(&m.candidate)
    )?;
    outln!(
        "guest runs:  {} minimizing, {} in all ({} infrastructure failures), {:.0?}",
        m.minimize_runs,
        m.total_runs,
        m.infra,
        s.wall
    )?;
    if let Some(why) = &m.gave_up {
        outln!("stopped:     {why}")?;
    }
    match &s.dir {
        Some(d) => outln!("report:      {}", d.display())?,
        None => outln!("report:      none")?,
    }
    match &s.script {
        Ok(p) => outln!("reproducer:  {}", p.display())?,
        Err(why) => outln!("reproducer:  none: {why}")?,
    }
    Ok(())
}
