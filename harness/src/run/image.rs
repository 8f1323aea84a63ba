//! The guest image hotfuzz programs need: the default userspace and modules plus the static
//! executor (embedded in hotfuzz at build time) and the modules operations rely on.

use crate::run::runner::EXECUTOR_GUEST_PATH;
use anyhow::{bail, Result};
use hotfuzz_vm::guest::{ExtraFile, GuestSpec};
use hotfuzz_vm::image::Source;
use hotfuzz_vm::modules::ModuleRequest;
use hotfuzz_vm::Arch;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/executors.rs"));
}

/// The executor binary for `arch`.
pub fn executor(arch: Arch) -> Result<&'static [u8]> {
    match arch {
        Arch::X86_64 => Ok(embedded::EXECUTOR_X86_64),
        Arch::Ppc64le => {
            if embedded::EXECUTOR_PPC64LE.is_empty() {
                bail!(
                    "this hotfuzz was built without the ppc64le executor ({}); run ci/setup-cross.sh and rebuild",
                    embedded::EXECUTOR_PPC64LE_STATUS
                );
            }
            Ok(embedded::EXECUTOR_PPC64LE)
        }
    }
}

/// The executor for this host, written into the cache (for `repro.sh`, which drives
/// programs with it): `<cache>/executor/<hash>/hotfuzz-executor`.
pub fn host_executor() -> Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let bin = executor(Arch::X86_64)?;
    let hash = blake3::hash(bin).to_hex()[..16].to_string();
    let dir = hotfuzz_vm::cache::cache_dir()?.join("executor").join(hash);
    let path = dir.join("hotfuzz-executor");
    if !path.exists() {
        std::fs::create_dir_all(&dir)?;
        hotfuzz_vm::cache::atomic_write(&path, bin)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(path)
}

/// The guest spec for running programs on `arch`: default modules, brd (a RAM disk for
/// O_DIRECT), and the executor at [`EXECUTOR_GUEST_PATH`]. Without `with_executor` the image
/// is the plain userspace (for `hotfuzz vm` commands when no executor is available).
pub fn program_guest(arch: Arch, with_executor: bool) -> Result<GuestSpec> {
    let mut spec = GuestSpec::for_arch(arch);
    let mut brd = ModuleRequest::new("brd");
    brd.params = "rd_nr=1 rd_size=16384".into();
    spec.modules.push(brd);
    if with_executor {
        spec.extra_files.push(ExtraFile {
            guest_path: EXECUTOR_GUEST_PATH.into(),
            source: Source::Bytes(executor(arch)?.to_vec()),
            mode: 0o755,
        });
        spec.services.push(format!("{EXECUTOR_GUEST_PATH} serve"));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_executor_is_a_static_binary() {
        let e = executor(Arch::X86_64).unwrap();
        assert_eq!(&e[..4], b"\x7fELF");
        let needs = hotfuzz_vm::sysroot::elf_needs(e).unwrap();
        assert_eq!(needs.interp, None, "must not need a dynamic loader");
        assert!(needs.needed.is_empty(), "{:?}", needs.needed);
    }
}
