//! Running kbuild: `make` in its own process group (killed with hotfuzz, never left behind),
//! every line into a log file, live progress on a terminal, and a failure that quotes the
//! first compiler error and names the log.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How to run make for one build.
#[derive(Debug, Clone)]
pub struct Make {
    /// The source tree (`make -C`).
    pub src: PathBuf,
    /// The build directory (`O=`).
    pub obj: PathBuf,
    /// `ARCH=`, `CROSS_COMPILE=`, `CC=` and the like.
    pub vars: Vec<String>,
    /// Environment (ccache's directory, reproducible build stamps).
    pub env: Vec<(String, OsString)>,
    /// Parallel jobs.
    pub jobs: usize,
}

/// A failed make: what to show.
#[derive(Debug)]
pub struct MakeError {
    /// The first line that looks like the cause.
    pub first_error: Option<String>,
    /// The full log.
    pub log: PathBuf,
    /// Exit status text.
    pub status: String,
}

impl std::fmt::Display for MakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.first_error {
            Some(e) => write!(f, "{e} (make {}; log: {})", self.status, self.log.display()),
            None => write!(f, "make {} (log: {})", self.status, self.log.display()),
        }
    }
}

impl std::error::Error for MakeError {}

impl Make {
    /// The command for `targets`, with `extra` variables.
    fn command(&self, targets: &[&str], extra: &[String]) -> Command {
        let mut c = Command::new("make");
        c.arg("-C")
            .arg(&self.src)
            .arg(format!("O={}", self.obj.display()))
            .arg(format!("-j{}", self.jobs.max(1)))
            .args(&self.vars)
            .args(extra)
            .args(targets)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        // Messages in English, so errors can be found.
        c.env("LC_ALL", "C");
        c
    }

    /// Runs make quietly (configuration targets), appending to `log`.
    pub fn quiet(&self, targets: &[&str], extra: &[String], log: &Path) -> Result<()> {
        self.run(targets, extra, log, None)
    }

    /// Runs make with progress shown as `what`, appending to `log`.
    pub fn build(&self, targets: &[&str], extra: &[String], log: &Path, what: &str) -> Result<()> {
        self.run(targets, extra, log, Some(what))
    }

    fn run(
        &self,
        targets: &[&str],
        extra: &[String],
        log: &Path,
        progress: Option<&str>,
    ) -> Result<()> {
        let mut logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        writeln!(
            logf,
            "### make -C {} O={} {} {} {}",
            self.src.display(),
            self.obj.display(),
            self.vars.join(" "),
            extra.join(" "),
            targets.join(" ")
        )?;
        let mut child = hotfuzz_vm::process::spawn(self.command(targets, extra))
            .context("starting make (is build-essential installed?)")?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut readers = Vec::new();
        for pipe in [
            child
                .take_stdout()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .take_stderr()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for l in BufReader::new(pipe).lines() {
                    let Ok(l) = l else { break };
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            }));
        }
        drop(tx);
        let mut shown = progress.map(Progress::new);
        for line in rx {
            writeln!(logf, "{line}")?;
            if let Some(p) = shown.as_mut() {
                p.line(&line);
            }
        }
        for r in readers {
            let _ = r.join();
        }
        let status = child
            .wait_timeout(Duration::from_secs(3600 * 24))
            .context("make did not exit")?;
        if let Some(p) = shown {
            p.finish();
        }
        logf.flush()?;
        if !status.success() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            // This run's part of the log only.
            let part = text.rsplit("### make ").next().unwrap_or(&text);
            let status = match status.code() {
                Some(c) => format!("exited with {c}"),
                None => "was killed".to_string(),
            };
            if hotfuzz_vm::process::stop_requested() {
                bail!("the build was interrupted (log: {})", log.display());
            }
            return Err(MakeError {
                first_error: first_error(part),
                log: log.to_path_buf(),
                status,
            }
            .into());
        }
        Ok(())
    }
}

