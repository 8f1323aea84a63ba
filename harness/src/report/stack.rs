//! Stack frames in x86 and powerpc oops formats, and which of them are too generic to name a
//! bug after.

use regex::Regex;
use std::sync::LazyLock;

/// One stack frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Function name without compiler suffixes (`.constprop.0`, `.isra.0`, `.cold`).
    pub func: String,
    /// The frame as printed (`func+0x1a/0x40 [module]`).
    pub raw: String,
    /// Offset into the function.
    pub offset: u64,
    /// Module, for module code.
    pub module: Option<String>,
    /// `? func` (x86) or `(unreliable)` (powerpc): a stale stack entry.
    pub questionable: bool,
}

static RIP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:RIP: 0010:|NIP \s*\[[0-9a-f]+\] |pc : |PC is at |EIP: )([A-Za-z0-9_.$]+)\+0x([0-9a-f]+)/0x[0-9a-f]+(?: \[([A-Za-z0-9_]+)\])?").unwrap()
});
static INTERRUPT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^--- interrupt: [0-9a-f]+ at ([A-Za-z0-9_.$]+)\+0x([0-9a-f]+)/0x[0-9a-f]+")
        .unwrap()
});

/// A function name without compiler-generated suffixes.
pub fn base_name(f: &str) -> &str {
    match f.find('.') {
        Some(i) if i > 0 => &f[..i],
        _ => f,
    }
}

fn frame(func: &str, off: &str, module: Option<&str>, questionable: bool, raw: &str) -> Frame {
    Frame {
        func: base_name(func).to_string(),
        raw: raw.trim().to_string(),
        offset: u64::from_str_radix(off, 16).unwrap_or(0),
        module: module.map(str::to_string),
        questionable,
    }
}

fn is_sym_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'$'
}

/// `func+0x1a/0x40` then an optional ` [module]`: (func, offset hex, module, the rest).
fn parse_sym(s: &str) -> Option<(&str, &str, Option<&str>, &str)> {
    let b = s.as_bytes();
    let name_end = b.iter().position(|&c| !is_sym_char(c))?;
    if name_end == 0 || !s[name_end..].starts_with("+0x") {
        return None;
    }
    let off_start = name_end + 3;
    let off_len = b[off_start..]
        .iter()
        .position(|c| !c.is_ascii_hexdigit())
        .unwrap_or(b.len() - off_start);
    let after_off = off_start + off_len;
    if off_len == 0 || !s[after_off..].starts_with("/0x") {
        return None;
    }
    let size_start = after_off + 3;
    let size_len = b[size_start..]
        .iter()
        .position(|c| !c.is_ascii_hexdigit())
        .unwrap_or(b.len() - size_start);
    if size_len == 0 {
        return None;
    }
    let mut rest = &s[size_start + size_len..];
    let mut module = None;
    if let Some(m) = rest.strip_prefix(" [") {
        if let Some(end) = m.find(']') {
            let name = &m[..end];
            if !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
                module = Some(name);
                rest = &m[end + 1..];
            }
        }
    }
    Some((&s[..name_end], &s[off_start..after_off], module, rest))
}

/// `[c000000000a0b0c0] ` (a powerpc stack or return address), returning the rest.
fn strip_ppc_addr(s: &str) -> Option<&str> {
    let r = s.strip_prefix('[')?;
    let end = r.find(']')?;
    if end == 0 || !r[..end].bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    r[end + 1..].strip_prefix(' ')
}

/// Parses a call trace line: x86 `  [? ]func+0x1a/0x40 [mod]` or powerpc
/// `[sp] [ip] func+0x1a/0x40 [mod] (unreliable)`. (Hand-written: the parser runs it on
/// every line of every report.)
pub fn parse_frame(text: &str) -> Option<Frame> {
    if !text.contains("+0x") {
        return None;
    }
    let t = text.trim_start();
    if t.len() < text.len() {
        // x86: indented.
        let (q, body) = match t.strip_prefix("? ") {
            Some(b) => (true, b),
            None => (false, t),
        };
        if let Some((func, off, module, rest)) = parse_sym(body) {
            if rest.trim().is_empty() {
                return Some(frame(func, off, module, q, text));
            }
        }
    }
    let body = strip_ppc_addr(t).and_then(strip_ppc_addr)?;
    let (func, off, module, rest) = parse_sym(body)?;
    let rest = rest.trim_end();
    let unreliable = match rest {
        "" => false,
        " (unreliable)" => true,
        _ => return None,
    };
    Some(frame(func, off, module, unreliable, text))
}

