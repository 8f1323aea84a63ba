//! Slow is not hung. Under TCG an offline that migrates a whole block, or a task that waits
//! behind one for `pcp_batch_high_lock` or `mem_hotplug_lock`, can take longer than an
//! operation's deadline or the guest's 10 s hung task timeout, and then goes on. The kernel's
//! own detector reports such a task once and again every timeout while it stays blocked; an
//! operation the executor abandoned as stuck writes a line into the kernel log when its call
//! returns after all. A hang is what stays: a blocked task still reported
//! [`HUNG_REPORTS`] times (blocked for three timeouts), or a stuck operation that never came
//! back. What went on is counted as `slow` and not filed.

use crate::report::{Report, ReportType};
use hotfuzz_vm::console::ConsoleLine;
use std::collections::{BTreeMap, BTreeSet};

/// How many times the hung task detector must report the same task before it counts as hung:
/// one report per timeout, so the task was blocked for at least this many timeouts.
pub const HUNG_REPORTS: usize = 3;

/// A task the hung task detector reported as blocked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Blocked {
    /// Its command name (`hotfuzz-t1`, `kworker/u4:2`).
    pub comm: String,
    /// Its pid.
    pub pid: u32,
}

/// The task in a hung task detector line (`INFO: task NAME:PID blocked for more than N
/// seconds.`), whatever prefixes the console put before it.
pub fn blocked_task(line: &str) -> Option<Blocked> {
    let rest = line.split("INFO: task ").nth(1)?;
    let (task, _) = rest.split_once(" blocked for more than ")?;
    // The name may itself contain ':' (kworker/u4:2): the pid is after the last one.
    let (comm, pid) = task.rsplit_once(':')?;
    Some(Blocked {
        comm: comm.to_string(),
        pid: pid.trim().parse().ok()?,
    })
}

/// How many times each task was reported as blocked in `console`.
pub fn blocked_counts(console: &[ConsoleLine]) -> BTreeMap<u32, usize> {
    let mut n = BTreeMap::new();
    for l in console {
        if let Some(b) = blocked_task(&l.text) {
            *n.entry(b.pid).or_insert(0) += 1;
        }
    }
    n
}

/// The tasks a hung task report names.
pub fn blocked_in(r: &Report) -> Vec<Blocked> {
    let mut v: Vec<Blocked> = r.text.lines().filter_map(blocked_task).collect();
    v.sort();
    v.dedup();
    v
}

/// The operations of program `program` that were abandoned as stuck and returned after all,
/// with how long after the program's start, from the executor's lines in `console`.
pub fn came_back(console: &[ConsoleLine], program: &str) -> BTreeMap<usize, u64> {
    console
        .iter()
        .filter_map(|l| hotfuzz_executor::protocol::parse_kmsg_late(&l.text))
        .filter(|(p, _, _)| p == program)
        .map(|(_, op, ms)| (op, ms))
        .collect()
}

/// Whether a report is the hung task detector's (not "can't die", which is about a task that
/// ignores SIGKILL and is no matter of time).
pub fn is_hung_task(r: &Report) -> bool {
    r.kind == ReportType::HungTask && r.title.starts_with("INFO: task hung in")
}

/// The pure decision: drops the stuck-operation reports when every stuck operation came back,
/// and the hung task reports whose tasks were each reported fewer than [`HUNG_REPORTS`]
/// times. Returns the reports kept and, when something was dropped, what it was.
pub fn sift(
    reports: Vec<Report>,
    stuck: &[usize],
    back: &BTreeMap<usize, u64>,
    counts: &BTreeMap<u32, usize>,
) -> (Vec<Report>, Option<String>) {
    let all_back = !stuck.is_empty() && stuck.iter().all(|i| back.contains_key(i));
    let mut said = Vec::new();
    let mut kept = Vec::new();
    for r in reports {
        if r.kind == ReportType::StuckOp && all_back {
            said.push(format!("{} (it returned later)", r.title));
            continue;
        }
        if is_hung_task(&r) {
            let tasks = blocked_in(&r);
            let went_on = !tasks.is_empty()
                && tasks
                    .iter()
                    .all(|b| counts.get(&b.pid).copied().unwrap_or(0) < HUNG_REPORTS);
            if went_on {
                let names: Vec<String> = tasks
                    .iter()
                    .map(|b| format!("{}:{}", b.comm, b.pid))
                    .collect();
                said.push(format!("{} ({} went on)", r.title, names.join(", ")));
                continue;
            }
        }
        kept.push(r);
    }
    if said.is_empty() {
        return (kept, None);
    }
    if all_back {
        let ops: Vec<String> = stuck
            .iter()
            .map(|i| format!("op {i} after {} ms", back[i]))
            .collect();
        said.push(format!("returned: {}", ops.join(", ")));
    }
    (kept, Some(said.join("; ")))
}

