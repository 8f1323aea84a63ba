//! `hotfuzz repro` on real TCG guests: a 40+ operation generated program with the bug zoo's
//! warn_reonline trigger planted in it is minimized to the trigger's length (+1 at most), its
//! report directory gets repro.prog, repro.log and the reliability, and the generated
//! `repro.sh` reproduces the bug with QEMU, bash and the executor binary alone.

mod common;

use hotfuzz::fuzz::config::{default_profiles, FuzzConfig};
use hotfuzz::program::desc::Descriptions;
use hotfuzz::program::gen::Generator;
use hotfuzz::program::prog::Program;
use hotfuzz::program::state::GuestState;
use hotfuzz::repro::minimize::{family, ops, remove_ops, Options};
use hotfuzz::repro::{reproduce, ReproOptions};
use hotfuzz::run::guest::GuestConfig;
use hotfuzz_vm::{AccelChoice, Arch, MachineConfig};
use std::time::Duration;

/// The planted bug's trigger.
const TRIGGER: &str = common::WARN_REONLINE;

/// Generated workload operations (no hotplug, pins, injection or hwpoison, which could keep
/// the block from going offline and hide the bug), with the trigger spread among them.
fn planted(noise_ops: usize) -> Program {
    let d = Descriptions::embedded();
    let st = GuestState::model(&MachineConfig::new(Arch::X86_64));
    let mut g = Generator::new(&d, &st, 7);
    // Plain programs: the noise must not be a race of its own.
    g.race_rate = 0.0;
    let mut noise = Program::default();
    for op in g.generate(noise_ops * 6).ops {
        let fam = family(&d, &op.name);
        let slow = ["hugetlb_pool", "sleep_ms", "migrate_pages"].contains(&op.name.as_str());
        if (fam == "workload" || fam == "misc") && !slow {
            noise.ops.push(op);
        }
    }
    // References to dropped producers go too.
    let bad = hotfuzz::repro::plant::orphans(&noise);
    let mut noise = remove_ops(&vec![noise], &bad).pop().unwrap();
    noise.ops.truncate(noise_ops);
    assert_eq!(noise.ops.len(), noise_ops, "not enough generated noise");
    let trig = Program::parse(TRIGGER, &d).unwrap();
    let p = hotfuzz::repro::plant::interleave(&noise, &trig);
    p.validate(&d).unwrap();
    p
}

#[test]
fn a_planted_bug_is_minimized_and_repro_sh_reproduces_it_without_hotfuzz() {
    let dir = tempfile::tempdir().unwrap();
    let d = Descriptions::embedded();
    let prog = planted(36);
    assert!(prog.ops.len() >= 40);
    let file = dir.path().join("long.prog");
    std::fs::write(&file, prog.print(&d)).unwrap();

    let mut guest = GuestConfig::new(Arch::X86_64);
    guest.accel = AccelChoice::Tcg;
    guest.bugzoo = Some("warn_reonline".into());
    let config = FuzzConfig {
        profiles: default_profiles()
            .into_iter()
            .filter(|p| p.name == "default")
            .collect(),
        ..FuzzConfig::default()
    };
    let opts = ReproOptions {
        input: file,
        run_log: None,
        guest,
        config,
        profile: None,
        reports: dir.path().join("reports"),
        work: dir.path().join("work"),
        vms: 1,
        timeout: Some(Duration::from_secs(300)),
        minimize: Options {
            runs: 3,
            ..Options::default()
        },
        no_minimize: false,
    };
    let s = reproduce(&opts, |p| {
        eprintln!("[{} runs] {} {} ops: {}", p.runs, p.step, p.ops, p.msg)
    })
    .unwrap();
    let m = &s.result;
    eprintln!("{}", m.log.join("\n"));
    assert_eq!(s.title.as_deref(), Some("WARNING in bugzoo_warn_reonline"));
    assert!(m.gave_up.is_none(), "{:?}", m.gave_up);
    assert!(s.reproduced());
    let trigger_len = TRIGGER.lines().count();
    assert!(
        ops(&m.candidate) <= trigger_len + 1,
        "minimized to {} ops:\n{}",
        ops(&m.candidate),
        m.candidate[0].print(&d)
    );
    eprintln!(
        "minimized {} -> {} ops with {} minimization runs ({} in all) in {:?}",
        prog.ops.len(),
        ops(&m.candidate),
        m.minimize_runs,
        m.total_runs,
        s.wall
    );

    // The report directory has the reproducer, its log and the reliability.
    let rdir = s.dir.clone().expect("a report directory");
    let rp = std::fs::read_to_string(rdir.join("repro.prog")).unwrap();
    let back = Program::parse(&rp, &d).unwrap();
    assert_eq!(back, m.candidate[0]);
    let meta = std::fs::read_to_string(rdir.join("meta.yaml")).unwrap();
    assert!(meta.contains("reproducibility:"), "{meta}");
    assert!(std::fs::read_to_string(rdir.join("repro.log"))
        .unwrap()
        .contains("drop every family but hotplug"));
    assert!(std::fs::read_to_string(rdir.join("repro-report.txt"))
        .unwrap()
        .contains("came online a third time"));
    assert!(
        !common::process_left("hotfuzz-repro0"),
        "a guest outlived hotfuzz repro"
    );

    // repro.sh with bash, QEMU and the executor binary alone: no hotfuzz process or library.
    let script = s.script.clone().expect("repro.sh");
    let out = std::process::Command::new("timeout")
        .args(["600", "bash"])
        .arg(&script)
        .current_dir(dir.path())
        .env("REPRO_LOGS", dir.path().join("repro-sh-logs"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "repro.sh did not reproduce:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("REPRODUCED: WARNING in bugzoo_warn_reonline"),
        "{stdout}\n{stderr}"
    );
    assert!(
        !common::process_left("hotfuzz-repro"),
        "repro.sh left QEMU running"
    );
    // The script holds no operation's logic; the executor shows what each operation wrote.
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(
        !text.contains("memory/memory"),
        "an operation's logic in repro.sh"
    );
    assert!(
        stdout.contains("write /sys/devices/system/memory/memory")
            && stdout.contains("\"offline\": ok"),
        "{stdout}"
    );
}
