//! What a reproduction starts from: a report directory, a console log with its run log, or a
//! program file. Each gives the bug's titles (when known), the history of programs (newest
//! last) and the guest they ran on.

use crate::program::desc::Descriptions;
use crate::program::prog::Program;
use crate::run::runlog::{devices_at_start, program_texts, DeviceAtStart};
use crate::store::Meta;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// The starting point of a reproduction.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The bug's titles, title first (empty: whatever the programs make the kernel report).
    pub titles: Vec<String>,
    /// Programs that ran before the report, oldest first; the last one ran when it appeared.
    pub history: Vec<Program>,
    /// Per program of `history`: the virtio-mem devices' sizes when it started, as the run
    /// log recorded them (empty when it did not).
    pub devices: Vec<Vec<DeviceAtStart>>,
    /// The fuzzing profile the guest was booted with, when recorded.
    pub profile: Option<String>,
    /// Bug zoo bugs armed in that guest, when recorded.
    pub bugzoo: Option<String>,
    /// The report directory, when the source is one.
    pub report_dir: Option<PathBuf>,
}

/// Splits `programs.prog` (programs headed by `# program I of N` lines) and parses each,
/// errors naming the file and line.
pub fn parse_history(text: &str, file: &Path, d: &Descriptions) -> Result<Vec<Program>> {
    Ok(parse_history_with_devices(text, file, d)?
        .into_iter()
        .map(|(p, _)| p)
        .collect())
}

/// [`parse_history`], with each program's devices at its start (its
/// [`crate::run::runlog::DEVICES_AT_START`] comment).
pub fn parse_history_with_devices(
    text: &str,
    file: &Path,
    d: &Descriptions,
) -> Result<Vec<(Program, Vec<DeviceAtStart>)>> {
    let mut chunks: Vec<(usize, String)> = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.starts_with("# program ") || chunks.is_empty() {
            chunks.push((i, String::new()));
        }
        let c = chunks.last_mut().expect("pushed");
        c.1.push_str(l);
        c.1.push('\n');
    }
    let mut out = Vec::new();
    for (first, chunk) in chunks {
        let p = Program::parse(&chunk, d)
            .map_err(|e| anyhow!("{}:{}:{}: {}", file.display(), first + e.line, e.col, e.msg))?;
        if !p.ops.is_empty() {
            out.push((p, devices_at_start(&chunk)));
        }
    }
    Ok(out)
}

/// A program that puts virtio-mem devices back to their sizes in `devs` on a fresh guest:
/// each plugged size is requested and waited for, then a resize still in progress is
/// requested again. `None` when there is nothing to restore.
pub fn restore_devices(devs: &[DeviceAtStart], d: &Descriptions) -> Option<Program> {
    let plugged: Vec<&DeviceAtStart> = devs.iter().filter(|x| x.plugged > 0).collect();
    let moving: Vec<&DeviceAtStart> = devs.iter().filter(|x| x.requested != x.plugged).collect();
    if plugged.is_empty() && moving.is_empty() {
        return None;
    }
    let mut text = String::new();
    for x in &plugged {
        text += &format!(
            "virtio_mem_resize(dev={:#x}, size={:#x})\n",
            x.dev, x.plugged
        );
    }
    for x in &plugged {
        // The longest wait the descriptions allow; a 4 GiB plug takes about a second under TCG.
        text += &format!("virtio_mem_wait(dev={:#x}, ms=0x1388)\n", x.dev);
    }
    for x in &moving {
        text += &format!(
            "virtio_mem_resize(dev={:#x}, size={:#x})\n",
            x.dev, x.requested
        );
    }
    Program::parse(&text, d).ok()
}

