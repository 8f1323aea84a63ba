//! `hotfuzz report parse` and `hotfuzz report list` as a user runs them (no guest needed).

use hotfuzz::report;
use hotfuzz::store::{Evidence, KernelInfo, Store};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn hotfuzz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hotfuzz"))
}

fn list(dir: &Path) -> Output {
    hotfuzz()
        .args(["report", "list", "--dir"])
        .arg(dir)
        .output()
        .unwrap()
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/report")
        .join(name)
}

fn with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn parse_prints_titles_and_exits_1_when_it_finds_reports() {
    let out = hotfuzz()
        .args(["report", "parse", "--brief"])
        .arg(golden("several-reports.log"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let s = String::from_utf8(out.stdout).unwrap();
    let titles: Vec<&str> = s
        .lines()
        .filter_map(|l| l.strip_prefix("TITLE: "))
        .collect();
    assert_eq!(
        titles,
        [
            "WARNING in bugzoo_trigger_warn",
            "WARNING: refcount bug in bugzoo_trigger_refcount",
            "BUG: Bad page state in bugzoo_bad_page"
        ]
    );
    assert!(s.contains("PAGE DUMPED BECAUSE: nonzero mapcount"), "{s}");
}

#[test]
fn parse_reads_a_pasted_splat_from_stdin_as_json() {
    // The mail form: quoted, wrapped by the mail client, no timestamps.
    let text = std::fs::read_to_string(golden("pasted-zoo-warn-reonline-wrapped.log")).unwrap();
    let (_, body) = text.split_once("\n\n").unwrap();
    let mut cmd = hotfuzz();
    cmd.args(["report", "parse", "--json", "-"]);
    let out = with_stdin(cmd, body.as_bytes());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reports = v.as_array().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["title"], "WARNING in bugzoo_warn_reonline");
    assert_eq!(reports[0]["frame"], "bugzoo_warn_reonline");
    // The unwrapped header line is in the report text.
    assert!(reports[0]["text"]
        .as_str()
        .unwrap()
        .contains("bugzoo.c:143 bugzoo_warn_reonline+0x14/0x20 [bugzoo]"));
}

#[test]
fn parse_of_a_clean_log_says_so_and_exits_0() {
    let out = hotfuzz()
        .args(["report", "parse"])
        .arg(golden("noise-hotplug-offline-failures.log"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no reports");
}

#[test]
fn parse_of_a_missing_file_names_it() {
    let out = hotfuzz()
        .args(["report", "parse", "/nonexistent/console.log"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/console.log"), "{err}");
}

#[test]
fn list_shows_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = list(dir.path());
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("no reports"));

    let store = Store::open(dir.path()).unwrap();
    let text = std::fs::read_to_string(golden("bad-page-state.log")).unwrap();
    let r = report::parse(&text).remove(0);
    let ev = Evidence {
        console_log: None,
        excerpt: r.text.clone(),
        programs: vec!["sleep_ms(ms=0x1)\n".into()],
        run_log: None,
        kernel: KernelInfo {
            release: "6.12.117+deb12-amd64".into(),
            origin: "test".into(),
            config_hash: None,
        },
        guest: None,
        symbolized: None,
        injections: Vec::new(),
    };
    store.file(&r, &ev).unwrap();
    store.file(&r, &ev).unwrap();
    let out = list(dir.path());
    assert!(out.status.success(), "{out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    let row = s
        .lines()
        .find(|l| l.contains("BUG: Bad page state in bugzoo_bad_page"))
        .unwrap_or_else(|| panic!("{s}"));
    // STATUS, then COUNT: a bug filed twice and never reported by a night is still new.
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..2], ["new", "2"], "{row}");
    assert!(row.contains("BAD_PAGE"), "{row}");
}

#[test]
fn list_never_prints_control_characters_from_meta_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let bug = dir.path().join("evil");
    std::fs::create_dir(&bug).unwrap();
    // A title someone edited to clear the screen and fake a line, in YAML's escapes.
    std::fs::write(
        bug.join("meta.yaml"),
        "title: \"BUG: x\\e[2J\\e]0;owned\\a\\rFAKE\\nROW\"\ntype: WARNING\n\
         first_seen: \"2026-01-01T00:00:00Z\"\nlast_seen: \"2026-01-01T00:00:00Z\\e[31m\"\n\
         count: 1\nkernel: {release: r, origin: o}\nreproducibility: \"1/1\\e[0m\"\n",
    )
    .unwrap();
    let out = list(dir.path());
    assert!(out.status.success(), "{out:?}");
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("BUG: x?[2J?]0;owned??FAKE?ROW"), "{s:?}");
    assert!(!s.chars().any(|c| c.is_control() && c != '\n'), "{s:?}");
    assert_eq!(s.lines().count(), 2, "{s:?}");
}

#[test]
fn list_of_a_missing_store_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo/x");
    let out = list(&typo);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("does not exist"),
        "{out:?}"
    );
    assert!(!dir.path().join("typo").exists());
}

#[test]
fn mark_of_a_missing_store_creates_nothing_and_a_full_stdout_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo/x");
    let out = hotfuzz()
        .args(["report", "mark", "BUG: x", "--fixed", "abc", "--dir"])
        .arg(&typo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no report store there"),
        "{out:?}"
    );
    assert!(!dir.path().join("typo").exists());
    // A real store, stdout on a full disk: an error, no panic, and the mark is made.
    let store = Store::open(dir.path()).unwrap();
    let text = std::fs::read_to_string(golden("bad-page-state.log")).unwrap();
    let r = report::parse(&text).remove(0);
    let ev = Evidence {
        console_log: None,
        excerpt: r.text.clone(),
        programs: vec!["sleep_ms(ms=0x1)\n".into()],
        run_log: None,
        kernel: KernelInfo {
            release: "6.12.117+deb12-amd64".into(),
            origin: "test".into(),
            config_hash: None,
        },
        guest: None,
        symbolized: None,
        injections: Vec::new(),
    };
    store.file(&r, &ev).unwrap();
    let title = r.title.clone();
    let out = hotfuzz()
        .args(["report", "mark", &title, "--fixed", "abc", "--dir"])
        .arg(dir.path())
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let s = String::from_utf8_lossy(&list(dir.path()).stdout).to_string();
    assert!(s.contains("fixed"), "{s}");
}

/// A 300 MB line on stdin, and a report after it, under a 128 MiB data limit: the line is
/// cut, not kept (reading all of stdin first needed 300 MB and more).
#[test]
fn parse_of_a_huge_line_on_stdin_stays_in_bounded_memory() {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -d 131072 && exec {} report parse --brief -",
            env!("CARGO_BIN_EXE_hotfuzz")
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        stdin.write_all(b"[    1.000000] ").unwrap();
        let chunk = vec![b'A'; 1 << 20];
        for _ in 0..300 {
            stdin.write_all(&chunk).unwrap();
        }
        stdin
            .write_all(
                b"\n[    2.000000] WARNING: CPU: 0 PID: 1 at mm/memory_hotplug.c:1 f+0x1/0x2\n",
            )
            .unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(s.contains("TITLE: WARNING"), "{s}");
}
