//! The committed regression entry of a real kernel race reproduces on the stock kernel, the
//! way `hotfuzz nightly` runs it: a fresh guest per run, up to the entry's `runs`, one crash
//! with its title decides. When this fails, either the kernel under test no longer has the
//! race (then the entry needs `fixed_in`) or hotfuzz lost the ability to drive it.

use std::path::Path;
use std::process::Command;

#[test]
fn the_real_fake_offline_race_reproduces_on_the_stock_kernel() {
    let entry = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus/regressions/virtio-mem-fake-offline-split-huge-pages");
    let title = "WARNING in virtio_mem_fake_offline_going_offline";
    let yaml = std::fs::read_to_string(entry.join("entry.yaml")).unwrap();
    assert!(yaml.contains(&format!("title: {title}")), "{yaml}");
    let mut seen = Vec::new();
    for run in 1..=3 {
        let out = Command::new(env!("CARGO_BIN_EXE_hotfuzz"))
            .arg("run")
            .arg(entry.join("repro.prog"))
            .args(["--accel", "tcg", "--timeout", "120"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // 1: a report; 0: the race did not fire this time; anything else is hotfuzz failing.
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "run {run}: {:?}\n{stdout}\n{stderr}",
            out.status
        );
        if stdout.contains(&format!("REPORT: {title}")) {
            println!("reproduced in run {run}");
            return;
        }
        seen.push(format!("run {run}:\n{stdout}"));
    }
    panic!("not reproduced in 3 runs:\n{}", seen.join("\n"));
}
