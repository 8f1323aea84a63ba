//! Stack frames in the oops formats kernels print (x86 old and new, arm64, arm, powerpc, with or
//! without symbolization). Which of them are too generic to name a bug after is
//! [`super::skip`] (re-exported here).

pub use super::skip::{canonical, first_interesting, is_generic, stall_anchor, stall_waits, Skip};

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

/// True when `text` has a `+0x` (a function offset): every frame does.
fn has_offset(text: &str) -> bool {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new("+0x"));
    FINDER.find(text.as_bytes()).is_some()
}

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

fn hex_run(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_hexdigit()).count()
}

/// `func+0x1a/0x40` then an optional ` [module]`: (func, offset hex, module, the rest).
fn parse_sym(s: &str) -> Option<(&str, &str, Option<&str>, &str)> {
    let b = s.as_bytes();
    let name_end = b.iter().position(|&c| !is_sym_char(c))?;
    if name_end == 0 || !s[name_end..].starts_with("+0x") {
        return None;
    }
    let off_start = name_end + 3;
    let off_len = hex_run(&b[off_start..]);
    let after_off = off_start + off_len;
    if off_len == 0 || !s[after_off..].starts_with("/0x") {
        return None;
    }
    let size_start = after_off + 3;
    let size_len = hex_run(&b[size_start..]);
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
    if end == 0 || hex_run(r.as_bytes()) != end {
        return None;
    }
    r[end + 1..].strip_prefix(' ')
}

/// `[<ffffffff81d91389>]` (an old x86 or arm return address), returning the rest.
fn strip_angle_addr(s: &str) -> Option<&str> {
    let r = s.strip_prefix("[<")?;
    let end = r.find(">]")?;
    if end == 0 || hex_run(r.as_bytes()) != end {
        return None;
    }
    Some(&r[end + 2..])
}

/// `[  420.408595]` (a timestamp in the middle of an old continuation line).
fn strip_stamp(s: &str) -> Option<&str> {
    let r = s.strip_prefix('[')?;
    let end = r.find(']')?;
    let inner = r[..end].trim_start();
    if inner.is_empty()
        || !inner.contains('.')
        || !inner.bytes().all(|c| c.is_ascii_digit() || c == b'.')
    {
        return None;
    }
    Some(&r[end + 1..])
}

/// ` lib/dump_stack.c:113` after a symbolized frame.
fn is_source_location(s: &str) -> bool {
    let s = s.trim();
    let Some((path, line)) = s.rsplit_once(':') else {
        return false;
    };
    !path.is_empty()
        && !path.contains(' ')
        && path.contains('.')
        && !line.is_empty()
        && line.bytes().all(|c| c.is_ascii_digit())
}

/// Parses a call trace line: x86 `  [? ]func+0x1a/0x40 [mod]` (symbolized or not), old x86
/// `[<ffffffff81d91389>] [? ]func+0x..`, powerpc `[sp] [ip] func+0x1a/0x40 [mod]
/// (unreliable)`, or arm `[<pc>] (func) from [<lr>] (caller+0x..)` (the caller is the frame).
/// Inlined frames (`func file.c:12 [inline]`) are not frames: titles name real ones.
/// (Hand-written: the parser runs it on every line of every report.)
pub fn parse_frame(text: &str) -> Option<Frame> {
    if !has_offset(text) {
        return None;
    }
    let mut t = text.trim_start();
    let mut anchored = t.len() < text.len();
    if let Some(i) = t.find(") from [<") {
        // arm: the return address names the frame.
        let r = &t[i + ") from ".len()..];
        let r = strip_angle_addr(r)?.trim_start().strip_prefix('(')?;
        let (func, off, module, rest) = parse_sym(r)?;
        return rest
            .starts_with(')')
            .then(|| frame(func, off, module, false, text));
    }
    // Markers and old prefixes in front of the frame.
    loop {
        let before = t.len();
        for m in [
            "<IRQ>", "<EOI>", "<NMI>", "<TASK>", "<#DF>", "<#DB>", "<#MC>",
        ] {
            if let Some(r) = t.strip_prefix(m) {
                t = r.trim_start();
            }
        }
        if let Some(r) = strip_stamp(t) {
            t = r.trim_start();
        }
        if let Some(r) = strip_angle_addr(t) {
            t = r.trim_start();
            anchored = true;
        }
        if t.len() == before {
            break;
        }
    }
    let mut ppc = false;
    if let Some(r) = strip_ppc_addr(t).and_then(strip_ppc_addr) {
        t = r.trim_start();
        ppc = true;
        anchored = true;
    }
    if !anchored {
        return None;
    }
    let (q, body) = match t.strip_prefix("? ") {
        Some(b) => (true, b),
        None => (false, t),
    };
    let (func, off, module, rest) = parse_sym(body)?;
    let mut rest = rest.trim();
    // arm64 marks where a frame came from: ` (T)` task, ` (P)` pt_regs, ` (C)`, ` (L)`.
    for m in [" (T)", " (P)", " (C)", " (L)"] {
        if let Some(r) = rest.strip_suffix(m) {
            rest = r.trim_end();
        } else if rest == &m[1..] {
            rest = "";
        }
    }
    let unreliable = match rest {
        "" => false,
        "(unreliable)" if ppc => true,
        r if is_source_location(r) => false,
        _ => return None,
    };
    Some(frame(func, off, module, q || unreliable, text))
}

