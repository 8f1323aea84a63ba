//! The minimization logic against fake oracles, without guests: a deterministic bug is cut down
//! to exactly its trigger within the run budget; a flaky bug never leads to a program that no
//! longer reproduces; infrastructure failures are not runs; several guests test candidates at
//! once; a race too rare to minimize is amplified first, and a race whose walker stopped
//! before the unplug it raced is given the whole unplug.

use hotfuzz::program::desc::Descriptions;
use hotfuzz::program::gen::Generator;
use hotfuzz::program::prog::Rep;
use hotfuzz::program::prog::{Arg, Program};
use hotfuzz::program::state::GuestState;
use hotfuzz::repro::minimize::{
    again, amplify, merge, ops, outlast, remove_ops, renumber, runs_per_candidate, Candidate,
    Evidence, Minimizer, Options, Oracle, RunOutcome,
};
use hotfuzz::repro::plant::interleave;
use hotfuzz::repro::plant::orphans;
use hotfuzz_vm::{Arch, MachineConfig};
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

/// The planted bug: online/offline of one found block twice, marked by unusual values so the
/// fake kernel can recognise its operations in any program.
const TRIGGER: &str = "\
virtio_mem_resize(dev=0x0, size=0x10000000)
r0 = memblock_find(which=\"movable\", nth=0x0)
memblock_state(block=r0, state=\"offline\")
memblock_state(block=r0, state=\"online_movable\")
memblock_state(block=r0, state=\"offline\")
memblock_state(block=r0, state=\"online_movable\")
";

/// The fake kernel: the bug fires at the second `online_movable` of a movable block after a
/// resize of device 0 to 256M and an offline before each online, in that order. Blocks are
/// whatever `memblock_find(movable)` returned; state survives from one program to the next.
fn fires(c: &Candidate) -> Option<usize> {
    let mut resized = false;
    let (mut off, mut on) = (0, 0);
    let mut i = 0;
    for p in c {
        let mut found = BTreeSet::new();
        for op in &p.ops {
            match op.name.as_str() {
                "virtio_mem_resize" if op.args[1] == Arg::Int(0x1000_0000) => resized = true,
                "memblock_find" if resized && op.args[0] == Arg::Str("movable".into()) => {
                    found.extend(op.ret)
                }
                "memblock_state" if matches!(op.args[0], Arg::Ref(r) if found.contains(&r)) => {
                    match &op.args[1] {
                        Arg::Str(s) if s == "offline" && on == off => off += 1,
                        Arg::Str(s) if s == "online_movable" && off == on + 1 => {
                            on += 1;
                            if on == 2 {
                                return Some(i);
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
    None
}

fn evidence(c: &Candidate, at: usize) -> Evidence {
    Evidence {
        title: "WARNING in bugzoo_warn_reonline".into(),
        started: (0..ops(c)).map(|i| i <= at).collect(),
        ok: vec![true; ops(c)],
        crash_op: Some(at),
        ..Evidence::default()
    }
}

/// A fake set of guests: the bug reproduces with probability `p` when it fires; a share of
/// runs may fail for infrastructure reasons.
struct Fake {
    slots: usize,
    p: f64,
    infra: f64,
    rng: rand_chacha::ChaCha8Rng,
    runs: u32,
    batches: u32,
}

impl Fake {
    fn new(slots: usize, p: f64, seed: u64) -> Fake {
        Fake {
            slots,
            p,
            infra: 0.0,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            runs: 0,
            batches: 0,
        }
    }
}

impl Oracle for Fake {
    fn slots(&self) -> usize {
        self.slots
    }

    fn run(&mut self, jobs: &[Candidate]) -> Vec<RunOutcome> {
        assert!(jobs.len() <= self.slots, "more jobs than guests");
        self.batches += 1;
        jobs.iter()
            .map(|c| {
                for p in c {
                    p.validate(&Descriptions::embedded())
                        .expect("the minimizer only runs valid programs");
                }
                if self.rng.gen_bool(self.infra) {
                    return RunOutcome::Infra("QEMU killed".into());
                }
                self.runs += 1;
                match fires(c) {
                    Some(at) if self.rng.gen_bool(self.p) => {
                        RunOutcome::Crashed(Box::new(evidence(c, at)))
                    }
                    _ => RunOutcome::Clean,
                }
            })
            .collect()
    }
}

/// Generated operations that leave memory blocks and virtio-mem alone, with the trigger
/// spread among them.
fn planted(seed: u64, noise_ops: usize) -> Program {
    planted_with(seed, noise_ops, false)
}

fn planted_with(seed: u64, noise_ops: usize, hotplug_noise: bool) -> Program {
    let d = Descriptions::embedded();
    let st = GuestState::model(&MachineConfig::new(Arch::X86_64));
    let mut g = Generator::new(&d, &st, seed);
    // Plain programs: the noise must not be a race of its own.
    g.race_rate = 0.0;
    let mut noise = Program::default();
    for op in g.generate(noise_ops * 4).ops {
        if hotplug_noise || hotfuzz::repro::minimize::family(&d, &op.name) != "hotplug" {
            noise.ops.push(op);
        }
    }
    // Dropping hotplug ops may orphan references: drop their users too.
    let bad = orphans(&noise).into_iter().collect();
    let mut noise = remove_ops(&vec![noise], &bad).pop().unwrap_or_default();
    noise.ops.truncate(noise_ops);
    assert_eq!(noise.ops.len(), noise_ops);
    let trig = Program::parse(TRIGGER, &d).unwrap();
    let p = interleave(&noise, &trig);
    p.validate(&d).unwrap();
    assert!(fires(&vec![p.clone()]).is_some());
    p
}

#[test]
fn closure_merge_and_renumbering_keep_programs_valid() {
    let d = Descriptions::embedded();
    let p = Program::parse(TRIGGER, &d).unwrap();
    // Removing the producer takes its four consumers with it.
    let c = remove_ops(&vec![p.clone()], &[1].into_iter().collect());
    assert_eq!(ops(&c), 1);
    let m = merge(&vec![p.clone(), p.clone()]);
    m.validate(&d).unwrap();
    assert_eq!(m.ops.len(), 12);
    assert_eq!(m.ops[7].ret, Some(1));
    assert_eq!(m.ops[8].args[0], Arg::Ref(1));
    let mut odd = p.clone();
    for op in &mut odd.ops {
        op.ret = op.ret.map(|r| r + 7);
        op.thread = 3;
        for a in &mut op.args {
            if let Arg::Ref(r) = a {
                *r += 7;
            }
        }
    }
    assert_eq!(renumber(&odd), p);
    assert_eq!(runs_per_candidate(1.0, 0.1, 5), 1);
    assert_eq!(runs_per_candidate(0.5, 0.1, 5), 4);
    assert_eq!(runs_per_candidate(0.1, 0.1, 5), 5);
}

#[test]
fn a_deterministic_bug_is_cut_to_its_trigger_within_budget() {
    let d = Descriptions::embedded();
    for (seed, slots) in [(1u64, 1usize), (2, 1), (3, 2), (4, 2)] {
        let p = planted(seed, 44);
        assert!(p.ops.len() >= 50, "{}", p.ops.len());
        let mut o = Fake::new(slots, 1.0, seed);
        let m = Minimizer::new(&d, &mut o, Options::default()).run(std::slice::from_ref(&p));
        assert!(m.gave_up.is_none(), "{:?}\n{}", m.gave_up, m.log.join("\n"));
        assert_eq!(m.candidate.len(), 1);
        let out = &m.candidate[0];
        assert_eq!(
            out.ops.len(),
            6,
            "seed {seed}:\n{}\n{}",
            out.print(&d),
            m.log.join("\n")
        );
        assert!(fires(&m.candidate).is_some());
        assert_eq!(m.reliability.unwrap().crashes, m.reliability.unwrap().runs);
        // Three crashes out of three is clear enough (two guests run in pairs: 4/4).
        assert_eq!(m.original.crashes, m.original.runs);
        assert_eq!(m.original.runs, if slots == 1 { 3 } else { 4 });
        eprintln!(
            "seed {seed}, {slots} guest(s): {} -> {} ops in {} minimization runs",
            p.ops.len(),
            out.ops.len(),
            m.minimize_runs
        );
        // The run budget of the benchmark target: 30 guest runs for a 50-op program.
        assert!(
            m.minimize_runs <= 30,
            "seed {seed}: {} runs\n{}",
            m.minimize_runs,
            m.log.join("\n")
        );
        assert_eq!(o.runs, m.total_runs);
        // The size arguments got smaller where the bug allows: the resize must stay 256M.
        assert!(
            out.print(&d).contains("size=0x10000000"),
            "{}",
            out.print(&d)
        );
    }
}

#[test]
fn noise_from_the_same_family_goes_by_delta_debugging() {
    let d = Descriptions::embedded();
    let mut total = Vec::new();
    for seed in 20..26u64 {
        let p = planted_with(seed, 44, true);
        if fires(&vec![p.clone()]).is_none() {
            continue;
        }
        let mut o = Fake::new(1, 1.0, seed);
        let m = Minimizer::new(&d, &mut o, Options::default()).run(std::slice::from_ref(&p));
        assert!(m.gave_up.is_none(), "{:?}", m.gave_up);
        assert!(fires(&m.candidate).is_some());
        // virtio-mem waits are kept on purpose (SYNC_OPS); everything else must go.
        let kept = m.candidate[0]
            .ops
            .iter()
            .filter(|o| o.name != "virtio_mem_wait")
            .count();
        assert!(
            kept <= 7,
            "seed {seed}: {}\n{}",
            m.candidate[0].print(&d),
            m.log.join("\n")
        );
        total.push(m.minimize_runs);
    }
    assert!(!total.is_empty());
    eprintln!("minimization runs with hotplug noise: {total:?}");
    assert!(total.iter().all(|&r| r <= 60), "{total:?}");
}

#[test]
fn two_guests_need_fewer_batches() {
    let d = Descriptions::embedded();
    let p = planted(9, 44);
    let mut one = Fake::new(1, 1.0, 9);
    let a = Minimizer::new(&d, &mut one, Options::default()).run(std::slice::from_ref(&p));
    let mut two = Fake::new(2, 1.0, 9);
    let b = Minimizer::new(&d, &mut two, Options::default()).run(&[p]);
    assert_eq!(a.candidate, b.candidate);
    assert!(
        two.batches < one.batches,
        "{} vs {}",
        two.batches,
        one.batches
    );
}

#[test]
fn a_flaky_bug_never_leaves_a_program_that_does_not_reproduce() {
    let d = Descriptions::embedded();
    for seed in 0..12u64 {
        let p = planted(100 + seed, 30);
        let mut o = Fake::new(1 + (seed % 2) as usize, 0.5, seed);
        let m = Minimizer::new(&d, &mut o, Options::default()).run(std::slice::from_ref(&p));
        if let Some(why) = &m.gave_up {
            // Possible only when replay itself was unlucky; it must say so.
            assert!(why.contains("reproduced"), "{why}");
            continue;
        }
        // Every accepted step crashed at least once: the result still has the whole trigger.
        assert!(
            fires(&m.candidate).is_some(),
            "seed {seed}:\n{}\n{}",
            m.candidate[0].print(&d),
            m.log.join("\n")
        );
        assert!(ops(&m.candidate) < p.ops.len());
    }
}

#[test]
fn history_is_extended_until_the_bug_reproduces() {
    let d = Descriptions::embedded();
    let noise = Program::parse("yield()\nsleep_ms(ms=0x1)\n", &d).unwrap();
    // Half of the trigger ran in an earlier program, the other half in the last one.
    let trig = Program::parse(TRIGGER, &d).unwrap();
    let first = Program {
        ops: trig.ops[..4].to_vec(),
    };
    let last = Program::parse(
        "r0 = memblock_find(which=\"movable\", nth=0x0)\nmemblock_state(block=r0, state=\"offline\")\nmemblock_state(block=r0, state=\"online_movable\")\n",
        &d,
    )
    .unwrap();
    let hist = vec![noise.clone(), first.clone(), last.clone()];
    let mut o = Fake::new(1, 1.0, 2);
    let m = Minimizer::new(&d, &mut o, Options::default()).run(&hist);
    assert!(m.gave_up.is_none(), "{:?}\n{}", m.gave_up, m.log.join("\n"));
    assert!(
        m.log
            .iter()
            .any(|l| l.contains("last 1 program(s): reproduced 0/5")),
        "{}",
        m.log.join("\n")
    );
    assert!(m
        .log
        .iter()
        .any(|l| l.contains("last 2 program(s): reproduced 3/3")));
    assert_eq!(m.candidate.len(), 1, "merged into one program");
    // Both finds stay: each half's state changes use their own.
    assert_eq!(ops(&m.candidate), 7, "{}", m.log.join("\n"));
    assert!(fires(&m.candidate).is_some());

    // Nothing in the history reproduces: it says so, after `runs` runs of each.
    let mut o = Fake::new(1, 1.0, 3);
    let m = Minimizer::new(&d, &mut o, Options::default()).run(&[noise, last]);
    assert!(m.gave_up.unwrap().contains("none of the last 2"));
    assert_eq!(m.total_runs, 10);
}

#[test]
fn a_replay_starts_from_the_devices_the_program_found() {
    // The last program needs 256M plugged, which an earlier program did; the run log's
    // devices line for the last program says so, and the replay restores it first.
    let d = Descriptions::embedded();
    let trig = Program::parse(TRIGGER, &d).unwrap();
    let plug = Program {
        ops: trig.ops[..1].to_vec(),
    };
    let noise = Program::parse("yield()\nsleep_ms(ms=0x1)\n", &d).unwrap();
    let last = Program {
        ops: trig.ops[1..].to_vec(),
    };
    let hist = vec![plug, noise, last];
    let line = "# devices at start: dev 0x0 plugged 0x10000000 requested 0x10000000";
    let devs = hotfuzz::run::runlog::devices_at_start(line);
    let start = hotfuzz::repro::source::restore_devices(&devs, &d).expect("a plug to restore");
    let mut o = Fake::new(1, 1.0, 4);
    let m = Minimizer::new(&d, &mut o, Options::default())
        .with_starts(vec![None, None, Some(start)])
        .run(&hist);
    assert!(m.gave_up.is_none(), "{:?}\n{}", m.gave_up, m.log.join("\n"));
    assert!(
        m.log.iter().any(|l| l
            .contains("last 1 program(s) from the devices' sizes it started with: reproduced 3/3")),
        "{}",
        m.log.join("\n")
    );
    // The restored plug is part of the reproducer (with its wait: waits are never
    // removed); the noise is not.
    assert_eq!(m.candidate.len(), 1);
    assert_eq!(ops(&m.candidate), 7, "{}", m.log.join("\n"));
    assert!(fires(&m.candidate).is_some());
    // Without the devices line the last program alone does not reproduce.
    let mut o = Fake::new(1, 1.0, 4);
    let m = Minimizer::new(&d, &mut o, Options::default()).run(&hist);
    assert!(m
        .log
        .iter()
        .any(|l| l.contains("last 1 program(s): reproduced 0/5")));
}

#[test]
fn infrastructure_failures_are_not_runs_and_too_many_give_up() {
    let d = Descriptions::embedded();
    let p = planted(5, 20);
    let mut o = Fake::new(1, 1.0, 5);
    o.infra = 0.2;
    let m = Minimizer::new(&d, &mut o, Options::default()).run(std::slice::from_ref(&p));
    assert_eq!(
        o.runs, m.total_runs,
        "infrastructure failures are not counted"
    );
    if m.gave_up.is_none() {
        assert!(fires(&m.candidate).is_some());
    }
    let mut broken = Fake::new(1, 1.0, 5);
    broken.infra = 1.0;
    let m = Minimizer::new(&d, &mut broken, Options::default()).run(&[p]);
    assert_eq!(m.total_runs, 0);
    assert!(m.gave_up.unwrap().contains("outside the kernel"));
}

/// A race in the fake kernel: while a kpageflags walker loops on another thread, every run of
/// an offline of a found block opens the window, and a run hits it with chance `q` per
/// iteration, as real races between PFN walkers and offlining behave.
struct Racy {
    q: f64,
    rng: rand_chacha::ChaCha8Rng,
}

/// Offline iterations racing a looping walker, and the first such offline's index.
fn race_iterations(c: &Candidate) -> (u32, Option<usize>) {
    let (mut n, mut at, mut base) = (0, None, 0);
    for p in c {
        let walker = p
            .ops
            .iter()
            .any(|o| o.rep == Rep::Loop && o.name == "kpageflags_read");
        for (i, o) in p.ops.iter().enumerate() {
            let offline = o.name == "memblock_state"
                && matches!(o.args[0], Arg::Ref(_))
                && o.args[1] == Arg::Str("offline".into());
            if walker && offline {
                n += match o.rep {
                    Rep::Block { times, .. } => times,
                    _ => 1,
                };
                at.get_or_insert(base + i);
            }
        }
        base += p.ops.len();
    }
    (n, at)
}

impl Oracle for Racy {
    fn slots(&self) -> usize {
        1
    }

    fn run(&mut self, jobs: &[Candidate]) -> Vec<RunOutcome> {
        jobs.iter()
            .map(|c| {
                let (n, at) = race_iterations(c);
                let p = 1.0 - (1.0 - self.q).powi(n as i32);
                match at {
                    Some(at) if self.rng.gen_bool(p) => {
                        RunOutcome::Crashed(Box::new(evidence(c, at)))
                    }
                    _ => RunOutcome::Clean,
                }
            })
            .collect()
    }
}

const RACE: &str = "\
virtio_mem_resize(dev=0x0, size=0x10000000)
virtio_mem_wait(dev=0x0, ms=0x1388)
r0 = memblock_find(which=\"movable\", nth=0x0)
r1 = pfn_in_block(block=r0, page=0x0) (thread: 1)
kpageflags_read(pfn=r1, count=0x1000) (thread: 1, loop)
yield()
sleep_ms(ms=0x1)
repeat 4 {
  memblock_state(block=r0, state=\"offline\")
  memblock_state(block=r0, state=\"online_movable\")
}
yield()
";

#[test]
fn amplifying_repeats_blocks_more_up_to_the_limit() {
    let d = Descriptions::embedded();
    let p = Program::parse(RACE, &d).unwrap();
    let a = amplify(&vec![p.clone()]).unwrap();
    assert_eq!(race_iterations(&a).0, 16);
    assert_eq!(ops(&a), ops(&vec![p]));
    a[0].validate(&d).unwrap();
    let mut c = a;
    for _ in 0..2 {
        c = amplify(&c).unwrap();
    }
    assert_eq!(
        race_iterations(&c).0,
        256,
        "capped at the text format's limit"
    );
    assert!(amplify(&c).is_none());
    let plain = Program::parse("yield()\nsleep_ms(ms=0x1)\n", &d).unwrap();
    assert!(amplify(&vec![plain]).is_none());
}

#[test]
fn a_race_too_rare_to_minimize_is_amplified_first() {
    // 4 racing iterations at 5 % each: the replay reproduces about one run in five, which
    // single-run minimization steps cannot judge. Amplified to 16 iterations it reproduces
    // more than half the time, and minimization goes on from there.
    let d = Descriptions::embedded();
    let p = Program::parse(RACE, &d).unwrap();
    let mut minimized = 0;
    for seed in 0..8u64 {
        let mut o = Racy {
            q: 0.05,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        };
        let m = Minimizer::new(&d, &mut o, Options::default()).run(std::slice::from_ref(&p));
        let log = m.log.join("\n");
        assert!(
            log.contains("blocks repeated 4x as often"),
            "seed {seed}:\n{log}"
        );
        // The "before" is the replay's, not the amplified program's.
        assert!(
            m.original.rate() < 0.5,
            "seed {seed}: {}\n{log}",
            m.original
        );
        if m.gave_up.is_some() {
            continue;
        }
        minimized += 1;
        let (n, at) = race_iterations(&m.candidate);
        assert!(at.is_some() && n >= 4, "seed {seed}: {n}\n{log}");
        assert!(ops(&m.candidate) < p.ops.len(), "seed {seed}:\n{log}");
        // The repetitions that made it reproducible stay, and so does its reliability.
        assert!(n >= 16, "seed {seed}: {n}\n{log}");
        let r = m.reliability.unwrap();
        assert!(r.crashes >= 1, "seed {seed}: {r}\n{log}");
    }
    assert!(minimized >= 6, "{minimized} of 8 seeds minimized");
}

/// The shape of a campaign's fake-offline race (BENCHMARKS.md, 2026-12-03): a walker loops on
/// thread 1 while thread 0 plugs, shrinks the device and does a few quick things after.
const SHRINK_RACE: &str = "\
virtio_mem_resize(dev=0x0, size=0x10400000)
virtio_mem_wait(dev=0x0, ms=0x1c)
r0 = memblock_find(which=\"partial\", nth=0x0)
memblock_state(block=0x7, state=\"online_movable\")
virtio_mem_resize(dev=0x0, size=0xe00000)
r1 = mmap_anon(len=0x2000, thp=\"nohuge\", populate=0x0, node=0x0)
split_huge_pages_all() (thread: 1, loop)
r2 = pfn_find(block=r0, kind=\"offline\", nth=0x9b)
yield()
sleep_ms(ms=0x1)
";

/// A fake kernel for [`SHRINK_RACE`]: a shrink of device 0 (a resize below the size before
/// it) unplugs in the background, and the bug fires with chance `q` when a walker loops for
/// the whole unplug, that is, when the shrinking thread waits for the device afterwards.
/// Without the wait the loop has ended before the unplug starts, and it never fires.
struct Shrinky {
    q: f64,
    rng: rand_chacha::ChaCha8Rng,
}

/// Shrinks a looping walker raced for their whole length, and the first one's index.
fn raced_shrinks(c: &Candidate) -> (u32, Option<usize>) {
    let (mut n, mut at, mut base) = (0, None, 0);
    for p in c {
        let walker = p.ops.iter().any(|o| o.rep == Rep::Loop);
        let mut size = 0;
        for (i, o) in p.ops.iter().enumerate() {
            if o.name != "virtio_mem_resize" || o.args[0] != Arg::Int(0) {
                continue;
            }
            let Arg::Int(new) = o.args[1] else { continue };
            let waited = p.ops[i + 1..].iter().any(|w| {
                w.thread == o.thread && w.name == "virtio_mem_wait" && w.args[0] == Arg::Int(0)
            });
            if walker && new < size && waited {
                n += 1;
                at.get_or_insert(base + i);
            }
            size = new;
        }
        base += p.ops.len();
    }
    (n, at)
}

impl Oracle for Shrinky {
    fn slots(&self) -> usize {
        1
    }

    fn run(&mut self, jobs: &[Candidate]) -> Vec<RunOutcome> {
        jobs.iter()
            .map(|c| {
                let (n, at) = raced_shrinks(c);
                let p = 1.0 - (1.0 - self.q).powi(n as i32);
                match at {
                    Some(at) if self.rng.gen_bool(p) => {
                        RunOutcome::Crashed(Box::new(evidence(c, at)))
                    }
                    _ => RunOutcome::Clean,
                }
            })
            .collect()
    }
}

#[test]
fn outlasting_waits_once_for_each_resized_device_after_the_rest() {
    let d = Descriptions::embedded();
    let p = Program::parse(SHRINK_RACE, &d).unwrap();
    assert_eq!(raced_shrinks(&vec![p.clone()]).0, 0);
    let a = outlast(&vec![p.clone()], &d).unwrap();
    a[0].validate(&d).unwrap();
    assert_eq!(ops(&a), p.ops.len() + 1);
    let last = a[0].ops.last().unwrap();
    assert_eq!(last.name, "virtio_mem_wait");
    assert_eq!((last.thread, &last.args[0]), (0, &Arg::Int(0)));
    assert_eq!(last.args[1], Arg::Int(5000), "as long as a wait may be");
    assert_eq!(raced_shrinks(&a).0, 1);
    assert!(outlast(&a, &d).is_none(), "it already waits last");
    // Nothing loops: nothing is stopped early, nothing to outlast.
    let plain =
        Program::parse("virtio_mem_resize(dev=0x0, size=0x10000000)\nyield()\n", &d).unwrap();
    assert!(outlast(&vec![plain], &d).is_none());
}

#[test]
fn again_runs_the_threads_without_a_loop_twice() {
    let d = Descriptions::embedded();
    let p = Program::parse(RACE, &d).unwrap();
    let a = again(&vec![p.clone()]).unwrap();
    a[0].validate(&d).unwrap();
    // Thread 1 (the walker and its producer) is not copied; thread 0's 8 operations are.
    assert_eq!(ops(&a), p.ops.len() + 8);
    assert_eq!(race_iterations(&a).0, 8);
    // The copy's block is a block of its own, and the copied find makes a result of its own
    // that the copied offlines use.
    let text = a[0].print(&d);
    assert_eq!(text.matches("repeat 4 {").count(), 2, "{text}");
    let finds: Vec<_> = a[0]
        .ops
        .iter()
        .filter(|o| o.name == "memblock_find")
        .map(|o| o.ret.unwrap())
        .collect();
    assert_eq!(finds.len(), 2);
    assert_ne!(finds[0], finds[1]);
    let copied_offline = a[0]
        .ops
        .iter()
        .rev()
        .find(|o| o.name == "memblock_state")
        .unwrap();
    assert_eq!(copied_offline.args[0], Arg::Ref(finds[1]), "{text}");
    // Too long a copy is not made; a program without a loop is left alone.
    let mut long = a.clone();
    for _ in 0..3 {
        long = again(&long).unwrap_or(long);
    }
    assert!(ops(&long) <= hotfuzz::repro::minimize::AGAIN_MAX_OPS);
    let plain = Program::parse("yield()\nsleep_ms(ms=0x1)\n", &d).unwrap();
    assert!(again(&vec![plain]).is_none());
}

#[test]
fn a_walker_stopped_before_the_unplug_it_raced_is_given_the_whole_unplug() {
    // The campaign caught the race in a program's last moments; on replay the walker stops
    // before the unplug and it never fires. Outlasting the resize gives it the unplug, and
    // the minimizer goes on from the amplified program, keeping the wait.
    let d = Descriptions::embedded();
    let p = Program::parse(SHRINK_RACE, &d).unwrap();
    let mut minimized = 0;
    for seed in 0..6u64 {
        let mut o = Shrinky {
            q: 0.7,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        };
        let m = Minimizer::new(&d, &mut o, Options::default()).run(std::slice::from_ref(&p));
        let log = m.log.join("\n");
        assert!(
            log.contains("loops outlasting the resizes"),
            "seed {seed}:\n{log}"
        );
        assert_eq!(
            m.original.crashes, 0,
            "seed {seed}: the replay never fires\n{log}"
        );
        if m.gave_up.is_some() {
            continue;
        }
        minimized += 1;
        let (n, _) = raced_shrinks(&m.candidate);
        assert!(n >= 1, "seed {seed}: the race is gone\n{log}");
        assert!(
            ops(&m.candidate) < ops(&vec![p.clone()]),
            "seed {seed}:\n{log}"
        );
        assert!(m.reliability.unwrap().crashes >= 1, "seed {seed}:\n{log}");
    }
    assert!(minimized >= 5, "{minimized} of 6 seeds minimized");
}

#[test]
fn a_race_in_the_last_program_is_amplified_before_the_history_is_replayed() {
    // A 6-program history whose last program is the race: amplifying that program alone
    // finds it, and the five programs before it are never replayed.
    let d = Descriptions::embedded();
    let noise = Program::parse("yield()\nsleep_ms(ms=0x1)\n", &d).unwrap();
    let mut history = vec![noise; 5];
    history.push(Program::parse(SHRINK_RACE, &d).unwrap());
    let mut o = Shrinky {
        q: 0.7,
        rng: rand_chacha::ChaCha8Rng::seed_from_u64(3),
    };
    let m = Minimizer::new(&d, &mut o, Options::default()).run(&history);
    let log = m.log.join("\n");
    assert!(log.contains("loops outlasting the resizes"), "{log}");
    assert!(!log.contains("last 2 program(s)"), "{log}");
    assert!(m.gave_up.is_none(), "{log}");
    assert_eq!(
        m.original.crashes, 0,
        "the before is the plain replay's\n{log}"
    );
    let (n, _) = raced_shrinks(&m.candidate);
    assert!(n >= 1, "{log}");
}
