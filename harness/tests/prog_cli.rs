//! `hotfuzz gen` and `hotfuzz run` as a user runs them.

use std::io::Write;
use std::process::{Command, Stdio};

fn hotfuzz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hotfuzz"))
}

#[test]
fn malformed_program_is_refused_before_booting() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.prog");
    std::fs::write(&f, "yield()\nvirtio_mem_resize(dev=0x0, sise=0x1000)\n").unwrap();
    let t = std::time::Instant::now();
    let out = hotfuzz().arg("run").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:2:28: virtio_mem_resize has no argument `sise`",
            f.display()
        )),
        "{err}"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "it booted a guest first"
    );
}

#[test]
fn gen_is_deterministic_per_seed() {
    let run = |seed: &str| {
        let o = hotfuzz()
            .args(["gen", "--seed", seed, "--len", "15"])
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(run("11"), run("11"));
    assert_ne!(run("11"), run("12"));
    assert!(run("11").lines().count() >= 15);
}

/// `hotfuzz gen | hotfuzz run -` on the default guest.
#[test]
fn generated_programs_run_on_the_default_guest() {
    for seed in ["5", "6"] {
        let gen = hotfuzz()
            .args(["gen", "--seed", seed, "--len", "25"])
            .output()
            .unwrap();
        assert!(gen.status.success());
        let mut run = hotfuzz()
            .args(["run", "-", "--accel", "tcg", "--json"])
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
        let n = String::from_utf8_lossy(&gen.stdout).lines().count();
        assert_eq!(ops.len(), n);
        // Every operation reported back (lost runs have none).
        assert!(v[0]["lost"].is_null(), "seed {seed}: {}", v[0]["lost"]);
        assert!(
            ops.iter().all(|o| !o["outcome"].is_null()),
            "seed {seed}: {ops:?}"
        );
    }
}
