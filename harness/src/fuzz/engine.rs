//! One fuzzer instance: LibAFL's `StdFuzzer` with the program input, the target executor,
//! feedbacks that keep programs reaching new coverage or new states, and the new-title
//! objective; the initial corpus (resumed corpus, seeds, generated programs) and the loop
//! that stops at the deadline, the execution limit or a stop request.

use super::executor::{KcovObserver, ProgExecutor, StatesObserver};
use super::features::MAP_SIZE;
use super::input::ProgInput;
use super::mutators::{self, SharedState};
use super::objective::{NewTitleFeedback, ReportObserver, TitlesMetadata};
use super::target::{Target, TargetCounters};
use crate::program::desc::Descriptions;
use crate::program::gen::{Generator, WalkerTurns};
use anyhow::Result;
use libafl::corpus::Testcase;
use libafl::corpus::{Corpus, InMemoryOnDiskCorpus, OnDiskCorpus};
use libafl::events::{EventFirer, EventReceiver, ProgressReporter, SendExiting};
use libafl::feedbacks::MapIndexesMetadata;
use libafl::feedbacks::{CrashFeedback, MaxMapFeedback};
use libafl::mutators::SingleChoiceScheduledMutator;
use libafl::observers::{CanTrack, StdMapObserver};
use libafl::schedulers::{MinimizerScheduler, QueueScheduler, TestcasePenalty};
use libafl::stages::StdMutationalStage;
use libafl::state::{HasCorpus, HasExecutions, HasSolutions, StdState};
use libafl::{feedback_and_fast, feedback_or, Evaluator, Fuzzer, HasMetadata, StdFuzzer};
use libafl_bolts::rands::StdRand;
use libafl_bolts::tuples::{tuple_list, Handled};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// The fuzzer state of a campaign.
pub type FuzzState =
    StdState<InMemoryOnDiskCorpus<ProgInput>, ProgInput, StdRand, OnDiskCorpus<ProgInput>>;

/// Mutated executions per scheduled corpus entry, at most (guest runs take seconds).
pub const MUTATIONS_PER_ENTRY: usize = 4;

/// What one fuzzer instance is to do.
pub struct ClientParams {
    /// This instance's number (0-based) and how many there are.
    pub client: usize,
    /// All instances.
    pub clients: usize,
    /// Working corpus directory (shared by the instances).
    pub corpus_dir: PathBuf,
    /// Solutions directory.
    pub solutions_dir: PathBuf,
    /// Corpus files of an earlier run to load first (instance 0 only).
    pub resume: Vec<PathBuf>,
    /// Seed programs (file name, text), loaded by instance 0.
    pub seeds: Vec<(String, String)>,
    /// Programs to generate at the start.
    pub generate: usize,
    /// Generated program length.
    pub program_len: usize,
    /// Chance that a generated program is a race.
    pub race_rate: f64,
    /// The walkers races take in turn (empty: all).
    pub race_walkers: Vec<String>,
    /// Longest program.
    pub max_len: usize,
    /// Random seed.
    pub seed: u64,
    /// Stop at this time.
    pub deadline: Option<Instant>,
    /// Stop after this many executions of this instance.
    pub max_execs: Option<u64>,
    /// Descriptions.
    pub d: Arc<Descriptions>,
}

/// What an instance did.
#[derive(Debug, Clone, Default)]
pub struct ClientOutcome {
    /// Executions.
    pub execs: u64,
    /// Corpus entries at the end.
    pub corpus: usize,
    /// Solutions kept (one per new title).
    pub solutions: usize,
    /// Titles this instance saw, with how many programs caused each.
    pub titles: Vec<(String, u64)>,
    /// Distinct state features seen.
    pub states: usize,
    /// Distinct PCs seen.
    pub coverage: usize,
    /// The target's counters.
    pub counters: TargetCounters,
    /// Why it stopped.
    pub stopped: String,
}

