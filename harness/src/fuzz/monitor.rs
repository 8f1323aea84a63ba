//! Progress: a live status line (execs, execs/s, corpus, states, coverage, reports, guest
//! restarts, elapsed/remaining), a JSON-lines stats file a summary can plot, and the numbers
//! for the final summary. It is a LibAFL [`Monitor`]: fed by the events of every fuzzer
//! process (the executors send their counters as user stats), it renders from the process
//! that owns the terminal.

use crate::store::Store;
use libafl::monitors::stats::{AggregatorOps, ClientStatsManager, UserStats, UserStatsValue};
use libafl::monitors::Monitor;
use libafl_bolts::ClientId;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Names of the user stats the executors send (distinct from the names LibAFL's map
/// feedbacks use for their own ratios: `states`, `kcov`).
pub mod keys {
    /// Distinct state-signature features seen.
    pub const STATES: &str = "state_features";
    /// Distinct KCOV PCs seen.
    pub const COVERAGE: &str = "kcov_pcs";
    /// Corpus entries.
    pub const CORPUS: &str = "corpus_entries";
    /// Guest boots after the first.
    pub const RESTARTS: &str = "restarts";
    /// Runs lost to infrastructure problems.
    pub const INFRA: &str = "infra";
    /// Reports filed (all, with repeats).
    pub const REPORTS: &str = "reports";
    /// Suppressed reports.
    pub const SUPPRESSED: &str = "suppressed";
    /// Snapshot restores.
    pub const RESETS: &str = "resets";
    /// Runs that ran the kernel out of memory.
    pub const OOM: &str = "oom";
    /// Runs with an operation or task that was slow, not hung.
    pub const SLOW: &str = "slow";
    /// Reports waiting for the store (it could not take them).
    pub const UNFILED: &str = "unfiled";
    /// Filings that failed, retries included.
    pub const FILING_FAILURES: &str = "filing_failures";
    /// Milliseconds booting.
    pub const T_BOOT: &str = "ms_boot";
    /// Milliseconds restoring snapshots.
    pub const T_RESET: &str = "ms_reset";
    /// Milliseconds running programs.
    pub const T_PROGRAM: &str = "ms_program";
    /// Milliseconds of program time spent at deadlines.
    pub const T_DEADLINE: &str = "ms_deadline";
    /// Milliseconds settling after programs.
    pub const T_SETTLE: &str = "ms_settle";
    /// Milliseconds waiting for the hung task detector.
    pub const T_HANG: &str = "ms_hang";
}

/// A user stat as the executors send it.
pub fn number(v: u64, op: AggregatorOps) -> UserStats {
    UserStats::new(UserStatsValue::Number(v), op)
}

/// One line of the stats file, and what the status line shows.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Snapshot {
    /// Host time (RFC 3339).
    pub time: String,
    /// Seconds since the campaign started.
    pub elapsed_s: u64,
    /// Executions, all guests.
    pub execs: u64,
    /// Executions per second, all guests.
    pub execs_per_sec: f64,
    /// Corpus size (the largest of the guests' corpora: they share entries).
    pub corpus: u64,
    /// State-signature features seen (summed over guests).
    pub states: u64,
    /// KCOV PCs seen (summed over guests).
    pub coverage: u64,
    /// Unique report titles filed during this campaign.
    pub unique_reports: u64,
    /// Reports filed, repeats included.
    pub reports: u64,
    /// Guest restarts.
    pub restarts: u64,
    /// Runs lost to infrastructure problems.
    pub infra_errors: u64,
    /// Suppressed reports.
    pub suppressed: u64,
    /// Snapshot restores.
    pub resets: u64,
    /// Runs that ran the kernel out of memory (counted, not filed).
    pub oom: u64,
    /// Runs with an operation or a task that was slow, not hung (counted, not filed).
    #[serde(default)]
    pub slow: u64,
    /// Reports waiting for the store (a full disk); filed when it takes them again.
    pub unfiled: u64,
    /// Filings that failed, retries included.
    pub filing_failures: u64,
    /// Where the guests' time went (milliseconds, all guests).
    pub spent: super::target::TimeSpent,
    /// Fuzzer processes reporting.
    pub clients: u64,
}

