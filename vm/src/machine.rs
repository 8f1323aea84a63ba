//! What a guest machine looks like (CPUs, memory, NUMA, memory devices) and the QEMU command
//! line that builds it.

use crate::arch::Arch;
use crate::error::{Error, Result};
use crate::size::{format_size, parse_size};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::PathBuf;

/// Accelerator choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM when it works here, else TCG (the answer is remembered per host).
    #[default]
    Auto,
    /// KVM only.
    Kvm,
    /// TCG only.
    Tcg,
}

impl std::str::FromStr for AccelChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            o => Err(format!("unknown accelerator '{o}' (auto, kvm or tcg)")),
        }
    }
}

/// An accelerator actually used for a boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

/// A virtio-mem device present at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioMemSpec {
    /// Device id (QOM path `/machine/peripheral/<id>`).
    pub id: String,
    /// Backend size: the most the device can ever provide.
    pub size: u64,
    /// Device block size (QEMU default: 2 MiB on x86 hosts).
    pub block_size: Option<u64>,
    /// NUMA node.
    pub node: u32,
    /// Requested size at boot.
    pub requested: u64,
}

impl VirtioMemSpec {
    /// Parses `size=4G,block=2M,node=0,requested=512M[,id=vm1]` (or just `4G`). `index` names the
    /// device `vmN` unless an id is given.
    pub fn parse(text: &str, index: usize) -> std::result::Result<VirtioMemSpec, String> {
        let mut spec = VirtioMemSpec {
            id: format!("vm{index}"),
            size: 4 << 30,
            block_size: None,
            node: 0,
            requested: 0,
        };
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = match part.split_once('=') {
                Some(kv) => kv,
                None => ("size", part),
            };
            match k {
                "size" | "max" => spec.size = parse_size(v)?,
                "block" | "block-size" | "block_size" => spec.block_size = Some(parse_size(v)?),
                "node" => {
                    spec.node = v
                        .parse()
                        .map_err(|_| format!("bad node '{v}' in virtio-mem spec '{text}'"))?
                }
                "requested" | "requested-size" | "req" => spec.requested = parse_size(v)?,
                "id" => spec.id = v.to_string(),
                other => {
                    return Err(format!(
                        "unknown virtio-mem option '{other}' in '{text}' (size, block, node, requested, id)"
                    ))
                }
            }
        }
        Ok(spec)
    }
}

/// The shape of a guest machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfig {
    /// Guest architecture.
    pub arch: Arch,
    /// vCPUs.
    pub cpus: u32,
    /// Boot RAM in bytes.
    pub memory: u64,
    /// `maxmem`; default: boot RAM + all virtio-mem backends + 4 GiB for hot-added devices.
    pub maxmem: Option<u64>,
    /// NUMA nodes sharing boot RAM and CPUs (0 or 1: no NUMA). On powernv: chips (sockets).
    pub numa_nodes: u32,
    /// virtio-mem devices present at boot (x86_64 only).
    pub virtio_mem: Vec<VirtioMemSpec>,
    /// Spare PCIe root ports (`hp0`, `hp1`, ...) for hot-adding devices.
    pub hotplug_ports: u32,
    /// DIMM slots for pc-dimm hotplug.
    pub dimm_slots: u32,
    /// Attach a virtio-balloon device (`balloon0`).
    pub balloon: bool,
    /// Extra kernel command line words.
    pub cmdline: Vec<String>,
    /// Accelerator choice.
    pub accel: AccelChoice,
    /// QEMU binary (default: the arch's `qemu-system-*` from PATH).
    pub qemu: Option<PathBuf>,
    /// Extra raw QEMU arguments.
    pub extra_qemu_args: Vec<String>,
}

