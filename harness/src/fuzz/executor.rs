//! The LibAFL executor: runs a program on a [`Target`] and fills the observers (KCOV map,
//! state-signature map, report titles). A run with reports is a crash for LibAFL; a run the
//! target could not trust (infrastructure) observes nothing, so it is never interesting.

use super::features::index;
use super::input::ProgInput;
use super::monitor::{keys, number};
use super::mutators::SharedState;
use super::objective::ReportObserver;
use super::target::{Execution, Target, TargetCounters};
use libafl::events::{Event, EventFirer, EventWithStats};
use libafl::executors::{Executor, ExitKind, HasObservers};
use libafl::monitors::stats::AggregatorOps;
use libafl::observers::{ExplicitTracking, StdMapObserver};
use libafl::state::{HasCorpus, HasExecutions};
use libafl_bolts::tuples::{Handle, MatchNameRef, RefIndexable};
use std::collections::{BTreeSet, HashSet};
use std::marker::PhantomData;

/// The KCOV map observer.
pub type KcovObserver = StdMapObserver<'static, u8, false>;
/// The state-signature map observer (indices tracked for the minimizing scheduler).
pub type StatesObserver = ExplicitTracking<StdMapObserver<'static, u8, false>, true, false>;

/// What the executor has seen (for the stats).
#[derive(Debug, Default)]
pub struct Seen {
    /// Distinct features.
    pub features: HashSet<u64>,
    /// Distinct PCs.
    pub pcs: HashSet<u64>,
    /// Reports filed, repeats included.
    pub reports: u64,
    /// Titles filed by this executor.
    pub titles: BTreeSet<String>,
    /// Executions the target could not trust.
    pub infra_runs: u64,
}

/// A callback seeing every execution with its input (tests and tools watch the loop).
pub type OnExecution = Box<dyn FnMut(&ProgInput, &Execution)>;

/// Runs programs on a target for LibAFL.
pub struct ProgExecutor<T, OT> {
    target: T,
    observers: OT,
    kcov: Handle<KcovObserver>,
    states: Handle<StatesObserver>,
    reports: Handle<ReportObserver>,
    guest_state: SharedState,
    /// What was seen so far.
    pub seen: Seen,
    last_boots: u64,
    /// Called after every execution with it (tests look at them).
    pub on_execution: Option<OnExecution>,
}

impl<T: Target, OT> ProgExecutor<T, OT> {
    /// An executor over `target`, filling the observers named by the handles.
    pub fn new(
        target: T,
        observers: OT,
        kcov: Handle<KcovObserver>,
        states: Handle<StatesObserver>,
        reports: Handle<ReportObserver>,
        guest_state: SharedState,
    ) -> ProgExecutor<T, OT> {
        ProgExecutor {
            target,
            observers,
            kcov,
            states,
            reports,
            guest_state,
            seen: Seen::default(),
            last_boots: u64::MAX,
            on_execution: None,
        }
    }

    /// The target.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// The target, mutably.
    pub fn target_mut(&mut self) -> &mut T {
        &mut self.target
    }

    /// The target's counters.
    pub fn counters(&self) -> TargetCounters {
        self.target.counters()
    }
}

impl<T, OT> HasObservers for ProgExecutor<T, OT> {
    type Observers = OT;

    fn observers(&self) -> RefIndexable<&OT, OT> {
        RefIndexable::from(&self.observers)
    }

    fn observers_mut(&mut self) -> RefIndexable<&mut OT, OT> {
        RefIndexable::from(&mut self.observers)
    }
}