impl Source {
    /// Loads `path`: a report directory (with `meta.yaml`), a program file, or a console log
    /// (then `run_log` gives the programs; a run log alone is fine too).
    pub fn load(path: &Path, run_log: Option<&Path>, d: &Descriptions) -> Result<Source> {
        if path.is_dir() {
            return Source::from_report_dir(path, d);
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let logs_programs = text.contains(" executing program ");
        let reports = crate::report::parse(&text);
        if run_log.is_none() && !logs_programs && reports.is_empty() {
            let p = crate::program::text::read_program(path, d)?;
            return Ok(Source {
                history: vec![p],
                devices: vec![Vec::new()],
                ..Source::default()
            });
        }
        let titles = reports
            .iter()
            .find(|r| r.corrupted.is_none())
            .or(reports.first())
            .map(|r| r.titles().map(str::to_string).collect())
            .unwrap_or_default();
        let (log_text, log_path) = match run_log {
            Some(p) => (
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
                p.to_path_buf(),
            ),
            None => (text.clone(), path.to_path_buf()),
        };
        let mut history = Vec::new();
        let mut devices = Vec::new();
        for (i, t) in program_texts(&log_text).iter().enumerate() {
            devices.push(devices_at_start(t));
            history.push(Program::parse(t, d).map_err(|e| {
                anyhow!(
                    "{}: program {} of the run log, line {}: {}",
                    log_path.display(),
                    i + 1,
                    e.line,
                    e.msg
                )
            })?);
        }
        if history.is_empty() {
            bail!(
                "{}: no programs (a run log has `executing program` lines; pass it with --run-log)",
                log_path.display()
            );
        }
        // The history before the report: the console's kernel-log markers name the program
        // running when it appeared; later programs cannot have caused it.
        if let Some(rep) = reports.first() {
            let running = text
                .lines()
                .take(rep.start_line)
                .filter_map(hotfuzz_executor::protocol::parse_kmsg_marker)
                .map(|m| m.program)
                .last();
            if let Some(i) = running.and_then(|id| history.iter().rposition(|p| p.id(d) == id)) {
                history.truncate(i + 1);
                devices.truncate(i + 1);
            }
        }
        Ok(Source {
            titles,
            history,
            devices,
            ..Source::default()
        })
    }

    fn from_report_dir(dir: &Path, d: &Descriptions) -> Result<Source> {
        let meta_path = dir.join("meta.yaml");
        let meta_text = std::fs::read_to_string(&meta_path)
            .with_context(|| format!("{} is not a report directory", dir.display()))?;
        let meta: Meta = serde_yaml::from_str(&meta_text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            anyhow!("{}{at}: {e}", meta_path.display())
        })?;
        let progs = dir.join("programs.prog");
        let with_devices = match std::fs::read_to_string(&progs) {
            Ok(t) => parse_history_with_devices(&t, &progs, d)?,
            Err(_) => {
                let rl = dir.join("run.log");
                let t = std::fs::read_to_string(&rl).with_context(|| {
                    format!("{}: neither programs.prog nor run.log", dir.display())
                })?;
                program_texts(&t)
                    .iter()
                    .filter_map(|t| Some((Program::parse(t, d).ok()?, devices_at_start(t))))
                    .collect()
            }
        };
        let (history, devices): (Vec<Program>, Vec<Vec<DeviceAtStart>>) =
            with_devices.into_iter().unzip();
        if history.is_empty() {
            bail!("{}: the report has no programs to replay", dir.display());
        }
        Ok(Source {
            titles: std::iter::once(meta.title.clone())
                .chain(meta.alt_titles.iter().cloned())
                .collect(),
            history,
            devices,
            profile: meta.guest.as_ref().and_then(|g| g.profile.clone()),
            bugzoo: meta.guest.as_ref().and_then(|g| g.bugzoo.clone()),
            report_dir: Some(dir.to_path_buf()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_at_a_programs_start_come_back_as_a_program_that_restores_them() {
        let d = Descriptions::embedded();
        let text = "# program 1 of 2\nyield()\n# program 2 of 2: the one running when the report appeared\n# devices at start: dev 0x0 plugged 0x100000000 requested 0x20000000; dev 0x1 plugged 0x0 requested 0x0\nyield()\n";
        let h = parse_history_with_devices(text, Path::new("p"), &d).unwrap();
        assert_eq!(h.len(), 2);
        assert!(h[0].1.is_empty());
        let start = restore_devices(&h[1].1, &d).unwrap();
        assert_eq!(
            start.print(&d),
            "virtio_mem_resize(dev=0x0, size=0x100000000)\n\
             virtio_mem_wait(dev=0x0, ms=0x1388)\n\
             virtio_mem_resize(dev=0x0, size=0x20000000)\n"
        );
        // Nothing plugged and nothing moving: nothing to restore.
        assert!(restore_devices(&h[1].1[1..], &d).is_none());
    }

    #[test]
    fn history_errors_name_the_line() {
        let d = Descriptions::embedded();
        let text = "# program 1 of 2\nyield()\n# program 2 of 2: the one running when the report appeared\nyield()\nbogus_op()\n";
        let e = parse_history(text, Path::new("r/programs.prog"), &d).unwrap_err();
        assert!(e.to_string().starts_with("r/programs.prog:5:"), "{e}");
        let ok = parse_history(&text.replace("bogus_op()\n", ""), Path::new("x"), &d).unwrap();
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn a_report_directory_gives_its_guest() {
        let d = Descriptions::embedded();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let mut rep = crate::report::parse("[ 1.0] Kernel panic - not syncing: x\n").remove(0);
        rep.title = "WARNING in f".into();
        let machine = hotfuzz_vm::MachineConfig::new(hotfuzz_vm::Arch::X86_64);
        let ev = crate::store::Evidence {
            programs: vec!["yield()\n".into(), "sleep_ms(ms=0x1)\n".into()],
            guest: Some(crate::store::GuestRecord::new(
                &machine,
                Some("bbm"),
                Some("warn_reonline"),
                None,
            )),
            ..Default::default()
        };
        let f = store.file(&rep, &ev).unwrap();
        let s = Source::load(&f.dir, None, &d).unwrap();
        assert_eq!(s.profile.as_deref(), Some("bbm"));
        assert_eq!(s.bugzoo.as_deref(), Some("warn_reonline"));
        assert_eq!(s.history.len(), 2);
        assert_eq!(s.titles, ["WARNING in f"]);
    }
}
