//! What the fuzzer runs programs on: one narrow interface, so the loop can be tested with a
//! fake and run on real guests ([`super::guest::GuestTarget`]) unchanged.

use crate::program::prog::Program;
use crate::program::state::GuestState;
use crate::report::ReportType;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// A report a program caused.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Its title.
    pub title: String,
    /// Its type.
    pub kind: ReportType,
    /// Where the report store keeps it (`None` when suppressed or not filed).
    pub dir: Option<PathBuf>,
    /// First time the store saw this bug.
    pub new_in_store: bool,
}

/// What running one program gave.
#[derive(Debug, Clone, Default)]
pub struct Execution {
    /// The state signature ([`super::features`]).
    pub features: Vec<u64>,
    /// KCOV PCs (empty without KCOV).
    pub cover: Vec<u64>,
    /// Reports filed for this program (suppressed ones are not here).
    pub reports: Vec<Found>,
    /// Reports matching a suppression.
    pub suppressed: Vec<String>,
    /// Set when the run says nothing about the kernel: the guest misbehaved in the harness
    /// (killed from outside, never booted, ssh broke without a kernel report). Such runs
    /// are retried by the target and, if they still fail, not used as feedback.
    pub infra: Option<String>,
    /// Wall time of the run.
    pub duration: Duration,
    /// The kernel ran out of memory during the run (the program's own doing: counted, not
    /// filed; see `judge::Verdict::oom`).
    pub oom: bool,
}

/// Where a target's wall time went, in milliseconds summed over its runs. What is left of
/// the campaign's wall time is the host's own work (generation, mutation, feedback).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeSpent {
    /// Booting guests until they were ready for programs (snapshot taken).
    pub boot_ms: u64,
    /// Restoring guests from their snapshot.
    pub reset_ms: u64,
    /// Programs running in the guest.
    pub program_ms: u64,
    /// Of the programs' time: operations that ran to a deadline on purpose (waits that time
    /// out, stuck operations up to their signal).
    pub deadline_ms: u64,
    /// After programs: the console's grace period and the virtio-mem settle check.
    pub settle_ms: u64,
    /// Waiting for the kernel's hung task detector to name a stuck operation.
    pub hang_ms: u64,
}

impl TimeSpent {
    /// Adds `o` to these sums.
    pub fn add(&mut self, o: &TimeSpent) {
        self.boot_ms += o.boot_ms;
        self.reset_ms += o.reset_ms;
        self.program_ms += o.program_ms;
        self.deadline_ms += o.deadline_ms;
        self.settle_ms += o.settle_ms;
        self.hang_ms += o.hang_ms;
    }

    /// Shares of `wall_ms` (of all guests together): program (in the kernel, deadlines left
    /// out), deadlines, settle, hang, reset, boot, and the rest as host.
    pub fn shares(&self, wall_ms: u64) -> Vec<(&'static str, f64)> {
        let wall = wall_ms.max(1) as f64;
        let busy = self.program_ms.saturating_sub(self.deadline_ms);
        let known = self.program_ms + self.settle_ms + self.hang_ms + self.reset_ms + self.boot_ms;
        let host = wall_ms.saturating_sub(known);
        [
            ("program", busy),
            ("deadlines", self.deadline_ms),
            ("settle", self.settle_ms),
            ("hang", self.hang_ms),
            ("reset", self.reset_ms),
            ("boot", self.boot_ms),
            ("host", host),
        ]
        .into_iter()
        .map(|(k, v)| (k, 100.0 * v as f64 / wall))
        .collect()
    }

    /// One line: `program 71% · deadlines 3% · ...`.
    pub fn describe(&self, wall_ms: u64) -> String {
        self.shares(wall_ms)
            .into_iter()
            .map(|(k, v)| format!("{k} {v:.0}%"))
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

/// Counters a target keeps for the status line and the stats file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetCounters {
    /// Guest boots (the first one included).
    pub boots: u64,
    /// Boots that failed.
    pub boot_failures: u64,
    /// Infrastructure failures: runs lost to them (retried) and guests that died without the
    /// kernel saying why, between or after programs.
    pub infra_errors: u64,
    /// Reports suppressed.
    pub suppressed: u64,
    /// Reports the store could not take yet (a full disk): kept in memory, filed later.
    #[serde(default)]
    pub unfiled: u64,
    /// Filings that failed, retries included.
    #[serde(default)]
    pub filing_failures: u64,
    /// Guests restored from their snapshot.
    pub resets: u64,
    /// Restores that failed (the guest was booted again instead).
    pub reset_failures: u64,
    /// Runs in which the kernel ran out of memory.
    pub oom: u64,
    /// Runs in which an operation or a task took longer than its deadline or the hung task
    /// timeout and then went on (counted, not filed; see `judge::slow`).
    #[serde(default)]
    pub slow: u64,
    /// Where the time went.
    pub time: TimeSpent,
    /// Milliseconds from the target's creation (the campaign's start) to its first program.
    #[serde(default)]
    pub first_program_ms: Option<u64>,
    /// The profile of the running guest.
    pub profile: String,
}

impl TargetCounters {
    /// Adds another target's counters (the profile is left alone).
    pub fn add(&mut self, o: &TargetCounters) {
        self.boots += o.boots;
        self.boot_failures += o.boot_failures;
        self.infra_errors += o.infra_errors;
        self.suppressed += o.suppressed;
        self.unfiled += o.unfiled;
        self.filing_failures += o.filing_failures;
        self.resets += o.resets;
        self.reset_failures += o.reset_failures;
        self.oom += o.oom;
        self.slow += o.slow;
        self.time.add(&o.time);
        self.first_program_ms = match (self.first_program_ms, o.first_program_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Something programs run on.
pub trait Target {
    /// Runs `prog`. An error means the campaign cannot go on (e.g. guests stopped booting);
    /// everything else, including a guest that died, is in the [`Execution`].
    fn execute(&mut self, prog: &Program) -> anyhow::Result<Execution>;

    /// The guest's state as the generator should see it (updated at every boot).
    fn guest_state(&self) -> GuestState;

    /// Counters so far.
    fn counters(&self) -> TargetCounters;

    /// Stops the guest (end of the campaign).
    fn shutdown(&mut self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_leave_the_rest_to_the_host() {
        let t = TimeSpent {
            boot_ms: 100,
            reset_ms: 100,
            program_ms: 600,
            deadline_ms: 100,
            settle_ms: 100,
            hang_ms: 0,
        };
        let s = t.shares(1000);
        let get = |k: &str| s.iter().find(|(n, _)| *n == k).unwrap().1;
        assert_eq!(get("program"), 50.0);
        assert_eq!(get("deadlines"), 10.0);
        assert_eq!(get("host"), 10.0);
        let total: f64 = s.iter().map(|(_, v)| v).sum();
        assert!((total - 100.0).abs() < 1e-9);
        assert_eq!(
            t.shares(2000).iter().find(|(n, _)| *n == "host").unwrap().1,
            55.0
        );
        assert!(t.describe(1000).starts_with("program 50% · deadlines 10%"));
    }
}
