//! The title formats: for each kind of report, what its title says, where its frame comes
//! from, which frames it skips, its alternative titles and its kind; and which reports are
//! complete without a stack. (The machinery that applies them is [`super::titles`].)

use super::classify::{Kind, Lock};
use super::stack::{self, Skip};
use super::titles::{at_func, Body, Titled, NO_FRAME};
use super::ReportType;

/// Where a kind finds its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The faulting instruction's line (`RIP:`, `NIP`, `pc :`, `PC is at`, `--- interrupt:`),
    /// then the stack after it; without one, the call trace.
    Ip,
    /// The call trace (after `Call Trace:` when there is one, else right after the header).
    Trace,
    /// The first frames after the header (KMSAN, bad pages: their stacks come first).
    Frames,
    /// The function the header names, then the call trace.
    Header,
    /// lockdep's `at:` lines (up to this many), then the call trace.
    LockAt(usize),
    /// The frame on the line after lockdep's `... at:`, then the call trace.
    AfterAt,
    /// The frames after the first line containing this text.
    After(&'static str),
    /// kmemleak's `backtrace:`.
    Backtrace,
    /// The stack an interrupt cut into (RCU stalls), named by the stall rules.
    Stall,
    /// The faulting instruction and its stack, named by the stall rules (soft lockups).
    IpStall,
    /// The call trace, named by the stall rules (a stack overflow found by the scheduler).
    TraceStall,
    /// The sleeper's stack (hung tasks).
    Hung,
    /// No frame: the title is complete without one.
    None,
}

/// The kinds whose report is complete without a stack trace.
pub(super) fn needs_stack(k: &Kind) -> bool {
    !matches!(
        k,
        Kind::WorkqueueLockup
            | Kind::Unwinder(_)
            | Kind::Vfs(_)
            | Kind::NetdevWait
            | Kind::SyzFailure(_)
            | Kind::Trusty(_)
            | Kind::Bug(_)
            | Kind::Panic(_)
            | Kind::Dentry(_)
            | Kind::VirtioMem(_)
            | Kind::PageDump(_)
            | Kind::Kcsan { .. }
            | Kind::Lockdep {
                what: Lock::Capacity | Lock::WorkqueueLeak | Lock::HeldReturning,
                ..
            }
    )
}

/// A title's parts before the frame is known.
pub(super) struct Plan {
    /// `<prefix> in <frame>`.
    pub(super) prefix: String,
    /// `<alt> in <frame>` for each.
    pub(super) alt_prefixes: Vec<&'static str>,
    pub(super) kind: ReportType,
    pub(super) source: Source,
    pub(super) skip: Skip,
    /// The function the header names.
    pub(super) header_func: Option<String>,
    /// After the frame in the title (`WARNING in caller/usb_submit_urb`).
    pub(super) suffix: &'static str,
    /// A frame skipped on top of `skip` (the function the title's suffix names).
    pub(super) also_skip: Option<&'static str>,
    /// A title that needs no frame (the frame only checks the report).
    pub(super) fixed: Option<String>,
    /// Alternative titles of a fixed title.
    pub(super) fixed_alts: Vec<String>,
    /// The report is corrupted whatever its frames.
    pub(super) corrupted: Option<&'static str>,
}

impl Plan {
    pub(super) fn new(
        prefix: impl Into<String>,
        kind: ReportType,
        source: Source,
        skip: Skip,
    ) -> Plan {
        Plan {
            prefix: prefix.into(),
            alt_prefixes: Vec::new(),
            kind,
            source,
            skip,
            header_func: None,
            suffix: "",
            also_skip: None,
            fixed: None,
            fixed_alts: Vec::new(),
            corrupted: None,
        }
    }

    pub(super) fn alt(mut self, a: &'static str) -> Plan {
        self.alt_prefixes.push(a);
        self
    }

    pub(super) fn func(mut self, f: Option<String>) -> Plan {
        self.header_func = f;
        self
    }

    pub(super) fn fixed(title: impl Into<String>, kind: ReportType) -> Plan {
        let mut p = Plan::new(String::new(), kind, Source::None, Skip::Generic);
        p.fixed = Some(title.into());
        p
    }
}

/// The header as a title of its own (a report too damaged for its kind's title): the header
/// without `BUG: ` for sanitizers.
fn header_title(b: &Body) -> String {
    let h = &b.start.header;
    for p in [
        "BUG: KASAN: ",
        "BUG: KMSAN: ",
        "BUG: KFENCE: ",
        "BUG: KCSAN: ",
    ] {
        if let Some(r) = h.strip_prefix(p) {
            return format!("{}{r}", &p[5..]);
        }
    }
    h.trim_start_matches("[ ")
        .trim_end_matches(" ]")
        .to_string()
}

