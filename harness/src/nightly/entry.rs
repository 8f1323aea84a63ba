//! Regression entries: `corpus/regressions/NAME/` holds `entry.yaml` (the expected title, the
//! kernels it applies to, what is expected of it) and `repro.prog` (the reproducer). This
//! module reads them and decides, for the kernel under test and the report store, whether an
//! entry applies and what it should do. Nothing here runs a guest.
//!
//! What an entry is expected to do, first rule that decides:
//! 1. it does not apply to the kernel (architecture, release range, config options, bug-zoo
//!    bugs armed): skipped;
//! 2. `expect:` in the entry;
//! 3. `fixed_in:` in the entry: fixed on kernels at or after that version, open before;
//! 4. the report store's status of its title: fixed (marked or detected) must stay fixed,
//!    invalid is skipped, an open bug must still reproduce;
//! 5. otherwise it must reproduce.

use super::kernel::{in_range, KernelUnderTest, Version};
use super::summary::Expect;
use crate::program::desc::Descriptions;
use crate::program::prog::Program;
use crate::store::status::State;
use crate::store::Store;
use anyhow::{anyhow, bail, Context, Result};
use hotfuzz_vm::Arch;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The kernels an entry applies to; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelFilter {
    /// Version ranges of the release, any of which may hold (`">=6.1, <6.13"`).
    pub release: Vec<String>,
    /// Config conditions, all of which must hold (`CONFIG_X`, `CONFIG_X=n`, `CONFIG_X=VAL`).
    pub configs: Vec<String>,
    /// Architectures.
    pub arch: Vec<Arch>,
    /// Bug-zoo bugs that must be armed (a planted bug exists only where it is armed).
    pub bugzoo: Vec<String>,
}

/// `entry.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySpec {
    /// The title the reproducer gives.
    pub title: String,
    /// Other titles that count as the same bug.
    #[serde(default)]
    pub alt_titles: Vec<String>,
    /// What the bug is, for people.
    #[serde(default)]
    pub description: String,
    /// Where it came from (a report, a mail, a commit).
    #[serde(default)]
    pub origin: String,
    /// The kernels it applies to.
    #[serde(default)]
    pub kernels: KernelFilter,
    /// What the reproducer must do, when the entry says so.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// The first version with the fix.
    #[serde(default)]
    pub fixed_in: Option<String>,
    /// Runs (default: the night's `regression.runs`).
    #[serde(default)]
    pub runs: Option<u32>,
    /// Guest profile (default: the night's `regression.profile`).
    #[serde(default)]
    pub profile: Option<String>,
    /// Limit for one run (`2m`; default: the sum of the operations' deadlines).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A loaded entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its directory name.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// `entry.yaml`.
    pub spec: EntrySpec,
    /// `repro.prog`.
    pub program: Program,
    /// `repro.prog` as written.
    pub text: String,
}

impl Entry {
    /// The titles that count.
    pub fn titles(&self) -> Vec<String> {
        std::iter::once(self.spec.title.clone())
            .chain(self.spec.alt_titles.iter().cloned())
            .collect()
    }

    /// The run limit.
    pub fn timeout(&self) -> Option<Duration> {
        self.spec
            .timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
    }
}