impl MachineConfig {
    /// Defaults for `arch`: 2 vCPUs, 1 GiB boot RAM (4 GiB on powernv, half of it
    /// ZONE_MOVABLE), one 4 GiB virtio-mem device with nothing plugged on x86_64.
    pub fn new(arch: Arch) -> MachineConfig {
        MachineConfig {
            arch,
            cpus: 2,
            memory: match arch {
                Arch::X86_64 => 1 << 30,
                // powernv's memory blocks are 1 GiB, and memtrace takes whole blocks from
                // alloc_contig_pages: with 2 GiB, both blocks hold kernel memory and every
                // memtrace_enable fails ("Failed to allocate trace memory").
                Arch::Ppc64le => 4 << 30,
            },
            maxmem: None,
            numa_nodes: 0,
            virtio_mem: match arch {
                Arch::X86_64 => vec![VirtioMemSpec {
                    id: "vm0".into(),
                    size: 4 << 30,
                    block_size: None,
                    node: 0,
                    requested: 0,
                }],
                Arch::Ppc64le => Vec::new(),
            },
            hotplug_ports: 2,
            dimm_slots: 4,
            balloon: true,
            // Hot-added memory goes to ZONE_MOVABLE, so what was plugged can be unplugged again;
            // on powernv two boot blocks are movable too, for memtrace and offlining.
            cmdline: match arch {
                Arch::X86_64 => vec!["memhp_default_state=online_movable".into()],
                Arch::Ppc64le => vec![
                    "memhp_default_state=online_movable".into(),
                    "movablecore=2G".into(),
                ],
            },
            accel: AccelChoice::Auto,
            qemu: None,
            extra_qemu_args: Vec::new(),
        }
    }

    /// The effective `maxmem`.
    pub fn effective_maxmem(&self) -> u64 {
        self.maxmem.unwrap_or_else(|| {
            self.memory + self.virtio_mem.iter().map(|d| d.size).sum::<u64>() + (4 << 30)
        })
    }

