//! A fuzzing campaign's configuration: YAML (`ci/fuzz.yaml` is the documented example), every
//! key optional, the embedded defaults filling the rest, and command-line flags on top.

use anyhow::{bail, Context, Result};
use hotfuzz_vm::{AccelChoice, Arch};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which kernel the campaign fuzzes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelConfig {
    /// A Debian kernel package (default: the pinned Debian 6.12 kernel).
    pub package: Option<String>,
    /// A bzImage, vmlinux or kernel build directory instead of a package.
    pub path: Option<PathBuf>,
    /// The modules matching `path`.
    pub modules: Option<PathBuf>,
    /// The System.map matching `path`.
    pub system_map: Option<PathBuf>,
    /// A kernel tree to build (`hotfuzz build`) and boot instead of a package or a path.
    pub build: Option<KernelBuild>,
}

/// A kernel built from a tree by `hotfuzz build` when the campaign (or night) starts: from the
/// build cache when the tree state, config and compiler are unchanged, incrementally in the
/// kept build directory otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelBuild {
    /// The kernel source tree: a git checkout or an unpacked source directory.
    pub tree: PathBuf,
    /// The commit to build (git trees; default: the work tree as it is).
    pub commit: Option<String>,
    /// Config fragments after the guest's own: shipped names (`slim`, `debug`, `powernv`) or
    /// files (default: `slim` on x86_64, `powernv` on ppc64le).
    pub config: Vec<String>,
    /// The base config: `defconfig` (default), `debian` or a file.
    pub base: Option<String>,
}

impl KernelConfig {
    /// The kernel these keys select (a `build` must have been built first: see
    /// [`KernelConfig::built`]).
    pub fn source(&self) -> hotfuzz_vm::KernelSource {
        match (&self.path, &self.package) {
            (Some(p), _) => hotfuzz_vm::KernelSource::Path {
                path: p.clone(),
                modules: self.modules.clone(),
                system_map: self.system_map.clone(),
            },
            (None, Some(pkg)) => hotfuzz_vm::KernelSource::DebianPackage(pkg.clone()),
            (None, None) => hotfuzz_vm::KernelSource::DebianDefault,
        }
    }

    /// The kernel with a `build` built: its cache entry as `path` (the entry is laid out like
    /// a build directory, modules and System.map included). Without `build`, itself.
    pub fn built(&self, arch: Arch) -> anyhow::Result<KernelConfig> {
        let Some(b) = &self.build else {
            return Ok(self.clone());
        };
        let mut req = crate::build::BuildRequest::new(
            crate::build::TreeSpec {
                path: b.tree.clone(),
                commit: b.commit.clone(),
            },
            arch,
        );
        if let Some(base) = &b.base {
            req.base = base.parse().expect("infallible");
        }
        if !b.config.is_empty() {
            req.fragments = b.config.clone();
        }
        let (entry, _) = crate::build::build(&req).with_context(|| {
            format!(
                "kernel.build: building {}{}",
                b.tree.display(),
                b.commit
                    .as_deref()
                    .map(|c| format!(" at {c}"))
                    .unwrap_or_default()
            )
        })?;
        eprintln!(
            "hotfuzz: kernel {} {} from {} ({})",
            entry.arch,
            entry.release,
            b.tree.display(),
            if entry.cached { "cached" } else { "built" }
        );
        Ok(KernelConfig {
            path: Some(entry.dir.clone()),
            ..KernelConfig::default()
        })
    }
}

/// A guest set-up worth fuzzing: kernel command line and QEMU topology. Unset fields keep the
/// defaults of `hotfuzz vm boot`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// Name (recorded with every report).
    pub name: String,
    /// Extra kernel command line arguments.
    pub cmdline: Vec<String>,
    /// virtio-mem devices (`size=4G,block=2M,node=0,requested=0`); empty: one 4G device.
    pub virtio_mem: Vec<String>,
    /// Boot RAM (`1G`).
    pub memory: Option<String>,
    /// vCPUs.
    pub cpus: Option<u32>,
    /// NUMA nodes.
    pub nodes: Option<u32>,
}

