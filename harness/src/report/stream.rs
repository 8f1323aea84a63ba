//! Streaming: console lines in, reports out, in bounded memory.
//!
//! Each line is classified ([`classify`]) as the start of a report or not. A report collects
//! the lines that follow: with printk caller tags only its own task's or CPU's (all of them
//! after `Sending NMI from CPU`), with kernel timestamps only timestamped ones (the rest is
//! user space writing to the console). Continuations (the `Oops:` after a `BUG:`, the
//! `Kernel panic` after a `WARNING`, `page dumped because:` inside a report) stay in their
//! report. A report's text ends where its stack trace is over and an unrelated line follows
//! (or at `---[ end trace`), but its title may still use the lines after that, up to where the
//! next report starts. When a report starts while another one is still mid-trace and no
//! caller tags tell their lines apart, they are interleaved (two CPUs printing at once): the
//! earlier one is titled from the lines before the later one started, the later one from its
//! header alone.

use super::classify::{classify, Kind, Start};
use super::lines::{self, Line};
use super::stack;
use super::titles::{self, Body};
use super::Report;
use aho_corasick::AhoCorasick;
use std::sync::LazyLock;

/// Reasons of `dump_page()` output that are expected noise, not bugs (offlining failures).
pub const NOISE_PAGE_DUMPS: &[&str] = &[
    "unmovable page",
    "isolation failed",
    "migration failure",
    "migration failed",
    "page still referenced",
];

/// Longest report kept, in lines.
const MAX_REPORT_LINES: usize = 1000;
/// Lines after a report's end that its title may still use.
const MAX_TAIL_LINES: usize = 200;
/// Longest line read (the rest is dropped): kernel lines are at most 1 KiB.
pub const MAX_LINE: usize = 4096;
/// Recent lines kept for what a report pulls in from before its header.
const RECENT: usize = 6;
/// Lines after a report's end within which a `page dumped because:` is still the report's.
const MAX_DUMP_DISTANCE: usize = 20;
/// Lines of other contexts after which a report that took none of them is over.
const MAX_QUIET_LINES: usize = 2000;

fn is_fault(k: &Kind) -> bool {
    matches!(
        k,
        Kind::PageFault { .. }
            | Kind::KernelBug { .. }
            | Kind::Gpf
            | Kind::Trap(_)
            | Kind::ArmFault(_)
            | Kind::DoubleFault
            | Kind::StackGuard
            | Kind::Bug(_)
    )
}

/// How the lines of a report's body start (register dumps, traces, markers, sanitizer and
/// lockdep sections).
#[rustfmt::skip]
const BODY_PREFIXES: &[&str] = &[
    "RIP:", "RSP:", "RAX:", "RBX:", "RCX:", "RDX:", "RSI:", "RDI:", "RBP:", "R08:", "R09:",
    "R10:", "R11:", "R12:", "R13:", "R14:", "R15:", "FS:", "GS:", "CS:", "CR0:", "CR2:", "DR0:",
    "DR3:", "DR6:", "PKRU:", "Code:", "Modules linked in:", "CPU:", "Tainted:", "Hardware name:",
    "Workqueue:", "Call Trace:", "Call trace:", "<TASK>", "</TASK>", "<IRQ>", "</IRQ>", "<NMI>",
    "</NMI>", "<#DB>", "</#DB>", "<EOI>", "---[ end", "Kernel panic", "Kernel Offset:", "Oops",
    "#PF:", "PGD ", "page:", "flags:", "raw:", "head:", "page dumped because:", "page_type:",
    "memcg:", "page_owner", "Disabling lock", "Sending NMI", "NMI backtrace", "rcu:", "task:",
    "\"echo 0 >", "Showing", "irq event", "hardirqs", "softirqs", "NIP", "LR", "MSR:", "GPR",
    "CFAR:", "IRQMASK:", "Instruction dump:", "REGS:", "SOFTE:", "XER:", "CTR:", "TRAP:", "DAR:",
    "DSISR:", "---", "Faulting instruction", "=====", "kfence-#", "allocated by", "freed by",
    "Use-after-free", "Out-of-bounds", "Invalid free", "Corrupted memory", "Memory state",
    "Read of size", "Write of size", "The buggy address", "Allocated by", "Freed by",
    "Last potentially", "Second to last", "Fixing recursive fault", "note:", "ORIG_RAX:", "ERR:",
    "EFLAGS:", "Preemption disabled", "in_atomic()", "preempt_count:", "INFO: lockdep", "BUG:",
    "pc :", "lr :", "sp :", "x2", "x1", "x0", "PC is at", "LR is at", "Exception stack",
    "Uninit was", "Local variable", "backtrace", "unreferenced object", "comm \"", "hex dump",
    "stack backtrace:", "other info", "Possible unsafe", "*** DEADLOCK", "lock(", "CPU0",
    "the existing", "-> #", "but task", "which lock", "is trying", "Chain exists",
    "no locks held", "locks held by", "lock held by", "#0:", "#1:", "#2:", "#3:", "#4:",
    "Stack:", "task.stack", "Dumping ftrace", "(ftrace buffer", "Rebooting in", "ODEBUG:",
    "Object ", "INFO: ", "Redzone ", "Padding ", "Slab ", "race at", "value changed",
    "Reported by",
];

