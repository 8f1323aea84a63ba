//! Running a program on a guest: guest operations through the executor behind the guest
//! agent, host operations over QMP (both implemented once, in the executor crate; this module
//! drives them with its shared loop), and a run log whose host timestamps line up with the
//! console log (`executing op N` markers), so a later step can tell which operation was
//! running when a splat appeared.

use crate::program::desc::Descriptions;
use crate::program::prog::Program;
use crate::run::agent::Agent;
use crate::run::runlog;
pub use crate::run::runlog::RunLog;
use anyhow::{Context, Result};
use hotfuzz_executor::host::drive::{self, Observer};
use hotfuzz_executor::host::ops::{HostMachine, HostOps, Monitor, MonitorError};
use hotfuzz_executor::protocol::{BlockSnapshot, Event, Outcome, Request};
use hotfuzz_vm::console::ConsoleLine;
use hotfuzz_vm::qmp::Qmp;
use hotfuzz_vm::{BuiltImage, Kernel, MachineConfig, Vm, VmOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// How long a repeated block keeps starting rounds: a campaign sets
    /// [`CAMPAIGN_REPEAT_BUDGET`]; `None` runs every round a program asks for (reproducers,
    /// regression entries, `hotfuzz run`), within the program's timeout.
    pub repeat_budget: Option<Duration>,
}

/// The virtio-mem devices' sizes now (empty without devices, or when QMP does not answer:
/// the run log then just lacks the line).
fn devices_now(vm: &Vm) -> Vec<runlog::DeviceAtStart> {
    crate::run::probe::virtio_mem_devices(vm)
        .unwrap_or_default()
        .iter()
        .map(|d| runlog::DeviceAtStart {
            dev: d.index,
            plugged: d.size,
            requested: d.requested,
        })
        .collect()
}

/// The repetition budget of campaigns' programs.
pub const CAMPAIGN_REPEAT_BUDGET: Duration =
    Duration::from_millis(hotfuzz_executor::protocol::REPEAT_BUDGET_MS);

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            kcov: true,
            timeout: None,
            settle: Duration::from_millis(300),
            repeat_budget: None,
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
    /// Guest CLOCK_MONOTONIC at its start (of its first run).
    pub kt_start_ns: Option<u64>,
    /// Guest CLOCK_MONOTONIC at its end (of its last run).
    pub kt_end_ns: Option<u64>,
    /// How many times it ran (a block's or loop's operations more than once).
    pub runs: u32,
    /// How many of those runs succeeded.
    pub oks: u32,
}

/// What a program run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The program's id.
    pub program_id: String,
    /// Per-operation results, in program order.
    pub ops: Vec<OpResult>,
    /// Console lines printed while the program ran (and shortly after; judging brings them
    /// up to date).
    pub console: Vec<ConsoleLine>,
    /// Index of the first console line that belongs to the run.
    pub console_mark: u64,
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

/// hotfuzz's QMP client as the monitor host operations run on.
pub struct QmpMonitor<'a> {
    qmp: &'a Qmp,
    /// Set when a command got no answer in time: QEMU's main loop is stuck (a device_add
    /// that never returned has been seen), and the guest's I/O with it.
    unanswered: &'a AtomicBool,
}

impl<'a> QmpMonitor<'a> {
    /// Host operations' view of `qmp`; `unanswered` is set when a command times out.
    pub fn new(qmp: &'a Qmp, unanswered: &'a AtomicBool) -> QmpMonitor<'a> {
        QmpMonitor { qmp, unanswered }
    }
}

impl Monitor for QmpMonitor<'_> {
    fn execute(
        &self,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, MonitorError> {
        if self.unanswered() {
            // Behind a command that never came back, this one would wait its 30 s too.
            return Err(MonitorError::Timeout(format!(
                "QMP {command}: the monitor stopped answering"
            )));
        }
        self.qmp.execute(command, arguments).map_err(|e| match e {
            hotfuzz_vm::Error::QemuGone(m) => MonitorError::Gone(m),
            hotfuzz_vm::Error::Timeout(m) => {
                self.unanswered.store(true, Ordering::SeqCst);
                MonitorError::Timeout(m)
            }
            e => MonitorError::Refused(e.to_string()),
        })
    }

    fn event_mark(&self) -> usize {
        self.qmp.event_mark()
    }

    fn unanswered(&self) -> bool {
        self.unanswered.load(Ordering::SeqCst)
    }

    fn events_since(&self, mark: usize) -> Vec<(String, serde_json::Value)> {
        self.qmp
            .events_since(mark)
            .into_iter()
            .map(|e| (e.name, e.data))
            .collect()
    }
}