/// The text after the header on the next lines that match `pred`, within the title region.
fn find_line<'a>(lines: &[&'a str], pred: impl Fn(&str) -> bool) -> Option<(usize, &'a str)> {
    lines
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, l)| pred(l.trim_start()))
        .map(|(i, l)| (i, l.trim_start()))
}

fn kasan_access(lines: &[&str]) -> Option<(usize, &'static str)> {
    let window = &lines[..lines.len().min(8)];
    find_line(window, |l| {
        l.starts_with("Read of size")
            || l.starts_with("Write of size")
            || l.starts_with("Read at addr")
            || l.starts_with("Write at addr")
    })
    .map(|(i, l)| {
        (
            i,
            if l.starts_with("Read") {
                "Read"
            } else {
                "Write"
            },
        )
    })
}

pub(super) fn plan(b: &Body) -> Result<Plan, Titled> {
    use ReportType as T;
    let fallback = |kind: ReportType, why: &str| Titled {
        title: header_title(b),
        alts: Vec::new(),
        kind,
        frame: None,
        corrupted: Some(why.to_string()),
        used: 0,
    };
    Ok(match &b.start.kind {
        Kind::Warning { file, func } => {
            let file = file.as_deref().unwrap_or("");
            let msg = |needle: &str| {
                b.before
                    .iter()
                    .chain(b.lines.iter().take(3))
                    .any(|l| l.contains(needle))
            };
            let (prefix, kind, skip) = if file.starts_with("lib/debugobjects.c") {
                ("WARNING: ODEBUG bug", T::Odebug, Skip::Odebug)
            } else if file.starts_with("mm/usercopy.c") {
                ("WARNING: bad usercopy", T::Usercopy, Skip::Generic)
            } else if file.starts_with("lib/kobject.c") {
                ("WARNING: kobject bug", T::Warning, Skip::Kobject)
            } else if file.starts_with("fs/proc/generic.c") {
                ("WARNING: proc registration bug", T::Warning, Skip::Generic)
            } else if file.starts_with("lib/refcount.c") || msg("refcount_t: ") {
                ("WARNING: refcount bug", T::Refcount, Skip::Checker)
            } else if file.starts_with("lib/list_debug.c") {
                ("BUG: corrupted list", T::ListCorruption, Skip::Checker)
            } else if file.starts_with("kernel/locking/lockdep.c") {
                ("WARNING: locking bug", T::Lockdep, Skip::Generic)
            } else if file.starts_with("mm/vmalloc.c") && msg("vmalloc") && is_zero_size_vmalloc(b)
            {
                ("WARNING: zero-size vmalloc", T::Warning, Skip::Generic)
            } else if file.starts_with("mm/") && func.as_deref().is_some_and(is_kmalloc) {
                ("WARNING: kmalloc bug", T::Warning, Skip::Generic)
            } else {
                ("WARNING", T::Warning, Skip::Generic)
            };
            let mut p = Plan::new(prefix, kind, Source::Ip, skip).func(func.clone());
            if prefix == "BUG: corrupted list" {
                p = p.alt("bad-access");
            }
            if func.as_deref() == Some("usb_submit_urb") {
                // Named after the caller: usb_submit_urb only checks its arguments.
                p.suffix = "/usb_submit_urb";
                p.also_skip = Some("usb_submit_urb");
            }
            p
        }
        Kind::Lockdep { what, prefix } => {
            let pre = *prefix;
            let t = |s: &str| format!("{pre}: {s}");
            match what {
                Lock::IrqInversion if b.start.header.contains("lock order detected") => {
                    // Named after where the irq-safe lock became irq-safe.
                    Plan::new(
                        "possible deadlock",
                        T::Lockdep,
                        Source::After("which became"),
                        Skip::Generic,
                    )
                }
                Lock::Circular | Lock::Recursive | Lock::IrqInversion => {
                    if !b.lines.iter().any(|l| at_func(l).is_some()) {
                        return Err(fallback(
                            if pre == "WARNING" {
                                T::Warning
                            } else {
                                T::Lockdep
                            },
                            "the lock chain is missing",
                        ));
                    }
                    Plan::new(
                        "possible deadlock",
                        T::Lockdep,
                        Source::LockAt(2),
                        Skip::Generic,
                    )
                }
                Lock::Inconsistent => Plan::new(
                    "inconsistent lock state",
                    T::Lockdep,
                    Source::LockAt(1),
                    Skip::Generic,
                ),
                Lock::BadUnlock => Plan::new(
                    t("bad unlock balance"),
                    T::Lockdep,
                    Source::AfterAt,
                    Skip::Generic,
                ),
                Lock::HeldLockFreed => Plan::new(
                    t("held lock freed"),
                    T::Lockdep,
                    Source::LockAt(1),
                    Skip::Generic,
                ),
                Lock::StillHasLocks => Plan::new(
                    t("still has locks held"),
                    T::Lockdep,
                    Source::LockAt(1),
                    Skip::Generic,
                ),
                Lock::HeldReturning => Plan::new(
                    t("lock held when returning to user space"),
                    T::Lockdep,
                    Source::LockAt(1),
                    Skip::Generic,
                ),
                Lock::SuspiciousRcu => {
                    // The checker names the dereference's file right after its header.
                    let named = b.lines.iter().skip(1).take(10).any(|l| {
                        let w = l.split_whitespace().next().unwrap_or("");
                        w.rsplit_once(':').is_some_and(|(f, n)| {
                            f.contains('.')
                                && !n.is_empty()
                                && n.bytes().all(|c| c.is_ascii_digit())
                        })
                    });
                    if !named {
                        return Err(fallback(
                            if pre == "WARNING" {
                                T::Warning
                            } else {
                                T::Lockdep
                            },
                            "the checker's report is cut short",
                        ));
                    }
                    Plan::new(
                        t("suspicious RCU usage"),
                        T::Lockdep,
                        Source::Trace,
                        Skip::Generic,
                    )
                }
                Lock::NonStaticKey => Plan::new(
                    "INFO: trying to register non-static key",
                    T::Lockdep,
                    Source::Trace,
                    Skip::Generic,
                ),
                Lock::NestedLock => Plan::new(
                    "WARNING: nested lock was not taken",
                    T::Lockdep,
                    Source::Trace,
                    Skip::Generic,
                ),
                Lock::InvalidWait => Plan::new(
                    "WARNING: locking bug",
                    T::Lockdep,
                    Source::Trace,
                    Skip::Generic,
                ),
                Lock::WorkqueueLeak => {
                    let last = find_line(&b.lines[..b.lines.len().min(4)], |l| {
                        l.starts_with("last function: ")
                    })
                    .and_then(|(_, l)| l.strip_prefix("last function: "))
                    .map(|f| stack::base_name(f.trim()).to_string());
                    Plan::new(
                        t("workqueue leaked lock or atomic"),
                        T::Lockdep,
                        Source::Header,
                        Skip::Generic,
                    )
                    .func(last)
                }
                Lock::Capacity => Plan::fixed(header_title(b), T::Lockdep),
            }
        }
        Kind::Unwinder(t) => Plan::fixed(*t, T::Warning),
        Kind::Kasan { what, func, old } => {
            let invalid_free = what.contains("invalid-free") || what.contains("double-free");
            if invalid_free {
                Plan::new(
                    "KASAN: invalid-free",
                    T::Kasan,
                    Source::Header,
                    Skip::Generic,
                )
                .alt("invalid-free")
                .func(func.clone())
            } else {
                let Some((_, access)) = kasan_access(b.lines) else {
                    return Err(fallback(T::Kasan, "the access (read or write) is missing"));
                };
                if *old && func.is_none() {
                    return Err(fallback(T::Kasan, NO_FRAME));
                }
                if func.is_none() {
                    let mut p = Plan::fixed(format!("KASAN: {what} {access}"), T::Kasan);
                    p.corrupted = Some(NO_FRAME);
                    p
                } else {
                    Plan::new(
                        format!("KASAN: {what} {access}"),
                        T::Kasan,
                        Source::Header,
                        Skip::Generic,
                    )
                    .alt("bad-access")
                    .func(func.clone())
                }
            }
        }
        Kind::Kmsan { what } => Plan::new(
            format!("KMSAN: {what}"),
            T::Kmsan,
            Source::Frames,
            Skip::Generic,
        )
        .alt("bad-access"),
        Kind::Kcsan { what, funcs } => {
            let funcs = funcs
                .split(" / ")
                .map(|f| stack::base_name(f.split('+').next().unwrap_or(f).trim()).to_string())
                .collect::<Vec<_>>()
                .join(" / ");
            if funcs.is_empty() {
                return Err(fallback(T::Kcsan, NO_FRAME));
            }
            Plan::fixed(format!("KCSAN: {what} in {funcs}"), T::Kcsan)
        }
        Kind::Kfence { what } => {
            let mut p = Plan::new(
                format!("KFENCE: {what}"),
                T::Kfence,
                Source::Header,
                Skip::Generic,
            )
            .func(
                b.start
                    .header
                    .split_once(" in ")
                    .and_then(|(_, r)| func_name(r)),
            );
            if what.contains("invalid free") {
                p = p.alt("invalid-free");
            } else if !what.contains("memory corruption") {
                p = p.alt("bad-access");
            }
            p
        }
        Kind::PageFault { null } => {
            let (prefix, kind) = if *null {
                (
                    "BUG: unable to handle kernel NULL pointer dereference",
                    T::NullDeref,
                )
            } else {
                ("BUG: unable to handle kernel paging request", T::PageFault)
            };
            Plan::new(prefix, kind, Source::Ip, Skip::Generic).alt("bad-access")
        }
        Kind::Gpf => Plan::new(
            "general protection fault",
            T::Gpf,
            Source::Ip,
            Skip::Generic,
        )
        .alt("bad-access"),
        Kind::Trap(what) => Plan::new(what.clone(), T::Oops, Source::Ip, Skip::Generic),
        Kind::ArmFault(what) => {
            // An arm page fault's `Internal error: Oops` after `Unable to handle kernel`.
            let p = Plan::new(*what, T::Oops, Source::Ip, Skip::Generic);
            if *what == "Alignment trap" {
                p
            } else {
                p.alt("bad-access")
            }
        }
        Kind::DoubleFault => Plan::new("PANIC: double fault", T::Oops, Source::Ip, Skip::Generic),
        Kind::KernelBug { file } => {
            if file.starts_with("mm/usercopy.c") {
                Plan::new(
                    "BUG: bad usercopy",
                    T::Usercopy,
                    Source::Trace,
                    Skip::Generic,
                )
            } else if file.starts_with("lib/list_debug.c") {
                Plan::new(
                    "BUG: corrupted list",
                    T::ListCorruption,
                    Source::Ip,
                    Skip::Checker,
                )
                .alt("bad-access")
            } else {
                Plan::new("kernel BUG", T::KernelBug, Source::Ip, Skip::Generic)
            }
        }
        Kind::BadPage { map } => Plan::new(
            if *map {
                "BUG: Bad page map"
            } else {
                "BUG: Bad page state"
            },
            T::BadPage,
            Source::Frames,
            Skip::BadPage,
        ),
        Kind::AtomicSleep(what) => Plan::new(
            format!("BUG: {what}"),
            T::AtomicSleep,
            Source::Trace,
            Skip::Atomic,
        ),
        Kind::Preemptible(f) => Plan::new(
            format!("BUG: using {f} in preemptible code"),
            T::AtomicSleep,
            Source::Trace,
            Skip::Atomic,
        ),
        Kind::Spinlock(what) => Plan::new(
            format!("BUG: {what}"),
            T::Lockdep,
            Source::Trace,
            Skip::Generic,
        ),
        Kind::SoftLockup => Plan::new(
            "BUG: soft lockup",
            T::SoftLockup,
            Source::IpStall,
            Skip::Stall,
        )
        .alt("stall"),
        Kind::RcuStall => Plan::new(
            "INFO: rcu detected stall",
            T::RcuStall,
            Source::Stall,
            Skip::Stall,
        )
        .alt("stall"),
        Kind::HungTask(what) => Plan::new(
            format!("INFO: task {what}"),
            T::HungTask,
            Source::Hung,
            Skip::Hung,
        )
        .alt("hang"),
        Kind::WorkqueueLockup => Plan::fixed("BUG: workqueue lockup", T::WorkqueueLockup),
        Kind::StackGuard => Plan::new(
            "BUG: stack guard page was hit",
            T::StackOverflow,
            Source::TraceStall,
            Skip::Stall,
        )
        .alt("stack-overflow"),
        Kind::Dentry(fs) => {
            let mut p = Plan::fixed("BUG: Dentry still in use in unmount", T::Other);
            if !fs.is_empty() {
                p.fixed_alts
                    .push(format!("BUG: Dentry still in use [unmount of {fs}]"));
            }
            p
        }
        Kind::Leak => Plan::new("memory leak", T::MemoryLeak, Source::Backtrace, Skip::Leak),
        Kind::Ubsan(what) => {
            let p = Plan::new(
                format!("UBSAN: {what}"),
                T::Ubsan,
                Source::Trace,
                Skip::Generic,
            );
            if what == "array-index-out-of-bounds" {
                p.alt("bad-access")
            } else {
                p
            }
        }
        Kind::Slub(what) => {
            let mut p = Plan::fixed(format!("BUG: {what}"), T::Other);
            p.source = Source::Trace;
            p
        }
        Kind::SlubInfo(t) => {
            let mut p = Plan::fixed(t.clone(), T::Other);
            p.corrupted = Some("a fragment of a slab debugging report");
            p
        }
        Kind::Panic(msg) => return panic(msg),
        Kind::Vfs(t) => Plan::fixed(*t, T::Other),
        Kind::NetdevWait => Plan::fixed(
            "unregister_netdevice: waiting for DEV to become free",
            T::Other,
        ),
        Kind::Trusty(t) => Plan::fixed(t.clone(), T::Panic),
        Kind::SyzFailure(msg) => {
            let mut p = Plan::fixed(msg.clone(), T::SyzFailure);
            if msg.starts_with("SYZFATAL") {
                p.fixed_alts.push("SYZFATAL".into());
            }
            p
        }
        Kind::Bug(what) => Plan::fixed(format!("BUG: {what}"), T::KernelBug),
        Kind::VirtioMem(msg) => {
            let m = msg.split(':').next().unwrap_or(msg).trim();
            Plan::fixed(format!("virtio-mem: {m}"), T::VirtioMem)
        }
        Kind::PageDump(reason) => {
            Plan::fixed(format!("page dumped because: {reason}"), T::PageDump)
        }
    })
}

