//! A booted guest: QEMU, its console, its QMP monitor and an ssh session, behind one narrow
//! interface. Everything above this module talks to guests only through [`Vm`].
//!
//! About 1,000 lines on purpose: launching, readiness, snapshots, stopping and killing all
//! work on the same private state of a running QEMU (its process guard, monitor, console and
//! session), and splitting them into modules would widen the interface this one keeps narrow.

use crate::accel;
use crate::console::{Console, Wait};
use crate::error::{BootError, BootFailure, Error, IoContext, Result};
use crate::guest::{self, BuiltImage, READY_MARKER};
use crate::host;
use crate::image::concat_initrd;
use crate::kernel::Kernel;
use crate::keys::{HostKey, KeyPair};
use crate::machine::{Accel, AccelChoice, MachineConfig, QemuPaths};
use crate::process::{self, Guarded};
use crate::qmp::Qmp;
use crate::ssh::{ExecOptions, ExecOutput, Ssh};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How to boot a guest.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Machine shape.
    pub machine: MachineConfig,
    /// Time from QEMU start until ssh must work (default: 60 s under KVM, 300 s under TCG).
    pub boot_timeout: Option<Duration>,
    /// Time the guest may stay silent during boot (default 60 s; 20 s for a KVM attempt).
    pub no_output_timeout: Option<Duration>,
    /// Keep the VM directory (logs, key, initrd) after the VM is gone.
    pub keep_dir: bool,
    /// Where to create the VM directory (default: the system temp dir).
    pub dir_parent: Option<PathBuf>,
    /// Name used for QEMU's `-name` and the key comment.
    pub name: String,
    /// Install a missing QEMU with apt-get when root.
    pub auto_install: bool,
    /// The VM can take and restore snapshots: a qcow2 image in its directory (0600, removed
    /// with the VM) keeps them, and a guest that panics or powers off stays paused in QEMU
    /// so it can be restored ([`Vm::load_snapshot`]); a QEMU that died is started again from
    /// the snapshot ([`Vm::relaunch`]).
    pub snapshots: bool,
}

impl VmOptions {
    /// Options for `machine` with defaults for everything else.
    pub fn new(machine: MachineConfig) -> VmOptions {
        VmOptions {
            machine,
            boot_timeout: None,
            no_output_timeout: None,
            keep_dir: false,
            dir_parent: None,
            name: "hotfuzz".into(),
            auto_install: true,
            snapshots: false,
        }
    }
}

/// Where the time of a boot went, measured on the host from QEMU's start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BootTimings {
    /// QEMU start to the kernel's `Linux version` banner.
    pub banner: Option<Duration>,
    /// QEMU start to `Run /init`.
    pub init: Option<Duration>,
    /// QEMU start to hotfuzz's `/init` reporting modules and network ready.
    pub userspace_ready: Option<Duration>,
    /// QEMU start to the guest being ready: modules loaded, the agent started (ssh comes up
    /// beside it and is connected when first used).
    pub ready: Duration,
    /// Accelerators that were tried and failed before this boot, with the reason.
    pub fallbacks: Vec<String>,
}

enum VmDir {
    Temp(process::TempDir),
    Kept(PathBuf),
}

impl VmDir {
    fn path(&self) -> &Path {
        match self {
            VmDir::Temp(t) => t.path(),
            VmDir::Kept(p) => p,
        }
    }
    fn keep(&mut self) -> PathBuf {
        if let VmDir::Temp(_) = self {
            let old = std::mem::replace(self, VmDir::Kept(PathBuf::new()));
            if let VmDir::Temp(t) = old {
                *self = VmDir::Kept(t.keep());
            }
        }
        self.path().to_path_buf()
    }
}

