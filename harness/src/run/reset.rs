//! A guest that can be put back to the moment it became ready: booted in snapshot mode, its
//! agent connected, saved as snapshot [`READY`]; [`Guest::reset`] restores it in place
//! (also after a panic: QEMU keeps the halted guest), or starts QEMU again from the snapshot
//! when QEMU died or its devices changed (hot-added virtio-mem devices and DIMMs cannot be
//! restored in place). The fuzzer and the reproducer both reset guests through this one type.

use super::guest::Prepared;
use super::runner::{boot_connected, Runner};
use anyhow::{bail, Result};
use hotfuzz_executor::host::ops::HostOps;
use hotfuzz_vm::Vm;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The snapshot a reset goes back to.
pub const READY: &str = "ready";

/// A booted guest with its runner and, when saving worked, its ready snapshot.
pub struct Guest {
    // Declared first: dropped before the guest it has a session with.
    runner: Option<Runner<Arc<Vm>>>,
    vm: Arc<Vm>,
    /// The host-side device state when the snapshot was taken (`None`: no snapshot).
    ready: Option<HostOps>,
    /// How long the snapshot took to save.
    pub saved_in: Option<Duration>,
    /// Why the first boot could not be driven, when [`Guest::boot`] had to boot a second
    /// time: callers count it as a failed boot.
    pub first_boot_failed: Option<String>,
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest")
            .field("vm", &self.vm)
            .field("snapshot", &self.ready.is_some())
            .finish_non_exhaustive()
    }
}

impl Guest {
    /// Boots `p` as `name` (its VM directory under `dir_parent` when given), connects a runner
    /// logging to `run_log` (default: `run.log` in the VM directory), runs `before_snapshot` (e.g. probing the guest's state), and
    /// with `snapshots` saves the ready snapshot. A failed save leaves a guest that can only
    /// be booted again (logged); the other failures are errors.
    pub fn boot(
        p: &Prepared,
        name: &str,
        snapshots: bool,
        dir_parent: Option<&Path>,
        run_log: Option<&Path>,
        before_snapshot: impl FnOnce(&Runner<Arc<Vm>>) -> Result<()>,
    ) -> Result<Guest> {
        let log_of = |vm: &Vm| run_log.map_or_else(|| vm.dir().join("run.log"), Path::to_path_buf);
        let mut opts = p.options.clone();
        opts.name = name.to_string();
        opts.snapshots = snapshots;
        if let Some(d) = dir_parent {
            opts.dir_parent = Some(d.to_path_buf());
        }
        let c = boot_connected(&p.kernel, &p.image, &opts)?;
        let vm = Arc::new(c.vm);
        let runner = Runner::with_agent(vm.clone(), c.agent, &log_of(&vm))?;
        let first_boot_failed = c.first_boot_failed;
        before_snapshot(&runner)?;
        let (ready, saved_in) = if snapshots {
            match vm.save_snapshot(READY) {
                Ok(t) => (Some(runner.host.clone()), Some(t)),
                Err(e) => {
                    tracing::warn!("{name}: no snapshot ({e}); it is booted again instead");
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        Ok(Guest {
            runner: Some(runner),
            vm,
            ready,
            saved_in,
            first_boot_failed,
        })
    }

    /// The guest.
    pub fn vm(&self) -> &Arc<Vm> {
        &self.vm
    }

    /// Its runner.
    pub fn runner(&self) -> &Runner<Arc<Vm>> {
        self.runner.as_ref().expect("a runner between resets")
    }

    /// Its runner, to run programs.
    pub fn runner_mut(&mut self) -> &mut Runner<Arc<Vm>> {
        self.runner.as_mut().expect("a runner between resets")
    }

    /// Whether [`Guest::reset`] can work (a snapshot was saved).
    pub fn can_reset(&self) -> bool {
        self.ready.is_some()
    }

    /// Puts the guest back to its ready snapshot, logging from now on to `run_log`. Returns
    /// how long it took. An error leaves a guest that must be booted again.
    pub fn reset(&mut self, run_log: &Path) -> Result<Duration> {
        let t = Instant::now();
        let Some(ready) = self.ready.clone() else {
            bail!("the guest has no snapshot to go back to");
        };
        // A stopped QEMU (SIGSTOP from outside) would not answer loadvm: start it again.
        let in_place = self.vm.exit_status().is_none()
            && !self.vm.stopped()
            && self.runner.as_ref().is_some_and(|r| r.host == ready);
        if in_place {
            self.vm.load_snapshot(READY)?;
            let r = self.runner_mut();
            r.restored(ready)?;
            r.set_log(run_log)?;
        } else {
            // QEMU died or was stopped, or its devices no longer match the snapshot's: start QEMU again
            // from its original command line and the snapshot, with a new agent connection.
            self.runner = None;
            let Some(vm) = Arc::get_mut(&mut self.vm) else {
                bail!("the guest is still shared; it cannot be started again");
            };
            vm.relaunch(READY)?;
            let mut runner = Runner::new(self.vm.clone(), run_log)?;
            runner.host = ready;
            self.runner = Some(runner);
        }
        Ok(t.elapsed())
    }

    /// The guest's VM, its runner dropped; `None` while something else still holds the VM.
    pub fn into_vm(mut self) -> Option<Vm> {
        self.runner = None;
        Arc::try_unwrap(self.vm).ok()
    }

    /// Stops the guest: powered off when nothing else holds it, killed otherwise.
    pub fn shutdown(mut self) {
        self.runner = None;
        match Arc::try_unwrap(self.vm) {
            Ok(vm) => {
                vm.poweroff(Duration::from_secs(5));
            }
            Err(vm) => vm.kill(),
        }
    }
}
