//! Which frames are too generic to name a bug after (per kind of report), which frames a
//! stall is anchored on, and the names titles use for syscall wrappers and grouped waits.
//!
//! A title names the first frame that is not generic: reporting, sanitizer, locking,
//! allocation and string helpers, interrupt and syscall entry never cause a bug, their callers
//! do. Some kinds skip more (a hung task is always in the scheduler), see [`Skip`].

use super::stack::Frame;
use regex::Regex;
use std::sync::LazyLock;

/// Frames too generic to name a bug after, in every kind of report: printing and reporting,
/// sanitizer runtimes, exception and interrupt entry, syscall entry, scheduling, locking and
/// lockdep, atomics, refcounts, lists and trees, string and memory helpers, user copies,
/// allocation and freeing, workqueue flushing, notifier plumbing, I/O accessors. Patterns
/// match anywhere in the name unless anchored: `bpf_prog_array_copy_to_user` is a user copy.
#[rustfmt::skip]
const GENERIC_PATTERNS: &[&str] = &[
    // Printing, dumping and reporting.
    "dump_stack", "show_stack", "show_regs", "show_trace", "dump_backtrace", "walk_stack",
    "arch_stack_walk", "stack_trace_save", "save_stack", "^unwind_", "kernel_text_address",
    "print_address_description", "print_report", "print_trailer", "print_usage_bug",
    "print_circular_bug", "print_unlock", "imbalance_bug", "printk", "^console_unlock$",
    "__warn", "warn_slowpath", "warn_alloc", "warn_bogus", "report_bug", "fixup_bug",
    "handle_bug", "bug_handler", "brk_handler", "do_error", "_trap$", "invalid_op",
    "do_debug_exception", "program_check_", "^die$", "^__die", "^oops_", "panic",
    "bust_spinlocks", "kernel_BUG", "df_debug", "double_fault",
    // Sanitizers and other runtime checkers.
    "__sanitizer", "__asan", "^_*kasan", "^_*hwasan", "__msan", "^_*kmsan", "^_*kcsan", "__tsan",
    "^_*kfence", "^_*ubsan", "check_memory_region", "memory_is_poisoned", "check_object_size",
    "check_heap_object", "check_stack_object", "kmemleak", "read_word_at_a_time", "debug_object",
    "debug_print_object", "debug_check_no_obj_freed", "_is_static_object", "stack_chk_fail",
    "fortify", "^usercopy_", "print_tainted", "perf_trace", "thunk", "lock_class",
    "stack_trace_",
    // Exception, interrupt and syscall entry.
    "^asm_", "^exc_", "sysvec_", "^common_interrupt", "^do_IRQ", "irq_exit", "do_softirq",
    "handle_softirqs", "invoke_softirq", "apic_timer_interrupt", "^el1_", "entry_SYSCALL",
    "entry_SYSENTER", "do_syscall_", "do_fast_syscall", "x64_sys_call", "ret_from_sys_call",
    "^ret_from_intr", "^retint_kernel", "^system_call", "syscall_exit", "interrupt_return",
    "^page_fault$", "do_page_fault", "do_user_addr_fault", "do_kern_addr_fault",
    "handle_page_fault", "^no_context$", "bad_area", "page_fault_oops",
    "kernelmode_fixup_or_oops", "fixup_exception", "do_general_protection",
    "^general_protection$",
    // Scheduling and context switches.
    "^_*schedule", "preempt_schedule", "cond_resched", "context_switch", "finish_task_switch",
    "__switch_to", "^_switch$", "might_sleep", "might_resched", "might_fault", "^msleep",
    "^ssleep$", "usleep_range", "schedule_hrtimeout",
    // Locking and lockdep.
    "lock_acquire", "lock_release", "lock_acquired", "lock_contended", "lock_is_held",
    "mark_lock", "mark_held_locks", "reacquire_held_locks", "lockdep", "debug_check_no_locks",
    "check_noncircular", "check_prev_add", "validate_chain", "find_held_lock", "trace_hardirqs",
    "trace_softirqs", "spin_lock", "spin_unlock", "spin_trylock", "spin_dump", "read_trylock",
    "write_trylock", "^do_raw_", "_raw_read_", "_raw_write_", "read_lock", "write_lock",
    "read_unlock", "write_unlock", "queued_spin_lock_slowpath", "queued_read_lock",
    "queued_write_lock", "pv_queued", "task_rq_lock", "raw_spin_rq", "^mutex_", "^__mutex_",
    "^rt_mutex", "ww_mutex", "^down$", "^down_", "^__down", "^up$", "^up_read", "^up_write",
    "rwsem_", "percpu_down", "percpu_up", "percpu_rwsem", "osq_lock", "osq_unlock",
    "rcu_read_lock", "rcu_read_unlock", "bh_enable", "bh_disable", "preempt_count_",
    "owner_on_cpu",
    // Atomics, bit operations, refcounts, lists and trees.
    "atomic(?:64|_long)?_(?:dec|inc|read|set|or|xor|and|andnot|add|sub|fetch|xchg|cmpxchg|try)",
    "arch_atomic", "(?:set|clear|change|test)_bit", "find_next_bit", "find_first_bit",
    "^_*refcount_", "^kref_", "ref_tracker", "__wake_up", "finish_wait", "prepare_to_wait",
    "^lock_sock", "^release_sock$", "^_*mod_timer", "^insert_work$", "wait_for_completion",
    "^__list_", "^list_(?:add|del|move|splice|replace|cut|rotate)", "^hlist_", "^__rb_",
    "^rb_(?:erase|insert|next|prev|first|last|replace)",
    // String, memory and user copy helpers.
    "memcpy", "memcmp", "memset", "memchr", "memmove", "memdup", "memscan", "strcmp", "strncmp",
    "strchr", "strrchr", "strlen", "strnlen", "strcpy", "strlcpy", "strncpy", "strscpy",
    "strsep", "strstr", "strnstr", "strcat", "strlcat", "strncat", "strcasecmp", "strncasecmp",
    "^copy_page$", "copy_user", "copy_from_user", "copy_to_user", "copy_from_iter",
    "copy_to_iter", "copy_in_user", "^copyin$", "^copyout$", "check_copy_size",
    "^_*get_user(?:_\\d+|_nocheck)?$", "^_*put_user(?:_\\d+|_nocheck)?$", "copy_page_to_iter",
    "copy_page_from_iter", "^crc", "csum_partial", "^xas_",
    // printf and friends.
    "^string$", "^pointer$", "vsnprintf", "snprintf", "vsprintf", "sprintf", "vscnprintf",
    "scnprintf", "format_decode",
    // Allocation and freeing.
    "kmalloc", "kzalloc", "kcalloc", "krealloc", "kvmalloc", "kvzalloc", "kvfree", "kfree",
    "kmem_cache_alloc", "kmem_cache_free", "kmem_cache_zalloc", "vmalloc", "vzalloc",
    "^_*vfree$", "vunmap", "slab_alloc", "slab_free", "^_*slab_", "new_slab", "allocate_slab",
    "alloc_pages", "get_page_from_freelist", "post_alloc_hook", "prep_new_page", "kmemdup",
    "kstrdup", "kstrndup", "memdup_user", "should_fail", "fail_dump", "alloc_frozen_pages",
    // Workqueue, kthread and notifier plumbing.
    "flush_work", "flush_workqueue", "drain_workqueue", "cancel_work", "cancel_delayed_work",
    "flush_delayed_work", "^_*queue_work", "queue_delayed_work", "mod_delayed_work",
    "^worker_thread$", "^kthread$", "ret_from_fork", "notifier_call_chain",
    "^rollback_registered", "^unregister_netdevice", "^del_timer", "^__del_timer",
    "try_to_del_timer", "try_to_grab_pending", "lock_timer_base", "^kthread_stop$",
    // Device-model and VFS plumbing: warnings there are about how a caller uses them.
    "^device_del$", "^device_unregister$", "^kobject_del$", "^kobject_put$", "^klist_",
    "^sysfs_remove", "^sysfs_create", "^sysfs_warn_dup$", "^kernfs_put$", "^kernfs_remove",
    "^add_uevent_var$", "^kobject_uevent", "^devres_release_all$", "^usb_kill_urb$",
    "^fast_dput$", "^dput$", "^iput$", "^drop_nlink$", "^mark_buffer_dirty",
    "^device_(?:add|del|register|unregister|release|destroy)$", "^get_device_parent$",
    "^dpm_sysfs_remove$", "^put_device$", "^get_device$", "^device_for_each_child",
    // Network buffer and page cache helpers that check their callers' arguments.
    "^skb_(?:put|push|pull|over_panic|under_panic)$", "^folio_unlock$", "^folio_alloc",
    "^filemap_alloc_folio", "^truncate_inode_pages", "^find_lock_entries$", "assertfail",
    // arm64 exception entry.
    "^__do_kernel_fault$", "^do_mem_abort$", "^do_tag_check_fault$", "^do_translation_fault$",
    "^el1h_", "^do_bad_area$",
    // I/O accessors.
    "^_*raw_(?:read|write)[bwlq]$", "^logic_(?:in|out)[bwl]$", "^(?:in|out)[bwl]$",
    "^io(?:read|write)\\d",
    // Memory-management helpers hotfuzz's reports pass through.
    "^bad_page$", "^free_pages_prepare", "free_page_is_bad", "dump_page", "__dump_folio",
    "^bad_range$",
];

