//! The fuzzer's objective: a program that caused a report. A solution is kept once per unique
//! title; later programs with a known title only count (the report store counts them too).

use libafl::corpus::Testcase;
use libafl::executors::ExitKind;
use libafl::feedbacks::{Feedback, StateInitializer};
use libafl::observers::Observer;
use libafl::HasMetadata;
use libafl_bolts::tuples::{Handle, Handled, MatchNameRef};
use libafl_bolts::Named;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// Observes the titles of the reports a program caused.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReportObserver {
    /// Titles of this execution's reports.
    pub titles: Vec<String>,
}

impl ReportObserver {
    /// The observer's name.
    pub const NAME: &'static str = "reports";
}

impl Named for ReportObserver {
    fn name(&self) -> &Cow<'static, str> {
        static NAME: Cow<'static, str> = Cow::Borrowed(ReportObserver::NAME);
        &NAME
    }
}

impl<I, S> Observer<I, S> for ReportObserver {
    fn pre_exec(&mut self, _state: &mut S, _input: &I) -> Result<(), libafl::Error> {
        self.titles.clear();
        Ok(())
    }
}

/// Titles seen by this fuzzer instance, and how often (kept in the fuzzer state, so it
/// survives a restart of the fuzzing process).
#[derive(Debug, Clone, Default, Serialize, Deserialize, libafl_bolts::SerdeAny)]
pub struct TitlesMetadata {
    /// Title → programs that caused it.
    pub counts: BTreeMap<String, u64>,
}

/// The title a solution was kept for (testcase metadata).
#[derive(Debug, Clone, Serialize, Deserialize, libafl_bolts::SerdeAny)]
pub struct SolutionTitle {
    /// The title(s).
    pub titles: Vec<String>,
}

/// Interesting when the execution caused a report whose title this fuzzer has not kept yet.
#[derive(Debug, Clone)]
pub struct NewTitleFeedback {
    handle: Handle<ReportObserver>,
    new: Vec<String>,
}

impl NewTitleFeedback {
    /// A feedback reading `observer`.
    pub fn new(observer: &ReportObserver) -> NewTitleFeedback {
        NewTitleFeedback {
            handle: observer.handle(),
            new: Vec::new(),
        }
    }
}

impl Named for NewTitleFeedback {
    fn name(&self) -> &Cow<'static, str> {
        static NAME: Cow<'static, str> = Cow::Borrowed("new_title");
        &NAME
    }
}

impl<S: HasMetadata> StateInitializer<S> for NewTitleFeedback {
    fn init_state(&mut self, state: &mut S) -> Result<(), libafl::Error> {
        state.metadata_or_insert_with(TitlesMetadata::default);
        Ok(())
    }
}

impl<EM, I, OT: MatchNameRef, S: HasMetadata> Feedback<EM, I, OT, S> for NewTitleFeedback {
    fn is_interesting(
        &mut self,
        state: &mut S,
        _manager: &mut EM,
        _input: &I,
        observers: &OT,
        _exit_kind: &ExitKind,
    ) -> Result<bool, libafl::Error> {
        let obs = observers
            .get(&self.handle)
            .ok_or_else(|| libafl::Error::key_not_found("the reports observer"))?;
        let meta = state.metadata_or_insert_with(TitlesMetadata::default);
        let titles: BTreeSet<&String> = obs.titles.iter().collect();
        self.new.clear();
        for t in titles {
            let n = meta.counts.entry(t.clone()).or_insert(0);
            if *n == 0 {
                self.new.push(t.clone());
            }
            *n += 1;
        }
        Ok(!self.new.is_empty())
    }

    fn append_metadata(
        &mut self,
        _state: &mut S,
        _manager: &mut EM,
        _observers: &OT,
        testcase: &mut Testcase<I>,
    ) -> Result<(), libafl::Error> {
        testcase.add_metadata(SolutionTitle {
            titles: std::mem::take(&mut self.new),
        });
        Ok(())
    }
}
