//! What a revision's runs mean, and how many runs it takes to trust that.
//!
//! A run either crashed with the bug (its title or an alternative title), was *masked* (a
//! different crash ended it before the bug could show), ran clean, or said nothing (the
//! infrastructure failed). With a reproducer that crashes a run with probability `r`, a
//! revision that has the bug still looks clean `n` times in a row with probability
//! `(1 - r)^n`; the runs per revision are chosen so that this *false good* stays below the
//! asked-for bound (`alpha`, default 5%), and every good verdict multiplies the bisection's
//! confidence by `1 - (1 - r)^clean`, as syzkaller's `pkg/bisect` does.

use serde::{Deserialize, Serialize};

/// One run of the reproducer on one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Run {
    /// The bug's report appeared.
    Crashed,
    /// Another report ended the run first (its title).
    Masked(String),
    /// No report.
    Clean,
    /// The run says nothing: the guest did not boot, QEMU died without a report.
    Infra(String),
}

/// A revision's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The bug is present.
    Bad,
    /// The bug is absent (as far as the runs can tell).
    Good,
    /// Cannot tell: the build failed, the infrastructure failed, or other crashes masked it.
    Skip(String),
}

impl Verdict {
    /// `bad`, `good`, `skip`.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Bad => "bad",
            Verdict::Good => "good",
            Verdict::Skip(_) => "skip",
        }
    }
}

/// Counts of a revision's runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Runs that crashed with the bug.
    pub crashed: u32,
    /// Runs another crash ended first.
    pub masked: u32,
    /// Clean runs.
    pub clean: u32,
    /// Runs the infrastructure spoiled.
    pub infra: u32,
}

impl Tally {
    /// Counts `runs`.
    pub fn of(runs: &[Run]) -> Tally {
        let mut t = Tally::default();
        for r in runs {
            match r {
                Run::Crashed => t.crashed += 1,
                Run::Masked(_) => t.masked += 1,
                Run::Clean => t.clean += 1,
                Run::Infra(_) => t.infra += 1,
            }
        }
        t
    }

    /// Runs that tested the bug (crashed or clean).
    pub fn informative(&self) -> u32 {
        self.crashed + self.clean
    }

    /// All runs.
    pub fn total(&self) -> u32 {
        self.crashed + self.masked + self.clean + self.infra
    }
}

/// The most runs one revision gets.
pub const MAX_RUNS: u32 = 30;

/// Runs needed so that a revision with the bug looks clean every time with probability at
/// most `alpha`, for a reproducer of reliability `r`: `ceil(ln alpha / ln(1 - r))`, at least
/// 2, at most [`MAX_RUNS`].
pub fn runs_needed(r: f64, alpha: f64) -> u32 {
    if r >= 1.0 {
        return 2;
    }
    if r <= 0.0 {
        return MAX_RUNS;
    }
    let n = (alpha.ln() / (1.0 - r).ln()).ceil();
    (n as u32).clamp(2, MAX_RUNS)
}

/// Probability that `clean` clean runs of a revision with the bug happen (a false good).
pub fn false_good(r: f64, clean: u32) -> f64 {
    (1.0 - r).max(0.0).powi(clean as i32)
}

/// The verdict of `t` when `needed` clean runs make a good verdict. A single run with the
/// bug's exact title is proof of the bug (titles are matched exactly, title or alternative
/// title, so another bug cannot pass for it); good needs `needed` clean runs and no crash;
/// runs masked by other crashes or spoiled by the infrastructure test nothing.
pub fn decide(t: &Tally, needed: u32, masked_by: Option<&str>) -> Verdict {
    if t.crashed > 0 {
        return Verdict::Bad;
    }
    if t.clean >= needed {
        return Verdict::Good;
    }
    if t.masked > 0 && t.masked >= t.infra {
        return Verdict::Skip(format!(
            "masked: {} of {} runs ended in another crash first ({})",
            t.masked,
            t.total(),
            masked_by.unwrap_or("?")
        ));
    }
    if t.infra > 0 {
        return Verdict::Skip(format!(
            "infrastructure: {} of {} runs failed",
            t.infra,
            t.total()
        ));
    }
    Verdict::Skip(format!("only {} of {needed} clean runs", t.clean))
}

