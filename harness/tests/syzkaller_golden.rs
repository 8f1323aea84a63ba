//! syzkaller's golden Linux console logs (`harness/testdata/syzkaller/`, see its README): the
//! parser must give the title, alternative titles, report type and corrupted flag syzkaller's
//! parser gives, for at least 90 % of the titles, and find nothing where syzkaller finds
//! nothing. Every log where it differs is listed, with the reason, in the README's table of
//! differences, and the test fails if that table is stale in either direction.

use hotfuzz::report::{self, Report};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What syzkaller's parser says about one log.
#[derive(Debug, Default)]
struct Expect {
    title: Option<String>,
    alt: BTreeSet<String>,
    kind: String,
    corrupted: bool,
}

struct Case {
    name: String,
    expect: Expect,
    log: String,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/syzkaller")
}

/// Header lines up to the first empty line, then the log; a trailing `REPORT:` section is
/// syzkaller's expected report text, not part of the log.
fn load(path: &Path) -> Case {
    let bytes = std::fs::read(path).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, log) = match text.strip_prefix('\n') {
        Some(log) => ("", log),
        None => text.split_once("\n\n").unwrap_or((&text, "")),
    };
    let log = match log.rfind("\n\nREPORT:\n") {
        Some(i) => &log[..i + 1],
        None => log,
    };
    let mut e = Expect::default();
    for l in head.lines().filter(|l| !l.starts_with('#')) {
        let (k, v) = l.split_once(':').unwrap_or((l, ""));
        let v = v.trim().to_string();
        match k {
            "TITLE" if !v.is_empty() => e.title = Some(v),
            "ALT" => {
                e.alt.insert(v);
            }
            "TYPE" => e.kind = v,
            "CORRUPTED" => e.corrupted = v == "Y",
            _ => {}
        }
    }
    Case {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        expect: e,
        log: log.to_string(),
    }
}

fn cases() -> Vec<Case> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    v.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    v.iter().map(|p| load(p)).collect()
}

/// The fields where the parser's first report differs from syzkaller's.
fn differences(e: &Expect, got: Option<&Report>) -> Vec<&'static str> {
    let mut d = Vec::new();
    match (e.title.as_deref(), got) {
        (None, None) => {}
        (None, Some(_)) => d.push("report"),
        (Some(_), None) => d.push("no-report"),
        (Some(t), Some(r)) => {
            if r.title != t {
                d.push("title");
            }
            let alt: BTreeSet<String> = r.alt_titles.iter().cloned().collect();
            if alt != e.alt {
                d.push("alt");
            }
            if r.syz_type() != e.kind {
                d.push("type");
            }
            if r.corrupted.is_some() != e.corrupted {
                d.push("corrupted");
            }
        }
    }
    d
}

/// The README's table of differences: `| case | fields | ... |` rows → case → fields.
fn listed_differences() -> BTreeMap<String, BTreeSet<String>> {
    let readme = std::fs::read_to_string(dir().join("README.md")).unwrap();
    let mut m = BTreeMap::new();
    let mut in_table = false;
    for l in readme.lines() {
        if l.starts_with("## Differences") {
            in_table = true;
            continue;
        }
        if in_table && l.starts_with("## ") {
            break;
        }
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        if !in_table || cells.len() < 4 || !cells[1].chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if cells[1].is_empty() {
            continue;
        }
        let fields = cells[2]
            .split(',')
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect();
        m.insert(cells[1].to_string(), fields);
    }
    m
}

fn first_report(log: &str) -> Option<Report> {
    report::parse(log).into_iter().next()
}

