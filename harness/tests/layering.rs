//! The stages of `harness/src` import one way: build → program → run → report → judge → store →
//! fuzz → repro → bisect → nightly (and the command line, in the binary, uses them all). A module may use its
//! own stage and the ones before it, never a later one; `report` uses nothing else at all.
//! This test reads the sources, so a change that breaks the rule fails here.

use std::path::Path;

const STAGES: &[&str] = &[
    "build", "program", "run", "report", "judge", "store", "fuzz", "repro", "bisect", "nightly",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn stages_import_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    for (i, stage) in STAGES.iter().enumerate() {
        let mut files = Vec::new();
        rust_files(&src.join(stage), &mut files);
        assert!(!files.is_empty(), "no stage {stage}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (n, line) in text.lines().enumerate() {
                let mut rest = line;
                while let Some(at) = rest.find("crate::") {
                    let after = &rest[at + 7..];
                    let name: String = after
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if let Some(j) = STAGES.iter().position(|s| *s == name) {
                        let allowed = if *stage == "report" { j == i } else { j <= i };
                        if !allowed {
                            bad.push(format!(
                                "{}:{}: {stage} uses crate::{name}",
                                f.strip_prefix(&src).unwrap().display(),
                                n + 1
                            ));
                        }
                    }
                    rest = after;
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the stage order:\n{}",
        bad.join("\n")
    );
}

#[test]
fn report_parsing_is_pure() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/report");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for bad in [
            "hotfuzz_vm",
            "std::process",
            "std::fs",
            "std::net",
            "Command::new",
        ] {
            assert!(
                !text.contains(bad),
                "{} uses {bad}: report/ is text in, reports out",
                f.display()
            );
        }
    }
}
