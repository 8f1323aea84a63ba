//! Writing a night's results: the bugs classified against the store, their files copied into
//! the night (`bugs/<name>/`, with a mail for every new or regressed one), `summary.json`,
//! `junit.xml`, the night's page, the index of nights and the `latest` link. Every file is
//! written atomically; written after every stage, so a killed night leaves complete results
//! for the stages it finished.

use super::summary::Night;
use crate::judge::symbolize::Symbolizer;
use crate::store::Store;
use anyhow::{Context, Result};
use hotfuzz_vm::cache::atomic_write;
use std::path::Path;

/// The files of one night.
pub mod files {
    /// The record and state of the night.
    pub const SUMMARY: &str = "summary.json";
    /// JUnit XML.
    pub const JUNIT: &str = "junit.xml";
    /// The page.
    pub const PAGE: &str = "index.html";
    /// The campaign's stats lines of this night.
    pub const STATS: &str = "stats.jsonl";
}

/// Copies each bug's files into the night and writes mails for the new and regressed ones.
fn copy_bugs(n: &mut Night, night_dir: &Path, sym: Option<&Symbolizer>) -> Result<()> {
    for b in &mut n.bugs {
        let to = night_dir.join(&b.files);
        for f in super::classify::FILES {
            let from = Path::new(&b.dir).join(f);
            if let Ok(data) = std::fs::read(&from) {
                atomic_write(&to.join(f), &data)?;
            }
        }
        if b.class.is_news() {
            match super::mail::compose(Path::new(&b.dir), sym) {
                Ok(m) => {
                    atomic_write(&to.join("email.txt"), m.as_bytes())?;
                    b.have.push("email.txt".into());
                }
                Err(e) => tracing::warn!("mail for {}: {e:#}", b.dir),
            }
        }
    }
    Ok(())
}

/// Every night under `dir/nights`, newest first (unreadable ones are skipped with a warning).
pub fn nights(dir: &Path) -> Vec<Night> {
    let mut v: Vec<Night> = std::fs::read_dir(dir.join("nights"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let p = e.path().join(files::SUMMARY);
                    if !p.is_file() {
                        return None;
                    }
                    Night::load(&p)
                        .map_err(|err| tracing::warn!("{err:#}"))
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| b.id.cmp(&a.id));
    v
}

/// Points `dir/latest` at the night (replacing the link atomically).
fn link_latest(dir: &Path, id: &str) -> Result<()> {
    let tmp = dir.join(".latest.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(Path::new("nights").join(id), &tmp)
        .with_context(|| format!("linking {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join("latest")).context("replacing the latest link")?;
    Ok(())
}

/// Classifies the bugs and writes every result file of the night. `sym` symbolizes mails.
pub fn write(
    n: &mut Night,
    store: &Store,
    top: &Path,
    night_dir: &Path,
    sym: Option<&Symbolizer>,
) -> Result<()> {
    n.bugs = super::classify::classify(store, &n.started, &n.store_at_start)?;
    copy_bugs(n, night_dir, sym)?;
    n.count();
    n.updated = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    n.save(&night_dir.join(files::SUMMARY))?;
    atomic_write(
        &night_dir.join(files::JUNIT),
        super::junit::render(n).as_bytes(),
    )?;
    let stats = super::html::read_stats(&night_dir.join(files::STATS));
    atomic_write(
        &night_dir.join(files::PAGE),
        super::html::night_page(n, &stats).as_bytes(),
    )?;
    let all = nights(top);
    atomic_write(
        &top.join("index.html"),
        super::html::index_page(&n.name, &all).as_bytes(),
    )?;
    link_latest(top, &n.id)?;
    Ok(())
}
