//! A night's configuration: YAML (`ci/nightly.yaml` documents every key), every key optional,
//! unknown keys rejected with `file:line:col`, and `--budget` on top. Relative paths are taken
//! from the working directory, like `hotfuzz fuzz`'s.

use crate::fuzz::config::{read_yaml, FuzzConfig};
use anyhow::{bail, Context, Result};
use hotfuzz_vm::{AccelChoice, Arch};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The kernel under test: the same keys as a campaign's `kernel` (a Debian package, a path, or
/// a tree to build).
pub use crate::fuzz::config::KernelConfig as KernelUnderTest;

/// The regression suite stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegressionConfig {
    /// Directories of entries (each entry a directory with `entry.yaml` and `repro.prog`).
    pub dirs: Vec<PathBuf>,
    /// Runs per entry (an entry's own `runs` overrides it).
    pub runs: u32,
    /// Guests running an entry's runs at once.
    pub vms: usize,
    /// The most of the budget the suite may take (0 to 1); entries not started by then are
    /// skipped.
    pub max_share: f64,
    /// The guest profile entries run with unless they name one.
    pub profile: String,
}

impl Default for RegressionConfig {
    fn default() -> Self {
        RegressionConfig {
            dirs: vec![PathBuf::from("corpus/regressions")],
            runs: 3,
            vms: 1,
            max_share: 0.15,
            profile: "default".into(),
        }
    }
}

/// The fuzzing stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FuzzStageConfig {
    /// The campaign configuration (`ci/fuzz.yaml`; default: embedded). The night sets its
    /// kernel, bug zoo, accelerator, duration, working directory and report store.
    pub config: Option<PathBuf>,
    /// Fuzz only when at least this much time is left for it.
    pub min_time: String,
    /// Guests fuzzing at once (default: the campaign configuration's).
    pub vms: Option<usize>,
}

impl Default for FuzzStageConfig {
    fn default() -> Self {
        FuzzStageConfig {
            config: None,
            min_time: "1m".into(),
            vms: None,
        }
    }
}

/// The reproduction stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReproStageConfig {
    /// The share of the budget kept from fuzzing for reproducing the night's new bugs (0 to 1).
    pub share: f64,
    /// Runs when measuring reliability.
    pub runs: u32,
    /// Most minimization runs per bug.
    pub max_runs: u32,
    /// Guests at once.
    pub vms: usize,
    /// Most bugs reproduced per night (regressions first, then new bugs by count).
    pub max_bugs: usize,
    /// Reliability below which a bug counts as not reproduced.
    pub threshold: f64,
}

impl Default for ReproStageConfig {
    fn default() -> Self {
        ReproStageConfig {
            share: 0.2,
            runs: 3,
            max_runs: 40,
            vms: 1,
            max_bugs: 5,
            threshold: 0.2,
        }
    }
}

/// The results stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResultsConfig {
    /// Time kept at the end of the budget for writing the results.
    pub reserve: String,
}

impl Default for ResultsConfig {
    fn default() -> Self {
        ResultsConfig {
            reserve: "30s".into(),
        }
    }
}

/// A night.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NightConfig {
    /// What the pages and mails call this job.
    pub name: String,
    /// Where nights, the report store and the fuzzing corpus live.
    pub dir: PathBuf,
    /// The report store (default: `DIR/reports`); it persists across nights.
    pub reports: Option<PathBuf>,
    /// The whole night's wall-clock budget (`8h`).
    pub budget: String,
    /// Guest architecture.
    pub arch: Arch,
    /// The kernel under test.
    pub kernel: KernelUnderTest,
    /// `auto`, `kvm` or `tcg`.
    pub accel: AccelChoice,
    /// Bug-zoo bugs armed in every guest of the night (part of the kernel under test).
    pub bugzoo: Option<String>,
    /// The regression suite.
    pub regression: RegressionConfig,
    /// Fuzzing.
    pub fuzz: FuzzStageConfig,
    /// Reproducing new bugs.
    pub repro: ReproStageConfig,
    /// Writing the results.
    pub results: ResultsConfig,
}

