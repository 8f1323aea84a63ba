//! Kernels: the embedded Debian default, user-supplied images and build directories.
//!
//! A [`Kernel`] is a checked kernel image plus what comes with it (System.map, config,
//! modules). Images are identified by content, so "not a kernel" and "wrong architecture"
//! are caught before QEMU starts.

use crate::arch::Arch;
use crate::cache::{cache_subdir, FileLock};
use crate::debian;
use crate::error::{Error, IoContext, Result};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::Endianness;
use serde::Serialize;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Debian amd64 kernel hotfuzz uses by default (pinned so results are comparable).
pub const DEFAULT_X86_64_PACKAGE: &str = "linux-image-6.12.117+deb12-amd64-unsigned";
/// Pattern of acceptable fallbacks when the pinned amd64 package has left the archive.
const X86_64_FALLBACK: (&str, &str) = ("linux-image-6.12.", "+deb12-amd64-unsigned");
/// Debian ppc64el kernel hotfuzz uses by default.
pub const DEFAULT_PPC64LE_PACKAGE: &str = "linux-image-6.1.0-50-powerpc64le";
const PPC64LE_FALLBACK: (&str, &str) = ("linux-image-6.1.0-", "-powerpc64le");

/// On-disk format of a kernel image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelFormat {
    /// x86 boot protocol image (`arch/x86/boot/bzImage`, `/boot/vmlinuz-*`).
    BzImage,
    /// An ELF `vmlinux`.
    Elf,
}

/// Where a kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// Debian's kernel package for the architecture: pinned, with fallback to the newest of the
    /// same series.
    DebianDefault,
    /// A specific Debian kernel package.
    DebianPackage(String),
    /// A user-supplied image (bzImage or vmlinux) or kernel build directory.
    Path {
        /// Image file or build directory.
        path: PathBuf,
        /// Directory of modules (`lib/modules/<version>` or a build tree).
        modules: Option<PathBuf>,
        /// System.map for symbolization.
        system_map: Option<PathBuf>,
    },
}

/// A kernel that has been identified and is ready to boot.
#[derive(Debug, Clone, Serialize)]
pub struct Kernel {
    /// Architecture the image is for.
    pub arch: Arch,
    /// The image as supplied.
    pub image: PathBuf,
    /// Format of `image`.
    pub format: KernelFormat,
    /// Image QEMU loads: for x86 bzImages with a PVH entry point, the uncompressed vmlinux
    /// extracted from it (boots faster: no firmware real-mode path, no decompression).
    pub boot_image: PathBuf,
    /// Kernel release (`uname -r`), when it can be read from the image or modules.
    pub release: Option<String>,
    /// Full `Linux version ...` banner, when found.
    pub banner: Option<String>,
    /// System.map, if known.
    pub system_map: Option<PathBuf>,
    /// Kernel config, if known.
    pub config: Option<PathBuf>,
    /// Module directory, if known.
    pub modules_dir: Option<PathBuf>,
    /// An ELF vmlinux with symbols, if known (build directories).
    pub vmlinux: Option<PathBuf>,
    /// Human-readable origin ("Debian linux-image-... 6.12.117-1~deb12u1" or a path).
    pub origin: String,
}

impl Kernel {
    /// Resolves `source` for `arch`, fetching the Debian package when needed.
    pub fn resolve(source: &KernelSource, arch: Arch) -> Result<Kernel> {
        match source {
            KernelSource::DebianDefault => {
                let name = pick_debian_package(arch)?;
                Kernel::from_debian(&name, arch)
            }
            KernelSource::DebianPackage(name) => Kernel::from_debian(name, arch),
            KernelSource::Path {
                path,
                modules,
                system_map,
            } => Kernel::from_path(path, modules.as_deref(), system_map.as_deref(), arch),
        }
    }

