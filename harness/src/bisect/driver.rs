//! The real builder and oracle of a bisection: [`TreeBuilder`] builds a commit with
//! [`crate::build::build`] (incremental in the kept `O=` directory, cached by tree state and
//! config), [`PackageBuilder`] names a Debian kernel package, and [`GuestOracle`] runs the
//! reproducer on guests through the reproducer's [`GuestPool`] (one boot per kernel, a
//! snapshot restore before every run) and turns each run into a [`Run`].

use super::decide::{self, Run, Tally, Verdict};
use super::engine::{Builder, Built, Oracle};
use crate::build::{self, BuildRequest};
use crate::program::desc::Descriptions;
use crate::program::prog::Program;
use crate::repro::minimize::{Oracle as _, RunOutcome};
use crate::repro::pool::{GuestPool, TargetBug};
use crate::repro::source::Source;
use crate::repro::{guest_for, pool_setup, ReproOptions};
use crate::run::guest::GuestConfig;
use anyhow::{Context, Result};
use hotfuzz_vm::KernelSource;
use std::sync::Arc;

/// Builds commits of a git tree.
pub struct TreeBuilder {
    /// The request; its commit is replaced by the revision under test.
    pub request: BuildRequest,
    /// Called with each build's outcome line (progress).
    pub log: Box<dyn FnMut(&str)>,
}

impl Builder for TreeBuilder {
    fn build(&mut self, rev: &str) -> Result<Built> {
        let mut r = self.request.clone();
        r.tree.commit = Some(rev.to_string());
        let (e, _) = build::build(&r)?;
        (self.log)(&format!(
            "{} {}: {}",
            &rev[..rev.len().min(12)],
            e.release,
            if e.cached {
                "from the build cache".to_string()
            } else {
                format!("built in {:.0}s", e.build_secs)
            }
        ));
        Ok(Built {
            id: e.dir.to_string_lossy().into_owned(),
            build_secs: e.build_secs,
        })
    }
}

/// "Builds" a Debian kernel package: nothing to do, the package is the kernel.
pub struct PackageBuilder;

impl Builder for PackageBuilder {
    fn build(&mut self, rev: &str) -> Result<Built> {
        Ok(Built {
            id: rev.to_string(),
            build_secs: 0.0,
        })
    }
}

/// How a [`Built`] id names a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelOf {
    /// The id is a build cache entry directory (`--kernel DIR`).
    Dir,
    /// The id is a Debian kernel package.
    Package,
}

impl KernelOf {
    fn source(self, k: &Built) -> KernelSource {
        match self {
            KernelOf::Dir => KernelSource::Path {
                path: k.id.clone().into(),
                modules: None,
                system_map: None,
            },
            KernelOf::Package => KernelSource::DebianPackage(k.id.clone()),
        }
    }
}

/// The reproducer: its programs, the bug's titles and the guest it needs (profile and bug zoo
/// applied), without a kernel yet.
pub struct Reproducer {
    /// Descriptions.
    pub d: Arc<Descriptions>,
    /// The programs of one run, in order.
    pub history: Vec<Program>,
    /// The bug's titles (title first); empty for a bare program until a run shows one.
    pub titles: Vec<String>,
    /// The guest flags (the kernel is set per revision).
    pub guest: GuestConfig,
    /// Set-up shared by the pools.
    pub opts: ReproOptions,
}

impl Reproducer {
    /// Loads the reproducer of `opts.input` (a report directory or a program file).
    pub fn load(opts: &ReproOptions) -> Result<Reproducer> {
        let d = Arc::new(Descriptions::embedded());
        let src = Source::load(&opts.input, opts.run_log.as_deref(), &d)?;
        // A report directory's minimized reproducer, when it has one, is what runs.
        let history = match src.report_dir.as_ref().map(|r| r.join("repro.prog")) {
            Some(p) if p.is_file() => {
                let text = std::fs::read_to_string(&p)?;
                crate::repro::source::parse_history(&text, &p, &d)?
            }
            _ => src.history.clone(),
        };
        anyhow::ensure!(
            !history.is_empty(),
            "{} holds no program",
            opts.input.display()
        );
        let (guest, _) = guest_for(opts, &src)?;
        Ok(Reproducer {
            d,
            history,
            titles: src.titles,
            guest,
            opts: opts.clone(),
        })
    }
}

