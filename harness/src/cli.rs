//! Command-line interface.

use crate::cmd_vm;
use crate::guest_args::GuestArgs;
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
    /// Boot and control guests.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Install host packages and fetch the default kernel, then exit.
    Setup(SetupArgs),
    /// Measure hotfuzz on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// `hotfuzz bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Boot, ssh, QMP and plug/unplug timings of guests.
    Vm(Box<BenchVmArgs>),
}

/// Arguments of `hotfuzz bench vm`.
#[derive(Debug, clap::Args)]
pub struct BenchVmArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
    /// Boots to measure.
    #[arg(long, default_value_t = 5)]
    pub boots: usize,
    /// ssh round trips to measure (on the first guest).
    #[arg(long, default_value_t = 100)]
    pub execs: usize,
    /// QMP round trips and plug/unplug cycles to measure (on the first guest).
    #[arg(long, default_value_t = 5)]
    pub resizes: usize,
    /// Also measure a first run on an empty cache (downloads the kernel again).
    #[arg(long)]
    pub cold: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `hotfuzz vm ...`
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Boot a guest to ssh-ready, print the boot timings, then power it off (or open a shell).
    Boot(Box<VmBootArgs>),
    /// Boot a guest, plug SIZE with virtio-mem, show what the guest sees, unplug, power off.
    Plug(Box<VmPlugArgs>),
}

/// Arguments of `hotfuzz vm boot`.
#[derive(Debug, clap::Args)]
pub struct VmBootArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
    /// Open an interactive shell in the guest instead of powering off at once.
    #[arg(long)]
    pub shell: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `hotfuzz vm plug`.
#[derive(Debug, clap::Args)]
pub struct VmPlugArgs {
    /// Amount to plug, e.g. 256M or 1G (a multiple of the device block size).
    pub size: String,
    /// virtio-mem device id.
    #[arg(long, default_value = "vm0")]
    pub device: String,
    #[command(flatten)]
    pub guest: GuestArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `hotfuzz setup`.
#[derive(Debug, clap::Args)]
pub struct SetupArgs {
    /// Also prepare the ppc64le guest parts (foreign packages, kernel).
    #[arg(long)]
    pub ppc64le: bool,
}

/// Runs a parsed command line and returns the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Vm(VmCommand::Boot(a)) => cmd_vm::boot(*a),
        Command::Vm(VmCommand::Plug(a)) => cmd_vm::plug(*a),
        Command::Setup(a) => cmd_vm::setup(a),
        Command::Bench(BenchCommand::Vm(a)) => crate::cmd_bench::vm(*a),
    }
}
