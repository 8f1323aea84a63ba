//! Golden console logs of `harness/testdata/report/` (see that directory's README), shared by
//! the golden tests and the big-log test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// One expected report.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Expect {
    pub title: String,
    pub alt: Vec<String>,
    pub kind: Option<String>,
    pub frame: Option<String>,
    pub corrupted: Option<bool>,
    pub interleaved: Option<bool>,
}

/// A golden log: its expectations and the raw log.
pub struct Golden {
    pub path: PathBuf,
    pub expect: Vec<Expect>,
    pub log: String,
}

/// Where the golden logs are.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/report")
}

/// Reads one golden file (header, blank line, log).
pub fn load(path: &Path) -> Golden {
    let text = std::fs::read_to_string(path).unwrap();
    let (head, log) = text
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("{}: no blank line after the header", path.display()));
    let mut expect: Vec<Expect> = Vec::new();
    let mut none = false;
    for l in head.lines() {
        if l.starts_with('#') {
            continue;
        }
        let (k, v) = l
            .split_once(": ")
            .or_else(|| l.split_once(':'))
            .unwrap_or_else(|| panic!("{}: bad header line {l:?}", path.display()));
        let v = v.trim().to_string();
        let cur = expect.last_mut();
        match (k, cur) {
            ("TITLE", _) => expect.push(Expect {
                title: v,
                ..Default::default()
            }),
            ("REPORTS", _) if v == "0" => none = true,
            ("ALT", Some(e)) => e.alt.push(v),
            ("TYPE", Some(e)) => e.kind = Some(v),
            ("FRAME", Some(e)) => e.frame = Some(v),
            ("CORRUPTED", Some(e)) => e.corrupted = Some(v == "Y"),
            ("INTERLEAVED", Some(e)) => e.interleaved = Some(v == "Y"),
            _ => panic!("{}: bad header line {l:?}", path.display()),
        }
    }
    assert!(
        none || !expect.is_empty(),
        "{}: header says nothing",
        path.display()
    );
    Golden {
        path: path.to_path_buf(),
        expect,
        log: log.to_string(),
    }
}

/// Every golden file, sorted by name.
pub fn goldens() -> Vec<Golden> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v.iter().map(|p| load(p)).collect()
}
