//! Finding a dynamically linked guest program's interpreter and shared libraries inside one or
//! more sysroots (the host's `/` for the native architecture, unpacked Debian packages for a
//! foreign one). Reads ELF headers; never runs the program.

use crate::error::{Error, IoContext, Result};
use object::read::elf::{Dyn, ElfFile64, FileHeader, ProgramHeader, SectionHeader};
use object::Endianness;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// An ELF program's runtime needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfNeeds {
    /// `PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`; `None` for static binaries.
    pub interp: Option<String>,
    /// `DT_NEEDED` entries.
    pub needed: Vec<String>,
}

/// Reads interpreter and `DT_NEEDED` entries of a 64-bit ELF.
pub fn elf_needs(data: &[u8]) -> Result<ElfNeeds> {
    if !(data.as_ptr() as usize).is_multiple_of(8) {
        // ELF structures are read in place and must be aligned (include_bytes! data is not).
        let mut words = vec![0u64; data.len().div_ceil(8)];
        // SAFETY: the u64 buffer has at least data.len() bytes; u8 has no alignment needs.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), data.len()) };
        bytes.copy_from_slice(data);
        return elf_needs(bytes);
    }
    let f = ElfFile64::<Endianness>::parse(data)
        .map_err(|e| Error::Image(format!("not a 64-bit ELF: {e}")))?;
    let endian = f.endian();
    let hdr = f.elf_header();
    let mut needs = ElfNeeds::default();
    for ph in hdr
        .program_headers(endian, data)
        .map_err(|e| Error::Image(e.to_string()))?
    {
        if ph.p_type(endian) == object::elf::PT_INTERP {
            if let Ok(bytes) = ph.data(endian, data) {
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                needs.interp = Some(String::from_utf8_lossy(&bytes[..end]).into_owned());
            }
        }
    }
    let sections = hdr
        .sections(endian, data)
        .map_err(|e| Error::Image(e.to_string()))?;
    for sh in sections.iter() {
        if let Ok(Some((dyns, link))) = sh.dynamic(endian, data) {
            let strings = sections
                .strings(endian, data, link)
                .map_err(|e| Error::Image(e.to_string()))?;
            for d in dyns {
                if d.d_tag(endian) as u32 == object::elf::DT_NEEDED {
                    if let Ok(name) = d.string(endian, strings) {
                        needs
                            .needed
                            .push(String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
        }
    }
    Ok(needs)
}

/// A set of sysroots searched in order.
#[derive(Debug, Clone)]
pub struct Sysroots {
    roots: Vec<PathBuf>,
    multiarch: String,
}

impl Sysroots {
    /// Sysroots `roots` for Debian multiarch triple `multiarch` (e.g. `x86_64-linux-gnu`).
    pub fn new(roots: Vec<PathBuf>, multiarch: &str) -> Sysroots {
        Sysroots {
            roots,
            multiarch: multiarch.to_string(),
        }
    }

    /// Resolves an absolute guest path inside the sysroots, following symlinks (absolute link
    /// targets are taken relative to the same root).
    pub fn locate(&self, guest_path: &str) -> Option<PathBuf> {
        self.roots
            .iter()
            .find_map(|r| resolve_in_root(r, Path::new(guest_path)))
    }

    /// Finds a library by soname in the usual Debian library directories.
    pub fn find_library(&self, soname: &str) -> Option<(String, PathBuf)> {
        let dirs = [
            format!("/lib/{}", self.multiarch),
            format!("/usr/lib/{}", self.multiarch),
            "/lib64".to_string(),
            "/usr/lib64".to_string(),
            "/lib".to_string(),
            "/usr/lib".to_string(),
        ];
        for d in &dirs {
            let gp = format!("{d}/{soname}");
            if let Some(p) = self.locate(&gp) {
                return Some((gp, p));
            }
        }
        None
    }

    /// The closure of files a program at `guest_path` needs: guest path → host file, including
    /// the program itself, its interpreter and all libraries, transitively.
    pub fn closure(&self, guest_path: &str) -> Result<BTreeMap<String, PathBuf>> {
        let mut out = BTreeMap::new();
        let prog = self.locate(guest_path).ok_or_else(|| {
            Error::Image(format!(
                "{guest_path} not found in {}",
                self.describe_roots()
            ))
        })?;
        let mut queue = vec![(guest_path.to_string(), prog)];
        while let Some((gp, hp)) = queue.pop() {
            if out.contains_key(&gp) {
                continue;
            }
            let data = fs::read(&hp).ctx(|| format!("reading {}", hp.display()))?;
            out.insert(gp.clone(), hp.clone());
            let needs =
                elf_needs(&data).map_err(|e| Error::Image(format!("{}: {e}", hp.display())))?;
            if let Some(interp) = needs.interp {
                let ip = self.locate(&interp).ok_or_else(|| {
                    Error::Image(format!(
                        "interpreter {interp} of {gp} not found in {}",
                        self.describe_roots()
                    ))
                })?;
                queue.push((interp, ip));
            }
            for so in needs.needed {
                let (lgp, lhp) = self.find_library(&so).ok_or_else(|| {
                    Error::Image(format!(
                        "library {so} needed by {gp} not found in {}",
                        self.describe_roots()
                    ))
                })?;
                queue.push((lgp, lhp));
            }
        }
        Ok(out)
    }

    fn describe_roots(&self) -> String {
        self.roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Resolves `path` (absolute, as seen inside `root`) to a regular file on the host.
pub fn resolve_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut hops = 0;
    while let Some(p) = pending.pop() {
        // Walk component by component so that symlinked directories (/lib -> usr/lib) are
        // followed inside the root.
        let mut cur = PathBuf::from("/");
        let comps: Vec<Component> = p.components().collect();
        let mut i = 0;
        let mut restarted = false;
        while i < comps.len() {
            match comps[i] {
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => {
                    cur.pop();
                }
                Component::Normal(c) => {
                    let next = cur.join(c);
                    let host = root.join(next.strip_prefix("/").ok()?);
                    let md = fs::symlink_metadata(&host).ok()?;
                    if md.file_type().is_symlink() {
                        hops += 1;
                        if hops > 40 {
                            return None;
                        }
                        let target = fs::read_link(&host).ok()?;
                        let base = if target.is_absolute() {
                            target
                        } else {
                            cur.join(target)
                        };
                        let mut rest = base;
                        for c in &comps[i + 1..] {
                            rest.push(c.as_os_str());
                        }
                        pending.push(rest);
                        restarted = true;
                        break;
                    }
                    cur = next;
                }
                Component::Prefix(_) => return None,
            }
            i += 1;
        }
        if restarted {
            continue;
        }
        let host = root.join(cur.strip_prefix("/").ok()?);
        return host.is_file().then_some(host);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn follows_absolute_links_inside_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("usr/lib/x")).unwrap();
        fs::write(r.join("usr/lib/x/libfoo.so.1"), b"elf").unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        fs::create_dir_all(r.join("lib64")).unwrap();
        symlink("/lib/x/libfoo.so.1", r.join("lib64/ld.so")).unwrap();
        assert_eq!(
            resolve_in_root(r, Path::new("/lib64/ld.so")),
            Some(r.join("usr/lib/x/libfoo.so.1"))
        );
        assert_eq!(resolve_in_root(r, Path::new("/lib/x/missing")), None);
        // A link loop terminates.
        symlink("/loop", r.join("loop")).unwrap();
        assert_eq!(resolve_in_root(r, Path::new("/loop")), None);
    }

    #[test]
    fn host_shell_needs_libc() {
        let sh = fs::read("/bin/sh").unwrap();
        let n = elf_needs(&sh).unwrap();
        assert!(n.interp.is_some());
        assert!(n.needed.iter().any(|l| l.starts_with("libc.so")), "{n:?}");
    }
}
