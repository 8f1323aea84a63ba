//! `hotfuzz run`: boot a guest, run a program on it, print what happened.

use crate::cli::guest_flags::GuestArgs;
use anyhow::Result;
use hotfuzz::program::desc::Descriptions;
use hotfuzz::program::text::read_program;
use hotfuzz::run::reset::Guest;
use hotfuzz::run::runner::{describe_outcome, RunOptions};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Arguments of `hotfuzz run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Program file, or - for stdin.
    pub prog: std::path::PathBuf,
    /// Run it this many times on the same guest.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Limit for one run, in seconds (default: the sum of the operations' deadlines).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Do not collect KCOV coverage.
    #[arg(long)]
    pub no_kcov: bool,
    /// Write the run log here (default: run.log in the VM directory).
    #[arg(long)]
    pub run_log: Option<std::path::PathBuf>,
    /// File reports into this report store (e.g. reports).
    #[arg(long)]
    pub store: Option<std::path::PathBuf>,
    /// Seconds virtio-mem devices get to reach their requested size after the program.
    #[arg(long, default_value_t = 10)]
    pub settle: u64,
    /// Load descriptions from this directory instead of the embedded ones.
    #[arg(long)]
    pub descriptions: Option<std::path::PathBuf>,
    /// Print results as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub guest: GuestArgs,
}

/// The descriptions: a directory given on the command line, or the embedded ones.
pub fn descriptions(dir: Option<&Path>) -> Result<Descriptions> {
    match dir {
        Some(d) => Ok(Descriptions::load_dir(d)?),
        None => Ok(Descriptions::embedded()),
    }
}

/// `hotfuzz run PROG`.
pub fn run(a: RunArgs) -> Result<i32> {
    let d = descriptions(a.descriptions.as_deref())?;
    let prog = read_program(&a.prog, &d)?;
    let p = a.guest.config()?.prepare()?;
    // Guest::boot boots once more when the first guest cannot be driven (under TCG an
    // `Oops: int3` from the kernel's own text patching now and then): that says nothing
    // about the program.
    let mut guest = Guest::boot(&p, "hotfuzz", false, None, a.run_log.as_deref(), |_| Ok(()))?;
    if let Some(why) = &guest.first_boot_failed {
        eprintln!("hotfuzz: the first guest could not be driven ({why}); booted it once more");
    }
    let vm = guest.vm().clone();
    let run_log = match &a.run_log {
        Some(p) => p.clone(),
        None => vm.dir().join("run.log"),
    };
    let mut reported = false;
    let mut lost = false;
    let store = match &a.store {
        Some(dir) => Some(hotfuzz::store::Store::open(dir)?),
        None => None,
    };
    let kinfo = hotfuzz::store::kernel_info(&p.kernel);
    let record = hotfuzz::store::GuestRecord::new(
        vm.machine(),
        None,
        a.guest.bugzoo.as_deref(),
        Some(vm.accel()),
    );
    let mut json_runs = Vec::new();
    {
        let runner = guest.runner_mut();
        let opts = RunOptions {
            kcov: !a.no_kcov,
            timeout: a.timeout.map(Duration::from_secs),
            settle: Duration::from_millis(1000),
            repeat_budget: None,
        };
        for rep in 0..a.repeat.max(1) {
            let mut r = runner.run(&d, &prog, &opts)?;
            let verdict = hotfuzz::judge::judge(
                &vm,
                runner.agent(),
                &prog,
                &mut r,
                Duration::from_secs(a.settle),
            );
            if let Some(why) = &verdict.infra {
                eprintln!("hotfuzz: the run says nothing about the kernel: {why}");
                lost = true;
            }
            for i in &verdict.injections {
                eprintln!("hotfuzz: fault injection was armed: {i}");
            }
            if let Some(oom) = &verdict.oom {
                eprintln!("hotfuzz: the guest ran out of memory: {oom}");
            }
            let reports = verdict.reports;
            reported |= !reports.is_empty();
            if let Some(store) = &store {
                let mut unfiled = hotfuzz::store::Unfiled::default();
                for f in hotfuzz::store::file_run(
                    store,
                    &mut unfiled,
                    &reports,
                    &r,
                    &vm,
                    &run_log,
                    hotfuzz::store::Provenance {
                        kernel: &kinfo,
                        guest: &record,
                        injections: &verdict.injections,
                    },
                )
                .into_iter()
                .flatten()
                {
                    eprintln!(
                        "hotfuzz: {} report {}",
                        if f.new { "new" } else { "known" },
                        f.dir.display()
                    );
                }
                if !unfiled.is_empty() {
                    // Someone is watching: say so rather than keep them.
                    anyhow::bail!(
                        "{} report(s) could not be filed into {}",
                        unfiled.len(),
                        store.root().display()
                    );
                }
            }
            if a.json {
                json_runs.push(json!({
                    "repeat": rep,
                    "program": r.program_id,
                    "duration_ms": r.duration.as_millis() as u64,
                    "ops": r.ops.iter().map(|o| json!({
                        "index": o.index, "thread": o.thread, "op": prog.ops[o.index].print(&d),
                        "outcome": o.outcome, "dur_us": o.duration.as_micros() as u64,
                        "runs": o.runs, "oks": o.oks,
                    })).collect::<Vec<_>>(),
                    "reports": reports,
                    "lost": r.lost, "abandoned_threads": r.abandoned,
                    "cover_pcs": r.cover.values().map(|v| v.len()).sum::<usize>(),
                }));
            } else {
                if a.repeat > 1 {
                    outln!("== run {} of {}", rep + 1, a.repeat)?;
                }
                for o in &r.ops {
                    let runs = if o.runs > 1 {
                        format!(", {} of {} runs ok", o.oks, o.runs)
                    } else {
                        String::new()
                    };
                    outln!(
                        "{:>3} [t{}] {:<60} {} ({:.1} ms{runs})",
                        o.index,
                        o.thread,
                        prog.ops[o.index].print(&d),
                        describe_outcome(o.outcome.as_ref()),
                        o.duration.as_secs_f64() * 1000.0
                    )?;
                }
                let s = r.summary();
                outln!(
                    "program {} in {:.2}s: {}",
                    r.program_id,
                    r.duration.as_secs_f64(),
                    s.iter()
                        .map(|(k, v)| format!("{v} {k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
                if !r.cover.is_empty() {
                    outln!(
                        "kcov: {} PCs",
                        r.cover.values().map(|v| v.len()).sum::<usize>()
                    )?;
                }
                for rep in &reports {
                    outln!(
                        "REPORT: {}{}",
                        rep.title,
                        if rep.corrupted.is_some() {
                            " (corrupted)"
                        } else {
                            ""
                        }
                    )?;
                }
            }
            if let Some(why) = &r.lost {
                lost = true;
                eprintln!("hotfuzz: {why}");
                for l in vm.console().last_lines(20) {
                    eprintln!("  console: {}", l.text);
                }
                break;
            }
        }
    }
    drop(vm);
    let mut vm = guest
        .into_vm()
        .ok_or_else(|| anyhow::anyhow!("the guest is still in use"))?;
    // The logs are what a run produces: keep them (without the bulky initrd).
    vm.keep_dir();
    if a.json {
        outln!("{}", serde_json::Value::Array(json_runs))?;
    }
    eprintln!("console log: {}", vm.console_log().display());
    eprintln!("run log:     {}", run_log.display());
    vm.poweroff(Duration::from_secs(30));
    Ok(if reported || lost { 1 } else { 0 })
}