impl Profile {
    /// `base` with this profile's command line, devices and shape.
    pub fn apply(
        &self,
        base: &crate::run::guest::GuestConfig,
    ) -> Result<crate::run::guest::GuestConfig> {
        let mut g = base.clone();
        g.cmdline.extend(self.cmdline.iter().cloned());
        if !self.virtio_mem.is_empty() {
            g.virtio_mem = Some(
                self.virtio_mem
                    .iter()
                    .enumerate()
                    .map(|(i, s)| hotfuzz_vm::VirtioMemSpec::parse(s, i))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("profile {}: virtio_mem", self.name))?,
            );
        }
        if let Some(m) = &self.memory {
            g.memory = Some(
                hotfuzz_vm::size::parse_size(m)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("profile {}: memory {m:?}", self.name))?,
            );
        }
        if self.cpus.is_some() {
            g.cpus = self.cpus;
        }
        if self.nodes.is_some() {
            g.nodes = self.nodes;
        }
        Ok(g)
    }
}

/// A campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FuzzConfig {
    /// Guest architecture.
    pub arch: Arch,
    /// The kernel.
    pub kernel: KernelConfig,
    /// `auto`, `kvm` or `tcg`.
    pub accel: AccelChoice,
    /// Guests fuzzing at once (each its own client process when more than one).
    pub vms: usize,
    /// How long to fuzz (`30m`, `8h`); unset or `forever`: until stopped.
    pub duration: Option<String>,
    /// Stop after this many executions (all guests together).
    pub max_execs: Option<u64>,
    /// Where the working corpus, solutions, logs and stats go.
    pub workdir: PathBuf,
    /// The report store.
    pub reports: PathBuf,
    /// Seed program files or directories of them; `embedded` names the seeds built into
    /// hotfuzz (a copy of the repository's `corpus/`).
    pub seeds: Vec<String>,
    /// Programs generated at start in addition to the seeds.
    pub generate: usize,
    /// Length of generated programs.
    pub program_len: usize,
    /// Chance that a generated program is a race: movers repeated on a memory block found at
    /// run time while a PFN walker loops on another thread (0 to 1).
    pub race_rate: f64,
    /// The walkers generated races take in turn (operation names with role `walker`); empty:
    /// all of them. For hunting a race whose walker is known, and `hotfuzz repro --splat`
    /// sets it to the walkers a splat's stack points at.
    pub race_walkers: Vec<String>,
    /// Longest program mutations may make.
    pub max_len: usize,
    /// How a guest gets back to a clean state: `snapshot` (restore the snapshot taken right
    /// after boot, after a report, a lost run or `restart_every` programs), `per-program`
    /// (restore it before every program) or `reboot` (boot again instead of restoring).
    pub reset: ResetMode,
    /// Programs a guest runs before it is reset (it is reset after any report anyway).
    pub restart_every: u64,
    /// Programs a guest runs before it is rebooted with the next profile (snapshot modes).
    pub profile_every: u64,
    /// How long virtio-mem devices get to reach their requested size after a program.
    pub settle: String,
    /// Bug zoo bugs to arm (testing hotfuzz itself): `warn_reonline,stuck_offline`.
    pub bugzoo: Option<String>,
    /// Regular expressions on report titles: matching reports are counted, not filed.
    pub suppressions: Vec<String>,
    /// Guest set-ups, rotated across guest restarts.
    pub profiles: Vec<Profile>,
    /// Random seed (default: from the clock).
    pub seed: Option<u64>,
    /// Seconds between lines of the stats file.
    pub stats_interval: u64,
    /// Never run apt-get.
    pub no_install: bool,
    /// Generation weights replacing the descriptions' (`op_name: weight`); `hotfuzz repro
    /// --splat` raises the operations a splat's stack points at.
    pub op_weights: std::collections::BTreeMap<String, u32>,
    /// Stop as soon as a report with one of these titles is filed (`hotfuzz repro --splat`).
    pub stop_on_titles: Vec<String>,
    /// Collect KCOV coverage (on kernels with CONFIG_KCOV) and keep programs that reach new
    /// kernel code; `false`: the guest-state features alone decide (for measuring what
    /// coverage buys, or to skip its cost).
    pub coverage: bool,
}

