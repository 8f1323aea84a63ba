//! A bug's status in the report store, which persists across nights: `new` (filed, not yet
//! reported by a night), `known` (seen before, open), `fixed` (marked by a person with the
//! fixing commit or version, or detected when its reproducer stopped reproducing),
//! `regressed` (a fixed bug seen again, not yet reported) and `invalid` (marked so by a person).
//!
//! ```text
//!   file ──> new ──(a night reports it)──> known ──(mark --fixed / repro stops)──> fixed
//!                                            ▲                                     │ seen again
//!                                            └──────(a night reports it)── regressed <┘
//!   mark --invalid: any ──> invalid          mark --reopen: fixed/invalid ──> known
//! ```
//!
//! `new` and `regressed` are the states nobody has been told about; a night that reports them
//! moves them to `known`, so the next night tells only what changed. Every change is kept in
//! the status's history with its time and reason.

use super::{Meta, Store, Stored};
use anyhow::{bail, Context, Result};
use hotfuzz_vm::cache::{atomic_write, FileLock};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where a bug stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Filed and not yet reported by a night.
    New,
    /// Seen before and open. A store written before statuses existed reads as this.
    #[default]
    Known,
    /// Fixed: no longer expected to happen.
    Fixed,
    /// Fixed once and seen again, not yet reported by a night.
    Regressed,
    /// Not a bug (a person said why).
    Invalid,
}

impl State {
    /// The lower-case name, as in `meta.yaml`.
    pub fn name(self) -> &'static str {
        match self {
            State::New => "new",
            State::Known => "known",
            State::Fixed => "fixed",
            State::Regressed => "regressed",
            State::Invalid => "invalid",
        }
    }

    /// Whether the bug is expected to happen (new, known or regressed).
    pub fn is_open(self) -> bool {
        matches!(self, State::New | State::Known | State::Regressed)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a fix became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FixedBy {
    /// A person marked it (`hotfuzz report mark --fixed REV`).
    Marked,
    /// Its reproducer stopped reproducing on the kernel under test.
    Detected,
}

/// The last fix of a bug (kept when it regresses, so a report can say what was undone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fix {
    /// The fixing commit or version (for a detected fix: the kernel it stopped reproducing on).
    pub rev: String,
    /// Marked by a person or detected.
    pub by: FixedBy,
    /// When (RFC 3339).
    pub at: String,
}

/// One change of state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// When (RFC 3339).
    pub at: String,
    /// The state it went to.
    pub state: State,
    /// Why.
    pub why: String,
}

/// A bug's status: its state, the last fix, why it is invalid, and how it got there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// The state.
    pub state: State,
    /// The last fix, if it was ever fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
    /// Why it is not a bug, when it is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// Every change, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Change>,
}

impl Status {
    /// The status of a bug filed for the first time at `at`.
    pub fn first_seen(at: &str) -> Status {
        let mut s = Status {
            state: State::New,
            ..Status::default()
        };
        s.history.push(Change {
            at: at.to_string(),
            state: State::New,
            why: "first seen".into(),
        });
        s
    }

    /// Moves to `state` at `at` for `why` (recorded in the history).
    pub fn change(&mut self, at: &str, state: State, why: String) {
        self.state = state;
        self.history.push(Change {
            at: at.to_string(),
            state,
            why,
        });
    }

    /// The bug was seen again at `at`: a fixed bug has regressed; other states stay.
    pub fn seen_again(&mut self, at: &str) {
        if self.state == State::Fixed {
            let rev = self.fix.as_ref().map(|f| f.rev.as_str()).unwrap_or("?");
            self.change(
                at,
                State::Regressed,
                format!("seen again after the fix {rev}"),
            );
        }
    }

    /// Marks the bug fixed by `rev`.
    pub fn mark_fixed(&mut self, rev: &str, by: FixedBy, at: &str, why: String) {
        self.fix = Some(Fix {
            rev: rev.to_string(),
            by,
            at: at.to_string(),
        });
        self.invalid = None;
        self.change(at, State::Fixed, why);
    }

    /// Marks the bug invalid for `reason`.
    pub fn mark_invalid(&mut self, reason: &str, at: &str) {
        self.invalid = Some(reason.to_string());
        self.change(at, State::Invalid, format!("marked invalid: {reason}"));
    }

    /// Opens a fixed or invalid bug again (a mark made by mistake).
    pub fn reopen(&mut self, at: &str, why: String) {
        self.invalid = None;
        self.change(at, State::Known, why);
    }

    /// A night reported the bug: new and regressed become known. Returns whether it changed.
    pub fn acknowledge(&mut self, at: &str, night: &str) -> bool {
        if matches!(self.state, State::New | State::Regressed) {
            let was = self.state;
            self.change(
                at,
                State::Known,
                format!("reported as {was} by night {night}"),
            );
            return true;
        }
        false
    }
}

impl Store {
    /// The stored bug with title (or alternative title) `title`, or in directory `title`.
    pub fn find_title(&self, title: &str) -> Result<Option<Stored>> {
        let all = self.list()?;
        let by_title = all
            .iter()
            .find(|s| s.meta.title == title || s.meta.alt_titles.iter().any(|a| a == title));
        if let Some(s) = by_title {
            return Ok(Some(s.clone()));
        }
        let as_dir = Path::new(title);
        Ok(all
            .into_iter()
            .find(|s| s.dir == as_dir || s.dir.file_name().is_some_and(|n| n == title)))
    }