impl Default for NightConfig {
    fn default() -> Self {
        NightConfig {
            name: "hotfuzz nightly".into(),
            dir: PathBuf::from("nightly"),
            reports: None,
            budget: "8h".into(),
            arch: Arch::X86_64,
            kernel: KernelUnderTest::default(),
            accel: AccelChoice::Auto,
            bugzoo: None,
            regression: RegressionConfig::default(),
            fuzz: FuzzStageConfig::default(),
            repro: ReproStageConfig::default(),
            results: ResultsConfig::default(),
        }
    }
}

fn duration(key: &str, v: &str) -> Result<Duration> {
    humantime::parse_duration(v)
        .with_context(|| format!("{key}: {v:?} is not a duration (30m, 8h)"))
}

impl NightConfig {
    /// Reads a YAML file; keys it leaves out keep their defaults.
    pub fn load(path: &Path) -> Result<NightConfig> {
        let c: NightConfig = read_yaml(path)?;
        c.validate()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(c)
    }

    /// The report store.
    pub fn reports(&self) -> PathBuf {
        self.reports
            .clone()
            .unwrap_or_else(|| self.dir.join("reports"))
    }

    /// The whole budget.
    pub fn budget(&self) -> Result<Duration> {
        duration("budget", &self.budget)
    }

    /// Time kept for the results.
    pub fn results_reserve(&self) -> Result<Duration> {
        duration("results.reserve", &self.results.reserve)
    }

    /// The least time worth fuzzing.
    pub fn fuzz_min(&self) -> Result<Duration> {
        duration("fuzz.min_time", &self.fuzz.min_time)
    }

    /// The campaign configuration the fuzz stage starts from (and whose profiles and
    /// suppressions the other stages use).
    pub fn fuzz_config(&self) -> Result<FuzzConfig> {
        match &self.fuzz.config {
            Some(p) => FuzzConfig::load(p),
            None => Ok(FuzzConfig::default()),
        }
    }

