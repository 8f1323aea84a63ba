//! `hotfuzz bench vm`: how fast guests are on this machine (boot, ssh, QMP, plug/unplug).

use crate::cli::BenchVmArgs;
use crate::stats::Summary;
use anyhow::{Context, Result};
use hotfuzz_vm::guest::GuestSpec;
use hotfuzz_vm::Vm;
use serde_json::json;
use std::time::{Duration, Instant};

/// `hotfuzz bench vm`.
pub fn vm(a: BenchVmArgs) -> Result<i32> {
    let mut cold = None;
    if a.cold {
        // First run on an empty cache: download, unpack, PVH extraction, image build.
        let dir = tempfile::tempdir().context("creating a temporary cache")?;
        std::env::set_var("HOTFUZZ_CACHE_DIR", dir.path());
        let t = Instant::now();
        let p = a.guest.prepare(GuestSpec::for_arch(a.guest.arch))?;
        let prep = t.elapsed();
        let vm = Vm::boot(&p.kernel, &p.image, &p.options)?;
        let total = t.elapsed();
        vm.poweroff(Duration::from_secs(30));
        std::env::remove_var("HOTFUZZ_CACHE_DIR");
        cold = Some((prep, total));
    }
    let mut prepare = Vec::new();
    let mut banner = Vec::new();
    let mut init = Vec::new();
    let mut ready = Vec::new();
    let mut ssh = Vec::new();
    let mut total = Vec::new();
    let mut exec = Vec::new();
    let mut qmp_query = Vec::new();
    let mut qmp_set = Vec::new();
    let mut plug = Vec::new();
    let mut unplug = Vec::new();
    for i in 0..a.boots {
        let t = Instant::now();
        let p = a.guest.prepare(GuestSpec::for_arch(a.guest.arch))?;
        prepare.push(t.elapsed());
        let vm = Vm::boot(&p.kernel, &p.image, &p.options)?;
        total.push(t.elapsed());
        let tm = vm.timings();
        banner.extend(tm.banner);
        init.extend(tm.init);
        ready.extend(tm.userspace_ready);
        ssh.push(tm.ssh_ready);
        if i == 0 {
            for _ in 0..a.execs {
                let t = Instant::now();
                vm.exec("true")?.check("true")?;
                exec.push(t.elapsed());
            }
            let q = vm.qmp();
            for _ in 0..a.resizes {
                let t = Instant::now();
                q.query_memory_devices()?;
                qmp_query.push(t.elapsed());
            }
            if let Some(dev) = vm.machine().virtio_mem.first().map(|d| d.id.clone()) {
                for _ in 0..a.resizes {
                    let t = Instant::now();
                    q.set_virtio_mem_requested_size(&dev, 128 << 20)?;
                    qmp_set.push(t.elapsed());
                    let size = q.wait_virtio_mem_settled(&dev, Duration::from_secs(120))?;
                    plug.push(t.elapsed());
                    anyhow::ensure!(size == 128 << 20, "plug settled at {size}");
                    let t = Instant::now();
                    q.set_virtio_mem_requested_size(&dev, 0)?;
                    qmp_set.push(t.elapsed());
                    let size = q.wait_virtio_mem_settled(&dev, Duration::from_secs(120))?;
                    unplug.push(t.elapsed());
                    anyhow::ensure!(size == 0, "unplug settled at {size}");
                }
            }
        }
        vm.poweroff(Duration::from_secs(30));
    }
    let rows: Vec<(&str, Option<Summary>)> = vec![
        ("prepare (kernel+image, cached)", Summary::of(&prepare)),
        ("QEMU start -> kernel banner", Summary::of(&banner)),
        ("QEMU start -> /init", Summary::of(&init)),
        ("QEMU start -> userspace ready", Summary::of(&ready)),
        ("QEMU start -> ssh ready", Summary::of(&ssh)),
        ("second boot, total (prepare + boot)", Summary::of(&total)),
        ("ssh exec round trip (`true`)", Summary::of(&exec)),
        (
            "QMP query-memory-devices round trip",
            Summary::of(&qmp_query),
        ),
        (
            "QMP qom-set requested-size round trip",
            Summary::of(&qmp_set),
        ),
        ("plug 128M: qom-set -> size settled", Summary::of(&plug)),
        ("unplug 128M: qom-set -> size settled", Summary::of(&unplug)),
    ];
    if a.json {
        let mut m = serde_json::Map::new();
        for (k, v) in &rows {
            m.insert((*k).to_string(), json!(v));
        }
        if let Some((p, t)) = cold {
            m.insert(
                "cold: prepare (download+unpack+image)".into(),
                json!(p.as_millis() as u64),
            );
            m.insert("cold: prepare + boot".into(), json!(t.as_millis() as u64));
        }
        println!("{}", serde_json::Value::Object(m));
    } else {
        if let Some((p, t)) = cold {
            println!(
                "{:<40} {:.2} s",
                "cold: prepare (download+unpack+image)",
                p.as_secs_f64()
            );
            println!("{:<40} {:.2} s", "cold: prepare + boot", t.as_secs_f64());
        }
        for (k, v) in rows {
            if let Some(v) = v {
                println!("{k:<40} {v}");
            }
        }
    }
    Ok(0)
}
