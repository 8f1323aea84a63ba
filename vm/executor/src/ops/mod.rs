//! The operations the executor implements, by family. An operation is a function from
//! resolved arguments to an [`Outcome`]; the table [`OPS`] maps description names to them.
//! Adding an operation that reuses existing argument kinds means a description line plus a
//! function and a table entry here.

use crate::protocol::Outcome;
use crate::sys;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

pub mod gup;
pub mod inject;
pub mod memblock;
pub mod memtrace;
pub mod misc;
pub mod physmem;
pub mod protect;
pub mod workload;

/// A resolved argument value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    /// Integer (two's complement).
    Int(u64),
    /// String.
    Str(String),
}

/// An operation's arguments by name.
#[derive(Debug, Default)]
pub struct Args {
    /// Values.
    pub map: BTreeMap<String, Val>,
}

impl Args {
    /// Integer argument `name`.
    pub fn int(&self, name: &str) -> Result<u64, Outcome> {
        match self.map.get(name) {
            Some(Val::Int(v)) => Ok(*v),
            Some(Val::Str(_)) => Err(bad_arg(name, "expected an integer")),
            None => Err(bad_arg(name, "missing")),
        }
    }

    /// Signed integer argument `name`.
    pub fn i64(&self, name: &str) -> Result<i64, Outcome> {
        self.int(name).map(|v| v as i64)
    }

    /// String argument `name`.
    pub fn str(&self, name: &str) -> Result<&str, Outcome> {
        match self.map.get(name) {
            Some(Val::Str(s)) => Ok(s),
            Some(Val::Int(_)) => Err(bad_arg(name, "expected a string")),
            None => Err(bad_arg(name, "missing")),
        }
    }
}

fn bad_arg(name: &str, what: &str) -> Outcome {
    Outcome::Errno {
        errno: libc::EINVAL,
        msg: format!("argument {name}: {what}"),
    }
}

/// Converts a system call result into an outcome.
pub fn done<T>(r: sys::SysResult<T>) -> Outcome {
    match r {
        Ok(_) => Outcome::ok(),
        Err(e) => Outcome::errno(e),
    }
}

/// A raw system call return value (`ssize_t`) as a result.
pub fn sys_ret(n: isize) -> sys::SysResult<u64> {
    if n < 0 {
        Err(sys::errno())
    } else {
        Ok(n as u64)
    }
}

/// The outcome of a value-producing system call made on a mapping span: the value, or the
/// errno of the call or of the span lookup.
pub fn span_val(r: Result<sys::SysResult<u64>, i32>) -> Outcome {
    match r {
        Ok(Ok(v)) => Outcome::val(v),
        Ok(Err(e)) | Err(e) => Outcome::errno(e),
    }
}

/// Shorthand for early returns of argument errors.
macro_rules! arg {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(o) => return o,
        }
    };
}
pub(crate) use arg;

/// Kernel objects a program holds across operations (released by their release operation or
/// when the executor exits).
#[derive(Debug)]
pub enum Handle {
    /// io_uring with registered (long-term pinned) buffers.
    Uring {
        /// Ring fd.
        fd: i32,
    },
    /// A pipe holding vmsplice'd page references.
    Pipe {
        /// Read end.
        r: i32,
        /// Write end.
        w: i32,
    },
    /// gup_test file with a PIN_LONGTERM_TEST_START in effect.
    GupLongterm {
        /// gup_test fd.
        fd: i32,
    },
}

/// Per-program state shared by all threads.
#[derive(Debug, Default)]
pub struct Ctx {
    /// Memory the program mapped.
    pub maps: Mappings,
    /// Handles by their resource value.
    pub handles: Mutex<HashMap<u64, Handle>>,
}

/// An operation table entry.
#[derive(Debug, Clone, Copy)]
pub struct OpEntry {
    /// Name, as in the descriptions.
    pub name: &'static str,
    /// Implementation.
    pub run: fn(&Ctx, &Args) -> Outcome,
    /// A file the kernel must provide, else the operation is unsupported.
    pub needs: Option<&'static str>,
}

