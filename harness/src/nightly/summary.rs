//! The record of a night, `summary.json` in its directory: what ran, how long it took, the
//! regression suite's results, the fuzzing campaign, the reproductions and the night's bugs
//! classified against the report store. It is both the machine-readable result and the state a
//! killed night is resumed from: it is written atomically after every stage (and after every
//! reproduction), so what a finished stage found is never lost.

use super::kernel::KernelFacts;
use crate::store::status::State;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The version of this file's layout.
pub const SCHEMA: u32 = 1;

/// The stages of a night, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Resolve the kernel under test and build the guest image (and the bug zoo).
    Prepare,
    /// Run the regression suite.
    Regression,
    /// Fuzz.
    Fuzz,
    /// Reproduce and minimize the night's new bugs.
    Repro,
    /// Classify, write JUnit, JSON, HTML and mails.
    Results,
}

impl Stage {
    /// All stages in order.
    pub const ALL: [Stage; 5] = [
        Stage::Prepare,
        Stage::Regression,
        Stage::Fuzz,
        Stage::Repro,
        Stage::Results,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::Regression => "regression",
            Stage::Fuzz => "fuzz",
            Stage::Repro => "repro",
            Stage::Results => "results",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Result<Stage> {
        Stage::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no stage {s:?} (stages: {})",
                    Stage::ALL.map(Stage::name).join(", ")
                )
            })
    }
}

/// How a stage went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageState {
    /// Not started.
    Pending,
    /// Started and not finished (a killed night leaves this).
    Running,
    /// Finished.
    Done,
    /// Not run (not selected, nothing to do, or no time left: see the note).
    Skipped,
    /// Failed; the note says why.
    Failed,
    /// Stopped by a signal.
    Interrupted,
}

/// One stage's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// Which.
    pub stage: Stage,
    /// How it went.
    pub state: StageState,
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// Wall time spent, seconds.
    pub seconds: f64,
    /// The time it was given, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_s: Option<f64>,
    /// Why it was skipped or failed, or what it did.
    #[serde(default)]
    pub note: String,
}

/// What a regression entry was expected to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The bug is open: the reproducer must reproduce it.
    Reproduces,
    /// The bug is fixed: the reproducer must not reproduce it.
    Fixed,
}

/// How a regression entry came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// As expected.
    Passed,
    /// Not as expected (a regression, or an open bug that stopped reproducing).
    Failed,
    /// Not run (does not apply to this kernel, or no time left).
    Skipped,
    /// Could not tell (the guests did not run).
    Error,
}

/// One regression entry's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryResult {
    /// The entry's directory name.
    pub name: String,
    /// The title it reproduces.
    pub title: String,
    /// What it was expected to do (none when skipped before deciding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expect>,
    /// Why that was expected (or why it was skipped).
    pub why: String,
    /// How it came out.
    pub verdict: Verdict,
    /// Runs that reproduced the title.
    pub crashes: u32,
    /// Runs that counted.
    pub runs: u32,
    /// Runs lost to infrastructure problems.
    pub infra: u32,
    /// Wall time, seconds.
    pub seconds: f64,
    /// One line for people.
    pub message: String,
    /// The report text when it reproduced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// The store directory of the bug, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bug_dir: Option<String>,
}

/// The fuzzing campaign's numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FuzzRecord {
    /// Wall time, seconds.
    pub seconds: f64,
    /// Executions.
    pub execs: u64,
    /// Executions per second.
    pub execs_per_sec: f64,
    /// Corpus size at the end.
    pub corpus: usize,
    /// State features seen.
    pub states: usize,
    /// KCOV PCs seen.
    pub coverage: usize,
    /// Guest boots and failed boots.
    pub boots: u64,
    /// Failed boots.
    pub boot_failures: u64,
    /// Runs lost to infrastructure.
    pub infra_errors: u64,
    /// Reports suppressed.
    pub suppressed: u64,
    /// Runs out of memory.
    pub oom: u64,
    /// Runs that were slow, not hung: every operation the guest gave up on came back, and no
    /// task stayed blocked (nights before this field read as 0).
    #[serde(default)]
    pub slow: u64,
    /// Where the guests' time went.
    pub time: String,
    /// Why it stopped.
    pub stopped: String,
    /// Bugs the campaign filed or saw again (titles).
    pub reports: Vec<String>,
}

/// One reproduction's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReproRecord {
    /// The report directory.
    pub dir: String,
    /// The title.
    pub title: String,
    /// Whether it reproduced.
    pub reproduced: bool,
    /// crashes/runs after minimizing (or before, when it did not get that far).
    pub reliability: String,
    /// Operations before and after.
    pub ops: (usize, usize),
    /// Guest runs it took.
    pub runs: u32,
    /// Wall time, seconds.
    pub seconds: f64,
    /// `repro.sh`, when one was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Why there is no `repro.sh` (or why it did not reproduce).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How a bug of the night is classified against the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Never reported before.
    New,
    /// A fixed bug seen again.
    Regressed,
    /// Seen before, open.
    Known,
    /// Found fixed tonight (its reproducer stopped reproducing).
    Fixed,
    /// Seen tonight, marked not a bug.
    Invalid,
}

