//! QEMU processes that cannot outlive hotfuzz.
//!
//! Every child is started in its own process group (so a terminal's Ctrl-C reaches only
//! hotfuzz), with `PR_SET_PDEATHSIG=SIGKILL` (so even `kill -9` of hotfuzz takes its guests
//! down), from a dedicated long-lived spawner thread (the death signal fires when the thread
//! that forked the child exits, so short-lived threads must not fork guests). Live children are
//! registered; a [`Guarded`] child is killed when dropped, during panics included, and
//! [`install_signal_handlers`] kills all of them on SIGINT/SIGTERM/SIGHUP.

use crate::error::{Error, Result};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

type SpawnReply = mpsc::Sender<io::Result<Child>>;
struct Spawner {
    pid: u32,
    tx: mpsc::Sender<(Command, SpawnReply)>,
}
static SPAWNER: Mutex<Option<Spawner>> = Mutex::new(None);

fn spawner() -> mpsc::Sender<(Command, SpawnReply)> {
    let mut g = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
    let me = std::process::id();
    // After a fork (LibAFL's launcher) the spawner thread does not exist in the child.
    if let Some(s) = g.as_ref().filter(|s| s.pid == me) {
        return s.tx.clone();
    }
    let (tx, rx) = mpsc::channel::<(Command, SpawnReply)>();
    std::thread::Builder::new()
        .name("hotfuzz-spawner".into())
        .spawn(move || {
            // Lives as long as the process: the sender is kept in SPAWNER forever.
            while let Ok((mut cmd, reply)) = rx.recv() {
                let _ = reply.send(cmd.spawn());
            }
        })
        .expect("starting the spawner thread");
    *g = Some(Spawner {
        pid: me,
        tx: tx.clone(),
    });
    tx
}

/// A child process that is killed (with its whole process group) when dropped.
#[derive(Debug)]
pub struct Guarded {
    child: Child,
    pid: i32,
    status: Option<ExitStatus>,
}

/// Starts `cmd` in a new process group with a parent-death signal, registered for cleanup.
pub fn spawn(mut cmd: Command) -> Result<Guarded> {
    let parent = std::process::id() as i32;
    cmd.process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // QEMU's sockets (QMP: full control of QEMU) and files are the user's alone.
            libc::umask(0o077);
            if libc::getppid() != parent {
                // hotfuzz died between fork and prctl.
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (rtx, rrx) = mpsc::channel();
    spawner()
        .send((cmd, rtx))
        .map_err(|_| Error::Config("the spawner thread is gone".into()))?;
    let child = rrx
        .recv()
        .map_err(|_| Error::Config("the spawner thread is gone".into()))?
        .map_err(|e| Error::io(format!("starting {program}"), e))?;
    let pid = child.id() as i32;
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    Ok(Guarded {
        child,
        pid,
        status: None,
    })
}

impl Guarded {
    /// Process id (also the process group id).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Takes the child's stdout pipe.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Takes the child's stderr pipe.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// The exit status if the process has exited (does not block).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
                unregister(self.pid);
            }
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process group with SIGKILL and reaps the child.
    pub fn kill(&mut self) {
        if self.status.is_some() {
            return;
        }
        // SAFETY: signalling our own child's process group.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        if let Ok(st) = self.child.wait() {
            self.status = Some(st);
        }
        unregister(self.pid);
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unregister(pid: i32) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&p| p != pid);
}

