//! Memory blocks (`/sys/devices/system/memory`) and the hotplug policy knobs.

use super::{arg, done, Args, Ctx};
use crate::protocol::Outcome;
use crate::sys;
use std::time::{Duration, Instant};

const MEMORY: &str = "/sys/devices/system/memory";
/// `memory_hotplug.online_policy`.
pub const ONLINE_POLICY: &str = "/sys/module/memory_hotplug/parameters/online_policy";
/// `memory_hotplug.auto_movable_ratio`.
pub const AUTO_MOVABLE_RATIO: &str = "/sys/module/memory_hotplug/parameters/auto_movable_ratio";
/// `virtio_mem.unplug_online`.
pub const UNPLUG_ONLINE: &str = "/sys/module/virtio_mem/parameters/unplug_online";

/// `memoryN/state` ← online | online_kernel | online_movable | offline (or anything else:
/// invalid strings are part of the game).
pub fn state(_: &Ctx, a: &Args) -> Outcome {
    let block = arg!(a.int("block"));
    let st = arg!(a.str("state"));
    done(sys::write_str(&format!("{MEMORY}/memory{block}/state"), st))
}

/// `memoryN/online` ← 0 | 1 (driver core: already-in-state is success).
pub fn online(_: &Ctx, a: &Args) -> Outcome {
    let block = arg!(a.int("block"));
    let on = arg!(a.int("on"));
    done(sys::write_str(
        &format!("{MEMORY}/memory{block}/online"),
        if on != 0 { "1" } else { "0" },
    ))
}

/// Block ids currently present, ascending.
pub fn block_ids() -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(MEMORY)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("memory"))
                        .and_then(|n| n.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Every present block's state (sysfs reads only, no forks).
pub fn snapshot() -> Vec<crate::protocol::BlockSnapshot> {
    use crate::protocol::BlockSnapshot as B;
    block_ids()
        .into_iter()
        .map(|id| {
            let st = sys::read_str(&format!("{MEMORY}/memory{id}/state")).unwrap_or_default();
            let state = match st.as_str() {
                "offline" => B::OFFLINE,
                "online" => {
                    let zones = sys::read_str(&format!("{MEMORY}/memory{id}/valid_zones"))
                        .unwrap_or_default();
                    if zones == "Movable" {
                        B::MOVABLE
                    } else {
                        B::KERNEL
                    }
                }
                _ => B::OTHER,
            };
            B { id, state }
        })
        .collect()
}

/// Whether online block `id` has a page of `kind` (kpageflags, one page per 2 MiB: where
/// virtio-mem subblocks, THPs and hugetlb folios begin).
fn block_has(id: u64, kind: &str) -> bool {
    let Ok(s) = sys::read_str(&format!("{MEMORY}/block_size_bytes")) else {
        return false;
    };
    let Ok(bs) = u64::from_str_radix(&s, 16) else {
        return false;
    };
    let page = sys::page_size();
    let per = bs / page;
    let step = ((2 << 20) / page).max(1);
    let Ok(fd) = sys::open("/proc/kpageflags", libc::O_RDONLY) else {
        return false;
    };
    (0..per / step).any(|k| {
        let mut e = [0u8; 8];
        let pfn = id * per + k * step;
        sys::pread(&fd, &mut e, pfn * 8).is_ok_and(|n| n == 8)
            && super::physmem::is_kind(u64::from_le_bytes(e), kind)
    })
}

/// Finds the `nth` block (modulo the number of matches) that is `which`: any, online,
/// offline, movable (online in ZONE_MOVABLE), normal (online in a kernel zone), last
/// (counting from the highest id), partial (online with PageOffline pages: partly plugged by
/// virtio-mem), thp or hugetlb (holding such folios), nodeN (on node N). Returns its id;
/// ENOENT when none matches.
pub fn find(_: &Ctx, a: &Args) -> Outcome {
    let which = arg!(a.str("which"));
    let nth = arg!(a.int("nth"));
    let mut ids = block_ids();
    let pred = |id: u64| -> bool {
        let st = sys::read_str(&format!("{MEMORY}/memory{id}/state")).unwrap_or_default();
        let zones =
            || sys::read_str(&format!("{MEMORY}/memory{id}/valid_zones")).unwrap_or_default();
        match which {
            "online" => st == "online",
            "offline" => st == "offline",
            "movable" => st == "online" && zones() == "Movable",
            "normal" => st == "online" && zones() != "Movable",
            "partial" => st == "online" && block_has(id, "offline"),
            "thp" => st == "online" && block_has(id, "thp"),
            "hugetlb" => st == "online" && block_has(id, "hugetlb"),
            w if w.starts_with("node") => sys::exists(&format!("{MEMORY}/memory{id}/{w}")),
            _ => true,
        }
    };
    // QEMU reports a virtio-mem device's new size as soon as the guest has plugged it, before
    // the guest has added and onlined the block: a find right after `virtio_mem_wait` may run
    // in that gap. While blocks keep changing, look again (up to FIND_SETTLE); a system whose
    // blocks stay as they are for FIND_QUIET has nothing in flight, and the answer is ENOENT.
    let start = Instant::now();
    let mut last = snapshot();
    let mut quiet_since = start;
    loop {
        if which == "last" {
            ids.reverse();
        }
        let matching: Vec<u64> = ids.iter().copied().filter(|&id| pred(id)).collect();
        if !matching.is_empty() {
            return Outcome::val(matching[(nth % matching.len() as u64) as usize]);
        }
        if start.elapsed() >= FIND_SETTLE || quiet_since.elapsed() >= FIND_QUIET {
            return Outcome::errno(libc::ENOENT);
        }
        std::thread::sleep(Duration::from_millis(20));
        let now = snapshot();
        ids = now.iter().map(|b| b.id).collect();
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
}

/// How long `memblock_find` looks again while blocks are being added or changing state.
const FIND_SETTLE: Duration = Duration::from_millis(1000);
/// How long the blocks must stay unchanged before `memblock_find` gives up early.
const FIND_QUIET: Duration = Duration::from_millis(150);

/// `/sys/devices/system/memory/auto_online_blocks`.
pub fn auto_online_blocks(_: &Ctx, a: &Args) -> Outcome {
    let v = arg!(a.str("policy"));
    done(sys::write_str(&format!("{MEMORY}/auto_online_blocks"), v))
}

/// `memory_hotplug.online_policy` (contig-zones | auto-movable).
pub fn online_policy(_: &Ctx, a: &Args) -> Outcome {
    let v = arg!(a.str("policy"));
    done(sys::write_str(ONLINE_POLICY, v))
}

/// `memory_hotplug.auto_movable_ratio` (percent).
pub fn auto_movable_ratio(_: &Ctx, a: &Args) -> Outcome {
    let v = arg!(a.int("ratio"));
    done(sys::write_str(AUTO_MOVABLE_RATIO, &v.to_string()))
}

/// `virtio_mem.unplug_online` (may virtio-mem unplug online memory).
pub fn unplug_online(_: &Ctx, a: &Args) -> Outcome {
    let v = arg!(a.int("on"));
    done(sys::write_str(
        UNPLUG_ONLINE,
        if v != 0 { "Y" } else { "N" },
    ))
}
