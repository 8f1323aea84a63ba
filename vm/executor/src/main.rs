//! `hotfuzz-executor`: runs programs.
//!
//! In the guest:
//! - `hotfuzz-executor` reads an `ExecProgram` JSON line on stdin and then host replies, and
//!   writes events on stdout (what the agent, or ssh, runs);
//! - `hotfuzz-executor serve` is the guest agent on the `hotfuzz.agent` virtio-serial port;
//! - `hotfuzz-executor --probe` prints which operations this kernel cannot run;
//!   `--list` the operations it implements.
//!
//! On the host:
//! - `hotfuzz-executor drive --agent SOCK --qmp SOCK --program FILE [--vmem ID,...]
//!   [--ports N] [--numa] [--ready-timeout SECS]` runs a program on a guest through its agent
//!   socket, answering host operations over QMP, and prints each operation's result (what a
//!   standalone `repro.sh` does). Exit status 0 when the program ran to its end, 1 when the
//!   guest or executor was lost, 2 on bad usage.

use hotfuzz_executor::engine::{self, Engine};
use hotfuzz_executor::ops;
use hotfuzz_executor::protocol::{Event, ExecProgram, HostReply, ProbeResult, PROTOCOL_VERSION};
use std::io::{BufRead, Write};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--probe") => {
            let mut p = ProbeResult::default();
            for e in ops::OPS {
                p.implemented.push(e.name.to_string());
                if let Some(why) = ops::unsupported(e) {
                    p.unsupported.insert(e.name.to_string(), why);
                }
            }
            println!("{}", serde_json::to_string(&p).expect("serializable"));
        }
        Some("--list") => {
            for e in ops::OPS {
                println!("{}", e.name);
            }
        }
        Some("--version") => println!("hotfuzz-executor protocol {PROTOCOL_VERSION}"),
        Some("serve") => hotfuzz_executor::agent::serve(),
        Some("drive") => std::process::exit(drive::main(&args[1..])),
        Some(other) => {
            eprintln!("hotfuzz-executor: unknown argument {other}");
            std::process::exit(2);
        }
        None => run_from_stdin(),
    }
}

fn run_from_stdin() {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = String::new();
    if input.read_line(&mut line).unwrap_or(0) == 0 {
        eprintln!("hotfuzz-executor: no program on stdin");
        std::process::exit(2);
    }
    let prog: ExecProgram = match serde_json::from_str(&line) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hotfuzz-executor: bad program: {e}");
            std::process::exit(2);
        }
    };
    if prog.version != PROTOCOL_VERSION {
        eprintln!(
            "hotfuzz-executor: protocol {} requested, this executor speaks {PROTOCOL_VERSION}",
            prog.version
        );
        std::process::exit(2);
    }
    // Programs run with no OOM immunity at all: a program that eats memory should be the OOM
    // killer's first choice, not a reason for the kernel to find nothing to kill.
    let _ = hotfuzz_executor::sys::write_str("/proc/self/oom_score_adj", "1000");
    // Fault injection that can hit every task (fail_page_alloc) is armed with its task filter
    // on: only tasks marked like this one (and its threads and children, which inherit the
    // mark) get the failures, as syzkaller's per-program fault injection does.
    let _ = hotfuzz_executor::sys::write_str("/proc/self/make-it-fail", "1");
    engine::install_deadline_signal();
    ops::install_fault_handler();
    let out: engine::Sink = Box::new(std::io::stdout());
    let trace = prog.trace;
    let eng = Engine::new(prog, out);
    if trace {
        let e = eng.clone();
        let _ = hotfuzz_executor::sys::TRACE.set(Box::new(move |msg| {
            e.emit(&Event::Log {
                msg: msg.to_string(),
            })
        }));
    }
    eng.emit(&Event::Hello {
        version: PROTOCOL_VERSION,
        kcov: eng.kcov(),
    });
    {
        let eng = eng.clone();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for l in stdin.lock().lines() {
                let Ok(l) = l else { break };
                match serde_json::from_str::<HostReply>(&l) {
                    Ok(r) => eng.host_reply(r),
                    Err(e) => eng.emit(&Event::Log {
                        msg: format!("bad host reply: {e}"),
                    }),
                }
            }
        });
    }
    drop(input);
    eng.run();
    let _ = std::io::stdout().flush();
    // Give operations abandoned as stuck a while to come back: each one that returns says so
    // in the kernel log, which is how the host tells slow from hung. The agent has already
    // forwarded the program's end; nothing waits for this process.
    eng.wait_for_stuck(engine::LATE_WAIT);
    // Threads still stuck in the kernel cannot be joined; leave without waiting for them.
    // SAFETY: everything has been reported and flushed.
    unsafe { libc::_exit(0) };
}

/// `hotfuzz-executor drive`.
mod drive {
    use hotfuzz_executor::host::drive::{self, Observer, StreamChannel};
    use hotfuzz_executor::host::ops::{HostMachine, HostOps};
    use hotfuzz_executor::host::qmp::UnixQmp;
    use hotfuzz_executor::protocol::{Event, ExecProgram, Outcome, Request};
    use std::os::unix::net::UnixStream;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    struct Opts {
        agent: PathBuf,
        qmp: Option<PathBuf>,
        program: PathBuf,
        machine: HostMachine,
        ready: Duration,
    }