impl Class {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Class::New => "new",
            Class::Regressed => "regressed",
            Class::Known => "known",
            Class::Fixed => "fixed",
            Class::Invalid => "invalid",
        }
    }

    /// Whether a person has to look (the night exits 1).
    pub fn is_news(self) -> bool {
        matches!(self, Class::New | Class::Regressed)
    }
}

/// A bug of the night.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BugRecord {
    /// New, regressed, known, fixed or invalid.
    pub class: Class,
    /// The title.
    pub title: String,
    /// Its report type.
    pub kind: String,
    /// The store's state at classification.
    pub state: State,
    /// The store directory.
    pub dir: String,
    /// Its files copied into the night (`bugs/<name>/`), relative to the night directory.
    pub files: String,
    /// First seen (RFC 3339).
    pub first_seen: String,
    /// Times seen, ever.
    pub count: u64,
    /// Times seen tonight.
    pub tonight: u64,
    /// crashes/runs, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reproducibility: Option<String>,
    /// Which of report.txt, excerpt.log, repro.prog, repro.sh, email.txt exist.
    pub have: Vec<String>,
    /// Seen only with fault injection armed.
    pub only_injected: bool,
    /// The last fix, for regressed and fixed bugs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The report text (for JUnit).
    pub report: String,
}

/// Counts for the verdict line, the index page and trend plots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// New bugs.
    pub new: usize,
    /// Regressed bugs.
    pub regressed: usize,
    /// Known bugs seen tonight.
    pub known: usize,
    /// Bugs found fixed tonight.
    pub fixed: usize,
    /// Regression entries that passed.
    pub suite_passed: usize,
    /// Regression entries that failed.
    pub suite_failed: usize,
    /// Regression entries skipped.
    pub suite_skipped: usize,
    /// Regression entries that could not run.
    pub suite_errors: usize,
}

/// The configuration a night ran with (for the page and for resuming).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigRecord {
    /// The configuration file, if any.
    pub file: Option<String>,
    /// The effective configuration, as YAML.
    pub yaml: String,
    /// Stages selected.
    pub stages: Vec<Stage>,
}

