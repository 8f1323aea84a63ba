//! Boots real x86_64 guests under TCG (QEMU runs here; KVM does not) and checks ssh, QMP
//! plug/unplug and the failure paths. Guests are serialized: two TCG guests on two cores only
//! slow each other down.

use hotfuzz_vm::guest::GuestSpec;
use hotfuzz_vm::{Arch, Kernel, KernelSource, MachineConfig, Vm, VmOptions};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn tcg_options() -> VmOptions {
    let mut m = MachineConfig::new(Arch::X86_64);
    m.accel = hotfuzz_vm::AccelChoice::Tcg;
    VmOptions::new(m)
}

#[test]
fn boot_exec_plug_unplug_poweroff() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let kernel = Kernel::resolve(&KernelSource::DebianDefault, Arch::X86_64).unwrap();
    let image = GuestSpec::for_arch(Arch::X86_64).build(&kernel).unwrap();
    // The most permissive umask: the VM directory must be private anyway.
    // SAFETY: umask only sets the process's file mode mask.
    let old_umask = unsafe { libc::umask(0) };
    let t = Instant::now();
    let vm = Vm::boot(&kernel, &image, &tcg_options());
    unsafe { libc::umask(old_umask) };
    let vm = vm.unwrap();
    eprintln!("booted in {:?}: {:?}", t.elapsed(), vm.timings());
    assert_private(vm.dir());
    let out = vm.exec("uname -r; echo err >&2; exit 7").unwrap();
    assert_eq!(out.status, Some(7));
    assert_eq!(out.stdout_str().trim(), kernel.release.clone().unwrap());
    assert_eq!(out.stderr_str().trim(), "err");
    let t = Instant::now();
    for _ in 0..10 {
        vm.exec("true").unwrap();
    }
    eprintln!("exec round trip: {:?}", t.elapsed() / 10);
    let mem_before = mem_total_kib(&vm);
    vm.qmp()
        .set_virtio_mem_requested_size("vm0", 256 << 20)
        .unwrap();
    let size = vm
        .qmp()
        .wait_virtio_mem_settled("vm0", Duration::from_secs(60))
        .unwrap();
    assert_eq!(size, 256 << 20);
    let mem_after = wait_mem(&vm, |m| m >= mem_before + 256 * 1024 - 8 * 1024);
    assert!(
        mem_after >= mem_before + 250 * 1024,
        "{mem_before} -> {mem_after}"
    );
    vm.qmp().set_virtio_mem_requested_size("vm0", 0).unwrap();
    let size = vm
        .qmp()
        .wait_virtio_mem_settled("vm0", Duration::from_secs(120))
        .unwrap();
    assert_eq!(size, 0);
    let mem_end = wait_mem(&vm, |m| m < mem_after);
    assert!(mem_end <= mem_before + 1024, "{mem_before} -> {mem_end}");
    let pid = vm.pid();
    assert!(vm.poweroff(Duration::from_secs(30)));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

/// The VM directory is 0700 and nothing in it (QMP socket, logs, command line, keys) is
/// open to the group or others.
fn assert_private(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().permissions().mode();
    assert_eq!(mode(dir) & 0o777, 0o700, "{}", dir.display());
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = mode(&p);
        assert_eq!(m & 0o077, 0, "{} is mode {:o}", p.display(), m & 0o777);
        names.push(p.file_name().unwrap().to_string_lossy().into_owned());
    }
    for f in [
        "qmp.sock",
        "console.log",
        "qemu.cmdline",
        "qmp-events.log",
        "qemu.log",
    ] {
        assert!(names.iter().any(|n| n == f), "no {f} in {names:?}");
    }
}

