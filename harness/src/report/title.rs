//! Title normalization: addresses, numbers and line numbers are replaced so that the same bug
//! gets the same title on every run.

use regex::Regex;
use std::sync::LazyLock;

static FUNC_OFF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([A-Za-z0-9_]+)\+0x[0-9a-f]+/0x[0-9a-f]+").unwrap());
static SRC_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([A-Za-z0-9_\-/.]+\.[ch]):[0-9]+").unwrap());
static HEX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(0x[0-9a-fA-F]+|[0-9a-fA-F]*[0-9][0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*|[0-9a-fA-F]{6,})\b",
    )
    .unwrap()
});
static NUM: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b[0-9]+\b").unwrap());
static SPACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+").unwrap());

/// Longest title kept.
pub const MAX_TITLE: usize = 120;

/// Normalizes a title: `func+0x1/0x2` → `func`, `file.c:123` → `file.c:LINE`, hex numbers →
/// `ADDR`, decimal numbers → `NUM`, control characters removed, spaces collapsed, at most
/// [`MAX_TITLE`] characters.
pub fn normalize(t: &str) -> String {
    let t: String = t.chars().filter(|c| !c.is_control() || *c == ' ').collect();
    let t = FUNC_OFF.replace_all(&t, "$1");
    let t = SRC_LINE.replace_all(&t, "$1:LINE");
    let t = HEX.replace_all(&t, "ADDR");
    let t = NUM.replace_all(&t, "NUM");
    let t = SPACES.replace_all(t.trim(), " ");
    let mut s = t.into_owned();
    if s.chars().count() > MAX_TITLE {
        s = s.chars().take(MAX_TITLE).collect();
    }
    s
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
        assert_eq!(normalize(&"x".repeat(300)).len(), MAX_TITLE);
    }
}
