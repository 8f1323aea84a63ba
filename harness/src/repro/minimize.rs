//! Minimization: from the programs that ran before a report to the smallest program that still
//! reproduces it, every step confirmed by running the candidate.
//!
//! The minimizer knows nothing about guests. It asks an [`Oracle`] to run candidates (several
//! at once when the oracle has several guests) and learns, per run, whether the bug appeared
//! and, when it did, which operations had started by then. A candidate is accepted only when
//! one of its runs reproduced the bug: a crash with the right title is never a false positive,
//! so a flaky oracle can make minimization give up on a reduction but never accept a program
//! that does not reproduce. How many runs a candidate gets before it counts as "does not
//! reproduce" follows from the reliability measured at the start.
//!
//! Steps, cheapest and most effective first:
//! 1. history: the last program alone, then with the programs before it, each replay
//!    starting with a program that restores the state its first program started in (its
//!    virtio-mem devices' sizes, when the source recorded them); a race that
//!    reproduces in fewer than half of its runs (or in none) is then *amplified*, for as long
//!    as that makes it reproduce more often (and step 7 then leaves its repetitions alone):
//!    its repeated blocks run four times as often, its loops are made to outlast its
//!    virtio-mem resizes, or what its threads without a loop do runs twice;
//! 2. merging a history of several programs into one;
//! 3. dropping the operations that had not started when the report appeared;
//! 4. dropping whole families of operations unrelated to the crashing one (workload, gup, ...);
//! 5. dropping whole threads, then moving everything to one thread;
//! 6. delta debugging over operations (chunks of halving size; a removed producer takes its
//!    consumers with it);
//! 7. simplifying repetition: blocks repeated fewer times (halving), then not at all, loops
//!    run once (a race that needs them keeps them);
//! 8. simplifying arguments (smaller sizes and counts, first candidates).
//!
//! About 1,000 lines in one file on purpose: every step is a short method that shares the
//! minimizer's run accounting, budget and evidence, and reading the steps in order is how
//! one checks that no step can accept a candidate without a confirming run. The candidate
//! surgery they use (closure, removal, merge, renumbering, amplification) is free functions
//! here, tested from `harness/tests/minimize.rs`.

use crate::program::desc::{ArgType, Descriptions};
use crate::program::prog::{Arg, Program, Rep, MAX_TIMES};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// Programs run one after the other on one fresh guest.
pub type Candidate = Vec<Program>;

/// What one run of a candidate showed when the bug appeared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    /// The title the report got.
    pub title: String,
    /// The report text.
    pub report: String,
    /// Console lines around the report.
    pub console: String,
    /// Per operation of the candidate (flattened over its programs): had it started when the
    /// report appeared? Empty when unknown.
    pub started: Vec<bool>,
    /// Per operation: did it succeed? Empty when unknown.
    pub ok: Vec<bool>,
    /// The operation running when the report appeared (the last one to start), if known.
    pub crash_op: Option<usize>,
}

/// One run of a candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// The bug reproduced.
    Crashed(Box<Evidence>),
    /// The candidate ran and the bug did not appear.
    Clean,
    /// Another kernel report (its title) ended the run before the bug could appear. The
    /// minimizer counts it as a run without the bug; a bisection learns nothing from it.
    Masked(String),
    /// The run says nothing (the guest did not boot, QEMU was killed): not counted.
    Infra(String),
}

/// Runs candidates on guests.
pub trait Oracle {
    /// How many runs can go at once.
    fn slots(&self) -> usize;
    /// Runs each job once, at most [`Oracle::slots`] of them concurrently; one outcome per
    /// job, in order.
    fn run(&mut self, jobs: &[Candidate]) -> Vec<RunOutcome>;
}

/// Tuning.
#[derive(Debug, Clone)]
pub struct Options {
    /// Runs when measuring reliability.
    pub runs: u32,
    /// Reliability (crashes/runs) below which a bug counts as not reproduced.
    pub threshold: f64,
    /// Most guest runs the minimization steps (not the measurements) may use.
    pub max_runs: u32,
    /// Accepted chance that a reduction which still reproduces is rejected because none of
    /// its runs happened to crash (sets the runs per candidate from the reliability).
    pub miss: f64,
    /// Infrastructure failures tolerated before giving up.
    pub max_infra: u32,
    /// Simplify arguments after removing operations.
    pub simplify_args: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            runs: 5,
            threshold: 0.2,
            max_runs: 60,
            miss: 0.1,
            max_infra: 6,
            simplify_args: true,
        }
    }
}

/// A reliability figure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reliability {
    /// Runs that reproduced the bug.
    pub crashes: u32,
    /// Runs.
    pub runs: u32,
}

impl Reliability {
    /// crashes/runs (0 with no runs).
    pub fn rate(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            self.crashes as f64 / self.runs as f64
        }
    }
}

impl std::fmt::Display for Reliability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.crashes, self.runs)
    }
}

/// Where minimization is, for progress output.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Step name.
    pub step: String,
    /// Operations in the current candidate.
    pub ops: usize,
    /// Guest runs so far (measurements included).
    pub runs: u32,
    /// What just happened.
    pub msg: String,
}

