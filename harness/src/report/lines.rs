//! Console log lines taken apart: host timestamps (hotfuzz's own `2026-...Z ` prefix), syslog
//! and journal prefixes, `<N>` levels, kernel timestamps `[  12.345678]`, caller tags `[T123]`
//! / `[C1]` (CONFIG_PRINTK_CALLER), ANSI escapes and carriage returns are removed so the parser
//! sees what the kernel printed. Splats pasted from mail (`> ` quoting, wrapped lines) are
//! unquoted and unwrapped first.

use std::borrow::Cow;

/// One line of kernel output.
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    /// 0-based line number in the input.
    pub index: usize,
    /// What the kernel printed (leading spaces kept: stack frames are indented).
    pub text: Cow<'a, str>,
    /// hotfuzz's host timestamp, when the log has them.
    pub host_time: Option<&'a str>,
    /// The kernel's timestamp in seconds.
    pub ktime: Option<f64>,
    /// The printk caller (`T123` task or `C1` CPU), with CONFIG_PRINTK_CALLER.
    pub caller: Option<&'a str>,
}

fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

/// `2026-11-21T15:30:01.123456Z ` (RFC 3339 UTC with optional fraction, then a space).
fn host_stamp(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.len() < 21
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if !b[..4].iter().all(|&c| is_digit(c)) {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(|&c| is_digit(c)) {
            i += 1;
        }
    }
    if b.get(i) == Some(&b'Z') && b.get(i + 1) == Some(&b' ') {
        Some(i + 2)
    } else {
        None
    }
}

/// `[  123.456789]` → (seconds, bytes consumed including one following space).
fn kernel_stamp(s: &str) -> Option<(f64, usize)> {
    let b = s.as_bytes();
    if b.first() != Some(&b'[') {
        return None;
    }
    let close = b.iter().take(24).position(|&c| c == b']')?;
    let inner = s[1..close].trim_start();
    let dot = inner.find('.')?;
    if dot == 0
        || !inner[..dot].bytes().all(is_digit)
        || inner.len() == dot + 1
        || !inner[dot + 1..].bytes().all(is_digit)
    {
        return None;
    }
    let t: f64 = inner.parse().ok()?;
    let mut n = close + 1;
    if b.get(n) == Some(&b' ') {
        n += 1;
    }
    Some((t, n))
}

/// `[T123]` / `[ C1]` caller tag.
fn caller_tag(s: &str) -> Option<(&str, usize)> {
    let b = s.as_bytes();
    if b.first() != Some(&b'[') {
        return None;
    }
    let close = b.iter().take(12).position(|&c| c == b']')?;
    let inner = s[1..close].trim_start();
    let mut it = inner.bytes();
    match it.next() {
        Some(b'T') | Some(b'C') => {}
        _ => return None,
    }
    if inner.len() < 2 || !inner[1..].bytes().all(is_digit) {
        return None;
    }
    let mut n = close + 1;
    if b.get(n) == Some(&b' ') {
        n += 1;
    }
    Some((inner, n))
}

/// `Nov 21 12:00:01 host kernel: ` (syslog/journal).
fn syslog_prefix(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.len() < 20
        || !b[0].is_ascii_uppercase()
        || b[3] != b' '
        || b[6] != b' '
        || b[9] != b':'
        || b[12] != b':'
    {
        return None;
    }
    let rest = &s[16..];
    let k = rest.find(" kernel: ")?;
    if rest[..k].contains(' ') {
        return None;
    }
    Some(16 + k + " kernel: ".len())
}

/// Skips a `<N>` log level (one to three digits).
fn level(s: &str) -> &str {
    let b = s.as_bytes();
    if b.first() != Some(&b'<') {
        return s;
    }
    let digits = b[1..].iter().take(4).take_while(|&&c| is_digit(c)).count();
    if (1..=3).contains(&digits) && b.get(1 + digits) == Some(&b'>') {
        &s[2 + digits..]
    } else {
        s
    }
}

/// `[Fri Nov 21 12:00:01 2026] ` (dmesg -T).
fn dmesg_t(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.len() < 27 || b[0] != b'[' || !b[1].is_ascii_uppercase() || b[25] != b']' || b[14] != b':'
    {
        return None;
    }
    Some(if b.get(26) == Some(&b' ') { 27 } else { 26 })
}

fn strip_ansi(s: &str) -> Cow<'_, str> {
    if !s.contains('\x1b') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            if it.peek() == Some(&'[') {
                it.next();
                // CSI: parameters then one final byte in @..~
                for d in it.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            } else {
                it.next();
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Skips escape sequences at the start of `s` (a terminal capture colours whole lines).
fn skip_ansi(mut s: &str) -> &str {
    while let Some(r) = s.strip_prefix("\x1b[") {
        match r.find(|c: char| ('@'..='~').contains(&c)) {
            Some(end) => s = &r[end + 1..],
            None => return "",
        }
    }
    s
}

/// Splits `raw` into [`Line`]s (without unquoting or unwrapping).
pub fn split(raw: &str) -> Vec<Line<'_>> {
    let mut v = Vec::with_capacity(raw.len() / 64 + 1);
    for (index, l) in raw.split('\n').enumerate() {
        v.push(parse_line(index, l));
    }
    if raw.ends_with('\n') {
        v.pop();
    }
    v
}

