//! `repro.sh`: a standalone reproducer that needs only QEMU, bash, ssh and coreutils, not
//! hotfuzz.
//!
//! [`generate`] turns a (minimized) program plus the way hotfuzz booted the guest into one bash
//! script. The script makes a private 0700 temp directory and a fresh ssh key, appends a tiny
//! newc cpio overlay holding `/root/.ssh/authorized_keys` to the guest image, boots QEMU with
//! hotfuzz's exact arguments (QMP socket, initramfs and the 127.0.0.1 ssh port filled in),
//! waits for ssh, runs the program, waits for the console to settle and then checks the console
//! lines printed after the program started against the bug's detection patterns. No QEMU
//! outlives it (trap on EXIT/INT/TERM/HUP, and `PR_SET_PDEATHSIG` through `setpriv` where
//! available).
//!
//! The program runs in one of two modes:
//!
//! - **shell**: every operation has a shell form: a busybox command run over ssh for guest
//!   operations (sysfs/procfs/debugfs writes, the executor's block selection logic, PFN
//!   arithmetic), a QMP command sent with `socat` for host operations, a host `sleep` for
//!   `sleep_ms`. Each thread is a bash function; several threads run concurrently in the
//!   background. Each step is printed with its result, and failing steps never stop the script.
//! - **executor**: some operation needs a process that holds state across operations
//!   (mappings, pins, io_uring, ...). The guest's `/usr/bin/hotfuzz-executor` then runs the
//!   program from its JSON form, as a bash coprocess over ssh; the script prints its events and
//!   answers its host-operation requests itself.
//!
//! Both modes follow the executor's semantics: the same paths and written values, the same
//! produced values, deadlines that interrupt an operation, threads abandoned when an operation
//! is stuck, and consumers skipped when their producer gave no value.

use crate::program::desc::{Descriptions, OpDesc};
use crate::program::prog::{Arg, Op, Program};
use anyhow::{bail, Context as _};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Everything `repro.sh` is generated from.
#[derive(Debug, Clone)]
pub struct ScriptInput<'a> {
    /// The descriptions the program was parsed with.
    pub d: &'a Descriptions,
    /// The (minimized) program.
    pub prog: &'a Program,
    /// The bug's title (printed, and what the script looks for).
    pub title: String,
    /// Extended regular expressions (grep -E) that must all match the console output printed
    /// after the program started for the bug to count as reproduced.
    pub detect: Vec<String>,
    /// QEMU binary used (default of `$QEMU`).
    pub qemu: PathBuf,
    /// QEMU arguments, exactly as hotfuzz passed them, with placeholders: `@INITRD@` (the
    /// per-run initramfs), `@QMP@` (QMP socket path), `@SSH_PORT@` (host port forwarded to the
    /// guest's port 22; appears inside `hostfwd=tcp:127.0.0.1:@SSH_PORT@-:22`).
    pub qemu_args: Vec<String>,
    /// Kernel boot image (default of `$KERNEL`); already inside `qemu_args` as a path too.
    pub kernel: PathBuf,
    /// Base initramfs (default of `$BASE_INITRD`): the guest image without per-run keys.
    pub base_initrd: PathBuf,
    /// Where the kernel came from (Debian package name/version or path), for the header.
    pub kernel_origin: String,
    /// Kernel command line (already inside `qemu_args`; shown in the header).
    pub kernel_cmdline: String,
    /// virtio-mem device ids by `vmem_dev` index (QOM ids, e.g. `vmem0`).
    pub vmem_ids: Vec<String>,
    /// Seconds to wait for console output after the program ends.
    pub settle_secs: u64,
}

/// Where the executor lives in the guest image.
const EXECUTOR: &str = crate::run::runner::EXECUTOR_GUEST_PATH;
/// sysfs memory block directory.
const MEMORY: &str = "/sys/devices/system/memory";
/// Largest literal memory block number whose PFN arithmetic stays exact in 64-bit shell
/// arithmetic.
const MAX_SHELL_BLOCK: u64 = 1 << 24;
/// Largest literal PFN (or page count) whose address arithmetic stays exact in shell arithmetic.
const MAX_SHELL_PFN: u64 = 1 << 40;
/// Extra seconds a guest step may take past its deadline (ssh round trip, the executor's
/// grace) before the script gives up on it and abandons its thread.
const SSH_GRACE_S: u64 = 12;

/// Generates the text of `repro.sh` for `inp` (shell mode when every operation has a shell
/// form, executor mode otherwise; see the module documentation).
///
/// Fails when no correct script can be made: no detection patterns, a pattern with a line
/// break, a NUL byte in a QEMU argument, a path that is not UTF-8, an odd virtio-mem id, or a
/// program that does not validate against the descriptions.
pub fn generate(inp: &ScriptInput) -> anyhow::Result<String> {
    check_input(inp)?;
    let d = inp.d;
    inp.prog
        .validate(d)
        .map_err(|e| anyhow::anyhow!("the program is not valid: {e}"))?;
    let facts = MachineFacts::from_args(&inp.qemu_args);
    let plan = plan(d, inp.prog, &facts);
    let mut s = String::new();
    header(&mut s, inp, &plan);
    settings(&mut s, inp)?;
    data(&mut s, inp, &plan, &facts);
    s.push_str(RUNTIME);
    qemu_argv_fn(&mut s, inp)?;
    match &plan {
        Plan::Shell(steps) => shell_program(&mut s, inp, steps),
        Plan::Executor { .. } => executor_program(&mut s, inp, &facts)?,
    }
    s.push_str(MAIN);
    Ok(s)
}

fn check_input(inp: &ScriptInput) -> anyhow::Result<()> {
    if inp.detect.is_empty() {
        bail!("no detection patterns: the script could not tell a reproduction from a clean run");
    }
    for re in &inp.detect {
        if re.is_empty() || re.contains(['\n', '\r', '\0']) {
            bail!("detection pattern {re:?} is empty or contains a line break or NUL");
        }
    }
    for a in &inp.qemu_args {
        if a.contains('\0') {
            bail!("QEMU argument {a:?} contains a NUL byte");
        }
    }
    for id in &inp.vmem_ids {
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            bail!("virtio-mem device id {id:?} is not a plain QOM id");
        }
    }
    for p in [&inp.qemu, &inp.kernel, &inp.base_initrd] {
        path_str(p)?;
    }
    Ok(())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    let s = p
        .to_str()
        .with_context(|| format!("path {} is not UTF-8", p.display()))?;
    if s.contains('\0') || s.is_empty() {
        bail!("path {s:?} is empty or contains a NUL byte");
    }
    Ok(s)
}

// ---- quoting ------------------------------------------------------------------------------

/// Quotes `s` as one bash/sh word in single quotes (`'` becomes `'\''`). `s` has no NUL.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `s` as one word for the guest's busybox sh: bare when it is made of harmless characters,
/// otherwise single-quoted.
fn gq(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=+,@%-".contains(c));
    if plain {
        s.to_string()
    } else {
        sq(s)
    }
}

/// A message as one sh word: double-quoted when that needs no escapes, else single-quoted.
fn msg_word(s: &str) -> String {
    if s.contains(['"', '$', '`', '\\', '\'', '!', '\n']) {
        sq(s)
    } else {
        format!("\"{s}\"")
    }
}

/// One line of text made safe for a `#` comment.
fn comment_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

// ---- what the program needs -----------------------------------------------------------------

/// Facts about the machine that hotfuzz's host operations depend on, read off its QEMU
/// arguments (see `MachineConfig::qemu_args`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MachineFacts {
    /// More than one NUMA node (`dimm_add` passes `node` only then).
    numa: bool,
    /// Spare PCIe root ports `hp0`, `hp1`, ... for `virtio_mem_hot_add`.
    hotplug_ports: usize,
}

impl MachineFacts {
    fn from_args(args: &[String]) -> MachineFacts {
        MachineFacts {
            numa: args.iter().filter(|a| a.as_str() == "-numa").count() > 1,
            hotplug_ports: args
                .iter()
                .filter(|a| a.starts_with("pcie-root-port,id=hp"))
                .count(),
        }
    }
}

/// How the program runs.
#[derive(Debug)]
enum Plan {
    /// Every operation as a shell step, in program order.
    Shell(Vec<Form>),
    /// Under the guest's executor; why (operation index and reason, per operation lacking a
    /// shell form).
    Executor { reasons: Vec<(usize, String)> },
}

/// An argument of a host operation function.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HArg {
    /// A literal word.
    Lit(String),
    /// The value of `rN`; `name` is the argument's name (executor mode reads it from the
    /// request).
    Ref { r: u32, name: String },
}

/// The shell form of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    /// A busybox sh command in the guest (after the helpers of `G_HELPERS`, with the `rN` it
    /// uses set as shell variables), interrupted at `deadline_s`.
    Guest { deadline_s: u64, cmd: String },
    /// A host operation: a bash function of the script.
    Host { func: &'static str, args: Vec<HArg> },
    /// `sleep_ms` (on the host: nothing but the time passes).
    Sleep { ms: u64, deadline_ms: u64 },
    /// `yield`.
    Nop,
}

/// An integer argument: literal or reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntArg {
    Lit(u64),
    Ref(u32),
}

/// Looks arguments of one operation up by name.
struct Args<'a> {
    op: &'a Op,
    desc: &'a OpDesc,
}

impl<'a> Args<'a> {
    fn get(&self, name: &str) -> Result<&'a Arg, String> {
        self.desc
            .arg_index(name)
            .and_then(|i| self.op.args.get(i))
            .ok_or_else(|| format!("{} has no argument {name}", self.op.name))
    }

    fn int(&self, name: &str) -> Result<IntArg, String> {
        match self.get(name)? {
            Arg::Int(v) => Ok(IntArg::Lit(*v)),
            Arg::Ref(r) => Ok(IntArg::Ref(*r)),
            Arg::Str(_) => Err(format!("argument {name} is a string")),
        }
    }

    fn lit(&self, name: &str) -> Result<u64, String> {
        match self.int(name)? {
            IntArg::Lit(v) => Ok(v),
            IntArg::Ref(r) => Err(format!("argument {name} is the resource r{r}")),
        }
    }

    fn str(&self, name: &str) -> Result<&'a str, String> {
        match self.get(name)? {
            Arg::Str(s) if s.contains('\0') => Err(format!("argument {name} contains a NUL byte")),
            Arg::Str(s) => Ok(s),
            _ => Err(format!("argument {name} is not a string")),
        }
    }

    /// A literal at most `max` (so shell arithmetic on it stays exact), or a reference.
    fn bounded(&self, name: &str, max: u64) -> Result<IntArg, String> {
        match self.int(name)? {
            IntArg::Lit(v) if v > max => Err(format!(
                "{name}={v:#x} is too large to compute with exactly in shell arithmetic"
            )),
            a => Ok(a),
        }
    }
}

/// Builds a guest command (busybox sh text).
#[derive(Default)]
struct Cmd {
    text: String,
}

impl Cmd {
    fn lit(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// An integer in decimal, or the guest shell variable holding the value of `rN`.
    fn int(&mut self, v: IntArg) -> &mut Self {
        match v {
            IntArg::Lit(n) => self.lit(&n.to_string()),
            IntArg::Ref(r) => self.lit(&format!("${{r{r}}}")),
        }
    }

    /// Fails with the "unsupported" status (97, see `G_HELPERS`) when `path` (a constant
    /// without special characters) does not exist: the executor's `op_needs`.
    fn needs(&mut self, path: &str) -> &mut Self {
        self.lit(&format!("need {path}\n"))
    }

    /// `echo -n VALUE > PATH`: one write(2) of exactly VALUE, whose error busybox reports.
    fn write(&mut self, value: &str, path: &str) -> Result<&mut Self, String> {
        echo_word(value)?;
        Ok(self.lit(&format!("echo -n {} > {}\n", gq(value), gq(path))))
    }

    fn form(self, desc: &OpDesc) -> Form {
        Form::Guest {
            deadline_s: desc.timeout_ms.div_ceil(1000).max(1),
            cmd: self.text.trim_end().to_string(),
        }
    }
}

/// Checks that busybox `echo -n VALUE` writes exactly VALUE (it would take `-n`, `-e`, `-E`,
/// `-neE`... as options).
fn echo_word(value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err("the value contains a NUL byte".into());
    }
    let opt = value.len() > 1
        && value.starts_with('-')
        && value[1..].chars().all(|c| matches!(c, 'n' | 'e' | 'E'));
    if opt {
        return Err(format!("busybox echo would take {value:?} as an option"));
    }
    Ok(())
}

fn hugepage_dir(size: &str) -> String {
    match size {
        "2M" => "hugepages-2048kB".into(),
        "1G" => "hugepages-1048576kB".into(),
        "16M" => "hugepages-16384kB".into(),
        other => format!("hugepages-{other}"),
    }
}

const NOTIFIER: &str = "/sys/kernel/debug/notifier-error-inject/memory/actions";
const FAIL_PAGE_ALLOC: &str = "/sys/kernel/debug/fail_page_alloc";
const SPLIT: &str = "/sys/kernel/debug/split_huge_pages";
const DAMON: &str = "/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds";
const KDAMOND: &str = "/sys/kernel/mm/damon/admin/kdamonds/0";
const ONLINE_POLICY: &str = "/sys/module/memory_hotplug/parameters/online_policy";
const AUTO_MOVABLE_RATIO: &str = "/sys/module/memory_hotplug/parameters/auto_movable_ratio";
const UNPLUG_ONLINE: &str = "/sys/module/virtio_mem/parameters/unplug_online";
const SOFT_OFFLINE: &str = "/sys/devices/system/memory/soft_offline_page";
const HARD_OFFLINE: &str = "/sys/devices/system/memory/hard_offline_page";
const CORRUPT: &str = "/sys/kernel/debug/hwpoison/corrupt-pfn";
const UNPOISON: &str = "/sys/kernel/debug/hwpoison/unpoison-pfn";

