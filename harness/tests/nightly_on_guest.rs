//! Real nights on TCG guests of the default kernel with the bug zoo armed (warn_reonline and
//! badpage_offline), a regression suite of two entries (the planted Bad page state, expected to
//! reproduce, and a double-cancel BUG the night does not arm, expected fixed) and a budget of
//! a few minutes:
//! 1. the first night exits 1: fuzzing finds the planted WARN, which is new; the suite passes;
//!    JUnit is valid, the page renders with its plots, the new bug has a mail;
//! 2. a second night on the same store exits 0: only known bugs;
//! 3. the Bad page state marked fixed, a suite-only night reproduces it: regressed, exit 1.
//!
//! No QEMU outlives a night.

mod common;
mod nightly_common;

use hotfuzz::nightly::summary::{Class, Night, Stage, StageState, Verdict};
use nightly_common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const BADPAGE: &str = "BUG: Bad page state in bugzoo_bad_page";
const WARN: &str = "WARNING in bugzoo_warn_reonline";

fn setup(dir: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let suite = dir.join("suite");
    let a = suite.join("bugzoo-badpage-offline");
    std::fs::create_dir_all(&a).unwrap();
    for f in ["entry.yaml", "repro.prog"] {
        std::fs::copy(
            repo.join("corpus/regressions/bugzoo-badpage-offline")
                .join(f),
            a.join(f),
        )
        .unwrap();
    }
    let b = suite.join("double-cancel-fixed");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(
        b.join("entry.yaml"),
        "title: kernel BUG in bugzoo_bug_double_cancel\ndescription: fixed in the kernel under test (the night does not arm it)\nexpect: fixed\n",
    )
    .unwrap();
    std::fs::write(
        b.join("repro.prog"),
        "virtio_mem_resize(dev=0x0, size=0x10000000)\nvirtio_mem_wait(dev=0x0, ms=0x1388)\nr0 = memblock_find(which=\"movable\", nth=0x0)\nnotifier_fail_offline(errno=\"EBUSY\")\nmemblock_state(block=r0, state=\"offline\")\nmemblock_state(block=r0, state=\"offline\")\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("fuzz.yaml"),
        "profiles:\n  - name: default\nseed: 1\nstats_interval: 2\ngenerate: 2\n",
    )
    .unwrap();
    let cfg = dir.join("night.yaml");
    std::fs::write(
        &cfg,
        "name: hotfuzz nightly (test)\ndir: nightly\nbudget: 3m\naccel: tcg\nbugzoo: warn_reonline,badpage_offline\nregression:\n  dirs: [suite]\n  runs: 1\n  max_share: 0.2\nfuzz:\n  config: fuzz.yaml\n  min_time: 20s\nrepro:\n  share: 0.55\n  runs: 1\n  max_runs: 3\n  max_bugs: 1\nresults:\n  reserve: 10s\n",
    )
    .unwrap();
    cfg
}

fn night(dir: &Path, extra: &[&str]) -> (i32, Night, String) {
    let t = Instant::now();
    // Guests' directories under the test's, so a QEMU left behind is found below.
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hotfuzz"))
        .args(["nightly", "--config", "night.yaml"])
        .args(extra)
        .env("TMPDIR", &tmp)
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let latest = dir.join("nightly/latest/summary.json");
    let n = Night::load(&latest).unwrap_or_else(|e| panic!("{e:#}\n{stdout}\n{stderr}"));
    let stages: Vec<String> = n
        .stages
        .iter()
        .map(|s| format!("{} {:.0}s: {}", s.stage.name(), s.seconds, s.note))
        .collect();
    eprintln!(
        "night {}: exit {:?} in {:.0}s ({}); suite run {:?} s; repro {:?}\n{stdout}",
        n.id,
        out.status.code(),
        t.elapsed().as_secs_f64(),
        stages.join("; "),
        n.run_cost_s,
        n.repro
    );
    (
        out.status.code().unwrap_or(-1),
        n,
        format!("{stdout}\n{stderr}"),
    )
}

fn class_of<'a>(n: &'a Night, title: &str) -> Option<&'a hotfuzz::nightly::summary::BugRecord> {
    n.bugs.iter().find(|b| b.title == title)
}

