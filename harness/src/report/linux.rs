//! Linux console output → reports (x86_64 and powerpc formats).
//!
//! Every line is classified as the start of a report or not (a literal prefilter keeps this
//! fast). A report collects the following lines until an end marker (`---[ end trace`), until
//! its stack trace is over and an unrelated line follows, or until the next independent
//! report starts. Continuations (the `Oops:` after a `BUG:`, the `Kernel panic ... Fatal
//! exception` after an oops, `page dumped because:` inside a report) stay in their report.
//! When a report starts while another one is still mid-trace, the two are interleaved (two
//! CPUs printing at once): with printk caller tags each takes only its own lines; without
//! them, a title that would need a frame from the mixed body is not guessed, the report is
//! marked corrupted instead.

use super::lines::{self, Line};

use super::stack::{self, Frame};
use super::title::normalize;
use super::{Report, ReportType};
use aho_corasick::AhoCorasick;
use regex::Regex;
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
const MAX_REPORT_LINES: usize = 600;

#[derive(Debug, Clone, PartialEq)]
enum Start {
    Warning {
        func: Option<String>,
        file: Option<String>,
    },
    KernelBug {
        file: String,
    },
    NullDeref,
    PageFault,
    Gpf,
    Oops {
        reason: String,
    },
    BadPage,
    AtomicSleep {
        what: String,
    },
    SoftLockup,
    RcuStall,
    HungTask,
    WorkqueueLockup,
    Kfence {
        what: String,
        func: String,
    },
    Kasan {
        what: String,
        func: String,
    },
    Ubsan {
        what: String,
    },
    Lockdep {
        what: String,
    },
    Panic {
        msg: String,
    },
    VirtioMem {
        msg: String,
    },
    PageDump {
        reason: String,
    },
    Bug {
        what: String,
    },
}

static PREFILTER: LazyLock<AhoCorasick> = LazyLock::new(|| {
    // A DFA: the prefilter runs on every console line.
    aho_corasick::AhoCorasickBuilder::new()
        .kind(Some(aho_corasick::AhoCorasickKind::DFA))
        .build([
            "WARNING:",
            "BUG",
            "Oops",
            "general protection fault",
            "Kernel panic - not syncing",
            "INFO: task",
            "INFO: rcu",
            "Unable to handle kernel",
            "UBSAN:",
            "marking device broken",
            "Failed to re-online memory",
            "Failed to remove memory",
            "page dumped because:",
        ])
        .expect("static patterns")
});

static WARNING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^WARNING: (?:CPU: \d+ PID: \d+ )?at (\S+)(?: ([A-Za-z0-9_.$]+)\+0x[0-9a-f]+/0x[0-9a-f]+)?").unwrap()
});
static WARNING_NEW: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^WARNING: (\S+:\d+) at 0x[0-9a-f]+, CPU#\d+").unwrap());
static KERNEL_BUG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^kernel BUG at (\S+?)!?$").unwrap());
static HUNG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^INFO: task .+:\d+ blocked for more than \d+ seconds").unwrap());
static RCU: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:rcu: )?INFO: rcu_\w+ (?:self-)?detected (?:expedited )?stall").unwrap()
});
static KFENCE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^BUG: KFENCE: (.+?) in ([A-Za-z0-9_.$]+)\+0x").unwrap());
static KASAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^BUG: KASAN: (\S+) in ([A-Za-z0-9_.$]+)").unwrap());
static UBSAN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^UBSAN: (.+?) in \S+").unwrap());
static OOPS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^Oops: (?:Oops: )?([^:\[]+?)(?::| \[|, sig|$)").unwrap());
static HOTPLUG_ERR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:virtio_mem virtio\d+: (.*marking device broken.*)|(Failed to (?:re-online|remove) memory.*))").unwrap()
});
static BUG_GENERIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:watchdog: )?BUG: ([^:\[]+?)(?:[:\[]|$| in process| for address|, address)")
        .unwrap()
});

