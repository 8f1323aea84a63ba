//! `repro.sh`: a standalone reproducer that needs bash, QEMU and hotfuzz's executor binary,
//! not hotfuzz.
//!
//! [`generate`] writes the settings (the programs as text in a comment and as the executor's
//! JSON, QEMU's exact arguments, the detection patterns, the device ids) in front of the
//! runtime in `repro-runtime.sh`, which boots the guest, runs the programs one after another
//! with `hotfuzz-executor drive` and checks the console. The script holds no operation's logic: the
//! executor runs guest operations in the guest and host operations over QMP with the same
//! code hotfuzz runs them with, and prints every file write it makes (`write PATH VALUE`), so
//! a reader sees what the program did.

use crate::program::desc::Descriptions;
use crate::program::prog::Program;
use anyhow::{bail, Context as _};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The runtime every `repro.sh` ends with (checked with `bash -n` and shellcheck in tests).
pub const RUNTIME: &str = include_str!("repro-runtime.sh");

/// Everything `repro.sh` is generated from.
#[derive(Debug, Clone)]
pub struct ScriptInput<'a> {
    /// The descriptions the program was parsed with.
    pub d: &'a Descriptions,
    /// The (minimized) programs, run one after another on one guest (usually one; a
    /// reproducer that needs the state an earlier program left has more).
    pub progs: &'a [Program],
    /// The bug's title (printed, and what the script looks for).
    pub title: String,
    /// Extended regular expressions (grep -E) that must all match the console output printed
    /// after the program started for the bug to count as reproduced.
    pub detect: Vec<String>,
    /// QEMU binary used (default of `$QEMU`).
    pub qemu: PathBuf,
    /// QEMU arguments, exactly as hotfuzz passed them, with placeholders: `@INITRD@` (the
    /// guest image), `@KERNEL@` (the kernel), `@DIR@` (the script's private directory, for
    /// the QMP and agent sockets).
    pub qemu_args: Vec<String>,
    /// Kernel boot image (default of `$KERNEL`).
    pub kernel: PathBuf,
    /// The guest image (default of `$INITRD`).
    pub initrd: PathBuf,
    /// The host-side executor (default of `$EXECUTOR`).
    pub executor: PathBuf,
    /// Where the kernel came from (Debian package name/version or path), for the header.
    pub kernel_origin: String,
    /// Kernel command line (already inside `qemu_args`; shown in the header).
    pub kernel_cmdline: String,
    /// virtio-mem device ids by `vmem_dev` index (QOM ids, e.g. `vm0`).
    pub vmem_ids: Vec<String>,
    /// Spare PCIe ports for hot-added devices.
    pub hotplug_ports: u32,
    /// The machine has more than one NUMA node.
    pub numa: bool,
    /// Seconds to wait for console output after the program ends.
    pub settle_secs: u64,
    /// How the bug reproduced (`3/5`), for the header.
    pub reliability: String,
}

