//! Title normalization: what changes from run to run (addresses, numbers, line numbers, CPU
//! numbers, executor ids) is replaced by placeholders syzkaller also uses (`ADDR`, `NUM`,
//! `LINE`, `IP`, `CPU`), so that the same bug gets the same title on every run.

use regex::Regex;
use std::borrow::Cow;
use std::sync::LazyLock;

static FUNC_OFF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([A-Za-z_][A-Za-z0-9_.]*)\+0x[0-9a-f]+/0x[0-9a-f]+").unwrap());
static SRC_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([A-Za-z0-9_\-/.]+\.[a-zA-Z]+):[0-9]+").unwrap());
static EXECUTOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"syz-executor\.?[0-9]+(?:[/:][0-9]+)?|\bsyz\.[0-9]+\.[0-9]+|syzkaller[0-9]+(?:[/:][0-9]+)?")
        .unwrap()
});
static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?::[0-9]{1,5})?\b").unwrap()
});
static HEX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(^|[^A-Za-z0-9_])(?:0x[0-9a-fA-F]+|[0-9a-fA-F]*[0-9][0-9a-fA-F]*)\b").unwrap()
});
static CPU: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"CPU#[0-9]+").unwrap());
static NUM: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b[0-9]+\b|[0-9]{7,}").unwrap());

/// Longest title kept.
pub const MAX_TITLE: usize = 120;

fn hex_like(m: &str) -> bool {
    let h = m.strip_prefix("0x").unwrap_or(m);
    m.starts_with("0x") || h.len() >= 6
}

/// Normalizes a title: control characters removed, spaces collapsed, `func+0x1/0x2` → `func`,
/// `file.c:123` → `file.c:LINE`, `syz-executor.3` → `syz-executor`, IPv4 addresses → `IP`,
/// hex numbers (`0x…` or six digits and more) → `ADDR`, `CPU#1` → `CPU`, other numbers →
/// `NUM`, at most [`MAX_TITLE`] characters.
pub fn normalize(t: &str) -> String {
    let mut s = String::with_capacity(t.len());
    for c in t.chars() {
        if c.is_whitespace() {
            if !s.ends_with(' ') && !s.is_empty() {
                s.push(' ');
            }
        } else if !c.is_control() {
            s.push(c);
        }
    }
    let t = s.trim_end();
    let t = FUNC_OFF.replace_all(t, "$1");
    let t = SRC_LINE.replace_all(&t, "$1:LINE");
    let t = replace(&t, &EXECUTOR, |m| {
        if m.starts_with("syz-executor") {
            "syz-executor"
        } else if m.starts_with("syzkaller") {
            "syzkaller"
        } else {
            "syz"
        }
        .to_string()
    });
    let t = IPV4.replace_all(&t, "IP");
    let t = HEX.replace_all(&t, |c: &regex::Captures| {
        let m = &c[0][c[1].len()..];
        if hex_like(m) {
            format!("{}ADDR", &c[1])
        } else {
            c[0].to_string()
        }
    });
    let t = CPU.replace_all(&t, "CPU");
    let t = NUM.replace_all(&t, "NUM");
    let mut s = t.into_owned();
    if s.chars().count() > MAX_TITLE {
        s = s.chars().take(MAX_TITLE).collect();
    }
    s
}

fn replace<'a>(t: &'a str, re: &Regex, f: impl Fn(&str) -> String) -> Cow<'a, str> {
    re.replace_all(t, |c: &regex::Captures| f(&c[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize("WARNING in foo+0x1/0x2"), "WARNING in foo");
        assert_eq!(
            normalize("kernel panic: Attempted to kill init! exitcode=0x0000000b"),
            "kernel panic: Attempted to kill init! exitcode=ADDR"
        );
        assert_eq!(
            normalize("kernel BUG at mm/memory_hotplug.c:1234"),
            "kernel BUG at mm/memory_hotplug.c:LINE"
        );
        assert_eq!(
            normalize("lost  connection\t to 12 machines"),
            "lost connection to NUM machines"
        );
        assert_eq!(
            normalize("virtio_mem: bad 00000000deadbeef"),
            "virtio_mem: bad ADDR"
        );
        // Function names with digits stay.
        assert_eq!(
            normalize("WARNING in ext4_fill_super2"),
            "WARNING in ext4_fill_super2"
        );
        assert_eq!(
            normalize("INFO: Allocated in fasync_helper+0x29/0x90 age=1 cpu=1 pid=6024"),
            "INFO: Allocated in fasync_helper age=NUM cpu=NUM pid=NUM"
        );
        assert_eq!(
            normalize("SYZFATAL: executor 4 failed 11 times: mkdir ./syzkaller-testdir264563108"),
            "SYZFATAL: executor NUM failed NUM times: mkdir ./syzkaller-testdirNUM"
        );
        assert_eq!(
            normalize("KASAN: slab-out-of-bounds in gup_huge_pmd at addr ffff8800b46111c0"),
            "KASAN: slab-out-of-bounds in gup_huge_pmd at addr ADDR"
        );
        assert_eq!(
            normalize("BUG: in syz-executor.3 on CPU#2"),
            "BUG: in syz-executor on CPU"
        );
        assert_eq!(normalize("peer 10.1.2.3:80 gone"), "peer IP gone");
        assert_eq!(normalize("a facade stays"), "a facade stays");
        assert_eq!(normalize(&"x".repeat(300)).len(), MAX_TITLE);
    }
}
