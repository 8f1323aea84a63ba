//! `hotfuzz vm boot`, `hotfuzz vm plug` and `hotfuzz setup`.

use anyhow::{Context, Result};
use clap::Subcommand;
use hotfuzz_vm::size::{format_size, parse_size};
use hotfuzz_vm::Vm;
use serde_json::json;
use std::time::{Duration, Instant};

use crate::cli::guest_flags::GuestArgs;
/// `hotfuzz vm ...`
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Boot a guest to ssh-ready, print the boot timings, then power it off (or open a shell).
    Boot(Box<VmBootArgs>),
    /// Boot a guest, plug SIZE with virtio-mem, show what the guest sees, unplug, power off.
    Plug(Box<VmPlugArgs>),
    /// Boot a guest and print its memory state (blocks, nodes, devices) as JSON.
    State(Box<VmStateArgs>),
}

/// Arguments of `hotfuzz vm boot`.
#[derive(Debug, clap::Args)]
pub struct VmBootArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
    /// Open an interactive shell in the guest instead of powering off at once.
    #[arg(long)]
    pub shell: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `hotfuzz vm plug`.
#[derive(Debug, clap::Args)]
pub struct VmPlugArgs {
    /// Amount to plug, e.g. 256M or 1G (a multiple of the device block size).
    pub size: String,
    /// virtio-mem device id.
    #[arg(long, default_value = "vm0")]
    pub device: String,
    #[command(flatten)]
    pub guest: GuestArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `hotfuzz vm state`.
#[derive(Debug, clap::Args)]
pub struct VmStateArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
}

fn ms(d: Option<Duration>) -> serde_json::Value {
    d.map(|d| json!(d.as_millis() as u64))
        .unwrap_or(serde_json::Value::Null)
}

fn fmt_dur(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2}s", d.as_secs_f64()))
        .unwrap_or_else(|| "-".into())
}

/// Runs a `hotfuzz vm` command.
pub fn run(c: VmCommand) -> Result<i32> {
    match c {
        VmCommand::Boot(a) => boot(*a),
        VmCommand::Plug(a) => plug(*a),
        VmCommand::State(a) => state(*a),
    }
}

/// `hotfuzz vm boot`.
fn boot(a: VmBootArgs) -> Result<i32> {
    let p = a.guest.config()?.prepare()?;
    let vm = p.boot("hotfuzz")?;
    let t = vm.timings().clone();
    let t0 = std::time::Instant::now();
    let uname = vm.run("uname -r").unwrap_or_default().trim().to_string();
    let ssh_ready = t.ready + t0.elapsed();
    if a.json {
        outln!(
            "{}",
            json!({
                "kernel": p.kernel.origin, "release": uname, "accel": vm.accel(),
                "timings_ms": {"banner": ms(t.banner), "init": ms(t.init),
                    "userspace_ready": ms(t.userspace_ready), "ready": t.ready.as_millis() as u64,
                    "ssh_ready": ssh_ready.as_millis() as u64},
                "fallbacks": t.fallbacks, "ssh_port": vm.ssh_port(), "dir": vm.dir(),
                "console_log": vm.console_log(), "image": p.image.path, "modules": p.image.modules,
            })
        )?;
    } else {
        outln!("kernel     {} ({uname})", p.kernel.origin)?;
        outln!(
            "accel      {:?}{}",
            vm.accel(),
            if t.fallbacks.is_empty() {
                String::new()
            } else {
                format!(" (after: {})", t.fallbacks.join("; "))
            }
        )?;
        outln!(
            "boot       QEMU start -> banner {} -> /init {} -> guest ready {} (ssh ready {})",
            fmt_dur(t.banner),
            fmt_dur(t.init),
            fmt_dur(Some(t.ready)),
            fmt_dur(Some(ssh_ready))
        )?;
        outln!(
            "ssh        127.0.0.1:{} (key {})",
            vm.ssh_port(),
            vm.key_path().display()
        )?;
        outln!("console    {}", vm.console_log().display())?;
    }
    if a.shell {
        eprintln!("hotfuzz: shell in the guest; exit it to power off");
        vm.interactive_shell()?;
    }
    let t0 = Instant::now();
    let clean = vm.poweroff(Duration::from_secs(30));
    if !a.json {
        outln!(
            "poweroff   {} in {:.2}s",
            if clean { "clean" } else { "forced" },
            t0.elapsed().as_secs_f64()
        )?;
    }
    Ok(0)
}

fn mem_total_kib(vm: &Vm) -> Result<u64> {
    let m = vm.run("cat /proc/meminfo")?;
    m.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no MemTotal in /proc/meminfo")
}

/// `hotfuzz vm plug SIZE`.
fn plug(a: VmPlugArgs) -> Result<i32> {
    let bytes = parse_size(&a.size).map_err(anyhow::Error::msg)?;
    let p = a.guest.config()?.prepare()?;
    let vm = p.boot_connected("hotfuzz")?.vm;
    let q = vm.qmp();
    let before = mem_total_kib(&vm)?;
    let t0 = Instant::now();
    q.set_virtio_mem_requested_size(&a.device, bytes)?;
    let plugged = q.wait_virtio_mem_settled(&a.device, Duration::from_secs(120))?;
    let plug_time = t0.elapsed();
    let after = mem_total_kib(&vm)?;
    let blocks = vm.run("grep -l online /sys/devices/system/memory/memory*/state | wc -l")?;
    let t1 = Instant::now();
    q.set_virtio_mem_requested_size(&a.device, 0)?;
    let unplugged = q.wait_virtio_mem_settled(&a.device, Duration::from_secs(120))?;
    let unplug_time = t1.elapsed();
    let end = mem_total_kib(&vm)?;
    vm.poweroff(Duration::from_secs(30));
    let ok = plugged == bytes && unplugged == 0;
    if a.json {
        outln!(
            "{}",
            json!({"requested": bytes, "plugged": plugged, "plug_ms": plug_time.as_millis() as u64,
                   "memtotal_kib": [before, after, end], "online_blocks": blocks.trim(),
                   "unplugged_to": unplugged, "unplug_ms": unplug_time.as_millis() as u64, "ok": ok})
        )?;
    } else {
        outln!(
            "plug   {} -> device size {} in {:.2}s; MemTotal {} -> {} KiB; online blocks {}",
            format_size(bytes),
            format_size(plugged),
            plug_time.as_secs_f64(),
            before,
            after,
            blocks.trim()
        )?;
        outln!(
            "unplug -> device size {} in {:.2}s; MemTotal {} KiB",
            format_size(unplugged),
            unplug_time.as_secs_f64(),
            end
        )?;
    }
    Ok(if ok { 0 } else { 1 })
}

/// `hotfuzz vm state`: boot, read the guest's memory state, print it as JSON.
fn state(a: VmStateArgs) -> Result<i32> {
    let p = a.guest.config()?.prepare()?;
    let hotfuzz::run::runner::Connected { vm, agent, .. } = p.boot_connected("hotfuzz")?;
    let st = hotfuzz::run::probe::guest_state(&vm, &agent)?;
    drop(agent);
    outln!("{}", serde_json::to_string_pretty(&st)?)?;
    vm.poweroff(Duration::from_secs(30));
    Ok(0)
}
