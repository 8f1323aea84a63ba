//! `hotfuzz gen`: print generated programs.

use crate::cli::run::descriptions;
use anyhow::{Context, Result};
use hotfuzz::program::gen::Generator;
use hotfuzz::program::state::GuestState;
use hotfuzz_vm::MachineConfig;

/// Arguments of `hotfuzz gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Operations per program (producers an operation needs may add a few).
    #[arg(long, default_value_t = 20)]
    pub len: usize,
    /// Number of programs (seeds seed, seed+1, ...), separated by blank lines.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Guest architecture (for the default state).
    #[arg(long, default_value = "x86_64")]
    pub arch: hotfuzz_vm::Arch,
    /// Guest state from `hotfuzz vm state` (default: the default machine's expected state).
    #[arg(long)]
    pub state: Option<std::path::PathBuf>,
    /// Load descriptions from this directory instead of the embedded ones.
    #[arg(long)]
    pub descriptions: Option<std::path::PathBuf>,
}

/// `hotfuzz gen`.
pub fn run(a: GenArgs) -> Result<i32> {
    let d = descriptions(a.descriptions.as_deref())?;
    let st = match &a.state {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let st: GuestState = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: not a guest state (see `hotfuzz vm state`)",
                    f.display()
                )
            })?;
            st.check()
                .map_err(|e| anyhow::anyhow!("{}: impossible guest state: {e}", f.display()))?;
            st
        }
        None => GuestState::model(&MachineConfig::new(a.arch)),
    };
    for i in 0..a.count.max(1) {
        let mut g = Generator::new(&d, &st, a.seed.wrapping_add(i));
        let p = g.generate(a.len);
        if i > 0 {
            outln!()?;
        }
        out!("{}", p.print(&d))?;
    }
    Ok(0)
}
