//! Golden tests of the report parser: every file in `harness/testdata/report/` is a console
//! log with the expected reports in a header (see that directory's README). Also the
//! robustness of the parser against damaged input: truncation, CRLF, ANSI escapes, mail
//! quoting and wrapping, and garbage. (The 100 MB log is in `report_big_log.rs`, a process of
//! its own, so the peak RSS it measures is its own.)

mod golden;

use golden::{goldens, Golden};
use hotfuzz::report::{self, Report};

fn type_name(r: &Report) -> String {
    serde_json::to_value(r.kind)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

fn check(g: &Golden, got: &[Report], what: &str) -> Result<(), String> {
    let titles: Vec<&str> = got.iter().map(|r| r.title.as_str()).collect();
    if got.len() != g.expect.len() {
        return Err(format!(
            "{what}: expected {} reports, got {titles:?}",
            g.expect.len()
        ));
    }
    for (e, r) in g.expect.iter().zip(got) {
        let mut errs = Vec::new();
        if e.title != r.title {
            errs.push(format!("title {:?} != {:?}", r.title, e.title));
        }
        if let Some(k) = &e.kind {
            if &type_name(r) != k {
                errs.push(format!("type {} != {k}", type_name(r)));
            }
        }
        if let Some(f) = &e.frame {
            if r.frame.as_deref() != Some(f.as_str()) {
                errs.push(format!("frame {:?} != {f}", r.frame));
            }
        }
        if let Some(c) = e.corrupted {
            if r.corrupted.is_some() != c {
                errs.push(format!("corrupted {:?}, expected {c}", r.corrupted));
            }
        }
        if let Some(i) = e.interleaved {
            if r.interleaved != i {
                errs.push(format!("interleaved {}, expected {i}", r.interleaved));
            }
        }
        for a in &e.alt {
            if !r.alt_titles.contains(a) {
                errs.push(format!("missing alt title {a:?} (has {:?})", r.alt_titles));
            }
        }
        if !errs.is_empty() {
            return Err(format!("{what}: {}", errs.join("; ")));
        }
    }
    Ok(())
}

#[test]
fn golden_logs() {
    let gs = goldens();
    assert!(gs.len() >= 40, "only {} golden logs", gs.len());
    let mut failures = Vec::new();
    for g in &gs {
        let got = report::parse(&g.log);
        if let Err(e) = check(g, &got, "parse") {
            failures.push(format!("{}: {e}", g.path.display()));
        }
        // The streaming reader gives the same answer.
        let streamed = report::linux::parse_reader(std::io::Cursor::new(g.log.as_bytes())).unwrap();
        if let Err(e) = check(g, &streamed, "parse_reader") {
            failures.push(format!("{}: {e}", g.path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn crlf_and_ansi_change_nothing() {
    for g in goldens() {
        let crlf = g.log.replace('\n', "\r\n");
        check(&g, &report::parse(&crlf), "CRLF")
            .unwrap_or_else(|e| panic!("{}: {e}", g.path.display()));
        let ansi: String = g
            .log
            .lines()
            .map(|l| format!("\x1b[0;32m{l}\x1b[0m\n"))
            .collect();
        check(&g, &report::parse(&ansi), "ANSI")
            .unwrap_or_else(|e| panic!("{}: {e}", g.path.display()));
    }
}

#[test]
fn truncated_logs_never_panic_and_never_invent_titles() {
    for g in goldens() {
        let lines: Vec<&str> = g.log.lines().collect();
        let known: Vec<&str> = g.expect.iter().map(|e| e.title.as_str()).collect();
        for cut in 0..lines.len() {
            let part = lines[..cut].join("\n");
            for r in report::parse(&part) {
                // A truncated report either keeps its real title, loses precision (a title that
                // is a prefix of the real one) or says it is corrupted.
                let ok = known.contains(&r.title.as_str())
                    || known.iter().any(|k| k.starts_with(&r.title))
                    || r.corrupted.is_some()
                    || r.title.starts_with("kernel panic");
                assert!(
                    ok,
                    "{} cut at {cut}: invented {:?}",
                    g.path.display(),
                    r.title
                );
            }
        }
    }
}

#[test]
fn garbage_does_not_panic() {
    let mut seed: u64 = 42;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let pieces = [
        "WARNING:",
        "BUG:",
        "Oops:",
        "Call Trace:",
        " <TASK>",
        "</TASK>",
        "RIP: 0010:",
        "func+0x1/0x2",
        "---[ end trace",
        "Kernel panic - not syncing: ",
        "[",
        "]",
        "\u{0}",
        "\u{feff}",
        "\r",
        "\n",
        " ",
        "kernel BUG at ",
        "page dumped because: ",
        "cut here",
        ">",
        "\x1b[",
        "0x",
        "INFO: task ",
    ];
    for _ in 0..2000 {
        let n = (next() % 60) as usize;
        let s: String = (0..n)
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect();
        let _ = report::parse(&s);
    }
    let bytes: Vec<u8> = (0..100_000).map(|_| (next() % 256) as u8).collect();
    let _ = report::parse(&String::from_utf8_lossy(&bytes));
    let _ = report::linux::parse_reader(std::io::Cursor::new(bytes)).unwrap();
}