/// Runs one fuzzer instance on `target` until its deadline, execution limit or a stop
/// request. `restored` is the state a restarting event manager kept across a crash of the
/// fuzzing process. `observe` sees every execution (tests).
pub fn run_client<T, EM>(
    p: &ClientParams,
    target: T,
    restored: Option<FuzzState>,
    mgr: &mut EM,
    stop: &dyn Fn() -> bool,
    observe: Option<super::executor::OnExecution>,
) -> Result<ClientOutcome>
where
    T: Target,
    EM: EventFirer<ProgInput, FuzzState>
        + EventReceiver<ProgInput, FuzzState>
        + ProgressReporter<FuzzState>
        + SendExiting,
{
    super::input::set_descriptions(p.d.clone());
    let kcov: KcovObserver = StdMapObserver::owned("kcov", vec![0u8; MAP_SIZE]);
    let states: StatesObserver =
        StdMapObserver::owned("states", vec![0u8; MAP_SIZE]).track_indices();
    let reports = ReportObserver::default();
    let (kh, sh, rh) = (kcov.handle(), states.handle(), reports.handle());

    let mut feedback = feedback_or!(MaxMapFeedback::new(&states), MaxMapFeedback::new(&kcov));
    let mut objective = feedback_and_fast!(CrashFeedback::new(), NewTitleFeedback::new(&reports));
    let fresh = restored.is_none();
    let mut state = match restored {
        Some(s) => s,
        None => StdState::new(
            StdRand::with_seed(p.seed.wrapping_add(p.client as u64)),
            InMemoryOnDiskCorpus::no_meta(&p.corpus_dir)
                .map_err(|e| anyhow::anyhow!("corpus {}: {e}", p.corpus_dir.display()))?,
            OnDiskCorpus::new(&p.solutions_dir)
                .map_err(|e| anyhow::anyhow!("solutions {}: {e}", p.solutions_dir.display()))?,
            &mut feedback,
            &mut objective,
        )
        .map_err(|e| anyhow::anyhow!("creating the fuzzer state: {e}"))?,
    };
    let scheduler: MinimizerScheduler<_, ProgPenalty, _, MapIndexesMetadata, _> =
        MinimizerScheduler::new(&states, QueueScheduler::new());
    let mut fuzzer = StdFuzzer::new(scheduler, feedback, objective);

    let guest_state: SharedState = Arc::new(RwLock::new(target.guest_state()));
    let mut executor = ProgExecutor::new(
        target,
        tuple_list!(kcov, states, reports),
        kh,
        sh,
        rh,
        guest_state.clone(),
    );
    executor.on_execution = observe;
    // One walker rotation for every race this instance generates, starting at a place of
    // its own so instances take different walkers first.
    let turns =
        WalkerTurns::starting_at(p.seed.wrapping_add(p.client as u64 * 7)).only(&p.race_walkers);
    let mutator = SingleChoiceScheduledMutator::new(mutators::all(
        &p.d,
        &guest_state,
        mutators::GenSettings {
            len: p.program_len,
            max_len: p.max_len,
            race_rate: p.race_rate,
        },
        &turns,
    ));
    let mut stages = tuple_list!(StdMutationalStage::with_max_iterations(
        mutator,
        NonZeroUsize::new(MUTATIONS_PER_ENTRY).expect("non-zero")
    ));

    let over = |state: &FuzzState| -> Option<String> {
        if stop() {
            return Some("stop requested".into());
        }
        if p.deadline.is_some_and(|d| Instant::now() >= d) {
            return Some("duration reached".into());
        }
        if p.max_execs.is_some_and(|m| *state.executions() >= m) {
            return Some("execution limit reached".into());
        }
        None
    };

    let lib = |e: libafl::Error| anyhow::anyhow!("{e}");
    if fresh {
        // A corpus from an earlier run first, then the seeds, then generated programs.
        let mut inputs: Vec<(String, ProgInput)> = Vec::new();
        if p.client == 0 {
            for f in &p.resume {
                // `prepare_resume` put unparsable files aside; one that went bad since is
                // skipped, not fatal.
                let parsed = std::fs::read_to_string(f)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        ProgInput::parse(&t).map_err(|e| format!("{}:{}: {}", e.line, e.col, e.msg))
                    });
                match parsed {
                    Ok(i) => inputs.push((f.display().to_string(), i)),
                    Err(e) => tracing::warn!("{}: {e}; not resumed", f.display()),
                }
            }
            for (name, text) in &p.seeds {
                let i = ProgInput::parse(text)
                    .map_err(|e| anyhow::anyhow!("{name}:{}:{}: {}", e.line, e.col, e.msg))?;
                inputs.push((name.clone(), i));
            }
        }
        for (name, i) in inputs {
            if over(&state).is_some() {
                break;
            }
            tracing::info!("initial program {name}");
            fuzzer
                .add_input(&mut state, &mut executor, mgr, i)
                .map_err(lib)?;
        }
        let mut n = 0;
        while (n < p.generate || state.corpus().count() == 0) && over(&state).is_none() {
            let st = guest_state
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let seed = p.seed ^ ((p.client as u64) << 32) ^ n as u64;
            let mut g = Generator::new(&p.d, &st, seed);
            g.race_rate = p.race_rate;
            g.walker_turns = Some(turns.clone());
            let prog = g.generate(p.program_len);
            let i = ProgInput::new(prog);
            if state.corpus().count() == 0 && n >= p.generate {
                // Something to start from, even if nothing was interesting (or everything
                // crashed).
                fuzzer
                    .add_input(&mut state, &mut executor, mgr, i)
                    .map_err(lib)?;
            } else {
                fuzzer
                    .evaluate_input(&mut state, &mut executor, mgr, &i)
                    .map_err(lib)?;
            }
            n += 1;
        }
    }
    let stopped = loop {
        if let Some(why) = over(&state) {
            break why;
        }
        fuzzer
            .fuzz_one(&mut stages, &mut executor, &mut state, mgr)
            .map_err(lib)?;
    };
    executor.target_mut().shutdown();
    let titles = state
        .metadata::<TitlesMetadata>()
        .map(|m| m.counts.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default();
    Ok(ClientOutcome {
        execs: *state.executions(),
        corpus: state.corpus().count(),
        solutions: state.solutions().count(),
        titles,
        states: executor.seen.features.len(),
        coverage: executor.seen.pcs.len(),
        counters: executor.counters(),
        stopped,
    })
}

/// How costly a corpus entry is to keep favoured: its number of operations times its run
/// time in 100 ms steps. LibAFL's own length×time penalty uses milliseconds, so timing
/// noise of a few milliseconds would decide between equally useful programs; a guest run's
/// cost is only meaningful at this coarser grain.
pub struct ProgPenalty;

impl<S> TestcasePenalty<ProgInput, S> for ProgPenalty
where
    S: HasCorpus<ProgInput>,
{
    fn compute(state: &S, entry: &mut Testcase<ProgInput>) -> Result<f64, libafl::Error> {
        let steps = entry.exec_time().map_or(0, |d| d.as_millis() / 100) + 1;
        let len = entry.load_len(state.corpus())?.max(1);
        Ok((steps * len as u128) as f64)
    }
}