/// How a guest gets back to a clean state between programs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResetMode {
    /// Boot the guest again.
    Reboot,
    /// Restore the snapshot taken after boot when the guest's state is in doubt.
    #[default]
    Snapshot,
    /// Restore the snapshot before every program: every program runs on the same state and
    /// a report's history is one program.
    PerProgram,
}

/// Titles that are never the kernel's fault here: under multi-threaded TCG a vCPU can run a
/// stale `int3` the kernel's text patching left behind (static keys, alternatives).
pub const TCG_SUPPRESSIONS: &[&str] = &["^Oops: int3"];

impl Default for FuzzConfig {
    fn default() -> FuzzConfig {
        FuzzConfig {
            arch: Arch::X86_64,
            kernel: KernelConfig::default(),
            accel: AccelChoice::Auto,
            vms: 1,
            duration: None,
            max_execs: None,
            workdir: PathBuf::from("hotfuzz-work"),
            reports: PathBuf::from("reports"),
            seeds: vec!["embedded".into()],
            generate: 4,
            program_len: 12,
            race_rate: crate::program::gen::RACE_RATE,
            race_walkers: Vec::new(),
            max_len: 40,
            reset: ResetMode::Snapshot,
            restart_every: 100,
            profile_every: 500,
            settle: "3s".into(),
            bugzoo: None,
            suppressions: TCG_SUPPRESSIONS.iter().map(|s| s.to_string()).collect(),
            profiles: default_profiles(),
            seed: None,
            stats_interval: 10,
            no_install: false,
            op_weights: Default::default(),
            stop_on_titles: Vec::new(),
            coverage: true,
        }
    }
}

fn profile(name: &str, cmdline: &[&str]) -> Profile {
    Profile {
        name: name.into(),
        cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
        ..Profile::default()
    }
}

/// The x86_64 set-ups fuzzed by default: the hotplug paths each one reaches differ.
pub fn default_profiles() -> Vec<Profile> {
    vec![
        // One 4G device, 2M subblocks (SBM), blocks onlined movable.
        profile("default", &[]),
        // The memmap of hotplugged memory lives on the memory itself.
        profile("memmap-on-memory", &["memory_hotplug.memmap_on_memory=1"]),
        // Big Block Mode: virtio-mem adds and removes whole memory blocks.
        profile("bbm", &["virtio_mem.force_bbm=1"]),
        // Hotplugged memory in kernel zones: unmovable allocations land there.
        profile("online-kernel", &["memhp_default_state=online_kernel"]),
        // The auto-movable onlining policy decides the zone per block.
        profile(
            "auto-movable",
            &[
                "memhp_default_state=online",
                "memory_hotplug.online_policy=auto-movable",
            ],
        ),
        // Two NUMA nodes, a device on each, with different device block sizes.
        Profile {
            name: "two-nodes".into(),
            nodes: Some(2),
            memory: Some("2G".into()),
            virtio_mem: vec![
                "size=2G,block=2M,node=0".into(),
                "size=2G,block=4M,node=1".into(),
            ],
            ..Profile::default()
        },
    ]
}

/// A value that parses but makes no sense, and the keys it is under, the likeliest first (in
/// a profile or not).
struct KeyError {
    keys: Vec<String>,
    profile: Option<String>,
    msg: String,
}