/// Reads one entry directory; errors name the file and line.
pub fn load_entry(dir: &Path, d: &Descriptions) -> Result<Entry> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{}: not a directory name", dir.display()))?
        .to_string();
    let yaml = dir.join("entry.yaml");
    let text =
        std::fs::read_to_string(&yaml).with_context(|| format!("reading {}", yaml.display()))?;
    let spec: EntrySpec =
        serde_yaml::from_str(&text).map_err(|e| crate::fuzz::config::located(&yaml, &e))?;
    let at = |what: &str| format!("{}: {what}", yaml.display());
    if spec.title.trim().is_empty() {
        bail!("{}", at("the title is empty"));
    }
    for r in &spec.kernels.release {
        in_range(&Version::parse("1").expect("a version"), r)
            .with_context(|| at("kernels.release"))?;
    }
    let probe = super::kernel::KernelConfig::default();
    for c in &spec.kernels.configs {
        probe.holds(c).with_context(|| at("kernels.configs"))?;
    }
    for b in &spec.kernels.bugzoo {
        if !crate::run::bugzoo::BUGS.contains(&b.as_str()) {
            bail!("{}", at(&format!("kernels.bugzoo: unknown bug `{b}`")));
        }
    }
    if let Some(f) = &spec.fixed_in {
        Version::parse(f)
            .ok_or_else(|| anyhow!("{}", at(&format!("fixed_in: {f:?} is no version"))))?;
    }
    if let Some(t) = &spec.timeout {
        humantime::parse_duration(t).with_context(|| at(&format!("timeout {t:?}")))?;
    }
    if spec.runs == Some(0) {
        bail!("{}", at("runs must be at least 1"));
    }
    let prog_path = dir.join("repro.prog");
    let program = crate::program::text::read_program(&prog_path, d)?;
    program
        .validate(d)
        .map_err(|e| anyhow!("{}: {e}", prog_path.display()))?;
    let text = std::fs::read_to_string(&prog_path)?;
    Ok(Entry {
        name,
        dir: dir.to_path_buf(),
        spec,
        program,
        text,
    })
}

