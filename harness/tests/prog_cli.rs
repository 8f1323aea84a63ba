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

#[test]
fn gen_refuses_a_state_with_zero_block_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let good = hotfuzz::program::state::GuestState::model(&hotfuzz_vm::MachineConfig::new(
        hotfuzz_vm::Arch::X86_64,
    ));
    for (name, zero_device) in [("memory", false), ("device", true)] {
        let mut st = good.clone();
        if zero_device {
            st.devices[0].block_size = 0;
        } else {
            st.block_size = 0;
        }
        let f = dir.path().join(format!("{name}.json"));
        std::fs::write(&f, serde_json::to_string(&st).unwrap()).unwrap();
        let out = hotfuzz()
            .args(["gen", "--count", "20", "--state"])
            .arg(&f)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains("impossible guest state"), "{name}: {err}");
        assert!(err.contains("block_size 0x0"), "{name}: {err}");
    }
}

#[test]
fn a_closed_stdout_ends_quietly_and_a_full_one_is_an_error() {
    use std::io::BufRead;
    // `hotfuzz gen --count 2000 | head -1`
    let mut child = hotfuzz()
        .args(["gen", "--count", "2000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains('('), "{line}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    // `hotfuzz gen > /dev/full`
    let out = hotfuzz()
        .arg("gen")
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("writing to stdout: No space left on device"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
