//! `hotfuzz fuzz`: a LibAFL fuzzing loop over real guests.
//!
//! ```text
//!  corpus/ seeds ─┐        ┌─ mutators (insert, remove, swap, change arg, move thread,
//!  workdir/corpus ┼─> StdFuzzer ─┘   splice, generate)   ──> ProgExecutor ──> Target (guest)
//!                 │   feedback: new KCOV PCs | new state features      observers <──┘ │
//!                 │   objective: crash ∧ new title ──> workdir/solutions              │
//!                 └──────────────────────────────── reports/ (filed by the target) <──┘
//! ```
//!
//! One guest runs in-process ([`libafl::events::SimpleEventManager`]); several run as LibAFL
//! Launcher clients sharing their corpus over LLMP on 127.0.0.1, one guest per client.

pub mod config;
pub mod engine;
pub mod executor;
pub mod features;
pub mod guest;
pub mod input;
pub mod monitor;
pub mod mutators;
pub mod objective;
pub mod parent_death;
pub mod target;

use anyhow::{bail, Context, Result};
use config::FuzzConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The repository's seed programs, built into hotfuzz.
pub mod seeds {
    include!(concat!(env!("OUT_DIR"), "/seeds.rs"));
}

/// Where a campaign keeps its files.
#[derive(Debug, Clone)]
pub struct Workdir {
    /// The directory.
    pub root: PathBuf,
}

impl Workdir {
    /// The working corpus.
    pub fn corpus(&self) -> PathBuf {
        self.root.join("corpus")
    }
    /// Corpus files of an earlier run waiting to be loaded again.
    pub fn resume(&self) -> PathBuf {
        self.root.join("corpus.resume")
    }
    /// Corpus files that did not parse when a campaign resumed (kept for a human to look at).
    pub fn quarantine(&self) -> PathBuf {
        self.root.join("corpus.quarantine")
    }
    /// Held while a campaign uses the directory.
    pub fn lock(&self) -> PathBuf {
        self.root.join(".lock")
    }
    /// Programs that caused new titles.
    pub fn solutions(&self) -> PathBuf {
        self.root.join("solutions")
    }
    /// The stats file.
    pub fn stats(&self) -> PathBuf {
        self.root.join("stats.jsonl")
    }
    /// Logs (run logs per guest, client output).
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
}

fn program_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Moves the corpus of an earlier run aside to be loaded (and so re-evaluated) again; a
/// resume that was itself interrupted is merged. Returns the files to load.
pub fn prepare_resume(w: &Workdir) -> Result<Vec<PathBuf>> {
    let corpus = w.corpus();
    let resume = w.resume();
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    std::fs::create_dir_all(&resume).with_context(|| format!("creating {}", resume.display()))?;
    for e in std::fs::read_dir(&corpus)?.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            // Lock files and temporary files of the corpus: recreated as needed.
            let _ = std::fs::remove_file(&p);
            continue;
        }
        let to = resume.join(&name);
        if to.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        } else {
            std::fs::rename(&p, &to).with_context(|| format!("moving {}", p.display()))?;
        }
    }
    let mut files = Vec::new();
    for f in program_files(&resume)? {
        // One unreadable or unparsable file (a disk that filled, a hand edit, descriptions
        // that changed) must not stop every later start: it is put aside.
        let bad = match std::fs::read_to_string(&f) {
            Ok(text) => input::ProgInput::parse(&text)
                .err()
                .map(|e| format!("{}:{}: {}", e.line, e.col, e.msg)),
            Err(e) => Some(e.to_string()),
        };
        match bad {
            None => files.push(f),
            Some(why) => {
                let q = w.quarantine();
                std::fs::create_dir_all(&q).with_context(|| format!("creating {}", q.display()))?;
                let to = q.join(f.file_name().expect("file name"));
                tracing::warn!("{}: {why}; moved to {}", f.display(), to.display());
                std::fs::rename(&f, &to).with_context(|| format!("moving {}", f.display()))?;
            }
        }
    }
    if files.is_empty() {
        let _ = std::fs::remove_dir(&resume);
    }
    Ok(files)
}

/// After a campaign: resume files that were not loaded again go back into the corpus (a
/// stopped campaign loses nothing).
pub fn finish_resume(w: &Workdir) -> Result<()> {
    let resume = w.resume();
    if !resume.exists() {
        return Ok(());
    }
    for p in program_files(&resume)? {
        let to = w.corpus().join(p.file_name().expect("file name"));
        if to.exists() {
            std::fs::remove_file(&p)?;
        } else {
            std::fs::rename(&p, &to)?;
        }
    }
    let _ = std::fs::remove_dir_all(&resume);
    Ok(())
}