static GENERIC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&GENERIC_PATTERNS.join("|")).unwrap());

/// True for frames a title should not be named after, in any kind of report.
pub fn is_generic(func: &str) -> bool {
    Skip::Generic.skips(func)
}

/// The frames a kind of report skips on top of the generic ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Only the generic frames.
    Generic,
    /// A hung task: it sleeps in the scheduler, a lock, a wait or a flush.
    Hung,
    /// An RCU stall or soft lockup: interrupt entry, timers and RCU itself.
    Stall,
    /// A memory leak: the allocator frames above the allocating function.
    Leak,
    /// A bad page: the page allocator and freeing paths.
    BadPage,
    /// A debug-objects warning: the debug-objects and timer/work helpers.
    Odebug,
    /// A kobject warning: the kobject helpers.
    Kobject,
    /// A refcount or list warning: the checkers.
    Checker,
    /// A sleep in atomic context or a preemptible `smp_processor_id()`.
    Atomic,
}

static HUNG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"sched|_lock|_slowlock|down|rwsem|completion|kthread|wait|context_switch|__switch_to|",
        r"cancel_delayed_work|rcu_barrier|freezer|io_schedule|msleep|",
        r"^synchronize_srcu$|^__synchronize_srcu$|finish_task_switch"
    ))
    .unwrap()
});
static STALL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"apic_timer_interrupt|rcu|^_*sched_show_task|^nmi_|^arch_trigger|^hrtimer|^tick_|^update_process_times|^watchdog_timer_fn|^delay_tsc|^__const_udelay|^__udelay|^cpu_relax|^native_safe_halt").unwrap()
});
static LEAK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"alloc|kmemleak|kmem_cache|slab|memdup|kstrdup|create_object|^idr_|^ida_|radix_tree|^pcpu_|^xa_|^xas_").unwrap()
});
static BAD_PAGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:free|put|get|update|release)_page|^_*folio|folios|alloc|page_owner|^_*free_pages|free_unref|page_pool|^bad_page|pagevec|lru_add|release_pages|^_*put_page|^put_pages|^__page_cache_release").unwrap()
});
static ODEBUG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"debug_object|debug_check_no_obj_freed|_is_static_object|^__?debug_|^timer_|^__timer|^del_timer|^__del_timer|^hrtimer_|^__hrtimer|^free_percpu|^percpu_ref|call_rcu").unwrap()
});
static KOBJECT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^kobject_|^kset_|^kobj_|^sysfs_|^kernfs_").unwrap());
static CHECKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^_*refcount|^kref_|^_*list_|^__?check_|_valid$|_valid_or_report$|^kobject_")
        .unwrap()
});
static ATOMIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^check_preemption_disabled$|^debug_smp_processor_id$|^__this_cpu_preempt_check$|^__might|^might_|^___might").unwrap()
});

