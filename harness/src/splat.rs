//! A quick screen of console lines for kernel splats and errors. It only says "look here";
//! turning a log into titled reports is the report parser's job.

/// Markers of the start of a kernel report or a driver error.
const MARKERS: &[&str] = &[
    "WARNING:",
    "BUG:",
    "kernel BUG at",
    "Oops",
    "general protection fault",
    "Kernel panic",
    "INFO: task",
    "rcu: INFO:",
    "INFO: rcu_",
    "Unable to handle kernel",
    "UBSAN:",
    "KASAN:",
    "KFENCE:",
    "list_add corruption",
    "list_del corruption",
    "refcount_t:",
    "fake-offline page referenced",
    "pages are still in use",
    "marking device broken",
    "Bad page state",
    "Bad page map",
    "Attempted to kill init",
];

/// True when a console line looks like the start of a splat.
pub fn looks_like_splat(line: &str) -> bool {
    MARKERS.iter().any(|m| line.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screens() {
        assert!(looks_like_splat(
            "[   12.3] WARNING: CPU: 1 PID: 55 at drivers/virtio/virtio_mem.c:1023 x+0x1/0x2"
        ));
        assert!(looks_like_splat(
            "[ 1.0] BUG: Bad page state in process x  pfn:1234"
        ));
        assert!(!looks_like_splat(
            "[ 1.0] virtio_mem virtio1: plugged size: 0x0"
        ));
        assert!(!looks_like_splat("hotfuzz-init: ready"));
    }
}
