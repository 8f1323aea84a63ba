//! `hotfuzz fuzz`: the main job.

use crate::cli::guest_flags::KernelFlags;
use anyhow::Result;
use hotfuzz::fuzz::config::FuzzConfig;

/// Arguments of `hotfuzz fuzz` (they override the configuration file).
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Campaign configuration (YAML; ci/fuzz.yaml documents every key). Default: embedded.
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
    /// How long to fuzz (30m, 8h, forever).
    #[arg(long)]
    pub duration: Option<String>,
    /// Stop after this many executions.
    #[arg(long)]
    pub max_execs: Option<u64>,
    /// Guests fuzzing at once.
    #[arg(long)]
    pub vms: Option<usize>,
    /// Working directory (corpus, solutions, logs, stats.jsonl).
    #[arg(long)]
    pub workdir: Option<std::path::PathBuf>,
    /// Report store.
    #[arg(long)]
    pub reports: Option<std::path::PathBuf>,
    /// Seed programs or directories (repeatable; `embedded` for the built-in seeds).
    #[arg(long = "seeds", value_name = "PATH")]
    pub seeds: Vec<String>,
    /// Start without seed programs (generated programs only).
    #[arg(long, conflicts_with = "seeds")]
    pub no_seeds: bool,
    /// Do not collect KCOV coverage: the guest-state features alone decide what the corpus
    /// keeps (`coverage: false` in the configuration).
    #[arg(long)]
    pub no_coverage: bool,
    /// Only these profiles (comma separated names from the configuration).
    #[arg(long)]
    pub profiles: Option<String>,
    /// Arm bug-zoo bugs (testing hotfuzz itself), e.g. warn_reonline,stuck_offline.
    #[arg(long)]
    pub bugzoo: Option<String>,
    /// Random seed: fixes the generated programs and the mutation choices; which corpus
    /// entries get scheduled also depends on timing and hash order, so a campaign is not
    /// bit-reproducible.
    #[arg(long)]
    pub seed: Option<u64>,
    /// How a guest gets back to a clean state: snapshot, per-program or reboot
    #[arg(long, value_parser = parse_reset)]
    pub reset: Option<hotfuzz::fuzz::config::ResetMode>,
    /// Programs per guest reset (per boot with --reset reboot)
    #[arg(long)]
    pub restart_every: Option<u64>,
    #[command(flatten)]
    pub kernel: KernelFlags,
    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// The configuration the flags and file ask for.
pub fn config(a: &FuzzArgs) -> Result<FuzzConfig> {
    let mut c = match &a.config {
        Some(p) => FuzzConfig::load(p)?,
        None => FuzzConfig::default(),
    };
    if let Some(d) = &a.duration {
        c.duration = Some(d.clone());
    }
    if a.max_execs.is_some() {
        c.max_execs = a.max_execs;
    }
    if let Some(v) = a.vms {
        c.vms = v;
    }
    if let Some(w) = &a.workdir {
        c.workdir = w.clone();
    }
    if let Some(r) = &a.reports {
        c.reports = r.clone();
    }
    if a.no_seeds {
        c.seeds.clear();
    } else if !a.seeds.is_empty() {
        c.seeds = a.seeds.clone();
    }
    if a.no_coverage {
        c.coverage = false;
    }
    if let Some(p) = &a.profiles {
        c.select_profiles(p)?;
    }
    if a.bugzoo.is_some() {
        c.bugzoo = a.bugzoo.clone();
    }
    if a.seed.is_some() {
        c.seed = a.seed;
    }
    if let Some(r) = a.reset {
        c.reset = r;
    }
    if let Some(r) = a.restart_every {
        c.restart_every = r;
    }
    if let Some(arch) = a.kernel.arch {
        c.arch = arch;
        if arch != hotfuzz_vm::Arch::X86_64 && a.config.is_none() {
            // The default profiles are about virtio-mem, which powernv has not.
            c.profiles = vec![hotfuzz::fuzz::config::Profile {
                name: "default".into(),
                ..Default::default()
            }];
        }
    }
    if let Some(k) = a.kernel.kernel_source() {
        let mut g = c.guest();
        g.kernel = k;
        c.use_guest(&g);
    }
    if let Some(acc) = a.kernel.accel {
        c.accel = acc;
    }
    if a.kernel.no_install {
        c.no_install = true;
    }
    c.validate()?;
    Ok(c)
}

