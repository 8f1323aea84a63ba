//! A night's results without guests: a store with a new, a regressed and a known bug, a
//! regression suite with every verdict (and report text full of console control characters),
//! and a campaign's stats. The JUnit file must be valid against the Jenkins schema (and a broken
//! one must not be), the page must render in headless Chromium with its plots and tables, the
//! mails must be ready for a mailing list, and the commands around them (`report mark`,
//! `report email`, a bad configuration or regression entry) must say what is wrong.

mod nightly_common;

use hotfuzz::nightly::summary::{
    EntryResult, Expect, FuzzRecord, Night, Stage, StageState, Verdict,
};
use hotfuzz::store::status::{Mark, State};
use hotfuzz::store::{Evidence, Store};
use nightly_common::*;
use std::path::Path;

const SPLAT_LINE: &str = "[   12.345678] WARNING: CPU: 1 PID: 234 at harness/bugzoo/bugzoo.c:120 bugzoo_warn_reonline+0x1d/0x30 [bugzoo]";

fn file(store: &Store, title: &str, times: usize) -> std::path::PathBuf {
    let mut r = hotfuzz::report::parse("[ 1.0] Kernel panic - not syncing: x\n").remove(0);
    r.title = title.into();
    r.text = format!("{SPLAT_LINE}\n\u{1b}[31mcolour\u{1b}[0m <&> \"quoted\"\0\n");
    let ev = Evidence {
        excerpt: format!("2026-12-02T18:49:55.646729Z [   12.300000] hotfuzz: program 1 op 3\n2026-12-02T18:49:55.646729Z {SPLAT_LINE}\n"),
        programs: vec!["virtio_mem_resize(dev=0x0, size=0x10000000)\n".into()],
        ..Default::default()
    };
    let mut dir = None;
    for _ in 0..times {
        dir = Some(store.file(&r, &ev).unwrap().dir);
    }
    dir.unwrap()
}

fn entry(name: &str, verdict: Verdict, crashes: u32, runs: u32, msg: &str) -> EntryResult {
    EntryResult {
        name: name.into(),
        title: format!("WARNING in {name}"),
        expected: Some(if name.contains("fixed") {
            Expect::Fixed
        } else {
            Expect::Reproduces
        }),
        why: "test".into(),
        verdict,
        crashes,
        runs,
        infra: 0,
        seconds: 12.5,
        message: msg.into(),
        report: (crashes > 0).then(|| format!("{SPLAT_LINE}\n\u{1b}[0m\0 <b>")),
        bug_dir: None,
    }
}

/// A night with a bit of everything, its results written into `top`.
fn night(top: &Path) -> (Night, Store) {
    let store = Store::open(&top.join("reports")).unwrap();
    // Before the night: a known bug and one that was fixed.
    let known = file(&store, "WARNING in known_one", 1);
    file(&store, "WARNING in fixed_one", 1);
    store
        .update(&known, |m| {
            m.status.acknowledge("t0", "n0");
        })
        .unwrap();
    store
        .mark(
            "WARNING in fixed_one",
            &Mark::Fixed("v6.13-rc1".into()),
            "t0",
        )
        .unwrap();
    let at_start = hotfuzz::nightly::classify::snapshot(&store).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // Tonight: the known bug again, the fixed one again, a new one three times.
    file(&store, "WARNING in known_one", 1);
    file(&store, "WARNING in fixed_one", 1);
    let new = file(&store, "WARNING in bugzoo_warn_reonline", 3);
    std::fs::write(
        new.join("repro.prog"),
        "virtio_mem_resize(dev=0x0, size=0x10000000)\n",
    )
    .unwrap();
    std::fs::write(new.join("repro.sh"), "#!/bin/bash\necho REPRODUCED\n").unwrap();
    store
        .update(&new, |m| m.reproducibility = Some("3/3".into()))
        .unwrap();
    let mut n = Night {
        schema: hotfuzz::nightly::summary::SCHEMA,
        id: "20261202T184000Z".into(),
        name: "hotfuzz nightly (test)".into(),
        started: started.clone(),
        updated: started,
        budget_s: 600.0,
        spent_s: 540.0,
        store_at_start: at_start,
        ..Night::default()
    };
    for (s, secs) in [
        (Stage::Prepare, 5.0),
        (Stage::Regression, 60.0),
        (Stage::Fuzz, 400.0),
        (Stage::Repro, 70.0),
        (Stage::Results, 1.0),
    ] {
        let r = n.stage_mut(s);
        r.state = StageState::Done;
        r.seconds = secs;
    }
    n.regression = vec![
        entry(
            "open_one",
            Verdict::Passed,
            1,
            1,
            "reproduced 1/1, as expected",
        ),
        entry(
            "fixed_one",
            Verdict::Failed,
            1,
            1,
            "REGRESSION: reproduced 1/1, expected fixed",
        ),
        entry(
            "gone_one",
            Verdict::Failed,
            0,
            3,
            "did not reproduce in 0/3 runs; expected to",
        ),
        entry(
            "other_arch",
            Verdict::Skipped,
            0,
            0,
            "does not apply: only for ppc64le",
        ),
        entry(
            "broken_guest",
            Verdict::Error,
            0,
            0,
            "no run counted: the guest did not boot",
        ),
    ];
    n.fuzz = Some(FuzzRecord {
        seconds: 400.0,
        execs: 240,
        execs_per_sec: 0.6,
        corpus: 12,
        states: 300,
        slow: 3,
        stopped: "the duration ran out".into(),
        ..Default::default()
    });
    let dir = top.join("nights").join(&n.id);
    std::fs::create_dir_all(&dir).unwrap();
    let mut stats = String::new();
    for i in 0..40 {
        stats.push_str(&format!(
            "{{\"time\":\"2026-12-02T18:{:02}:{:02}Z\",\"execs_per_sec\":{},\"corpus\":{},\"states\":{},\"coverage\":0,\"unique_reports\":{},\"reports\":{}}}\n",
            41 + i / 6,
            (i % 6) * 10,
            0.4 + (i % 5) as f64 * 0.1,
            3 + i / 4,
            100 + i * 5,
            u32::from(i > 10) + u32::from(i > 30),
            i / 8
        ));
    }
    std::fs::write(dir.join("stats.jsonl"), stats).unwrap();
    n.exit_code = Some(1);
    hotfuzz::nightly::results::write(&mut n, &store, top, &dir, None).unwrap();
    (n, store)
}