/// The first line of a build log that states the cause: a compiler or linker error, else
/// make's own complaint.
pub fn first_error(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    let is_error = |l: &str| {
        l.contains(": error:")
            || l.contains(": fatal error:")
            || l.contains("undefined reference to")
            || l.contains(": Error:")
            || l.starts_with("ERROR: ")
    };
    lines
        .iter()
        .find(|l| is_error(l))
        .or_else(|| {
            lines
                .iter()
                .find(|l| l.contains("*** ") && !l.contains("Error 1") && !l.contains("Error 2"))
        })
        .or_else(|| {
            lines
                .iter()
                .find(|l| l.contains("make") && l.contains("Error"))
        })
        .map(|l| l.trim().to_string())
}

/// What a terminal sees while make runs: objects compiled so far and the current one.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: String,
    start: Instant,
    last_print: Instant,
    objects: u64,
}

impl Progress {
    fn new(what: &str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .expect("valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        if bar.is_none() {
            eprintln!("hotfuzz build: {what}: started");
        }
        Progress {
            bar,
            what: what.to_string(),
            start: Instant::now(),
            last_print: Instant::now(),
            objects: 0,
        }
    }

    fn line(&mut self, l: &str) {
        let t = l.trim_start();
        let step = t.split_whitespace().next().unwrap_or("");
        if !matches!(step, "CC" | "AS" | "LD" | "AR" | "HOSTCC" | "CC [M]") {
            return;
        }
        self.objects += 1;
        if let Some(b) = &self.bar {
            b.set_message(format!("{}: {} steps, {t}", self.what, self.objects));
        } else if self.last_print.elapsed() > Duration::from_secs(60) {
            self.last_print = Instant::now();
            eprintln!(
                "hotfuzz build: {}: {} steps in {:.0?}",
                self.what,
                self.objects,
                self.start.elapsed()
            );
        }
    }

    fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_compiler_error_is_the_cause() {
        let log = "  CC      mm/a.o\n\
                   mm/b.c: In function 'f':\n\
                   mm/b.c:12:5: error: 'x' undeclared (first use in this function)\n\
                   mm/b.c:13:5: error: 'y' undeclared\n\
                   make[4]: *** [scripts/Makefile.build:229: mm/b.o] Error 1\n\
                   make: *** [Makefile:224: __sub-make] Error 2\n";
        assert_eq!(
            first_error(log).unwrap(),
            "mm/b.c:12:5: error: 'x' undeclared (first use in this function)"
        );
        let log = "  LD      vmlinux.o\nld: mm/x.o: in function `f':\nx.c:(.text+0x1): undefined reference to `g'\n";
        assert!(first_error(log)
            .unwrap()
            .contains("undefined reference to `g'"));
        let log = "make[1]: *** No rule to make target 'bzImagee'.  Stop.\nmake: *** [Makefile:224: __sub-make] Error 2\n";
        assert!(first_error(log).unwrap().contains("No rule to make target"));
    }

    #[test]
    fn a_failing_make_names_its_log_and_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("Makefile"),
            "all:\n\t@echo '  CC      x.o'\n\t@echo 'x.c:1:1: error: boom' >&2\n\t@false\n",
        )
        .unwrap();
        let obj = d.path().join("obj");
        std::fs::create_dir(&obj).unwrap();
        let m = Make {
            src: d.path().into(),
            obj,
            vars: vec![],
            env: vec![],
            jobs: 1,
        };
        let log = d.path().join("build.log");
        let e = m.build(&["all"], &[], &log, "test").unwrap_err();
        let me = e.downcast_ref::<MakeError>().expect("a MakeError");
        assert_eq!(me.first_error.as_deref(), Some("x.c:1:1: error: boom"));
        assert!(e.to_string().contains("build.log"), "{e}");
        assert!(std::fs::read_to_string(&log)
            .unwrap()
            .contains("  CC      x.o"));
    }
}
