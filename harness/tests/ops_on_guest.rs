//! Every operation runs on a real guest (one TCG boot, several programs), with its effect
//! checked where the guest lets us see it: blocks really go offline, pins really hold pages
//! (and long-term pins really migrate them out of ZONE_MOVABLE), sizes really change, knobs
//! read back, and operations the kernel lacks say "unsupported".

mod common;

use hotfuzz::program::desc::Descriptions;
use hotfuzz::program::prog::Program;
use hotfuzz::run::runner::{boot_connected, RunOptions, RunResult, Runner};
use hotfuzz_executor::protocol::Outcome;
use hotfuzz_vm::{Vm, VmOptions};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

struct Ctx<'a> {
    d: Descriptions,
    vm: &'a Vm,
    ran: BTreeSet<String>,
}

impl Ctx<'_> {
    fn run(&mut self, runner: &mut Runner<&hotfuzz_vm::Vm>, text: &str) -> (Program, RunResult) {
        let p = Program::parse(text, &self.d).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let r = runner
            .run(
                &self.d,
                &p,
                &RunOptions {
                    kcov: false,
                    timeout: None,
                    settle: Duration::from_millis(200),
                    repeat_budget: None,
                },
            )
            .unwrap();
        let console: Vec<String> = r.console.iter().map(|l| l.text.clone()).collect();
        assert!(r.lost.is_none(), "{:?}\n{}", r.lost, console.join("\n"));
        assert!(
            hotfuzz::judge::console_reports(&r).is_empty(),
            "splat while running\n{text}\n{}",
            console.join("\n")
        );
        for o in &r.ops {
            if o.outcome.is_some() {
                self.ran.insert(p.ops[o.index].name.clone());
            }
        }
        (p, r)
    }

    fn sh(&self, cmd: &str) -> String {
        self.vm.run(cmd).unwrap().trim().to_string()
    }
}

fn out(r: &RunResult, i: usize) -> Outcome {
    r.ops[i]
        .outcome
        .clone()
        .unwrap_or_else(|| panic!("op {i} has no result: {:?}", r.ops))
}

fn val(r: &RunResult, i: usize) -> u64 {
    match out(r, i) {
        Outcome::Ok { val: Some(v) } => v,
        o => panic!("op {i}: expected a value, got {o:?}"),
    }
}