/// Process ids of the children that are still registered (alive as far as hotfuzz knows).
pub fn live_children() -> Vec<i32> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Kills every registered child's process group. Safe to call from any thread.
pub fn kill_all() {
    let pids = live_children();
    for pid in pids {
        // SAFETY: signalling process groups we created.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

static TEMP_DIRS: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());
/// Set once [`exit_now`] removed the directories: the process is exiting, and a thread still booting a
/// guest (a retry after the signal killed the first QEMU) must not leave a new directory.
static EXITING: AtomicBool = AtomicBool::new(false);

/// The file in a [`TempDir`] naming the process that owns it.
pub const OWNER_FILE: &str = "owner.pid";

/// A temporary directory (a VM's) removed when dropped, also when a signal ends hotfuzz
/// (the handler removes every registered one after killing the guests), and by the next
/// [`TempDir::create_in`] in the same parent when its owner died by SIGKILL: it names its
/// owner in [`OWNER_FILE`].
#[derive(Debug)]
pub struct TempDir {
    dir: Option<tempfile::TempDir>,
}

impl TempDir {
    /// A fresh directory `PREFIX*` in `parent`, private (0700). Directories `PREFIX*` there
    /// whose owner is dead are removed first.
    pub fn create_in(parent: &std::path::Path, prefix: &str) -> io::Result<TempDir> {
        sweep_dead(parent, prefix);
        // Made and registered under the lock, so that an exit removing the registered
        // directories either sees this one or keeps it from being made.
        let mut dirs = TEMP_DIRS.lock().unwrap_or_else(|e| e.into_inner());
        if EXITING.load(Ordering::SeqCst) {
            return Err(io::Error::other("hotfuzz is exiting"));
        }
        let t = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(parent)?;
        {
            use std::io::Write;
            crate::cache::open_private(&t.path().join(OWNER_FILE), false)?
                .write_all(format!("{}\n", std::process::id()).as_bytes())?;
        }
        dirs.push(t.path().to_path_buf());
        Ok(TempDir { dir: Some(t) })
    }

    /// Where it is.
    pub fn path(&self) -> &std::path::Path {
        self.dir.as_ref().expect("present until dropped").path()
    }

    /// Keeps the directory (evidence of a failure): never removed, by anyone. Once a signal
    /// is ending hotfuzz (or asked it to stop) the failure is the guest that signal killed:
    /// then the directory is removed instead.
    pub fn keep(mut self) -> std::path::PathBuf {
        let t = self.dir.take().expect("present until dropped");
        forget_temp_dir(t.path());
        if EXITING.load(Ordering::SeqCst) || stop_requested() {
            // A signal is ending hotfuzz and killed the guest: the failure being kept is that
            // kill, and the signal's exit would no longer see this directory to remove it.
            let p = t.path().to_path_buf();
            drop(t);
            return p;
        }
        let _ = std::fs::remove_file(t.path().join(OWNER_FILE));
        t.keep()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(t) = self.dir.take() {
            forget_temp_dir(t.path());
        }
    }
}

fn forget_temp_dir(p: &std::path::Path) {
    TEMP_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|d| d != p);
}

/// Removes every registered [`TempDir`] (the process is about to exit without unwinding).
pub fn remove_temp_dirs() {
    remove_temp_dirs_for_good(false);
}

