//! hotfuzz: programs of memory-hotplug operations, their generation and execution on guests,
//! and what is learned from running them.
//!
//! The modules are the stages data flows through, and each imports only the ones before it:
//! [`build`] (kernel trees, configs and the build cache) → [`program`] (descriptions, the program model, generation, mutation) → [`run`] (running a
//! program on a guest) → [`report`] (pure console parsing) → [`judge`] (what a run means:
//! kernel reports, the harness's own oracles, infrastructure failures) → [`store`] (the
//! report store) → [`fuzz`] and [`repro`] (the campaigns and reproducers built on all of
//! them) → [`bisect`] (which commit or package broke or fixed a bug) → [`nightly`] (a whole
//! night: regression suite, fuzzing, reproduction, results). The command line lives in the
//! binary (`src/cli/`).

pub mod bisect;
pub mod build;
pub mod fuzz;
pub mod judge;
pub mod nightly;
pub mod program;
pub mod report;
pub mod repro;
pub mod run;
pub mod store;
