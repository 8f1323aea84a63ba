//! Interfaces that walk or poke physical memory by PFN: soft/hard offlining, hwpoison
//! injection, RAS CEC, kpageflags/kpagecount/kpagecgroup, /proc/kcore, the idle page bitmap
//! and DAMON's physical-address monitoring. PFNs come from memory block numbers (by kind,
//! from kpageflags) or from the program's own mappings.

use super::{arg, done, span_val, Args, Ctx};
use crate::protocol::Outcome;
use crate::sys;

/// `soft_offline_page` (physical address).
pub const SOFT_OFFLINE: &str = "/sys/devices/system/memory/soft_offline_page";
/// `hard_offline_page` (physical address).
pub const HARD_OFFLINE: &str = "/sys/devices/system/memory/hard_offline_page";
/// hwpoison-inject's corrupt-pfn.
pub const CORRUPT: &str = "/sys/kernel/debug/hwpoison/corrupt-pfn";
/// hwpoison-inject's unpoison-pfn.
pub const UNPOISON: &str = "/sys/kernel/debug/hwpoison/unpoison-pfn";
/// CONFIG_IDLE_PAGE_TRACKING's bitmap.
pub const PAGE_IDLE: &str = "/sys/kernel/mm/page_idle/bitmap";
/// DAMON's sysfs interface.
pub const DAMON: &str = "/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds";
const KDAMOND: &str = "/sys/kernel/mm/damon/admin/kdamonds/0";

fn block_size() -> Result<u64, i32> {
    let s = sys::read_str("/sys/devices/system/memory/block_size_bytes")?;
    u64::from_str_radix(&s, 16).map_err(|_| libc::EINVAL)
}

/// The PFN of page `page` (modulo the block's pages) of memory block `block`.
pub fn pfn_in_block(_: &Ctx, a: &Args) -> Outcome {
    let block = arg!(a.int("block"));
    let page = arg!(a.int("page"));
    let bs = match block_size() {
        Ok(b) => b,
        Err(e) => return Outcome::errno(e),
    };
    let per = (bs / sys::page_size()).max(1);
    Outcome::val(block.wrapping_mul(per).wrapping_add(page % per))
}

/// The memory block holding page `pfn`.
pub fn memblock_of_pfn(_: &Ctx, a: &Args) -> Outcome {
    let pfn = arg!(a.int("pfn"));
    match block_size() {
        Ok(bs) => Outcome::val(pfn.wrapping_mul(sys::page_size()) / bs.max(1)),
        Err(e) => Outcome::errno(e),
    }
}

/// The PFN backing byte `offset` of a mapping (from /proc/self/pagemap); ENODATA if the page
/// is not present.
pub fn pfn_of_map(ctx: &Ctx, a: &Args) -> Outcome {
    let map = arg!(a.int("map"));
    let off = arg!(a.int("offset"));
    let page = sys::page_size();
    let r = ctx.maps.with_span(map, off, 1, |s| {
        let fd = sys::open("/proc/self/pagemap", libc::O_RDONLY)?;
        let mut e = [0u8; 8];
        sys::pread(&fd, &mut e, s.addr / page * 8)?;
        let entry = u64::from_le_bytes(e);
        if entry & (1 << 63) == 0 {
            return Err(libc::ENODATA);
        }
        Ok(entry & ((1 << 55) - 1))
    });
    span_val(r)
}

fn phys_write(path: &str, a: &Args) -> Outcome {
    let pfn = arg!(a.int("pfn"));
    let addr = pfn.wrapping_mul(sys::page_size());
    done(sys::write_str(path, &format!("0x{addr:x}")))
}

/// soft_offline_page: migrate the page away and take it out of use.
pub fn soft_offline(_: &Ctx, a: &Args) -> Outcome {
    phys_write(SOFT_OFFLINE, a)
}

/// hard_offline_page: memory_failure() on the page as if the hardware reported it (never on
/// a page hotfuzz itself runs on, see [`super::protect`]).
pub fn hard_offline(_: &Ctx, a: &Args) -> Outcome {
    let pfn = arg!(a.int("pfn"));
    if let Some(refused) = refuse_own(pfn) {
        return refused;
    }
    phys_write(HARD_OFFLINE, a)
}

/// hwpoison-inject corrupt-pfn (never on a page hotfuzz itself runs on).
pub fn corrupt(_: &Ctx, a: &Args) -> Outcome {
    let pfn = arg!(a.int("pfn"));
    if let Some(refused) = refuse_own(pfn) {
        return refused;
    }
    done(sys::write_str(CORRUPT, &format!("0x{pfn:x}")))
}

