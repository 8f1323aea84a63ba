//! The bisection itself, pure: a [`Space`] of revisions, a [`Builder`] that makes a kernel
//! of a revision and an [`Oracle`] that runs the reproducer on it. No VM, no kernel build:
//! `tests/bisect_fake.rs` drives it with a fake builder and a fake, flaky oracle.
//!
//! 1. The new endpoint is tested first and measures the reproducer's reliability `r`
//!    (it must show the bug in a cause bisection); the old one must not.
//! 2. `git bisect` (or the list search) proposes revisions; each is built (a failed build is
//!    a skip) and run as often as [`decide::runs_needed`] says for `r`; masked and infra
//!    runs are topped up; the verdict marks the revision.
//! 3. The culprit is checked: its parent is tested again (must be old) and the culprit
//!    itself (must be new). A check that fails is reported, never hidden.
//! 4. Every step goes into a [`Journal`] (written atomically after each step), so a killed
//!    bisection restarts where it stopped: recorded steps are replayed, not re-run.

use super::decide::{self, Run, Tally, Verdict};
use super::space::{Mark, Next, Space};
use crate::build::git::CommitInfo;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A kernel of one revision.
#[derive(Debug, Clone)]
pub struct Built {
    /// What identifies the kernel (cache key, package name): equal for equal kernels.
    pub id: String,
    /// Seconds spent building (0 when it came from a cache).
    pub build_secs: f64,
}

/// Makes a kernel of a revision.
pub trait Builder {
    /// Builds `rev`; `Err` is a build failure (the revision is skipped), with its cause.
    fn build(&mut self, rev: &str) -> Result<Built>;
}

/// Runs the reproducer.
pub trait Oracle {
    /// Runs it `n` times on `kernel`, one outcome per run.
    fn run(&mut self, kernel: &Built, n: u32) -> Vec<Run>;
}

/// Which change is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The commit that introduced the bug: old = good, new = bad.
    Cause,
    /// The commit that fixed it: old = bad, new = good.
    Fix,
}

impl Direction {
    fn mark(self, v: &Verdict) -> Mark {
        match (self, v) {
            (_, Verdict::Skip(_)) => Mark::Skip,
            (Direction::Cause, Verdict::Good) | (Direction::Fix, Verdict::Bad) => Mark::Old,
            _ => Mark::New,
        }
    }

    /// The verdict the new side of the change has.
    fn new_verdict(self) -> Verdict {
        match self {
            Direction::Cause => Verdict::Bad,
            Direction::Fix => Verdict::Good,
        }
    }
}

/// Why a revision was tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// An endpoint, before bisecting.
    Endpoint,
    /// A revision git bisect proposed.
    Bisect,
    /// Checking the culprit: its parent or itself again.
    Verify,
}

/// One tested revision, as the result table shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Why.
    pub phase: Phase,
    /// The revision.
    pub rev: String,
    /// Its subject.
    pub subject: String,
    /// Build seconds (0: cached), `None` when the build failed.
    pub build_secs: Option<f64>,
    /// The build failure, when it failed.
    pub build_error: Option<String>,
    /// Run counts.
    pub tally: Tally,
    /// Seconds spent running.
    pub run_secs: f64,
    /// The verdict.
    pub verdict: Verdict,
    /// The reliability estimate after this step.
    pub reliability: f64,
}

/// Settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    /// Cause or fix.
    pub direction: Direction,
    /// The revision on the old side (cause: good; fix: bad).
    pub old: String,
    /// The revision on the new side (cause: bad; fix: good).
    pub new: String,
    /// Bound on the probability of a false good per revision.
    pub alpha: f64,
    /// Runs on the endpoint that measures reliability.
    pub initial_runs: u32,
    /// The bug's titles (for the journal: a resumed bisection must be of the same bug).
    pub titles: Vec<String>,
}

/// Every step so far, on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    /// What is being bisected.
    pub settings: Settings,
    /// Steps in order.
    pub steps: Vec<Step>,
}

