//! Scheduling helpers.

use super::{arg, Args, Ctx};
use crate::protocol::Outcome;

/// Sleeps `ms` milliseconds (interruptible: a deadline signal cuts it short).
pub fn sleep_ms(_: &Ctx, a: &Args) -> Outcome {
    let ms = arg!(a.int("ms")).min(600_000);
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as i64,
        tv_nsec: ((ms % 1000) * 1_000_000) as i64,
    };
    // SAFETY: valid timespec; no remainder wanted.
    if unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) } != 0 {
        return Outcome::errno(crate::sys::errno());
    }
    Outcome::ok()
}

/// `sched_yield()`.
pub fn yield_now(_: &Ctx, _: &Args) -> Outcome {
    // SAFETY: no preconditions.
    unsafe { libc::sched_yield() };
    Outcome::ok()
}
