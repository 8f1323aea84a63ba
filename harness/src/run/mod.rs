//! The run stage: setting up a guest for programs and running a program on it (host
//! operations over QMP, guest operations through the in-guest executor), with a run log whose
//! timestamps line up with the console.

pub mod agent;
pub mod bugzoo;
pub mod guest;

pub mod image;
pub mod probe;
pub mod reset;
pub mod runlog;
pub mod runner;
pub mod settle;
