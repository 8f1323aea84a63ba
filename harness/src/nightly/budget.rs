//! The night's wall-clock budget, split across the stages as they come: the regression suite
//! gets at most its share, fuzzing gets what is left minus the time kept for reproducing and
//! for writing the results, reproduction gets the rest, and each bug's reproduction is sized
//! (its minimization runs) from what one guest run costs on this machine.

use std::time::{Duration, Instant};

/// The budget of a night (or of the rest of a resumed one).
#[derive(Debug, Clone)]
pub struct Budget {
    start: Instant,
    total: Duration,
    spent_before: Duration,
    reserve: Duration,
}

fn share(total: Duration, s: f64) -> Duration {
    Duration::from_secs_f64(total.as_secs_f64() * s.clamp(0.0, 1.0))
}

impl Budget {
    /// A budget of `total`, of which `spent_before` went to earlier sessions of the night;
    /// `reserve` is kept for writing the results.
    pub fn new(total: Duration, spent_before: Duration, reserve: Duration) -> Budget {
        Budget {
            start: Instant::now(),
            total,
            spent_before,
            reserve,
        }
    }

    /// The whole budget.
    pub fn total(&self) -> Duration {
        self.total
    }

    /// Spent so far, over every session.
    pub fn spent(&self) -> Duration {
        self.spent_before + self.start.elapsed()
    }

    /// Left before the results must be written.
    pub fn left(&self) -> Duration {
        self.total
            .saturating_sub(self.spent())
            .saturating_sub(self.reserve)
    }

    /// The regression suite's time: its share, at most what is left.
    pub fn regression(&self, max_share: f64) -> Duration {
        share(self.total, max_share).min(self.left())
    }

    /// Fuzzing's time: what is left, minus the reproduction's share when it will run.
    pub fn fuzz(&self, repro_share: Option<f64>) -> Duration {
        self.left().saturating_sub(
            repro_share
                .map(|s| share(self.total, s))
                .unwrap_or_default(),
        )
    }
}

/// A reproduction's guest runs besides its minimization runs, for `runs` runs per
/// measurement: replaying the history (the last program alone, then with the ones before it),
/// measuring before and after. Measured: 6 for `runs: 1` (10 runs with 4 minimization runs).
pub fn repro_overhead(runs: u32) -> u32 {
    4 * runs + 2
}

/// How much longer a reproduction's run is than a regression entry's: a history of fuzzed
/// programs runs longer than a minimized reproducer (measured under TCG: 9.6 s against 3.7 s).
pub const REPRO_RUN_FACTOR: f64 = 2.5;

/// How many minimization runs a reproduction may use in `time` when one of its guest runs
/// costs `cost`. `None`: not even the replay and the measurements fit.
pub fn repro_runs(time: Duration, cost: Duration, runs: u32, max_runs: u32) -> Option<u32> {
    let cost = cost.as_secs_f64().max(0.1);
    let fit = (time.as_secs_f64() / cost).floor() as u64;
    let overhead = u64::from(repro_overhead(runs));
    if fit <= overhead {
        return None;
    }
    Some((fit - overhead).min(u64::from(max_runs)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_split_as_the_stages_come() {
        let h = Duration::from_secs(3600);
        let b = Budget::new(8 * h, Duration::ZERO, Duration::from_secs(60));
        assert!(b.left() <= 8 * h - Duration::from_secs(60));
        assert_eq!(b.regression(0.15).as_secs(), 4320);
        // Fuzzing leaves the reproduction its share.
        let f = b.fuzz(Some(0.2)).as_secs();
        assert!(
            (8 * 3600 - 60 - 5760 - 2..=8 * 3600 - 60 - 5760).contains(&f),
            "{f}"
        );
        assert!(b.fuzz(None) > b.fuzz(Some(0.2)));
        // A resumed night has only what the first session left.
        let r = Budget::new(h, Duration::from_secs(3000), Duration::from_secs(60));
        assert!(r.left().as_secs() <= 540);
        assert_eq!(r.regression(0.5).as_secs(), r.left().as_secs());
        let over = Budget::new(h, 2 * h, Duration::ZERO);
        assert_eq!(over.left(), Duration::ZERO);
        assert_eq!(over.fuzz(Some(0.2)), Duration::ZERO);
    }

    #[test]
    fn reproduction_runs_fit_the_time() {
        let s = Duration::from_secs;
        assert_eq!(repro_runs(s(600), s(10), 3, 40), Some(40));
        assert_eq!(repro_runs(s(200), s(10), 3, 40), Some(6));
        assert_eq!(repro_runs(s(150), s(10), 3, 40), Some(1));
        assert_eq!(repro_runs(s(140), s(10), 3, 40), None);
        assert_eq!(repro_runs(s(90), s(10), 1, 3), Some(3));
    }
}