/// The result.
#[derive(Debug, Clone)]
pub struct Minimized {
    /// Reliability of the replayed history before minimization.
    pub original: Reliability,
    /// Operations before minimization.
    pub original_ops: usize,
    /// The smallest candidate found (one program unless merging failed).
    pub candidate: Candidate,
    /// Its reliability, measured again at the end (`None` when nothing reproduced).
    pub reliability: Option<Reliability>,
    /// The last run that reproduced the bug with `candidate`.
    pub evidence: Option<Evidence>,
    /// Guest runs spent minimizing (measurements not included).
    pub minimize_runs: u32,
    /// All guest runs.
    pub total_runs: u32,
    /// Infrastructure failures (not counted as runs).
    pub infra: u32,
    /// One line per step and candidate.
    pub log: Vec<String>,
    /// Why it stopped short, if it did (budget, no reproduction, infrastructure).
    pub gave_up: Option<String>,
}

/// Operations that only wait for the guest to catch up (a virtio-mem resize to complete).
/// Delta debugging keeps them: without them a reproducer depends on timing, and one lucky run
/// under a loaded host is enough to drop one.
pub const SYNC_OPS: &[&str] = &[WAIT_OP];

/// The operation that waits for a virtio-mem device to reach its requested size.
const WAIT_OP: &str = "virtio_mem_wait";

/// Below this reliability a candidate with repeated blocks is amplified (see [`amplify`]).
pub const AMPLIFY_BELOW: f64 = 0.5;

/// How many times as often an amplified block repeats.
pub const AMPLIFY_BY: u32 = 4;

/// `c` with every repeated block run [`AMPLIFY_BY`] times as often (at most
/// [`MAX_TIMES`]); `None` when no block can repeat more. A race is hit with some small chance
/// per iteration of the block that opens its window, so more iterations make a run more
/// likely to hit it: a race that fired once in a campaign and one time in three on replay is
/// too unreliable for minimization steps to judge, and its amplified form often is not.
pub fn amplify(c: &Candidate) -> Option<Candidate> {
    let mut out = c.clone();
    let mut changed = false;
    for p in &mut out {
        for o in &mut p.ops {
            if let Rep::Block { block, times } = o.rep {
                let more = times.saturating_mul(AMPLIFY_BY).min(MAX_TIMES);
                if more != times {
                    o.rep = Rep::Block { block, times: more };
                    changed = true;
                }
            }
        }
    }
    changed.then_some(out)
}

/// The operation that requests a virtio-mem device's size; [`outlast`] waits after it.
const RESIZE_OP: &str = "virtio_mem_resize";

/// Whether `p` has a thread that loops (a walker or workload running beside the others).
fn has_loop(p: &Program) -> bool {
    p.ops.iter().any(|o| o.rep == Rep::Loop)
}

/// Threads of `p` that have no looping operation: the ones whose end ends the loops.
fn finite_threads(p: &Program) -> BTreeSet<u32> {
    let looping: BTreeSet<u32> = p
        .ops
        .iter()
        .filter(|o| o.rep == Rep::Loop)
        .map(|o| o.thread)
        .collect();
    p.ops
        .iter()
        .map(|o| o.thread)
        .filter(|t| !looping.contains(t))
        .collect()
}

/// `c` with the loops made to outlast every virtio-mem resize: each thread without a loop
/// that resizes a device ends with a wait, as long as the wait may last, for that device to
/// reach its size. A loop runs only until the other threads are done, but a resize returns
/// when the host has asked for the size, and the guest plugs or unplugs afterwards, for
/// seconds under TCG. A walker racing an unplug that the campaign caught in the last moments
/// of a program is then stopped before the unplug on replay, and only a wait gives it the
/// whole unplug to race. `None` when no program has a loop and a resize, or each already
/// waits last.
pub fn outlast(c: &Candidate, d: &Descriptions) -> Option<Candidate> {
    let wait = d.op(WAIT_OP)?;
    let mut out = c.clone();
    let mut changed = false;
    for p in &mut out {
        if !has_loop(p) {
            continue;
        }
        for t in finite_threads(p) {
            let mine: Vec<&crate::program::prog::Op> =
                p.ops.iter().filter(|o| o.thread == t).collect();
            // The devices this thread resizes, in the order of their last resize.
            let mut devs: Vec<Arg> = Vec::new();
            for o in mine.iter().filter(|o| o.name == RESIZE_OP) {
                if let Some(dev) = o.args.first() {
                    devs.retain(|x| x != dev);
                    devs.push(dev.clone());
                }
            }
            let waits_last = |dev: &Arg| {
                mine.iter()
                    .rev()
                    .take_while(|o| o.name == wait.name)
                    .any(|o| o.args.first() == Some(dev))
            };
            let missing: Vec<Arg> = devs.into_iter().filter(|dev| !waits_last(dev)).collect();
            for dev in &missing {
                let args = wait
                    .args
                    .iter()
                    .map(|a| match (&a.name[..], &a.ty) {
                        ("dev", _) => Some(dev.clone()),
                        (_, ArgType::Int { max, .. }) => Some(Arg::Int(*max as u64)),
                        _ => None,
                    })
                    .collect::<Option<Vec<Arg>>>()?;
                p.ops
                    .push(crate::program::prog::Op::new(&wait.name, args, None, t));
                changed = true;
            }
        }
    }
    changed.then_some(out)
}

/// At most this many operations in a program [`again`] makes.
pub const AGAIN_MAX_OPS: usize = 96;