    /// Changes the `meta.yaml` of the bug in `dir` under the store's lock (read, `f`, atomic
    /// write), so a concurrent filing is not lost. Returns the new metadata.
    pub fn update(&self, dir: &Path, f: impl FnOnce(&mut Meta)) -> Result<Meta> {
        let _lock = FileLock::acquire(&self.root.join(".lock"))?;
        let path = dir.join("meta.yaml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut meta: Meta = serde_yaml::from_str(&text).map_err(|e| match e.location() {
            Some(l) => anyhow::anyhow!("{}:{}:{}: {e}", path.display(), l.line(), l.column()),
            None => anyhow::anyhow!("{}: {e}", path.display()),
        })?;
        f(&mut meta);
        atomic_write(&path, serde_yaml::to_string(&meta)?.as_bytes())?;
        Ok(meta)
    }

    /// `hotfuzz report mark`: sets the status of the bug named `title` (a title, an
    /// alternative title or a directory of the store).
    pub fn mark(&self, title: &str, mark: &Mark, at: &str) -> Result<Stored> {
        let Some(s) = self.find_title(title)? else {
            bail!(
                "no bug titled {title:?} in {} (`hotfuzz report list --dir {}` shows them)",
                self.root.display(),
                self.root.display()
            );
        };
        let meta = self.update(&s.dir, |m| match mark {
            Mark::Fixed(rev) => {
                m.status
                    .mark_fixed(rev, FixedBy::Marked, at, format!("marked fixed by {rev}"))
            }
            Mark::Invalid(reason) => m.status.mark_invalid(reason, at),
            Mark::Reopen => m.status.reopen(at, "reopened by hand".into()),
        })?;
        Ok(Stored { dir: s.dir, meta })
    }
}

/// What `hotfuzz report mark` sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// Fixed by this commit or version.
    Fixed(String),
    /// Not a bug, for this reason.
    Invalid(String),
    /// Open again.
    Reopen,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Evidence;

    fn rep(title: &str) -> crate::report::Report {
        let mut r = crate::report::parse("[ 1.0] Kernel panic - not syncing: x\n").remove(0);
        r.title = title.into();
        r.alt_titles = vec![format!("{title} (alt)")];
        r
    }

    #[test]
    fn a_fixed_bug_filed_again_regresses_and_a_night_acknowledges_it() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let f = s
            .file(&rep("WARNING in foo"), &Evidence::default())
            .unwrap();
        assert_eq!(s.list().unwrap()[0].meta.status.state, State::New);
        // Marked by its alternative title.
        let m = s
            .mark(
                "WARNING in foo (alt)",
                &Mark::Fixed("v6.13-rc1".into()),
                "t1",
            )
            .unwrap();
        assert_eq!(m.meta.status.state, State::Fixed);
        assert_eq!(m.dir, f.dir);
        s.file(&rep("WARNING in foo"), &Evidence::default())
            .unwrap();
        let meta = s.list().unwrap().remove(0).meta;
        assert_eq!(meta.status.state, State::Regressed);
        assert_eq!(meta.status.fix.as_ref().unwrap().rev, "v6.13-rc1");
        assert!(
            meta.status
                .history
                .last()
                .unwrap()
                .why
                .contains("v6.13-rc1"),
            "{meta:?}"
        );
        let meta = s
            .update(&f.dir, |m| {
                assert!(m.status.acknowledge("t3", "n1"));
            })
            .unwrap();
        assert_eq!(meta.status.state, State::Known);
        let states: Vec<State> = meta.status.history.iter().map(|c| c.state).collect();
        assert_eq!(
            states,
            [State::New, State::Fixed, State::Regressed, State::Known]
        );
        // Known bugs seen again stay known; invalid ones stay invalid.
        s.file(&rep("WARNING in foo"), &Evidence::default())
            .unwrap();
        assert_eq!(s.list().unwrap()[0].meta.status.state, State::Known);
        s.mark("WARNING in foo", &Mark::Invalid("injected".into()), "t4")
            .unwrap();
        s.file(&rep("WARNING in foo"), &Evidence::default())
            .unwrap();
        let meta = s.list().unwrap().remove(0).meta;
        assert_eq!(meta.status.state, State::Invalid);
        assert_eq!(meta.status.invalid.as_deref(), Some("injected"));
        s.mark(f.dir.to_str().unwrap(), &Mark::Reopen, "t5")
            .unwrap();
        assert_eq!(s.list().unwrap()[0].meta.status.state, State::Known);
    }

    #[test]
    fn an_unknown_title_is_a_clear_error_and_old_stores_read_as_known() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let e = s.mark("nope", &Mark::Reopen, "t").unwrap_err().to_string();
        assert!(e.contains("no bug titled \"nope\""), "{e}");
        let old = "title: x\ntype: WARNING\nkernel: {release: r, origin: o}\nfirst_seen: a\nlast_seen: b\ncount: 3\n";
        let m: Meta = serde_yaml::from_str(old).unwrap();
        assert_eq!(m.status, Status::default());
        assert_eq!(m.status.state, State::Known);
        // A hand-edited status with a typo is rejected with its place.
        std::fs::create_dir(d.path().join("b")).unwrap();
        std::fs::write(
            d.path().join("b/meta.yaml"),
            format!("{old}status:\n  state: fixd\n"),
        )
        .unwrap();
        let e = s
            .update(&d.path().join("b"), |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("meta.yaml:8:"), "{e}");
    }
}