/// The shell form of `op`, or why it has none. Every path, value and produced value follows
/// the executor's implementation (`vm/executor/src/ops/`) and hotfuzz's host operations
/// (`harness/src/hostops.rs`).
fn shell_form(d: &Descriptions, op: &Op, facts: &MachineFacts) -> Result<Form, String> {
    let desc = d
        .op(&op.name)
        .ok_or_else(|| format!("unknown operation {}", op.name))?;
    let a = Args { op, desc };
    if desc.host {
        return host_form(&a, facts);
    }
    let mut c = Cmd::default();
    let onoff = |v: u64, on: &str, off: &str| if v != 0 { on } else { off }.to_string();
    match op.name.as_str() {
        "memblock_state" | "memblock_online" => {
            let block = a.int("block")?;
            let (value, file) = if op.name == "memblock_state" {
                (a.str("state")?.to_string(), "state")
            } else {
                (onoff(a.lit("on")?, "1", "0"), "online")
            };
            echo_word(&value)?;
            c.lit(&format!("echo -n {} > {MEMORY}/memory", gq(&value)))
                .int(block)
                .lit(&format!("/{file}\n"));
        }
        "memblock_find" => {
            let which = a.str("which")?;
            let nth = a.lit("nth")?;
            if nth > i64::MAX as u64 {
                return Err(format!("nth={nth:#x} does not fit shell arithmetic"));
            }
            c.lit(&format!("find_block {} {nth}", gq(which)));
        }
        "auto_online_blocks" => {
            c.write(a.str("policy")?, &format!("{MEMORY}/auto_online_blocks"))?;
        }
        "online_policy" => {
            c.needs(ONLINE_POLICY)
                .write(a.str("policy")?, ONLINE_POLICY)?;
        }
        "auto_movable_ratio" => {
            c.needs(AUTO_MOVABLE_RATIO)
                .write(&a.lit("ratio")?.to_string(), AUTO_MOVABLE_RATIO)?;
        }
        "virtio_mem_unplug_online" => {
            c.needs(UNPLUG_ONLINE)
                .write(&onoff(a.lit("on")?, "Y", "N"), UNPLUG_ONLINE)?;
        }
        "notifier_inject" => {
            let action = a.str("action")?;
            let errno = a.lit("errno")? as i64;
            c.needs(NOTIFIER)
                .write(&errno.to_string(), &format!("{NOTIFIER}/{action}/error"))?;
        }
        "fail_page_alloc" => {
            let p = a.lit("probability")?.min(100);
            let times = a.lit("times")? as i64;
            let order = a.lit("min_order")?;
            c.needs(&format!("{FAIL_PAGE_ALLOC}/probability"));
            let writes = [
                ("ignore-gfp-wait", "N".to_string()),
                ("ignore-gfp-highmem", "N".to_string()),
                ("min-order", order.to_string()),
                ("times", times.to_string()),
                ("interval", "1".to_string()),
                ("verbose", "1".to_string()),
                ("probability", p.to_string()),
            ];
            let parts: Vec<String> = writes
                .iter()
                .map(|(f, v)| format!("echo -n {v} > {FAIL_PAGE_ALLOC}/{f}"))
                .collect();
            c.lit(&parts.join(" &&\n  "));
            c.lit("\n");
        }
        "sleep_ms" => {
            return Ok(Form::Sleep {
                ms: a.lit("ms")?.min(600_000),
                deadline_ms: desc.timeout_ms,
            })
        }
        "yield" => return Ok(Form::Nop),
        "pfn_in_block" => {
            let block = a.bounded("block", MAX_SHELL_BLOCK)?;
            let page = a.lit("page")?;
            if page > i64::MAX as u64 {
                return Err(format!("page={page:#x} does not fit shell arithmetic"));
            }
            c.lit("ps=$(page_size); bs=$(block_size) || exit 1\n")
                .lit("per=$((bs / ps)); [ \"$per\" -gt 0 ] || per=1\n")
                .lit("echo $((")
                .int(block)
                .lit(&format!(" * per + {page} % per))"));
        }
        "memblock_of_pfn" => {
            let pfn = a.bounded("pfn", MAX_SHELL_PFN)?;
            c.lit("ps=$(page_size); bs=$(block_size) || exit 1\n")
                .lit("echo $((")
                .int(pfn)
                .lit(" * ps / bs))");
        }
        "soft_offline" | "hard_offline" => {
            let path = if op.name == "soft_offline" {
                SOFT_OFFLINE
            } else {
                HARD_OFFLINE
            };
            let pfn = a.bounded("pfn", MAX_SHELL_PFN)?;
            c.needs(path)
                .lit("ps=$(page_size)\n")
                .lit("echo -n $(printf 0x%x $((")
                .int(pfn)
                .lit(&format!(" * ps))) > {path}\n"));
        }
        "hwpoison_corrupt" | "hwpoison_unpoison" => {
            let path = if op.name == "hwpoison_corrupt" {
                CORRUPT
            } else {
                UNPOISON
            };
            c.needs(path);
            match a.int("pfn")? {
                IntArg::Lit(v) => {
                    c.lit(&format!("echo -n {v:#x} > {path}\n"));
                }
                r => {
                    c.lit("echo -n $(printf 0x%x ")
                        .int(r)
                        .lit(&format!(") > {path}\n"));
                }
            }
        }
        "drop_caches" => {
            c.write(&a.lit("what")?.to_string(), "/proc/sys/vm/drop_caches")?;
        }
        "compact_memory" => {
            let node = a.lit("node")? as i64;
            let path = if node < 0 {
                "/proc/sys/vm/compact_memory".to_string()
            } else {
                format!("/sys/devices/system/node/node{node}/compact")
            };
            c.write("1", &path)?;
        }
        "split_huge_pages_all" => {
            c.needs(SPLIT).write("1", SPLIT)?;
        }
        "hugetlb_pool" => {
            let size = a.str("size")?;
            let node = a.lit("node")? as i64;
            let count = a.lit("count")?;
            let dir = hugepage_dir(size);
            let path = if node < 0 {
                let global = format!("/sys/kernel/mm/hugepages/{dir}");
                c.lit(&format!(
                    "[ -d {} ] || unsupported {}\n",
                    gq(&global),
                    msg_word(&format!("no {size} huge pages on this kernel"))
                ));
                format!("{global}/nr_hugepages")
            } else {
                format!("/sys/devices/system/node/node{node}/hugepages/{dir}/nr_hugepages")
            };
            c.write(&count.to_string(), &path)?;
        }
        "damon_start" => {
            let pfn = a.bounded("pfn", MAX_SHELL_PFN)?;
            let npages = a.bounded("npages", MAX_SHELL_PFN)?;
            let IntArg::Lit(npages) = npages else {
                return Err("npages is not a literal".into());
            };
            let npages = npages.max(1);
            let action = a.str("action")?;
            echo_word(action)?;
            let target = format!("{KDAMOND}/contexts/0/targets/0");
            c.needs(DAMON).lit("ps=$(page_size)\nstart=$((").int(pfn);
            c.lit(&format!(
                " * ps)); end=$((start + {npages} * ps))\n\
                 echo -n 1 > {DAMON} &&\n  \
                 echo -n 1 > {KDAMOND}/contexts/nr_contexts &&\n  \
                 echo -n paddr > {KDAMOND}/contexts/0/operations &&\n  \
                 echo -n 1 > {KDAMOND}/contexts/0/targets/nr_targets &&\n  \
                 echo -n 1 > {target}/regions/nr_regions &&\n  \
                 echo -n $start > {target}/regions/0/start &&\n  \
                 echo -n $end > {target}/regions/0/end &&\n  "
            ));
            if action != "none" {
                let s = format!("{KDAMOND}/contexts/0/schemes/0");
                let writes = [
                    (
                        format!("{KDAMOND}/contexts/0/schemes/nr_schemes"),
                        "1".into(),
                    ),
                    (format!("{s}/action"), gq(action)),
                    (format!("{s}/access_pattern/sz/min"), "0".into()),
                    (format!("{s}/access_pattern/sz/max"), u64::MAX.to_string()),
                    (format!("{s}/access_pattern/nr_accesses/min"), "0".into()),
                    (
                        format!("{s}/access_pattern/nr_accesses/max"),
                        "4294967295".into(),
                    ),
                    (format!("{s}/access_pattern/age/min"), "0".into()),
                    (format!("{s}/access_pattern/age/max"), "4294967295".into()),
                ];
                for (p, v) in writes {
                    c.lit(&format!("echo -n {v} > {p} &&\n  "));
                }
            }
            c.lit(&format!("echo -n on > {KDAMOND}/state\n"));
        }
        "damon_stop" => {
            c.needs(DAMON).lit(&format!(
                "echo -n off 2>/dev/null > {KDAMOND}/state\necho -n 0 > {DAMON}\n"
            ));
        }
        _ => {
            return Err(
                "needs a process that keeps state across operations or makes system calls".into(),
            )
        }
    }
    Ok(c.form(desc))
}

fn host_form(a: &Args, facts: &MachineFacts) -> Result<Form, String> {
    let res = |name: &str| -> Result<HArg, String> {
        Ok(match a.int(name)? {
            IntArg::Lit(v) => HArg::Lit(v.to_string()),
            IntArg::Ref(r) => HArg::Ref {
                r,
                name: name.to_string(),
            },
        })
    };
    let lit = |name: &str| -> Result<HArg, String> { Ok(HArg::Lit(a.lit(name)?.to_string())) };
    let node32 =
        |name: &str| -> Result<HArg, String> { Ok(HArg::Lit((a.lit(name)? as u32).to_string())) };
    let (func, args) = match a.op.name.as_str() {
        "virtio_mem_resize" => ("h_virtio_mem_resize", vec![res("dev")?, lit("size")?]),
        "virtio_mem_wait" => (
            "h_virtio_mem_wait",
            vec![res("dev")?, HArg::Lit(a.lit("ms")?.min(60_000).to_string())],
        ),
        "virtio_mem_hot_add" => (
            "h_virtio_mem_hot_add",
            vec![
                lit("max")?,
                lit("requested")?,
                node32("node")?,
                lit("block_size")?,
            ],
        ),
        "dimm_add" => (
            "h_dimm_add",
            vec![
                lit("size")?,
                if facts.numa {
                    node32("node")?
                } else {
                    HArg::Lit("-".into())
                },
            ],
        ),
        "dimm_remove" => ("h_dimm_remove", vec![res("d")?]),
        "balloon" => ("h_balloon", vec![lit("target")?]),
        other => return Err(format!("the script has no host operation {other}")),
    };
    Ok(Form::Host { func, args })
}

fn plan(d: &Descriptions, prog: &Program, facts: &MachineFacts) -> Plan {
    let mut forms = Vec::new();
    let mut reasons = Vec::new();
    for (i, op) in prog.ops.iter().enumerate() {
        match shell_form(d, op, facts) {
            Ok(f) => forms.push(f),
            Err(why) => reasons.push((i, why)),
        }
    }
    if reasons.is_empty() {
        Plan::Shell(forms)
    } else {
        Plan::Executor { reasons }
    }
}

/// Arguments that refer to earlier results: `rN` per argument, in argument order.
fn refs_of(op: &Op) -> Vec<u32> {
    let mut v = Vec::new();
    for a in &op.args {
        if let Arg::Ref(r) = a {
            if !v.contains(r) {
                v.push(*r);
            }
        }
    }
    v
}

/// Index of the operation that produces `rN`.
fn producers(prog: &Program) -> BTreeMap<u32, usize> {
    prog.ops
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.ret.map(|r| (r, i)))
        .collect()
}

fn has_host_ops(inp: &ScriptInput) -> bool {
    inp.prog
        .ops
        .iter()
        .any(|o| inp.d.op(&o.name).is_some_and(|x| x.host))
}

/// The program's time budget as the runner computes it: the sum of the deadlines plus 10 s,
/// at most 900 s.
fn budget_ms(inp: &ScriptInput) -> u64 {
    (inp.prog.deadline_ms(inp.d) + 10_000).min(900_000)
}

// ---- the script ---------------------------------------------------------------------------

fn header(s: &mut String, inp: &ScriptInput, plan: &Plan) {
    let c = comment_safe;
    let _ = writeln!(s, "#!/usr/bin/env bash");
    let _ = writeln!(s, "# repro.sh: {}", c(&inp.title));
    s.push_str("#\n# Generated by hotfuzz. Reproduces the bug with plain QEMU, bash and ssh: no hotfuzz needed.\n#\n");
    let _ = writeln!(s, "# Kernel:              {}", c(&inp.kernel_origin));
    let _ = writeln!(s, "# Kernel command line: {}", c(&inp.kernel_cmdline));
    let _ = writeln!(
        s,
        "#\n# Program ({} operation(s), {} thread(s); the operations of one thread run in order,\n# threads run concurrently; `rN = op(...)` names a value later operations use):\n#",
        inp.prog.ops.len(),
        inp.prog.threads()
    );
    for line in inp.prog.print(inp.d).lines() {
        let _ = writeln!(s, "#   {}", c(line));
    }
    s.push_str("#\n");
    match plan {
        Plan::Shell(_) => s.push_str(
            "# Mode: shell. Every guest operation is a busybox command run over ssh (the same sysfs,\n\
             # procfs and debugfs writes as hotfuzz's executor), every host operation a QMP command\n\
             # sent with socat. Each step prints its result; failing steps do not stop the script.\n",
        ),
        Plan::Executor { reasons } => {
            s.push_str(
                "# Mode: executor. These operations need a process that keeps state across operations,\n\
                 # so the guest's /usr/bin/hotfuzz-executor runs the program (its JSON form is in\n\
                 # PROGRAM_JSON below) and this script answers its host (QMP) requests:\n",
            );
            for (i, why) in reasons {
                let _ = writeln!(
                    s,
                    "#   #{i} {}: {}",
                    c(&inp.prog.ops[*i].name),
                    c(why)
                );
            }
        }
    }
    s.push_str(
        "#\n\
         # Usage: ./repro.sh\n\
         # Environment (all optional):\n\
         #   QEMU=...         QEMU binary\n\
         #   KERNEL=...       kernel boot image\n\
         #   BASE_INITRD=...  guest initramfs (hotfuzz's image, without per-run keys)\n\
         #   RUNS=1           boot and run the program this many times (reports crashes/runs)\n\
         #   TIMEOUT=300      seconds to wait for the guest to boot and answer ssh\n\
         #   SETTLE=N         seconds to wait for console output after the program (when an\n\
         #                    operation was stuck: up to STUCK_SETTLE for the hung task detector)\n\
         #   REPRO_LOGS=./repro-logs\n\
         #                    logs are kept in $REPRO_LOGS/<date>-<pid>/: output.log (what this\n\
         #                    script printed) and per run runN/: console.log (serial console),\n\
         #                    qemu.log, qemu.cmdline, executor.stderr\n\
         # Needs: bash 4+, QEMU, OpenSSH client (ssh, ssh-keygen), coreutils; socat and flock\n\
         # (util-linux) when the program has host operations; setpriv (util-linux) is used when\n\
         # present so that QEMU dies with the script even on SIGKILL.\n\
         # After boot the script sets /proc/sys/kernel/hung_task_timeout_secs as hotfuzz does.\n\
         # The ssh key is generated per invocation into a private temp directory and appended to\n\
         # the initramfs as /root/.ssh/authorized_keys; ssh is forwarded from 127.0.0.1 only.\n\
         #\n\
         # Exit status: 0 reproduced (in at least one run), 1 not reproduced, 2 set-up failure.\n\n",
    );
}