/// `c` with what the threads without a loop do run a second time, after themselves, while
/// the loops go on: a second plug and unplug, a second round of offlines. The copy makes
/// results of its own, and its blocks are blocks of their own (a block cannot hold one). For
/// a race whose window is a whole sequence (a device grown and then shrunk) rather than one
/// repeated block. `None` when no program has a loop, or the copy would make a program
/// longer than [`AGAIN_MAX_OPS`].
pub fn again(c: &Candidate) -> Option<Candidate> {
    let mut out = c.clone();
    let mut changed = false;
    for p in &mut out {
        if !has_loop(p) {
            continue;
        }
        let finite = finite_threads(p);
        let copy_len = p.ops.iter().filter(|o| finite.contains(&o.thread)).count();
        if copy_len == 0 || p.ops.len() + copy_len > AGAIN_MAX_OPS {
            continue;
        }
        let mut next_block = p.next_block();
        let mut blocks: BTreeMap<u32, u32> = BTreeMap::new();
        let mut copy = crate::program::mutate::fresh_copy(
            p.ops.iter().filter(|o| finite.contains(&o.thread)),
            crate::program::gen::next_ret_number(p),
        );
        for o in &mut copy {
            if let Rep::Block { block, times } = o.rep {
                let b = *blocks.entry(block).or_insert_with(|| {
                    next_block += 1;
                    next_block - 1
                });
                o.rep = Rep::Block { block: b, times };
            }
        }
        p.ops.extend(copy);
        changed = true;
    }
    changed.then_some(out)
}

/// The ways [`Minimizer`] amplifies a race, in the order it tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Amplification {
    /// [`amplify`]: repeated blocks repeat more often.
    Blocks,
    /// [`outlast`]: loops run until the devices reached their size.
    Outlast,
    /// [`again`]: the threads without a loop run their operations twice.
    Again,
}

impl Amplification {
    const ALL: [Amplification; 3] = [
        Amplification::Blocks,
        Amplification::Outlast,
        Amplification::Again,
    ];

    fn apply(self, c: &Candidate, d: &Descriptions) -> Option<Candidate> {
        match self {
            Amplification::Blocks => amplify(c),
            Amplification::Outlast => outlast(c, d),
            Amplification::Again => again(c),
        }
    }

    fn describe(self) -> String {
        match self {
            Amplification::Blocks => format!("blocks repeated {AMPLIFY_BY}x as often"),
            Amplification::Outlast => "loops outlasting the resizes".into(),
            Amplification::Again => "threads without a loop run twice".into(),
        }
    }
}

/// Drives an oracle through the steps.
pub struct Minimizer<'a, O: Oracle> {
    d: &'a Descriptions,
    oracle: &'a mut O,
    opts: Options,
    runs: u32,
    min_runs: u32,
    infra: u32,
    log: Vec<String>,
    step: String,
    progress: Box<dyn FnMut(&Progress) + 'a>,
    evidence: Option<Evidence>,
    /// The candidate was amplified: its repetitions stay.
    amplified: bool,
    /// Per program of the history: a program that puts the guest back into the state that
    /// program started from (its virtio-mem devices' sizes), run before it when the replay
    /// starts there. Empty: replays start from a fresh guest as it boots.
    starts: Vec<Option<Program>>,
}

/// Total operations of a candidate.
pub fn ops(c: &Candidate) -> usize {
    c.iter().map(|p| p.ops.len()).sum()
}

/// Runs needed so that a candidate reproducing at `rate` crashes at least once with
/// probability `1 - miss`, within [1, cap].
pub fn runs_per_candidate(rate: f64, miss: f64, cap: u32) -> u32 {
    let cap = cap.max(1);
    if rate >= 1.0 {
        return 1;
    }
    if rate <= 0.0 {
        return cap;
    }
    let k = (miss.ln() / (1.0 - rate).ln()).ceil();
    (k.max(1.0) as u32).min(cap)
}

/// The flattened operations that go when `drop` goes: `drop` and every operation that
/// (transitively) uses a result of a removed one.
pub fn closure(c: &Candidate, drop: &BTreeSet<usize>) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut base = 0;
    for p in c {
        let mut gone: BTreeSet<u32> = BTreeSet::new();
        for (i, op) in p.ops.iter().enumerate() {
            let uses_gone = op
                .args
                .iter()
                .any(|a| matches!(a, Arg::Ref(r) if gone.contains(r)));
            if drop.contains(&(base + i)) || uses_gone {
                gone.extend(op.ret);
                out.insert(base + i);
            }
        }
        base += p.ops.len();
    }
    out
}

/// Removes the flattened operations in `drop` from `c`, together with every operation that
/// (transitively) uses a result of a removed one. Empty programs disappear.
pub fn remove_ops(c: &Candidate, drop: &BTreeSet<usize>) -> Candidate {
    let all = closure(c, drop);
    let mut out = Vec::new();
    let mut base = 0;
    for p in c {
        let ops: Vec<_> = p
            .ops
            .iter()
            .enumerate()
            .filter(|(i, _)| !all.contains(&(base + i)))
            .map(|(_, o)| o.clone())
            .collect();
        base += p.ops.len();
        if !ops.is_empty() {
            let mut p = Program { ops };
            p.normalize_reps();
            out.push(p);
        }
    }
    out
}

