//! ppc64le powernv9 boot (opt-in: it downloads Debian's ppc64el packages and takes ~15 s of
//! TCG). Run with `HOTFUZZ_TEST_PPC64LE=1 cargo test -p hotfuzz-vm --test ppc64le`.

use hotfuzz_vm::guest::GuestSpec;
use hotfuzz_vm::{Arch, Kernel, KernelSource, MachineConfig, Vm, VmOptions};
use std::time::Duration;

#[test]
fn powernv_boots_to_ssh() {
    if std::env::var_os("HOTFUZZ_TEST_PPC64LE").is_none() {
        eprintln!("skipped: set HOTFUZZ_TEST_PPC64LE=1 to boot a ppc64le powernv guest");
        return;
    }
    let kernel = Kernel::resolve(&KernelSource::DebianDefault, Arch::Ppc64le).unwrap();
    let image = GuestSpec::for_arch(Arch::Ppc64le).build(&kernel).unwrap();
    let vm = Vm::boot(
        &kernel,
        &image,
        &VmOptions::new(MachineConfig::new(Arch::Ppc64le)),
    )
    .unwrap();
    eprintln!("powernv boot: {:?}", vm.timings());
    assert_eq!(vm.run("uname -m").unwrap().trim(), "ppc64le");
    let cpuinfo = vm.run("cat /proc/cpuinfo").unwrap();
    assert!(cpuinfo.contains("PowerNV"), "{cpuinfo}");
    let block = vm
        .run("cat /sys/devices/system/memory/block_size_bytes")
        .unwrap();
    assert!(u64::from_str_radix(block.trim(), 16).unwrap() > 0);
    assert!(vm.poweroff(Duration::from_secs(60)));
}