fn mem_total_kib(vm: &Vm) -> u64 {
    let m = vm.run("cat /proc/meminfo").unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn wait_mem(vm: &Vm, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = mem_total_kib(vm);
        if ok(m) || Instant::now() > deadline {
            return m;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn default_kernel_and_image() -> (Kernel, hotfuzz_vm::BuiltImage) {
    let kernel = Kernel::resolve(&KernelSource::DebianDefault, Arch::X86_64).unwrap();
    let image = GuestSpec::for_arch(Arch::X86_64).build(&kernel).unwrap();
    (kernel, image)
}

fn assert_nothing_running(console_log: &std::path::Path) {
    assert!(
        hotfuzz_vm::process::live_children().is_empty(),
        "a QEMU is still registered"
    );
    // The error names a console log that exists and holds what the guest printed.
    assert!(console_log.is_file(), "{}", console_log.display());
    let dir = console_log.parent().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn guest_that_never_becomes_ready_times_out_cleanly() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (kernel, image) = default_kernel_and_image();
    let mut opts = tcg_options();
    // Shorter than any boot can be (the default guest is ready in about 2 s under TCG).
    opts.boot_timeout = Some(Duration::from_millis(400));
    let t = Instant::now();
    let e = Vm::boot(&kernel, &image, &opts).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let hotfuzz_vm::Error::Boot(b) = &e else {
        panic!("not a boot error: {e}")
    };
    assert_eq!(b.kind, hotfuzz_vm::BootFailure::Timeout);
    let msg = e.to_string();
    assert!(msg.contains("console log: "), "{msg}");
    assert!(msg.contains(&b.console_log.display().to_string()), "{msg}");
    assert_nothing_running(&b.console_log);
}

#[test]
fn kernel_panic_during_boot_is_reported_with_its_line() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (kernel, image) = default_kernel_and_image();
    let mut opts = tcg_options();
    // An explicit init= that cannot run makes the kernel panic.
    opts.machine.cmdline.extend([
        "rdinit=/nonexistent".to_string(),
        "init=/nonexistent".to_string(),
    ]);
    let e = Vm::boot(&kernel, &image, &opts).unwrap_err();
    let hotfuzz_vm::Error::Boot(b) = &e else {
        panic!("not a boot error: {e}")
    };
    assert_eq!(b.kind, hotfuzz_vm::BootFailure::KernelPanic, "{e}");
    assert!(b.message.contains("Kernel panic - not syncing"), "{e}");
    let log = std::fs::read_to_string(&b.console_log).unwrap();
    assert!(log.contains("/nonexistent"), "{log}");
    assert_nothing_running(&b.console_log);
}

#[test]
fn missing_qemu_binary_is_named() {
    let (kernel, image) = default_kernel_and_image();
    let mut opts = tcg_options();
    opts.machine.qemu = Some("/nonexistent/qemu-system-x86_64".into());
    let e = Vm::boot(&kernel, &image, &opts).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/qemu-system-x86_64"), "{e}");
    assert!(e.contains("apt-get install"), "{e}");
}

#[test]
fn wrong_arch_and_non_kernels_are_refused_before_qemu_starts() {
    let (kernel, _) = default_kernel_and_image();
    // Debian's amd64 bzImage offered as a ppc64le kernel.
    let e = Kernel::from_path(&kernel.image, None, None, Arch::Ppc64le)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is a kernel for x86_64, but the guest is ppc64le"),
        "{e}"
    );
    // The System.map is a text file, not a kernel.
    let map = kernel.system_map.clone().unwrap();
    let e = Kernel::from_path(&map, None, None, Arch::X86_64)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a kernel image"), "{e}");
    // A kernel module is an ELF but not a kernel.
    let dir = tempfile::tempdir().unwrap();
    let ko = dir.path().join("virtio_mem.ko");
    let idx = hotfuzz_vm::modules::ModuleIndex::scan(kernel.modules_dir.as_ref().unwrap()).unwrap();
    std::fs::write(
        &ko,
        hotfuzz_vm::modules::read_module(idx.path("virtio_mem").unwrap()).unwrap(),
    )
    .unwrap();
    let e = Kernel::from_path(&ko, None, None, Arch::X86_64)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a kernel image"), "{e}");
}

/// `accel: auto` on a host whose KVM fails (this one: nested KVM stops in the guest's
/// decompressor) falls back to TCG, and the failed KVM attempt's VM directory, with its 9 MB
/// initrd, does not stay behind: the failure was handled, so nobody reads it.
#[test]
fn a_failed_kvm_attempt_leaves_no_vm_directory_behind() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !hotfuzz_vm::accel::kvm_usable() {
        println!("skipped: /dev/kvm cannot be opened here, so `auto` never tries KVM");
        return;
    }
    let (kernel, image) = default_kernel_and_image();
    // Forget what an earlier run learnt about this host's KVM, so that `auto` tries it.
    let memo = hotfuzz_vm::cache::cache_dir().unwrap().join("accel.json");
    let _ = std::fs::remove_file(&memo);
    let parent = tempfile::tempdir().unwrap();
    let mut opts = VmOptions::new(MachineConfig::new(Arch::X86_64));
    opts.machine.accel = hotfuzz_vm::AccelChoice::Auto;
    opts.dir_parent = Some(parent.path().to_path_buf());
    let vm = Vm::boot(&kernel, &image, &opts).unwrap();
    let dirs: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    if vm.timings().fallbacks.is_empty() {
        println!("KVM works on this host: there was no failed attempt to clean up");
    } else {
        println!("fell back: {:?}", vm.timings().fallbacks);
    }
    assert_eq!(dirs, vec![vm.dir().to_path_buf()], "{dirs:?}");
    // And the live guest's goes with it.
    drop(vm);
    let left: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