#[test]
fn the_results_are_classified_and_junit_is_valid() {
    let t = tempfile::tempdir().unwrap();
    let (n, store) = night(t.path());
    let classes: Vec<(&str, &str)> = n
        .bugs
        .iter()
        .map(|b| (b.title.as_str(), b.class.name()))
        .collect();
    assert_eq!(
        classes,
        [
            ("WARNING in fixed_one", "regressed"),
            ("WARNING in bugzoo_warn_reonline", "new"),
            ("WARNING in known_one", "known")
        ]
    );
    assert_eq!(n.bugs[1].tonight, 3);
    assert_eq!(n.decide_exit(), 1);
    // The files of the night.
    let dir = t.path().join("nights").join(&n.id);
    for f in ["summary.json", "junit.xml", "index.html", "stats.jsonl"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let back = Night::load(&dir.join("summary.json")).unwrap();
    assert_eq!(back.bugs.len(), 3);
    assert_eq!(back.counts.suite_failed, 2);
    let new_files = dir.join(&n.bugs[1].files);
    for f in [
        "report.txt",
        "excerpt.log",
        "repro.prog",
        "repro.sh",
        "meta.yaml",
        "email.txt",
    ] {
        assert!(new_files.join(f).is_file(), "{f} of the new bug");
    }
    assert!(std::fs::read_link(t.path().join("latest"))
        .unwrap()
        .ends_with(&n.id));
    // JUnit: one test case per entry, one per new or regressed bug, valid for Jenkins.
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 5 + 1 + 2, "{junit}");
    assert!(junit.contains("type=\"regression\""), "{junit}");
    assert!(junit.contains("<skipped"), "{junit}");
    assert!(junit.contains("<error"), "{junit}");
    assert!(
        junit.contains("bugzoo.c:120"),
        "the report text is the failure's body"
    );
    assert!(!junit.contains('\u{1b}') && !junit.contains('\0'));
    let Some(xmllint) = tool("xmllint", "libxml2-utils") else {
        return;
    };
    validate_junit(&xmllint, &dir.join("junit.xml")).unwrap();
    // The check can fail: a test case without its name is not JUnit.
    let broken = t.path().join("broken.xml");
    std::fs::write(
        &broken,
        junit.replacen(
            "<testcase classname=\"hotfuzz.regression\" name=\"open_one\"",
            "<testcase classname=\"x\"",
            1,
        ),
    )
    .unwrap();
    assert!(validate_junit(&xmllint, &broken).is_err());
    // Acknowledged, the store tells the next night nothing new.
    hotfuzz::nightly::classify::acknowledge(&store, &n.bugs, &n.id).unwrap();
    assert!(store
        .list()
        .unwrap()
        .iter()
        .all(|s| s.meta.status.state == State::Known));
}

