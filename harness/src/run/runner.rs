//! Running a program on a guest: host operations through QMP, guest operations through the
//! executor over ssh, and a run log whose host timestamps line up with the console log
//! (`executing op N` markers), so a later step can tell which operation was running when a
//! splat appeared.

use crate::program::desc::Descriptions;
use crate::program::prog::Program;
use crate::run::hostops::HostOps;
pub use crate::run::runlog::RunLog;
use anyhow::{Context, Result};
use hotfuzz_executor::protocol::{BlockSnapshot, Event, HostReply, Outcome};
use hotfuzz_vm::console::ConsoleLine;
use hotfuzz_vm::ssh::Ssh;
use hotfuzz_vm::Vm;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Where the executor lives in the guest.
pub const EXECUTOR_GUEST_PATH: &str = "/usr/bin/hotfuzz-executor";

/// How to run a program.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Collect KCOV coverage when the kernel has it.
    pub kcov: bool,
    /// Limit for the whole program (default: the sum of its operations' deadlines, capped).
    pub timeout: Option<Duration>,
    /// Time to keep collecting console output after the program ended.
    pub settle: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            kcov: true,
            timeout: None,
            settle: Duration::from_millis(300),
        }
    }
}

/// What happened to one operation.
#[derive(Debug, Clone, PartialEq)]
pub struct OpResult {
    /// Program index.
    pub index: usize,
    /// Thread.
    pub thread: u32,
    /// How it ended (`None`: no result arrived, e.g. the guest died).
    pub outcome: Option<Outcome>,
    /// Time it took in the guest.
    pub duration: Duration,
    /// Host time its start was reported.
    pub started: Option<SystemTime>,
    /// Guest CLOCK_MONOTONIC at its start.
    pub kt_start_ns: Option<u64>,
}

/// What a program run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The program's id.
    pub program_id: String,
    /// Per-operation results, in program order.
    pub ops: Vec<OpResult>,
    /// Console lines printed while the program ran (and shortly after).
    pub console: Vec<ConsoleLine>,
    /// When the run started (host time).
    pub started: SystemTime,
    /// Wall time of the run.
    pub duration: Duration,
    /// Threads the executor abandoned (stuck in the kernel).
    pub abandoned: Vec<u32>,
    /// Why the run did not complete (guest died, executor died, timeout), if it did not.
    pub lost: Option<String>,
    /// KCOV PCs per thread.
    pub cover: BTreeMap<u32, Vec<u64>>,
    /// The memory blocks as the program left them (when no thread was stuck).
    pub memory: Option<Vec<BlockSnapshot>>,
    /// What the executor wrote to stderr.
    pub executor_stderr: String,
}

impl RunResult {
    /// Operations this kernel could not run.
    pub fn unsupported(&self, prog: &Program) -> BTreeSet<String> {
        self.ops
            .iter()
            .filter(|r| matches!(r.outcome, Some(Outcome::Unsupported { .. })))
            .map(|r| prog.ops[r.index].name.clone())
            .collect()
    }

    /// Count of each outcome class.
    pub fn summary(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in &self.ops {
            let k = r
                .outcome
                .as_ref()
                .map(|o| o.class())
                .unwrap_or_else(|| "lost".into());
            *m.entry(k).or_insert(0) += 1;
        }
        m
    }
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Ok { val: Some(v) } => format!("ok {v:#x}"),
        Outcome::Ok { val: None } => "ok".into(),
        Outcome::Errno { errno, msg } if msg.is_empty() => {
            format!("errno {errno} ({})", errno_name(*errno))
        }
        Outcome::Errno { errno, msg } => format!("errno {errno} ({}): {msg}", errno_name(*errno)),
        Outcome::Unsupported { why } => format!("unsupported: {why}"),
        Outcome::Timeout { errno } => format!("timed out (interrupted, errno {errno})"),
        Outcome::Stuck => "STUCK (did not return after its deadline)".into(),
        Outcome::Skipped { why } => format!("skipped: {why}"),
    }
}

