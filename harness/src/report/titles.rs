//! Titling: the title, alternative titles, kind, guilty frame and corruption of one report,
//! from its header and the lines that follow it.
//!
//! A title names the kind and the function that went wrong, the first frame of the right
//! stack that is not generic ([`Skip`]): the faulting instruction's for faults and warnings,
//! the call trace's for sanitizers and sleeping bugs, lockdep's `at:` lines for lock bugs,
//! the stack an interrupt cut into for stalls (named after the frame above the first
//! dispatcher, [`stack::stall_anchor`]), the sleeper's for hung tasks. When that frame cannot
//! be found the title says `in corrupted` and the report is corrupted; a report is also
//! corrupted when its stack is missing, a stack starts without frames, fault injection's stack
//! is mixed in, another report starts inside it, or the console was cut off. Lines another CPU's report mixed in are never used:
//! such a report is titled from its header alone.

use super::classify::{Kind, Start};
use super::formats::{needs_stack, plan, Plan, Source};
use super::stack::{self, Frame, Skip};
use super::title::normalize;
use super::ReportType;

/// A report's lines, as the stream collected them.
pub(crate) struct Body<'a> {
    /// The header.
    pub start: &'a Start,
    /// Lines printed just before the header that belong to it (`cut here`, a WARN message).
    pub before: &'a [&'a str],
    /// The header line and what follows it, up to where another report starts.
    pub lines: &'a [&'a str],
    /// Another CPU's report started inside this one: only `lines[..cut]` are this report's
    /// for certain.
    pub cut: Option<usize>,
    /// The report that started inside this one is of the same kind (the hung task detector
    /// listing every blocked task, kmemleak every leak): a series, not an interruption.
    pub cut_by_same: bool,
    /// This report started inside another one (no caller tags to tell their lines apart):
    /// nothing after the header is certainly this report's.
    pub mixed: bool,
}

/// What the titling found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Titled {
    pub title: String,
    pub alts: Vec<String>,
    pub kind: ReportType,
    pub frame: Option<String>,
    pub corrupted: Option<String>,
    /// The last line of `lines` the title used (the report's text reaches at least that far).
    pub used: usize,
}

const INTERLEAVED: &str =
    "interleaved with another CPU's report; its frames cannot be told apart (no printk caller tags)";
pub(super) const NO_FRAME: &str = "no frame to name the report after";
const NO_STACK: &str = "the stack trace is missing";
const EMPTY_STACK: &str = "a stack trace starts but has no frames";
const FAULT_INJECTION: &str = "fault injection's stack is mixed into the stack trace";
const CUT_SHORT: &str = "another report starts inside this one";

/// One candidate frame: its function and the line it is on.
struct Cand {
    func: String,
    line: usize,
}

/// The frames after line `from` (questionable ones dropped), the IP line's first.
fn frames(lines: &[&str], from: usize, with_ip: bool) -> Vec<Cand> {
    let mut v = Vec::new();
    for (i, l) in lines.iter().enumerate().skip(from) {
        if let Some(f) = stack::parse_arm_callee(l) {
            v.push(Cand {
                func: f.func,
                line: i,
            });
        }
        let f = if with_ip {
            stack::parse_ip(l).or_else(|| stack::parse_frame(l))
        } else {
            stack::parse_frame(l)
        };
        if let Some(f) = f.filter(|f: &Frame| !f.questionable) {
            v.push(Cand {
                func: f.func,
                line: i,
            });
        }
    }
    v
}

/// The first line at or after `from` naming the faulting instruction.
fn ip_line(lines: &[&str], from: usize) -> Option<usize> {
    (from..lines.len()).find(|&i| stack::is_ip_line(lines[i]))
}

/// Where the call trace starts: after the first `Call Trace:` (or lockdep's `stack
/// backtrace:`), else right after the header.
fn trace_start(lines: &[&str]) -> usize {
    lines
        .iter()
        .position(|l| {
            let s = l.trim();
            s.starts_with("Call Trace:") || s.starts_with("Call trace:") || s == "stack backtrace:"
        })
        .map_or(1, |i| i + 1)
}

