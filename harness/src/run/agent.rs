//! The host end of the guest agent (`hotfuzz-executor serve` on the `hotfuzz.agent`
//! virtio-serial port): the control channel programs run over, and shell commands for probes.
//! It survives snapshot restores: after one, [`Agent::resync`] drops what the guest wrote in
//! its previous life and the channel is back in milliseconds.

use anyhow::{anyhow, bail, Context, Result};
use hotfuzz_executor::host::drive::{self, Channel, Recv, StreamChannel};
use hotfuzz_executor::protocol::{Event, Request};
use hotfuzz_vm::Vm;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a shell command in the guest gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit status (None: killed, or at its timeout).
    pub status: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Killed at its timeout.
    pub timed_out: bool,
}

impl Output {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// A connection to a guest's agent (one per guest: QEMU's chardev serves one client).
pub struct Agent {
    ch: Mutex<StreamChannel>,
    nonce: AtomicU64,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").finish_non_exhaustive()
    }
}

impl Agent {
    /// Connects to `vm`'s agent and waits (until `deadline`) for it to answer.
    pub fn connect(vm: &Vm, deadline: Instant) -> Result<Agent> {
        let path = vm.agent_socket();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline || !vm.is_alive() => {
                    return Err(anyhow!(
                        "connecting to the guest agent {}: {e}",
                        path.display()
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let a = Agent {
            ch: Mutex::new(StreamChannel::new(stream)),
            nonce: AtomicU64::new(1),
        };
        a.resync(deadline)?;
        Ok(a)
    }

    /// The channel, for driving a program (held for the program's duration).
    pub fn channel(&self) -> MutexGuard<'_, StreamChannel> {
        self.ch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the agent for a fresh answer and drops everything before it (after a snapshot
    /// restore, or a run that was given up).
    pub fn resync(&self, deadline: Instant) -> Result<()> {
        let n = self.nonce.fetch_add(1, Ordering::SeqCst);
        let mut ch = self.channel();
        drive::sync(&mut *ch, n, deadline, |l| {
            tracing::debug!("agent (before sync): {l}");
        })
        .map_err(|e| anyhow!(e))
    }

    /// Runs `cmd` with the guest's `/bin/sh -c`, killed after `timeout`; `Err` when the agent
    /// did not answer within `timeout` plus a grace period.
    pub fn exec(&self, cmd: &str, timeout: Duration) -> Result<Output> {
        let req = serde_json::to_string(&Request::Exec {
            cmd: cmd.to_string(),
            timeout_ms: timeout.as_millis() as u64,
        })? + "\n";
        let mut ch = self.channel();
        ch.send(req.as_bytes())
            .context("writing to the guest agent")?;
        let deadline = Instant::now() + timeout + Duration::from_secs(5);
        let mut buf: Vec<u8> = Vec::new();
        loop {
            match ch
                .recv(Duration::from_millis(50))
                .context("reading from the guest agent")?
            {
                Recv::Data(d) => buf.extend_from_slice(&d),
                Recv::Timeout => {}
                Recv::Eof => bail!("the guest agent's channel closed"),
            }
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = buf.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&raw);
                if let Ok(Event::Exited {
                    status,
                    stdout,
                    stderr,
                    timed_out,
                }) = serde_json::from_str(text.trim())
                {
                    return Ok(Output {
                        status,
                        stdout,
                        stderr,
                        timed_out,
                    });
                }
            }
            if Instant::now() >= deadline {
                bail!("the guest agent did not answer `{cmd:.60}` within {timeout:?}");
            }
        }
    }

    /// [`Agent::exec`] that must succeed: its stdout.
    pub fn run(&self, cmd: &str, timeout: Duration) -> Result<String> {
        let o = self.exec(cmd, timeout)?;
        if !o.success() {
            bail!(
                "`{cmd:.80}` failed in the guest (status {:?}{}): {}",
                o.status,
                if o.timed_out { ", timed out" } else { "" },
                o.stderr.trim()
            );
        }
        Ok(o.stdout)
    }

    /// Whether the agent answers within `timeout`.
    pub fn alive(&self, timeout: Duration) -> bool {
        self.resync(Instant::now() + timeout).is_ok()
    }
}