fn as_number(v: Option<&UserStatsValue>) -> u64 {
    match v {
        Some(UserStatsValue::Number(n)) => *n,
        Some(UserStatsValue::Float(f)) => *f as u64,
        _ => 0,
    }
}

/// How the monitor reports.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// JSON-lines stats file.
    pub stats_path: PathBuf,
    /// Seconds between stats lines.
    pub interval: Duration,
    /// The campaign's length, for "remaining".
    pub duration: Option<Duration>,
    /// The report store (unique titles of this campaign are counted there).
    pub reports: PathBuf,
    /// No live status line (tests).
    pub quiet: bool,
}

struct Shared {
    snap: Mutex<Snapshot>,
    stop: AtomicBool,
}

/// The campaign monitor.
pub struct StatusMonitor {
    cfg: MonitorConfig,
    shared: Arc<Shared>,
    started: Instant,
    started_wall: SystemTime,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl StatusMonitor {
    /// A monitor; its status thread starts with the first event it sees.
    pub fn new(cfg: MonitorConfig) -> StatusMonitor {
        StatusMonitor {
            cfg,
            shared: Arc::new(Shared {
                snap: Mutex::new(Snapshot::default()),
                stop: AtomicBool::new(false),
            }),
            started: Instant::now(),
            started_wall: SystemTime::now(),
            ticker: None,
        }
    }

    /// The latest numbers.
    pub fn snapshot(&self) -> Snapshot {
        self.shared
            .snap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn ensure_ticker(&mut self) {
        if self.ticker.is_some() {
            return;
        }
        let shared = self.shared.clone();
        let cfg = self.cfg.clone();
        let started = self.started;
        let since = self.started_wall;
        self.ticker = std::thread::Builder::new()
            .name("hotfuzz-status".into())
            .spawn(move || ticker(shared, cfg, started, since))
            .ok();
    }
}

/// Unique titles the store saw since `since`.
pub fn unique_since(reports: &std::path::Path, since: SystemTime) -> u64 {
    let Ok(Some(store)) = Store::existing(reports) else {
        return 0;
    };
    let since = humantime::format_rfc3339_seconds(since).to_string();
    store
        .list()
        .map(|all| all.iter().filter(|s| s.meta.last_seen >= since).count() as u64)
        .unwrap_or(0)
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// The status line for `s`.
pub fn status_line(s: &Snapshot, duration: Option<Duration>) -> String {
    let elapsed = Duration::from_secs(s.elapsed_s);
    let time = match duration {
        Some(d) => format!(
            "{} elapsed, {} left",
            fmt_duration(elapsed),
            fmt_duration(d.saturating_sub(elapsed))
        ),
        None => format!("{} elapsed", fmt_duration(elapsed)),
    };
    let wall_ms = s.elapsed_s * 1000 * s.clients.max(1);
    let in_guest = s
        .spent
        .shares(wall_ms)
        .first()
        .map(|(_, v)| *v)
        .unwrap_or(0.0);
    format!(
        "{time} | {} execs ({:.2}/s) | corpus {} | states {} | cover {} | reports {} unique ({} total) | restarts {}, resets {} (infra {}) | oom {} | slow {} | in guest {in_guest:.0}%",
        s.execs,
        s.execs_per_sec,
        s.corpus,
        s.states,
        s.coverage,
        s.unique_reports,
        s.reports,
        s.restarts,
        s.resets,
        s.infra_errors,
        s.oom,
        s.slow,
    )
}

fn ticker(shared: Arc<Shared>, cfg: MonitorConfig, started: Instant, since: SystemTime) {
    let tty = std::io::stderr().is_terminal() && !cfg.quiet;
    let bar = if tty {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        Some(b)
    } else {
        None
    };
    let mut last_line = Instant::now() - cfg.interval;
    let mut unique = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        let due = last_line.elapsed() >= cfg.interval;
        if due {
            unique = unique_since(&cfg.reports, since);
        }
        let snap = {
            let mut s = shared.snap.lock().unwrap_or_else(|e| e.into_inner());
            s.elapsed_s = started.elapsed().as_secs();
            s.time = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
            s.unique_reports = unique;
            s.clone()
        };
        let line = status_line(&snap, cfg.duration);
        if let Some(b) = &bar {
            b.set_message(line.clone());
            b.tick();
        }
        if due {
            last_line = Instant::now();
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&cfg.stats_path)
            {
                if let Ok(j) = serde_json::to_string(&snap) {
                    let _ = writeln!(f, "{j}");
                }
            }
            if bar.is_none() && !cfg.quiet {
                eprintln!("hotfuzz: {line}");
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

impl Drop for StatusMonitor {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

impl Monitor for StatusMonitor {
    fn display(
        &mut self,
        m: &mut ClientStatsManager,
        _event_msg: &str,
        _sender_id: ClientId,
    ) -> Result<(), libafl::Error> {
        self.ensure_ticker();
        let (execs, per_sec, clients) = {
            let g = m.global_stats();
            (g.total_execs, g.execs_per_sec, g.client_stats_count as u64)
        };
        let agg = m.aggregated();
        let aggregated_number = |k: &str| as_number(agg.get(k));
        let mut s = self.shared.snap.lock().unwrap_or_else(|e| e.into_inner());
        s.execs = execs;
        s.execs_per_sec = per_sec;
        s.clients = clients;
        s.corpus = aggregated_number(keys::CORPUS);
        s.states = aggregated_number(keys::STATES);
        s.coverage = aggregated_number(keys::COVERAGE);
        s.restarts = aggregated_number(keys::RESTARTS);
        s.infra_errors = aggregated_number(keys::INFRA);
        s.reports = aggregated_number(keys::REPORTS);
        s.suppressed = aggregated_number(keys::SUPPRESSED);
        s.resets = aggregated_number(keys::RESETS);
        s.oom = aggregated_number(keys::OOM);
        s.slow = aggregated_number(keys::SLOW);
        s.unfiled = aggregated_number(keys::UNFILED);
        s.filing_failures = aggregated_number(keys::FILING_FAILURES);
        s.spent = super::target::TimeSpent {
            boot_ms: aggregated_number(keys::T_BOOT),
            reset_ms: aggregated_number(keys::T_RESET),
            program_ms: aggregated_number(keys::T_PROGRAM),
            deadline_ms: aggregated_number(keys::T_DEADLINE),
            settle_ms: aggregated_number(keys::T_SETTLE),
            hang_ms: aggregated_number(keys::T_HANG),
        };
        Ok(())
    }
}

/// Reads the last line of a stats file.
pub fn last_stats(path: &std::path::Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_shows_the_numbers() {
        let s = Snapshot {
            elapsed_s: 125,
            execs: 42,
            execs_per_sec: 0.5,
            corpus: 7,
            states: 300,
            unique_reports: 1,
            reports: 3,
            restarts: 4,
            infra_errors: 1,
            ..Snapshot::default()
        };
        let l = status_line(&s, Some(Duration::from_secs(600)));
        assert!(
            l.starts_with("2m05s elapsed, 7m55s left | 42 execs (0.50/s)"),
            "{l}"
        );
        assert!(l.contains("reports 1 unique (3 total)"), "{l}");
        assert!(l.contains("restarts 4, resets 0 (infra 1)"), "{l}");
        let busy = Snapshot {
            clients: 1,
            spent: crate::fuzz::target::TimeSpent {
                program_ms: 100_000,
                deadline_ms: 25_000,
                ..Default::default()
            },
            ..s.clone()
        };
        assert!(
            status_line(&busy, None).ends_with("in guest 60%"),
            "{}",
            status_line(&busy, None)
        );
        assert!(status_line(&s, None).starts_with("2m05s elapsed |"));
    }
}
