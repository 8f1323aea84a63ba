//! The command line: one module per command, each owning its arguments and its handler;
//! this module only names the commands and dispatches to them.

/// `print!` that returns an error instead of panicking when stdout is closed or full.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::write_stdout(format_args!($($t)*))
    };
}

/// `println!` that returns an error instead of panicking when stdout is closed or full.
macro_rules! outln {
    () => {
        $crate::cli::write_stdout(format_args!("\n"))
    };
    ($($t:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($t)*)))
    };
}

pub mod bench;
pub mod bisect;
pub mod build;
pub mod fuzz;
pub mod gen;
pub mod guest_flags;
pub mod nightly;
pub mod report;
pub mod repro;
pub mod run;
pub mod setup;
pub mod stats;
pub mod vm;

use clap::{Parser, Subcommand};

/// Fuzzes and regression-tests Linux memory hotplug inside QEMU guests.
#[derive(Debug, Parser)]
#[command(name = "hotfuzz", version, about, long_about = None)]
pub struct Cli {
    /// Log debug messages (or set HOTFUZZ_LOG, e.g. HOTFUZZ_LOG=hotfuzz_vm=debug).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fuzz: boot guests, run generated and mutated programs, file reports (the main job;
    /// with no arguments it fuzzes the default kernel with the embedded defaults).
    Fuzz(Box<fuzz::FuzzArgs>),
    /// Boot and control guests.
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Install host packages and fetch the default kernel, then exit.
    Setup(setup::SetupArgs),
    /// Measure hotfuzz on this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Boot a guest, run a program (file or - for stdin), print per-operation results and the
    /// reports it caused (kernel splats and harness oracles). Exit status 1 if there was one.
    Run(Box<run::RunArgs>),
    /// Print a generated program.
    Gen(gen::GenArgs),
    /// Parse console logs into reports; list the report store.
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Reproduce a bug on fresh guests, measure how reliably it reproduces, minimize the
    /// programs and write repro.prog and a standalone repro.sh into the report directory.
    /// Exit status 0 when it reproduced, 1 when it did not.
    Repro(Box<repro::ReproArgs>),
    /// Build a kernel for a guest from a tree (git at a commit, a work tree as it is, or an
    /// unpacked source) into the build cache; prints the directory to pass as --kernel.
    Build(Box<build::BuildArgs>),
    /// Find the commit (or, with --packages, the Debian kernel package) that introduced a bug
    /// (or with --fix fixed it): builds each commit, runs the reproducer as often as its
    /// reliability asks for, checks the culprit. Resumable: run it again after a kill.
    Bisect(Box<bisect::BisectArgs>),
    /// Run a reproducer on one kernel and exit as `git bisect run` wants: 0 good, 1 bad,
    /// 125 skip (the bug masked by another crash, or the infrastructure failed).
    Test(Box<bisect::TestArgs>),
    /// A whole night for CI within a budget: the regression suite, fuzzing, reproducing the
    /// new bugs, and results (JUnit, JSON, an HTML page, mails). Exit status 0 nothing new,
    /// 1 a new bug or a regression, 2 the night could not run.
    Nightly(Box<nightly::NightlyArgs>),
}

/// Runs a parsed command line and returns the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Fuzz(a) => fuzz::run(*a),
        Command::Vm(c) => vm::run(c),
        Command::Setup(a) => setup::run(a),
        Command::Bench(c) => bench::run(c),
        Command::Run(a) => run::run(*a),
        Command::Gen(a) => gen::run(a),
        Command::Report(c) => report::run(c),
        Command::Repro(a) => repro::run(*a),
        Command::Build(a) => build::run(*a),
        Command::Bisect(a) => bisect::run_bisect(*a),
        Command::Test(a) => bisect::run_test(*a),
        Command::Nightly(a) => nightly::run(*a),
    }
}

/// Stdout was closed by its reader (`hotfuzz gen | head -1`): not a failure, the reader has
/// what it wanted.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct StdoutClosed;

fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("writing to stdout")
    }
}

/// Writes to stdout (what `out!` and `outln!` expand to).
pub fn write_stdout(args: std::fmt::Arguments) -> anyhow::Result<()> {
    use std::io::Write;
    std::io::stdout()
        .lock()
        .write_fmt(args)
        .map_err(stdout_error)
}

/// Flushes stdout: a full disk is only seen here when the output fit the buffer.
pub fn flush_stdout() -> anyhow::Result<()> {
    use std::io::Write;
    std::io::stdout().lock().flush().map_err(stdout_error)
}