/// Takes one line apart.
pub fn parse_line(index: usize, l: &str) -> Line<'_> {
    let mut s = skip_ansi(l.strip_suffix('\r').unwrap_or(l));
    let mut host_time = None;
    if let Some(n) = host_stamp(s) {
        host_time = Some(&s[..n - 1]);
        s = skip_ansi(&s[n..]);
    }
    if let Some(n) = syslog_prefix(s) {
        s = &s[n..];
    }
    // `** 4491 printk messages dropped ** ` (the console could not keep up).
    if let Some(r) = s.strip_prefix("** ") {
        if let Some(i) = r.find(" printk messages dropped ** ") {
            if r[..i].bytes().all(is_digit) {
                s = &r[i + " printk messages dropped ** ".len()..];
            }
        }
    }
    // `syzkaller login: [   59.806466] ...` (a getty prompt the kernel printed into).
    if let Some(i) = s.find(" login: [") {
        if i < 64 && !s[..i].contains(' ') {
            s = &s[i + " login: ".len()..];
        }
    }
    s = level(s);
    if let Some(n) = dmesg_t(s) {
        s = &s[n..];
    }
    let mut ktime = None;
    if let Some((t, n)) = kernel_stamp(s) {
        ktime = Some(t);
        s = &s[n..];
    }
    let mut caller = None;
    if let Some((c, n)) = caller_tag(s) {
        caller = Some(c);
        s = &s[n..];
    }
    Line {
        index,
        text: strip_ansi(s),
        host_time,
        ktime,
        caller,
    }
}

/// Undoes mail quoting (`> `, `>> `) when most non-empty lines are quoted.
pub fn unquote(raw: &str) -> Cow<'_, str> {
    if !is_quoted(raw) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    for l in raw.lines() {
        out.push_str(unquote_line(l));
        out.push('\n');
    }
    Cow::Owned(out)
}

/// Whether most non-empty lines of `raw` are mail-quoted (`> `, `>> `).
pub fn is_quoted(raw: &str) -> bool {
    let mut non_empty = 0;
    let mut quoted = 0;
    for l in raw.lines() {
        if !l.trim().is_empty() {
            non_empty += 1;
        }
        if skip_ansi(l).starts_with('>') {
            quoted += 1;
        }
    }
    non_empty > 0 && quoted * 2 >= non_empty
}

/// One line without its mail quoting (`> > text` → `text`).
pub fn unquote_line(l: &str) -> &str {
    let mut s = skip_ansi(l);
    while let Some(r) = s.strip_prefix('>') {
        s = r.strip_prefix(' ').unwrap_or(r);
    }
    s
}

/// If `next` is the wrapped continuation of `prev` (a `WARNING:` header cut before its
/// function, a `BUG: ... in` cut before its function, a module name pushed to the next line),
/// the joined line.
pub fn join_wrapped(prev: &str, next: &str) -> Option<String> {
    let p = prev.trim_end();
    // `WARNING: CPU: 1 PID: 5 at file:line` or the newer `WARNING: file:line at` cut before
    // the function.
    let warn_header = p.contains("WARNING: CPU:")
        || (p.starts_with("WARNING: ") && p.ends_with(" at") && !p.contains(", CPU#"));
    let warn_cut = warn_header && !p.contains("+0x") && next.contains("+0x");
    let in_cut = (p.starts_with("BUG: KFENCE:") || p.starts_with("BUG: KASAN:"))
        && p.ends_with(" in")
        && !next.is_empty();
    let module_cut =
        next.starts_with('[') && next.ends_with(']') && !next.contains(' ') && p.contains("+0x");
    // A frame or faulting-instruction line cut after its addresses (powerpc `NIP
    // [c0080000008001c8]`, `[sp] [ip]`, x86 `RIP: 0010:[<ffffffff8140>]  [<ffffffff8140>]`,
    // arm `[<802e12b8>] (f) from [<80100a74>]`) before the function.
    let addr_cut =
        addrs_only(p) && (next.contains("+0x") || next.starts_with('(')) && !next.starts_with('[');
    // powerpc's `(unreliable)` pushed after its frame.
    let unreliable_cut = next == "(unreliable)" && p.contains("+0x");
    (warn_cut || in_cut || module_cut || addr_cut || unreliable_cut).then(|| format!("{p} {next}"))
}

