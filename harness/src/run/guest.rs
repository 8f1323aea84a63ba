//! A guest set up for programs: which kernel, what machine, which modules and bug-zoo bugs,
//! turned into a kernel, a guest image and VM options, and booted. This is the one place that
//! knows what a guest that runs programs needs (the executor in the image, the hung task
//! detector's timeout on the command line), so the fuzzer, the reproducer and the commands
//! boot the same guest.

use super::runner::{boot_connected, Connected};
use anyhow::{bail, Context, Result};
use hotfuzz_vm::modules::ModuleRequest;
use hotfuzz_vm::{
    AccelChoice, Arch, BuiltImage, Kernel, KernelSource, MachineConfig, VirtioMemSpec, Vm,
    VmOptions,
};
use std::path::PathBuf;
use std::time::Duration;

/// The hung task detector's timeout in guests that run programs. Debian's 120 s is far longer
/// than an operation's deadline; a stuck operation should get the kernel's own report (which
/// names the function) soon after the harness notices it.
pub const HUNG_TASK_TIMEOUT: u64 = 10;

/// How a guest is set up: everything that decides what boots.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestConfig {
    /// Guest architecture.
    pub arch: Arch,
    /// The kernel.
    pub kernel: KernelSource,
    /// Accelerator.
    pub accel: AccelChoice,
    /// virtio-mem devices; `None` keeps the machine's default (one 4 GiB device on x86_64).
    pub virtio_mem: Option<Vec<VirtioMemSpec>>,
    /// Boot RAM in bytes (default: the machine's).
    pub memory: Option<u64>,
    /// maxmem in bytes.
    pub maxmem: Option<u64>,
    /// vCPUs.
    pub cpus: Option<u32>,
    /// NUMA nodes.
    pub nodes: Option<u32>,
    /// Extra kernel command line arguments.
    pub cmdline: Vec<String>,
    /// Extra modules: names from the kernel's tree or `.ko` paths, `NAME:PARAMS` for
    /// parameters.
    pub modules: Vec<String>,
    /// Bug-zoo bugs to arm (`""` loads the module unarmed), if the bug zoo is loaded.
    pub bugzoo: Option<String>,
    /// QEMU binary (default: `qemu-system-<arch>` from PATH).
    pub qemu: Option<PathBuf>,
    /// Time from QEMU start until the guest must be ready.
    pub boot_timeout: Option<Duration>,
    /// Keep the VM directory afterwards.
    pub keep: bool,
    /// Never run apt-get.
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

impl GuestConfig {
    /// The default guest for `arch` (what `hotfuzz vm boot` boots with no flags).
    pub fn new(arch: Arch) -> GuestConfig {
        GuestConfig {
            arch,
            kernel: KernelSource::DebianDefault,
            accel: AccelChoice::Auto,
            virtio_mem: None,
            memory: None,
            maxmem: None,
            cpus: None,
            nodes: None,
            cmdline: Vec::new(),
            modules: Vec::new(),
            bugzoo: None,
            qemu: None,
            boot_timeout: None,
            keep: false,
            no_install: false,
        }
    }

    /// The machine this set-up describes.
    pub fn machine(&self) -> Result<MachineConfig> {
        let mut m = MachineConfig::new(self.arch);
        m.accel = self.accel;
        if let Some(mem) = self.memory {
            m.memory = mem;
        }
        if self.maxmem.is_some() {
            m.maxmem = self.maxmem;
        }
        if let Some(c) = self.cpus {
            m.cpus = c;
        }
        if let Some(n) = self.nodes {
            m.numa_nodes = n;
        }
        if let Some(devs) = &self.virtio_mem {
            m.virtio_mem = devs.clone();
        }
        m.cmdline.extend(self.cmdline.iter().cloned());
        m.qemu = self.qemu.clone();
        m.validate()?;
        Ok(m)
    }

    /// The machine with what every program guest gets on its command line.
    pub fn program_machine(&self) -> Result<MachineConfig> {
        let mut m = self.machine()?;
        m.cmdline.push(format!(
            "sysctl.kernel.hung_task_timeout_secs={HUNG_TASK_TIMEOUT}"
        ));
        // Without a limit: a task still blocked is reported again every timeout, which is
        // how the judge tells a hang from a long wait (judge::slow). The default stops at 10.
        m.cmdline.push("sysctl.kernel.hung_task_warnings=-1".into());
        Ok(m)
    }

    /// Resolves the kernel, builds the image for running programs (the executor, the modules
    /// operations need, the bug zoo when asked for) and the VM options.
    pub fn prepare(&self) -> Result<Prepared> {
        self.prepare_image(true)
    }

    /// [`GuestConfig::prepare`] without the executor, for commands that only boot a guest
    /// (usable on a hotfuzz built without the executor for this architecture).
    pub fn prepare_plain(&self) -> Result<Prepared> {
        self.prepare_image(false)
    }

    fn prepare_image(&self, with_executor: bool) -> Result<Prepared> {
        if self.boot_timeout == Some(Duration::ZERO) {
            bail!("the boot timeout must be positive");
        }
        let machine = self.program_machine()?;
        let t = std::time::Instant::now();
        let kernel = Kernel::resolve(&self.kernel, self.arch)?;
        tracing::debug!("kernel resolved in {:?}", t.elapsed());
        let mut spec = crate::run::image::program_guest(self.arch, with_executor)?;
        spec.auto_install = !self.no_install;
        for m in &self.modules {
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
        options.boot_timeout = self.boot_timeout;
        options.keep_dir = self.keep;
        options.auto_install = !self.no_install;
        Ok(Prepared {
            kernel,
            image,
            options,
        })
    }
}

impl Prepared {
    /// Boots a guest named `name` (QEMU's `-name`, the VM directory's key comment).
    pub fn boot(&self, name: &str) -> Result<Vm> {
        Vm::boot(&self.kernel, &self.image, &self.named(name)).context("booting the guest")
    }

    /// Boots a guest named `name` and connects to its agent, booting once more when the
    /// first guest cannot be driven ([`boot_connected`]).
    pub fn boot_connected(&self, name: &str) -> Result<Connected> {
        boot_connected(&self.kernel, &self.image, &self.named(name))
    }

    fn named(&self, name: &str) -> VmOptions {
        let mut opts = self.options.clone();
        opts.name = name.to_string();
        opts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_guests_get_the_hung_task_timeout_on_the_command_line() {
        let mut g = GuestConfig::new(Arch::X86_64);
        g.cmdline = vec!["virtio_mem.force_bbm=1".into()];
        g.memory = Some(2 << 30);
        let m = g.program_machine().unwrap();
        assert_eq!(m.memory, 2 << 30);
        assert!(m.cmdline.iter().any(|c| c == "virtio_mem.force_bbm=1"));
        assert!(m.kernel_cmdline().contains(&format!(
            "sysctl.kernel.hung_task_timeout_secs={HUNG_TASK_TIMEOUT}"
        )));
        g.boot_timeout = Some(Duration::ZERO);
        assert!(g.prepare().is_err());
    }
}