    /// Fetches (or reuses from the cache) Debian package `name` and identifies its kernel.
    pub fn from_debian(name: &str, arch: Arch) -> Result<Kernel> {
        debian::ensure_architecture(arch)?;
        let pkg = debian::fetch(name, arch)?;
        let boot = pkg.root.join("boot");
        let entries: Vec<PathBuf> = fs::read_dir(&boot)
            .ctx(|| format!("listing {}", boot.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        let find = |prefix: &str| {
            entries
                .iter()
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .cloned()
        };
        let image = find("vmlinuz-")
            .or_else(|| find("vmlinux-"))
            .ok_or_else(|| Error::Kernel(format!("package {name} has no kernel image in /boot")))?;
        let release = image
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once('-'))
            .map(|(_, r)| r.to_string());
        let modules_dir = release
            .as_ref()
            .map(|r| pkg.root.join("lib/modules").join(r))
            .filter(|p| p.is_dir());
        let mut k = Kernel::identify(&image, arch)?;
        k.release = release.or(k.release);
        k.system_map = find("System.map-");
        k.config = find("config-");
        k.modules_dir = modules_dir;
        k.origin = format!("Debian {name} {}", pkg.version);
        Ok(k)
    }

    /// Uses a kernel image or build directory given by the user.
    pub fn from_path(
        path: &Path,
        modules: Option<&Path>,
        system_map: Option<&Path>,
        arch: Arch,
    ) -> Result<Kernel> {
        if !path.exists() {
            return Err(Error::Kernel(format!(
                "kernel {} does not exist",
                path.display()
            )));
        }
        let (image, build_dir) = if path.is_dir() {
            (
                find_image_in_build_dir(path, arch)?,
                Some(path.to_path_buf()),
            )
        } else {
            (path.to_path_buf(), None)
        };
        let mut k = Kernel::identify(&image, arch)?;
        k.origin = path.display().to_string();
        if let Some(dir) = &build_dir {
            let map = dir.join("System.map");
            k.system_map = map.is_file().then_some(map);
            let cfg = dir.join(".config");
            k.config = cfg.is_file().then_some(cfg);
            let vmlinux = dir.join("vmlinux");
            k.vmlinux = vmlinux.is_file().then_some(vmlinux);
            k.modules_dir = Some(dir.clone());
        }
        if let Some(m) = modules {
            if !m.is_dir() {
                return Err(Error::Kernel(format!(
                    "modules directory {} does not exist",
                    m.display()
                )));
            }
            k.modules_dir = Some(m.to_path_buf());
        }
        if let Some(s) = system_map {
            if !s.is_file() {
                return Err(Error::Kernel(format!(
                    "System.map {} does not exist",
                    s.display()
                )));
            }
            k.system_map = Some(s.to_path_buf());
        }
        if k.format == KernelFormat::Elf && k.vmlinux.is_none() {
            k.vmlinux = Some(image.clone());
        }
        Ok(k)
    }

    /// Identifies `image` by content and checks it is a kernel for `arch`.
    pub fn identify(image: &Path, arch: Arch) -> Result<Kernel> {
        let data = fs::read(image).ctx(|| format!("reading kernel {}", image.display()))?;
        let (format, found_arch) = detect_format(&data).ok_or_else(|| {
            Error::Kernel(format!(
                "{} is not a kernel image (expected an x86 bzImage or an ELF vmlinux)",
                image.display()
            ))
        })?;
        if found_arch != Some(arch) {
            let what = found_arch
                .map(|a| a.to_string())
                .unwrap_or_else(|| "an unsupported architecture".into());
            return Err(Error::Kernel(format!(
                "{} is a kernel for {what}, but the guest is {arch}",
                image.display()
            )));
        }
        let banner = find_banner(&data);
        if format == KernelFormat::Elf {
            if banner.is_none() {
                return Err(Error::Kernel(format!(
                    "{} is an ELF file but not a Linux kernel (no `Linux version` banner)",
                    image.display()
                )));
            }
            if arch == Arch::X86_64 && !has_pvh_note(&data) {
                return Err(Error::Kernel(format!(
                    "{} is an x86_64 vmlinux without a PVH entry note (CONFIG_PVH); \
                     boot its bzImage (arch/x86/boot/bzImage) instead",
                    image.display()
                )));
            }
        }
        let release = match format {
            KernelFormat::BzImage => bzimage_version(&data),
            KernelFormat::Elf => None,
        }
        .or_else(|| {
            banner
                .as_deref()
                .and_then(|b| b.strip_prefix("Linux version "))
                .and_then(|b| b.split_whitespace().next())
                .map(str::to_string)
        });
        let boot_image = match (format, arch) {
            (KernelFormat::BzImage, Arch::X86_64) => match extract_pvh_vmlinux(image, &data) {
                Ok(Some(p)) => p,
                Ok(None) => image.to_path_buf(),
                Err(e) => {
                    tracing::warn!("cannot extract a PVH vmlinux from {}: {e}", image.display());
                    image.to_path_buf()
                }
            },
            _ => image.to_path_buf(),
        };
        Ok(Kernel {
            arch,
            image: image.to_path_buf(),
            format,
            boot_image,
            release,
            banner,
            system_map: None,
            config: None,
            modules_dir: None,
            vmlinux: None,
            origin: image.display().to_string(),
        })
    }

    /// Reads a `CONFIG_X` value from the kernel config, if the config is known.
    pub fn config_value(&self, key: &str) -> Option<String> {
        let text = fs::read_to_string(self.config.as_ref()?).ok()?;
        let prefix = format!("{key}=");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim_matches('"').to_string())
    }
}