fn classify(text: &str) -> Option<Start> {
    if !PREFILTER.is_match(text) {
        return None;
    }
    let t = text.trim_start();
    if let Some(rest) = t.strip_prefix("WARNING: ") {
        for (needle, what) in [
            ("possible circular locking dependency", "possible deadlock"),
            ("possible recursive locking", "possible deadlock"),
            ("inconsistent lock state", "inconsistent lock state"),
            ("suspicious RCU usage", "suspicious RCU usage"),
        ] {
            if rest.contains(needle) {
                return Some(Start::Lockdep { what: what.into() });
            }
        }
        if let Some(c) = WARNING.captures(t) {
            return Some(Start::Warning {
                file: Some(c[1].to_string()),
                func: c.get(2).map(|m| stack::base_name(m.as_str()).to_string()),
            });
        }
        if let Some(c) = WARNING_NEW.captures(t) {
            return Some(Start::Warning {
                file: Some(c[1].to_string()),
                func: None,
            });
        }
        return None;
    }
    if let Some(c) = KERNEL_BUG.captures(t) {
        return Some(Start::KernelBug {
            file: c[1].to_string(),
        });
    }
    if t.starts_with("BUG: kernel NULL pointer dereference")
        || t.starts_with("BUG: Kernel NULL pointer dereference")
    {
        return Some(Start::NullDeref);
    }
    if t.starts_with("BUG: unable to handle page fault")
        || t.starts_with("BUG: unable to handle kernel paging request")
        || t.starts_with("BUG: Unable to handle kernel")
        || t.starts_with("Unable to handle kernel paging request")
    {
        return Some(Start::PageFault);
    }
    if t.starts_with("BUG: Bad page state") || t.starts_with("BUG: Bad page map") {
        return Some(Start::BadPage);
    }
    if let Some(c) = KFENCE.captures(t) {
        return Some(Start::Kfence {
            what: c[1].to_string(),
            func: stack::base_name(&c[2]).to_string(),
        });
    }
    if let Some(c) = KASAN.captures(t) {
        return Some(Start::Kasan {
            what: c[1].to_string(),
            func: stack::base_name(&c[2]).to_string(),
        });
    }
    if t.starts_with("watchdog: BUG: soft lockup") || t.starts_with("BUG: soft lockup") {
        return Some(Start::SoftLockup);
    }
    if t.starts_with("BUG: workqueue lockup") {
        return Some(Start::WorkqueueLockup);
    }
    for what in [
        "scheduling while atomic",
        "sleeping function called from invalid context",
        "using smp_processor_id() in preemptible",
    ] {
        if t.starts_with(&format!("BUG: {what}")) {
            return Some(Start::AtomicSleep { what: what.into() });
        }
    }
    if RCU.is_match(t) {
        return Some(Start::RcuStall);
    }
    if HUNG.is_match(t) {
        return Some(Start::HungTask);
    }
    if t.contains("general protection fault") && !t.starts_with("traps:") && !t.contains(" ip:") {
        return Some(Start::Gpf);
    }
    if t.starts_with("Oops") {
        if let Some(c) = OOPS.captures(t) {
            return Some(Start::Oops {
                reason: c[1].trim().to_string(),
            });
        }
    }
    if let Some(c) = UBSAN.captures(t) {
        return Some(Start::Ubsan {
            what: c[1].to_string(),
        });
    }
    if let Some(m) = t.strip_prefix("Kernel panic - not syncing: ") {
        return Some(Start::Panic {
            msg: m.trim().to_string(),
        });
    }
    if let Some(c) = HOTPLUG_ERR.captures(t) {
        let msg = c.get(1).or(c.get(2)).map(|m| m.as_str()).unwrap_or("");
        return Some(Start::VirtioMem {
            msg: msg.to_string(),
        });
    }
    if let Some(r) = t.strip_prefix("page dumped because: ") {
        return Some(Start::PageDump {
            reason: r.trim().to_string(),
        });
    }
    if let Some(c) = BUG_GENERIC.captures(t) {
        return Some(Start::Bug {
            what: c[1].trim().to_string(),
        });
    }
    None
}

