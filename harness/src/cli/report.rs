//! `hotfuzz report parse`, `list`, `mark` and `email`.

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
    /// Set a bug's status: fixed by a commit or version, invalid, or open again.
    Mark(ReportMarkArgs),
    /// Write a report directory as a mail for a kernel mailing list (plain text).
    Email(ReportEmailArgs),
}

/// Arguments of `hotfuzz report mark`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("mark").required(true).args(["fixed", "invalid", "reopen"])))]
pub struct ReportMarkArgs {
    /// The bug: its title, an alternative title, or its directory in the store.
    pub title: String,
    /// Fixed by this commit or version: the regression suite then expects it to stay fixed,
    /// and seeing it again makes it regressed.
    #[arg(long, value_name = "REV")]
    pub fixed: Option<String>,
    /// Not a bug, for this reason (nights no longer count it).
    #[arg(long, value_name = "REASON")]
    pub invalid: Option<String>,
    /// Open again (a mark made by mistake).
    #[arg(long)]
    pub reopen: bool,
    /// The report store.
    #[arg(long, default_value = "reports")]
    pub dir: std::path::PathBuf,
}

/// Arguments of `hotfuzz report email`.
#[derive(Debug, clap::Args)]
pub struct ReportEmailArgs {
    /// The report directory.
    pub dir: std::path::PathBuf,
    /// Write the mail here instead of standard output.
    #[arg(long, short)]
    pub output: Option<std::path::PathBuf>,
    /// Do not add file:line to the console's frames.
    #[arg(long)]
    pub no_symbolize: bool,
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
        ReportCommand::Mark(a) => mark(a),
        ReportCommand::Email(a) => email(a),
    }
}

/// `hotfuzz report mark`.
fn mark(a: ReportMarkArgs) -> Result<i32> {
    use hotfuzz::store::status::Mark;
    let m = match (&a.fixed, &a.invalid) {
        (Some(rev), _) => Mark::Fixed(rev.clone()),
        (None, Some(why)) => Mark::Invalid(why.clone()),
        (None, None) => Mark::Reopen,
    };
    // A mistyped --dir is an error, not a new empty store.
    let store = Store::existing(&a.dir)?
        .ok_or_else(|| anyhow::anyhow!("{}: no report store there", a.dir.display()))?;
    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let s = store.mark(&a.title, &m, &at)?;
    outln!(
        "{}: {} ({})",
        s.meta.title,
        s.meta.status.state,
        s.dir.display()
    )?;
    Ok(0)
}

/// `hotfuzz report email`.
fn email(a: ReportEmailArgs) -> Result<i32> {
    let sym = if a.no_symbolize {
        None
    } else {
        let meta = std::fs::read_to_string(a.dir.join("meta.yaml"))
            .ok()
            .and_then(|t| serde_yaml::from_str::<hotfuzz::store::Meta>(&t).ok());
        match meta.map(|m| hotfuzz::nightly::mail::symbolizer_for(&m)) {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                eprintln!("hotfuzz: not symbolizing: {e:#}");
                None
            }
            None => None,
        }
    };
    let text = hotfuzz::nightly::mail::compose(&a.dir, sym.as_ref())?;
    match &a.output {
        Some(p) => hotfuzz_vm::cache::atomic_write(p, text.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?,
        None => out!("{text}")?,
    }
    Ok(0)
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
        "{:<9} {:<6} {:<20} {:<22} {:<5} TITLE",
        "STATUS",
        "COUNT",
        "LAST SEEN",
        "TYPE",
        "REPRO"
    )?;
    for s in &all {
        let m = &s.meta;
        outln!(
            "{:<9} {:<6} {:<20} {:<22} {:<5} {}{}{}",
            m.status.state.name(),
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