/// Removes every registered [`TempDir`]; with `exiting`, no [`TempDir::create_in`] makes
/// another one afterwards.
fn remove_temp_dirs_for_good(exiting: bool) {
    let mut dirs = TEMP_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    if exiting {
        EXITING.store(true, Ordering::SeqCst);
    }
    for d in std::mem::take(&mut *dirs) {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Removes `PREFIX*` directories of `parent` whose [`OWNER_FILE`] names a process that no
/// longer exists (a hotfuzz killed with SIGKILL). Directories without the file (kept ones, or
/// made by something else) are left alone.
fn sweep_dead(parent: &std::path::Path, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(e.path().join(OWNER_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks existence.
        let dead = pid > 0
            && unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if dead {
            tracing::info!(
                "removing {} (its hotfuzz {pid} is gone)",
                e.path().display()
            );
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Kills every guest, removes the VM directories and exits with `code`.
pub fn exit_now(code: i32) -> ! {
    // Before the guests die: a boot that fails because of it must not keep its directory.
    EXITING.store(true, Ordering::SeqCst);
    kill_all();
    remove_temp_dirs_for_good(true);
    std::process::exit(code)
}

/// Starts a thread that, once process `pid` is gone (whatever killed it, SIGKILL included),
/// kills `also` (when given), every guest of this process, removes its VM directories and
/// exits. For forked fuzzer clients: they have no death signal for the process that launched
/// them, and a signal that ends the launcher does not reach them.
pub fn exit_when_gone(pid: i32, also: Option<i32>) -> Result<()> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    std::thread::Builder::new()
        .name("hotfuzz-parent-watch".into())
        .spawn(move || {
            loop {
                let gone = if fd >= 0 {
                    let mut p = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    let n = unsafe { libc::poll(&mut p, 1, 1000) };
                    n == 1
                } else {
                    // No pidfd (old kernel): poll for the process.
                    std::thread::sleep(Duration::from_millis(250));
                    // SAFETY: signal 0 only checks existence.
                    let rc = unsafe { libc::kill(pid, 0) };
                    rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
                };
                if gone {
                    if let Some(a) = also {
                        // SAFETY: signalling the process that forked us.
                        unsafe { libc::kill(a, libc::SIGKILL) };
                    }
                    exit_now(1);
                }
            }
        })
        .map_err(|e| Error::io("starting the parent watch thread".to_string(), e))?;
    Ok(())
}

static INSTALLED: AtomicBool = AtomicBool::new(false);
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);
static GRACEFUL: AtomicBool = AtomicBool::new(false);

/// Installs SIGINT/SIGTERM/SIGHUP handling. Without graceful mode the first signal kills all
/// guests and exits with 128+signal. In graceful mode (see [`set_graceful`]) the first signal
/// kills the guests and sets [`stop_requested`], so a long-running loop gives up the program
/// in flight, saves its state and returns; a second signal exits at once.
pub fn install_signal_handlers() {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot install signal handlers: {e}");
            return;
        }
    };
    std::thread::Builder::new()
        .name("hotfuzz-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if GRACEFUL.load(Ordering::SeqCst) && !STOP_REQUESTED.swap(true, Ordering::SeqCst) {
                    eprintln!("\nhotfuzz: stopping (signal {sig}); signal again to exit at once");
                    // The guests go at once (a program in flight is given up); the loop
                    // notices the request and saves what it has.
                    kill_all();
                    continue;
                }
                exit_now(128 + sig);
            }
        })
        .expect("starting the signal thread");
}

/// Installs the signal handling again in a forked child (the thread that served it did not
/// survive the fork, so SIGTERM would be caught and never acted on).
pub fn install_signal_handlers_after_fork() {
    INSTALLED.store(false, Ordering::SeqCst);
    install_signal_handlers();
}

/// Switches the signal handlers to graceful mode (first signal requests a stop).
pub fn set_graceful(on: bool) {
    GRACEFUL.store(on, Ordering::SeqCst);
}

