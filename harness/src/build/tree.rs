//! Kernel source trees and their state: a git tree at a commit (checked out into a linked
//! work tree in the cache, so the user's own work tree is never touched), a git work tree as
//! it is (commit plus its uncommitted changes), or an unpacked source directory (no git).
//! The state is what the build cache is keyed by.

use super::git::Git;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Which tree to build.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TreeSpec {
    /// A git work tree or an unpacked source directory.
    pub path: PathBuf,
    /// A commit (git trees only); `None` builds the tree as it is.
    pub commit: Option<String>,
}

/// A tree ready to build.
#[derive(Debug)]
pub struct Checkout {
    /// The source directory make runs on.
    pub src: PathBuf,
    /// The tree's state: a commit id, a commit plus a hash of its changes, or a hash of an
    /// unpacked tree's files.
    pub state: String,
    /// The commit, for git trees.
    pub commit: Option<String>,
    /// Stable identity of the tree (not of its state), for the kept build directory.
    pub tree_id: String,
    /// Held while the checkout is in use.
    _lock: Option<hotfuzz_vm::cache::FileLock>,
}

fn short_hash(parts: &[&[u8]]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().to_hex()[..16].to_string()
}

/// The cache's work tree for the repository containing `repo`.
pub fn worktree_path(repo: &Git) -> Result<PathBuf> {
    let common = repo.common_dir()?;
    let id = short_hash(&[common.as_os_str().as_encoded_bytes()]);
    Ok(hotfuzz_vm::cache::cache_subdir("build/trees")?.join(id))
}

/// Makes `spec` buildable.
pub fn prepare(spec: &TreeSpec) -> Result<Checkout> {
    let path = spec
        .path
        .canonicalize()
        .with_context(|| format!("kernel tree {}", spec.path.display()))?;
    if !path.join("Makefile").is_file() || !path.join("Kconfig").is_file() {
        bail!(
            "{} is not a kernel source tree (no top-level Makefile and Kconfig)",
            path.display()
        );
    }
    let git = Git::is_repo(&path).then(|| Git::new(&path));
    match (git, &spec.commit) {
        (Some(g), Some(rev)) => {
            let id = g.resolve(rev)?;
            let wt = worktree_path(&g)?;
            let lock = hotfuzz_vm::cache::FileLock::acquire(&wt.with_extension("lock"))?;
            g.worktree_at(&wt, &id)?;
            Ok(Checkout {
                src: wt.clone(),
                tree_id: wt
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                state: id.clone(),
                commit: Some(id),
                _lock: Some(lock),
            })
        }
        (Some(g), None) => {
            let head = g.resolve("HEAD")?;
            let status = g.run(&["status", "--porcelain=v1", "-z", "--untracked-files=all"])?;
            let state = if status.is_empty() {
                head.clone()
            } else {
                let diff = g.output(&["diff", "HEAD", "--binary"])?.stdout;
                let untracked = g.run(&["ls-files", "-z", "--others", "--exclude-standard"])?;
                let mut parts: Vec<Vec<u8>> = vec![diff];
                for f in untracked.split('\0').filter(|f| !f.is_empty()) {
                    parts.push(f.as_bytes().to_vec());
                    parts.push(std::fs::read(path.join(f)).unwrap_or_default());
                }
                let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                format!("{head}+{}", short_hash(&refs))
            };
            Ok(Checkout {
                tree_id: short_hash(&[path.as_os_str().as_encoded_bytes()]),
                src: path,
                state,
                commit: Some(head),
                _lock: None,
            })
        }
        (None, Some(rev)) => bail!(
            "{} is not a git repository, so it has no commit {rev:?} (build it as it is, or run `hotfuzz setup --kernel-source`)",
            path.display()
        ),
        (None, None) => Ok(Checkout {
            tree_id: short_hash(&[path.as_os_str().as_encoded_bytes()]),
            state: format!("files:{}", files_state(&path)?),
            src: path,
            commit: None,
            _lock: None,
        }),
    }
}

/// A hash of every file's path, size and modification time under `root` (what make itself
/// looks at), for trees without git.
pub fn files_state(root: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let mut entries: Vec<(PathBuf, u64, i64, i64)> = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let e = e?;
            let p = e.path();
            let md = e.metadata()?;
            if md.is_dir() {
                if e.file_name() != ".git" {
                    stack.push(p);
                }
            } else {
                let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
                entries.push((rel, md.size(), md.mtime(), md.mtime_nsec()));
            }
        }
    }
    entries.sort();
    let mut h = blake3::Hasher::new();
    for (p, size, s, ns) in &entries {
        h.update(p.as_os_str().as_encoded_bytes());
        h.update(&size.to_le_bytes());
        h.update(&s.to_le_bytes());
        h.update(&ns.to_le_bytes());
    }
    Ok(h.finalize().to_hex()[..16].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacked_tree_state_follows_its_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Makefile"), "x").unwrap();
        std::fs::write(d.path().join("Kconfig"), "x").unwrap();
        let s1 = files_state(d.path()).unwrap();
        assert_eq!(s1, files_state(d.path()).unwrap());
        std::fs::create_dir(d.path().join("mm")).unwrap();
        std::fs::write(d.path().join("mm/x.c"), "int x;").unwrap();
        let s2 = files_state(d.path()).unwrap();
        assert_ne!(s1, s2);
        let c = prepare(&TreeSpec {
            path: d.path().into(),
            commit: None,
        })
        .unwrap();
        assert_eq!(c.state, format!("files:{s2}"));
        let e = prepare(&TreeSpec {
            path: d.path().into(),
            commit: Some("HEAD".into()),
        })
        .unwrap_err();
        assert!(e.to_string().contains("not a git repository"), "{e}");
        let e = prepare(&TreeSpec {
            path: d.path().join("mm"),
            commit: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("not a kernel source tree"), "{e}");
    }
}