/// Generates the text of `repro.sh` for `inp`.
///
/// Fails when no correct script can be made: no detection patterns, a pattern with a line
/// break, a NUL byte in a QEMU argument, a path that is not UTF-8, an odd virtio-mem id, or a
/// program that does not validate against the descriptions.
pub fn generate(inp: &ScriptInput) -> anyhow::Result<String> {
    check_input(inp)?;
    let d = inp.d;
    let mut jsons = Vec::new();
    for (i, prog) in inp.progs.iter().enumerate() {
        prog.validate(d)
            .map_err(|e| anyhow::anyhow!("program {} is not valid: {e}", i + 1))?;
        let budget_ms = prog.deadline_ms(d, None).saturating_add(10_000);
        let mut exec = prog.to_exec(d, budget_ms, false);
        exec.trace = true;
        jsons.push(serde_json::to_string(&exec)?);
    }
    let mut s = String::new();
    let _ = writeln!(s, "#!/usr/bin/env bash");
    let _ = writeln!(s, "# repro.sh: {}", comment_safe(&inp.title));
    let _ = writeln!(
        s,
        "# Written by hotfuzz. Reproduced {} on fresh guests. Needs bash, QEMU and",
        comment_safe(&inp.reliability)
    );
    let _ = writeln!(
        s,
        "# hotfuzz-executor (a static binary: $EXECUTOR), not hotfuzz. Exit status 0 and"
    );
    let _ = writeln!(
        s,
        "# REPRODUCED when the bug appeared, 1 when it did not, 2 when the guest could not run."
    );
    let _ = writeln!(s, "#   RUNS=N ./repro.sh     runs it N times");
    let _ = writeln!(s, "#");
    let _ = writeln!(s, "# kernel: {}", comment_safe(&inp.kernel_origin));
    let _ = writeln!(s, "# cmdline: {}", comment_safe(&inp.kernel_cmdline));
    let n = inp.progs.len();
    let _ =
        writeln!(
        s,
        "# The program{} (hotfuzz's text format; operations of one thread run in order, threads",
        if n > 1 { "s, run one after another on one guest" } else { "" }
    );
    let _ = writeln!(s, "# run concurrently, host operations go to QEMU):");
    for (i, prog) in inp.progs.iter().enumerate() {
        if n > 1 {
            let h = crate::program::text::history_header(i, n);
            let _ = writeln!(s, "#   {}", comment_safe(h.trim_end()));
        }
        for l in prog.print(d).lines() {
            let _ = writeln!(s, "#   {}", comment_safe(l));
        }
    }
    s.push('\n');
    let _ = writeln!(s, "QEMU=${{QEMU:-{}}}", sq(path_str(&inp.qemu)?));
    let _ = writeln!(s, "KERNEL=${{KERNEL:-{}}}", sq(path_str(&inp.kernel)?));
    let _ = writeln!(s, "INITRD=${{INITRD:-{}}}", sq(path_str(&inp.initrd)?));
    let _ = writeln!(
        s,
        "EXECUTOR=${{EXECUTOR:-{}}}",
        sq(path_str(&inp.executor)?)
    );
    let _ = writeln!(s, "RUNS=${{RUNS:-1}}");
    let _ = writeln!(s, "TIMEOUT=${{TIMEOUT:-600}}");
    let _ = writeln!(s, "SETTLE=${{SETTLE:-{}}}", inp.settle_secs);
    let _ = writeln!(s, "REPRO_LOGS=${{REPRO_LOGS:-./repro-logs}}");
    let _ = writeln!(s, "TITLE={}", sq(&inp.title));
    let _ = writeln!(s, "DETECT=(");
    for re in &inp.detect {
        let _ = writeln!(s, "  {}", sq(re));
    }
    let _ = writeln!(s, ")");
    let _ = writeln!(s, "VMEM={}", sq(&inp.vmem_ids.join(",")));
    let _ = writeln!(s, "PORTS={}", inp.hotplug_ports);
    let _ = writeln!(s, "NUMA={}", if inp.numa { "1" } else { "" });
    let _ = writeln!(s, "QEMU_ARGS=(");
    for a in &inp.qemu_args {
        let _ = writeln!(s, "  {}", sq(a));
    }
    let _ = writeln!(s, ")");
    let _ = writeln!(s, "PROGRAM_JSONS=(");
    for j in &jsons {
        let _ = writeln!(s, "  {}", sq(j));
    }
    let _ = writeln!(s, ")");
    s.push('\n');
    s.push_str(RUNTIME);
    Ok(s)
}

fn check_input(inp: &ScriptInput) -> anyhow::Result<()> {
    if inp.progs.is_empty() {
        bail!("no program to run");
    }
    if inp.detect.is_empty() {
        bail!("no detection patterns: the script could not tell a reproduction from a clean run");
    }
    for re in &inp.detect {
        if re.is_empty() || re.contains(['\n', '\r', '\0']) {
            bail!("detection pattern {re:?} is empty or contains a line break or NUL");
        }
    }
    for a in &inp.qemu_args {
        if a.contains('\0') {
            bail!("QEMU argument {a:?} contains a NUL byte");
        }
    }
    for id in &inp.vmem_ids {
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            bail!("virtio-mem device id {id:?} is not a plain QOM id");
        }
    }
    for p in [&inp.qemu, &inp.kernel, &inp.initrd, &inp.executor] {
        path_str(p)?;
    }
    Ok(())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    let s = p
        .to_str()
        .with_context(|| format!("path {} is not UTF-8", p.display()))?;
    if s.contains('\0') || s.is_empty() {
        bail!("path {s:?} is empty or contains a NUL byte");
    }
    Ok(s)
}