/// Infrastructure failures in a row, with nothing else, after which a revision is given up
/// (a kernel that does not boot fails every run; each try costs a boot timeout).
pub const MAX_INFRA_ONLY: u32 = 5;

/// More runs to do on a revision whose runs so far are `t`: none once it is decided or only
/// infrastructure failures came back [`MAX_INFRA_ONLY`] times, else enough to reach
/// `needed` clean runs, up to [`MAX_RUNS`] in all.
pub fn more_runs(t: &Tally, needed: u32) -> u32 {
    if t.crashed > 0 || t.clean >= needed || t.total() >= MAX_RUNS {
        return 0;
    }
    if t.infra >= MAX_INFRA_ONLY && t.total() == t.infra {
        return 0;
    }
    (needed - t.clean).min(MAX_RUNS - t.total())
}

/// A cautious reliability from `crashed` of `runs` runs: the lower end of the Wilson score
/// interval at 80% (one-sided, z = 1.2816). Ten crashes in ten runs give 0.86 (2 runs per
/// revision), five in ten 0.31 (9 runs): a lucky measurement never buys fewer runs than the
/// reproducer deserves.
pub fn reliability_bound(crashed: u32, runs: u32) -> f64 {
    if runs == 0 {
        return 0.0;
    }
    let z = 1.2816_f64;
    let n = runs as f64;
    let p = crashed as f64 / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half) / (1.0 + z2 / n)).clamp(0.0, 1.0)
}

/// The reliability after another bad revision: the bound over every bad revision's runs so
/// far (`crashed` of `runs`), never above the previous estimate (as syzkaller's
/// `reproChance`, it only goes down).
pub fn update_reliability(r: f64, crashed: u32, runs: u32) -> f64 {
    r.min(reliability_bound(crashed, runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_follow_reliability() {
        assert_eq!(runs_needed(1.0, 0.05), 2);
        assert_eq!(runs_needed(0.9, 0.05), 2);
        assert_eq!(runs_needed(0.5, 0.05), 5); // 0.5^5 = 3.1%
        assert_eq!(runs_needed(0.3, 0.05), 9); // 0.7^9 = 4.0%
        assert_eq!(runs_needed(0.2, 0.05), 14);
        assert_eq!(runs_needed(0.05, 0.05), MAX_RUNS);
        for r in [0.2, 0.3, 0.5, 0.7] {
            assert!(false_good(r, runs_needed(r, 0.05)) <= 0.05);
        }
    }

    #[test]
    fn verdicts() {
        let t = |c, m, k, i| Tally {
            crashed: c,
            masked: m,
            clean: k,
            infra: i,
        };
        assert_eq!(decide(&t(1, 0, 4, 0), 5, None), Verdict::Bad);
        assert_eq!(decide(&t(0, 0, 5, 1), 5, None), Verdict::Good);
        assert_eq!(
            decide(&t(0, 2, 3, 0), 5, Some("WARNING in x")).word(),
            "skip"
        );
        assert!(matches!(decide(&t(0, 2, 3, 0), 5, Some("WARNING in x")),
            Verdict::Skip(w) if w.contains("WARNING in x")));
        assert!(
            matches!(decide(&t(0, 0, 1, 4), 5, None), Verdict::Skip(w) if w.contains("infrastructure"))
        );
        assert_eq!(more_runs(&t(0, 1, 3, 0), 5), 2);
        assert_eq!(more_runs(&t(1, 0, 0, 0), 5), 0);
        assert_eq!(more_runs(&t(0, 28, 0, 0), 5), 2);
        // A kernel that never boots is given up, not retried 30 times.
        assert_eq!(more_runs(&t(0, 0, 0, 5), 5), 0);
        assert_eq!(more_runs(&t(0, 0, 1, 5), 5), 4);
    }

    #[test]
    fn reliability_is_a_cautious_bound() {
        assert!((reliability_bound(10, 10) - 0.859).abs() < 0.01);
        assert!((reliability_bound(5, 10) - 0.31).abs() < 0.01);
        assert_eq!(runs_needed(reliability_bound(10, 10), 0.05), 2);
        assert_eq!(runs_needed(reliability_bound(5, 10), 0.05), 9);
        assert_eq!(update_reliability(0.5, 40, 40), 0.5);
        assert!(update_reliability(0.5, 1, 4) < 0.2);
    }
}