/// `..., at: [<ffffffff8232bf0e>] func+0x1e/0x40` (lockdep's lock lists).
pub(super) fn at_func(l: &str) -> Option<String> {
    let (_, r) = l.rsplit_once(" at: ").or_else(|| l.rsplit_once(", at:"))?;
    let mut r = r.trim_start();
    if let Some(x) = r.strip_prefix("[<") {
        r = x.split_once(">]")?.1.trim_start();
    }
    let end = r
        .bytes()
        .position(|c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'$'))?;
    r[end..]
        .starts_with("+0x")
        .then(|| stack::base_name(&r[..end]).to_string())
}

/// Lines that start a stack (a frame must follow within [`STACK_WINDOW`] lines).
fn starts_stack(l: &str) -> bool {
    let s = l.trim();
    s == "Call Trace:"
        || s == "Call trace:"
        || s == "Backtrace:"
        || s.starts_with("backtrace")
        || s == "Uninit was stored to memory at:"
        || (s.starts_with("Allocated by task ") && s.ends_with(':'))
        || (s.starts_with("Freed by task ") && s.ends_with(':'))
}

const STACK_WINDOW: usize = 15;

/// What the stack of a report looks like.
struct StackShape {
    /// Any frame at all.
    any: bool,
    /// A stack starts and no frame follows within the window.
    empty_start: bool,
}

fn stack_shape(lines: &[&str]) -> StackShape {
    let is_frame = |l: &str| {
        let t = l.trim_start();
        stack::parse_frame(l).is_some()
            || stack::parse_ip(l).is_some()
            || stack::parse_arm_callee(l).is_some()
            // The kernel says why there is no stack.
            || t.starts_with("<Same stack as pid")
            || t.starts_with("(stack is not available)")
    };
    let any = lines
        .iter()
        .skip(1)
        .any(|l| stack::parse_frame(l).is_some() || stack::parse_arm_callee(l).is_some());
    let mut empty_start = false;
    for (i, l) in lines.iter().enumerate() {
        if starts_stack(l) {
            let window = &lines[i + 1..lines.len().min(i + 1 + STACK_WINDOW)];
            if !window.iter().any(|l| is_frame(l)) {
                empty_start = true;
                break;
            }
        }
    }
    StackShape { any, empty_start }
}

/// Picks a frame among `cands` for `plan`: the first one not skipped (hung tasks: or one of
/// the waits they are grouped by), or for stalls the one the stall rules name (the frame above
/// the first dispatcher). Fault injection's frames mean another stack is mixed in.
fn pick(plan: &Plan, cands: &[Cand]) -> Result<Option<usize>, &'static str> {
    let stall = matches!(
        plan.source,
        Source::Stall | Source::IpStall | Source::TraceStall
    );
    let skips = |f: &str| plan.skip.skips(f) || plan.also_skip == Some(f);
    let mut first_kept = None;
    let mut last_kept = None;
    for (i, c) in cands.iter().enumerate() {
        if c.func.contains("should_fail") {
            return Err(FAULT_INJECTION);
        }
        if plan.source == Source::Hung
            && (c.func == "rtnl_lock"
                || c.func.starts_with("synchronize_rcu")
                || c.func.starts_with("synchronize_sched")
                || c.func == "synchronize_net")
        {
            return Ok(Some(i));
        }
        if stall {
            if last_kept.is_none() && stack::stall_waits(&c.func) {
                return Ok(Some(i));
            }
            if stack::stall_anchor(&c.func) {
                return Ok(Some(last_kept.unwrap_or(i)));
            }
        }
        if !skips(&c.func) {
            if !stall {
                return Ok(Some(i));
            }
            first_kept.get_or_insert(i);
            last_kept = Some(i);
        }
    }
    // A stall without a dispatcher below it cannot be told from any other.
    Ok(if stall { None } else { first_kept })
}