fn settings(s: &mut String, inp: &ScriptInput) -> anyhow::Result<()> {
    s.push_str(
        "# shellcheck disable=SC2016,SC2317 # guest commands are single-quoted on purpose; \
         cleanup runs from a trap\n",
    );
    let _ = writeln!(s, "export LC_ALL=C");
    let _ = writeln!(s, "umask 077\n");
    let _ = writeln!(s, "QEMU=${{QEMU:-{}}}", sq(path_str(&inp.qemu)?));
    let _ = writeln!(s, "KERNEL=${{KERNEL:-{}}}", sq(path_str(&inp.kernel)?));
    let _ = writeln!(
        s,
        "BASE_INITRD=${{BASE_INITRD:-{}}}",
        sq(path_str(&inp.base_initrd)?)
    );
    let _ = writeln!(s, "RUNS=${{RUNS:-1}}");
    let _ = writeln!(s, "TIMEOUT=${{TIMEOUT:-300}}");
    let _ = writeln!(s, "SETTLE=${{SETTLE:-{}}}", inp.settle_secs);
    let _ = writeln!(s, "REPRO_LOGS=${{REPRO_LOGS:-./repro-logs}}\n");
    Ok(())
}

fn data(s: &mut String, inp: &ScriptInput, plan: &Plan, facts: &MachineFacts) {
    let d = inp.d;
    s.push_str("# ---- the bug and the program\n");
    let _ = writeln!(s, "TITLE={}", sq(&inp.title));
    let _ = writeln!(s, "PROG_ID={}", sq(&inp.prog.id(d)));
    let mode = match plan {
        Plan::Shell(_) => "shell",
        Plan::Executor { .. } => "executor",
    };
    let _ = writeln!(s, "MODE={mode}");
    s.push_str(
        "# Console lines after the program started must match every one of these (grep -E).\n",
    );
    s.push_str("DETECT=(\n");
    for re in &inp.detect {
        let _ = writeln!(s, "  {}", sq(re));
    }
    s.push_str(")\n");
    s.push_str("# The program's operations, by index.\nPROG_TEXT=(\n");
    for op in &inp.prog.ops {
        let _ = writeln!(s, "  {}", sq(&op.print(d)));
    }
    s.push_str(")\nPROG_NAME=(");
    for op in &inp.prog.ops {
        let _ = write!(s, " {}", sq(&op.name));
    }
    s.push_str(" )\n");
    s.push_str("# virtio-mem devices by vmem_dev index (QOM ids).\nVMEM_IDS=(");
    for id in &inp.vmem_ids {
        let _ = write!(s, " {}", sq(id));
    }
    s.push_str(" )\n");
    let _ = writeln!(s, "HOTPLUG_PORTS={}", facts.hotplug_ports);
    let _ = writeln!(s, "HOST_OPS={}", u8::from(has_host_ops(inp)));
    if matches!(plan, Plan::Executor { .. }) {
        let _ = writeln!(s, "EXECUTOR={}", sq(EXECUTOR));
    }
    let _ = writeln!(s, "READY_MARKER={}", sq(hotfuzz_vm::guest::READY_MARKER));
    let _ = writeln!(s, "BUDGET_S={}", budget_ms(inp).div_ceil(1000));
    let _ = writeln!(s, "SSH_GRACE={SSH_GRACE_S}");
    let hung = crate::run::guest::HUNG_TASK_TIMEOUT;
    s.push_str("# As in hotfuzz: the hung task detector reports after this many seconds, and when an\n# operation was stuck the script waits up to STUCK_SETTLE s for a report.\n");
    let _ = writeln!(s, "HUNG_TASK_TIMEOUT={hung}");
    let _ = writeln!(s, "STUCK_SETTLE={}\n", 3 * hung + 5);
}

fn qemu_argv_fn(s: &mut String, inp: &ScriptInput) -> anyhow::Result<()> {
    let kernel = path_str(&inp.kernel)?;
    s.push_str(
        "\n# ---- the QEMU command line (hotfuzz's, with this run's initramfs, QMP socket and port)\n\
         qemu_argv() {\n  ARGV=(\n",
    );
    // An option and its value on one line.
    let mut i = 0;
    while i < inp.qemu_args.len() {
        let a = &inp.qemu_args[i];
        let _ = write!(s, "    {}", qemu_word(a, kernel));
        match inp.qemu_args.get(i + 1) {
            Some(v) if a.starts_with('-') && !v.starts_with('-') => {
                let _ = write!(s, " {}", qemu_word(v, kernel));
                i += 2;
            }
            _ => i += 1,
        }
        s.push('\n');
    }
    s.push_str("  )\n}\n");
    Ok(())
}

/// One QEMU argument as a bash word: placeholders become this run's values, the kernel path
/// `$KERNEL`, everything else single-quoted.
fn qemu_word(arg: &str, kernel: &str) -> String {
    if arg == kernel {
        return "\"$KERNEL\"".into();
    }
    const SUBST: [(&str, &str); 3] = [
        ("@INITRD@", "\"$DIR/initrd.cpio\""),
        ("@QMP@", "\"$RUN/qmp.sock\""),
        ("@SSH_PORT@", "\"$PORT\""),
    ];
    let mut out = String::new();
    let mut rest = arg;
    loop {
        let next = SUBST
            .iter()
            .filter_map(|(p, v)| rest.find(p).map(|at| (at, *p, *v)))
            .min_by_key(|(at, _, _)| *at);
        match next {
            Some((at, p, v)) => {
                if at > 0 {
                    out.push_str(&sq(&rest[..at]));
                }
                out.push_str(v);
                rest = &rest[at + p.len()..];
            }
            None => {
                if !rest.is_empty() || out.is_empty() {
                    out.push_str(&sq(rest));
                }
                return out;
            }
        }
    }
}

fn host_args_words(args: &[HArg], executor: bool) -> String {
    args.iter()
        .map(|a| match a {
            HArg::Lit(v) => gq(v),
            HArg::Ref { name, .. } if executor => format!("\"$(ev_int \"$2\" {name})\""),
            HArg::Ref { r, .. } => format!("\"${{r{r}}}\""),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_program(s: &mut String, inp: &ScriptInput, forms: &[Form]) {
    let prog = inp.prog;
    let prod = producers(prog);
    s.push_str(GUEST_HELPERS);
    s.push_str(
        "\n# ---- the program, one bash function per thread\n\
         # op THREAD INDEX RESULT NEEDS KIND ARGS...: runs operation INDEX, prints it with its result,\n\
         # stores a produced value in RESULT (rN, or -); skipped unless every variable in NEEDS has\n\
         # a value. KIND: guest DEADLINE_S COMMAND (busybox sh; NEEDS are shell variables there)\n\
         # | host FUNCTION ARGS... (QMP) | sleep MS DEADLINE_MS | nop.\n",
    );
    let mut threads: Vec<u32> = prog.ops.iter().map(|o| o.thread).collect();
    threads.sort_unstable();
    threads.dedup();
    for &t in &threads {
        let _ = writeln!(s, "thread_{t}() {{");
        for (i, (op, form)) in prog.ops.iter().zip(forms).enumerate() {
            if op.thread != t {
                continue;
            }
            let refs = refs_of(op);
            for r in &refs {
                let from_other = prod.get(r).is_some_and(|&p| prog.ops[p].thread != t);
                if from_other {
                    let _ = writeln!(s, "  await_ref r{r}");
                }
            }
            let _ = writeln!(s, "  # #{i} {}", comment_safe(&op.print(inp.d)));
            let res = op
                .ret
                .map(|r| format!("r{r}"))
                .unwrap_or_else(|| "-".into());
            let needs = if refs.is_empty() {
                "-".to_string()
            } else {
                gq(&refs
                    .iter()
                    .map(|r| format!("r{r}"))
                    .collect::<Vec<_>>()
                    .join(" "))
            };
            let _ = write!(s, "  op {t} {i} {res} {needs} ");
            match form {
                Form::Guest { deadline_s, cmd } => {
                    let _ = writeln!(s, "guest {deadline_s} {}", sq(cmd));
                }
                Form::Host { func, args } => {
                    let _ = writeln!(s, "host {func} {}", host_args_words(args, false));
                }
                Form::Sleep { ms, deadline_ms } => {
                    let _ = writeln!(s, "sleep {ms} {deadline_ms}");
                }
                Form::Nop => s.push_str("nop\n"),
            }
        }
        s.push_str("}\n\n");
    }
    s.push_str(
        "# Runs the program once; returns 0 (2 only for set-up failures).\nrun_program() {\n",
    );
    let vars: Vec<String> = prod.keys().map(|r| format!(" r{r}=''")).collect();
    if !vars.is_empty() {
        s.push_str(
            "  # shellcheck disable=SC2034 # rN are set by printf -v and read by ${!name}\n",
        );
    }
    let _ = writeln!(s, "  local ABANDONED=''{}", vars.concat());
    if threads.len() == 1 {
        let _ = writeln!(s, "  thread_{}", threads[0]);
    } else {
        s.push_str("  local pids=()\n");
        for t in &threads {
            let _ = writeln!(s, "  thread_{t} &\n  pids+=($!)");
        }
        s.push_str("  BG_PIDS=(\"${pids[@]}\")\n  wait \"${pids[@]}\"\n  BG_PIDS=()\n");
    }
    s.push_str("  return 0\n}\n");
}

fn executor_program(s: &mut String, inp: &ScriptInput, facts: &MachineFacts) -> anyhow::Result<()> {
    let prog = inp.prog;
    let d = inp.d;
    let exec = prog.to_exec(d, budget_ms(inp), false);
    let json = serde_json::to_string(&exec).context("encoding the program for the executor")?;
    s.push_str("\n# ---- the program, as hotfuzz-executor runs it (one JSON line on its stdin)\n");
    let _ = writeln!(s, "PROGRAM_JSON={}", sq(&json));
    let prod = producers(prog);
    s.push_str("# rN each operation produces (or -), and the rN:INDEX values it uses.\nPROG_RES=(");
    for op in &prog.ops {
        let _ = write!(
            s,
            " {}",
            op.ret
                .map(|r| format!("r{r}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    s.push_str(" )\nPROG_REFS=(");
    for op in &prog.ops {
        let refs: Vec<String> = refs_of(op)
            .iter()
            .filter_map(|r| prod.get(r).map(|p| format!("r{r}:{p}")))
            .collect();
        let _ = write!(s, " {}", sq(&refs.join(" ")));
    }
    s.push_str(" )\n\n");
    s.push_str(
        "# host_request INDEX EVENT: runs host operation INDEX the executor asked for (a `host` event;\n\
         # values of references come from the event's arguments).\n\
         host_request() {\n  case $1 in\n",
    );
    for (i, op) in prog.ops.iter().enumerate() {
        let Some(desc) = d.op(&op.name) else { continue };
        if !desc.host {
            continue;
        }
        match host_form(&Args { op, desc }, facts) {
            Ok(Form::Host { func, args }) => {
                let _ = writeln!(
                    s,
                    "    {i}) {func} {} ;; # {}",
                    host_args_words(&args, true),
                    comment_safe(&op.print(d))
                );
            }
            Ok(_) => {}
            Err(why) => {
                let _ = writeln!(s, "    {i}) host_unsupported {} ;;", sq(&why));
            }
        }
    }
    s.push_str("    *) host_unsupported \"operation $1 is not a host operation\" ;;\n  esac\n}\n");
    s.push_str(EXECUTOR_RUNNER);
    Ok(())
}

/// Guest-side helpers (busybox sh functions in a bash variable), shell mode only.
const GUEST_HELPERS: &str = r#"
# ---- guest-side helpers (busybox sh functions), sent along with every guest command
# find_block WHICH NTH: hotfuzz-executor's memblock_find. Memory blocks by ascending number
# (descending for "last"), filtered by WHICH: online, offline, movable (online in
# ZONE_MOVABLE), normal (online elsewhere); anything else matches every block. Prints the
# (NTH modulo matches)th; ENOENT when none matches.
# page_size: the page size. block_size: the memory block size (block_size_bytes is hex).
# need PATH: exits with status 97 ("unsupported", as the executor says) unless the kernel
# has PATH.
G_HELPERS='find_block() {
  m=/sys/devices/system/memory
  ids=$(ls "$m" | sed -n "s/^memory\([0-9][0-9]*\)\$/\1/p" | sort -n)
  [ "$1" = last ] && ids=$(echo "$ids" | sort -rn)
  n=0
  list=
  for id in $ids; do
    st=
    read -r st 2>/dev/null < "$m/memory$id/state"
    case $1 in
    online | offline) [ "$st" = "$1" ] || continue ;;
    movable | normal)
      [ "$st" = online ] || continue
      z=
      read -r z 2>/dev/null < "$m/memory$id/valid_zones"
      if [ "$1" = movable ]; then [ "$z" = Movable ] || continue; else [ "$z" != Movable ] || continue; fi ;;
    esac
    list="$list $id"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || { echo "no memory block is $1 (ENOENT)" >&2; return 1; }
  k=$(($2 % n))
  set -- $list
  shift $k
  echo "$1"
}
page_size() {
  p=$(awk "/^KernelPageSize:/ { print \$2 * 1024; exit }" /proc/self/smaps 2>/dev/null)
  echo "${p:-4096}"
}
block_size() {
  read -r b < /sys/devices/system/memory/block_size_bytes || return 1
  b=$((0x$b))
  [ "$b" -gt 0 ] || b=1
  echo "$b"
}
unsupported() { echo "$1" >&2; exit 97; }
need() { [ -e "$1" ] || unsupported "kernel has no $1"; }
'
"#;

/// Everything that does not depend on the program: helpers, boot, ssh, QMP, host operations,
/// steps, the check.
const RUNTIME: &str = r#"
# ---- everything below up to the program is the same in every repro.sh
DIR='' RUN='' LOGS='' LOG_ROOT='' LOG_OUT='' PORT='' MARK=0 QEMU_PID='' SSH_MASTER_PID='' PDEATHSIG=
BG_PIDS=()
ARGV=() SSH_BASE=() SSH=()

say() {
  printf '%s\n' "$*"
  if [[ -n $LOG_OUT ]]; then printf '%s\n' "$*" >>"$LOG_OUT"; fi
}

die() {
  say "repro.sh: $*" >&2
  exit 2
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found; install $2"
}

# sq WORD: WORD single-quoted for sh.
sq() {
  local s=${1//\'/\'\\\'\'}
  printf "'%s'" "$s"
}

# shell_words WORD...: the words as one shell command line (quoted where needed).
shell_words() {
  local w sep=
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then printf '%s%s' "$sep" "$w"; else printf '%s' "$sep"; sq "$w"; fi
    sep=' '
  done
  printf '\n'
}

# json_str TEXT: TEXT as a JSON string.
json_str() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  s=${s//[$'\x01'-$'\x1f']/ }
  printf '"%s"' "$s"
}

now_ms() {
  local t
  t=$(date +%s%N)
  printf '%s' "$((t / 1000000))"
}

fmt_ms() {
  printf '%d.%03d s' "$(($1 / 1000))" "$(($1 % 1000))"
}

errno_name() {
  local n=errno
  case $1 in
  1) n=EPERM ;; 2) n=ENOENT ;; 4) n=EINTR ;; 5) n=EIO ;; 7) n=E2BIG ;; 11) n=EAGAIN ;;
  12) n=ENOMEM ;; 13) n=EACCES ;; 14) n=EFAULT ;; 16) n=EBUSY ;; 17) n=EEXIST ;;
  19) n=ENODEV ;; 22) n=EINVAL ;; 28) n=ENOSPC ;; 38) n=ENOSYS ;; 61) n=ENODATA ;;
  95) n=EOPNOTSUPP ;; 110) n=ETIMEDOUT ;; 133) n=EHWPOISON ;;
  esac
  printf '%s (errno %s)' "$n" "$1"
}

