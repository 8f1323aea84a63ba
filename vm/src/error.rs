//! Errors of the guest layer.

use std::fmt;
use std::path::PathBuf;

/// Result type of the guest layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while preparing, booting or talking to a guest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on the host failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A program hotfuzz needs on the host is missing.
    #[error("{what} not found; install it with: {install}")]
    MissingTool {
        /// The missing program or file.
        what: String,
        /// The exact command that installs it.
        install: String,
    },
    /// A kernel image is unusable (not a kernel, wrong architecture, ...).
    #[error("{0}")]
    Kernel(String),
    /// Fetching or unpacking a Debian package failed.
    #[error("{0}")]
    Package(String),
    /// Building the guest image failed.
    #[error("{0}")]
    Image(String),
    /// Invalid configuration.
    #[error("{0}")]
    Config(String),
    /// The guest did not come up.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// A QMP command failed or the monitor went away.
    #[error("QMP: {0}")]
    Qmp(String),
    /// An ssh operation failed.
    #[error("ssh: {0}")]
    Ssh(String),
    /// An operation did not finish before its deadline.
    #[error("timed out: {0}")]
    Timeout(String),
    /// QEMU is gone (exited or was killed) while the guest was in use.
    #[error("QEMU exited: {0}")]
    QemuGone(String),
}

impl Error {
    /// Builds an [`Error::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds a context string to I/O results.
pub trait IoContext<T> {
    /// Converts an I/O error into [`Error::Io`] with `context`.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}

/// How a boot failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BootFailure {
    /// QEMU refused to start or exited before the guest was ready.
    QemuExited,
    /// The kernel panicked during boot.
    KernelPanic,
    /// KVM could not run the guest (e.g. "emulation failure" under nested KVM).
    KvmFailure,
    /// The guest came up without a network interface (driver missing or failed to load).
    NoNetwork,
    /// The guest printed nothing at all within the no-output deadline.
    NoOutput,
    /// The guest printed something but ssh was not ready by the boot deadline.
    Timeout,
}

/// A guest that did not become ready, with the evidence needed to see why.
#[derive(Debug, Clone)]
pub struct BootError {
    /// Failure class.
    pub kind: BootFailure,
    /// One-line description.
    pub message: String,
    /// Where the full serial console log is (kept on failure).
    pub console_log: PathBuf,
    /// The last console lines, for the error message.
    pub last_lines: Vec<String>,
    /// QEMU's own stderr, if it said anything.
    pub qemu_stderr: String,
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guest did not boot: {} (console log: {})",
            self.message,
            self.console_log.display()
        )?;
        let stderr = self.qemu_stderr.trim();
        if !stderr.is_empty() {
            write!(f, "\n  QEMU said: {}", stderr.replace('\n', "\n    "))?;
        }
        if !self.last_lines.is_empty() {
            write!(f, "\n  last console lines:")?;
            for l in &self.last_lines {
                write!(f, "\n    {l}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for BootError {}
