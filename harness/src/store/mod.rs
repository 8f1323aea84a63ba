//! The report store: one directory per unique bug (`reports/` by default), deduplicated
//! across runs by title and alternative titles, written atomically.
//!
//! ```text
//! reports/<title-slug>-<hash>/
//!   meta.yaml        title, alternative titles, type, kernel, first/last seen, count, status
//!                    (new/known/fixed/regressed/invalid, see `status`), ...
//!   report.txt       the report (symbolized when possible)
//!   excerpt.log      the console around the report
//!   console.log      the full console log of the first occurrence
//!   programs.prog    the programs that ran before it (newest last)
//!   run.log          the run log of the first occurrence
//! ```

pub mod file;
pub mod status;

pub use file::{file_run, kernel_info, GuestRecord, Provenance};

use crate::report::{Report, ReportType};
use anyhow::{Context, Result};
use hotfuzz_vm::cache::{atomic_write, FileLock};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The kernel a report came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    /// Where it came from (Debian package or path).
    pub origin: String,
    /// Hash of its config, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

/// `meta.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Title.
    pub title: String,
    /// Alternative titles.
    #[serde(default)]
    pub alt_titles: Vec<String>,
    /// Type.
    #[serde(rename = "type")]
    pub kind: ReportType,
    /// Function the title names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
    /// Why the first report was not trustworthy (a later clean one replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupted: Option<String>,
    /// Kernel of the first occurrence.
    pub kernel: KernelInfo,
    /// The guest of the first occurrence (profile, bug zoo, command line, machine), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestRecord>,
    /// First seen (RFC 3339).
    pub first_seen: String,
    /// Last seen (RFC 3339).
    pub last_seen: String,
    /// Times seen.
    pub count: u64,
    /// Fault injection armed when it was seen (notifier errors, fail_page_alloc, poisoned
    /// pages), over every occurrence: a report seen only with injection may be the
    /// injection's doing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub injections: Vec<String>,
    /// Occurrences with fault injection armed (the rest of `count` had none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub injected_count: u64,
    /// Reproduction attempts: crashes/runs, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reproducibility: Option<String>,
    /// New, known, fixed, regressed or invalid (a store without it reads as known).
    #[serde(default)]
    pub status: status::Status,
}

/// What is known around a report when it is filed.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// The full console log file.
    pub console_log: Option<PathBuf>,
    /// Console lines around the report.
    pub excerpt: String,
    /// Programs that ran before it, oldest first.
    pub programs: Vec<String>,
    /// The run log file.
    pub run_log: Option<PathBuf>,
    /// The kernel.
    pub kernel: KernelInfo,
    /// The guest it happened on.
    pub guest: Option<GuestRecord>,
    /// The report text with file:line added, if symbolized.
    pub symbolized: Option<String>,
    /// Fault injection armed when the report was made.
    pub injections: Vec<String>,
}

/// A stored report.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its directory.
    pub dir: PathBuf,
    /// Its metadata.
    pub meta: Meta,
}

/// The result of filing a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Filed {
    /// Where it is.
    pub dir: PathBuf,
    /// A bug not seen before.
    pub new: bool,
}

/// A report store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A directory name for a title: readable slug plus a hash (titles may collide when cut).
pub fn slug(title: &str) -> String {
    let mut s: String = title
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s: String = s.trim_matches('-').chars().take(64).collect();
    format!("{s}-{}", &blake3::hash(title.as_bytes()).to_hex()[..8])
}

