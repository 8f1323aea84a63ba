//! Host operations: what a program asks QEMU to do over QMP (virtio-mem resize and hot-add,
//! pc-dimm add/remove, balloon). Adding one means a description with the `host` attribute and
//! a branch in [`HostOps::run`].

use hotfuzz_executor::protocol::{ExecArg, Outcome};
use hotfuzz_vm::qmp::HotAddVirtioMem;
use hotfuzz_vm::{MachineConfig, Vm};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Host-side state a VM's programs share: which virtio-mem devices and DIMMs exist.
#[derive(Debug, Clone)]
pub struct HostOps {
    /// virtio-mem device ids by index (the `vmem_dev` resource).
    pub vmem: Vec<String>,
    /// DIMM ids by index (None once removed).
    pub dimms: Vec<Option<String>>,
    ports_used: u32,
    ports: u32,
}

/// Host operation names [`HostOps::run`] implements.
pub const IMPLEMENTED: &[&str] = &[
    "virtio_mem_resize",
    "virtio_mem_wait",
    "virtio_mem_hot_add",
    "dimm_add",
    "dimm_remove",
    "balloon",
];

fn int(args: &BTreeMap<String, ExecArg>, k: &str) -> Result<u64, Outcome> {
    match args.get(k) {
        Some(ExecArg::Int(v)) => Ok(*v),
        _ => Err(Outcome::Errno {
            errno: libc::EINVAL,
            msg: format!("argument {k}: expected an integer"),
        }),
    }
}

fn qmp_err(e: hotfuzz_vm::Error) -> Outcome {
    let msg = e.to_string();
    // QMP errors are QEMU refusing the request (bad size, no such device, no slot): EINVAL;
    // a dead monitor is not the program's fault and is reported as such.
    let errno = match e {
        hotfuzz_vm::Error::QemuGone(_) => libc::EIO,
        hotfuzz_vm::Error::Timeout(_) => libc::ETIMEDOUT,
        _ => libc::EINVAL,
    };
    Outcome::Errno { errno, msg }
}

impl HostOps {
    /// State for a freshly booted guest of `machine`.
    pub fn new(machine: &MachineConfig) -> HostOps {
        HostOps {
            vmem: machine.virtio_mem.iter().map(|d| d.id.clone()).collect(),
            dimms: Vec::new(),
            ports_used: 0,
            ports: machine.hotplug_ports,
        }
    }

    fn device(&self, args: &BTreeMap<String, ExecArg>) -> Result<String, Outcome> {
        let i = int(args, "dev")?;
        self.vmem
            .get(i as usize)
            .cloned()
            .ok_or_else(|| Outcome::Errno {
                errno: libc::ENODEV,
                msg: format!("no virtio-mem device {i}"),
            })
    }

    /// Runs host operation `name` on `vm`.
    pub fn run(&mut self, vm: &Vm, name: &str, args: &BTreeMap<String, ExecArg>) -> Outcome {
        match self.run_inner(vm, name, args) {
            Ok(o) | Err(o) => o,
        }
    }

    fn run_inner(
        &mut self,
        vm: &Vm,
        name: &str,
        args: &BTreeMap<String, ExecArg>,
    ) -> Result<Outcome, Outcome> {
        let q = vm.qmp();
        match name {
            "virtio_mem_resize" => {
                let id = self.device(args)?;
                let size = int(args, "size")?;
                q.set_virtio_mem_requested_size(&id, size)
                    .map_err(qmp_err)?;
                Ok(Outcome::ok())
            }
            "virtio_mem_wait" => {
                let id = self.device(args)?;
                let ms = int(args, "ms")?.min(60_000);
                let deadline = Instant::now() + Duration::from_millis(ms);
                loop {
                    let want = q.virtio_mem_requested_size(&id).map_err(qmp_err)?;
                    let size = q.virtio_mem_size(&id).map_err(qmp_err)?;
                    if size == want {
                        return Ok(Outcome::val(size));
                    }
                    if Instant::now() >= deadline {
                        return Err(Outcome::Errno {
                            errno: libc::ETIMEDOUT,
                            msg: format!("{id}: size {size:#x} != requested {want:#x}"),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            "virtio_mem_hot_add" => {
                if self.ports_used >= self.ports {
                    return Err(Outcome::Errno {
                        errno: libc::ENOSPC,
                        msg: format!("all {} spare PCIe ports are used", self.ports),
                    });
                }
                let spec = HotAddVirtioMem {
                    id: format!("hot{}", self.vmem.len()),
                    max_size: int(args, "max")?,
                    requested_size: int(args, "requested")?,
                    node: int(args, "node")? as u32,
                    block_size: Some(int(args, "block_size")?),
                    bus: format!("hp{}", self.ports_used),
                };
                q.hot_add_virtio_mem(&spec).map_err(qmp_err)?;
                self.ports_used += 1;
                self.vmem.push(spec.id);
                Ok(Outcome::val(self.vmem.len() as u64 - 1))
            }
            "dimm_add" => {
                let id = format!("dimm{}", self.dimms.len());
                let node = int(args, "node")? as u32;
                let node = (vm.machine().numa_nodes > 1).then_some(node);
                q.pc_dimm_add(&id, int(args, "size")?, node)
                    .map_err(qmp_err)?;
                self.dimms.push(Some(id));
                Ok(Outcome::val(self.dimms.len() as u64 - 1))
            }
            "dimm_remove" => {
                let i = int(args, "d")? as usize;
                let id = self
                    .dimms
                    .get(i)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| Outcome::Errno {
                        errno: libc::ENODEV,
                        msg: format!("no dimm {i}"),
                    })?;
                if q.pc_dimm_remove(&id, Duration::from_secs(10))
                    .map_err(qmp_err)?
                {
                    self.dimms[i] = None;
                    Ok(Outcome::ok())
                } else {
                    Err(Outcome::Errno {
                        errno: libc::EBUSY,
                        msg: format!("the guest did not release {id}"),
                    })
                }
            }
            "balloon" => {
                let target = int(args, "target")?;
                match q.balloon(target) {
                    Ok(()) => Ok(Outcome::ok()),
                    Err(e) if e.to_string().contains("No balloon device") => {
                        Err(Outcome::Unsupported {
                            why: "the VM has no balloon device".into(),
                        })
                    }
                    Err(e) => Err(qmp_err(e)),
                }
            }
            other => Err(Outcome::Unsupported {
                why: format!("hotfuzz has no host operation {other}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::desc::Descriptions;

    #[test]
    fn every_described_operation_is_implemented_and_vice_versa() {
        let d = Descriptions::embedded();
        for op in &d.ops {
            if op.host {
                assert!(
                    IMPLEMENTED.contains(&op.name.as_str()),
                    "host op {} has no implementation",
                    op.name
                );
            } else {
                assert!(
                    hotfuzz_executor::ops::find(&op.name).is_some(),
                    "guest op {} is not in the executor's table",
                    op.name
                );
            }
        }
        for e in hotfuzz_executor::ops::OPS {
            let op = d
                .op(e.name)
                .unwrap_or_else(|| panic!("executor op {} is not described", e.name));
            assert!(!op.host, "{} is described as a host op", e.name);
        }
        for h in IMPLEMENTED {
            assert!(
                d.op(h).is_some_and(|o| o.host),
                "{h} is not described as a host op"
            );
        }
    }
}