/// How the bisection ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// The first new revision, when found.
    pub culprit: Option<CommitInfo>,
    /// The candidates when only skipped revisions were left.
    pub candidates: Vec<String>,
    /// Confidence: the product over good verdicts of `1 - (1 - r)^clean`, times the check.
    pub confidence: f64,
    /// Whether the culprit's parent and the culprit itself tested as expected again.
    pub verified: Option<bool>,
    /// The reliability estimate at the end.
    pub reliability: f64,
    /// Every step.
    pub steps: Vec<Step>,
    /// Build and run time in all.
    pub build_secs: f64,
    /// Run time in all.
    pub run_secs: f64,
    /// Wall time of this invocation.
    pub wall_secs: f64,
    /// Steps taken from the journal instead of being run again.
    pub replayed: usize,
}

/// A bisection in progress.
pub struct Bisection<'a> {
    space: &'a mut dyn Space,
    builder: &'a mut dyn Builder,
    oracle: &'a mut dyn Oracle,
    settings: Settings,
    journal_path: Option<PathBuf>,
    recorded: Vec<Step>,
    steps: Vec<Step>,
    replayed: usize,
    reliability: f64,
    /// Crashes and informative runs over every bad revision so far.
    pooled: (u32, u32),
    progress: Box<dyn FnMut(&Step) + 'a>,
}