/// One program running the programs of `c` one after the other (their threads keep their
/// numbers; results are renamed so they do not collide).
pub fn merge(c: &Candidate) -> Program {
    let mut out = Program::default();
    let mut next = 0u32;
    for (k, p) in c.iter().enumerate() {
        let mut map: BTreeMap<u32, u32> = BTreeMap::new();
        for op in &p.ops {
            let mut op = op.clone();
            for a in &mut op.args {
                if let Arg::Ref(r) = a {
                    *r = map.get(r).copied().unwrap_or(*r);
                }
            }
            if let Some(r) = op.ret {
                map.insert(r, next);
                op.ret = Some(next);
                next += 1;
            }
            // Blocks of different programs stay different blocks.
            if let Rep::Block { block, times } = op.rep {
                op.rep = Rep::Block {
                    block: block + (k as u32) * 100_000,
                    times,
                };
            }
            out.ops.push(op);
        }
    }
    out.normalize_reps();
    out
}

/// `p` with results numbered r0, r1, ... in order and threads numbered 0, 1, ... in order of
/// first appearance.
pub fn renumber(p: &Program) -> Program {
    let mut m = merge(&vec![p.clone()]);
    let mut threads: BTreeMap<u32, u32> = BTreeMap::new();
    let mut order = Vec::new();
    for op in &m.ops {
        if !threads.contains_key(&op.thread) {
            let n = threads.len() as u32;
            threads.insert(op.thread, n);
            order.push(op.thread);
        }
    }
    for op in &mut m.ops {
        op.thread = threads[&op.thread];
    }
    m
}

/// The description file an operation comes from (`hotplug`, `workload`, `gup`, ...).
pub fn family(d: &Descriptions, op: &str) -> String {
    d.op(op)
        .map(|o| {
            o.loc
                .file
                .rsplit('/')
                .next()
                .unwrap_or("")
                .trim_end_matches(".txt")
                .to_string()
        })
        .unwrap_or_default()
}

fn flat(c: &Candidate) -> Vec<&crate::program::prog::Op> {
    c.iter().flat_map(|p| p.ops.iter()).collect()
}

/// A simpler value for an integer argument, if there is one: sizes divided by four (kept
/// aligned, in range and non-zero), counts down to their minimum, `nth`-style selectors to 0.
fn simpler(name: &str, ty: &ArgType, v: u64) -> Option<u64> {
    let ArgType::Int {
        min, align, kind, ..
    } = ty
    else {
        return None;
    };
    let min = (*min).max(0) as u64;
    let kind = kind.as_deref().unwrap_or("");
    let sizeish = kind.contains("size") || kind.contains("len") || name == "size" || name == "len";
    let countish = kind.contains("count") || name.contains("count") || name == "npages";
    let s = if sizeish {
        let a = (*align).max(1);
        let q = (v / 4) / a * a;
        if q == 0 {
            return None;
        }
        q.max(min)
    } else if countish || name == "nth" || name == "per_call" {
        min.max(if name == "nth" { 0 } else { 1 }).min(v)
    } else {
        return None;
    };
    (s < v && s >= min).then_some(s)
}

