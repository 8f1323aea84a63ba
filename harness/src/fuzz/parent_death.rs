//! Every process LibAFL's Launcher forks dies with the process that forked it.
//!
//! The Launcher forks a restarter per client (which forks the client) and, in its own
//! process, a restarter that forks the LLMP broker. LibAFL sets no parent-death signal on any
//! of them, so a launcher killed with SIGKILL left its broker running: the clients watch the
//! launcher themselves (`exit_when_gone`), but the broker's only watcher started with its
//! first status display, and a broker that had shown nothing yet ran on forever, holding its
//! port. LibAFL forks all of them through the shared-memory provider's `pre_fork` and
//! `post_fork` hooks, so a provider that arms `PR_SET_PDEATHSIG` in `post_fork(true)` covers
//! every fork, the broker's included, from its first instruction on.

use libafl_bolts::shmem::{ShMemId, ShMemProvider, StdShMemProvider};

/// The signal a forked process gets when the process that forked it dies. SIGTERM, not
/// SIGKILL: a client's handler (installed right after the fork) kills its QEMU and removes its
/// VM directory before it exits; the broker has no handler and just ends.
const SIGNAL: libc::c_int = libc::SIGTERM;

/// [`StdShMemProvider`] with a parent-death signal for every child LibAFL forks.
#[derive(Debug, Clone, Default)]
pub struct DiesWithParent {
    inner: StdShMemProvider,
    /// The process about to fork, recorded in `pre_fork`.
    forker: Option<libc::pid_t>,
}

impl ShMemProvider for DiesWithParent {
    type ShMem = <StdShMemProvider as ShMemProvider>::ShMem;

    fn new() -> Result<Self, libafl_bolts::Error> {
        Ok(DiesWithParent {
            inner: StdShMemProvider::new()?,
            forker: None,
        })
    }

    fn new_shmem(&mut self, map_size: usize) -> Result<Self::ShMem, libafl_bolts::Error> {
        self.inner.new_shmem(map_size)
    }

    fn shmem_from_id_and_size(
        &mut self,
        id: ShMemId,
        size: usize,
    ) -> Result<Self::ShMem, libafl_bolts::Error> {
        self.inner.shmem_from_id_and_size(id, size)
    }

    fn pre_fork(&mut self) -> Result<(), libafl_bolts::Error> {
        // SAFETY: getpid has no preconditions.
        self.forker = Some(unsafe { libc::getpid() });
        self.inner.pre_fork()
    }

    fn post_fork(&mut self, is_child: bool) -> Result<(), libafl_bolts::Error> {
        if is_child {
            arm(self.forker)?;
        }
        self.inner.post_fork(is_child)
    }

    fn release_shmem(&mut self, shmem: &mut Self::ShMem) {
        self.inner.release_shmem(shmem)
    }
}

/// Arms the parent-death signal in a freshly forked child of `forker`. A parent that died
/// between the fork and the `prctl` sends nothing, so the child checks that it still has the
/// parent it was forked from, and ends if not.
fn arm(forker: Option<libc::pid_t>) -> Result<(), libafl_bolts::Error> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and changes only this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, SIGNAL as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(libafl_bolts::Error::unknown(format!(
            "prctl(PR_SET_PDEATHSIG): {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    if forker.is_some_and(|f| f != parent) {
        // SAFETY: _exit ends this process without running the parent's atexit handlers or
        // destructors, which belong to the process it was forked from.
        unsafe { libc::_exit(0) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_gets_the_signal_when_its_parent_dies() {
        // A middle process forks a grandchild through the provider; once the grandchild has
        // armed its signal (it then writes its pid), the middle is SIGKILLed, and the
        // grandchild must be gone soon after.
        let (r, w) = {
            let mut fds = [0; 2];
            // SAFETY: fds is an array of two ints.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            (fds[0], fds[1])
        };
        // SAFETY: the children only call async-signal-safe functions (getpid, fork, prctl,
        // getppid, write, pause) until they are killed.
        // The provider is made before forking: a child of a threaded process must not
        // allocate.
        let mut sp = DiesWithParent::new().unwrap();
        let middle = unsafe { libc::fork() };
        assert!(middle >= 0);
        if middle == 0 {
            let _ = sp.pre_fork();
            let grandchild = unsafe { libc::fork() };
            if grandchild == 0 {
                let _ = sp.post_fork(true);
                let pid = unsafe { libc::getpid() }.to_ne_bytes();
                unsafe { libc::write(w, pid.as_ptr().cast(), pid.len()) };
                loop {
                    unsafe { libc::pause() };
                }
            }
            // Wait to be killed.
            loop {
                unsafe { libc::pause() };
            }
        }
        let mut buf = [0u8; 4];
        // SAFETY: buf holds 4 bytes.
        let n = unsafe { libc::read(r, buf.as_mut_ptr().cast(), 4) };
        assert_eq!(n, 4, "the grandchild never reported");
        let grandchild = libc::pid_t::from_ne_bytes(buf);
        let mut status = 0;
        // SAFETY: middle is our child.
        unsafe {
            libc::kill(middle, libc::SIGKILL);
            libc::waitpid(middle, &mut status, 0)
        };
        let gone = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            // The grandchild is reparented (to init or a subreaper) and reaped there; signal 0
            // fails once it is gone. A zombie still answers, so look at its state too.
            let st = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).ok();
            st.is_none_or(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|t| t.trim_start().starts_with('Z'))
            })
        });
        if !gone {
            // SAFETY: the grandchild is a process this test made.
            unsafe { libc::kill(grandchild, libc::SIGKILL) };
        }
        assert!(gone, "the grandchild outlived its parent");
    }
}
