//! The engine on the host, with operations that are safe outside a guest (no sysfs writes):
//! threads, references, deadlines, host operations, unsupported operations, pins.

use hotfuzz_executor::engine::{install_deadline_signal, Engine, Sink};
use hotfuzz_executor::ops::install_fault_handler;
use hotfuzz_executor::protocol::{
    Event, ExecArg, ExecOp, ExecProgram, ExecRep, HostReply, Outcome, PROTOCOL_VERSION,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn op(index: usize, thread: u32, name: &str, args: &[(&str, ExecArg)], timeout_ms: u64) -> ExecOp {
    ExecOp {
        index,
        thread,
        name: name.into(),
        host: false,
        args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        text: None,
        rep: ExecRep::Once,
        timeout_ms,
    }
}

fn int(v: u64) -> ExecArg {
    ExecArg::Int(v)
}

fn run(
    ops: Vec<ExecOp>,
    timeout_ms: u64,
    host: impl Fn(&Arc<Engine>, usize) + Send + 'static,
) -> Vec<Event> {
    run_budget(
        ops,
        timeout_ms,
        Some(hotfuzz_executor::protocol::REPEAT_BUDGET_MS),
        host,
    )
}

/// [`run`] with a chosen repetition budget (`None`: a reproducer's program).
fn run_budget(
    ops: Vec<ExecOp>,
    timeout_ms: u64,
    repeat_budget_ms: Option<u64>,
    host: impl Fn(&Arc<Engine>, usize) + Send + 'static,
) -> Vec<Event> {
    install_deadline_signal();
    install_fault_handler();
    let buf = Buf::default();
    let sink: Sink = Box::new(buf.clone());
    let eng = Engine::new(
        ExecProgram {
            version: PROTOCOL_VERSION,
            ops,
            kcov: false,
            timeout_ms,
            kmsg_id: None,
            trace: false,
            repeat_budget_ms,
        },
        sink,
    );
    // Answer host requests as they appear.
    let e2 = eng.clone();
    let b2 = buf.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let h = std::thread::spawn(move || {
        let mut seen = 0;
        while !s2.load(std::sync::atomic::Ordering::SeqCst) {
            let evs = parse(&b2.0.lock().unwrap());
            for ev in &evs[seen..] {
                if let Event::Host { i, .. } = ev {
                    host(&e2, *i);
                }
            }
            seen = evs.len();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    eng.run();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    h.join().unwrap();
    let evs = parse(&buf.0.lock().unwrap());
    evs
}

fn parse(b: &[u8]) -> Vec<Event> {
    String::from_utf8_lossy(b)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn outcome(evs: &[Event], i: usize) -> Outcome {
    evs.iter()
        .find_map(|e| match e {
            Event::Done { i: j, outcome, .. } if *j == i => Some(outcome.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no result for op {i}: {evs:?}"))
}

#[test]
fn references_threads_and_skips() {
    let evs = run(
        vec![
            op(
                0,
                0,
                "mmap_anon",
                &[
                    ("len", int(1 << 20)),
                    ("thp", ExecArg::Str("nohuge".into())),
                    ("populate", int(1)),
                    ("node", int(u64::MAX)),
                ],
                5000,
            ),
            // Thread 1 uses thread 0's mapping: it waits for it.
            op(
                1,
                1,
                "mmap_touch",
                &[
                    ("map", ExecArg::Ref(0)),
                    ("offset", int(4096)),
                    ("len", int(8192)),
                    ("write", int(1)),
                ],
                5000,
            ),
            op(
                2,
                1,
                "process_vm_readv",
                &[
                    ("map", ExecArg::Ref(0)),
                    ("offset", int(0)),
                    ("len", int(65536)),
                ],
                5000,
            ),
            op(3, 0, "yield", &[], 1000),
            // A producer that fails makes its consumers skip.
            op(
                4,
                0,
                "mmap_anon",
                &[
                    ("len", int(0)),
                    ("thp", ExecArg::Str("default".into())),
                    ("populate", int(0)),
                    ("node", int(u64::MAX)),
                ],
                5000,
            ),
            op(5, 0, "munmap", &[("map", ExecArg::Ref(4))], 5000),
            op(6, 0, "no_such_op", &[], 1000),
            op(7, 1, "munmap", &[("map", ExecArg::Ref(0))], 5000),
            op(8, 1, "munmap", &[("map", ExecArg::Ref(0))], 5000),
        ],
        20_000,
        |_, _| {},
    );
    assert!(matches!(outcome(&evs, 0), Outcome::Ok { val: Some(_) }));
    assert_eq!(outcome(&evs, 1), Outcome::ok());
    assert_eq!(outcome(&evs, 2), Outcome::val(65536));
    assert_eq!(outcome(&evs, 4), Outcome::errno(libc::EINVAL));
    assert!(matches!(outcome(&evs, 5), Outcome::Skipped { .. }));
    assert!(matches!(outcome(&evs, 6), Outcome::Unsupported { .. }));
    assert_eq!(outcome(&evs, 7), Outcome::ok());
    // Already unmapped: EINVAL, not a crash.
    assert_eq!(outcome(&evs, 8), Outcome::errno(libc::EINVAL));
    assert!(matches!(evs.last(), Some(Event::End { abandoned, .. }) if abandoned.is_empty()));
}

#[test]
fn deadline_interrupts_a_blocked_operation() {
    let t = Instant::now();
    let evs = run(
        vec![
            op(0, 0, "sleep_ms", &[("ms", int(60_000))], 200),
            op(1, 0, "yield", &[], 1000),
        ],
        30_000,
        |_, _| {},
    );
    assert_eq!(outcome(&evs, 0), Outcome::Timeout { errno: libc::EINTR });
    assert_eq!(outcome(&evs, 1), Outcome::ok());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn host_operations_are_answered_by_the_runner() {
    let mut host = op(
        1,
        0,
        "virtio_mem_resize",
        &[("dev", int(0)), ("size", int(1 << 27))],
        1000,
    );
    host.host = true;
    let evs = run(
        vec![
            op(0, 0, "yield", &[], 1000),
            host,
            op(2, 1, "yield", &[], 1000),
        ],
        10_000,
        |e, i| {
            e.host_reply(HostReply {
                i,
                outcome: Outcome::val(42),
            })
        },
    );
    assert_eq!(outcome(&evs, 1), Outcome::val(42));
    // The request came after op 0 finished (same thread).
    let pos = |pred: &dyn Fn(&Event) -> bool| evs.iter().position(pred).unwrap();
    assert!(
        pos(&|e| matches!(e, Event::Done { i: 0, .. }))
            < pos(&|e| matches!(e, Event::Host { i: 1, .. }))
    );
}

#[test]
fn pins_are_taken_and_released() {
    let evs = run(
        vec![
            op(
                0,
                0,
                "mmap_anon",
                &[
                    ("len", int(1 << 16)),
                    ("thp", ExecArg::Str("default".into())),
                    ("populate", int(1)),
                    ("node", int(u64::MAX)),
                ],
                5000,
            ),
            op(
                1,
                0,
                "vmsplice_pin",
                &[
                    ("map", ExecArg::Ref(0)),
                    ("offset", int(0)),
                    ("len", int(1 << 16)),
                ],
                5000,
            ),
            op(2, 0, "pipe_release", &[("pipe", ExecArg::Ref(1))], 5000),
            op(3, 0, "pipe_release", &[("pipe", ExecArg::Ref(1))], 5000),
            op(
                4,
                0,
                "uring_pin",
                &[
                    ("map", ExecArg::Ref(0)),
                    ("offset", int(0)),
                    ("len", int(1 << 16)),
                ],
                5000,
            ),
            op(5, 0, "uring_unpin", &[("ring", ExecArg::Ref(4))], 5000),
        ],
        20_000,
        |_, _| {},
    );
    assert!(
        matches!(outcome(&evs, 1), Outcome::Ok { val: Some(_) }),
        "{evs:?}"
    );
    assert_eq!(outcome(&evs, 2), Outcome::ok());
    assert_eq!(outcome(&evs, 3), Outcome::errno(libc::EBADF));
    // io_uring may be disabled on the host running the tests; then it says so.
    match outcome(&evs, 4) {
        Outcome::Ok { val: Some(_) } => assert_eq!(outcome(&evs, 5), Outcome::ok()),
        Outcome::Errno { errno, .. } if errno == libc::EPERM => {}
        Outcome::Unsupported { .. } => {}
        o => panic!("uring_pin: {o:?}"),
    }
}

fn runs(evs: &[Event], i: usize) -> (u32, u32) {
    evs.iter()
        .find_map(|e| match e {
            Event::Done {
                i: j, runs, oks, ..
            } if *j == i => Some((*runs, *oks)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no result for op {i}: {evs:?}"))
}

fn with_rep(mut o: ExecOp, rep: ExecRep) -> ExecOp {
    o.rep = rep;
    o
}

#[test]
fn blocks_repeat_and_loops_run_until_the_others_are_done() {
    let map = op(
        0,
        0,
        "mmap_anon",
        &[
            ("len", int(1 << 16)),
            ("thp", ExecArg::Str("nohuge".into())),
            ("populate", int(1)),
            ("node", int(u64::MAX)),
        ],
        5000,
    );
    let block = ExecRep::Block {
        block: 0,
        times: 20,
    };
    let evs = run(
        vec![
            map,
            // Thread 0: 20 times (touch, sleep 5 ms).
            with_rep(
                op(
                    1,
                    0,
                    "mmap_touch",
                    &[
                        ("map", ExecArg::Ref(0)),
                        ("offset", int(0)),
                        ("len", int(1 << 16)),
                        ("write", int(1)),
                    ],
                    5000,
                ),
                block,
            ),
            with_rep(op(2, 0, "sleep_ms", &[("ms", int(5))], 5000), block),
            // Thread 1: yields in a loop while thread 0 works.
            with_rep(op(3, 1, "yield", &[], 5000), ExecRep::Loop),
        ],
        30_000,
        |_, _| {},
    );
    assert_eq!(runs(&evs, 1), (20, 20));
    assert_eq!(runs(&evs, 2), (20, 20));
    let (loops, ok) = runs(&evs, 3);
    assert!(loops > 20, "the loop ran {loops} times while the block ran");
    assert_eq!(loops, ok);
    // One start per operation, however often it ran.
    let starts = evs
        .iter()
        .filter(|e| matches!(e, Event::Start { i: 1, .. }))
        .count();
    assert_eq!(starts, 1);
    assert!(matches!(evs.last(), Some(Event::End { .. })));
}

#[test]
fn a_repetition_stops_at_an_operation_that_times_out() {
    // sleep_ms of 400 ms with a 100 ms deadline: interrupted, and the block stops there.
    let block = ExecRep::Block {
        block: 0,
        times: 50,
    };
    let t0 = std::time::Instant::now();
    let evs = run(
        vec![
            with_rep(op(0, 0, "yield", &[], 5000), block),
            with_rep(op(1, 0, "sleep_ms", &[("ms", int(400))], 100), block),
        ],
        30_000,
        |_, _| {},
    );
    assert!(
        matches!(outcome(&evs, 1), Outcome::Timeout { .. }),
        "{evs:?}"
    );
    assert_eq!(runs(&evs, 1), (1, 0));
    assert_eq!(runs(&evs, 0).0, 1);
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_repetition_stops_starting_runs_after_its_budget() {
    // 256 runs of 500 ms would take two minutes; the block stops after REPEAT_BUDGET_MS.
    let block = ExecRep::Block {
        block: 0,
        times: 256,
    };
    let t0 = std::time::Instant::now();
    let evs = run(
        vec![with_rep(
            op(0, 0, "sleep_ms", &[("ms", int(500))], 5000),
            block,
        )],
        300_000,
        |_, _| {},
    );
    let budget = hotfuzz_executor::protocol::REPEAT_BUDGET_MS;
    let (runs_done, oks) = runs(&evs, 0);
    assert_eq!(runs_done, oks);
    assert_eq!(u64::from(runs_done), budget.div_ceil(500), "{evs:?}");
    assert!(t0.elapsed() < Duration::from_millis(budget + 2000));
}

#[test]
fn without_a_budget_a_repetition_runs_every_round_within_the_program_timeout() {
    // A reproducer's `repeat 10` means ten rounds, though they take longer than a
    // campaign's budget.
    let block = |times| ExecRep::Block { block: 0, times };
    let sleep = |times| {
        with_rep(
            op(0, 0, "sleep_ms", &[("ms", int(400))], 5000),
            block(times),
        )
    };
    let budget = hotfuzz_executor::protocol::REPEAT_BUDGET_MS;
    assert!(10 * 400 > budget);
    let evs = run_budget(vec![sleep(10)], 300_000, None, |_, _| {});
    let (runs_done, oks) = runs(&evs, 0);
    assert_eq!((runs_done, oks), (10, 10), "{evs:?}");
    // The program's timeout still ends it: no new round starts after it.
    let t0 = std::time::Instant::now();
    let evs = run_budget(vec![sleep(256)], 2_000, None, |_, _| {});
    let (runs_done, _) = runs(&evs, 0);
    assert!((4..=6).contains(&runs_done), "{runs_done} rounds: {evs:?}");
    assert!(t0.elapsed() < Duration::from_secs(6));
}
