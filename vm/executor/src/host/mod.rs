//! The host side of programs: host operations (QMP) and the loop that drives a program from
//! the host. Used by hotfuzz's runner and by `hotfuzz-executor drive`, the standalone driver
//! `repro.sh` runs, so every operation has one implementation.

pub mod drive;
pub mod ops;
pub mod qmp;