const fn op(name: &'static str, run: fn(&Ctx, &Args) -> Outcome) -> OpEntry {
    OpEntry {
        name,
        run,
        needs: None,
    }
}

const fn op_needs(
    name: &'static str,
    run: fn(&Ctx, &Args) -> Outcome,
    needs: &'static str,
) -> OpEntry {
    OpEntry {
        name,
        run,
        needs: Some(needs),
    }
}

/// Every guest operation the executor implements.
pub static OPS: &[OpEntry] = &[
    // memory blocks and hotplug policy
    op("memblock_state", memblock::state),
    op("memblock_online", memblock::online),
    op("memblock_find", memblock::find),
    op("auto_online_blocks", memblock::auto_online_blocks),
    op_needs(
        "online_policy",
        memblock::online_policy,
        memblock::ONLINE_POLICY,
    ),
    op_needs(
        "auto_movable_ratio",
        memblock::auto_movable_ratio,
        memblock::AUTO_MOVABLE_RATIO,
    ),
    op_needs(
        "virtio_mem_unplug_online",
        memblock::unplug_online,
        memblock::UNPLUG_ONLINE,
    ),
    // anonymous memory and workload
    op("mmap_anon", workload::mmap_anon),
    op("mmap_touch", workload::touch_op),
    op("munmap", workload::munmap),
    op("hugetlb_pool", workload::hugetlb_pool),
    op("compact_memory", workload::compact),
    op(
        "compaction_proactiveness",
        workload::compaction_proactiveness,
    ),
    op("drop_caches", workload::drop_caches),
    op("move_pages", workload::move_pages),
    op("migrate_pages", workload::migrate_pages),
    op_needs(
        "split_huge_pages",
        workload::split_huge_pages,
        workload::SPLIT,
    ),
    op_needs("split_huge_pages_all", workload::split_all, workload::SPLIT),
    // get_user_pages
    op("uring_pin", gup::uring_pin),
    op("uring_unpin", gup::uring_unpin),
    op("vmsplice_pin", gup::vmsplice_pin),
    op("pipe_release", gup::pipe_release),
    op_needs("odirect_rw", gup::odirect_rw, gup::ODIRECT_DEV),
    op("process_vm_readv", gup::process_vm_readv),
    op_needs("gup_test_run", gup::gup_test_run, gup::GUP_TEST),
    op_needs("gup_longterm_start", gup::longterm_start, gup::GUP_TEST),
    op_needs("gup_longterm_stop", gup::longterm_stop, gup::GUP_TEST),
    // physical memory
    op("pfn_in_block", physmem::pfn_in_block),
    op("pfn_find", physmem::pfn_find),
    op("pfn_of_map", physmem::pfn_of_map),
    op("memblock_of_pfn", physmem::memblock_of_pfn),
    op_needs("soft_offline", physmem::soft_offline, physmem::SOFT_OFFLINE),
    op_needs("hard_offline", physmem::hard_offline, physmem::HARD_OFFLINE),
    op_needs("hwpoison_corrupt", physmem::corrupt, physmem::CORRUPT),
    op_needs("hwpoison_unpoison", physmem::unpoison, physmem::UNPOISON),
    op("kpageflags_read", physmem::kpageflags),
    op("kpagecount_read", physmem::kpagecount),
    op("kpagecgroup_read", physmem::kpagecgroup),
    op("kcore_read", physmem::kcore_read),
    op_needs("cec_pfn", physmem::cec_pfn, physmem::CEC),
    op("madvise_poison", physmem::madvise_poison),
    op_needs("page_idle_mark", physmem::idle_mark, physmem::PAGE_IDLE),
    op_needs("page_idle_read", physmem::idle_read, physmem::PAGE_IDLE),
    op_needs("damon_start", physmem::damon_start, physmem::DAMON),
    op_needs("damon_stop", physmem::damon_stop, physmem::DAMON),
    // fault injection
    op_needs(
        "notifier_fail_offline",
        inject::fail_offline,
        inject::NOTIFIER,
    ),
    op_needs(
        "notifier_fail_online",
        inject::fail_online,
        inject::NOTIFIER,
    ),
    op_needs(
        "fail_page_alloc",
        inject::fail_page_alloc,
        inject::FAIL_PAGE_ALLOC,
    ),
    // powerpc memtrace
    op_needs("memtrace_enable", memtrace::enable, memtrace::ENABLE),
    op_needs("memtrace_read", memtrace::read, memtrace::ENABLE),
    op_needs("memtrace_mmap", memtrace::mmap, memtrace::ENABLE),
    // scheduling
    op("sleep_ms", misc::sleep_ms),
    op("yield", misc::yield_now),
];