/// Reads the seeds the configuration names: `embedded`, program files, directories of
/// `*.prog`. Every one must parse (errors name file, line and column).
pub fn load_seeds(
    cfg: &FuzzConfig,
    d: &crate::program::desc::Descriptions,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for s in &cfg.seeds {
        if s == "embedded" {
            for (name, text) in seeds::SEEDS {
                out.push((format!("embedded:{name}"), text.to_string()));
            }
            continue;
        }
        let p = Path::new(s);
        let files = if p.is_dir() {
            program_files(p)?
                .into_iter()
                .filter(|f| f.extension().is_some_and(|x| x == "prog"))
                .collect()
        } else if p.is_file() {
            vec![p.to_path_buf()]
        } else {
            bail!("seed {s}: no such file or directory");
        };
        for f in files {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            out.push((f.display().to_string(), text));
        }
    }
    for (name, text) in &out {
        crate::program::prog::Program::parse(text, d)
            .map_err(|e| anyhow::anyhow!("{name}:{}:{}: {}", e.line, e.col, e.msg))?;
    }
    Ok(out)
}

/// What a campaign did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Wall time.
    pub elapsed: Duration,
    /// Executions.
    pub execs: u64,
    /// Corpus size at the end.
    pub corpus: usize,
    /// Bugs filed or seen again during the campaign: (title, count in the store, directory).
    pub reports: Vec<(String, u64, PathBuf)>,
    /// State features / PCs seen.
    pub states: usize,
    /// PCs seen.
    pub coverage: usize,
    /// Guest boots, failed boots, runs lost to infrastructure, suppressed reports.
    pub counters: target::TargetCounters,
    /// Why it stopped.
    pub stopped: String,
    /// The working directory.
    pub workdir: PathBuf,
}

/// The bugs the store saw since `since`.
pub fn reports_since(reports: &Path, since: SystemTime) -> Vec<(String, u64, PathBuf)> {
    let Ok(Some(store)) = crate::store::Store::existing(reports) else {
        return Vec::new();
    };
    let since = humantime::format_rfc3339_seconds(since).to_string();
    store
        .list()
        .map(|all| {
            all.into_iter()
                .filter(|s| s.meta.last_seen >= since)
                .map(|s| (s.meta.title, s.meta.count, s.dir))
                .collect()
        })
        .unwrap_or_default()
}

/// The random seed of a campaign.
pub fn campaign_seed(cfg: &FuzzConfig) -> u64 {
    cfg.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    })
}

/// What both campaign modes start from: the descriptions, the work directory, the seeds and
/// the corpus moved aside to be resumed.
struct Prepared {
    /// The work directory's lock, held for the campaign.
    _lock: std::fs::File,
    d: Arc<crate::program::desc::Descriptions>,
    w: Workdir,
    seeds: Vec<(String, String)>,
    resume: Vec<PathBuf>,
}

fn prepare(cfg: &FuzzConfig) -> Result<Prepared> {
    let mut d = crate::program::desc::Descriptions::embedded();
    for (name, w) in &cfg.op_weights {
        let op = d
            .ops
            .iter_mut()
            .find(|o| &o.name == name)
            .ok_or_else(|| anyhow::anyhow!("op_weights: no operation named {name:?}"))?;
        op.weight = *w;
    }
    let d = Arc::new(d);
    input::set_descriptions(d.clone());
    let w = Workdir {
        root: cfg.workdir.clone(),
    };
    std::fs::create_dir_all(w.logs()).with_context(|| format!("creating {}", w.root.display()))?;
    let lock = lock_workdir(&w)?;
    let seeds = load_seeds(cfg, &d)?;
    let resume = prepare_resume(&w)?;
    Ok(Prepared {
        _lock: lock,
        d,
        w,
        seeds,
        resume,
    })
}

/// Locks the work directory for a campaign: a second campaign on it would move the first
/// one's live corpus aside, so it is refused, naming the first.
/// The lock is held while the returned file (or a forked client's copy) is open.
pub fn lock_workdir(w: &Workdir) -> Result<std::fs::File> {
    let path = w.lock();
    match hotfuzz_vm::cache::FileLock::try_acquire(&path)? {
        Some(l) => {
            // Who holds it, for the message a second campaign prints (the lock is on the
            // open file, not its content).
            let _ = std::fs::write(&path, format!("{}\n", std::process::id()));
            Ok(l.into_file())
        }
        None => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another campaign (pid {}) is using the work directory {}: stop it or give \
                 this one a --workdir of its own",
                pid.trim(),
                w.root.display()
            )
        }
    }
}