#[test]
fn a_first_night_finds_a_second_knows_and_a_fixed_bug_regresses() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    setup(dir);

    // Night 1: new bugs.
    let (code, n1, log) = night(dir, &[]);
    assert_eq!(code, 1, "{log}");
    assert!(n1.complete());
    assert!(
        n1.stages.iter().all(|s| s.state == StageState::Done),
        "{:?}",
        n1.stages
    );
    assert!(
        n1.spent_s <= 180.0 + 20.0,
        "the budget holds: {}",
        n1.spent_s
    );
    let suite: Vec<(&str, Verdict)> = n1
        .regression
        .iter()
        .map(|e| (e.name.as_str(), e.verdict))
        .collect();
    assert_eq!(
        suite,
        [
            ("bugzoo-badpage-offline", Verdict::Passed),
            ("double-cancel-fixed", Verdict::Passed)
        ],
        "{:?}",
        n1.regression
    );
    let f = n1.fuzz.as_ref().expect("the campaign ran");
    assert!(f.execs > 0, "{f:?}");
    let warn =
        class_of(&n1, WARN).unwrap_or_else(|| panic!("fuzzing finds the WARN: {:?}", n1.bugs));
    assert_eq!(warn.class, Class::New);
    // The suite's bug is known from the first night: the suite expects it.
    assert_eq!(class_of(&n1, BADPAGE).map(|b| b.class), Some(Class::Known));
    let nd = dir.join("nightly/nights").join(&n1.id);
    // The new bug was given to the reproducer, and has a mail with the planted WARN's source line.
    assert_eq!(
        n1.repro.len(),
        1,
        "{:?}",
        n1.stage(Stage::Repro).map(|s| &s.note)
    );
    let mail = std::fs::read_to_string(nd.join(&warn.files).join("email.txt")).unwrap();
    assert!(mail.starts_with(&format!("Subject: {WARN}\n")), "{mail}");
    assert!(mail.contains("bugzoo.c:"), "symbolized: {mail}");
    if n1.repro[0].reproduced {
        assert!(dir.join(&warn.dir).join("repro.prog").is_file());
        assert!(mail.contains("Reproducer: "), "{mail}");
    }
    // Results for machines and people.
    if let Some(xmllint) = tool("xmllint", "libxml2-utils") {
        validate_junit(&xmllint, &nd.join("junit.xml")).unwrap();
    }
    let junit = std::fs::read_to_string(nd.join("junit.xml")).unwrap();
    assert!(junit.contains(&format!("name=\"{WARN}\"")), "{junit}");
    let stats = hotfuzz::nightly::html::read_stats(&nd.join("stats.jsonl"));
    assert!(
        stats.len() >= 3,
        "the campaign's stats lines: {}",
        stats.len()
    );
    if let Some(chromium) = tool("chromium", "chromium") {
        let png = dir.join("night1.png");
        let dom = render(&chromium, &nd.join("index.html"), &png, 2400);
        for id in [
            "plot-execs",
            "plot-corpus",
            "plot-states",
            "plot-reports",
            "bugs-table",
            "suite-table",
        ] {
            assert!(dom.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(dom.contains("bug bug-new"));
        assert!(
            count_color(&png, rgb(hotfuzz::nightly::svg::COLORS[0]), 10) > 100,
            "the execs/s line is drawn"
        );
        if let Some(keep) = std::env::var_os("HOTFUZZ_KEEP_SCREENSHOT") {
            std::fs::copy(&png, keep).unwrap();
        }
    }

    // Night 2, same store, a shorter night: what night 1 saw is known now. The stock
    // kernel's own races (virtio-mem's fake-offline WARN, found by generated programs) can
    // turn up for the first time in any night: those, and only those, are new, and then the
    // night says so with exit 1.
    let (code, n2, log) = night(dir, &["--budget", "2m"]);
    let seen_before = |t: &str| n1.bugs.iter().any(|b| b.title == t);
    for b in &n2.bugs {
        let want = if seen_before(&b.title) {
            Class::Known
        } else {
            Class::New
        };
        assert_eq!(b.class, want, "{:?}\n{log}", n2.bugs);
        assert!(
            seen_before(&b.title) || !b.title.contains("bugzoo"),
            "a planted bug night 1 did not see: {:?}",
            b.title
        );
    }
    let news = n2.bugs.iter().any(|b| b.class != Class::Known);
    assert_eq!(code, i32::from(news), "{:?}\n{log}", n2.bugs);
    assert_eq!(n2.counts.suite_passed, 2, "{:?}", n2.regression);
    // It fuzzed too (the corpus carried over), and what it saw again is not news.
    assert_eq!(
        n2.stage(Stage::Fuzz).map(|s| s.state),
        Some(StageState::Done),
        "{:?}",
        n2.stages
    );

    // The planted Bad page state marked fixed: the suite now expects it fixed, and it is not.
    let (code, _, err) = hotfuzz(
        &[
            "report",
            "mark",
            BADPAGE,
            "--fixed",
            "v6.13-rc1",
            "--dir",
            "nightly/reports",
        ],
        dir,
    );
    assert_eq!(code, 0, "{err}");
    let (code, n3, log) = night(dir, &["--stages", "regression"]);
    assert_eq!(code, 1, "{log}");
    assert_eq!(
        n3.stage(Stage::Fuzz).map(|s| s.state),
        Some(StageState::Skipped)
    );
    let e = &n3.regression[0];
    assert_eq!((e.verdict, e.crashes), (Verdict::Failed, 1), "{e:?}");
    assert!(e.message.starts_with("REGRESSION"), "{e:?}");
    let b = class_of(&n3, BADPAGE).unwrap();
    assert_eq!(b.class, Class::Regressed);
    assert_eq!(b.fix.as_deref(), Some("v6.13-rc1"));
    let page = std::fs::read_to_string(dir.join("nightly/latest/index.html")).unwrap();
    assert!(page.contains("bug bug-regressed") && page.contains("was fixed by v6.13-rc1"));
    // The index lists the three nights.
    let idx = std::fs::read_to_string(dir.join("nightly/index.html")).unwrap();
    for n in [&n1, &n2, &n3] {
        assert!(idx.contains(&format!("nights/{}/index.html", n.id)));
    }
    assert!(
        !common::process_left(&dir.display().to_string()),
        "a QEMU outlived the nights"
    );
}
