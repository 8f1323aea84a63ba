//! `hotfuzz bisect`: which commit (or Debian kernel package) introduced or fixed a bug, and
//! `hotfuzz test`: one kernel's verdict with `git bisect run`'s exit codes.

use crate::cli::build::TreeArgs;
use crate::cli::guest_flags::GuestArgs;
use anyhow::{bail, Context, Result};
use hotfuzz::bisect::decide::{self, Verdict};
use hotfuzz::bisect::driver::{
    self, GuestOracle, KernelOf, PackageBuilder, Reproducer, TreeBuilder,
};
use hotfuzz::bisect::engine::{self, Bisection, Built, Direction, Settings, Step};
use hotfuzz::bisect::space::{GitSpace, ListSpace, Space};
use hotfuzz::build::git::Git;
use hotfuzz::repro::minimize::Options;
use hotfuzz::repro::ReproOptions;
use std::path::PathBuf;
use std::time::Duration;

/// How the reproducer runs: shared by `hotfuzz bisect` and `hotfuzz test`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReproducerArgs {
    /// A report directory (its repro.prog when minimized, else its programs) or a program file.
    pub input: PathBuf,
    /// Guests running the reproducer at once.
    #[arg(long, default_value_t = 1)]
    pub vms: usize,
    /// Limit for one program run, in seconds (default: the sum of its operations' deadlines).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Profile (from the configuration) instead of the one the report recorded.
    #[arg(long)]
    pub profile: Option<String>,
    /// Fuzzing configuration with the profiles and suppressions (default: embedded).
    #[arg(long)]
    pub fuzz_config: Option<PathBuf>,
    /// Working directory (run logs, the bisection journal and work tree).
    #[arg(long, default_value = "hotfuzz-work")]
    pub workdir: PathBuf,
    /// Guest flags (the kernel comes from the bisection).
    #[command(flatten)]
    pub guest: GuestArgs,
}

impl ReproducerArgs {
    fn load(&self) -> Result<Reproducer> {
        let (config, guest) =
            crate::cli::repro::config_and_guest(self.fuzz_config.as_deref(), &self.guest)?;
        let opts = ReproOptions {
            input: self.input.clone(),
            run_log: None,
            guest,
            config,
            profile: self.profile.clone(),
            reports: self.workdir.join("reports"),
            work: self.workdir.clone(),
            vms: self.vms.max(1),
            timeout: self.timeout.map(Duration::from_secs),
            minimize: Options::default(),
            no_minimize: true,
        };
        Reproducer::load(&opts)
    }
}

/// Arguments of `hotfuzz bisect`.
#[derive(Debug, clap::Args)]
pub struct BisectArgs {
    #[command(flatten)]
    pub repro: ReproducerArgs,
    #[command(flatten)]
    pub tree: TreeArgs,
    /// A revision without the bug (a commit, or with --packages a package).
    #[arg(long)]
    pub good: String,
    /// A revision with the bug.
    #[arg(long)]
    pub bad: String,
    /// Look for the commit that fixed the bug (--bad is then the older revision).
    #[arg(long)]
    pub fix: bool,
    /// Bisect over these Debian kernel packages (comma separated, oldest first) instead of
    /// commits of a tree: nothing is built.
    #[arg(long, value_delimiter = ',', conflicts_with = "tree")]
    pub packages: Vec<String>,
    /// Runs on the revision with the bug that measure the reproducer's reliability.
    #[arg(long, default_value_t = 10)]
    pub runs: u32,
    /// Accepted probability that a revision with the bug tests good (sets the runs per
    /// revision from the reliability).
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Forget a journal of an earlier bisection in the working directory and start afresh.
    #[arg(long)]
    pub restart: bool,
}

/// Arguments of `hotfuzz test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub repro: ReproducerArgs,
    /// Clean runs needed for a good verdict (a crash with the bug is bad at once).
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
}

fn print_step(s: &Step) {
    eprintln!(
        "hotfuzz bisect: {:<8} {} {:<5} ({} crashed, {} clean, {} masked, {} infra; r={:.2}) {}",
        format!("{:?}", s.phase).to_lowercase(),
        &s.rev[..s.rev.len().min(12)],
        s.verdict.word(),
        s.tally.crashed,
        s.tally.clean,
        s.tally.masked,
        s.tally.infra,
        s.reliability,
        s.subject
    );
    if let Verdict::Skip(why) = &s.verdict {
        eprintln!("hotfuzz bisect:          skipped: {why}");
    }
}

