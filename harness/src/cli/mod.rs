//! Command-line interface.

pub mod bench;
pub mod fuzz;
pub mod prog;
pub mod report;
pub mod repro;
pub mod stats;
pub mod vm;

use hotfuzz::run::guest::GuestArgs;

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
    Fuzz(Box<FuzzArgs>),
    /// Boot and control guests.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Install host packages and fetch the default kernel, then exit.
    Setup(SetupArgs),
    /// Measure hotfuzz on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Boot a guest, run a program (file or - for stdin), print per-operation results and the
    /// reports it caused (kernel splats and harness oracles). Exit status 1 if there was one.
    Run(Box<RunArgs>),
    /// Print a generated program.
    Gen(GenArgs),
    /// Parse console logs into reports; list the report store.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Reproduce a bug on fresh guests, measure how reliably it reproduces, minimize the
    /// programs and write repro.prog and a standalone repro.sh into the report directory.
    /// Exit status 0 when it reproduced, 1 when it did not.
    Repro(Box<ReproArgs>),
}

/// Arguments of `hotfuzz repro`.
#[derive(Debug, clap::Args)]
pub struct ReproArgs {
    /// A report directory, a program file, or a console log (with --run-log, or a run log).
    #[arg(required_unless_present = "splat")]
    pub input: Option<std::path::PathBuf>,
    /// The run log that goes with a console log.
    #[arg(long)]
    pub run_log: Option<std::path::PathBuf>,
    /// A splat pasted from a mail or bug tracker: fuzz towards its title (biased to the
    /// operations its stack names) until it appears, then minimize that.
    #[arg(long, conflicts_with = "input", value_name = "FILE")]
    pub splat: Option<std::path::PathBuf>,
    /// How long --splat fuzzes before giving up (30m, 2h).
    #[arg(long, default_value = "30m")]
    pub splat_duration: String,
    /// Runs when measuring reliability (before and after minimizing).
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// Guests running candidates at once.
    #[arg(long, default_value_t = 1)]
    pub vms: usize,
    /// Limit for one program run, in seconds (default: the sum of its operations' deadlines).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Most guest runs minimization may spend.
    #[arg(long, default_value_t = 60)]
    pub max_runs: u32,
    /// Reliability (crashes/runs) below which the bug counts as not reproduced.
    #[arg(long, default_value_t = 0.2)]
    pub threshold: f64,
    /// Only replay and measure; do not minimize.
    #[arg(long)]
    pub no_minimize: bool,
    /// Profile (from the configuration) instead of the one the report recorded.
    #[arg(long)]
    pub profile: Option<String>,
    /// Fuzzing configuration with the profiles and suppressions (default: embedded).
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
    /// Report store for inputs that are not a report directory.
    #[arg(long, default_value = "reports")]
    pub reports: std::path::PathBuf,
    /// Working directory (run logs).
    #[arg(long, default_value = "hotfuzz-work")]
    pub workdir: std::path::PathBuf,
    /// Guest flags.
    #[command(flatten)]
    pub guest: GuestArgs,
}

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

/// Arguments of `hotfuzz gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Operations per program (producers an operation needs may add a few).
    #[arg(long, default_value_t = 20)]
    pub len: usize,
    /// Number of programs (seeds seed, seed+1, ...), separated by blank lines.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Guest architecture (for the default state).
    #[arg(long, default_value = "x86_64")]
    pub arch: hotfuzz_vm::Arch,
    /// Guest state from `hotfuzz vm state` (default: the default machine's expected state).
    #[arg(long)]
    pub state: Option<std::path::PathBuf>,
    /// Load descriptions from this directory instead of the embedded ones.
    #[arg(long)]
    pub descriptions: Option<std::path::PathBuf>,
}

/// Arguments of `hotfuzz vm state`.
#[derive(Debug, clap::Args)]
pub struct VmStateArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
}

/// `hotfuzz bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Boot, ssh, QMP and plug/unplug timings of guests.
    Vm(Box<BenchVmArgs>),
    /// Program execution on a guest: harness overhead per operation, programs per second.
    Exec(Box<BenchExecArgs>),
    /// Generator throughput (no guest).
    Gen(BenchGenArgs),
    /// Console parser throughput and memory on a large log built from real console logs.
    Parse(BenchParseArgs),
}

