//! The fuzzing loop against a fake target (a small model of memory-block hotplug with a
//! planted bug): mutators, feedback, objective wiring, determinism, and resuming after the
//! fuzzer is killed with SIGKILL. The same loop on real guests is `fuzz_on_guest.rs`.

mod common;

use hotfuzz::fuzz::engine::{self, ClientOutcome, ClientParams};
use hotfuzz::fuzz::features;
use hotfuzz::fuzz::input::ProgInput;
use hotfuzz::fuzz::target::{Execution, Found, Target, TargetCounters};
use hotfuzz::fuzz::{finish_resume, prepare_resume, Workdir};
use hotfuzz::program::desc::Descriptions;
use hotfuzz::program::prog::{Arg, Program};
use hotfuzz::program::state::GuestState;
use hotfuzz::report::ReportType;
use hotfuzz::run::runner::{OpResult, RunResult};
use hotfuzz_executor::protocol::{BlockSnapshot, Outcome};
use libafl::events::SimpleEventManager;
use libafl::monitors::NopMonitor;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const BUG: &str = "WARNING in fake_reonline";

/// Memory blocks 32..40 start online (plugged); offlining and onlining them is modelled;
/// a block that comes online again after being offlined "WARNs" (the bug zoo's
/// `warn_reonline` needs one cycle more; with this loop's state features alone that deeper
/// variant is found in some seeds only, see BENCHMARKS.md). Every 7th program is lost to an
/// "infrastructure" problem.
struct FakeTarget {
    runs: u64,
    delay: Duration,
    counters: TargetCounters,
}

impl FakeTarget {
    fn new(delay: Duration) -> FakeTarget {
        FakeTarget {
            runs: 0,
            delay,
            counters: TargetCounters {
                boots: 1,
                profile: "fake".into(),
                ..TargetCounters::default()
            },
        }
    }
}

fn block_of(a: &Arg, refs: &HashMap<u32, u64>) -> Option<u64> {
    match a {
        Arg::Int(v) => Some(*v),
        Arg::Ref(r) => refs.get(r).copied(),
        Arg::Str(_) => None,
    }
}

impl Target for FakeTarget {
    fn execute(&mut self, prog: &Program) -> anyhow::Result<Execution> {
        self.runs += 1;
        std::thread::sleep(self.delay);
        if self.runs.is_multiple_of(7) {
            self.counters.infra_errors += 1;
            return Ok(Execution {
                infra: Some("fake infrastructure failure".into()),
                ..Execution::default()
            });
        }
        // A fresh "guest" per program: blocks 32..40 online once.
        let mut onlines: HashMap<u64, u32> = (32..40).map(|b| (b, 1)).collect();
        let mut online: HashMap<u64, bool> = (32..40).map(|b| (b, true)).collect();
        let mut refs: HashMap<u32, u64> = HashMap::new();
        let mut ops = Vec::new();
        let mut bug = false;
        for (i, op) in prog.ops.iter().enumerate() {
            let outcome = match op.name.as_str() {
                "memblock_find" => {
                    let nth = match op.args.get(1) {
                        Some(Arg::Int(n)) => *n,
                        _ => 0,
                    };
                    let b = 32 + nth % 8;
                    if let Some(r) = op.ret {
                        refs.insert(r, b);
                    }
                    Outcome::val(b)
                }
                "memblock_state" | "memblock_online" => {
                    let b = op.args.first().and_then(|a| block_of(a, &refs));
                    let want_online = match (&op.name[..], op.args.get(1)) {
                        ("memblock_state", Some(Arg::Str(s))) => s.starts_with("online"),
                        ("memblock_online", Some(Arg::Int(v))) => *v != 0,
                        _ => false,
                    };
                    match b.and_then(|b| online.get(&b).copied().map(|o| (b, o))) {
                        None => Outcome::errno(libc::EINVAL),
                        Some((b, was)) if was == want_online => {
                            let _ = b;
                            Outcome::errno(libc::EINVAL)
                        }
                        Some((b, _)) => {
                            online.insert(b, want_online);
                            if want_online {
                                let n = onlines.entry(b).or_insert(0);
                                *n += 1;
                                if *n >= 2 {
                                    bug = true;
                                }
                            }
                            Outcome::ok()
                        }
                    }
                }
                _ => Outcome::ok(),
            };
            ops.push(OpResult {
                index: i,
                thread: op.thread,
                outcome: Some(outcome),
                duration: Duration::ZERO,
                started: None,
                kt_start_ns: None,
                kt_end_ns: None,
                runs: 1,
                oks: 1,
            });
        }
        let mut memory: Vec<BlockSnapshot> = online
            .iter()
            .map(|(id, on)| BlockSnapshot {
                id: *id,
                state: if *on {
                    BlockSnapshot::MOVABLE
                } else {
                    BlockSnapshot::OFFLINE
                },
            })
            .collect();
        memory.sort_by_key(|b| b.id);
        let run = RunResult {
            program_id: String::new(),
            console_mark: 0,
            ops,
            console: Vec::new(),
            started: SystemTime::now(),
            duration: Duration::ZERO,
            abandoned: Vec::new(),
            memory: Some(memory),
            lost: None,
            cover: Default::default(),
            executor_stderr: String::new(),
        };
        let mut ex = Execution {
            features: features::features(prog, &run),
            ..Execution::default()
        };
        if bug {
            ex.reports.push(Found {
                title: BUG.into(),
                kind: ReportType::Warning,
                dir: None,
                new_in_store: false,
            });
        }
        Ok(ex)
    }