impl Skip {
    /// True for frames this kind of report does not name.
    pub fn skips(self, func: &str) -> bool {
        // Function names repeat across reports (dump_stack, ...): remember the answers, the
        // big alternations are slow to evaluate on new names.
        let bit = 1u32 << (2 * self as u32);
        let known = MEMO.with(|m| m.borrow().get(func).copied());
        if let Some(k) = known {
            if k & bit != 0 {
                return k & (bit << 1) != 0;
            }
        }
        let v = self.evaluate(func);
        MEMO.with(|m| {
            let mut m = m.borrow_mut();
            if m.len() >= MEMO_MAX {
                m.clear();
            }
            let e = m.entry(func.into()).or_insert(0);
            *e |= bit | if v { bit << 1 } else { 0 };
        });
        v
    }

    fn evaluate(self, func: &str) -> bool {
        if GENERIC.is_match(func) {
            return true;
        }
        let re = match self {
            Skip::Generic => return false,
            Skip::Hung => &HUNG,
            Skip::Stall => &STALL,
            Skip::Leak => &LEAK,
            Skip::BadPage => &BAD_PAGE,
            Skip::Odebug => &ODEBUG,
            Skip::Kobject => &KOBJECT,
            Skip::Checker => &CHECKER,
            Skip::Atomic => &ATOMIC,
        };
        re.is_match(func)
    }
}

