//! Anonymous memory and the knobs that move memory around: THP, hugetlb pools, compaction,
//! page cache, NUMA migration, THP splitting.

use super::{arg, done, span_val, touch, Args, Ctx, MapKind};
use crate::protocol::Outcome;
use crate::sys;

/// debugfs THP split interface.
pub const SPLIT: &str = "/sys/kernel/debug/split_huge_pages";
const MPOL_BIND: i64 = 2;
const MPOL_MF_MOVE: i64 = 1 << 1;

/// mmap an anonymous private region of `len` bytes; `thp`: huge | nohuge | default; bind it
/// to `node` (>= 0); `populate`: touch every page (writes) at once. Returns the address.
pub fn mmap_anon(ctx: &Ctx, a: &Args) -> Outcome {
    let len = arg!(a.int("len"));
    let thp = arg!(a.str("thp")).to_string();
    let populate = arg!(a.int("populate")) != 0;
    let node = arg!(a.i64("node"));
    if len == 0 || len > 1 << 40 {
        return Outcome::errno(libc::EINVAL);
    }
    // SAFETY: a fresh anonymous mapping chosen by the kernel.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Outcome::errno(sys::errno());
    }
    let addr = p as u64;
    let page = sys::page_size();
    let len = len.div_ceil(page) * page;
    let advice = match thp.as_str() {
        "huge" => Some(libc::MADV_HUGEPAGE),
        "nohuge" => Some(libc::MADV_NOHUGEPAGE),
        _ => None,
    };
    if let Some(adv) = advice {
        // SAFETY: advising our own fresh mapping.
        unsafe { libc::madvise(p, len as usize, adv) };
    }
    if node >= 0 {
        if node >= 64 {
            // SAFETY: unmapping what we just mapped.
            unsafe { libc::munmap(p, len as usize) };
            return Outcome::errno(libc::EINVAL);
        }
        let mask: u64 = 1 << node;
        // SAFETY: mbind on our mapping with a valid one-word node mask.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mbind,
                addr,
                len,
                MPOL_BIND,
                &mask as *const u64,
                64u64,
                0u64,
            )
        };
        if r != 0 {
            let e = sys::errno();
            // SAFETY: as above.
            unsafe { libc::munmap(p, len as usize) };
            return Outcome::errno(e);
        }
    }
    if let Err(e) = ctx.maps.add(addr, len, MapKind::Anon) {
        // SAFETY: as above.
        unsafe { libc::munmap(p, len as usize) };
        return Outcome::errno(e);
    }
    if populate {
        let _ = ctx.maps.with_span(addr, 0, len, |s| touch(s, true));
        if super::deadline_hit() {
            // Populating ran out of time; the mapping exists but is partly populated.
            return Outcome::Errno {
                errno: libc::EINTR,
                msg: format!("populated only part of {addr:#x}"),
            };
        }
    }
    Outcome::val(addr)
}

/// Touches [offset, offset+len) of a mapping (reads, or writes when `write`). Pages that
/// fault (hwpoisoned) are replaced and reported as EHWPOISON.
pub fn touch_op(ctx: &Ctx, a: &Args) -> Outcome {
    let map = arg!(a.int("map"));
    let off = arg!(a.int("offset"));
    let len = arg!(a.int("len"));
    let write = arg!(a.int("write")) != 0;
    match ctx.maps.with_span(map, off, len, |s| touch(s, write)) {
        Ok(_) if super::deadline_hit() => Outcome::errno(libc::EINTR),
        Ok(0) => Outcome::ok(),
        Ok(faults) => Outcome::Errno {
            errno: libc::EHWPOISON,
            msg: format!("{faults} page(s) faulted"),
        },
        Err(e) => Outcome::errno(e),
    }
}

/// Unmaps a mapping.
pub fn munmap(ctx: &Ctx, a: &Args) -> Outcome {
    let map = arg!(a.int("map"));
    done(ctx.maps.remove(map))
}

fn hugepage_dir(size: &str) -> String {
    match size {
        "2M" => "hugepages-2048kB".into(),
        "1G" => "hugepages-1048576kB".into(),
        "16M" => "hugepages-16384kB".into(),
        other => format!("hugepages-{other}"),
    }
}

