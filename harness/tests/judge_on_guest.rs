//! Slow is not hung, on a real guest: an offline that blocks uninterruptibly for longer than
//! its deadline and the hung task timeout, and then returns, is counted as slow and filed as
//! nothing. (That a block which never returns is still filed as `INFO: task hung in ...` is
//! the regression suite's `bugzoo-stuck-offline` entry.)

use hotfuzz::program::desc::Descriptions;
use hotfuzz::program::prog::Program;
use hotfuzz::run::guest::GuestConfig;
use hotfuzz::run::runner::{RunOptions, Runner};
use hotfuzz_executor::protocol::Outcome;
use hotfuzz_vm::{AccelChoice, Arch};
use std::time::Duration;

const OPTS: RunOptions = RunOptions {
    kcov: false,
    timeout: None,
    settle: Duration::from_millis(200),
    repeat_budget: None,
};

#[test]
fn an_offline_that_blocks_for_fifteen_seconds_and_returns_is_slow_not_hung() {
    let mut g = GuestConfig::new(Arch::X86_64);
    g.accel = AccelChoice::Tcg;
    g.bugzoo = Some("stuck_offline".into());
    let p = g.prepare().unwrap();
    let c = p.boot_connected("hotfuzz-judge-test").unwrap();
    let vm = c.vm;
    // The planted hang blocks for 15 s instead of 300: longer than the offline's 5 s deadline
    // and the guest's 10 s hung task timeout, shorter than three of them.
    vm.run("echo 15 > /sys/module/bugzoo/parameters/stuck_secs")
        .unwrap();
    let log = tempfile::tempdir().unwrap();
    let mut runner = Runner::with_agent(&vm, c.agent, &log.path().join("run.log")).unwrap();
    let d = Descriptions::embedded();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../corpus/regressions/bugzoo-stuck-offline/repro.prog"
    ))
    .unwrap();
    let prog = Program::parse(&text, &d).unwrap();
    let mut run = runner.run(&d, &prog, &OPTS).unwrap();
    let last = prog.ops.len() - 1;
    assert!(
        matches!(run.ops[last].outcome, Some(Outcome::Stuck)),
        "the third offline was not abandoned as stuck: {:?}",
        run.ops[last]
    );
    let v = hotfuzz::judge::judge(&vm, runner.agent(), &prog, &mut run, Duration::ZERO);
    let console: Vec<String> = vm
        .console()
        .lines_since(run.console_mark)
        .into_iter()
        .map(|l| l.text)
        .collect();
    let console = console.join("\n");
    let titles: Vec<&str> = v.reports.iter().map(|r| r.title.as_str()).collect();
    assert!(titles.is_empty(), "filed {titles:?}\n{console}");
    let slow = v.slow.expect("counted as slow");
    assert!(slow.contains(&format!("op {last} after")), "{slow}");
    if console.contains("blocked for more than") {
        // The detector's check fell inside the block (it usually does): its report was
        // dropped because the task went on.
        assert!(slow.contains("went on"), "{slow}");
    }
    assert!(v.infra.is_none());

    // The same block (online again: the deadline's signal was pending when the blocking
    // notifier returned, so the offline failed with EINTR), blocked for 100 s: still reported after three timeouts, so it is hung.
    vm.run("echo 100 > /sys/module/bugzoo/parameters/stuck_secs")
        .unwrap();
    let first_block = match &run.ops[2].outcome {
        Some(Outcome::Ok { val: Some(b) }) => *b,
        o => panic!("memblock_find: {o:?}"),
    };
    let prog = Program::parse(
        "r0 = memblock_find(which=\"movable\", nth=0x0)\n\
         memblock_state(block=r0, state=\"offline\")\n",
        &d,
    )
    .unwrap();
    let mut run = runner.run(&d, &prog, &OPTS).unwrap();
    assert_eq!(
        run.ops[0].outcome,
        Some(Outcome::Ok {
            val: Some(first_block)
        }),
        "the block above (its offline failed with EINTR once the block ended: the deadline \
         signal was pending)"
    );
    let v = hotfuzz::judge::judge(&vm, runner.agent(), &prog, &mut run, Duration::ZERO);
    let titles: Vec<&str> = v.reports.iter().map(|r| r.title.as_str()).collect();
    assert!(
        titles.contains(&"INFO: task hung in bugzoo_stuck_offline"),
        "{titles:?} (slow: {:?})",
        v.slow
    );
    assert_eq!(v.slow, None);
}

#[test]
fn an_agent_that_answers_again_after_eighty_seconds_was_slow_not_lost() {
    let g = GuestConfig {
        accel: AccelChoice::Tcg,
        ..GuestConfig::new(Arch::X86_64)
    };
    let c = g
        .prepare()
        .unwrap()
        .boot_connected("hotfuzz-judge-test")
        .unwrap();
    let vm = c.vm;
    let log = tempfile::tempdir().unwrap();
    let mut runner = Runner::with_agent(&vm, c.agent, &log.path().join("run.log")).unwrap();
    // The guest's agent freezes a second into the program and thaws 80 s later: the host
    // hears nothing for longer than its 20 s probe, while the kernel is fine.
    let agent = vm.run("pidof hotfuzz-executor").unwrap();
    let agent = agent.trim();
    assert!(
        !agent.is_empty() && agent.split(' ').all(|p| p.parse::<u32>().is_ok()),
        "no agent process: {agent:?}"
    );
    vm.run(&format!(
        "setsid sh -c 'sleep 1; kill -STOP {agent}; sleep 80; kill -CONT {agent}' \
         </dev/null >/dev/null 2>&1 &"
    ))
    .unwrap();
    let d = Descriptions::embedded();
    let prog = Program::parse("sleep_ms(ms=0xbb8)\n", &d).unwrap();
    // Given up on at 8 s + the host's 30 s margin, resynced for 5 s, probed for 20 s: the
    // agent thaws during the judge's second chance (60 s more).
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(8)),
        ..OPTS
    };
    let mut run = runner.run(&d, &prog, &opts).unwrap();
    assert!(
        run.lost.is_some(),
        "the frozen agent went unnoticed: {run:?}"
    );
    let v = hotfuzz::judge::judge(&vm, runner.agent(), &prog, &mut run, Duration::ZERO);
    let titles: Vec<&str> = v.reports.iter().map(|r| r.title.as_str()).collect();
    assert!(titles.is_empty(), "filed {titles:?}");
    assert!(v.infra.is_none(), "{:?}", v.infra);
    let slow = v
        .slow
        .clone()
        .unwrap_or_else(|| panic!("not counted as slow: lost {:?}, {v:?}", run.lost));
    assert!(slow.contains("answered again"), "{slow}");
}