/// Parses the line naming the faulting instruction: x86 `RIP: 0010:f+0x..` (kernel mode
/// only), powerpc `NIP [..] f+0x..`, arm64 `pc : f+0x..`, or powerpc `--- interrupt: N at f`.
pub fn parse_ip(text: &str) -> Option<Frame> {
    if !text.contains("+0x") {
        return None;
    }
    let t = text.trim_start();
    if let Some(c) = RIP.captures(t) {
        return Some(frame(&c[1], &c[2], c.get(3).map(|m| m.as_str()), false, t));
    }
    if let Some(c) = INTERRUPT.captures(t) {
        return Some(frame(&c[1], &c[2], None, false, t));
    }
    None
}

/// Frames too generic to name a bug after: reporting and printing, locking, allocation and
/// freeing, list and refcount helpers, notifier chains, scheduling and waiting, interrupt and
/// system call entry. (Like syzkaller's skip list, for the paths hotfuzz exercises.)
static GENERIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(",
        r"_*(dump_stack|dump_stack_lvl|show_stack|show_regs|show_trace_log_lvl|printk|_printk|vprintk\w*)|",
        r"_*warn\w*|warn_slowpath\w*|report_bug|handle_bug|exc_invalid_op|asm_exc_\w+|exc_\w+|do_error_trap|do_trap|die|oops_\w+|",
        r"_*panic\w*|kernel_BUG\w*|__bug\w*|check_panic_on_warn|",
        r"__might_sleep|__might_resched|__might_fault|might_sleep|__schedule_bug|",
        r"_*schedule\w*|io_schedule\w*|preempt_schedule\w*|__cond_resched|",
        r"msleep\w*|ssleep|usleep_range\w*|schedule_hrtimeout\w*|",
        r"wait_for_completion\w*|__wait_for_common|do_wait_for_common|__wait_rcu_gp|synchronize_rcu\w*|",
        r"_*raw_spin_\w+|_*raw_read_\w+|_*raw_write_\w+|_*spin_lock\w*|_*spin_unlock\w*|queued_\w+|",
        r"_*mutex_lock\w*|_*mutex_unlock\w*|__mutex_\w+|rt_mutex\w*|down_\w+|up_\w+|__down\w*|rwsem_\w+|percpu_down\w*|percpu_up\w*|",
        r"_*refcount_\w+|_*list_\w+|__list_\w+|",
        r"bad_page|free_pages_prepare|free_page_is_bad\w*|free_unref_page\w*|free_unref_folios|__free_pages\w*|free_pages\w*|",
        r"__folio_put\w*|folio_put\w*|put_page\w*|__put_page|release_pages|folios_put\w*|",
        r"_*kfree\w*|kmem_cache_free\w*|_*kmalloc\w*|kmem_cache_alloc\w*|__alloc_pages\w*|alloc_pages\w*|get_page_from_freelist|folio_alloc\w*|",
        r"_*dump_page|__dump_folio|bad_range|",
        r"memcpy\w*|memset\w*|memmove\w*|strcpy|strncpy|strlen|strscpy\w*|_copy_to_user|_copy_from_user|copy_\w+_user\w*|",
        r"notifier_call_chain|_*blocking_notifier_call_chain\w*|raw_notifier_call_chain\w*|srcu_notifier_call_chain\w*|",
        r"kthread|ret_from_fork\w*|worker_thread|process_one_work|process_scheduled_works|smpboot_thread_fn|",
        r"__switch_to\w*|_switch|context_switch|finish_task_switch\w*|",
        r"entry_SYSCALL\w*|do_syscall_64|x64_sys_call|syscall_exit\w*|",
        r"asm_sysvec\w*|sysvec_\w+|__sysvec_\w+|_*flush_smp_call_function\w*|smp_call_function\w*|on_each_cpu\w*|generic_smp_call_function\w*|",
        r"irq_exit\w*|__irq_exit\w*|handle_softirqs|__do_softirq|do_softirq\w*|",
        r"rcu_\w+|lock_acquire|lock_release|__lock_\w+|",
        r"asm_common_interrupt|common_interrupt|",
        r"system_call\w*|system_call_exception|interrupt_return\w*|",
        r"kfence_\w+|__kasan\w*|kasan_\w+|",
        r"fortify_panic|__stack_chk_fail",
        r")$"
    ))
    .unwrap()
});

