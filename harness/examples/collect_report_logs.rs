//! Collects console logs of real splats from real guests, as test data for the report parser
//! (`harness/testdata/report/`). Each case boots a guest with the bug zoo, fires one or more
//! bugs (planted sequences through programs, or the zoo's immediate triggers), and saves the
//! console from shortly before the first trigger to the end.
//!
//! Usage: `cargo run --release --example collect_report_logs -- OUTDIR [CASE...]`
//! (`--arch ppc64le` first to collect from powernv guests; the zoo is cross-built). The
//! golden files are these logs with a header of expected results written by a person after
//! reading them; see `harness/testdata/report/README.md`.

use hotfuzz::program::desc::Descriptions;
use hotfuzz::program::prog::Program;
use hotfuzz::run::image::program_guest;
use hotfuzz::run::runner::{RunOptions, Runner};
use hotfuzz_vm::ssh::ExecOptions;
use hotfuzz_vm::{AccelChoice, Arch, Kernel, KernelSource, MachineConfig, Vm, VmOptions};
use std::time::{Duration, Instant};

enum Step {
    /// A shell command in the guest (errors ignored: the kernel may die under it).
    Sh(&'static str),
    /// A program.
    Prog(&'static str),
    /// Wait until a console line contains the text (or the timeout passes).
    WaitFor(&'static str, u64),
    /// Wait this many seconds.
    Sleep(u64),
}
use Step::*;

struct Case {
    name: &'static str,
    bugs: &'static str,
    cmdline: &'static [&'static str],
    steps: Vec<Step>,
}

fn trigger(name: &'static str) -> Step {
    Sh(match name {
        "warn" => "echo warn > /sys/module/bugzoo/parameters/trigger",
        "warn_msg" => "echo warn_msg > /sys/module/bugzoo/parameters/trigger",
        "bug" => "echo bug > /sys/module/bugzoo/parameters/trigger",
        "null" => "echo null > /sys/module/bugzoo/parameters/trigger",
        "gpf" => "echo gpf > /sys/module/bugzoo/parameters/trigger",
        "pagefault" => "echo pagefault > /sys/module/bugzoo/parameters/trigger",
        "badpage" => "echo badpage > /sys/module/bugzoo/parameters/trigger",
        "softlockup" => "echo softlockup > /sys/module/bugzoo/parameters/trigger",
        "hung" => "echo hung > /sys/module/bugzoo/parameters/trigger &",
        "list" => "echo list > /sys/module/bugzoo/parameters/trigger",
        "refcount" => "echo refcount > /sys/module/bugzoo/parameters/trigger",
        "atomic_sleep" => "echo atomic_sleep > /sys/module/bugzoo/parameters/trigger",
        "panic" => "echo panic > /sys/module/bugzoo/parameters/trigger",
        "warn_all" => "echo warn_all > /sys/module/bugzoo/parameters/trigger",
        "null_all" => "echo null_all > /sys/module/bugzoo/parameters/trigger",
        "kfence" => "echo kfence > /sys/module/bugzoo/parameters/trigger",
        "sysrq_c" => "echo c > /proc/sysrq-trigger",
        other => panic!("unknown trigger {other}"),
    })
}

fn cases() -> Vec<Case> {
    let simple = |name, t| Case {
        name,
        bugs: "",
        cmdline: &[],
        steps: vec![trigger(t), Sleep(2)],
    };
    vec![
        simple("warn", "warn"),
        simple("warn-message", "warn_msg"),
        simple("kernel-bug", "bug"),
        simple("null-deref", "null"),
        simple("gpf-noncanonical", "gpf"),
        simple("page-fault", "pagefault"),
        simple("bad-page-state", "badpage"),
        simple("list-corruption", "list"),
        simple("refcount-underflow", "refcount"),
        simple("scheduling-while-atomic", "atomic_sleep"),
        simple("panic", "panic"),
        simple("sysrq-crash", "sysrq_c"),
        Case {
            name: "warn-two-cpus-interleaved",
            bugs: "",
            cmdline: &[],
            steps: vec![trigger("warn_all"), Sleep(3)],
        },
        Case {
            name: "null-deref-two-cpus-interleaved",
            bugs: "",
            cmdline: &[],
            steps: vec![trigger("null_all"), Sleep(4)],
        },
        Case {
            name: "soft-lockup-and-rcu-stall",
            bugs: "",
            cmdline: &[],
            steps: vec![trigger("softlockup"), WaitFor("rcu_preempt detected stall", 60), Sleep(3)],
        },
        Case {
            name: "hung-task",
            bugs: "",
            cmdline: &[],
            steps: vec![
                Sh("echo 5 > /proc/sys/kernel/hung_task_timeout_secs"),
                trigger("hung"),
                WaitFor("blocked for more than", 60),
                Sleep(2),
            ],
        },
        Case {
            name: "kfence-use-after-free",
            bugs: "",
            cmdline: &["kfence.sample_interval=1"],
            steps: vec![trigger("kfence"), Sleep(2)],
        },
        Case {
            name: "several-reports",
            bugs: "",
            cmdline: &[],
            steps: vec![trigger("warn"), trigger("refcount"), trigger("badpage"), Sleep(2)],
        },
        Case {
            name: "zoo-warn-reonline",
            bugs: "warn_reonline",
            cmdline: &[],
            steps: vec![
                Prog(
                    "virtio_mem_resize(dev=0x0, size=0x10000000)\nvirtio_mem_wait(dev=0x0, ms=0x1388)\nr0 = memblock_find(which=\"movable\", nth=0x0)\nmemblock_state(block=r0, state=\"offline\")\nmemblock_state(block=r0, state=\"online_movable\")\nmemblock_state(block=r0, state=\"offline\")\nmemblock_state(block=r0, state=\"online_movable\")\n",
                ),
                Sleep(1),
            ],
        },
        Case {
            name: "zoo-bug-double-cancel",
            bugs: "bug_double_cancel",
            cmdline: &[],
            steps: vec![
                Prog(
                    "virtio_mem_resize(dev=0x0, size=0x10000000)\nvirtio_mem_wait(dev=0x0, ms=0x1388)\nr0 = memblock_find(which=\"movable\", nth=0x0)\nnotifier_inject(action=\"MEM_GOING_OFFLINE\", errno=-0x10)\nmemblock_state(block=r0, state=\"offline\")\nmemblock_state(block=r0, state=\"offline\")\n",
                ),
                Sleep(2),
            ],
        },
        Case {
            name: "zoo-badpage-offline",
            bugs: "badpage_offline",
            cmdline: &[],
            steps: vec![
                Prog(
                    "virtio_mem_resize(dev=0x0, size=0x10000000)\nvirtio_mem_wait(dev=0x0, ms=0x1388)\nr0 = memblock_find(which=\"movable\", nth=0x0)\nnotifier_inject(action=\"MEM_GOING_OFFLINE\", errno=-0x10)\nmemblock_state(block=r0, state=\"offline\")\nnotifier_inject(action=\"MEM_GOING_OFFLINE\", errno=0x0)\nmemblock_state(block=r0, state=\"offline\")\n",
                ),
                Sleep(2),
            ],
        },
        Case {
            name: "zoo-stuck-offline-hung-task",
            bugs: "stuck_offline",
            cmdline: &[],
            steps: vec![
                Sh("echo 5 > /proc/sys/kernel/hung_task_timeout_secs"),
                Prog(
                    "virtio_mem_resize(dev=0x0, size=0x10000000)\nvirtio_mem_wait(dev=0x0, ms=0x1388)\nr0 = memblock_find(which=\"movable\", nth=0x0)\nmemblock_state(block=r0, state=\"offline\")\nmemblock_state(block=r0, state=\"online_movable\")\nmemblock_state(block=r0, state=\"offline\")\nmemblock_state(block=r0, state=\"online_movable\")\nmemblock_state(block=r0, state=\"offline\")\n",
                ),
                WaitFor("blocked for more than", 60),
                Sleep(2),
            ],
        },
        Case {
            name: "noise-hotplug-offline-failures",
            bugs: "",
            cmdline: &[],
            steps: vec![
                Prog(
                    "virtio_mem_resize(dev=0x0, size=0x20000000)\nvirtio_mem_wait(dev=0x0, ms=0x1388)\nmemblock_state(block=0x1, state=\"offline\")\nmemblock_state(block=0x5, state=\"offline\")\nr1 = memblock_find(which=\"movable\", nth=0x1)\nmemblock_state(block=r1, state=\"offline\")\nmemblock_state(block=r1, state=\"online_kernel\")\ndrop_caches(what=0x3)\nsleep_ms(ms=0x1f4)\nmemblock_state(block=r1, state=\"offline\")\nr0 = pfn_in_block(block=0x21, page=0x10)\nhwpoison_corrupt(pfn=r0)\nhwpoison_unpoison(pfn=r0)\nsoft_offline(pfn=r0)\nvirtio_mem_resize(dev=0x0, size=0x0)\nvirtio_mem_wait(dev=0x0, ms=0x1388)\n",
                ),
                Sleep(1),
            ],
        },
        Case {
            name: "warn-panic-on-warn",
            bugs: "",
            cmdline: &["panic_on_warn=1"],
            steps: vec![trigger("warn"), Sleep(3)],
        },
        Case {
            name: "noise-boot-and-plug",
            bugs: "",
            cmdline: &[],
            steps: vec![
                Prog("virtio_mem_resize(dev=0x0, size=0x30000000)\nvirtio_mem_wait(dev=0x0, ms=0x1388)\nvirtio_mem_resize(dev=0x0, size=0x8000000)\nvirtio_mem_wait(dev=0x0, ms=0x1388)\nballoon(target=0x38000000)\nsleep_ms(ms=0x3e8)\nballoon(target=0x40000000)\n"),
                Sleep(1),
            ],
        },
        Case {
            name: "noise-sysrq-show-tasks-and-cpus",
            bugs: "",
            cmdline: &[],
            steps: vec![Sh("echo w > /proc/sysrq-trigger; echo l > /proc/sysrq-trigger; echo m > /proc/sysrq-trigger"), Sleep(3)],
        },
        Case {
            name: "zoo-warn-reonline-threads",
            bugs: "warn_reonline",
            cmdline: &[],
            steps: vec![
                Prog(
                    "virtio_mem_resize(dev=0x0, size=0x20000000)\nvirtio_mem_wait(dev=0x0, ms=0x1388)\nr0 = memblock_find(which=\"movable\", nth=0x2)\nr1 = mmap_anon(len=0x400000, thp=\"huge\", populate=0x1, node=-0x1) (thread: 1)\nmemblock_state(block=r0, state=\"offline\")\nmmap_touch(map=r1, offset=0x0, len=0x400000, write=0x1) (thread: 1)\nmemblock_state(block=r0, state=\"online_movable\")\nmemblock_online(block=r0, on=0x0)\nmemblock_online(block=r0, on=0x1)\n",
                ),
                Sleep(1),
            ],
        },
        Case {
            name: "zoo-bug-double-cancel-pinned",
            bugs: "bug_double_cancel",
            cmdline: &[],
            steps: vec![
                Prog(
                    "virtio_mem_resize(dev=0x0, size=0x10000000)\nvirtio_mem_wait(dev=0x0, ms=0x1388)\nr0 = mmap_anon(len=0x200000, thp=\"nohuge\", populate=0x1, node=0x0)\nr1 = vmsplice_pin(map=r0, offset=0x0, len=0x1000)\nr2 = pfn_of_map(map=r0, offset=0x0)\nr3 = memblock_of_pfn(pfn=r2)\nmemblock_state(block=r3, state=\"offline\")\nmemblock_state(block=r3, state=\"offline\")\n",
                ),
                Sleep(2),
            ],
        },
        Case {
            name: "noise-oom-kill",
            bugs: "",
            cmdline: &[],
            steps: vec![
                Prog("r0 = mmap_anon(len=0x4000000, thp=\"nohuge\", populate=0x1, node=-0x1)\nr1 = mmap_anon(len=0x4000000, thp=\"nohuge\", populate=0x0, node=-0x1)\n"),
                Sh("(/bin/busybox sh -c 'x=a; while true; do x=$x$x$x$x; done' &) ; sleep 25"),
                WaitFor("Out of memory", 60),
                Sleep(2),
            ],
        },
    ]
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut arch = Arch::X86_64;
    if args.first().map(String::as_str) == Some("--arch") {
        arch = args[1].parse().expect("arch");
        args.drain(..2);
    }
    let out = std::path::PathBuf::from(
        args.first()
            .expect("usage: collect_report_logs [--arch A] OUTDIR [CASE...]"),
    );
    let only: Vec<String> = args[1..].to_vec();
    std::fs::create_dir_all(&out).unwrap();
    let kernel = Kernel::resolve(&KernelSource::DebianDefault, arch).unwrap();
    let zoo = match hotfuzz::run::bugzoo::build(&kernel) {
        Ok(z) => z,
        Err(e) => {
            eprintln!("bug zoo: {e:#}");
            std::process::exit(1);
        }
    };
    let d = Descriptions::embedded();
    for case in cases() {
        if !only.is_empty() && !only.iter().any(|o| o == case.name) {
            continue;
        }
        let mut spec = program_guest(arch, true).unwrap();
        spec.modules.push(
            hotfuzz_vm::modules::ModuleRequest::file(
                &zoo,
                &if case.bugs.is_empty() {
                    String::new()
                } else {
                    format!("bugs={}", case.bugs)
                },
            )
            .unwrap(),
        );
        let image = spec.build(&kernel).unwrap();
        let mut m = MachineConfig::new(arch);
        m.accel = AccelChoice::Tcg;
        m.cmdline.extend(case.cmdline.iter().map(|s| s.to_string()));
        let vm = match Vm::boot(&kernel, &image, &VmOptions::new(m)) {
            Ok(vm) => vm,
            Err(e) => {
                eprintln!("{}: boot failed: {e}", case.name);
                continue;
            }
        };
        let start = vm.console().mark().saturating_sub(12);
        let log = tempfile::tempdir().unwrap();
        let mut runner = Runner::new(&vm, &log.path().join("run.log")).unwrap();
        for step in &case.steps {
            match step {
                Sh(cmd) => {
                    let _ = vm.exec_with(
                        cmd,
                        &ExecOptions {
                            stdin: None,
                            silence_timeout: Duration::from_secs(40),
                            deadline: Some(Instant::now() + Duration::from_secs(40)),
                        },
                    );
                }
                Prog(text) => {
                    let p = Program::parse(text, &d).unwrap();
                    let _ = runner.run(
                        &d,
                        &p,
                        &RunOptions {
                            kcov: false,
                            timeout: Some(Duration::from_secs(60)),
                            settle: Duration::from_millis(500),
                            repeat_budget: None,
                        },
                    );
                }
                WaitFor(text, secs) => {
                    let _ = vm.console().wait_for_text(
                        start,
                        Instant::now() + Duration::from_secs(*secs),
                        text,
                    );
                }
                Sleep(s) => std::thread::sleep(Duration::from_secs(*s)),
            }
            if !vm.is_alive() {
                break;
            }
        }
        drop(runner);
        std::thread::sleep(Duration::from_millis(500));
        let lines = vm.console().lines_since(start);
        let text: String = lines
            .iter()
            .map(|l| format!("{} {}\n", hotfuzz_vm::console::format_time(l.time), l.text))
            .collect();
        let file = out.join(format!(
            "{}{}.log",
            if arch == Arch::Ppc64le { "ppc64-" } else { "" },
            case.name
        ));
        std::fs::write(&file, text).unwrap();
        eprintln!("{}: {} lines -> {}", case.name, lines.len(), file.display());
        vm.kill();
    }
}
