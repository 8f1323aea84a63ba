//! The bisection logic against a real git history (a toy repository), a fake builder and a
//! fake, flaky oracle: no kernel, no VM. The "kernel" of a commit is what its files say: a
//! file `bug` means the bug is there, `broken` that the build fails, `masker` that another
//! crash often ends the run first.

use hotfuzz::bisect::decide::Run;
use hotfuzz::bisect::engine::{Bisection, Builder, Built, Direction, Oracle, Outcome, Settings};
use hotfuzz::bisect::space::{GitSpace, ListSpace, Space};
use hotfuzz::build::git::Git;
use rand::{Rng, SeedableRng};
use std::path::Path;

const N: usize = 40;
const BUG_AT: usize = 23;

/// A history of N commits; commit `BUG_AT` plants the bug; `broken`/`masker` files on the
/// listed commits only.
fn history(dir: &Path, broken: &[usize], masker: &[usize], fixed_at: Option<usize>) -> Vec<String> {
    let g = Git::new(dir);
    g.run(&["init", "--quiet"]).unwrap();
    let mut ids = Vec::new();
    for i in 0..N {
        std::fs::write(dir.join("counter"), i.to_string()).unwrap();
        let buggy = i >= BUG_AT && fixed_at.is_none_or(|f| i < f);
        for (name, on) in [
            ("bug", buggy),
            ("broken", broken.contains(&i)),
            ("masker", masker.contains(&i)),
        ] {
            let p = dir.join(name);
            if on {
                std::fs::write(&p, "1").unwrap();
            } else if p.exists() {
                std::fs::remove_file(&p).unwrap();
            }
        }
        g.run(&["add", "-A"]).unwrap();
        g.run(&[
            "-c",
            "user.name=Dev Eloper",
            "-c",
            "user.email=dev@example.invalid",
            "commit",
            "--quiet",
            "-m",
            &format!("change {i}"),
        ])
        .unwrap();
        ids.push(g.resolve("HEAD").unwrap());
    }
    ids
}

struct FakeBuilder {
    git: Git,
    builds: usize,
}

impl Builder for FakeBuilder {
    fn build(&mut self, rev: &str) -> anyhow::Result<Built> {
        self.builds += 1;
        let has = |f: &str| {
            self.git
                .output(&["cat-file", "-e", &format!("{rev}:{f}")])
                .unwrap()
                .status
                .success()
        };
        if has("broken") {
            anyhow::bail!("mm/memory_hotplug.c:12:1: error: expected ';'");
        }
        Ok(Built {
            id: format!("bug={} masker={}", has("bug"), has("masker")),
            build_secs: 1.0,
        })
    }
}

struct FlakyOracle {
    rng: rand_chacha::ChaCha8Rng,
    reliability: f64,
    runs: u32,
    panic_after: Option<u32>,
    infra_rate: f64,
}

impl FlakyOracle {
    fn new(seed: u64, reliability: f64) -> FlakyOracle {
        FlakyOracle {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            reliability,
            runs: 0,
            panic_after: None,
            infra_rate: 0.0,
        }
    }
}

impl Oracle for FlakyOracle {
    fn run(&mut self, k: &Built, n: u32) -> Vec<Run> {
        (0..n)
            .map(|_| {
                self.runs += 1;
                if self.panic_after.is_some_and(|p| self.runs > p) {
                    panic!("killed");
                }
                if self.rng.gen_bool(self.infra_rate) {
                    return Run::Infra("QEMU exited".into());
                }
                if k.id.contains("masker=true") && self.rng.gen_bool(0.9) {
                    return Run::Masked("BUG: unable to handle page fault in other".into());
                }
                if k.id.contains("bug=true") && self.rng.gen_bool(self.reliability) {
                    Run::Crashed
                } else {
                    Run::Clean
                }
            })
            .collect()
    }
}

fn settings(dir: Direction, old: &str, new: &str) -> Settings {
    Settings {
        direction: dir,
        old: old.into(),
        new: new.into(),
        alpha: 0.05,
        initial_runs: 10,
        titles: vec!["WARNING in offline_pages".into()],
    }
}

