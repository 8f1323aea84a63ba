//! The guest agent (`hotfuzz-executor serve`): a long-lived process on the virtio-serial port
//! [`AGENT_PORT`] that runs programs and commands the host asks for. Each program runs in a
//! child executor (a thread stuck in the kernel must not take the agent with it); its events
//! go to the port and the host's replies to its stdin until its `end`.
//!
//! The port survives a snapshot restore on both sides (the guest's state is restored, the
//! host's socket stays connected), which is why it, not ssh, is the control channel: after a
//! restore the host sends [`Request::Sync`] and reads until the answer, dropping whatever the
//! guest had written in its previous life.

use crate::protocol::{Event, HostReply, Request, AGENT_PORT};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The device node of the port named `name` (`/sys/class/virtio-ports/vportNpM/name`).
pub fn find_port(name: &str) -> Option<String> {
    for e in std::fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if n.trim() == name {
            return Some(format!("/dev/{}", e.file_name().to_string_lossy()));
        }
    }
    None
}

type Port = Arc<Mutex<File>>;

fn send(port: &Port, ev: &Event) {
    if let Ok(line) = serde_json::to_string(ev) {
        let mut p = port.lock().unwrap_or_else(|e| e.into_inner());
        // A host that is not listening: the event is lost, the agent goes on.
        let _ = p.write_all(format!("{line}\n").as_bytes());
        let _ = p.flush();
    }
}

/// Where programs run: a memory cgroup whose limit leaves the kernel and the agent their
/// memory, so a program that allocates too much is killed inside it (the OOM killer names the
/// cgroup), instead of starving the guest.
pub const PROGRAM_CGROUP: &str = "/sys/fs/cgroup/hotfuzz-programs";

