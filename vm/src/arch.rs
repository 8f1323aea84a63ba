//! Guest architectures hotfuzz knows how to boot.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A guest architecture together with the machine hotfuzz emulates for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86_64 on QEMU's q35 machine, with virtio-mem, pc-dimm and balloon.
    X86_64,
    /// 64-bit little-endian POWER on QEMU's powernv9 machine (memtrace, no virtio-mem).
    Ppc64le,
}

impl Arch {
    /// The architecture of the machine hotfuzz runs on, if it is one it can emulate natively.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "powerpc64" if cfg!(target_endian = "little") => Some(Arch::Ppc64le),
            _ => None,
        }
    }

    /// Name of the QEMU system emulator binary.
    pub fn qemu_binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Ppc64le => "qemu-system-ppc64",
        }
    }

    /// Debian package that provides [`Arch::qemu_binary`].
    pub fn qemu_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86",
            Arch::Ppc64le => "qemu-system-ppc",
        }
    }

    /// Debian architecture name (for `apt-get download pkg:ARCH`).
    pub fn debian_arch(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Ppc64le => "ppc64el",
        }
    }

    /// Kernel console device the guest prints to.
    pub fn console_device(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Ppc64le => "hvc0",
        }
    }

    /// ELF `e_machine` of kernels and binaries for this architecture.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => object::elf::EM_X86_64,
            Arch::Ppc64le => object::elf::EM_PPC64,
        }
    }

    /// Rust target triple used to build guest binaries for this architecture.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Ppc64le => "powerpc64le-unknown-linux-gnu",
        }
    }

    /// Multiarch library directory name used by Debian.
    pub fn multiarch(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Ppc64le => "powerpc64le-linux-gnu",
        }
    }

    /// Short name as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Ppc64le => "ppc64le",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x86_64" | "amd64" | "x86-64" => Ok(Arch::X86_64),
            "ppc64le" | "ppc64el" | "powerpc64le" => Ok(Arch::Ppc64le),
            other => Err(format!(
                "unknown architecture '{other}' (expected x86_64 or ppc64le)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_aliases() {
        assert_eq!("amd64".parse::<Arch>().unwrap(), Arch::X86_64);
        assert_eq!("ppc64el".parse::<Arch>().unwrap(), Arch::Ppc64le);
        assert!("arm64".parse::<Arch>().unwrap_err().contains("arm64"));
    }
}