fn bisect(
    repo: &Path,
    wt: &Path,
    s: Settings,
    oracle: &mut FlakyOracle,
    journal: Option<&Path>,
) -> anyhow::Result<(Outcome, usize)> {
    let g = Git::new(repo);
    let wtg = g.empty_worktree_at(wt).unwrap();
    let mut space = GitSpace::new(wtg);
    let mut b = FakeBuilder { git: g, builds: 0 };
    let out = Bisection::new(
        &mut space,
        &mut b,
        oracle,
        s,
        journal.map(Path::to_path_buf),
    )?
    .run()?;
    Ok((out, b.builds))
}

#[test]
fn finds_the_culprit_of_a_flaky_bug_and_says_how_sure_it_is() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let ids = history(&repo, &[], &[], None);
    let mut right = 0;
    let mut right_unverified = 0;
    let mut wrong_but_flagged = 0;
    let mut rels = Vec::new();
    for seed in 0..20 {
        let mut o = FlakyOracle::new(seed, 0.5);
        let wt = d.path().join(format!("wt{seed}"));
        let (out, _) = bisect(
            &repo,
            &wt,
            settings(Direction::Cause, &ids[0], &ids[N - 1]),
            &mut o,
            None,
        )
        .unwrap();
        let c = out.culprit.clone().expect("a culprit");
        if c.id == ids[BUG_AT] && out.verified == Some(true) {
            right += 1;
            assert_eq!(c.subject, format!("change {BUG_AT}"));
            assert_eq!(c.author, "Dev Eloper <dev@example.invalid>");
            assert!(
                out.confidence > 0.3 && out.confidence <= 1.0,
                "{}",
                out.confidence
            );
        } else if c.id == ids[BUG_AT] {
            // The culprit's second look came out clean (a false good, p <= alpha): flagged.
            right_unverified += 1;
            assert_eq!(out.confidence, 0.0);
        } else if out.verified == Some(false) || out.confidence < 0.9 {
            wrong_but_flagged += 1;
        } else {
            panic!(
                "seed {seed}: wrong culprit {} with confidence {} unflagged",
                c.id, out.confidence
            );
        }
        rels.push(out.reliability);
        let table = hotfuzz::bisect::engine::render(&out, Direction::Cause);
        assert!(table.contains("first bad commit"), "{table}");
    }
    assert!(
        right >= 16,
        "right {right} of 20 (right but unverified: {right_unverified}, flagged wrong: {wrong_but_flagged})"
    );
    // The estimate is cautious: below the true 0.5 on average, never near 0 or 1.
    let mean = rels.iter().sum::<f64>() / rels.len() as f64;
    assert!(
        mean > 0.2 && mean < 0.5,
        "mean reliability {mean}: {rels:?}"
    );
    assert!(rels.iter().all(|&r| r > 0.05 && r < 0.8), "{rels:?}");
}

#[test]
fn a_reliable_bug_needs_few_runs_and_log2_steps() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let ids = history(&repo, &[], &[], None);
    let mut o = FlakyOracle::new(1, 1.0);
    let (out, builds) = bisect(
        &repo,
        &d.path().join("wt"),
        settings(Direction::Cause, &ids[0], &ids[N - 1]),
        &mut o,
        None,
    )
    .unwrap();
    assert_eq!(out.culprit.unwrap().id, ids[BUG_AT]);
    // Ten crashes in ten runs give a cautious reliability of 0.86, so each good verdict
    // (2 clean runs) is wrong with probability 0.14^2 = 2%; the product over the goods.
    assert!(
        (out.reliability - 0.859).abs() < 0.01,
        "{}",
        out.reliability
    );
    let goods = out
        .steps
        .iter()
        .filter(|s| s.verdict.word() == "good")
        .count() as i32;
    let expect = (1.0 - (1.0 - out.reliability).powi(2)).powi(goods);
    assert!(
        (out.confidence - expect).abs() < 1e-9,
        "{} vs {expect}",
        out.confidence
    );
    assert!(out.confidence > 0.85, "{}", out.confidence);
    // 2 endpoints + ceil(log2(39)) = 6 bisect steps + 2 checks.
    assert!(builds <= 10, "{builds}");
    // Reliability 1 needs 2 clean runs per good revision; the measuring endpoint had 10.
    assert!(o.runs <= 10 + 9 * 2, "{}", o.runs);
}