/// `[<pc>] (func) from [<lr>] (caller+0x..)`: arm names the function a frame is in first,
/// then its caller (which [`parse_frame`] returns).
pub fn parse_arm_callee(text: &str) -> Option<Frame> {
    let t = text.trim_start();
    let i = t.find(") from [<")?;
    let r = strip_angle_addr(&t[..i])?.trim_start().strip_prefix('(')?;
    if r.is_empty() || !r.bytes().all(is_sym_char) {
        return None;
    }
    Some(frame(r, "0", None, false, text))
}

/// True for a line naming the faulting instruction, with or without a function (`RIP:
/// 0010:0xffffffffffffffff`, `PC is at 0x0`): a stack that follows it is the faulting one.
/// User-space instructions (`RIP: 0033:`) do not count.
pub fn is_ip_line(text: &str) -> bool {
    let t = text.trim_start();
    if let Some(r) = t.strip_prefix("RIP: ") {
        return !(r.starts_with("0033:") || r.starts_with("0023:") || r.starts_with("002b:"));
    }
    t.starts_with("IP: ")
        || t.starts_with("EIP: ")
        || (t.starts_with("NIP ") && t.contains(']'))
        || t.starts_with("pc : ")
        || t.starts_with("PC is at ")
        || t.starts_with("--- interrupt: ")
}

/// The function named by the line of the faulting instruction: x86 `RIP: 0010:f+0x..` (kernel
/// mode, old `[<addr>]` forms too), `IP: f+0x..`, powerpc `NIP [..] f+0x..` or `--- interrupt:
/// N at f+0x..`, arm64 `pc : f+0x..`, arm `PC is at f+0x..`, i386 `EIP: f+0x..`.
pub fn parse_ip(text: &str) -> Option<Frame> {
    if !has_offset(text) {
        return None;
    }
    let t = text.trim_start();
    let rest = if let Some(r) = t.strip_prefix("RIP: ") {
        // `RIP: 0010:func`, `RIP: 0010:[<addr>]  [<addr>] func`, or old `RIP: func`.
        let r = match r.split_once(':') {
            Some((seg, r)) if seg.len() == 4 && hex_run(seg.as_bytes()) == 4 => {
                if seg == "0033" || seg == "0023" || seg == "002b" {
                    return None;
                }
                r
            }
            _ => r,
        };
        r
    } else if let Some(r) = t.strip_prefix("IP: ").or_else(|| t.strip_prefix("EIP: ")) {
        r.split_once(':')
            .filter(|(seg, _)| seg.len() == 4 && hex_run(seg.as_bytes()) == 4)
            .map_or(r, |(_, r)| r)
    } else if let Some(r) = t.strip_prefix("NIP ") {
        strip_ppc_addr(r.trim_start())?
    } else if let Some(r) = t
        .strip_prefix("pc : ")
        .or_else(|| t.strip_prefix("PC is at "))
    {
        r
    } else if let Some(r) = t.strip_prefix("--- interrupt: ") {
        r.split_once(" at ")?.1
    } else {
        return None;
    };
    let mut r = rest.trim_start();
    while let Some(x) = strip_angle_addr(r) {
        r = x.trim_start();
    }
    let (func, off, module, _) = parse_sym(r)?;
    Some(frame(func, off, module, false, t))
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
    fn old_symbolized_and_arm_frames() {
        let f = parse_frame(" [<ffffffff8153c1bc>] ? kasan_object_err+0x1c/0x70").unwrap();
        assert_eq!(
            (f.func.as_str(), f.questionable),
            ("kasan_object_err", true)
        );
        let f = parse_frame(
            " <IRQ> [  420.408595]  [<ffffffff814249f9>] sched_show_task.cold.127+0x1c9/0x279",
        )
        .unwrap();
        assert_eq!(f.func, "sched_show_task");
        let f = parse_frame(" dump_stack+0x172/0x1f0 lib/dump_stack.c:113").unwrap();
        assert_eq!(f.func, "dump_stack");
        assert!(parse_frame(" __dump_stack lib/dump_stack.c:77 [inline]").is_none());
        let f = parse_frame(
            "[<802e12b8>] (trace_hardirqs_off) from [<80100a74>] (__dabt_svc+0x54/0xa0)",
        )
        .unwrap();
        assert_eq!(f.func, "__dabt_svc");
        let f = parse_frame("\tSyS_fcntl+0x5be/0xc70").unwrap();
        assert_eq!(f.func, "SyS_fcntl");
        for (line, func) in [
            (
                "RIP: 0010:[<ffffffff83408ca0>]  [<ffffffff83408ca0>] drm_legacy_newctx+0x190/0x290",
                "drm_legacy_newctx",
            ),
            ("IP: [<ffffffff82d4e304>] __memset+0x24/0x30", "__memset"),
            ("RIP: __check_object_size+0x3a2/0x4f0 RSP: ffff8801c15d7148", "__check_object_size"),
            ("pc : __raw_readb+0x18/0x2c", "__raw_readb"),
            ("PC is at write_comp_data+0x4c/0xd8", "write_comp_data"),
            ("--- interrupt: 700 at assert_slb_presence+0x2c/0x70", "assert_slb_presence"),
        ] {
            assert_eq!(parse_ip(line).map(|f| f.func), Some(func.to_string()), "{line}");
        }
    }
}
