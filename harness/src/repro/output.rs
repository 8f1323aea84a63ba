//! Writing a reproduction's results into the report directory: `repro.prog`, `repro.sh`,
//! `repro.log`, `repro-report.txt`, `repro-console.log`, and the reliability in `meta.yaml`.
//! Every file is written atomically; `meta.yaml` under the store's lock.

use super::minimize::Minimized;
use super::pool::{CrashFiles, TargetBug};
use super::script::{self, ScriptInput};
use super::source::Source;
use crate::program::desc::Descriptions;
use crate::report::Report;
use crate::run::guest::{GuestConfig, Prepared};
use crate::store::{Evidence, Meta, Store};
use anyhow::{Context as _, Result};
use hotfuzz_vm::cache::{atomic_write, FileLock};
use hotfuzz_vm::Accel;
use std::path::{Path, PathBuf};

/// What the outputs are written from.
pub struct Context<'a> {
    /// Descriptions.
    pub d: &'a Descriptions,
    /// The source.
    pub src: &'a Source,
    /// Profile name.
    pub profile: &'a str,
    /// Guest flags used.
    pub args: &'a GuestConfig,
    /// Kernel, image, VM options used.
    pub prepared: &'a Prepared,
    /// Store for sources that are not a report directory.
    pub reports: &'a Path,
}

/// The report directory, and `repro.sh`'s path or why there is none.
pub type Written = (Option<PathBuf>, std::result::Result<PathBuf, String>);

/// Writes the outputs.
pub fn write(
    ctx: &Context,
    m: &Minimized,
    target: &TargetBug,
    crash: &CrashFiles,
) -> Result<Written> {
    let reproduced = m.reliability.is_some_and(|r| r.crashes > 0) && m.evidence.is_some();
    let dir = match (&ctx.src.report_dir, &crash.report) {
        (Some(d), _) => d.clone(),
        (None, Some(rep)) => file_new(ctx, rep, m, crash)?,
        (None, None) => {
            return Ok((
                None,
                Err("nothing reproduced, so there is no report".into()),
            ));
        }
    };
    let title = target
        .titles
        .first()
        .cloned()
        .unwrap_or_else(|| "(unknown)".into());
    let rel = m
        .reliability
        .map(|r| r.to_string())
        .unwrap_or_else(|| "0/0".into());
    let verdict = match (&m.gave_up, reproduced) {
        (None, true) => format!("reproduced {rel}"),
        (Some(why), true) => format!("reproduced {rel}, minimization stopped: {why}"),
        (why, false) => format!(
            "not reproduced ({})",
            why.clone().unwrap_or_else(|| "no crash".into())
        ),
    };
    // The log first: it explains everything else.
    let mut log = format!(
        "# hotfuzz repro: {title}\n# profile: {}\n# {verdict}\n# original: {} ops, {} ; minimized: {} ops\n# guest runs: {} minimizing, {} in all; {} infrastructure failures\n",
        ctx.profile,
        m.original_ops,
        m.original,
        super::minimize::ops(&m.candidate),
        m.minimize_runs,
        m.total_runs,
        m.infra
    );
    for l in &m.log {
        log.push_str(l);
        log.push('\n');
    }
    atomic_write(&dir.join("repro.log"), log.as_bytes())?;
    let mut script_result = Err(verdict.clone());
    if reproduced {
        let mut prog = format!(
            "# {title}\n# reproduced {rel} on fresh guests (profile {}{})\n",
            ctx.profile,
            ctx.args
                .bugzoo
                .as_deref()
                .map(|b| format!(", bug zoo: {b}"))
                .unwrap_or_default()
        );
        let n = m.candidate.len();
        for (i, p) in m.candidate.iter().enumerate() {
            if n > 1 {
                prog.push_str(&crate::program::text::history_header(i, n));
            }
            prog.push_str(&p.print(ctx.d));
        }
        atomic_write(&dir.join("repro.prog"), prog.as_bytes())?;
        if let Some(ev) = &m.evidence {
            atomic_write(
                &dir.join("repro-report.txt"),
                format!(
                    "{}\n\n{}\n\n--- console ---\n{}",
                    ev.title, ev.report, ev.console
                )
                .as_bytes(),
            )?;
        }
        if !crash.console.is_empty() {
            atomic_write(&dir.join("repro-console.log"), crash.console.as_bytes())?;
        }
        script_result = match repro_sh(ctx, &m.candidate, &title, crash, &rel) {
            Ok(text) => {
                let path = dir.join("repro.sh");
                atomic_write(&path, text.as_bytes())?;
                set_executable(&path)?;
                Ok(path)
            }
            Err(e) => Err(format!("{e:#}")),
        };
        if let Err(why) = &script_result {
            log.push_str(&format!("no repro.sh: {why}\n"));
            atomic_write(&dir.join("repro.log"), log.as_bytes())?;
        }
    }
    update_meta(&dir, &rel, reproduced)?;
    Ok((Some(dir), script_result))
}

fn set_executable(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", p.display()))
}

