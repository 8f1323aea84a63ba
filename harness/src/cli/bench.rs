//! `hotfuzz bench vm`: how fast guests are on this machine (boot, ssh, QMP, plug/unplug).

use crate::cli::stats::Summary;
use anyhow::{Context, Result};
use clap::Subcommand;

use serde_json::json;
use std::time::{Duration, Instant};

use crate::cli::guest_flags::GuestArgs;
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

/// `hotfuzz bench vm`.
/// Runs a `hotfuzz bench` command.
pub fn run(c: BenchCommand) -> Result<i32> {
    match c {
        BenchCommand::Vm(a) => vm(*a),
        BenchCommand::Exec(a) => exec(*a),
        BenchCommand::Gen(a) => gen(a),
        BenchCommand::Parse(a) => parse(a),
    }
}

fn vm(a: BenchVmArgs) -> Result<i32> {
    let mut cold = None;
    if a.cold {
        // First run on an empty cache: download, unpack, PVH extraction, image build.
        let dir = tempfile::tempdir().context("creating a temporary cache")?;
        std::env::set_var("HOTFUZZ_CACHE_DIR", dir.path());
        let t = Instant::now();
        let p = a.guest.config()?.prepare()?;
        let prep = t.elapsed();
        let vm = p.boot("hotfuzz")?;
        let total = t.elapsed();
        vm.poweroff(Duration::from_secs(30));
        std::env::remove_var("HOTFUZZ_CACHE_DIR");
        cold = Some((prep, total));
    }
    let mut prepare = Vec::new();
    let mut banner = Vec::new();
    let mut init = Vec::new();
    let mut ready = Vec::new();
    let mut ssh = Vec::new();
    let mut agent = Vec::new();
    let mut total = Vec::new();
    let mut exec = Vec::new();
    let mut qmp_query = Vec::new();
    let mut qmp_set = Vec::new();
    let mut plug = Vec::new();
    let mut unplug = Vec::new();
    for i in 0..a.boots {
        let t = Instant::now();
        let p = a.guest.config()?.prepare()?;
        prepare.push(t.elapsed());
        let vm = p.boot("hotfuzz")?;
        total.push(t.elapsed());
        let tm = vm.timings();
        banner.extend(tm.banner);
        init.extend(tm.init);
        ready.push(tm.ready);
        let t = Instant::now();
        hotfuzz::run::agent::Agent::connect(&vm, Instant::now() + Duration::from_secs(60))?;
        agent.push(tm.ready + t.elapsed());
        let t = Instant::now();
        vm.exec("true")?.check("true")?;
        ssh.push(agent.last().copied().unwrap_or_default() + t.elapsed());
        if i == 0 {
            for _ in 0..a.execs {
                let t = Instant::now();
                vm.exec("true")?.check("true")?;
                exec.push(t.elapsed());
            }
            let q = vm.qmp();
            for _ in 0..a.resizes {
                let t = Instant::now();
                q.query_memory_devices()?;
                qmp_query.push(t.elapsed());
            }
            if let Some(dev) = vm.machine().virtio_mem.first().map(|d| d.id.clone()) {
                for _ in 0..a.resizes {
                    let t = Instant::now();
                    q.set_virtio_mem_requested_size(&dev, 128 << 20)?;
                    qmp_set.push(t.elapsed());
                    let size = q.wait_virtio_mem_settled(&dev, Duration::from_secs(120))?;
                    plug.push(t.elapsed());
                    anyhow::ensure!(size == 128 << 20, "plug settled at {size}");
                    let t = Instant::now();
                    q.set_virtio_mem_requested_size(&dev, 0)?;
                    qmp_set.push(t.elapsed());
                    let size = q.wait_virtio_mem_settled(&dev, Duration::from_secs(120))?;
                    unplug.push(t.elapsed());
                    anyhow::ensure!(size == 0, "unplug settled at {size}");
                }
            }
        }
        vm.poweroff(Duration::from_secs(30));
    }
    let rows: Vec<(&str, Option<Summary>)> = vec![
        ("prepare (kernel+image, cached)", Summary::of(&prepare)),
        ("QEMU start -> kernel banner", Summary::of(&banner)),
        ("QEMU start -> /init", Summary::of(&init)),
        (
            "QEMU start -> guest ready (modules, agent started)",
            Summary::of(&ready),
        ),
        (
            "QEMU start -> agent answering (ready for programs)",
            Summary::of(&agent),
        ),
        (
            "QEMU start -> ssh ready (after the agent)",
            Summary::of(&ssh),
        ),
        ("second boot, total (prepare + boot)", Summary::of(&total)),
        ("ssh exec round trip (`true`)", Summary::of(&exec)),
        (
            "QMP query-memory-devices round trip",
            Summary::of(&qmp_query),
        ),
        (
            "QMP qom-set requested-size round trip",
            Summary::of(&qmp_set),
        ),
        ("plug 128M: qom-set -> size settled", Summary::of(&plug)),
        ("unplug 128M: qom-set -> size settled", Summary::of(&unplug)),
    ];
    if a.json {
        let mut m = serde_json::Map::new();
        for (k, v) in &rows {
            m.insert((*k).to_string(), json!(v));
        }
        if let Some((p, t)) = cold {
            m.insert(
                "cold: prepare (download+unpack+image)".into(),
                json!(p.as_millis() as u64),
            );
            m.insert("cold: prepare + boot".into(), json!(t.as_millis() as u64));
        }
        outln!("{}", serde_json::Value::Object(m))?;
    } else {
        if let Some((p, t)) = cold {
            outln!(
                "{:<40} {:.2} s",
                "cold: prepare (download+unpack+image)",
                p.as_secs_f64()
            )?;
            outln!("{:<40} {:.2} s", "cold: prepare + boot", t.as_secs_f64())?;
        }
        for (k, v) in rows {
            if let Some(v) = v {
                outln!("{k:<40} {v}")?;
            }
        }
    }
    Ok(0)
}