#[test]
fn the_page_renders_with_its_plots_and_tables() {
    let t = tempfile::tempdir().unwrap();
    let (n, _) = night(t.path());
    let dir = t.path().join("nights").join(&n.id);
    let page = std::fs::read_to_string(dir.join("index.html")).unwrap();
    // Self-contained: nothing is fetched (the SVG namespace is a name, not a request).
    for bad in ["<script", "<link", "src=", "url(", "href=\"http", "@import"] {
        assert!(!page.contains(bad), "the page has {bad}");
    }
    assert!(page.contains("class=\"verdict exit1\""), "{page}");
    assert!(page.contains("3 slow but not hung"), "{page}");
    let Some(chromium) = tool("chromium", "chromium") else {
        return;
    };
    let png = t.path().join("night.png");
    let dom = render(&chromium, &dir.join("index.html"), &png, 2600);
    for id in [
        "plot-execs",
        "plot-corpus",
        "plot-states",
        "plot-reports",
        "plot-stages",
    ] {
        assert!(
            dom.contains(&format!("id=\"{id}\"")),
            "{id} is not in the rendered page"
        );
    }
    assert!(
        dom.matches("<polyline").count() >= 5,
        "the plots have their lines"
    );
    assert!(dom.contains("id=\"bugs-table\"") && dom.contains("id=\"suite-table\""));
    assert_eq!(dom.matches("<tr class=\"bug ").count(), 3);
    assert!(dom.contains("<tr class=\"bug bug-regressed\">"));
    assert!(
        dom.contains("href=\"bugs/"),
        "the bug table links the files"
    );
    // What was painted: every plot's line colour is on the screenshot (the page's own colours
    // are far from them).
    for c in hotfuzz::nightly::svg::COLORS {
        let px = count_color(&png, rgb(c), 10);
        assert!(px > 100, "colour {c}: {px} pixels");
    }
    // The count tells colours apart: pure green is nowhere on the page.
    assert!(count_color(&png, [0, 255, 0], 10) < 10);
    // A copy for people to look at.
    if let Some(keep) = std::env::var_os("HOTFUZZ_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
    // The index of nights renders too.
    let idx = render(
        &chromium,
        &t.path().join("index.html"),
        &t.path().join("index.png"),
        1000,
    );
    assert!(idx.contains("id=\"trend-bugs\"") && idx.contains("id=\"nights-table\""));
    assert!(idx.contains(&format!("nights/{}/index.html", n.id)));
}

#[test]
fn mails_are_ready_for_a_mailing_list() {
    let t = tempfile::tempdir().unwrap();
    let (n, _) = night(t.path());
    let dir = t.path().join("nights").join(&n.id).join(&n.bugs[1].files);
    let mail = std::fs::read_to_string(dir.join("email.txt")).unwrap();
    assert!(
        mail.starts_with("Subject: WARNING in bugzoo_warn_reonline\n"),
        "{mail}"
    );
    // The splat is not wrapped and has no host timestamps; the program and script are inline.
    assert!(mail.lines().any(|l| l == SPLAT_LINE), "{mail}");
    assert!(mail.contains("Reproducer: 3/3 on fresh guests"), "{mail}");
    assert!(mail.contains("echo REPRODUCED"), "{mail}");
    assert!(mail.contains("Bisection: not done."), "{mail}");
    // Prose fits 72 columns: every long line is the splat.
    for l in mail.lines().filter(|l| l.len() > 72) {
        assert!(
            l.contains("bugzoo.c:120") || l.starts_with("  "),
            "wrapped too late: {l:?}"
        );
    }
    // The command writes the same mail.
    let (code, out, err) = hotfuzz(
        &["report", "email", "--no-symbolize", &n.bugs[1].dir],
        t.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, mail);
}

#[test]
fn report_mark_changes_the_status_and_says_what_is_wrong() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("reports")).unwrap();
    file(&store, "WARNING in foo", 1);
    let (code, out, err) = hotfuzz(
        &[
            "report",
            "mark",
            "WARNING in foo",
            "--fixed",
            "v6.13",
            "--dir",
            "reports",
        ],
        t.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("WARNING in foo: fixed"), "{out}");
    let (_, list, _) = hotfuzz(&["report", "list", "--dir", "reports"], t.path());
    assert!(
        list.lines()
            .any(|l| l.starts_with("fixed") && l.contains("WARNING in foo")),
        "{list}"
    );
    let (code, _, err) = hotfuzz(
        &[
            "report",
            "mark",
            "WARNING in bar",
            "--invalid",
            "noise",
            "--dir",
            "reports",
        ],
        t.path(),
    );
    assert_eq!(code, 2);
    assert!(err.contains("no bug titled \"WARNING in bar\""), "{err}");
    let (code, _, err) = hotfuzz(
        &["report", "mark", "WARNING in foo", "--dir", "reports"],
        t.path(),
    );
    assert_eq!(
        code, 2,
        "one of --fixed, --invalid, --reopen is needed: {err}"
    );
}

