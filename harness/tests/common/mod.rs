//! Helpers the integration tests share. (Each test binary includes this module and uses part
//! of it.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The bug zoo's warn_reonline trigger: plug, then offline/online one block twice (7
/// operations; the third onlining fires the WARN).
pub const WARN_REONLINE: &str = "\
virtio_mem_resize(dev=0x0, size=0x10000000)
virtio_mem_wait(dev=0x0, ms=0x1388)
r0 = memblock_find(which=\"movable\", nth=0x0)
memblock_state(block=r0, state=\"offline\")
memblock_state(block=r0, state=\"online_movable\")
memblock_state(block=r0, state=\"offline\")
memblock_state(block=r0, state=\"online_movable\")
";

/// The files of `dir` (hidden ones left out), sorted; none when it does not exist.
pub fn dir_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Whether a process whose command line contains `name` is still running (a QEMU that
/// outlived what started it).
pub fn process_left(name: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The default kernel, the program guest's image and a TCG machine to boot them on (tests
/// adjust the machine before booting).
pub fn tcg_guest() -> (
    hotfuzz_vm::Kernel,
    hotfuzz_vm::guest::BuiltImage,
    hotfuzz_vm::MachineConfig,
) {
    use hotfuzz_vm::{AccelChoice, Arch, Kernel, KernelSource, MachineConfig};
    let kernel = Kernel::resolve(&KernelSource::DebianDefault, Arch::X86_64).unwrap();
    let image = hotfuzz::run::image::program_guest(Arch::X86_64, true)
        .unwrap()
        .build(&kernel)
        .unwrap();
    let mut m = MachineConfig::new(Arch::X86_64);
    m.accel = AccelChoice::Tcg;
    (kernel, image, m)
}

/// Polls `f` every 50 ms until it holds; fails the test after `timeout`.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "{what} within {timeout:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
