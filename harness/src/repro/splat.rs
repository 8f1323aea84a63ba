//! Reproducing a pasted splat: derive its title and stack, fuzz with generation biased to the
//! operations that reach the functions on that stack until a report with the same title is
//! filed, then reproduce and minimize that report.

use super::minimize::{Minimized, Progress, Reliability};
use super::{reproduce, ReproOptions, ReproSummary};
use crate::program::desc::Descriptions;
use crate::report::stack::parse_frame;
use anyhow::{anyhow, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Kernel function name fragments and the operations that drive them.
const PATHS: &[(&str, &[&str])] = &[
    (
        "online_pages",
        &[
            "memblock_state",
            "memblock_online",
            "memblock_find",
            "auto_online_blocks",
        ],
    ),
    (
        "offline_pages",
        &[
            "memblock_state",
            "memblock_online",
            "memblock_find",
            "notifier_fail_offline",
        ],
    ),
    (
        "memory_block",
        &["memblock_state", "memblock_online", "memblock_find"],
    ),
    (
        "memory_subsys",
        &["memblock_state", "memblock_online", "memblock_find"],
    ),
    (
        "memory_notify",
        &[
            "memblock_state",
            "notifier_fail_offline",
            "notifier_fail_online",
        ],
    ),
    // A fake-offline page someone else holds a reference to: a PFN walker raced the offline.
    (
        "fake_offline",
        &[
            "split_huge_pages_all",
            "damon_start",
            "kpageflags_read",
            "kcore_read",
            "compact_memory",
            "memblock_find",
            "pfn_find",
        ],
    ),
    (
        "virtio_mem",
        &[
            "virtio_mem_resize",
            "virtio_mem_wait",
            "virtio_mem_unplug_online",
            "memblock_state",
        ],
    ),
    (
        "add_memory",
        &["virtio_mem_resize", "dimm_add", "virtio_mem_hot_add"],
    ),
    ("remove_memory", &["virtio_mem_resize", "dimm_remove"]),
    ("acpi_memory", &["dimm_add", "dimm_remove"]),
    (
        "memtrace",
        &["memtrace_enable", "memtrace_read", "memtrace_mmap"],
    ),
    (
        "alloc_contig",
        &["memtrace_enable", "hugetlb_pool", "virtio_mem_resize"],
    ),
    (
        "pin_user_pages",
        &[
            "uring_pin",
            "vmsplice_pin",
            "gup_longterm_start",
            "gup_test_run",
        ],
    ),
    (
        "get_user_pages",
        &["gup_test_run", "process_vm_readv", "odirect_rw"],
    ),
    ("gup", &["gup_test_run", "gup_longterm_start"]),
    ("io_uring", &["uring_pin", "uring_unpin"]),
    ("splice", &["vmsplice_pin", "pipe_release"]),
    ("memory_failure", &["hard_offline", "hwpoison_corrupt"]),
    ("soft_offline", &["soft_offline"]),
    ("unpoison", &["hwpoison_unpoison"]),
    (
        "hwpoison",
        &["hard_offline", "soft_offline", "hwpoison_unpoison"],
    ),
    ("balloon", &["balloon"]),
    (
        "migrate",
        &["move_pages", "migrate_pages", "compact_memory"],
    ),
    ("compact", &["compact_memory"]),
    ("hugetlb", &["hugetlb_pool"]),
    ("damon", &["damon_start", "damon_stop"]),
    ("split_huge", &["split_huge_pages", "split_huge_pages_all"]),
    ("page_idle", &["page_idle_mark", "page_idle_read"]),
    (
        "kpage",
        &["kpageflags_read", "kpagecount_read", "kpagecgroup_read"],
    ),
    ("kcore", &["kcore_read"]),
    ("cec", &["cec_pfn"]),
    ("madvise", &["madvise_poison"]),
];

/// A splat taken apart.
#[derive(Debug, Clone)]
pub struct Splat {
    /// Its title (and alternatives).
    pub titles: Vec<String>,
    /// Function names on its stack, innermost first.
    pub frames: Vec<String>,
}

/// Parses a pasted splat (mail quoting, wrapping and timestamps are fine).
pub fn parse(text: &str) -> Result<Splat> {
    let reports = crate::report::parse(text);
    let r = crate::judge::primary(&reports)
        .map(|i| &reports[i])
        .ok_or_else(|| anyhow!("no kernel report found in the splat"))?;
    let frames = r
        .text
        .lines()
        .filter_map(parse_frame)
        .map(|f| f.func)
        .collect();
    Ok(Splat {
        titles: r.titles().map(str::to_string).collect(),
        frames,
    })
}

/// Operations the splat's stack points at, with generation weights raised for them: ten times
/// their own weight, more for frames nearer the top of the stack.
pub fn bias(s: &Splat, d: &Descriptions) -> BTreeMap<String, u32> {
    let mut w: BTreeMap<String, u32> = BTreeMap::new();
    let names: Vec<&str> = std::iter::once(s.titles.first().map(String::as_str).unwrap_or(""))
        .chain(s.frames.iter().map(String::as_str))
        .collect();
    for (depth, f) in names.iter().enumerate() {
        for (frag, ops) in PATHS {
            if f.contains(frag) {
                for op in *ops {
                    if let Some(o) = d.op(op) {
                        let boost = if depth < 4 { 20 } else { 10 };
                        let e = w.entry(o.name.clone()).or_insert(o.weight.max(1));
                        *e = (*e).max(o.weight.max(1) * boost);
                    }
                }
            }
        }
    }
    w
}

/// The walkers among the operations [`bias`] raised, in name order: a splat whose stack
/// points at PFN walkers (a fake-offline page someone held a reference to) is a race, and
/// races that take other walkers cannot hit it.
pub fn walkers(weights: &BTreeMap<String, u32>, d: &Descriptions) -> Vec<String> {
    weights
        .keys()
        .filter(|n| {
            d.op(n)
                .is_some_and(|o| o.has_role(crate::program::desc::Role::Walker) && !o.host)
        })
        .cloned()
        .collect()
}

/// Chance that a generated program is a race when the splat is one.
const SPLAT_RACE_RATE: f64 = 0.9;

/// Programs generated at the start when the splat is a race: a race is hit by a fresh race,
/// and mutation makes few.
const SPLAT_GENERATE: usize = 100;

/// `hotfuzz repro --splat`: fuzz towards the splat for at most `duration`, then reproduce.
pub fn reproduce_splat(
    o: &ReproOptions,
    splat: &Path,
    duration: Duration,
    progress: impl FnMut(&Progress),
) -> Result<ReproSummary> {
    let t0 = Instant::now();
    let text =
        std::fs::read_to_string(splat).with_context(|| format!("reading {}", splat.display()))?;
    let s = parse(&text).with_context(|| splat.display().to_string())?;
    let d = Descriptions::embedded();
    let weights = bias(&s, &d);
    eprintln!(
        "hotfuzz repro: splat {:?}; {} stack frames; biased operations: {}",
        s.titles[0],
        s.frames.len(),
        weights.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    let mut cfg = o.config.clone();
    cfg.vms = 1;
    let race = walkers(&weights, &d);
    if !race.is_empty() {
        eprintln!(
            "hotfuzz repro: races take their walkers from {}",
            race.join(", ")
        );
        cfg.race_rate = cfg.race_rate.max(SPLAT_RACE_RATE);
        cfg.generate = cfg.generate.max(SPLAT_GENERATE);
        cfg.race_walkers = race;
    }
    cfg.op_weights = weights;
    cfg.stop_on_titles = s.titles.clone();
    cfg.duration = Some(humantime::format_duration(duration).to_string());
    cfg.reports = o.reports.clone();
    cfg.workdir = o.work.join("splat-fuzz");
    cfg.use_guest(&o.guest);
    if let Some(p) = &o.profile {
        cfg.select_profiles(p)?;
    }
    let summary = crate::fuzz::run(&cfg)?;
    let hit = summary
        .reports
        .iter()
        .find(|(t, _, _)| s.titles.iter().any(|x| x == t))
        .map(|(_, _, dir)| dir.clone());
    match hit {
        Some(dir) => {
            let mut o = o.clone();
            o.input = dir;
            let mut r = reproduce(&o, progress)?;
            r.wall = t0.elapsed();
            Ok(r)
        }
        None => Ok(ReproSummary {
            dir: None,
            title: s.titles.first().cloned(),
            result: Minimized {
                original: Reliability::default(),
                original_ops: 0,
                candidate: Vec::new(),
                reliability: None,
                evidence: None,
                minimize_runs: 0,
                total_runs: 0,
                infra: 0,
                log: Vec::new(),
                gave_up: Some(format!(
                    "fuzzing did not reproduce the splat in {} ({} executions; it found {})",
                    humantime::format_duration(Duration::from_secs(summary.elapsed.as_secs())),
                    summary.execs,
                    if summary.reports.is_empty() {
                        "nothing".to_string()
                    } else {
                        summary
                            .reports
                            .iter()
                            .map(|r| r.0.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    }
                )),
            },
            wall: t0.elapsed(),
            script: Err("nothing reproduced".into()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPLAT: &str = "\
> [  101.123456] ------------[ cut here ]------------
> [  101.123460] WARNING: CPU: 1 PID: 311 at drivers/virtio/virtio_mem.c:1234 virtio_mem_fake_offline_going_offline+0x9e/0x140 [virtio_mem]
> [  101.123500] Modules linked in: virtio_mem
> [  101.123510] CPU: 1 UID: 0 PID: 311 Comm: sh Not tainted 6.12.0 #1
> [  101.123520] RIP: 0010:virtio_mem_fake_offline_going_offline+0x9e/0x140 [virtio_mem]
> [  101.123530] Call Trace:
> [  101.123540]  <TASK>
> [  101.123550]  virtio_mem_memory_notifier_cb+0x1d2/0x3c0 [virtio_mem]
> [  101.123560]  notifier_call_chain+0x5a/0xd0
> [  101.123570]  memory_notify+0x1b/0x30
> [  101.123580]  offline_pages+0x1e4/0x8b0
> [  101.123590]  memory_subsys_offline+0x5e/0x90
> [  101.123600]  device_offline+0xe1/0x120
> [  101.123610]  state_store+0x6c/0xd0
> [  101.123620]  kernfs_fop_write_iter+0x13f/0x1f0
> [  101.123630]  vfs_write+0x29a/0x460
> [  101.123640]  ksys_write+0x6f/0xf0
> [  101.123650]  do_syscall_64+0x82/0x190
> [  101.123660]  </TASK>
> [  101.123670] ---[ end trace 0000000000000000 ]---
";

    #[test]
    fn a_pasted_splat_biases_the_operations_its_stack_names() {
        let s = parse(SPLAT).unwrap();
        assert_eq!(
            s.titles[0],
            "WARNING in virtio_mem_fake_offline_going_offline"
        );
        assert!(
            s.frames.iter().any(|f| f == "offline_pages"),
            "{:?}",
            s.frames
        );
        let d = Descriptions::embedded();
        let w = bias(&s, &d);
        for op in [
            "memblock_state",
            "virtio_mem_resize",
            "notifier_fail_offline",
            "split_huge_pages_all",
        ] {
            let own = d.op(op).unwrap().weight.max(1);
            assert!(w[op] >= own * 10, "{op}: {w:?}");
        }
        assert!(!w.contains_key("mmap_anon"), "{w:?}");
        // The stack is a race's: races take the walkers it points at, and only those.
        let race = walkers(&w, &d);
        for op in ["split_huge_pages_all", "kpageflags_read"] {
            assert!(race.iter().any(|r| r == op), "{op}: {race:?}");
        }
        assert!(!race.iter().any(|r| r == "memblock_state"), "{race:?}");
        assert!(parse("nothing to see\n").is_err());
    }
}
