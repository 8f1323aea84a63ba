//! Fault injection: the memory notifier error injector and fail_page_alloc.

use super::{arg, done, Args, Ctx};
use crate::protocol::Outcome;
use crate::sys;

/// The memory notifier error injector's debugfs directory.
pub const NOTIFIER: &str = "/sys/kernel/debug/notifier-error-inject/memory/actions";
/// fail_page_alloc's debugfs directory (CONFIG_FAIL_PAGE_ALLOC).
pub const FAIL_PAGE_ALLOC: &str = "/sys/kernel/debug/fail_page_alloc/probability";

/// The errno a name stands for (`none`: 0, stop failing); EINVAL for any other name.
fn errno_value(name: &str) -> Result<i64, Outcome> {
    Ok(match name {
        "EBUSY" => -(libc::EBUSY as i64),
        "ENOMEM" => -(libc::ENOMEM as i64),
        "EPERM" => -(libc::EPERM as i64),
        "none" => 0,
        other => {
            return Err(Outcome::Errno {
                errno: libc::EINVAL,
                msg: format!("{other} is not an error a memory notifier returns"),
            })
        }
    })
}

fn notifier(action: &str, a: &Args) -> Outcome {
    let errno = arg!(errno_value(arg!(a.str("errno"))));
    done(sys::write_str(
        &format!("{NOTIFIER}/{action}/error"),
        &errno.to_string(),
    ))
}

/// Makes MEM_GOING_OFFLINE fail with `errno` (EBUSY, ENOMEM; none stops failing).
pub fn fail_offline(_: &Ctx, a: &Args) -> Outcome {
    notifier("MEM_GOING_OFFLINE", a)
}

/// Makes MEM_GOING_ONLINE fail with `errno` (ENOMEM, EPERM; none stops failing).
pub fn fail_online(_: &Ctx, a: &Args) -> Outcome {
    notifier("MEM_GOING_ONLINE", a)
}

/// Configures fail_page_alloc: `probability` percent, at most `times` failures (-1: no limit),
/// failing only allocations of at least `min_order`, and only for the programs' own tasks
/// (`task-filter`; the executor marks itself with `make-it-fail`). Without the filter a high
/// probability failed the allocations of every kernel thread and daemon too: a campaign's
/// guest went silent for 161 s at probability 73 and it was filed as `no output from test
/// machine`, a guest hotfuzz had broken, not a kernel bug.
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
        ("task-filter", "Y".to_string()),
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
