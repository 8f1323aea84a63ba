//! `hotfuzz nightly`: a whole night (prepare, regression suite, fuzz, reproduce, results)
//! within a budget, with an exit code for CI.

use anyhow::Result;
use hotfuzz::nightly::config::NightConfig;
use hotfuzz::nightly::summary::{Class, Stage};
use hotfuzz::nightly::{NightOptions, Outcome};
use hotfuzz_vm::AccelChoice;
use std::path::PathBuf;

/// Arguments of `hotfuzz nightly` (they override the configuration file).
#[derive(Debug, clap::Args)]
pub struct NightlyArgs {
    /// Night configuration (YAML; ci/nightly.yaml documents every key). Default: built in.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Wall-clock budget of the whole night (8h, 30m), instead of the configuration's.
    #[arg(long)]
    pub budget: Option<String>,
    /// Directory of the nights, the report store and the corpus, instead of the
    /// configuration's.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Only these stages (comma separated: regression, fuzz, repro); prepare and results
    /// always run.
    #[arg(long, value_delimiter = ',')]
    pub stages: Option<Vec<String>>,
    /// Continue the newest unfinished night (killed or stopped) with what is left of its
    /// budget.
    #[arg(long)]
    pub resume: bool,
    /// Arm bug-zoo bugs in every guest (testing hotfuzz itself), instead of the
    /// configuration's.
    #[arg(long)]
    pub bugzoo: Option<String>,
    /// Accelerator: auto, kvm or tcg, instead of the configuration's.
    #[arg(long)]
    pub accel: Option<AccelChoice>,
    /// Never run apt-get.
    #[arg(long)]
    pub no_install: bool,
    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// The configuration the flags and file ask for.
pub fn config(a: &NightlyArgs) -> Result<NightConfig> {
    let mut c = match &a.config {
        Some(p) => NightConfig::load(p)?,
        None => NightConfig::default(),
    };
    if let Some(b) = &a.budget {
        c.budget = b.clone();
    }
    if let Some(d) = &a.dir {
        c.dir = d.clone();
    }
    if a.bugzoo.is_some() {
        c.bugzoo = a.bugzoo.clone();
    }
    if let Some(acc) = a.accel {
        c.accel = acc;
    }
    c.validate()?;
    Ok(c)
}

fn print(o: &Outcome) -> Result<()> {
    let n = &o.night;
    outln!("hotfuzz nightly: night {}: {}", n.id, n.verdict_line())?;
    for b in n.bugs.iter().filter(|b| b.class != Class::Invalid) {
        outln!(
            "  {:<9} {:<60} seen {}, repro {}",
            b.class.name(),
            b.title,
            b.tonight,
            b.reproducibility.as_deref().unwrap_or("-")
        )?;
    }
    for e in n
        .regression
        .iter()
        .filter(|e| e.verdict != hotfuzz::nightly::summary::Verdict::Passed)
    {
        outln!("  suite     {:<24} {:?}: {}", e.name, e.verdict, e.message)?;
    }
    for p in &n.problems {
        outln!("  problem   {p}")?;
    }
    let f = |name: &str| o.dir.join(name).display().to_string();
    outln!("  page:    {}", f("index.html"))?;
    outln!("  junit:   {}", f("junit.xml"))?;
    outln!("  summary: {}", f("summary.json"))?;
    outln!("  exit {}", o.exit_code)?;
    Ok(())
}

/// Runs `hotfuzz nightly`.
pub fn run(a: NightlyArgs) -> Result<i32> {
    let c = config(&a)?;
    if a.print_config {
        out!("{}", serde_yaml::to_string(&c)?)?;
        return Ok(0);
    }
    let stages = match &a.stages {
        Some(v) => Some(
            v.iter()
                .map(|s| Stage::parse(s.trim()))
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    let o = hotfuzz::nightly::run(&NightOptions {
        config: c,
        config_file: a.config.clone(),
        stages,
        resume: a.resume,
        no_install: a.no_install,
    })?;
    print(&o)?;
    Ok(o.exit_code)
}
