//! The state signature of a run, for kernels without KCOV: what a program made the kernel
//! do, as a set of hashed features. A program is interesting when it shows a feature no
//! earlier program showed:
//!
//! - each operation's outcome class (`memblock_state` ok, `memblock_state` errno 16, ...);
//! - consecutive outcomes within a thread (offline ok after online ok differs from offline
//!   EBUSY after a pin), which is how sequences that walk the hotplug state machine further
//!   become visible without coverage;
//! - how many times an operation succeeded on the same object (the third successful
//!   `online` of one block is new when only two were seen): state machines are walked by
//!   repetition, and bugs hide deep in them;
//! - the memory block state vector the program left behind (each block's state, and how many
//!   blocks are in each state);
//! - kernel message templates printed during the run (numbers and addresses removed), so a
//!   new kernel path that logs something counts;
//! - overlaps: operation A on one thread was running while operation B ran on another (from
//!   the executor's guest-clock start and end times), and whether they worked on the same
//!   object. A race needs its two sides to overlap; programs whose threads really did are kept
//!   and mutated further;
//! - how often a repeated operation ran and succeeded (in buckets).

use crate::program::prog::{Arg, Program};
use crate::run::runner::RunResult;
use hotfuzz_executor::protocol::{BlockSnapshot, Outcome};
use std::hash::{Hash, Hasher};

/// Size of the feature map (and of the KCOV map).
pub const MAP_SIZE: usize = 1 << 16;

fn h<T: Hash>(parts: T) -> u64 {
    let mut s = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut s);
    s.finish()
}

/// A kernel message with the parts that vary between runs removed: numbers, addresses,
/// hex words, PIDs and device names' instance numbers become `#`.
pub fn template(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            // A number (decimal or 0x-hex, with any hex digits after it).
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_hexdigit() || *d == 'x' || *d == '.')
            {
                chars.next();
            }
            out.push('#');
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a console line is hotfuzz's own (markers, init messages), not the kernel's.
fn is_ours(text: &str) -> bool {
    text.contains(hotfuzz_executor::protocol::MARKER_PREFIX) || text.starts_with("hotfuzz-init")
}

/// AFL-style buckets of a count: 1, 2, 3, 4-7, 8-15, ...
fn bucket(n: u32) -> u32 {
    if n <= 3 {
        n
    } else {
        32 - n.leading_zeros() + 1
    }
}

/// The object an operation acts on: its first integer or resource argument, resolved to the
/// value the producing operation returned.
fn object(prog: &Program, i: usize, values: &std::collections::HashMap<u32, u64>) -> Option<u64> {
    prog.ops[i].args.iter().find_map(|a| match a {
        Arg::Int(v) => Some(*v),
        Arg::Ref(r) => values.get(r).copied(),
        Arg::Str(_) => None,
    })
}

