//! `hotfuzz repro`: reproduce, measure, minimize, write the reproducer.

use crate::cli::ReproArgs;
use anyhow::{bail, Result};
use hotfuzz::fuzz::config::FuzzConfig;
use hotfuzz::repro::minimize::{Options, Progress};
use hotfuzz::repro::{reproduce, ReproOptions, ReproSummary};
use std::time::Duration;

/// Runs `hotfuzz repro`; exit status 0 when the bug reproduced, 1 when it did not.
pub fn repro(a: ReproArgs) -> Result<i32> {
    if !(0.0..=1.0).contains(&a.threshold) {
        bail!("--threshold must be between 0 and 1");
    }
    if a.runs == 0 || a.vms == 0 {
        bail!("--runs and --vms must be at least 1");
    }
    let config = match &a.config {
        Some(p) => FuzzConfig::load(p)?,
        None => FuzzConfig::default(),
    };
    let mut guest = a.guest.clone();
    if a.guest.kernel.is_none() && a.guest.kernel_package.is_none() {
        guest.kernel = config.kernel.path.clone();
        guest.kernel_package = config.kernel.package.clone();
    }
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
    print_summary(&s);
    Ok(if s.reproduced() { 0 } else { 1 })
}

fn print_summary(s: &ReproSummary) {
    let m = &s.result;
    println!("title:       {}", s.title.as_deref().unwrap_or("(none)"));
    println!(
        "reliability: {} before minimizing, {} after",
        m.original,
        m.reliability
            .map(|r| r.to_string())
            .unwrap_or_else(|| "-".into())
    );
    println!(
        "size:        {} ops -> {} ops",
        m.original_ops,
        hotfuzz::repro::minimize::ops(&m.candidate)
    );
    println!(
        "guest runs:  {} minimizing, {} in all ({} infrastructure failures), {:.0?}",
        m.minimize_runs, m.total_runs, m.infra, s.wall
    );
    if let Some(why) = &m.gave_up {
        println!("stopped:     {why}");
    }
    match &s.dir {
        Some(d) => println!("report:      {}", d.display()),
        None => println!("report:      none"),
    }
    match &s.script {
        Ok(p) => println!("reproducer:  {}", p.display()),
        Err(why) => println!("reproducer:  none: {why}"),
    }
}
