//! What is being bisected: a git history (driven through `git bisect` in hotfuzz's own work
//! tree of the repository, with `--no-checkout`, so neither the user's work tree nor their
//! own bisection is touched) or an ordered list (Debian kernel packages).
//!
//! Both speak in git's terms: *old* is the state before the change (for a cause bisection
//! the bug is absent there; for a fix bisection it is present), *new* the state after.

use crate::build::git::{CommitInfo, Git};
use anyhow::{bail, Result};

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Test this revision.
    Test(String),
    /// The first new revision.
    Found(String),
    /// Only skipped revisions are left: the change is one of these.
    Inconclusive(Vec<String>),
}

/// A mark for a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Before the change.
    Old,
    /// After the change.
    New,
    /// Untestable.
    Skip,
}

/// A bisectable range of revisions.
pub trait Space {
    /// Starts (or restarts) the search between `old` and `new`.
    fn start(&mut self, old: &str, new: &str) -> Result<Next>;
    /// Records `mark` for `rev` and says what is next.
    fn mark(&mut self, rev: &str, mark: Mark) -> Result<Next>;
    /// The revision just before `rev` (for a commit: its first parent).
    fn parent(&self, rev: &str) -> Result<Option<String>>;
    /// How people name `rev`.
    fn info(&self, rev: &str) -> Result<CommitInfo>;
    /// A full, stable id of `rev`.
    fn resolve(&self, rev: &str) -> Result<String>;
}

/// `git bisect` in a work tree of its own.
pub struct GitSpace {
    git: Git,
}

impl GitSpace {
    /// Bisects with the repository's work tree `wt` (a linked work tree hotfuzz owns).
    pub fn new(wt: Git) -> GitSpace {
        GitSpace { git: wt }
    }

    fn next(&self, out: &str) -> Result<Next> {
        if let Some(first) = out.lines().find(|l| {
            l.ends_with(" is the first new commit") || l.ends_with(" is the first bad commit")
        }) {
            let id = first.split_whitespace().next().unwrap_or("").to_string();
            return Ok(Next::Found(id));
        }
        if out.contains("only 'skip'ped commits left") {
            let ids: Vec<String> = out
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|w| w.len() == 40 && w.chars().all(|c| c.is_ascii_hexdigit()))
                .map(str::to_string)
                .collect();
            return Ok(Next::Inconclusive(ids));
        }
        let head = self.git.resolve("BISECT_HEAD")?;
        Ok(Next::Test(head))
    }

    fn bisect(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["bisect"];
        a.extend_from_slice(args);
        let o = self.git.output(&a)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // `git bisect skip` exits 2 when only skipped commits are left; its text says so.
        if !o.status.success() && !text.contains("only 'skip'ped commits left") {
            bail!("git bisect {}: {}", args.join(" "), text.trim());
        }
        Ok(text)
    }
}

impl Space for GitSpace {
    fn start(&mut self, old: &str, new: &str) -> Result<Next> {
        let _ = self.git.output(&["bisect", "reset", "--quiet"]);
        let out = self.bisect(&[
            "start",
            "--no-checkout",
            "--term-old=old",
            "--term-new=new",
            new,
            old,
        ])?;
        self.next(&out)
    }

    fn mark(&mut self, rev: &str, mark: Mark) -> Result<Next> {
        let word = match mark {
            Mark::Old => "old",
            Mark::New => "new",
            Mark::Skip => "skip",
        };
        let out = self.bisect(&[word, rev])?;
        self.next(&out)
    }

    fn parent(&self, rev: &str) -> Result<Option<String>> {
        Ok(self.git.parents(rev)?.into_iter().next())
    }

    fn info(&self, rev: &str) -> Result<CommitInfo> {
        self.git.info(rev)
    }

    fn resolve(&self, rev: &str) -> Result<String> {
        self.git.resolve(rev)
    }
}

impl Drop for GitSpace {
    fn drop(&mut self) {
        let _ = self.git.output(&["bisect", "reset", "--quiet"]);
    }
}

