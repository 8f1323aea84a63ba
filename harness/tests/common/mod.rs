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

/// A process as /proc/PID/stat shows it.
#[derive(Debug, Clone)]
pub struct ProcStat {
    /// Command name.
    pub comm: String,
    /// State letter (`Z`: a zombie).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
}

/// /proc/PID/stat of `pid`, when it exists.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let mut f = stat[close + 2..].split_whitespace();
    Some(ProcStat {
        comm: stat[open + 1..close].to_string(),
        state: f.next()?.chars().next()?,
        ppid: f.next()?.parse().ok()?,
    })
}

/// Every process as (pid, stat).
pub fn all_processes() -> Vec<(u32, ProcStat)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter_map(|pid| proc_stat(pid).map(|s| (pid, s)))
        .collect()
}