fn is_fault(s: &Start) -> bool {
    matches!(
        s,
        Start::NullDeref
            | Start::PageFault
            | Start::KernelBug { .. }
            | Start::Gpf
            | Start::Oops { .. }
            | Start::Bug { .. }
    )
}

/// True for lines that belong to the body of a report (register dumps, traces, markers).
fn reportish(t: &str) -> bool {
    let s = t.trim_start();
    if s.is_empty() {
        return true;
    }
    const PREFIXES: &[&str] = &[
        "RIP:",
        "RSP:",
        "RAX:",
        "RBX:",
        "RCX:",
        "RDX:",
        "RSI:",
        "RDI:",
        "RBP:",
        "R08:",
        "R09:",
        "R10:",
        "R11:",
        "R12:",
        "R13:",
        "R14:",
        "R15:",
        "FS:",
        "GS:",
        "CS:",
        "CR0:",
        "CR2:",
        "DR0:",
        "DR3:",
        "DR6:",
        "PKRU:",
        "Code:",
        "Modules linked in:",
        "CPU:",
        "Tainted:",
        "Hardware name:",
        "Workqueue:",
        "Call Trace:",
        "<TASK>",
        "</TASK>",
        "<IRQ>",
        "</IRQ>",
        "<NMI>",
        "</NMI>",
        "<#DB>",
        "</#DB>",
        "---[ end",
        "Kernel panic",
        "Kernel Offset:",
        "Oops",
        "#PF:",
        "PGD ",
        "page:",
        "flags:",
        "raw:",
        "head:",
        "page dumped because:",
        "page_type:",
        "memcg:",
        "page_owner",
        "Disabling lock debugging",
        "Sending NMI",
        "NMI backtrace",
        "rcu:",
        "task:",
        "\"echo 0 >",
        "Showing",
        "irq event stamp",
        "hardirqs",
        "softirqs",
        "NIP",
        "LR",
        "MSR:",
        "GPR",
        "CFAR:",
        "IRQMASK:",
        "Instruction dump:",
        "REGS:",
        "SOFTE:",
        "XER:",
        "CTR:",
        "TRAP:",
        "DAR:",
        "DSISR:",
        "---",
        "Faulting instruction",
        "=====",
        "kfence-#",
        "allocated by",
        "freed by",
        "Use-after-free",
        "Out-of-bounds",
        "Invalid free",
        "Corrupted memory",
        "Memory state",
        "Read of size",
        "Write of size",
        "The buggy address",
        "Allocated by",
        "Freed by",
        "Last potentially",
        "Second to last",
        "Fixing recursive fault",
        "note:",
        "ORIG_RAX:",
        "ERR:",
        "EFLAGS:",
        "Preemption disabled",
        "in_atomic()",
        "preempt_count:",
        "INFO: lockdep",
        "BUG:",
    ];
    if PREFIXES.iter().any(|p| s.starts_with(p)) {
        return true;
    }
    if stack::parse_frame(t).is_some() || s.starts_with("? ") {
        return true;
    }
    // Register dumps and hex rows (`raw: 000fffffc0000000 ...`, powerpc GPR rows).
    let hexish = s
        .split_whitespace()
        .take(4)
        .all(|w| w.len() >= 8 && w.bytes().all(|b| b.is_ascii_hexdigit()));
    hexish && s.split_whitespace().count() >= 2
}

fn is_end_marker(t: &str) -> bool {
    let s = t.trim_start();
    s.starts_with("---[ end trace") || s.starts_with("---[ end Kernel panic")
}