/// What host operations know about a machine.
pub fn host_machine(m: &MachineConfig) -> HostMachine {
    HostMachine {
        vmem: m.virtio_mem.iter().map(|d| d.id.clone()).collect(),
        hotplug_ports: m.hotplug_ports,
        numa: m.numa_nodes > 1,
    }
}

/// Runs programs on one guest: `V` is `&Vm` for a borrowed guest, or `Arc<Vm>` for a runner
/// that lives as long as the guest it shares ownership of (the fuzzer's).
pub struct Runner<V: std::ops::Deref<Target = Vm> = std::sync::Arc<Vm>> {
    vm: V,
    agent: Agent,
    /// Host-side device state shared by the programs run on this guest.
    pub host: HostOps,
    log: RunLog,
}

/// How long a guest's agent may take to answer a new runner. It answers within a second of
/// the guest being ready (85 ms at most after a snapshot restore); one that is silent for
/// 20 s is not going to answer, and the guest is better booted again.
const AGENT_TIMEOUT: Duration = Duration::from_secs(20);

/// The run log and per-operation results, as the drive loop reports them.
struct Recorder<'a> {
    log: &'a mut RunLog,
    prog: &'a Program,
    d: &'a Descriptions,
    vm: &'a Vm,
    ops: Vec<OpResult>,
    cover: BTreeMap<u32, Vec<u64>>,
    stderr: String,
}