/// Arguments of `hotfuzz bench parse`.
#[derive(Debug, clap::Args)]
pub struct BenchParseArgs {
    /// Console logs to concatenate into the benchmark log (e.g. harness/testdata/report/*.log;
    /// a golden file's header is dropped).
    #[arg(required = true)]
    pub logs: Vec<std::path::PathBuf>,
    /// Size of the benchmark log, in MiB.
    #[arg(long, default_value_t = 100)]
    pub mib: usize,
    /// Times the log is parsed.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

/// Arguments of `hotfuzz bench exec`.
#[derive(Debug, clap::Args)]
pub struct BenchExecArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
    /// Cheap operations in the overhead program.
    #[arg(long, default_value_t = 200)]
    pub ops: usize,
    /// Times the overhead program runs.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Generated programs to run for the programs/s figure.
    #[arg(long, default_value_t = 30)]
    pub programs: u64,
    /// Length of the generated programs.
    #[arg(long, default_value_t = 20)]
    pub len: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `hotfuzz bench gen`.
#[derive(Debug, clap::Args)]
pub struct BenchGenArgs {
    /// Programs to generate.
    #[arg(long, default_value_t = 20000)]
    pub programs: u64,
    /// Length of each program.
    #[arg(long, default_value_t = 20)]
    pub len: usize,
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
    /// Boot a guest and print its memory state (blocks, nodes, devices) as JSON.
    State(Box<VmStateArgs>),
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

/// Arguments of `hotfuzz fuzz` (they override the configuration file).
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Campaign configuration (YAML; ci/fuzz.yaml documents every key). Default: embedded.
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
    /// How long to fuzz (30m, 8h, forever).
    #[arg(long)]
    pub duration: Option<String>,
    /// Stop after this many executions.
    #[arg(long)]
    pub max_execs: Option<u64>,
    /// Guests fuzzing at once.
    #[arg(long)]
    pub vms: Option<usize>,
    /// Working directory (corpus, solutions, logs, stats.jsonl).
    #[arg(long)]
    pub workdir: Option<std::path::PathBuf>,
    /// Report store.
    #[arg(long)]
    pub reports: Option<std::path::PathBuf>,
    /// Seed programs or directories (repeatable; `embedded` for the built-in seeds).
    #[arg(long = "seeds", value_name = "PATH")]
    pub seeds: Vec<String>,
    /// Start without seed programs (generated programs only).
    #[arg(long, conflicts_with = "seeds")]
    pub no_seeds: bool,
    /// Only these profiles (comma separated names from the configuration).
    #[arg(long)]
    pub profiles: Option<String>,
    /// Arm bug-zoo bugs (testing hotfuzz itself), e.g. warn_reonline,stuck_offline.
    #[arg(long)]
    pub bugzoo: Option<String>,
    /// Random seed: fixes the generated programs and the mutation choices; which corpus
    /// entries get scheduled also depends on timing and hash order, so a campaign is not
    /// bit-reproducible.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Programs per guest boot.
    #[arg(long)]
    pub restart_every: Option<u64>,
    /// Guest architecture.
    #[arg(long)]
    pub arch: Option<hotfuzz_vm::Arch>,
    /// Kernel image or build directory instead of the Debian default.
    #[arg(long)]
    pub kernel: Option<std::path::PathBuf>,
    /// Debian kernel package instead of the pinned default.
    #[arg(long, conflicts_with = "kernel")]
    pub kernel_package: Option<String>,
    /// Accelerator: auto, kvm, tcg.
    #[arg(long)]
    pub accel: Option<hotfuzz_vm::AccelChoice>,
    /// Never run apt-get.
    #[arg(long)]
    pub no_install: bool,
    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    pub print_config: bool,
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
        Command::Fuzz(a) => crate::cli::fuzz::fuzz(*a),
        Command::Vm(VmCommand::Boot(a)) => vm::boot(*a),
        Command::Vm(VmCommand::Plug(a)) => vm::plug(*a),
        Command::Setup(a) => vm::setup(a),
        Command::Bench(BenchCommand::Vm(a)) => crate::cli::bench::vm(*a),
        Command::Bench(BenchCommand::Exec(a)) => crate::cli::bench::exec(*a),
        Command::Bench(BenchCommand::Gen(a)) => crate::cli::bench::gen(a),
        Command::Bench(BenchCommand::Parse(a)) => crate::cli::bench::parse(a),
        Command::Vm(VmCommand::State(a)) => crate::cli::prog::vm_state(*a),
        Command::Run(a) => crate::cli::prog::run(*a),
        Command::Gen(a) => crate::cli::prog::gen(a),
        Command::Report(ReportCommand::Parse(a)) => crate::cli::report::parse(*a),
        Command::Report(ReportCommand::List(a)) => crate::cli::report::list(a),
        Command::Repro(a) => crate::cli::repro::repro(*a),
    }
}
