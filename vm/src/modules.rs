//! Kernel modules for the guest: finding them in a module tree, reading their dependencies
//! from `.modinfo`, and decompressing them for the initramfs.

use crate::error::{Error, IoContext, Result};
use object::{Object, ObjectSection};
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A module the guest should load, with parameters and whether boot fails without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRequest {
    /// Module name (`-` and `_` are equivalent).
    pub name: String,
    /// Parameters passed to insmod.
    pub params: String,
    /// An explicit module file (out-of-tree modules); otherwise looked up in the index.
    pub path: Option<PathBuf>,
}

impl ModuleRequest {
    /// A request without parameters.
    pub fn new(name: &str) -> ModuleRequest {
        ModuleRequest {
            name: normalize(name),
            params: String::new(),
            path: None,
        }
    }

    /// An out-of-tree module file; its name comes from the file name.
    pub fn file(path: &Path, params: &str) -> Result<ModuleRequest> {
        let name = path
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(module_name_of)
            .ok_or_else(|| {
                Error::Image(format!("{} is not a kernel module file", path.display()))
            })?;
        Ok(ModuleRequest {
            name: normalize(name),
            params: params.to_string(),
            path: Some(path.to_path_buf()),
        })
    }
}

/// A module file ready to be placed into the image.
#[derive(Debug, Clone)]
pub struct ModuleFile {
    /// Normalized name.
    pub name: String,
    /// Where it is on the host (possibly compressed).
    pub path: PathBuf,
    /// insmod parameters.
    pub params: String,
}

/// Index of a module tree (`lib/modules/<release>` or a kernel build directory).
#[derive(Debug, Default)]
pub struct ModuleIndex {
    by_name: HashMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

/// Normalizes a module name: `memory-notifier-error-inject` == `memory_notifier_error_inject`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name_of(file: &str) -> Option<&str> {
    for ext in [".ko", ".ko.xz", ".ko.zst", ".ko.gz"] {
        if let Some(n) = file.strip_suffix(ext) {
            return Some(n);
        }
    }
    None
}

impl ModuleIndex {
    /// Scans `dir` recursively for modules and reads `modules.builtin` if present.
    pub fn scan(dir: &Path) -> Result<ModuleIndex> {
        let mut idx = ModuleIndex::default();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let rd = fs::read_dir(&d).ctx(|| format!("listing modules in {}", d.display()))?;
            for e in rd.flatten() {
                let ft = match e.file_type() {
                    Ok(t) => t,
                    Err(_) => continue,
                };
                let p = e.path();
                if ft.is_dir() {
                    // Skip the source/build symlinks of installed trees and VCS dirs.
                    if !ft.is_symlink() && e.file_name() != ".git" {
                        stack.push(p);
                    }
                } else if let Some(n) = e.file_name().to_str().and_then(module_name_of) {
                    idx.by_name.entry(normalize(n)).or_insert(p);
                }
            }
        }
        if let Ok(text) = fs::read_to_string(dir.join("modules.builtin")) {
            for line in text.lines() {
                if let Some(n) = Path::new(line)
                    .file_name()
                    .and_then(|f| f.to_str())
                    .and_then(module_name_of)
                {
                    idx.builtin.insert(normalize(n));
                }
            }
        }
        Ok(idx)
    }

    /// Number of modules found.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when no module was found.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every module: (normalized name, file).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.by_name.iter().map(|(n, p)| (n.as_str(), p.as_path()))
    }

    /// Whether the kernel has `name` built in (per `modules.builtin`).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// Path of module `name`, if present.
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.by_name.get(&normalize(name)).map(PathBuf::as_path)
    }

    /// Resolves requests into files in load order (dependencies first). Returns the files and
    /// the names that are neither modules nor built in (the caller decides whether that is
    /// fatal).
    pub fn resolve(&self, requests: &[ModuleRequest]) -> Result<(Vec<ModuleFile>, Vec<String>)> {
        let (mut groups, missing) = self.resolve_groups(&[requests])?;
        Ok((groups.pop().unwrap_or_default(), missing))
    }

    /// Like [`ModuleIndex::resolve`] for several groups loaded one after the other: each group
    /// gets the dependencies it needs that no earlier group loads.
    pub fn resolve_groups(
        &self,
        groups: &[&[ModuleRequest]],
    ) -> Result<(Vec<Vec<ModuleFile>>, Vec<String>)> {
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut missing = Vec::new();
        let mut out = Vec::new();
        for requests in groups {
            let mut order: Vec<ModuleFile> = Vec::new();
            self.resolve_into(requests, &mut order, &mut done, &mut missing)?;
            out.push(order);
        }
        Ok((out, missing))
    }

    fn resolve_into(
        &self,
        requests: &[ModuleRequest],
        order: &mut Vec<ModuleFile>,
        done: &mut BTreeSet<String>,
        missing: &mut Vec<String>,
    ) -> Result<()> {
        for r in requests {
            if let Some(p) = &r.path {
                if !p.is_file() {
                    return Err(Error::Image(format!(
                        "module file {} does not exist",
                        p.display()
                    )));
                }
                let data = read_module(p)?;
                for dep in modinfo(&data, "depends")
                    .iter()
                    .flat_map(|d| d.split(','))
                    .filter(|d| !d.is_empty())
                {
                    self.visit(&normalize(dep), "", order, done, missing, 1)?;
                }
                if done.insert(r.name.clone()) {
                    order.push(ModuleFile {
                        name: r.name.clone(),
                        path: p.clone(),
                        params: r.params.clone(),
                    });
                }
                continue;
            }
            self.visit(&normalize(&r.name), &r.params, order, done, missing, 0)?;
        }
        Ok(())
    }

    fn visit(
        &self,
        name: &str,
        params: &str,
        order: &mut Vec<ModuleFile>,
        done: &mut BTreeSet<String>,
        missing: &mut Vec<String>,
        depth: usize,
    ) -> Result<()> {
        if depth > 64 {
            return Err(Error::Image(format!(
                "module dependency chain too deep at {name}"
            )));
        }
        if !done.insert(name.to_string()) {
            return Ok(());
        }
        let Some(path) = self.by_name.get(name) else {
            if !self.builtin.contains(name) {
                missing.push(name.to_string());
            }
            return Ok(());
        };
        let data = read_module(path)?;
        for dep in modinfo(&data, "depends")
            .iter()
            .flat_map(|d| d.split(','))
            .filter(|d| !d.is_empty())
        {
            self.visit(&normalize(dep), "", order, done, missing, depth + 1)?;
        }
        order.push(ModuleFile {
            name: name.to_string(),
            path: path.clone(),
            params: params.to_string(),
        });
        Ok(())
    }
}