/// The first line after the interrupt a stall was found in (the stack the interrupt cut
/// into), when the report shows the interrupt.
fn after_interrupt(lines: &[&str]) -> Option<usize> {
    let i = lines.iter().position(|l| {
        let s = l.trim();
        s.contains("apic_timer_interrupt")
            || s.starts_with("</IRQ>")
            || s.starts_with("<EOI>")
            || s.starts_with("Exception stack")
            || s.contains("el1_irq")
            || s.contains("el1_interrupt")
            || s.contains("el1h_64_irq")
    })?;
    // The line itself may carry the first frame (`<EOI> [<..>] func`) or be the IRQ's last.
    let mut j = i;
    while j + 1 < lines.len() {
        let s = lines[j + 1].trim();
        if s.contains("apic_timer_interrupt") || s.starts_with("</IRQ>") {
            j += 1;
        } else {
            break;
        }
    }
    Some(if lines[j].trim_start().starts_with("<EOI>") {
        j
    } else {
        j + 1
    })
}

fn self_detected(lines: &[&str]) -> bool {
    lines
        .first()
        .is_some_and(|h| h.contains("self-detected stall"))
}

fn candidates(plan: &Plan, lines: &[&str]) -> Vec<Cand> {
    let mut v = Vec::new();
    if plan.source == Source::Header {
        if let Some(f) = &plan.header_func {
            v.push(Cand {
                func: f.clone(),
                line: 0,
            });
        }
    }
    match plan.source {
        Source::None => {}
        Source::Ip | Source::IpStall => match ip_line(lines, 1) {
            Some(i) => v.extend(frames(lines, i, true)),
            None => v.extend(frames(lines, 1, false)),
        },
        Source::Frames | Source::Header => v.extend(frames(lines, 1, false)),
        Source::Trace | Source::Hung | Source::TraceStall => {
            v.extend(frames(lines, trace_start(lines), false))
        }
        Source::LockAt(n) => {
            let mut taken = 0;
            let mut last = 0;
            for (i, l) in lines.iter().enumerate().skip(1) {
                if taken == n {
                    break;
                }
                if let Some(f) = at_func(l) {
                    v.push(Cand { func: f, line: i });
                    taken += 1;
                    last = i;
                }
            }
            v.extend(frames(lines, last + 1, false));
        }
        Source::AfterAt => {
            let at = lines.iter().position(|l| l.trim_end().ends_with(" at:"));
            if let Some(i) = at {
                if let Some(l) = lines.get(i + 1) {
                    if let Some(f) = stack::parse_frame(l).or_else(|| {
                        let s = format!(" {}", l.trim());
                        stack::parse_frame(&s)
                    }) {
                        v.push(Cand {
                            func: f.func,
                            line: i + 1,
                        });
                    }
                }
            }
            v.extend(frames(lines, at.map_or(1, |i| i + 2), false));
        }
        Source::After(text) => match lines.iter().position(|l| l.contains(text)) {
            Some(i) => v.extend(frames(lines, i + 1, false)),
            // Older kernels name the locks on `at:` lines only.
            None => {
                let p = Plan {
                    source: Source::LockAt(2),
                    ..Plan::new("", plan.kind, Source::LockAt(2), plan.skip)
                };
                v.extend(candidates(&p, lines));
            }
        },
        Source::Backtrace => {
            let from = lines
                .iter()
                .position(|l| l.trim_start().starts_with("backtrace"))
                .map_or(1, |i| i + 1);
            v.extend(frames(lines, from, false));
        }
        Source::Stall => {
            // The stack the timer interrupt cut into: its faulting-instruction line if one
            // follows the interrupt's frames, else the frames after them. Without the
            // interrupt, the stall's stack is not in the report.
            let Some(from) = after_interrupt(lines) else {
                // A self-detected stall printed like a soft lockup (the interrupted registers,
                // then their stack) is named like one.
                if self_detected(lines) {
                    if let Some(i) = ip_line(lines, 1) {
                        v.extend(frames(lines, i, true));
                    }
                }
                return v;
            };
            let ip = ip_line(lines, from).filter(|&i| {
                i < from + 12
                    && !lines[from..i].iter().any(|l| {
                        stack::parse_frame(l)
                            .is_some_and(|f| !f.questionable && !Skip::Stall.skips(&f.func))
                    })
            });
            match ip {
                Some(i) => v.extend(frames(lines, i, true)),
                None => v.extend(frames(lines, from, false)),
            }
        }
    }
    v
}

