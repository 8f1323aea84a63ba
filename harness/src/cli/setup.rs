//! `hotfuzz setup`: install host packages and fetch kernels ahead of time.

use anyhow::Result;
use hotfuzz_vm::{Arch, Kernel, KernelSource};

/// Arguments of `hotfuzz setup`.
#[derive(Debug, clap::Args)]
pub struct SetupArgs {
    /// Also prepare the ppc64le guest parts (foreign packages, kernel).
    #[arg(long)]
    pub ppc64le: bool,
    /// Make a kernel tree from Debian's linux-source package (a git repository with one
    /// commit, in the cache) and print its path.
    #[arg(long)]
    pub kernel_source: bool,
    /// Only make the kernel tree (skip the guest kernels and images).
    #[arg(long, requires = "kernel_source")]
    pub only: bool,
}

/// `hotfuzz setup`: everything a first run would do, ahead of time.
pub fn run(a: SetupArgs) -> Result<i32> {
    if a.kernel_source {
        let t = hotfuzz::build::source::ensure_tree(hotfuzz::build::source::DEFAULT_SERIES)?;
        outln!("kernel tree: {}", t.display())?;
        if a.only {
            return Ok(0);
        }
    }
    let mut arches = vec![Arch::X86_64];
    if a.ppc64le {
        arches.push(Arch::Ppc64le);
    }
    for arch in arches {
        let m = hotfuzz_vm::MachineConfig::new(arch);
        let qemu = hotfuzz_vm::vm::find_qemu(&m, true)?;
        let k = Kernel::resolve(&KernelSource::DebianDefault, arch)?;
        let with_exec = hotfuzz::run::image::executor(arch).is_ok();
        let img = hotfuzz::run::image::program_guest(arch, with_exec)?.build(&k)?;
        outln!(
            "{arch}: {} ({}), image {} ({} modules), {}",
            k.origin,
            k.release.as_deref().unwrap_or("?"),
            img.path.display(),
            img.modules.len(),
            qemu.display()
        )?;
    }
    Ok(0)
}