static BODY: LazyLock<AhoCorasick> = LazyLock::new(|| {
    aho_corasick::AhoCorasickBuilder::new()
        .kind(Some(aho_corasick::AhoCorasickKind::DFA))
        .start_kind(aho_corasick::StartKind::Anchored)
        .build(BODY_PREFIXES)
        .expect("static patterns")
});

/// True for lines that belong to the body of a report (register dumps, traces, markers).
fn reportish(t: &str) -> bool {
    let s = t.trim_start();
    if s.is_empty() {
        return true;
    }
    let input = aho_corasick::Input::new(s).anchored(aho_corasick::Anchored::Yes);
    if BODY.find(input).is_some() {
        return true;
    }
    if stack::parse_frame(t).is_some() || s.starts_with("? ") {
        return true;
    }
    // Register dumps and hex rows (`raw: 000fffffc0000000 ...`, powerpc GPR rows).
    let hexish = s
        .split_whitespace()
        .take(4)
        .all(|w| w.len() >= 8 && w.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'));
    hexish && s.split_whitespace().count() >= 2
}

fn is_end_marker(t: &str) -> bool {
    let s = t.trim_start();
    s.starts_with("---[ end trace") || s.starts_with("---[ end Kernel panic")
}

/// Informational messages with a stack of their own: where one starts, the report before it
/// ends.
fn is_terminator(t: &str) -> bool {
    static TERMINATORS: LazyLock<AhoCorasick> = LazyLock::new(|| {
        AhoCorasick::new([
            "vmalloc: allocation failure",
            "FAULT_INJECTION: forcing a failure",
            "FAULT_FLAG_ALLOW_RETRY missing",
        ])
        .expect("static patterns")
    });
    TERMINATORS.is_match(t)
}

/// A line kept by the parser (owned: the input may be streamed).
#[derive(Debug, Clone, Default)]
struct Kept {
    index: usize,
    text: String,
    host_time: Option<String>,
    caller: Option<String>,
    timed: bool,
}

impl Kept {
    fn from(l: &Line) -> Kept {
        Kept {
            index: l.index,
            text: l.text.to_string(),
            host_time: l.host_time.map(str::to_string),
            caller: l.caller.map(str::to_string),
            timed: l.ktime.is_some(),
        }
    }
}

#[derive(Debug)]
struct Open {
    start: Start,
    first: usize,
    caller: Option<String>,
    /// The header has a kernel timestamp: lines without one are not the kernel's.
    timed: bool,
    /// Lines printed before the header that belong to it.
    before: Vec<Kept>,
    /// The header and the lines after it.
    lines: Vec<Kept>,
    /// Where the report's text ends (the rest is kept for the title only).
    soft_end: Option<usize>,
    in_stack: bool,
    depth: i32,
    stack_done: bool,
    /// Another CPU's report started after this many lines.
    cut: Option<usize>,
    /// ... and it is of the same kind.
    cut_by_same: bool,
    /// This report started inside another one.
    mixed: bool,
    panicked: bool,
    page_dumps: Vec<String>,
    /// `---[ end trace ]---` seen: only the register reprint and panic lines may follow.
    ended: bool,
    has_oops: bool,
    /// `Sending NMI from CPU`: other CPUs' lines follow.
    any_caller: bool,
    /// The IP line another report's tail will reprint inside this report's lines.
    foreign_ip: Option<String>,
    /// The IP line was reprinted after the end marker (the tail's register dump).
    ip_reprinted: bool,
    /// The index of the last line the report took.
    last: usize,
    /// The next report of the same caller context started: this one is over.
    done_by_next: bool,
}

impl Open {
    fn new(start: Start, l: &Line) -> Open {
        let has_oops = matches!(start.kind, Kind::Trap(_));
        Open {
            start,
            first: l.index,
            caller: l.caller.map(str::to_string),
            timed: l.ktime.is_some(),
            before: Vec::new(),
            lines: Vec::new(),
            soft_end: None,
            in_stack: false,
            depth: 0,
            stack_done: false,
            cut: None,
            cut_by_same: false,
            mixed: false,
            panicked: false,
            page_dumps: Vec::new(),
            ended: false,
            has_oops,
            any_caller: false,
            foreign_ip: None,
            ip_reprinted: false,
            last: l.index,
            done_by_next: false,
        }
    }

    /// Whether a line from `caller` may be this report's.
    fn accepts(&self, caller: Option<&str>) -> bool {
        if self.any_caller {
            return true;
        }
        match (&self.caller, caller) {
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
            _ => true,
        }
    }

    fn takes(&self, l: &Line) -> bool {
        self.accepts(l.caller) && (!self.timed || l.ktime.is_some())
    }

    fn tailing(&self) -> bool {
        self.soft_end.is_some()
    }

    fn feed(&mut self, l: &Line) {
        self.last = l.index;
        self.lines.push(Kept::from(l));
        let s = l.text.trim();
        if let Some(r) = s.strip_prefix("page dumped because: ") {
            self.page_dumps.push(r.to_string());
        }
        if s.starts_with("Kernel panic - not syncing") {
            self.panicked = true;
        }
        if self.tailing() {
            // A continuation after the report's end: its text reaches this far.
            self.soft_end = Some(self.lines.len());
            return;
        }
        if self.ended && stack::parse_ip(s).is_some() {
            self.ip_reprinted = true;
        }
        if s.starts_with("Call Trace:") || s.starts_with("Call trace:") {
            self.in_stack = true;
            self.stack_done = false;
        } else if s == "<TASK>" || s == "<IRQ>" || s == "<NMI>" {
            self.depth += 1;
        } else if s == "</TASK>" || s == "</IRQ>" || s == "</NMI>" {
            self.depth -= 1;
            if self.depth <= 0 && s == "</TASK>" {
                self.stack_done = true;
            }
        } else if self.in_stack
            && self.depth <= 0
            && stack::parse_frame(&l.text).is_none()
            && stack::parse_ip(s).is_none()
            && !s.starts_with("? ")
            && !s.starts_with("---")
            && !s.starts_with("<EOI>")
            && !s.starts_with("Exception stack")
        {
            // Traces without <TASK> markers end at their first non-frame line.
            self.stack_done = true;
        }
        if s.starts_with("Sending NMI from CPU") {
            self.any_caller = true;
        }
    }

    /// Whether a continuation-type start belongs to this report. A panic always belongs to
    /// the report before it; a double fault, an `Internal error`, an `invalid opcode` or a
    /// netdev wait never starts a report inside another one.
    fn absorbs(&self, s: &Start, lines_since: usize) -> bool {
        if let Kind::Panic(msg) = &s.kind {
            let follow_up = [
                "Fatal exception",
                "Oops: Fatal exception",
                "panic_on_",
                "kernel: panic_on_",
                "softlockup: hung tasks",
                "hung_task: blocked tasks",
                "Attempted to kill init",
                "Machine halted",
            ];
            return !self.tailing() || follow_up.iter().any(|f| msg.starts_with(f));
        }
        if self.tailing() {
            // A dump_page() right after a report is part of it (KASAN's page, virtio-mem's
            // fake-offline page after its WARNING).
            let tail = self.lines.len() - self.soft_end.unwrap_or(0);
            return matches!(s.kind, Kind::PageDump(_)) && tail <= MAX_DUMP_DISTANCE;
        }
        match &s.kind {
            Kind::DoubleFault | Kind::NetdevWait | Kind::ArmFault("Internal error") => true,
            Kind::Trap(t) if t == "invalid opcode" => true,
            Kind::Trap(_) => {
                is_fault(&self.start.kind)
                    && !self.has_oops
                    && lines_since <= 40
                    && !self.stack_done
            }
            Kind::Leak => {
                matches!(self.start.kind, Kind::Leak)
                    && self.start.header.starts_with("BUG: memory leak")
                    && self.lines.len() == 1
            }
            // A WARN the RCU stall's own dump ran into, before the stall's stack.
            Kind::Warning { .. } => {
                matches!(self.start.kind, Kind::RcuStall)
                    && !self
                        .lines
                        .iter()
                        .any(|l| stack::parse_frame(&l.text).is_some())
            }
            Kind::PageDump(_) => true,
            _ => false,
        }
    }

    /// The raw IP line (`RIP: 0010:...`) of the report so far.
    fn ip_line(&self) -> Option<String> {
        self.lines
            .iter()
            .find(|l| stack::parse_ip(&l.text).is_some())
            .map(|l| l.text.trim().to_string())
    }
}

/// A streaming parser: feed lines with [`Parser::push`], collect with [`Parser::finish`]. It
/// keeps only the reports being read and a few recent lines, so memory does not grow with the
/// log.
pub struct Parser {
    open: Vec<Open>,
    recent: std::collections::VecDeque<Kept>,
    reports: Vec<Report>,
    pasted: bool,
    /// Pasted mode: the line held back in case the next one continues it.
    pending: Option<Pending>,
    next_index: usize,
}

/// A line held back (owned), with what its prefixes said.
struct Pending {
    index: usize,
    text: String,
    ktime: Option<f64>,
    caller: Option<String>,
}

impl Pending {
    fn line(&self) -> Line<'_> {
        Line {
            index: self.index,
            text: std::borrow::Cow::Borrowed(&self.text),
            host_time: None,
            ktime: self.ktime,
            caller: self.caller.as_deref(),
        }
    }
}