/// A night.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Night {
    /// Layout version ([`SCHEMA`]).
    pub schema: u32,
    /// The night's id (its directory name).
    pub id: String,
    /// The job's name.
    pub name: String,
    /// Started (RFC 3339).
    pub started: String,
    /// Last written (RFC 3339).
    pub updated: String,
    /// Finished (RFC 3339), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// The budget, seconds.
    pub budget_s: f64,
    /// Wall time spent so far over every session of the night, seconds.
    pub spent_s: f64,
    /// The configuration.
    pub config: ConfigRecord,
    /// The kernel under test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelFacts>,
    /// The stages.
    pub stages: Vec<StageRecord>,
    /// Average wall time of one guest run, seconds (measured by the suite; budgets repro).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_cost_s: Option<f64>,
    /// The regression suite.
    pub regression: Vec<EntryResult>,
    /// The campaign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuzz: Option<FuzzRecord>,
    /// Offset of the campaign's first line of this night in the fuzzing stats file.
    #[serde(default)]
    pub stats_offset: Option<u64>,
    /// Reproductions.
    pub repro: Vec<ReproRecord>,
    /// The night's bugs.
    pub bugs: Vec<BugRecord>,
    /// The store at the start: directory name → count.
    pub store_at_start: BTreeMap<String, u64>,
    /// Infrastructure problems (the night exits 2 when nothing else is wrong).
    pub problems: Vec<String>,
    /// The counts.
    pub counts: Counts,
    /// The exit code, once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl Night {
    /// A stage's record.
    pub fn stage(&self, s: Stage) -> Option<&StageRecord> {
        self.stages.iter().find(|r| r.stage == s)
    }

    /// A stage's record, mutable (created pending when missing).
    pub fn stage_mut(&mut self, s: Stage) -> &mut StageRecord {
        if let Some(i) = self.stages.iter().position(|r| r.stage == s) {
            return &mut self.stages[i];
        }
        self.stages.push(StageRecord {
            stage: s,
            state: StageState::Pending,
            started: None,
            seconds: 0.0,
            budget_s: None,
            note: String::new(),
        });
        self.stages.sort_by_key(|r| r.stage);
        let i = self
            .stages
            .iter()
            .position(|r| r.stage == s)
            .expect("just added");
        &mut self.stages[i]
    }

    /// Marks stage `s` started, with the time it is given.
    pub fn begin(&mut self, s: Stage, budget: Option<std::time::Duration>) {
        let r = self.stage_mut(s);
        r.state = StageState::Running;
        r.started =
            Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
        r.budget_s = budget.map(|b| b.as_secs_f64());
    }

    /// Marks stage `s` ended after `secs` (added to earlier sessions' time).
    pub fn end(&mut self, s: Stage, state: StageState, secs: f64, note: String) {
        let r = self.stage_mut(s);
        r.state = state;
        r.seconds += secs;
        r.note = note;
    }

    /// Whether stage `s` still has to run (not done or skipped, in this or an earlier session).
    pub fn pending(&self, s: Stage) -> bool {
        !matches!(
            self.stage(s).map(|r| r.state),
            Some(StageState::Done) | Some(StageState::Skipped)
        )
    }

    /// Whether every stage has finished one way or another.
    pub fn complete(&self) -> bool {
        self.finished.is_some()
    }

    /// Recomputes the counts from the suite and the bugs.
    pub fn count(&mut self) {
        let mut c = Counts::default();
        for b in &self.bugs {
            match b.class {
                Class::New => c.new += 1,
                Class::Regressed => c.regressed += 1,
                Class::Known => c.known += 1,
                Class::Fixed => c.fixed += 1,
                Class::Invalid => {}
            }
        }
        for e in &self.regression {
            match e.verdict {
                Verdict::Passed => c.suite_passed += 1,
                Verdict::Failed => c.suite_failed += 1,
                Verdict::Skipped => c.suite_skipped += 1,
                Verdict::Error => c.suite_errors += 1,
            }
        }
        self.counts = c;
    }

    /// The exit code a CI system sees: 1 when a person has to look (a new bug, a regression,
    /// a regression entry whose outcome changed), else 2 when the night could not run all it
    /// was asked to (infrastructure problems, interrupted), else 0.
    pub fn decide_exit(&self) -> i32 {
        let c = &self.counts;
        if c.new + c.regressed + c.suite_failed > 0 {
            return 1;
        }
        let broken = self
            .stages
            .iter()
            .any(|s| matches!(s.state, StageState::Failed | StageState::Interrupted));
        if broken || !self.problems.is_empty() || c.suite_errors > 0 {
            return 2;
        }
        0
    }

    /// One line for people: what the exit code means.
    pub fn verdict_line(&self) -> String {
        let c = &self.counts;
        let mut parts = Vec::new();
        let n =
            |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
        parts.push(n(c.new, "new bug", "new bugs"));
        parts.push(n(c.regressed, "regression", "regressions"));
        parts.push(format!("{} known", c.known));
        if c.fixed > 0 {
            parts.push(format!("{} found fixed", c.fixed));
        }
        let suite = c.suite_passed + c.suite_failed + c.suite_errors;
        if suite + c.suite_skipped > 0 {
            let mut s = format!("suite {}/{suite} passed", c.suite_passed);
            if c.suite_skipped > 0 {
                s.push_str(&format!(", {} skipped", c.suite_skipped));
            }
            parts.push(s);
        }
        if !self.problems.is_empty() {
            parts.push(n(
                self.problems.len(),
                "infrastructure problem",
                "infrastructure problems",
            ));
        }
        parts.join(", ")
    }

    /// Reads a night's `summary.json`.
    pub fn load(path: &Path) -> Result<Night> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let n: Night = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))?;
        anyhow::ensure!(
            n.schema == SCHEMA,
            "{}: schema {} (this hotfuzz reads {SCHEMA})",
            path.display(),
            n.schema
        );
        Ok(n)
    }

    /// Writes it atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        hotfuzz_vm::cache::atomic_write(path, serde_json::to_string_pretty(self)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_what_needs_a_person() {
        let mut n = Night::default();
        n.count();
        assert_eq!(n.decide_exit(), 0);
        n.problems.push("the fuzzer's guest never booted".into());
        assert_eq!(n.decide_exit(), 2);
        n.regression.push(EntryResult {
            name: "a".into(),
            title: "t".into(),
            expected: Some(Expect::Fixed),
            why: String::new(),
            verdict: Verdict::Failed,
            crashes: 1,
            runs: 1,
            infra: 0,
            seconds: 1.0,
            message: String::new(),
            report: None,
            bug_dir: None,
        });
        n.count();
        assert_eq!(n.decide_exit(), 1);
        assert!(
            n.verdict_line().contains("suite 0/1 passed"),
            "{}",
            n.verdict_line()
        );
        n.stage_mut(Stage::Fuzz).state = StageState::Done;
        n.stage_mut(Stage::Prepare).state = StageState::Done;
        let order: Vec<Stage> = n.stages.iter().map(|s| s.stage).collect();
        assert_eq!(order, [Stage::Prepare, Stage::Fuzz]);
        assert!(Stage::parse("fuzzing")
            .unwrap_err()
            .to_string()
            .contains("regression"));
    }
}