    /// Checks the configuration for mistakes QEMU would report less clearly.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::Config(m));
        if self.cpus == 0 || self.cpus > 64 {
            return err(format!("cpus must be 1..=64, not {}", self.cpus));
        }
        if self.memory < 128 << 20 {
            return err(format!(
                "boot memory {} is too small (at least 128M)",
                format_size(self.memory)
            ));
        }
        let nodes = self.numa_nodes.max(1);
        if self.arch == Arch::X86_64 && !self.memory.is_multiple_of(nodes as u64 * (2 << 20)) {
            return err(format!(
                "boot memory {} does not split evenly into {nodes} NUMA nodes",
                format_size(self.memory)
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for d in &self.virtio_mem {
            if self.arch != Arch::X86_64 {
                return err(format!(
                    "virtio-mem is not available on {} (QEMU has no virtio-mem for this machine)",
                    self.arch
                ));
            }
            if !ids.insert(&d.id) {
                return err(format!("duplicate virtio-mem id '{}'", d.id));
            }
            if d.node >= nodes {
                return err(format!(
                    "virtio-mem '{}' is on node {} but the machine has {nodes} node(s)",
                    d.id, d.node
                ));
            }
            if d.requested > d.size {
                return err(format!(
                    "virtio-mem '{}': requested {} exceeds its size {}",
                    d.id,
                    format_size(d.requested),
                    format_size(d.size)
                ));
            }
            let bs = d.block_size.unwrap_or(2 << 20);
            if !bs.is_power_of_two() || d.requested % bs != 0 || d.size % bs != 0 {
                return err(format!(
                    "virtio-mem '{}': size and requested size must be multiples of the block size {} (a power of two)",
                    d.id,
                    format_size(bs)
                ));
            }
        }
        if self.effective_maxmem()
            < self.memory + self.virtio_mem.iter().map(|d| d.size).sum::<u64>()
        {
            return err("maxmem is smaller than boot memory plus the virtio-mem devices".into());
        }
        Ok(())
    }

    /// The kernel command line hotfuzz boots with.
    pub fn kernel_cmdline(&self) -> String {
        let mut v: Vec<String> = vec![
            format!("console={}", self.arch.console_device()),
            // Panic reboots, -no-reboot turns that into QEMU exiting: a dead guest is noticed.
            "panic=-1".into(),
            // Boot speed under TCG: skip work a throwaway test guest does not need.
            "cryptomgr.notests".into(),
            // (Not load_system_certificate_list: without the keys every Debian module would
            // taint the kernel, and reports would say "Tainted: E".)
            "initcall_blacklist=jent_mod_init,crypto_kdf108_init,init_encrypted,init_ima".into(),
            "ipv6.disable=1".into(),
            "random.trust_cpu=on".into(),
            "printk.devkmsg=on".into(),
            "net.ifnames=0".into(),
        ];
        if self.arch == Arch::X86_64 {
            v.push("no_timer_check".into());
        }
        v.extend(self.cmdline.iter().cloned());
        v.join(" ")
    }

    /// The command line the kernel boots with: [`MachineConfig::kernel_cmdline`], plus, under
    /// TCG, a preset delay loop, and for a TCG guest that is restored from snapshots, a
    /// clocksource that does not read the TSC.
    /// Under TCG the restored TSC jumps against the host clock; the clocksource watchdog
    /// then flags "Long readout interval" and marks the TSC unstable after every restore,
    /// lines no kernel developer wants in a report. KVM's kvm-clock is built for migration.
    pub fn boot_cmdline(&self, accel: Accel, snapshots: bool) -> String {
        let mut c = self.kernel_cmdline();
        if accel == Accel::Tcg && self.arch == Arch::X86_64 {
            // Under TCG the second vCPU calibrates its delay loop against a timer for ~0.5 s
            // (calibrate_delay_direct); the boot CPU derives the same value from the TSC's
            // frequency. Preset it (delays use the TSC anyway where it is usable).
            c.push_str(" lpj=10000000");
        }
        if snapshots && accel == Accel::Tcg && self.arch == Arch::X86_64 {
            c.push_str(" tsc=unstable clocksource=hpet");
        }
        c
    }

    /// QEMU arguments for booting with `accel` and the VM's files and ports `p`.
    pub fn qemu_args(&self, accel: Accel, p: &QemuPaths) -> Vec<OsString> {
        let (kernel_image, initrd, qmp, ssh_port, name) =
            (&p.kernel, &p.initrd, &p.qmp, p.ssh_port, p.name.as_str());
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: String| a.push(OsString::from(s));
        push("-name".into());
        push(format!("{name},debug-threads=on"));
        match self.arch {
            Arch::X86_64 => {
                push("-machine".into());
                push("q35".into());
                push("-cpu".into());
                push(if accel == Accel::Kvm { "host" } else { "max" }.into());
            }
            Arch::Ppc64le => {
                push("-machine".into());
                push("powernv9".into());
            }
        }
        push("-accel".into());
        push(match accel {
            Accel::Kvm => "kvm".into(),
            Accel::Tcg => "tcg,thread=multi".into(),
        });
        let nodes = self.numa_nodes.max(1);
        push("-smp".into());
        if self.arch == Arch::Ppc64le && nodes > 1 {
            // powernv: one chip per node, RAM is split among chips.
            push(format!("{},sockets={nodes}", self.cpus.max(nodes)));
        } else {
            push(self.cpus.to_string());
        }
        push("-m".into());
        if self.arch == Arch::X86_64 {
            push(format!(
                "{}M,slots={},maxmem={}M",
                self.memory >> 20,
                self.dimm_slots.max(1),
                self.effective_maxmem() >> 20
            ));
        } else {
            push(format!("{}M", self.memory >> 20));
        }
        if self.arch == Arch::X86_64 && nodes > 1 {
            let per = self.memory / nodes as u64;
            for n in 0..nodes {
                push("-object".into());
                push(format!(
                    "memory-backend-ram,id=ram-node{n},size={}M",
                    per >> 20
                ));
                let cpus: Vec<String> = (0..self.cpus)
                    .filter(|c| c % nodes == n)
                    .map(|c| format!("cpus={c}"))
                    .collect();
                push("-numa".into());
                let mut spec = format!("node,nodeid={n},memdev=ram-node{n}");
                for c in cpus {
                    spec.push(',');
                    spec.push_str(&c);
                }
                push(spec);
            }
        }
        if self.arch == Arch::X86_64 {
            push("-nodefaults".into());
        } else {
            // powernv creates its PCIe host bridges only with defaults enabled.
            push("-monitor".into());
            push("none".into());
        }
        push("-no-user-config".into());
        push("-display".into());
        push("none".into());
        push("-no-reboot".into());
        if p.snapshot_store.is_some() {
            // A guest that panics or powers off stays in QEMU, paused, to be restored from a
            // snapshot without starting QEMU again (-no-reboot turned the reboot into this
            // shutdown).
            push("-action".into());
            push("shutdown=pause".into());
        }
        push("-kernel".into());
        a.push(kernel_image.as_os_str().to_owned());
        a.push("-initrd".into());
        a.push(initrd.as_os_str().to_owned());
        a.push("-append".into());
        a.push(self.boot_cmdline(accel, p.snapshot_store.is_some()).into());
        a.push("-chardev".into());
        a.push("stdio,id=con0,signal=off".into());
        a.push("-serial".into());
        a.push("chardev:con0".into());
        a.push("-qmp".into());
        let mut q = OsString::from("unix:");
        q.push(qmp.as_os_str());
        q.push(",server=on,wait=off");
        a.push(q);
        // The guest agent's channel: a virtio-serial port the guest sees as `hotfuzz.agent`,
        // a unix socket on the host (it survives snapshot restores, unlike a TCP connection
        // through user-mode networking).
        a.push("-device".into());
        a.push(
            match self.arch {
                Arch::X86_64 => "virtio-serial-pci,id=vser0",
                Arch::Ppc64le => "virtio-serial-pci,id=vser0,bus=pcie.1",
            }
            .into(),
        );
        a.push("-chardev".into());
        let mut c = OsString::from("socket,id=agent,path=");
        c.push(p.agent.as_os_str());
        c.push(",server=on,wait=off");
        a.push(c);
        a.push("-device".into());
        a.push(format!("virtserialport,chardev=agent,name={AGENT_PORT_NAME}").into());
        if let Some(store) = &p.snapshot_store {
            // Where savevm keeps snapshots: a qcow2 image no guest device uses.
            a.push("-drive".into());
            let mut d = OsString::from("if=none,id=snapstore,format=qcow2,file=");
            d.push(store.as_os_str());
            a.push(d);
        }
        a.push("-netdev".into());
        a.push(format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22").into());
        a.push("-device".into());
        a.push(
            match self.arch {
                Arch::X86_64 => "virtio-net-pci,netdev=net0,romfile=",
                Arch::Ppc64le => "virtio-net-pci,netdev=net0,bus=pcie.0,romfile=",
            }
            .into(),
        );
        if self.arch == Arch::X86_64 {
            for d in &self.virtio_mem {
                a.push("-object".into());
                a.push(
                    format!(
                        "memory-backend-ram,id={}-mem,size={}M,reserve=off",
                        d.id,
                        d.size >> 20
                    )
                    .into(),
                );
                let mut dev = format!(
                    "virtio-mem-pci,id={id},memdev={id}-mem,node={node},requested-size={req}",
                    id = d.id,
                    node = d.node,
                    req = d.requested
                );
                if let Some(bs) = d.block_size {
                    dev.push_str(&format!(",block-size={bs}"));
                }
                a.push("-device".into());
                a.push(dev.into());
            }
            for p in 0..self.hotplug_ports {
                a.push("-device".into());
                a.push(format!("pcie-root-port,id=hp{p},chassis={},slot={}", p + 1, p + 1).into());
            }
            if self.balloon {
                a.push("-device".into());
                a.push("virtio-balloon-pci,id=balloon0".into());
            }
        }
        for x in &self.extra_qemu_args {
            a.push(x.into());
        }
        a
    }
}

/// The name of the guest agent's virtio-serial port (`/sys/class/virtio-ports/*/name`).
pub const AGENT_PORT_NAME: &str = "hotfuzz.agent";

/// The files and ports of one VM that go on its QEMU command line.
#[derive(Debug, Clone)]
pub struct QemuPaths {
    /// Kernel boot image.
    pub kernel: std::path::PathBuf,
    /// The VM's initramfs.
    pub initrd: std::path::PathBuf,
    /// QMP socket.
    pub qmp: std::path::PathBuf,
    /// The guest agent's socket.
    pub agent: std::path::PathBuf,
    /// qcow2 image holding snapshots (none: the VM cannot take snapshots).
    pub snapshot_store: Option<std::path::PathBuf>,
    /// Host port forwarded to the guest's ssh port.
    pub ssh_port: u16,
    /// QEMU's `-name`.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_mem_spec_parsing() {
        let s = VirtioMemSpec::parse("size=2G,block=128M,node=1,requested=256M", 3).unwrap();
        assert_eq!(s.id, "vm3");
        assert_eq!(s.size, 2 << 30);
        assert_eq!(s.block_size, Some(128 << 20));
        assert_eq!(s.node, 1);
        assert_eq!(s.requested, 256 << 20);
        assert_eq!(VirtioMemSpec::parse("8G", 0).unwrap().size, 8 << 30);
        assert!(VirtioMemSpec::parse("colour=blue", 0)
            .unwrap_err()
            .contains("colour"));
    }

    #[test]
    fn validation_catches_mistakes() {
        let mut m = MachineConfig::new(Arch::X86_64);
        m.validate().unwrap();
        m.virtio_mem[0].requested = 3 << 20;
        assert!(m.validate().unwrap_err().to_string().contains("multiples"));
        let mut m = MachineConfig::new(Arch::X86_64);
        m.virtio_mem[0].node = 1;
        assert!(m.validate().unwrap_err().to_string().contains("node 1"));
        let mut p = MachineConfig::new(Arch::Ppc64le);
        p.validate().unwrap();
        p.virtio_mem = MachineConfig::new(Arch::X86_64).virtio_mem;
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not available"));
    }

    #[test]
    fn command_line_has_the_security_properties() {
        let mut m = MachineConfig::new(Arch::X86_64);
        m.numa_nodes = 2;
        m.virtio_mem[0].node = 1;
        let args: Vec<String> = m
            .qemu_args(
                Accel::Tcg,
                &QemuPaths {
                    kernel: "/k".into(),
                    initrd: "/i".into(),
                    qmp: "/d/qmp.sock".into(),
                    agent: "/d/agent.sock".into(),
                    snapshot_store: Some("/d/snapshots.qcow2".into()),
                    ssh_port: 2222,
                    name: "t".into(),
                },
            )
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.contains("hostfwd=tcp:127.0.0.1:2222-:22"),
            "{joined}"
        );
        assert!(joined.contains("restrict=on"));
        assert!(joined.contains("unix:/d/qmp.sock,server=on,wait=off"));
        assert!(joined.contains("-no-reboot"));
        assert!(joined.contains("socket,id=agent,path=/d/agent.sock,server=on,wait=off"));
        assert!(joined.contains("virtserialport,chardev=agent,name=hotfuzz.agent"));
        assert!(joined.contains("if=none,id=snapstore,format=qcow2,file=/d/snapshots.qcow2"));
        assert!(joined.contains("node,nodeid=1,memdev=ram-node1,cpus=1"));
        assert!(joined.contains("virtio-mem-pci,id=vm0,memdev=vm0-mem,node=1,requested-size=0"));
        assert!(joined.contains("maxmem=9216M"));
        // The kernel command line is one argument.
        let i = args.iter().position(|a| a == "-append").unwrap();
        assert!(args[i + 1].starts_with("console=ttyS0 panic=-1"));
        // Snapshot mode: a dead guest stays paused in QEMU, and TCG avoids the TSC.
        assert!(joined.contains("-action shutdown=pause"), "{joined}");
        assert!(args[i + 1].ends_with("tsc=unstable clocksource=hpet"));
        assert!(!m.boot_cmdline(Accel::Kvm, true).contains("tsc="));
        assert!(!m.boot_cmdline(Accel::Kvm, false).contains("lpj="));
        assert!(m.boot_cmdline(Accel::Tcg, false).contains("lpj="));
        assert!(!m.boot_cmdline(Accel::Tcg, false).contains("tsc="));
    }
}
