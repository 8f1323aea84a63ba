//! `hotfuzz gen` and `hotfuzz run` as a user runs them.

use std::process::Command;

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