fn refuse_own(pfn: u64) -> Option<Outcome> {
    super::protect::protected(pfn).then(|| Outcome::Errno {
        errno: libc::EPERM,
        msg: format!("pfn {pfn:#x} is a page hotfuzz itself runs on"),
    })
}

/// hwpoison-inject unpoison-pfn.
pub fn unpoison(_: &Ctx, a: &Args) -> Outcome {
    let pfn = arg!(a.int("pfn"));
    done(sys::write_str(UNPOISON, &format!("0x{pfn:x}")))
}

fn read_u64s(path: &str, index: u64, count: u64) -> Outcome {
    let fd = match sys::open(path, libc::O_RDONLY) {
        Ok(fd) => fd,
        Err(e) => return Outcome::errno(e),
    };
    let n = count.clamp(1, 1 << 16) as usize;
    let mut buf = vec![0u8; n * 8];
    match sys::pread(&fd, &mut buf, index.wrapping_mul(8)) {
        Ok(got) => Outcome::val((got / 8) as u64),
        Err(e) => Outcome::errno(e),
    }
}

/// Reads `count` entries of /proc/kpageflags from `pfn`; returns how many were read.
pub fn kpageflags(_: &Ctx, a: &Args) -> Outcome {
    read_u64s("/proc/kpageflags", arg!(a.int("pfn")), arg!(a.int("count")))
}

/// Reads `count` entries of /proc/kpagecount from `pfn`; returns how many were read.
pub fn kpagecount(_: &Ctx, a: &Args) -> Outcome {
    read_u64s("/proc/kpagecount", arg!(a.int("pfn")), arg!(a.int("count")))
}

/// Marks `count` pages from `pfn` idle in the page_idle bitmap.
pub fn idle_mark(_: &Ctx, a: &Args) -> Outcome {
    let pfn = arg!(a.int("pfn"));
    let count = arg!(a.int("count")).clamp(1, 1 << 20);
    let fd = match sys::open(PAGE_IDLE, libc::O_WRONLY) {
        Ok(fd) => fd,
        Err(e) => return Outcome::errno(e),
    };
    let words = count.div_ceil(64) as usize;
    let buf = vec![0xffu8; words * 8];
    match sys::pwrite(&fd, &buf, (pfn / 64) * 8) {
        Ok(n) => Outcome::val(n as u64),
        Err(e) => Outcome::errno(e),
    }
}

/// Reads the page_idle bitmap for `count` pages from `pfn`.
pub fn idle_read(_: &Ctx, a: &Args) -> Outcome {
    let pfn = arg!(a.int("pfn"));
    let count = arg!(a.int("count")).clamp(1, 1 << 20);
    read_u64s(PAGE_IDLE, pfn / 64, count.div_ceil(64))
}

fn damon_write(rel: &str, v: &str) -> Result<(), (i32, String)> {
    let path = if rel.starts_with('/') {
        rel.to_string()
    } else {
        format!("{KDAMOND}/{rel}")
    };
    sys::write_str(&path, v).map_err(|e| (e, format!("writing {v} to {path}")))
}