/// Every entry under `dirs` (each a directory of entry directories), sorted by name. Two
/// entries with one name are an error; so is a directory without `entry.yaml`.
pub fn load_suite(dirs: &[PathBuf], d: &Descriptions) -> Result<Vec<Entry>> {
    let mut out: Vec<Entry> = Vec::new();
    for root in dirs {
        let rd = std::fs::read_dir(root)
            .with_context(|| format!("reading the regression suite {}", root.display()))?;
        let mut dirs: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        dirs.sort();
        for dir in dirs {
            let e = load_entry(&dir, d)?;
            if let Some(other) = out.iter().find(|o| o.name == e.name) {
                bail!(
                    "two regression entries are named {}: {} and {}",
                    e.name,
                    other.dir.display(),
                    dir.display()
                );
            }
            out.push(e);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What to do with an entry tonight.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Do not run it, for this reason.
    Skip(String),
    /// Run it and expect this, for this reason.
    Run(Expect, String),
}

/// Whether `e` applies to `k`, and if it does, why not (`None`: it applies).
pub fn not_applicable(e: &Entry, k: &KernelUnderTest) -> Result<Option<String>> {
    let f = &e.spec.kernels;
    if !f.arch.is_empty() && !f.arch.iter().any(|a| a.name() == k.facts.arch) {
        return Ok(Some(format!(
            "only for {}",
            names(f.arch.iter().map(|a| a.name()))
        )));
    }
    if !f.release.is_empty() {
        let Some(v) = &k.version else {
            return Ok(Some(format!(
                "needs release {}; the kernel's release {:?} has no version",
                f.release.join(" or "),
                k.facts.release
            )));
        };
        let mut any = false;
        for r in &f.release {
            any |= in_range(v, r)?;
        }
        if !any {
            return Ok(Some(format!(
                "needs release {}; the kernel is {}",
                f.release.join(" or "),
                k.facts.release
            )));
        }
    }
    if !f.configs.is_empty() {
        let Some(c) = &k.config else {
            return Ok(Some(format!(
                "needs {}; the kernel's config is unknown",
                f.configs.join(", ")
            )));
        };
        for cond in &f.configs {
            if !c.holds(cond)? {
                return Ok(Some(format!("needs {cond}")));
            }
        }
    }
    let armed = k.bugzoo();
    let missing: Vec<&str> = f
        .bugzoo
        .iter()
        .map(String::as_str)
        .filter(|b| !armed.contains(b))
        .collect();
    if !missing.is_empty() {
        return Ok(Some(format!(
            "needs the bug zoo's {} armed",
            names(missing.into_iter())
        )));
    }
    Ok(None)
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

/// What `e` should do on `k`, given what `store` knows of its title.
pub fn decide(e: &Entry, k: &KernelUnderTest, store: &Store) -> Result<Decision> {
    if let Some(why) = not_applicable(e, k)? {
        return Ok(Decision::Skip(format!("does not apply: {why}")));
    }
    if let Some(x) = e.spec.expect {
        return Ok(Decision::Run(x, "the entry says so".into()));
    }
    if let Some(f) = &e.spec.fixed_in {
        let fixed = Version::parse(f).expect("checked when loaded");
        return Ok(match &k.version {
            Some(v) if *v >= fixed => {
                Decision::Run(Expect::Fixed, format!("fixed in {f}, the kernel is {v}"))
            }
            Some(v) => Decision::Run(
                Expect::Reproduces,
                format!("fixed only in {f}, the kernel is {v}"),
            ),
            None => Decision::Skip(format!(
                "fixed in {f}, and the kernel's release {:?} has no version",
                k.facts.release
            )),
        });
    }
    let bug = e
        .titles()
        .iter()
        .find_map(|t| store.find_title(t).transpose())
        .transpose()?;
    Ok(match bug {
        Some(s) => match s.meta.status.state {
            State::Fixed => {
                let fix = s.meta.status.fix.as_ref();
                Decision::Run(
                    Expect::Fixed,
                    match fix {
                        Some(f) if f.by == crate::store::status::FixedBy::Detected => {
                            format!("found fixed on {}", f.rev)
                        }
                        Some(f) => format!("marked fixed by {}", f.rev),
                        None => "marked fixed".into(),
                    },
                )
            }
            State::Invalid => Decision::Skip(format!(
                "marked invalid: {}",
                s.meta
                    .status
                    .invalid
                    .as_deref()
                    .unwrap_or("no reason given")
            )),
            st => Decision::Run(Expect::Reproduces, format!("{st} in the report store")),
        },
        None => Decision::Run(
            Expect::Reproduces,
            "open (not in the report store yet)".into(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROG: &str = "virtio_mem_resize(dev=0x0, size=0x10000000)\n";

    fn entry(dir: &Path, name: &str, yaml: &str) -> PathBuf {
        let e = dir.join(name);
        std::fs::create_dir_all(&e).unwrap();
        std::fs::write(e.join("entry.yaml"), yaml).unwrap();
        std::fs::write(e.join("repro.prog"), PROG).unwrap();
        e
    }

    fn kernel(release: &str, bugzoo: Option<&str>) -> KernelUnderTest {
        KernelUnderTest {
            facts: super::super::kernel::KernelFacts {
                release: release.into(),
                arch: "x86_64".into(),
                bugzoo: bugzoo.map(str::to_string),
                ..Default::default()
            },
            version: Version::parse(release),
            config: Some(super::super::kernel::KernelConfig::parse(
                "CONFIG_MEMORY_HOTREMOVE=y\n",
            )),
        }
    }

    #[test]
    fn the_committed_suite_loads_and_applies_where_it_should() {
        let d = Descriptions::embedded();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/regressions");
        let suite = load_suite(&[dir], &d).unwrap();
        assert!(suite.len() >= 5, "{}", suite.len());
        // The real race applies to a stock x86_64 kernel with the options it needs, without
        // a bug zoo; the planted bugs only where their bug is armed.
        let mut stock = kernel("6.12.117+deb12-amd64", None);
        stock.config = Some(super::super::kernel::KernelConfig::parse(
            "CONFIG_VIRTIO_MEM=m\nCONFIG_MEMORY_HOTREMOVE=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\nCONFIG_DEBUG_FS=y\n",
        ));
        let real = suite
            .iter()
            .find(|e| e.name == "virtio-mem-fake-offline-split-huge-pages")
            .expect("the real race's entry");
        assert_eq!(
            real.spec.title,
            "WARNING in virtio_mem_fake_offline_going_offline"
        );
        assert_eq!(not_applicable(real, &stock).unwrap(), None);
        for e in suite.iter().filter(|e| e.name.starts_with("bugzoo-")) {
            assert!(not_applicable(e, &stock).unwrap().is_some(), "{}", e.name);
        }
    }

    #[test]
    fn bad_entries_name_the_file_and_line() {
        let d = Descriptions::embedded();
        let t = tempfile::tempdir().unwrap();
        let e = entry(t.path(), "a", "title: x\nkernels:\n  relase: [\">=6.1\"]\n");
        let msg = format!("{:#}", load_entry(&e, &d).unwrap_err());
        assert!(msg.contains("a/entry.yaml:3:"), "{msg}");
        let e = entry(t.path(), "b", "title: x\nkernels:\n  release: [\"~6.1\"]\n");
        let msg = format!("{:#}", load_entry(&e, &d).unwrap_err());
        assert!(msg.contains("kernels.release"), "{msg}");
        let e = entry(t.path(), "c", "title: x\nfixed_in: soon\n");
        assert!(format!("{:#}", load_entry(&e, &d).unwrap_err()).contains("fixed_in"));
        let e = entry(t.path(), "d", "title: x\n");
        std::fs::write(e.join("repro.prog"), "virtio_mem_resize(dev=0x0)\n").unwrap();
        let msg = format!("{:#}", load_entry(&e, &d).unwrap_err());
        assert!(msg.contains("d/repro.prog:1:"), "{msg}");
        let e = entry(t.path(), "e", "title: x\nexpect: broken\n");
        assert!(format!("{:#}", load_entry(&e, &d).unwrap_err()).contains("e/entry.yaml:2:"));
    }

    #[test]
    fn expectations_follow_the_rules_in_order() {
        let d = Descriptions::embedded();
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&t.path().join("reports")).unwrap();
        let k = kernel("6.12.117+deb12-amd64", Some("warn_reonline"));
        let load = |name: &str, yaml: &str| load_entry(&entry(t.path(), name, yaml), &d).unwrap();
        let skip = |e: &Entry| match decide(e, &k, &store).unwrap() {
            Decision::Skip(why) => why,
            x => panic!("{x:?}"),
        };
        let run = |e: &Entry| match decide(e, &k, &store).unwrap() {
            Decision::Run(x, _) => x,
            x => panic!("{x:?}"),
        };
        assert!(
            skip(&load("r", "title: x\nkernels: {release: [\">=6.13\"]}\n"))
                .contains("needs release >=6.13")
        );
        assert!(
            skip(&load("c", "title: x\nkernels: {configs: [CONFIG_KASAN]}\n"))
                .contains("CONFIG_KASAN")
        );
        assert!(
            skip(&load("z", "title: x\nkernels: {bugzoo: [stuck_offline]}\n"))
                .contains("stuck_offline")
        );
        assert!(skip(&load("p", "title: x\nkernels: {arch: [ppc64le]}\n")).contains("ppc64le"));
        assert_eq!(run(&load("ok", "title: x\nkernels: {release: [\"<6.1\", \">=6.12\"], bugzoo: [warn_reonline], configs: [CONFIG_MEMORY_HOTREMOVE]}\n")), Expect::Reproduces);
        assert_eq!(
            run(&load("f1", "title: x\nfixed_in: \"6.12\"\n")),
            Expect::Fixed
        );
        assert_eq!(
            run(&load("f2", "title: x\nfixed_in: \"6.13-rc1\"\n")),
            Expect::Reproduces
        );
        assert_eq!(
            run(&load(
                "x",
                "title: x\nfixed_in: \"6.12\"\nexpect: reproduces\n"
            )),
            Expect::Reproduces
        );
        // The store decides when the entry does not.
        let mut r = crate::report::parse("[ 1.0] Kernel panic - not syncing: x\n").remove(0);
        r.title = "WARNING in foo".into();
        store.file(&r, &Default::default()).unwrap();
        let e = load("s", "title: WARNING in foo\n");
        assert_eq!(run(&e), Expect::Reproduces);
        store
            .mark(
                "WARNING in foo",
                &crate::store::status::Mark::Fixed("v6.13".into()),
                "t",
            )
            .unwrap();
        match decide(&e, &k, &store).unwrap() {
            Decision::Run(Expect::Fixed, why) => assert!(why.contains("v6.13"), "{why}"),
            x => panic!("{x:?}"),
        }
        store
            .mark(
                "WARNING in foo",
                &crate::store::status::Mark::Invalid("noise".into()),
                "t",
            )
            .unwrap();
        assert!(skip(&e).contains("noise"));
        // Two entries with one name in two suites.
        let (s1, s2) = (t.path().join("s1"), t.path().join("s2"));
        entry(&s1, "s", "title: y\n");
        entry(&s2, "s", "title: z\n");
        assert_eq!(load_suite(std::slice::from_ref(&s1), &d).unwrap().len(), 1);
        let msg = load_suite(&[s1, s2], &d).unwrap_err().to_string();
        assert!(msg.contains("two regression entries are named s"), "{msg}");
    }
}
