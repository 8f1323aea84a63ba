//! ssh to guests with libssh2 (the `ssh2` crate): key authentication with the VM's own key,
//! connect-with-retry, exec with stdout and stderr drained together (no window deadlock), exit
//! status and signal, a silence timeout and a wall-clock deadline per call, file upload, and an
//! interactive shell.

use crate::error::{Error, IoContext, Result};
use crate::keys::KeyPair;
use ssh2::{Channel, Session};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const LIBSSH2_ERROR_EAGAIN: i32 = -37;

/// Limits for one remote command.
#[derive(Debug, Clone, Copy)]
pub struct ExecOptions<'a> {
    /// Bytes written to the command's stdin (then EOF).
    pub stdin: Option<&'a [u8]>,
    /// Longest time without any output or progress before giving up.
    pub silence_timeout: Duration,
    /// Absolute host-side deadline for the whole call.
    pub deadline: Option<Instant>,
}

impl Default for ExecOptions<'_> {
    fn default() -> Self {
        ExecOptions {
            stdin: None,
            silence_timeout: Duration::from_secs(60),
            deadline: None,
        }
    }
}

/// Result of a remote command.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// Everything the command wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to stderr.
    pub stderr: Vec<u8>,
    /// Exit status, if it exited normally.
    pub status: Option<i32>,
    /// Signal name (e.g. `KILL`), if it was killed by a signal.
    pub signal: Option<String>,
    /// Wall time of the call.
    pub duration: Duration,
}

impl ExecOutput {
    /// stdout as text.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text.
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0) && self.signal.is_none()
    }

    /// Turns a failed command into an error that shows what it printed.
    pub fn check(self, what: &str) -> Result<ExecOutput> {
        if self.success() {
            return Ok(self);
        }
        let how = match (&self.status, &self.signal) {
            (_, Some(s)) => format!("killed by SIG{s}"),
            (Some(c), None) => format!("exit status {c}"),
            (None, None) => "no exit status".into(),
        };
        Err(Error::Ssh(format!(
            "{what} failed ({how}): {}{}",
            self.stderr_str().trim(),
            if self.stderr.is_empty() {
                self.stdout_str().trim().to_string()
            } else {
                String::new()
            }
        )))
    }
}

/// An authenticated ssh session to a guest. Calls are serialized; open a second session for
/// concurrent commands.
pub struct Ssh {
    sess: Session,
    tcp: TcpStream,
    lock: Mutex<()>,
    addr: SocketAddr,
}

impl std::fmt::Debug for Ssh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ssh").field("addr", &self.addr).finish()
    }
}

fn ssh_err(what: &str, e: ssh2::Error) -> Error {
    Error::Ssh(format!("{what}: {e}"))
}

fn would_block(e: &ssh2::Error) -> bool {
    e.code() == ssh2::ErrorCode::Session(LIBSSH2_ERROR_EAGAIN)
}

