//! The executor's wire protocol, shared with the host-side runner.
//!
//! The runner starts `hotfuzz-executor` over ssh and writes one JSON line: an
//! [`ExecProgram`]. The executor answers with JSON lines of [`Event`]s on stdout. When one of
//! its threads reaches a host operation (QMP, done by the runner) it emits
//! [`Event::Host`] and waits for a [`HostReply`] line on stdin. [`Event::End`] closes the
//! program; the runner never waits for EOF (a thread stuck in the kernel can keep the process,
//! and so stdout, alive).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped when the protocol changes; the runner refuses a mismatching executor.
pub const PROTOCOL_VERSION: u32 = 2;

/// A program as the executor runs it: names and resolved argument values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecProgram {
    /// Must equal [`PROTOCOL_VERSION`].
    pub version: u32,
    /// Operations in program order.
    pub ops: Vec<ExecOp>,
    /// Collect KCOV coverage when the kernel offers it.
    #[serde(default)]
    pub kcov: bool,
    /// Hard limit for the whole program in milliseconds.
    pub timeout_ms: u64,
    /// When set, each operation's start is also written to the kernel log
    /// (`hotfuzz: executing program ID op N (thread T): NAME`), so the console shows exactly
    /// which operation ran before each kernel message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kmsg_id: Option<String>,
    /// Report every file write an operation makes as a [`Event::Log`] (`write PATH VALUE:
    /// result`), for reproducers a person reads.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trace: bool,
    /// How long a repeated block keeps starting new runs, in milliseconds. Campaigns set
    /// [`REPEAT_BUDGET_MS`] so that one generated program cannot hold the guest for `times`
    /// rounds; without it (a reproducer, a regression entry, `hotfuzz run`) a block runs all
    /// its rounds, bounded only by the program's `timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_budget_ms: Option<u64>,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    /// Position in the program.
    pub index: usize,
    /// Thread it runs on; operations of one thread run in order.
    pub thread: u32,
    /// Operation name (from the descriptions).
    pub name: String,
    /// Executed by the runner on the host (QMP), not in the guest.
    #[serde(default)]
    pub host: bool,
    /// Arguments by name.
    pub args: BTreeMap<String, ExecArg>,
    /// Deadline in milliseconds; past it the thread is interrupted with a signal.
    pub timeout_ms: u64,
    /// The operation as program text, for people reading a driver's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// How it repeats.
    #[serde(default, skip_serializing_if = "ExecRep::is_once")]
    pub rep: ExecRep,
}

/// How an operation repeats (see the program model in hotfuzz).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecRep {
    /// Once.
    #[default]
    Once,
    /// Part of a block of consecutive operations of its thread that runs `times` times in a
    /// row. A repetition stops early when one of its operations times out or gets stuck.
    Block {
        /// Block id.
        block: u32,
        /// How often.
        times: u32,
    },
    /// Again and again until every thread without a loop has finished (or, when all
    /// threads loop, for [`LOOP_ALONE_MS`]); stops early like a block.
    Loop,
}

impl ExecRep {
    /// Whether it is [`ExecRep::Once`].
    pub fn is_once(&self) -> bool {
        *self == ExecRep::Once
    }
}

/// How long loops run when there is no thread without one.
pub const LOOP_ALONE_MS: u64 = 2000;

/// How long a repeated block of a campaign's program keeps starting new runs (see
/// [`ExecProgram::repeat_budget_ms`]): a block whose operations each take seconds would
/// otherwise keep the guest for `times` rounds.
pub const REPEAT_BUDGET_MS: u64 = 3000;

/// An argument value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecArg {
    /// An integer (two's complement for negative values).
    Int(u64),
    /// A string.
    Str(String),
    /// The value returned by the operation at this program index.
    Ref(usize),
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Outcome {
    /// Succeeded; resource-producing operations return a value.
    Ok {
        /// The produced value, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        val: Option<u64>,
    },
    /// Failed with an errno (the kernel's answer, or the runner's for host operations).
    Errno {
        /// Positive errno.
        errno: i32,
        /// What failed, when more than the errno is known.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        msg: String,
    },
    /// The running kernel lacks the interface (no gup_test, no memtrace, ...).
    Unsupported {
        /// What is missing.
        why: String,
    },
    /// Still running at its deadline; interrupted by a signal and returned (offline gave up).
    Timeout {
        /// errno the interrupted call returned (EINTR, usually).
        errno: i32,
    },
    /// Did not return even after being signalled; its thread was abandoned.
    Stuck,
    /// Not run: an argument's producer failed or was stuck, or its thread was abandoned.
    Skipped {
        /// Why.
        why: String,
    },
}

impl Outcome {
    /// A plain success.
    pub fn ok() -> Outcome {
        Outcome::Ok { val: None }
    }