#[test]
fn build_failures_are_skipped() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    // Commits around the middle fail to build; one is the first one git would test.
    let ids = history(&repo, &[19, 20, 21], &[], None);
    let mut o = FlakyOracle::new(3, 0.8);
    let (out, _) = bisect(
        &repo,
        &d.path().join("wt"),
        settings(Direction::Cause, &ids[0], &ids[N - 1]),
        &mut o,
        None,
    )
    .unwrap();
    assert_eq!(out.culprit.as_ref().unwrap().id, ids[BUG_AT]);
    let skipped: Vec<_> = out
        .steps
        .iter()
        .filter(|s| s.build_error.is_some())
        .collect();
    assert!(!skipped.is_empty());
    assert!(skipped[0]
        .build_error
        .as_deref()
        .unwrap()
        .contains("error: expected"));
    assert_eq!(skipped[0].verdict.word(), "skip");

    // The culprit's parent does not build: the answer is a set of candidates, not a guess.
    let d2 = tempfile::tempdir().unwrap();
    let repo2 = d2.path().join("repo");
    std::fs::create_dir(&repo2).unwrap();
    let ids2 = history(&repo2, &[BUG_AT - 1], &[], None);
    let mut o = FlakyOracle::new(3, 0.8);
    let (out, _) = bisect(
        &repo2,
        &d2.path().join("wt"),
        settings(Direction::Cause, &ids2[0], &ids2[N - 1]),
        &mut o,
        None,
    )
    .unwrap();
    // Parent unbuildable: the change is in the parent or the culprit, and the result says
    // exactly that instead of guessing.
    assert!(out.culprit.is_none());
    let mut c = out.candidates.clone();
    c.sort();
    let mut want = vec![ids2[BUG_AT - 1].clone(), ids2[BUG_AT].clone()];
    want.sort();
    assert_eq!(c, want);
}

#[test]
fn a_masking_crash_is_a_skip_not_a_good() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    // Another crash hides the bug on commits 25..=30 (after the culprit): were they counted
    // good, the bisection would blame commit 31.
    let ids = history(&repo, &[], &(25..=30).collect::<Vec<_>>(), None);
    let mut o = FlakyOracle::new(5, 0.7);
    let (out, _) = bisect(
        &repo,
        &d.path().join("wt"),
        settings(Direction::Cause, &ids[0], &ids[N - 1]),
        &mut o,
        None,
    )
    .unwrap();
    assert_eq!(out.culprit.as_ref().unwrap().id, ids[BUG_AT]);
    let masked: Vec<_> = out.steps.iter().filter(|s| s.tally.masked > 0).collect();
    for s in &masked {
        assert_ne!(s.verdict.word(), "good", "{s:?}");
    }
}

#[test]
fn infrastructure_failures_are_retried_not_counted() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let ids = history(&repo, &[], &[], None);
    let mut o = FlakyOracle::new(9, 0.6);
    o.infra_rate = 0.2;
    let (out, _) = bisect(
        &repo,
        &d.path().join("wt"),
        settings(Direction::Cause, &ids[0], &ids[N - 1]),
        &mut o,
        None,
    )
    .unwrap();
    assert_eq!(out.culprit.unwrap().id, ids[BUG_AT]);
    for s in out.steps.iter().filter(|s| s.verdict.word() == "good") {
        assert!(
            s.tally.clean
                >= hotfuzz::bisect::decide::runs_needed(out.reliability.max(0.3), 0.05).min(2)
        );
    }
}

