//! Reports: turning console output into titled, typed, deduplicable bug reports.
//!
//! [`parse`] is pure: text in, reports out. It recognizes the reports Linux kernels from 5.10
//! on (and many older ones) print, debug kernels included: WARNING (every header form), BUG,
//! kernel BUG, Oops, general protection fault and other traps, page faults, KASAN, KMSAN,
//! KCSAN, KFENCE, UBSAN, kmemleak, lockdep's reports, suspicious RCU usage, debug objects,
//! usercopy, refcount and list checks, hung tasks, RCU stalls, soft lockups, stack overflows,
//! panics, on x86, arm64, arm and powerpc consoles, plus virtio-mem's own errors. Each report
//! is titled the way syzkaller titles it, so that a title finds the same bug on syzbot and in
//! the mailing lists: after the function that went wrong, skipping generic frames
//! ([`stack`]), with syzkaller's placeholders ([`title`]); a report that cannot be titled
//! reliably is marked corrupted rather than given a wrong title, e.g. when two CPUs' oopses
//! interleave on a console without CONFIG_PRINTK_CALLER.
//!
//! Layout: [`lines`] takes console lines apart, [`classify`] decides which start a report,
//! [`stream`] groups lines into reports in bounded memory, [`titles`] titles them.

pub mod classify;
pub(crate) mod formats;
pub mod lines;
pub mod linux;
pub mod skip;
pub mod stack;
pub mod stream;
pub mod title;
pub(crate) mod titles;

use serde::{Deserialize, Serialize};

/// What kind of problem a report describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportType {
    /// `WARNING:` (WARN_ON and friends).
    Warning,
    /// `kernel BUG at` (BUG_ON).
    KernelBug,
    /// A NULL pointer dereference.
    NullDeref,
    /// Any other kernel page fault.
    PageFault,
    /// General protection fault.
    Gpf,
    /// Another Oops (int3, invalid opcode without BUG, powerpc exceptions).
    Oops,
    /// `BUG: Bad page state` / `Bad page map`.
    BadPage,
    /// List corruption (CONFIG_DEBUG_LIST).
    ListCorruption,
    /// refcount_t misuse.
    Refcount,
    /// Sleeping or scheduling in atomic context.
    AtomicSleep,
    /// Soft lockup.
    SoftLockup,
    /// RCU stall.
    RcuStall,
    /// A task blocked too long (hung task detector).
    HungTask,
    /// Workqueue lockup.
    WorkqueueLockup,
    /// KASAN.
    Kasan,
    /// KFENCE.
    Kfence,
    /// UBSAN.
    Ubsan,
    /// Lockdep.
    Lockdep,
    /// `Kernel panic` without an earlier report.
    Panic,
    /// virtio-mem's own errors.
    VirtioMem,
    /// A `dump_page()` that is not known noise.
    PageDump,
    /// An operation did not return after its deadline and signal (harness oracle).
    StuckOp,
    /// The guest stopped answering ssh (harness oracle).
    LostConnection,
    /// The console stayed silent (harness oracle).
    NoOutput,
    /// QEMU exited (harness oracle).
    QemuExited,
    /// The guest rebooted (harness oracle).
    UnexpectedReboot,
    /// A virtio-mem device's plugged size did not reach its requested size (harness oracle).
    VirtioMemNotSettled,
    /// KMSAN (uninitialized values, info leaks).
    Kmsan,
    /// KCSAN (data races).
    Kcsan,
    /// kmemleak.
    MemoryLeak,
    /// Debug objects (`ODEBUG:`).
    Odebug,
    /// Hardened usercopy.
    Usercopy,
    /// A stack overflow or a corrupted stack (guard page, stack protector, scheduler check).
    StackOverflow,
    /// syzkaller's executor failed (`SYZFAIL:`, `SYZFATAL:`).
    SyzFailure,
    /// Another kernel report (VFS, SLUB debugging, networking waits, ...).
    Other,
}