fn ok(r: &RunResult, i: usize) {
    assert!(
        matches!(out(r, i), Outcome::Ok { .. }),
        "op {i}: {:?}\nconsole:\n{}",
        out(r, i),
        r.console
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn all_ok(r: &RunResult) {
    for i in 0..r.ops.len() {
        ok(r, i);
    }
}

fn unsupported(r: &RunResult, i: usize) {
    assert!(
        matches!(out(r, i), Outcome::Unsupported { .. }),
        "op {i}: {:?}",
        out(r, i)
    );
}

fn kpageflags(c: &Ctx, pfn: u64) -> u64 {
    c.sh(&format!(
        "dd if=/proc/kpageflags bs=8 skip={pfn} count=1 2>/dev/null | od -An -tu8"
    ))
    .parse()
    .unwrap()
}

const KPF_HWPOISON: u64 = 1 << 19;

#[test]
fn every_operation_runs_on_a_real_guest() {
    let d = Descriptions::embedded();
    let (kernel, image, mut m) = common::tcg_guest();
    m.numa_nodes = 2;
    let c = boot_connected(&kernel, &image, &VmOptions::new(m)).unwrap();
    let vm = c.vm;
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("run.log");
    let mut runner = Runner::with_agent(&vm, c.agent, &log_path).unwrap();
    let mut c = Ctx {
        d: d.clone(),
        vm: &vm,
        ran: BTreeSet::new(),
    };

    // Scheduling, anonymous memory, pins that need no hotplug, and deadlines.
    let (_, r) = c.run(
        &mut runner,
        r#"yield()
sleep_ms(ms=0x14)
r0 = mmap_anon(len=0x400000, thp="huge", populate=0x1, node=-0x1)
mmap_touch(map=r0, offset=0x1000, len=0x10000, write=0x0)
process_vm_readv(map=r0, offset=0x0, len=0x20000)
odirect_rw(map=r0, offset=0x0, len=0x8000, write=0x1)
odirect_rw(map=r0, offset=0x0, len=0x8000, write=0x0)
split_huge_pages(map=r0)
munmap(map=r0)
munmap(map=r0)
"#,
    );
    for i in 0..9 {
        ok(&r, i);
    }
    assert_eq!(val(&r, 4), 0x20000);
    assert_eq!(val(&r, 5), 0x8000);
    assert_eq!(val(&r, 6), 0x8000);
    assert_eq!(out(&r, 9), Outcome::errno(libc::EINVAL), "already unmapped");

    // Plug, find, offline/online through both files, unplug: the sizes and states are real.
    let before_blocks = c.sh("ls -d /sys/devices/system/memory/memory* | wc -l");
    let (_, r) = c.run(
        &mut runner,
        r#"virtio_mem_resize(dev=0x0, size=0x10000000)
virtio_mem_wait(dev=0x0, ms=0x1388)
r0 = memblock_find(which="movable", nth=0x1)
memblock_state(block=r0, state="offline")
r1 = memblock_find(which="offline", nth=0x0)
"#,
    );
    all_ok(&r);
    let block = val(&r, 2);
    assert_eq!(val(&r, 4), block, "the offlined block is found as offline");
    assert_eq!(vm.qmp().virtio_mem_size("vm0").unwrap(), 256 << 20);
    assert_eq!(
        c.sh(&format!(
            "cat /sys/devices/system/memory/memory{block}/state"
        )),
        "offline"
    );
    assert_ne!(
        c.sh("ls -d /sys/devices/system/memory/memory* | wc -l"),
        before_blocks
    );
    let (_, r) = c.run(
        &mut runner,
        &format!(
            "memblock_online(block=0x{block:x}, on=0x1)\nmemblock_online(block=0x{block:x}, on=0x0)\nmemblock_state(block=0x{block:x}, state=\"online_movable\")\n"
        ),
    );
    all_ok(&r);
    assert_eq!(
        c.sh(&format!(
            "cat /sys/devices/system/memory/memory{block}/valid_zones"
        )),
        "Movable"
    );

    // A vmsplice'd page keeps its block from going offline (offlining is interrupted at its
    // deadline) until released; a long-term io_uring pin moves its page out of ZONE_MOVABLE.
    // Mappings are bound to node 0, whose ZONE_MOVABLE (the plugged memory) the allocator
    // prefers for user pages.
    let (_, r) = c.run(
        &mut runner,
        r#"r0 = mmap_anon(len=0x200000, thp="nohuge", populate=0x1, node=0x0)
r1 = vmsplice_pin(map=r0, offset=0x0, len=0x1000)
r2 = pfn_of_map(map=r0, offset=0x0)
r3 = memblock_of_pfn(pfn=r2)
memblock_state(block=r3, state="offline")
pipe_release(pipe=r1)
memblock_state(block=r3, state="offline")
memblock_state(block=r3, state="online_movable")
r4 = mmap_anon(len=0x200000, thp="nohuge", populate=0x1, node=0x0)
r5 = pfn_of_map(map=r4, offset=0x10000)
r6 = uring_pin(map=r4, offset=0x10000, len=0x1000)
r7 = pfn_of_map(map=r4, offset=0x10000)
uring_unpin(ring=r6)
pipe_release(pipe=r1)
"#,
    );
    let hot_pfn = 4u64 << 30 >> 12;
    assert!(
        val(&r, 2) >= hot_pfn,
        "anonymous memory came from the hotplugged ZONE_MOVABLE"
    );
    assert!(
        matches!(
            out(&r, 4),
            Outcome::Timeout { errno: libc::EINTR }
                | Outcome::Errno {
                    errno: libc::EBUSY,
                    ..
                }
        ),
        "pinned block went offline: {:?}",
        out(&r, 4)
    );
    ok(&r, 6);
    ok(&r, 7);
    assert!(val(&r, 9) >= hot_pfn);
    ok(&r, 10);
    assert!(
        val(&r, 11) < hot_pfn,
        "the long-term pin migrated the page out of ZONE_MOVABLE"
    );
    ok(&r, 12);
    assert_eq!(out(&r, 13), Outcome::errno(libc::EBADF), "released twice");

    // Memory notifiers failing on purpose make offline/online fail with that errno.
    let (_, r) = c.run(
        &mut runner,
        &format!(
            r#"notifier_fail_offline(errno="EBUSY")
memblock_state(block=0x{block:x}, state="offline")
notifier_fail_offline(errno="none")
memblock_state(block=0x{block:x}, state="offline")
notifier_fail_online(errno="ENOMEM")
memblock_state(block=0x{block:x}, state="online_movable")
notifier_fail_online(errno="none")
memblock_state(block=0x{block:x}, state="online_movable")
fail_page_alloc(probability=0x0, times=0x0, min_order=0x0)
"#
        ),
    );
    assert_eq!(out(&r, 1), Outcome::errno(libc::EBUSY));
    ok(&r, 3);
    assert_eq!(out(&r, 5), Outcome::errno(libc::ENOMEM));
    ok(&r, 7);
    unsupported(&r, 8);

    // Policy knobs read back.
    let (_, r) = c.run(
        &mut runner,
        r#"auto_online_blocks(policy="online_kernel")
online_policy(policy="auto-movable")
auto_movable_ratio(ratio=0x12d)
virtio_mem_unplug_online(on=0x0)
"#,
    );
    all_ok(&r);
    assert_eq!(
        c.sh("cat /sys/devices/system/memory/auto_online_blocks"),
        "online_kernel"
    );
    assert_eq!(
        c.sh("cat /sys/module/memory_hotplug/parameters/online_policy"),
        "auto-movable"
    );
    assert_eq!(
        c.sh("cat /sys/module/memory_hotplug/parameters/auto_movable_ratio"),
        "301"
    );
    assert_eq!(
        c.sh("cat /sys/module/virtio_mem/parameters/unplug_online"),
        "N"
    );
    let (_, r) = c.run(
        &mut runner,
        "auto_online_blocks(policy=\"online_movable\")\nonline_policy(policy=\"contig-zones\")\nvirtio_mem_unplug_online(on=0x1)\n",
    );
    all_ok(&r);
    assert_eq!(
        c.sh("cat /sys/module/virtio_mem/parameters/unplug_online"),
        "Y"
    );

    // Workload: hugetlb pools, compaction, page cache, NUMA migration across the two nodes.
    let (_, r) = c.run(
        &mut runner,
        r#"hugetlb_pool(size="2M", node=-0x1, count=0x4)
compact_memory(node=-0x1)
compact_memory(node=0x1)
drop_caches(what=0x3)
r0 = mmap_anon(len=0x100000, thp="nohuge", populate=0x1, node=0x0)
move_pages(map=r0, offset=0x0, npages=0x10, node=0x1)
migrate_pages(from=0x1, to=0x0)
split_huge_pages_all()
hugetlb_pool(size="1G", node=0x0, count=0x0)
"#,
    );
    all_ok(&r);
    assert_eq!(c.sh("cat /proc/sys/vm/nr_hugepages"), "4");
    assert_eq!(val(&r, 5), 16, "all 16 pages moved to node 1");
    assert_eq!(val(&r, 6), 0, "migrate_pages left nothing behind");
    let (_, r) = c.run(&mut runner, "hugetlb_pool(size=\"2M\", node=0x0, count=0x0)\nhugetlb_pool(size=\"2M\", node=0x1, count=0x0)\n");
    all_ok(&r);
    assert_eq!(c.sh("cat /proc/sys/vm/nr_hugepages"), "0");

    // DAMON monitoring hotplugged physical memory.
    let (_, r) = c.run(
        &mut runner,
        &format!(
            "r0 = pfn_in_block(block=0x{block:x}, page=0x0)\ndamon_start(pfn=r0, npages=0x8000, action=\"pageout\", aggr_us=0x3e8)\n"
        ),
    );
    all_ok(&r);
    assert_eq!(val(&r, 0), block * 32768);
    assert_eq!(
        c.sh("cat /sys/kernel/mm/damon/admin/kdamonds/0/state"),
        "on"
    );
    let (_, r) = c.run(&mut runner, "damon_stop()\n");
    all_ok(&r);
    assert_eq!(
        c.sh("cat /sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds"),
        "0"
    );

    // Other memory devices: a hot-added virtio-mem device, a pc-dimm, the balloon.
    let (_, r) = c.run(
        &mut runner,
        r#"r0 = virtio_mem_hot_add(max=0x40000000, requested=0x8000000, node=0x1, block_size=0x200000)
virtio_mem_wait(dev=r0, ms=0x1388)
r1 = dimm_add(size=0x8000000, node=0x1)
balloon(target=0x38000000)
"#,
    );
    all_ok(&r);
    let devs = vm.qmp().query_memory_devices().unwrap();
    let hot = devs
        .iter()
        .find(|d| d.id.as_deref() == Some("hot1"))
        .expect("hot-added device");
    assert_eq!((hot.size, hot.node), (128 << 20, Some(1)));
    assert!(
        devs.iter().any(|d| d.kind == "dimm" && d.size == 128 << 20),
        "{devs:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while vm.qmp().query_balloon().unwrap() > 0x38000000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        vm.qmp().query_balloon().unwrap(),
        0x38000000,
        "the guest inflated the balloon"
    );
    let (_, r) = c.run(
        &mut runner,
        "virtio_mem_resize(dev=0x1, size=0x0)\nvirtio_mem_wait(dev=0x1, ms=0x1388)\nsleep_ms(ms=0x1f4)\ndimm_remove(d=0x0)\nballoon(target=0x40000000)\n",
    );
    all_ok(&r);
    assert!(
        !vm.qmp()
            .query_memory_devices()
            .unwrap()
            .iter()
            .any(|d| d.kind == "dimm"),
        "dimm removed"
    );

    // Interfaces this kernel lacks report unsupported, not failure.
    let (_, r) = c.run(
        &mut runner,
        r#"r0 = mmap_anon(len=0x200000, thp="default", populate=0x1, node=-0x1)
gup_test_run(map=r0, offset=0x0, len=0x100000, cmd="pin_longterm", per_call=0x10, gup_flags=0x1)
r1 = gup_longterm_start(map=r0, offset=0x0, len=0x10000, flags=0x1)
gup_longterm_stop(pin=r1)
memtrace_enable(size=0x10000000)
memtrace_read(node=0x0, offset=0x0, len=0x1000)
r2 = memtrace_mmap(node=0x0, offset=0x0, len=0x1000)
page_idle_mark(pfn=0x1000, count=0x1)
page_idle_read(pfn=0x1000, count=0x1)
"#,
    );
    for i in [1, 2, 4, 5, 6, 7, 8] {
        unsupported(&r, i);
    }
    assert!(matches!(out(&r, 3), Outcome::Skipped { .. }));

    // Threads racing: offline and unplug on one, pinning on another.
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../corpus/concurrent-offline-unplug.prog"
    ))
    .unwrap();
    let (p, r) = c.run(&mut runner, &seed);
    assert!(p.threads() >= 2);
    assert!(r.ops.iter().all(|o| o.outcome.is_some()), "{:?}", r.ops);

    // A partly plugged block is found at run time and its fake-offline pages by kind (right
    // after the wait: the device reports its size before the guest has onlined the new block,
    // and `memblock_find` looks again while blocks are still changing);
    // a block of offline/online cycles repeats while a walker loops on another thread.
    let (_, r) = c.run(
        &mut runner,
        r#"virtio_mem_resize(dev=0x0, size=0x8200000)
virtio_mem_wait(dev=0x0, ms=0x1388)
r0 = memblock_find(which="partial", nth=0x0)
r1 = pfn_find(block=r0, kind="offline", nth=0x0)
kpageflags_read(pfn=r1, count=0x1)
kpagecgroup_read(pfn=r1, count=0x10)
kcore_read(pfn=r1, count=0x1)
repeat 8 {
  memblock_state(block=r0, state="offline")
  memblock_state(block=r0, state="online_movable")
}
kpagecount_read(pfn=r1, count=0x200) (thread: 1, loop)
compaction_proactiveness(value=0x0)
virtio_mem_resize(dev=0x0, size=0x0)
virtio_mem_wait(dev=0x0, ms=0x1388)
"#,
    );
    for i in [0, 1, 2, 3, 4, 5, 7, 8, 10, 11, 12] {
        ok(&r, i);
    }
    // 128M + 2M plugged: a block of the device (4 GiB up, 128 MiB blocks) is partly plugged,
    // and the fake-offline page found is in it.
    let partial = val(&r, 2);
    assert!(partial >= 32, "{:?}", r.ops[2]);
    assert_eq!(val(&r, 3) / 32768, partial);
    // kcore refuses PageOffline pages: the read comes back short (0 bytes), not the page.
    assert!(
        matches!(out(&r, 6), Outcome::Ok { .. } | Outcome::Errno { .. }),
        "{:?}",
        r.ops[6]
    );
    assert_eq!((r.ops[7].runs, r.ops[7].oks), (8, 8), "{:?}", r.ops[7]);
    assert!(r.ops[9].runs >= 2, "the walker looped: {:?}", r.ops[9]);

    // Last (it leaves poisoned pages behind): hwpoison and offlining of hotplugged pages.
    let (_, r) = c.run(
        &mut runner,
        r#"virtio_mem_resize(dev=0x0, size=0x10000000)
virtio_mem_wait(dev=0x0, ms=0x1388)
r0 = memblock_find(which="movable", nth=0x0)
r1 = pfn_in_block(block=r0, page=0x100)
r2 = pfn_in_block(block=r0, page=0x200)
r3 = pfn_in_block(block=r0, page=0x300)
kpageflags_read(pfn=r1, count=0x40)
kpagecount_read(pfn=r1, count=0x40)
soft_offline(pfn=r1)
hwpoison_corrupt(pfn=r2)
hwpoison_unpoison(pfn=r2)
hard_offline(pfn=r3)
r4 = mmap_anon(len=0x10000, thp="nohuge", populate=0x1, node=-0x1)
madvise_poison(map=r4, offset=0x0, len=0x1000, soft=0x1)
cec_pfn(pfn=r3)
"#,
    );
    for i in 0..14 {
        ok(&r, i);
    }
    // RAS CEC's debugfs file needs CONFIG_RAS_CEC_DEBUG, which Debian's kernel lacks.
    assert!(
        matches!(
            out(&r, 14),
            Outcome::Ok { .. } | Outcome::Unsupported { .. }
        ),
        "{:?}",
        r.ops[14]
    );
    assert_eq!(val(&r, 6), 0x40);
    assert_eq!(val(&r, 7), 0x40);
    assert_ne!(
        kpageflags(&c, val(&r, 3)) & KPF_HWPOISON,
        0,
        "soft-offlined page is poisoned"
    );
    assert_eq!(
        kpageflags(&c, val(&r, 4)) & KPF_HWPOISON,
        0,
        "unpoisoned page is clean"
    );
    assert_ne!(
        kpageflags(&c, val(&r, 5)) & KPF_HWPOISON,
        0,
        "hard-offlined page is poisoned"
    );

    // hotfuzz's own pages are never poisoned: init's busybox text refuses memory_failure().
    let text = c.sh("grep -m1 ' r-xp ' /proc/1/maps | cut -d- -f1");
    let start = u64::from_str_radix(&text, 16).unwrap();
    let entries = c.sh(&format!(
        "dd if=/proc/1/pagemap bs=8 skip={} count=64 2>/dev/null | od -An -v -tx8",
        start / 4096
    ));
    let pfn = entries
        .split_whitespace()
        .filter_map(|e| u64::from_str_radix(e, 16).ok())
        .find(|e| e >> 63 == 1)
        .map(|e| e & ((1 << 55) - 1))
        .expect("a resident page of init's text");
    let (_, r) = c.run(
        &mut runner,
        &format!("hard_offline(pfn={pfn:#x})\nhwpoison_corrupt(pfn={pfn:#x})\n"),
    );
    for i in 0..2 {
        assert!(
            matches!(out(&r, i), Outcome::Errno { errno: 1, .. }),
            "a page of init was offered to memory_failure: {:?}",
            r.ops[i]
        );
    }
    assert_eq!(kpageflags(&c, pfn) & KPF_HWPOISON, 0);

    // The run log names every operation as it starts, on the host clock the console uses.
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("executing op 9 (thread 0"), "{log}");
    let console = std::fs::read_to_string(vm.console_log()).unwrap();
    let lines: Vec<&str> = console.lines().collect();
    let injected = lines
        .iter()
        .position(|l| l.contains("Injecting memory failure at pfn"))
        .expect("hwpoison_corrupt shows on the console");
    // The executor's own marker in the kernel log comes right before the kernel's message.
    let marker = lines[..injected]
        .iter()
        .rposition(|l| l.contains("hotfuzz: executing program"))
        .expect("a marker before the injection");
    assert!(
        lines[marker].contains("op 9 (thread 0): hwpoison_corrupt"),
        "{}",
        lines[marker]
    );
    let started = log
        .lines()
        .rfind(|l| l.contains("executing op 9 ") && l.contains("hwpoison_corrupt"))
        .unwrap();
    let t = |l: &str| humantime::parse_rfc3339(l.split(' ').next().unwrap()).unwrap();
    // Host timestamps agree to within the ssh latency.
    let skew = t(started)
        .duration_since(t(lines[marker]))
        .unwrap_or_default();
    assert!(
        skew < Duration::from_secs(1),
        "{started}\n{}",
        lines[marker]
    );

    let missing: Vec<&str> = d
        .ops
        .iter()
        .map(|o| o.name.as_str())
        .filter(|n| !c.ran.contains(*n))
        .collect();
    assert!(missing.is_empty(), "never ran on the guest: {missing:?}");
    drop(runner);
    assert!(vm.poweroff(Duration::from_secs(30)));
}