/// Titles one report.
pub(crate) fn title(b: &Body) -> Titled {
    let mut t = match plan(b) {
        Ok(p) => titled(b, p),
        Err(t) => t,
    };
    if t.corrupted.is_none() {
        t.corrupted = corruption(b);
    }
    t.title = normalize(&t.title);
    let title = t.title.clone();
    let mut alts: Vec<String> = Vec::new();
    for a in t.alts.drain(..) {
        let a = normalize(&a);
        if a != title && !alts.contains(&a) {
            alts.push(a);
        }
    }
    alts.sort();
    t.alts = alts;
    t
}

fn titled(b: &Body, plan: Plan) -> Titled {
    let mut corrupted = plan.corrupted.map(str::to_string);
    let lines = match b.cut {
        Some(c) => &b.lines[..c.max(1).min(b.lines.len())],
        None => b.lines,
    };
    // Reports started inside another one trust only their header.
    let lines = if b.mixed {
        &lines[..1.min(lines.len())]
    } else {
        lines
    };
    if let Some(fixed) = &plan.fixed {
        let alts = plan.fixed_alts.clone();
        if plan.source != Source::None {
            let shape = stack_shape(lines);
            if !shape.any && corrupted.is_none() {
                corrupted = Some(NO_STACK.into());
            }
        }
        return Titled {
            title: fixed.clone(),
            alts,
            kind: plan.kind,
            frame: None,
            corrupted,
            used: 0,
        };
    }
    let hdr = plan.header_func.as_deref().filter(|f| !plan.skip.skips(f));
    let cands = candidates(&plan, lines);
    // Fault injection's stack mixed in before the frame: no frame is certain.
    let injected = |upto: usize| {
        let lo = 1.min(lines.len());
        lines[lo..upto.clamp(lo, lines.len())].iter().any(|l| {
            stack::parse_frame(l).is_some_and(|f| !f.questionable && f.func.contains("should_fail"))
        })
    };
    let picked = match pick(&plan, &cands) {
        Ok(Some(i)) if injected(cands[i].line) => Err(FAULT_INJECTION),
        Ok(None) if injected(lines.len()) => Err(FAULT_INJECTION),
        p => p,
    };
    let (frame, used) = match picked {
        Ok(Some(i)) => {
            if b.cut.is_some() && !b.cut_by_same {
                // Named from the lines before another report started inside this one.
                corrupted.get_or_insert_with(|| CUT_SHORT.to_string());
            }
            (Some(cands[i].func.clone()), cands[i].line)
        }
        Ok(None) => (None, 0),
        Err(why) => {
            corrupted.get_or_insert_with(|| why.to_string());
            (None, 0)
        }
    };
    // A report cut short by another CPU's keeps its header's function (never the other's).
    let frame = match frame {
        Some(f) => Some(f),
        None if b.cut.is_some() || b.mixed => {
            if hdr.is_none() {
                corrupted.get_or_insert_with(|| INTERLEAVED.to_string());
            }
            hdr.map(str::to_string)
        }
        None => None,
    };
    let Some(frame) = frame else {
        corrupted.get_or_insert_with(|| NO_FRAME.to_string());
        return Titled {
            title: format!("{} in corrupted{}", plan.prefix, plan.suffix),
            alts: plan
                .alt_prefixes
                .iter()
                .map(|a| format!("{a} in corrupted"))
                .collect(),
            kind: plan.kind,
            frame: None,
            corrupted,
            used: 0,
        };
    };
    let (name, others) = stack::canonical(&frame);
    let mut alts = Vec::new();
    for n in std::iter::once(&name).chain(others.iter()) {
        if n != &name {
            alts.push(format!("{} in {n}{}", plan.prefix, plan.suffix));
        }
        for a in &plan.alt_prefixes {
            alts.push(format!("{a} in {n}"));
        }
    }
    let title = format!("{} in {name}{}", plan.prefix, plan.suffix);
    Titled {
        title,
        alts,
        kind: plan.kind,
        frame: Some(name),
        corrupted,
        used,
    }
}

