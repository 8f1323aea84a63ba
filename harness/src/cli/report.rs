//! `hotfuzz report parse` and `hotfuzz report list`.

use anyhow::{Context, Result};
use clap::Subcommand;
use hotfuzz::report::{self, Report};
use hotfuzz::store::Store;

/// `hotfuzz report ...`
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Print the reports in a console log or a pasted splat (FILE or - for stdin). Exit status
    /// 1 when there is at least one.
    Parse(Box<ReportParseArgs>),
    /// Show the report store.
    List(ReportListArgs),
}

/// Arguments of `hotfuzz report parse`.
#[derive(Debug, clap::Args)]
pub struct ReportParseArgs {
    /// Log file, or - for stdin.
    pub file: std::path::PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Titles and facts only, not the report text.
    #[arg(long)]
    pub brief: bool,
    /// Add file:line to frames (needs debug info: a kernel build's vmlinux, or --module files).
    #[arg(long)]
    pub symbolize: bool,
    /// A module with debug info for --symbolize (repeatable), e.g. the bug zoo's bugzoo.ko.
    #[arg(long)]
    pub module: Vec<std::path::PathBuf>,
    /// Kernel for --symbolize (default: the Debian default kernel).
    #[arg(long)]
    pub kernel: Option<std::path::PathBuf>,
    /// Architecture for --symbolize.
    #[arg(long, default_value = "x86_64")]
    pub arch: hotfuzz_vm::Arch,
}

impl ReportParseArgs {
    /// The kernel whose symbols are used.
    pub fn kernel_source(&self) -> hotfuzz_vm::KernelSource {
        match &self.kernel {
            Some(p) => hotfuzz_vm::KernelSource::Path {
                path: p.clone(),
                modules: None,
                system_map: None,
            },
            None => hotfuzz_vm::KernelSource::DebianDefault,
        }
    }
}

/// Arguments of `hotfuzz report list`.
#[derive(Debug, clap::Args)]
pub struct ReportListArgs {
    /// The report store.
    #[arg(long, default_value = "reports")]
    pub dir: std::path::PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn print_report(r: &Report, text: bool) -> Result<()> {
    outln!("TITLE: {}", r.title)?;
    for a in &r.alt_titles {
        outln!("ALT: {a}")?;
    }
    outln!(
        "TYPE: {}",
        serde_json::to_value(r.kind)
            .map(|v| v.as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    )?;
    if let Some(f) = &r.frame {
        outln!("FRAME: {f}")?;
    }
    outln!(
        "CORRUPTED: {}",
        if r.corrupted.is_some() { "Y" } else { "N" }
    )?;
    if let Some(c) = &r.corrupted {
        outln!("  ({c})")?;
    }
    if r.interleaved {
        outln!("INTERLEAVED: Y")?;
    }
    for d in &r.page_dump_reasons {
        outln!("PAGE DUMPED BECAUSE: {d}")?;
    }
    outln!("LINES: {}-{}", r.start_line + 1, r.end_line + 1)?;
    if text {
        outln!()?;
        outln!("{}", r.text)?;
    }
    outln!()
}

/// `hotfuzz report parse FILE|-`.
/// Runs a `hotfuzz report` command.
pub fn run(c: ReportCommand) -> Result<i32> {
    match c {
        ReportCommand::Parse(a) => parse(*a),
        ReportCommand::List(a) => list(a),
    }
}

fn parse(a: ReportParseArgs) -> Result<i32> {
    // Both streamed: a log of any size, or one line of hundreds of megabytes, is read in
    // bounded memory.
    let reports = if a.file.as_os_str() == "-" {
        report::linux::parse_reader(std::io::stdin().lock()).context("reading stdin")?
    } else {
        let f = std::fs::File::open(&a.file)
            .with_context(|| format!("opening {}", a.file.display()))?;
        report::linux::parse_reader(std::io::BufReader::new(f))
            .with_context(|| format!("reading {}", a.file.display()))?
    };
    let sym = if a.symbolize {
        let k = hotfuzz_vm::Kernel::resolve(&a.kernel_source(), a.arch)?;
        Some(hotfuzz::judge::symbolize::Symbolizer::new(&k, &a.module))
    } else {
        None
    };
    let reports: Vec<Report> = reports
        .into_iter()
        .map(|mut r| {
            if let Some(s) = &sym {
                r.text = s.symbolize(&r.text);
            }
            r
        })
        .collect();
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&reports)?)?;
    } else if reports.is_empty() {
        outln!("no reports")?;
    } else {
        for r in &reports {
            print_report(r, !a.brief)?;
        }
    }
    Ok(if reports.is_empty() { 0 } else { 1 })
}

/// `s` with control characters (escape sequences, line breaks) shown as `?`: `meta.yaml` is
/// a file anyone who can write the store may have edited, and a terminal obeys what it prints.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `hotfuzz report list`.
fn list(a: ReportListArgs) -> Result<i32> {
    let Some(store) = Store::existing(&a.dir)? else {
        if a.json {
            outln!("[]")?;
        } else {
            outln!("no reports: {} does not exist", a.dir.display())?;
        }
        return Ok(0);
    };
    let all = store.list()?;
    if a.json {
        let v: Vec<_> = all
            .iter()
            .map(|s| serde_json::json!({"dir": s.dir, "meta": s.meta}))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(0);
    }
    if all.is_empty() {
        outln!("no reports in {}", store.root().display())?;
        return Ok(0);
    }
    outln!(
        "{:<6} {:<20} {:<22} {:<5} TITLE",
        "COUNT",
        "LAST SEEN",
        "TYPE",
        "REPRO"
    )?;
    for s in &all {
        let m = &s.meta;
        outln!(
            "{:<6} {:<20} {:<22} {:<5} {}{}{}",
            m.count,
            printable(&m.last_seen),
            serde_json::to_value(m.kind)
                .map(|v| v.as_str().unwrap_or("").to_string())
                .unwrap_or_default(),
            printable(m.reproducibility.as_deref().unwrap_or("-")),
            printable(&m.title),
            if m.corrupted.is_some() {
                " (corrupted)"
            } else {
                ""
            },
            if m.only_injected() {
                " (only with fault injection)"
            } else {
                ""
            }
        )?;
    }
    Ok(0)
}
