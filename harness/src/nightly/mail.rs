//! A bug report ready for a kernel mailing list, from a report directory: the syzkaller-style
//! title as the subject, the kernel (version, origin, commit, config), the guest it ran on, the
//! console excerpt with `file:line` where debug info allows, the reproducer inline
//! (`repro.prog` and the standalone `repro.sh`) with its reproducibility, and the bisection
//! result when there is one (`bisect.txt`). Plain text: prose is wrapped at 72 columns; the
//! splat, programs and scripts are never wrapped.

use crate::judge::symbolize::Symbolizer;
use crate::store::Meta;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// Prose width.
pub const WIDTH: usize = 72;

/// Wraps `text` (one paragraph) at [`WIDTH`] columns, each line starting with `indent`.
pub fn wrap(text: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    for w in text.split_whitespace() {
        if line.len() > indent.len() && line.len() + 1 + w.len() > WIDTH {
            out.push_str(line.trim_end());
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(w);
    }
    if line.len() > indent.len() {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A console line without hotfuzz's host timestamp (`2026-12-02T18:49:55.646729Z `): what
/// the kernel printed.
fn kernel_line(l: &str) -> &str {
    match l.split_once(' ') {
        Some((t, rest)) if t.len() >= 20 && t.ends_with('Z') && t.as_bytes()[4] == b'-' => rest,
        _ => l,
    }
}

/// The kernel and modules to symbolize a report of `meta` with, when they can be found
/// (Debian's kernel has no debug info for itself, so only module frames with debug info,
/// such as the bug zoo's, get `file:line` there). Never downloads: a kernel not in the
/// cache is left out.
pub fn symbolizer_for(meta: &Meta) -> Result<Symbolizer> {
    let origin = &meta.kernel.origin;
    let arch = if origin.contains("powerpc64le") || origin.contains("ppc64") {
        hotfuzz_vm::Arch::Ppc64le
    } else {
        hotfuzz_vm::Arch::X86_64
    };
    let kernel = match origin.strip_prefix("Debian ") {
        Some(rest) => {
            let pkg = rest.split_whitespace().next().unwrap_or(rest);
            hotfuzz_vm::Kernel::from_debian(pkg, arch)
                .with_context(|| format!("the kernel package {pkg}"))?
        }
        None => hotfuzz_vm::Kernel::from_path(Path::new(origin), None, None, arch)
            .with_context(|| format!("the kernel {origin}"))?,
    };
    let mut extra = Vec::new();
    if meta.guest.as_ref().is_some_and(|g| g.bugzoo.is_some()) {
        extra.push(crate::run::bugzoo::build(&kernel).context("the bug zoo module")?);
    }
    Ok(Symbolizer::new(&kernel, &extra))
}

fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .filter(|t| !t.trim().is_empty())
}

/// Appends `text` as it is (a splat, a program, a script), ending in a newline.
fn verbatim(out: &mut String, text: &str) {
    out.push_str(text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
}

fn field(out: &mut String, k: &str, v: &str) {
    let _ = writeln!(out, "{:<11} {v}", format!("{k}:"));
}

/// The mail for the bug in `dir`. `sym` adds `file:line` to the console excerpt's frames.
pub fn compose(dir: &Path, sym: Option<&Symbolizer>) -> Result<String> {
    let text = std::fs::read_to_string(dir.join("meta.yaml"))
        .with_context(|| format!("{}: not a report directory (no meta.yaml)", dir.display()))?;
    let meta: Meta = serde_yaml::from_str(&text).with_context(|| {
        format!(
            "{}: not a report's meta.yaml",
            dir.join("meta.yaml").display()
        )
    })?;
    let mut m = String::new();
    let _ = writeln!(m, "Subject: {}", meta.title);
    m.push('\n');
    m.push_str("Hello,\n\n");
    m.push_str(&wrap(
        &format!(
            "hotfuzz, a fuzzer of memory hotplug in QEMU guests, found the following issue. \
             It was first seen {} and has been seen {} time{} since.",
            meta.first_seen,
            meta.count,
            if meta.count == 1 { "" } else { "s" }
        ),
        "",
    ));
    m.push('\n');
    field(&mut m, "title", &meta.title);
    for a in &meta.alt_titles {
        field(&mut m, "also", a);
    }
    field(&mut m, "status", meta.status.state.name());
    if let Some(f) = &meta.status.fix {
        field(
            &mut m,
            "last fix",
            &format!("{} ({:?}, {})", f.rev, f.by, f.at).to_lowercase(),
        );
    }
    let k = &meta.kernel;
    field(
        &mut m,
        "kernel",
        if k.release.is_empty() {
            "unknown"
        } else {
            &k.release
        },
    );
    field(&mut m, "origin", &k.origin);
    field(
        &mut m,
        "commit",
        if k.origin.starts_with("Debian ") {
            "none (a Debian kernel package: its version above)"
        } else {
            "unknown"
        },
    );
    field(
        &mut m,
        "config",
        &k.config_hash
            .as_deref()
            .map(|h| format!("blake3 {h} (the kernel's .config)"))
            .unwrap_or_else(|| "unknown".into()),
    );
    if let Some(g) = &meta.guest {
        let accel = g.accel.as_deref().unwrap_or("?");
        field(
            &mut m,
            "guest",
            &format!(
                "QEMU ({accel}), {} vCPUs, {} MiB boot RAM, {} NUMA node{}",
                g.cpus,
                g.memory_mib,
                g.nodes,
                if g.nodes == 1 { "" } else { "s" }
            ),
        );
        for v in &g.virtio_mem {
            field(&mut m, "virtio-mem", v);
        }
        if let Some(p) = &g.profile {
            field(&mut m, "profile", p);
        }
        if let Some(b) = &g.bugzoo {
            field(
                &mut m,
                "bug zoo",
                &format!("{b} (bugs planted on purpose: hotfuzz testing itself)"),
            );
        }
        m.push_str("cmdline:\n");
        let _ = writeln!(m, "  {}", g.cmdline);
    }
    for i in &meta.injections {
        field(&mut m, "injected", i);
    }
    if meta.only_injected() {
        m.push('\n');
        m.push_str(&wrap(
            "Every occurrence had fault injection armed: the report may be the \
             injection's doing rather than a bug.",
            "",
        ));
    }
    m.push('\n');
    let excerpt = read(dir, "excerpt.log").or_else(|| read(dir, "report.txt"));
    match excerpt {
        Some(x) => {
            let plain: String = x.lines().map(|l| format!("{}\n", kernel_line(l))).collect();
            let (body, note) = match sym {
                Some(s) if s.available() => (
                    s.symbolize(&plain),
                    "with file:line where debug info was available",
                ),
                _ => (plain, "not symbolized"),
            };
            m.push_str(&wrap(
                &format!("The console around the report ({note}):"),
                "",
            ));
            m.push('\n');
            verbatim(&mut m, &body);
        }
        None => m.push_str("(no console excerpt was kept)\n"),
    }
    m.push('\n');
    match read(dir, "repro.prog") {
        Some(prog) => {
            let rel = meta.reproducibility.as_deref().unwrap_or("not measured");
            m.push_str(&wrap(
                &format!(
                    "Reproducer: {rel} on fresh guests. repro.prog is a hotfuzz program \
                     (one operation per line; run it with `hotfuzz run repro.prog` and the \
                     guest set-up above):"
                ),
                "",
            ));
            m.push('\n');
            verbatim(&mut m, &prog);
            m.push('\n');
            match read(dir, "repro.sh") {
                Some(sh) => {
                    m.push_str(&wrap(
                        "repro.sh boots the same guest with the same QEMU and kernel \
                         command lines and runs the program without hotfuzz (bash, QEMU, \
                         socat and hotfuzz's executor binary); it exits 0 and prints \
                         REPRODUCED when the report appears:",
                        "",
                    ));
                    m.push('\n');
                    verbatim(&mut m, &sh);
                }
                None => m.push_str(&wrap(
                    "There is no standalone repro.sh for this program (see repro.log).",
                    "",
                )),
            }
        }
        None => m.push_str(&wrap(
            &format!(
                "There is no reproducer yet. The report was seen {} time{} while \
                 fuzzing; the programs that ran before it are attached as \
                 programs.prog.",
                meta.count,
                if meta.count == 1 { "" } else { "s" }
            ),
            "",
        )),
    }
    m.push('\n');
    match read(dir, "bisect.txt") {
        Some(b) => {
            m.push_str("Bisection:\n\n");
            verbatim(&mut m, &b);
        }
        None => m.push_str("Bisection: not done.\n"),
    }
    m.push('\n');
    m.push_str(&wrap(
        "The report directory keeps the whole console log (console.log), the run log \
         (run.log) and the programs that ran before the report (programs.prog).",
        "",
    ));
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_wraps_at_72_and_long_words_stay_whole() {
        let p = "word ".repeat(40);
        let w = wrap(&p, "");
        assert!(w.lines().all(|l| l.len() <= WIDTH), "{w}");
        assert_eq!(w.split_whitespace().count(), 40);
        let long = format!("a {} b", "x".repeat(90));
        assert_eq!(wrap(&long, "").lines().count(), 3);
        assert_eq!(
            kernel_line("2026-12-02T18:49:55.646729Z [    1.0] WARNING: x"),
            "[    1.0] WARNING: x"
        );
        assert_eq!(kernel_line("[    1.0] WARNING: x"), "[    1.0] WARNING: x");
    }
}