/// Chooses the Debian kernel package: the pinned one if apt offers it, else the newest of the
/// same series (with a message), else the pinned one from the cache.
pub fn pick_debian_package(arch: Arch) -> Result<String> {
    let (pinned, (prefix, suffix)) = match arch {
        Arch::X86_64 => (DEFAULT_X86_64_PACKAGE, X86_64_FALLBACK),
        Arch::Ppc64le => (DEFAULT_PPC64LE_PACKAGE, PPC64LE_FALLBACK),
    };
    if debian::cached(pinned, arch)?.is_some() {
        return Ok(pinned.to_string());
    }
    debian::ensure_architecture(arch)?;
    if debian::candidate_version(pinned, arch)?.is_some() {
        return Ok(pinned.to_string());
    }
    let mut candidates: Vec<String> = debian::package_names(prefix)?
        .into_iter()
        .filter(|n| {
            n.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(suffix))
                .is_some_and(|mid| !mid.is_empty() && mid.chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    candidates.sort_by_key(|n| debian::numeric_key(n));
    match candidates.pop() {
        Some(newest) => {
            eprintln!(
                "hotfuzz: pinned kernel {pinned} is not on offer; using the newest of the series: {newest}"
            );
            Ok(newest)
        }
        // Not known to apt at all: debian::fetch falls back to a cached copy or explains.
        None => Ok(pinned.to_string()),
    }
}

fn find_image_in_build_dir(dir: &Path, arch: Arch) -> Result<PathBuf> {
    let candidates: &[&str] = match arch {
        Arch::X86_64 => &[
            "arch/x86/boot/bzImage",
            "arch/x86_64/boot/bzImage",
            "vmlinux",
        ],
        Arch::Ppc64le => &["vmlinux", "arch/powerpc/boot/zImage"],
    };
    candidates
        .iter()
        .map(|c| dir.join(c))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Kernel(format!(
                "{} is a directory without a built kernel (looked for {})",
                dir.display(),
                candidates.join(", ")
            ))
        })
}

/// Detects bzImage / ELF and the architecture from the first bytes.
pub fn detect_format(data: &[u8]) -> Option<(KernelFormat, Option<Arch>)> {
    if data.len() > 0x260 && &data[0x202..0x206] == b"HdrS" && data[0x1fe..0x200] == [0x55, 0xaa] {
        return Some((KernelFormat::BzImage, Some(Arch::X86_64)));
    }
    if data.len() >= 64 && &data[..4] == b"\x7fELF" {
        let class64 = data[4] == 2;
        let little = data[5] == 1;
        let machine = if little {
            u16::from_le_bytes([data[18], data[19]])
        } else {
            u16::from_be_bytes([data[18], data[19]])
        };
        let arch = match (class64, little, machine) {
            (true, true, object::elf::EM_X86_64) => Some(Arch::X86_64),
            (true, true, object::elf::EM_PPC64) => Some(Arch::Ppc64le),
            _ => None,
        };
        // An ELF that is not an executable (a .ko, a .so) is not a kernel.
        let etype = if little {
            u16::from_le_bytes([data[16], data[17]])
        } else {
            u16::from_be_bytes([data[16], data[17]])
        };
        if etype != object::elf::ET_EXEC && etype != object::elf::ET_DYN {
            return None;
        }
        return Some((KernelFormat::Elf, arch));
    }
    None
}

fn bzimage_version(data: &[u8]) -> Option<String> {
    let off = u16::from_le_bytes([data[0x20e], data[0x20f]]) as usize + 0x200;
    let s = data.get(off..off.checked_add(256)?.min(data.len()))?;
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    let v = std::str::from_utf8(&s[..end]).ok()?;
    v.split_whitespace().next().map(str::to_string)
}

fn find_banner(data: &[u8]) -> Option<String> {
    let pos = memchr::memmem::find(data, b"Linux version ")?;
    let rest = &data[pos..data.len().min(pos + 512)];
    let end = rest
        .iter()
        .position(|&b| b == 0 || b == b'\n')
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok().map(str::to_string)
}

