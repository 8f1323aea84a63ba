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

    /// The store at `root` for reading, creating nothing: `None` when there is no
    /// directory there (a read-only command given a mistyped path must not make it).
    pub fn existing(root: &Path) -> Result<Option<Store>> {
        match std::fs::metadata(root) {
            Ok(m) if m.is_dir() => Ok(Some(Store {
                root: root.to_path_buf(),
            })),
            Ok(_) => anyhow::bail!("{} is not a directory", root.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", root.display())),
        }
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
            // hotfuzz writes a few KB; a huge file is not one of ours (and would be slow).
            if std::fs::metadata(&meta_path).is_ok_and(|m| m.len() > MAX_META_BYTES) {
                tracing::warn!(
                    "{}: larger than {MAX_META_BYTES} bytes",
                    meta_path.display()
                );
                continue;
            }
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
        let files = EvidenceFiles::read(ev)?;
        self.file_loaded(r, ev, &files)
    }

    fn file_loaded(&self, r: &Report, ev: &Evidence, files: &EvidenceFiles) -> Result<Filed> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating report store {}", self.root.display()))?;
        let _lock = FileLock::acquire(&self.root.join(".lock"))?;
        self.remove_stale_new_dirs();
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
                write_evidence(&s.dir, r, ev, files)?;
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
        write_evidence(tmp.path(), r, ev, files)?;
        atomic_write(
            &tmp.path().join("meta.yaml"),
            serde_yaml::to_string(&meta)?.as_bytes(),
        )?;
        if std::fs::symlink_metadata(&dir).is_ok() {
            // The bug's directory is there but `find` could not read it (meta.yaml damaged,
            // unreadable or missing): keep it aside for a human and file afresh.
            let aside = self.root.join(format!(
                ".damaged-{}-{}",
                slug(&r.title),
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ));
            tracing::warn!(
                "{}: unreadable report directory moved to {}",
                dir.display(),
                aside.display()
            );
            std::fs::rename(&dir, &aside)
                .with_context(|| format!("moving damaged {} aside", dir.display()))?;
        }
        // Renamed from the temporary directory, which removes itself if this fails.
        std::fs::rename(tmp.path(), &dir).with_context(|| format!("storing {}", dir.display()))?;
        let _ = tmp.keep();
        Ok(Filed { dir, new: true })
    }

    /// Removes `.new-*` directories: a filer killed while writing one left it (filing holds
    /// the store's lock, so no live filer owns one now).
    fn remove_stale_new_dirs(&self) {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".new-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// meta.yaml files larger than this are not read.
const MAX_META_BYTES: u64 = 1 << 20;

/// The files of an [`Evidence`], read: a report kept after a failed filing is filed later
/// with them even when the VM's directory is gone by then.
#[derive(Debug, Clone, Default)]
struct EvidenceFiles {
    console_log: Option<Vec<u8>>,
    run_log: Option<Vec<u8>>,
}

impl EvidenceFiles {
    fn read(ev: &Evidence) -> Result<EvidenceFiles> {
        let read = |p: &Option<PathBuf>| -> Result<Option<Vec<u8>>> {
            p.as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                .transpose()
        };
        Ok(EvidenceFiles {
            console_log: read(&ev.console_log)?,
            run_log: read(&ev.run_log)?,
        })
    }
}

/// Reports the store could not take (a full disk, a damaged store), kept in memory with their
/// evidence read in and filed again at the next chance; the campaign goes on meanwhile.
#[derive(Debug, Default)]
pub struct Unfiled {
    queue: std::collections::VecDeque<(Report, Evidence, EvidenceFiles)>,
    /// Filings that failed (a report retried three times counts three).
    pub failures: u64,
    /// Reports given up on because too many were waiting.
    pub dropped: u64,
}

/// At most this many reports wait for the store, the oldest dropped first.
const MAX_UNFILED: usize = 64;

impl Unfiled {
    /// Files `r`, or keeps it for later when the store fails; `None` then.
    pub fn file(&mut self, store: &Store, r: &Report, ev: &Evidence) -> Option<Filed> {
        let files = match EvidenceFiles::read(ev) {
            Ok(f) => f,
            Err(e) => {
                // The logs are gone: file what is in memory.
                tracing::warn!("report {:?}: {e:#}", r.title);
                EvidenceFiles::default()
            }
        };
        match store.file_loaded(r, ev, &files) {
            Ok(f) => Some(f),
            Err(e) => {
                self.failures += 1;
                tracing::warn!("could not file {:?} (kept to retry): {e:#}", r.title);
                self.queue.push_back((r.clone(), ev.clone(), files));
                while self.queue.len() > MAX_UNFILED {
                    self.queue.pop_front();
                    self.dropped += 1;
                }
                None
            }
        }
    }

    /// Files the waiting reports, oldest first, until one fails; what was filed.
    pub fn retry(&mut self, store: &Store) -> Vec<Filed> {
        let mut done = Vec::new();
        while let Some((r, ev, files)) = self.queue.front() {
            match store.file_loaded(r, ev, files) {
                Ok(f) => {
                    tracing::info!("filed {:?} after all", r.title);
                    done.push(f);
                    self.queue.pop_front();
                }
                Err(e) => {
                    self.failures += 1;
                    tracing::debug!("still cannot file {:?}: {e:#}", r.title);
                    break;
                }
            }
        }
        done
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// No report is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
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

fn write_evidence(dir: &Path, r: &Report, ev: &Evidence, files: &EvidenceFiles) -> Result<()> {
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
            p.push_str(&crate::program::text::history_header(i, ev.programs.len()));
            p.push_str(prog);
            if !prog.ends_with('\n') {
                p.push('\n');
            }
        }
        atomic_write(&dir.join("programs.prog"), p.as_bytes())?;
    }
    for (data, name) in [
        (&files.console_log, "console.log"),
        (&files.run_log, "run.log"),
    ] {
        if let Some(data) = data {
            atomic_write(&dir.join(name), data)?;
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

    fn hidden(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') && n != ".lock")
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_damaged_directory_with_the_same_title_loses_no_report() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let r = rep("WARNING in foo", false);
        let first = s.file(&r, &Evidence::default()).unwrap();
        // Its meta.yaml damaged (or unreadable): `find` cannot see the bug any more.
        std::fs::write(first.dir.join("meta.yaml"), "title: [unclosed").unwrap();
        let again = s.file(&r, &Evidence::default()).unwrap();
        assert!(again.new);
        assert_eq!(again.dir, first.dir);
        assert_eq!(s.list().unwrap()[0].meta.title, "WARNING in foo");
        // The damaged one kept aside, no half-written directory left.
        let h = hidden(d.path());
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h[0].starts_with(".damaged-WARNING-in-foo-"), "{h:?}");
        assert_eq!(
            std::fs::read_to_string(d.path().join(&h[0]).join("meta.yaml")).unwrap(),
            "title: [unclosed"
        );
    }

    #[test]
    fn directories_left_by_a_killed_filer_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let stale = d.path().join(".new-killed");
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("report.txt"), "half").unwrap();
        s.file(&rep("WARNING in foo", false), &Evidence::default())
            .unwrap();
        assert_eq!(hidden(d.path()), Vec::<String>::new());
    }

    #[test]
    fn a_report_the_store_cannot_take_is_kept_and_filed_later() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("reports");
        let s = Store::open(&root).unwrap();
        let log = d.path().join("console.log");
        std::fs::write(&log, "the console\n").unwrap();
        let ev = Evidence {
            console_log: Some(log.clone()),
            excerpt: "excerpt".into(),
            ..Evidence::default()
        };
        // The store is unusable (here: its directory became a file).
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::write(&root, "not a directory").unwrap();
        let mut u = Unfiled::default();
        assert!(u.file(&s, &rep("WARNING in foo", false), &ev).is_none());
        assert!(u.file(&s, &rep("WARNING in bar", false), &ev).is_none());
        assert_eq!((u.len(), u.failures), (2, 2));
        assert!(u.retry(&s).is_empty());
        assert_eq!((u.len(), u.failures), (2, 3));
        // The store works again; the VM's console log is gone by now.
        std::fs::remove_file(&root).unwrap();
        std::fs::remove_file(&log).unwrap();
        let filed = u.retry(&s);
        assert_eq!(filed.len(), 2);
        assert!(u.is_empty());
        let all = s.list().unwrap();
        assert_eq!(all.len(), 2);
        for st in &all {
            assert_eq!(
                std::fs::read_to_string(st.dir.join("console.log")).unwrap(),
                "the console\n"
            );
        }
        // At most MAX_UNFILED wait; the oldest go first and are counted.
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::write(&root, "").unwrap();
        for i in 0..MAX_UNFILED + 3 {
            u.file(
                &s,
                &rep(&format!("WARNING in f{i}"), false),
                &Evidence::default(),
            );
        }
        assert_eq!((u.len(), u.dropped), (MAX_UNFILED, 3));
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
