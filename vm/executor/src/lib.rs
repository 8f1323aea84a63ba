//! hotfuzz's in-guest executor. The binary runs programs; the library carries the wire
//! protocol (shared with the host-side runner) and the operation table.

pub mod protocol;

#[cfg(target_os = "linux")]
pub mod engine;
#[cfg(target_os = "linux")]
pub mod kcov;
#[cfg(target_os = "linux")]
pub mod ops;
#[cfg(target_os = "linux")]
pub mod sys;
