//! The bug zoo: an out-of-tree kernel module with planted memory-hotplug bugs (see
//! `harness/bugzoo/bugzoo.c` for each bug's trigger), built against the guest kernel's headers
//! and loaded into guests to test hotfuzz end to end.

use anyhow::{Context, Result};
use hotfuzz_vm::cache::{cache_subdir, FileLock};
use hotfuzz_vm::headers::KernelHeaders;
use hotfuzz_vm::modules::ModuleRequest;
use hotfuzz_vm::Kernel;
use std::path::PathBuf;

/// The module source.
pub const SOURCE: &str = include_str!("../../bugzoo/bugzoo.c");
const KBUILD: &str = include_str!("../../bugzoo/Kbuild");

/// The planted bugs that hotplug event sequences trigger.
pub const BUGS: &[&str] = &[
    "warn_reonline",
    "bug_double_cancel",
    "badpage_offline",
    "stuck_offline",
    "race_walker",
];

/// Builds (or reuses from the cache) bugzoo.ko for `kernel`.
pub fn build(kernel: &Kernel) -> Result<PathBuf> {
    let release = kernel.release.clone().unwrap_or_else(|| "unknown".into());
    let mut h = blake3::Hasher::new();
    h.update(SOURCE.as_bytes());
    h.update(KBUILD.as_bytes());
    h.update(release.as_bytes());
    h.update(kernel.arch.name().as_bytes());
    // Two builds of one tree share a release string but not their symbol versions or config
    // (slim and slim+debug): a module built against one does not load into the other.
    if let Some(dir) = &kernel.modules_dir {
        for f in ["Module.symvers", ".config"] {
            if let Ok(bytes) = std::fs::read(dir.join(f)) {
                h.update(&bytes);
            }
        }
    }
    let key = h.finalize().to_hex()[..16].to_string();
    let base = cache_subdir("bugzoo")?;
    let ko = base.join(&key).join("bugzoo.ko");
    if ko.is_file() {
        return Ok(ko);
    }
    let _lock = FileLock::acquire(&base.join(".lock"))?;
    if ko.is_file() {
        return Ok(ko);
    }
    let headers = KernelHeaders::for_kernel(kernel).context("kernel headers for the bug zoo")?;
    let src = tempfile::tempdir()?;
    std::fs::write(src.path().join("bugzoo.c"), SOURCE)?;
    std::fs::write(src.path().join("Kbuild"), KBUILD)?;
    let build = base.join(format!("{key}.build"));
    let built = headers.build_module(src.path(), &build, "bugzoo")?;
    let dir = base.join(&key);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join("bugzoo.ko.tmp");
    std::fs::copy(&built, &tmp)?;
    std::fs::rename(&tmp, &ko)?;
    let _ = std::fs::remove_dir_all(&build);
    Ok(ko)
}

/// A request to load the zoo with `bugs` armed (comma separated; empty: none armed).
pub fn module(kernel: &Kernel, bugs: &str) -> Result<ModuleRequest> {
    for b in bugs.split(',').filter(|b| !b.is_empty()) {
        anyhow::ensure!(
            BUGS.contains(&b),
            "unknown bug-zoo bug `{b}` (known: {})",
            BUGS.join(", ")
        );
    }
    let ko = build(kernel)?;
    let params = if bugs.is_empty() {
        String::new()
    } else {
        format!("bugs={bugs}")
    };
    Ok(ModuleRequest::file(&ko, &params)?)
}
