//! A 100 MB console log streamed from disk: every report is found and memory stays bounded.
//! A test file of its own so the peak RSS it measures is not other tests'.

mod golden;

use golden::{goldens, Golden};
use hotfuzz::report;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Writes `logs` over and over into a file of about `size` bytes; returns the path and how
/// many reports the copies hold.
fn big_log(dir: &std::path::Path, logs: &[&Golden], size: usize) -> (std::path::PathBuf, usize) {
    use std::io::Write;
    let path = dir.join("big.log");
    let mut expected = 0usize;
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut written = 0usize;
    'outer: loop {
        for g in logs {
            f.write_all(g.log.as_bytes()).unwrap();
            f.write_all(b"hotfuzz-init: ready\n").unwrap();
            written += g.log.len() + 20;
            expected += g.expect.len();
            if written >= size {
                break 'outer;
            }
        }
    }
    f.flush().unwrap();
    (path, expected)
}

/// 100 MB of console logs full of reports, streamed from disk: nearly every report is found,
/// and memory grows with the reports found, not with the log.
#[test]
fn hundred_megabyte_logs_in_bounded_memory() {
    let gs = goldens();
    let dir = tempfile::tempdir().unwrap();

    // Noise only (boot, hotplug, OOM kills, sysrq dumps): the parser's own memory is bounded.
    let noise: Vec<&Golden> = gs.iter().filter(|g| g.expect.is_empty()).collect();
    assert!(noise.len() >= 3);
    let (path, _) = big_log(dir.path(), &noise, 100 << 20);
    let before = peak_rss_kib();
    let file = std::fs::File::open(&path).unwrap();
    let got = report::linux::parse_reader(std::io::BufReader::new(file)).unwrap();
    let grew = peak_rss_kib().saturating_sub(before);
    assert!(
        got.is_empty(),
        "{:?}",
        got.iter().map(|r| &r.title).collect::<Vec<_>>()
    );
    assert!(
        grew < 16 * 1024,
        "peak RSS grew by {grew} KiB for 100 MB of noise"
    );

    // Console logs only: a pasted splat (quoted, wrapped) is not part of a console log.
    let console: Vec<&Golden> = gs.iter().filter(|g| g.log.starts_with("20")).collect();
    let (path, expected) = big_log(dir.path(), &console, 100 << 20);
    let before = peak_rss_kib();
    let file = std::fs::File::open(&path).unwrap();
    let got = report::linux::parse_reader(std::io::BufReader::new(file)).unwrap();
    let grew = peak_rss_kib().saturating_sub(before);
    // Concatenated logs can merge two reports that meet at a file boundary; nearly all are found.
    assert!(
        got.len() * 100 >= expected * 95,
        "{} of {expected} reports",
        got.len()
    );
    // What the reports hold (their text, kept twice at most while the vector grows), plus a
    // bounded working set.
    let held_kib = got.iter().map(|r| r.text.len() + 200).sum::<usize>() as u64 / 1024;
    assert!(
        grew < 2 * held_kib + 16 * 1024,
        "peak RSS grew by {grew} KiB for a 100 MB log whose reports hold {held_kib} KiB"
    );
}

/// A reader of `n` bytes of `fill` without a newline, then `tail`: a huge line that is never
/// in memory at once.
struct HugeLine {
    left: usize,
    fill: [u8; 8192],
    tail: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for HugeLine {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return self.tail.read(buf);
        }
        let n = buf.len().min(self.left).min(self.fill.len());
        buf[..n].copy_from_slice(&self.fill[..n]);
        self.left -= n;
        Ok(n)
    }
}

/// A 300 MB line (a console flooded without newlines) costs no memory and hides nothing: the
/// report after it is found.
#[test]
fn three_hundred_megabyte_line() {
    let gs = goldens();
    let g = gs
        .iter()
        .find(|g| g.path.ends_with("warn.log"))
        .expect("warn.log");
    let mut fill = [b'a'; 8192];
    fill[..27].copy_from_slice(b"[  1.000000] WARNING: CPU: ");
    let reader = HugeLine {
        left: 300 << 20,
        fill,
        tail: std::io::Cursor::new(format!("\n{}", g.log).into_bytes()),
    };
    let before = peak_rss_kib();
    let got = report::parse_reader(std::io::BufReader::new(reader)).unwrap();
    let grew = peak_rss_kib().saturating_sub(before);
    let titles: Vec<&str> = got.iter().map(|r| r.title.as_str()).collect();
    assert!(
        titles.contains(&g.expect[0].title.as_str()),
        "{titles:?} lacks {}",
        g.expect[0].title
    );
    assert!(
        grew < 16 * 1024,
        "peak RSS grew by {grew} KiB for a 300 MB line"
    );
}
