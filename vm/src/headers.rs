//! Kernel headers for building out-of-tree modules (the bug zoo) against a guest kernel,
//! without installing anything on the host: Debian's headers, common headers and kbuild
//! packages are unpacked together into one tree in the cache, whose top Makefile is pointed at
//! it. A kernel build directory serves as its own headers.

use crate::arch::Arch;
use crate::cache::{cache_subdir, FileLock};
use crate::debian;
use crate::error::{Error, IoContext, Result};
use crate::kernel::Kernel;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tree `make -C <dir> M=...` can build modules against.
#[derive(Debug, Clone)]
pub struct KernelHeaders {
    /// The directory to pass to `make -C`.
    pub dir: PathBuf,
    /// Extra make arguments (ARCH, CROSS_COMPILE, switches).
    pub make_args: Vec<String>,
}

fn make_args(arch: Arch) -> Vec<String> {
    // Module BTF would need pahole; the guest does not need it.
    let mut v = vec!["CONFIG_DEBUG_INFO_BTF_MODULES=".to_string()];
    if Some(arch) != Arch::host() && arch == Arch::Ppc64le {
        v.push("ARCH=powerpc".into());
        v.push("CROSS_COMPILE=powerpc64le-linux-gnu-".into());
    }
    v
}

impl KernelHeaders {
    /// Headers for `kernel`: its build directory, or Debian's headers packages for its
    /// release.
    pub fn for_kernel(kernel: &Kernel) -> Result<KernelHeaders> {
        if let Some(dir) = &kernel.modules_dir {
            if dir.join("Module.symvers").is_file() && dir.join("Makefile").is_file() {
                return Ok(KernelHeaders {
                    dir: dir.clone(),
                    make_args: make_args(kernel.arch),
                });
            }
        }
        let release = kernel.release.clone().ok_or_else(|| {
            Error::Kernel("the kernel release is unknown, so are its headers".into())
        })?;
        let root = fetch_debian_headers(&release, kernel.arch)?;
        Ok(KernelHeaders {
            dir: root
                .join("usr/src")
                .join(format!("linux-headers-{release}")),
            make_args: make_args(kernel.arch),
        })
    }

    /// Builds the module sources in `src` (a directory with a Kbuild file) into `out` and
    /// returns the `.ko` named `name`.
    pub fn build_module(&self, src: &Path, out: &Path, name: &str) -> Result<PathBuf> {
        if out.exists() {
            fs::remove_dir_all(out).ctx(|| format!("cleaning {}", out.display()))?;
        }
        fs::create_dir_all(out).ctx(|| format!("creating {}", out.display()))?;
        for e in fs::read_dir(src).ctx(|| format!("listing {}", src.display()))? {
            let e = e.ctx(|| format!("listing {}", src.display()))?;
            if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                fs::copy(e.path(), out.join(e.file_name()))
                    .ctx(|| format!("copying {}", e.path().display()))?;
            }
        }
        let o = Command::new("make")
            .arg("-C")
            .arg(&self.dir)
            .arg(format!("M={}", out.display()))
            .args(&self.make_args)
            .arg("modules")
            .output()
            .map_err(|e| Error::io("running make (is build-essential installed?)", e))?;
        let ko = out.join(format!("{name}.ko"));
        if !o.status.success() || !ko.is_file() {
            return Err(Error::Image(format!(
                "building module {name} against {} failed:\n{}",
                self.dir.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        Ok(ko)
    }
}

/// Unpacks linux-headers-RELEASE with its common headers and kbuild into one tree.
fn fetch_debian_headers(release: &str, arch: Arch) -> Result<PathBuf> {
    let base = cache_subdir("headers")?;
    let dir = base.join(release);
    let root = dir.join("root");
    if dir.join(".complete").exists() {
        return Ok(root);
    }
    let _lock = FileLock::acquire(&base.join(".lock"))?;
    if dir.join(".complete").exists() {
        return Ok(root);
    }
    debian::ensure_architecture(arch)?;
    let name = format!("linux-headers-{release}");
    let deps = debian::depends(&name, arch)?;
    let common = deps
        .iter()
        .find(|d| d.starts_with("linux-headers-") && d.ends_with("-common"))
        .cloned();
    let kbuild = deps
        .iter()
        .find(|d| d.starts_with("linux-kbuild-"))
        .cloned();
    let tmp = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&base)
        .ctx(|| format!("creating a temporary directory in {}", base.display()))?;
    let host = Arch::host().unwrap_or(arch);
    let mut pkgs = vec![(name.clone(), arch)];
    if let Some(c) = common {
        pkgs.push((c, arch));
    }
    // kbuild holds host programs (modpost, fixdep): the host's build of it.
    if let Some(k) = kbuild {
        pkgs.push((k, host));
    }
    let troot = tmp.path().join("root");
    for (p, a) in &pkgs {
        eprintln!("hotfuzz: downloading {p} ({})", a.debian_arch());
        let deb = debian::download(p, *a, tmp.path())?;
        debian::extract_deb(&deb, &troot)?;
        fs::remove_file(&deb).ctx(|| format!("removing {}", deb.display()))?;
    }
    // The flavour's Makefile includes the common one by absolute path; point it here.
    let mk = troot.join("usr/src").join(&name).join("Makefile");
    let text = fs::read_to_string(&mk).ctx(|| format!("reading {}", mk.display()))?;
    let fixed = text.replace(
        "include /usr/src/",
        &format!("include {}/usr/src/", root.display()),
    );
    fs::write(&mk, fixed).ctx(|| format!("writing {}", mk.display()))?;
    fs::write(tmp.path().join(".complete"), release).ctx(|| "marking headers complete".into())?;
    if dir.exists() {
        fs::remove_dir_all(&dir).ctx(|| format!("removing stale {}", dir.display()))?;
    }
    fs::rename(tmp.keep(), &dir).ctx(|| format!("moving {} into place", dir.display()))?;
    Ok(root)
}