/// A bug report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Title, normalized (what a kernel developer would put in a mail subject).
    pub title: String,
    /// Other titles the same bug may get (for deduplication).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alt_titles: Vec<String>,
    /// Kind.
    #[serde(rename = "type")]
    pub kind: ReportType,
    /// The function the title names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
    /// Why the report is not trustworthy, if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupted: Option<String>,
    /// `page dumped because: ...` reasons in the report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub page_dump_reasons: Vec<String>,
    /// First and last line of the report in the input (0-based).
    pub start_line: usize,
    /// Last line (inclusive).
    pub end_line: usize,
    /// Host timestamp of the first line, when the log has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_time: Option<String>,
    /// The report's text, prefixes removed.
    pub text: String,
    /// Another report's lines are mixed into this one's.
    #[serde(default)]
    pub interleaved: bool,
    /// The kernel panicked with (or after) this report.
    #[serde(default)]
    pub panicked: bool,
}

impl Report {
    /// All titles of the report (the title and the alternatives).
    pub fn titles(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.title.as_str()).chain(self.alt_titles.iter().map(String::as_str))
    }

    /// Whether two reports are the same bug: their title sets intersect.
    pub fn same_bug(&self, other: &Report) -> bool {
        self.titles().any(|t| other.titles().any(|u| u == t))
    }

    /// The crash type syzkaller gives this report (its reports' `TYPE:`): `WARNING`, `HANG`,
    /// `DoS`, `LOCKDEP`, `MEMORY_SAFETY_BUG`, `KASAN-USE-AFTER-FREE-READ`, `LEAK`, ..., or
    /// `""` for the kinds syzkaller gives no type. Derived from the title, as syzkaller types
    /// a report by the title format it matched.
    pub fn syz_type(&self) -> &'static str {
        syz_type(self.kind, &self.title)
    }
}