/// A line kept by the parser (owned: the input may be streamed).
#[derive(Debug, Clone, Default)]
struct Kept {
    index: usize,
    text: String,
    host_time: Option<String>,
    caller: Option<String>,
}

impl Kept {
    fn from(l: &Line) -> Kept {
        Kept {
            index: l.index,
            text: l.text.to_string(),
            host_time: l.host_time.map(str::to_string),
            caller: l.caller.map(str::to_string),
        }
    }
}

#[derive(Debug)]
struct Open {
    start: Start,
    first: usize,
    lines: Vec<Kept>,
    caller: Option<String>,
    in_stack: bool,
    depth: i32,
    stack_done: bool,
    interleaved: bool,
    panicked: bool,
    page_dumps: Vec<String>,
    message: Vec<String>,
    /// `---[ end trace ]---` seen: only the register reprint and panic lines may follow.
    ended: bool,
    has_oops: bool,
    /// The IP line another report's tail will reprint inside this report's lines.
    foreign_ip: Option<String>,
    /// The IP line was reprinted after the end marker (the tail's register dump).
    ip_reprinted: bool,
}

impl Open {
    fn new(start: Start, first: usize, caller: Option<&str>) -> Open {
        let has_oops = matches!(start, Start::Oops { .. });
        Open {
            start,
            first,
            lines: Vec::new(),
            caller: caller.map(str::to_string),
            in_stack: false,
            depth: 0,
            stack_done: false,
            interleaved: false,
            panicked: false,
            page_dumps: Vec::new(),
            message: Vec::new(),
            ended: false,
            has_oops,
            foreign_ip: None,
            ip_reprinted: false,
        }
    }