/// Sets the hugetlb pool of `size` (2M, 1G, 16M) to `count` pages, globally (`node` < 0) or on
/// one node.
pub fn hugetlb_pool(_: &Ctx, a: &Args) -> Outcome {
    let size = arg!(a.str("size"));
    let node = arg!(a.i64("node"));
    let asked = arg!(a.int("count"));
    let dir = hugepage_dir(size);
    let path = if node < 0 {
        format!("/sys/kernel/mm/hugepages/{dir}/nr_hugepages")
    } else {
        format!("/sys/devices/system/node/node{node}/hugepages/{dir}/nr_hugepages")
    };
    if node < 0 && !sys::exists(&format!("/sys/kernel/mm/hugepages/{dir}")) {
        return Outcome::Unsupported {
            why: format!("no {size} huge pages on this kernel"),
        };
    }
    // A pool may grow only by what the guest can spare now, keeping POOL_MARGIN free: a pool
    // that takes the last memory starves the guest (the harness's doing, not a kernel bug).
    let page: u64 = match size {
        "1G" => 1 << 30,
        "16M" => 16 << 20,
        _ => 2 << 20,
    };
    let current = sys::read_str(&path)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let spare = crate::engine::mem_available()
        .unwrap_or(0)
        .saturating_sub(POOL_MARGIN)
        / page;
    let count = asked.min(current + spare);
    match sys::write_str(&path, &count.to_string()) {
        Ok(()) if count != asked => Outcome::val(count),
        r => done(r),
    }
}

/// What a hugetlb pool always leaves free.
pub const POOL_MARGIN: u64 = 256 << 20;

/// `vm.compaction_proactiveness` (0 turns proactive compaction off).
pub fn compaction_proactiveness(_: &Ctx, a: &Args) -> Outcome {
    let v = arg!(a.int("value")).min(100);
    done(sys::write_str(
        "/proc/sys/vm/compaction_proactiveness",
        &v.to_string(),
    ))
}

/// Compacts all memory (`node` < 0) or one node.
pub fn compact(_: &Ctx, a: &Args) -> Outcome {
    let node = arg!(a.i64("node"));
    let path = if node < 0 {
        "/proc/sys/vm/compact_memory".to_string()
    } else {
        format!("/sys/devices/system/node/node{node}/compact")
    };
    done(sys::write_str(&path, "1"))
}

/// `/proc/sys/vm/drop_caches` ← 1 | 2 | 3.
pub fn drop_caches(_: &Ctx, a: &Args) -> Outcome {
    let what = arg!(a.int("what"));
    done(sys::write_str(
        "/proc/sys/vm/drop_caches",
        &what.to_string(),
    ))
}

/// `move_pages(2)` of up to `npages` pages of a mapping to `node`. Returns how many pages
/// ended up on `node`.
pub fn move_pages(ctx: &Ctx, a: &Args) -> Outcome {
    let map = arg!(a.int("map"));
    let off = arg!(a.int("offset"));
    let npages = arg!(a.int("npages")).clamp(1, 65536);
    let node = arg!(a.i64("node")) as i32;
    let page = sys::page_size();
    let r = ctx.maps.with_span(map, off, npages * page, |s| {
        let first = s.addr & !(page - 1);
        let n = (s.addr + s.len - first).div_ceil(page) as usize;
        let pages: Vec<*mut libc::c_void> = (0..n)
            .map(|i| (first + i as u64 * page) as *mut libc::c_void)
            .collect();
        let nodes = vec![node; n];
        let mut status = vec![0i32; n];
        // SAFETY: arrays of n entries each; pid 0 is ourselves.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_pages,
                0,
                n as u64,
                pages.as_ptr(),
                nodes.as_ptr(),
                status.as_mut_ptr(),
                MPOL_MF_MOVE,
            )
        };
        if r < 0 {
            Err(sys::errno())
        } else {
            Ok(status.iter().filter(|&&st| st == node).count() as u64)
        }
    });
    span_val(r)
}

/// `migrate_pages(2)` of this process from node `from` to node `to`. Returns the number of
/// pages that could not be moved.
pub fn migrate_pages(_: &Ctx, a: &Args) -> Outcome {
    let from = arg!(a.int("from"));
    let to = arg!(a.int("to"));
    if from >= 64 || to >= 64 {
        return Outcome::errno(libc::EINVAL);
    }
    let old: u64 = 1 << from;
    let new: u64 = 1 << to;
    // SAFETY: one-word node masks.
    let r = unsafe {
        libc::syscall(
            libc::SYS_migrate_pages,
            0,
            64u64,
            &old as *const u64,
            &new as *const u64,
        )
    };
    if r < 0 {
        Outcome::errno(sys::errno())
    } else {
        Outcome::val(r as u64)
    }
}

/// Splits the THPs of one mapping through debugfs (`pid,start,end`).
pub fn split_huge_pages(ctx: &Ctx, a: &Args) -> Outcome {
    let map = arg!(a.int("map"));
    let r = ctx.maps.with_span(map, 0, u64::MAX, |s| {
        let cmd = format!(
            "{},0x{:x},0x{:x}",
            std::process::id(),
            s.addr,
            s.addr + s.len
        );
        sys::write_str(SPLIT, &cmd)
    });
    match r {
        Ok(r) => done(r),
        Err(e) => Outcome::errno(e),
    }
}

/// Splits every THP in the system.
pub fn split_all(_: &Ctx, _: &Args) -> Outcome {
    done(sys::write_str(SPLIT, "1"))
}