/// Where `key` is written in the YAML `text` (1-based line and column): the first line that
/// starts with `key:` (after indentation or a list dash), inside the profile named `profile`
/// when there is one. Block-style YAML, as `ci/fuzz.yaml` is written; `None` when the key is
/// not there (the value is a default) or is written some other way.
fn locate(text: &str, key: &str, profile: Option<&str>) -> Option<(usize, usize)> {
    let key_at = |line: &str| {
        let body = line.trim_start().trim_start_matches("- ").trim_start();
        let rest = body.strip_prefix(key)?.trim_start();
        rest.starts_with(':').then(|| line.len() - body.len() + 1)
    };
    let mut lines = text.lines().enumerate();
    if let Some(name) = profile {
        // The line `- name: NAME` (or `name: NAME`) opens the profile.
        let opens = |l: &str| {
            let body = l.trim_start().trim_start_matches("- ").trim_start();
            body.strip_prefix("name")
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().trim_matches(['"', '\'']) == name)
                .unwrap_or(false)
        };
        let (i, first) = lines.find(|(_, l)| opens(l))?;
        if key == "name" {
            return key_at(first).map(|c| (i + 1, c));
        }
        for (i, l) in lines {
            if l.trim_start().starts_with("- ") && l.contains("name") {
                // The next profile.
                return None;
            }
            if let Some(c) = key_at(l) {
                return Some((i + 1, c));
            }
        }
        return None;
    }
    lines.find_map(|(i, l)| key_at(l).map(|c| (i + 1, c)))
}

/// How deep YAML flow collections (`[`, `{`) may nest. yaml_serde took 24 s on 100,000.
const MAX_YAML_NESTING: usize = 64;

