//! Ways user space makes the kernel hold references to its pages: io_uring fixed buffers
//! (long-term pins), vmsplice into a pipe nobody reads (references held), O_DIRECT I/O,
//! process_vm_readv, and CONFIG_GUP_TEST's debugfs ioctls (raw gup flags).

use super::{arg, done, span_val, sys_ret, Args, Ctx, Handle};
use crate::protocol::Outcome;
use crate::sys::{self, ioc, IOC_NONE, IOC_READ, IOC_WRITE};

/// CONFIG_GUP_TEST's debugfs file.
pub const GUP_TEST: &str = "/sys/kernel/debug/gup_test";
/// Block device used for O_DIRECT (brd, `rd_nr=1`).
pub const ODIRECT_DEV: &str = "/dev/ram0";
const IORING_REGISTER_BUFFERS: u32 = 0;
const IORING_UNREGISTER_BUFFERS: u32 = 1;
const MAX_IO: u64 = 16 << 20;

fn page() -> u64 {
    sys::page_size()
}

fn iov(addr: u64, len: u64) -> libc::iovec {
    libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len as usize,
    }
}

/// Registers [offset, offset+len) of a mapping as an io_uring fixed buffer: the pages are
/// pinned long-term (FOLL_LONGTERM, migrated out of ZONE_MOVABLE first) until unpinned.
/// Returns the ring fd.
pub fn uring_pin(ctx: &Ctx, a: &Args) -> Outcome {
    let map = arg!(a.int("map"));
    let off = arg!(a.int("offset"));
    let len = arg!(a.int("len"));
    let r = ctx.maps.with_span(map, off, len.min(1 << 30), |s| {
        let mut params = [0u8; 120];
        // SAFETY: io_uring_setup with a zeroed io_uring_params.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
        if fd < 0 {
            return Err(sys::errno());
        }
        let fd = fd as i32;
        let v = iov(s.addr, s.len);
        // SAFETY: one valid iovec.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                fd,
                IORING_REGISTER_BUFFERS,
                &v as *const libc::iovec,
                1u32,
            )
        };
        if r < 0 {
            let e = sys::errno();
            // SAFETY: closing the ring we opened.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        Ok(fd)
    });
    match r {
        Ok(Ok(fd)) => {
            lock(ctx).insert(fd as u64, Handle::Uring { fd });
            Outcome::val(fd as u64)
        }
        Ok(Err(libc::ENOSYS)) => Outcome::Unsupported {
            why: "kernel has no io_uring".into(),
        },
        Ok(Err(e)) | Err(e) => Outcome::errno(e),
    }
}

fn lock(ctx: &Ctx) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Handle>> {
    ctx.handles.lock().unwrap_or_else(|e| e.into_inner())
}

/// Unregisters the buffers of a ring from [`uring_pin`] and closes it.
pub fn uring_unpin(ctx: &Ctx, a: &Args) -> Outcome {
    let h = arg!(a.int("ring"));
    let Some(Handle::Uring { fd }) = lock(ctx).remove(&h) else {
        return Outcome::errno(libc::EBADF);
    };
    // SAFETY: unregistering and closing our own ring.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            fd,
            IORING_UNREGISTER_BUFFERS,
            0usize,
            0u32,
        )
    };
    let e = if r < 0 { sys::errno() } else { 0 };
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    if e != 0 {
        Outcome::errno(e)
    } else {
        Outcome::ok()
    }
}

/// vmsplices [offset, offset+len) of a mapping into a new pipe and leaves it unread: the
/// kernel holds (non-long-term) references to those pages until [`pipe_release`]. Returns the
/// pipe's read fd; the value is the number of bytes spliced in `msg`-less success.
pub fn vmsplice_pin(ctx: &Ctx, a: &Args) -> Outcome {
    let map = arg!(a.int("map"));
    let off = arg!(a.int("offset"));
    let len = arg!(a.int("len"));
    let r = ctx.maps.with_span(map, off, len.min(1 << 20), |s| {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 fills two fds.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(sys::errno());
        }
        let want = s.len.div_ceil(page()) * page();
        // SAFETY: resizing our own pipe; failure just leaves the default size.
        unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, want.max(page()) as i32) };
        let v = iov(s.addr, s.len);
        // SAFETY: one valid iovec inside our mapping.
        let n = unsafe { libc::vmsplice(fds[1], &v, 1, libc::SPLICE_F_NONBLOCK) };
        if n < 0 {
            let e = sys::errno();
            // SAFETY: closing our own fds.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
            return Err(e);
        }
        Ok((fds[0], fds[1]))
    });
    match r {
        Ok(Ok((rfd, wfd))) => {
            lock(ctx).insert(rfd as u64, Handle::Pipe { r: rfd, w: wfd });
            Outcome::val(rfd as u64)
        }
        Ok(Err(e)) | Err(e) => Outcome::errno(e),
    }
}

