//! The nights of a directory: starting one (a new id, the store's counts at the start, the
//! stages not selected marked skipped), finding the newest unfinished one to resume, and the
//! lock that keeps two nights off one directory (they would classify each other's bugs).

use super::config::NightConfig;
use super::summary::{ConfigRecord, Night, Stage, StageState, SCHEMA};
use anyhow::{bail, Context, Result};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// An exclusive lock on a night directory, held for the whole night.
pub struct DirLock(std::fs::File);

impl DirLock {
    /// Takes the lock, or fails at once when another night holds it.
    pub fn take(dir: &Path) -> Result<DirLock> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let p = dir.join(".night.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .with_context(|| format!("opening {}", p.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!(
                "another hotfuzz nightly is running in {} (it holds {})",
                dir.display(),
                p.display()
            );
        }
        Ok(DirLock(f))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // SAFETY: unlocking a descriptor we own.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The newest night under `dir` that did not finish.
pub fn unfinished(dir: &Path) -> Option<Night> {
    super::results::nights(dir)
        .into_iter()
        .find(|n| !n.complete())
}

/// A new night of `cfg` running `stages` (the others are recorded as not selected), with the
/// store's counts at its start.
pub fn start(
    cfg: &NightConfig,
    file: Option<&PathBuf>,
    stages: &[Stage],
    store: &crate::store::Store,
) -> Result<Night> {
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let base: String = started
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut id = base.clone();
    let mut i = 2;
    while cfg.dir.join("nights").join(&id).exists() {
        id = format!("{base}-{i}");
        i += 1;
    }
    let mut n = Night {
        schema: SCHEMA,
        id,
        name: cfg.name.clone(),
        started: started.clone(),
        updated: started,
        budget_s: cfg.budget()?.as_secs_f64(),
        config: ConfigRecord {
            file: file.map(|p| p.display().to_string()),
            yaml: serde_yaml::to_string(cfg)?,
            stages: stages.to_vec(),
        },
        store_at_start: super::classify::snapshot(store)?,
        ..Night::default()
    };
    for s in Stage::ALL {
        n.stage_mut(s);
        if !stages.contains(&s) {
            n.end(
                s,
                StageState::Skipped,
                0.0,
                "not selected (--stages)".into(),
            );
        }
    }
    Ok(n)
}
