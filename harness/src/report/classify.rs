//! Which console lines start a report, and what kind of report.
//!
//! A line starts a report when it carries one of the headers the kernel's debugging
//! facilities print (`WARNING:`, `BUG:`, `INFO:`, `kernel BUG at`, `general protection fault`,
//! `Kernel panic`, `UBSAN:`, kmemleak's `unreferenced object`, the arm and powerpc fault
//! lines, ...) at the start of the line or after a prefix the kernel itself prints
//! (`watchdog: `, `rcu: `, lockdep's `[ `). A header quoted by something else (`TITLE: BUG:`,
//! a driver's `EXT4-fs (loop1): INFO:`) is not the kernel's. Known informational messages that
//! look like headers are suppressed. A literal prefilter keeps this fast: it runs on every
//! console line.

use super::stack;
use aho_corasick::AhoCorasick;
use std::sync::LazyLock;

/// The lockdep and RCU-checker reports (`WARNING:`, `BUG:` or `INFO:` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// `possible circular locking dependency detected`.
    Circular,
    /// `possible recursive locking detected`.
    Recursive,
    /// `possible irq lock inversion dependency detected`, `*IRQ-safe -> *IRQ-unsafe lock
    /// order detected`.
    IrqInversion,
    /// `inconsistent lock state`.
    Inconsistent,
    /// `bad unlock balance detected!`.
    BadUnlock,
    /// `held lock freed!`.
    HeldLockFreed,
    /// `... still has locks held!`.
    StillHasLocks,
    /// `lock held when returning to user space!`.
    HeldReturning,
    /// `suspicious RCU usage`.
    SuspiciousRcu,
    /// `trying to register non-static key`.
    NonStaticKey,
    /// `Nested lock was not taken`.
    NestedLock,
    /// `Invalid wait context`.
    InvalidWait,
    /// `workqueue leaked lock or atomic`.
    WorkqueueLeak,
    /// `MAX_STACK_TRACE_ENTRIES too low!` and lockdep's other capacity limits.
    Capacity,
}

