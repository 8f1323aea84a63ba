//! Bisection: which commit (or Debian kernel package) introduced or fixed a bug.
//!
//! ```text
//! engine (pure) ──Space──> git bisect --no-checkout in hotfuzz's work tree | a package list
//!        │      ──Builder─> build::build at the commit (incremental, cached) | the package
//!        │      ──Oracle──> the reproducer N times on fresh guests, judged (driver.rs)
//!        └─ decide: runs per revision from the reliability, verdicts, confidence
//! ```
//!
//! The engine and the verdict rules know nothing of guests or kernels
//! (`tests/bisect_fake.rs` tests them with fakes); `driver` plugs in the real builder and
//! the guest oracle.

pub mod decide;
pub mod driver;
pub mod engine;
pub mod space;