/// A report's header or lockdep's `at:` line that a mail client wrapped, joined with its
/// continuation `next` (a line without a kernel timestamp): a header cut mid-sentence
/// (`... in`, `... code:`), a header word split from its sentence (`INFO: task sh:1 blocked
/// for more` / `than 143 seconds.`), or `at:` cut before its function.
fn join_report_line(prev: &str, next: &str) -> Option<String> {
    if next.is_empty() || next.starts_with(char::is_whitespace) || next.len() > MAX_LINE {
        return None;
    }
    let p = prev.trim_end();
    let joined = format!("{p} {}", next.trim());
    let at_cut = (p.ends_with(" at:") || (p.ends_with(">]") && p.contains(", at: [<")))
        && stack::parse_frame(&format!(" {}", next.trim())).is_some();
    if at_cut {
        return Some(joined);
    }
    if classify(next).is_some() {
        return None;
    }
    match classify(p) {
        None => classify(&joined).is_some().then_some(joined),
        Some(_) => {
            const GLUE: &[&str] = &[
                "in", "in:", "at", "for", "is", "inside", "to", "of", "more", "than", "on", "addr",
            ];
            let last = p.rsplit(' ').next().unwrap_or("");
            let first = next.split(' ').next().unwrap_or("");
            let mid_sentence =
                p.ends_with([':', '(', ',', '[']) || GLUE.contains(&last) || GLUE.contains(&first);
            mid_sentence.then_some(joined)
        }
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Parser {
    /// A parser; `pasted` enables unwrapping of mail-wrapped lines (logs without timestamps).
    pub fn new(pasted: bool) -> Parser {
        Parser {
            open: Vec::new(),
            recent: std::collections::VecDeque::with_capacity(RECENT + 1),
            reports: Vec::new(),
            pasted,
            pending: None,
            next_index: 0,
        }
    }

    /// Feeds the next raw line (without its newline). Lines longer than [`MAX_LINE`] are cut.
    pub fn push(&mut self, raw: &str) {
        let raw = cap(raw, MAX_LINE);
        let index = self.next_index;
        self.next_index += 1;
        if !self.pasted {
            let l = lines::parse_line(index, raw);
            self.process(&l);
            return;
        }
        // Pasted: hold one line back to join wrapped continuations.
        let cur = lines::parse_line(index, raw);
        if let Some(mut prev) = self.pending.take() {
            // A continuation has no timestamp of its own.
            let joined = (cur.ktime.is_none())
                .then(|| {
                    lines::join_wrapped(&prev.text, cur.text.trim())
                        .or_else(|| join_report_line(&prev.text, &cur.text))
                })
                .flatten();
            if let Some(joined) = joined {
                prev.text = joined;
                self.pending = Some(prev);
                return;
            }
            self.process(&prev.line());
        }
        self.pending = Some(Pending {
            index: cur.index,
            ktime: cur.ktime,
            caller: cur.caller.map(str::to_string),
            text: cur.text.into_owned(),
        });
    }

    fn remember(&mut self, l: &Line) {
        if self.recent.len() == RECENT {
            let mut old = self.recent.pop_front().unwrap_or_default();
            old.index = l.index;
            old.text.clear();
            old.text.push_str(&l.text);
            old.host_time = l.host_time.map(str::to_string);
            old.caller = l.caller.map(str::to_string);
            old.timed = l.ktime.is_some();
            self.recent.push_back(old);
        } else {
            self.recent.push_back(Kept::from(l));
        }
    }

    fn close(&mut self, i: usize) {
        let o = self.open.remove(i);
        let r = finish(o);
        if !is_noise(&r) {
            self.reports.push(r);
        }
    }

    fn process(&mut self, l: &Line) {
        // A report whose task or CPU went quiet is over.
        let mut i = 0;
        while i < self.open.len() {
            if l.index.saturating_sub(self.open[i].last) > MAX_QUIET_LINES {
                self.close(i);
            } else {
                i += 1;
            }
        }
        if let Some(s) = classify(&l.text) {
            self.start(s, l);
        } else if is_terminator(&l.text) {
            let mut i = 0;
            while i < self.open.len() {
                if self.open[i].takes(l) && !self.open[i].ended {
                    self.close(i);
                } else {
                    i += 1;
                }
            }
        } else {
            self.body(l);
        }
        self.remember(l);
    }

    fn start(&mut self, s: Start, l: &Line) {
        let pos = l.index;
        if let Some(o) = self
            .open
            .iter_mut()
            .rev()
            .find(|o| o.takes(l) && o.absorbs(&s, pos.saturating_sub(o.first)))
        {
            if matches!(s.kind, Kind::Trap(_) | Kind::ArmFault(_)) {
                o.has_oops = true;
            }
            o.feed(l);
            return;
        }
        // An independent start: finished reports close, reports printing their post-oops
        // register dump may still mix in, mid-trace ones interleave.
        let mut i = 0;
        while i < self.open.len() {
            let o = &self.open[i];
            if o.takes(l) && (o.tailing() || (o.stack_done && !o.ended)) {
                self.close(i);
            } else {
                i += 1;
            }
        }
        let mut o = Open::new(s, l);
        self.pull_back(&mut o);
        let mut overlap = false;
        for other in self.open.iter_mut() {
            if !other.takes(l) {
                continue;
            }
            if other.ended {
                // Its tail reprints its IP line (unless it already has); that line is not ours.
                if !other.ip_reprinted {
                    o.foreign_ip = other.ip_line();
                }
            } else {
                if other.cut.is_none() {
                    other.cut = Some(other.lines.len());
                    other.cut_by_same = std::mem::discriminant(&other.start.kind)
                        == std::mem::discriminant(&o.start.kind);
                }
                // With caller tags, one task or CPU prints one report after the other: the
                // earlier one is over. Without them, the two may be mixed from here on.
                // The hung task detector and kmemleak print one report after the other too.
                let series = matches!(o.start.kind, Kind::HungTask(_) | Kind::Leak)
                    && std::mem::discriminant(&other.start.kind)
                        == std::mem::discriminant(&o.start.kind);
                if (l.caller.is_some() && !other.any_caller) || series {
                    other.done_by_next = true;
                } else {
                    overlap = true;
                }
            }
        }
        let mut i = 0;
        while i < self.open.len() {
            if self.open[i].done_by_next {
                self.close(i);
            } else {
                i += 1;
            }
        }
        o.mixed = overlap;
        o.feed(l);
        if let Kind::PageDump(_) = o.start.kind {
            // A lone dump_page prints no trace: it is one line.
            o.stack_done = true;
        }
        self.open.push(o);
    }

    fn body(&mut self, l: &Line) {
        let mut i = 0;
        while i < self.open.len() {
            let o = &mut self.open[i];
            if !o.takes(l) {
                i += 1;
                continue;
            }
            if o.tailing() {
                o.last = l.index;
                o.lines.push(Kept::from(l));
                let tail = o.lines.len() - o.soft_end.unwrap_or(0);
                if tail >= MAX_TAIL_LINES || o.lines.len() >= MAX_REPORT_LINES {
                    self.close(i);
                    continue;
                }
                i += 1;
                continue;
            }
            let marker = is_end_marker(&l.text);
            if (o.stack_done || o.ended) && !marker && !reportish(&l.text) {
                // The report's text is over; its title may still look further.
                o.soft_end = Some(o.lines.len());
                o.last = l.index;
                o.lines.push(Kept::from(l));
                i += 1;
                continue;
            }
            if marker && o.ended {
                // Already ended: the marker is another report's.
                i += 1;
                continue;
            }
            o.feed(l);
            if marker {
                o.ended = true;
                if l.text.contains("end Kernel panic") || !is_fault(&o.start.kind) {
                    o.soft_end = Some(o.lines.len());
                }
                // One end marker ends one report (the oldest open one).
                break;
            }
            if o.lines.len() >= MAX_REPORT_LINES {
                self.close(i);
                continue;
            }
            i += 1;
        }
    }

    /// Pulls the `cut here` line and a WARN/BUG message printed just before a header into
    /// the report.
    fn pull_back(&self, o: &mut Open) {
        if !matches!(o.start.kind, Kind::Warning { .. } | Kind::KernelBug { .. }) {
            return;
        }
        let recent: Vec<&Kept> = self
            .recent
            .iter()
            .filter(|k| (o.caller.is_none() || k.caller == o.caller) && (!o.timed || k.timed))
            .collect();
        // Only the latest reports can hold a recent line.
        let taken = |idx: usize| {
            self.reports
                .iter()
                .rev()
                .take(RECENT)
                .any(|r| (r.start_line..=r.end_line).contains(&idx))
                || self
                    .open
                    .iter()
                    .any(|x| x.lines.iter().any(|k| k.index == idx))
        };
        let mut cut = None;
        for j in (0..recent.len()).rev() {
            if recent[j].text.trim() == "------------[ cut here ]------------" {
                cut = Some(j);
                break;
            }
        }
        let Some(c) = cut else {
            // An ODEBUG or refcount message right before the header, without a cut line.
            if let Some(k) = recent.last() {
                let t = k.text.trim_start();
                if (t.starts_with("ODEBUG: ") || t.starts_with("refcount_t: ")) && !taken(k.index) {
                    o.before.push((*k).clone());
                }
            }
            return;
        };
        if taken(recent[c].index) {
            return;
        }
        if c > 0 && recent[c - 1].text.contains(" corruption") && !taken(recent[c - 1].index) {
            o.before.push(recent[c - 1].clone());
        }
        for k in &recent[c..] {
            o.before.push((*k).clone());
        }
    }

    /// Ends the input and returns every report, in order.
    pub fn finish(mut self) -> Vec<Report> {
        if let Some(prev) = self.pending.take() {
            self.process(&prev.line());
        }
        while !self.open.is_empty() {
            self.close(0);
        }
        self.reports.sort_by_key(|r| r.start_line);
        self.reports
    }
}

/// True when a log looks pasted (none of hotfuzz's host timestamps in its first lines; kernel
/// timestamps may be there, as in `dmesg` output): wrapped lines are then rejoined.
pub fn looks_pasted(text: &str) -> bool {
    let mut n = 0;
    for l in text.lines().take(300) {
        if lines::parse_line(0, cap(l, MAX_LINE)).host_time.is_some() {
            return false;
        }
        n += 1;
    }
    n > 0
}

/// Parses a console log (or a pasted splat) into reports.
pub fn parse(raw: &str) -> Vec<Report> {
    let text = lines::unquote(raw);
    let mut p = Parser::new(looks_pasted(&text));
    let body = text.strip_suffix('\n').unwrap_or(&text);
    for l in body.split('\n') {
        p.push(l);
    }
    p.finish()
}

/// Parses a log from a reader in bounded memory (lines are read one at a time; invalid UTF-8
/// is replaced).
pub fn parse_reader(mut r: impl std::io::BufRead) -> std::io::Result<Vec<Report>> {
    let mut buf = Vec::with_capacity(1024);
    // Decide on pasted-mode from the first lines.
    let mut head = String::new();
    for _ in 0..300 {
        buf.clear();
        if read_line(&mut r, &mut buf)? == 0 {
            break;
        }
        head.push_str(&String::from_utf8_lossy(&buf));
    }
    // A mail's quoting is decided on its first lines and undone on all of them.
    let quoted = lines::is_quoted(&head);
    let head = lines::unquote(&head).into_owned();
    let mut p = Parser::new(looks_pasted(&head));
    for l in head.lines() {
        p.push(l);
    }
    loop {
        buf.clear();
        if read_line(&mut r, &mut buf)? == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        fn unq(quoted: bool, l: &str) -> &str {
            if quoted {
                lines::unquote_line(l)
            } else {
                l
            }
        }
        match std::str::from_utf8(&buf) {
            Ok(line) => p.push(unq(quoted, line)),
            Err(_) => p.push(unq(quoted, &String::from_utf8_lossy(&buf))),
        }
    }
    Ok(p.finish())
}

/// Reads one line into `buf`, keeping at most [`MAX_LINE`] bytes of it (and its newline):
/// a 300 MB line costs no memory.
fn read_line(r: &mut impl std::io::BufRead, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(total);
        }
        let (used, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = (MAX_LINE + 1).saturating_sub(buf.len());
        let piece = &chunk[..used];
        if piece.len() <= room {
            buf.extend_from_slice(piece);
        } else {
            buf.extend_from_slice(&piece[..room]);
            if done && buf.last() != Some(&b'\n') {
                buf.push(b'\n');
            }
        }
        r.consume(used);
        total += used;
        if done {
            return Ok(total);
        }
    }
}

fn is_noise(r: &Report) -> bool {
    r.kind == super::ReportType::PageDump
        && r.page_dump_reasons
            .iter()
            .all(|reason| NOISE_PAGE_DUMPS.iter().any(|n| reason.starts_with(n)))
}

fn finish(mut o: Open) -> Report {
    o.lines.dedup_by_key(|k| k.index);
    let before: Vec<&str> = o.before.iter().map(|k| k.text.as_str()).collect();
    let mut lines: Vec<&str> = o.lines.iter().map(|k| k.text.as_str()).collect();
    // The other report's register reprint is not this one's faulting instruction.
    if let Some(ip) = &o.foreign_ip {
        if let Some(l) = lines.iter_mut().skip(1).find(|l| l.trim() == ip.as_str()) {
            *l = "";
        }
    }
    let t = titles::title(&Body {
        start: &o.start,
        before: &before,
        lines: &lines,
        cut: o.cut,
        cut_by_same: o.cut_by_same,
        mixed: o.mixed,
    });
    let text_end = o
        .soft_end
        .unwrap_or(o.lines.len())
        .max(t.used + 1)
        .min(o.lines.len());
    let kept: Vec<&Kept> = o.before.iter().chain(o.lines[..text_end].iter()).collect();
    let start_line = kept.first().map(|k| k.index).unwrap_or(o.first);
    let end_line = kept.last().map(|k| k.index).unwrap_or(start_line);
    let host_time = kept.first().and_then(|k| k.host_time.clone());
    let text = kept
        .iter()
        .map(|k| k.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    Report {
        title: t.title,
        alt_titles: t.alts,
        kind: t.kind,
        frame: t.frame,
        corrupted: t.corrupted,
        page_dump_reasons: o.page_dumps,
        start_line,
        end_line,
        host_time,
        text,
        interleaved: (o.cut.is_some() && !o.done_by_next) || o.mixed,
        panicked: o.panicked,
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
