//! `hotfuzz-executor`: runs one program inside the guest.
//!
//! Usage: `hotfuzz-executor` reads an `ExecProgram` JSON line on stdin and then host replies;
//! `hotfuzz-executor --probe` prints which operations this kernel cannot run;
//! `hotfuzz-executor --list` prints the operations it implements.

use hotfuzz_executor::engine::{self, Engine};
use hotfuzz_executor::ops;
use hotfuzz_executor::protocol::{Event, ExecProgram, HostReply, ProbeResult, PROTOCOL_VERSION};
use std::io::{BufRead, Write};

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--probe") => {
            let mut p = ProbeResult::default();
            for e in ops::OPS {
                p.implemented.push(e.name.to_string());
                if let Some(why) = ops::unsupported(e) {
                    p.unsupported.insert(e.name.to_string(), why);
                }
            }
            println!("{}", serde_json::to_string(&p).expect("serializable"));
            return;
        }
        Some("--list") => {
            for e in ops::OPS {
                println!("{}", e.name);
            }
            return;
        }
        Some("--version") => {
            println!("hotfuzz-executor protocol {PROTOCOL_VERSION}");
            return;
        }
        Some(other) => {
            eprintln!("hotfuzz-executor: unknown argument {other}");
            std::process::exit(2);
        }
        None => {}
    }
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
    // ssh sessions inherit dropbear's OOM immunity; a program that eats memory should be the
    // OOM killer's first choice, not a reason for the kernel to find nothing to kill.
    let _ = hotfuzz_executor::sys::write_str("/proc/self/oom_score_adj", "1000");
    engine::install_deadline_signal();
    ops::install_fault_handler();
    let out: engine::Sink = Box::new(std::io::stdout());
    let eng = Engine::new(prog, out);
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
    // Threads stuck in the kernel cannot be joined; leave without waiting for them.
    // SAFETY: everything has been reported and flushed.
    unsafe { libc::_exit(0) };
}
