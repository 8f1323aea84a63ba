//! What the fuzzer runs programs on: one narrow interface, so the loop can be tested with a
//! fake and run on real guests ([`super::guest::GuestTarget`]) unchanged.

use crate::program::prog::Program;
use crate::program::state::GuestState;
use crate::report::ReportType;
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
}

/// Counters a target keeps for the status line and the stats file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// The profile of the running guest.
    pub profile: String,
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
