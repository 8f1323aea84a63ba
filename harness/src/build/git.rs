//! Running git: every argument passed as an argument (never through a shell), errors that
//! quote git's own message, and the few questions hotfuzz asks of a repository.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A git repository or work tree at `dir`.
#[derive(Debug, Clone)]
pub struct Git {
    /// The work tree (or repository) git runs in.
    pub dir: PathBuf,
}

/// A commit's identity as people read it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitInfo {
    /// Full commit id.
    pub id: String,
    /// Subject line.
    pub subject: String,
    /// `Name <mail>`.
    pub author: String,
    /// Author date, ISO 8601.
    pub date: String,
}

impl Git {
    /// Git in `dir`.
    pub fn new(dir: &Path) -> Git {
        Git {
            dir: dir.to_path_buf(),
        }
    }

    /// Whether `dir` is inside a git work tree.
    pub fn is_repo(dir: &Path) -> bool {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["rev-parse", "--is-inside-work-tree"])
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"true"))
    }

    fn command(&self) -> Command {
        let mut c = Command::new("git");
        c.arg("-C").arg(&self.dir);
        // Reproducible, non-interactive: no pager, no editor, no user hooks' surprises.
        c.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_EDITOR", "true")
            .env("GIT_PAGER", "cat")
            .env("LC_ALL", "C");
        c
    }

    /// Runs git with `args`; `Ok(output)` even when git failed.
    pub fn output(&self, args: &[&str]) -> Result<Output> {
        self.command()
            .args(args)
            .output()
            .with_context(|| format!("running git {} (is git installed?)", args.join(" ")))
    }

    /// Runs git with `args` and returns its trimmed stdout; an error quotes git's stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let o = self.output(args)?;
        if !o.status.success() {
            bail!(
                "git {} in {} failed: {}",
                args.join(" "),
                self.dir.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim_end().to_string())
    }

    /// The full id of commit `rev`.
    pub fn resolve(&self, rev: &str) -> Result<String> {
        let o = self.output(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ])?;
        let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if !o.status.success() || id.is_empty() {
            bail!(
                "{}: no commit {rev:?} in this repository",
                self.dir.display()
            );
        }
        Ok(id)
    }

    /// Subject, author and date of `rev`.
    pub fn info(&self, rev: &str) -> Result<CommitInfo> {
        let out = self.run(&["log", "-1", "--format=%H%x00%s%x00%an <%ae>%x00%aI", rev])?;
        let mut it = out.split('\0');
        let mut next = || it.next().unwrap_or("").to_string();
        Ok(CommitInfo {
            id: next(),
            subject: next(),
            author: next(),
            date: next(),
        })
    }

    /// The repository's shared git directory (the same for all its work trees), canonical.
    pub fn common_dir(&self) -> Result<PathBuf> {
        let d = self.run(&["rev-parse", "--git-common-dir"])?;
        let p = Path::new(&d);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        };
        p.canonicalize()
            .with_context(|| format!("resolving {}", p.display()))
    }

    /// The parents of `rev`.
    pub fn parents(&self, rev: &str) -> Result<Vec<String>> {
        let out = self.run(&["rev-list", "--parents", "-n", "1", rev])?;
        Ok(out.split_whitespace().skip(1).map(str::to_string).collect())
    }

    /// Whether `a` is an ancestor of `b` (or the same commit).
    pub fn is_ancestor(&self, a: &str, b: &str) -> Result<bool> {
        let o = self.output(&["merge-base", "--is-ancestor", a, b])?;
        match o.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => bail!(
                "git merge-base --is-ancestor {a} {b}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        }
    }

    /// A linked work tree of this repository at `path` with no files checked out (for
    /// `git bisect --no-checkout`: its own HEAD and bisection state, no copy of the tree),
    /// created on first use.
    pub fn empty_worktree_at(&self, path: &Path) -> Result<Git> {
        if path.join(".git").exists() {
            return Ok(Git::new(path));
        }
        if path.exists() {
            std::fs::remove_dir_all(path)
                .with_context(|| format!("removing {}", path.display()))?;
        }
        self.run(&["worktree", "prune"])?;
        let p = path.to_str().context("work tree path is not UTF-8")?;
        self.run(&[
            "worktree",
            "add",
            "--quiet",
            "--force",
            "--no-checkout",
            "--detach",
            p,
            "HEAD",
        ])?;
        Ok(Git::new(path))
    }

    /// A linked work tree of this repository at `path`, detached at `rev`, created on first
    /// use and forced to `rev` (discarding changes made in it) afterwards.
    pub fn worktree_at(&self, path: &Path, rev: &str) -> Result<Git> {
        let wt = Git::new(path);
        if path.join(".git").exists() {
            wt.run(&["checkout", "--quiet", "--force", "--detach", rev])?;
            wt.run(&["clean", "--quiet", "-fdx"])?;
        } else {
            // A directory left by an interrupted `worktree add`, or one git forgot: start over.
            if path.exists() {
                std::fs::remove_dir_all(path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
            self.run(&["worktree", "prune"])?;
            let p = path.to_str().context("work tree path is not UTF-8")?;
            self.run(&["worktree", "add", "--quiet", "--force", "--detach", p, rev])?;
        }
        Ok(wt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository with commits `a`, `b`, `c` (files of those names), for tests.
    pub(crate) fn toy_repo(dir: &Path) -> Git {
        let g = Git::new(dir);
        g.run(&["init", "--quiet"]).unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(dir.join(name), name).unwrap();
            g.run(&["add", name]).unwrap();
            g.run(&[
                "-c",
                "user.name=T",
                "-c",
                "user.email=t@example.invalid",
                "commit",
                "--quiet",
                "-m",
                &format!("add {name}"),
            ])
            .unwrap();
        }
        g
    }

    #[test]
    fn resolve_info_and_worktrees() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let g = toy_repo(&repo);
        assert!(Git::is_repo(&repo));
        assert!(!Git::is_repo(d.path()));
        let head = g.resolve("HEAD").unwrap();
        let first = g.resolve("HEAD~2").unwrap();
        assert_eq!(head.len(), 40);
        let i = g.info("HEAD~1").unwrap();
        assert_eq!(i.subject, "add b");
        assert_eq!(i.author, "T <t@example.invalid>");
        assert!(g.is_ancestor(&first, &head).unwrap());
        assert!(!g.is_ancestor(&head, &first).unwrap());
        assert_eq!(g.parents(&head).unwrap(), [g.resolve("HEAD~1").unwrap()]);
        let e = g.resolve("nosuch").unwrap_err().to_string();
        assert!(e.contains("no commit \"nosuch\""), "{e}");

        let wt = d.path().join("wt");
        let w = g.worktree_at(&wt, &first).unwrap();
        assert!(wt.join("a").exists() && !wt.join("c").exists());
        std::fs::write(wt.join("junk"), "x").unwrap();
        std::fs::write(wt.join("a"), "changed").unwrap();
        g.worktree_at(&wt, &head).unwrap();
        assert!(wt.join("c").exists() && !wt.join("junk").exists());
        assert_eq!(std::fs::read_to_string(wt.join("a")).unwrap(), "a");
        assert_eq!(w.common_dir().unwrap(), g.common_dir().unwrap());
    }
}
