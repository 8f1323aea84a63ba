//! hotfuzz's executor: the program interpreter. In the guest the binary runs programs
//! (`ops`, `engine`) and serves the host on a serial port (`agent`); on the host the same code
//! runs host operations and drives programs (`host`). The wire protocol (`protocol`) is shared
//! by both sides.

pub mod protocol;

#[cfg(target_os = "linux")]
pub mod agent;
#[cfg(target_os = "linux")]
pub mod engine;
#[cfg(target_os = "linux")]
pub mod host;
#[cfg(target_os = "linux")]
pub mod kcov;
#[cfg(target_os = "linux")]
pub mod ops;
#[cfg(target_os = "linux")]
pub mod sys;