    fn accepts(&self, caller: Option<&str>) -> bool {
        match (&self.caller, caller) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    fn feed(&mut self, l: &Line) {
        self.lines.push(Kept::from(l));
        let s = l.text.trim();
        if self.ended && stack::parse_ip(s).is_some() {
            self.ip_reprinted = true;
        }
        if s.starts_with("Call Trace:") {
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
            && !s.starts_with("? ")
            && !s.starts_with("---")
        {
            // powerpc traces have no <TASK> markers: the first non-frame line ends them.
            self.stack_done = true;
        }
        if let Some(r) = s.strip_prefix("page dumped because: ") {
            self.page_dumps.push(r.to_string());
        }
        if s.starts_with("Kernel panic - not syncing") {
            self.panicked = true;
        }
    }

    /// Whether a continuation-type start belongs to this report.
    fn absorbs(&self, s: &Start, lines_since: usize) -> bool {
        match s {
            Start::Oops { .. } => {
                is_fault(&self.start) && !self.has_oops && lines_since <= 40 && !self.stack_done
            }
            Start::NullDeref | Start::PageFault | Start::Gpf => {
                is_fault(&self.start) && lines_since <= 12 && !self.stack_done && !self.ended
            }
            Start::Panic { msg } => {
                msg.starts_with("Fatal exception")
                    || msg.contains("panic_on_warn")
                    || msg.contains("softlockup: hung tasks")
                    || msg.contains("hung_task: blocked tasks")
                    || msg.contains("Attempted to kill init")
                    || !self.stack_done
            }
            Start::PageDump { .. } => true,
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

const RECENT: usize = 6;

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

    /// Feeds the next raw line (without its newline).
    pub fn push(&mut self, raw: &str) {
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
                .then(|| lines::join_wrapped(&prev.text, cur.text.trim()))
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
        let pos = l.index;
        if let Some(s) = classify(&l.text) {
            self.start(s, l, pos);
        } else {
            self.body(l);
        }
        self.remember(l);
    }

    fn start(&mut self, s: Start, l: &Line, pos: usize) {
        if let Some(o) = self
            .open
            .iter_mut()
            .rev()
            .find(|o| o.accepts(l.caller) && o.absorbs(&s, pos.saturating_sub(o.first)))
        {
            if let Start::Oops { .. } = s {
                o.has_oops = true;
            }
            o.feed(l);
            return;
        }
        // An independent start: finished reports close, reports printing their post-oops
        // register dump may still mix in, mid-trace ones interleave.
        let mut i = 0;
        while i < self.open.len() {
            if self.open[i].stack_done && !self.open[i].ended && self.open[i].accepts(l.caller) {
                self.close(i);
            } else {
                i += 1;
            }
        }
        let mut o = Open::new(s, pos, l.caller);
        self.pull_back(&mut o);
        let mut overlap = false;
        for other in self.open.iter_mut() {
            let unrelated = matches!((&other.caller, &o.caller), (Some(x), Some(y)) if x != y);
            if unrelated {
                continue;
            }
            if other.ended {
                // Its tail reprints its IP line (unless it already has); that line is not ours.
                if !other.ip_reprinted {
                    o.foreign_ip = other.ip_line();
                }
            } else {
                other.interleaved = true;
                overlap = true;
            }
        }
        o.interleaved = overlap;
        o.feed(l);
        if let Start::PageDump { .. } = o.start {
            // A lone dump_page prints no trace: it is one line.
            o.stack_done = true;
        }
        self.open.push(o);
    }

    fn body(&mut self, l: &Line) {
        let mut i = 0;
        while i < self.open.len() {
            let o = &mut self.open[i];
            if !o.accepts(l.caller) {
                i += 1;
                continue;
            }
            if (o.stack_done || o.ended) && !reportish(&l.text) && !is_end_marker(&l.text) {
                self.close(i);
                continue;
            }
            let marker = is_end_marker(&l.text);
            if marker && o.ended {
                // Already ended: the marker is another report's.
                i += 1;
                continue;
            }
            o.feed(l);
            if marker {
                o.ended = true;
                if l.text.contains("end Kernel panic") || !is_fault(&o.start) {
                    self.close(i);
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
        if !matches!(o.start, Start::Warning { .. } | Start::KernelBug { .. }) {
            return;
        }
        let recent: Vec<&Kept> = self.recent.iter().collect();
        let taken = |idx: usize| {
            self.reports
                .iter()
                .any(|r| (r.start_line..=r.end_line).contains(&idx))
                || self
                    .open
                    .iter()
                    .any(|x| x.lines.iter().any(|k| k.index == idx))
        };
        let mut cut = None;
        for j in (0..recent.len()).rev() {
            let k = recent[j];
            if k.caller.is_some() && o.caller != k.caller {
                continue;
            }
            if k.text.trim() == "------------[ cut here ]------------" {
                cut = Some(j);
                break;
            }
        }
        let Some(c) = cut else { return };
        if taken(recent[c].index) {
            return;
        }
        if c > 0 && recent[c - 1].text.contains(" corruption") && !taken(recent[c - 1].index) {
            o.message.push(recent[c - 1].text.clone());
            o.lines.push(recent[c - 1].clone());
        }
        o.lines.push(recent[c].clone());
        for k in &recent[c + 1..] {
            o.message.push(k.text.clone());
            o.lines.push((*k).clone());
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
        if lines::parse_line(0, l).host_time.is_some() {
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
    let mut first = Vec::new();
    // Decide on pasted-mode from the first lines.
    let mut head = String::new();
    for _ in 0..300 {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let s = String::from_utf8_lossy(&buf).into_owned();
        head.push_str(&s);
        first.push(s);
    }
    let head = lines::unquote(&head).into_owned();
    let mut p = Parser::new(looks_pasted(&head));
    for l in head.lines() {
        p.push(l);
    }
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        if buf.len() > 1 << 16 {
            buf.truncate(1 << 16);
        }
        match std::str::from_utf8(&buf) {
            Ok(line) => p.push(line),
            Err(_) => p.push(&String::from_utf8_lossy(&buf)),
        }
    }
    Ok(p.finish())
}

fn is_noise(r: &Report) -> bool {
    r.kind == ReportType::PageDump
        && r.page_dump_reasons
            .iter()
            .all(|reason| NOISE_PAGE_DUMPS.iter().any(|n| reason.starts_with(n)))
}

fn frames_of<'a>(
    lines: impl Iterator<Item = &'a str>,
    mut foreign_ip: Option<&str>,
) -> (Option<Frame>, Vec<Frame>) {
    let mut ip = None;
    let mut frames = Vec::new();
    let mut in_trace = false;
    for t in lines {
        if ip.is_none() {
            if let Some(f) = stack::parse_ip(t) {
                if foreign_ip == Some(t.trim()) {
                    // The other report's reprint: skip it once.
                    foreign_ip = None;
                } else {
                    ip = Some(f);
                }
            }
        }
        let s = t.trim();
        if s.starts_with("Call Trace:") || s.ends_with("Call Trace:") {
            in_trace = true;
            continue;
        }
        if in_trace {
            if let Some(f) = stack::parse_frame(t) {
                frames.push(f);
            }
        }
    }
    (ip, frames)
}

fn finish(mut o: Open) -> Report {
    o.lines.sort_by_key(|k| k.index);
    o.lines.dedup_by_key(|k| k.index);
    let (ip, frames) = frames_of(
        o.lines.iter().map(|k| k.text.as_str()),
        o.foreign_ip.as_deref(),
    );
    let start_line = o.lines.first().map(|k| k.index).unwrap_or(0);
    let end_line = o.lines.last().map(|k| k.index).unwrap_or(start_line);
    let host_time = o.lines.first().and_then(|k| k.host_time.clone());
    let text = o
        .lines
        .iter()
        .map(|k| k.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let message: Vec<&str> = o.message.iter().map(String::as_str).collect();
    let mut b = Builder {
        ip,
        frames,
        interleaved: o.interleaved,
        corrupted: None,
        alt: Vec::new(),
    };
    let has_trace = text.contains("Call Trace:");
    let (kind, title, frame) = b.title(&o.start, &message);
    if has_trace && b.frames.is_empty() && b.corrupted.is_none() && frame.is_none() {
        b.corrupted = Some("the stack trace is missing or truncated".into());
    }
    let title = normalize(&title);
    Report {
        alt_titles: b
            .alt
            .iter()
            .map(|a| normalize(a))
            .filter(|a| a != &title)
            .collect(),
        title,
        kind,
        frame,
        corrupted: b.corrupted,
        page_dump_reasons: o.page_dumps,
        start_line,
        end_line,
        host_time,
        text,
        interleaved: o.interleaved,
        panicked: o.panicked,
    }
}

struct Builder {
    ip: Option<Frame>,
    frames: Vec<Frame>,
    interleaved: bool,
    corrupted: Option<String>,
    alt: Vec<String>,
}

const INTERLEAVED: &str =
    "interleaved with another CPU's report; its frames cannot be told apart (no printk caller tags)";

impl Builder {
    /// The frame a fault is named after: the faulting instruction unless it is generic, else
    /// the first interesting caller.
    fn fault_frame(&mut self) -> Option<String> {
        if self.interleaved {
            self.corrupted = Some(INTERLEAVED.into());
            return None;
        }
        if let Some(ip) = &self.ip {
            if !stack::is_generic(&ip.func) {
                return Some(ip.func.clone());
            }
        }
        stack::first_interesting(&self.frames).map(|f| f.func.clone())
    }

    /// The frame from the stack only (skipping generic ones).
    fn stack_frame(&mut self) -> Option<String> {
        if self.interleaved {
            self.corrupted = Some(INTERLEAVED.into());
            return None;
        }
        stack::first_interesting(&self.frames)
            .map(|f| f.func.clone())
            .or_else(|| {
                self.ip
                    .as_ref()
                    .filter(|f| !stack::is_generic(&f.func))
                    .map(|f| f.func.clone())
            })
    }

    fn with_frame(&mut self, prefix: &str, frame: Option<String>) -> (String, Option<String>) {
        match frame {
            Some(f) => (format!("{prefix} in {f}"), Some(f)),
            None => {
                if self.corrupted.is_none() {
                    self.corrupted = Some("no frame to name the report after".into());
                }
                (prefix.to_string(), None)
            }
        }
    }

    fn title(&mut self, s: &Start, message: &[&str]) -> (ReportType, String, Option<String>) {
        let msg_has = |needle: &str| message.iter().any(|m| m.contains(needle));
        match s {
            Start::Warning { func, file } => {
                let file = file.clone().unwrap_or_default();
                if file.starts_with("lib/refcount.c") || msg_has("refcount_t:") {
                    let f = self.stack_frame();
                    let (t, f) = self.with_frame("WARNING: refcount bug", f);
                    return (ReportType::Refcount, t, f);
                }
                if file.starts_with("lib/list_debug.c") || msg_has(" corruption") {
                    let f = self.stack_frame();
                    let (t, f) = self.with_frame("BUG: corrupted list", f);
                    return (ReportType::ListCorruption, t, f);
                }
                match func.clone().filter(|f| !stack::is_generic(f)) {
                    // The header names the function: exact even when interleaved.
                    Some(f) => {
                        if let Some(ip) = &self.ip {
                            if ip.func != f && !self.interleaved && !stack::is_generic(&ip.func) {
                                self.alt.push(format!("WARNING in {}", ip.func));
                            }
                        }
                        (ReportType::Warning, format!("WARNING in {f}"), Some(f))
                    }
                    None => {
                        let f = self.stack_frame();
                        let (t, f) = self.with_frame("WARNING", f);
                        (ReportType::Warning, t, f)
                    }
                }
            }
            Start::KernelBug { file } => {
                if file.starts_with("lib/list_debug.c") {
                    let f = self.stack_frame();
                    let (t, f) = self.with_frame("BUG: corrupted list", f);
                    return (ReportType::ListCorruption, t, f);
                }
                let f = self.fault_frame();
                if f.is_none() {
                    // Without a frame, the file is still right.
                    self.corrupted
                        .get_or_insert_with(|| "no frame to name the report after".into());
                    return (ReportType::KernelBug, format!("kernel BUG at {file}"), None);
                }
                let (t, f) = self.with_frame("kernel BUG", f);
                (ReportType::KernelBug, t, f)
            }
            Start::NullDeref => {
                let f = self.fault_frame();
                let (t, f) =
                    self.with_frame("BUG: unable to handle kernel NULL pointer dereference", f);
                (ReportType::NullDeref, t, f)
            }
            Start::PageFault => {
                let f = self.fault_frame();
                let (t, f) = self.with_frame("BUG: unable to handle kernel paging request", f);
                (ReportType::PageFault, t, f)
            }
            Start::Gpf => {
                let f = self.fault_frame();
                let (t, f) = self.with_frame("general protection fault", f);
                (ReportType::Gpf, t, f)
            }
            Start::Oops { reason } => {
                let f = self.fault_frame();
                let (t, f) = self.with_frame(&format!("Oops: {reason}"), f);
                (ReportType::Oops, t, f)
            }
            Start::Bug { what } => {
                let f = self.fault_frame();
                let (t, f) = self.with_frame(&format!("BUG: {what}"), f);
                (ReportType::KernelBug, t, f)
            }
            Start::BadPage => {
                let f = self.stack_frame();
                let (t, f) = self.with_frame("BUG: Bad page state", f);
                (ReportType::BadPage, t, f)
            }
            Start::AtomicSleep { what } => {
                let f = self.stack_frame();
                let (t, f) = self.with_frame(&format!("BUG: {what}"), f);
                (ReportType::AtomicSleep, t, f)
            }
            Start::SoftLockup => {
                let f = self.fault_frame();
                let (t, f) = self.with_frame("BUG: soft lockup", f);
                (ReportType::SoftLockup, t, f)
            }
            Start::RcuStall => {
                let f = self.fault_frame();
                let (t, f) = self.with_frame("INFO: rcu detected stall", f);
                (ReportType::RcuStall, t, f)
            }
            Start::HungTask => {
                let f = self.stack_frame();
                let (t, f) = self.with_frame("INFO: task hung", f);
                (ReportType::HungTask, t, f)
            }
            Start::WorkqueueLockup => (
                ReportType::WorkqueueLockup,
                "BUG: workqueue lockup".into(),
                None,
            ),
            Start::Kfence { what, func } => (
                ReportType::Kfence,
                format!("KFENCE: {what} in {func}"),
                Some(func.clone()),
            ),
            Start::Kasan { what, func } => (
                ReportType::Kasan,
                format!("KASAN: {what} in {func}"),
                Some(func.clone()),
            ),
            Start::Ubsan { what } => {
                let f = self.stack_frame();
                let (t, f) = self.with_frame(&format!("UBSAN: {what}"), f);
                (ReportType::Ubsan, t, f)
            }
            Start::Lockdep { what } => {
                let f = self.stack_frame();
                let (t, f) = self.with_frame(what, f);
                (ReportType::Lockdep, t, f)
            }
            Start::Panic { msg } => {
                if msg.starts_with("Fatal exception") {
                    // The oops that caused it was lost.
                    self.corrupted = Some("a panic after an oops that is not in the log".into());
                }
                (ReportType::Panic, format!("kernel panic: {msg}"), None)
            }
            Start::VirtioMem { msg } => {
                let m = msg.split(':').next().unwrap_or(msg).trim().to_string();
                (ReportType::VirtioMem, format!("virtio-mem: {m}"), None)
            }
            Start::PageDump { reason } => (
                ReportType::PageDump,
                format!("page dumped because: {reason}"),
                None,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_headers() {
        assert_eq!(
            classify(
                "WARNING: CPU: 0 PID: 136 at mm/memory_hotplug.c:1234 offline_pages+0x14/0x20"
            ),
            Some(Start::Warning {
                func: Some("offline_pages".into()),
                file: Some("mm/memory_hotplug.c:1234".into())
            })
        );
        assert_eq!(
            classify("kernel BUG at mm/page_alloc.c:123!"),
            Some(Start::KernelBug {
                file: "mm/page_alloc.c:123".into()
            })
        );
        assert_eq!(
            classify("Oops: Oops: 0002 [#1] PREEMPT SMP NOPTI"),
            Some(Start::Oops {
                reason: "0002".into()
            })
        );
        assert_eq!(
            classify("Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI"),
            Some(Start::Oops {
                reason: "invalid opcode".into()
            })
        );
        assert_eq!(classify("Oops: general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1]"), Some(Start::Gpf));
        assert_eq!(
            classify("BUG: Bad page state in process sh  pfn:3fe26"),
            Some(Start::BadPage)
        );
        assert_eq!(classify("hotfuzz-init: ready"), None);
        assert_eq!(classify("virtio_mem virtio1: plugged size: 0x0"), None);
        assert_eq!(
            classify(
                "traps: sh[1] general protection fault ip:4012 sp:7ffd error:0 in sh[401000+1000]"
            ),
            None
        );
        assert_eq!(
            classify("BUG: Bad rss-counter state mm:00000000 type:MM_ANONPAGES val:1"),
            Some(Start::Bug {
                what: "Bad rss-counter state mm".into()
            })
        );
        // Someone quoting a title (a report header, a shell echo) is not the kernel.
        assert_eq!(classify("TITLE: BUG: Bad page state in foo"), None);
        assert_eq!(classify("echo: BUG: scheduling while atomic"), None);
        assert!(classify("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [sh:1]").is_some());
    }
}
