//! The `hotfuzz vm` commands as a user runs them: bad input gives clear errors, and however
//! hotfuzz dies, no QEMU survives it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn hotfuzz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hotfuzz"))
}

#[test]
fn not_a_kernel_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("bzImage");
    std::fs::write(&fake, "this is a text file\n").unwrap();
    let out = hotfuzz()
        .args(["vm", "boot", "--accel", "tcg", "--kernel"])
        .arg(&fake)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a kernel image"), "{err}");
    assert!(err.contains(&fake.display().to_string()), "{err}");
}

#[test]
fn bad_virtio_mem_spec_is_a_clear_error() {
    let out = hotfuzz()
        .args(["vm", "boot", "--virtio-mem", "size=4G,requested=3M"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("multiples of the block size"), "{err}");
}

/// (pid, state) of the children of `parent` whose command name starts with `qemu`.
fn qemu_children(parent: u32) -> Vec<(i32, String)> {
    common::all_processes()
        .into_iter()
        .filter(|(_, st)| st.comm.starts_with("qemu") && st.ppid == parent)
        .map(|(pid, st)| (pid as i32, st.state.to_string()))
        .collect()
}

fn gone(pid: i32) -> bool {
    common::proc_stat(pid as u32).is_none_or(|st| st.state == 'Z')
}

fn kill_during_boot_leaves_no_qemu(signal: i32) {
    kill_while_booting(&["vm", "boot", "--accel", "tcg", "--shell"], signal);
}

/// Runs hotfuzz with `args` (in a fresh directory, its TMPDIR inside), sends it `signal` once
/// its first QEMU runs, and checks that QEMU and the VM directory go with it.
fn kill_while_booting(args: &[&str], signal: i32) {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("p.prog"),
        "sleep_ms(ms=0x1388)\nsleep_ms(ms=0x1388)\n",
    )
    .unwrap();
    let mut child = hotfuzz()
        .args(args)
        .current_dir(cwd.path())
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let qemu = loop {
        if let Some((pid, _)) = qemu_children(child.id()).first() {
            break *pid;
        }
        assert!(Instant::now() < deadline, "QEMU never started");
        assert!(child.try_wait().unwrap().is_none(), "hotfuzz exited early");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let status = child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(qemu) {
        assert!(
            Instant::now() < deadline,
            "QEMU {qemu} survived hotfuzz (signal {signal}, hotfuzz {status})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The VM directory (an initrd of megabytes) goes too, unless nothing could run.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("hotfuzz-vm-"))
        .collect();
    if signal == libc::SIGKILL {
        // Removed by the next hotfuzz that makes a VM directory here (its owner is dead).
        assert!(left.len() <= 1, "{left:?}");
    } else {
        assert_eq!(left, Vec::<String>::new(), "signal {signal}");
    }
}

#[test]
fn sigkill_of_hotfuzz_takes_qemu_down() {
    kill_during_boot_leaves_no_qemu(libc::SIGKILL);
}

#[test]
fn sigterm_of_hotfuzz_takes_qemu_down() {
    kill_during_boot_leaves_no_qemu(libc::SIGTERM);
}

#[test]
fn sigint_of_hotfuzz_takes_qemu_down() {
    kill_during_boot_leaves_no_qemu(libc::SIGINT);
}

#[test]
fn ctrl_c_of_run_and_repro_takes_qemu_and_the_vm_directory_down() {
    kill_while_booting(&["run", "p.prog", "--accel", "tcg"], libc::SIGINT);
    kill_while_booting(
        &["repro", "p.prog", "--accel", "tcg", "--runs", "1"],
        libc::SIGINT,
    );
    kill_while_booting(&["run", "p.prog", "--accel", "tcg"], libc::SIGTERM);
}
