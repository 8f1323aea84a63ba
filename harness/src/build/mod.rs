//! Kernel builds: a tree (git at a commit, a git work tree as it is, or an unpacked source
//! directory), an architecture, a base config and fragments in; a cached kernel entry out
//! that every command boots with `--kernel DIR`.
//!
//! ```text
//! TreeSpec ──tree::prepare──> Checkout (src, state)
//! base config + fragments ──merge──> .config ──olddefconfig──> final config ──check──> ok?
//! key = (tree state, final config, compiler, arch) ──cache hit?──> KernelEntry
//!                           └─ make -jN in the kept O= dir (ccache) ──install──> KernelEntry
//! ```
//!
//! A cache entry (`<cache>/kernels/<key>/`) is written into a temporary directory and renamed
//! into place, so a killed build leaves a kept `O=` directory to resume from but never a
//! half-written entry. The entry is laid out like a build directory (`arch/x86/boot/bzImage`
//! or `vmlinux`, `System.map`, `.config`, the modules, and an external-module build tree), so
//! `Kernel::from_path` and the bug zoo's module build take it as they are.
//!
//! This stage uses no other stage of hotfuzz (`tests/layering.rs`).

pub mod check;
pub mod fragment;
pub mod git;
pub mod kconfig;
pub mod make;
pub mod source;
pub mod tree;

use anyhow::{bail, Context, Result};
use fragment::{read_config, Fragment, Merged};
use hotfuzz_vm::Arch;
use make::Make;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
pub use tree::TreeSpec;

/// Bumped when the build recipe changes what an entry holds.
const RECIPE: &str = "hotfuzz-build-1";

/// Where the base config comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    /// The architecture's defconfig (`defconfig` on x86_64, `powernv_defconfig` on ppc64le).
    Defconfig,
    /// The running Debian kernel's config (`/boot/config-$(uname -r)`), else the config of
    /// hotfuzz's default Debian kernel package for the architecture.
    Debian,
    /// A config file.
    File(PathBuf),
}

impl std::str::FromStr for Base {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Base, Self::Err> {
        Ok(match s {
            "defconfig" => Base::Defconfig,
            "debian" => Base::Debian,
            p => Base::File(PathBuf::from(p)),
        })
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The tree.
    pub tree: TreeSpec,
    /// Guest architecture.
    pub arch: Arch,
    /// Base config.
    pub base: Base,
    /// Fragments after hotfuzz's guest fragments: shipped names (`slim`, `debug`,
    /// `powernv`) or paths.
    pub fragments: Vec<String>,
    /// Parallel make jobs (0: one per CPU).
    pub jobs: usize,
    /// Use ccache when it is installed.
    pub ccache: bool,
}

impl BuildRequest {
    /// A request for `tree` with the architecture's default profile (`slim` on x86_64,
    /// `powernv` on ppc64le).
    pub fn new(tree: TreeSpec, arch: Arch) -> BuildRequest {
        BuildRequest {
            tree,
            arch,
            base: Base::Defconfig,
            fragments: vec![default_profile(arch).to_string()],
            jobs: 0,
            ccache: true,
        }
    }
}

/// The profile fragments used when none are named.
pub fn default_profile(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "slim",
        Arch::Ppc64le => "powernv",
    }
}

/// The guest fragments every build of `arch` starts with.
pub fn guest_fragments(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::X86_64 => &["guest", "guest-x86_64"],
        Arch::Ppc64le => &["guest"],
    }
}

/// A built kernel in the cache.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KernelEntry {
    /// The entry directory: pass it as `--kernel`.
    pub dir: PathBuf,
    /// The cache key.
    pub key: String,
    /// Architecture.
    pub arch: Arch,
    /// Kernel release (`uname -r`).
    pub release: String,
    /// The tree and its state.
    pub tree: TreeSpec,
    /// The tree's state (commit id, commit + changes hash, or files hash).
    pub state: String,
    /// Base config and fragments, as asked for.
    pub base: Base,
    /// Fragments, as asked for.
    pub fragments: Vec<String>,
    /// `gcc --version`'s first line.
    pub compiler: String,
    /// Seconds spent in make (0 for a cache hit).
    pub build_secs: f64,
    /// The build log (in the kept build directory's log folder).
    pub log: PathBuf,
    /// Whether this came from the cache without building.
    #[serde(default)]
    pub cached: bool,
}