/// Runs the campaign and prints its summary.
pub fn run(a: FuzzArgs) -> Result<i32> {
    let c = config(&a)?;
    if a.print_config {
        out!("{}", serde_yaml::to_string(&c)?)?;
        return Ok(0);
    }
    eprintln!(
        "hotfuzz: fuzzing with {} guest(s), profiles {}, for {}; corpus and stats in {}, reports in {}",
        c.vms,
        c.profiles
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        c.duration.as_deref().unwrap_or("ever (Ctrl-C stops)"),
        c.workdir.display(),
        c.reports.display()
    );
    let s = hotfuzz::fuzz::run(&c)?;
    let vms = c.vms as u64;
    let secs = s.elapsed.as_secs_f64().max(0.001);
    outln!("hotfuzz fuzz: {}", s.stopped)?;
    outln!(
        "  ran {:.0} s: {} executions ({:.2}/s), corpus {}, {} state features, {} PCs",
        secs,
        s.execs,
        s.execs as f64 / secs,
        s.corpus,
        s.states,
        s.coverage
    )?;
    let k = &s.counters;
    outln!(
        "  guests: {} boots ({} failed), {} snapshot restores ({} failed), {} runs lost to infrastructure, {} reports suppressed, {} runs out of memory, {} slow (not hung)",
        k.boots, k.boot_failures, k.resets, k.reset_failures, k.infra_errors, k.suppressed, k.oom, k.slow
    )?;
    let wall_ms = (s.elapsed.as_millis() as u64) * vms;
    outln!("  time: {}", k.time.describe(wall_ms))?;
    if let Some(ms) = k.first_program_ms {
        outln!(
            "  first program {:.1} s after the start",
            ms as f64 / 1000.0
        )?;
    }
    if k.resets > 0 {
        outln!(
            "  reset: {:.2} s on average",
            k.time.reset_ms as f64 / 1000.0 / k.resets as f64
        )?;
    }
    if k.filing_failures > 0 {
        outln!(
            "  report store: {} filings failed, {} reports still unfiled at the end",
            k.filing_failures,
            k.unfiled
        )?;
    }
    if s.reports.is_empty() {
        outln!("  no reports")?;
    } else {
        outln!("  reports ({}):", s.reports.len())?;
        for (title, count, dir) in &s.reports {
            outln!("    {count:>4}  {title}  ({})", dir.display())?;
        }
    }
    outln!(
        "  stats: {}",
        hotfuzz::fuzz::Workdir {
            root: s.workdir.clone()
        }
        .stats()
        .display()
    )?;
    Ok(0)
}

fn parse_reset(s: &str) -> Result<hotfuzz::fuzz::config::ResetMode, String> {
    serde_yaml::from_str(s).map_err(|_| format!("{s:?}: expected snapshot, per-program or reboot"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        a: FuzzArgs,
    }

    #[test]
    fn no_coverage_turns_kcov_off_for_every_guest() {
        let on = config(&Cmd::try_parse_from(["fuzz"]).unwrap().a).unwrap();
        assert!(on.coverage);
        assert!(hotfuzz::fuzz::guest::GuestSetup::from_config(&on, 0).coverage);
        let off = config(&Cmd::try_parse_from(["fuzz", "--no-coverage"]).unwrap().a).unwrap();
        assert!(!off.coverage);
        assert!(!hotfuzz::fuzz::guest::GuestSetup::from_config(&off, 1).coverage);
    }
}