    /// A success producing `val`.
    pub fn val(val: u64) -> Outcome {
        Outcome::Ok { val: Some(val) }
    }

    /// An errno failure.
    pub fn errno(errno: i32) -> Outcome {
        Outcome::Errno {
            errno,
            msg: String::new(),
        }
    }

    /// Short class name used in summaries and state signatures.
    pub fn class(&self) -> String {
        match self {
            Outcome::Ok { .. } => "ok".into(),
            Outcome::Errno { errno, .. } => format!("errno:{errno}"),
            Outcome::Unsupported { .. } => "unsupported".into(),
            Outcome::Timeout { .. } => "timeout".into(),
            Outcome::Stuck => "stuck".into(),
            Outcome::Skipped { .. } => "skipped".into(),
        }
    }
}

/// Executor → runner messages (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "ev")]
pub enum Event {
    /// The executor started and understood the program.
    Hello {
        /// Protocol version.
        version: u32,
        /// Whether KCOV is collected.
        kcov: bool,
    },
    /// An operation started. `kt_ns` is the guest's CLOCK_MONOTONIC (comparable to printk
    /// timestamps).
    Start {
        /// Program index.
        i: usize,
        /// Thread.
        t: u32,
        /// Guest monotonic time in nanoseconds.
        kt_ns: u64,
    },
    /// An operation finished (for a repeated one: its last run; the counts cover all runs).
    Done {
        /// Program index.
        i: usize,
        /// Thread.
        t: u32,
        /// Result (of the last run).
        outcome: Outcome,
        /// Duration in microseconds (of all runs together).
        dur_us: u64,
        /// Guest monotonic time in nanoseconds.
        kt_ns: u64,
        /// How many times it ran (1 for operations that run once).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        runs: u32,
        /// How many of those runs succeeded.
        #[serde(default, skip_serializing_if = "is_zero")]
        oks: u32,
    },
    /// Please run host operation `i` and answer with a [`HostReply`]. References among its
    /// arguments are already resolved to the values they refer to.
    Host {
        /// Program index.
        i: usize,
        /// Arguments by name (only `int` and `str`).
        args: BTreeMap<String, ExecArg>,
    },
    /// KCOV PCs a thread covered (deduplicated, sorted).
    Cover {
        /// Thread.
        t: u32,
        /// Kernel PCs.
        pcs: Vec<u64>,
    },
    /// A diagnostic message.
    Log {
        /// Text.
        msg: String,
    },
    /// The agent's answer to [`Request::Sync`]: everything it sent before this is from before
    /// the request (after a snapshot restore, from another life of the guest).
    Sync {
        /// The request's nonce.
        nonce: u64,
    },
    /// The agent's answer to [`Request::Exec`].
    Exited {
        /// Exit status (None: killed by a signal, or at the timeout).
        status: Option<i32>,
        /// Standard output.
        stdout: String,
        /// Standard error.
        stderr: String,
        /// The command ran into its timeout and was killed.
        timed_out: bool,
    },
    /// The agent's child executor died before the program's `end` (the OOM killer, a crash).
    Died {
        /// Its exit status, if it exited.
        status: Option<i32>,
        /// The signal that killed it, if one did.
        signal: Option<i32>,
    },
    /// The program is over. `abandoned` lists threads left stuck in the kernel.
    End {
        /// Abandoned threads.
        abandoned: Vec<u32>,
        /// The memory blocks as the program left them (not read when a thread is stuck: a
        /// stuck offline may hold locks a sysfs read would wait for).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memory: Option<Vec<BlockSnapshot>>,
    },
}

/// What every kernel-log marker starts with.
pub const MARKER_PREFIX: &str = "hotfuzz: executing program ";

/// The line the executor writes into the kernel log before operation `op` of program
/// `program` starts on thread `thread` (without the `<6>` log level).
pub fn kmsg_marker(program: &str, op: usize, thread: u32, name: &str) -> String {
    format!("{MARKER_PREFIX}{program} op {op} (thread {thread}): {name}")
}

/// What starts the line the executor writes into the kernel log when an operation that the
/// watchdog abandoned as stuck returns after all.
pub const LATE_PREFIX: &str = "hotfuzz: abandoned operation returned: program ";

/// The line (without the `<6>` log level) saying that operation `op` of `program`, abandoned
/// as stuck, returned `ms` milliseconds after the program started: it was slow, not hung.
pub fn kmsg_late_marker(program: &str, op: usize, thread: u32, ms: u64) -> String {
    format!("{LATE_PREFIX}{program} op {op} (thread {thread}) after {ms} ms")
}