/// The string arguments of an operation (its mode: `offline`, `online_movable`, ...).
fn strings(prog: &Program, i: usize) -> String {
    prog.ops[i]
        .args
        .iter()
        .filter_map(|a| match a {
            Arg::Str(s) => Some(s.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The features of one run.
pub fn features(prog: &Program, r: &RunResult) -> Vec<u64> {
    let mut f = Vec::new();
    let mut last_in_thread: std::collections::HashMap<u32, (String, String)> = Default::default();
    let mut values: std::collections::HashMap<u32, u64> = Default::default();
    let mut depth: std::collections::HashMap<(String, String, u64), u32> = Default::default();
    for o in &r.ops {
        let name = &prog.ops[o.index].name;
        let class = o
            .outcome
            .as_ref()
            .map(|x| x.class())
            .unwrap_or_else(|| "lost".into());
        f.push(h(("op", name, &class)));
        if let Some((pn, pc)) = last_in_thread.get(&o.thread) {
            f.push(h(("seq", pn, pc, name, &class)));
        }
        let oks = if o.runs > 1 {
            o.oks
        } else {
            u32::from(matches!(o.outcome, Some(Outcome::Ok { .. })))
        };
        if oks > 0 {
            if let Some(obj) = object(prog, o.index, &values) {
                let key = (name.clone(), strings(prog, o.index), obj);
                let n = depth.entry(key.clone()).or_insert(0u32);
                *n += oks;
                f.push(h(("depth", &key.0, &key.1, bucket(*n))));
            }
        }
        if o.runs > 1 {
            f.push(h(("runs", name, &class, bucket(o.runs), bucket(o.oks))));
        }
        if let Some(Outcome::Ok { val: Some(v) }) = &o.outcome {
            if let Some(r) = prog.ops[o.index].ret {
                values.insert(r, *v);
            }
        }
        last_in_thread.insert(o.thread, (name.clone(), class));
    }
    f.extend(overlaps(prog, r, &values));
    if let Some(mem) = &r.memory {
        let mut counts = [0u32; 4];
        for b in mem {
            f.push(h(("block", b.id, b.state)));
            counts[(b.state as usize).min(3)] += 1;
        }
        for (state, n) in counts.iter().enumerate() {
            // Counts in buckets (0, 1, 2, 3-4, 5-8, ...), as AFL buckets hit counts.
            let bucket = if *n <= 2 {
                *n
            } else {
                32 - (n - 1).leading_zeros() + 1
            };
            f.push(h(("blocks-in-state", state, bucket)));
        }
        let offline = mem
            .iter()
            .filter(|b| b.state == BlockSnapshot::OFFLINE)
            .count();
        let kernel = mem
            .iter()
            .filter(|b| b.state == BlockSnapshot::KERNEL)
            .count();
        f.push(h(("vector", offline.min(16), kernel.min(64))));
    }
    for l in &r.console {
        let text = crate::report::lines::parse_line(0, &l.text)
            .text
            .into_owned();
        if text.trim().is_empty() || is_ours(&text) {
            continue;
        }
        f.push(h(("msg", template(&text))));
    }
    f.sort_unstable();
    f.dedup();
    f
}

/// Pairs of operations on different threads whose runs overlapped in (guest) time: by name
/// and mode, and again when they worked on the same object.
fn overlaps(
    prog: &Program,
    r: &RunResult,
    values: &std::collections::HashMap<u32, u64>,
) -> Vec<u64> {
    let spans: Vec<(usize, u32, u64, u64)> = r
        .ops
        .iter()
        .filter_map(|o| Some((o.index, o.thread, o.kt_start_ns?, o.kt_end_ns?)))
        .collect();
    let mut f = Vec::new();
    for (a, &(i, ti, si, ei)) in spans.iter().enumerate() {
        for &(j, tj, sj, ej) in &spans[a + 1..] {
            if ti == tj || si >= ej || sj >= ei {
                continue;
            }
            let (x, y) = if prog.ops[i].name <= prog.ops[j].name {
                (i, j)
            } else {
                (j, i)
            };
            let key = (
                &prog.ops[x].name,
                strings(prog, x),
                &prog.ops[y].name,
                strings(prog, y),
            );
            f.push(h(("overlap", &key)));
            let (ox, oy) = (object(prog, x, values), object(prog, y, values));
            if ox.is_some() && ox == oy {
                f.push(h(("overlap-same", &key)));
            }
        }
    }
    f
}

/// Index of a feature (or a KCOV PC) in a map of [`MAP_SIZE`].
pub fn index(feature: u64) -> usize {
    // Spread the bits: PCs share their high bits.
    let x = feature ^ (feature >> 29) ^ (feature >> 47);
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize % MAP_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::desc::Descriptions;
    use crate::run::runner::OpResult;
    use std::time::{Duration, Instant, SystemTime};

    fn run(
        outcomes: &[Outcome],
        memory: Option<Vec<BlockSnapshot>>,
        console: &[&str],
    ) -> RunResult {
        RunResult {
            program_id: "x".into(),
            console_mark: 0,
            ops: outcomes
                .iter()
                .enumerate()
                .map(|(index, o)| OpResult {
                    index,
                    thread: 0,
                    outcome: Some(o.clone()),
                    duration: Duration::ZERO,
                    started: None,
                    kt_start_ns: None,
                    kt_end_ns: None,
                    runs: 1,
                    oks: 0,
                })
                .collect(),
            console: console
                .iter()
                .enumerate()
                .map(|(i, t)| hotfuzz_vm::console::ConsoleLine {
                    index: i as u64,
                    time: SystemTime::now(),
                    at: Instant::now(),
                    text: t.to_string(),
                })
                .collect(),
            started: SystemTime::now(),
            duration: Duration::ZERO,
            abandoned: Vec::new(),
            memory,
            lost: None,
            cover: Default::default(),
            executor_stderr: String::new(),
        }
    }

    fn prog() -> Program {
        let d = Descriptions::embedded();
        Program::parse(
            "memblock_state(block=0x21, state=\"offline\")\nmemblock_state(block=0x21, state=\"online\")\n",
            &d,
        )
        .unwrap()
    }

    #[test]
    fn overlapping_threads_are_a_feature() {
        let d = Descriptions::embedded();
        let p = Program::parse(
            "memblock_state(block=0x21, state=\"offline\")\nsplit_huge_pages_all() (thread: 1)\n",
            &d,
        )
        .unwrap();
        let ok = Outcome::Ok { val: None };
        let mut r = run(&[ok.clone(), ok], None, &[]);
        r.ops[1].thread = 1;
        let span = |r: &mut RunResult, i: usize, s: u64, e: u64| {
            r.ops[i].kt_start_ns = Some(s);
            r.ops[i].kt_end_ns = Some(e);
        };
        span(&mut r, 0, 100, 200);
        span(&mut r, 1, 300, 400);
        let apart = features(&p, &r);
        span(&mut r, 1, 150, 400);
        let together = features(&p, &r);
        assert!(together.len() > apart.len());
        assert!(apart.iter().all(|x| together.contains(x)));
    }

    #[test]
    fn templates_drop_what_varies() {
        assert_eq!(
            template("[   12.345678] Offlined Pages 32768"),
            "[   #] Offlined Pages #"
        );
        assert_eq!(
            template("virtio_mem virtio1: plugged size: 0x10000000"),
            template("virtio_mem virtio3: plugged size: 0x0")
        );
        assert_ne!(
            template("memory offlining [mem 0x1-0x2] failed due to signal backoff"),
            template("Offlined Pages 32768")
        );
    }

    #[test]
    fn different_behaviour_gives_different_features() {
        let p = prog();
        let ok = Outcome::Ok { val: None };
        let busy = Outcome::Errno {
            errno: libc::EBUSY,
            msg: String::new(),
        };
        let a = features(&p, &run(&[ok.clone(), ok.clone()], None, &[]));
        let b = features(&p, &run(&[busy.clone(), ok.clone()], None, &[]));
        assert_ne!(a, b);
        // Same behaviour, same features, whatever the numbers in the messages.
        let m1 = features(
            &p,
            &run(
                &[ok.clone(), ok.clone()],
                None,
                &["[ 5.1] Offlined Pages 32768"],
            ),
        );
        let m2 = features(
            &p,
            &run(
                &[ok.clone(), ok.clone()],
                None,
                &["[ 9.7] Offlined Pages 65536"],
            ),
        );
        assert_eq!(m1, m2);
        assert!(m1.len() > a.len());
        // hotfuzz's own markers are not kernel behaviour.
        let m3 = features(
            &p,
            &run(
                &[ok.clone(), ok.clone()],
                None,
                &["[ 1.0] hotfuzz: executing program 1234 op 0 (thread 0): x"],
            ),
        );
        assert_eq!(m3, a);
        // The block vector counts.
        let mem = |s: u8| {
            Some(vec![
                BlockSnapshot {
                    id: 32,
                    state: BlockSnapshot::MOVABLE,
                },
                BlockSnapshot { id: 33, state: s },
            ])
        };
        let v1 = features(
            &p,
            &run(&[ok.clone(), ok.clone()], mem(BlockSnapshot::MOVABLE), &[]),
        );
        let v2 = features(
            &p,
            &run(&[ok.clone(), ok], mem(BlockSnapshot::OFFLINE), &[]),
        );
        assert_ne!(v1, v2);
    }

    #[test]
    fn repeating_an_operation_on_one_object_goes_deeper() {
        let d = Descriptions::embedded();
        let cycles = |n: usize| {
            let mut text = String::from("r0 = memblock_find(which=\"movable\", nth=0x0)\n");
            for _ in 0..n {
                text.push_str("memblock_state(block=r0, state=\"offline\")\nmemblock_state(block=r0, state=\"online\")\n");
            }
            let p = Program::parse(&text, &d).unwrap();
            let mut outcomes = vec![Outcome::Ok { val: Some(0x21) }];
            outcomes.extend((0..2 * n).map(|_| Outcome::Ok { val: None }));
            features(&p, &run(&outcomes, None, &[]))
        };
        let two = cycles(2);
        let three = cycles(3);
        assert!(
            three.iter().any(|f| !two.contains(f)),
            "a third cycle is new"
        );
        // The same cycles on two different blocks are not deeper than one cycle.
        let p = Program::parse(
            "memblock_state(block=0x21, state=\"offline\")\nmemblock_state(block=0x22, state=\"offline\")\n",
            &d,
        )
        .unwrap();
        let ok = Outcome::Ok { val: None };
        let spread = features(&p, &run(&[ok.clone(), ok.clone()], None, &[]));
        let p1 = Program::parse("memblock_state(block=0x21, state=\"offline\")\n", &d).unwrap();
        let once = features(&p1, &run(&[ok], None, &[]));
        let depth = |fs: &[u64]| fs.iter().filter(|f| !once.contains(f)).count();
        assert_eq!(depth(&spread), 1, "only the op sequence feature differs");
    }

    #[test]
    fn indexes_stay_in_the_map() {
        for f in [0u64, 1, u64::MAX, 0xffff_ffff_8100_0000] {
            assert!(index(f) < MAP_SIZE);
        }
        assert_ne!(index(0xffff_ffff_8100_0000), index(0xffff_ffff_8100_0004));
    }
}