/// Files the reproduced report into the store (a program or log given on the command line
/// has no report directory yet).
fn file_new(ctx: &Context, rep: &Report, m: &Minimized, crash: &CrashFiles) -> Result<PathBuf> {
    let store = Store::open(ctx.reports)?;
    let tmp = tempfile::tempdir()?;
    let console = tmp.path().join("console.log");
    let run_log = tmp.path().join("run.log");
    std::fs::write(&console, &crash.console)?;
    std::fs::write(&run_log, &crash.run_log)?;
    let ev = Evidence {
        console_log: Some(console),
        excerpt: m
            .evidence
            .as_ref()
            .map(|e| e.console.clone())
            .unwrap_or_default(),
        programs: ctx.src.history.iter().map(|p| p.print(ctx.d)).collect(),
        run_log: Some(run_log),
        kernel: crate::store::kernel_info(&ctx.prepared.kernel),
        guest: Some(crate::store::GuestRecord::new(
            &ctx.prepared.options.machine,
            Some(ctx.profile),
            ctx.args.bugzoo.as_deref(),
            crash.accel,
        )),
        symbolized: None,
        injections: crash.injections.clone(),
    };
    Ok(store.file(rep, &ev)?.dir)
}

fn update_meta(dir: &Path, rel: &str, reproduced: bool) -> Result<()> {
    let root = dir.parent().unwrap_or(Path::new("."));
    let _lock = FileLock::acquire(&root.join(".lock"))?;
    let path = dir.join("meta.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut meta: Meta = serde_yaml::from_str(&text)
        .with_context(|| format!("{}: not a report's meta.yaml", path.display()))?;
    meta.reproducibility = Some(if reproduced {
        rel.to_string()
    } else {
        format!("{rel} (not reproduced)")
    });
    atomic_write(&path, serde_yaml::to_string(&meta)?.as_bytes())?;
    Ok(())
}

/// Console patterns that mean the bug happened: the report's kind as the kernel prints it,
/// and the function its title names.
pub fn detect_patterns(title: &str, frame: Option<&str>) -> Vec<String> {
    let head = title.split(" in ").next().unwrap_or(title);
    let kind = match head {
        "WARNING" => "WARNING: ".to_string(),
        "INFO: task hung" => "blocked for more than [0-9]+ seconds".to_string(),
        "kernel BUG" => "kernel BUG at ".to_string(),
        h => regex::escape(h),
    };
    let mut v = vec![kind];
    let frame = frame.map(str::to_string).or_else(|| {
        title
            .split(" in ")
            .nth(1)
            .map(|f| f.split_whitespace().next().unwrap_or(f).to_string())
    });
    if let Some(f) = frame.filter(|f| !f.is_empty()) {
        v.push(regex::escape(&f));
    }
    v
}

fn repro_sh(
    ctx: &Context,
    progs: &[crate::program::prog::Program],
    title: &str,
    crash: &CrashFiles,
    reliability: &str,
) -> Result<String> {
    let p = ctx.prepared;
    let machine = &p.options.machine;
    let qemu = hotfuzz_vm::vm::find_qemu(machine, false)?;
    let accel = crash.accel.unwrap_or(Accel::Tcg);
    let args: Vec<String> = machine
        .qemu_args(
            accel,
            &hotfuzz_vm::machine::QemuPaths {
                kernel: "@KERNEL@".into(),
                initrd: "@INITRD@".into(),
                qmp: "@DIR@/qmp.sock".into(),
                agent: "@DIR@/agent.sock".into(),
                snapshot_store: None,
                // Any free port: the script does not use ssh, but the guest keeps its network.
                ssh_port: 0,
                name: "hotfuzz-repro".into(),
            },
        )
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let frame = crash.report.as_ref().and_then(|r| r.frame.clone());
    let hm = crate::run::runner::host_machine(machine);
    let input = ScriptInput {
        d: ctx.d,
        progs,
        title: title.to_string(),
        detect: detect_patterns(title, frame.as_deref()),
        qemu,
        qemu_args: args,
        kernel: p.kernel.boot_image.clone(),
        initrd: p.image.path.clone(),
        executor: crate::run::image::host_executor()?,
        kernel_origin: p.kernel.origin.clone(),
        kernel_cmdline: machine.kernel_cmdline(),
        vmem_ids: hm.vmem,
        hotplug_ports: hm.hotplug_ports,
        numa: hm.numa,
        settle_secs: 5 + 2 * crate::run::guest::HUNG_TASK_TIMEOUT,
        reliability: reliability.to_string(),
    };
    script::generate(&input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_patterns_follow_the_title() {
        assert_eq!(
            detect_patterns("WARNING in bugzoo_warn_reonline", None),
            vec!["WARNING: ".to_string(), "bugzoo_warn_reonline".into()]
        );
        assert_eq!(
            detect_patterns(
                "INFO: task hung in bugzoo_stuck_offline",
                Some("bugzoo_stuck_offline")
            )[0],
            "blocked for more than [0-9]+ seconds"
        );
        let v = detect_patterns("BUG: Bad page state in bugzoo_bad_page", None);
        assert_eq!(v[0], "BUG: Bad page state");
        for p in v {
            regex::Regex::new(&p).unwrap();
        }
    }
}