/// A running guest.
pub struct Vm {
    proc: Mutex<Guarded>,
    console: Console,
    qmp: Qmp,
    /// Connected at boot, dropped by a restore (user-mode networking does not carry TCP
    /// connections across one) and connected again when next needed.
    ssh: Mutex<Option<Arc<Ssh>>>,
    /// QEMU events before this index belong to the guest's life before the last restore.
    restore_mark: std::sync::atomic::AtomicUsize,
    /// QEMU and its arguments, to start it again from a snapshot.
    qemu: PathBuf,
    args: Vec<std::ffi::OsString>,
    launches: u32,
    dir: VmDir,
    ssh_port: u16,
    agent_socket: PathBuf,
    snapshots: Option<SnapshotStore>,
    key: KeyPair,
    host_key: HostKey,
    accel: Accel,
    machine: MachineConfig,
    timings: BootTimings,
    qemu_stderr: Arc<Mutex<String>>,
    kernel_release: Option<String>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("dir", &self.dir.path())
            .field("ssh_port", &self.ssh_port)
            .field("accel", &self.accel)
            .finish_non_exhaustive()
    }
}

/// Finds the QEMU binary for the machine, installing it when allowed.
pub fn find_qemu(machine: &MachineConfig, auto_install: bool) -> Result<PathBuf> {
    if let Some(q) = &machine.qemu {
        return host::find_program(&q.to_string_lossy()).ok_or_else(|| Error::MissingTool {
            what: format!("QEMU binary {}", q.display()),
            install: host::install_command(&[machine.arch.qemu_package()]),
        });
    }
    let name = machine.arch.qemu_binary();
    if host::find_program(name).is_none() {
        host::ensure(
            &[host::Requirement {
                probe: name,
                package: machine.arch.qemu_package(),
            }],
            auto_install,
        )?;
    }
    host::find_program(name).ok_or_else(|| Error::MissingTool {
        what: name.into(),
        install: host::install_command(&[machine.arch.qemu_package()]),
    })
}

/// Whether a boot failed because a vCPU ran a stale int3 left by the kernel's text patching
/// (static keys flipped at boot, e.g. "sched_clock: Marking stable"): multi-threaded TCG does
/// not make cross-modifying code visible to other vCPUs at once. Not the kernel's fault, so the
/// boot is retried.
fn tcg_text_poke_race(b: &BootError) -> bool {
    b.kind == BootFailure::KernelPanic
        && std::fs::read_to_string(&b.console_log)
            .map(|t| t.contains("Oops: int3"))
            .unwrap_or(false)
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ctx(|| "finding a free port".into())?;
    Ok(l.local_addr().ctx(|| "finding a free port".into())?.port())
}