/// Human form of an outcome, as printed by `hotfuzz run` and the run log.
pub fn describe_outcome(o: Option<&Outcome>) -> String {
    o.map(describe).unwrap_or_else(|| "no result".into())
}

/// The symbolic name of an errno.
pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EHWPOISON => "EHWPOISON",
        _ => "?",
    }
}

/// Runs programs on one guest: `V` is `&Vm` for a borrowed guest, or `Arc<Vm>` for a runner
/// that lives as long as the guest it shares ownership of (the fuzzer's).
pub struct Runner<V: std::ops::Deref<Target = Vm> = std::sync::Arc<Vm>> {
    vm: V,
    ssh: Ssh,
    /// Host-side device state shared by the programs run on this guest.
    pub host: HostOps,
    log: RunLog,
}

impl<V: std::ops::Deref<Target = Vm>> Runner<V> {
    /// A runner for `vm` logging to `run_log` (its own ssh session).
    pub fn new(vm: V, run_log: &Path) -> Result<Runner<V>> {
        let ssh = vm
            .new_session()
            .context("opening the runner's ssh session")?;
        let host = HostOps::new(vm.machine());
        Ok(Runner {
            vm,
            ssh,
            host,
            log: RunLog::open(run_log)?,
        })
    }

    /// The run log.
    pub fn log(&mut self) -> &mut RunLog {
        &mut self.log
    }

