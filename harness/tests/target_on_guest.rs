//! The fuzzer's guest target on real TCG guests, program by program: what it files and what
//! it only counts. A program that would exhaust the guest (balloon, hugetlb pool) files
//! nothing; a workload that runs the program cgroup out of memory is counted as `oom`; a
//! report made while fault injection was armed says so and carries every program since the
//! guest's last reset; with `reset: per-program` a report's history is the one program, and
//! running that program again reproduces it; a report the store cannot take is kept, counted
//! and filed before the next program.

mod common;

use hotfuzz::fuzz::config::{default_profiles, FuzzConfig, ResetMode};
use hotfuzz::fuzz::guest::{GuestSetup, GuestTarget};
use hotfuzz::fuzz::target::Target;
use hotfuzz::program::desc::Descriptions;
use hotfuzz::program::prog::Program;
use hotfuzz_vm::AccelChoice;
use std::path::Path;
use std::sync::Arc;

/// Targets share the process-wide QEMU registry, so they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn target(dir: &Path, reset: ResetMode) -> (GuestTarget, Arc<Descriptions>) {
    let cfg = FuzzConfig {
        accel: AccelChoice::Tcg,
        workdir: dir.join("work"),
        reports: dir.join("reports"),
        profiles: default_profiles()
            .into_iter()
            .filter(|p| p.name == "default")
            .collect(),
        bugzoo: Some("warn_reonline".into()),
        reset,
        ..FuzzConfig::default()
    };
    let d = Arc::new(Descriptions::embedded());
    let t = GuestTarget::new(GuestSetup::from_config(&cfg, 0), d.clone()).unwrap();
    (t, d)
}

fn prog(d: &Descriptions, text: &str) -> Program {
    Program::parse(text, d).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Poisons one of the executor's own pages: fault injection that stays armed (the page stays
/// hardware-poisoned) after the program ends.
const POISON: &str = "\
r0 = mmap_anon(len=0x10000, thp=\"nohuge\", populate=0x1, node=-0x1)
madvise_poison(map=r0, offset=0x0, len=0x1000, soft=0x0)
";

#[test]
fn resource_exhaustion_is_counted_and_injection_is_recorded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (mut t, d) = target(dir.path(), ResetMode::Snapshot);

    // The balloon asked to take everything, a hugetlb pool asked for more pages than exist:
    // bounded by what the guest can spare, nothing to report.
    for text in [
        "balloon(target=0x4000000)\nsleep_ms(ms=0x1f4)\n",
        "hugetlb_pool(size=\"1G\", node=-0x1, count=0x40)\nhugetlb_pool(size=\"2M\", node=-0x1, count=0x40)\nr0 = mmap_anon(len=0x400000, thp=\"nohuge\", populate=0x1, node=-0x1)\n",
    ] {
        let ex = t.execute(&prog(&d, text)).unwrap();
        assert!(ex.infra.is_none(), "{text}: {:?}", ex.infra);
        assert!(ex.reports.is_empty(), "{text}: {:?}", ex.reports);
        assert!(!ex.oom, "{text}: the guest ran out of memory");
    }

    // A workload that allocates more than the program cgroup may have: an OOM, counted.
    let hog = "repeat 24 {\n  r0 = mmap_anon(len=0x4000000, thp=\"nohuge\", populate=0x1, node=-0x1)\n}\n";
    let ex = t.execute(&prog(&d, hog)).unwrap();
    assert!(ex.oom, "no OOM from a 1.5 GiB workload: {ex:?}");
    assert!(ex.reports.is_empty(), "{:?}", ex.reports);
    assert_eq!(t.counters().oom, 1);

    // Poisoned memory, then the planted WARN: the report says the injection was armed, and
    // its history holds both programs (the guest was reset after the OOM, before them).
    let ex = t.execute(&prog(&d, POISON)).unwrap();
    assert!(ex.reports.is_empty(), "{:?}", ex.reports);
    let ex = t.execute(&prog(&d, common::WARN_REONLINE)).unwrap();
    let found: Vec<&str> = ex.reports.iter().map(|r| r.title.as_str()).collect();
    assert_eq!(found, ["WARNING in bugzoo_warn_reonline"], "{ex:?}");
    let rd = ex.reports[0].dir.clone().unwrap();
    let meta = std::fs::read_to_string(rd.join("meta.yaml")).unwrap();
    assert!(meta.contains("hwpoison"), "{meta}");
    assert!(meta.contains("injected_count: 1"), "{meta}");
    let report = std::fs::read_to_string(rd.join("report.txt")).unwrap();
    assert!(report.starts_with("Fault injection was armed"), "{report}");
    let history = std::fs::read_to_string(rd.join("programs.prog")).unwrap();
    assert!(history.contains("# program 1 of 2"), "{history}");
    assert!(history.contains("madvise_poison"), "{history}");
    assert!(
        !history.contains("hugetlb_pool"),
        "the history crosses a reset:\n{history}"
    );
    assert!(t.counters().resets >= 1, "{:?}", t.counters());
    t.shutdown();
}