    fn guest_state(&self) -> GuestState {
        let mut m = hotfuzz_vm::MachineConfig::new(hotfuzz_vm::Arch::X86_64);
        m.virtio_mem[0].requested = 1 << 30;
        GuestState::model(&m)
    }

    fn counters(&self) -> TargetCounters {
        self.counters.clone()
    }

    fn shutdown(&mut self) {}
}

fn params(dir: &Path, seed: u64, max_execs: Option<u64>) -> ClientParams {
    let w = Workdir {
        root: dir.to_path_buf(),
    };
    ClientParams {
        client: 0,
        clients: 1,
        corpus_dir: w.corpus(),
        solutions_dir: w.solutions(),
        resume: Vec::new(),
        seeds: Vec::new(),
        generate: 4,
        race_rate: 0.4,
        race_walkers: Vec::new(),
        program_len: 8,
        max_len: 24,
        seed,
        deadline: None,
        max_execs,
        d: Arc::new(Descriptions::embedded()),
    }
}

type Log = Arc<Mutex<Vec<(String, bool, bool)>>>;

fn campaign(p: &ClientParams, delay: Duration) -> (ClientOutcome, Log) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let observe = Box::new(move |i: &ProgInput, ex: &Execution| {
        l.lock()
            .unwrap()
            .push((i.text(), ex.infra.is_some(), !ex.reports.is_empty()));
    });
    let mut mgr = SimpleEventManager::new(NopMonitor {});
    let o = engine::run_client(
        p,
        FakeTarget::new(delay),
        None,
        &mut mgr,
        &|| false,
        Some(observe),
    )
    .unwrap();
    (o, log)
}

#[test]
fn the_loop_finds_the_planted_bug_and_keeps_one_solution_per_title() {
    let dir = tempfile::tempdir().unwrap();
    let p = params(dir.path(), 7, Some(1500));
    let (o, log) = campaign(&p, Duration::ZERO);
    let log = log.lock().unwrap();
    // The limit is checked between scheduled entries: a few mutated runs may follow it.
    assert!(
        (1500..=1500 + engine::MUTATIONS_PER_ENTRY as u64).contains(&o.execs),
        "{} executions",
        o.execs
    );
    assert_eq!(log.len() as u64, o.execs);
    let hits = log.iter().filter(|(_, _, bug)| *bug).count();
    assert!(hits >= 1, "the fake bug was not found in 1500 executions");
    // One solution for the title however often it was hit; the count says how often.
    assert_eq!(o.solutions, 1, "{:?}", o.titles);
    assert_eq!(o.titles, vec![(BUG.to_string(), hits as u64)]);
    let sols = common::dir_files(&dir.path().join("solutions"));
    assert_eq!(sols.len(), 1);
    let sol = std::fs::read_to_string(&sols[0]).unwrap();
    assert!(sol.contains("memblock_"), "{sol}");
    // Feedback: programs reaching new states were kept, and every kept one is a valid
    // program on disk (the corpus directory is the corpus).
    assert!(o.corpus > 10, "corpus {}", o.corpus);
    let files = common::dir_files(&dir.path().join("corpus"));
    assert_eq!(files.len(), o.corpus);
    let d = Descriptions::embedded();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        Program::parse(&text, &d)
            .unwrap_or_else(|e| panic!("{}: {e}\n{text}", f.display()))
            .validate(&d)
            .unwrap();
    }
    // Infrastructure failures observe nothing, so they never enter the corpus.
    assert_eq!(
        log.iter().filter(|(_, infra, _)| *infra).count() as u64,
        o.execs / 7
    );
    // Mutation changed programs: many distinct ones ran.
    let distinct: std::collections::HashSet<&String> = log.iter().map(|(t, _, _)| t).collect();
    assert!(distinct.len() > 500, "{} distinct programs", distinct.len());
}

