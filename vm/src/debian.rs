//! Fetching Debian binary packages into the cache without installing them on the host.
//!
//! `apt-get download` fetches the `.deb` (no root needed), `dpkg-deb -x` unpacks it into a
//! cache directory keyed by package, version and architecture.

use crate::arch::Arch;
use crate::cache::{cache_subdir, FileLock};
use crate::error::{Error, IoContext, Result};
use crate::host;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Debian package unpacked into the cache.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// Package name.
    pub name: String,
    /// Package version.
    pub version: String,
    /// Root of the unpacked file tree.
    pub root: PathBuf,
}

fn apt_cache(args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new("apt-cache")
        .args(args)
        .output()
        .map_err(|e| Error::io("running apt-cache (is this a Debian system?)", e))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// The candidate version apt would download for `name` on `arch`, if apt knows the package.
pub fn candidate_version(name: &str, arch: Arch) -> Result<Option<String>> {
    let spec = format!("{name}:{}", arch.debian_arch());
    let (ok, out) = apt_cache(&["show", "--no-all-versions", &spec])?;
    if !ok {
        return Ok(None);
    }
    Ok(out
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(|v| v.trim().to_string()))
}

/// Package names apt knows that start with `prefix`.
pub fn package_names(prefix: &str) -> Result<Vec<String>> {
    let (_, out) = apt_cache(&["pkgnames", prefix])?;
    let mut v: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// Makes sure dpkg knows a foreign architecture (needed to download ppc64el packages on an
/// amd64 host). Adds it and updates the lists when root, otherwise says what to run.
pub fn ensure_architecture(arch: Arch) -> Result<()> {
    if Some(arch) == Arch::host() {
        return Ok(());
    }
    let out = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .map_err(|e| Error::io("running dpkg", e))?;
    let known = String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == arch.debian_arch());
    if known {
        return Ok(());
    }
    let cmd = format!(
        "dpkg --add-architecture {a} && apt-get update",
        a = arch.debian_arch()
    );
    if !host::is_root() {
        return Err(Error::MissingTool {
            what: format!("Debian packages for {}", arch.debian_arch()),
            install: format!("sudo sh -c '{cmd}'"),
        });
    }
    eprintln!(
        "hotfuzz: enabling the {} package architecture",
        arch.debian_arch()
    );
    let st = Command::new("dpkg")
        .args(["--add-architecture", arch.debian_arch()])
        .status()
        .map_err(|e| Error::io("running dpkg --add-architecture", e))?;
    if !st.success() {
        return Err(Error::Package(format!("`{cmd}` failed")));
    }
    host::apt_update()
}

/// The newest cached copy of `name` for `arch`, if any (no apt involved).
pub fn cached(name: &str, arch: Arch) -> Result<Option<Unpacked>> {
    let base = cache_subdir(&format!("debs/{}", arch.debian_arch()))?;
    cached_any(&base, name)
}

/// Downloads and unpacks `name` for `arch` into the cache and returns where it is.
/// A copy already in the cache is reused without asking apt (apt-cache takes seconds per
/// call), so this also works offline once the package has been fetched.
pub fn fetch(name: &str, arch: Arch) -> Result<Unpacked> {
    let base = cache_subdir(&format!("debs/{}", arch.debian_arch()))?;
    if let Some(u) = cached_any(&base, name)? {
        return Ok(u);
    }
    let mut version = candidate_version(name, arch)?;
    if version.is_none() && host::is_root() {
        host::apt_update()?;
        version = candidate_version(name, arch)?;
    }
    let version = match version {
        Some(v) => v,
        None => {
            // Offline, or the package left the archive: use any cached copy.
            if let Some(u) = cached_any(&base, name)? {
                return Ok(u);
            }
            return Err(Error::Package(format!(
                "apt does not know package {name}:{a} (try `apt-get update`{extra})",
                a = arch.debian_arch(),
                extra = if Some(arch) == Arch::host() {
                    String::new()
                } else {
                    format!(" after `dpkg --add-architecture {}`", arch.debian_arch())
                }
            )));
        }
    };
    let dir = base.join(format!("{name}_{}", sanitize(&version)));
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(Unpacked {
            name: name.into(),
            version,
            root: dir.join("root"),
        });
    }
    let _lock = FileLock::acquire(&base.join(format!(".{name}.lock")))?;
    if done.exists() {
        return Ok(Unpacked {
            name: name.into(),
            version,
            root: dir.join("root"),
        });
    }
    let tmp = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&base)
        .ctx(|| format!("creating a temporary directory in {}", base.display()))?;
    eprintln!(
        "hotfuzz: downloading {name} {version} ({})",
        arch.debian_arch()
    );
    let spec = format!("{name}:{}={version}", arch.debian_arch());
    let deb = download_spec(name, &spec, tmp.path())?;
    let root = tmp.path().join("root");
    extract_deb(&deb, &root)?;
    fs::remove_file(&deb).ctx(|| format!("removing {}", deb.display()))?;
    fs::write(tmp.path().join(".complete"), &version)
        .ctx(|| format!("marking {} complete", tmp.path().display()))?;
    if dir.exists() {
        fs::remove_dir_all(&dir).ctx(|| format!("removing stale {}", dir.display()))?;
    }
    let kept = tmp.keep();
    fs::rename(&kept, &dir).ctx(|| format!("moving {} into place", dir.display()))?;
    Ok(Unpacked {
        name: name.into(),
        version,
        root: dir.join("root"),
    })
}