/// `kmalloc_slab`, `__kmalloc`, `krealloc`, ...: a warning there is about the size asked for.
fn is_kmalloc(f: &str) -> bool {
    let f = f.trim_start_matches('_');
    ["kmalloc", "krealloc", "kzalloc", "kcalloc", "kvmalloc"]
        .iter()
        .any(|p| f.starts_with(p))
}

fn is_zero_size_vmalloc(b: &Body) -> bool {
    // The zero-size check in __vmalloc_node_range warns without a message; its callers pass 0.
    matches!(&b.start.kind, Kind::Warning { func: Some(f), .. } if f.contains("vmalloc"))
}

fn func_name(s: &str) -> Option<String> {
    let s = s.trim_start();
    let end = s
        .bytes()
        .position(|c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'$'))
        .unwrap_or(s.len());
    (end > 0).then(|| stack::base_name(&s[..end]).to_string())
}

fn panic(msg: &str) -> Result<Plan, Titled> {
    use ReportType as T;
    let corrupt = |t: &str| {
        let mut p = Plan::fixed(format!("kernel panic: {t}"), T::Panic);
        p.corrupted = Some("a panic whose cause is not in the log");
        p
    };
    let m = msg.trim();
    Ok(
        if m.starts_with("Fatal exception") || m.starts_with("Oops: Fatal exception") {
            corrupt("Fatal exception")
        } else if m.contains("panic_on_warn set") || m.contains("panic_on_kmsan set") {
            corrupt(m.trim_end_matches(" ...").trim_start_matches("kernel: "))
        } else if m.starts_with("hung_task: blocked tasks")
            || m.starts_with("softlockup: hung tasks")
        {
            corrupt(m)
        } else if m.starts_with("corrupted stack end detected inside scheduler") {
            Plan::new(
                "kernel panic: corrupted stack end",
                T::StackOverflow,
                Source::TraceStall,
                Skip::Stall,
            )
            .alt("stack-overflow")
        } else if let Some(r) = m.strip_prefix("stack-protector: Kernel stack is corrupted in: ") {
            Plan::new(
                "kernel panic: stack is corrupted",
                T::StackOverflow,
                Source::Header,
                Skip::Generic,
            )
            .func(func_name(r).filter(|f| !f.bytes().all(|c| c.is_ascii_hexdigit())))
        } else if m.starts_with("Attempted to kill init!") {
            Plan::fixed("kernel panic: Attempted to kill init!", T::Panic)
        } else if let Some((what, _)) = m
            .split_once(" for ")
            .filter(|_| m.starts_with("Couldn't open"))
        {
            Plan::fixed(format!("kernel panic: {what}"), T::Panic)
        } else {
            Plan::fixed(format!("kernel panic: {m}"), T::Panic)
        },
    )
}
