//! Programs on a ppc64le powernv guest (opt-in: downloads Debian's ppc64el packages, needs the
//! ppc64le executor from ci/setup-cross.sh, ~15 s of TCG boot). Run with
//! `HOTFUZZ_TEST_PPC64LE=1 cargo test -p hotfuzz --test ppc64le_programs`. With a kernel built
//! with CONFIG_PPC_MEMTRACE (`HOTFUZZ_PPC64LE_KERNEL=path/to/vmlinux`) memtrace runs for real;
//! with Debian's kernel it must report unsupported.

use hotfuzz::program::desc::Descriptions;
use hotfuzz::program::prog::Program;
use hotfuzz::run::image::program_guest;
use hotfuzz::run::runner::{boot_connected, RunOptions, Runner};
use hotfuzz_executor::protocol::Outcome;
use hotfuzz_vm::{Arch, Kernel, KernelSource, MachineConfig, VmOptions};
use std::time::Duration;

#[test]
fn memtrace_and_offlining_on_powernv() {
    if std::env::var_os("HOTFUZZ_TEST_PPC64LE").is_none() {
        eprintln!("skipped: set HOTFUZZ_TEST_PPC64LE=1 to run programs on a ppc64le powernv guest");
        return;
    }
    let source = match std::env::var_os("HOTFUZZ_PPC64LE_KERNEL") {
        Some(k) => KernelSource::Path {
            path: k.into(),
            modules: None,
            system_map: None,
        },
        None => KernelSource::DebianDefault,
    };
    let kernel = Kernel::resolve(&source, Arch::Ppc64le).unwrap();
    let has_memtrace = kernel.config_value("CONFIG_PPC_MEMTRACE").as_deref() == Some("y");
    let image = program_guest(Arch::Ppc64le, true)
        .unwrap()
        .build(&kernel)
        .unwrap();
    let mut m = MachineConfig::new(Arch::Ppc64le);
    if has_memtrace {
        // memtrace needs whole memory blocks per node (1 GiB blocks with this much RAM).
        m.memory = 8 << 30;
    }
    let c = boot_connected(&kernel, &image, &VmOptions::new(m)).unwrap();
    let vm = c.vm;
    let d = Descriptions::embedded();
    let log = tempfile::tempdir().unwrap();
    let mut runner = Runner::with_agent(&vm, c.agent, &log.path().join("run.log")).unwrap();
    let st = hotfuzz::run::probe::guest_state(&vm, runner.agent()).unwrap();
    let size = st.block_size;
    let text = format!(
        "r0 = mmap_anon(len=0x200000, thp=\"default\", populate=0x1, node=-0x1)\nr1 = pfn_of_map(map=r0, offset=0x0)\nkpageflags_read(pfn=r1, count=0x10)\nmemtrace_enable(size=0x{size:x})\nmemtrace_read(node=0x0, offset=0x0, len=0x1000)\nmemtrace_enable(size=0x0)\n"
    );
    let p = Program::parse(&text, &d).unwrap();
    let r = runner.run(&d, &p, &RunOptions::default()).unwrap();
    assert!(r.lost.is_none(), "{:?}", r.lost);
    for i in 0..3 {
        assert!(
            matches!(r.ops[i].outcome, Some(Outcome::Ok { .. })),
            "{:?}",
            r.ops[i]
        );
    }
    for i in 3..6 {
        let o = r.ops[i].outcome.clone().unwrap();
        if has_memtrace {
            assert!(matches!(o, Outcome::Ok { .. }), "op {i}: {o:?}");
        } else {
            assert!(matches!(o, Outcome::Unsupported { .. }), "op {i}: {o:?}");
        }
    }
    drop(runner);
    assert!(vm.poweroff(Duration::from_secs(60)));
}