/// Closes a pipe from [`vmsplice_pin`], dropping the page references.
pub fn pipe_release(ctx: &Ctx, a: &Args) -> Outcome {
    let h = arg!(a.int("pipe"));
    let Some(Handle::Pipe { r, w }) = lock(ctx).remove(&h) else {
        return Outcome::errno(libc::EBADF);
    };
    // SAFETY: closing our own fds.
    unsafe {
        libc::close(r);
        libc::close(w);
    }
    Outcome::ok()
}

/// O_DIRECT read (or write) between a mapping and the brd ram disk: the pages are pinned
/// for the duration of the I/O. Returns the bytes transferred.
pub fn odirect_rw(ctx: &Ctx, a: &Args) -> Outcome {
    let map = arg!(a.int("map"));
    let off = arg!(a.int("offset")) & !(page() - 1);
    let len = arg!(a.int("len")).clamp(page(), MAX_IO).div_ceil(page()) * page();
    let write = arg!(a.int("write")) != 0;
    let fd = match sys::open(ODIRECT_DEV, libc::O_RDWR | libc::O_DIRECT) {
        Ok(fd) => fd,
        Err(e) => return Outcome::errno(e),
    };
    let r = ctx.maps.with_span(map, off, len, |s| {
        // Keep the buffer page aligned and a multiple of the page size.
        let l = s.len & !(page() - 1);
        if l == 0 {
            return Err(libc::EINVAL);
        }
        // SAFETY: the buffer lies inside our mapping (read lock held).
        sys_ret(unsafe {
            if write {
                libc::pwrite(fd.0, s.addr as *const libc::c_void, l as usize, 0)
            } else {
                libc::pread(fd.0, s.addr as *mut libc::c_void, l as usize, 0)
            }
        })
    });
    span_val(r)
}

/// `process_vm_readv(2)` of [offset, offset+len) of a mapping from this process (the kernel
/// pins the pages with pin_user_pages_remote). Returns the bytes read.
pub fn process_vm_readv(ctx: &Ctx, a: &Args) -> Outcome {
    let map = arg!(a.int("map"));
    let off = arg!(a.int("offset"));
    let len = arg!(a.int("len")).min(MAX_IO);
    let r = ctx.maps.with_span(map, off, len, |s| {
        let mut buf = vec![0u8; s.len as usize];
        let local = iov(buf.as_mut_ptr() as u64, s.len);
        let remote = iov(s.addr, s.len);
        // SAFETY: both iovecs describe valid memory of the same length.
        sys_ret(unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) })
    });
    span_val(r)
}

/// `struct gup_test` from mm/gup_test.h.
#[repr(C)]
#[derive(Default)]
struct GupTestArgs {
    get_delta_usec: u64,
    put_delta_usec: u64,
    addr: u64,
    size: u64,
    nr_pages_per_call: u32,
    gup_flags: u32,
    test_flags: u32,
    which_pages: [u32; 8],
}

/// `struct pin_longterm_test` from mm/gup_test.h.
#[repr(C)]
struct PinLongtermArgs {
    addr: u64,
    size: u64,
    flags: u32,
}

fn gup_cmd(name: &str) -> Option<u8> {
    Some(match name {
        "gup_fast" => 1,
        "pin_fast" => 2,
        "pin_longterm" => 3,
        "gup_basic" => 4,
        "pin_basic" => 5,
        "dump_pages" => 6,
        _ => return None,
    })
}

