//! The guest flags every command that boots guests takes, turned into the library's typed
//! [`GuestConfig`]. `hotfuzz fuzz` takes the kernel flags only (the rest is in its profiles).

use anyhow::{Context, Result};
use hotfuzz::run::guest::GuestConfig;
use hotfuzz_vm::size::parse_size;
use hotfuzz_vm::{AccelChoice, Arch, KernelSource, VirtioMemSpec};
use std::path::PathBuf;
use std::time::Duration;

/// Which kernel, for which architecture, with which accelerator. Unset flags keep the
/// defaults (of the command, or of the configuration file for `hotfuzz fuzz`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KernelFlags {
    /// Guest architecture: x86_64 or ppc64le (powernv9). Default: x86_64.
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Kernel image (bzImage or vmlinux) or kernel build directory. Default: Debian's kernel.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Debian kernel package to use instead of the pinned default.
    #[arg(long, conflicts_with = "kernel")]
    pub kernel_package: Option<String>,
    /// Module directory matching --kernel (lib/modules/<release> or the build tree).
    #[arg(long, requires = "kernel")]
    pub modules: Option<PathBuf>,
    /// System.map matching --kernel.
    #[arg(long, requires = "kernel")]
    pub system_map: Option<PathBuf>,
    /// Accelerator: auto (tries KVM and falls back to TCG), kvm or tcg. Default: auto.
    #[arg(long)]
    pub accel: Option<AccelChoice>,
    /// Never run apt-get; print the command instead.
    #[arg(long)]
    pub no_install: bool,
}

impl KernelFlags {
    /// The kernel these flags select, if they select one.
    pub fn kernel_source(&self) -> Option<KernelSource> {
        match (&self.kernel, &self.kernel_package) {
            (Some(p), _) => Some(KernelSource::Path {
                path: p.clone(),
                modules: self.modules.clone(),
                system_map: self.system_map.clone(),
            }),
            (None, Some(pkg)) => Some(KernelSource::DebianPackage(pkg.clone())),
            (None, None) => None,
        }
    }
}

/// Guest selection and shape.
#[derive(Debug, Clone, clap::Args)]
pub struct GuestArgs {
    #[command(flatten)]
    pub kernel: KernelFlags,
    /// A virtio-mem device, e.g. size=4G,block=2M,node=0,requested=512M (repeatable). Default:
    /// one 4G device with nothing plugged (x86_64).
    #[arg(long = "virtio-mem", value_name = "SPEC")]
    pub virtio_mem: Vec<String>,
    /// No virtio-mem device at all.
    #[arg(long, conflicts_with = "virtio_mem")]
    pub no_virtio_mem: bool,
    /// Boot RAM.
    #[arg(long)]
    pub memory: Option<String>,
    /// maxmem (room for hot-added memory).
    #[arg(long)]
    pub maxmem: Option<String>,
    /// vCPUs.
    #[arg(long)]
    pub cpus: Option<u32>,
    /// NUMA nodes (boot RAM and CPUs are split evenly).
    #[arg(long)]
    pub nodes: Option<u32>,
    /// Extra kernel command line (repeatable; split at spaces).
    #[arg(long = "cmdline", value_name = "ARGS")]
    pub cmdline: Vec<String>,
    /// Extra module to load in the guest: a name from the kernel's modules or a .ko path
    /// (repeatable; NAME:PARAMS passes parameters).
    #[arg(long = "module", value_name = "MODULE")]
    pub module: Vec<String>,
    /// Load the bug zoo (a module with planted hotplug bugs) with these bugs armed
    /// (comma separated: warn_reonline, bug_double_cancel, badpage_offline, stuck_offline,
    /// race_walker; "none" loads it unarmed).
    #[arg(long, value_name = "BUGS")]
    pub bugzoo: Option<String>,
    /// QEMU binary (default: qemu-system-<arch> from PATH).
    #[arg(long)]
    pub qemu: Option<PathBuf>,
    /// Seconds from QEMU start until the guest must be ready.
    #[arg(long)]
    pub boot_timeout: Option<u64>,
    /// Keep the VM directory (console log, QEMU log, QMP events) afterwards.
    #[arg(long)]
    pub keep: bool,
}

fn size(flag: &str, v: &Option<String>) -> Result<Option<u64>> {
    v.as_deref()
        .map(|s| parse_size(s).map_err(anyhow::Error::msg))
        .transpose()
        .with_context(|| format!("--{flag}"))
}

impl GuestArgs {
    /// The architecture asked for.
    pub fn arch(&self) -> Arch {
        self.kernel.arch.unwrap_or(Arch::X86_64)
    }

    /// The typed set-up these flags describe.
    pub fn config(&self) -> Result<GuestConfig> {
        let mut g = GuestConfig::new(self.arch());
        if let Some(k) = self.kernel.kernel_source() {
            g.kernel = k;
        }
        if let Some(a) = self.kernel.accel {
            g.accel = a;
        }
        g.no_install = self.kernel.no_install;
        if self.no_virtio_mem {
            g.virtio_mem = Some(Vec::new());
        } else if !self.virtio_mem.is_empty() {
            g.virtio_mem = Some(
                self.virtio_mem
                    .iter()
                    .enumerate()
                    .map(|(i, s)| VirtioMemSpec::parse(s, i))
                    .collect::<Result<_, _>>()
                    .map_err(anyhow::Error::msg)
                    .context("--virtio-mem")?,
            );
        }
        g.memory = size("memory", &self.memory)?;
        g.maxmem = size("maxmem", &self.maxmem)?;
        g.cpus = self.cpus;
        g.nodes = self.nodes;
        for c in &self.cmdline {
            g.cmdline.extend(c.split_whitespace().map(str::to_string));
        }
        g.modules = self.module.clone();
        g.bugzoo = self.bugzoo.clone();
        g.qemu = self.qemu.clone();
        if self.boot_timeout == Some(0) {
            anyhow::bail!("--boot-timeout must be positive");
        }
        g.boot_timeout = self.boot_timeout.map(Duration::from_secs);
        g.keep = self.keep;
        g.machine()?;
        Ok(g)
    }
}
