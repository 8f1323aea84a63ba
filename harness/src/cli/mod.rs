//! The command line: one module per command, each owning its arguments and its handler;
//! this module only names the commands and dispatches to them.

pub mod bench;
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
        Command::Nightly(a) => nightly::run(*a),
    }
}