/// Names remembered by [`Skip::skips`] (per thread), at most.
const MEMO_MAX: usize = 1 << 16;

thread_local! {
    static MEMO: std::cell::RefCell<std::collections::HashMap<Box<str>, u32>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The first frame of `frames` worth naming a bug after (reliable, not generic).
pub fn first_interesting(frames: &[Frame]) -> Option<&Frame> {
    frames
        .iter()
        .find(|f| !f.questionable && !is_generic(&f.func))
}

/// Frames a stall is anchored on: dispatchers (syscall and interrupt entry, workqueues,
/// softirqs, timers, kthreads) and the discriminating entry points of syscalls that do
/// everything (read, write, ioctl, sockets, page faults, return to user space). The frame
/// above the first anchor names a stall: the stack below it loops somewhere random.
static STALL_ANCHOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        // Dispatchers: workqueues, syscall and interrupt entry, softirqs, timers, kthreads.
        r"process_one_work|do_syscall_|do_fast_syscall_|sysenter_dispatch|tracesys_phase2|",
        r"el0_svc_handler|invoke_syscall|ret_fast_syscall|netif_receive_skb|do_softirq|",
        r"call_timer_fn|_run_timers|run_timer_softirq|hrtimer_run|run_ksoftirqd|",
        r"smpboot_thread_fn|^kthread$|start_secondary|cpu_startup_entry|ret_from_fork|",
        r"tasklet_action|",
        // Entry points of syscalls that do everything: the frame above is the one that matters.
        r"vfs_write|vfs_read|vfs_iter_read|vfs_iter_write|do_iter_read|do_iter_write|",
        r"call_read_iter|call_write_iter|new_sync_read|new_sync_write|vfs_ioctl|ksys_ioctl|",
        r"compat_ioctl|compat_sys_ioctl|blkdev_driver_ioctl|blkdev_ioctl|do_iter_readv_writev|",
        r"^call_mmap|mmap_region|do_mmap|do_dentry_open|vfs_open|",
        r"^sock_sendmsg|^sock_recvmsg|^sock_release|^__sock_release|^setsockopt$|",
        r"^__sys_setsockopt$|^__sys_getsockopt$|",
        r"kernel_setsockopt|sock_common_setsockopt|^listen$|kernel_listen|sk_common_release|",
        r"^sock_mmap|^accept$|kernel_accept|^sock_do_ioctl|^sock_ioctl|^compat_sock_ioctl|",
        r"^nfnetlink_rcv_msg|^rtnetlink_rcv_msg|^netlink_dump|^(?:sys_)?(?:socketpair|connect|ioctl)|",
        // Work done on the way back to user space.
        r"__fput|task_work_run|exit_to_usermode|exit_to_user_mode|",
        r"smack_bprm_check_security|aa_bprm_check_security"
    ))
    .unwrap()
});

/// Frames a stall is titled after even on top of the stack: waiting for other CPUs.
static STALL_SELF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^smp_call_function\w*$").unwrap());

/// True for the dispatchers a stall is anchored on ([`STALL_ANCHOR`]): the frame above the
/// first of them names the stall, as the stack below it loops somewhere random.
pub fn stall_anchor(func: &str) -> bool {
    STALL_ANCHOR.is_match(func)
}

/// True for frames a stall is named after when they are on top of the stack: waiting for
/// other CPUs (`smp_call_function*`).
pub fn stall_waits(func: &str) -> bool {
    STALL_SELF.is_match(func)
}

