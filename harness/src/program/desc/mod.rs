//! Operation descriptions: `descriptions/*.txt` in syzlang, loaded with `syzlang-parser`
//! (`load.rs`); this module holds the model every stage reads.
//!
//! They are the single source of truth for what an operation is called, what arguments it
//! takes (types, ranges, flag sets, resources), what it returns, where it runs (guest or host)
//! and on which architectures. The parser is given one statement at a time so that every error,
//! including its panics, is reported with file and line. Identifiers in flag sets are resolved
//! from `*.const` files by hotfuzz.

use hotfuzz_vm::Arch;
use std::collections::{BTreeMap, HashMap};

mod load;
use std::fmt;

/// The descriptions compiled into hotfuzz (from the repository's `descriptions/`).
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "types.txt",
        include_str!("../../../../descriptions/types.txt"),
    ),
    (
        "hotplug.txt",
        include_str!("../../../../descriptions/hotplug.txt"),
    ),
    ("gup.txt", include_str!("../../../../descriptions/gup.txt")),
    (
        "workload.txt",
        include_str!("../../../../descriptions/workload.txt"),
    ),
    (
        "physmem.txt",
        include_str!("../../../../descriptions/physmem.txt"),
    ),
    (
        "inject.txt",
        include_str!("../../../../descriptions/inject.txt"),
    ),
    (
        "memtrace.txt",
        include_str!("../../../../descriptions/memtrace.txt"),
    ),
    (
        "misc.txt",
        include_str!("../../../../descriptions/misc.txt"),
    ),
    (
        "hotfuzz.const",
        include_str!("../../../../descriptions/hotfuzz.const"),
    ),
];

/// A position in a description file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    /// File name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// An error in the descriptions, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{loc}: {msg}")]
pub struct DescError {
    /// Where.
    pub loc: Loc,
    /// What.
    pub msg: String,
}

/// The type of an operation argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgType {
    /// An integer in [min, max] (multiples of `align` when > 1). `kind` is the type alias it
    /// was declared with (`mem_size`, `map_len`, ...), which the generator may know more about.
    Int {
        /// Width in bits.
        bits: u8,
        /// Smallest valid value.
        min: i64,
        /// Largest valid value.
        max: i64,
        /// Alignment (1: none).
        align: u64,
        /// Type alias name, if any.
        kind: Option<String>,
    },
    /// An OR of values from a flag set.
    Flags {
        /// Flag set name.
        set: String,
        /// Its values.
        values: Vec<u64>,
        /// Width in bits.
        bits: u8,
    },
    /// One string out of a set.
    Str {
        /// Set name.
        set: String,
        /// Valid strings.
        values: Vec<String>,
    },
    /// A resource value: produced by an earlier operation, or a literal.
    Resource {
        /// Resource name.
        name: String,
    },
    /// A fixed value.
    Const {
        /// The value.
        value: u64,
    },
}

impl ArgType {
    /// True for argument types whose values are strings.
    pub fn is_str(&self) -> bool {
        matches!(self, ArgType::Str { .. })
    }
}

/// One argument of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDesc {
    /// Name (used in program text).
    pub name: String,
    /// Type.
    pub ty: ArgType,
}

/// An operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpDesc {
    /// Name.
    pub name: String,
    /// Arguments in order.
    pub args: Vec<ArgDesc>,
    /// Resource it produces.
    pub ret: Option<String>,
    /// Run on the host (QMP) rather than in the guest.
    pub host: bool,
    /// Architectures it applies to (empty: all).
    pub arches: Vec<Arch>,
    /// Deadline in milliseconds.
    pub timeout_ms: u64,
    /// Relative generation weight.
    pub weight: u32,
    /// Never generated.
    pub disabled: bool,
    /// What the operation does to physical memory, for generating races.
    pub roles: Vec<Role>,
    /// Its effect outlasts it (a kernel thread, a knob): never looped.
    pub persistent: bool,
    /// The comment lines above it.
    pub doc: String,
    /// Where it is described.
    pub loc: Loc,
}

impl OpDesc {
    /// Whether the operation applies to `arch`.
    pub fn on_arch(&self, arch: Arch) -> bool {
        self.arches.is_empty() || self.arches.contains(&arch)
    }

    /// Whether it has role `r`.
    pub fn has_role(&self, r: Role) -> bool {
        self.roles.contains(&r)
    }

    /// Index of argument `name`.
    pub fn arg_index(&self, name: &str) -> Option<usize> {
        self.args.iter().position(|a| a.name == name)
    }
}

/// What an operation does to physical memory (`role[...]` in the descriptions): the two
/// sides of the races this tool exists for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Inspects or takes references on pages by physical address, whatever owns them (a PFN
    /// walker: split_huge_pages, DAMON paddr, kpageflags, memory-failure, compaction...).
    Walker,
    /// Changes what a memory block or its pages are (offline, online, plug, unplug, poison):
    /// the state a walker can meet half-changed.
    Mover,
}

/// A declared resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDesc {
    /// Name.
    pub name: String,
    /// Width of its values in bits.
    pub bits: u8,
}

/// Default deadline of an operation without `timeout[...]`.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
/// Default generation weight.
pub const DEFAULT_WEIGHT: u32 = 5;

/// All descriptions.
#[derive(Debug, Clone, Default)]
pub struct Descriptions {
    /// Operations in file order.
    pub ops: Vec<OpDesc>,
    /// Resources by name.
    pub resources: BTreeMap<String, ResourceDesc>,
    by_name: HashMap<String, usize>,
}

impl Descriptions {
    /// The descriptions compiled into hotfuzz.
    pub fn embedded() -> Descriptions {
        let files: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(n, t)| (format!("descriptions/{n}"), t.to_string()))
            .collect();
        Descriptions::from_sources(&files).expect("the embedded descriptions are valid")
    }

    /// Operation `name`.
    pub fn op(&self, name: &str) -> Option<&OpDesc> {
        self.by_name.get(name).map(|&i| &self.ops[i])
    }

    /// Operations that produce resource `res`.
    pub fn producers<'a>(&'a self, res: &'a str) -> impl Iterator<Item = &'a OpDesc> + 'a {
        self.ops
            .iter()
            .filter(move |o| o.ret.as_deref() == Some(res))
    }
}
