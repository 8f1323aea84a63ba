//! Runs a program: one OS thread per program thread, operations of a thread in order (a block
//! of them repeated, a loop until the other threads are done), arguments that refer to earlier
//! results wait for them, host operations are handed to the runner, and a watchdog enforces
//! every operation's deadline with a signal (offlining can block forever). An operation that
//! does not return after being signalled is reported stuck and its thread abandoned; the
//! program still ends.

use crate::kcov::Kcov;
use crate::ops::{self, Args, Ctx, Val};
use crate::protocol::{Event, ExecArg, ExecProgram, ExecRep, HostReply, Outcome, LOOP_ALONE_MS};
use crate::sys;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long an operation may keep running after its deadline signal before it is
/// declared stuck.
pub const GRACE: Duration = Duration::from_secs(2);
/// How long an executor waits, after its program's end, for operations abandoned as stuck
/// to return (longer than the host's hang wait, see `judge` in the harness).
pub const LATE_WAIT: Duration = Duration::from_secs(60);
const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

struct Running {
    tid: libc::pthread_t,
    op: usize,
    deadline: Instant,
    last_signal: Option<Instant>,
}

/// Where events go.
pub type Sink = Box<dyn Write + Send>;

/// A program being executed.
pub struct Engine {
    prog: ExecProgram,
    ctx: Ctx,
    out: Mutex<Sink>,
    state: Vec<AtomicU8>,
    results: Mutex<Vec<Option<Outcome>>>,
    cond: Condvar,
    host_waiters: Mutex<HashMap<usize, mpsc::SyncSender<Outcome>>>,
    running: Mutex<HashMap<u32, Running>>,
    signalled: Mutex<BTreeSet<usize>>,
    threads_left: Mutex<BTreeSet<u32>>,
    /// Threads whose last operation is a loop.
    loop_threads: BTreeSet<u32>,
    /// Set when the loops should stop.
    stop_loops: std::sync::atomic::AtomicBool,
    /// Per operation: runs so far, successful runs, time spent.
    counts: Mutex<Vec<(u32, u32, Duration)>>,
    /// Per operation: the last run's result while its block or loop still runs.
    partial: Mutex<Vec<Option<Outcome>>>,
    started: Instant,
    abandoned: Mutex<BTreeSet<u32>>,
    /// Operations abandoned as stuck whose call has not returned yet.
    stuck: Mutex<BTreeSet<usize>>,
    cover: Mutex<BTreeMap<u32, BTreeSet<u64>>>,
    deadline: Instant,
    kcov: bool,
    kmsg: Option<sys::Fd>,
}

extern "C" fn on_deadline(_: i32) {
    crate::ops::note_deadline();
}