impl<'a> Bisection<'a> {
    /// A bisection with `settings`; with a journal path, resumes from it when it holds a
    /// bisection with the same settings.
    pub fn new(
        space: &'a mut dyn Space,
        builder: &'a mut dyn Builder,
        oracle: &'a mut dyn Oracle,
        settings: Settings,
        journal: Option<PathBuf>,
    ) -> Result<Bisection<'a>> {
        let mut recorded = Vec::new();
        if let Some(p) = &journal {
            if let Ok(text) = std::fs::read_to_string(p) {
                let j: Journal = serde_json::from_str(&text)
                    .with_context(|| format!("reading the bisection journal {}", p.display()))?;
                if j.settings != settings {
                    bail!(
                        "{} holds another bisection ({} {}..{}); use another --workdir or remove it",
                        p.display(),
                        match j.settings.direction {
                            Direction::Cause => "cause",
                            Direction::Fix => "fix",
                        },
                        j.settings.old,
                        j.settings.new
                    );
                }
                recorded = j.steps;
            }
        }
        Ok(Bisection {
            space,
            builder,
            oracle,
            settings,
            journal_path: journal,
            recorded,
            steps: Vec::new(),
            replayed: 0,
            reliability: 1.0,
            pooled: (0, 0),
            progress: Box::new(|_| {}),
        })
    }

    /// Calls `f` after every step.
    pub fn on_step(mut self, f: impl FnMut(&Step) + 'a) -> Self {
        self.progress = Box::new(f);
        self
    }

    fn save(&self) -> Result<()> {
        if let Some(p) = &self.journal_path {
            let j = Journal {
                settings: self.settings.clone(),
                steps: self.steps.clone(),
            };
            hotfuzz_vm::cache::atomic_write(p, serde_json::to_string_pretty(&j)?.as_bytes())?;
        }
        Ok(())
    }

    /// Tests `rev`: replayed from the journal when recorded there, else built and run.
    fn test(&mut self, phase: Phase, rev: &str, runs: u32) -> Result<Step> {
        let i = self.steps.len();
        if let Some(s) = self.recorded.get(i) {
            if s.phase == phase && s.rev == rev {
                let s = s.clone();
                self.reliability = s.reliability;
                if s.verdict == Verdict::Bad {
                    self.pooled.0 += s.tally.crashed;
                    self.pooled.1 += s.tally.informative();
                }
                self.steps.push(s.clone());
                self.replayed += 1;
                (self.progress)(&s);
                return Ok(s);
            }
            // The journal diverges from here on (the history changed?): run afresh.
            self.recorded.truncate(i);
        }
        if hotfuzz_vm::process::stop_requested() {
            bail!("interrupted; run the same command again to resume");
        }
        let subject = self.space.info(rev).map(|i| i.subject).unwrap_or_default();
        let built = self.builder.build(rev);
        let mut step = Step {
            phase,
            rev: rev.to_string(),
            subject,
            build_secs: None,
            build_error: None,
            tally: Tally::default(),
            run_secs: 0.0,
            verdict: Verdict::Skip(String::new()),
            reliability: self.reliability,
        };
        match built {
            Err(e) => {
                if hotfuzz_vm::process::stop_requested() {
                    bail!("interrupted; run the same command again to resume");
                }
                let msg = format!("{e:#}");
                step.verdict = Verdict::Skip(format!("the build failed: {msg}"));
                step.build_error = Some(msg);
            }
            Ok(kernel) => {
                step.build_secs = Some(kernel.build_secs);
                let t = Instant::now();
                let needed = if phase == Phase::Endpoint && runs > 0 {
                    runs
                } else {
                    decide::runs_needed(self.reliability, self.settings.alpha)
                };
                let mut all: Vec<Run> = Vec::new();
                let mut todo = needed;
                while todo > 0 {
                    all.extend(self.oracle.run(&kernel, todo));
                    if hotfuzz_vm::process::stop_requested() {
                        bail!("interrupted; run the same command again to resume");
                    }
                    let tally = Tally::of(&all);
                    todo = if phase == Phase::Endpoint && self.steps.is_empty() {
                        0
                    } else {
                        decide::more_runs(&tally, needed)
                    };
                }
                step.run_secs = t.elapsed().as_secs_f64();
                step.tally = Tally::of(&all);
                let masked_by = all.iter().find_map(|r| match r {
                    Run::Masked(t) => Some(t.as_str()),
                    _ => None,
                });
                step.verdict = if phase == Phase::Endpoint && self.steps.is_empty() {
                    // The measuring endpoint: any crash is the bug; the runs set r.
                    if step.tally.crashed > 0 {
                        Verdict::Bad
                    } else {
                        decide::decide(&step.tally, needed, masked_by)
                    }
                } else {
                    decide::decide(&step.tally, needed, masked_by)
                };
                if step.verdict == Verdict::Bad {
                    self.pooled.0 += step.tally.crashed;
                    self.pooled.1 += step.tally.informative();
                    self.reliability =
                        decide::update_reliability(self.reliability, self.pooled.0, self.pooled.1);
                }
                step.reliability = self.reliability;
            }
        }
        self.steps.push(step.clone());
        self.save()?;
        (self.progress)(&step);
        Ok(step)
    }

    /// Runs the bisection to its end.
    pub fn run(mut self) -> Result<Outcome> {
        let t0 = Instant::now();
        let dir = self.settings.direction;
        let old = self.space.resolve(&self.settings.old)?;
        let new = self.space.resolve(&self.settings.new)?;
        // The endpoint with the bug measures the reliability.
        let (buggy, clean) = match dir {
            Direction::Cause => (new.clone(), old.clone()),
            Direction::Fix => (old.clone(), new.clone()),
        };
        let s = self.test(Phase::Endpoint, &buggy, self.settings.initial_runs)?;
        if s.verdict != Verdict::Bad {
            bail!(
                "the bug does not reproduce at {} ({}: {} runs, {} crashed, {} masked, {} infra): nothing to bisect",
                short(&buggy),
                s.verdict.word(),
                s.tally.total(),
                s.tally.crashed,
                s.tally.masked,
                s.tally.infra
            );
        }
        let s = self.test(Phase::Endpoint, &clean, 0)?;
        match &s.verdict {
            Verdict::Good => {}
            Verdict::Bad => bail!(
                "the bug reproduces at {} too ({} of {} runs): it is not where the range says it is",
                short(&clean),
                s.tally.crashed,
                s.tally.total()
            ),
            Verdict::Skip(why) => bail!("cannot test {}: {why}", short(&clean)),
        }
        let mut next = self.space.start(&old, &new)?;
        let found = loop {
            match next {
                Next::Test(rev) => {
                    let s = self.test(Phase::Bisect, &rev, 0)?;
                    next = self.space.mark(&rev, dir.mark(&s.verdict))?;
                }
                other => break other,
            }
        };
        let mut out = Outcome {
            culprit: None,
            candidates: Vec::new(),
            confidence: 1.0,
            verified: None,
            reliability: self.reliability,
            steps: Vec::new(),
            build_secs: 0.0,
            run_secs: 0.0,
            wall_secs: 0.0,
            replayed: 0,
        };
        match found {
            Next::Found(c) => {
                out.culprit = Some(self.space.info(&c)?);
                // Check: the parent again (old side), the culprit again (new side).
                let mut ok = true;
                if let Some(p) = self.space.parent(&c)? {
                    let s = self.test(Phase::Verify, &p, 0)?;
                    ok &= dir.mark(&s.verdict) == Mark::Old;
                }
                let s = self.test(Phase::Verify, &c, 0)?;
                ok &= s.verdict == dir.new_verdict();
                out.verified = Some(ok);
            }
            Next::Inconclusive(c) => out.candidates = c,
            Next::Test(_) => unreachable!("the loop ends on a result"),
        }
        let r = self.reliability;
        out.confidence = self
            .steps
            .iter()
            .filter(|s| s.verdict == Verdict::Good)
            .map(|s| 1.0 - decide::false_good(r, s.tally.clean))
            .product::<f64>();
        if out.verified == Some(false) {
            out.confidence = 0.0;
        }
        out.reliability = r;
        out.build_secs = self.steps.iter().filter_map(|s| s.build_secs).sum();
        out.run_secs = self.steps.iter().map(|s| s.run_secs).sum();
        out.wall_secs = t0.elapsed().as_secs_f64();
        out.replayed = self.replayed;
        out.steps = self.steps;
        Ok(out)
    }
}

