//! powerpc memtrace (`/sys/kernel/debug/powerpc/memtrace`): alloc_contig_pages per node,
//! pages set PageOffline and removed from the linear map, exported as trace files.

use super::{arg, done, Args, Ctx, MapKind};
use crate::protocol::Outcome;
use crate::sys;

/// The enable file (needs CONFIG_PPC_MEMTRACE on powernv).
pub const ENABLE: &str = "/sys/kernel/debug/powerpc/memtrace/enable";
const DIR: &str = "/sys/kernel/debug/powerpc/memtrace";

/// Writes `size` (per node; 0 frees) to the enable file.
pub fn enable(_: &Ctx, a: &Args) -> Outcome {
    let size = arg!(a.int("size"));
    done(sys::write_str(ENABLE, &format!("0x{size:x}")))
}

fn trace_path(node: u64) -> String {
    format!("{DIR}/{node:08x}/trace")
}

/// Reads `len` bytes at `offset` of node `node`'s trace file. Returns the bytes read.
pub fn read(_: &Ctx, a: &Args) -> Outcome {
    let node = arg!(a.int("node"));
    let off = arg!(a.int("offset"));
    let len = arg!(a.int("len")).clamp(1, 16 << 20);
    let fd = match sys::open(&trace_path(node), libc::O_RDONLY) {
        Ok(fd) => fd,
        Err(e) => return Outcome::errno(e),
    };
    let mut buf = vec![0u8; len as usize];
    match sys::pread(&fd, &mut buf, off) {
        Ok(n) => Outcome::val(n as u64),
        Err(e) => Outcome::errno(e),
    }
}

/// mmaps `len` bytes at `offset` of node `node`'s trace file (shared, read-write) and returns
/// it as a mapping other operations can touch or unmap.
pub fn mmap(ctx: &Ctx, a: &Args) -> Outcome {
    let node = arg!(a.int("node"));
    let page = sys::page_size();
    let off = arg!(a.int("offset")) & !(page - 1);
    let len = arg!(a.int("len")).clamp(page, 1 << 30).div_ceil(page) * page;
    let fd = match sys::open(&trace_path(node), libc::O_RDWR) {
        Ok(fd) => fd,
        Err(e) => return Outcome::errno(e),
    };
    // SAFETY: a new shared mapping of our own fd.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.0,
            off as i64,
        )
    };
    if p == libc::MAP_FAILED {
        return Outcome::errno(sys::errno());
    }
    if let Err(e) = ctx.maps.add(p as u64, len, MapKind::File) {
        // SAFETY: unmapping what we just mapped.
        unsafe { libc::munmap(p, len as usize) };
        return Outcome::errno(e);
    }
    Outcome::val(p as u64)
}