/// For an x86 bzImage whose payload is an ELF with a PVH entry note, writes the uncompressed
/// vmlinux into the cache (keyed by the image's hash) and returns its path. `Ok(None)` when the
/// kernel has no PVH entry or uses a compression hotfuzz cannot undo.
pub fn extract_pvh_vmlinux(image: &Path, data: &[u8]) -> Result<Option<PathBuf>> {
    let hash = blake3::hash(data).to_hex().to_string();
    let dir = cache_subdir("pvh")?;
    let out = dir.join(format!("{}.vmlinux", &hash[..32]));
    let none_marker = dir.join(format!("{}.none", &hash[..32]));
    if out.is_file() {
        return Ok(Some(out));
    }
    if none_marker.exists() {
        return Ok(None);
    }
    let _lock = FileLock::acquire(&dir.join(".lock"))?;
    if out.is_file() {
        return Ok(Some(out));
    }
    let setup_sects = match data[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let payload_off = u32::from_le_bytes(data[0x248..0x24c].try_into().unwrap()) as usize;
    let payload_len = u32::from_le_bytes(data[0x24c..0x250].try_into().unwrap()) as usize;
    let start = (setup_sects + 1) * 512 + payload_off;
    let Some(payload) = data.get(start..start + payload_len) else {
        return Ok(None);
    };
    let Some(vmlinux) = decompress_payload(payload)? else {
        let _ = fs::write(&none_marker, b"unsupported compression");
        return Ok(None);
    };
    if !has_pvh_note(&vmlinux) {
        let _ = fs::write(&none_marker, b"no PVH entry note");
        return Ok(None);
    }
    crate::cache::atomic_write(&out, &vmlinux)?;
    tracing::debug!(
        "extracted PVH vmlinux from {} to {}",
        image.display(),
        out.display()
    );
    Ok(Some(out))
}

fn decompress_payload(p: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let err = |e: String| Error::Kernel(format!("decompressing the bzImage payload: {e}"));
    if p.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        // The kernel appends the uncompressed size (4 bytes) after the zstd frame.
        let frame = &p[..p.len().saturating_sub(4)];
        let mut dec =
            ruzstd::decoding::StreamingDecoder::new(frame).map_err(|e| err(e.to_string()))?;
        dec.read_to_end(&mut out).map_err(|e| err(e.to_string()))?;
    } else if p.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(p)
            .read_to_end(&mut out)
            .map_err(|e| err(e.to_string()))?;
    } else if p.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        let mut r = std::io::BufReader::new(p);
        lzma_rs::xz_decompress(&mut r, &mut out).map_err(|e| err(e.to_string()))?;
    } else {
        return Ok(None);
    }
    Ok(Some(out))
}

/// True when an x86_64 ELF carries the Xen `PHYS32_ENTRY` note QEMU uses for PVH boot.
pub fn has_pvh_note(elf: &[u8]) -> bool {
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    let Ok(f) = ElfFile64::<Endianness>::parse(elf) else {
        return false;
    };
    let endian = f.endian();
    let Ok(phdrs) = f.elf_header().program_headers(endian, elf) else {
        return false;
    };
    for ph in phdrs {
        if let Ok(Some(mut notes)) = ph.notes(endian, elf) {
            while let Ok(Some(n)) = notes.next() {
                if n.name() == b"Xen" && n.n_type(endian) == XEN_ELFNOTE_PHYS32_ENTRY {
                    return true;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_text_and_short_files() {
        assert!(detect_format(b"hello world, I am not a kernel").is_none());
        assert!(detect_format(&[]).is_none());
    }

    #[test]
    fn detects_fake_bzimage_header() {
        let mut d = vec![0u8; 0x400];
        d[0x1fe] = 0x55;
        d[0x1ff] = 0xaa;
        d[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(
            detect_format(&d),
            Some((KernelFormat::BzImage, Some(Arch::X86_64)))
        );
    }

    #[test]
    fn host_binary_is_an_elf_but_its_arch_is_checked() {
        // The test binary itself is an x86_64 (or other host) ELF executable.
        let me = std::env::current_exe().unwrap();
        let d = fs::read(&me).unwrap();
        let (fmt, arch) = detect_format(&d).unwrap();
        assert_eq!(fmt, KernelFormat::Elf);
        assert_eq!(arch, Arch::host());
        let other = match Arch::host() {
            Some(Arch::X86_64) => Arch::Ppc64le,
            _ => Arch::X86_64,
        };
        let e = Kernel::identify(&me, other).unwrap_err().to_string();
        assert!(e.contains("but the guest is"), "{e}");
    }

    #[test]
    fn not_a_kernel_error_names_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bzImage");
        fs::write(&p, b"#!/bin/sh\necho not a kernel\n").unwrap();
        let e = Kernel::identify(&p, Arch::X86_64).unwrap_err().to_string();
        assert!(e.contains("is not a kernel image"), "{e}");
        assert!(e.contains("bzImage"), "{e}");
    }
}