impl KernelEntry {
    /// The image QEMU boots (bzImage on x86_64, vmlinux on ppc64le).
    pub fn image(&self) -> PathBuf {
        match self.arch {
            Arch::X86_64 => self.dir.join("arch/x86/boot/bzImage"),
            Arch::Ppc64le => self.dir.join("vmlinux"),
        }
    }

    /// The kernel source `--kernel DIR` gives.
    pub fn kernel_source(&self) -> hotfuzz_vm::KernelSource {
        hotfuzz_vm::KernelSource::Path {
            path: self.dir.clone(),
            modules: None,
            system_map: None,
        }
    }

    /// Reads an entry's `build.json`.
    pub fn load(dir: &Path) -> Result<KernelEntry> {
        let p = dir.join("build.json");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let mut e: KernelEntry =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        e.dir = dir.to_path_buf();
        Ok(e)
    }
}

/// How a build went, step by step.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BuildTimes {
    /// Checking out the tree.
    pub checkout: Duration,
    /// Making and checking the config.
    pub config: Duration,
    /// make itself.
    pub make: Duration,
    /// Writing the cache entry.
    pub install: Duration,
}

fn srcarch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86",
        Arch::Ppc64le => "powerpc",
    }
}

/// The `CC` that make runs with these variables: `CC=` itself, or `CROSS_COMPILE`'s gcc.
fn target_cc(vars: &[String]) -> String {
    let var = |k: &str| {
        vars.iter()
            .find_map(|v| v.strip_prefix(k).map(str::to_string))
    };
    var("CC=").unwrap_or_else(|| format!("{}gcc", var("CROSS_COMPILE=").unwrap_or_default()))
}

/// The C compiler for `arch` and its make variables.
fn toolchain(arch: Arch) -> (String, Vec<String>) {
    let cross = Arch::host() != Some(arch);
    match arch {
        Arch::X86_64 if !cross => ("gcc".into(), vec!["ARCH=x86_64".into()]),
        Arch::X86_64 => (
            "x86_64-linux-gnu-gcc".into(),
            vec![
                "ARCH=x86_64".into(),
                "CROSS_COMPILE=x86_64-linux-gnu-".into(),
            ],
        ),
        Arch::Ppc64le if !cross => ("gcc".into(), vec!["ARCH=powerpc".into()]),
        Arch::Ppc64le => (
            "powerpc64le-linux-gnu-gcc".into(),
            vec![
                "ARCH=powerpc".into(),
                "CROSS_COMPILE=powerpc64le-linux-gnu-".into(),
            ],
        ),
    }
}

fn compiler_version(cc: &str) -> Result<String> {
    let o = std::process::Command::new(cc)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "running {cc} (install it: {})",
                if cc.starts_with("powerpc64le") {
                    "apt-get install gcc-powerpc64le-linux-gnu"
                } else {
                    "apt-get install build-essential"
                }
            )
        })?;
    if !o.status.success() {
        bail!("{cc} --version failed");
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// The base config's text, generated in the config directory when it is a defconfig.
fn base_config(req: &BuildRequest, mk: &Make, log: &Path) -> Result<Fragment> {
    match &req.base {
        Base::Defconfig => {
            let target = match req.arch {
                Arch::X86_64 => "defconfig",
                Arch::Ppc64le => "powernv_defconfig",
            };
            mk.quiet(&[target], &[], log)
                .with_context(|| format!("make {target}"))?;
            Fragment::read(&mk.obj.join(".config"))
        }
        Base::Debian => {
            let running = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|r| PathBuf::from(format!("/boot/config-{}", r.trim())))
                .filter(|p| p.is_file() && Arch::host() == Some(req.arch));
            let path = match running {
                Some(p) => p,
                None => {
                    let k = hotfuzz_vm::Kernel::resolve(
                        &hotfuzz_vm::KernelSource::DebianDefault,
                        req.arch,
                    )?;
                    k.config
                        .context("the Debian kernel package has no config file")?
                }
            };
            Fragment::read(&path)
        }
        Base::File(p) => Fragment::read(p),
    }
}