/// True once a stop was requested by a signal in graceful mode.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks existence.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[test]
    fn drop_kills_the_process_group() {
        let mut cmd = Command::new("sh");
        // A grandchild in the same group must die too.
        cmd.args(["-c", "sleep 600 & sleep 600"]);
        let g = spawn(cmd).unwrap();
        let pid = g.pid();
        assert!(alive(pid));
        assert!(live_children().contains(&pid));
        drop(g);
        assert!(!live_children().contains(&pid));
        // Nothing of the group is left running (zombies awaiting their reaper do not count).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !running_in_group(pid).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(running_in_group(pid), Vec::<i32>::new());
    }

    #[test]
    fn children_create_private_files_and_sockets() {
        // QEMU creates the QMP socket with its umask: the child's must be 077 whatever ours is.
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("umask");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("umask > {}", out.display()));
        let mut g = spawn(cmd).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while g.try_wait().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "0077");
    }

    /// Not a test on its own: the process `a_child_exits_when_its_launcher_dies` starts.
    #[test]
    #[ignore]
    fn watching_child() {
        let Ok(pid) = std::env::var("HOTFUZZ_WATCH_PID") else {
            return;
        };
        let parent = std::env::temp_dir();
        let t = TempDir::create_in(&parent, "hz-watch-").unwrap();
        println!("{}", t.path().display());
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let g = spawn(cmd).unwrap();
        println!("{}", g.pid());
        exit_when_gone(pid.parse().unwrap(), None).unwrap();
        std::thread::sleep(Duration::from_secs(600));
    }

    #[test]
    fn a_child_exits_when_its_launcher_dies() {
        use std::io::BufRead;
        // The "launcher": a shell that waits; the watching child watches it.
        let mut launcher = Command::new("sleep").arg("600").spawn().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process::tests::watching_child",
                "--ignored",
                "--nocapture",
            ])
            .env("HOTFUZZ_WATCH_PID", launcher.id().to_string())
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        while lines.len() < 2 {
            let mut l = String::new();
            assert!(out.read_line(&mut l).unwrap() > 0, "{lines:?}");
            if l.starts_with('/') || l.trim().parse::<i32>().is_ok() {
                lines.push(l.trim().to_string());
            }
        }
        let (dir, grandchild) = (lines[0].clone(), lines[1].parse::<i32>().unwrap());
        assert!(std::path::Path::new(&dir).exists());
        assert!(alive(grandchild));
        launcher.kill().unwrap();
        launcher.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "the child outlived its launcher");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(1));
        while !running_in_group(grandchild).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(running_in_group(grandchild), Vec::<i32>::new());
        assert!(!std::path::Path::new(&dir).exists(), "{dir} left behind");
    }

    #[test]
    fn temp_dirs_go_on_drop_on_signal_exit_and_after_a_dead_owner() {
        let parent = tempfile::tempdir().unwrap();
        let p = parent.path();
        let t = TempDir::create_in(p, "hz-test-").unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join(OWNER_FILE)).unwrap(),
            format!("{}\n", std::process::id())
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |q: &std::path::Path| std::fs::metadata(q).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(t.path()), 0o700);
        assert_eq!(mode(&t.path().join(OWNER_FILE)), 0o600);
        let path = t.path().to_path_buf();
        drop(t);
        assert!(!path.exists());
        // What the signal handler does before exiting.
        let t = TempDir::create_in(p, "hz-test-").unwrap();
        let path = t.path().to_path_buf();
        remove_temp_dirs();
        assert!(!path.exists());
        std::mem::forget(t);
        // A directory whose owner died by SIGKILL is removed by the next one made there; a
        // kept one (no owner) and one of a live owner are not.
        let mut dead = Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        for (name, owner) in [
            ("hz-test-dead", Some(dead_pid)),
            ("hz-test-live", Some(std::process::id())),
            ("hz-test-kept", None),
        ] {
            std::fs::create_dir(p.join(name)).unwrap();
            if let Some(o) = owner {
                std::fs::write(p.join(name).join(OWNER_FILE), format!("{o}\n")).unwrap();
            }
        }
        let kept = TempDir::create_in(p, "hz-test-").unwrap().keep();
        assert!(!kept.join(OWNER_FILE).exists());
        let _t = TempDir::create_in(p, "hz-test-").unwrap();
        assert!(!p.join("hz-test-dead").exists());
        assert!(p.join("hz-test-live").exists());
        assert!(p.join("hz-test-kept").exists());
        assert!(kept.exists());
    }

    /// Non-zombie processes whose process group is `pgid`.
    fn running_in_group(pgid: i32) -> Vec<i32> {
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp ...
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f[0] != "Z" && f[2].parse::<i32>() == Ok(pgid) {
                v.push(pid);
            }
        }
        v
    }

    #[test]
    fn exit_status_is_observed() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let mut g = spawn(cmd).unwrap();
        let st = g.wait_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(st.code(), Some(3));
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let e = spawn(Command::new("/nonexistent/qemu-system-x86_64"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/qemu-system-x86_64"), "{e}");
    }
}