#[test]
fn a_bad_configuration_or_entry_stops_the_night_before_it_starts() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("n.yaml"),
        "budget: 10m\nfuzz:\n  min_tme: 1m\n",
    )
    .unwrap();
    let (code, _, err) = hotfuzz(&["nightly", "--config", "n.yaml"], t.path());
    assert_eq!(code, 2);
    assert!(err.contains("n.yaml:3:"), "{err}");
    let e = t.path().join("suite/bad");
    std::fs::create_dir_all(&e).unwrap();
    std::fs::write(e.join("entry.yaml"), "title: x\n").unwrap();
    std::fs::write(
        e.join("repro.prog"),
        "memblock_state(block=0x1, state=\"sideways\")\n",
    )
    .unwrap();
    std::fs::write(
        t.path().join("n.yaml"),
        "budget: 10m\nregression:\n  dirs: [suite]\n",
    )
    .unwrap();
    let (code, _, err) = hotfuzz(
        &["nightly", "--config", "n.yaml", "--accel", "tcg"],
        t.path(),
    );
    assert_eq!(code, 2);
    assert!(err.contains("suite/bad/repro.prog:1:"), "{err}");
    // Nothing ran: no night was started.
    assert!(!t.path().join("nightly/nights").exists());
    let (code, _, err) = hotfuzz(&["nightly", "--stages", "fuzzing"], t.path());
    assert_eq!(code, 2);
    assert!(err.contains("no stage \"fuzzing\""), "{err}");
}

#[test]
fn a_killed_night_is_resumed_with_what_is_left_of_its_budget() {
    // A night of an empty suite boots no guest: prepare (the kernel and the guest image, from
    // the cache) and results only.
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("suite")).unwrap();
    std::fs::write(
        t.path().join("n.yaml"),
        "budget: 10m\nregression:\n  dirs: [suite]\n",
    )
    .unwrap();
    let args = [
        "nightly",
        "--config",
        "n.yaml",
        "--stages",
        "regression",
        "--accel",
        "tcg",
    ];
    let (code, out, err) = hotfuzz(&args, t.path());
    assert_eq!(code, 0, "{out}\n{err}");
    let summary = t.path().join("nightly/latest/summary.json");
    let first = Night::load(&summary).unwrap();
    assert!(first.complete());
    assert_eq!(first.stage(Stage::Fuzz).unwrap().state, StageState::Skipped);
    assert_eq!(first.stage(Stage::Regression).unwrap().note, "no entries");
    // Nothing to resume now.
    let (code, _, err) = hotfuzz(&[&args[..], &["--resume"]].concat(), t.path());
    assert_eq!(code, 2);
    assert!(err.contains("no unfinished night"), "{err}");
    // The record of a night killed in its suite, 7 minutes into its budget.
    let mut killed = first.clone();
    killed.finished = None;
    killed.exit_code = None;
    killed.spent_s = 420.0;
    killed.stage_mut(Stage::Regression).state = StageState::Running;
    killed.save(&summary).unwrap();
    let (code, out, err) = hotfuzz(&[&args[..], &["--resume"]].concat(), t.path());
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains(&format!("resuming night {}", first.id)),
        "{err}"
    );
    let resumed = Night::load(&summary).unwrap();
    assert_eq!(resumed.id, first.id, "the same night, not a new one");
    assert!(resumed.complete());
    assert_eq!(
        resumed.stage(Stage::Regression).unwrap().state,
        StageState::Skipped
    );
    assert!(resumed.spent_s >= 420.0, "{}", resumed.spent_s);
    assert_eq!(
        std::fs::read_dir(t.path().join("nightly/nights"))
            .unwrap()
            .count(),
        1
    );
    // Two nights on one directory at once: the second stops.
    let lock = std::fs::File::create(t.path().join("nightly/.night.lock")).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file we own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let (code, _, err) = hotfuzz(&args, t.path());
    assert_eq!(code, 2);
    assert!(err.contains("another hotfuzz nightly is running"), "{err}");
}