const FOLL_WRITE: u32 = 1 << 0;
const FOLL_GET: u32 = 1 << 1;
const FOLL_FORCE: u32 = 1 << 3;
const FOLL_NOFAULT: u32 = 1 << 5;
const FOLL_LONGTERM: u32 = 1 << 8;
const FOLL_PCI_P2PDMA: u32 = 1 << 10;
const FOLL_HONOR_NUMA_FAULT: u32 = 1 << 12;
/// The flags a caller may pass at all (`enum` in include/linux/mm_types.h, 6.12).
const FOLL_PUBLIC: u32 = (1 << 13) - 1;
/// What `gup_fast_fallback` accepts from a caller (the rest is `WARN_ON_ONCE`, mm/gup.c).
const FOLL_FAST_OK: u32 = FOLL_WRITE
    | FOLL_LONGTERM
    | FOLL_FORCE
    | FOLL_GET
    | FOLL_NOFAULT
    | FOLL_PCI_P2PDMA
    | FOLL_HONOR_NUMA_FAULT;

/// `flags` as an in-kernel caller of the API behind gup_test command `cmd` may pass them.
/// gup_test hands its flags to get_user_pages*/pin_user_pages* unchecked, and those
/// functions `WARN_ON_ONCE` on a caller that breaks their contract (FOLL_GET with a pin,
/// FOLL_LONGTERM without one or with FOLL_PCI_P2PDMA, a flag the fast path does not take).
/// Such a WARN is hotfuzz misusing a debug interface, not a kernel bug (a campaign on a
/// CONFIG_GUP_TEST kernel filed `WARNING in gup_fast_fallback` for FOLL_SPLIT_PMD |
/// FOLL_INTERRUPTIBLE on gup_fast), so the contract is kept here. Pins are always for
/// writing: a read-only pin of the shared zero page is no pin at all (mm/gup.c does not count
/// pins of the zero page), and gup_test then WARNs on its own check that every returned page
/// is dma-pinned (`WARNING in gup_test_ioctl`, "pages[3193] is NOT dma-pinned", from a
/// campaign's pin_basic of a mapping that had only been read).
fn contract_flags(cmd: u8, flags: u32) -> u32 {
    let pin = matches!(cmd, 2 | 3 | 5);
    let fast = matches!(cmd, 1 | 2);
    let mut f = flags & FOLL_PUBLIC;
    if pin {
        f = (f & !FOLL_GET) | FOLL_WRITE;
    } else {
        f &= !FOLL_LONGTERM;
    }
    if fast {
        f &= FOLL_FAST_OK;
    }
    if cmd == 3 || f & FOLL_LONGTERM != 0 {
        f &= !FOLL_PCI_P2PDMA;
    }
    f
}

/// One of gup_test's pin-and-release ioctls (`cmd`: gup_fast, pin_fast, pin_longterm,
/// gup_basic, pin_basic, dump_pages) over a mapping, with `gup_flags` as far as the
/// command's API allows them ([`contract_flags`]).
pub fn gup_test_run(ctx: &Ctx, a: &Args) -> Outcome {
    let map = arg!(a.int("map"));
    let off = arg!(a.int("offset"));
    let len = arg!(a.int("len"));
    let Some(nr) = gup_cmd(arg!(a.str("cmd"))) else {
        return Outcome::errno(libc::EINVAL);
    };
    let per_call = arg!(a.int("per_call")) as u32;
    let flags = contract_flags(nr, arg!(a.int("gup_flags")) as u32);
    let fd = match sys::open(GUP_TEST, libc::O_RDWR) {
        Ok(fd) => fd,
        Err(e) => return Outcome::errno(e),
    };
    let r = ctx.maps.with_span(map, off, len, |s| {
        let mut t = GupTestArgs {
            addr: s.addr,
            size: s.len,
            nr_pages_per_call: per_call.max(1),
            gup_flags: flags,
            ..Default::default()
        };
        let req = ioc(
            IOC_READ | IOC_WRITE,
            b'g',
            nr,
            std::mem::size_of::<GupTestArgs>(),
        );
        // SAFETY: the ioctl reads and writes a struct gup_test we own.
        let r = unsafe { libc::ioctl(fd.0, req as _, &mut t as *mut GupTestArgs) };
        if r < 0 {
            Err(sys::errno())
        } else {
            Ok(())
        }
    });
    match r {
        Ok(r) => done(r),
        Err(e) => Outcome::errno(e),
    }
}

