//! A kernel tree on a machine that has none: Debian's `linux-source-<series>` package
//! (fetched with `apt-get download`, nothing installed), its tarball unpacked into the cache
//! and made a git repository with one commit, so builds have a tree and bisection tests
//! have a history to grow.

use super::git::Git;
use anyhow::{bail, Context, Result};
use hotfuzz_vm::Arch;
use std::path::PathBuf;
use std::process::Command;

/// The kernel source series hotfuzz sets up by default (Debian 12's newest).
pub const DEFAULT_SERIES: &str = "6.12";

/// The identity commits made by hotfuzz carry.
pub const AUTHOR: [&str; 4] = [
    "-c",
    "user.name=hotfuzz",
    "-c",
    "user.email=hotfuzz@localhost",
];

/// Where `setup --kernel-source` puts the tree of `series`, whether or not it exists yet.
pub fn tree_dir(series: &str) -> Result<PathBuf> {
    Ok(hotfuzz_vm::cache::cache_subdir("kernel-source")?.join(format!("linux-{series}")))
}

/// Makes (or finds) the git tree of Debian's `linux-source-<series>`; returns its path.
pub fn ensure_tree(series: &str) -> Result<PathBuf> {
    let dest = tree_dir(series)?;
    if dest.join(".git").exists() && Git::new(&dest).resolve("HEAD").is_ok() {
        return Ok(dest);
    }
    let parent = dest.parent().context("tree has a parent")?.to_path_buf();
    let _lock = hotfuzz_vm::cache::FileLock::acquire(&parent.join(format!(".{series}.lock")))?;
    if dest.join(".git").exists() && Git::new(&dest).resolve("HEAD").is_ok() {
        return Ok(dest);
    }
    let pkg_name = format!("linux-source-{series}");
    eprintln!("hotfuzz: fetching {pkg_name} (about 150 MB) with apt-get download");
    let pkg = hotfuzz_vm::debian::fetch(&pkg_name, Arch::X86_64)
        .with_context(|| format!("fetching Debian's {pkg_name}"))?;
    let src_dir = pkg.root.join("usr/src");
    let tarball = std::fs::read_dir(&src_dir)
        .with_context(|| format!("listing {}", src_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&pkg_name) && n.contains(".tar"))
        })
        .with_context(|| format!("{pkg_name} has no tarball in /usr/src"))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(&parent)?;
    eprintln!("hotfuzz: unpacking {}", tarball.display());
    let o = Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(tmp.path())
        .output()
        .context("running tar (is xz-utils installed?)")?;
    if !o.status.success() {
        bail!(
            "unpacking {}: {}",
            tarball.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    let top = tmp.path().join(&pkg_name);
    if !top.join("Makefile").is_file() {
        bail!("{} did not unpack into {pkg_name}/", tarball.display());
    }
    eprintln!(
        "hotfuzz: making {pkg_name} {} a git repository",
        pkg.version
    );
    let g = Git::new(&top);
    g.run(&["init", "--quiet", "--initial-branch=master"])?;
    g.run(&["config", "core.autocrlf", "false"])?;
    // Debian's tarball ignores everything (`/*` in .gitignore): add it all regardless.
    g.run(&["add", "--all", "--force", "."])?;
    let mut args: Vec<&str> = AUTHOR.to_vec();
    let msg = format!("Debian {pkg_name} {}", pkg.version);
    args.extend(["commit", "--quiet", "--no-verify", "-m", &msg]);
    let mut c = Command::new("git");
    c.arg("-C").arg(&top).args(&args);
    // One fixed date: the same package gives the same commit id on every machine.
    c.env("GIT_AUTHOR_DATE", "2000-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2000-01-01T00:00:00Z");
    let o = c.output().context("running git commit")?;
    if !o.status.success() {
        bail!("git commit: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    if dest.exists() {
        std::fs::remove_dir_all(&dest)?;
    }
    std::fs::rename(&top, &dest)
        .with_context(|| format!("moving the tree to {}", dest.display()))?;
    Ok(dest)
}
