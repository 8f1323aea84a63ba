//! Snapshot resets on a real guest (TCG): a restored guest is the guest that was saved
//! (memory blocks, virtio-mem sizes, the executor's results for the same program), the agent's
//! channel comes back at once, and a guest is restored after a kernel panic, after it stopped
//! answering, and after QEMU was killed. Snapshot files are private and gone afterwards.

mod common;

use hotfuzz::program::desc::Descriptions;
use hotfuzz::program::prog::Program;
use hotfuzz::run::runner::{boot_connected, RunOptions, RunResult, Runner};
use hotfuzz_vm::{Vm, VmOptions};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// Plugs memory, takes a block offline and inflates the balloon: state a restore must undo.
const CHANGE: &str = "\
virtio_mem_resize(dev=0x0, size=0x10000000)
virtio_mem_wait(dev=0x0, ms=0x1388)
r0 = memblock_find(which=\"movable\", nth=0x0)
memblock_state(block=r0, state=\"offline\")
balloon(target=0x30000000)
";

/// What the guest and its devices look like: block states, plugged and requested sizes.
fn state(vm: &Vm, runner: &Runner<&Vm>) -> String {
    let blocks = runner
        .agent()
        .run(
            "for d in /sys/devices/system/memory/memory*; do echo \"${d##*/} $(cat $d/state)\"; done; grep MemTotal /proc/meminfo",
            Duration::from_secs(20),
        )
        .unwrap();
    let q = vm.qmp();
    format!(
        "{blocks}size={} requested={}",
        q.virtio_mem_size("vm0").unwrap(),
        q.virtio_mem_requested_size("vm0").unwrap()
    )
}

fn run(runner: &mut Runner<&Vm>, d: &Descriptions, p: &Program) -> RunResult {
    let r = runner
        .run(
            d,
            p,
            &RunOptions {
                kcov: false,
                timeout: None,
                settle: Duration::from_millis(300),
                repeat_budget: None,
            },
        )
        .unwrap();
    assert!(r.lost.is_none(), "{:?}", r.lost);
    r
}

/// Each operation's outcome (what the executor said), for comparing two runs.
fn outcomes(r: &RunResult) -> Vec<String> {
    r.ops.iter().map(|o| format!("{:?}", o.outcome)).collect()
}

#[test]
fn restores_state_after_programs_panics_hangs_and_kills() {
    let d = Descriptions::embedded();
    let (kernel, image, mut m) = common::tcg_guest();
    m.balloon = true;
    let work = tempfile::tempdir().unwrap();
    let mut opts = VmOptions::new(m);
    opts.snapshots = true;
    opts.dir_parent = Some(work.path().to_path_buf());
    opts.name = "hotfuzz-snaptest".into();
    let c = boot_connected(&kernel, &image, &opts).unwrap();
    let mut vm = c.vm;
    let mut agent = Some(c.agent);
    let vm_dir = vm.dir().to_path_buf();
    assert!(vm_dir.starts_with(work.path()));
    let store = vm_dir.join("snapshots.qcow2");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o600);
    assert_eq!(mode(&vm_dir), 0o700);
    let log = work.path().join("run.log");
    let p = Program::parse(CHANGE, &d).unwrap();

    let (fresh, first) = {
        let mut runner = Runner::with_agent(&vm, agent.take().unwrap(), &log).unwrap();
        let fresh = state(&vm, &runner);
        let took = vm.save_snapshot("ready").unwrap();
        eprintln!("savevm: {took:?}");
        assert_eq!(mode(&store), 0o600);
        let host0 = runner.host.clone();

        // A program changes the guest; the restore takes it back, channel included.
        let first = run(&mut runner, &d, &p);
        assert_ne!(state(&vm, &runner), fresh, "the program changed nothing");
        let took = vm.load_snapshot("ready").unwrap();
        let t = Instant::now();
        runner.restored(host0.clone()).unwrap();
        eprintln!("loadvm: {took:?}, agent back in {:?}", t.elapsed());
        assert_eq!(state(&vm, &runner), fresh);
        // The same program on the restored guest does the same thing.
        let again = run(&mut runner, &d, &p);
        assert_eq!(outcomes(&again), outcomes(&first));
        // ssh is connected again on demand.
        vm.load_snapshot("ready").unwrap();
        runner.restored(host0.clone()).unwrap();
        assert_eq!(vm.run("echo ssh-ok").unwrap().trim(), "ssh-ok");

        // A kernel panic leaves QEMU running with the guest halted.
        let _ = runner
            .agent()
            .exec("echo c > /proc/sysrq-trigger", Duration::from_secs(2));
        common::wait_until(
            "the guest halts after a panic",
            Duration::from_secs(60),
            || !vm.is_alive(),
        );
        assert!(vm.halted());
        assert!(vm.exit_status().is_none(), "QEMU exited on a guest panic");
        vm.load_snapshot("ready").unwrap();
        assert!(vm.is_alive());
        runner.restored(host0.clone()).unwrap();
        assert_eq!(state(&vm, &runner), fresh);

        // A guest that stops answering (its agent stopped: the channel goes silent).
        let hang = "setsid sh -c 'sleep 0.3; kill -STOP $(pidof hotfuzz-executor)' \
                    </dev/null >/dev/null 2>&1 &";
        runner.agent().run(hang, Duration::from_secs(3)).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            !runner.agent().alive(Duration::from_secs(3)),
            "the guest still answers"
        );
        vm.load_snapshot("ready").unwrap();
        runner.restored(host0).unwrap();
        assert_eq!(state(&vm, &runner), fresh);
        (fresh, first)
    };

    // QEMU killed: started again from the snapshot, same guest.
    vm.kill();
    common::wait_until("QEMU exits", Duration::from_secs(10), || {
        vm.exit_status().is_some()
    });
    assert!(vm.load_snapshot("ready").is_err());
    let took = vm.relaunch("ready").unwrap();
    eprintln!("relaunch from the snapshot: {took:?}");
    {
        let mut runner = Runner::new(&vm, &log).unwrap();
        assert_eq!(state(&vm, &runner), fresh);
        let again = run(&mut runner, &d, &p);
        assert_eq!(outcomes(&again), outcomes(&first));
    }
    // The console log goes on across QEMU processes.
    let console = std::fs::read_to_string(vm.console_log()).unwrap();
    assert!(
        console.contains("sysrq: Trigger a crash"),
        "no panic in the console log"
    );

    let pid = vm.pid();
    drop(vm);
    assert!(
        !vm_dir.exists(),
        "the VM directory (snapshots) outlived the VM"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU {pid} is still running"
    );
    assert!(!common::process_left("hotfuzz-snaptest"));
}
