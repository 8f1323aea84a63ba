//! Opt-in (`HOTFUZZ_TEST_KERNEL_BUILD=1`; a cold build takes 20-40 minutes on two cores):
//! a real kernel from Debian's linux-source-6.12, built with the slim profile as a user
//! builds it, then booted and running a program; a fragment option whose dependency is
//! missing is an error that names both. Without the variable the test says so and passes.

use std::io::Write;
use std::process::{Command, Stdio};

fn hotfuzz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hotfuzz"))
}

fn opted_in() -> bool {
    if std::env::var_os("HOTFUZZ_TEST_KERNEL_BUILD").is_some_and(|v| v == "1") {
        return true;
    }
    eprintln!("skipped: set HOTFUZZ_TEST_KERNEL_BUILD=1 to build and boot a real kernel");
    false
}

fn tree() -> String {
    let o = hotfuzz()
        .args(["setup", "--kernel-source", "--only"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    text.lines()
        .find_map(|l| l.strip_prefix("kernel tree: "))
        .expect("setup prints the tree")
        .to_string()
}

#[test]
fn a_slim_kernel_builds_boots_and_runs_a_program() {
    if !opted_in() {
        return;
    }
    let tree = tree();
    let build = |extra: &[&str]| {
        let o = hotfuzz()
            .args([
                "build", "--tree", &tree, "--commit", "HEAD", "--config", "slim", "--json",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let v = build(&[]);
    let dir = v["entry"]["dir"].as_str().unwrap().to_string();
    for f in [
        "vmlinux",
        "System.map",
        "arch/x86/boot/bzImage",
        ".config",
        "build.json",
    ] {
        assert!(std::path::Path::new(&dir).join(f).is_file(), "{dir}/{f}");
    }
    assert!(v["entry"]["release"].as_str().unwrap().starts_with("6.12."));
    // The same tree, config and compiler: from the cache, no make at all.
    let again = build(&[]);
    assert_eq!(again["entry"]["dir"], v["entry"]["dir"]);
    assert_eq!(again["entry"]["cached"], true);

    let gen = hotfuzz()
        .args(["gen", "--seed", "5", "--len", "15"])
        .output()
        .unwrap();
    assert!(gen.status.success());
    let mut run = hotfuzz()
        .args(["run", "-", "--accel", "tcg", "--json", "--kernel", &dir])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    run.stdin.take().unwrap().write_all(&gen.stdout).unwrap();
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ops = v[0]["ops"].as_array().unwrap();
    assert!(!ops.is_empty(), "{stderr}");
    assert!(
        ops.iter()
            .any(|o| o["outcome"].is_object() || o["outcome"].is_string()),
        "no operation finished: {v}"
    );
}

#[test]
fn a_required_option_that_cannot_be_set_names_its_dependency() {
    if !opted_in() {
        return;
    }
    let tree = tree();
    let d = tempfile::tempdir().unwrap();
    let frag = d.path().join("acl.config");
    // The slim profile turns ext4 off, so its ACL option cannot stay; PPC_MEMTRACE does not
    // exist on x86_64 at all.
    std::fs::write(&frag, "CONFIG_EXT4_FS_POSIX_ACL=y\nCONFIG_PPC_MEMTRACE=y\n").unwrap();
    let o = hotfuzz()
        .args(["build", "--tree", &tree, "--commit", "HEAD", "--config"])
        .arg(format!("slim,{}", frag.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:1: CONFIG_EXT4_FS_POSIX_ACL=y was dropped by olddefconfig (now n): \
             `depends on EXT4_FS` (EXT4_FS=n) (fs/ext4/Kconfig:",
            frag.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(":2: CONFIG_PPC_MEMTRACE=y was dropped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("not defined by any Kconfig file"),
        "{stderr}"
    );
}

/// `git` in `tree` with a private index, fixed identity and dates (the same commits on every
/// run, so their kernels come from the build cache the second time).
fn git(tree: &str, index: &std::path::Path, args: &[&str], input: Option<&str>) -> String {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(tree)
        .args(args)
        .env("GIT_INDEX_FILE", index)
        .env("GIT_AUTHOR_NAME", "Planter")
        .env("GIT_AUTHOR_EMAIL", "planter@example.invalid")
        .env("GIT_COMMITTER_NAME", "Planter")
        .env("GIT_COMMITTER_EMAIL", "planter@example.invalid")
        .env("GIT_AUTHOR_DATE", "2001-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2001-01-01T00:00:00Z")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut p = c.spawn().unwrap();
    let mut stdin = p.stdin.take().unwrap();
    if let Some(i) = input {
        stdin.write_all(i.as_bytes()).unwrap();
    }
    drop(stdin);
    let o = p.wait_with_output().unwrap();
    assert!(o.status.success(), "git {args:?}");
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// A change to a file's text.
type Change = Box<dyn Fn(&mut String)>;

/// Three commits on top of the tree's first one, made without touching its work tree: a
/// comment, a planted WARN in offline_pages(), another comment. Returns (base, commits).
fn planted_history(tree: &str, tmp: &std::path::Path) -> (String, Vec<String>) {
    let index = tmp.join("index");
    let base = git(tree, &index, &["rev-list", "--max-parents=0", "HEAD"], None);
    git(tree, &index, &["read-tree", &base], None);
    let file = "mm/memory_hotplug.c";
    let mut text = git(tree, &index, &["show", &format!("{base}:{file}")], None);
    text.push('\n');
    let anchor = "int offline_pages(unsigned long start_pfn, unsigned long nr_pages,";
    let at = text
        .find(anchor)
        .expect("offline_pages in mm/memory_hotplug.c");
    let body = at + text[at..].find("{\n").expect("its body") + 2;
    let steps: [(&str, Change); 3] = [
        (
            "mm: a comment",
            Box::new(|t: &mut String| t.push_str("/* hotfuzz bisect test: one */\n")),
        ),
        (
            "mm: plant a warning in offline_pages",
            Box::new(move |t: &mut String| {
                t.insert_str(body, "\tWARN_ON_ONCE(nr_pages);\n");
            }),
        ),
        (
            "mm: another comment",
            Box::new(|t: &mut String| t.push_str("/* hotfuzz bisect test: two */\n")),
        ),
    ];
    let mut parent = base.clone();
    let mut ids = Vec::new();
    for (msg, change) in steps {
        change(&mut text);
        let blob = git(tree, &index, &["hash-object", "-w", "--stdin"], Some(&text));
        git(
            tree,
            &index,
            &[
                "update-index",
                "--cacheinfo",
                &format!("100644,{blob},{file}"),
            ],
            None,
        );
        let t = git(tree, &index, &["write-tree"], None);
        parent = git(
            tree,
            &index,
            &["commit-tree", &t, "-p", &parent, "-m", msg],
            None,
        );
        ids.push(parent.clone());
    }
    // A branch keeps them from garbage collection.
    git(
        tree,
        &index,
        &["update-ref", "refs/heads/hotfuzz-bisect-test", &parent],
        None,
    );
    (base, ids)
}

#[test]
fn a_real_bisection_names_the_planting_commit() {
    if !opted_in() {
        return;
    }
    let tree = tree();
    let d = tempfile::tempdir().unwrap();
    let (base, ids) = planted_history(&tree, d.path());
    let prog = d.path().join("offline.prog");
    std::fs::write(
        &prog,
        "virtio_mem_resize(dev=0x0, size=0x10000000)\n\
         virtio_mem_wait(dev=0x0, ms=0x1388)\n\
         r0 = memblock_find(which=\"movable\", nth=0x0)\n\
         memblock_state(block=r0, state=\"offline\")\n",
    )
    .unwrap();
    let o = hotfuzz()
        .args(["bisect"])
        .arg(&prog)
        .args([
            "--tree", &tree, "--config", "slim", "--accel", "tcg", "--runs", "4",
        ])
        .args(["--good", &base, "--bad", &ids[2], "--workdir"])
        .arg(d.path().join("work"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "first bad commit: {} mm: plant a warning in offline_pages",
            ids[1]
        )),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("author: Planter <planter@example.invalid>"),
        "{stdout}"
    );
}