impl<EM, S, Z, T, OT> Executor<EM, ProgInput, S, Z> for ProgExecutor<T, OT>
where
    T: Target,
    OT: MatchNameRef,
    S: HasExecutions + HasCorpus<ProgInput>,
    EM: EventFirer<ProgInput, S>,
{
    fn run_target(
        &mut self,
        _fuzzer: &mut Z,
        state: &mut S,
        mgr: &mut EM,
        input: &ProgInput,
    ) -> Result<ExitKind, libafl::Error> {
        *state.executions_mut() += 1;
        let ex = self
            .target
            .execute(&input.prog)
            .map_err(|e| libafl::Error::illegal_state(format!("{e:#}")))?;
        let counters = self.target.counters();
        if counters.boots != self.last_boots {
            // A new guest: the generator should see its layout.
            self.last_boots = counters.boots;
            *self.guest_state.write().unwrap_or_else(|e| e.into_inner()) =
                self.target.guest_state();
        }
        if let Some(f) = &mut self.on_execution {
            f(input, &ex);
        }
        let exit = if ex.infra.is_some() {
            self.seen.infra_runs += 1;
            ExitKind::Ok
        } else {
            {
                let kcov = self
                    .observers
                    .get_mut(&self.kcov)
                    .ok_or_else(|| libafl::Error::key_not_found("kcov observer"))?;
                for pc in &ex.cover {
                    kcov[index(*pc)] = 1;
                    self.seen.pcs.insert(*pc);
                }
            }
            {
                let states = self
                    .observers
                    .get_mut(&self.states)
                    .ok_or_else(|| libafl::Error::key_not_found("states observer"))?;
                let map = states.as_mut();
                for f in &ex.features {
                    map[index(*f)] = 1;
                    self.seen.features.insert(*f);
                }
            }
            let reports = self
                .observers
                .get_mut(&self.reports)
                .ok_or_else(|| libafl::Error::key_not_found("reports observer"))?;
            reports.titles = ex.reports.iter().map(|r| r.title.clone()).collect();
            self.seen.reports += ex.reports.len() as u64;
            self.seen
                .titles
                .extend(ex.reports.iter().map(|r| r.title.clone()));
            if ex.reports.is_empty() {
                ExitKind::Ok
            } else {
                ExitKind::Crash
            }
        };
        let corpus = libafl::corpus::Corpus::count(state.corpus()) as u64;
        let stats = [
            (
                keys::STATES,
                self.seen.features.len() as u64,
                AggregatorOps::Sum,
            ),
            (
                keys::COVERAGE,
                self.seen.pcs.len() as u64,
                AggregatorOps::Sum,
            ),
            (keys::CORPUS, corpus, AggregatorOps::Max),
            (
                keys::RESTARTS,
                counters.boots.saturating_sub(1),
                AggregatorOps::Sum,
            ),
            (keys::INFRA, counters.infra_errors, AggregatorOps::Sum),
            (keys::REPORTS, self.seen.reports, AggregatorOps::Sum),
            (keys::SUPPRESSED, counters.suppressed, AggregatorOps::Sum),
            (keys::RESETS, counters.resets, AggregatorOps::Sum),
            (keys::OOM, counters.oom, AggregatorOps::Sum),
            (keys::SLOW, counters.slow, AggregatorOps::Sum),
            (keys::UNFILED, counters.unfiled, AggregatorOps::Sum),
            (
                keys::FILING_FAILURES,
                counters.filing_failures,
                AggregatorOps::Sum,
            ),
            (keys::T_BOOT, counters.time.boot_ms, AggregatorOps::Sum),
            (keys::T_RESET, counters.time.reset_ms, AggregatorOps::Sum),
            (
                keys::T_PROGRAM,
                counters.time.program_ms,
                AggregatorOps::Sum,
            ),
            (
                keys::T_DEADLINE,
                counters.time.deadline_ms,
                AggregatorOps::Sum,
            ),
            (keys::T_SETTLE, counters.time.settle_ms, AggregatorOps::Sum),
            (keys::T_HANG, counters.time.hang_ms, AggregatorOps::Sum),
        ]
        .into_iter()
        .map(|(k, v, op)| (std::borrow::Cow::Borrowed(k), number(v, op)))
        .collect();
        let execs = *state.executions();
        mgr.fire(
            state,
            EventWithStats::with_current_time(
                Event::UpdateUserStatsMap {
                    stats,
                    phantom: PhantomData,
                },
                execs,
            ),
        )?;
        Ok(exit)
    }
}