/// True for frames a title should not be named after.
pub fn is_generic(func: &str) -> bool {
    GENERIC.is_match(func)
}

/// The first frame of `frames` worth naming a bug after (reliable, not generic).
pub fn first_interesting(frames: &[Frame]) -> Option<&Frame> {
    frames
        .iter()
        .find(|f| !f.questionable && !is_generic(&f.func))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_and_ppc_frames() {
        let f = parse_frame("  bugzoo_memory_notify+0x2f0/0x300 [bugzoo]").unwrap();
        assert_eq!(
            (f.func.as_str(), f.module.as_deref(), f.questionable),
            ("bugzoo_memory_notify", Some("bugzoo"), false)
        );
        let f = parse_frame("  ? arch_exit_to_user_mode_prepare.constprop.0+0x16/0xa0").unwrap();
        assert_eq!(
            (f.func.as_str(), f.questionable),
            ("arch_exit_to_user_mode_prepare", true)
        );
        let f = parse_frame(
            "[c00000000a3cfb30] [c00000000012e8f4] sysrq_handle_crash+0x24/0x30 (unreliable)",
        )
        .unwrap();
        assert_eq!(
            (f.func.as_str(), f.questionable),
            ("sysrq_handle_crash", true)
        );
        let f = parse_frame(
            "[c0000000045d3a40] [c008000000d90150] bugzoo_trigger_warn+0x8/0x28 [bugzoo]",
        )
        .unwrap();
        assert_eq!(
            (
                f.func.as_str(),
                f.module.as_deref(),
                f.offset,
                f.questionable
            ),
            ("bugzoo_trigger_warn", Some("bugzoo"), 8, false)
        );
        assert!(parse_frame("Call Trace:").is_none());
        assert!(parse_frame(" <TASK>").is_none());
        // Not frames: unindented x86 text, trailing words, broken numbers.
        assert!(parse_frame("vfs_write+0x28f/0x450").is_none());
        assert!(parse_frame("  vfs_write+0x28f/0x450 and more").is_none());
        assert!(parse_frame("  vfs_write+0x/0x450").is_none());
        assert!(parse_frame("  vfs_write+0x28f/").is_none());
        assert!(parse_frame("[c0000000045d3a40] sysrq_handle_crash+0x24/0x30").is_none());
        let ip = parse_ip("RIP: 0010:bugzoo_warn_reonline+0x14/0x20 [bugzoo]").unwrap();
        assert_eq!(ip.func, "bugzoo_warn_reonline");
        assert!(parse_ip("RIP: 0033:0x47b7a0").is_none(), "user space");
        let ip = parse_ip("NIP [c00000000012e8f4] sysrq_handle_crash+0x24/0x30").unwrap();
        assert_eq!(ip.func, "sysrq_handle_crash");
    }

    #[test]
    fn generic_frames() {
        for g in [
            "dump_stack_lvl",
            "__warn",
            "bad_page",
            "free_unref_page",
            "_raw_spin_lock_irqsave",
            "refcount_warn_saturate",
            "__list_add_valid_or_report",
            "schedule_timeout",
            "msleep",
            "blocking_notifier_call_chain",
            "do_syscall_64",
            "panic",
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
        ] {
            assert!(!is_generic(g), "{g}");
        }
    }
}