/// Reads a module file, decompressing `.xz`, `.zst` and `.gz`.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).ctx(|| format!("reading module {}", path.display()))?;
    let name = path.to_string_lossy();
    let err = |e: String| Error::Image(format!("decompressing {}: {e}", path.display()));
    let mut out = Vec::new();
    if name.ends_with(".xz") {
        lzma_rs::xz_decompress(&mut std::io::BufReader::new(&raw[..]), &mut out)
            .map_err(|e| err(e.to_string()))?;
    } else if name.ends_with(".zst") {
        ruzstd::decoding::StreamingDecoder::new(&raw[..])
            .map_err(|e| err(e.to_string()))?
            .read_to_end(&mut out)
            .map_err(|e| err(e.to_string()))?;
    } else if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| err(e.to_string()))?;
    } else {
        out = raw;
    }
    Ok(out)
}

/// Values of `key` in a module's `.modinfo` section.
pub fn modinfo(module: &[u8], key: &str) -> Vec<String> {
    let Ok(f) = object::File::parse(module) else {
        return Vec::new();
    };
    let Some(sec) = f.section_by_name(".modinfo") else {
        return Vec::new();
    };
    let Ok(data) = sec.data() else {
        return Vec::new();
    };
    let prefix = format!("{key}=");
    data.split(|&b| b == 0)
        .filter_map(|e| std::str::from_utf8(e).ok())
        .filter_map(|e| e.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize() {
        assert_eq!(
            normalize("memory-notifier-error-inject"),
            "memory_notifier_error_inject"
        );
        assert_eq!(module_name_of("virtio_mem.ko.xz"), Some("virtio_mem"));
        assert_eq!(module_name_of("virtio_mem.c"), None);
    }

    #[test]
    fn missing_modules_are_reported_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        fs::write(
            d.path().join("modules.builtin"),
            "kernel/drivers/virtio/virtio_mem.ko\n",
        )
        .unwrap();
        let idx = ModuleIndex::scan(d.path()).unwrap();
        let (files, missing) = idx
            .resolve(&[ModuleRequest::new("virtio-mem"), ModuleRequest::new("nope")])
            .unwrap();
        assert!(files.is_empty());
        assert_eq!(missing, vec!["nope".to_string()]);
        assert!(idx.is_builtin("virtio_mem"));
    }
}
