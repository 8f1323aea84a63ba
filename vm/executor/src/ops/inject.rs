//! Fault injection: the memory notifier error injector and fail_page_alloc.

use super::{arg, done, Args, Ctx};
use crate::protocol::Outcome;
use crate::sys;

/// The memory notifier error injector's debugfs directory.
pub const NOTIFIER: &str = "/sys/kernel/debug/notifier-error-inject/memory/actions";
/// fail_page_alloc's debugfs directory (CONFIG_FAIL_PAGE_ALLOC).
pub const FAIL_PAGE_ALLOC: &str = "/sys/kernel/debug/fail_page_alloc/probability";

/// Makes memory notifier `action` (MEM_GOING_ONLINE, MEM_GOING_OFFLINE, ...) fail with
/// `errno` (a negative errno, or 0 to stop failing).
pub fn notifier(_: &Ctx, a: &Args) -> Outcome {
    let action = arg!(a.str("action"));
    let errno = arg!(a.i64("errno"));
    done(sys::write_str(
        &format!("{NOTIFIER}/{action}/error"),
        &errno.to_string(),
    ))
}

/// Configures fail_page_alloc: `probability` percent, at most `times` failures (-1: no limit),
/// failing only allocations of at least `min_order`.
pub fn fail_page_alloc(_: &Ctx, a: &Args) -> Outcome {
    let p = arg!(a.int("probability")).min(100);
    let times = arg!(a.i64("times"));
    let order = arg!(a.int("min_order"));
    let dir = "/sys/kernel/debug/fail_page_alloc";
    for (f, v) in [
        ("ignore-gfp-wait", "N".to_string()),
        ("ignore-gfp-highmem", "N".to_string()),
        ("min-order", order.to_string()),
        ("times", times.to_string()),
        ("interval", "1".to_string()),
        ("verbose", "1".to_string()),
        ("probability", p.to_string()),
    ] {
        if let Err(e) = sys::write_str(&format!("{dir}/{f}"), &v) {
            return Outcome::Errno {
                errno: e,
                msg: format!("writing {v} to {dir}/{f}"),
            };
        }
    }
    Outcome::ok()
}
