//! `hotfuzz gen | hotfuzz run -` on a real guest, as a user runs them.

use std::io::Write;
use std::process::{Command, Stdio};

fn hotfuzz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hotfuzz"))
}

/// `hotfuzz gen | hotfuzz run -` on the default guest.
#[test]
fn generated_programs_run_on_the_default_guest() {
    // `hotfuzz run` keeps its VM directory (the logs are its output): in a directory of
    // this test's, not in /tmp.
    let tmp = tempfile::tempdir().unwrap();
    for seed in ["5", "6"] {
        let gen = hotfuzz()
            .args(["gen", "--seed", seed, "--len", "25"])
            .output()
            .unwrap();
        assert!(gen.status.success());
        let mut run = hotfuzz()
            .args(["run", "-", "--accel", "tcg", "--json"])
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        run.stdin.take().unwrap().write_all(&gen.stdout).unwrap();
        let out = run.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // 0: no splat, 1: a splat (a finding, not a harness failure); never 2.
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "seed {seed}: {stderr}"
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ops = v[0]["ops"].as_array().unwrap();
        // One line per operation, besides a block's `repeat N {` and `}`.
        let n = String::from_utf8_lossy(&gen.stdout)
            .lines()
            .filter(|l| !l.starts_with("repeat ") && l.trim() != "}")
            .count();
        assert_eq!(ops.len(), n);
        // Every operation reported back (lost runs have none).
        assert!(v[0]["lost"].is_null(), "seed {seed}: {}", v[0]["lost"]);
        assert!(
            ops.iter().all(|o| !o["outcome"].is_null()),
            "seed {seed}: {ops:?}"
        );
    }
}
