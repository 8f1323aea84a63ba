//! Flags shared by every command that boots guests, and turning them into a kernel, an image
//! and VM options.

use anyhow::{bail, Context, Result};
use hotfuzz_vm::guest::GuestSpec;
use hotfuzz_vm::modules::ModuleRequest;
use hotfuzz_vm::size::parse_size;
use hotfuzz_vm::{
    AccelChoice, Arch, BuiltImage, Kernel, KernelSource, MachineConfig, VirtioMemSpec, VmOptions,
};
use std::path::PathBuf;
use std::time::Duration;

/// Guest selection and shape.
#[derive(Debug, Clone, clap::Args)]
pub struct GuestArgs {
    /// Guest architecture: x86_64 or ppc64le (powernv9).
    #[arg(long, default_value = "x86_64")]
    pub arch: Arch,
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
    /// Accelerator: auto tries KVM and falls back to TCG.
    #[arg(long, default_value = "auto")]
    pub accel: AccelChoice,
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
    /// (comma separated: warn_reonline, bug_double_cancel, badpage_offline, stuck_offline;
    /// "none" loads it unarmed).
    #[arg(long, value_name = "BUGS")]
    pub bugzoo: Option<String>,
    /// QEMU binary (default: qemu-system-<arch> from PATH).
    #[arg(long)]
    pub qemu: Option<PathBuf>,
    /// Seconds from QEMU start until ssh must work.
    #[arg(long)]
    pub boot_timeout: Option<u64>,
    /// Keep the VM directory (console log, QEMU log, QMP events) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Never run apt-get; print the command instead.
    #[arg(long)]
    pub no_install: bool,
}

/// Everything needed to boot.
pub struct Prepared {
    /// The kernel.
    pub kernel: Kernel,
    /// The guest image.
    pub image: BuiltImage,
    /// VM options.
    pub options: VmOptions,
}

impl GuestArgs {
    /// The flags' defaults (what `hotfuzz vm boot` does with none given).
    pub fn default_for(arch: Arch) -> GuestArgs {
        GuestArgs {
            arch,
            kernel: None,
            kernel_package: None,
            modules: None,
            system_map: None,
            accel: AccelChoice::Auto,
            virtio_mem: Vec::new(),
            no_virtio_mem: false,
            memory: None,
            maxmem: None,
            cpus: None,
            nodes: None,
            cmdline: Vec::new(),
            module: Vec::new(),
            bugzoo: None,
            qemu: None,
            boot_timeout: None,
            keep: false,
            no_install: false,
        }
    }

    /// The kernel these flags select.
    pub fn kernel_source(&self) -> KernelSource {
        match (&self.kernel, &self.kernel_package) {
            (Some(p), _) => KernelSource::Path {
                path: p.clone(),
                modules: self.modules.clone(),
                system_map: self.system_map.clone(),
            },
            (None, Some(pkg)) => KernelSource::DebianPackage(pkg.clone()),
            (None, None) => KernelSource::DebianDefault,
        }
    }

    /// The machine these flags describe.
    pub fn machine(&self) -> Result<MachineConfig> {
        let mut m = MachineConfig::new(self.arch);
        m.accel = self.accel;
        if let Some(mem) = &self.memory {
            m.memory = parse_size(mem)
                .map_err(anyhow::Error::msg)
                .context("--memory")?;
        }
        if let Some(mx) = &self.maxmem {
            m.maxmem = Some(
                parse_size(mx)
                    .map_err(anyhow::Error::msg)
                    .context("--maxmem")?,
            );
        }
        if let Some(c) = self.cpus {
            m.cpus = c;
        }
        if let Some(n) = self.nodes {
            m.numa_nodes = n;
        }
        if self.no_virtio_mem {
            m.virtio_mem.clear();
        } else if !self.virtio_mem.is_empty() {
            m.virtio_mem = self
                .virtio_mem
                .iter()
                .enumerate()
                .map(|(i, s)| VirtioMemSpec::parse(s, i))
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::msg)
                .context("--virtio-mem")?;
        }
        for c in &self.cmdline {
            m.cmdline.extend(c.split_whitespace().map(str::to_string));
        }
        m.qemu = self.qemu.clone();
        m.validate()?;
        Ok(m)
    }

    /// Resolves the kernel, builds the image (plus `extra` files) and the VM options.
    pub fn prepare(&self, extra: GuestSpec) -> Result<Prepared> {
        let machine = self.machine()?;
        let t = std::time::Instant::now();
        let kernel = Kernel::resolve(&self.kernel_source(), self.arch)?;
        tracing::debug!("kernel resolved in {:?}", t.elapsed());
        let mut spec = extra;
        spec.auto_install = !self.no_install;
        for m in &self.module {
            let (name, params) = m.split_once(':').unwrap_or((m.as_str(), ""));
            let req = if name.ends_with(".ko") || name.contains('/') {
                ModuleRequest::file(std::path::Path::new(name), params)?
            } else {
                let mut r = ModuleRequest::new(name);
                r.params = params.to_string();
                r
            };
            spec.modules.push(req);
        }
        let t = std::time::Instant::now();
        if let Some(bugs) = &self.bugzoo {
            let bugs = if bugs == "none" { "" } else { bugs.as_str() };
            spec.modules
                .push(crate::run::bugzoo::module(&kernel, bugs)?);
        }
        let image = spec.build(&kernel)?;
        tracing::debug!("image built in {:?}", t.elapsed());
        if !image.missing_modules.is_empty() {
            eprintln!(
                "hotfuzz: kernel lacks modules: {} (continuing without them)",
                image.missing_modules.join(", ")
            );
        }
        let mut options = VmOptions::new(machine);
        options.boot_timeout = self.boot_timeout.map(Duration::from_secs);
        options.keep_dir = self.keep;
        options.auto_install = !self.no_install;
        if self.boot_timeout == Some(0) {
            bail!("--boot-timeout must be positive");
        }
        Ok(Prepared {
            kernel,
            image,
            options,
        })
    }
}