#[test]
fn syzkaller_titles() {
    let cases = cases();
    assert!(cases.len() >= 370, "only {} logs", cases.len());
    let verbose = std::env::var_os("HOTFUZZ_GOLDEN_VERBOSE").is_some();
    let mut titled = 0;
    let mut same_title = 0;
    let mut same_type = 0;
    let mut same_alt = 0;
    let mut same_corrupted = 0;
    let mut silent = 0;
    let mut silent_ok = 0;
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut table = String::new();
    for c in &cases {
        let got = first_report(&c.log);
        let d = differences(&c.expect, got.as_ref());
        match &c.expect.title {
            None => {
                silent += 1;
                silent_ok += usize::from(got.is_none());
            }
            Some(_) => {
                titled += 1;
                same_title += usize::from(!d.iter().any(|f| ["title", "no-report"].contains(f)));
                same_type += usize::from(!d.iter().any(|f| ["type", "no-report"].contains(f)));
                same_alt += usize::from(!d.iter().any(|f| ["alt", "no-report"].contains(f)));
                same_corrupted +=
                    usize::from(!d.iter().any(|f| ["corrupted", "no-report"].contains(f)));
            }
        }
        if !d.is_empty() {
            let r = got.as_ref();
            table.push_str(&format!(
                "{}\t{}\n  want: {:?} {:?} {} corrupted={}\n  got:  {:?} {:?} {} {:?}\n",
                c.name,
                d.join(","),
                c.expect.title,
                c.expect.alt,
                c.expect.kind,
                c.expect.corrupted,
                r.map(|r| &r.title),
                r.map(|r| &r.alt_titles),
                r.map(|r| r.syz_type()).unwrap_or_default(),
                r.and_then(|r| r.corrupted.as_ref()),
            ));
            found.insert(
                c.name.clone(),
                d.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
            );
        }
    }
    let summary = format!(
        "{same_title}/{titled} titles, {same_type} types, {same_alt} alt titles, \
         {same_corrupted} corrupted flags identical; {silent_ok}/{silent} logs without reports"
    );
    if verbose {
        eprintln!("{table}\n{summary}");
    }
    assert_eq!(
        silent_ok, silent,
        "reports where syzkaller finds none\n{table}"
    );
    assert!(same_title * 100 >= titled * 90, "{summary}\n{table}");
    let listed = listed_differences();
    let mut stale = Vec::new();
    for (name, fields) in &found {
        if listed.get(name) != Some(fields) {
            stale.push(format!(
                "{name}: differs in {fields:?}, README lists {:?}",
                listed.get(name)
            ));
        }
    }
    for (name, fields) in &listed {
        if !found.contains_key(name) {
            stale.push(format!(
                "{name}: README lists {fields:?}, but it matches now"
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "README's table of differences is stale ({summary}):\n{}\n{table}",
        stale.join("\n")
    );
}

/// `text` as a mail client sends it quoted in a reply: lines wrapped at `width` columns at
/// spaces (leading indentation kept on the first piece), then `> ` in front of every line.
fn as_quoted_mail(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    for line in text.lines() {
        let mut cur = String::new();
        for (i, word) in line.split(' ').enumerate() {
            if i > 0 && cur.len() + 1 + word.len() > width && !cur.trim().is_empty() {
                out.push_str("> ");
                out.push_str(cur.trim_end());
                out.push('\n');
                cur.clear();
            } else if i > 0 {
                cur.push(' ');
            }
            cur.push_str(word);
        }
        out.push_str("> ");
        out.push_str(&cur);
        out.push('\n');
    }
    out
}

/// A splat pasted from a mail reply (quoted, wrapped by the mail client) keeps its title.
#[test]
fn quoted_and_wrapped_mail_keeps_titles() {
    let cases = cases();
    let mut same = 0;
    let mut differ = Vec::new();
    for c in &cases {
        let plain = first_report(&c.log).map(|r| r.title);
        let mail = first_report(&as_quoted_mail(&c.log, 78)).map(|r| r.title);
        if plain == mail {
            same += 1;
        } else {
            differ.push(format!("{}: {plain:?} became {mail:?}", c.name));
        }
    }
    assert!(
        same * 100 >= cases.len() * 97,
        "{same}/{} keep their title:\n{}",
        cases.len(),
        differ.join("\n")
    );
}