/// Installs the deadline signal (SIGUSR1) handler without SA_RESTART, so that a blocked
/// system call returns EINTR instead of being restarted.
pub fn install_deadline_signal() {
    // SAFETY: installing a no-op handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_deadline as *const () as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

impl Engine {
    /// Prepares `prog`, writing events to `out`.
    pub fn new(prog: ExecProgram, out: Sink) -> Arc<Engine> {
        let n = prog.ops.len();
        let deadline = Instant::now() + Duration::from_millis(prog.timeout_ms.max(1));
        let threads: BTreeSet<u32> = prog.ops.iter().map(|o| o.thread).collect();
        let loop_threads: BTreeSet<u32> = prog
            .ops
            .iter()
            .filter(|o| o.rep == ExecRep::Loop)
            .map(|o| o.thread)
            .collect();
        let kcov = prog.kcov && sys::exists(crate::kcov::KCOV);
        let kmsg = prog
            .kmsg_id
            .as_ref()
            .and_then(|_| sys::open("/dev/kmsg", libc::O_WRONLY).ok());
        Arc::new(Engine {
            prog,
            ctx: Ctx::default(),
            out: Mutex::new(out),
            state: (0..n).map(|_| AtomicU8::new(PENDING)).collect(),
            results: Mutex::new(vec![None; n]),
            cond: Condvar::new(),
            host_waiters: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            signalled: Mutex::new(BTreeSet::new()),
            threads_left: Mutex::new(threads),
            loop_threads,
            stop_loops: std::sync::atomic::AtomicBool::new(false),
            counts: Mutex::new(vec![(0, 0, Duration::ZERO); n]),
            partial: Mutex::new(vec![None; n]),
            started: Instant::now(),
            abandoned: Mutex::new(BTreeSet::new()),
            stuck: Mutex::new(BTreeSet::new()),
            cover: Mutex::new(BTreeMap::new()),
            deadline,
            kcov,
            kmsg,
        })
    }

    /// Whether KCOV is collected.
    pub fn kcov(&self) -> bool {
        self.kcov
    }

    /// Writes one event line. A broken stdout (the runner went away) ends the executor.
    pub fn emit(&self, ev: &Event) {
        let line = match serde_json::to_string(ev) {
            Ok(l) => l,
            Err(_) => return,
        };
        let mut o = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if writeln!(o, "{line}").and_then(|_| o.flush()).is_err() {
            // SAFETY: nothing left to report to.
            unsafe { libc::_exit(3) };
        }
    }

    /// Delivers a host operation's result from the runner.
    pub fn host_reply(&self, r: HostReply) {
        if let Some(tx) = lock(&self.host_waiters).remove(&r.i) {
            let _ = tx.send(r.outcome);
        }
    }

    /// Runs the program to its end and emits coverage and [`Event::End`].
    pub fn run(self: &Arc<Engine>) {
        let mut per_thread: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, op) in self.prog.ops.iter().enumerate() {
            per_thread.entry(op.thread).or_default().push(i);
        }
        let start = Arc::new(std::sync::Barrier::new(per_thread.len() + 1));
        for (t, ops) in per_thread {
            let e = self.clone();
            let b = start.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("hotfuzz-t{t}"))
                .stack_size(1 << 20)
                .spawn(move || {
                    b.wait();
                    e.thread_main(t, &ops);
                });
            if spawned.is_err() {
                // Could not create the thread: its operations never run.
                self.emit(&Event::Log {
                    msg: format!("cannot start thread {t}"),
                });
                lock(&self.threads_left).remove(&t);
            }
        }
        let threads_started = Arc::strong_count(&start) - 1;
        if threads_started > 0 {
            start.wait();
        }
        self.watch();
        for (t, pcs) in std::mem::take(&mut *lock(&self.cover)) {
            self.emit(&Event::Cover {
                t,
                pcs: pcs.into_iter().collect(),
            });
        }
        let abandoned: Vec<u32> = lock(&self.abandoned).iter().copied().collect();
        let memory = abandoned.is_empty().then(crate::ops::memblock::snapshot);
        self.emit(&Event::End { abandoned, memory });
    }

    /// The watchdog: signals operations past their deadline, abandons stuck ones, and returns
    /// when every thread is finished or abandoned.
    fn watch(&self) {
        loop {
            {
                let left = lock(&self.threads_left);
                if left.is_empty() {
                    return;
                }
                let others_done = left.iter().all(|t| self.loop_threads.contains(t));
                let alone = self.loop_threads.len()
                    == self
                        .prog
                        .ops
                        .iter()
                        .map(|o| o.thread)
                        .collect::<BTreeSet<_>>()
                        .len();
                if (others_done && !alone)
                    || (alone && self.started.elapsed() >= Duration::from_millis(LOOP_ALONE_MS))
                {
                    self.stop_loops.store(true, Ordering::SeqCst);
                }
            }
            let now = Instant::now();
            let program_over = now >= self.deadline;
            if program_over {
                self.stop_loops.store(true, Ordering::SeqCst);
            }
            let mut stuck: Vec<(u32, usize)> = Vec::new();
            {
                let mut run = lock(&self.running);
                for (&t, r) in run.iter_mut() {
                    if now < r.deadline && !program_over {
                        continue;
                    }
                    if r.last_signal
                        .is_none_or(|s| now - s >= Duration::from_millis(50))
                    {
                        lock(&self.signalled).insert(r.op);
                        // SAFETY: signalling a live thread of this process (it is registered
                        // only while it runs the operation).
                        unsafe { libc::pthread_kill(r.tid, libc::SIGUSR1) };
                        r.last_signal = Some(now);
                    }
                    let limit = if program_over {
                        r.deadline.min(self.deadline)
                    } else {
                        r.deadline
                    };
                    if now >= limit + GRACE {
                        stuck.push((t, r.op));
                    }
                }
                for (t, _) in &stuck {
                    run.remove(t);
                }
            }
            for (t, i) in stuck {
                self.abandon(t, i);
            }
            if program_over && now >= self.deadline + GRACE * 2 {
                // Threads waiting on dependencies or host replies: give up on them too.
                let left: Vec<u32> = lock(&self.threads_left).iter().copied().collect();
                for t in left {
                    self.abandon_thread(t, "program timeout");
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn abandon(&self, t: u32, i: usize) {
        if self.state[i]
            .compare_exchange(RUNNING, DONE, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            let dur = Duration::from_millis(self.prog.ops[i].timeout_ms) + GRACE;
            let (runs, oks, spent) = lock(&self.counts)[i];
            lock(&self.stuck).insert(i);
            self.store(i, Outcome::Stuck);
            self.emit(&Event::Done {
                i,
                t,
                outcome: Outcome::Stuck,
                dur_us: (spent + dur).as_micros() as u64,
                kt_ns: sys::monotonic_ns(),
                runs: runs + 1,
                oks,
            });
        }
        // Operations of its block that had run: their last results stand.
        for (j, op) in self.prog.ops.iter().enumerate() {
            if op.thread == t
                && self.state[j]
                    .compare_exchange(RUNNING, DONE, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                let (runs, oks, spent) = lock(&self.counts)[j];
                let o = lock(&self.partial)[j].clone().unwrap_or(Outcome::Skipped {
                    why: "its block was abandoned".into(),
                });
                self.emit(&Event::Done {
                    i: j,
                    t,
                    outcome: o,
                    dur_us: spent.as_micros() as u64,
                    kt_ns: sys::monotonic_ns(),
                    runs,
                    oks,
                });
            }
        }
        self.abandon_thread(t, "thread stuck in an earlier operation");
    }

    fn abandon_thread(&self, t: u32, why: &str) {
        lock(&self.abandoned).insert(t);
        for (i, op) in self.prog.ops.iter().enumerate() {
            if op.thread == t
                && self.state[i]
                    .compare_exchange(PENDING, DONE, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                let o = Outcome::Skipped { why: why.into() };
                self.store(i, o.clone());
                self.emit(&Event::Done {
                    i,
                    t,
                    outcome: o,
                    dur_us: 0,
                    kt_ns: sys::monotonic_ns(),
                    runs: 0,
                    oks: 0,
                });
            }
        }
        lock(&self.threads_left).remove(&t);
    }

    fn store(&self, i: usize, o: Outcome) {
        lock(&self.results)[i] = Some(o);
        self.cond.notify_all();
    }

    fn thread_main(&self, t: u32, ops: &[usize]) {
        let kcov = if self.kcov { Kcov::open() } else { None };
        let mut cover = BTreeSet::new();
        let mut k = 0;
        while k < ops.len() {
            if lock(&self.abandoned).contains(&t) {
                return;
            }
            // The unit starting at ops[k]: one operation, a block, or a loop.
            let (unit, times): (Vec<usize>, Option<u32>) = match self.prog.ops[ops[k]].rep {
                ExecRep::Once => (vec![ops[k]], Some(1)),
                ExecRep::Loop => (vec![ops[k]], None),
                ExecRep::Block { block, times } => {
                    let n = ops[k..]
                        .iter()
                        .take_while(|&&i| {
                            matches!(self.prog.ops[i].rep, ExecRep::Block { block: b, .. } if b == block)
                        })
                        .count();
                    (ops[k..k + n].to_vec(), Some(times.max(1)))
                }
            };
            k += unit.len();
            let mut local: BTreeMap<usize, u64> = BTreeMap::new();
            let mut run = 0u32;
            let unit_started = Instant::now();
            'rep: loop {
                if let Some(n) = times {
                    let over_budget = self
                        .prog
                        .repeat_budget_ms
                        .is_some_and(|b| unit_started.elapsed() >= Duration::from_millis(b));
                    if run >= n || (run > 0 && (over_budget || Instant::now() >= self.deadline)) {
                        break;
                    }
                } else if run > 0 && self.stop_loops.load(Ordering::SeqCst) {
                    break;
                }
                for &i in &unit {
                    if lock(&self.abandoned).contains(&t) {
                        return;
                    }
                    let first = run == 0;
                    if first
                        && self.state[i]
                            .compare_exchange(PENDING, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
                            .is_err()
                    {
                        continue;
                    }
                    if !first && self.state[i].load(Ordering::SeqCst) != RUNNING {
                        // Finished (skipped) in an earlier run.
                        continue;
                    }
                    let args = match self.resolve(i, &local, &unit) {
                        Ok(a) => a,
                        Err(why) => {
                            lock(&self.partial)[i] = Some(Outcome::Skipped { why });
                            break 'rep;
                        }
                    };
                    if first {
                        self.mark(i, t);
                        self.emit(&Event::Start {
                            i,
                            t,
                            kt_ns: sys::monotonic_ns(),
                        });
                    }
                    let started = Instant::now();
                    let outcome = self.run_once(t, i, &args, kcov.as_ref(), &mut cover);
                    let spent = started.elapsed();
                    if lock(&self.stuck).remove(&i) {
                        self.came_back(i, t);
                    }
                    {
                        let mut c = lock(&self.counts);
                        c[i].0 += 1;
                        c[i].1 += u32::from(matches!(outcome, Outcome::Ok { .. }));
                        c[i].2 += spent;
                    }
                    if let Outcome::Ok { val: Some(v) } = &outcome {
                        local.insert(i, *v);
                    }
                    let stop = matches!(outcome, Outcome::Timeout { .. } | Outcome::Stuck);
                    lock(&self.partial)[i] = Some(outcome);
                    if stop {
                        // A repetition ends at an operation that ran into its deadline: it
                        // would only wait out the deadline again.
                        break 'rep;
                    }
                }
                run += 1;
            }
            for &i in &unit {
                let o = lock(&self.partial)[i].clone();
                if let Some(o) = o {
                    let (runs, oks, spent) = lock(&self.counts)[i];
                    self.finish(t, i, o, spent, runs, oks);
                } else if self.state[i]
                    .compare_exchange(PENDING, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    // Never ran: an earlier operation of its block ended the repetition.
                    self.finish(
                        t,
                        i,
                        Outcome::Skipped {
                            why: "its block stopped before it".into(),
                        },
                        Duration::ZERO,
                        0,
                        0,
                    );
                }
            }
        }
        if !cover.is_empty() {
            lock(&self.cover).insert(t, cover);
        }
        lock(&self.threads_left).remove(&t);
    }

    /// One run of operation `i` on thread `t` with resolved `args`.
    fn run_once(
        &self,
        t: u32,
        i: usize,
        args: &Args,
        kcov: Option<&Kcov>,
        cover: &mut BTreeSet<u64>,
    ) -> Outcome {
        let op = &self.prog.ops[i];
        if op.host {
            return self.host_call(i, args);
        }
        let Some(entry) = ops::find(&op.name) else {
            return Outcome::Unsupported {
                why: format!("the executor does not implement {}", op.name),
            };
        };
        if let Some(why) = ops::unsupported(entry) {
            return Outcome::Unsupported { why };
        }
        lock(&self.signalled).remove(&i);
        // SAFETY: pthread_self has no preconditions.
        let tid = unsafe { libc::pthread_self() };
        lock(&self.running).insert(
            t,
            Running {
                tid,
                op: i,
                deadline: Instant::now() + Duration::from_millis(op.timeout_ms.max(1)),
                last_signal: None,
            },
        );
        if let Some(k) = kcov {
            k.reset();
        }
        ops::clear_deadline();
        let o = (entry.run)(&self.ctx, args);
        if let Some(k) = kcov {
            k.collect(cover);
        }
        lock(&self.running).remove(&t);
        let was_signalled = lock(&self.signalled).contains(&i);
        match o {
            Outcome::Errno { errno, .. } if was_signalled => Outcome::Timeout { errno },
            // Finished right at the deadline; keep what it said.
            o => o,
        }
    }

    /// An operation abandoned as stuck returned after all: says so in the kernel log (with
    /// how long after the program started), so that the host can tell a slow operation, such
    /// as an offline that migrated for long under TCG, from a hung one.
    fn came_back(&self, i: usize, t: u32) {
        if let (Some(fd), Some(id)) = (&self.kmsg, &self.prog.kmsg_id) {
            let ms = self.started.elapsed().as_millis() as u64;
            let line = format!("<6>{}\n", crate::protocol::kmsg_late_marker(id, i, t, ms));
            // SAFETY: writing a buffer we own to our own fd; failures are ignored.
            unsafe { libc::write(fd.0, line.as_ptr().cast(), line.len()) };
        }
    }

    /// Waits, up to `limit`, for the operations abandoned as stuck to return (each one that
    /// does says so in the kernel log). Returns how many are still in the kernel.
    pub fn wait_for_stuck(&self, limit: Duration) -> usize {
        let until = Instant::now() + limit;
        loop {
            let left = lock(&self.stuck).len();
            if left == 0 || Instant::now() >= until {
                return left;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes the operation's start marker to the kernel log.
    fn mark(&self, i: usize, t: u32) {
        if let (Some(fd), Some(id)) = (&self.kmsg, &self.prog.kmsg_id) {
            let line = format!(
                "<6>{}\n",
                crate::protocol::kmsg_marker(id, i, t, &self.prog.ops[i].name)
            );
            // SAFETY: writing a buffer we own to our own fd; failures are ignored.
            unsafe { libc::write(fd.0, line.as_ptr().cast(), line.len()) };
        }
    }

    fn finish(&self, t: u32, i: usize, outcome: Outcome, dur: Duration, runs: u32, oks: u32) {
        if self.state[i]
            .compare_exchange(RUNNING, DONE, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            // Abandoned meanwhile: the watchdog already reported it.
            return;
        }
        self.store(i, outcome.clone());
        self.emit(&Event::Done {
            i,
            t,
            outcome,
            dur_us: dur.as_micros() as u64,
            kt_ns: sys::monotonic_ns(),
            runs,
            oks,
        });
    }

    /// Resolves arguments, waiting for results that references point to (a reference to an
    /// earlier operation of the same block run takes that run's value, `local`).
    fn resolve(
        &self,
        i: usize,
        local: &BTreeMap<usize, u64>,
        unit: &[usize],
    ) -> Result<Args, String> {
        let op = &self.prog.ops[i];
        let mut args = Args::default();
        for (name, a) in &op.args {
            let v = match a {
                ExecArg::Int(v) => Val::Int(*v),
                ExecArg::Str(s) => Val::Str(s.clone()),
                ExecArg::Ref(j) => {
                    if *j >= i {
                        return Err(format!("argument {name} refers to a later operation"));
                    }
                    if let Some(v) = local.get(j) {
                        args.map.insert(name.clone(), Val::Int(*v));
                        continue;
                    }
                    if unit.contains(j) {
                        return Err(format!(
                            "argument {name}: operation {j} of this block gave no value"
                        ));
                    }
                    match self.wait_result(*j) {
                        Some(Outcome::Ok { val: Some(v) }) => Val::Int(v),
                        Some(o) => {
                            return Err(format!(
                                "argument {name}: operation {j} gave no value ({})",
                                o.class()
                            ))
                        }
                        None => {
                            return Err(format!("argument {name}: operation {j} never finished"))
                        }
                    }
                }
            };
            args.map.insert(name.clone(), v);
        }
        Ok(args)
    }

    fn wait_result(&self, j: usize) -> Option<Outcome> {
        let mut r = lock(&self.results);
        loop {
            if let Some(o) = &r[j] {
                return Some(o.clone());
            }
            let now = Instant::now();
            if now >= self.deadline {
                return None;
            }
            r = self
                .cond
                .wait_timeout(r, (self.deadline - now).min(Duration::from_millis(100)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn host_call(&self, i: usize, args: &Args) -> Outcome {
        let (tx, rx) = mpsc::sync_channel(1);
        lock(&self.host_waiters).insert(i, tx);
        let args = args
            .map
            .iter()
            .map(|(k, v)| {
                let a = match v {
                    Val::Int(n) => ExecArg::Int(*n),
                    Val::Str(s) => ExecArg::Str(s.clone()),
                };
                (k.clone(), a)
            })
            .collect::<BTreeMap<String, ExecArg>>();
        let mut args = args;
        if let Some(avail) = mem_available() {
            args.insert(
                crate::host::ops::MEM_AVAILABLE.to_string(),
                ExecArg::Int(avail),
            );
        }
        self.emit(&Event::Host { i, args });
        let limit = Duration::from_millis(self.prog.ops[i].timeout_ms) + Duration::from_secs(30);
        let wait = limit.min(self.deadline.saturating_duration_since(Instant::now()) + GRACE);
        match rx.recv_timeout(wait) {
            Ok(o) => o,
            Err(_) => {
                lock(&self.host_waiters).remove(&i);
                Outcome::Stuck
            }
        }
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes.
pub fn mem_available() -> Option<u64> {
    let text = sys::read_file("/proc/meminfo", 8192).ok()?;
    let text = String::from_utf8_lossy(&text);
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