    /// Runs `prog` to its end. Errors are infrastructure failures before the program started;
    /// a guest or executor that dies mid-run gives a result with `lost` set.
    pub fn run(
        &mut self,
        d: &Descriptions,
        prog: &Program,
        opts: &RunOptions,
    ) -> Result<RunResult> {
        let id = prog.id(d);
        let budget = opts
            .timeout
            .unwrap_or_else(|| Duration::from_millis(prog.deadline_ms(d) + 10_000))
            .min(Duration::from_secs(900));
        let exec = prog.to_exec(d, budget.as_millis() as u64, opts.kcov);
        let line = serde_json::to_string(&exec).context("encoding the program")? + "\n";
        let mark = self.vm.console().mark();
        let started = SystemTime::now();
        let t0 = Instant::now();
        self.log
            .program(&id, prog.ops.len(), prog.threads(), &prog.print(d));
        let mut ops: Vec<OpResult> = (0..prog.ops.len())
            .map(|i| OpResult {
                index: i,
                thread: prog.ops[i].thread,
                outcome: None,
                duration: Duration::ZERO,
                started: None,
                kt_start_ns: None,
            })
            .collect();
        let mut cover = BTreeMap::new();
        let mut abandoned = Vec::new();
        let mut memory = None;
        let mut lost = None;
        let mut stderr = Vec::new();
        let hard_deadline = t0 + budget + Duration::from_secs(30);
        {
            let vm: &Vm = &self.vm;
            let log = &mut self.log;
            let host = Mutex::new(&mut self.host);
            // A guest that does not even let the executor start is an observation (it may
            // be hung), not a harness error.
            let started_remote = self.ssh.start(EXECUTOR_GUEST_PATH).and_then(|mut r| {
                r.write_all(line.as_bytes(), Instant::now() + Duration::from_secs(30))?;
                Ok(r)
            });
            let mut remote = match started_remote {
                Ok(r) => Some(r),
                Err(e) => {
                    lost = Some(format!("cannot start the executor in the guest: {e}"));
                    None
                }
            };
            let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
            std::thread::scope(|s| {
                let Some(remote) = remote.as_mut() else {
                    return;
                };
                let mut buf = Vec::new();
                let mut ended = false;
                while !ended {
                    while let Ok((i, o)) = rx.try_recv() {
                        log.line(&format!("host op {i} done: {}", describe(&o)));
                        let reply = serde_json::to_string(&HostReply { i, outcome: o })
                            .unwrap_or_default()
                            + "\n";
                        if let Err(e) = remote
                            .write_all(reply.as_bytes(), Instant::now() + Duration::from_secs(10))
                        {
                            lost = Some(format!("cannot answer host operation {i}: {e}"));
                            return;
                        }
                    }
                    let chunk = match remote.read(Duration::from_millis(20)) {
                        Ok(c) => c,
                        Err(e) => {
                            lost = Some(format!("lost the executor: {e}"));
                            break;
                        }
                    };
                    stderr.extend_from_slice(&chunk.stderr);
                    buf.extend_from_slice(&chunk.stdout);
                    while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                        let raw: Vec<u8> = buf.drain(..=nl).collect();
                        let text = String::from_utf8_lossy(&raw);
                        let ev: Event = match serde_json::from_str(text.trim()) {
                            Ok(e) => e,
                            Err(_) => {
                                log.line(&format!("executor said: {}", text.trim()));
                                continue;
                            }
                        };
                        match ev {
                            Event::Hello { .. } => {}
                            Event::Start { i, t, kt_ns } => {
                                if let Some(r) = ops.get_mut(i) {
                                    r.started = Some(SystemTime::now());
                                    r.kt_start_ns = Some(kt_ns);
                                }
                                let text = prog.ops.get(i).map(|o| o.print(d)).unwrap_or_default();
                                log.line(&format!(
                                    "executing op {i} (thread {t}, guest time {}.{:06}): {text}",
                                    kt_ns / 1_000_000_000,
                                    kt_ns % 1_000_000_000 / 1000
                                ));
                            }
                            Event::Done {
                                i,
                                t,
                                outcome,
                                dur_us,
                                ..
                            } => {
                                log.line(&format!(
                                    "op {i} done (thread {t}) in {:.3} ms: {}",
                                    dur_us as f64 / 1000.0,
                                    describe(&outcome)
                                ));
                                if let Some(r) = ops.get_mut(i) {
                                    r.outcome = Some(outcome);
                                    r.duration = Duration::from_micros(dur_us);
                                }
                            }
                            Event::Host { i, args } => {
                                let name =
                                    prog.ops.get(i).map(|o| o.name.clone()).unwrap_or_default();
                                let tx = tx.clone();
                                let host = &host;
                                s.spawn(move || {
                                    let o = host
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .run(vm, &name, &args);
                                    let _ = tx.send((i, o));
                                });
                            }
                            Event::Cover { t, pcs } => {
                                cover.insert(t, pcs);
                            }
                            Event::Log { msg } => log.line(&format!("executor: {msg}")),
                            Event::End {
                                abandoned: a,
                                memory: m,
                            } => {
                                abandoned = a;
                                memory = m;
                                ended = true;
                            }
                        }
                    }
                    if ended {
                        break;
                    }
                    if chunk.eof {
                        let (st, sig) = remote.exit();
                        lost = Some(format!(
                            "the executor exited before finishing (status {st:?}, signal {sig:?}): {}",
                            String::from_utf8_lossy(&stderr).trim()
                        ));
                        break;
                    }
                    if !vm.is_alive() {
                        lost = Some("QEMU exited during the program".into());
                        break;
                    }
                    if Instant::now() >= hard_deadline {
                        lost = Some(format!("the program did not finish within {budget:?}"));
                        break;
                    }
                }
            });
        }
        let duration = t0.elapsed();
        if let Some(l) = &lost {
            self.log.line(&format!("program {id} lost: {l}"));
        }
        std::thread::sleep(opts.settle);
        let console = self.vm.console().lines_since(mark);
        let result = RunResult {
            program_id: id.clone(),
            ops,
            console,
            started,
            duration,
            abandoned,
            lost,
            cover,
            memory,
            executor_stderr: String::from_utf8_lossy(&stderr).into_owned(),
        };
        let summary: Vec<String> = result
            .summary()
            .into_iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        self.log.line(&format!(
            "program {id} done in {:.3} s: {}",
            duration.as_secs_f64(),
            summary.join(", ")
        ));
        Ok(result)
    }
}