impl<'a, O: Oracle> Minimizer<'a, O> {
    /// A minimizer running candidates on `oracle`.
    pub fn new(d: &'a Descriptions, oracle: &'a mut O, opts: Options) -> Minimizer<'a, O> {
        Minimizer {
            d,
            oracle,
            opts,
            runs: 0,
            min_runs: 0,
            infra: 0,
            log: Vec::new(),
            step: String::new(),
            progress: Box::new(|_| {}),
            evidence: None,
            amplified: false,
            starts: Vec::new(),
        }
    }

    /// Programs that restore the state each program of the history started from (aligned
    /// with the history; `None` where there is nothing to restore). A replay of the last `n`
    /// programs then runs the start of the first of them before it: a fresh guest lacks what
    /// the earlier programs left (memory plugged, a shrink under way), and a race in the
    /// last program may need exactly that.
    pub fn with_starts(mut self, starts: Vec<Option<Program>>) -> Self {
        self.starts = starts;
        self
    }

    /// Calls `f` after every batch of runs.
    pub fn on_progress(mut self, f: impl FnMut(&Progress) + 'a) -> Self {
        self.progress = Box::new(f);
        self
    }

    fn note(&mut self, ops: usize, msg: String) {
        self.log.push(format!(
            "[{} runs] {}: {} ops: {msg}",
            self.runs, self.step, ops
        ));
        (self.progress)(&Progress {
            step: self.step.clone(),
            ops,
            runs: self.runs,
            msg,
        });
    }

    fn budget_left(&self) -> bool {
        self.min_runs < self.opts.max_runs
    }

    /// Runs a batch, counting runs and infrastructure failures. Errors out when too many
    /// runs say nothing.
    fn batch(&mut self, jobs: &[Candidate], minimizing: bool) -> Result<Vec<RunOutcome>, String> {
        let out = self.oracle.run(jobs);
        for o in &out {
            match o {
                RunOutcome::Infra(why) => {
                    self.infra += 1;
                    self.log.push(format!("infrastructure failure: {why}"));
                    if self.infra > self.opts.max_infra {
                        return Err(format!(
                            "{} runs failed for reasons outside the kernel (last: {why})",
                            self.infra
                        ));
                    }
                }
                _ => {
                    self.runs += 1;
                    if minimizing {
                        self.min_runs += 1;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Measures the reliability of `c`: up to `runs` runs, stopping once the answer is clear
    /// (every one of the first three crashed, or the threshold can no longer be reached).
    pub fn measure(&mut self, c: &Candidate) -> Result<(Reliability, Option<Evidence>), String> {
        let n = self.opts.runs.max(1);
        let need = ((self.opts.threshold * n as f64).ceil() as u32).max(1);
        let mut r = Reliability::default();
        let mut ev = None;
        while r.runs < n {
            let k = (self.oracle.slots().max(1) as u32).min(n - r.runs) as usize;
            let jobs = vec![c.clone(); k];
            for o in self.batch(&jobs, false)? {
                match o {
                    RunOutcome::Crashed(e) => {
                        r.crashes += 1;
                        r.runs += 1;
                        ev = Some(*e);
                    }
                    RunOutcome::Clean | RunOutcome::Masked(_) => r.runs += 1,
                    RunOutcome::Infra(_) => {}
                }
            }
            let all_crashed = r.runs >= n.min(3) && r.crashes == r.runs;
            let hopeless = r.crashes + n.saturating_sub(r.runs) < need;
            if all_crashed || hopeless {
                break;
            }
        }
        Ok((r, ev))
    }

    /// Tests `cands` in order with up to `k` runs each, several at once; returns the first
    /// (lowest index) that reproduced, with the evidence of its crash. Stops as soon as that
    /// is known.
    fn first_success(
        &mut self,
        cands: &[Candidate],
        k: u32,
    ) -> Result<Option<(usize, Evidence)>, String> {
        let mut runs = vec![0u32; cands.len()];
        let mut hit: Vec<Option<Evidence>> = vec![None; cands.len()];
        loop {
            // The answer is known once every candidate before the first hit has failed.
            let mut all_failed = true;
            for i in 0..cands.len() {
                if let Some(e) = hit[i].take() {
                    return Ok(Some((i, e)));
                }
                if runs[i] < k {
                    all_failed = false;
                    break;
                }
            }
            if all_failed || !self.budget_left() {
                return Ok(None);
            }
            let mut slots = self.oracle.slots().max(1);
            let mut jobs = Vec::new();
            let mut owner = Vec::new();
            for i in 0..cands.len() {
                if slots == 0 {
                    break;
                }
                if hit[i].is_some() || runs[i] >= k {
                    continue;
                }
                let want = ((k - runs[i]) as usize).min(slots);
                for _ in 0..want {
                    jobs.push(cands[i].clone());
                    owner.push(i);
                }
                slots -= want;
            }
            let out = self.batch(&jobs, true)?;
            for (o, &i) in out.into_iter().zip(&owner) {
                match o {
                    RunOutcome::Crashed(e) => {
                        runs[i] += 1;
                        if hit[i].is_none() {
                            hit[i] = Some(*e);
                        }
                    }
                    RunOutcome::Clean | RunOutcome::Masked(_) => runs[i] += 1,
                    RunOutcome::Infra(_) => {}
                }
            }
        }
    }

    /// Tries `cands` (alternatives to `cur`, best first); moves `cur` to the first that
    /// reproduces. Returns whether one did.
    fn try_step(
        &mut self,
        cur: &mut Candidate,
        cands: Vec<Candidate>,
        k: u32,
        what: &str,
    ) -> Result<bool, String> {
        let cands: Vec<Candidate> = cands
            .into_iter()
            .filter(|c| !c.is_empty() && c != cur)
            .collect();
        if cands.is_empty() {
            return Ok(false);
        }
        let before = ops(cur);
        match self.first_success(&cands, k)? {
            Some((i, e)) => {
                *cur = cands[i].clone();
                self.evidence = Some(e);
                let msg = format!("{what}: {before} -> {} ops, reproduces", ops(cur));
                self.note(ops(cur), msg);
                Ok(true)
            }
            None => {
                let msg = format!("{what}: no reduction reproduces");
                self.note(before, msg);
                Ok(false)
            }
        }
    }

    fn crash_op(&self) -> Option<usize> {
        self.evidence.as_ref().and_then(|e| e.crash_op)
    }

    /// Replays the history (newest last), measures it, and minimizes what reproduces.
    pub fn run(mut self, history: &[Program]) -> Minimized {
        let mut res = Minimized {
            original: Reliability::default(),
            original_ops: history.last().map(|p| p.ops.len()).unwrap_or(0),
            candidate: history.last().cloned().into_iter().collect(),
            reliability: None,
            evidence: None,
            minimize_runs: 0,
            total_runs: 0,
            infra: 0,
            log: Vec::new(),
            gave_up: None,
        };
        let out = self.run_inner(history, &mut res);
        if let Err(why) = out {
            res.gave_up = Some(why);
        }
        res.minimize_runs = self.min_runs;
        res.total_runs = self.runs;
        res.infra = self.infra;
        res.log = std::mem::take(&mut self.log);
        res
    }

    fn run_inner(&mut self, history: &[Program], res: &mut Minimized) -> Result<(), String> {
        if history.is_empty() {
            return Err("no program to replay".into());
        }
        // 1. The last program alone, then with more and more of the history before it.
        self.step = "replay".into();
        let mut found = None;
        let mut best: Option<(Candidate, Reliability, Evidence)> = None;
        // The last program alone, measured before it was amplified early (see below).
        let mut early: Option<(Reliability, usize)> = None;
        for n in 1..=history.len() {
            let first = history.len() - n;
            let start = self.starts.get(first).cloned().flatten();
            let from = if start.is_some() {
                " from the devices' sizes it started with"
            } else {
                ""
            };
            let c: Candidate = start
                .into_iter()
                .chain(history[first..].iter().cloned())
                .collect();
            let (r, ev) = self.measure(&c)?;
            let msg = format!("last {n} program(s){from}: reproduced {r}");
            self.note(ops(&c), msg);
            if let Some(ev) = &ev {
                if r.rate() >= self.opts.threshold {
                    found = Some((c, r, ev.clone()));
                    break;
                }
                if best.as_ref().is_none_or(|b| r.rate() > b.1.rate()) {
                    best = Some((c.clone(), r, ev.clone()));
                }
            }
            if n == 1 && history.len() > 1 && c.last().is_some_and(has_loop) {
                // A race in the last program: amplify it alone before replaying the history
                // before it, program by program, each longer suffix at `runs` runs (45 runs
                // for a 14-program history once). A race that fired once in a campaign needs
                // more time in its window more often than it needs an earlier program.
                let (a, ar, aev) = self.amplify_race(c.clone(), r, ev)?;
                if let Some(aev) = aev.filter(|_| ar.rate() >= self.opts.threshold) {
                    early = Some((r, ops(&c)));
                    self.amplified = true;
                    found = Some((a, ar, aev));
                    break;
                }
                // Not enough: the history is replayed as it was, unamplified.
                self.amplified = false;
                self.step = "replay".into();
            }
        }
        // What the replay measured, before any amplification: the "before" of the result.
        let replayed = early.or_else(|| found.as_ref().or(best.as_ref()).map(|f| (f.1, ops(&f.0))));
        // 1b. A race that reproduces rarely (or not at all) with more repetitions per run.
        // amplify_race keeps what it was given unless a form reproduced more often.
        let (found, best) = match (found, best) {
            (Some((c, r, ev)), _) if r.rate() < AMPLIFY_BELOW => {
                let (a, ar, aev) = self.amplify_race(c, r, Some(ev))?;
                let ev = aev.expect("the replay's evidence or a better run's");
                (Some((a, ar, ev)), None)
            }
            (None, best) => {
                let (base, br, bev) = match best {
                    Some((c, r, ev)) => (c, r, Some(ev)),
                    None => (
                        history.to_vec(),
                        Reliability {
                            crashes: 0,
                            runs: self.opts.runs,
                        },
                        None,
                    ),
                };
                match self.amplify_race(base, br, bev)? {
                    (a, ar, Some(ev)) if ar.rate() >= self.opts.threshold => {
                        (Some((a, ar, ev)), None)
                    }
                    (a, ar, Some(ev)) => (None, Some((a, ar, ev))),
                    (_, _, None) => (None, None),
                }
            }
            other => other,
        };
        let (mut cur, r, ev) = match (found, best) {
            (Some(f), _) => f,
            (None, Some((c, r, ev))) => {
                res.original = r;
                res.original_ops = ops(&c);
                res.candidate = c;
                res.reliability = Some(r);
                res.evidence = Some(ev);
                return Err(format!(
                    "reproduced only {r} times, below the threshold of {:.0}%",
                    self.opts.threshold * 100.0
                ));
            }
            (None, None) => {
                return Err(format!(
                    "none of the last {} program(s) reproduced the bug in {} runs each",
                    history.len(),
                    self.opts.runs
                ))
            }
        };
        // Nothing reproduced on replay and only the amplified history did: 0 of the runs.
        let none = Reliability {
            crashes: 0,
            runs: self.opts.runs,
        };
        (res.original, res.original_ops) = replayed.unwrap_or((none, ops(&history.to_vec())));
        self.evidence = Some(ev);
        let k = runs_per_candidate(r.rate(), self.opts.miss, self.opts.runs);
        self.log
            .push(format!("reliability {r}: {k} run(s) per candidate"));

        self.minimize(&mut cur, k)?;
        if self.min_runs >= self.opts.max_runs {
            self.log.push(format!(
                "stopped minimizing: the budget of {} runs is spent",
                self.opts.max_runs
            ));
        }
        // Renumbered (r0, r1, ...; threads 0, 1, ...) for reading; the final measurement
        // runs exactly what is written out.
        if cur.len() == 1 {
            cur = vec![renumber(&cur[0])];
        }
        self.step = "measure".into();
        let (fr, fev) = self.measure(&cur)?;
        let msg = format!("minimized program reproduced {fr}");
        self.note(ops(&cur), msg);
        res.candidate = cur;
        res.reliability = Some(fr);
        res.evidence = fev.or_else(|| self.evidence.clone());
        Ok(())
    }

    /// Amplifies `cur` (reproducing `r`, last evidence `ev`) while it reproduces in fewer
    /// than [`AMPLIFY_BELOW`] of its runs and amplifying helps; returns the best form found.
    fn amplify_race(
        &mut self,
        cur: Candidate,
        r: Reliability,
        ev: Option<Evidence>,
    ) -> Result<(Candidate, Reliability, Option<Evidence>), String> {
        let (mut cur, mut r, mut ev) = (cur, r, ev);
        self.step = "amplify".into();
        // Each round takes the first form that reproduces more often than the current one;
        // the rounds end when none does (or the race reproduces often enough).
        'rounds: while r.rate() < AMPLIFY_BELOW {
            for form in Amplification::ALL {
                let Some(a) = form.apply(&cur, self.d) else {
                    continue;
                };
                let (ar, aev) = self.measure(&a)?;
                let msg = format!("{}: reproduced {ar} (was {r})", form.describe());
                self.note(ops(&a), msg);
                if aev.is_some() && ar.rate() > r.rate() {
                    (cur, r, ev) = (a, ar, aev);
                    self.amplified = true;
                    continue 'rounds;
                }
            }
            break;
        }
        Ok((cur, r, ev))
    }

    fn minimize(&mut self, cur: &mut Candidate, k: u32) -> Result<(), String> {
        // 2. One program instead of a sequence.
        if cur.len() > 1 {
            self.step = "merge".into();
            let m = vec![merge(cur)];
            self.try_step(cur, vec![m], k, "merge the history into one program")?;
        }
        // 3. What had not started when the report appeared cannot have caused it.
        if let Some(started) = self.evidence.as_ref().map(|e| e.started.clone()) {
            if started.len() == ops(cur) && started.iter().any(|s| !s) {
                self.step = "truncate".into();
                let drop: BTreeSet<usize> = (0..started.len()).filter(|&i| !started[i]).collect();
                let c = remove_ops(cur, &drop);
                self.try_step(cur, vec![c], k, "drop operations not started by the report")?;
            }
        }
        // 4. Whole families unrelated to the crashing operation.
        self.drop_families(cur, k)?;
        // 5. Threads.
        self.drop_threads(cur, k)?;
        // 6. Delta debugging over operations.
        self.ddmin(cur, k)?;
        // 7. Repetition.
        self.simplify_reps(cur, k)?;
        // 8. Arguments.
        if self.opts.simplify_args {
            self.simplify_args(cur, k)?;
        }
        Ok(())
    }

    /// Fewer repetitions: each block's count halved while the bug stays, then the block run
    /// once, and each loop run once.
    fn simplify_reps(&mut self, cur: &mut Candidate, k: u32) -> Result<(), String> {
        self.step = "repetition".into();
        if self.amplified {
            // The repetitions are what makes this race reproducible: fewer of them would be
            // accepted on one lucky run and leave a reproducer that rarely reproduces.
            self.note(
                ops(cur),
                "kept: the race needed more repetitions, not fewer".into(),
            );
            return Ok(());
        }
        let reps = |c: &Candidate| -> Vec<(usize, usize, Rep)> {
            let mut v: Vec<(usize, usize, Rep)> = Vec::new();
            for (pi, p) in c.iter().enumerate() {
                for (i, o) in p.ops.iter().enumerate() {
                    if o.rep != Rep::Once && !v.iter().any(|(q, _, r)| *q == pi && *r == o.rep) {
                        v.push((pi, i, o.rep));
                    }
                }
            }
            v
        };
        let with = |c: &Candidate, pi: usize, old: Rep, new: Rep| -> Candidate {
            let mut c = c.clone();
            for o in &mut c[pi].ops {
                if o.rep == old {
                    o.rep = new;
                }
            }
            c[pi].normalize_reps();
            c
        };
        for (pi, i, _) in reps(cur) {
            loop {
                if !self.budget_left() {
                    return Ok(());
                }
                // This step removes no operation: the anchor stays where it is.
                let Some(rep) = cur.get(pi).and_then(|p| p.ops.get(i)).map(|o| o.rep) else {
                    break;
                };
                let (next, what) = match rep {
                    Rep::Block { block, times } if times > 2 => (
                        Rep::Block {
                            block,
                            times: times / 2,
                        },
                        format!("repeat {} times instead of {times}", times / 2),
                    ),
                    Rep::Block { times, .. } => {
                        (Rep::Once, format!("run once instead of {times} times"))
                    }
                    Rep::Loop => (Rep::Once, "run the loop once".to_string()),
                    Rep::Once => break,
                };
                let c = with(cur, pi, rep, next);
                if !self.try_step(cur, vec![c], k, &what)? {
                    break;
                }
            }
        }
        Ok(())
    }

    fn drop_families(&mut self, cur: &mut Candidate, k: u32) -> Result<(), String> {
        let Some(crash) = self.crash_op() else {
            return Ok(());
        };
        let f = flat(cur);
        let Some(crash_fam) = f.get(crash).map(|o| family(self.d, &o.name)) else {
            return Ok(());
        };
        let fams: BTreeSet<String> = f
            .iter()
            .map(|o| family(self.d, &o.name))
            .filter(|x| *x != crash_fam)
            .collect();
        if fams.is_empty() || !self.budget_left() {
            return Ok(());
        }
        self.step = "families".into();
        let of = |c: &Candidate, keep: &dyn Fn(&str) -> bool| -> Candidate {
            let drop: BTreeSet<usize> = flat(c)
                .iter()
                .enumerate()
                .filter(|(i, o)| *i != crash && !keep(&family(self.d, &o.name)))
                .map(|(i, _)| i)
                .collect();
            remove_ops(c, &drop)
        };
        let all = of(cur, &|x| x == crash_fam);
        let msg = format!("drop every family but {crash_fam}");
        if self.try_step(cur, vec![all], k, &msg)? || fams.len() == 1 {
            return Ok(());
        }
        for fam in fams {
            if !self.budget_left() {
                break;
            }
            let Some(crash) = self.crash_op() else {
                break;
            };
            let drop: BTreeSet<usize> = flat(cur)
                .iter()
                .enumerate()
                .filter(|(i, o)| *i != crash && family(self.d, &o.name) == fam)
                .map(|(i, _)| i)
                .collect();
            if drop.is_empty() {
                continue;
            }
            let c = remove_ops(cur, &drop);
            self.try_step(cur, vec![c], k, &format!("drop family {fam}"))?;
        }
        Ok(())
    }

    fn drop_threads(&mut self, cur: &mut Candidate, k: u32) -> Result<(), String> {
        let threads: BTreeSet<u32> = flat(cur).iter().map(|o| o.thread).collect();
        if threads.len() < 2 {
            return Ok(());
        }
        self.step = "threads".into();
        let crash_thread = self
            .crash_op()
            .and_then(|i| flat(cur).get(i).map(|o| o.thread));
        for t in threads {
            if Some(t) == crash_thread || !self.budget_left() {
                continue;
            }
            let drop: BTreeSet<usize> = flat(cur)
                .iter()
                .enumerate()
                .filter(|(_, o)| o.thread == t)
                .map(|(i, _)| i)
                .collect();
            let c = remove_ops(cur, &drop);
            self.try_step(cur, vec![c], k, &format!("drop thread {t}"))?;
        }
        let threads: BTreeSet<u32> = flat(cur).iter().map(|o| o.thread).collect();
        if threads.len() > 1 && self.budget_left() {
            let one: Candidate = cur
                .iter()
                .map(|p| Program {
                    ops: p
                        .ops
                        .iter()
                        .map(|o| crate::program::prog::Op {
                            thread: 0,
                            ..o.clone()
                        })
                        .collect(),
                })
                .map(|mut p: Program| {
                    p.normalize_reps();
                    p
                })
                .collect();
            self.try_step(cur, vec![one], k, "move every operation to one thread")?;
        }
        Ok(())
    }

    fn ddmin(&mut self, cur: &mut Candidate, k: u32) -> Result<(), String> {
        self.step = "ops".into();
        let mut chunk = ops(cur).div_ceil(2).max(1);
        loop {
            let mut start = 0;
            while start < ops(cur) && self.budget_left() {
                let n = ops(cur);
                let mut protected: BTreeSet<usize> = flat(cur)
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| SYNC_OPS.contains(&o.name.as_str()))
                    .map(|(i, _)| i)
                    .collect();
                protected.extend(self.crash_op());
                // The next few chunks, one candidate each (built in parallel: closures over
                // long programs are the only CPU work here).
                let starts: Vec<usize> = (0..self.oracle.slots().max(1))
                    .map(|j| start + j * chunk)
                    .filter(|&s| s < n)
                    .collect();
                let base = cur.clone();
                let cands: Vec<(usize, Candidate)> = starts
                    .par_iter()
                    .filter_map(|&s| {
                        let drop: BTreeSet<usize> = (s..(s + chunk).min(n)).collect();
                        // Taking the crashing operation along cannot work, and waits stay:
                        // skip the run.
                        if !closure(&base, &drop).is_disjoint(&protected) {
                            return None;
                        }
                        Some((s, remove_ops(&base, &drop)))
                    })
                    .filter(|(_, c)| !c.is_empty() && *c != base)
                    .collect();
                if cands.is_empty() {
                    start += starts.len().max(1) * chunk;
                    continue;
                }
                let last = starts.last().copied().unwrap_or(start);
                let what = format!(
                    "remove {chunk} op(s) at {}",
                    cands
                        .iter()
                        .map(|(s, _)| s.to_string())
                        .collect::<Vec<_>>()
                        .join("/")
                );
                let list: Vec<Candidate> = cands.iter().map(|(_, c)| c.clone()).collect();
                let before = cur.clone();
                if self.try_step(cur, list.clone(), k, &what)? {
                    // Continue at the chunk that went (the ops after it moved up).
                    let i = list.iter().position(|c| c == cur).unwrap_or(0);
                    start = cands[i].0;
                    debug_assert!(*cur != before);
                } else {
                    start = last + chunk;
                }
            }
            if chunk == 1 || !self.budget_left() {
                return Ok(());
            }
            chunk = chunk.div_ceil(2);
        }
    }

    fn simplify_args(&mut self, cur: &mut Candidate, k: u32) -> Result<(), String> {
        self.step = "args".into();
        let mut i = 0;
        while i < ops(cur) && self.budget_left() {
            // Candidates for ops i, i+1, ...: each op with all its simplifiable arguments
            // simplified at once.
            let mut cands = Vec::new();
            let mut j = i;
            while j < ops(cur) && cands.len() < self.oracle.slots().max(1) {
                if let Some(c) = self.simplified(cur, j) {
                    cands.push((j, c));
                }
                j += 1;
            }
            if cands.is_empty() {
                break;
            }
            let list: Vec<Candidate> = cands.iter().map(|(_, c)| c.clone()).collect();
            let names = cands
                .iter()
                .map(|(j, _)| j.to_string())
                .collect::<Vec<_>>()
                .join("/");
            if self.try_step(
                cur,
                list.clone(),
                k,
                &format!("simplify arguments of op {names}"),
            )? {
                let w = list.iter().position(|c| c == cur).unwrap_or(0);
                // One attempt per operation: the budget is better spent elsewhere.
                i = cands[w].0 + 1;
            } else {
                i = j;
            }
        }
        Ok(())
    }

    fn simplified(&self, c: &Candidate, idx: usize) -> Option<Candidate> {
        let mut out = c.clone();
        let mut base = 0;
        for p in &mut out {
            if idx < base + p.ops.len() {
                let op = &mut p.ops[idx - base];
                let desc = self.d.op(&op.name)?;
                let mut changed = false;
                for (a, ad) in op.args.iter_mut().zip(&desc.args) {
                    if let Arg::Int(v) = a {
                        if let Some(s) = simpler(&ad.name, &ad.ty, *v) {
                            *v = s;
                            changed = true;
                        }
                    }
                }
                return changed.then_some(out);
            }
            base += p.ops.len();
        }
        None
    }
}