/// The tasks of the hung task reports among `reports`, by pid.
pub fn hung_pids(reports: &[Report]) -> BTreeSet<u32> {
    reports
        .iter()
        .filter(|r| is_hung_task(r))
        .flat_map(blocked_in)
        .map(|b| b.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> ConsoleLine {
        ConsoleLine {
            index: 0,
            time: std::time::SystemTime::now(),
            at: std::time::Instant::now(),
            text: text.to_string(),
        }
    }

    fn hung(pid: u32, comm: &str, func: &str) -> Report {
        let mut r = crate::report::parse(&format!(
            "[  100.000000] INFO: task {comm}:{pid} blocked for more than 10 seconds.\n\
             [  100.000001]       Not tainted 6.12.117-amd64 #1 Debian 6.12.117-1\n\
             [  100.000002] \"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.\n\
             [  100.000003] task:{comm} state:D stack:0 pid:{pid} tgid:{pid} ppid:1 flags:0x00004002\n\
             [  100.000004] Call Trace:\n\
             [  100.000005]  <TASK>\n\
             [  100.000006]  __schedule+0x3ff/0xb70\n\
             [  100.000007]  schedule+0x27/0xf0\n\
             [  100.000008]  schedule_preempt_disabled+0x15/0x30\n\
             [  100.000009]  __mutex_lock.constprop.0+0x3cc/0x6a0\n\
             [  100.000010]  {func}+0x16/0x40\n\
             [  100.000011]  soft_offline_page+0x2a1/0x6d0\n\
             [  100.000012]  </TASK>\n"
        ));
        assert_eq!(r.len(), 1, "{r:?}");
        r.remove(0)
    }

    fn stuck(title: &str) -> Report {
        crate::judge::oracle::report(ReportType::StuckOp, title, "did not return".into())
    }

    #[test]
    fn the_detector_line_gives_name_and_pid_even_with_colons_in_the_name() {
        assert_eq!(
            blocked_task("[ 12.3] INFO: task kworker/u4:2:87 blocked for more than 10 seconds."),
            Some(Blocked {
                comm: "kworker/u4:2".into(),
                pid: 87
            })
        );
        assert_eq!(
            blocked_task("INFO: task hotfuzz-t1:300 blocked for more than 122 seconds.")
                .unwrap()
                .pid,
            300
        );
        assert_eq!(blocked_task("INFO: task hung in foo"), None);
    }

    #[test]
    fn a_task_reported_once_went_on_and_is_not_filed() {
        let r = hung(300, "hotfuzz-t1", "zone_pcp_disable");
        assert_eq!(r.title, "INFO: task hung in zone_pcp_disable");
        let counts = BTreeMap::from([(300, 1)]);
        let (kept, note) = sift(vec![r], &[], &BTreeMap::new(), &counts);
        assert!(kept.is_empty());
        assert!(note.unwrap().contains("hotfuzz-t1:300 went on"));
    }

    #[test]
    fn a_task_still_blocked_after_three_timeouts_is_hung() {
        let r = hung(300, "hotfuzz-t1", "zone_pcp_disable");
        let counts = BTreeMap::from([(300, 3)]);
        let (kept, note) = sift(vec![r], &[], &BTreeMap::new(), &counts);
        assert_eq!(kept.len(), 1);
        assert_eq!(note, None);
    }

    #[test]
    fn stuck_operations_that_all_came_back_were_slow() {
        let back = BTreeMap::from([(3, 14_200)]);
        let (kept, note) = sift(
            vec![stuck("hang: memblock_state did not return")],
            &[3],
            &back,
            &BTreeMap::new(),
        );
        assert!(kept.is_empty());
        let note = note.unwrap();
        assert!(note.contains("op 3 after 14200 ms"), "{note}");
    }

    #[test]
    fn one_stuck_operation_that_never_came_back_keeps_the_hang() {
        let back = BTreeMap::from([(3, 14_200)]);
        let (kept, note) = sift(
            vec![stuck("hang: memblock_state did not return")],
            &[3, 5],
            &back,
            &BTreeMap::new(),
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(note, None);
    }

    #[test]
    fn other_reports_are_never_touched() {
        let w = crate::report::parse(
            "[    1.0] ------------[ cut here ]------------\n\
             [    1.0] WARNING: CPU: 0 PID: 1 at mm/x.c:1 foo+0x1/0x2\n\
             [    1.0] Call Trace:\n\
             [    1.0]  foo+0x1/0x2\n\
             [    1.0] ---[ end trace 0000000000000000 ]---\n",
        );
        let n = w.len();
        let (kept, note) = sift(w, &[], &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(kept.len(), n);
        assert_eq!(note, None);
    }

    #[test]
    fn late_lines_are_read_for_this_program_only() {
        let c = vec![
            line(&format!(
                "[   50.1] {}",
                hotfuzz_executor::protocol::kmsg_late_marker("abc", 2, 1, 9000)
            )),
            line(&format!(
                "[   50.2] {}",
                hotfuzz_executor::protocol::kmsg_late_marker("other", 4, 0, 100)
            )),
            line("[   51.0] INFO: task hotfuzz-t1:300 blocked for more than 10 seconds."),
            line("[   61.0] INFO: task hotfuzz-t1:300 blocked for more than 20 seconds."),
        ];
        assert_eq!(came_back(&c, "abc"), BTreeMap::from([(2, 9000)]));
        assert_eq!(blocked_counts(&c), BTreeMap::from([(300, 2)]));
    }
}