/// The name a title uses for a frame, and the other names the same bug may get. Syscall
/// wrappers lose their prefixes (`__x64_sys_rmdir` → `sys_rmdir`, `__se_sys_mremap` →
/// `mremap`), cross-CPU calls and RCU waits are grouped (`smp_call_function_single` →
/// `smp_call_function`, `synchronize_rcu_expedited` → `synchronize_rcu`).
pub fn canonical(func: &str) -> (String, Vec<String>) {
    let mut alts = Vec::new();
    let mut cur = func.to_string();
    let mut step = |cur: &mut String, next: String| {
        if next != *cur && !next.is_empty() {
            alts.push(std::mem::replace(cur, next));
        }
    };
    // Architecture wrappers: `__x64_sys_X` → `sys_X`.
    for arch in [
        "__x64_",
        "__ia32_",
        "__arm64_",
        "__riscv_",
        "__s390x_",
        "__s390_",
        "__x32_",
        "__powerpc_",
        "__loongarch_",
    ] {
        if let Some(r) = cur.strip_prefix(arch) {
            if r.starts_with("sys_") || r.starts_with("compat_sys_") {
                let next = r.to_string();
                step(&mut cur, next);
            }
            break;
        }
    }
    // SYSCALL_DEFINE internals: `__se_sys_X`, `__do_sys_X` → `sys_X` → `X`.
    for p in [
        "__se_compat_sys_",
        "__do_compat_sys_",
        "__se_sys_",
        "__do_sys_",
        "SYSC_",
    ] {
        if let Some(r) = cur.strip_prefix(p) {
            let (mid, last) = (format!("sys_{r}"), r.to_string());
            step(&mut cur, mid);
            step(&mut cur, last);
            break;
        }
    }
    for p in ["compat_SyS_", "compat_sys_", "ksys_"] {
        if let Some(r) = cur.strip_prefix(p) {
            let next = r.to_string();
            step(&mut cur, next);
            break;
        }
    }
    if let Some(r) = cur.strip_prefix("SyS_") {
        let next = format!("sys_{r}");
        step(&mut cur, next);
    }
    if cur.starts_with("smp_call_function_") {
        step(&mut cur, "smp_call_function".into());
    }
    if cur.starts_with("synchronize_rcu_")
        || cur == "synchronize_sched"
        || cur.starts_with("synchronize_sched_")
    {
        step(&mut cur, "synchronize_rcu".into());
    }
    (cur, alts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_frames() {
        for g in [
            "dump_stack_lvl",
            "__warn",
            "bad_page",
            "_raw_spin_lock_irqsave",
            "refcount_warn_saturate",
            "__list_add_valid_or_report",
            "schedule_timeout",
            "blocking_notifier_call_chain",
            "do_syscall_64",
            "panic",
            "__might_sleep",
            "memcmp",
            "strnstr",
            "__asan_report_load8_noabort",
            "kasan_report",
            "rb_erase",
            "__flush_work",
        ] {
            assert!(is_generic(g), "{g}");
        }
        for g in [
            "offline_pages",
            "virtio_mem_fake_offline_going_offline",
            "bugzoo_bad_page",
            "online_pages",
            "trigger_set",
            "memory_subsys_offline",
            "alloc_contig_range",
            "rtnl_lock",
            "process_one_work",
            "__alloc_skb",
            "ext4_fill_super",
        ] {
            assert!(!is_generic(g), "{g}");
        }
        assert!(Skip::Hung.skips("console_lock"));
        assert!(!Skip::Hung.skips("console_device"));
        assert!(Skip::Leak.skips("sk_prot_alloc"));
        assert!(!Skip::Leak.skips("inet6_create"));
    }

    #[test]
    fn canonical_names() {
        assert_eq!(
            canonical("__x64_sys_rmdir"),
            ("sys_rmdir".to_string(), vec!["__x64_sys_rmdir".to_string()])
        );
        assert_eq!(
            canonical("__se_sys_mremap"),
            (
                "mremap".to_string(),
                vec!["__se_sys_mremap".to_string(), "sys_mremap".to_string()]
            )
        );
        assert_eq!(canonical("compat_SyS_mount").0, "mount");
        assert_eq!(canonical("smp_call_function_many").0, "smp_call_function");
        assert_eq!(canonical("synchronize_sched").0, "synchronize_rcu");
        assert_eq!(
            canonical("offline_pages"),
            ("offline_pages".to_string(), vec![])
        );
    }

    #[test]
    fn stall_frames() {
        assert!(stall_anchor("do_vfs_ioctl"));
        assert!(stall_anchor("call_timer_fn"));
        assert!(!stall_anchor("kvm_vcpu_ioctl"));
        assert!(stall_waits("smp_call_function_single"));
    }
}