/// PIN_LONGTERM_TEST_START: gup_test keeps the range pinned (FOLL_LONGTERM, `flags`: 1 =
/// write, 2 = fast) until [`longterm_stop`]. Returns the gup_test fd.
pub fn longterm_start(ctx: &Ctx, a: &Args) -> Outcome {
    let map = arg!(a.int("map"));
    let off = arg!(a.int("offset"));
    let len = arg!(a.int("len"));
    let flags = arg!(a.int("flags")) as u32;
    let fd = match sys::open(GUP_TEST, libc::O_RDWR) {
        Ok(fd) => fd,
        Err(e) => return Outcome::errno(e),
    };
    let r = ctx.maps.with_span(map, off, len, |s| {
        let t = PinLongtermArgs {
            addr: s.addr,
            size: s.len,
            flags,
        };
        let req = ioc(IOC_WRITE, b'g', 7, std::mem::size_of::<PinLongtermArgs>());
        // SAFETY: the ioctl reads a struct pin_longterm_test we own.
        let r = unsafe { libc::ioctl(fd.0, req as _, &t as *const PinLongtermArgs) };
        if r < 0 {
            Err(sys::errno())
        } else {
            Ok(())
        }
    });
    match r {
        Ok(Ok(())) => {
            let raw = fd.into_raw();
            lock(ctx).insert(raw as u64, Handle::GupLongterm { fd: raw });
            Outcome::val(raw as u64)
        }
        Ok(Err(e)) | Err(e) => Outcome::errno(e),
    }
}

/// PIN_LONGTERM_TEST_STOP and close.
pub fn longterm_stop(ctx: &Ctx, a: &Args) -> Outcome {
    let h = arg!(a.int("pin"));
    let Some(Handle::GupLongterm { fd }) = lock(ctx).remove(&h) else {
        return Outcome::errno(libc::EBADF);
    };
    let req = ioc(IOC_NONE, b'g', 8, 0);
    // SAFETY: a no-argument ioctl on our own fd, then close.
    let r = unsafe { libc::ioctl(fd, req as _) };
    let e = if r < 0 { sys::errno() } else { 0 };
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    if e != 0 {
        Outcome::errno(e)
    } else {
        Outcome::ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gup_test_flags_keep_the_api_contract() {
        const FOLL_SPLIT_PMD: u32 = 1 << 9;
        const FOLL_INTERRUPTIBLE: u32 = 1 << 11;
        // The campaign's report: gup_fast with FORCE | SPLIT_PMD | INTERRUPTIBLE.
        assert_eq!(contract_flags(1, 0xa08), FOLL_FORCE);
        // Slow paths take SPLIT_PMD and INTERRUPTIBLE.
        assert_eq!(
            contract_flags(4, FOLL_SPLIT_PMD | FOLL_INTERRUPTIBLE),
            FOLL_SPLIT_PMD | FOLL_INTERRUPTIBLE
        );
        // FOLL_GET never with a pin, FOLL_LONGTERM never without one.
        assert_eq!(contract_flags(2, FOLL_GET | FOLL_WRITE), FOLL_WRITE);
        assert_eq!(contract_flags(4, FOLL_LONGTERM | FOLL_WRITE), FOLL_WRITE);
        assert_eq!(contract_flags(5, FOLL_LONGTERM), FOLL_LONGTERM | FOLL_WRITE);
        // Pins write (never a read-only pin of the zero page); gets may read.
        assert_eq!(contract_flags(5, 0x860), 0x860 | FOLL_WRITE);
        assert_eq!(contract_flags(4, 0), 0);
        // No P2PDMA with a long-term pin (pin_longterm adds FOLL_LONGTERM itself).
        assert_eq!(contract_flags(3, FOLL_PCI_P2PDMA), FOLL_WRITE);
        assert_eq!(
            contract_flags(5, FOLL_PCI_P2PDMA | FOLL_LONGTERM),
            FOLL_LONGTERM | FOLL_WRITE
        );
        assert_eq!(contract_flags(1, FOLL_PCI_P2PDMA), FOLL_PCI_P2PDMA);
        // Internal flags (FOLL_PIN and up) never pass.
        assert_eq!(contract_flags(4, 1 << 13 | 1 << 20), 0);
    }
}