fn short(rev: &str) -> &str {
    if rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()) {
        &rev[..12]
    } else {
        rev
    }
}

/// The result as a table, one line per step, and the conclusion.
pub fn render(o: &Outcome, dir: Direction) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<8} {:<14} {:>8} {:>5} {:>7} {:>6} {:>5} {:>7}  {:<7} {}\n",
        "phase",
        "revision",
        "build",
        "runs",
        "crashed",
        "masked",
        "infra",
        "run",
        "verdict",
        "subject"
    ));
    for st in &o.steps {
        let build = match st.build_secs {
            Some(b) => format!("{b:.0}s"),
            None => "failed".into(),
        };
        s.push_str(&format!(
            "{:<8} {:<14} {:>8} {:>5} {:>7} {:>6} {:>5} {:>6.0}s  {:<7} {}\n",
            format!("{:?}", st.phase).to_lowercase(),
            short(&st.rev),
            build,
            st.tally.total(),
            st.tally.crashed,
            st.tally.masked,
            st.tally.infra,
            st.run_secs,
            st.verdict.word(),
            st.subject
        ));
    }
    let what = match dir {
        Direction::Cause => "first bad commit",
        Direction::Fix => "first fixed commit",
    };
    match &o.culprit {
        Some(c) => {
            s.push_str(&format!("\n{what}: {} {}\n", c.id, c.subject));
            if !c.author.is_empty() {
                s.push_str(&format!("author: {}  {}\n", c.author, c.date));
            }
        }
        None => s.push_str(&format!(
            "\ninconclusive: only skipped revisions are left; the {what} is one of:\n  {}\n",
            o.candidates.join("\n  ")
        )),
    }
    s.push_str(&format!(
        "checked: {}\nconfidence: {:.3} (reproducer reliability {:.2}; each good verdict is wrong with probability (1-r)^clean)\ntime: builds {}, runs {}, wall {}{}\n",
        match o.verified {
            Some(true) => "the parent tested as before the change, the culprit as after it",
            Some(false) => "FAILED: the parent or the culprit tested otherwise on a second look; do not trust this result",
            None => "-",
        },
        o.confidence,
        o.reliability,
        fmt_secs(o.build_secs),
        fmt_secs(o.run_secs),
        fmt_secs(o.wall_secs),
        if o.replayed > 0 {
            format!(" ({} steps replayed from the journal)", o.replayed)
        } else {
            String::new()
        }
    ));
    s
}

fn fmt_secs(s: f64) -> String {
    humantime::format_duration(Duration::from_secs(s.round() as u64)).to_string()
}