/// Runs the reproducer on guests of the kernel under test.
pub struct GuestOracle {
    /// The reproducer.
    pub rep: Reproducer,
    /// How kernel ids name kernels.
    pub kernel_of: KernelOf,
    pool: Option<(String, GuestPool)>,
}

impl GuestOracle {
    /// An oracle for `rep`.
    pub fn new(rep: Reproducer, kernel_of: KernelOf) -> GuestOracle {
        GuestOracle {
            rep,
            kernel_of,
            pool: None,
        }
    }

    /// The bug's titles as known now (a bare program's come from its first crash).
    pub fn titles(&self) -> Vec<String> {
        match &self.pool {
            Some((_, p)) => p.target().titles,
            None => self.rep.titles.clone(),
        }
    }

    fn pool_for(&mut self, k: &Built) -> Result<&mut GuestPool> {
        if self.pool.as_ref().is_none_or(|(id, _)| id != &k.id) {
            if let Some((_, old)) = self.pool.take() {
                // Keep what the old kernel's runs learned about the bug's titles.
                self.rep.titles = old.target().titles;
            }
            let mut g = self.rep.guest.clone();
            g.kernel = self.kernel_of.source(k);
            let prepared = Arc::new(
                g.prepare()
                    .with_context(|| format!("preparing a guest with {}", k.id))?,
            );
            let setup = pool_setup(&self.rep.opts, prepared, self.rep.d.clone())?;
            let pool = GuestPool::new(
                setup,
                self.rep.opts.vms,
                TargetBug {
                    titles: self.rep.titles.clone(),
                },
            )?;
            self.pool = Some((k.id.clone(), pool));
        }
        Ok(&mut self.pool.as_mut().expect("just set").1)
    }
}

/// A reproducer run as a bisection sees it.
pub fn to_run(o: RunOutcome) -> Run {
    match o {
        RunOutcome::Crashed(_) => Run::Crashed,
        RunOutcome::Clean => Run::Clean,
        RunOutcome::Masked(t) => Run::Masked(t),
        RunOutcome::Infra(why) => Run::Infra(why),
    }
}

impl Oracle for GuestOracle {
    fn run(&mut self, k: &Built, n: u32) -> Vec<Run> {
        let history = self.rep.history.clone();
        match self.pool_for(k) {
            Err(e) => {
                let why = format!("{e:#}");
                (0..n).map(|_| Run::Infra(why.clone())).collect()
            }
            Ok(pool) => {
                let jobs = vec![history; n as usize];
                pool.run(&jobs).into_iter().map(to_run).collect()
            }
        }
    }
}

/// The verdict of `n` runs of the reproducer on one kernel, for `hotfuzz test`: bad at the
/// first crash with the bug, good after `n` clean runs, skip otherwise (masked,
/// infrastructure). Infrastructure failures and masked runs are topped up as in a bisection.
pub fn test_kernel(oracle: &mut GuestOracle, k: &Built, n: u32) -> (Tally, Verdict, Vec<Run>) {
    let mut all = Vec::new();
    let mut todo = n;
    while todo > 0 {
        all.extend(oracle.run(k, todo));
        if hotfuzz_vm::process::stop_requested() {
            break;
        }
        todo = decide::more_runs(&Tally::of(&all), n);
    }
    let t = Tally::of(&all);
    let masked_by = all.iter().find_map(|r| match r {
        Run::Masked(t) => Some(t.as_str()),
        _ => None,
    });
    let v = decide::decide(&t, n, masked_by);
    (t, v, all)
}
