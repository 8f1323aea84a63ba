//! The night's bugs, classified against the report store: new (never reported by a night),
//! regressed (fixed, then seen again), known (open, seen again tonight), fixed (found fixed
//! tonight) and invalid (seen tonight, marked not a bug). A bug filed by an earlier night that
//! was killed before reporting it is still new: nothing is lost. Once the night's results
//! are written, [`acknowledge`] turns new and regressed into known, so the next night tells
//! only what changed.

use super::summary::{BugRecord, Class};
use crate::store::status::{FixedBy, State};
use crate::store::{Store, Stored};
use anyhow::Result;
use std::collections::BTreeMap;

/// Files of a report directory a night copies and links.
pub const FILES: &[&str] = &[
    "report.txt",
    "excerpt.log",
    "repro.prog",
    "repro.sh",
    "repro.log",
    "meta.yaml",
];

/// The report text kept per bug in the summary (and so in JUnit): enough for any splat.
const REPORT_LIMIT: usize = 64 * 1024;

/// Every bug's count, by directory name: what the store held when the night started.
pub fn snapshot(store: &Store) -> Result<BTreeMap<String, u64>> {
    Ok(store
        .list()?
        .into_iter()
        .map(|s| (dir_name(&s), s.meta.count))
        .collect())
}

fn dir_name(s: &Stored) -> String {
    s.dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// How `s` counts tonight, or `None` when the night has nothing to say about it.
pub fn class_of(s: &Stored, started: &str, at_start: &BTreeMap<String, u64>) -> Option<Class> {
    let before = at_start.get(&dir_name(s)).copied().unwrap_or(0);
    let seen = s.meta.count > before || s.meta.last_seen.as_str() >= started;
    let st = &s.meta.status;
    match st.state {
        State::New => Some(Class::New),
        State::Regressed => Some(Class::Regressed),
        State::Fixed => st
            .fix
            .as_ref()
            .filter(|f| f.by == FixedBy::Detected && f.at.as_str() >= started)
            .map(|_| Class::Fixed),
        State::Known if seen => Some(Class::Known),
        State::Invalid if seen => Some(Class::Invalid),
        _ => None,
    }
}

/// The night's bugs, most urgent first (regressed, new, found fixed, known, invalid; then by
/// how often they were seen tonight).
pub fn classify(
    store: &Store,
    started: &str,
    at_start: &BTreeMap<String, u64>,
) -> Result<Vec<BugRecord>> {
    let mut out = Vec::new();
    for s in store.list()? {
        let Some(class) = class_of(&s, started, at_start) else {
            continue;
        };
        let name = dir_name(&s);
        let before = at_start.get(&name).copied().unwrap_or(0);
        let have: Vec<String> = FILES
            .iter()
            .filter(|f| s.dir.join(f).is_file())
            .map(|f| f.to_string())
            .collect();
        let mut report = std::fs::read_to_string(s.dir.join("report.txt")).unwrap_or_default();
        if report.len() > REPORT_LIMIT {
            let mut cut = REPORT_LIMIT;
            while !report.is_char_boundary(cut) {
                cut -= 1;
            }
            report.truncate(cut);
            report.push_str("\n[... cut; the whole report is report.txt]\n");
        }
        out.push(BugRecord {
            class,
            title: s.meta.title.clone(),
            kind: serde_json::to_value(s.meta.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            state: s.meta.status.state,
            dir: s.dir.display().to_string(),
            files: format!("bugs/{name}"),
            first_seen: s.meta.first_seen.clone(),
            count: s.meta.count,
            tonight: s.meta.count.saturating_sub(before),
            reproducibility: s.meta.reproducibility.clone(),
            have,
            only_injected: s.meta.only_injected(),
            fix: s.meta.status.fix.as_ref().map(|f| f.rev.clone()),
            report,
        });
    }
    let rank = |c: Class| match c {
        Class::Regressed => 0,
        Class::New => 1,
        Class::Fixed => 2,
        Class::Known => 3,
        Class::Invalid => 4,
    };
    out.sort_by(|a, b| {
        rank(a.class)
            .cmp(&rank(b.class))
            .then(b.tonight.cmp(&a.tonight))
            .then(a.title.cmp(&b.title))
    });
    Ok(out)
}

/// After the night reported them: new and regressed bugs become known.
pub fn acknowledge(store: &Store, bugs: &[BugRecord], night: &str) -> Result<()> {
    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    for b in bugs.iter().filter(|b| b.class.is_news()) {
        store.update(std::path::Path::new(&b.dir), |m| {
            m.status.acknowledge(&at, night);
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::status::Mark;

    fn file(store: &Store, title: &str) {
        let mut r = crate::report::parse("[ 1.0] Kernel panic - not syncing: x\n").remove(0);
        r.title = title.into();
        store.file(&r, &Default::default()).unwrap();
    }

    #[test]
    fn a_second_night_sees_only_what_changed() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        file(&store, "WARNING in old");
        file(&store, "WARNING in quiet");
        // An earlier night reported both.
        let first = classify(&store, "0000", &BTreeMap::new()).unwrap();
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|b| b.class == Class::New));
        acknowledge(&store, &first, "n1").unwrap();
        // Tonight: "old" seen again, a new one, "quiet" not seen.
        let started = "9999";
        let at_start = snapshot(&store).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        file(&store, "WARNING in old");
        file(&store, "WARNING in fresh");
        let night = classify(&store, started, &at_start).unwrap();
        let got: Vec<(&str, Class, u64)> = night
            .iter()
            .map(|b| (b.title.as_str(), b.class, b.tonight))
            .collect();
        assert_eq!(
            got,
            [
                ("WARNING in fresh", Class::New, 1),
                ("WARNING in old", Class::Known, 1)
            ]
        );
        // A fixed bug seen again is a regression, reported before the new ones.
        store
            .mark("WARNING in quiet", &Mark::Fixed("v1".into()), "t")
            .unwrap();
        file(&store, "WARNING in quiet");
        let night = classify(&store, started, &at_start).unwrap();
        assert_eq!(night[0].class, Class::Regressed);
        assert_eq!(night[0].fix.as_deref(), Some("v1"));
        acknowledge(&store, &night, "n2").unwrap();
        let after = classify(&store, started, &at_start).unwrap();
        assert!(after.iter().all(|b| b.class == Class::Known), "{after:?}");
    }
}
