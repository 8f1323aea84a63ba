//! hotfuzz: programs of memory-hotplug operations, their generation and execution on guests,
//! and what is learned from running them.

pub mod analyze;
pub mod bugzoo;
pub mod desc;
pub mod fuzz;
pub mod gen;
pub mod guest_args;
pub mod hostops;
pub mod image;
pub mod mutate;
pub mod prog;
pub mod prog_file;
pub mod report;
pub mod repro;
pub mod runner;
pub mod state;
pub mod stats;
pub mod store;