/// Downloads the candidate version of `name` for `arch` into `dir` and returns the `.deb`
/// (architecture-independent packages are found without the qualifier).
pub fn download(name: &str, arch: Arch, dir: &Path) -> Result<PathBuf> {
    match download_spec(name, &format!("{name}:{}", arch.debian_arch()), dir) {
        Err(Error::Package(e)) if e.contains("no candidate") => download_spec(name, name, dir),
        r => r,
    }
}

fn download_spec(name: &str, spec: &str, dir: &Path) -> Result<PathBuf> {
    let mut cmd = Command::new("apt-get");
    cmd.arg("download").arg(spec).current_dir(dir);
    if host::is_root() {
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    let out = cmd
        .output()
        .map_err(|e| Error::io("running apt-get download", e))?;
    if !out.status.success() {
        return Err(Error::Package(format!(
            "apt-get download {spec} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let prefix = format!("{name}_");
    fs::read_dir(dir)
        .ctx(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.starts_with(&prefix))
        })
        .ok_or_else(|| Error::Package(format!("apt-get download {spec} produced no .deb")))
}

/// The `Depends` of a package as apt knows it (package names only, alternatives flattened).
pub fn depends(name: &str, arch: Arch) -> Result<Vec<String>> {
    let spec = format!("{name}:{}", arch.debian_arch());
    let (ok, out) = apt_cache(&["show", "--no-all-versions", &spec])?;
    if !ok {
        return Err(Error::Package(format!("apt does not know package {spec}")));
    }
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or("");
    Ok(line
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .map(|d| d.split(':').next().unwrap_or(d).to_string())
        .collect())
}

/// Unpacks a `.deb` into `dest` with `dpkg-deb -x`.
pub fn extract_deb(deb: &Path, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest).ctx(|| format!("creating {}", dest.display()))?;
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(dest)
        .output()
        .map_err(|e| Error::io("running dpkg-deb", e))?;
    if !out.status.success() {
        return Err(Error::Package(format!(
            "dpkg-deb -x {} failed: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn cached_any(base: &Path, name: &str) -> Result<Option<Unpacked>> {
    let prefix = format!("{name}_");
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    let Ok(rd) = fs::read_dir(base) else {
        return Ok(None);
    };
    for e in rd.flatten() {
        let fname = e.file_name().to_string_lossy().into_owned();
        if let Some(v) = fname.strip_prefix(&prefix) {
            if e.path().join(".complete").exists() {
                let version = fs::read_to_string(e.path().join(".complete"))
                    .unwrap_or_else(|_| v.to_string());
                found.push((version, e.path()));
            }
        }
    }
    found.sort_by_key(|(v, _)| numeric_key(v));
    Ok(found.pop().map(|(version, dir)| Unpacked {
        name: name.into(),
        version,
        root: dir.join("root"),
    }))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".+-_~".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Compares dotted numeric version fragments such as `6.12.117` numerically.
pub fn numeric_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_key_orders_kernel_versions() {
        let mut v = vec!["6.12.99", "6.12.117", "6.12.107"];
        v.sort_by_key(|s| numeric_key(s));
        assert_eq!(v, ["6.12.99", "6.12.107", "6.12.117"]);
    }

    #[test]
    fn sanitize_keeps_debian_versions_readable() {
        assert_eq!(sanitize("6.12.117-1~deb12u1"), "6.12.117-1~deb12u1");
        assert_eq!(sanitize("1:7.2/x"), "1_7.2_x");
    }
}