/// Looks an operation up by name.
pub fn find(name: &str) -> Option<&'static OpEntry> {
    OPS.iter().find(|o| o.name == name)
}

/// Why `entry` cannot run on this kernel, if it cannot.
pub fn unsupported(entry: &OpEntry) -> Option<String> {
    match entry.needs {
        Some(p) if !sys::exists(p) => Some(format!("kernel has no {p}")),
        _ => None,
    }
}

// ---- mappings ------------------------------------------------------------------------------

const MAX_MAPS: usize = 256;
/// (start, len) of registered mappings, readable from a signal handler without locks.
static RANGES: [(AtomicU64, AtomicU64); MAX_MAPS] =
    [const { (AtomicU64::new(0), AtomicU64::new(0)) }; MAX_MAPS];

thread_local! {
    static FAULTS: Cell<u64> = const { Cell::new(0) };
    static DEADLINE_HIT: Cell<bool> = const { Cell::new(false) };
}

/// Called from the deadline signal handler: the current operation's time is up. Loops in
/// user space (touching pages) check it; system calls see EINTR.
pub fn note_deadline() {
    DEADLINE_HIT.with(|d| d.set(true));
}

/// Resets the deadline flag before an operation starts.
pub fn clear_deadline() {
    DEADLINE_HIT.with(|d| d.set(false));
}

/// True once the current operation's deadline signal arrived.
pub fn deadline_hit() -> bool {
    DEADLINE_HIT.with(|d| d.get())
}

/// What a mapping is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// Private anonymous memory.
    Anon,
    /// A shared mapping of a device/debugfs file (memtrace).
    File,
}

/// The program's mappings. Touching holds the read lock, unmapping the write lock, so a
/// mapping never disappears under an access.
#[derive(Debug, Default)]
pub struct Mappings {
    inner: RwLock<BTreeMap<u64, (u64, MapKind)>>,
}

/// A byte range inside a registered mapping.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// Start address.
    pub addr: u64,
    /// Length in bytes (> 0).
    pub len: u64,
}

impl Mappings {
    /// Registers a new mapping.
    pub fn add(&self, addr: u64, len: u64, kind: MapKind) -> Result<(), i32> {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let slot = RANGES
            .iter()
            .find(|(s, _)| s.load(Ordering::SeqCst) == 0)
            .ok_or(libc::ENOMEM)?;
        slot.1.store(len, Ordering::SeqCst);
        slot.0.store(addr, Ordering::SeqCst);
        g.insert(addr, (len, kind));
        Ok(())
    }

    /// Runs `f` on the part of mapping `map` at [offset, offset+len) (clipped to the mapping,
    /// at least one byte), holding the read lock. EINVAL if `map` is not a mapping.
    pub fn with_span<T>(
        &self,
        map: u64,
        offset: u64,
        len: u64,
        f: impl FnOnce(Span) -> T,
    ) -> Result<T, i32> {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let &(mlen, _) = g.get(&map).ok_or(libc::EINVAL)?;
        let off = offset % mlen;
        let l = len.clamp(1, mlen - off);
        Ok(f(Span {
            addr: map + off,
            len: l,
        }))
    }