/// `hotfuzz bench exec`: per-operation harness overhead and programs per second.
fn exec(a: BenchExecArgs) -> Result<i32> {
    use hotfuzz::program::desc::Descriptions;
    use hotfuzz::program::gen::Generator;
    use hotfuzz::program::prog::Program;
    use hotfuzz::run::runner::{RunOptions, Runner, CAMPAIGN_REPEAT_BUDGET};

    let d = Descriptions::embedded();
    let p = a.guest.config()?.prepare()?;
    let c = p.boot_connected("hotfuzz")?;
    let mut vm = c.vm;
    // Keep the logs: a benchmark that goes wrong must be explainable.
    let dir = vm.keep_dir();
    eprintln!("hotfuzz: logs in {}", dir.display());
    let mut runner = Runner::with_agent(&vm, c.agent, &dir.join("run.log"))?;
    let opts = RunOptions {
        kcov: false,
        timeout: None,
        settle: Duration::ZERO,
        repeat_budget: Some(CAMPAIGN_REPEAT_BUDGET),
    };
    // Cheap operations: their own time is measured in the guest and subtracted.
    let text = "kpagecount_read(pfn=0x1000, count=0x1)\n".repeat(a.ops.max(1));
    let cheap = Program::parse(&text, &d)?;
    let mut overhead = Vec::new();
    let mut per_op = Vec::new();
    let mut in_guest = Vec::new();
    for _ in 0..a.repeat.max(1) {
        let r = runner.run(&d, &cheap, &opts)?;
        anyhow::ensure!(r.lost.is_none(), "lost: {:?}", r.lost);
        let own: Duration = r.ops.iter().map(|o| o.duration).sum();
        let n = r.ops.len() as u32;
        overhead.push(r.duration.saturating_sub(own) / n);
        per_op.push(r.duration / n);
        in_guest.push(own / n);
    }
    // Typical generated programs on the real state.
    let st = hotfuzz::run::probe::guest_state(&vm, runner.agent())?;
    let mut prog_times = Vec::new();
    let t0 = Instant::now();
    let mut ops_total = 0;
    for seed in 0..a.programs {
        let prog = Generator::new(&d, &st, seed).generate(a.len);
        ops_total += prog.ops.len();
        let r = runner
            .run(&d, &prog, &opts)
            .with_context(|| format!("generated program {seed}"))?;
        prog_times.push(r.duration);
        if r.lost.is_some() {
            eprintln!("program {seed} lost the guest: {:?}", r.lost);
            break;
        }
    }
    let total = t0.elapsed();
    let rate = prog_times.len() as f64 / total.as_secs_f64();
    drop(runner);
    vm.poweroff(Duration::from_secs(30));
    let rows = [
        (
            "harness overhead per op (wall - in-guest time)",
            Summary::of(&overhead),
        ),
        ("wall time per cheap op", Summary::of(&per_op)),
        ("in-guest time per cheap op", Summary::of(&in_guest)),
        ("generated program wall time", Summary::of(&prog_times)),
    ];
    if a.json {
        outln!(
            "{}",
            json!({
                "overhead_per_op": rows[0].1, "wall_per_op": rows[1].1, "guest_per_op": rows[2].1,
                "program_time": rows[3].1, "programs_per_s": rate, "programs": prog_times.len(),
                "ops": ops_total,
            })
        )?;
    } else {
        for (k, v) in rows {
            if let Some(v) = v {
                outln!("{k:<48} {v}")?;
            }
        }
        outln!(
            "{:<48} {rate:.2} ({} programs, {ops_total} ops, {:.1} s)",
            "generated programs per second",
            prog_times.len(),
            total.as_secs_f64()
        )?;
    }
    Ok(0)
}

