//! Host prerequisites: finding programs and installing Debian packages.
//!
//! hotfuzz installs what it needs with apt-get when it runs as root; otherwise it stops with
//! the exact command to run.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// A host requirement: a file that must exist and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    /// A program name (looked up in `PATH`) or an absolute path.
    pub probe: &'static str,
    /// The package that provides it.
    pub package: &'static str,
}

/// Finds `name` in `PATH` (or returns it if it is a path to an existing file).
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// True when hotfuzz runs as root (and may therefore run apt-get itself).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn satisfied(r: &Requirement) -> bool {
    if r.probe.starts_with('/') {
        Path::new(r.probe).exists()
    } else {
        find_program(r.probe).is_some()
    }
}

/// The apt-get command line that installs `packages`.
pub fn install_command(packages: &[&str]) -> String {
    let sudo = if is_root() { "" } else { "sudo " };
    format!(
        "{sudo}apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

static APT_LOCK: Mutex<()> = Mutex::new(());

/// Makes sure every requirement is met. Missing packages are installed with apt-get when
/// running as root and `auto_install` is set; otherwise the error names the exact command.
pub fn ensure(reqs: &[Requirement], auto_install: bool) -> Result<()> {
    let missing: Vec<&Requirement> = reqs.iter().filter(|r| !satisfied(r)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = missing.iter().map(|r| r.package).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    let what = missing
        .iter()
        .map(|r| r.probe)
        .collect::<Vec<_>>()
        .join(", ");
    if !(auto_install && is_root()) {
        return Err(Error::MissingTool {
            what,
            install: install_command(&pkgs),
        });
    }
    let _g = APT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    tracing::info!("installing missing host packages: {}", pkgs.join(" "));
    eprintln!("hotfuzz: installing {} with apt-get", pkgs.join(" "));
    if apt_install(&pkgs).is_err() {
        // The package lists may be missing or stale on a fresh machine.
        apt_update()?;
        apt_install(&pkgs)?;
    }
    let still: Vec<&str> = missing
        .iter()
        .filter(|r| !satisfied(r))
        .map(|r| r.probe)
        .collect();
    if !still.is_empty() {
        return Err(Error::MissingTool {
            what: still.join(", "),
            install: install_command(&pkgs),
        });
    }
    Ok(())
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| Error::io("running apt-get install", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Package(format!(
            "apt-get install {} failed ({status})",
            pkgs.join(" ")
        )))
    }
}

/// Runs `apt-get update`. Partial failures (one mirror index out of sync) are tolerated:
/// apt keeps the old lists, and later steps say precisely what is missing.
pub fn apt_update() -> Result<()> {
    if !is_root() {
        return Err(Error::Package(
            "the package lists need updating; run: sudo apt-get update".into(),
        ));
    }
    let status = Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| Error::io("running apt-get update", e))?;
    if !status.success() {
        tracing::warn!("apt-get update reported errors ({status}); continuing with what it got");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(find_program("sh").is_some());
        assert!(find_program("definitely-not-a-program-hotfuzz").is_none());
        assert!(find_program("/nonexistent/qemu").is_none());
    }

    #[test]
    fn missing_requirement_names_command() {
        let r = [Requirement {
            probe: "/nonexistent/hotfuzz-probe",
            package: "hotfuzz-nonexistent-pkg",
        }];
        let e = ensure(&r, false).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/hotfuzz-probe"), "{e}");
        assert!(
            e.contains("apt-get install -y --no-install-recommends hotfuzz-nonexistent-pkg"),
            "{e}"
        );
    }
}