/// The seed fixes what is generated; which corpus entries are favoured afterwards depends
/// on LibAFL's minimizer, which culls in hash-map order (foldhash seeds every map from the
/// stack address), so later executions are not bit-reproducible and this does not claim so.
#[test]
fn a_seed_fixes_the_generated_programs() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let with = |dir: &Path, seed| {
        let mut p = params(dir, seed, Some(60));
        p.generate = 40;
        campaign(&p, Duration::ZERO).1
    };
    let (la, lb, lc) = (with(a.path(), 11), with(b.path(), 11), with(c.path(), 12));
    let (la, lb, lc) = (la.lock().unwrap(), lb.lock().unwrap(), lc.lock().unwrap());
    let texts =
        |l: &[(String, bool, bool)]| l.iter().take(40).map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&la), texts(&lb));
    assert_ne!(texts(&la), texts(&lc));
    // And they are 40 different programs, not one repeated.
    let distinct: std::collections::HashSet<String> = texts(&la).into_iter().collect();
    assert!(distinct.len() > 35, "{} distinct", distinct.len());
}

/// Not a test on its own: the fuzzer process `resume_after_sigkill` kills.
#[test]
#[ignore]
fn fake_campaign_child() {
    let Some(dir) = std::env::var_os("HOTFUZZ_FAKE_WORKDIR") else {
        return;
    };
    let p = params(Path::new(&dir), 5, None);
    campaign(&p, Duration::from_millis(3));
}

#[test]
fn resume_after_sigkill_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let w = Workdir {
        root: dir.path().to_path_buf(),
    };
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "fake_campaign_child", "--ignored", "--nocapture"])
        .env("HOTFUZZ_FAKE_WORKDIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while common::dir_files(&w.corpus()).len() < 25 {
        assert!(
            std::time::Instant::now() < deadline,
            "the child fuzzer made no corpus"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: killing our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let before = common::dir_files(&w.corpus());
    let d = Descriptions::embedded();
    for f in &before {
        // Written atomically: a file is whole or absent, never half a program.
        let text = std::fs::read_to_string(f).unwrap();
        Program::parse(&text, &d).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    let names = |v: &[std::path::PathBuf]| -> Vec<String> {
        v.iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect()
    };

    // A second campaign picks the corpus up again...
    let resume = prepare_resume(&w).unwrap();
    assert_eq!(names(&resume), names(&before));
    assert!(common::dir_files(&w.corpus()).is_empty());
    let mut p = params(dir.path(), 6, Some(resume.len() as u64 + 20));
    p.resume = resume.clone();
    let (o, log) = campaign(&p, Duration::ZERO);
    // ...running every resumed program once, in order, before anything new...
    let log = log.lock().unwrap();
    for (i, f) in resume.iter().enumerate() {
        let text = std::fs::read_to_string(w.corpus().join(f.file_name().unwrap()))
            .or_else(|_| std::fs::read_to_string(w.resume().join(f.file_name().unwrap())))
            .unwrap();
        assert_eq!(log[i].0, text, "program {i} of the resumed corpus");
    }
    // ...and keeping them all: in the corpus again, or (the ones that crashed, which became
    // solutions) moved back when the campaign ends.
    finish_resume(&w).unwrap();
    assert!(!w.resume().exists());
    let after = names(&common::dir_files(&w.corpus()));
    for n in names(&before) {
        assert!(after.contains(&n), "{n} was lost");
    }
    let crashed = log
        .iter()
        .take(resume.len())
        .filter(|(_, _, bug)| *bug)
        .count();
    assert!(
        o.corpus >= before.len() - crashed,
        "corpus {} < {} - {crashed}",
        o.corpus,
        before.len()
    );
}

#[test]
fn an_unparsable_corpus_file_is_quarantined_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let w = Workdir {
        root: dir.path().to_path_buf(),
    };
    std::fs::create_dir_all(w.corpus()).unwrap();
    std::fs::write(w.corpus().join("good.prog"), "yield()\n").unwrap();
    // Half a program (a disk that filled), and one from descriptions that changed since.
    std::fs::write(w.corpus().join("half.prog"), "memblock_state(block=0x2").unwrap();
    std::fs::write(w.corpus().join("old.prog"), "renamed_op(x=0x1)\n").unwrap();
    let resume = prepare_resume(&w).unwrap();
    let names: Vec<_> = resume
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["good.prog"]);
    let q: Vec<_> = common::dir_files(&w.quarantine())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(q, ["half.prog", "old.prog"]);
    // The campaign starts; and the next start too.
    let mut p = params(dir.path(), 1, Some(3));
    p.resume = resume;
    campaign(&p, Duration::ZERO);
    finish_resume(&w).unwrap();
    assert!(!prepare_resume(&w).unwrap().is_empty());
}

#[test]
fn a_second_campaign_on_the_same_workdir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let w = Workdir {
        root: dir.path().to_path_buf(),
    };
    let first = hotfuzz::fuzz::lock_workdir(&w).unwrap();
    let e = hotfuzz::fuzz::lock_workdir(&w).unwrap_err().to_string();
    assert!(
        e.contains(&format!("another campaign (pid {})", std::process::id())),
        "{e}"
    );
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
    drop(first);
    hotfuzz::fuzz::lock_workdir(&w).unwrap();
}