/// A check, cheap enough to call after every execution, of whether a report with one of the
/// configuration's `stop_on_titles` was filed since `since`.
fn title_watch(cfg: &FuzzConfig, since: SystemTime) -> impl Fn() -> bool {
    let titles = cfg.stop_on_titles.clone();
    let reports = cfg.reports.clone();
    let last = std::cell::Cell::new(Instant::now() - Duration::from_secs(60));
    let hit = std::cell::Cell::new(false);
    move || {
        if titles.is_empty() || hit.get() {
            return hit.get();
        }
        if last.get().elapsed() < Duration::from_secs(2) {
            return false;
        }
        last.set(Instant::now());
        let found = reports_since(&reports, since)
            .iter()
            .any(|(t, _, _)| titles.iter().any(|x| x == t));
        hit.set(found);
        found
    }
}

/// Runs a campaign with one guest in this process.
pub fn run_single(cfg: &FuzzConfig) -> Result<Summary> {
    let Prepared {
        _lock,
        d,
        w,
        seeds,
        resume,
    } = prepare(cfg)?;
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let duration = cfg.duration()?;
    let params = engine::ClientParams {
        client: 0,
        clients: 1,
        corpus_dir: w.corpus(),
        solutions_dir: w.solutions(),
        resume,
        seeds,
        generate: cfg.generate,
        program_len: cfg.program_len,
        race_rate: cfg.race_rate,
        race_walkers: cfg.race_walkers.clone(),
        max_len: cfg.max_len,
        seed: campaign_seed(cfg),
        deadline: duration.map(|d| started + d),
        max_execs: cfg.max_execs,
        d: d.clone(),
    };
    let monitor = monitor::StatusMonitor::new(monitor::MonitorConfig {
        stats_path: w.stats(),
        interval: Duration::from_secs(cfg.stats_interval.max(1)),
        duration,
        reports: cfg.reports.clone(),
        quiet: false,
    });
    let mut mgr = libafl::events::SimpleEventManager::new(monitor);
    let target = guest::GuestTarget::new(guest::GuestSetup::from_config(cfg, 0), d.clone())?;
    hotfuzz_vm::process::set_graceful(true);
    let found = title_watch(cfg, started_wall);
    let stop = || hotfuzz_vm::process::stop_requested() || found();
    let result = engine::run_client(&params, target, None, &mut mgr, &stop, None);
    hotfuzz_vm::process::set_graceful(false);
    finish_resume(&w)?;
    let o = result?;
    Ok(Summary {
        elapsed: started.elapsed(),
        execs: o.execs,
        corpus: o.corpus,
        reports: reports_since(&cfg.reports, started_wall),
        states: o.states,
        coverage: o.coverage,
        counters: o.counters,
        stopped: o.stopped,
        workdir: w.root,
    })
}