/// The kind of a report, with what its header line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `WARNING: CPU: N PID: M at file:line func+0x..`, `WARNING: at file:line func`, or the
    /// newer `WARNING: file:line at func+0x.., CPU#N: comm/pid`.
    Warning {
        /// `file:line`.
        file: Option<String>,
        /// The function the header names (None for `at 0x0`).
        func: Option<String>,
    },
    /// Lockdep and the RCU checker.
    Lockdep {
        /// Which report.
        what: Lock,
        /// The header's prefix as printed: `WARNING`, `BUG` or `INFO`.
        prefix: &'static str,
    },
    /// The unwinder's `WARNING: kernel stack regs at ... has bad 'bp' value` and friends
    /// (the title, already without addresses).
    Unwinder(&'static str),
    /// `BUG: KASAN: <what> in <func>`.
    Kasan {
        /// `use-after-free`, `slab-out-of-bounds`, ...
        what: String,
        /// The function the header names.
        func: Option<String>,
        /// The old `... at addr ADDR` form.
        old: bool,
    },
    /// `BUG: KMSAN: <what> in <func>`.
    Kmsan {
        /// `uninit-value`, `kernel-infoleak`, ...
        what: String,
    },
    /// `BUG: KCSAN: <what> in <funcs>`.
    Kcsan {
        /// `data-race`, `assert: race`, ...
        what: String,
        /// The header's functions (`f / g` for a data race).
        funcs: String,
    },
    /// `BUG: KFENCE: <what> in <func>`.
    Kfence {
        /// `use-after-free read`, `out-of-bounds write`, `invalid free`, ...
        what: String,
    },
    /// A page fault in the kernel (x86 `BUG: unable to handle ...`, arm `Unable to handle
    /// kernel ...`, powerpc `BUG: Unable to handle kernel data access`).
    PageFault {
        /// A NULL pointer dereference.
        null: bool,
    },
    /// `general protection fault`.
    Gpf,
    /// Other x86 traps in the kernel: `divide error`, `invalid opcode`, `int3`, `stack
    /// segment fault` (the title's prefix), and hotfuzz's `Oops: <reason>` without a header.
    Trap(String),
    /// arm's `Internal error`, `Unhandled fault`, `Alignment trap`.
    ArmFault(&'static str),
    /// `PANIC: double fault`.
    DoubleFault,
    /// `kernel BUG at file:line!`.
    KernelBug {
        /// `file:line`.
        file: String,
    },
    /// `BUG: Bad page state` / `BUG: Bad page map`.
    BadPage {
        /// `Bad page map`.
        map: bool,
    },
    /// `BUG: scheduling while atomic`, `BUG: sleeping function called from invalid context`.
    AtomicSleep(&'static str),
    /// `BUG: using smp_processor_id() in preemptible code` and the `__this_cpu_*` checks (the
    /// function the check names).
    Preemptible(String),
    /// `BUG: spinlock lockup suspected`, `recursion`, `bad magic`, `wrong owner`, ... (the
    /// lock kind and the problem, `spinlock lockup suspected`).
    Spinlock(String),
    /// `BUG: soft lockup`.
    SoftLockup,
    /// An RCU stall.
    RcuStall,
    /// A task blocked too long (`hung`) or that cannot die (`can't die`).
    HungTask(&'static str),
    /// `BUG: workqueue lockup`.
    WorkqueueLockup,
    /// `BUG: stack guard page was hit`.
    StackGuard,
    /// `BUG: Dentry ... still in use (N) [unmount of fs dev]`: the fs and device.
    Dentry(String),
    /// kmemleak (`BUG: memory leak`, `unreferenced object`).
    Leak,
    /// `UBSAN: <what> in file:line`, old `UBSAN: Undefined behaviour in`.
    Ubsan(String),
    /// A SLUB debug report without the KASAN header (`BUG kmalloc-8 (...): <what>`).
    Slub(String),
    /// SLUB debug's `INFO: Allocated in f age=N cpu=N pid=N`, a fragment of a report.
    SlubInfo(String),
    /// `Kernel panic - not syncing: <msg>`.
    Panic(String),
    /// `VFS: Busy inodes after unmount`, `VFS: Close: file count is 0`.
    Vfs(&'static str),
    /// `unregister_netdevice: waiting for DEV to become free`.
    NetdevWait,
    /// syzkaller's executor failures (`SYZFAIL: <msg>`, `SYZFATAL: <msg>`).
    SyzFailure(String),
    /// The Trusty TEE's `trusty: panic (...): ASSERT FAILED at (...): <expr>` (the title).
    Trusty(String),
    /// A generic `BUG: <what>` hotfuzz has no better title for.
    Bug(String),
    /// virtio-mem's own errors.
    VirtioMem(String),
    /// A `dump_page()` (`page dumped because: <reason>`) outside any other report.
    PageDump(String),
}

/// A report start: its kind, and the header line itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The kind.
    pub kind: Kind,
    /// The header, from the header word on (what the kernel printed).
    pub header: String,
}

/// Header words; a line with none of them starts nothing.
const HEADERS: &[&str] = &[
    "WARNING:",
    "BUG",
    "INFO:",
    "kernel BUG at",
    "Kernel BUG",
    "general protection fault",
    "Kernel panic - not syncing",
    "UBSAN:",
    "Unable to handle kernel",
    "unreferenced object",
    "Internal error:",
    "Unhandled fault:",
    "Alignment trap:",
    "divide error:",
    "divide_error:",
    "invalid opcode:",
    "int3:",
    "stack segment:",
    "PANIC: double fault",
    "Oops",
    "VFS: Busy inodes",
    "VFS: Close: file count is 0",
    "unregister_netdevice: waiting for",
    "SYZFAIL:",
    "SYZFATAL:",
    "trusty: panic",
    "marking device broken",
    "Failed to re-online memory",
    "Failed to remove memory",
    "page dumped because:",
];

static PREFILTER: LazyLock<AhoCorasick> = LazyLock::new(|| {
    // A DFA: the prefilter runs on every console line.
    aho_corasick::AhoCorasickBuilder::new()
        .kind(Some(aho_corasick::AhoCorasickKind::DFA))
        .match_kind(aho_corasick::MatchKind::LeftmostFirst)
        .build(HEADERS)
        .expect("static patterns")
});

/// Prefixes the kernel prints in front of a header (watchdogs, RCU, lockdep's box, a
/// syz-fuzzer log date).
fn header_prefix_ok(p: &str) -> bool {
    let p = p.trim_start();
    if p.is_empty()
        || matches!(
            p,
            "watchdog: " | "NMI watchdog: " | "rcu: " | "[ " | "Oops: " | "segment-related "
        )
    {
        return true;
    }
    // `2018/01/09 14:28:48 ` (syz-fuzzer's log).
    let b = p.as_bytes();
    b.len() == 20
        && b[4] == b'/'
        && b[7] == b'/'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b' '
}

/// Informational lines with header words that are not reports.
fn suppressed(h: &str) -> bool {
    const NOT_REPORTS: &[&str] = &[
        "INFO: lockdep is turned off",
        "INFO: Stall ended before state dump start",
        "INFO: NMI handler",
        "INFO: task_work",
        "WARNING: workqueue cpumask",
        "WARNING: the mand mount option",
        "WARNING: /etc/ssh/moduli",
        "WARNING: See https://",
        "WARNING: kernel not compiled with",
        "WARNING: fbcon:",
        "BUG: no syscalls can create resource",
        "BUG: MAX_LOCKDEP",
    ];
    NOT_REPORTS.iter().any(|n| h.starts_with(n))
        || (h.starts_with("INFO: ") && (h.contains("took too long") || h.contains("_INFO:")))
}

/// `func+0x1a/0x40` at the start of `s`: the function without compiler suffixes.
fn func_at(s: &str) -> Option<String> {
    let s = s.trim_start();
    let end = s
        .bytes()
        .position(|c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'$'))
        .unwrap_or(s.len());
    let name = &s[..end];
    let rest = &s[end..];
    (end > 0 && (rest.starts_with("+0x") || rest.is_empty() || rest.starts_with(' ')))
        .then(|| stack::base_name(name).to_string())
        .filter(|n| !n.starts_with("0x") && !n.is_empty())
}

/// Classifies a console line (prefixes already removed): the report it starts, if any.
pub fn classify(text: &str) -> Option<Start> {
    let m = PREFILTER.find(text)?;
    // virtio-mem's own errors carry the device's prefix (`virtio_mem virtio1: `).
    if let Some(r) = text.trim_start().strip_prefix("virtio_mem virtio") {
        let msg = r.split_once(": ").map_or("", |(_, m)| m).trim_end();
        if msg.contains("marking device broken")
            || msg.starts_with("Failed to re-online memory")
            || msg.starts_with("Failed to remove memory")
        {
            return Some(Start {
                kind: Kind::VirtioMem(msg.to_string()),
                header: text.trim().to_string(),
            });
        }
        return None;
    }
    // The header may follow a prefix the kernel prints; find the earliest acceptable one.
    let mut pos = m.start();
    // Two console messages merged into one line (`... memory accessgeneral protection
    // fault: 0000`): the header glued to the previous message's last word is the kernel's.
    let glued = pos > 0
        && text[..pos]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && HEADERS[m.pattern().as_usize()].len() >= 8;
    if !glued && !header_prefix_ok(&text[..pos]) {
        let t = text.trim_start();
        let lead = text.len() - t.len();
        let mut found = None;
        for p in [
            "watchdog: ",
            "NMI watchdog: ",
            "rcu: ",
            "[ ",
            "Oops: ",
            "segment-related ",
        ] {
            if let Some(r) = t.strip_prefix(p) {
                if PREFILTER.find(r).is_some_and(|m| m.start() == 0) {
                    found = Some(lead + p.len());
                    break;
                }
            }
        }
        pos = found?;
    }
    let h = text[pos..].trim_end();
    if suppressed(h) {
        return None;
    }
    let kind = kind_of(h)?;
    Some(Start {
        kind,
        header: h.to_string(),
    })
}

fn kind_of(h: &str) -> Option<Kind> {
    if let Some(r) = h.strip_prefix("WARNING: ") {
        return warning(r);
    }
    if let Some(r) = h.strip_prefix("BUG: ") {
        return bug(r.trim_end_matches(" ]"));
    }
    if let Some(r) = h.strip_prefix("INFO: ") {
        return info(r.trim_end_matches(" ]"));
    }
    if let Some(r) = h
        .strip_prefix("kernel BUG at ")
        .or_else(|| h.strip_prefix("Kernel BUG at "))
    {
        let file = r.split([' ', '!']).next().unwrap_or("").to_string();
        return Some(Kind::KernelBug { file });
    }
    if h.starts_with("general protection fault") {
        // User-space faults (`traps: ... general protection fault ip:...`) are not reports.
        return (!h.contains(" ip:")).then_some(Kind::Gpf);
    }
    if let Some(r) = h.strip_prefix("Kernel panic - not syncing: ") {
        return Some(Kind::Panic(r.trim().to_string()));
    }
    if let Some(r) = h.strip_prefix("UBSAN: ") {
        return Some(Kind::Ubsan(ubsan_what(r)));
    }
    if let Some(r) = h.strip_prefix("Unable to handle kernel ") {
        if r.starts_with("NULL pointer dereference") {
            return Some(Kind::PageFault { null: true });
        }
        return r
            .starts_with("paging request")
            .then_some(Kind::PageFault { null: false });
    }
    if h.starts_with("unreferenced object 0x") {
        return Some(Kind::Leak);
    }
    for (p, what) in [
        ("Internal error:", "Internal error"),
        ("Unhandled fault:", "Unhandled fault"),
        ("Alignment trap:", "Alignment trap"),
    ] {
        if h.starts_with(p) {
            return Some(Kind::ArmFault(what));
        }
    }
    for (p, what) in [
        ("divide error:", "divide error"),
        ("divide_error:", "divide error"),
        ("invalid opcode:", "invalid opcode"),
        ("int3:", "int3"),
        ("stack segment:", "stack segment fault"),
    ] {
        if h.starts_with(p) {
            return Some(Kind::Trap(what.into()));
        }
    }
    if h.starts_with("PANIC: double fault") {
        return Some(Kind::DoubleFault);
    }
    if let Some(r) = h.strip_prefix("Oops: ") {
        // `Oops: general protection fault, ...` (6.x) is the fault's own header.
        if !r.starts_with("Oops") {
            if let Some(k) = kind_of(r) {
                return Some(k);
            }
        }
        // hotfuzz: an `Oops:` line without a header before it names its reason.
        let r = r.strip_prefix("Oops: ").unwrap_or(r);
        let reason = r
            .split([':', '['])
            .next()
            .unwrap_or("")
            .split(", sig")
            .next()
            .unwrap_or("")
            .trim();
        if reason.is_empty() || reason.starts_with("Fatal exception") {
            return None;
        }
        return Some(Kind::Trap(format!("Oops: {reason}")));
    }
    if h.starts_with("VFS: Busy inodes after unmount") {
        return Some(Kind::Vfs("VFS: Busy inodes after unmount (use-after-free)"));
    }
    if h.starts_with("VFS: Close: file count is 0") {
        return Some(Kind::Vfs("VFS: Close: file count is zero (use-after-free)"));
    }
    if h.starts_with("unregister_netdevice: waiting for") {
        return Some(Kind::NetdevWait);
    }
    for p in ["SYZFAIL:", "SYZFATAL:"] {
        if h.starts_with(p) {
            return Some(Kind::SyzFailure(h.to_string()));
        }
    }
    if h.starts_with("trusty: panic") {
        let what = match h.split_once("ASSERT FAILED at (") {
            Some((_, r)) => format!(
                "trusty: ASSERT FAILED: {}",
                r.split_once("): ").map_or("", |(_, e)| e.trim())
            ),
            None => "trusty: panic".to_string(),
        };
        return Some(Kind::Trusty(what));
    }
    if let Some(r) = h.strip_prefix("BUG kmalloc-") {
        // `BUG kmalloc-8 (Tainted: G    B   ): Object already free`.
        let what = r.split_once("): ").map(|(_, w)| w.trim())?;
        return Some(Kind::Slub(what.to_string()));
    }
    if let Some(r) = h.strip_prefix("page dumped because: ") {
        return Some(Kind::PageDump(r.trim().to_string()));
    }
    if h.contains("marking device broken")
        || h.starts_with("Failed to re-online memory")
        || h.starts_with("Failed to remove memory")
    {
        return Some(Kind::VirtioMem(h.to_string()));
    }
    None
}

fn ubsan_what(r: &str) -> String {
    if r.starts_with("Undefined behaviour in") {
        return "undefined-behaviour".into();
    }
    match r.split_once(" in ") {
        Some((w, _)) => w.trim().to_string(),
        None => r
            .split(':')
            .next()
            .unwrap_or(r)
            .trim()
            .trim_end_matches(" in")
            .to_string(),
    }
}

/// The lockdep and RCU-checker headers: (text, report).
const LOCKDEP: &[(&str, Lock)] = &[
    (
        "possible circular locking dependency detected",
        Lock::Circular,
    ),
    ("possible recursive locking detected", Lock::Recursive),
    (
        "possible irq lock inversion dependency detected",
        Lock::IrqInversion,
    ),
    (
        "SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected",
        Lock::IrqInversion,
    ),
    (
        "HARDIRQ-safe -> HARDIRQ-unsafe lock order detected",
        Lock::IrqInversion,
    ),
    (
        "SOFTIRQ-READ-safe -> SOFTIRQ-READ-unsafe lock order detected",
        Lock::IrqInversion,
    ),
    (
        "HARDIRQ-READ-safe -> HARDIRQ-READ-unsafe lock order detected",
        Lock::IrqInversion,
    ),
    ("inconsistent lock state", Lock::Inconsistent),
    ("bad unlock balance detected", Lock::BadUnlock),
    ("held lock freed", Lock::HeldLockFreed),
    (
        "lock held when returning to user space",
        Lock::HeldReturning,
    ),
    ("suspicious RCU usage", Lock::SuspiciousRcu),
    ("trying to register non-static key", Lock::NonStaticKey),
    ("Nested lock was not taken", Lock::NestedLock),
    ("Invalid wait context", Lock::InvalidWait),
    ("workqueue leaked lock or atomic", Lock::WorkqueueLeak),
    ("MAX_STACK_TRACE_ENTRIES too low", Lock::Capacity),
    ("MAX_LOCKDEP_KEYS too low", Lock::Capacity),
    ("MAX_LOCKDEP_ENTRIES too low", Lock::Capacity),
    ("MAX_LOCKDEP_CHAINS too low", Lock::Capacity),
    ("MAX_LOCKDEP_CHAIN_HLOCKS too low", Lock::Capacity),
];

fn lockdep(r: &str, prefix: &'static str) -> Option<Kind> {
    for &(t, what) in LOCKDEP {
        if r.starts_with(t) {
            return Some(Kind::Lockdep { what, prefix });
        }
    }
    // `BUG: syz-executor/31761 still has locks held!`.
    let task = r.strip_suffix(" still has locks held!")?;
    (!task.is_empty() && !task.contains(' ')).then_some(Kind::Lockdep {
        what: Lock::StillHasLocks,
        prefix,
    })
}

fn warning(r: &str) -> Option<Kind> {
    if let Some(k) = lockdep(r, "WARNING") {
        return Some(k);
    }
    // The unwinder names its addresses; hashed ones (`(ptrval)`) say less.
    let hashed = r.contains("(ptrval)");
    if r.starts_with("kernel stack regs at ") || r.starts_with("kernel stack frame pointer at ") {
        return Some(Kind::Unwinder(if hashed {
            "WARNING: kernel stack regs has bad value"
        } else if r.starts_with("kernel stack frame pointer") {
            "WARNING: kernel stack frame pointer has bad value"
        } else if r.contains("has bad 'bp' value") {
            "WARNING: kernel stack regs has bad 'bp' value"
        } else {
            "WARNING: kernel stack regs has bad value"
        }));
    }
    // `CPU: 1 PID: 5 at file:line func+0x..`, `at file:line func+0x..()`.
    let at = r
        .strip_prefix("CPU: ")
        .and_then(|x| x.split_once(" at "))
        .map(|(_, x)| x)
        .or_else(|| r.strip_prefix("at "));
    if let Some(x) = at {
        let (file, rest) = x.split_once(' ').unwrap_or((x, ""));
        return Some(Kind::Warning {
            file: Some(file.to_string()),
            func: func_at(rest),
        });
    }
    // `file:line at func+0x.., CPU#N: comm/pid` (and `at 0x0` without symbols).
    if let Some((file, rest)) = r.split_once(" at ") {
        if is_file_line(file) && rest.contains(", CPU#") {
            return Some(Kind::Warning {
                file: Some(file.to_string()),
                func: func_at(rest),
            });
        }
    }
    None
}

fn is_file_line(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((f, l)) => {
            f.contains('.')
                && !f.contains(' ')
                && !l.is_empty()
                && l.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

fn bug(r: &str) -> Option<Kind> {
    if let Some(k) = lockdep(r, "BUG") {
        return Some(k);
    }
    for (p, kind) in [
        ("KASAN: ", 0),
        ("KMSAN: ", 1),
        ("KCSAN: ", 2),
        ("KFENCE: ", 3),
    ] {
        let Some(x) = r.strip_prefix(p) else { continue };
        let (what, rest) = match x.split_once(" in ") {
            Some((w, rest)) => (w.trim().to_string(), rest),
            None => {
                // `BUG: KASAN: null-ptr-deref on address ...`.
                let w = x.split([' ', ':']).next().unwrap_or(x);
                (w.to_string(), "")
            }
        };
        return Some(match kind {
            0 => Kind::Kasan {
                func: func_at(rest),
                old: rest.contains(" at addr "),
                what,
            },
            1 => Kind::Kmsan { what },
            2 => Kind::Kcsan {
                what,
                funcs: rest.trim().to_string(),
            },
            _ => Kind::Kfence { what },
        });
    }
    if r.starts_with("unable to handle kernel NULL pointer dereference")
        || r.starts_with("kernel NULL pointer dereference")
        || r.starts_with("Kernel NULL pointer dereference")
    {
        return Some(Kind::PageFault { null: true });
    }
    if r.starts_with("unable to handle kernel paging request")
        || r.starts_with("unable to handle page fault")
        || r.starts_with("Unable to handle kernel")
    {
        return Some(Kind::PageFault { null: false });
    }
    if r.starts_with("Bad page state") {
        return Some(Kind::BadPage { map: false });
    }
    if r.starts_with("Bad page map") {
        return Some(Kind::BadPage { map: true });
    }
    if r.starts_with("soft lockup") {
        return Some(Kind::SoftLockup);
    }
    if r.starts_with("workqueue lockup") {
        return Some(Kind::WorkqueueLockup);
    }
    for what in [
        "scheduling while atomic",
        "sleeping function called from invalid context",
    ] {
        if r.starts_with(what) {
            return Some(Kind::AtomicSleep(what));
        }
    }
    if let Some(x) = r.strip_prefix("using ") {
        if let Some((f, _)) = x.split_once(" in preemptible") {
            return Some(Kind::Preemptible(f.to_string()));
        }
    }
    for lock in ["spinlock", "rwlock"] {
        if let Some(x) = r.strip_prefix(lock) {
            // `spinlock lockup suspected on CPU#2, ...`, `spinlock bad magic on CPU#0`.
            let what = x.split(" on CPU").next().unwrap_or(x).trim();
            return Some(Kind::Spinlock(format!("{lock} {what}")));
        }
    }
    if r.starts_with("stack guard page was hit") || r.starts_with("TASK stack guard page was hit") {
        return Some(Kind::StackGuard);
    }
    if let Some(x) = r.strip_prefix("Dentry ") {
        if x.contains("still in use") {
            let fs = x
                .split_once("[unmount of ")
                .map(|(_, f)| f.trim_end_matches(']').trim().to_string())
                .unwrap_or_default();
            return Some(Kind::Dentry(fs));
        }
    }
    if r.starts_with("memory leak") {
        return Some(Kind::Leak);
    }
    // Anything else: `BUG: Bad rss-counter state mm:...`, `BUG: MAX_...`.
    let what = r
        .split([':', '['])
        .next()
        .unwrap_or("")
        .split(" in process")
        .next()
        .unwrap_or("")
        .split(" for address")
        .next()
        .unwrap_or("")
        .split(", address")
        .next()
        .unwrap_or("")
        .trim()
        .trim_end_matches(" mm");
    if what.is_empty()
        || what.starts_with('#')
        || !what.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        return None;
    }
    Some(Kind::Bug(what.to_string()))
}

fn info(r: &str) -> Option<Kind> {
    if let Some(k) = lockdep(r, "INFO") {
        return Some(k);
    }
    if let Some(x) = r.strip_prefix("rcu_") {
        // `rcu_preempt self-detected stall on CPU`, `rcu_sched detected stalls on CPUs/tasks`,
        // `rcu_preempt detected expedited stalls`.
        if x.contains("detected stall") || x.contains("detected expedited stall") {
            return Some(Kind::RcuStall);
        }
        return None;
    }
    if let Some(x) = r.strip_prefix("task ") {
        if x.contains(" blocked for more than ")
            || x.contains(" blocked in I/O wait for more than ")
        {
            return Some(Kind::HungTask("hung"));
        }
        if x.contains(" can't die for more than ") {
            return Some(Kind::HungTask("can't die"));
        }
        return None;
    }
    for p in ["Allocated in ", "Freed in "] {
        if r.starts_with(p) {
            return Some(Kind::SlubInfo(format!("INFO: {r}")));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<Kind> {
        classify(s).map(|s| s.kind)
    }

    #[test]
    fn classifies_headers() {
        assert_eq!(
            kind("WARNING: CPU: 0 PID: 136 at mm/memory_hotplug.c:1234 offline_pages+0x14/0x20"),
            Some(Kind::Warning {
                func: Some("offline_pages".into()),
                file: Some("mm/memory_hotplug.c:1234".into())
            })
        );
        assert_eq!(
            kind("WARNING: fs/dcache.c:829 at fast_dput+0x334/0x430, CPU#1: syz-executor/5830"),
            Some(Kind::Warning {
                func: Some("fast_dput".into()),
                file: Some("fs/dcache.c:829".into())
            })
        );
        assert_eq!(
            kind("WARNING: lib/refcount.c:19 at 0x0, CPU#1: syz.3.20/6051"),
            Some(Kind::Warning {
                func: None,
                file: Some("lib/refcount.c:19".into())
            })
        );
        assert_eq!(
            kind("kernel BUG at mm/page_alloc.c:123!"),
            Some(Kind::KernelBug {
                file: "mm/page_alloc.c:123".into()
            })
        );
        assert_eq!(
            kind("Oops: Oops: 0002 [#1] PREEMPT SMP NOPTI"),
            Some(Kind::Trap("Oops: 0002".into()))
        );
        assert_eq!(
            kind("Oops: general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1]"),
            Some(Kind::Gpf)
        );
        assert_eq!(
            kind("BUG: Bad page state in process sh  pfn:3fe26"),
            Some(Kind::BadPage { map: false })
        );
        assert_eq!(kind("hotfuzz-init: ready"), None);
        assert_eq!(kind("virtio_mem virtio1: plugged size: 0x0"), None);
        assert_eq!(
            kind("virtio_mem virtio1: unplug failed, marking device broken: -16"),
            Some(Kind::VirtioMem(
                "unplug failed, marking device broken: -16".into()
            ))
        );
        assert_eq!(
            kind("Failed to re-online memory block 32"),
            Some(Kind::VirtioMem(
                "Failed to re-online memory block 32".into()
            ))
        );
        assert_eq!(
            kind(
                "traps: sh[1] general protection fault ip:4012 sp:7ffd error:0 in sh[401000+1000]"
            ),
            None
        );
        assert_eq!(
            kind("BUG: Bad rss-counter state mm:00000000 type:MM_ANONPAGES val:1"),
            Some(Kind::Bug("Bad rss-counter state".into()))
        );
        // Someone quoting a title (a report header, a shell echo) is not the kernel.
        assert_eq!(kind("TITLE: BUG: Bad page state in foo"), None);
        assert_eq!(kind("echo: BUG: scheduling while atomic"), None);
        assert_eq!(
            kind("EXT4-fs (loop1): INFO: recovery required on readonly filesystem"),
            None
        );
        assert_eq!(kind("INFO: lockdep is turned off."), None);
        assert_eq!(
            kind("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [sh:1]"),
            Some(Kind::SoftLockup)
        );
        assert_eq!(
            kind("rcu: INFO: rcu_preempt self-detected stall on CPU"),
            Some(Kind::RcuStall)
        );
        assert_eq!(
            kind("[ BUG: held lock freed! ]"),
            Some(Kind::Lockdep {
                what: Lock::HeldLockFreed,
                prefix: "BUG"
            })
        );
        assert_eq!(
            kind("BUG: syz-executor/31761 still has locks held!"),
            Some(Kind::Lockdep {
                what: Lock::StillHasLocks,
                prefix: "BUG"
            })
        );
        assert_eq!(
            kind("BUG: KASAN: slab-out-of-bounds in gup_huge_pmd+0x739/0x770 at addr ffff8800b46111c0"),
            Some(Kind::Kasan {
                what: "slab-out-of-bounds".into(),
                func: Some("gup_huge_pmd".into()),
                old: true
            })
        );
        assert_eq!(
            kind("2018/01/09 14:28:48 BUG: memory leak"),
            Some(Kind::Leak)
        );
        assert_eq!(
            kind("BUG: using __this_cpu_read() in preemptible [00000000] code: syz/1"),
            Some(Kind::Preemptible("__this_cpu_read()".into()))
        );
    }
}