# ---- cleanup: no QEMU outlives the script
stop_guest() {
  local k
  if [[ -n $SSH_MASTER_PID ]]; then
    kill "$SSH_MASTER_PID" 2>/dev/null
    wait "$SSH_MASTER_PID" 2>/dev/null
    SSH_MASTER_PID=
  fi
  if [[ -n $QEMU_PID ]]; then
    kill -TERM "$QEMU_PID" 2>/dev/null
    for ((k = 0; k < 50; k++)); do
      kill -0 "$QEMU_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$QEMU_PID" 2>/dev/null
    wait "$QEMU_PID" 2>/dev/null
    QEMU_PID=
  fi
}

cleanup() {
  local p
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  stop_guest
  if [[ -n $DIR && -d $DIR ]]; then rm -rf -- "$DIR"; fi
}

# ---- the initramfs: the base image plus a newc cpio overlay with the ssh key
# cpio_pad LEN: NUL bytes up to the next multiple of 4.
cpio_pad() {
  local n=$(((4 - $1 % 4) % 4))
  while ((n-- > 0)); do printf '\0'; done
}

# cpio_entry NAME MODE(octal) NLINK INO DATA: one newc entry (header, name, data, padding).
cpio_entry() {
  local name=$1 mode=$2 nlink=$3 ino=$4 data=$5
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
    "$ino" "$((8#$mode))" 0 0 "$nlink" 0 "${#data}" 0 0 0 0 "$((${#name} + 1))" 0
  printf '%s\0' "$name"
  cpio_pad "$((110 + ${#name} + 1))"
  printf '%s' "$data"
  cpio_pad "${#data}"
}

# make_overlay PUBKEY_FILE: the overlay archive on stdout: /root and /root/.ssh (0700) and
# /root/.ssh/authorized_keys (0600). The guest's dropbear (-R) makes its own host key.
make_overlay() {
  local key
  key=$(<"$1") || return 1
  cpio_entry root 40700 2 1 ''
  cpio_entry root/.ssh 40700 2 2 ''
  cpio_entry root/.ssh/authorized_keys 100600 1 3 "$key"$'\n'
  cpio_entry 'TRAILER!!!' 0 1 0 ''
}

# The kernel unpacks concatenated archives in order; each must start 4-byte aligned.
make_initrd() {
  local size
  cp -- "$BASE_INITRD" "$DIR/initrd.cpio" || die "cannot copy $BASE_INITRD"
  size=$(wc -c <"$DIR/initrd.cpio")
  cpio_pad "$size" >>"$DIR/initrd.cpio"
  make_overlay "$DIR/key.pub" >>"$DIR/initrd.cpio" || die "cannot write the initramfs overlay"
}

# ---- boot
# free_port: a TCP port on 127.0.0.1 nothing listens on.
free_port() {
  local k p
  for ((k = 0; k < 200; k++)); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      printf '%s' "$p"
      return 0
    fi
  done
  return 1
}

show_console_tail() {
  say "last console lines ($LOGS/console.log):"
  tail -n 25 "$LOGS/console.log" 2>/dev/null | tr -d '\r' | while IFS= read -r l; do say "  | $l"; done
  if [[ -s $LOGS/qemu.log ]]; then
    say "QEMU said ($LOGS/qemu.log):"
    tail -n 10 "$LOGS/qemu.log" | while IFS= read -r l; do say "  | $l"; done
  fi
}

# wait_ssh: 0 when ssh works and the guest said it is ready, 3 when QEMU could not bind the
# port, 1 otherwise.
wait_ssh() {
  local deadline=$((SECONDS + TIMEOUT)) up='' st
  while :; do
    if ! kill -0 "$QEMU_PID" 2>/dev/null; then
      wait "$QEMU_PID" 2>/dev/null
      st=$?
      QEMU_PID=
      if grep -q 'host forwarding' "$LOGS/qemu.log" 2>/dev/null; then
        say "port $PORT was taken (attempt $attempt); trying another one"
        return 3
      fi
      say "QEMU exited during boot (status $st)."
      show_console_tail
      return 1
    fi
    if timeout --foreground -k 2 30 ssh "${SSH_BASE[@]}" root@127.0.0.1 true </dev/null >/dev/null 2>"$RUN/ssh-boot.err"; then
      [[ -n $up ]] || up=$SECONDS
      grep -qF -- "$READY_MARKER" "$LOGS/console.log" && return 0
      if ((SECONDS - up >= 60)); then
        say "warning: ssh works but the console never said \"$READY_MARKER\"; going on"
        return 0
      fi
    fi
    if ((SECONDS >= deadline)); then
      say "the guest did not answer ssh within TIMEOUT=$TIMEOUT s (ssh: $(tail -n 1 "$RUN/ssh-boot.err"))"
      show_console_tail
      return 1
    fi
    sleep 1
  done
}

boot() {
  local attempt st t0
  for ((attempt = 1; attempt <= 5; attempt++)); do
    PORT=$(free_port) || { say "found no free TCP port on 127.0.0.1"; return 1; }
    SSH_BASE=(-F /dev/null -i "$DIR/key" -p "$PORT" -o IdentitiesOnly=yes -o BatchMode=yes
      -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null
      -o ConnectTimeout=5 -o LogLevel=ERROR)
    SSH=("${SSH_BASE[@]}" -o ControlMaster=no -o "ControlPath=$RUN/ssh.ctl")
    qemu_argv
    shell_words "$QEMU" "${ARGV[@]}" >"$LOGS/qemu.cmdline"
    say "starting QEMU (ssh port $PORT):"
    say "$(<"$LOGS/qemu.cmdline")"
    : >"$LOGS/console.log"
    t0=$SECONDS
    if [[ -n $PDEATHSIG ]]; then
      setpriv --pdeathsig KILL -- "$QEMU" "${ARGV[@]}" </dev/null >"$LOGS/console.log" 2>"$LOGS/qemu.log" &
    else
      "$QEMU" "${ARGV[@]}" </dev/null >"$LOGS/console.log" 2>"$LOGS/qemu.log" &
    fi
    QEMU_PID=$!
    wait_ssh
    st=$?
    case $st in
    0)
      say "guest is up after $((SECONDS - t0)) s"
      return 0
      ;;
    3) continue ;;
    *) return 1 ;;
    esac
  done
  return 1
}

# One ssh connection the steps share (much faster than one connection per step). Without it
# every step connects on its own.
start_ssh_master() {
  local k
  ssh "${SSH_BASE[@]}" -M -N -o "ControlPath=$RUN/ssh.ctl" -o ControlPersist=no root@127.0.0.1 </dev/null >/dev/null 2>&1 &
  SSH_MASTER_PID=$!
  for ((k = 0; k < 100; k++)); do
    ssh "${SSH_BASE[@]}" -o "ControlPath=$RUN/ssh.ctl" -O check root@127.0.0.1 >/dev/null 2>&1 && return 0
    kill -0 "$SSH_MASTER_PID" 2>/dev/null || break
    sleep 0.1
  done
  say "note: no shared ssh connection; every step connects on its own"
}

# ---- QMP (socat to QEMU's unix socket; one connection per command, like a QMP client)
# qmp_raw REQUEST [EVENT_REGEX SECONDS]: sends REQUEST (which carries "id":"repro") after the
# capabilities negotiation, sets QMP_REPLY to QEMU's answer and, given EVENT_REGEX, QMP_EVENT
# to the first event matching it within SECONDS of the answer.
qmp_raw() {
  local req=$1 evre=${2:-} evsecs=${3:-0} f=$RUN/qmp.$BASHPID
  : >"$f.reply"
  : >"$f.event"
  rm -f "$f.done"
  {
    printf '%s\n' '{"execute":"qmp_capabilities"}' "$req"
    local k
    for ((k = 0; k < 3000; k++)); do
      [[ -s $f.reply || -e $f.done ]] && break
      kill -0 "$QEMU_PID" 2>/dev/null || break
      sleep 0.02
    done
    if [[ -n $evre && -s $f.reply ]]; then
      for ((k = 0; k < evsecs * 50; k++)); do
        [[ -e $f.done ]] && break
        kill -0 "$QEMU_PID" 2>/dev/null || break
        sleep 0.02
      done
    fi
  } | timeout 120 socat - "UNIX-CONNECT:$RUN/qmp.sock" 2>"$f.err" | {
    local line
    while IFS= read -r line; do
      case $line in
      '{"timestamp"'*)
        if [[ -n $evre && -s $f.reply && $line =~ $evre ]]; then
          printf '%s\n' "$line" >"$f.event"
          break
        fi
        ;;
      *'"id": "repro"'*)
        printf '%s\n' "$line" >"$f.reply"
        [[ -n $evre ]] || break
        ;;
      esac
    done
    : >"$f.done"
  }
  QMP_REPLY=$(<"$f.reply")
  QMP_EVENT=$(<"$f.event")
  [[ -n $QMP_REPLY ]]
}

RE_DESC='"desc": "(([^"\\]|\\.)*)"'
RE_CLASS='"class": "([^"]*)"'
RE_RET_NUM='"return": ([0-9]+)'

# qmp_exec COMMAND ARGUMENTS_JSON [EVENT_REGEX SECONDS]: runs a QMP command; on failure sets
# the host result to an error the way hotfuzz does (EINVAL for QEMU's refusal, EIO when QEMU
# is gone, ETIMEDOUT when it does not answer) and fails.
qmp_exec() {
  local req="{\"execute\":\"$1\""
  [[ -n $2 ]] && req+=",\"arguments\":$2"
  req+=',"id":"repro"}'
  if ! qmp_raw "$req" "${3:-}" "${4:-0}"; then
    if kill -0 "$QEMU_PID" 2>/dev/null; then
      host_err 110 "QMP $1 did not answer ($(tr '\n' ' ' <"$RUN/qmp.$BASHPID.err"))"
    else
      host_err 5 "QMP connection closed during $1"
    fi
    return 1
  fi
  if [[ $QMP_REPLY == *'"error"'* ]]; then
    local desc='?' class='?'
    [[ $QMP_REPLY =~ $RE_DESC ]] && desc=${BASH_REMATCH[1]}
    [[ $QMP_REPLY =~ $RE_CLASS ]] && class=${BASH_REMATCH[1]}
    host_err 22 "$1: $desc ($class)"
    return 1
  fi
  return 0
}

# ---- host operations (hotfuzz's harness/src/hostops.rs). Each sets the host result
# HS (ok | errno | unsupported), HV (value), HE (errno), HM (message). Their state (devices,
# DIMMs, ports) lives in files so that concurrent threads share it; host_lock serializes them.
host_ok() { HS=ok HV=${1:-} HE='' HM=''; }
host_err() { HS=errno HV='' HE=$1 HM=$2; }
host_unsupported() { HS=unsupported HV='' HE='' HM=$1; }

host_state_init() {
  local id
  : >"$RUN/host/vmem"
  for id in "${VMEM_IDS[@]}"; do printf '%s\n' "$id" >>"$RUN/host/vmem"; done
  : >"$RUN/host/dimms"
  echo 0 >"$RUN/host/ports_used"
}

host_lock() {
  exec {HOST_FD}>>"$RUN/host/lock"
  flock "$HOST_FD"
}

host_unlock() {
  exec {HOST_FD}>&-
}