/// A short readable name of the profile: `slim`, `slim+debug`, `file-1a2b`.
fn profile_name(req: &BuildRequest, frags: &[Fragment]) -> String {
    let base = match &req.base {
        Base::Defconfig => String::new(),
        Base::Debian => "debian+".into(),
        Base::File(_) => "file+".into(),
    };
    let names: Vec<String> = req
        .fragments
        .iter()
        .map(|f| {
            if fragment::SHIPPED.iter().any(|(n, _)| n == f) {
                f.clone()
            } else {
                Path::new(f)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "fragment".into())
            }
        })
        .collect();
    let mut h = blake3::Hasher::new();
    for f in frags {
        h.update(f.text.as_bytes());
    }
    if let Base::File(p) = &req.base {
        h.update(p.as_os_str().as_encoded_bytes());
    }
    format!("{base}{}-{}", names.join("+"), &h.finalize().to_hex()[..8])
}

/// The build cache key: the tree's state, the final config (after olddefconfig, so two
/// fragment sets that end in the same config share a kernel), the compiler and the
/// architecture.
pub fn cache_key(state: &str, final_config: &str, compiler: &str, arch: Arch) -> String {
    let mut h = blake3::Hasher::new();
    for part in [RECIPE, state, final_config, compiler, arch.name()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().to_hex()[..24].to_string()
}

/// Builds (or takes from the cache) the kernel `req` asks for.
pub fn build(req: &BuildRequest) -> Result<(KernelEntry, BuildTimes)> {
    let mut times = BuildTimes::default();
    let t = Instant::now();
    let checkout = tree::prepare(&req.tree)?;
    times.checkout = t.elapsed();
    let t = Instant::now();
    let (cc, mut vars) = toolchain(req.arch);
    let compiler = compiler_version(&cc)?;
    let mut names: Vec<String> = guest_fragments(req.arch)
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.extend(req.fragments.iter().cloned());
    let frags = names
        .iter()
        .map(|n| Fragment::load(n))
        .collect::<Result<Vec<_>>>()?;
    let profile = profile_name(req, &frags);
    let cache = hotfuzz_vm::cache::cache_dir()?;
    let obj_root = cache.join("build/obj");
    let name = format!("{}-{}-{profile}", checkout.tree_id, req.arch.name());
    let obj = obj_root.join(&name);
    let kobj = obj_root.join(format!("{name}.kconfig"));
    let logs = cache.join("build/logs");
    for d in [&obj, &kobj, &logs] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let _lock = hotfuzz_vm::cache::FileLock::acquire(&obj.with_extension("lock"))?;
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let log = logs.join(format!("{name}-{stamp}.log"));

    let use_ccache = req.ccache && have("ccache");
    let mut env: Vec<(String, OsString)> = vec![
        // The same sources give the same objects: no host, user or time in the image.
        ("KBUILD_BUILD_USER".into(), "hotfuzz".into()),
        ("KBUILD_BUILD_HOST".into(), "hotfuzz".into()),
        (
            "KBUILD_BUILD_TIMESTAMP".into(),
            "Thu Jan  1 00:00:00 UTC 1970".into(),
        ),
    ];
    if use_ccache {
        vars.push(format!("CC=ccache {cc}"));
        env.push((
            "CCACHE_DIR".into(),
            std::env::var_os("CCACHE_DIR").unwrap_or_else(|| cache.join("ccache").into()),
        ));
        env.push(("CCACHE_NOHASHDIR".into(), "1".into()));
        env.push(("CCACHE_MAXSIZE".into(), "20G".into()));
    }
    let jobs = if req.jobs == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        req.jobs
    };
    let kmake = Make {
        src: checkout.src.clone(),
        obj: kobj.clone(),
        vars: vars.clone(),
        env: env.clone(),
        jobs,
    };
    // The config is made in a directory of its own, so the build directory's .config (and
    // with it every object's dependencies) changes only when the config really does.
    let base = base_config(req, &kmake, &log)?;
    let merged = Merged::new(&base, &frags);
    for o in &merged.overrides {
        tracing::debug!(
            "CONFIG_{} {} -> {} at {}",
            o.name,
            o.was.0,
            o.now.0,
            o.now.1
        );
    }
    let cfg_path = kobj.join(".config");
    hotfuzz_vm::cache::atomic_write(&cfg_path, merged.to_config().as_bytes())?;
    kmake
        .quiet(&["olddefconfig"], &[], &log)
        .context("make olddefconfig")?;
    let final_text = std::fs::read_to_string(&cfg_path)?;
    let final_cfg = read_config(&final_text);
    let kc = kconfig::Kconfig::load(&checkout.src, srcarch(req.arch));
    let result = check::check(&merged, &final_cfg, &kc);
    for (s, got) in &result.forced_on {
        eprintln!(
            "hotfuzz build: note: {}: CONFIG_{} is unset there but ended up {got} (selected by another option)",
            s.origin, s.name
        );
    }
    if !result.dropped.is_empty() {
        bail!(
            "the config lost {} option(s) the fragments require:\n  {}",
            result.dropped.len(),
            result
                .dropped
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    times.config = t.elapsed();

    let key = cache_key(&checkout.state, &final_text, &compiler, req.arch);
    let kernels = cache.join("kernels");
    std::fs::create_dir_all(&kernels)?;
    let dest = kernels.join(&key);
    if dest.join("build.json").is_file() {
        let mut e = KernelEntry::load(&dest)?;
        e.cached = true;
        e.build_secs = 0.0;
        return Ok((e, times));
    }

    // Only a real change of config touches the build directory's .config.
    let obj_cfg = obj.join(".config");
    if std::fs::read_to_string(&obj_cfg).ok().as_deref() != Some(final_text.as_str()) {
        hotfuzz_vm::cache::atomic_write(&obj_cfg, final_text.as_bytes())?;
    }
    let mk = Make {
        obj: obj.clone(),
        ..kmake
    };
    let modules = final_cfg.get("MODULES") == Some(&fragment::Value::Yes);
    let image_target = match req.arch {
        Arch::X86_64 => "bzImage",
        Arch::Ppc64le => "vmlinux",
    };
    let mut targets = vec![image_target];
    if modules {
        targets.push("modules");
    }
    let what = format!(
        "{} {} at {}",
        req.arch,
        profile.rsplit_once('-').map(|p| p.0).unwrap_or(&profile),
        checkout
            .commit
            .as_deref()
            .map(|c| &c[..c.len().min(12)])
            .unwrap_or("the tree as it is")
    );
    let t = Instant::now();
    mk.quiet(&["olddefconfig"], &[], &log)?;
    mk.build(&targets, &[], &log, &what)
        .with_context(|| format!("building {what}"))?;
    times.make = t.elapsed();

    let t = Instant::now();
    let release = std::fs::read_to_string(obj.join("include/config/kernel.release"))
        .context("the build wrote no include/config/kernel.release")?
        .trim()
        .to_string();
    let entry = KernelEntry {
        dir: dest.clone(),
        key: key.clone(),
        arch: req.arch,
        release,
        tree: req.tree.clone(),
        state: checkout.state.clone(),
        base: req.base.clone(),
        fragments: req.fragments.clone(),
        compiler,
        build_secs: times.make.as_secs_f64(),
        log: log.clone(),
        cached: false,
    };
    install(&mk, &entry, modules, &log)?;
    times.install = t.elapsed();
    Ok((entry, times))
}

/// Writes the entry: a temporary directory beside it, renamed into place at the end.
fn install(mk: &Make, entry: &KernelEntry, modules: bool, log: &Path) -> Result<()> {
    let kernels = entry.dir.parent().context("entry has a parent")?;
    clean_stale_temps(kernels);
    let tmp = kernels.join(format!(".tmp-{}-{}", entry.key, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let res = (|| -> Result<()> {
        let obj = &mk.obj;
        let mut files = vec!["vmlinux", "System.map", ".config"];
        if entry.arch == Arch::X86_64 {
            files.push("arch/x86/boot/bzImage");
        }
        if modules {
            // The tree external modules (the bug zoo) build against.
            let script = mk.src.join("scripts/package/install-extmod-build");
            if script.is_file() {
                let cmd = format!(
                    "{} {}",
                    shlex::try_quote(&script.to_string_lossy())?,
                    shlex::try_quote(&tmp.to_string_lossy())?
                );
                let mut vars = vec![format!("KBUILD_RUN_COMMAND={cmd}")];
                if Arch::host() != Some(entry.arch) {
                    // The script rebuilds the tree's host programs with CC when CC and
                    // HOSTCC differ, for a tree installed on the target. This tree stays on
                    // this host, where the bug zoo is cross-built against it: its host
                    // programs are the ones already built, so HOSTCC is made CC's twin.
                    vars.push(format!("HOSTCC={}", target_cc(&mk.vars)));
                }
                mk.quiet(&["run-command"], &vars, log)
                    .context("writing the external-module build tree")?;
            }
            let mods = tmp.join(".modules");
            mk.quiet(
                &["modules_install"],
                &[
                    format!("INSTALL_MOD_PATH={}", mods.display()),
                    "INSTALL_MOD_STRIP=1".into(),
                    "DEPMOD=true".into(),
                ],
                log,
            )
            .context("make modules_install")?;
            let rel = mods.join("lib/modules").join(&entry.release);
            if rel.is_dir() {
                for e in std::fs::read_dir(&rel)? {
                    let e = e?;
                    let name = e.file_name();
                    if name == "build" || name == "source" {
                        continue;
                    }
                    std::fs::rename(e.path(), tmp.join(&name))?;
                }
            }
            std::fs::remove_dir_all(&mods)?;
            files.push("Module.symvers");
        }
        for f in files {
            let from = obj.join(f);
            let to = tmp.join(f);
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        }
        let json = serde_json::to_string_pretty(entry)?;
        std::fs::write(tmp.join("build.json"), json)?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, &entry.dir) {
        Ok(()) => Ok(()),
        // Another hotfuzz installed the same entry meanwhile: keep theirs.
        Err(_) if entry.dir.join("build.json").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e).with_context(|| format!("installing {}", entry.dir.display()))
        }
    }
}

/// Removes temporary entries whose writer is gone (a killed build).
fn clean_stale_temps(kernels: &Path) {
    let Ok(rd) = std::fs::read_dir(kernels) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".tmp-")
            .and_then(|r| r.rsplit('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Every entry in the cache, newest first.
pub fn list_entries() -> Result<Vec<KernelEntry>> {
    let dir = hotfuzz_vm::cache::cache_dir()?.join("kernels");
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            if e.path().join("build.json").is_file() {
                if let Ok(k) = KernelEntry::load(&e.path()) {
                    let t = e.metadata().and_then(|m| m.modified()).ok();
                    out.push((t, k));
                }
            }
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(out.into_iter().map(|(_, k)| k).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_compiler_is_cc_or_the_cross_gcc() {
        let (cc, mut vars) = toolchain(Arch::Ppc64le);
        if Arch::host() != Some(Arch::Ppc64le) {
            assert_eq!(target_cc(&vars), "powerpc64le-linux-gnu-gcc");
        }
        assert_eq!(target_cc(&vars), cc);
        vars.push(format!("CC=ccache {cc}"));
        assert_eq!(target_cc(&vars), format!("ccache {cc}"));
        assert_eq!(target_cc(&["ARCH=x86_64".into()]), "gcc");
    }

    #[test]
    fn the_cache_key_follows_each_input() {
        let cfg = "CONFIG_MEMORY_HOTPLUG=y\n";
        let gcc = "gcc (Debian 12.2.0-14) 12.2.0";
        let k = cache_key("90025e31d58f", cfg, gcc, Arch::X86_64);
        assert_eq!(k.len(), 24);
        assert_eq!(k, cache_key("90025e31d58f", cfg, gcc, Arch::X86_64));
        let others = [
            cache_key("90025e31d58e", cfg, gcc, Arch::X86_64),
            cache_key(
                "90025e31d58f",
                "CONFIG_MEMORY_HOTPLUG=n\n",
                gcc,
                Arch::X86_64,
            ),
            cache_key(
                "90025e31d58f",
                cfg,
                "gcc (Debian 12.2.0-15) 12.2.0",
                Arch::X86_64,
            ),
            cache_key("90025e31d58f", cfg, gcc, Arch::Ppc64le),
            // Parts are length-prefixed: moving a byte from one part to the next changes it.
            cache_key("90025e31d58", &format!("f{cfg}"), gcc, Arch::X86_64),
        ];
        for o in &others {
            assert_ne!(&k, o);
        }
    }

    #[test]
    fn base_names_parse() {
        assert_eq!("defconfig".parse::<Base>().unwrap(), Base::Defconfig);
        assert_eq!("debian".parse::<Base>().unwrap(), Base::Debian);
        assert_eq!(
            "my.config".parse::<Base>().unwrap(),
            Base::File("my.config".into())
        );
    }
}
