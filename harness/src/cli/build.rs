//! `hotfuzz build`: a kernel from a tree for a guest, into the build cache.

use anyhow::Result;
use hotfuzz::build::{self, Base, BuildRequest, TreeSpec};
use hotfuzz_vm::Arch;
use std::path::PathBuf;

/// Which tree and config to build; shared by `hotfuzz build` and `hotfuzz bisect`.
#[derive(Debug, Clone, clap::Args)]
pub struct TreeArgs {
    /// The kernel tree: a git repository or an unpacked source directory (default: the tree
    /// `hotfuzz setup --kernel-source` made).
    #[arg(long)]
    pub tree: Option<PathBuf>,
    /// Base config: defconfig (the architecture's: powernv_defconfig on ppc64le), debian
    /// (the running Debian kernel's config) or a config file.
    #[arg(long, default_value = "defconfig")]
    pub base: Base,
    /// Config fragments merged after the guest fragments (comma separated): shipped ones
    /// (slim, debug, powernv) or files. Default: slim on x86_64, powernv on ppc64le.
    #[arg(long = "config", value_delimiter = ',')]
    pub config: Vec<String>,
    /// Parallel make jobs (default: one per CPU).
    #[arg(long, short, default_value_t = 0)]
    pub jobs: usize,
    /// Do not use ccache.
    #[arg(long)]
    pub no_ccache: bool,
}

impl TreeArgs {
    /// The tree directory.
    pub fn tree_dir(&self) -> Result<PathBuf> {
        match &self.tree {
            Some(t) => Ok(t.clone()),
            None => {
                let d = build::source::tree_dir(build::source::DEFAULT_SERIES)?;
                anyhow::ensure!(
                    d.exists(),
                    "no --tree given and no tree at {} (run `hotfuzz setup --kernel-source`)",
                    d.display()
                );
                Ok(d)
            }
        }
    }

    /// The build request for `commit` of the tree on `arch`.
    pub fn request(&self, arch: Arch, commit: Option<String>) -> Result<BuildRequest> {
        let mut r = BuildRequest::new(
            TreeSpec {
                path: self.tree_dir()?,
                commit,
            },
            arch,
        );
        r.base = self.base.clone();
        if !self.config.is_empty() {
            r.fragments = self.config.clone();
        }
        r.jobs = self.jobs;
        r.ccache = !self.no_ccache;
        Ok(r)
    }
}

/// Arguments of `hotfuzz build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Build this commit (git trees; default: the work tree as it is, changes included).
    #[arg(long)]
    pub commit: Option<String>,
    /// Guest architecture: x86_64 or ppc64le (cross-built with powerpc64le-linux-gnu-gcc).
    #[arg(long, default_value = "x86_64")]
    pub arch: Arch,
    /// Print the entry as JSON.
    #[arg(long)]
    pub json: bool,
    /// List the kernels in the build cache instead of building.
    #[arg(long, conflicts_with_all = ["commit", "json"])]
    pub list: bool,
}

/// Runs `hotfuzz build`: the entry directory on stdout (pass it as `--kernel`).
pub fn run(a: BuildArgs) -> Result<i32> {
    if a.list {
        for e in build::list_entries()? {
            outln!(
                "{}  {:<8} {:<24} {} {}",
                e.dir.display(),
                e.arch,
                e.release,
                &e.state[..e.state.len().min(12)],
                e.fragments.join(",")
            )?;
        }
        return Ok(0);
    }
    let req = a.tree.request(a.arch, a.commit.clone())?;
    let (entry, times) = build::build(&req)?;
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"entry": entry, "times": times}))?
        )?;
    } else {
        eprintln!(
            "hotfuzz build: {} {} ({}): {}; config {:.1?}, make {:.1?}, install {:.1?}",
            entry.arch,
            entry.release,
            &entry.state[..entry.state.len().min(12)],
            if entry.cached {
                "from the cache"
            } else {
                "built"
            },
            times.config,
            times.make,
            times.install
        );
        outln!("{}", entry.dir.display())?;
    }
    Ok(0)
}
