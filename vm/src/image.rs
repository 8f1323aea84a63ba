//! Initramfs images: a sorted set of entries written as a newc cpio archive, cached by a
//! hash of everything that goes into it.

use crate::cache::{cache_subdir, FileLock};
use crate::error::{Error, IoContext, Result};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Bumped whenever the archive layout changes so old cached images are not reused.
const FORMAT_VERSION: &str = "hotfuzz-initramfs-v1";

/// Where an entry's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Literal bytes.
    Bytes(Vec<u8>),
    /// A host file, copied as is (symlinks followed).
    File(PathBuf),
    /// A kernel module file, decompressed when the archive is written.
    Module(PathBuf),
}

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Source),
    Symlink(String),
}

#[derive(Debug, Clone)]
struct Entry {
    mode: u32,
    kind: Kind,
}

/// A file tree for the guest's initramfs.
#[derive(Debug, Clone, Default)]
pub struct GuestImage {
    entries: BTreeMap<String, Entry>,
}

fn clean(path: &str) -> Result<String> {
    let p = path.trim_start_matches('/');
    if p.is_empty() || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(Error::Image(format!("invalid guest path '{path}'")));
    }
    Ok(p.to_string())
}

impl GuestImage {
    /// An empty image.
    pub fn new() -> GuestImage {
        GuestImage::default()
    }

    fn add_parents(&mut self, p: &str) {
        let mut cur = String::new();
        let comps: Vec<&str> = p.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(c);
            self.entries.entry(cur.clone()).or_insert(Entry {
                mode: 0o755,
                kind: Kind::Dir,
            });
        }
    }

    /// Adds a directory with permission bits `mode` (e.g. 0o700).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        let p = clean(path)?;
        self.add_parents(&p);
        self.entries.insert(
            p,
            Entry {
                mode: mode & 0o7777,
                kind: Kind::Dir,
            },
        );
        Ok(self)
    }

    /// Adds (or replaces) a regular file.
    pub fn file(&mut self, path: &str, source: Source, mode: u32) -> Result<&mut Self> {
        let p = clean(path)?;
        self.add_parents(&p);
        self.entries.insert(
            p,
            Entry {
                mode: mode & 0o7777,
                kind: Kind::File(source),
            },
        );
        Ok(self)
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let p = clean(path)?;
        self.add_parents(&p);
        self.entries.insert(
            p,
            Entry {
                mode: 0o777,
                kind: Kind::Symlink(target.to_string()),
            },
        );
        Ok(self)
    }

    /// True if the image has an entry at `path`.
    pub fn contains(&self, path: &str) -> bool {
        clean(path).is_ok_and(|p| self.entries.contains_key(&p))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the image has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Content hash of the image: entry names, modes, link targets and file contents.
    pub fn key(&self) -> Result<String> {
        let mut h = blake3::Hasher::new();
        h.update(FORMAT_VERSION.as_bytes());
        for (path, e) in &self.entries {
            h.update(path.as_bytes());
            h.update(&[0]);
            h.update(&e.mode.to_le_bytes());
            match &e.kind {
                Kind::Dir => {
                    h.update(b"d");
                }
                Kind::Symlink(t) => {
                    h.update(b"l");
                    h.update(t.as_bytes());
                }
                Kind::File(Source::Bytes(b)) => {
                    h.update(b"f");
                    h.update(blake3::hash(b).as_bytes());
                }
                Kind::File(Source::File(p)) => {
                    h.update(b"f");
                    h.update(&file_hash(p)?);
                }
                Kind::File(Source::Module(p)) => {
                    h.update(b"m");
                    h.update(&file_hash(p)?);
                }
            }
            h.update(&[0xff]);
        }
        Ok(h.finalize().to_hex()[..32].to_string())
    }

    /// Writes the image as an uncompressed newc cpio archive.
    pub fn write_cpio<W: Write>(&self, out: W) -> Result<W> {
        let mut w = out;
        let err = |e: std::io::Error| Error::io("writing cpio archive", e);
        for (ino, (path, e)) in self.entries.iter().enumerate() {
            let b = cpio::newc::Builder::new(path)
                .ino(ino as u32 + 1)
                .uid(0)
                .gid(0)
                .mtime(0);
            let (mode, data): (u32, Vec<u8>) = match &e.kind {
                Kind::Dir => (libc::S_IFDIR | e.mode, Vec::new()),
                Kind::Symlink(t) => (libc::S_IFLNK | 0o777, t.as_bytes().to_vec()),
                Kind::File(src) => (libc::S_IFREG | e.mode, read_source(src)?),
            };
            let nlink = if matches!(e.kind, Kind::Dir) { 2 } else { 1 };
            let len = u32::try_from(data.len())
                .map_err(|_| Error::Image(format!("{path} is too large for cpio")))?;
            let mut fw = b.mode(mode).nlink(nlink).write(w, len);
            fw.write_all(&data).map_err(err)?;
            w = fw.finish().map_err(err)?;
        }
        cpio::newc::trailer(w).map_err(err)
    }

    /// Returns the path of this image in the cache, building it first if needed.
    pub fn build_cached(&self) -> Result<PathBuf> {
        let key = self.key()?;
        let dir = cache_subdir("images")?;
        let out = dir.join(format!("{key}.cpio"));
        if out.is_file() {
            return Ok(out);
        }
        let _lock = FileLock::acquire(&dir.join(".lock"))?;
        if out.is_file() {
            return Ok(out);
        }
        let tmp = tempfile::NamedTempFile::new_in(&dir)
            .ctx(|| format!("creating a temporary image in {}", dir.display()))?;
        let w = self.write_cpio(BufWriter::new(tmp.as_file()))?;
        w.into_inner()
            .map_err(|e| Error::io("flushing image", e.into_error()))?
            .sync_all()
            .ctx(|| "syncing image".into())?;
        tmp.persist(&out)
            .map_err(|e| Error::io(format!("storing image {}", out.display()), e.error))?;
        prune_old_images(&dir, 16);
        Ok(out)
    }
}

