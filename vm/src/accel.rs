//! Choosing between KVM and TCG, and remembering what works on this host.
//!
//! `auto` tries KVM when `/dev/kvm` is usable and falls back to TCG when the guest dies early
//! (nested KVM on some hosts stops in the kernel decompressor with "emulation failure"). A
//! failure is remembered per host (kernel release, CPU, QEMU binary) in the cache, so later
//! boots go straight to TCG.

use crate::arch::Arch;
use crate::cache::{atomic_write, cache_dir};
use crate::error::{Error, Result};
use crate::machine::{Accel, AccelChoice};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Memo {
    #[serde(default)]
    hosts: std::collections::BTreeMap<String, Verdict>,
}

/// What was learned about KVM on one host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    /// True if a KVM guest booted.
    pub kvm_works: bool,
    /// Why KVM was judged broken.
    pub reason: String,
    /// When it was learned (RFC 3339).
    pub when: String,
}

/// True when `/dev/kvm` can be opened for reading and writing.
pub fn kvm_usable() -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn host_key(qemu: &Path) -> String {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .unwrap_or("")
        .to_string();
    let q = fs::metadata(qemu)
        .map(|m| format!("{}:{:?}", m.len(), m.modified().ok()))
        .unwrap_or_default();
    let h = blake3::hash(format!("{release}|{cpu}|{}|{q}", qemu.display()).as_bytes());
    h.to_hex()[..16].to_string()
}

fn memo_path() -> Result<std::path::PathBuf> {
    Ok(cache_dir()?.join("accel.json"))
}

fn load() -> Memo {
    memo_path()
        .ok()
        .and_then(|p| fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// What is remembered for this host and QEMU binary, if anything.
pub fn remembered(qemu: &Path) -> Option<Verdict> {
    load().hosts.get(&host_key(qemu)).cloned()
}

/// Records a verdict for this host.
pub fn remember(qemu: &Path, kvm_works: bool, reason: &str) {
    let mut m = load();
    m.hosts.insert(
        host_key(qemu),
        Verdict {
            kvm_works,
            reason: reason.to_string(),
            when: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        },
    );
    if let (Ok(p), Ok(text)) = (memo_path(), serde_json::to_string_pretty(&m)) {
        let _ = atomic_write(&p, text.as_bytes());
    }
}

/// The accelerators to try, in order.
pub fn plan(choice: AccelChoice, arch: Arch, qemu: &Path) -> Result<Vec<Accel>> {
    let native = Arch::host() == Some(arch);
    match choice {
        AccelChoice::Tcg => Ok(vec![Accel::Tcg]),
        AccelChoice::Kvm => {
            if !native {
                return Err(Error::Config(format!(
                    "KVM cannot run a {arch} guest on this host; use --accel tcg"
                )));
            }
            if !kvm_usable() {
                return Err(Error::Config(
                    "KVM requested but /dev/kvm is missing or not accessible".into(),
                ));
            }
            Ok(vec![Accel::Kvm])
        }
        AccelChoice::Auto => {
            if !native || !kvm_usable() {
                return Ok(vec![Accel::Tcg]);
            }
            match remembered(qemu) {
                Some(v) if !v.kvm_works => {
                    tracing::info!("KVM is known not to work here ({}); using TCG", v.reason);
                    Ok(vec![Accel::Tcg])
                }
                _ => Ok(vec![Accel::Kvm, Accel::Tcg]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_is_always_possible_and_foreign_kvm_is_refused() {
        let q = Path::new("/usr/bin/qemu-system-ppc64");
        assert_eq!(
            plan(AccelChoice::Tcg, Arch::Ppc64le, q).unwrap(),
            vec![Accel::Tcg]
        );
        assert_eq!(
            plan(AccelChoice::Auto, Arch::Ppc64le, q).unwrap(),
            vec![Accel::Tcg]
        );
        assert!(plan(AccelChoice::Kvm, Arch::Ppc64le, q).is_err());
    }
}