# nth_line FILE N: line N (from 0) of FILE, failing when there is none.
nth_line() {
  local line
  [[ $2 =~ ^[0-9]{1,9}$ ]] || return 1
  line=$(sed -n "$(($2 + 1))p" "$1")
  [[ -n $line ]] || return 1
  printf '%s' "$line"
}

is_int() {
  [[ $1 =~ ^[0-9]+$ ]] && return 0
  host_err 22 "argument $2: expected an integer"
  return 1
}

vmem_id() {
  is_int "$1" dev || return 1
  VMEM_ID=$(nth_line "$RUN/host/vmem" "$1") && return 0
  host_err 19 "no virtio-mem device $1"
  return 1
}

# qom_u64 DEVICE PROPERTY: sets QOM_VAL to the property of /machine/peripheral/DEVICE.
qom_u64() {
  qmp_exec qom-get "{\"path\":$(json_str "/machine/peripheral/$1"),\"property\":\"$2\"}" || return 1
  if [[ $QMP_REPLY =~ $RE_RET_NUM ]]; then
    QOM_VAL=${BASH_REMATCH[1]}
    return 0
  fi
  host_err 22 "$1.$2 is not a number: $QMP_REPLY"
  return 1
}

# virtio_mem_resize DEV SIZE: sets the device's requested-size.
h_virtio_mem_resize() {
  vmem_id "$1" || return
  qmp_exec qom-set "{\"path\":$(json_str "/machine/peripheral/$VMEM_ID"),\"property\":\"requested-size\",\"value\":$2}" || return
  host_ok
}

# virtio_mem_wait DEV MS: polls size against requested-size for up to MS ms.
h_virtio_mem_wait() {
  local end want size
  vmem_id "$1" || return
  end=$(($(now_ms) + $2))
  while :; do
    qom_u64 "$VMEM_ID" requested-size || return
    want=$QOM_VAL
    qom_u64 "$VMEM_ID" size || return
    size=$QOM_VAL
    if [[ $size == "$want" ]]; then
      host_ok "$size"
      return
    fi
    if (($(now_ms) >= end)); then
      host_err 110 "$VMEM_ID: size $(printf '0x%x' "$size") != requested $(printf '0x%x' "$want")"
      return
    fi
    sleep 0.02
  done
}

# virtio_mem_hot_add MAX REQUESTED NODE BLOCK_SIZE: a new device hotN on the next spare port.
h_virtio_mem_hot_add() {
  local used n id he hm
  used=$(<"$RUN/host/ports_used")
  if ((used >= HOTPLUG_PORTS)); then
    host_err 28 "all $HOTPLUG_PORTS spare PCIe ports are used"
    return
  fi
  n=$(($(wc -l <"$RUN/host/vmem")))
  id=hot$n
  qmp_exec object-add "{\"qom-type\":\"memory-backend-ram\",\"id\":\"$id-mem\",\"size\":$1,\"reserve\":false}" || return
  if ! qmp_exec device_add "{\"driver\":\"virtio-mem-pci\",\"id\":\"$id\",\"memdev\":\"$id-mem\",\"node\":$3,\"requested-size\":$2,\"bus\":\"hp$used\",\"block-size\":$4}"; then
    he=$HE hm=$HM
    qmp_exec object-del "{\"id\":\"$id-mem\"}"
    host_err "$he" "$hm"
    return
  fi
  echo $((used + 1)) >"$RUN/host/ports_used"
  printf '%s\n' "$id" >>"$RUN/host/vmem"
  host_ok "$n"
}

# dimm_add SIZE NODE: a pc-dimm dimmN (NODE is - on single-node machines).
h_dimm_add() {
  local k id dev he hm
  k=$(($(wc -l <"$RUN/host/dimms")))
  id=dimm$k
  qmp_exec object-add "{\"qom-type\":\"memory-backend-ram\",\"id\":\"$id-mem\",\"size\":$1}" || return
  dev="{\"driver\":\"pc-dimm\",\"id\":\"$id\",\"memdev\":\"$id-mem\""
  [[ $2 != - ]] && dev+=",\"node\":$2"
  dev+="}"
  if ! qmp_exec device_add "$dev"; then
    he=$HE hm=$HM
    qmp_exec object-del "{\"id\":\"$id-mem\"}"
    host_err "$he" "$hm"
    return
  fi
  printf '%s\n' "$id" >>"$RUN/host/dimms"
  host_ok "$k"
}

# dimm_remove D: device_del, then up to 10 s for the guest to release it (DEVICE_DELETED).
h_dimm_remove() {
  local id re
  is_int "$1" d || return
  id=$(nth_line "$RUN/host/dimms" "$1")
  if [[ -z $id || $id == - ]]; then
    host_err 19 "no dimm $1"
    return
  fi
  re="\"event\": \"DEVICE_DELETED\".*\"device\": \"$id\"|\"event\": \"(DEVICE_UNPLUG_GUEST_ERROR|MEM_UNPLUG_ERROR)\""
  qmp_exec device_del "{\"id\":\"$id\"}" "$re" 10 || return
  if [[ $QMP_EVENT == *'"DEVICE_DELETED"'* ]]; then
    qmp_exec object-del "{\"id\":\"$id-mem\"}"
    sed -i "$(($1 + 1))s/.*/-/" "$RUN/host/dimms"
    host_ok
  else
    host_err 16 "the guest did not release $id"
  fi
}

# balloon TARGET: the balloon's target size in bytes.
h_balloon() {
  if ! qmp_exec balloon "{\"value\":$1}"; then
    [[ $HM == *"No balloon device"* ]] && host_unsupported "the VM has no balloon device"
    return
  fi
  host_ok
}

# ---- steps (shell mode)
OP_LINE='' OP_RES='' OP_VAL='' OP_STATUS='' OP_DETAIL='' OP_T0=

# publish rN VALUE / await_ref rN: results other threads use (empty: no value).
publish() {
  printf '%s' "$2" >"$RUN/refs/$1.tmp" && mv -f "$RUN/refs/$1.tmp" "$RUN/refs/$1"
}

await_ref() {
  local f=$RUN/refs/$1 end=$((SECONDS + BUDGET_S))
  while [[ ! -e $f ]]; do
    if ((SECONDS >= end)) || ! kill -0 "$QEMU_PID" 2>/dev/null; then
      printf -v "$1" '%s' ''
      return
    fi
    sleep 0.05
  done
  printf -v "$1" '%s' "$(<"$f")"
}

op() {
  local t=$1 i=$2 res=$3 needs=$4 kind=$5 ref
  shift 5
  OP_LINE="[t$t] #$i ${PROG_TEXT[$i]}"
  OP_RES=$res OP_VAL='' OP_STATUS='' OP_DETAIL='' OP_T0=
  if [[ -n $ABANDONED ]]; then
    op_done skipped "thread $t was abandoned (stuck in an earlier operation)"
    return
  fi
  if [[ $needs != - ]]; then
    for ref in $needs; do
      if [[ -z ${!ref} ]]; then
        op_done skipped "$ref has no value"
        return
      fi
      OP_LINE+=" [$ref=${!ref}]"
    done
  fi
  if ! kill -0 "$QEMU_PID" 2>/dev/null; then
    op_done lost "QEMU is not running"
    return
  fi
  OP_T0=$(now_ms)
  case $kind in
  guest) guest_op "$t" "$i" "$needs" "$@" ;;
  host) host_op "$@" ;;
  sleep) sleep_op "$@" ;;
  *) OP_STATUS=ok ;;
  esac
  op_done "$OP_STATUS" "$OP_DETAIL"
}

op_done() {
  local st=$1 detail=$2 val='' dur='' hex=
  [[ -n $OP_T0 ]] && dur=" ($(fmt_ms $(($(now_ms) - OP_T0))))"
  if [[ $st == ok && -n $OP_VAL ]]; then
    if [[ $OP_VAL =~ ^[0-9]+$ ]]; then
      val=$OP_VAL
      ((${#val} < 19)) && hex=$(printf ' (0x%x)' "$val")
    else
      st=failed detail="printed no number: $OP_VAL"
    fi
  fi
  if [[ $st == ok && $OP_RES != - && -z $val ]]; then
    st=failed detail="produced no value"
  fi
  if [[ $st != ok ]]; then
    say "$OP_LINE -> $st: $detail$dur"
  elif [[ $OP_RES != - ]]; then
    say "$OP_LINE -> $OP_RES = $val$hex$dur"
  elif [[ -n $val ]]; then
    say "$OP_LINE -> ok: $val$hex$dur"
  else
    say "$OP_LINE -> ok$dur"
  fi
  if [[ $OP_RES != - ]]; then
    printf -v "$OP_RES" '%s' "$val"
    publish "$OP_RES" "$val"
  fi
  if [[ $st == stuck || $st == lost ]]; then
    ABANDONED=1
    : >"$RUN/stuck"
  fi
  return 0
}

# guest_op THREAD INDEX NEEDS DEADLINE_S COMMAND: COMMAND in the guest's busybox sh (after
# G_HELPERS and the values of NEEDS as shell variables), interrupted (SIGTERM) at its deadline
# like the executor interrupts an operation; abandoned when it does not even return SSH_GRACE s
# later. The kernel log gets the executor's marker first.
guest_op() {
  local t=$1 i=$2 needs=$3 d=$4 cmd=$5 st err errf=$RUN/stderr.$BASHPID remote vars='' ref
  if [[ $needs != - ]]; then
    for ref in $needs; do vars+="$ref=${!ref}"$'\n'; done
  fi
  remote="echo '<6>hotfuzz: executing program $PROG_ID op $i (thread $t): ${PROG_NAME[$i]}' >/dev/kmsg 2>/dev/null
timeout $d sh -c $(sq "$vars$G_HELPERS$cmd")
exit \$?"
  OP_VAL=$(timeout --foreground -k 2 $((d + SSH_GRACE)) ssh "${SSH[@]}" root@127.0.0.1 "$remote" </dev/null 2>"$errf")
  st=$?
  err=$(sed -e 's/^sh: //' -e '/^Terminated$/d' "$errf" | tr '\n' '\t')
  err=${err%$'\t'}
  err=${err//$'\t'/; }
  case $st in
  0) OP_STATUS=ok ;;
  97) OP_STATUS=unsupported OP_DETAIL=$err ;;
  143) OP_STATUS=timeout OP_DETAIL="interrupted at its $d s deadline" ;;
  124 | 137) OP_STATUS=stuck OP_DETAIL="did not return $SSH_GRACE s after its $d s deadline; abandoning thread $t" ;;
  255)
    OP_STATUS=lost
    if kill -0 "$QEMU_PID" 2>/dev/null; then OP_DETAIL="ssh failed: $err"; else OP_DETAIL="QEMU exited"; fi
    ;;
  *) OP_STATUS=failed OP_DETAIL=${err:-exit status $st} ;;
  esac
}

# host_op FUNCTION ARGS...: a host operation, serialized with the other threads' ones.
host_op() {
  HS='' HV='' HE='' HM=
  host_lock
  "$@"
  host_unlock
  OP_VAL=$HV
  case $HS in
  ok) OP_STATUS=ok ;;
  unsupported) OP_STATUS=unsupported OP_DETAIL=$HM ;;
  *) OP_STATUS=failed OP_DETAIL="$(errno_name "${HE:-5}"): $HM" ;;
  esac
}

# sleep_op MS DEADLINE_MS: sleep_ms, cut short at its deadline like in the executor.
sleep_op() {
  if (($1 > $2)); then
    sleep "$(($2 / 1000)).$(printf '%03d' $(($2 % 1000)))"
    OP_STATUS=timeout OP_DETAIL="interrupted at its $(fmt_ms "$2") deadline"
  else
    sleep "$(($1 / 1000)).$(printf '%03d' $(($1 % 1000)))"
    OP_STATUS=ok
  fi
}

# ---- the check
# detected: 0 when every DETECT pattern matches a console line printed after the program
# started; sets MISSING to the first pattern that does not.
detected() {
  local after=$RUN/console-after-program.log re
  tail -n "+$((MARK + 1))" "$LOGS/console.log" | tr -d '\r' >"$after"
  for re in "${DETECT[@]}"; do
    if ! grep -qE -e "$re" "$after"; then
      MISSING=$re
      return 1
    fi
  done
  return 0
}

# settle: waits for console output after the program: SETTLE s, or up to STUCK_SETTLE s for
# the hung task detector when an operation was stuck (stopping early once detected).
settle() {
  local end
  if ! kill -0 "$QEMU_PID" 2>/dev/null; then
    say "QEMU exited (a panic ends QEMU: -no-reboot)"
    return
  fi
  if [[ -e $RUN/stuck ]] && ((SETTLE < STUCK_SETTLE)); then
    say "an operation was stuck: waiting up to $STUCK_SETTLE s for the hung task detector"
    end=$((SECONDS + STUCK_SETTLE))
    while ((SECONDS < end)) && kill -0 "$QEMU_PID" 2>/dev/null; do
      if detected; then
        sleep 2
        return
      fi
      sleep 1
    done
    return
  fi
  say "waiting $SETTLE s for console output"
  sleep "$SETTLE"
}

# guest_setup: what hotfuzz does to a guest before running programs.
guest_setup() {
  timeout --foreground -k 2 30 ssh "${SSH[@]}" root@127.0.0.1 \
    "echo $HUNG_TASK_TIMEOUT > /proc/sys/kernel/hung_task_timeout_secs" </dev/null >/dev/null 2>&1 ||
    say "note: could not set /proc/sys/kernel/hung_task_timeout_secs"
}

check() {
  local after=$RUN/console-after-program.log re args=()
  if ! detected; then
    say "not reproduced (no console line after the program started matches: $MISSING)"
    return 1
  fi
  for re in "${DETECT[@]}"; do args+=(-e "$re"); done
  say "REPRODUCED: $TITLE"
  grep -E "${args[@]}" "$after" | head -n 20 | while IFS= read -r l; do say "  | $l"; done
  return 0
}
"#;