/// syzkaller's crash type for a report of `kind` titled `title` (see [`Report::syz_type`]).
pub fn syz_type(kind: ReportType, title: &str) -> &'static str {
    use ReportType as T;
    match kind {
        T::LostConnection => return "LOST_CONNECTION",
        T::NoOutput => return "NO_OUTPUT",
        T::UnexpectedReboot => return "UNEXPECTED_REBOOT",
        T::StuckOp => return "HANG",
        T::QemuExited | T::VirtioMemNotSettled | T::VirtioMem | T::PageDump => return "",
        _ => {}
    }
    let access = |what: &str| {
        if what.ends_with(" Write") || what.ends_with(" write") {
            "WRITE"
        } else {
            "READ"
        }
    };
    if let Some(r) = title.strip_prefix("KASAN: ") {
        let what = r.split(" in ").next().unwrap_or(r);
        let a = access(what);
        return if what.contains("invalid-free") || what.contains("double-free") {
            "KASAN-INVALID-FREE"
        } else if what.contains("use-after-free") {
            if a == "WRITE" {
                "KASAN-USE-AFTER-FREE-WRITE"
            } else {
                "KASAN-USE-AFTER-FREE-READ"
            }
        } else if what.contains("null-ptr-deref") {
            if a == "WRITE" {
                "KASAN-NULL-POINTER-DEREFERENCE-WRITE"
            } else {
                "KASAN-NULL-POINTER-DEREFERENCE-READ"
            }
        } else if a == "WRITE" {
            "KASAN-WRITE"
        } else {
            "KASAN-READ"
        };
    }
    if let Some(r) = title.strip_prefix("KFENCE: ") {
        let what = r.split(" in ").next().unwrap_or(r);
        let a = access(what);
        return if what.contains("invalid free") {
            "KFENCE-INVALID-FREE"
        } else if what.contains("memory corruption") {
            "KFENCE-MEMORY-CORRUPTION"
        } else if what.contains("use-after-free") {
            if a == "WRITE" {
                "KFENCE-USE-AFTER-FREE-WRITE"
            } else {
                "KFENCE-USE-AFTER-FREE-READ"
            }
        } else if a == "WRITE" {
            "KFENCE-WRITE"
        } else {
            "KFENCE-READ"
        };
    }
    if let Some(r) = title.strip_prefix("KMSAN: ") {
        return if r.contains("infoleak") {
            "KMSAN-INFO-LEAK"
        } else if r.starts_with("use-after-free") {
            "KMSAN-USE-AFTER-FREE"
        } else {
            "KMSAN-UNINIT-VALUE"
        };
    }
    if let Some(r) = title.strip_prefix("KCSAN: ") {
        return if r.starts_with("assert") {
            "KCSAN-ASSERT"
        } else {
            "KCSAN-DATARACE"
        };
    }
    const BY_PREFIX: &[(&str, &str)] = &[
        ("WARNING: refcount bug", "REFCOUNT_WARNING"),
        ("WARNING: locking bug", "LOCKDEP"),
        ("WARNING: suspicious RCU usage in ", "LOCKDEP"),
        ("WARNING: bad unlock balance", "LOCKDEP"),
        ("WARNING: held lock freed", "LOCKDEP"),
        ("WARNING: still has locks held", "LOCKDEP"),
        ("WARNING: lock held when returning", "LOCKDEP"),
        ("WARNING: nested lock was not taken", "LOCKDEP"),
        ("WARNING: kernel stack ", ""),
        ("WARNING", "WARNING"),
        ("possible deadlock in ", "LOCKDEP"),
        ("inconsistent lock state in ", "LOCKDEP"),
        ("BUG: spinlock ", "LOCKDEP"),
        ("BUG: rwlock ", "LOCKDEP"),
        ("BUG: bad unlock balance", "LOCKDEP"),
        ("BUG: held lock freed", "LOCKDEP"),
        ("BUG: still has locks held", "LOCKDEP"),
        ("BUG: using ", "LOCKDEP"),
        ("BUG: Invalid wait context", "LOCKDEP"),
        (
            "BUG: unable to handle kernel NULL pointer dereference",
            "NULL-POINTER-DEREFERENCE",
        ),
        (
            "BUG: unable to handle kernel paging request",
            "MEMORY_SAFETY_BUG",
        ),
        ("BUG: corrupted list", "MEMORY_SAFETY_BUG"),
        ("BUG: scheduling while atomic", "ATOMIC_SLEEP"),
        (
            "BUG: sleeping function called from invalid context",
            "ATOMIC_SLEEP",
        ),
        ("BUG: soft lockup", "HANG"),
        ("BUG: bad usercopy", "BUG"),
        ("INFO: rcu detected stall", "HANG"),
        ("INFO: task hung", "HANG"),
        ("INFO: task can't die", "HANG"),
        ("memory leak in ", "LEAK"),
        ("kernel BUG", "BUG"),
        ("general protection fault", "DoS"),
        ("divide error", "DoS"),
        ("invalid opcode", "DoS"),
        ("int3", "DoS"),
        ("stack segment fault", "DoS"),
        ("PANIC: double fault", "DoS"),
        ("Internal error", "DoS"),
        ("Unhandled fault", "DoS"),
        ("Alignment trap", "DoS"),
        ("kernel panic: ", "DoS"),
        ("VFS: ", "DoS"),
        ("Oops: ", "DoS"),
        ("UBSAN: array-index-out-of-bounds", "MEMORY_SAFETY_UBSAN"),
        ("UBSAN: ", "UBSAN"),
        ("trusty: ", "DoS"),
        ("SYZFAIL", "SYZ_FAILURE"),
        ("SYZFATAL", "SYZ_FAILURE"),
    ];
    for (p, t) in BY_PREFIX {
        if title.starts_with(p) {
            return t;
        }
    }
    match kind {
        // SLUB debugging reports without a sanitizer header.
        T::Other if title.starts_with("BUG: ") && !title.starts_with("BUG: Dentry") => "DoS",
        _ => "",
    }
}

/// Finds every report in a console log (or a pasted splat).
pub fn parse(text: &str) -> Vec<Report> {
    stream::parse(text)
}

/// Finds every report in a console log read line by line, in bounded memory (invalid UTF-8
/// is replaced, lines longer than [`stream::MAX_LINE`] are cut).
pub fn parse_reader(r: impl std::io::BufRead) -> std::io::Result<Vec<Report>> {
    stream::parse_reader(r)
}
