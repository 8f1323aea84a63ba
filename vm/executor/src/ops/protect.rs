//! The pages hotfuzz itself runs on. memory_failure() on one of them (`hard_offline`,
//! hwpoison's `corrupt-pfn`) kills what maps it: the guest agent, this executor, init (and the
//! kernel panics with "Attempted to kill init!"), or every later shell that runs a poisoned
//! page of busybox. That is the harness's doing, not the kernel's, so those operations refuse
//! such PFNs. Protected: every page mapped by init and by the agent (this executor's parent),
//! the file-backed pages this executor maps, and the whole page cache of the binaries and
//! libraries they run (the guest's root is an initramfs, so every file page is resident).

use crate::sys;
use std::collections::HashSet;
use std::sync::OnceLock;

/// Binaries the guest's infrastructure runs, besides what the processes map right now.
const BINARIES: &[&str] = &[
    "/bin/busybox",
    "/usr/bin/hotfuzz-executor",
    "/usr/sbin/dropbear",
];

static PROTECTED: OnceLock<HashSet<u64>> = OnceLock::new();

/// Whether `pfn` is one of hotfuzz's own pages (computed once per executor, on first use).
pub fn protected(pfn: u64) -> bool {
    PROTECTED.get_or_init(collect).contains(&pfn)
}

/// A VMA of /proc/PID/maps: start, end, path (empty for anonymous memory).
fn vmas(pid: &str) -> Vec<(u64, u64, String)> {
    let Ok(text) = sys::read_file(&format!("/proc/{pid}/maps"), 1 << 20) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (lo, hi) = f.next()?.split_once('-')?;
            let path = f.nth(4).unwrap_or("").to_string();
            Some((
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
                path,
            ))
        })
        .collect()
}

/// PFNs of the present pages of [start, end) in process `pid`'s address space.
fn present_pfns(pid: &str, start: u64, end: u64, out: &mut HashSet<u64>) {
    let page = sys::page_size();
    let Ok(fd) = sys::open(&format!("/proc/{pid}/pagemap"), libc::O_RDONLY) else {
        return;
    };
    let pages = ((end.saturating_sub(start)) / page).min(1 << 20) as usize;
    let mut buf = vec![0u8; 8 * pages.min(4096)];
    let mut done = 0usize;
    while done < pages {
        let n = (pages - done).min(4096);
        let off = (start / page + done as u64) * 8;
        let Ok(got) = sys::pread(&fd, &mut buf[..n * 8], off) else {
            return;
        };
        for e in buf[..got].chunks_exact(8) {
            let v = u64::from_le_bytes(e.try_into().expect("8 bytes"));
            if v & (1 << 63) != 0 {
                let pfn = v & ((1 << 55) - 1);
                if pfn != 0 {
                    out.insert(pfn);
                }
            }
        }
        if got < n * 8 {
            return;
        }
        done += n;
    }
}

/// Maps `path` whole (faulting its pages in) and records the PFNs of its page cache.
fn file_pfns(path: &str, out: &mut HashSet<u64>) {
    let Ok(fd) = sys::open(path, libc::O_RDONLY) else {
        return;
    };
    // SAFETY: fstat into a zeroed stat of our own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.0, &mut st) } != 0 || st.st_size <= 0 {
        return;
    }
    let len = st.st_size as usize;
    // SAFETY: a fresh read-only shared mapping of a file we opened; unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd.0,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return;
    }
    let start = p as u64;
    present_pfns("self", start, start + len as u64, out);
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(p, len) };
}

fn collect() -> HashSet<u64> {
    let mut out = HashSet::new();
    let mut files: HashSet<String> = BINARIES.iter().map(|s| s.to_string()).collect();
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() }.to_string();
    for pid in ["1", parent.as_str()] {
        for (lo, hi, path) in vmas(pid) {
            present_pfns(pid, lo, hi, &mut out);
            if path.starts_with('/') {
                files.insert(path);
            }
        }
    }
    for (_, _, path) in vmas("self") {
        if path.starts_with('/') {
            files.insert(path);
        }
    }
    for f in &files {
        file_pfns(f, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_file_pages_are_found() {
        // Our own executable is mapped and resident: its pages show up when run as root
        // (pagemap hides PFNs from others); without root the set is empty and says so.
        let mut out = HashSet::new();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        file_pfns(exe.to_str().unwrap(), &mut out);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(!out.is_empty(), "no PFNs for {}", exe.display());
        } else {
            eprintln!("not root: pagemap gives no PFNs, nothing to check");
        }
        assert!(!vmas("self").is_empty());
    }
}