impl Observer for Recorder<'_> {
    fn event(&mut self, ev: &Event) {
        match ev {
            Event::Start { i, t, kt_ns } => {
                if let Some(r) = self.ops.get_mut(*i) {
                    r.started = Some(SystemTime::now());
                    r.kt_start_ns = Some(*kt_ns);
                }
                let text = self
                    .prog
                    .ops
                    .get(*i)
                    .map(|o| o.print(self.d))
                    .unwrap_or_default();
                self.log.line(&format!(
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
                kt_ns,
                runs,
                oks,
            } => {
                let times = if *runs != 1 {
                    format!(", {oks} of {runs} runs ok")
                } else {
                    String::new()
                };
                self.log.line(&format!(
                    "op {i} done (thread {t}) in {:.3} ms{times}: {}",
                    *dur_us as f64 / 1000.0,
                    describe(outcome)
                ));
                if let Some(r) = self.ops.get_mut(*i) {
                    r.outcome = Some(outcome.clone());
                    r.duration = Duration::from_micros(*dur_us);
                    r.kt_end_ns = Some(*kt_ns);
                    r.runs = *runs;
                    r.oks = *oks;
                }
            }
            Event::Cover { t, pcs } => {
                self.cover.insert(*t, pcs.clone());
            }
            Event::Log { msg } => {
                if let Some(s) = msg.strip_prefix("executor stderr: ") {
                    self.stderr.push_str(s);
                    self.stderr.push('\n');
                }
                self.log.line(&format!("executor: {msg}"));
            }
            _ => {}
        }
    }

    fn host_done(&mut self, i: usize, o: &Outcome) {
        self.log.line(&format!("host op {i} done: {}", describe(o)));
    }

    fn noise(&mut self, line: &str) {
        self.log.line(&format!("executor said: {line}"));
    }

    fn check(&mut self) -> Option<String> {
        if !self.vm.is_alive() {
            return Some("QEMU exited during the program".into());
        }
        // A stopped QEMU (SIGSTOP from outside) answers nothing until it is continued: the
        // program would wait out its whole deadline for a guest that is not running.
        self.vm
            .stopped()
            .then(|| "QEMU was stopped from outside during the program".to_string())
    }
}

/// What the console says about the agent, for an agent that did not answer: whether the guest
/// finished its init and the agent's own messages (the last few), so the next such failure
/// says where it stopped.
fn agent_evidence(vm: &Vm) -> String {
    let lines = vm.console().last_lines(2000);
    let ready = lines.iter().any(|l| l.text.contains("hotfuzz-init: ready"));
    let agent: Vec<&str> = lines
        .iter()
        .map(|l| l.text.as_str())
        .filter(|t| t.contains("hotfuzz-executor") || t.contains("/usr/bin/agent"))
        .collect();
    let shown = &agent[agent.len().saturating_sub(3)..];
    let died = if vm.is_alive() {
        String::new()
    } else {
        let first = lines
            .iter()
            .map(|l| l.text.as_str())
            .find(|t| t.contains("Oops") || t.contains("BUG:") || t.contains("Kernel panic"));
        format!(
            "; the guest died{}",
            first.map(|t| format!(": {}", t.trim())).unwrap_or_default()
        )
    };
    format!(
        " (guest init {}{died}; agent messages on the console: {})",
        if ready { "finished" } else { "not finished" },
        if shown.is_empty() {
            "none".to_string()
        } else {
            shown.join(" | ")
        }
    )
}

/// Connects to `vm`'s agent, the error saying what the console shows about it.
fn connect_agent(vm: &Vm) -> Result<Agent> {
    Agent::connect(vm, Instant::now() + AGENT_TIMEOUT)
        .with_context(|| format!("connecting to the guest agent{}", agent_evidence(vm)))
}

/// A booted guest whose agent answered, from [`boot_connected`].
#[derive(Debug)]
pub struct Connected {
    /// The guest.
    pub vm: Vm,
    /// Its agent, for [`Runner::with_agent`].
    pub agent: Agent,
    /// Why the first boot could not be driven, when a second boot was needed: callers that
    /// count failed boots count it.
    pub first_boot_failed: Option<String>,
}

/// Boots a guest and connects to its agent; a guest that booted but cannot be driven is
/// booted once more. Now and then a guest dies after its init finished: under TCG the kernel
/// sometimes takes an `Oops: int3` while patching its own text a second or two into
/// userspace (2 boots in about 30 here, 2026-12-03; once in CI, 2026-12-04, killing a test),
/// which [`Vm::boot`] cannot see because the guest was ready when it returned. One more boot
/// costs seconds; a caller that gives up costs a run, a test, or a regression entry its night.
/// Every caller that drives a fresh guest boots it here.
pub fn boot_connected(kernel: &Kernel, image: &BuiltImage, opts: &VmOptions) -> Result<Connected> {
    let vm = Vm::boot(kernel, image, opts).context("booting the guest")?;
    match connect_agent(&vm) {
        Ok(agent) => Ok(Connected {
            vm,
            agent,
            first_boot_failed: None,
        }),
        Err(e) => {
            let stopped = if vm.stopped() {
                " (QEMU was stopped from outside)"
            } else {
                ""
            };
            // Callers that speak to a user say it themselves (`first_boot_failed`).
            tracing::warn!("{}: {e:#}; booting it once more", opts.name);
            let first_boot_failed = Some(format!("{e:#}{stopped}"));
            vm.kill();
            drop(vm);
            let vm = Vm::boot(kernel, image, opts).context("booting the guest again")?;
            let agent = connect_agent(&vm)?;
            Ok(Connected {
                vm,
                agent,
                first_boot_failed,
            })
        }
    }
}

impl<V: std::ops::Deref<Target = Vm>> Runner<V> {
    /// A runner for `vm` logging to `run_log`: connects to the guest's agent.
    pub fn new(vm: V, run_log: &Path) -> Result<Runner<V>> {
        let agent = connect_agent(&vm)?;
        Runner::with_agent(vm, agent, run_log)
    }

    /// A runner for `vm` whose agent `agent` is already connected (see [`boot_connected`]).
    pub fn with_agent(vm: V, agent: Agent, run_log: &Path) -> Result<Runner<V>> {
        let host = HostOps::new(&host_machine(vm.machine()));
        Ok(Runner {
            vm,
            agent,
            host,
            log: RunLog::open(run_log)?,
        })
    }

    /// The guest.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// The guest's agent.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The run log.
    pub fn log(&mut self) -> &mut RunLog {
        &mut self.log
    }

    /// After the guest was restored from a snapshot: the host-side device state goes back to
    /// the snapshot's (`host`), and the agent's channel is synchronised again.
    pub fn restored(&mut self, host: HostOps) -> Result<()> {
        self.host = host;
        self.agent
            .resync(Instant::now() + Duration::from_secs(10))
            .context("the guest agent after the restore")
    }

    /// Logs from now on to `run_log` (a guest restored from a snapshot starts a new history).
    pub fn set_log(&mut self, run_log: &Path) -> Result<()> {
        self.log = RunLog::open(run_log)?;
        Ok(())
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
        let repeat_budget_ms = opts.repeat_budget.map(|b| b.as_millis() as u64);
        let budget = opts
            .timeout
            .unwrap_or_else(|| {
                Duration::from_millis(prog.deadline_ms(d, repeat_budget_ms).saturating_add(10_000))
            })
            .min(Duration::from_secs(900));
        let mut exec = prog.to_exec(d, budget.as_millis() as u64, opts.kcov);
        exec.repeat_budget_ms = repeat_budget_ms;
        let names: Vec<String> = prog.ops.iter().map(|o| o.name.clone()).collect();
        let start = serde_json::to_string(&Request::Run { program: exec })
            .context("encoding the program")?
            + "\n";
        let mark = self.vm.console().mark();
        let started = SystemTime::now();
        let t0 = Instant::now();
        let devices = devices_now(&self.vm);
        let text = if devices.is_empty() {
            prog.print(d)
        } else {
            format!("{}\n{}", runlog::devices_line(&devices), prog.print(d))
        };
        self.log.program(&id, prog.ops.len(), prog.threads(), &text);
        let ops: Vec<OpResult> = (0..prog.ops.len())
            .map(|i| OpResult {
                index: i,
                thread: prog.ops[i].thread,
                outcome: None,
                duration: Duration::ZERO,
                started: None,
                kt_start_ns: None,
                kt_end_ns: None,
                runs: 0,
                oks: 0,
            })
            .collect();
        let vm: &Vm = &self.vm;
        let qmp_unanswered = AtomicBool::new(false);
        let mut rec = Recorder {
            log: &mut self.log,
            prog,
            d,
            vm,
            ops,
            cover: BTreeMap::new(),
            stderr: String::new(),
        };
        let driven = {
            let mut ch = self.agent.channel();
            drive::drive(
                &mut *ch,
                start.as_bytes(),
                &mut self.host,
                &names,
                &QmpMonitor::new(vm.qmp(), &qmp_unanswered),
                &mut rec,
                t0 + budget + Duration::from_secs(30),
            )
        };
        let Recorder {
            ops, cover, stderr, ..
        } = rec;
        let mut lost = driven.lost;
        if lost.is_none() && !driven.hello {
            lost = Some("the executor did not start".into());
        }
        if lost.is_some() {
            // What the executor still sends belongs to a run given up on.
            let _ = self.agent.resync(Instant::now() + Duration::from_secs(5));
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
            console_mark: mark,
            started,
            duration,
            abandoned: driven.abandoned,
            lost,
            cover,
            memory: driven.memory,
            executor_stderr: stderr,
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

#[cfg(test)]
mod tests {
    use crate::program::desc::Descriptions;
    use hotfuzz_executor::host::ops::IMPLEMENTED;

    #[test]
    fn every_described_operation_is_implemented_once_and_vice_versa() {
        let d = Descriptions::embedded();
        for op in &d.ops {
            if op.host {
                assert!(
                    IMPLEMENTED.contains(&op.name.as_str()),
                    "host op {} has no implementation",
                    op.name
                );
                assert!(hotfuzz_executor::ops::find(&op.name).is_none());
            } else {
                assert!(
                    hotfuzz_executor::ops::find(&op.name).is_some(),
                    "guest op {} is not in the executor's table",
                    op.name
                );
            }
        }
        for e in hotfuzz_executor::ops::OPS {
            let op = d
                .op(e.name)
                .unwrap_or_else(|| panic!("executor op {} is not described", e.name));
            assert!(!op.host, "{} is described as a host op", e.name);
        }
        for h in IMPLEMENTED {
            assert!(
                d.op(h).is_some_and(|o| o.host),
                "{h} is not described as a host op"
            );
        }
    }
}