/// Quotes `s` as one bash word in single quotes (`'` becomes `'\''`). `s` has no NUL.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One line of text made safe for a `#` comment.
fn comment_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn input<'a>(d: &'a Descriptions, progs: &'a [Program]) -> ScriptInput<'a> {
        ScriptInput {
            d,
            progs,
            title: "WARNING in offline_pages".into(),
            detect: vec!["WARNING: ".into(), "offline_pages".into()],
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            qemu_args: vec![
                "-kernel".into(),
                "@KERNEL@".into(),
                "-fw_cfg".into(),
                "name=opt/x,string=a'b;$(x)`y`\"z\\".into(),
                "-qmp".into(),
                "unix:@DIR@/qmp.sock,server=on,wait=off".into(),
            ],
            kernel: "/k/bzImage".into(),
            initrd: "/images/base.cpio".into(),
            executor: "/cache/hotfuzz-executor".into(),
            kernel_origin: "linux-image-6.12 (Debian)".into(),
            kernel_cmdline: "console=ttyS0 panic=-1".into(),
            vmem_ids: vec!["vm0".into()],
            hotplug_ports: 2,
            numa: false,
            settle_secs: 5,
            reliability: "3/3".into(),
        }
    }

    const PROG: &str = "virtio_mem_resize(dev=0x0, size=0x10000000)\nr0 = memblock_find(which=\"movable\", nth=0x0)\nrepeat 8 {\n  memblock_state(block=r0, state=\"offline\")\n  memblock_state(block=r0, state=\"online_movable\")\n}\nsplit_huge_pages_all() (thread: 1, loop)\n";

    fn script() -> String {
        let d = Descriptions::embedded();
        let p = Program::parse(PROG, &d).unwrap();
        generate(&input(&d, &[p])).unwrap()
    }

    /// The value of the settings as bash sees them.
    fn eval(script: &str, expr: &str) -> String {
        let settings = &script[..script.find(RUNTIME).unwrap()];
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("{settings}\n{expr}"))
            .env_remove("QEMU")
            .env_remove("RUNS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn the_script_is_valid_bash_and_quotes_everything() {
        let s = script();
        let out = Command::new("bash")
            .arg("-n")
            .arg("/dev/stdin")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(s.as_bytes())?;
                c.wait()
            })
            .unwrap();
        assert!(out.success());
        // Arguments with quotes and shell syntax arrive as one word each, unchanged.
        let args = eval(&s, "printf '%s\\n' \"${QEMU_ARGS[@]}\"");
        assert_eq!(
            args.lines().nth(3).unwrap(),
            "name=opt/x,string=a'b;$(x)`y`\"z\\"
        );
        // The program JSON is the executor's form, with tracing on, and survives quoting.
        assert_eq!(eval(&s, "echo ${#PROGRAM_JSONS[@]}"), "1\n");
        let json = eval(&s, "printf '%s' \"${PROGRAM_JSONS[0]}\"");
        let p: hotfuzz_executor::protocol::ExecProgram = serde_json::from_str(&json).unwrap();
        assert!(p.trace);
        assert_eq!(p.ops.len(), 5);
        assert_eq!(
            p.ops[2].args["state"],
            hotfuzz_executor::protocol::ExecArg::Str("offline".into())
        );
        assert_eq!(p.ops[4].rep, hotfuzz_executor::protocol::ExecRep::Loop);
        assert!(p.ops[0].host);
        // Defaults can be overridden from the environment.
        assert_eq!(eval(&s, "echo $QEMU"), "/usr/bin/qemu-system-x86_64\n");
        assert_eq!(eval(&s, "echo ${#DETECT[@]} $VMEM $PORTS"), "2 vm0 2\n");
        // The program is in the header for people.
        assert!(s.contains("#   repeat 8 {\n#     memblock_state(block=r0, state=\"offline\")"));
        // No ssh, so no host key to skip checking: the executor is reached over the guest
        // agent's socket in a private directory.
        for bad in ["ssh ", "StrictHostKeyChecking", "UserKnownHostsFile"] {
            assert!(!s.contains(bad), "the script has {bad:?}");
        }
    }

    #[test]
    fn the_runtime_passes_shellcheck() {
        // ci/setup.sh installs shellcheck; without it this test cannot check anything.
        if Command::new("shellcheck")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: shellcheck is not installed (ci/setup.sh installs it)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("repro.sh");
        std::fs::write(&f, script()).unwrap();
        let out = Command::new("shellcheck")
            .args(["-s", "bash", "-S", "warning"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn a_history_of_programs_is_run_in_order() {
        let d = Descriptions::embedded();
        let restore = Program::parse(
            "virtio_mem_resize(dev=0x0, size=0x40000000)\nvirtio_mem_wait(dev=0x0, ms=0x1388)\n",
            &d,
        )
        .unwrap();
        let race = Program::parse(PROG, &d).unwrap();
        let s = generate(&input(&d, &[restore, race])).unwrap();
        assert_eq!(eval(&s, "echo ${#PROGRAM_JSONS[@]}"), "2\n");
        let first: hotfuzz_executor::protocol::ExecProgram =
            serde_json::from_str(&eval(&s, "printf '%s' \"${PROGRAM_JSONS[0]}\"")).unwrap();
        let second: hotfuzz_executor::protocol::ExecProgram =
            serde_json::from_str(&eval(&s, "printf '%s' \"${PROGRAM_JSONS[1]}\"")).unwrap();
        assert_eq!(first.ops.len(), 2);
        assert_eq!(second.ops.len(), 5);
        assert!(s.contains("#   # program 1 of 2\n#   virtio_mem_resize(dev=0x0, size=0x40000000)"));
        assert!(s.contains("#   # program 2 of 2: the one running when the report appeared\n"));
    }

    #[test]
    fn bad_inputs_are_refused() {
        let d = Descriptions::embedded();
        let p = [Program::parse(PROG, &d).unwrap()];
        let mut i = input(&d, &p);
        i.detect.clear();
        assert!(generate(&i).is_err());
        let mut i = input(&d, &p);
        i.vmem_ids = vec!["vm0;rm -rf /".into()];
        assert!(generate(&i).is_err());
        let mut i = input(&d, &p);
        i.qemu_args.push("a\0b".into());
        assert!(generate(&i).is_err());
        assert!(generate(&input(&d, &[])).is_err());
    }
}
