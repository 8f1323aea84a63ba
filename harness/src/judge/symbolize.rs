//! Symbolization: `func+0x1a/0x40 [mod]` frames of a report get `file:line` (and inlined
//! callers) from the kernel's and modules' debug info, with binutils' addr2line (which
//! understands the per-section addresses of relocatable `.ko` files). Frames without debug
//! info (Debian's stripped modules, a vmlinux without DWARF) are left as they are.

use crate::report::stack::{self, Frame};
use hotfuzz_vm::modules::{read_module, ModuleIndex};
use hotfuzz_vm::Kernel;
use object::{Object, ObjectSection, ObjectSymbol};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Per object file: symbol name → (section name, offset of the symbol in it).
type SymbolTables = HashMap<PathBuf, HashMap<String, (String, u64)>>;

/// Debug information sources for one kernel.
pub struct Symbolizer {
    vmlinux: Option<PathBuf>,
    modules: HashMap<String, PathBuf>,
    addr2line: Option<PathBuf>,
    tmp: tempfile::TempDir,
    symbols: std::sync::Mutex<SymbolTables>,
}

/// Where a frame's code is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLoc {
    /// Function (the innermost, inlined one first).
    pub func: String,
    /// `file:line`.
    pub file_line: String,
}

impl Symbolizer {
    /// Symbols for `kernel` plus out-of-tree module files (e.g. the bug zoo).
    pub fn new(kernel: &Kernel, extra_modules: &[PathBuf]) -> Symbolizer {
        let mut modules = HashMap::new();
        if let Some(dir) = &kernel.modules_dir {
            if let Ok(idx) = ModuleIndex::scan(dir) {
                for (name, p) in idx.iter() {
                    modules.insert(name.to_string(), p.to_path_buf());
                }
            }
        }
        for m in extra_modules {
            if let Some(n) = m.file_stem().and_then(|s| s.to_str()) {
                modules.insert(
                    hotfuzz_vm::modules::normalize(n.trim_end_matches(".ko")),
                    m.clone(),
                );
            }
        }
        Symbolizer {
            vmlinux: kernel.vmlinux.clone(),
            modules,
            addr2line: hotfuzz_vm::host::find_program("addr2line"),
            tmp: tempfile::tempdir().expect("a temporary directory"),
            symbols: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Whether addr2line is available at all.
    pub fn available(&self) -> bool {
        self.addr2line.is_some()
    }

    /// The source location(s) of a frame; `ip` for the faulting instruction itself (frames of
    /// a call trace are return addresses and are looked up one byte earlier).
    pub fn locate(&self, f: &Frame, ip: bool) -> Vec<SourceLoc> {
        let Some(a2l) = &self.addr2line else {
            return Vec::new();
        };
        let (file, section, addr) = match &f.module {
            Some(m) => {
                let Some(path) = self.modules.get(&hotfuzz_vm::modules::normalize(m)) else {
                    return Vec::new();
                };
                let Some(file) = self.plain_module(m, path) else {
                    return Vec::new();
                };
                let Some((section, value)) = self.symbol(&file, &f.func) else {
                    return Vec::new();
                };
                (file, Some(section), value + f.offset)
            }
            None => {
                let Some(v) = &self.vmlinux else {
                    return Vec::new();
                };
                let Some((_, value)) = self.symbol(v, &f.func) else {
                    return Vec::new();
                };
                (v.clone(), None, value + f.offset)
            }
        };
        let addr = if ip { addr } else { addr.saturating_sub(1) };
        let mut cmd = Command::new(a2l);
        cmd.arg("-f").arg("-i").arg("-e").arg(&file);
        if let Some(s) = &section {
            cmd.arg("-j").arg(s);
        }
        cmd.arg(format!("{addr:#x}"));
        let Ok(out) = cmd.stdin(Stdio::null()).output() else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2 && !c[1].starts_with("??"))
            .map(|c| SourceLoc {
                func: c[0].to_string(),
                file_line: c[1]
                    .split(" (discriminator")
                    .next()
                    .unwrap_or(c[1])
                    .to_string(),
            })
            .collect()
    }

    /// The report text with `file:line` after every frame that has debug info, inlined
    /// functions on their own `[inline]` lines.
    pub fn symbolize(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() * 2);
        for l in text.lines() {
            let (frame, ip) = match stack::parse_ip(l) {
                Some(f) => (Some(f), true),
                None => (stack::parse_frame(l), false),
            };
            let locs = frame
                .as_ref()
                .map(|f| self.locate(f, ip))
                .unwrap_or_default();
            if locs.is_empty() {
                out.push_str(l);
                out.push('\n');
                continue;
            }
            let indent: String = l.chars().take_while(|c| c.is_whitespace()).collect();
            // addr2line lists the innermost (inlined) function first.
            for inl in &locs[..locs.len() - 1] {
                out.push_str(&format!(
                    "{indent}{} {} [inline]\n",
                    inl.func, inl.file_line
                ));
            }
            out.push_str(&format!("{l} {}\n", locs[locs.len() - 1].file_line));
        }
        out
    }

    /// A module file addr2line can read (decompressed into a temporary directory).
    fn plain_module(&self, name: &str, path: &Path) -> Option<PathBuf> {
        let s = path.to_string_lossy();
        if s.ends_with(".ko") {
            return Some(path.to_path_buf());
        }
        let dest = self.tmp.path().join(format!("{name}.ko"));
        if !dest.exists() {
            let data = read_module(path).ok()?;
            let mut f = std::fs::File::create(&dest).ok()?;
            f.write_all(&data).ok()?;
        }
        Some(dest)
    }
}

impl Symbolizer {
    /// The section and value of function symbol `func` in an ELF file (tables cached).
    fn symbol(&self, file: &Path, func: &str) -> Option<(String, u64)> {
        let mut cache = self.symbols.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.contains_key(file) {
            let mut table = HashMap::new();
            if let Ok(data) = std::fs::read(file) {
                if let Ok(obj) = object::File::parse(&*data) {
                    for s in obj
                        .symbols()
                        .filter(|s| s.kind() == object::SymbolKind::Text)
                    {
                        let Ok(name) = s.name() else { continue };
                        let section = match s.section() {
                            object::SymbolSection::Section(i) => obj
                                .section_by_index(i)
                                .ok()
                                .and_then(|x| x.name().ok().map(str::to_string))
                                .unwrap_or_default(),
                            _ => String::new(),
                        };
                        table
                            .entry(stack::base_name(name).to_string())
                            .or_insert((section, s.address()));
                    }
                }
            }
            cache.insert(file.to_path_buf(), table);
        }
        cache.get(file)?.get(func).cloned()
    }
}