fn read_source(src: &Source) -> Result<Vec<u8>> {
    match src {
        Source::Bytes(b) => Ok(b.clone()),
        Source::File(p) => fs::read(p).ctx(|| format!("reading {}", p.display())),
        Source::Module(p) => crate::modules::read_module(p),
    }
}

type HashMemo = HashMap<(PathBuf, u64, Option<SystemTime>), [u8; 32]>;
static HASH_MEMO: Mutex<Option<HashMemo>> = Mutex::new(None);

/// Content hash of a host file, memoized per (path, size, mtime) within the process.
fn file_hash(p: &Path) -> Result<[u8; 32]> {
    let md = fs::metadata(p).ctx(|| format!("reading {}", p.display()))?;
    let key = (p.to_path_buf(), md.len(), md.modified().ok());
    if let Some(h) = HASH_MEMO
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&key)
    {
        return Ok(*h);
    }
    let data = fs::read(p).ctx(|| format!("reading {}", p.display()))?;
    let h = *blake3::hash(&data).as_bytes();
    HASH_MEMO
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(key, h);
    Ok(h)
}

/// Keeps the `keep` most recently used images and deletes the rest.
fn prune_old_images(dir: &Path, keep: usize) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut imgs: Vec<(SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cpio"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if imgs.len() <= keep {
        return;
    }
    imgs.sort();
    for (_, p) in &imgs[..imgs.len() - keep] {
        let _ = fs::remove_file(p);
    }
}

/// Writes `parts` one after the other into `dest`. The kernel unpacks concatenated cpio
/// archives in order, later entries overriding earlier ones; hotfuzz uses this to add per-VM
/// files (the ssh key) to a shared cached image without rebuilding it.
pub fn concat_initrd(dest: &Path, base: &Path, overlay: &[u8]) -> Result<()> {
    fs::copy(base, dest).ctx(|| format!("copying {} to {}", base.display(), dest.display()))?;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dest)
        .ctx(|| format!("opening {}", dest.display()))?;
    f.write_all(overlay)
        .ctx(|| format!("appending to {}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GuestImage {
        let mut g = GuestImage::new();
        g.file(
            "/etc/passwd",
            Source::Bytes(b"root:x:0:0::/root:/bin/sh\n".to_vec()),
            0o644,
        )
        .unwrap();
        g.symlink("/bin/sh", "busybox").unwrap();
        g.dir("/root", 0o700).unwrap();
        g
    }

    #[test]
    fn cpio_round_trips_through_a_reader() {
        let g = sample();
        let data = g.write_cpio(Vec::new()).unwrap();
        let mut names = Vec::new();
        let mut r = &data[..];
        loop {
            let rd = cpio::newc::Reader::new(r).unwrap();
            if rd.entry().is_trailer() {
                break;
            }
            names.push((rd.entry().name().to_string(), rd.entry().mode()));
            r = rd.finish().unwrap();
        }
        assert_eq!(
            names,
            vec![
                ("bin".to_string(), libc::S_IFDIR | 0o755),
                ("bin/sh".to_string(), libc::S_IFLNK | 0o777),
                ("etc".to_string(), libc::S_IFDIR | 0o755),
                ("etc/passwd".to_string(), libc::S_IFREG | 0o644),
                ("root".to_string(), libc::S_IFDIR | 0o700),
            ]
        );
    }

    #[test]
    fn key_depends_on_content_and_mode() {
        let a = sample();
        let mut b = sample();
        assert_eq!(a.key().unwrap(), b.key().unwrap());
        b.file("/etc/passwd", Source::Bytes(b"x".to_vec()), 0o644)
            .unwrap();
        assert_ne!(a.key().unwrap(), b.key().unwrap());
        let mut c = sample();
        c.dir("/root", 0o755).unwrap();
        assert_ne!(a.key().unwrap(), c.key().unwrap());
    }

    #[test]
    fn rejects_path_traversal() {
        let mut g = GuestImage::new();
        assert!(g.file("/../etc/x", Source::Bytes(vec![]), 0o644).is_err());
        assert!(g.file("", Source::Bytes(vec![]), 0o644).is_err());
    }
}