impl Vm {
    /// Boots a guest with `kernel` and the prepared `image`, trying accelerators in the order
    /// [`accel::plan`] gives. On failure the VM directory is kept and the error names its
    /// console log; no QEMU is left running.
    pub fn boot(kernel: &Kernel, image: &BuiltImage, opts: &VmOptions) -> Result<Vm> {
        opts.machine.validate()?;
        if kernel.arch != opts.machine.arch {
            return Err(Error::Config(format!(
                "kernel is for {} but the machine is {}",
                kernel.arch, opts.machine.arch
            )));
        }
        let qemu = find_qemu(&opts.machine, opts.auto_install)?;
        let plan = accel::plan(opts.machine.accel, opts.machine.arch, &qemu)?;
        let mut fallbacks = Vec::new();
        for (i, &a) in plan.iter().enumerate() {
            let last = i + 1 == plan.len();
            match Vm::boot_once(kernel, image, opts, &qemu, a) {
                Ok(mut vm) => {
                    if a == Accel::Kvm && opts.machine.accel == AccelChoice::Auto {
                        accel::remember(&qemu, true, "");
                    }
                    vm.timings.fallbacks = fallbacks;
                    return Ok(vm);
                }
                Err(Error::Boot(b))
                    if a == Accel::Kvm && !last && b.kind != BootFailure::Timeout =>
                {
                    let mut reason = format!("{:?}: {}", b.kind, b.message);
                    if let Some(said) = b.qemu_stderr.lines().find(|l| !l.trim().is_empty()) {
                        reason.push_str(&format!("; QEMU said: {}", said.trim()));
                    }
                    eprintln!("hotfuzz: KVM guest failed ({reason}); falling back to TCG (remembered for this host)");
                    // The failure is handled here, so its VM directory (kept for a failure
                    // the caller sees) would only be left behind.
                    if !opts.keep_dir {
                        if let Some(dir) = b.console_log.parent() {
                            let _ = std::fs::remove_dir_all(dir);
                        }
                    }
                    accel::remember(&qemu, false, &reason);
                    fallbacks.push(format!("kvm: {reason}"));
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("accel plan is never empty")
    }

    fn boot_once(
        kernel: &Kernel,
        image: &BuiltImage,
        opts: &VmOptions,
        qemu: &Path,
        accel: Accel,
    ) -> Result<Vm> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Vm::launch(kernel, image, opts, qemu, accel) {
                Err(Error::Boot(b))
                    if attempt < 5
                        && b.kind == BootFailure::QemuExited
                        && b.qemu_stderr.contains("host forwarding rule") =>
                {
                    // Someone took the port between our probe and QEMU's bind: try another.
                    continue;
                }
                Err(Error::Boot(b))
                    if attempt < 3 && accel == Accel::Tcg && tcg_text_poke_race(&b) =>
                {
                    eprintln!(
                        "hotfuzz: the guest hit QEMU TCG's cross-modifying-code race while booting \
                         (Oops: int3 from a patched static key, see {}); booting again",
                        b.console_log.display()
                    );
                    continue;
                }
                r => return r,
            }
        }
    }

    fn launch(
        kernel: &Kernel,
        image: &BuiltImage,
        opts: &VmOptions,
        qemu: &Path,
        accel: Accel,
    ) -> Result<Vm> {
        let mut dir = vm_dir(opts)?;
        let d = dir.path().to_path_buf();
        let key = KeyPair::generate(&opts.name)?;
        let host_key = HostKey::generate()?;
        write_private(&d.join("id_ed25519"), key.private_openssh.as_bytes())?;
        write_private(
            &d.join("id_ed25519.pub"),
            format!("{}\n", key.public_line).as_bytes(),
        )?;
        let initrd = d.join("initrd.cpio");
        concat_initrd(
            &initrd,
            &image.path,
            &guest::overlay(&key.public_line, &host_key)?,
        )?;
        let snapshots = if opts.snapshots {
            Some(SnapshotStore::create(&d)?)
        } else {
            None
        };
        let paths = QemuPaths {
            kernel: kernel.boot_image.clone(),
            initrd,
            qmp: d.join("qmp.sock"),
            agent: d.join("agent.sock"),
            snapshot_store: snapshots.as_ref().map(|s| s.path.clone()),
            ssh_port: free_port()?,
            name: opts.name.clone(),
        };
        let args = opts.machine.qemu_args(accel, &paths);
        let cmdline = std::iter::once(qemu.as_os_str().to_owned())
            .chain(args.iter().cloned())
            .map(|a| crate::ssh::quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        write_private(&d.join("qemu.cmdline"), format!("{cmdline}\n").as_bytes())?;
        let mut cmd = Command::new(qemu);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut proc = process::spawn(cmd)?;
        let console = Console::spawn(
            proc.take_stdout().expect("piped stdout"),
            &d.join("console.log"),
        )?;
        let qemu_stderr = Arc::new(Mutex::new(String::new()));
        spawn_stderr_reader(
            proc.take_stderr().expect("piped stderr"),
            &d.join("qemu.log"),
            qemu_stderr.clone(),
        )?;
        let mut boot = Booting {
            proc,
            console,
            qemu_stderr,
            started,
            deadline: started
                + opts.boot_timeout.unwrap_or(match accel {
                    Accel::Kvm => Duration::from_secs(60),
                    Accel::Tcg => Duration::from_secs(300),
                }),
            no_output: opts.no_output_timeout.unwrap_or(match accel {
                Accel::Kvm => Duration::from_secs(20),
                Accel::Tcg => Duration::from_secs(60),
            }),
        };
        let qmp = match Qmp::connect(
            &paths.qmp,
            &d.join("qmp-events.log"),
            started + Duration::from_secs(30).min(boot.deadline - started),
            || boot.proc.try_wait().is_none(),
        ) {
            Ok(q) => q,
            Err(e) => {
                let kind = classify_exit(&boot.qemu_stderr);
                return Err(boot.fail(&mut dir, kind, format!("QEMU did not come up: {e}")));
            }
        };
        let (mut timings, next) = match boot.follow_console() {
            Ok(x) => x,
            Err((kind, msg)) => return Err(boot.fail(&mut dir, kind, msg)),
        };
        let _ = next;
        timings.ready = started.elapsed();
        Ok(Vm {
            proc: Mutex::new(boot.proc),
            console: boot.console,
            qmp,
            ssh: Mutex::new(None),
            restore_mark: Default::default(),
            qemu: qemu.to_path_buf(),
            args,
            launches: 1,
            dir,
            ssh_port: paths.ssh_port,
            agent_socket: paths.agent,
            snapshots,
            key,
            host_key,
            accel,
            machine: opts.machine.clone(),
            timings,
            qemu_stderr: boot.qemu_stderr,
            kernel_release: kernel.release.clone(),
        })
    }

    /// Runs a shell command in the guest with default limits.
    pub fn exec(&self, cmd: &str) -> Result<ExecOutput> {
        let r = self.ssh().and_then(|s| s.exec(cmd));
        self.map_gone(r)
    }

    /// Runs a shell command in the guest with explicit limits.
    pub fn exec_with(&self, cmd: &str, opts: &ExecOptions) -> Result<ExecOutput> {
        let r = self.ssh().and_then(|s| s.exec_with(cmd, opts));
        self.map_gone(r)
    }

    /// Runs a command that must succeed and returns its stdout.
    pub fn run(&self, cmd: &str) -> Result<String> {
        Ok(self.exec(cmd)?.check(cmd)?.stdout_str())
    }

    /// Writes a file into the guest.
    pub fn upload(&self, data: &[u8], path: &str, mode: u32) -> Result<()> {
        let r = self.ssh().and_then(|s| s.upload(data, path, mode));
        self.map_gone(r)
    }

    /// A second, independent ssh session (for commands running concurrently with others).
    pub fn new_session(&self) -> Result<Ssh> {
        Ssh::connect(
            SocketAddr::from((Ipv4Addr::LOCALHOST, self.ssh_port)),
            "root",
            &self.key,
            Some(&self.host_key.public_blob),
            Duration::from_secs(30),
        )
    }

    /// An interactive shell on the caller's terminal.
    pub fn interactive_shell(&self) -> Result<i32> {
        self.ssh()?.interactive_shell()
    }

    fn map_gone<T>(&self, r: Result<T>) -> Result<T> {
        match r {
            Err(e) if !self.is_alive() => Err(Error::QemuGone(format!(
                "{e} (QEMU {}; console log {})",
                self.exit_status()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "gone".into()),
                self.console_log().display()
            ))),
            r => r,
        }
    }

    /// The QMP monitor.
    pub fn qmp(&self) -> &Qmp {
        &self.qmp
    }

    /// The serial console.
    pub fn console(&self) -> &Console {
        &self.console
    }

    /// The ssh session used by [`Vm::exec`] (connected again after a restore).
    pub fn ssh(&self) -> Result<Arc<Ssh>> {
        let mut s = self.ssh.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = &*s {
            return Ok(s.clone());
        }
        if !self.is_alive() {
            return Err(Error::QemuGone(
                "no ssh to a guest that is not running".into(),
            ));
        }
        let mark = self.console.mark().saturating_sub(10_000);
        let fresh = Arc::new(Ssh::connect_retry(
            SocketAddr::from((Ipv4Addr::LOCALHOST, self.ssh_port)),
            "root",
            &self.key,
            Some(&self.host_key.public_blob),
            Instant::now() + Duration::from_secs(60),
            || {
                if self.exit_status().is_some() {
                    return Some(Error::QemuGone("while connecting ssh".into()));
                }
                self.console
                    .lines_since(mark)
                    .iter()
                    .find(|l| l.text.contains(guest::NO_NETWORK_MARKER))
                    .map(|l| Error::Ssh(format!("the guest has no network for ssh: {}", l.text)))
            },
        )?);
        *s = Some(fresh.clone());
        Ok(fresh)
    }

    /// Where the console log is written.
    pub fn console_log(&self) -> PathBuf {
        self.console.log_path().to_path_buf()
    }

    /// The VM directory (console log, QEMU log, QMP socket and event log, key, initrd).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the VM directory after the VM is gone (for evidence) and returns its path.
    pub fn keep_dir(&mut self) -> PathBuf {
        self.dir.keep()
    }

    /// Host port forwarded to the guest's ssh.
    pub fn ssh_port(&self) -> u16 {
        self.ssh_port
    }

    /// The host end of the guest agent's virtio-serial port (a unix socket QEMU listens on;
    /// one client at a time).
    pub fn agent_socket(&self) -> &Path {
        &self.agent_socket
    }

    /// Whether the VM can take snapshots ([`VmOptions::snapshot_dir`]).
    pub fn can_snapshot(&self) -> bool {
        self.snapshots.is_some()
    }

    /// Saves the whole VM (devices, RAM, CPU) as snapshot `name` (`savevm`). Connections
    /// through user-mode networking (ssh) do not survive restoring it; the agent's socket does.
    pub fn save_snapshot(&self, name: &str) -> Result<Duration> {
        self.snapshot_command("savevm", name)
    }

    /// Restores snapshot `name` (`loadvm`) in the running QEMU, also after the guest panicked
    /// or powered off (QEMU keeps it paused then): the guest continues from the moment it
    /// was saved. Returns how long QEMU took.
    pub fn load_snapshot(&self, name: &str) -> Result<Duration> {
        if self.exit_status().is_some() {
            return Err(Error::QemuGone(
                "QEMU has exited: start it again from the snapshot (Vm::relaunch)".into(),
            ));
        }
        let t = Instant::now();
        if self.halted() {
            // QEMU refuses to continue a guest that shut down until the machine was reset.
            // -no-reboot makes every reset a shutdown: lift it for this one reset, which
            // QEMU's main loop carries out after the command returns.
            self.qmp
                .execute("set-action", Some(serde_json::json!({"reboot": "reset"})))?;
            self.qmp.execute("system_reset", None)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.run_state()? == "shutdown" {
                if Instant::now() >= deadline {
                    return Err(Error::Qmp("the halted guest was never reset".into()));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            self.qmp.execute(
                "set-action",
                Some(serde_json::json!({"reboot": "shutdown"})),
            )?;
        }
        self.snapshot_command("loadvm", name)?;
        // loadvm resumes a guest that was running; one that had shut down stays paused.
        self.resume()?;
        self.restored();
        Ok(t.elapsed())
    }

    /// Starts QEMU again (same machine, files and ports) from snapshot `name` after the old
    /// one exited or was killed. The console continues in the same log. Returns the time
    /// until the guest ran again.
    pub fn relaunch(&mut self, name: &str) -> Result<Duration> {
        if self.snapshots.is_none() {
            return Err(Error::Config(
                "this VM was booted without a snapshot store".into(),
            ));
        }
        check_snapshot_name(name)?;
        let t = Instant::now();
        self.kill();
        self.console.wait_eof(Duration::from_secs(2));
        let d = self.dir().to_path_buf();
        let _ = std::fs::remove_file(d.join("qmp.sock"));
        let _ = std::fs::remove_file(&self.agent_socket);
        let mut cmd = Command::new(&self.qemu);
        cmd.args(&self.args)
            .args(["-loadvm", name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut proc = process::spawn(cmd)?;
        self.console
            .reattach(proc.take_stdout().expect("piped stdout"))?;
        self.launches += 1;
        spawn_stderr_reader(
            proc.take_stderr().expect("piped stderr"),
            &d.join(format!("qemu.{}.log", self.launches)),
            self.qemu_stderr.clone(),
        )?;
        let alive = std::cell::RefCell::new(proc);
        let qmp = Qmp::connect(
            &d.join("qmp.sock"),
            &d.join(format!("qmp-events.{}.log", self.launches)),
            Instant::now() + Duration::from_secs(30),
            || alive.borrow_mut().try_wait().is_none(),
        );
        *self.proc.lock().unwrap_or_else(|e| e.into_inner()) = alive.into_inner();
        self.qmp = qmp?;
        self.resume()?;
        self.restored();
        Ok(t.elapsed())
    }

    /// QEMU's run state (`running`, `paused`, `shutdown`, ...).
    fn run_state(&self) -> Result<String> {
        let st = self.qmp.execute("query-status", None)?;
        Ok(st
            .get("status")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string())
    }

    /// Continues a paused guest (QMP `cont`); nothing when it runs.
    fn resume(&self) -> Result<()> {
        if self.run_state()? != "running" {
            self.qmp.execute("cont", None)?;
        }
        Ok(())
    }

    /// The guest's life starts again: older shutdowns and ssh sessions are gone.
    fn restored(&self) {
        self.restore_mark
            .store(self.qmp.event_mark(), std::sync::atomic::Ordering::SeqCst);
        *self.ssh.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn snapshot_command(&self, verb: &str, name: &str) -> Result<Duration> {
        if self.snapshots.is_none() {
            return Err(Error::Config(
                "this VM was booted without a snapshot store".into(),
            ));
        }
        check_snapshot_name(name)?;
        let t = Instant::now();
        let out = self.qmp.execute_timeout(
            "human-monitor-command",
            Some(serde_json::json!({"command-line": format!("{verb} {name}")})),
            Duration::from_secs(120),
        )?;
        // HMP reports failures as text, not as a QMP error.
        let text = out.as_str().unwrap_or("").trim().to_string();
        if !text.is_empty() {
            return Err(Error::Qmp(format!("{verb} {name}: {text}")));
        }
        Ok(t.elapsed())
    }

    /// Path of the VM's private key (for `ssh -i`).
    pub fn key_path(&self) -> PathBuf {
        self.dir().join("id_ed25519")
    }

    /// The accelerator in use.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The machine's configuration.
    pub fn machine(&self) -> &MachineConfig {
        &self.machine
    }

    /// Boot timings.
    pub fn timings(&self) -> &BootTimings {
        &self.timings
    }

    /// Kernel release, if known.
    pub fn kernel_release(&self) -> Option<&str> {
        self.kernel_release.as_deref()
    }

    /// QEMU's process id.
    pub fn pid(&self) -> i32 {
        self.proc.lock().unwrap_or_else(|e| e.into_inner()).pid()
    }

    /// True while the guest runs: QEMU has not exited and, in snapshot mode, the guest has
    /// not panicked or powered off since it booted or was last restored.
    pub fn is_alive(&self) -> bool {
        self.exit_status().is_none() && !self.halted()
    }

    /// The guest shut down (panic, reboot, poweroff) and QEMU keeps it paused for a restore.
    pub fn halted(&self) -> bool {
        self.snapshots.is_some()
            && self.qmp.has_event_since(
                "SHUTDOWN",
                self.restore_mark.load(std::sync::atomic::Ordering::SeqCst),
            )
    }

    /// QEMU's process is stopped (SIGSTOP or a debugger from outside, state `T`/`t` in
    /// /proc): a silent guest then says nothing about its kernel.
    pub fn stopped(&self) -> bool {
        if self.exit_status().is_some() {
            return false;
        }
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .ok()
            .and_then(|s| {
                // pid (comm) STATE ...: comm may hold spaces and parentheses.
                let rest = &s[s.rfind(')')? + 1..];
                rest.split_whitespace()
                    .next()
                    .map(|st| st == "T" || st == "t")
            })
            .unwrap_or(false)
    }

    /// QEMU's exit status once it has exited.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.proc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_wait()
    }

    /// What QEMU printed on stderr.
    pub fn qemu_stderr(&self) -> String {
        self.qemu_stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Powers the guest off (`poweroff -f` over ssh), waiting up to `timeout` for QEMU to exit,
    /// then asks QEMU to quit, then kills it. Returns true if the guest powered off by itself.
    /// A guest without ssh (driven through its agent) has nobody to power it off from inside:
    /// QEMU is asked to quit at once instead of waiting out `timeout`.
    pub fn poweroff(self, timeout: Duration) -> bool {
        let ssh = self.ssh.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let timeout = if ssh.is_some() {
            timeout
        } else {
            Duration::ZERO
        };
        if let Some(ssh) = ssh {
            let _ = ssh.exec_with(
                "poweroff -f",
                &ExecOptions {
                    silence_timeout: Duration::from_secs(2),
                    deadline: Some(Instant::now() + Duration::from_secs(3)),
                    stdin: None,
                },
            );
        }
        let clean = self
            .proc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .wait_timeout(timeout)
            .is_some();
        if !clean {
            let _ = self.qmp.quit();
            let mut p = self.proc.lock().unwrap_or_else(|e| e.into_inner());
            if p.wait_timeout(Duration::from_secs(3)).is_none() {
                p.kill();
            }
        }
        self.console.wait_eof(Duration::from_secs(2));
        clean
    }

    /// Kills QEMU at once.
    pub fn kill(&self) {
        self.proc.lock().unwrap_or_else(|e| e.into_inner()).kill();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.proc.lock().unwrap_or_else(|e| e.into_inner()).kill();
        if let VmDir::Kept(p) = &self.dir {
            // Keep the evidence, not the bulk: the initrd is a copy of a cached image.
            let _ = std::fs::remove_file(p.join("initrd.cpio"));
            let _ = std::fs::remove_file(p.join("qmp.sock"));
        }
    }
}

/// The VM directory: private to the user (0700), kept on request.
fn vm_dir(opts: &VmOptions) -> Result<VmDir> {
    use std::os::unix::fs::PermissionsExt;
    let parent = opts.dir_parent.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).ctx(|| format!("creating {}", parent.display()))?;
    let tmp = process::TempDir::create_in(&parent, "hotfuzz-vm-")
        .ctx(|| format!("creating a VM directory in {}", parent.display()))?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700))
        .ctx(|| format!("making {} private", tmp.path().display()))?;
    Ok(if opts.keep_dir {
        VmDir::Kept(tmp.keep())
    } else {
        VmDir::Temp(tmp)
    })
}

/// The qcow2 image a VM's snapshots are saved into (no guest device uses it).
#[derive(Debug)]
struct SnapshotStore {
    path: PathBuf,
}

/// A snapshot name QEMU's monitor takes as one word.
fn check_snapshot_name(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::Config(format!("bad snapshot name {name:?}")));
    }
    Ok(())
}

impl SnapshotStore {
    fn create(dir: &Path) -> Result<SnapshotStore> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let qemu_img = host::find_program("qemu-img").ok_or_else(|| Error::MissingTool {
            what: "qemu-img (for snapshots)".into(),
            install: host::install_command(&["qemu-utils"]),
        })?;
        // A fresh private file (0600) that qemu-img then formats.
        let path = dir.join("snapshots.qcow2");
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .ctx(|| format!("creating {}", path.display()))?;
        }
        let out = Command::new(qemu_img)
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&path)
            .arg("64G")
            .output()
            .ctx(|| "running qemu-img".into())?;
        if !out.status.success() {
            return Err(Error::Config(format!(
                "qemu-img create {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .ctx(|| format!("chmod {}", path.display()))?;
        Ok(SnapshotStore { path })
    }
}

impl Drop for SnapshotStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A QEMU being booted: what the boot steps share.
struct Booting {
    proc: Guarded,
    console: Console,
    qemu_stderr: Arc<Mutex<String>>,
    started: Instant,
    deadline: Instant,
    no_output: Duration,
}

impl Booting {
    /// Kills QEMU, keeps the VM directory and describes the failure.
    fn fail(&mut self, dir: &mut VmDir, kind: BootFailure, message: String) -> Error {
        self.proc.kill();
        self.console.wait_eof(Duration::from_secs(2));
        let kept = dir.keep();
        Error::Boot(BootError {
            kind,
            message,
            console_log: kept.join("console.log"),
            last_lines: self
                .console
                .last_lines(15)
                .into_iter()
                .map(|l| l.text)
                .collect(),
            qemu_stderr: self
                .qemu_stderr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        })
    }

    /// Follows the boot on the console until hotfuzz's init says it is ready: the timings and
    /// the console index after the ready line, or why the boot failed.
    fn follow_console(&mut self) -> std::result::Result<(BootTimings, u64), (BootFailure, String)> {
        let mut timings = BootTimings::default();
        let mut next = 0u64;
        let mut panic_line: Option<String> = None;
        loop {
            let step = Instant::now() + Duration::from_millis(100);
            let r = self.console.wait_for(next, step.min(self.deadline), |l| {
                if l.contains("Linux version ") {
                    Some(1)
                } else if l.contains("Run /init as init process") {
                    Some(2)
                } else if l.contains(READY_MARKER) {
                    Some(3)
                } else if l.contains("Kernel panic - not syncing") {
                    Some(4)
                } else {
                    None
                }
            });
            match r {
                Wait::Found(what, line) => {
                    next = line.index + 1;
                    let t = line.at.saturating_duration_since(self.started);
                    match what {
                        1 => timings.banner = timings.banner.or(Some(t)),
                        2 => timings.init = timings.init.or(Some(t)),
                        3 => {
                            timings.userspace_ready = Some(t);
                            return Ok((timings, next));
                        }
                        _ => {
                            panic_line = Some(line.text.clone());
                            // Let the rest of the panic reach the log.
                            std::thread::sleep(Duration::from_millis(300));
                            break;
                        }
                    }
                    continue;
                }
                Wait::Eof => break,
                Wait::Timeout => {}
            }
            if self.proc.try_wait().is_some() {
                break;
            }
            if stderr_says_kvm_failed(&self.qemu_stderr) {
                return Err((
                    BootFailure::KvmFailure,
                    "KVM could not run the guest".into(),
                ));
            }
            let silent_for = self
                .console
                .last_output()
                .map(|t| t.elapsed())
                .unwrap_or_else(|| self.started.elapsed());
            if silent_for >= self.no_output {
                return Err((
                    BootFailure::NoOutput,
                    format!("no console output for {}s", self.no_output.as_secs()),
                ));
            }
            if Instant::now() >= self.deadline {
                return Err((
                    BootFailure::Timeout,
                    format!(
                        "not ready within {}s (boot timeout)",
                        (self.deadline - self.started).as_secs()
                    ),
                ));
            }
        }
        if let Some(p) = panic_line {
            return Err((BootFailure::KernelPanic, p.trim().to_string()));
        }
        let st = self.proc.try_wait();
        Err((
            classify_exit(&self.qemu_stderr),
            format!(
                "QEMU exited during boot ({})",
                st.map(|s| s.to_string())
                    .unwrap_or_else(|| "console closed".into())
            ),
        ))
    }
}

fn classify_exit(stderr: &Arc<Mutex<String>>) -> BootFailure {
    if stderr_says_kvm_failed(stderr) {
        BootFailure::KvmFailure
    } else {
        BootFailure::QemuExited
    }
}

fn stderr_says_kvm_failed(stderr: &Arc<Mutex<String>>) -> bool {
    let s = stderr.lock().unwrap_or_else(|e| e.into_inner());
    s.contains("KVM internal error")
        || s.contains("emulation failure")
        || s.contains("kvm run failed")
        || s.contains("failed to initialize kvm")
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .ctx(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .ctx(|| format!("writing {}", path.display()))
}

fn spawn_stderr_reader(
    mut stderr: std::process::ChildStderr,
    log: &Path,
    buf: Arc<Mutex<String>>,
) -> Result<()> {
    let mut file =
        crate::cache::open_private(log, false).ctx(|| format!("creating {}", log.display()))?;
    std::thread::Builder::new()
        .name("qemu-stderr".into())
        .spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match stderr.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = file.write_all(&chunk[..n]);
                        let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
                        if b.len() < 256 << 10 {
                            b.push_str(&String::from_utf8_lossy(&chunk[..n]));
                        }
                    }
                }
            }
        })
        .ctx(|| "starting the QEMU stderr reader".into())?;
    Ok(())
}