/// `hotfuzz bench gen`: generator throughput.
fn gen(a: BenchGenArgs) -> Result<i32> {
    use hotfuzz::program::desc::Descriptions;
    use hotfuzz::program::gen::Generator;
    let d = Descriptions::embedded();
    let st = hotfuzz::program::state::GuestState::model(&hotfuzz_vm::MachineConfig::new(
        hotfuzz_vm::Arch::X86_64,
    ));
    let mut runs = Vec::new();
    let mut ops = 0;
    for round in 0..5u64 {
        let t = Instant::now();
        for s in 0..a.programs {
            let mut g = Generator::new(&d, &st, round * a.programs + s);
            ops += g.generate(a.len).ops.len();
        }
        runs.push(t.elapsed());
    }
    let per_program: Vec<Duration> = runs.iter().map(|r| *r / a.programs as u32).collect();
    let s = Summary::of(&per_program).expect("five rounds");
    outln!(
        "{} programs of ~{} ops x 5 rounds: median {:.0} programs/s (min {:.0}, max {:.0}); {:.1} us per program; {ops} ops",
        a.programs,
        a.len,
        1000.0 / s.median_ms,
        1000.0 / s.max_ms,
        1000.0 / s.min_ms,
        s.median_ms * 1000.0
    )?;
    Ok(0)
}

/// Peak resident set size of this process, in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `hotfuzz bench parse`: streams a large console log (real logs concatenated) through the
/// report parser, as `hotfuzz report parse FILE` does.
fn parse(a: BenchParseArgs) -> Result<i32> {
    use anyhow::Context;
    use std::io::Write;
    let mut logs = Vec::new();
    for p in &a.logs {
        let t = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        // Golden files: drop the header (up to the first blank line) when there is one.
        let body = match t.split_once("\n\n") {
            Some((head, body)) if head.lines().all(|l| l.starts_with('#') || l.contains(": ")) => {
                body.to_string()
            }
            _ => t,
        };
        logs.push(body);
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let path = dir.path().join("big.log");
    let target = a.mib << 20;
    let mut size = 0usize;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        'fill: loop {
            for l in &logs {
                f.write_all(l.as_bytes())?;
                size += l.len();
                if size >= target {
                    break 'fill;
                }
            }
        }
        f.flush()?;
    }
    let before = peak_rss_kib();
    let mut runs = Vec::new();
    let mut found = 0;
    let mut held = 0;
    for _ in 0..a.rounds.max(1) {
        let t = Instant::now();
        let f = std::fs::File::open(&path)?;
        let reports = hotfuzz::report::linux::parse_reader(std::io::BufReader::new(f))?;
        runs.push(t.elapsed());
        found = reports.len();
        held = reports.iter().map(|r| r.text.len()).sum::<usize>();
    }
    let grew = peak_rss_kib().saturating_sub(before);
    let s = Summary::of(&runs).expect("at least one round");
    let mb = size as f64 / 1e6;
    outln!(
        "{:.1} MB log from {} logs, {found} reports, {} rounds: median {:.1} MB/s (min {:.1}, max {:.1}); peak RSS grew {} KiB (the reports' text: {} KiB)",
        mb,
        logs.len(),
        runs.len(),
        mb / (s.median_ms / 1000.0),
        mb / (s.max_ms / 1000.0),
        mb / (s.min_ms / 1000.0),
        grew,
        held / 1024
    )?;
    Ok(0)
}