    fn usage(msg: &str) -> i32 {
        eprintln!("hotfuzz-executor drive: {msg}");
        eprintln!("usage: hotfuzz-executor drive --agent SOCK [--qmp SOCK] --program FILE [--vmem ID,...] [--ports N] [--numa] [--ready-timeout SECS]");
        2
    }

    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            agent: PathBuf::new(),
            qmp: None,
            program: PathBuf::new(),
            machine: HostMachine::default(),
            ready: Duration::from_secs(300),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--agent" => o.agent = val()?.into(),
                "--qmp" => o.qmp = Some(val()?.into()),
                "--program" => o.program = val()?.into(),
                "--vmem" => {
                    o.machine.vmem = val()?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                "--ports" => {
                    o.machine.hotplug_ports = val()?.parse().map_err(|e| format!("--ports: {e}"))?
                }
                "--numa" => o.machine.numa = true,
                "--ready-timeout" => {
                    o.ready = Duration::from_secs(
                        val()?
                            .parse()
                            .map_err(|e| format!("--ready-timeout: {e}"))?,
                    )
                }
                other => return Err(format!("unknown option {other}")),
            }
        }
        if o.agent.as_os_str().is_empty() || o.program.as_os_str().is_empty() {
            return Err("--agent and --program are needed".into());
        }
        Ok(o)
    }

    struct Printer {
        names: Vec<String>,
        texts: Vec<String>,
    }

    fn describe(o: &Outcome) -> String {
        match o {
            Outcome::Ok { val: Some(v) } => format!("ok {v:#x}"),
            Outcome::Ok { val: None } => "ok".into(),
            Outcome::Errno { errno, msg } => {
                let name = std::io::Error::from_raw_os_error(*errno);
                if msg.is_empty() {
                    format!("failed: errno {errno} ({name})")
                } else {
                    format!("failed: errno {errno} ({name}): {msg}")
                }
            }
            Outcome::Unsupported { why } => format!("unsupported: {why}"),
            Outcome::Timeout { errno } => {
                format!("timed out: interrupted at its deadline (errno {errno})")
            }
            Outcome::Stuck => {
                "STUCK: did not return after its deadline; its thread is abandoned".into()
            }
            Outcome::Skipped { why } => format!("skipped: {why}"),
        }
    }

    impl Observer for Printer {
        fn event(&mut self, ev: &Event) {
            match ev {
                Event::Start { i, t, .. } => println!(
                    "[t{t}] #{i} {}",
                    self.texts.get(*i).map(String::as_str).unwrap_or("?")
                ),
                Event::Done {
                    i,
                    t,
                    outcome,
                    dur_us,
                    ..
                } => {
                    println!(
                        "[t{t}] #{i} {} -> {} ({:.1} ms)",
                        self.names.get(*i).map(String::as_str).unwrap_or("?"),
                        describe(outcome),
                        *dur_us as f64 / 1000.0
                    )
                }
                Event::Log { msg } => println!("  {msg}"),
                Event::End { abandoned, .. } if !abandoned.is_empty() => {
                    println!("threads left stuck in the kernel: {abandoned:?}")
                }
                _ => {}
            }
        }
        fn host_done(&mut self, _i: usize, _o: &Outcome) {}
        fn noise(&mut self, line: &str) {
            println!("  executor said: {line}");
        }
        fn check(&mut self) -> Option<String> {
            None
        }
    }

    struct NoMonitor;
    impl hotfuzz_executor::host::ops::Monitor for NoMonitor {
        fn execute(
            &self,
            c: &str,
            _a: Option<serde_json::Value>,
        ) -> Result<serde_json::Value, hotfuzz_executor::host::ops::MonitorError> {
            Err(hotfuzz_executor::host::ops::MonitorError::Gone(format!(
                "{c}: no QMP socket given (--qmp)"
            )))
        }
        fn event_mark(&self) -> usize {
            0
        }
        fn events_since(&self, _m: usize) -> Vec<(String, serde_json::Value)> {
            Vec::new()
        }
    }

    pub fn main(args: &[String]) -> i32 {
        let o = match parse(args) {
            Ok(o) => o,
            Err(e) => return usage(&e),
        };
        let text = match std::fs::read_to_string(&o.program) {
            Ok(t) => t,
            Err(e) => return usage(&format!("{}: {e}", o.program.display())),
        };
        let program: ExecProgram = match serde_json::from_str(text.trim()) {
            Ok(p) => p,
            Err(e) => return usage(&format!("{}: not a program: {e}", o.program.display())),
        };
        let deadline = Instant::now() + o.ready;
        let stream = loop {
            match UnixStream::connect(&o.agent) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    eprintln!("hotfuzz-executor drive: {}: {e}", o.agent.display());
                    return 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let mut ch = StreamChannel::new(stream);
        if let Err(e) = drive::sync(&mut ch, 1, deadline, |_| {}) {
            eprintln!("hotfuzz-executor drive: {e}");
            return 1;
        }
        let qmp: Box<dyn hotfuzz_executor::host::ops::Monitor> = match &o.qmp {
            Some(p) => match UnixQmp::connect(p) {
                Ok(q) => Box::new(q),
                Err(e) => {
                    eprintln!("hotfuzz-executor drive: QMP: {e}");
                    return 1;
                }
            },
            None => Box::new(NoMonitor),
        };
        let mut host = HostOps::new(&o.machine);
        let names: Vec<String> = program.ops.iter().map(|op| op.name.clone()).collect();
        let mut printer = Printer {
            texts: program
                .ops
                .iter()
                .map(|op| op.text.clone().unwrap_or_else(|| op.name.clone()))
                .collect(),
            names: names.clone(),
        };
        let budget = Duration::from_millis(program.timeout_ms) + Duration::from_secs(30);
        let start = serde_json::to_string(&Request::Run { program }).expect("serializable") + "\n";
        let r = drive::drive(
            &mut ch,
            start.as_bytes(),
            &mut host,
            &names,
            qmp.as_ref(),
            &mut printer,
            Instant::now() + budget,
        );
        match r.lost {
            Some(why) => {
                println!("program lost: {why}");
                1
            }
            None => {
                println!("program done");
                0
            }
        }
    }
}