impl Store {
    /// Opens (creating) a store at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating report store {}", root.display()))?;
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// Where the store is.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every stored report, most recently seen first. Unreadable entries are skipped with a
    /// warning (a half-written or hand-edited directory must not hide the others).
    pub fn list(&self) -> Result<Vec<Stored>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(&self.root)
            .with_context(|| format!("reading {}", self.root.display()))?
        {
            let Ok(e) = e else { continue };
            let dir = e.path();
            if !dir.is_dir() || e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let meta_path = dir.join("meta.yaml");
            let Ok(text) = std::fs::read_to_string(&meta_path) else {
                continue;
            };
            match serde_yaml::from_str::<Meta>(&text) {
                Ok(meta) => v.push(Stored { dir, meta }),
                Err(e) => tracing::warn!("{}: {e}", meta_path.display()),
            }
        }
        v.sort_by(|a, b| b.meta.last_seen.cmp(&a.meta.last_seen));
        Ok(v)
    }

    /// The stored bug `r` is a duplicate of, if any (title sets intersect).
    pub fn find(&self, r: &Report) -> Result<Option<Stored>> {
        Ok(self.list()?.into_iter().find(|s| {
            std::iter::once(&s.meta.title)
                .chain(&s.meta.alt_titles)
                .any(|t| r.titles().any(|u| u == t))
        }))
    }

    /// Files `r`: a new directory for a new bug, or an updated count (and, when the stored
    /// report was corrupted and this one is not, the better evidence) for a known one.
    pub fn file(&self, r: &Report, ev: &Evidence) -> Result<Filed> {
        let _lock = FileLock::acquire(&self.root.join(".lock"))?;
        if let Some(s) = self.find(r)? {
            let mut meta = s.meta.clone();
            meta.count += 1;
            meta.last_seen = now();
            meta.status.seen_again(&meta.last_seen);
            if !ev.injections.is_empty() {
                meta.injected_count += 1;
            }
            for i in &ev.injections {
                if !meta.injections.contains(i) {
                    meta.injections.push(i.clone());
                }
            }
            for t in r.titles() {
                if t != meta.title && !meta.alt_titles.iter().any(|a| a == t) {
                    meta.alt_titles.push(t.to_string());
                }
            }
            if meta.corrupted.is_some() && r.corrupted.is_none() {
                // A clean report of a bug first seen corrupted: keep the clean evidence.
                meta.corrupted = None;
                meta.frame = r.frame.clone();
                write_evidence(&s.dir, r, ev)?;
            }
            atomic_write(
                &s.dir.join("meta.yaml"),
                serde_yaml::to_string(&meta)?.as_bytes(),
            )?;
            return Ok(Filed {
                dir: s.dir,
                new: false,
            });
        }
        let dir = self.root.join(slug(&r.title));
        let tmp = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(&self.root)
            .context("creating a report directory")?;
        let t = now();
        let first = status::Status::first_seen(&t);
        let meta = Meta {
            title: r.title.clone(),
            alt_titles: r.alt_titles.clone(),
            kind: r.kind,
            frame: r.frame.clone(),
            corrupted: r.corrupted.clone(),
            kernel: ev.kernel.clone(),
            guest: ev.guest.clone(),
            first_seen: t.clone(),
            last_seen: t,
            count: 1,
            injections: ev.injections.clone(),
            injected_count: u64::from(!ev.injections.is_empty()),
            reproducibility: None,
            status: first,
        };
        write_evidence(tmp.path(), r, ev)?;
        atomic_write(
            &tmp.path().join("meta.yaml"),
            serde_yaml::to_string(&meta)?.as_bytes(),
        )?;
        let kept = tmp.keep();
        std::fs::rename(&kept, &dir).with_context(|| format!("storing {}", dir.display()))?;
        Ok(Filed { dir, new: true })
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Meta {
    /// Whether every occurrence had fault injection armed: the report may be the
    /// injection's doing rather than a kernel bug.
    pub fn only_injected(&self) -> bool {
        self.injected_count > 0 && self.injected_count == self.count
    }
}

fn write_evidence(dir: &Path, r: &Report, ev: &Evidence) -> Result<()> {
    let mut report = format!("{}\n\n{}\n", r.title, r.text);
    if let Some(c) = &r.corrupted {
        report = format!("{}\n(corrupted: {c})\n\n{}\n", r.title, r.text);
    }
    if let Some(s) = &ev.symbolized {
        report = format!("{}\n\n{s}\n", r.title);
    }
    if !ev.injections.is_empty() {
        let mut head = String::from(
            "Fault injection was armed when this report was made (it may be the injection's doing):\n",
        );
        for i in &ev.injections {
            head.push_str(&format!("  {i}\n"));
        }
        report = format!("{head}\n{report}");
    }
    atomic_write(&dir.join("report.txt"), report.as_bytes())?;
    atomic_write(&dir.join("excerpt.log"), ev.excerpt.as_bytes())?;
    if !ev.programs.is_empty() {
        let mut p = String::new();
        for (i, prog) in ev.programs.iter().enumerate() {
            p.push_str(&format!(
                "# program {} of {} (the last one ran when the report appeared)\n",
                i + 1,
                ev.programs.len()
            ));
            p.push_str(prog);
            if !prog.ends_with('\n') {
                p.push('\n');
            }
        }
        atomic_write(&dir.join("programs.prog"), p.as_bytes())?;
    }
    for (src, name) in [(&ev.console_log, "console.log"), (&ev.run_log, "run.log")] {
        if let Some(src) = src {
            let data = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
            atomic_write(&dir.join(name), &data)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(title: &str, corrupted: bool) -> Report {
        let mut r = crate::report::parse("[ 1.0] Kernel panic - not syncing: x\n").remove(0);
        r.title = title.into();
        r.corrupted = corrupted.then(|| "interleaved".to_string());
        r
    }

    #[test]
    fn new_then_duplicate_then_clean_replaces_corrupted() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let ev = Evidence {
            excerpt: "first".into(),
            programs: vec!["yield()\n".into()],
            ..Default::default()
        };
        let a = s.file(&rep("WARNING in foo", true), &ev).unwrap();
        assert!(a.new);
        let b = s
            .file(
                &rep("WARNING in foo", false),
                &Evidence {
                    excerpt: "second".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(!b.new);
        assert_eq!(a.dir, b.dir);
        let list = s.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].meta.count, 2);
        assert!(list[0].meta.corrupted.is_none());
        assert_eq!(
            std::fs::read_to_string(a.dir.join("excerpt.log")).unwrap(),
            "second"
        );
        let c = s.file(&rep("WARNING in bar", false), &ev).unwrap();
        assert!(c.new);
        assert_eq!(s.list().unwrap().len(), 2);
        assert!(std::fs::read_to_string(c.dir.join("programs.prog"))
            .unwrap()
            .contains("yield()"));
        // Nothing temporary is left behind.
        assert!(std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with(".new-")));
    }

    #[test]
    fn injection_is_recorded_per_occurrence() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let injected = Evidence {
            injections: vec!["notifier: MEM_GOING_OFFLINE fails with errno -16".into()],
            ..Default::default()
        };
        let a = s.file(&rep("WARNING in foo", false), &injected).unwrap();
        let meta = &s.list().unwrap()[0].meta;
        assert!(meta.only_injected(), "{meta:?}");
        let report = std::fs::read_to_string(a.dir.join("report.txt")).unwrap();
        assert!(report.starts_with("Fault injection was armed"), "{report}");
        assert!(report.contains("MEM_GOING_OFFLINE"), "{report}");
        s.file(&rep("WARNING in foo", false), &Evidence::default())
            .unwrap();
        let meta = &s.list().unwrap()[0].meta;
        assert_eq!((meta.count, meta.injected_count), (2, 1));
        assert!(!meta.only_injected());
        // A store written before injections were recorded reads as clean.
        let old = "title: x\ntype: WARNING\nkernel: {release: r, origin: o}\nfirst_seen: a\nlast_seen: b\ncount: 3\n";
        let m: Meta = serde_yaml::from_str(old).unwrap();
        assert!(!m.only_injected());
    }

    #[test]
    fn alt_titles_dedup() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let mut a = rep("WARNING in foo", false);
        a.alt_titles = vec!["WARNING in foo_inlined".into()];
        s.file(&a, &Evidence::default()).unwrap();
        let b = rep("WARNING in foo_inlined", false);
        assert!(!s.file(&b, &Evidence::default()).unwrap().new);
    }

    #[test]
    fn broken_entries_do_not_hide_others() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.file(&rep("WARNING in foo", false), &Evidence::default())
            .unwrap();
        std::fs::create_dir(d.path().join("junk")).unwrap();
        std::fs::write(d.path().join("junk/meta.yaml"), "title: [unclosed").unwrap();
        assert_eq!(s.list().unwrap().len(), 1);
    }
}