#[test]
fn per_program_reset_gives_one_program_histories_that_reproduce() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (mut t, d) = target(dir.path(), ResetMode::PerProgram);
    let ex = t.execute(&prog(&d, POISON)).unwrap();
    assert!(ex.reports.is_empty(), "{:?}", ex.reports);
    let warn = prog(&d, common::WARN_REONLINE);
    let ex = t.execute(&warn).unwrap();
    assert_eq!(ex.reports.len(), 1, "{ex:?}");
    let rd = ex.reports[0].dir.clone().unwrap();
    let history = std::fs::read_to_string(rd.join("programs.prog")).unwrap();
    assert!(history.contains("# program 1 of 1"), "{history}");
    assert!(!history.contains("madvise_poison"), "{history}");
    // The restore took the poisoned page away with the rest of the guest's state.
    let meta = std::fs::read_to_string(rd.join("meta.yaml")).unwrap();
    assert!(!meta.contains("hwpoison"), "{meta}");
    // The one program reproduces the report, run by itself again.
    let again = t.execute(&warn).unwrap();
    assert_eq!(again.reports.len(), 1, "{again:?}");
    assert_eq!(again.reports[0].title, ex.reports[0].title);
    assert!(!again.reports[0].new_in_store);
    // A store that cannot take a report (its root became a file: mkdir fails as on a full
    // disk) loses nothing: the report is kept and counted, the campaign goes on, and the
    // report is filed before the next program once the store is back.
    let store = dir.path().join("reports");
    let away = dir.path().join("reports.away");
    std::fs::rename(&store, &away).unwrap();
    std::fs::write(&store, "not a directory").unwrap();
    let third = t.execute(&warn).unwrap();
    assert_eq!(third.reports.len(), 1, "{third:?}");
    assert!(third.reports[0].dir.is_none(), "{third:?}");
    let c = t.counters();
    assert_eq!((c.unfiled, c.filing_failures >= 1), (1, true), "{c:?}");
    std::fs::remove_file(&store).unwrap();
    std::fs::rename(&away, &store).unwrap();
    let quiet = t.execute(&prog(&d, "sleep_ms(ms=0x1)\n")).unwrap();
    assert!(quiet.reports.is_empty(), "{quiet:?}");
    assert_eq!(t.counters().unfiled, 0, "{:?}", t.counters());
    let meta = std::fs::read_to_string(rd.join("meta.yaml")).unwrap();
    assert!(
        meta.contains("count: 3"),
        "the third hit was filed late: {meta}"
    );
    let c = t.counters();
    assert_eq!(c.boots, 1, "{c:?}");
    assert!(c.resets >= 2, "{c:?}");
    t.shutdown();
    assert!(hotfuzz_vm::process::live_children().is_empty());
}