#[test]
fn fix_bisection() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let ids = history(&repo, &[], &[], Some(31));
    let mut o = FlakyOracle::new(2, 0.6);
    // Old side: the bug is there (commit 25); new side: fixed (the tip).
    let (out, _) = bisect(
        &repo,
        &d.path().join("wt"),
        settings(Direction::Fix, &ids[25], &ids[N - 1]),
        &mut o,
        None,
    )
    .unwrap();
    assert_eq!(out.culprit.unwrap().id, ids[31]);
    assert_eq!(out.verified, Some(true));
}

#[test]
fn endpoints_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let ids = history(&repo, &[], &[], None);
    let mut o = FlakyOracle::new(1, 0.9);
    let e = bisect(
        &repo,
        &d.path().join("wt"),
        settings(Direction::Cause, &ids[BUG_AT + 2], &ids[N - 1]),
        &mut o,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("reproduces at") && e.contains("too"), "{e}");
    let e = bisect(
        &repo,
        &d.path().join("wt2"),
        settings(Direction::Cause, &ids[0], &ids[BUG_AT - 2]),
        &mut o,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not reproduce at"), "{e}");
}

#[test]
fn a_killed_bisection_resumes_where_it_stopped() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let ids = history(&repo, &[], &[], None);
    let journal = d.path().join("bisect.json");
    let s = settings(Direction::Cause, &ids[0], &ids[N - 1]);
    // The full bisection, for comparison.
    let mut full = FlakyOracle::new(4, 0.7);
    let (whole, _) = bisect(&repo, &d.path().join("wt0"), s.clone(), &mut full, None).unwrap();
    // The same, killed after 30 runs (a panic stands for SIGKILL: nothing after it runs).
    let mut o = FlakyOracle::new(4, 0.7);
    o.panic_after = Some(30);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = bisect(
            &repo,
            &d.path().join("wt"),
            s.clone(),
            &mut o,
            Some(&journal),
        );
    }));
    assert!(r.is_err());
    let saved: hotfuzz::bisect::engine::Journal =
        serde_json::from_str(&std::fs::read_to_string(&journal).unwrap()).unwrap();
    assert!(!saved.steps.is_empty());
    // Restart: the recorded steps are replayed, the rest run.
    let mut o2 = FlakyOracle::new(4, 0.7);
    let (out, _) = bisect(
        &repo,
        &d.path().join("wt"),
        s.clone(),
        &mut o2,
        Some(&journal),
    )
    .unwrap();
    assert_eq!(out.replayed, saved.steps.len());
    assert_eq!(out.culprit.unwrap().id, ids[BUG_AT]);
    assert!(
        o2.runs < full.runs,
        "resumed {} runs vs {} in all",
        o2.runs,
        full.runs
    );
    assert_eq!(out.steps.len(), whole.steps.len());
    // Another bisection in the same journal is refused.
    let mut other = s.clone();
    other.old = ids[1].clone();
    let e = bisect(&repo, &d.path().join("wt"), other, &mut o2, Some(&journal))
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds another bisection"), "{e}");
}

#[test]
fn packages_bisect_over_a_list() {
    struct PkgBuilder;
    impl Builder for PkgBuilder {
        fn build(&mut self, rev: &str) -> anyhow::Result<Built> {
            let n: u32 = rev.trim_start_matches("linux-image-6.12.").parse().unwrap();
            Ok(Built {
                id: format!("bug={} masker=false", n >= 113),
                build_secs: 0.0,
            })
        }
    }
    let items: Vec<String> = [107, 109, 111, 113, 115, 117]
        .iter()
        .map(|n| format!("linux-image-6.12.{n}"))
        .collect();
    let mut space = ListSpace::new(items.clone());
    assert_eq!(space.resolve(&items[0]).unwrap(), items[0]);
    let mut o = FlakyOracle::new(7, 0.6);
    let out = Bisection::new(
        &mut space,
        &mut PkgBuilder,
        &mut o,
        settings(Direction::Cause, &items[0], &items[5]),
        None,
    )
    .unwrap()
    .run()
    .unwrap();
    assert_eq!(out.culprit.unwrap().id, "linux-image-6.12.113");
    assert_eq!(out.verified, Some(true));
}