/// Executor mode: runs `hotfuzz-executor` as a coprocess and answers its host requests.
const EXECUTOR_RUNNER: &str = r#"
RE_EV='^\{"ev":"([a-z]+)"'
RE_I='"i":([0-9]+)'
RE_T='"t":([0-9]+)'
RE_STATUS='"status":"([a-z]+)"'
RE_VAL='"val":([0-9]+)'
RE_ERRNO='"errno":([0-9]+)'
RE_MSG='"(msg|why)":"(([^"\\]|\\.)*)"'
RE_DUR='"dur_us":([0-9]+)'
RE_ABANDONED='"abandoned":\[([0-9,]*)\]'
EXE_IN='' EXE_OUT='' EXE_ENDED='' EXE_HELLO=
VALS=()

# ev_int EVENT NAME: integer argument NAME of a host request.
ev_int() {
  local re="\"$2\":\\{\"int\":([0-9]+)\\}"
  [[ $1 =~ $re ]] && printf '%s' "${BASH_REMATCH[1]}"
}

exe_done() {
  local l=$1 i t st val='' errno='' msg='' dur=0 line ref r p hex=
  [[ $l =~ $RE_I ]] && i=${BASH_REMATCH[1]}
  [[ $l =~ $RE_T ]] && t=${BASH_REMATCH[1]}
  [[ $l =~ $RE_STATUS ]] && st=${BASH_REMATCH[1]}
  [[ $l =~ $RE_VAL ]] && val=${BASH_REMATCH[1]}
  [[ $l =~ $RE_ERRNO ]] && errno=${BASH_REMATCH[1]}
  [[ $l =~ $RE_MSG ]] && msg=${BASH_REMATCH[2]}
  [[ $l =~ $RE_DUR ]] && dur=${BASH_REMATCH[1]}
  [[ -n $i ]] || return
  VALS[i]=$val
  line="[t$t] #$i ${PROG_TEXT[$i]}"
  for ref in ${PROG_REFS[$i]}; do
    r=${ref%%:*} p=${ref#*:}
    line+=" [$r=${VALS[p]}]"
  done
  dur=" ($(fmt_ms $((dur / 1000))))"
  [[ -n $val && ${#val} -lt 19 ]] && hex=$(printf ' (0x%x)' "$val")
  case $st in
  ok)
    if [[ ${PROG_RES[$i]} != - ]]; then
      say "$line -> ${PROG_RES[$i]} = $val$hex$dur"
    elif [[ -n $val ]]; then
      say "$line -> ok: $val$hex$dur"
    else
      say "$line -> ok$dur"
    fi
    ;;
  errno) say "$line -> failed: $(errno_name "$errno")${msg:+: $msg}$dur" ;;
  timeout) say "$line -> timeout: interrupted at its deadline ($(errno_name "$errno"))$dur" ;;
  stuck)
    say "$line -> stuck: did not return after its deadline; thread $t abandoned"
    : >"$RUN/stuck"
    ;;
  *) say "$line -> $st${msg:+: $msg}$dur" ;;
  esac
}

exe_host() {
  local l=$1 i o
  [[ $l =~ $RE_I ]] || return
  i=${BASH_REMATCH[1]}
  HS='' HV='' HE='' HM=
  host_lock
  host_request "$i" "$l"
  host_unlock
  case $HS in
  ok) if [[ -n $HV ]]; then o="{\"status\":\"ok\",\"val\":$HV}"; else o='{"status":"ok"}'; fi ;;
  unsupported) o="{\"status\":\"unsupported\",\"why\":$(json_str "$HM")}" ;;
  *) o="{\"status\":\"errno\",\"errno\":${HE:-5},\"msg\":$(json_str "$HM")}" ;;
  esac
  printf '{"i":%s,"outcome":%s}\n' "$i" "$o" >&"$EXE_IN"
}

exe_event() {
  local l=$1
  if ! [[ $l =~ $RE_EV ]]; then
    say "executor said: $l"
    return
  fi
  case ${BASH_REMATCH[1]} in
  hello) EXE_HELLO=1 ;;
  done) exe_done "$l" ;;
  host) exe_host "$l" ;;
  log) [[ $l =~ $RE_MSG ]] && say "executor: ${BASH_REMATCH[2]}" ;;
  end)
    EXE_ENDED=1
    if [[ $l =~ $RE_ABANDONED && -n ${BASH_REMATCH[1]} ]]; then
      say "threads left stuck in the kernel: ${BASH_REMATCH[1]}"
      : >"$RUN/stuck"
    fi
    ;;
  esac
}

