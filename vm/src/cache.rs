//! The user cache directory, atomic file writes and inter-process locks.

use crate::error::{Error, IoContext, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Root of hotfuzz's cache: `$HOTFUZZ_CACHE_DIR`, else `$XDG_CACHE_HOME/hotfuzz`, else
/// `~/.cache/hotfuzz`. Kernels, guest images and learned host facts live here.
pub fn cache_dir() -> Result<PathBuf> {
    let dir = if let Some(d) = std::env::var_os("HOTFUZZ_CACHE_DIR") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(d).join("hotfuzz")
    } else if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        PathBuf::from(h).join(".cache").join("hotfuzz")
    } else {
        return Err(Error::Config(
            "no cache directory: set HOTFUZZ_CACHE_DIR or HOME".into(),
        ));
    };
    fs::create_dir_all(&dir).ctx(|| format!("creating cache directory {}", dir.display()))?;
    Ok(dir)
}

/// A subdirectory of the cache, created on demand.
pub fn cache_subdir(name: &str) -> Result<PathBuf> {
    let dir = cache_dir()?.join(name);
    fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Opens `path` for writing (appending with `append`, else truncating), creating it readable
/// by the owner only (0600) whatever the umask: a VM's logs show what the guest did and name
/// the paths of its secrets.
pub fn open_private(path: &Path, append: bool) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .append(append)
        .truncate(!append)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode: make it private too.
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Writes `data` to `path` atomically: a temporary file in the same directory is written,
/// synced and renamed over `path`, so readers see the old or the new content, never a mix.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .ctx(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(data)
        .ctx(|| format!("writing {}", tmp.path().display()))?;
    tmp.as_file()
        .sync_all()
        .ctx(|| format!("syncing {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("renaming into {}", path.display()), e.error))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// An exclusive advisory lock on a file, released on drop. Used so that two hotfuzz processes
/// (or two tests) never download or build the same cache entry at once.
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Blocks until the lock at `path` is held.
    pub fn acquire(path: &Path) -> Result<FileLock> {
        FileLock::lock(path, libc::LOCK_EX)?
            .ok_or_else(|| Error::Config(format!("{} stayed locked", path.display())))
    }

    /// The lock at `path` if no one else holds it; `None` when someone does.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        FileLock::lock(path, libc::LOCK_EX | libc::LOCK_NB)
    }

    fn lock(path: &Path, how: libc::c_int) -> Result<Option<FileLock>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .ctx(|| format!("opening lock file {}", path.display()))?;
        loop {
            // SAFETY: flock on a valid, owned file descriptor.
            let rc = unsafe { libc::flock(file.as_raw_fd(), how) };
            if rc == 0 {
                return Ok(Some(FileLock { file }));
            }
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(Error::io(format!("locking {}", path.display()), err)),
            }
        }
    }

    /// The locked file, no longer unlocked on drop: the lock then lasts until every copy of
    /// the descriptor is closed, so forked children (that never exec) keep it while they live,
    /// and one of them exiting or unwinding does not release it for the others.
    pub fn into_file(self) -> File {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again; the file is moved out exactly once.
        unsafe { std::ptr::read(&me.file) }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking a descriptor we own.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let old = unsafe { libc::umask(0) };
        let fresh = open_private(&d.path().join("fresh"), false);
        unsafe { libc::umask(old) };
        fresh.unwrap().write_all(b"x").unwrap();
        let open = d.path().join("open");
        fs::write(&open, b"old\n").unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o666)).unwrap();
        open_private(&open, true)
            .unwrap()
            .write_all(b"new\n")
            .unwrap();
        assert_eq!(fs::read_to_string(&open).unwrap(), "old\nnew\n");
        for f in ["fresh", "open"] {
            let m = fs::metadata(d.path().join(f)).unwrap().permissions().mode();
            assert_eq!(m & 0o777, 0o600, "{f}: {m:o}");
        }
    }

    #[test]
    fn try_acquire_refuses_a_held_lock() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        let held = FileLock::try_acquire(&p).unwrap().unwrap();
        assert!(FileLock::try_acquire(&p).unwrap().is_none());
        drop(held);
        let f = FileLock::try_acquire(&p).unwrap().unwrap().into_file();
        assert!(FileLock::try_acquire(&p).unwrap().is_none());
        drop(f);
        assert!(FileLock::try_acquire(&p).unwrap().is_some());
    }

    #[test]
    fn atomic_write_replaces_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub").join("f");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // Nothing but the target is left behind.
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn lock_is_reentrant_across_handles_sequentially() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        drop(FileLock::acquire(&p).unwrap());
        let _again = FileLock::acquire(&p).unwrap();
    }
}