/// Why a report is corrupted regardless of its title: its stack is missing or starts without
/// frames, or the console says the machine went away.
fn corruption(b: &Body) -> Option<String> {
    let lines = b.lines;
    if b.start.header.contains("] ") && has_stamp(&b.start.header) {
        return Some("another line's timestamp is in the header".into());
    }
    if lines
        .iter()
        .any(|l| l.contains("serialport: VM disconnected."))
    {
        return Some("the console was cut off".into());
    }
    let shape = stack_shape(lines);
    // The stack protector names the function; the panic's own stack may be cut off.
    let named_panic = matches!(&b.start.kind, Kind::Panic(m) if m.starts_with("stack-protector"));
    if shape.empty_start && !named_panic {
        return Some(EMPTY_STACK.into());
    }
    if needs_stack(&b.start.kind) && !shape.any {
        return Some(NO_STACK.into());
    }
    None
}

fn has_stamp(h: &str) -> bool {
    let b = h.as_bytes();
    let mut i = 0;
    while let Some(p) = h[i..].find('[') {
        let s = i + p + 1;
        let mut j = s;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        let d0 = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > d0 && j < b.len() && b[j] == b'.' {
            let d1 = j + 1;
            j += 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j > d1 && j < b.len() && b[j] == b']' {
                return true;
            }
        }
        i = s;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::super::classify::classify;
    use super::*;

    fn t(log: &str) -> Titled {
        let lines: Vec<&str> = log.lines().collect();
        let start = classify(lines[0]).unwrap();
        title(&Body {
            start: &start,
            before: &[],
            lines: &lines,
            cut: None,
            cut_by_same: false,
            mixed: false,
        })
    }

    #[test]
    fn warning_names_the_faulting_function() {
        let r = t("WARNING: CPU: 0 PID: 1 at mm/x.c:1 __might_sleep+0x1/0x2\n\
                   RIP: 0010:__might_sleep+0x13a/0x190\n\
                   Call Trace:\n  ? line6_pcm_acquire+0x35/0x210\n  __mutex_lock+0xcd/0x12b0\n\
                   \x20 line6_pcm_acquire+0x35/0x210\n  call_timer_fn+0x161/0x5f0");
        assert_eq!(r.title, "WARNING in line6_pcm_acquire");
        assert_eq!(r.corrupted, None);
    }

    #[test]
    fn missing_frames_say_corrupted() {
        let r = t("WARNING: CPU: 2 PID: 2636 at ipc/shm.c:162 shm_open.isra.5.part.6+0x74/0x80\nModules linked in:");
        assert_eq!(r.title, "WARNING in corrupted");
        assert!(r.corrupted.is_some());
        let r =
            t("BUG: sleeping function called from invalid context at include/linux/wait.h:1095");
        assert_eq!(
            r.title,
            "BUG: sleeping function called from invalid context in corrupted"
        );
        assert!(r.corrupted.is_some());
    }

    #[test]
    fn syscalls_get_alternative_titles() {
        let r = t(
            "watchdog: BUG: soft lockup - CPU#1 stuck for 134s! [syz-executor4:4588]\n\
                   RIP: 0010:d_walk+0x840/0xc80\nCall Trace:\n shrink_dcache_parent+0x179/0x230\n\
                   \x20vfs_rmdir+0x202/0x470\n do_rmdir+0x523/0x610\n __x64_sys_rmdir+0x36/0x40\n\
                   \x20do_syscall_64+0x1b1/0x800",
        );
        assert_eq!(r.title, "BUG: soft lockup in sys_rmdir");
        assert_eq!(
            r.alts,
            [
                "BUG: soft lockup in __x64_sys_rmdir",
                "stall in __x64_sys_rmdir",
                "stall in sys_rmdir"
            ]
        );
    }

    #[test]
    fn stamps_in_headers() {
        assert!(has_stamp("WARNING: CPU: 0 [  12.345] foo"));
        assert!(!has_stamp("WARNING: CPU: 0 [#1] foo"));
    }
}
