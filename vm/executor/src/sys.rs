//! Thin wrappers around the system calls the operations use. Unlike `std`, nothing here
//! retries on EINTR: an interrupted call must be visible (that is how a blocked offline is
//! cut short at its deadline).

use std::ffi::CString;

/// Result with a positive errno as the error.
pub type SysResult<T> = Result<T, i32>;

/// The calling thread's errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn cstr(path: &str) -> SysResult<CString> {
    CString::new(path).map_err(|_| libc::EINVAL)
}

/// An owned file descriptor, closed on drop.
#[derive(Debug)]
pub struct Fd(pub i32);

impl Fd {
    /// Gives up ownership.
    pub fn into_raw(self) -> i32 {
        let fd = self.0;
        std::mem::forget(self);
        fd
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closing a descriptor we own.
        unsafe { libc::close(self.0) };
    }
}

/// `open(2)`.
pub fn open(path: &str, flags: i32) -> SysResult<Fd> {
    let c = cstr(path)?;
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(Fd(fd))
    }
}

/// One `write(2)` of `data` to `path` (opened write-only). Sysfs and debugfs files take a
/// value per write; a short or interrupted write is reported as is.
pub fn write_file(path: &str, data: &[u8]) -> SysResult<usize> {
    let r = write_file_untraced(path, data);
    if let Some(trace) = TRACE.get() {
        let shown = String::from_utf8_lossy(&data[..data.len().min(200)]).into_owned();
        trace(&format!(
            "write {path} {shown:?}: {}",
            match &r {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("errno {e}"),
            }
        ));
    }
    r
}

fn write_file_untraced(path: &str, data: &[u8]) -> SysResult<usize> {
    let fd = open(path, libc::O_WRONLY)?;
    // SAFETY: data is a valid buffer for its length.
    let n = unsafe { libc::write(fd.0, data.as_ptr().cast(), data.len()) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// Where [`write_file`] reports every write when tracing is on (`ExecProgram::trace`): so a
/// reader of a reproducer's output sees exactly which file got which value.
pub static TRACE: std::sync::OnceLock<TraceFn> = std::sync::OnceLock::new();

/// What [`TRACE`] holds.
pub type TraceFn = Box<dyn Fn(&str) + Send + Sync>;

/// Writes a string value.
pub fn write_str(path: &str, value: &str) -> SysResult<()> {
    write_file(path, value.as_bytes()).map(|_| ())
}

/// Reads up to `max` bytes of a file.
pub fn read_file(path: &str, max: usize) -> SysResult<Vec<u8>> {
    let fd = open(path, libc::O_RDONLY)?;
    let mut buf = vec![0u8; max];
    let mut got = 0;
    while got < max {
        // SAFETY: reading into the unfilled tail of buf.
        let n = unsafe { libc::read(fd.0, buf[got..].as_mut_ptr().cast(), max - got) };
        if n < 0 {
            return Err(errno());
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    buf.truncate(got);
    Ok(buf)
}

/// Reads a small text file, trimmed.
pub fn read_str(path: &str) -> SysResult<String> {
    Ok(String::from_utf8_lossy(&read_file(path, 4096)?)
        .trim()
        .to_string())
}

/// `pread(2)`.
pub fn pread(fd: &Fd, buf: &mut [u8], off: u64) -> SysResult<usize> {
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::pread(fd.0, buf.as_mut_ptr().cast(), buf.len(), off as i64) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// `pwrite(2)`.
pub fn pwrite(fd: &Fd, buf: &[u8], off: u64) -> SysResult<usize> {
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::pwrite(fd.0, buf.as_ptr().cast(), buf.len(), off as i64) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// True if `path` exists.
pub fn exists(path: &str) -> bool {
    std::path::Path::new(path).exists()
}

/// CLOCK_MONOTONIC in nanoseconds (what printk timestamps are close to).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// Encodes an ioctl request number (`_IOC`) for the target architecture.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u64 {
    #[cfg(any(target_arch = "powerpc64", target_arch = "powerpc"))]
    {
        // powerpc: 13 size bits, direction at bit 29; none=1, read=2, write=4.
        let d = match dir {
            0 => 1,
            1 => 4,
            2 => 2,
            _ => 6,
        };
        ((d as u64) << 29) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
    }
    #[cfg(not(any(target_arch = "powerpc64", target_arch = "powerpc")))]
    {
        // asm-generic: 14 size bits, direction at bit 30; none=0, write=1, read=2.
        ((dir as u64) << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
    }
}

/// `_IOC` direction bits (asm-generic values; [`ioc`] translates for powerpc).
pub const IOC_NONE: u32 = 0;
/// Write direction.
pub const IOC_WRITE: u32 = 1;
/// Read direction.
pub const IOC_READ: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // KCOV_INIT_TRACE = _IOR('c', 1, unsigned long), KCOV_ENABLE = _IO('c', 100).
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(ioc(IOC_READ, b'c', 1, 8), 0x8008_6301);
            assert_eq!(ioc(IOC_NONE, b'c', 100, 0), 0x6364);
        }
    }

    #[test]
    fn write_reports_errno_without_retrying() {
        assert_eq!(write_file("/nonexistent/file", b"1"), Err(libc::ENOENT));
        let d = std::env::temp_dir().join(format!("hotfuzz-sys-{}", std::process::id()));
        std::fs::write(&d, b"").unwrap();
        assert_eq!(write_file(d.to_str().unwrap(), b"12345"), Ok(5));
        assert_eq!(read_str(d.to_str().unwrap()), Ok("12345".to_string()));
        std::fs::remove_file(&d).unwrap();
    }
}