/// Where (1-based line and column) flow collections in `text` first nest past
/// [`MAX_YAML_NESTING`], outside quotes and comments.
pub fn yaml_too_deep(text: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    for (i, line) in text.lines().enumerate() {
        let mut quote: Option<char> = None;
        for (col, c) in line.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_YAML_NESTING {
                        return Some((i + 1, col + 1));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// A configuration error at a place in the file (`file:line:col: message`).
pub fn located(path: &Path, e: &serde_yaml::Error) -> anyhow::Error {
    match e.location() {
        Some(l) => anyhow::anyhow!("{}:{}:{}: {e}", path.display(), l.line(), l.column()),
        None => anyhow::anyhow!("{}: {e}", path.display()),
    }
}

/// A YAML file's text, refused at its place when it nests deeper than [`MAX_YAML_NESTING`].
fn read_text(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Some((line, col)) = yaml_too_deep(&text) {
        bail!(
            "{}:{line}:{col}: nested more than {MAX_YAML_NESTING} deep",
            path.display()
        );
    }
    Ok(text)
}

/// Reads a YAML configuration file: an empty file is the defaults, a bad one an error at its
/// place (`file:line:col`). The caller validates what it read.
pub fn read_yaml<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T> {
    let text = read_text(path)?;
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_yaml::from_str(&text).map_err(|e| located(path, &e))
}

impl FuzzConfig {
    /// Reads a YAML file; keys it leaves out keep their defaults. Every error, also one of a
    /// value that parses but makes no sense, names `FILE:LINE:COL` of the key when it is in
    /// the file.
    pub fn load(path: &Path) -> Result<FuzzConfig> {
        let text = read_text(path)?;
        let c: FuzzConfig = if text.trim().is_empty() {
            FuzzConfig::default()
        } else {
            serde_yaml::from_str(&text).map_err(|e| located(path, &e))?
        };
        if let Err(e) = c.check() {
            let at = e
                .keys
                .iter()
                .find_map(|k| locate(&text, k, e.profile.as_deref()));
            return Err(match at {
                Some((line, col)) => anyhow::anyhow!("{}:{line}:{col}: {}", path.display(), e.msg),
                None => anyhow::anyhow!("{}: {}", path.display(), e.msg),
            });
        }
        Ok(c)
    }

    /// Parses YAML text (for tests and embedded configurations).
    pub fn from_yaml(text: &str) -> Result<FuzzConfig> {
        if let Some((line, col)) = yaml_too_deep(text) {
            bail!("{line}:{col}: nested more than {MAX_YAML_NESTING} deep");
        }
        let c: FuzzConfig = serde_yaml::from_str(text).context("parsing the configuration")?;
        c.validate()?;
        Ok(c)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|e| anyhow::anyhow!(e.msg))
    }

    fn check(&self) -> std::result::Result<(), KeyError> {
        let top = |key: &str, msg: String| KeyError {
            keys: vec![key.into()],
            profile: None,
            msg,
        };
        if self.vms == 0 {
            return Err(top("vms", "vms must be at least 1".into()));
        }
        if self.program_len == 0 || self.max_len < self.program_len {
            return Err(KeyError {
                keys: vec!["program_len".into(), "max_len".into()],
                profile: None,
                msg: format!(
                    "program_len ({}) must be at least 1 and at most max_len ({})",
                    self.program_len, self.max_len
                ),
            });
        }
        if !(0.0..=1.0).contains(&self.race_rate) {
            return Err(top(
                "race_rate",
                format!("race_rate must be between 0 and 1, not {}", self.race_rate),
            ));
        }
        if self.profile_every == 0 {
            return Err(top(
                "profile_every",
                "profile_every must be at least 1".into(),
            ));
        }
        if self.restart_every == 0 {
            return Err(top(
                "restart_every",
                "restart_every must be at least 1".into(),
            ));
        }
        if self.profiles.is_empty() {
            return Err(top("profiles", "at least one profile is needed".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &self.profiles {
            let here = |key: &str, msg: String| KeyError {
                keys: vec![key.into()],
                profile: Some(p.name.clone()),
                msg,
            };
            if p.name.is_empty() {
                return Err(top("profiles", "every profile needs a name".into()));
            }
            if !names.insert(&p.name) {
                return Err(here("name", format!("two profiles are named {}", p.name)));
            }
            for (i, v) in p.virtio_mem.iter().enumerate() {
                hotfuzz_vm::VirtioMemSpec::parse(v, i).map_err(|e| {
                    here(
                        "virtio_mem",
                        format!("profile {}: virtio_mem {v:?}: {e}", p.name),
                    )
                })?;
            }
            if let Some(m) = &p.memory {
                hotfuzz_vm::size::parse_size(m).map_err(|e| {
                    here("memory", format!("profile {}: memory {m:?}: {e}", p.name))
                })?;
            }
        }
        self.duration()
            .map_err(|e| top("duration", format!("{e:#}")))?;
        self.settle().map_err(|e| top("settle", format!("{e:#}")))?;
        for s in &self.suppressions {
            regex::Regex::new(s)
                .map_err(|e| top("suppressions", format!("suppression {s:?}: {e}")))?;
        }
        let given = [
            self.kernel.package.is_some(),
            self.kernel.path.is_some(),
            self.kernel.build.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(top(
                "kernel",
                "kernel: give a package, a path or a build, not two of them".into(),
            ));
        }
        if !self.race_walkers.is_empty() {
            let d = crate::program::desc::Descriptions::embedded();
            for name in &self.race_walkers {
                match d.op(name) {
                    Some(o) if o.has_role(crate::program::desc::Role::Walker) => {}
                    Some(_) => {
                        return Err(top(
                            "race_walkers",
                            format!("race_walkers: {name:?} is not a walker"),
                        ))
                    }
                    None => {
                        return Err(top(
                            "race_walkers",
                            format!("race_walkers: no operation named {name:?}"),
                        ))
                    }
                }
            }
        }
        if !self.op_weights.is_empty() {
            let d = crate::program::desc::Descriptions::embedded();
            for name in self.op_weights.keys() {
                if d.op(name).is_none() {
                    return Err(top(
                        name,
                        format!("op_weights: no operation named {name:?}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The guest set-up the campaign's profiles are applied to: its kernel, architecture,
    /// accelerator and bug zoo. A `kernel.build` must have been built first
    /// ([`KernelConfig::built`]; [`crate::fuzz::run`] does it).
    pub fn guest(&self) -> crate::run::guest::GuestConfig {
        debug_assert!(
            self.kernel.build.is_none() || self.kernel.path.is_some(),
            "kernel.build not built"
        );
        let mut g = crate::run::guest::GuestConfig::new(self.arch);
        g.accel = self.accel;
        g.kernel = self.kernel.source();
        g.bugzoo = self.bugzoo.clone();
        g.no_install = self.no_install;
        g
    }

    /// Takes the kernel, architecture, accelerator and (when set) bug zoo of `g`: the inverse of
    /// [`FuzzConfig::guest`], for commands that fuzz on the guest their flags describe.
    pub fn use_guest(&mut self, g: &crate::run::guest::GuestConfig) {
        self.arch = g.arch;
        self.accel = g.accel;
        self.kernel = match &g.kernel {
            hotfuzz_vm::KernelSource::Path {
                path,
                modules,
                system_map,
            } => KernelConfig {
                package: None,
                path: Some(path.clone()),
                modules: modules.clone(),
                system_map: system_map.clone(),
                build: None,
            },
            hotfuzz_vm::KernelSource::DebianPackage(p) => KernelConfig {
                package: Some(p.clone()),
                ..KernelConfig::default()
            },
            hotfuzz_vm::KernelSource::DebianDefault => KernelConfig::default(),
        };
        if g.bugzoo.is_some() {
            self.bugzoo = g.bugzoo.clone();
        }
        self.no_install = g.no_install;
    }

    /// The campaign's length (`None`: until stopped).
    pub fn duration(&self) -> Result<Option<Duration>> {
        match self.duration.as_deref() {
            None | Some("forever") | Some("") => Ok(None),
            Some(d) => humantime::parse_duration(d)
                .map(Some)
                .with_context(|| format!("duration {d:?} (e.g. 30m, 8h, forever)")),
        }
    }

    /// How long devices get to settle.
    pub fn settle(&self) -> Result<Duration> {
        humantime::parse_duration(&self.settle)
            .with_context(|| format!("settle {:?} (e.g. 10s)", self.settle))
    }

    /// Keeps only the profiles named in `names` (comma separated).
    pub fn select_profiles(&mut self, names: &str) -> Result<()> {
        let want: Vec<&str> = names.split(',').map(str::trim).collect();
        for w in &want {
            if !self.profiles.iter().any(|p| p.name == *w) {
                bail!(
                    "no profile named {w} (there are: {})",
                    self.profiles
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        self.profiles.retain(|p| want.contains(&p.name.as_str()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_partial_files_keep_them() {
        FuzzConfig::default().validate().unwrap();
        let c = FuzzConfig::from_yaml("vms: 2\nduration: 30m\n").unwrap();
        assert_eq!(c.vms, 2);
        assert_eq!(c.duration().unwrap(), Some(Duration::from_secs(1800)));
        assert_eq!(c.profiles, default_profiles());
        assert_eq!(c.restart_every, FuzzConfig::default().restart_every);
    }

    #[test]
    fn errors_name_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.yaml");
        std::fs::write(&p, "vms: 1\nprofiles:\n  - name: a\n    cmdlin: [x]\n").unwrap();
        let e = format!("{:#}", FuzzConfig::load(&p).unwrap_err());
        assert!(e.contains("f.yaml:4:"), "{e}");
        assert!(e.contains("cmdlin"), "{e}");
        std::fs::write(&p, "vms: 0\n").unwrap();
        let e = format!("{:#}", FuzzConfig::load(&p).unwrap_err());
        assert!(e.contains("vms must be at least 1"), "{e}");
        std::fs::write(&p, "duration: soon\n").unwrap();
        assert!(FuzzConfig::load(&p).is_err());
        std::fs::write(
            &p,
            "profiles:\n  - name: a\n    virtio_mem: [\"size=banana\"]\n",
        )
        .unwrap();
        let e = format!("{:#}", FuzzConfig::load(&p).unwrap_err());
        assert!(e.contains("profile a"), "{e}");
    }

    #[test]
    fn senseless_values_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.yaml");
        let err = |text: &str| {
            std::fs::write(&p, text).unwrap();
            format!("{:#}", FuzzConfig::load(&p).unwrap_err())
        };
        let f = p.display().to_string();
        assert_eq!(
            err("seed: 1\nvms: 0\n"),
            format!("{f}:2:1: vms must be at least 1")
        );
        let e = err("seed: 1\n\nduration: soon\n");
        assert!(e.starts_with(&format!("{f}:3:1: duration \"soon\"")), "{e}");
        let e = err("settle: 10 parsecs\n");
        assert!(e.starts_with(&format!("{f}:1:1: settle")), "{e}");
        let e = err("profiles:\n  - name: a\n  - name: b\n    memory: 1G\n    virtio_mem: [\"size=banana\"]\n");
        assert!(
            e.starts_with(&format!("{f}:5:5: profile b: virtio_mem")),
            "{e}"
        );
        let e = err("profiles:\n  - name: a\n  - name: a\n");
        assert!(
            e.starts_with(&format!("{f}:2:5: two profiles are named a")),
            "{e}"
        );
        // Unknown operations in op_weights.
        let e = err("op_weights:\n  yield: 2\n  nope: 3\n");
        assert_eq!(
            e,
            format!("{f}:3:3: op_weights: no operation named \"nope\"")
        );
        assert!(FuzzConfig::from_yaml("op_weights: {yield: 2}\n").is_ok());
        // Race walkers are walkers.
        let e = err("race_walkers: [kpageflags_read, yield]\n");
        assert!(
            e.ends_with("race_walkers: \"yield\" is not a walker"),
            "{e}"
        );
        let e = err("race_walkers: [nope]\n");
        assert!(
            e.ends_with("race_walkers: no operation named \"nope\""),
            "{e}"
        );
        assert!(FuzzConfig::from_yaml("race_walkers: [kpageflags_read]\n").is_ok());
        // A key left at its default has no line.
        let e = err("program_len: 500\n");
        assert!(e.starts_with(&format!("{f}:1:1: program_len (500)")), "{e}");
    }

    #[test]
    fn deep_yaml_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.yaml");
        let n = 100_000;
        std::fs::write(
            &p,
            format!("seed: 1\nvms: {}{}\n", "[".repeat(n), "]".repeat(n)),
        )
        .unwrap();
        let t = std::time::Instant::now();
        let e = format!("{:#}", FuzzConfig::load(&p).unwrap_err());
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(e, format!("{}:2:70: nested more than 64 deep", p.display()));
        assert!(
            FuzzConfig::from_yaml(&format!("vms: {}1{}", "[".repeat(100), "]".repeat(100)))
                .is_err()
        );
        // Brackets in strings and comments are text.
        assert_eq!(
            yaml_too_deep(&format!(
                "a: \"{}\" # {}\n",
                "[".repeat(100),
                "{".repeat(100)
            )),
            None
        );
    }

    #[test]
    fn the_documented_example_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/fuzz.yaml");
        let c = FuzzConfig::load(&p).unwrap();
        assert!(c.profiles.len() >= 6);
    }

    #[test]
    fn profiles_can_be_selected() {
        let mut c = FuzzConfig::default();
        c.select_profiles("bbm,default").unwrap();
        let names: Vec<&str> = c.profiles.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["default", "bbm"]);
        assert!(c.select_profiles("nope").is_err());
    }
}