# Runs the program under the guest's executor; 2 when the executor cannot even start.
run_program() {
  local line partial='' st hard=$((SECONDS + BUDGET_S + 30))
  EXE_ENDED='' EXE_HELLO='' VALS=()
  if ! timeout --foreground -k 2 30 ssh "${SSH[@]}" root@127.0.0.1 "test -x $EXECUTOR" </dev/null; then
    say "the guest has no $EXECUTOR (is BASE_INITRD hotfuzz's guest image?)"
    return 2
  fi
  coproc EXE { exec timeout --foreground -k 2 $((BUDGET_S + 40)) ssh "${SSH[@]}" root@127.0.0.1 "$EXECUTOR" 2>"$RUN/executor.stderr"; }
  BG_PIDS=("$EXE_PID")
  EXE_IN=${EXE[1]} EXE_OUT=${EXE[0]}
  printf '%s\n' "$PROGRAM_JSON" >&"$EXE_IN"
  while [[ -z $EXE_ENDED ]]; do
    if IFS= read -r -t 1 line <&"$EXE_OUT"; then
      exe_event "$partial$line"
      partial=
      continue
    else
      st=$?
    fi
    if ((st > 128)); then
      partial+=$line
      if ! kill -0 "$QEMU_PID" 2>/dev/null; then
        say "QEMU exited during the program"
        break
      fi
      if ((SECONDS >= hard)); then
        say "the program did not finish within $BUDGET_S s"
        : >"$RUN/stuck"
        break
      fi
      continue
    fi
    [[ -n $partial$line ]] && exe_event "$partial$line"
    say "the executor exited before the end of the program: $(tr '\n' ' ' <"$RUN/executor.stderr")"
    break
  done
  exec {EXE_IN}>&-
  kill "$EXE_PID" 2>/dev/null
  wait "$EXE_PID" 2>/dev/null
  BG_PIDS=()
  cp -f -- "$RUN/executor.stderr" "$LOGS/executor.stderr" 2>/dev/null
  if [[ -z $EXE_HELLO ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
    say "the executor did not start"
    return 2
  fi
  return 0
}
"#;

/// Argument checks, the temp dir, the runs.
const MAIN: &str = r#"
# ---- the runs
# one_run N: boots, runs the program, checks. 0 reproduced, 1 not, 2 set-up failure.
one_run() {
  local n=$1 st r t0
  RUN=$DIR/run$n
  LOGS=$LOG_ROOT/run$n
  mkdir -p -- "$RUN/refs" "$RUN/host" "$LOGS" || return 2
  say "=== run $n of $RUNS (logs: $LOGS)"
  if ! boot; then
    stop_guest
    return 2
  fi
  start_ssh_master
  guest_setup
  host_state_init
  MARK=$(($(wc -l <"$LOGS/console.log")))
  say "running the program ($MODE mode; console line $MARK on is checked)"
  t0=$(now_ms)
  run_program
  st=$?
  if ((st == 2)); then
    stop_guest
    return 2
  fi
  say "program done in $(fmt_ms $(($(now_ms) - t0)))"
  settle
  check
  r=$?
  stop_guest
  say "console: $LOGS/console.log"
  return $r
}

main() {
  local n st crashes=0 runs=0
  ((BASH_VERSINFO[0] >= 4)) || die "needs bash 4 or newer"
  [[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
  [[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "TIMEOUT must be a positive number of seconds, not '$TIMEOUT'"
  [[ $SETTLE =~ ^[0-9]+$ ]] || die "SETTLE must be a number of seconds, not '$SETTLE'"
  command -v -- "$QEMU" >/dev/null 2>&1 || die "QEMU binary $QEMU not found (set QEMU=/path/to/qemu-system-...)"
  [[ -f $KERNEL && -r $KERNEL ]] || die "kernel $KERNEL not found (set KERNEL=/path/to/the/kernel)"
  [[ -f $BASE_INITRD && -r $BASE_INITRD ]] || die "initramfs $BASE_INITRD not found (set BASE_INITRD=/path/to/the/guest/image.cpio)"
  need ssh "the OpenSSH client (Debian: openssh-client)"
  need ssh-keygen "the OpenSSH client (Debian: openssh-client)"
  need timeout "coreutils"
  if ((HOST_OPS)); then
    need socat "socat (Debian: socat)"
    need flock "util-linux"
  fi
  if setpriv --help 2>&1 | grep -q -- --pdeathsig; then PDEATHSIG=1; fi
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/repro.XXXXXX") || die "cannot create a temporary directory"
  chmod 700 "$DIR"
  LOG_ROOT=$REPRO_LOGS/$(date +%Y%m%d-%H%M%S)-$$
  mkdir -p -- "$LOG_ROOT" || die "cannot create $LOG_ROOT"
  LOG_OUT=$LOG_ROOT/output.log
  say "repro.sh: $TITLE"
  say "kernel $KERNEL, initramfs $BASE_INITRD, $RUNS run(s), logs in $LOG_ROOT"
  ssh-keygen -t ed25519 -N '' -q -C repro.sh -f "$DIR/key" </dev/null || die "ssh-keygen failed"
  make_initrd
  for ((n = 1; n <= RUNS; n++)); do
    one_run "$n"
    st=$?
    case $st in
    0)
      crashes=$((crashes + 1))
      runs=$((runs + 1))
      ;;
    1) runs=$((runs + 1)) ;;
    *)
      say "run $n: set-up failure"
      ((crashes > 0)) && break
      exit 2
      ;;
    esac
  done
  say "reproduced in $crashes/$runs runs: $TITLE"
  ((crashes > 0)) && exit 0
  exit 1
}

main "$@"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    fn d() -> Descriptions {
        Descriptions::embedded()
    }

    /// The guest's shell: busybox sh (ci/setup.sh installs busybox-static), else the host's sh.
    fn sh() -> &'static str {
        if Path::new("/bin/busybox").exists() {
            "/bin/busybox sh"
        } else {
            "sh"
        }
    }

    fn qemu_args() -> Vec<String> {
        let mut m = hotfuzz_vm::MachineConfig::new(hotfuzz_vm::Arch::X86_64);
        m.numa_nodes = 2;
        m.hotplug_ports = 2;
        m.extra_qemu_args = vec![
            "-fw_cfg".into(),
            "name=opt/x,string=a'b;$(x)`y`\"z\\".into(),
        ];
        m.qemu_args(
            hotfuzz_vm::Accel::Tcg,
            Path::new("/k/bzImage"),
            Path::new("@INITRD@"),
            Path::new("@QMP@"),
            1,
            "hotfuzz-repro",
        )
        .into_iter()
        .map(|a| {
            a.to_string_lossy()
                .replace("127.0.0.1:1-:22", "127.0.0.1:@SSH_PORT@-:22")
        })
        .collect()
    }

    fn input<'a>(d: &'a Descriptions, prog: &'a Program) -> ScriptInput<'a> {
        ScriptInput {
            d,
            prog,
            title: "WARNING in offline_pages".into(),
            detect: vec!["WARNING: ".into(), "offline_pages".into()],
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            qemu_args: qemu_args(),
            kernel: "/k/bzImage".into(),
            base_initrd: "/images/base.cpio".into(),
            kernel_origin: "linux-image-6.12 (Debian)".into(),
            kernel_cmdline: "console=ttyS0 panic=-1".into(),
            vmem_ids: vec!["vm0".into()],
            settle_secs: 5,
        }
    }

    fn gen(text: &str) -> String {
        let d = d();
        let p = Program::parse(text, &d).unwrap();
        generate(&input(&d, &p)).unwrap()
    }

    /// Runs `bash -c SCRIPT ARGS` with `stdin`; returns (status, stdout, stderr).
    fn bash(script: &str, stdin: &[u8]) -> (i32, Vec<u8>, String) {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash runs");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn assert_syntax_ok(script: &str) {
        let (st, _, err) = bash(
            &format!("bash -n /dev/stdin <<'__EOF__'\n{script}\n__EOF__"),
            b"",
        );
        assert_eq!(st, 0, "bash -n failed: {err}");
    }

    /// Text of shell function `name` in `script` (from `name() {` to the closing `}`).
    fn function(script: &str, name: &str) -> String {
        let start = script
            .find(&format!("\n{name}() {{\n"))
            .unwrap_or_else(|| panic!("no function {name}"))
            + 1;
        let end = script[start..].find("\n}\n").unwrap() + start + 3;
        script[start..end].to_string()
    }

    /// Text of the assignment `NAME=...` (a single-quoted value, possibly multi-line).
    fn assignment(script: &str, name: &str) -> String {
        let start = script.find(&format!("\n{name}='")).unwrap() + 1;
        let body = start + name.len() + 2;
        let end = script[body..].find("'\n").unwrap() + body + 2;
        script[start..end].to_string()
    }

    const SHELL_PROG: &str = "\
virtio_mem_resize(dev=0x0, size=0x10000000)
virtio_mem_wait(dev=0x0, ms=0x1388)
r0 = memblock_find(which=\"movable\", nth=0x0)
memblock_state(block=r0, state=\"offline\")
memblock_state(block=r0, state=\"online_movable\")
";

    #[test]
    fn shell_mode_program() {
        let s = gen(SHELL_PROG);
        assert_syntax_ok(&s);
        assert!(s.contains("\nMODE=shell\n"), "{s}");
        assert!(s.contains("# Mode: shell."));
        assert!(s.contains("#   r0 = memblock_find(which=\"movable\", nth=0x0)\n"));
        assert!(s.contains("  op 0 0 - - host h_virtio_mem_resize 0 268435456\n"));
        assert!(s.contains("  op 0 1 - - host h_virtio_mem_wait 0 5000\n"));
        assert!(s.contains("  op 0 2 r0 - guest 5 'find_block movable 0'\n"));
        assert!(s.contains(
            "  op 0 3 - r0 guest 5 'echo -n offline > /sys/devices/system/memory/memory${r0}/state'\n"
        ));
        assert!(s.contains("echo -n online_movable > /sys/devices/system/memory/memory${r0}/state"));
        assert!(s.contains("VMEM_IDS=( 'vm0' )"));
        assert!(s.contains("HOST_OPS=1\n"));
        assert!(s.contains("HOTPLUG_PORTS=2\n"));
        assert!(s.contains("  local ABANDONED='' r0=''\n  thread_0\n"));
        assert!(!s.contains("PROGRAM_JSON"));
        // The placeholders are this run's values, the kernel is $KERNEL.
        assert!(s.contains("\n    '-initrd' \"$DIR/initrd.cpio\"\n"));
        assert!(s.contains("'unix:'\"$RUN/qmp.sock\"',server=on,wait=off'"));
        assert!(s.contains("'user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:'\"$PORT\"'-:22'"));
        assert!(s.contains("\n    '-kernel' \"$KERNEL\"\n"));
        assert!(!s.contains("@INITRD@") && !s.contains("@QMP@") && !s.contains("@SSH_PORT@"));
    }

    #[test]
    fn qemu_arguments_are_quoted_safely() {
        let s = gen(SHELL_PROG);
        let f = function(&s, "qemu_argv");
        let script = format!(
            "DIR=/tmp/d RUN=/tmp/d/run1 PORT=2222 KERNEL='/x y/k'\n{f}\nqemu_argv\nprintf '%s\\n' \"${{ARGV[@]}}\""
        );
        let (st, out, err) = bash(&script, b"");
        assert_eq!(st, 0, "{err}");
        let got: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let want: Vec<String> = qemu_args()
            .into_iter()
            .map(|a| {
                if a == "/k/bzImage" {
                    "/x y/k".to_string()
                } else {
                    a.replace("@INITRD@", "/tmp/d/initrd.cpio")
                        .replace("@QMP@", "/tmp/d/run1/qmp.sock")
                        .replace("@SSH_PORT@", "2222")
                }
            })
            .collect();
        assert_eq!(got, want);
        assert!(got.contains(&"name=opt/x,string=a'b;$(x)`y`\"z\\".to_string()));
    }

    #[test]
    fn two_threads_run_concurrently_and_share_results() {
        let s = gen("\
r0 = memblock_find(which=\"last\", nth=0x2)
r1 = pfn_in_block(block=r0, page=0x10) (thread: 1)
soft_offline(pfn=r1) (thread: 1)
memblock_state(block=r0, state=\"offline\")
sleep_ms(ms=0x64) (thread: 1)
yield()
notifier_inject(action=\"MEM_GOING_OFFLINE\", errno=-0x10)
");
        assert_syntax_ok(&s);
        assert!(s.contains("\nMODE=shell\n"));
        assert!(s.contains("thread_0() {\n"));
        assert!(s.contains("thread_1() {\n  await_ref r0\n  # #1 r1 = pfn_in_block"));
        assert!(s.contains("  thread_0 &\n  pids+=($!)\n  thread_1 &\n  pids+=($!)\n"));
        assert!(s.contains("wait \"${pids[@]}\""));
        assert!(s.contains("  op 1 4 - - sleep 100 6000\n"));
        assert!(s.contains("  op 0 5 - - nop\n"));
        assert!(s.contains("echo -n -16 > /sys/kernel/debug/notifier-error-inject/memory/actions/MEM_GOING_OFFLINE/error"));
        assert!(s.contains(
            "echo -n $(printf 0x%x $((${r1} * ps))) > /sys/devices/system/memory/soft_offline_page"
        ));
        assert!(s.contains("HOST_OPS=0\n"));
        // Thread 0 uses its own r0 without waiting.
        let t0 = function(&s, "thread_0");
        assert!(!t0.contains("await_ref"), "{t0}");
    }

    #[test]
    fn executor_mode_program() {
        let d = d();
        let text = "\
r0 = mmap_anon(len=0x200000, thp=\"huge\", populate=0x1, node=-0x1)
r1 = vmsplice_pin(map=r0, offset=0x0, len=0x10000) (thread: 1)
r2 = dimm_add(size=0x8000000, node=0x1)
dimm_remove(d=r2)
virtio_mem_resize(dev=0x0, size=0x8000000)
r3 = memblock_find(which=\"movable\", nth=0x0)
memblock_state(block=r3, state=\"offline\")
pipe_release(pipe=r1) (thread: 1)
";
        let p = Program::parse(text, &d).unwrap();
        let s = generate(&input(&d, &p)).unwrap();
        assert_syntax_ok(&s);
        assert!(s.contains("\nMODE=executor\n"));
        assert!(s.contains("# Mode: executor."));
        assert!(s.contains("#   #0 mmap_anon: "));
        assert!(s.contains("#   #1 vmsplice_pin: "));
        assert!(s.contains("#   #7 pipe_release: "));
        assert!(!s.contains("#   #5 memblock_find"));
        // The executor's program line, as the runner would send it.
        let json = serde_json::to_string(&p.to_exec(&d, budget_ms(&input(&d, &p)), false)).unwrap();
        assert!(s.contains(&format!("PROGRAM_JSON={}\n", sq(&json))));
        assert!(json.contains(&format!("\"kmsg_id\":\"{}\"", p.id(&d))));
        // Host requests: literal arguments inline, references from the request.
        assert!(s.contains("    2) h_dimm_add 134217728 1 ;;"), "{s}");
        assert!(s.contains("    3) h_dimm_remove \"$(ev_int \"$2\" d)\" ;;"));
        assert!(s.contains("    4) h_virtio_mem_resize 0 134217728 ;;"));
        assert!(!s.contains("thread_0()"));
        assert!(s.contains("PROG_REFS=( '' 'r0:0' '' 'r2:2' '' '' 'r3:5' 'r1:1' )"));

        // The request parsing and the reply format the executor expects.
        let host = function(&s, "ev_int");
        let (st, out, err) = bash(
            &format!(
                "{host}\nev_int '{{\"ev\":\"host\",\"i\":3,\"args\":{{\"d\":{{\"int\":7}},\"x\":{{\"int\":9}}}}}}' d"
            ),
            b"",
        );
        assert_eq!(
            (st, String::from_utf8_lossy(&out).as_ref()),
            (0, "7"),
            "{err}"
        );
        let reply = format!(
            "{}\n{}\nEXE_IN=1\nhost_err() {{ HS=errno HE=$1 HM=$2; }}\nhost_request() {{ host_err 16 'the guest did not release \"dimm0\"'; }}\nhost_lock() {{ :; }}\nhost_unlock() {{ :; }}\nexe_host '{{\"ev\":\"host\",\"i\":3,\"args\":{{}}}}'",
            EXECUTOR_RUNNER.lines().find(|l| l.starts_with("RE_I=")).unwrap(),
            [function(&s, "json_str"), function(&s, "exe_host")].join("\n"),
        );
        let (st, out, err) = bash(&reply, b"");
        assert_eq!(st, 0, "{err}");
        let line = String::from_utf8(out).unwrap();
        let parsed: hotfuzz_executor::protocol::HostReply =
            serde_json::from_str(line.trim()).unwrap();
        assert_eq!(parsed.i, 3);
        assert_eq!(
            parsed.outcome,
            hotfuzz_executor::protocol::Outcome::Errno {
                errno: 16,
                msg: "the guest did not release \"dimm0\"".into()
            }
        );
    }

    #[test]
    fn executor_mode_is_used_for_values_shell_cannot_reproduce() {
        let d = d();
        let p = Program::parse("memblock_state(block=0x5, state=\"-n\")\n", &d).unwrap();
        let s = generate(&input(&d, &p)).unwrap();
        assert!(s.contains("\nMODE=executor\n"));
        assert!(s.contains("as an option"));
        let p = Program::parse("r0 = pfn_in_block(block=0xffffffff, page=0x0)\n", &d).unwrap();
        let s = generate(&input(&d, &p)).unwrap();
        assert!(s.contains("\nMODE=executor\n"));
        assert!(s.contains("shell arithmetic"));
    }

    #[test]
    fn odd_strings_are_quoted_for_the_guest() {
        let s = gen("memblock_state(block=0x7, state=\"off'line $(reboot)\\n\")\n");
        assert_syntax_ok(&s);
        // Run the step's guest command as the script would, against a fake sysfs, to see what
        // is written.
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "{}\n{}\nop() {{ local cmd=${{7//\\/sys\\/devices\\/system\\/memory/{d}}}; {sh} -c \"$G_HELPERS$cmd\"; }}\nmkdir -p {d}/memory7\nthread_0\ncat {d}/memory7/state",
            assignment(&s, "G_HELPERS"),
            function(&s, "thread_0"),
            d = dir.path().display(),
            sh = sh()
        );
        let (st, out, err) = bash(&script, b"");
        assert_eq!(st, 0, "{err}");
        assert_eq!(String::from_utf8(out).unwrap(), "off'line $(reboot)\n");
    }

    #[test]
    fn find_block_follows_the_executor() {
        let s = gen(SHELL_PROG);
        let helper = assignment(&s, "G_HELPERS");
        let dir = tempfile::tempdir().unwrap();
        let mem = dir.path().join("memory");
        let blocks = [
            (0, "online", "DMA32"),
            (1, "online", "Normal"),
            (2, "offline", "Normal Movable"),
            (10, "online", "Movable"),
            (11, "online", "Movable"),
            (9, "offline", "Movable"),
        ];
        for (id, st, z) in blocks {
            let b = mem.join(format!("memory{id}"));
            std::fs::create_dir_all(&b).unwrap();
            std::fs::write(b.join("state"), format!("{st}\n")).unwrap();
            std::fs::write(b.join("valid_zones"), format!("{z}\n")).unwrap();
        }
        std::fs::write(mem.join("block_size_bytes"), "8000000\n").unwrap();
        std::fs::create_dir_all(mem.join("power")).unwrap();
        let find = |which: &str, nth: u64| -> (i32, String) {
            let script = format!(
                "{helper}\nG_HELPERS=${{G_HELPERS//\\/sys\\/devices\\/system\\/memory/{}}}\n{} -c \"${{G_HELPERS}}find_block '{which}' {nth}\"",
                mem.display(),
                sh()
            );
            let (st, out, _) = bash(&script, b"");
            (st, String::from_utf8(out).unwrap().trim().to_string())
        };
        assert_eq!(find("any", 3), (0, "9".into()));
        assert_eq!(find("any", 6), (0, "0".into()));
        assert_eq!(find("last", 0), (0, "11".into()));
        assert_eq!(find("online", 2), (0, "10".into()));
        assert_eq!(find("offline", 1), (0, "9".into()));
        assert_eq!(find("movable", 3), (0, "11".into()));
        assert_eq!(find("normal", 1), (0, "1".into()));
        assert_eq!(find("x", 0), (0, "0".into()));
        assert_eq!(find("movable", 0).0, 0);
        for b in [10, 11] {
            std::fs::write(mem.join(format!("memory{b}/state")), "offline\n").unwrap();
        }
        assert_eq!(find("movable", 0).0, 1);
    }

    /// A newc archive entry: (name, mode, data).
    type Entry = (String, u32, Vec<u8>);

    /// Reads one newc archive from `buf` (checking magic, alignment and the trailer); returns
    /// its entries and the bytes it used.
    fn read_newc(buf: &[u8]) -> (Vec<Entry>, usize) {
        let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
        let align = |n: usize| n.div_ceil(4) * 4;
        let mut pos = 0;
        let mut out = Vec::new();
        loop {
            let h = &buf[pos..pos + 110];
            assert_eq!(&h[..6], b"070701", "bad magic at {pos}");
            let field = |i: usize| hex(&h[6 + 8 * i..14 + 8 * i]);
            let (mode, filesize, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name_start = pos + 110;
            let name = &buf[name_start..name_start + namesize];
            assert_eq!(name.last(), Some(&0), "name not NUL-terminated");
            let name = String::from_utf8(name[..namesize - 1].to_vec()).unwrap();
            let data_start = align(name_start + namesize);
            assert!(buf[name_start + namesize..data_start]
                .iter()
                .all(|&b| b == 0));
            let data = buf[data_start..data_start + filesize].to_vec();
            pos = align(data_start + filesize);
            if name == "TRAILER!!!" {
                return (out, pos);
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn overlay_is_a_valid_newc_archive_after_the_base_image() {
        let s = gen(SHELL_PROG);
        let funcs: Vec<String> = [
            "cpio_pad",
            "cpio_entry",
            "make_overlay",
            "make_initrd",
            "die",
            "say",
        ]
        .iter()
        .map(|f| function(&s, f))
        .collect();
        let dir = tempfile::tempdir().unwrap();
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtestkeytestkeytestkeytestkeytestkey repro.sh";
        std::fs::write(dir.path().join("key.pub"), format!("{key}\n")).unwrap();
        // A base image of odd length (a byte of padding short), as the kernel would see it.
        let mut base = hotfuzz_vm::image::GuestImage::new();
        base.dir("/root", 0o700).unwrap();
        base.file(
            "/etc/passwd",
            hotfuzz_vm::image::Source::Bytes(b"root:x:0:0::/root:/bin/sh\n".to_vec()),
            0o644,
        )
        .unwrap();
        let mut base_bytes = base.write_cpio(Vec::new()).unwrap();
        base_bytes.extend_from_slice(&[0, 0, 0]);
        std::fs::write(dir.path().join("base.cpio"), &base_bytes).unwrap();
        let script = format!(
            "export LC_ALL=C\n{}\nDIR={d}\nBASE_INITRD={d}/base.cpio\nmake_initrd\nmake_overlay {d}/key.pub > {d}/overlay.cpio",
            funcs.join("\n"),
            d = dir.path().display()
        );
        let (st, _, err) = bash(&script, b"");
        assert_eq!(st, 0, "{err}");

        let overlay = std::fs::read(dir.path().join("overlay.cpio")).unwrap();
        assert_eq!(overlay.len() % 4, 0);
        let (entries, used) = read_newc(&overlay);
        assert_eq!(used, overlay.len());
        let want: Vec<Entry> = vec![
            ("root".into(), 0o40700, vec![]),
            ("root/.ssh".into(), 0o40700, vec![]),
            (
                "root/.ssh/authorized_keys".into(),
                0o100600,
                format!("{key}\n").into_bytes(),
            ),
        ];
        assert_eq!(entries, want);

        let initrd = std::fs::read(dir.path().join("initrd.cpio")).unwrap();
        let (base_entries, base_used) = read_newc(&initrd);
        assert!(base_entries.iter().any(|e| e.0 == "etc/passwd"));
        let mut next = base_used;
        while initrd[next] == 0 {
            next += 1;
        }
        assert_eq!(next % 4, 0, "the overlay must start 4-byte aligned");
        assert_eq!(&initrd[next..], &overlay[..]);

        // The system cpio, when present, agrees.
        if let Ok(out) = Command::new("cpio")
            .args(["-t", "--quiet", "-F"])
            .arg(dir.path().join("overlay.cpio"))
            .output()
        {
            if out.status.success() {
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout),
                    "root\nroot/.ssh\nroot/.ssh/authorized_keys\n"
                );
            }
        }
    }

    #[test]
    fn single_quoting_matches_bash() {
        let s = gen(SHELL_PROG);
        let f = function(&s, "sq");
        for w in ["plain", "a'b", "''", "$(x) `y` \"z\" \\ \n", ""] {
            let script = format!(
                "{f}\nw={}\neval \"v=$(sq \"$w\")\"\nprintf %s \"$v\"",
                sq(w)
            );
            let (st, out, err) = bash(&script, b"");
            assert_eq!(st, 0, "{err}");
            assert_eq!(String::from_utf8(out).unwrap(), w);
        }
    }

    #[test]
    fn rejects_inputs_it_cannot_make_a_script_of() {
        let d = d();
        let p = Program::parse(SHELL_PROG, &d).unwrap();
        let mut i = input(&d, &p);
        i.detect.clear();
        assert!(generate(&i).unwrap_err().to_string().contains("detection"));
        let mut i = input(&d, &p);
        i.detect = vec!["a\nb".into()];
        assert!(generate(&i).is_err());
        let mut i = input(&d, &p);
        i.qemu_args.push("a\0b".into());
        assert!(generate(&i).is_err());
    }

    #[test]
    fn every_guest_shell_form_is_valid_busybox_sh() {
        // One program with every operation that has a shell form.
        let text = "\
r0 = memblock_find(which=\"normal\", nth=0x1)
memblock_online(block=r0, on=0x1)
auto_online_blocks(policy=\"online_movable\")
online_policy(policy=\"auto-movable\")
auto_movable_ratio(ratio=0x12c)
virtio_mem_unplug_online(on=0x1)
fail_page_alloc(probability=0x64, times=-0x1, min_order=0x2)
r1 = pfn_in_block(block=0x21, page=0x3)
r2 = memblock_of_pfn(pfn=r1)
hard_offline(pfn=0x1234)
hwpoison_corrupt(pfn=r1)
hwpoison_unpoison(pfn=0x1234)
drop_caches(what=0x3)
compact_memory(node=-0x1)
compact_memory(node=0x1)
split_huge_pages_all()
hugetlb_pool(size=\"2M\", node=-0x1, count=0x4)
hugetlb_pool(size=\"1G\", node=0x0, count=0x1)
damon_start(pfn=r1, npages=0x100, action=\"pageout\")
damon_stop()
r3 = virtio_mem_hot_add(max=0x40000000, requested=0x0, node=0x0, block_size=0x200000)
virtio_mem_resize(dev=r3, size=0x8000000)
balloon(target=0x20000000)
sleep_ms(ms=0x1388)
yield()
";
        let s = gen(text);
        assert_syntax_ok(&s);
        assert!(s.contains("\nMODE=shell\n"), "{s}");
        // Every guest command, as the script sends it, must parse in busybox sh.
        let script = format!(
            "{}\n{}\nop() {{ [[ $5 == guest ]] || return 0; n=$((n + 1)); printf %s \"r0=1\nr1=2\n$G_HELPERS$7\" | {} -n || {{ echo \"#$2 does not parse\"; exit 1; }}; }}\nn=0\nthread_0\necho $n",
            assignment(&s, "G_HELPERS"),
            function(&s, "thread_0"),
            sh()
        );
        let (st, out, err) = bash(&script, b"");
        assert_eq!(st, 0, "{err}");
        assert_eq!(String::from_utf8(out).unwrap(), "20\n");
        assert!(s.contains("echo -n N > /sys/kernel/debug/fail_page_alloc/ignore-gfp-wait"));
        assert!(s.contains("echo -n -1 > /sys/kernel/debug/fail_page_alloc/times"));
        assert!(s.contains("echo -n 0x1234 > /sys/kernel/debug/hwpoison/unpoison-pfn"));
        assert!(s.contains("echo -n 1 > /sys/devices/system/node/node1/compact"));
        assert!(s.contains(
            "echo -n 1 > /sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages"
        ));
        assert!(s.contains("op 0 20 r3 - host h_virtio_mem_hot_add 1073741824 0 0 2097152\n"));
        assert!(s.contains("op 0 21 - r3 host h_virtio_mem_resize \"${r3}\" 134217728\n"));
        assert!(s.contains("op 0 22 - - host h_balloon 536870912\n"));
        assert!(s.contains("op 0 23 - - sleep 5000 6000\n"));
        assert!(s.contains("op 0 24 - - nop\n"));
    }

    /// Runs the generated script's `run_program` (the script sourced without its `main`) with
    /// a fake `ssh` on PATH and QMP stubbed out; returns (status, stdout+stderr, fake dir).
    fn run_with_fake_ssh(script: &str, fake_ssh: &str) -> (i32, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let lib = script
            .trim_end()
            .strip_suffix("main \"$@\"")
            .expect("the script ends with main");
        std::fs::write(dir.path().join("lib.sh"), lib).unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        let ssh = dir.path().join("bin/ssh");
        std::fs::write(&ssh, format!("#!/bin/bash\nFAKE={d}\n{fake_ssh}")).unwrap();
        Command::new("chmod").arg("+x").arg(&ssh).status().unwrap();
        let test = format!(
            r#"source {d}/lib.sh
PATH={d}/bin:$PATH
sleep 60 &
QEMU_PID=$!
DIR={d} RUN={d}/run LOGS={d}/logs SSH=(-p 1) SSH_GRACE=1
mkdir -p "$RUN/refs" "$RUN/host" "$LOGS"
host_state_init
# QMP stub: records the command; device_del gets no DEVICE_DELETED event.
qmp_exec() {{ printf '%s %s\n' "$1" "$2" >> {d}/qmp; QMP_REPLY='{{"return": {{}}, "id": "repro"}}' QMP_EVENT=''; }}
run_program
echo "rc=$?"
kill $QEMU_PID
"#
        );
        let (st, out, err) = bash(&test, b"");
        (st, String::from_utf8_lossy(&out).into_owned() + &err, dir)
    }

    #[test]
    fn executor_mode_talks_the_executor_protocol() {
        let d = d();
        let text = "\
r0 = mmap_anon(len=0x200000, thp=\"huge\", populate=0x1, node=-0x1)
r1 = dimm_add(size=0x8000000, node=0x0) (thread: 1)
dimm_remove(d=r1) (thread: 1)
";
        let p = Program::parse(text, &d).unwrap();
        let inp = input(&d, &p);
        let s = generate(&inp).unwrap();
        // A fake executor: events with pauses longer than the script's read timeout, a line
        // split across two writes, host requests whose replies it records, and a process that
        // lingers after `end` (the script must not wait for it).
        let fake = r#"last=${@: -1}
[[ $last == "test -x"* ]] && exit 0
read -r prog
printf '%s\n' "$prog" > $FAKE/program.json
echo '{"ev":"hello","version":2,"kcov":false}'
sleep 1.5
echo '{"ev":"start","i":0,"t":0,"kt_ns":1}'
echo '{"ev":"done","i":0,"t":0,"outcome":{"status":"ok","val":4096},"dur_us":1500,"kt_ns":2}'
echo '{"ev":"host","i":1,"args":{"node":{"int":0},"size":{"int":134217728}}}'
read -r reply; printf '%s\n' "$reply" >> $FAKE/replies
echo '{"ev":"done","i":1,"t":1,"outcome":{"status":"ok","val":0},"dur_us":5,"kt_ns":2}'
echo '{"ev":"host","i":2,"args":{"d":{"int":0}}}'
read -r reply; printf '%s\n' "$reply" >> $FAKE/replies
printf '{"ev":"done","i":2,"t":1,"outcome":{"status":"errno","errno":16,'
sleep 1.2
echo '"msg":"the guest did not release dimm0"},"dur_us":5,"kt_ns":2}'
echo '{"ev":"end","abandoned":[]}'
exec sleep 30
"#;
        let t0 = std::time::Instant::now();
        let (st, out, dir) = run_with_fake_ssh(&s, fake);
        assert_eq!(st, 0, "{out}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(20), "{out}");
        assert!(out.contains("rc=0"), "{out}");
        let json = serde_json::to_string(&p.to_exec(&d, budget_ms(&inp), false)).unwrap();
        let sent = std::fs::read_to_string(dir.path().join("program.json")).unwrap();
        assert_eq!(sent.trim_end(), json);
        let replies = std::fs::read_to_string(dir.path().join("replies")).unwrap();
        let replies: Vec<hotfuzz_executor::protocol::HostReply> = replies
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        use hotfuzz_executor::protocol::{HostReply, Outcome};
        assert_eq!(
            replies,
            vec![
                HostReply {
                    i: 1,
                    outcome: Outcome::val(0)
                },
                HostReply {
                    i: 2,
                    outcome: Outcome::Errno {
                        errno: 16,
                        msg: "the guest did not release dimm0".into()
                    }
                }
            ]
        );
        let qmp = std::fs::read_to_string(dir.path().join("qmp")).unwrap();
        assert!(qmp.contains(
            "object-add {\"qom-type\":\"memory-backend-ram\",\"id\":\"dimm0-mem\",\"size\":134217728}"
        ));
        assert!(qmp.contains(
            "device_add {\"driver\":\"pc-dimm\",\"id\":\"dimm0\",\"memdev\":\"dimm0-mem\",\"node\":0}"
        ));
        assert!(qmp.contains("device_del {\"id\":\"dimm0\"}"), "{qmp}");
        assert!(out.contains("[t0] #0 r0 = mmap_anon(len=0x200000, thp=\"huge\", populate=0x1, node=-0x1) -> r0 = 4096 (0x1000) (0.001 s)"), "{out}");
        assert!(out.contains("[t1] #2 dimm_remove(d=r1) (thread: 1) [r1=0] -> failed: EBUSY (errno 16): the guest did not release dimm0"), "{out}");
        assert!(!out.contains("executor exited"), "{out}");
    }

    #[test]
    fn shell_mode_steps_report_and_share_results() {
        let s = gen("\
r0 = memblock_find(which=\"movable\", nth=0x0)
memblock_state(block=r0, state=\"offline\")
virtio_mem_resize(dev=0x0, size=0x10000000)
r1 = pfn_in_block(block=r0, page=0x10) (thread: 1)
memblock_online(block=r0, on=0x1) (thread: 1)
memblock_state(block=r0, state=\"online_movable\") (thread: 1)
auto_online_blocks(policy=\"online\")
");
        // A fake guest: answers by what the command does. memblock_online never returns.
        let fake = r#"cmd=${@: -1}
printf '%s\n---\n' "$cmd" >> $FAKE/cmds
case $cmd in
*"find_block movable 0"*) echo 32 ;;
*"* per + 16 % per"*) echo 1048592 ;;
*"echo -n offline"*) echo "sh: write error: Device or resource busy" >&2; exit 1 ;;
*"/online'"*) exec sleep 30 ;;
*auto_online_blocks*) echo "kernel has no /sys/x" >&2; exit 97 ;;
esac
exit 0
"#;
        let (st, out, dir) = run_with_fake_ssh(&s, fake);
        assert_eq!(st, 0, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        let has = |l: &str| lines.iter().any(|x| x.starts_with(l));
        assert!(
            has("[t0] #0 r0 = memblock_find(which=\"movable\", nth=0x0) -> r0 = 32 (0x20)"),
            "{out}"
        );
        assert!(has("[t0] #1 memblock_state(block=r0, state=\"offline\") [r0=32] -> failed: write error: Device or resource busy"), "{out}");
        assert!(
            has("[t0] #2 virtio_mem_resize(dev=0x0, size=0x10000000) -> ok"),
            "{out}"
        );
        assert!(has("[t1] #3 r1 = pfn_in_block(block=r0, page=0x10) (thread: 1) [r0=32] -> r1 = 1048592"), "{out}");
        assert!(has("[t1] #4 memblock_online(block=r0, on=0x1) (thread: 1) [r0=32] -> stuck: did not return 1 s after its 5 s deadline"), "{out}");
        assert!(has("[t1] #5 memblock_state(block=r0, state=\"online_movable\") (thread: 1) -> skipped: thread 1 was abandoned"), "{out}");
        assert!(has("[t0] #6 auto_online_blocks(policy=\"online\") -> unsupported: kernel has no /sys/x"), "{out}");
        assert!(out.contains("rc=0"), "{out}");
        assert!(dir.path().join("run/stuck").exists());
        // What the guest was asked to run: the marker, the deadline, values as variables.
        let cmds = std::fs::read_to_string(dir.path().join("cmds")).unwrap();
        assert!(
            cmds.contains("echo '<6>hotfuzz: executing program "),
            "{cmds}"
        );
        assert!(cmds.contains(" op 1 (thread 0): memblock_state' >/dev/kmsg 2>/dev/null\ntimeout 5 sh -c 'r0=32\n"), "{cmds}");
        assert!(
            cmds.contains(
                "echo -n offline > /sys/devices/system/memory/memory${r0}/state'\nexit $?"
            ),
            "{cmds}"
        );
        let qmp = std::fs::read_to_string(dir.path().join("qmp")).unwrap();
        assert_eq!(
            qmp,
            "qom-set {\"path\":\"/machine/peripheral/vm0\",\"property\":\"requested-size\",\"value\":268435456}\n"
        );
    }
}