/// A late-return line read back from a console line: (program, op, milliseconds).
pub fn parse_kmsg_late(line: &str) -> Option<(String, usize, u64)> {
    let rest = line.split(LATE_PREFIX).nth(1)?;
    let (program, rest) = rest.split_once(" op ")?;
    let (op, rest) = rest.split_once(' ')?;
    let ms = rest.split(") after ").nth(1)?.strip_suffix(" ms")?;
    Some((
        program.to_string(),
        op.parse().ok()?,
        ms.trim().parse().ok()?,
    ))
}

/// A kernel-log marker read back from a console line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The program's id.
    pub program: String,
    /// The operation's index.
    pub op: usize,
    /// Its thread.
    pub thread: u32,
}

/// The marker in a console line (whatever prefixes the console put before it), if any.
pub fn parse_kmsg_marker(line: &str) -> Option<Marker> {
    let rest = line.split(MARKER_PREFIX).nth(1)?;
    let (program, rest) = rest.split_once(" op ")?;
    let (op, rest) = rest.split_once(' ')?;
    let thread = rest.strip_prefix("(thread ")?.split(')').next()?;
    Some(Marker {
        program: program.to_string(),
        op: op.parse().ok()?,
        thread: thread.parse().ok()?,
    })
}

fn one() -> u32 {
    1
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// One memory block at the end of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockSnapshot {
    /// N of `memoryN`.
    pub id: u64,
    /// What it is: see [`BlockSnapshot::state_name`].
    pub state: u8,
}

impl BlockSnapshot {
    /// Offline.
    pub const OFFLINE: u8 = 0;
    /// Online in a kernel zone (DMA, DMA32, Normal).
    pub const KERNEL: u8 = 1;
    /// Online in ZONE_MOVABLE.
    pub const MOVABLE: u8 = 2;
    /// Going online or offline, or unreadable.
    pub const OTHER: u8 = 3;

    /// A short name of `state`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            Self::OFFLINE => "offline",
            Self::KERNEL => "kernel",
            Self::MOVABLE => "movable",
            _ => "other",
        }
    }
}

/// Host → guest agent: one request per line on the agent's serial port
/// (`hotfuzz-executor serve`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "req")]
pub enum Request {
    /// Answer with [`Event::Sync`]. A run still going on is given up (its executor is left
    /// to finish alone).
    Sync {
        /// Echoed back.
        nonce: u64,
    },
    /// Run a program: its events follow, and the [`HostReply`] lines the host sends are
    /// passed to it until its [`Event::End`].
    Run {
        /// The program.
        program: ExecProgram,
    },
    /// Run a shell command (`/bin/sh -c`), answered with [`Event::Exited`].
    Exec {
        /// The command.
        cmd: String,
        /// Killed after this many milliseconds.
        timeout_ms: u64,
    },
}

/// The name of the guest agent's virtio-serial port.
pub const AGENT_PORT: &str = "hotfuzz.agent";

/// Runner → executor: the result of a host operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReply {
    /// Program index.
    pub i: usize,
    /// Result.
    pub outcome: Outcome,
}

/// Output of `hotfuzz-executor --probe`: which operations this kernel cannot run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Operation name → reason.
    pub unsupported: BTreeMap<String, String>,
    /// Guest operations the executor implements.
    pub implemented: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_read_back() {
        let l = format!(
            "[   12.5] {}",
            kmsg_marker("0123abcd", 14, 1, "memblock_state")
        );
        assert_eq!(
            parse_kmsg_marker(&l),
            Some(Marker {
                program: "0123abcd".into(),
                op: 14,
                thread: 1
            })
        );
        assert_eq!(parse_kmsg_marker("[ 1.0] something else"), None);
        assert_eq!(parse_kmsg_marker("hotfuzz: executing program x op y"), None);
    }

    #[test]
    fn events_round_trip_as_tagged_json() {
        let e = Event::Done {
            i: 3,
            t: 1,
            outcome: Outcome::Errno {
                errno: 16,
                msg: String::new(),
            },
            dur_us: 5,
            kt_ns: 7,
            runs: 1,
            oks: 0,
        };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(
            s,
            r#"{"ev":"done","i":3,"t":1,"outcome":{"status":"errno","errno":16},"dur_us":5,"kt_ns":7}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&s).unwrap(), e);
        let a = serde_json::to_string(&ExecArg::Ref(2)).unwrap();
        assert_eq!(a, r#"{"ref":2}"#);
        // A repeated operation carries its counts.
        let r = Event::Done {
            i: 0,
            t: 0,
            outcome: Outcome::ok(),
            dur_us: 1,
            kt_ns: 2,
            runs: 32,
            oks: 30,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.ends_with(r#""runs":32,"oks":30}"#), "{s}");
        assert_eq!(serde_json::from_str::<Event>(&s).unwrap(), r);
    }
}