/// Binary search over an ordered list (oldest first), with skips: the candidates are the
/// revisions after the newest old one up to the oldest new one.
pub struct ListSpace {
    items: Vec<String>,
    lo: usize,
    hi: usize,
    skipped: Vec<bool>,
}

impl ListSpace {
    /// A list of revisions, oldest first.
    pub fn new(items: Vec<String>) -> ListSpace {
        let n = items.len();
        ListSpace {
            items,
            lo: 0,
            hi: n.saturating_sub(1),
            skipped: vec![false; n],
        }
    }

    fn index(&self, rev: &str) -> Result<usize> {
        match self.items.iter().position(|i| i == rev) {
            Some(i) => Ok(i),
            None => bail!("{rev} is not in the list"),
        }
    }

    fn next(&self) -> Next {
        if self.hi <= self.lo + 1 {
            return Next::Found(self.items[self.hi].clone());
        }
        let mid = (self.lo + self.hi) / 2;
        // The untested candidate closest to the middle.
        let mut cands: Vec<usize> = (self.lo + 1..self.hi)
            .filter(|&i| !self.skipped[i])
            .collect();
        if cands.is_empty() {
            return Next::Inconclusive(self.items[self.lo + 1..=self.hi].to_vec());
        }
        cands.sort_by_key(|&i| (i as i64 - mid as i64).abs());
        Next::Test(self.items[cands[0]].clone())
    }
}

impl Space for ListSpace {
    fn start(&mut self, old: &str, new: &str) -> Result<Next> {
        let (lo, hi) = (self.index(old)?, self.index(new)?);
        if lo >= hi {
            bail!("{old} does not come before {new}");
        }
        self.lo = lo;
        self.hi = hi;
        self.skipped = vec![false; self.items.len()];
        Ok(self.next())
    }

    fn mark(&mut self, rev: &str, mark: Mark) -> Result<Next> {
        let i = self.index(rev)?;
        match mark {
            Mark::Old if i > self.lo && i < self.hi => self.lo = i,
            Mark::New if i > self.lo && i < self.hi => self.hi = i,
            Mark::Skip => self.skipped[i] = true,
            _ => {}
        }
        Ok(self.next())
    }

    fn parent(&self, rev: &str) -> Result<Option<String>> {
        let i = self.index(rev)?;
        Ok(i.checked_sub(1).map(|j| self.items[j].clone()))
    }

    fn info(&self, rev: &str) -> Result<CommitInfo> {
        Ok(CommitInfo {
            id: rev.to_string(),
            subject: rev.to_string(),
            author: String::new(),
            date: String::new(),
        })
    }

    fn resolve(&self, rev: &str) -> Result<String> {
        self.index(rev).map(|_| rev.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_search_with_skips() {
        let items: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
        // The change is at v6; v4 (the first middle) cannot be tested: its neighbours are.
        let mut s = ListSpace::new(items);
        let mut next = s.start("v0", "v9").unwrap();
        let mut tested = Vec::new();
        let found = loop {
            match next {
                Next::Test(r) => {
                    let i: usize = r[1..].parse().unwrap();
                    tested.push(i);
                    let m = if i == 4 {
                        Mark::Skip
                    } else if i >= 6 {
                        Mark::New
                    } else {
                        Mark::Old
                    };
                    next = s.mark(&r, m).unwrap();
                }
                other => break other,
            }
        };
        assert_eq!(found, Next::Found("v6".into()), "tested {tested:?}");
        assert_eq!(tested, [4, 3, 6, 5]);
        // The change right after a skipped one: inconclusive between them.
        let items: Vec<String> = (0..4).map(|i| format!("v{i}")).collect();
        let mut s = ListSpace::new(items);
        assert_eq!(s.start("v0", "v3").unwrap(), Next::Test("v1".into()));
        assert_eq!(s.mark("v1", Mark::Skip).unwrap(), Next::Test("v2".into()));
        assert_eq!(
            s.mark("v2", Mark::New).unwrap(),
            Next::Inconclusive(vec!["v1".into(), "v2".into()])
        );
        assert_eq!(s.parent("v1").unwrap().as_deref(), Some("v0"));
        assert!(s.start("v3", "v0").is_err());
    }
}