/// Starts a kdamond monitoring physical addresses [pfn, pfn+npages) with the `paddr`
/// operations and an optional DAMOS `action` (none, pageout, lru_prio, lru_deprio,
/// migrate_hot, migrate_cold) on every region.
pub fn damon_start(_: &Ctx, a: &Args) -> Outcome {
    let pfn = arg!(a.int("pfn"));
    let npages = arg!(a.int("npages")).max(1);
    let action = arg!(a.str("action")).to_string();
    let aggr = arg!(a.int("aggr_us")).clamp(1000, 1_000_000);
    let page = sys::page_size();
    let start = pfn.wrapping_mul(page);
    let end = start.wrapping_add(npages.wrapping_mul(page));
    let ctx0 = "contexts/0";
    let target = "contexts/0/targets/0";
    let mut steps: Vec<(String, String)> = vec![
        (DAMON.to_string(), "1".into()),
        ("contexts/nr_contexts".into(), "1".into()),
        (format!("{ctx0}/operations"), "paddr".into()),
        (format!("{ctx0}/targets/nr_targets"), "1".into()),
        (format!("{target}/regions/nr_regions"), "1".into()),
        (format!("{target}/regions/0/start"), start.to_string()),
        (format!("{target}/regions/0/end"), end.to_string()),
        (
            format!("{ctx0}/monitoring_attrs/intervals/sample_us"),
            (aggr / 10).max(100).to_string(),
        ),
        (
            format!("{ctx0}/monitoring_attrs/intervals/aggr_us"),
            aggr.to_string(),
        ),
    ];
    if action != "none" {
        let s = format!("{ctx0}/schemes/0");
        steps.extend([
            (format!("{ctx0}/schemes/nr_schemes"), "1".to_string()),
            (format!("{s}/action"), action.clone()),
            (format!("{s}/access_pattern/sz/min"), "0".into()),
            (format!("{s}/access_pattern/sz/max"), u64::MAX.to_string()),
            (format!("{s}/access_pattern/nr_accesses/min"), "0".into()),
            (
                format!("{s}/access_pattern/nr_accesses/max"),
                "4294967295".into(),
            ),
            (format!("{s}/access_pattern/age/min"), "0".into()),
            (format!("{s}/access_pattern/age/max"), "4294967295".into()),
        ]);
    }
    steps.push(("state".into(), "on".into()));
    for (path, v) in &steps {
        if let Err((e, msg)) = damon_write(path, v) {
            return Outcome::Errno { errno: e, msg };
        }
    }
    Outcome::ok()
}

/// Stops the kdamond and removes it.
pub fn damon_stop(_: &Ctx, _: &Args) -> Outcome {
    let _ = damon_write("state", "off");
    match damon_write(DAMON, "0") {
        Ok(()) => Outcome::ok(),
        Err((e, msg)) => Outcome::Errno { errno: e, msg },
    }
}

/// /proc/kpageflags bits (include/uapi/linux/kernel-page-flags.h).
pub mod kpf {
    /// Slab page.
    pub const SLAB: u64 = 1 << 7;
    /// Free page in the buddy allocator.
    pub const BUDDY: u64 = 1 << 10;
    /// On an LRU list.
    pub const LRU: u64 = 1 << 5;
    /// Anonymous.
    pub const ANON: u64 = 1 << 12;
    /// hugetlb.
    pub const HUGE: u64 = 1 << 17;
    /// Not backed by a struct page the kernel can see (or offline section).
    pub const NOPAGE: u64 = 1 << 20;
    /// Part of a transparent huge page.
    pub const THP: u64 = 1 << 22;
    /// PageOffline (virtio-mem's fake-offline pages, balloon pages, memtrace).
    pub const OFFLINE: u64 = 1 << 23;
    /// PG_reserved (via KPF_RESERVED, bit 32).
    pub const RESERVED: u64 = 1 << 32;
}

