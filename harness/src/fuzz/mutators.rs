//! The program mutations of [`crate::program::mutate`] (and fresh generation) as LibAFL mutators. They
//! draw their randomness from the fuzzer state, so a campaign is deterministic for a seed and
//! a deterministic target, and they generate for the guest the target last booted.

use super::input::ProgInput;
use crate::program::desc::Descriptions;
use crate::program::gen::Generator;
use crate::program::mutate::{apply, Mutation};
use crate::program::state::GuestState;
use libafl::corpus::Corpus;
use libafl::mutators::{MutationResult, Mutator};
use libafl::state::{HasCorpus, HasRand};
use libafl_bolts::rands::Rand;
use libafl_bolts::Named;
use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::sync::{Arc, RwLock};

/// The guest state the generator works with, shared with the executor that updates it.
pub type SharedState = Arc<RwLock<GuestState>>;

/// What a [`ProgMutator`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One of the program mutations (splice takes its partner from the corpus).
    Mutate(Mutation),
    /// Replaces the program with a freshly generated one.
    Generate,
}

/// How programs are generated and how long mutations may make them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenSettings {
    /// Operations in a generated program (about).
    pub len: usize,
    /// Operations a mutated program may have at most.
    pub max_len: usize,
    /// Chance that a generated program is a race.
    pub race_rate: f64,
}

/// One kind of program mutation.
pub struct ProgMutator {
    kind: Kind,
    name: Cow<'static, str>,
    d: Arc<Descriptions>,
    state: SharedState,
    gen: GenSettings,
}

impl ProgMutator {
    /// A mutator of `kind`, generating and mutating as `gen` says.
    pub fn new(
        kind: Kind,
        d: Arc<Descriptions>,
        state: SharedState,
        gen: GenSettings,
    ) -> ProgMutator {
        ProgMutator {
            name: Cow::Owned(format!("{kind:?}")),
            kind,
            d,
            state,
            gen,
        }
    }
}

impl Named for ProgMutator {
    fn name(&self) -> &Cow<'static, str> {
        &self.name
    }
}

impl<S> Mutator<ProgInput, S> for ProgMutator
where
    S: HasRand + HasCorpus<ProgInput>,
{
    fn mutate(
        &mut self,
        state: &mut S,
        input: &mut ProgInput,
    ) -> Result<MutationResult, libafl::Error> {
        let seed = state.rand_mut().next();
        let st = self.state.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut g = Generator::new(&self.d, &st, seed);
        g.race_rate = self.gen.race_rate;
        let max_len = self.gen.max_len;
        let changed = match self.kind {
            Kind::Generate => {
                input.prog = g.generate(self.gen.len);
                true
            }
            Kind::Mutate(Mutation::Splice) => {
                let count = state.corpus().count();
                let Some(n) = NonZeroUsize::new(count) else {
                    return Ok(MutationResult::Skipped);
                };
                let idx = state.rand_mut().below(n);
                let id = state.corpus().nth(idx);
                let other = state.corpus().cloned_input_for_id(id)?;
                apply(
                    Mutation::Splice,
                    &mut input.prog,
                    &mut g,
                    &self.d,
                    Some(&other.prog),
                    max_len,
                )
            }
            Kind::Mutate(m) => apply(m, &mut input.prog, &mut g, &self.d, None, max_len),
        };
        Ok(if changed {
            MutationResult::Mutated
        } else {
            MutationResult::Skipped
        })
    }

    fn post_exec(
        &mut self,
        _state: &mut S,
        _new_corpus_id: Option<libafl::corpus::CorpusId>,
    ) -> Result<(), libafl::Error> {
        Ok(())
    }
}

/// The mutators of a campaign, in the order the scheduler picks from (insertions, argument
/// changes and duplications twice: they are what walks the state machine further).
#[allow(clippy::type_complexity)]
pub fn all(
    d: &Arc<Descriptions>,
    state: &SharedState,
    gen: GenSettings,
) -> libafl_bolts::tuples::tuple_list_type!(
    ProgMutator,
    ProgMutator,
    ProgMutator,
    ProgMutator,
    ProgMutator,
    ProgMutator,
    ProgMutator,
    ProgMutator,
    ProgMutator,
    ProgMutator,
    ProgMutator,
    ProgMutator,
    ProgMutator,
    ProgMutator,
    ProgMutator,
    ProgMutator,
    ProgMutator
) {
    let m = |k: Kind| ProgMutator::new(k, d.clone(), state.clone(), gen);
    libafl_bolts::tuples::tuple_list!(
        m(Kind::Mutate(Mutation::Insert)),
        m(Kind::Mutate(Mutation::Insert)),
        m(Kind::Mutate(Mutation::Remove)),
        m(Kind::Mutate(Mutation::Swap)),
        m(Kind::Mutate(Mutation::ChangeArg)),
        m(Kind::Mutate(Mutation::ChangeArg)),
        m(Kind::Mutate(Mutation::MoveThread)),
        m(Kind::Mutate(Mutation::Splice)),
        m(Kind::Mutate(Mutation::Duplicate)),
        m(Kind::Mutate(Mutation::Duplicate)),
        m(Kind::Mutate(Mutation::Repeat)),
        m(Kind::Mutate(Mutation::Times)),
        m(Kind::Mutate(Mutation::Unrepeat)),
        m(Kind::Mutate(Mutation::Loop)),
        m(Kind::Mutate(Mutation::Replace)),
        m(Kind::Generate),
        m(Kind::Generate)
    )
}