impl Ssh {
    /// One connection attempt: TCP connect, handshake, key authentication. Every step is bounded
    /// by `timeout`.
    pub fn connect(
        addr: SocketAddr,
        user: &str,
        key: &KeyPair,
        host_key: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Ssh> {
        let tcp = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| Error::Ssh(format!("connecting to {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut sess = Session::new().map_err(|e| ssh_err("creating a session", e))?;
        sess.set_tcp_stream(tcp.try_clone().ctx(|| "cloning the ssh socket".into())?);
        sess.set_timeout(timeout.as_millis().clamp(1, u32::MAX as u128) as u32);
        sess.handshake().map_err(|e| ssh_err("handshake", e))?;
        if let Some(want) = host_key {
            // Pin the guest's own host key: another local process on the forwarded port (a
            // stale guest, a port-stealing race) is refused before any credential is offered.
            match sess.host_key() {
                Some((got, _)) if got == want => {}
                _ => {
                    return Err(Error::Ssh(format!(
                        "{addr} presented an unexpected host key"
                    )))
                }
            }
        }
        sess.userauth_pubkey_memory(user, None, &key.private_openssh, None)
            .map_err(|e| ssh_err("key authentication", e))?;
        if !sess.authenticated() {
            return Err(Error::Ssh("authentication was not accepted".into()));
        }
        Ok(Ssh {
            sess,
            tcp,
            lock: Mutex::new(()),
            addr,
        })
    }

    /// Connects until a trivial command runs, retrying until `deadline`. `abort` is polled
    /// between attempts; when it returns a reason (QEMU died, the kernel panicked) retrying
    /// stops with that reason.
    pub fn connect_retry(
        addr: SocketAddr,
        user: &str,
        key: &KeyPair,
        host_key: Option<&[u8]>,
        deadline: Instant,
        mut abort: impl FnMut() -> Option<Error>,
    ) -> Result<Ssh> {
        let mut last = String::from("no attempt made");
        loop {
            if let Some(e) = abort() {
                return Err(e);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(format!(
                    "ssh to {addr} not ready (last error: {last})"
                )));
            }
            let per_try = left.min(Duration::from_secs(10));
            match Ssh::connect(addr, user, key, host_key, per_try).and_then(|s| {
                s.exec_with(
                    "true",
                    &ExecOptions {
                        silence_timeout: per_try,
                        ..Default::default()
                    },
                )?
                .check("true")?;
                Ok(s)
            }) {
                Ok(s) => return Ok(s),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Opens a session channel in blocking mode with `timeout` per libssh2 call (the caller
    /// holds `self.lock`).
    fn channel(&self, timeout: Duration) -> Result<Channel> {
        self.sess.set_blocking(true);
        self.sess
            .set_timeout(timeout.as_millis().clamp(1, u32::MAX as u128) as u32);
        self.sess
            .channel_session()
            .map_err(|e| ssh_err("opening a channel", e))
    }

    /// Address of the guest's forwarded ssh port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs `cmd` (a shell command line) with default limits.
    pub fn exec(&self, cmd: &str) -> Result<ExecOutput> {
        self.exec_with(cmd, &ExecOptions::default())
    }

    /// Runs `cmd` with explicit limits. Both output streams are drained as data arrives.
    pub fn exec_with(&self, cmd: &str, opts: &ExecOptions) -> Result<ExecOutput> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let start = Instant::now();
        let step = opts
            .deadline
            .map(|d| d.saturating_duration_since(start).min(opts.silence_timeout))
            .unwrap_or(opts.silence_timeout)
            .max(Duration::from_millis(1));
        let mut ch = self.channel(step)?;
        ch.exec(cmd).map_err(|e| ssh_err("exec", e))?;
        self.sess.set_blocking(false);
        let r = self.pump(&mut ch, start, opts);
        let _ = ch.close();
        self.sess.set_blocking(true);
        r
    }

    fn pump(&self, ch: &mut Channel, start: Instant, opts: &ExecOptions) -> Result<ExecOutput> {
        let input = opts.stdin.unwrap_or(&[]);
        let mut written = 0;
        let mut stdin_closed = false;
        let mut out = ExecOutput::default();
        let mut buf = vec![0u8; 32 << 10];
        let mut last_progress = Instant::now();
        loop {
            let mut progressed = false;
            if !stdin_closed {
                if written < input.len() {
                    match ch.write(&input[written..]) {
                        Ok(n) => {
                            written += n;
                            progressed |= n > 0;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(Error::Ssh(format!("writing stdin: {e}"))),
                    }
                }
                if written == input.len() {
                    match ch.send_eof() {
                        Ok(()) => {
                            stdin_closed = true;
                            progressed = true;
                        }
                        Err(e) if would_block(&e) => {}
                        Err(e) => return Err(ssh_err("closing stdin", e)),
                    }
                }
            }
            for stream in [0, 1] {
                let r = if stream == 0 {
                    ch.read(&mut buf)
                } else {
                    ch.stderr().read(&mut buf)
                };
                match r {
                    Ok(0) => {}
                    Ok(n) => {
                        let dst = if stream == 0 {
                            &mut out.stdout
                        } else {
                            &mut out.stderr
                        };
                        dst.extend_from_slice(&buf[..n]);
                        progressed = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(Error::Ssh(format!("reading output: {e}"))),
                }
            }
            if progressed {
                last_progress = Instant::now();
                continue;
            }
            if ch.eof() {
                break;
            }
            let now = Instant::now();
            if let Some(d) = opts.deadline {
                if now >= d {
                    return Err(Error::Timeout(format!(
                        "remote command exceeded its deadline after {:?}",
                        now - start
                    )));
                }
            }
            if now.duration_since(last_progress) >= opts.silence_timeout {
                return Err(Error::Timeout(format!(
                    "remote command silent for {:?}",
                    opts.silence_timeout
                )));
            }
            self.wait_socket(Duration::from_millis(50));
        }
        // Exit status arrives with (or just after) EOF.
        let close_deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match ch.wait_close() {
                Ok(()) => break,
                Err(e) if would_block(&e) && Instant::now() < close_deadline => {
                    self.wait_socket(Duration::from_millis(20))
                }
                Err(_) => break,
            }
        }
        out.signal = ch.exit_signal().ok().and_then(|s| s.exit_signal);
        if out.signal.is_none() {
            out.status = ch.exit_status().ok();
        }
        out.duration = start.elapsed();
        Ok(out)
    }

    fn wait_socket(&self, timeout: Duration) {
        let mut events = libc::POLLIN;
        if self.sess.block_directions() == ssh2::BlockDirections::Outbound
            || self.sess.block_directions() == ssh2::BlockDirections::Both
        {
            events |= libc::POLLOUT;
        }
        poll_fds(&[(self.tcp.as_raw_fd(), events)], timeout);
    }

    /// Starts `cmd` and returns a handle for talking to it while it runs (stdin, stdout and
    /// stderr stay open). The session is reserved for it until the handle is dropped.
    pub fn start(&self, cmd: &str) -> Result<Remote<'_>> {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut ch = self.channel(Duration::from_secs(30))?;
        ch.exec(cmd).map_err(|e| ssh_err("exec", e))?;
        self.sess.set_blocking(false);
        Ok(Remote {
            ssh: self,
            ch: Some(ch),
            _guard: guard,
        })
    }

    /// Writes `data` to `path` in the guest with permission bits `mode` (parent directories are
    /// created). The path is shell-quoted.
    pub fn upload(&self, data: &[u8], path: &str, mode: u32) -> Result<()> {
        let q = quote(path);
        let dir = match path.rsplit_once('/') {
            Some((d, _)) if !d.is_empty() => quote(d),
            _ => "/".to_string(),
        };
        let cmd = format!(
            "mkdir -p {dir} && cat > {q}.part && chmod {mode:o} {q}.part && mv {q}.part {q}"
        );
        self.exec_with(
            &cmd,
            &ExecOptions {
                stdin: Some(data),
                silence_timeout: Duration::from_secs(60),
                deadline: None,
            },
        )?
        .check(&format!("upload to {path}"))
        .map(|_| ())
    }

    /// An interactive login shell on the caller's terminal (raw mode, window size passed on),
    /// until the remote shell exits. Returns its exit status.
    pub fn interactive_shell(&self) -> Result<i32> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        let (cols, rows) = terminal_size().unwrap_or((80, 24));
        let mut ch = self.channel(Duration::from_secs(30))?;
        ch.request_pty(&term, None, Some((cols, rows, 0, 0)))
            .map_err(|e| ssh_err("requesting a pty", e))?;
        ch.shell().map_err(|e| ssh_err("starting a shell", e))?;
        let raw = RawMode::enable();
        self.sess.set_blocking(false);
        let stdin_fd = libc::STDIN_FILENO;
        let mut buf = [0u8; 8192];
        let mut stdout = std::io::stdout();
        let mut stdin_open = true;
        loop {
            let mut progressed = false;
            match ch.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => {
                    let _ = stdout.write_all(&buf[..n]);
                    let _ = stdout.flush();
                    progressed = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            if ch.eof() && !progressed {
                break;
            }
            let mut fds = vec![(self.tcp.as_raw_fd(), libc::POLLIN)];
            if stdin_open {
                fds.push((stdin_fd, libc::POLLIN));
            }
            let ready = poll_fds(&fds, Duration::from_millis(50));
            if stdin_open && ready.get(1).copied().unwrap_or(false) {
                // SAFETY: reading into a buffer we own from our stdin.
                let n = unsafe { libc::read(stdin_fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    stdin_open = false;
                    let _ = ch.send_eof();
                } else {
                    let mut data = &buf[..n as usize];
                    while !data.is_empty() {
                        match ch.write(data) {
                            Ok(w) => data = &data[w..],
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                self.wait_socket(Duration::from_millis(10))
                            }
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        drop(raw);
        self.sess.set_blocking(true);
        let _ = ch.wait_close();
        Ok(ch.exit_status().unwrap_or(0))
    }
}

/// A running remote command (see [`Ssh::start`]).
pub struct Remote<'a> {
    ssh: &'a Ssh,
    ch: Option<Channel>,
    _guard: std::sync::MutexGuard<'a, ()>,
}

/// Output that arrived from a [`Remote`].
#[derive(Debug, Default)]
pub struct Chunk {
    /// New stdout bytes.
    pub stdout: Vec<u8>,
    /// New stderr bytes.
    pub stderr: Vec<u8>,
    /// The command closed its output.
    pub eof: bool,
}

impl Remote<'_> {
    fn ch(&mut self) -> &mut Channel {
        self.ch.as_mut().expect("channel open until drop")
    }

    /// Writes all of `data` to the command's stdin (waiting for window space), until
    /// `deadline`.
    pub fn write_all(&mut self, data: &[u8], deadline: Instant) -> Result<()> {
        let mut d = data;
        while !d.is_empty() {
            match self.ch().write(d) {
                Ok(n) => d = &d[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(Error::Timeout("writing to the remote command".into()));
                    }
                    self.ssh.wait_socket(Duration::from_millis(20));
                }
                Err(e) => return Err(Error::Ssh(format!("writing to the remote command: {e}"))),
            }
        }
        Ok(())
    }

    /// Returns whatever output arrives within `timeout` (returns as soon as there is some).
    pub fn read(&mut self, timeout: Duration) -> Result<Chunk> {
        let deadline = Instant::now() + timeout;
        let mut c = Chunk::default();
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let mut got = false;
            for stream in [0, 1] {
                let r = if stream == 0 {
                    self.ch().read(&mut buf)
                } else {
                    self.ch().stderr().read(&mut buf)
                };
                match r {
                    Ok(0) => {}
                    Ok(n) => {
                        got = true;
                        if stream == 0 {
                            c.stdout.extend_from_slice(&buf[..n]);
                        } else {
                            c.stderr.extend_from_slice(&buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        return Err(Error::Ssh(format!("reading from the remote command: {e}")))
                    }
                }
            }
            if got {
                continue;
            }
            if self.ch().eof() {
                c.eof = true;
                return Ok(c);
            }
            if !c.stdout.is_empty() || !c.stderr.is_empty() {
                return Ok(c);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(c);
            }
            self.ssh
                .wait_socket((deadline - now).min(Duration::from_millis(50)));
        }
    }

    /// Exit status and signal, if the command has exited and the server said so.
    pub fn exit(&mut self) -> (Option<i32>, Option<String>) {
        let ch = self.ch();
        let sig = ch.exit_signal().ok().and_then(|s| s.exit_signal);
        let st = if ch.eof() {
            ch.exit_status().ok()
        } else {
            None
        };
        (st, sig)
    }
}

impl Drop for Remote<'_> {
    fn drop(&mut self) {
        if let Some(mut ch) = self.ch.take() {
            let _ = ch.close();
        }
        self.ssh.sess.set_blocking(true);
    }
}

/// Shell-quotes one word for the guest's busybox sh.
pub fn quote(s: &str) -> String {
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| format!("'{}'", s.replace('\0', "").replace('\'', r"'\''")))
}

fn poll_fds(fds: &[(RawFd, i16)], timeout: Duration) -> Vec<bool> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    // SAFETY: p is a valid array of pollfd for the duration of the call.
    let n = unsafe {
        libc::poll(
            p.as_mut_ptr(),
            p.len() as libc::nfds_t,
            timeout.as_millis().min(i32::MAX as u128) as i32,
        )
    };
    if n <= 0 {
        return vec![false; fds.len()];
    }
    p.iter().map(|x| x.revents != 0).collect()
}

fn terminal_size() -> Option<(u32, u32)> {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 {
            Some((ws.ws_col as u32, ws.ws_row as u32))
        } else {
            None
        }
    }
}

/// Puts the terminal in raw mode until dropped.
struct RawMode {
    saved: Option<libc::termios>,
}

impl RawMode {
    fn enable() -> RawMode {
        // SAFETY: termios calls on our own stdin with structs we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut t) != 0 {
                return RawMode { saved: None };
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t);
            RawMode { saved: Some(saved) }
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = self.saved {
            // SAFETY: restoring the attributes we saved.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_safe_for_hostile_names() {
        assert_eq!(quote("/tmp/plain"), "/tmp/plain");
        let q = quote("/tmp/x; rm -rf / $(reboot) 'a'");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {q}"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "/tmp/x; rm -rf / $(reboot) 'a'"
        );
    }

    #[test]
    fn check_reports_signal_and_stderr() {
        let o = ExecOutput {
            stderr: b"boom".to_vec(),
            signal: Some("KILL".into()),
            ..Default::default()
        };
        let e = o.check("thing").unwrap_err().to_string();
        assert!(e.contains("SIGKILL") && e.contains("boom"), "{e}");
    }

    #[test]
    fn refused_connection_is_an_error_not_a_hang() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let key = KeyPair::generate("t").unwrap();
        let t = Instant::now();
        let e = Ssh::connect_retry(
            addr,
            "root",
            &key,
            None,
            Instant::now() + Duration::from_millis(300),
            || None,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn silent_server_times_out_in_handshake() {
        // Accepts but never speaks, like slirp before the guest's sshd listens.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let _c = l.accept().unwrap();
            std::thread::sleep(Duration::from_secs(2));
        });
        let key = KeyPair::generate("t").unwrap();
        let t = Instant::now();
        assert!(Ssh::connect(addr, "root", &key, None, Duration::from_millis(500)).is_err());
        assert!(t.elapsed() < Duration::from_secs(2));
        h.join().unwrap();
    }
}
