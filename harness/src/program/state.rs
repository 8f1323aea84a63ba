//! What the guest looks like: memory blocks and their zones, the memory block size, NUMA
//! nodes, virtio-mem devices with their sizes, and the operations this kernel cannot run.
//! Predicted from a machine configuration ([`GuestState::model`]) when no guest is at hand;
//! `run::probe::guest_state` reads it from a running guest.

use hotfuzz_vm::{Arch, MachineConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One memory block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockState {
    /// Block number N of memoryN.
    pub id: u64,
    /// Online or not.
    pub online: bool,
    /// `valid_zones`: the zone when online, the candidates when offline.
    pub zones: String,
    /// NUMA node.
    pub node: u32,
}

/// One virtio-mem device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Index (the value of a `vmem_dev` resource).
    pub index: u32,
    /// QOM id.
    pub id: String,
    /// Guest physical base address.
    pub memaddr: u64,
    /// Maximum size (backend size).
    pub max: u64,
    /// Device block size.
    pub block_size: u64,
    /// Requested size.
    pub requested: u64,
    /// Plugged size.
    pub size: u64,
    /// NUMA node.
    pub node: u32,
}

/// A snapshot of the guest's memory layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestState {
    /// Architecture.
    pub arch: Arch,
    /// Page size.
    pub page_size: u64,
    /// Memory block size.
    pub block_size: u64,
    /// Present memory blocks.
    pub blocks: Vec<BlockState>,
    /// NUMA nodes (possible ones).
    pub nodes: Vec<u32>,
    /// virtio-mem devices.
    pub devices: Vec<DeviceState>,
    /// Boot RAM.
    pub boot_ram: u64,
    /// Operations the kernel cannot run.
    pub unsupported: BTreeSet<String>,
}

impl GuestState {
    /// The state a freshly booted guest of `machine` is expected to have.
    pub fn model(machine: &MachineConfig) -> GuestState {
        let block_size: u64 = match machine.arch {
            Arch::X86_64 => 128 << 20,
            Arch::Ppc64le => 256 << 20,
        };
        let nodes: Vec<u32> = (0..machine.numa_nodes.max(1)).collect();
        let nblocks = machine.memory / block_size;
        let per_node = (nblocks / nodes.len() as u64).max(1);
        let blocks = (0..nblocks)
            .map(|id| BlockState {
                id,
                online: true,
                zones: if id == 0 {
                    "DMA".into()
                } else {
                    "DMA32".into()
                },
                node: ((id / per_node) as u32).min(nodes.len() as u32 - 1),
            })
            .collect();
        // q35 puts device memory at 4 GiB (above the PCI hole) for boot RAM <= 2.75 GiB.
        let mut addr: u64 = 4 << 30;
        let devices = machine
            .virtio_mem
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let d = DeviceState {
                    index: i as u32,
                    id: v.id.clone(),
                    memaddr: addr,
                    max: v.size,
                    block_size: v.block_size.unwrap_or(2 << 20),
                    requested: v.requested,
                    size: v.requested,
                    node: v.node,
                };
                addr += v.size.div_ceil(1 << 30) << 30;
                d
            })
            .collect();
        GuestState {
            arch: machine.arch,
            page_size: if machine.arch == Arch::Ppc64le {
                64 << 10
            } else {
                4096
            },
            block_size,
            blocks,
            nodes,
            devices,
            boot_ram: machine.memory,
            unsupported: BTreeSet::new(),
        }
    }

    /// Whether the state is one a kernel can have: block and page sizes that are powers of
    /// two (a zero would divide by zero later), devices of at most 2^20 blocks. A state file
    /// given by the user and a state read from a guest both go through this.
    pub fn check(&self) -> Result<(), String> {
        let pow2 = |what: &str, v: u64, max: u64| {
            if v.is_power_of_two() && v <= max {
                Ok(())
            } else {
                Err(format!(
                    "{what} {v:#x} is not a power of two up to {max:#x}"
                ))
            }
        };
        pow2("page_size", self.page_size, 1 << 30)?;
        pow2("block_size", self.block_size, 1 << 40)?;
        if self.block_size < self.page_size {
            return Err(format!(
                "block_size {:#x} is smaller than page_size {:#x}",
                self.block_size, self.page_size
            ));
        }
        for d in &self.devices {
            pow2(
                &format!("device {} block_size", d.id),
                d.block_size,
                1 << 40,
            )?;
            if d.max / self.block_size.max(d.block_size) > 1 << 20 {
                return Err(format!("device {} is more than 2^20 blocks", d.id));
            }
        }
        if self.nodes.is_empty() {
            return Err("no NUMA nodes".into());
        }
        Ok(())
    }

    /// Memory block ids virtio-mem devices can ever provide (present or not).
    pub fn hotplug_blocks(&self) -> Vec<u64> {
        let mut v = Vec::new();
        for d in &self.devices {
            let bs = self.block_size.max(1);
            let first = d.memaddr / bs;
            let n = (d.max / bs).min(1 << 20);
            v.extend(first..first.saturating_add(n));
        }
        v
    }

    /// Pages per memory block.
    pub fn pages_per_block(&self) -> u64 {
        (self.block_size / self.page_size.max(1)).max(1)
    }
}

/// Parses a kernel node list like `0-1,3`.
pub fn parse_node_list(s: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    v.extend(a..=b.min(a + 1024));
                }
            }
            None => {
                if let Ok(n) = part.parse() {
                    v.push(n);
                }
            }
        }
    }
    if v.is_empty() {
        v.push(0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists() {
        assert_eq!(parse_node_list("0"), vec![0]);
        assert_eq!(parse_node_list("0-2,5\n"), vec![0, 1, 2, 5]);
        assert_eq!(parse_node_list("garbage"), vec![0]);
    }

    #[test]
    fn impossible_states_are_refused() {
        let good = GuestState::model(&MachineConfig::new(Arch::X86_64));
        assert_eq!(good.check(), Ok(()));
        let mut s = good.clone();
        s.block_size = 0;
        assert!(s.check().unwrap_err().contains("block_size 0x0"));
        // Nothing divides by zero even unchecked.
        assert!(s.hotplug_blocks().len() <= 1 << 20);
        let mut s = good.clone();
        s.devices[0].block_size = 0;
        assert!(s.check().unwrap_err().contains("device vm0 block_size"));
        let mut s = good.clone();
        s.page_size = 0;
        assert!(s.check().is_err());
        let mut s = good.clone();
        s.devices[0].max = u64::MAX;
        assert!(s.check().unwrap_err().contains("2^20"));
        let mut s = good;
        s.nodes.clear();
        assert!(s.check().is_err());
    }

    #[test]
    fn model_of_the_default_machine() {
        let s = GuestState::model(&MachineConfig::new(Arch::X86_64));
        assert_eq!(s.blocks.len(), 8);
        assert_eq!(s.devices.len(), 1);
        assert_eq!(s.devices[0].memaddr, 4 << 30);
        let hb = s.hotplug_blocks();
        assert_eq!(hb.first(), Some(&32));
        assert_eq!(hb.len(), 32);
        assert_eq!(s.pages_per_block(), 32768);
    }
}
