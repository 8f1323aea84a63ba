//! Reports from a real guest end to end: a planted bug-zoo bug fires, gets the right title,
//! is symbolized to the right source line, lands in the report store with its evidence and
//! deduplicates; a stuck offline is caught both by the harness (stuck operation) and by the
//! kernel's hung task detector; a guest that dies mid-program is reported as such.

mod common;

use hotfuzz::judge::symbolize::Symbolizer;
use hotfuzz::program::desc::Descriptions;
use hotfuzz::program::prog::Program;
use hotfuzz::report::ReportType;
use hotfuzz::run::image::program_guest;
use hotfuzz::run::runner::{boot_connected, RunOptions, Runner};
use hotfuzz::store::Store;
use hotfuzz_vm::{AccelChoice, Arch, Kernel, KernelSource, MachineConfig, VmOptions};
use std::time::{Duration, Instant};

const REONLINE: &str = common::WARN_REONLINE;

const STUCK: &str = "r0 = memblock_find(which=\"movable\", nth=0x1)
memblock_state(block=r0, state=\"offline\")
memblock_state(block=r0, state=\"online_movable\")
memblock_state(block=r0, state=\"offline\")
memblock_state(block=r0, state=\"online_movable\")
memblock_state(block=r0, state=\"offline\")
";

fn source_line(needle: &str) -> usize {
    hotfuzz::run::bugzoo::SOURCE
        .lines()
        .position(|l| l.contains(needle))
        .expect("needle in the bug zoo source")
        + 1
}

#[test]
fn bug_zoo_reports_end_to_end() {
    let d = Descriptions::embedded();
    let kernel = Kernel::resolve(&KernelSource::DebianDefault, Arch::X86_64).unwrap();
    let ko = hotfuzz::run::bugzoo::build(&kernel).unwrap();
    let mut spec = program_guest(Arch::X86_64, true).unwrap();
    spec.modules.push(
        hotfuzz_vm::modules::ModuleRequest::file(&ko, "bugs=warn_reonline stuck_secs=25").unwrap(),
    );
    let image = spec.build(&kernel).unwrap();
    let mut m = MachineConfig::new(Arch::X86_64);
    m.accel = AccelChoice::Tcg;
    let c = boot_connected(&kernel, &image, &VmOptions::new(m)).unwrap();
    let vm = c.vm;
    let dir = tempfile::tempdir().unwrap();
    let run_log = dir.path().join("run.log");
    let store = Store::open(&dir.path().join("reports")).unwrap();
    let kinfo = hotfuzz::store::kernel_info(&kernel);
    let record = hotfuzz::store::GuestRecord::new(
        vm.machine(),
        Some("default"),
        Some("warn_reonline"),
        Some(vm.accel()),
    );
    let mut runner = Runner::with_agent(&vm, c.agent, &run_log).unwrap();
    let opts = RunOptions {
        kcov: false,
        timeout: None,
        settle: Duration::from_millis(500),
        repeat_budget: None,
    };

    // The planted WARN: right title, symbolized to the WARN's source line.
    let p = Program::parse(REONLINE, &d).unwrap();
    let mut r = runner.run(&d, &p, &opts).unwrap();
    let reports = hotfuzz::judge::reports(&vm, runner.agent(), &p, &mut r, Duration::from_secs(10));
    let titles: Vec<&str> = reports.iter().map(|r| r.title.as_str()).collect();
    assert_eq!(titles, ["WARNING in bugzoo_warn_reonline"], "{reports:#?}");
    assert!(reports[0].corrupted.is_none());
    let sym = Symbolizer::new(&kernel, std::slice::from_ref(&ko));
    assert!(sym.available(), "binutils' addr2line is needed");
    let text = sym.symbolize(&reports[0].text);
    let want = format!(
        "harness/bugzoo/bugzoo.c:{}",
        source_line("came online a third time")
    );
    let rip = text
        .lines()
        .find(|l| l.starts_with("RIP: 0010:bugzoo_warn_reonline"))
        .unwrap();
    assert!(rip.ends_with(&want), "{rip} (wanted {want})");

    // Filed with its evidence, then deduplicated.
    let prov = hotfuzz::store::Provenance {
        kernel: &kinfo,
        guest: &record,
        injections: &[],
    };
    let mut unfiled = hotfuzz::store::Unfiled::default();
    let filed = hotfuzz::store::file_run(&store, &mut unfiled, &reports, &r, &vm, &run_log, prov);
    let filed: Vec<_> = filed.into_iter().map(Option::unwrap).collect();
    assert!(filed[0].new);
    let rd = &filed[0].dir;
    let meta = std::fs::read_to_string(rd.join("meta.yaml")).unwrap();
    assert!(
        meta.contains("title: WARNING in bugzoo_warn_reonline"),
        "{meta}"
    );
    assert!(meta.contains(&kinfo.release), "{meta}");
    assert!(meta.contains("count: 1"), "{meta}");
    let stored = &store.list().unwrap()[0].meta;
    let g = stored.guest.as_ref().unwrap();
    assert_eq!(g.profile.as_deref(), Some("default"));
    assert_eq!(g.bugzoo.as_deref(), Some("warn_reonline"));
    assert!(g.cmdline.contains("console=ttyS0"), "{g:?}");
    assert!(std::fs::read_to_string(rd.join("excerpt.log"))
        .unwrap()
        .contains("WARNING: CPU"));
    assert!(std::fs::read_to_string(rd.join("console.log"))
        .unwrap()
        .contains("came online a third time"));
    assert!(std::fs::read_to_string(rd.join("programs.prog"))
        .unwrap()
        .contains("memblock_state(block=r0, state=\"offline\")"));
    assert!(std::fs::read_to_string(rd.join("run.log"))
        .unwrap()
        .contains("executing op 6"));
    let again = "r0 = memblock_find(which=\"movable\", nth=0x0)\nmemblock_state(block=r0, state=\"offline\")\nmemblock_state(block=r0, state=\"online_movable\")\n";
    let p2 = Program::parse(again, &d).unwrap();
    let mut r2 = runner.run(&d, &p2, &opts).unwrap();
    let reports2 =
        hotfuzz::judge::reports(&vm, runner.agent(), &p2, &mut r2, Duration::from_secs(10));
    assert_eq!(reports2.len(), 1, "{reports2:#?}");
    let filed2 =
        hotfuzz::store::file_run(&store, &mut unfiled, &reports2, &r2, &vm, &run_log, prov);
    let filed2: Vec<_> = filed2.into_iter().map(Option::unwrap).collect();
    assert!(unfiled.is_empty() && unfiled.failures == 0);
    assert!(!filed2[0].new);
    assert_eq!(filed2[0].dir, *rd);
    assert_eq!(store.list().unwrap()[0].meta.count, 2);

    // A stuck offline: the harness sees the operation hang, the kernel sees a hung task.
    // (Armed only now: block 0 went offline a third time above.)
    vm.run("echo 5 > /proc/sys/kernel/hung_task_timeout_secs && echo stuck_offline > /sys/module/bugzoo/parameters/bugs")
        .unwrap();
    let mark = vm.console().mark();
    let p3 = Program::parse(STUCK, &d).unwrap();
    let mut r3 = runner.run(&d, &p3, &opts).unwrap();
    let reports3 =
        hotfuzz::judge::reports(&vm, runner.agent(), &p3, &mut r3, Duration::from_secs(1));
    assert!(
        reports3
            .iter()
            .any(|r| r.kind == ReportType::StuckOp
                && r.title == "hang: memblock_state did not return"),
        "{reports3:#?}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let _ = vm
        .console()
        .wait_for_text(mark, deadline, "blocked for more than");
    std::thread::sleep(Duration::from_secs(2));
    let text: String = vm
        .console()
        .lines_since(mark)
        .iter()
        .map(|l| format!("{}\n", l.text))
        .collect();
    let hung = hotfuzz::report::parse(&text);
    assert!(
        hung.iter()
            .any(|r| r.title == "INFO: task hung in bugzoo_stuck_offline" && r.corrupted.is_none()),
        "{:#?}",
        hung.iter().map(|r| &r.title).collect::<Vec<_>>()
    );

    // The guest dies in the middle of a program. The stuck offline above may still be
    // blocked; silence the hung-task detector so the only report left is QEMU's death.
    vm.run("echo 0 > /proc/sys/kernel/hung_task_timeout_secs")
        .unwrap();
    let p4 = Program::parse("sleep_ms(ms=0x1388)\n", &d).unwrap();
    let killer = {
        let pid = vm.pid();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            // SAFETY: killing the test's own QEMU child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        })
    };
    let mut r4 = runner.run(&d, &p4, &opts).unwrap();
    killer.join().unwrap();
    assert!(r4.lost.is_some());
    let reports4 =
        hotfuzz::judge::reports(&vm, runner.agent(), &p4, &mut r4, Duration::from_secs(1));
    assert_eq!(
        reports4.iter().map(|r| r.kind).collect::<Vec<_>>(),
        [ReportType::QemuExited],
        "{reports4:#?}"
    );
    // Judged, a QEMU that dies without a kernel report says nothing about the kernel.
    let verdict = hotfuzz::judge::judge(&vm, runner.agent(), &p4, &mut r4, Duration::from_secs(1));
    assert!(verdict.reports.is_empty(), "{:#?}", verdict.reports);
    assert!(verdict.infra.unwrap().contains("QEMU exited"));
}