/// Runs a campaign with `cfg.vms` guests, each in a LibAFL Launcher client process, sharing
/// their corpus through an LLMP broker on 127.0.0.1.
pub fn run_launcher(cfg: &FuzzConfig) -> Result<Summary> {
    use libafl::events::{EventConfig, Launcher};
    use libafl_bolts::core_affinity::Cores;
    use libafl_bolts::shmem::ShMemProvider;

    let Prepared {
        _lock,
        d,
        w,
        seeds,
        resume,
    } = prepare(cfg)?;
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let duration = cfg.duration()?;
    let seed = campaign_seed(cfg);
    let host_cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (cores, overcommit) = if cfg.vms <= host_cores {
        (format!("0-{}", cfg.vms - 1), 1)
    } else {
        (
            format!("0-{}", host_cores - 1),
            cfg.vms.div_ceil(host_cores),
        )
    };
    let clients = if overcommit == 1 {
        cfg.vms
    } else {
        host_cores * overcommit
    };
    if clients != cfg.vms {
        eprintln!("hotfuzz: {clients} guests ({overcommit} per host core)");
    }
    let cores = Cores::from_cmdline(&cores).map_err(|e| anyhow::anyhow!("cores: {e}"))?;
    let broker_port = {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a broker port")?;
        l.local_addr()?.port()
    };
    let monitor = monitor::StatusMonitor::new(monitor::MonitorConfig {
        stats_path: w.stats(),
        interval: Duration::from_secs(cfg.stats_interval.max(1)),
        duration,
        reports: cfg.reports.clone(),
        quiet: false,
    });
    let shmem =
        parent_death::DiesWithParent::new().map_err(|e| anyhow::anyhow!("shared memory: {e}"))?;
    let client_log = w.logs().join("clients.log");
    let client_log_str = client_log.to_string_lossy().to_string();
    let outcomes = w.root.join("clients");
    std::fs::create_dir_all(&outcomes)?;
    let pid = std::process::id();
    let mut run_client = |restored: Option<engine::FuzzState>,
                          mut mgr,
                          desc: libafl::events::ClientDescription|
     -> Result<(), libafl::Error> {
        // A forked client: it ends with the launcher however that ends (its guests and VM
        // directories with it), taking LibAFL's restarter between them down too; and a
        // signal sent to it is acted on.
        // SAFETY: getppid has no preconditions.
        let ppid = unsafe { libc::getppid() };
        if let Err(e) = hotfuzz_vm::process::exit_when_gone(
            pid as i32,
            (ppid != pid as i32 && ppid > 1).then_some(ppid),
        ) {
            tracing::warn!("{e}");
        }
        hotfuzz_vm::process::install_signal_handlers_after_fork();
        let client = desc.id().saturating_sub(1);
        let params = engine::ClientParams {
            client,
            clients,
            corpus_dir: w.corpus(),
            solutions_dir: w.solutions(),
            resume: if client == 0 {
                resume.clone()
            } else {
                Vec::new()
            },
            seeds: if client == 0 {
                seeds.clone()
            } else {
                Vec::new()
            },
            generate: cfg.generate,
            program_len: cfg.program_len,
            race_rate: cfg.race_rate,
            race_walkers: cfg.race_walkers.clone(),
            max_len: cfg.max_len,
            seed,
            deadline: duration.map(|d| started + d),
            max_execs: cfg.max_execs.map(|m| m.div_ceil(clients as u64)),
            d: d.clone(),
        };
        let run = || -> Result<engine::ClientOutcome> {
            let target =
                guest::GuestTarget::new(guest::GuestSetup::from_config(cfg, client), d.clone())?;
            engine::run_client(&params, target, restored, &mut mgr, &|| false, None)
        };
        match run() {
            Ok(o) => {
                let j = serde_json::json!({
                    "client": client, "execs": o.execs, "corpus": o.corpus,
                    "states": o.states, "coverage": o.coverage, "stopped": o.stopped,
                    "counters": o.counters,
                });
                let _ = hotfuzz_vm::cache::atomic_write(
                    &outcomes.join(format!("{client}.json")),
                    j.to_string().as_bytes(),
                );
                libafl::events::SendExiting::send_exiting(&mut mgr)?;
                Ok(())
            }
            Err(e) => {
                eprintln!("hotfuzz: guest {client}: {e:#}");
                libafl::events::SendExiting::send_exiting(&mut mgr)?;
                Err(libafl::Error::shutting_down())
            }
        }
    };
    let launched = Launcher::builder()
        .shmem_provider(shmem)
        .configuration(EventConfig::from_name("hotfuzz"))
        .monitor(monitor)
        .run_client(&mut run_client)
        .cores(&cores)
        .overcommit(overcommit)
        .broker_port(broker_port)
        .stdout_file(Some(&client_log_str))
        .build()
        .launch::<input::ProgInput, engine::FuzzState>();
    if std::process::id() != pid {
        // A forked client process whose fuzzer has stopped: LibAFL returns here in it too.
        std::process::exit(0);
    }
    finish_resume(&w)?;
    match launched {
        Ok(()) | Err(libafl::Error::ShuttingDown) => {}
        Err(e) => bail!("the fuzzer launcher failed: {e} (client output: {client_log_str})"),
    }
    let mut s = Summary {
        elapsed: started.elapsed(),
        reports: reports_since(&cfg.reports, started_wall),
        workdir: w.root.clone(),
        stopped: "all guests stopped".into(),
        ..Summary::default()
    };
    for f in program_files(&outcomes).unwrap_or_default() {
        if let Some(j) = std::fs::read_to_string(&f)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        {
            let n = |k: &str| j[k].as_u64().unwrap_or(0);
            s.execs += n("execs");
            s.corpus = s.corpus.max(n("corpus") as usize);
            s.states += n("states") as usize;
            s.coverage += n("coverage") as usize;
            if let Ok(c) = serde_json::from_value::<target::TargetCounters>(j["counters"].clone()) {
                s.counters.add(&c);
            }
            if let Some(why) = j["stopped"].as_str() {
                s.stopped = why.to_string();
            }
        }
        let _ = std::fs::remove_file(&f);
    }
    if s.execs == 0 {
        if let Some(last) = monitor::last_stats(&w.stats()) {
            s.execs = last["execs"].as_u64().unwrap_or(0);
        }
    }
    Ok(s)
}

/// Runs a campaign: one guest in-process, or a Launcher with a client per guest.
pub fn run(cfg: &FuzzConfig) -> Result<Summary> {
    cfg.validate()?;
    let built;
    let cfg = if cfg.kernel.build.is_some() {
        // Built (or taken from the build cache) once, before any guest boots.
        let mut c = cfg.clone();
        c.kernel = cfg.kernel.built(cfg.arch)?;
        built = c;
        &built
    } else {
        cfg
    };
    if cfg.vms == 1 {
        run_single(cfg)
    } else {
        run_launcher(cfg)
    }
}
