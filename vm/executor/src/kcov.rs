//! Per-thread KCOV coverage (when the kernel has /sys/kernel/debug/kcov).

use crate::sys::{self, ioc, Fd, IOC_NONE, IOC_READ};
use std::collections::BTreeSet;

/// KCOV's debugfs file.
pub const KCOV: &str = "/sys/kernel/debug/kcov";
const WORDS: usize = 1 << 18;
const KCOV_TRACE_PC: u64 = 0;

/// KCOV enabled for the calling thread.
pub struct Kcov {
    fd: Fd,
    area: *mut u64,
}

impl Kcov {
    /// Opens and enables KCOV for the current thread; `None` if the kernel has no KCOV.
    pub fn open() -> Option<Kcov> {
        let fd = sys::open(KCOV, libc::O_RDWR).ok()?;
        let init = ioc(IOC_READ, b'c', 1, std::mem::size_of::<libc::c_ulong>());
        // SAFETY: KCOV ioctls and a shared mapping of the coverage buffer, all on our fd.
        unsafe {
            if libc::ioctl(fd.0, init as _, WORDS as libc::c_ulong) != 0 {
                return None;
            }
            let p = libc::mmap(
                std::ptr::null_mut(),
                WORDS * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.0,
                0,
            );
            if p == libc::MAP_FAILED {
                return None;
            }
            let enable = ioc(IOC_NONE, b'c', 100, 0);
            if libc::ioctl(fd.0, enable as _, KCOV_TRACE_PC) != 0 {
                libc::munmap(p, WORDS * 8);
                return None;
            }
            Some(Kcov { fd, area: p.cast() })
        }
    }

    /// Starts a new collection window.
    pub fn reset(&self) {
        // SAFETY: area[0] is the PC count word of our mapped buffer.
        unsafe { std::ptr::write_volatile(self.area, 0) };
    }

    /// Adds the PCs collected since [`Kcov::reset`] to `set`.
    pub fn collect(&self, set: &mut BTreeSet<u64>) {
        // SAFETY: reading words of our mapped buffer within its bounds.
        unsafe {
            let n = (std::ptr::read_volatile(self.area) as usize).min(WORDS - 1);
            for i in 1..=n {
                set.insert(std::ptr::read_volatile(self.area.add(i)));
            }
        }
    }
}

impl Drop for Kcov {
    fn drop(&mut self) {
        let disable = ioc(IOC_NONE, b'c', 101, 0);
        // SAFETY: disabling and unmapping our own KCOV buffer.
        unsafe {
            libc::ioctl(self.fd.0, disable as _, 0);
            libc::munmap(self.area.cast(), WORDS * 8);
        }
    }
}