/// Creates [`PROGRAM_CGROUP`] with a memory limit of three quarters of the guest's memory at
/// start minus 128 MiB; `None` when the kernel has no cgroup v2 memory controller.
pub fn setup_cgroup() -> Option<String> {
    let root = "/sys/fs/cgroup";
    if !std::path::Path::new(&format!("{root}/cgroup.controllers")).exists() {
        let _ = std::fs::create_dir_all(root);
        let c = std::ffi::CString::new(root).ok()?;
        let fs = std::ffi::CString::new("cgroup2").ok()?;
        // SAFETY: mounting with valid C strings and no data.
        let r = unsafe { libc::mount(fs.as_ptr(), c.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
        if r != 0 {
            return None;
        }
    }
    let _ = std::fs::write(format!("{root}/cgroup.subtree_control"), "+memory");
    let _ = std::fs::create_dir_all(PROGRAM_CGROUP);
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?
        << 10;
    let limit = (total / 4 * 3).saturating_sub(128 << 20).max(64 << 20);
    std::fs::write(format!("{PROGRAM_CGROUP}/memory.max"), limit.to_string()).ok()?;
    // One program's processes are one job: the OOM killer takes all of them.
    let _ = std::fs::write(format!("{PROGRAM_CGROUP}/memory.oom.group"), "1");
    Some(PROGRAM_CGROUP.to_string())
}

/// A program running in a child executor.
struct Running {
    stdin: ChildStdin,
    ended: Arc<AtomicBool>,
}

/// Serves the host forever (exits only when the port cannot be opened). A host that goes
/// away and comes back finds the same agent.
pub fn serve() -> ! {
    // The agent is infrastructure: the OOM killer should take a program's memory hog, not it
    // (the child executor makes itself the first choice).
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    let dev = loop {
        match find_port(AGENT_PORT) {
            Some(d) => break d,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let file = match OpenOptions::new().read(true).write(true).open(&dev) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("hotfuzz-executor serve: cannot open {dev}: {e}");
            std::process::exit(2);
        }
    };
    let mut reader = BufReader::new(file.try_clone().expect("dup of the port"));
    let port: Port = Arc::new(Mutex::new(file));
    let cgroup = setup_cgroup();
    if cgroup.is_none() {
        eprintln!("hotfuzz-executor serve: no memory cgroup; programs run without a limit");
    }
    let mut run: Option<Running> = None;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match reader.read_until(b'\n', &mut pending) {
            // No host on the other end (QEMU's socket has no client yet, or it went away): the
            // port reads as end of file until one connects. The port stays open meanwhile:
            // closing it would make the guest discard what a connecting host sends, and a
            // restart of the agent would leave a gap in which nobody answers.
            Ok(0) | Err(_) => {
                pending.clear();
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Ok(_) if !pending.ends_with(b"\n") => continue,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&pending).into_owned();
        pending.clear();
        let line = text.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(r) = run.as_mut() {
            if !r.ended.load(Ordering::SeqCst) && serde_json::from_str::<HostReply>(line).is_ok() {
                let _ = r.stdin.write_all(format!("{line}\n").as_bytes());
                continue;
            }
        }
        match serde_json::from_str::<Request>(line) {
            Ok(Request::Sync { nonce }) => {
                // Whatever ran is given up: its events no longer reach the host.
                if let Some(r) = run.take() {
                    r.ended.store(true, Ordering::SeqCst);
                }
                send(&port, &Event::Sync { nonce });
            }
            Ok(Request::Run { program }) => {
                if let Some(r) = run.take() {
                    r.ended.store(true, Ordering::SeqCst);
                }
                match start(&port, &program, cgroup.as_deref()) {
                    Ok(r) => run = Some(r),
                    Err(e) => send(
                        &port,
                        &Event::Log {
                            msg: format!("cannot start the executor: {e}"),
                        },
                    ),
                }
            }
            Ok(Request::Exec { cmd, timeout_ms }) => {
                let ev = exec(&cmd, Duration::from_millis(timeout_ms.max(1)));
                send(&port, &ev);
            }
            Err(e) => send(
                &port,
                &Event::Log {
                    msg: format!("agent: not a request ({e}): {line:.200}"),
                },
            ),
        }
    }
}

/// Starts a child executor on `program`, relaying its events to the port.
fn start(
    port: &Port,
    program: &crate::protocol::ExecProgram,
    cgroup: Option<&str>,
) -> std::io::Result<Running> {
    let mut child = Command::new("/proc/self/exe")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(cg) = cgroup {
        // Before the program is written: the child allocates nothing until it has read it.
        let _ = std::fs::write(format!("{cg}/cgroup.procs"), child.id().to_string());
    }
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let line = serde_json::to_string(program).map_err(std::io::Error::other)? + "\n";
    stdin.write_all(line.as_bytes())?;
    let ended = Arc::new(AtomicBool::new(false));
    {
        let port = port.clone();
        let ended = ended.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if ended.load(Ordering::SeqCst) {
                    break;
                }
                let is_end = l.starts_with("{\"ev\":\"end\"");
                {
                    let mut p = port.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = p.write_all(format!("{l}\n").as_bytes());
                    let _ = p.flush();
                }
                if is_end {
                    ended.store(true, Ordering::SeqCst);
                    break;
                }
            }
        });
    }
    {
        let port = port.clone();
        let ended = ended.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines() {
                let Ok(l) = l else { break };
                if !ended.load(Ordering::SeqCst) {
                    send(
                        &port,
                        &Event::Log {
                            msg: format!("executor stderr: {l}"),
                        },
                    );
                }
            }
        });
    }
    {
        // A child that dies before its `end` (the OOM killer) is reported, or the host would
        // wait for the program's deadline.
        let port = port.clone();
        let ended = ended.clone();
        std::thread::spawn(move || {
            use std::os::unix::process::ExitStatusExt;
            let st = child.wait();
            // Let the relay thread forward what the child wrote last.
            std::thread::sleep(Duration::from_millis(50));
            if !ended.swap(true, Ordering::SeqCst) {
                let (status, signal) = match st {
                    Ok(s) => (s.code(), s.signal()),
                    Err(_) => (None, None),
                };
                send(&port, &Event::Died { status, signal });
            }
        });
    }
    Ok(Running { stdin, ended })
}

/// Waits for `child` on a thread of its own (a child stuck in the kernel is reaped whenever it
/// finally exits).
fn reap(mut child: Child) {
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

/// Runs `cmd` with `/bin/sh -c`, killing it at `timeout`.
fn exec(cmd: &str, timeout: Duration) -> Event {
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Event::Exited {
                status: None,
                stdout: String::new(),
                stderr: format!("cannot run /bin/sh: {e}"),
                timed_out: false,
            }
        }
    };
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.by_ref().take(1 << 20).read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.by_ref().take(1 << 20).read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let (status, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(s)) => break (s.code(), false),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                reap(child);
                break (None, true);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => break (None, false),
        }
    };
    // A killed command's grandchildren may keep its pipes open: do not wait for them.
    let take = |h: std::thread::JoinHandle<Vec<u8>>| {
        if timed_out {
            String::new()
        } else {
            String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
        }
    };
    Event::Exited {
        status,
        stdout: take(o),
        stderr: take(e),
        timed_out,
    }
}