    /// Checks values that parse but make no sense, and what can be checked before the night
    /// spends its budget (the campaign configuration, the bug zoo's bug names).
    pub fn validate(&self) -> Result<()> {
        self.budget()?;
        self.results_reserve()?;
        self.fuzz_min()?;
        if self.budget()? < Duration::from_secs(30) {
            bail!(
                "budget: {} is too short for a night (at least 30s)",
                self.budget
            );
        }
        for (key, v) in [
            ("regression.max_share", self.regression.max_share),
            ("repro.share", self.repro.share),
            ("repro.threshold", self.repro.threshold),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{key} must be between 0 and 1, not {v}");
            }
        }
        if self.regression.max_share + self.repro.share >= 1.0 {
            bail!(
                "regression.max_share ({}) and repro.share ({}) leave no time for fuzzing",
                self.regression.max_share,
                self.repro.share
            );
        }
        if self.regression.runs == 0 || self.repro.runs == 0 {
            bail!("regression.runs and repro.runs must be at least 1");
        }
        if self.regression.vms == 0 || self.repro.vms == 0 || self.fuzz.vms == Some(0) {
            bail!("vms must be at least 1");
        }
        let given = [
            self.kernel.package.is_some(),
            self.kernel.path.is_some(),
            self.kernel.build.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            bail!("kernel: give a package, a path or a build, not two of them");
        }
        if let Some(bugs) = &self.bugzoo {
            for b in bugs.split(',').map(str::trim).filter(|b| !b.is_empty()) {
                if !crate::run::bugzoo::BUGS.contains(&b) {
                    bail!(
                        "bugzoo: unknown bug `{b}` (known: {})",
                        crate::run::bugzoo::BUGS.join(", ")
                    );
                }
            }
        }
        let fuzz = self.fuzz_config()?;
        for p in std::iter::once(&self.regression.profile) {
            if !fuzz.profiles.iter().any(|x| &x.name == p) {
                bail!("regression.profile: no profile named {p:?} in the fuzz configuration");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_the_documented_example_parses() {
        NightConfig::default().validate().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = root.join("ci/nightly.yaml");
        let text = std::fs::read_to_string(&p).unwrap();
        // Its paths are relative to the repository's root, as in CI.
        let mut c: NightConfig = serde_yaml::from_str(&text).unwrap();
        assert_eq!(c.fuzz.config.as_deref(), Some(Path::new("ci/fuzz.yaml")));
        c.fuzz.config = Some(root.join("ci/fuzz.yaml"));
        c.validate().unwrap();
        assert_eq!(c.budget().unwrap(), Duration::from_secs(8 * 3600));
        // Every key of the configuration is in the documented example: a key added to the
        // struct and not documented fails here.
        let full = serde_yaml::to_value(NightConfig::default()).unwrap();
        let mut missing = Vec::new();
        keys(&full, "", &mut missing, &text);
        assert!(missing.is_empty(), "not in ci/nightly.yaml: {missing:?}");
    }

    fn keys(v: &serde_yaml::Value, prefix: &str, missing: &mut Vec<String>, text: &str) {
        if let serde_yaml::Value::Mapping(m) = v {
            for (k, v) in m {
                let k = k.as_str().unwrap();
                let indent = prefix.matches('.').count() * 2;
                let line = format!("\n{}{k}:", " ".repeat(indent));
                if !text.contains(&line) {
                    missing.push(format!("{prefix}{k}"));
                }
                keys(v, &format!("{prefix}{k}."), missing, text);
            }
        }
    }

    #[test]
    fn errors_name_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.yaml");
        std::fs::write(&p, "budget: 1h\nregression:\n  runs: 2\n  rnus: 3\n").unwrap();
        let e = format!("{:#}", NightConfig::load(&p).unwrap_err());
        assert!(e.contains("n.yaml:4:"), "{e}");
        assert!(e.contains("rnus"), "{e}");
        std::fs::write(&p, "budget: tonight\n").unwrap();
        let e = format!("{:#}", NightConfig::load(&p).unwrap_err());
        assert!(e.contains("budget"), "{e}");
        std::fs::write(&p, "regression: {max_share: 0.6}\nrepro: {share: 0.5}\n").unwrap();
        let e = format!("{:#}", NightConfig::load(&p).unwrap_err());
        assert!(e.contains("no time for fuzzing"), "{e}");
        std::fs::write(&p, "bugzoo: warn_reonline,nope\n").unwrap();
        let e = format!("{:#}", NightConfig::load(&p).unwrap_err());
        assert!(e.contains("unknown bug `nope`"), "{e}");
        // A tree to build is a kernel of its own: not beside a package or a path.
        std::fs::write(
            &p,
            "kernel:\n  build: {tree: linux, commit: v6.13}\n  package: linux-image-x\n",
        )
        .unwrap();
        let e = format!("{:#}", NightConfig::load(&p).unwrap_err());
        assert!(e.contains("not two of them"), "{e}");
        std::fs::write(
            &p,
            "kernel:\n  build: {tree: linux, commit: v6.13, config: [slim, debug]}\n",
        )
        .unwrap();
        let c = NightConfig::load(&p).unwrap();
        let b = c.kernel.build.unwrap();
        assert_eq!(b.commit.as_deref(), Some("v6.13"));
        assert_eq!(b.config, ["slim", "debug"]);
        std::fs::write(&p, "kernel:\n  build: {tree: linux, comit: v6.13}\n").unwrap();
        let e = format!("{:#}", NightConfig::load(&p).unwrap_err());
        assert!(e.contains("n.yaml:2:") && e.contains("comit"), "{e}");
    }
}