/// A line of addresses with nothing after them: `NIP [c0080000008001c8]`, `LR [c008...]`,
/// `[c000000002223a70] [c000000000dc3ad8]`, `RIP: 0010:[<ffffffff81>]  [<ffffffff81>]`,
/// `[<802e12b8>] (trace_hardirqs_off) from [<80100a74>]`.
fn addrs_only(p: &str) -> bool {
    let mut p = p.trim_start();
    for pre in ["NIP ", "LR ", "RIP: 0010:", "IP: ", "EIP: "] {
        if let Some(r) = p.strip_prefix(pre) {
            p = r.trim_start();
            break;
        }
    }
    // arm: the callee's name may come first.
    if let Some((callee, r)) = p.split_once(" from ") {
        if !callee.ends_with(')') {
            return false;
        }
        p = r;
    }
    let words: Vec<&str> = p.split_whitespace().collect();
    (1..=2).contains(&words.len())
        && words.iter().all(|w| {
            let inner = w
                .strip_prefix("[<")
                .and_then(|w| w.strip_suffix(">]"))
                .or_else(|| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')));
            inner.is_some_and(|h| !h.is_empty() && h.bytes().all(|c| c.is_ascii_hexdigit()))
        })
}

/// Rejoins lines a mail client wrapped, for the cases that matter to titles: a `WARNING:`
/// header cut before its function, a `BUG: ... in` cut before its function, and a module
/// name `[mod]` pushed to the next line. Only for logs without hotfuzz's host timestamps
/// (pasted splats), and never into a line that starts with its own kernel timestamp.
pub fn unwrap_pasted(lines: Vec<Line<'_>>) -> Vec<Line<'_>> {
    if lines.iter().any(|l| l.host_time.is_some()) {
        return lines;
    }
    let mut out: Vec<Line> = Vec::with_capacity(lines.len());
    for l in lines {
        if let Some(prev) = out.last_mut().filter(|_| l.ktime.is_none()) {
            if let Some(joined) = join_wrapped(&prev.text, l.text.trim()) {
                prev.text = Cow::Owned(joined);
                continue;
            }
        }
        out.push(l);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_come_off() {
        let l = parse_line(0, "2026-11-21T15:30:01.123456Z [   12.345678] WARNING: x\r");
        assert_eq!(l.host_time, Some("2026-11-21T15:30:01.123456Z"));
        assert_eq!(l.ktime, Some(12.345678));
        assert_eq!(l.text, "WARNING: x");
        let l = parse_line(0, "[  1.5] [  T123]  func+0x1/0x2");
        assert_eq!(l.caller, Some("T123"));
        assert_eq!(l.text, " func+0x1/0x2");
        let l = parse_line(0, "<4>[ 3.000001] BUG: y");
        assert_eq!(l.text, "BUG: y");
        let l = parse_line(0, "<14>[ 3.000001] init: z");
        assert_eq!(l.text, "init: z");
        let l = parse_line(
            0,
            "** 4491 printk messages dropped ** [   50.750742] INFO: x",
        );
        assert_eq!((l.text.as_ref(), l.ktime), ("INFO: x", Some(50.750742)));
        let l = parse_line(0, "syzkaller login: [   16.305150] INFO: task");
        assert_eq!(l.text, "INFO: task");
        let l = parse_line(0, "Nov 21 12:00:01 myhost kernel: [ 5.1] Oops");
        assert_eq!(l.text, "Oops");
        let l = parse_line(0, "[Fri Nov 21 12:00:01 2026] kernel BUG at x");
        assert_eq!(l.text, "kernel BUG at x");
        let l = parse_line(0, "\x1b[31mBUG: red\x1b[0m");
        assert_eq!(l.text, "BUG: red");
        // Things that only look like prefixes stay.
        let l = parse_line(0, "[c000000000a0b0c0] [c0000000001234] func+0x1/0x2");
        assert_eq!(l.ktime, None);
        assert!(l.text.starts_with("[c000000000a0b0c0]"));
    }

    #[test]
    fn new_warning_form_unwrapped() {
        let mail = "> WARNING: drivers/virtio/virtio_mem.c:1023 at\n> virtio_mem_fake_offline_going_offline+0x55/0x60 [virtio_mem], CPU#1: kworker/1:2/123\n";
        let text = unquote(mail);
        let lines = unwrap_pasted(split(&text));
        assert_eq!(
            lines[0].text,
            "WARNING: drivers/virtio/virtio_mem.c:1023 at virtio_mem_fake_offline_going_offline+0x55/0x60 [virtio_mem], CPU#1: kworker/1:2/123"
        );
        // A complete header is not joined with what follows.
        assert!(join_wrapped(
            "WARNING: fs/dcache.c:829 at fast_dput+0x334/0x430, CPU#1: x/1",
            "Modules linked in:"
        )
        .is_none());
    }

    #[test]
    fn mail_quoting_and_wrapping() {
        let mail = "> WARNING: CPU: 1 PID: 5 at drivers/virtio/virtio_mem.c:1023\n> virtio_mem_fake_offline_going_offline+0x55/0x60\n> [virtio_mem]\n> Call Trace:\n";
        let text = unquote(mail);
        let lines = unwrap_pasted(split(&text));
        assert_eq!(
            lines[0].text,
            "WARNING: CPU: 1 PID: 5 at drivers/virtio/virtio_mem.c:1023 virtio_mem_fake_offline_going_offline+0x55/0x60 [virtio_mem]"
        );
        assert_eq!(lines[1].text, "Call Trace:");
    }
}