    /// Unregisters and unmaps `map`.
    pub fn remove(&self, map: u64) -> Result<(), i32> {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let (len, _) = g.remove(&map).ok_or(libc::EINVAL)?;
        for (s, l) in RANGES.iter() {
            if s.load(Ordering::SeqCst) == map {
                s.store(0, Ordering::SeqCst);
                l.store(0, Ordering::SeqCst);
            }
        }
        // SAFETY: unmapping a mapping this program created and no one else is using.
        if unsafe { libc::munmap(map as *mut libc::c_void, len as usize) } != 0 {
            return Err(sys::errno());
        }
        Ok(())
    }
}

/// Touches every page of `span` (reading, or writing one byte per page), stopping early when
/// the operation's deadline passes. Returns how many faults were absorbed (pages that raised
/// SIGBUS/SIGSEGV, e.g. hwpoisoned ones).
pub fn touch(span: Span, write: bool) -> u64 {
    let page = sys::page_size();
    let before = FAULTS.with(|f| f.get());
    let end = span.addr + span.len;
    let mut a = span.addr;
    while a < end && !deadline_hit() {
        let p = a as *mut u8;
        // SAFETY: p lies inside a registered, live mapping (read lock held by the caller);
        // faults on poisoned pages are absorbed by the handler installed by `install_fault_handler`.
        unsafe {
            if write {
                std::ptr::write_volatile(p, std::ptr::read_volatile(p).wrapping_add(1));
            } else {
                std::ptr::read_volatile(p);
            }
        }
        a = (a & !(page - 1)) + page;
    }
    FAULTS.with(|f| f.get()) - before
}

extern "C" fn on_fault(sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as u64;
    let page = 4096u64.max(unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64);
    let inside = RANGES.iter().any(|(s, l)| {
        let s = s.load(Ordering::SeqCst);
        s != 0 && addr >= s && addr < s + l.load(Ordering::SeqCst)
    });
    if inside {
        // Replace the bad page with a fresh one so the access can complete, and count it.
        // SAFETY: the page lies inside one of our own mappings.
        unsafe {
            libc::mmap(
                (addr & !(page - 1)) as *mut libc::c_void,
                page as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
        }
        FAULTS.with(|f| f.set(f.get() + 1));
        return;
    }
    // A real executor bug: die with the default action.
    // SAFETY: resetting the disposition and returning re-raises the fault.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// Installs the SIGBUS/SIGSEGV handler that absorbs faults inside program mappings.
pub fn install_fault_handler() {
    for sig in [libc::SIGBUS, libc::SIGSEGV] {
        // SAFETY: installing a handler with a zeroed, then filled, sigaction.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_fault as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = OPS.iter().map(|o| o.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len());
    }

    #[test]
    fn spans_are_clipped_to_the_mapping() {
        let ctx = Ctx::default();
        let a = workload::mmap_anon(
            &ctx,
            &Args {
                map: [
                    ("len".to_string(), Val::Int(3 * 4096)),
                    ("thp".to_string(), Val::Str("default".into())),
                    ("populate".to_string(), Val::Int(1)),
                    ("node".to_string(), Val::Int(u64::MAX)),
                ]
                .into_iter()
                .collect(),
            },
        );
        let Outcome::Ok { val: Some(addr) } = a else {
            panic!("{a:?}")
        };
        let s = ctx
            .maps
            .with_span(addr, 4096 * 2 + 10, 1 << 20, |s| s)
            .unwrap();
        assert_eq!(s.addr, addr + 4096 * 2 + 10);
        assert_eq!(s.len, 4096 - 10);
        assert_eq!(
            ctx.maps.with_span(addr + 1, 0, 1, |s| s).unwrap_err(),
            libc::EINVAL
        );
        ctx.maps.remove(addr).unwrap();
        assert!(ctx.maps.with_span(addr, 0, 1, |s| s).is_err());
    }
}