/// The kpageflags of `count` pages from `pfn` (fewer at the end of memory).
pub fn page_flags(pfn: u64, count: u64) -> Result<Vec<u64>, i32> {
    let fd = sys::open("/proc/kpageflags", libc::O_RDONLY)?;
    let mut buf = vec![0u8; count as usize * 8];
    let got = sys::pread(&fd, &mut buf, pfn.wrapping_mul(8))?;
    Ok(buf[..got - got % 8]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Whether a page's flags make it of `kind` (see the descriptions' `pfn_kinds`).
pub fn is_kind(flags: u64, kind: &str) -> bool {
    match kind {
        "offline" => flags & kpf::OFFLINE != 0,
        "lru" => flags & kpf::LRU != 0,
        "anon" => flags & kpf::ANON != 0,
        "thp" => flags & kpf::THP != 0,
        "hugetlb" => flags & kpf::HUGE != 0,
        "buddy" => flags & kpf::BUDDY != 0,
        "slab" => flags & kpf::SLAB != 0,
        "reserved_nopage" => flags & (kpf::RESERVED | kpf::NOPAGE) != 0,
        _ => flags & kpf::NOPAGE == 0,
    }
}

/// The `nth` page (modulo the matches) of memory block `block` that is of `kind`.
pub fn pfn_find(_: &Ctx, a: &Args) -> Outcome {
    let block = arg!(a.int("block"));
    let kind = arg!(a.str("kind"));
    let nth = arg!(a.int("nth"));
    let bs = match block_size() {
        Ok(b) => b,
        Err(e) => return Outcome::errno(e),
    };
    let per = (bs / sys::page_size()).max(1);
    let first = block.wrapping_mul(per);
    let flags = match page_flags(first, per) {
        Ok(f) => f,
        Err(e) => return Outcome::errno(e),
    };
    let matching: Vec<u64> = flags
        .iter()
        .enumerate()
        .filter(|(_, f)| is_kind(**f, kind))
        .map(|(i, _)| first + i as u64)
        .collect();
    if matching.is_empty() {
        return Outcome::errno(libc::ENOENT);
    }
    Outcome::val(matching[(nth % matching.len() as u64) as usize])
}

/// /proc/kpagecgroup: the memory cgroup inode of `count` pages from `pfn`.
pub fn kpagecgroup(_: &Ctx, a: &Args) -> Outcome {
    read_u64s(
        "/proc/kpagecgroup",
        arg!(a.int("pfn")),
        arg!(a.int("count")),
    )
}

/// RAS_CEC's debugfs interface.
pub const CEC: &str = "/sys/kernel/debug/ras/cec/pfn";

/// A corrected memory error on `pfn` for the RAS correctable-errors collector.
pub fn cec_pfn(_: &Ctx, a: &Args) -> Outcome {
    let pfn = arg!(a.int("pfn"));
    done(sys::write_str(CEC, &format!("0x{pfn:x}")))
}

/// Reads the direct mapping of `count` pages from `pfn` through /proc/kcore (the ELF note
/// segments map physical memory at the kernel's direct-map addresses).
pub fn kcore_read(_: &Ctx, a: &Args) -> Outcome {
    let pfn = arg!(a.int("pfn"));
    let count = arg!(a.int("count")).clamp(1, 64);
    let page = sys::page_size();
    let phys = pfn.wrapping_mul(page);
    let fd = match sys::open("/proc/kcore", libc::O_RDONLY) {
        Ok(f) => f,
        Err(e) => return Outcome::errno(e),
    };
    // ELF64 header, then program headers: find the PT_LOAD whose p_paddr range holds phys.
    let mut eh = [0u8; 64];
    if let Err(e) = sys::pread(&fd, &mut eh, 0) {
        return Outcome::errno(e);
    }
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 {
        return Outcome::errno(libc::ENOEXEC);
    }
    let u16at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u64at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
    let phoff = u64at(&eh, 32);
    let phentsize = u16at(&eh, 54);
    let phnum = u16at(&eh, 56).min(4096);
    let mut ph = vec![0u8; (phentsize * phnum) as usize];
    if let Err(e) = sys::pread(&fd, &mut ph, phoff) {
        return Outcome::errno(e);
    }
    for i in 0..phnum as usize {
        let h = &ph[i * phentsize as usize..][..56.min(phentsize as usize)];
        if h.len() < 56 || u32::from_le_bytes(h[0..4].try_into().expect("4")) != 1 {
            continue;
        }
        let offset = u64at(h, 8);
        let paddr = u64at(h, 24);
        let filesz = u64at(h, 32);
        if paddr != u64::MAX && phys >= paddr && phys < paddr.saturating_add(filesz) {
            let len = (count * page).min(paddr + filesz - phys) as usize;
            let mut buf = vec![0u8; len];
            return match sys::pread(&fd, &mut buf, offset + (phys - paddr)) {
                Ok(n) => Outcome::val(n as u64),
                Err(e) => Outcome::errno(e),
            };
        }
    }
    Outcome::errno(libc::ENXIO)
}

/// madvise(MADV_HWPOISON) or (soft) madvise(MADV_SOFT_OFFLINE) on part of a mapping.
pub fn madvise_poison(ctx: &Ctx, a: &Args) -> Outcome {
    let map = arg!(a.int("map"));
    let off = arg!(a.int("offset"));
    let len = arg!(a.int("len"));
    let soft = arg!(a.int("soft")) != 0;
    let page = sys::page_size();
    let advice = if soft { 101 } else { 100 }; // MADV_SOFT_OFFLINE, MADV_HWPOISON
    let r = ctx.maps.with_span(map, off, len, |s| {
        let start = s.addr & !(page - 1);
        let end = (s.addr + s.len).div_ceil(page) * page;
        // SAFETY: advising pages of our own registered mapping.
        let r =
            unsafe { libc::madvise(start as *mut libc::c_void, (end - start) as usize, advice) };
        if r != 0 {
            Err(sys::errno())
        } else {
            Ok(0)
        }
    });
    match r {
        Ok(Ok(_)) => Outcome::ok(),
        Ok(Err(e)) | Err(e) => Outcome::errno(e),
    }
}