/// Runs `hotfuzz bisect`: the result table on stdout; exit 0 with a checked culprit, 1 when
/// the result is inconclusive or failed its check.
pub fn run_bisect(a: BisectArgs) -> Result<i32> {
    if !(0.0 < a.alpha && a.alpha < 1.0) {
        bail!("--alpha must be between 0 and 1");
    }
    hotfuzz_vm::process::install_signal_handlers();
    let rep = a.repro.load()?;
    let direction = if a.fix {
        Direction::Fix
    } else {
        Direction::Cause
    };
    let (old, new) = match direction {
        Direction::Cause => (a.good.clone(), a.bad.clone()),
        Direction::Fix => (a.bad.clone(), a.good.clone()),
    };
    let work = &a.repro.workdir;
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let journal = work.join("bisect.json");
    if a.restart && journal.exists() {
        std::fs::remove_file(&journal)?;
    }
    let arch = a.repro.guest.arch();
    let (mut space, mut builder, kernel_of): (Box<dyn Space>, Box<dyn engine::Builder>, _) =
        if a.packages.is_empty() {
            let tree = a.tree.tree_dir()?;
            let repo = Git::new(&tree);
            anyhow::ensure!(
                Git::is_repo(&tree),
                "{} is not a git repository",
                tree.display()
            );
            let wt = repo.empty_worktree_at(&std::path::absolute(work.join("bisect-wt"))?)?;
            let old_id = repo.resolve(&old)?;
            let new_id = repo.resolve(&new)?;
            if !repo.is_ancestor(&old_id, &new_id)? {
                bail!("{old} is not an ancestor of {new}: nothing to bisect between them");
            }
            let req = a.tree.request(arch, None)?;
            (
                Box::new(GitSpace::new(wt)),
                Box::new(TreeBuilder {
                    request: req,
                    log: Box::new(|m| eprintln!("hotfuzz bisect: build {m}")),
                }),
                KernelOf::Dir,
            )
        } else {
            (
                Box::new(ListSpace::new(a.packages.clone())),
                Box::new(PackageBuilder),
                KernelOf::Package,
            )
        };
    let titles = rep.titles.clone();
    let mut oracle = GuestOracle::new(rep, kernel_of);
    let settings = Settings {
        direction,
        old,
        new,
        alpha: a.alpha,
        initial_runs: a.runs.max(1),
        titles,
    };
    let out = Bisection::new(
        space.as_mut(),
        builder.as_mut(),
        &mut oracle,
        settings,
        Some(journal.clone()),
    )?
    .on_step(print_step)
    .run()?;
    let table = engine::render(&out, direction);
    out!("{table}")?;
    let result = work.join("bisect-result.txt");
    std::fs::write(&result, &table)?;
    eprintln!(
        "hotfuzz bisect: journal {}, result {}",
        journal.display(),
        result.display()
    );
    Ok(if out.culprit.is_some() && out.verified == Some(true) {
        0
    } else {
        1
    })
}

/// Runs `hotfuzz test`: 0 good, 1 bad, 125 skip (`git bisect run`'s codes).
pub fn run_test(a: TestArgs) -> Result<i32> {
    if a.repro.guest.kernel.kernel_source().is_none() {
        bail!("hotfuzz test needs --kernel or --kernel-package: the kernel to test");
    }
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    hotfuzz_vm::process::install_signal_handlers();
    let rep = a.repro.load()?;
    let k = match a.repro.guest.kernel.kernel_source() {
        Some(hotfuzz_vm::KernelSource::DebianPackage(p)) => (KernelOf::Package, p),
        Some(hotfuzz_vm::KernelSource::Path { path, .. }) => {
            (KernelOf::Dir, path.to_string_lossy().into_owned())
        }
        _ => unreachable!("checked above"),
    };
    let mut oracle = GuestOracle::new(rep, k.0);
    let built = Built {
        id: k.1,
        build_secs: 0.0,
    };
    let (t, v, _) = driver::test_kernel(&mut oracle, &built, a.runs);
    let titles = oracle.titles();
    outln!(
        "verdict: {}{}",
        v.word(),
        match &v {
            Verdict::Skip(why) => format!(" ({why})"),
            _ => String::new(),
        }
    )?;
    outln!(
        "runs:    {} ({} crashed, {} clean, {} masked, {} infra)",
        t.total(),
        t.crashed,
        t.clean,
        t.masked,
        t.infra
    )?;
    outln!(
        "bug:     {}",
        titles.first().map(String::as_str).unwrap_or("(none seen)")
    )?;
    if v == Verdict::Good {
        outln!(
            "a kernel with a bug that crashes a run with probability r looks this clean with probability (1-r)^{}: {:.3} at r=0.5",
            t.clean,
            decide::false_good(0.5, t.clean)
        )?;
    }
    Ok(match v {
        Verdict::Good => 0,
        Verdict::Bad => 1,
        Verdict::Skip(_) => 125,
    })
}
