//! Reports: turning console output into titled, typed, deduplicable bug reports.
//!
//! [`parse`] is pure: text in, reports out. It recognizes the report starts syzkaller knows
//! for Linux (WARNING, BUG, kernel BUG, Oops, general protection fault, KASAN/KFENCE/UBSAN,
//! hung tasks, RCU stalls, soft lockups, panics, list and refcount corruption) plus
//! virtio-mem's own errors, titles each report after the function that went wrong (skipping
//! generic frames), and marks a report corrupted rather than give it a wrong title, e.g. when
//! two CPUs' oopses interleave on a console without CONFIG_PRINTK_CALLER.

pub mod lines;
pub mod linux;
pub mod stack;
pub mod title;

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
}

/// Finds every report in a console log (or a pasted splat).
pub fn parse(text: &str) -> Vec<Report> {
    linux::parse(text)
}
