//! Host side of hotfuzz guests.
pub mod accel;
pub mod arch;
pub mod cache;
pub mod console;
pub mod debian;
pub mod error;
pub mod guest;
pub mod host;
pub mod image;
pub mod kernel;
pub mod keys;
pub mod machine;
pub mod modules;
pub mod process;
pub mod qmp;
pub mod size;
pub mod ssh;
pub mod sysroot;
pub mod vm;

pub use arch::Arch;
pub use error::{BootError, BootFailure, Error, Result};
pub use guest::{BuiltImage, GuestSpec};
pub use kernel::{Kernel, KernelSource};
pub use machine::{Accel, AccelChoice, MachineConfig, VirtioMemSpec};
pub use vm::{BootTimings, Vm, VmOptions};
pub mod headers;
