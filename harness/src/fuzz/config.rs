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

/// A configuration error at a place in the file (`file:line:col: message`).
pub fn located(path: &Path, e: &serde_yaml::Error) -> anyhow::Error {
    match e.location() {
        Some(l) => anyhow::anyhow!("{}:{}:{}: {e}", path.display(), l.line(), l.column()),
        None => anyhow::anyhow!("{}: {e}", path.display()),
    }
}

/// Reads a YAML configuration file: an empty file is the defaults, a bad one an error at its
/// place (`file:line:col`). The caller validates what it read.
pub fn read_yaml<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_yaml::from_str(&text).map_err(|e| located(path, &e))
}

impl FuzzConfig {
    /// Reads a YAML file; keys it leaves out keep their defaults.
    pub fn load(path: &Path) -> Result<FuzzConfig> {
        let c: FuzzConfig = read_yaml(path)?;
        c.validate()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(c)
    }

    /// Parses YAML text (for tests and embedded configurations).
    pub fn from_yaml(text: &str) -> Result<FuzzConfig> {
        let c: FuzzConfig = serde_yaml::from_str(text).context("parsing the configuration")?;
        c.validate()?;
        Ok(c)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<()> {
        if self.vms == 0 {
            bail!("vms must be at least 1");
        }
        if self.program_len == 0 || self.max_len < self.program_len {
            bail!(
                "program_len ({}) must be at least 1 and at most max_len ({})",
                self.program_len,
                self.max_len
            );
        }
        if !(0.0..=1.0).contains(&self.race_rate) {
            bail!("race_rate must be between 0 and 1, not {}", self.race_rate);
        }
        if self.profile_every == 0 {
            bail!("profile_every must be at least 1");
        }
        if self.restart_every == 0 {
            bail!("restart_every must be at least 1");
        }
        if self.profiles.is_empty() {
            bail!("at least one profile is needed");
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &self.profiles {
            if p.name.is_empty() {
                bail!("every profile needs a name");
            }
            if !names.insert(&p.name) {
                bail!("two profiles are named {}", p.name);
            }
            for (i, s) in p.virtio_mem.iter().enumerate() {
                hotfuzz_vm::VirtioMemSpec::parse(s, i)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("profile {}: virtio_mem {s:?}", p.name))?;
            }
            if let Some(m) = &p.memory {
                hotfuzz_vm::size::parse_size(m)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("profile {}: memory {m:?}", p.name))?;
            }
        }
        self.duration()?;
        self.settle()?;
        for s in &self.suppressions {
            regex::Regex::new(s).with_context(|| format!("suppression {s:?}"))?;
        }
        if self.kernel.package.is_some() && self.kernel.path.is_some() {
            bail!("kernel: give a package or a path, not both");
        }
        Ok(())
    }

    /// The guest set-up the campaign's profiles are applied to: its kernel, architecture,
    /// accelerator and bug zoo.
    pub fn guest(&self) -> crate::run::guest::GuestConfig {
        let mut g = crate::run::guest::GuestConfig::new(self.arch);
        g.accel = self.accel;
        g.kernel = match (&self.kernel.path, &self.kernel.package) {
            (Some(p), _) => hotfuzz_vm::KernelSource::Path {
                path: p.clone(),
                modules: self.kernel.modules.clone(),
                system_map: self.kernel.system_map.clone(),
            },
            (None, Some(pkg)) => hotfuzz_vm::KernelSource::DebianPackage(pkg.clone()),
            (None, None) => hotfuzz_vm::KernelSource::DebianDefault,
        };
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
