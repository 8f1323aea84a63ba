//! Kernel config files and fragments: parsing (`CONFIG_X=v`, `# CONFIG_X is not set`) with
//! `file:line` errors, and merging the way `scripts/kconfig/merge_config.sh` does (later
//! fragments override earlier values, each override noted). hotfuzz's own fragments from
//! `ci/kernel/` are embedded so `--config slim` works from any directory.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The fragments shipped in `ci/kernel/`, by name.
pub const SHIPPED: &[(&str, &str)] = &[
    ("guest", include_str!("../../../ci/kernel/guest.config")),
    (
        "guest-x86_64",
        include_str!("../../../ci/kernel/guest-x86_64.config"),
    ),
    ("slim", include_str!("../../../ci/kernel/slim.config")),
    ("debug", include_str!("../../../ci/kernel/debug.config")),
    ("powernv", include_str!("../../../ci/kernel/powernv.config")),
];

/// A config option's value as written in a config file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// `# CONFIG_X is not set` (or `=n`).
    No,
    /// `=y`.
    Yes,
    /// `=m`.
    Module,
    /// Anything else: a number, a hex value or a quoted string, kept as written.
    Other(String),
}

impl Value {
    fn parse(v: &str) -> Value {
        match v {
            "y" => Value::Yes,
            "m" => Value::Module,
            "n" => Value::No,
            _ => Value::Other(v.to_string()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::No => f.write_str("n"),
            Value::Yes => f.write_str("y"),
            Value::Module => f.write_str("m"),
            Value::Other(s) => f.write_str(s),
        }
    }
}

/// Where a value was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The fragment's name (`slim`) or path.
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One option of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Option name without `CONFIG_`.
    pub name: String,
    /// Value.
    pub value: Value,
    /// Where it was written.
    pub origin: Origin,
}

/// A parsed config file or fragment, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// Its name (shipped) or path, as errors print it.
    pub name: String,
    /// Its text (part of the build's identity).
    pub text: String,
    /// Its settings.
    pub settings: Vec<Setting>,
}

impl Fragment {
    /// Parses `text`; `name` is what errors print before `:line`.
    pub fn parse(name: &str, text: &str) -> Result<Fragment> {
        let mut settings = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let origin = Origin {
                file: name.to_string(),
                line: i + 1,
            };
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# CONFIG_") {
                if let Some(sym) = rest.strip_suffix(" is not set") {
                    check_name(sym, &origin)?;
                    settings.push(Setting {
                        name: sym.to_string(),
                        value: Value::No,
                        origin,
                    });
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let Some(rest) = line.strip_prefix("CONFIG_") else {
                bail!("{origin}: expected `CONFIG_NAME=value` or `# CONFIG_NAME is not set`, found {raw:?}");
            };
            let Some((sym, value)) = rest.split_once('=') else {
                bail!("{origin}: `{raw}` has no `=value`");
            };
            check_name(sym, &origin)?;
            let value = value.trim();
            if value.is_empty() {
                bail!("{origin}: CONFIG_{sym} has an empty value (write `# CONFIG_{sym} is not set` to unset it)");
            }
            if value.starts_with('"') && (value.len() < 2 || !value.ends_with('"')) {
                bail!("{origin}: CONFIG_{sym}: unterminated string {value}");
            }
            settings.push(Setting {
                name: sym.to_string(),
                value: Value::parse(value),
                origin,
            });
        }
        Ok(Fragment {
            name: name.to_string(),
            text: text.to_string(),
            settings,
        })
    }

    /// A shipped fragment by name, or a file by path.
    pub fn load(spec: &str) -> Result<Fragment> {
        if let Some((_, text)) = SHIPPED.iter().find(|(n, _)| *n == spec) {
            return Fragment::parse(spec, text);
        }
        let path = PathBuf::from(spec);
        if !path.is_file() {
            bail!(
                "config fragment {spec:?} is neither a shipped fragment ({}) nor a file",
                SHIPPED
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Fragment::read(&path)
    }

    /// Reads and parses a file.
    pub fn read(path: &Path) -> Result<Fragment> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Fragment::parse(&path.display().to_string(), &text)
    }
}

fn check_name(sym: &str, origin: &Origin) -> Result<()> {
    if sym.is_empty() || !sym.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("{origin}: {sym:?} is not a config option name");
    }
    Ok(())
}

/// A note of the merge: a later fragment changed an earlier value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Option name.
    pub name: String,
    /// Previous value and where it was set (`None`: the base config).
    pub was: (Value, Option<Origin>),
    /// New value and where.
    pub now: (Value, Origin),
}

/// The result of merging a base config with fragments.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// Every option's value, in name order.
    pub values: BTreeMap<String, Value>,
    /// What the fragments asked for (the last word on each option), checked after
    /// `olddefconfig`.
    pub requested: BTreeMap<String, Setting>,
    /// Values the fragments overrode.
    pub overrides: Vec<Override>,
}

impl Merged {
    /// Merges `fragments` over `base` (a full config), like `merge_config.sh -m`.
    pub fn new(base: &Fragment, fragments: &[Fragment]) -> Merged {
        let mut m = Merged::default();
        for s in &base.settings {
            m.values.insert(s.name.clone(), s.value.clone());
        }
        for f in fragments {
            for s in &f.settings {
                let prev = m.values.insert(s.name.clone(), s.value.clone());
                let prev_origin = m.requested.get(&s.name).map(|r| r.origin.clone());
                if let Some(p) = prev.filter(|p| *p != s.value) {
                    m.overrides.push(Override {
                        name: s.name.clone(),
                        was: (p, prev_origin),
                        now: (s.value.clone(), s.origin.clone()),
                    });
                }
                m.requested.insert(s.name.clone(), s.clone());
            }
        }
        m
    }

    /// The merged config as `.config` text (input to `make olddefconfig`).
    pub fn to_config(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.values {
            match v {
                Value::No => out.push_str(&format!("# CONFIG_{k} is not set\n")),
                v => out.push_str(&format!("CONFIG_{k}={v}\n")),
            }
        }
        out
    }
}

/// Reads a full `.config` into name → value (unset options are absent or `No`).
pub fn read_config(text: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for l in text.lines() {
        if let Some(sym) = l
            .strip_prefix("# CONFIG_")
            .and_then(|r| r.strip_suffix(" is not set"))
        {
            out.insert(sym.to_string(), Value::No);
        } else if let Some((k, v)) = l.strip_prefix("CONFIG_").and_then(|r| r.split_once('=')) {
            out.insert(k.to_string(), Value::parse(v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_fragments_parse() {
        for (n, t) in SHIPPED {
            let f = Fragment::parse(n, t).unwrap();
            assert!(!f.settings.is_empty(), "{n}");
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = Fragment::parse("x.config", "CONFIG_A=y\n\nCONFIG_B\n").unwrap_err();
        assert_eq!(e.to_string(), "x.config:3: `CONFIG_B` has no `=value`");
        let e = Fragment::parse("x.config", "MEMORY_HOTPLUG=y\n").unwrap_err();
        assert!(e.to_string().starts_with("x.config:1: expected"), "{e}");
        let e = Fragment::parse("x.config", "CONFIG_A-B=y\n").unwrap_err();
        assert!(e.to_string().starts_with("x.config:1: \"A-B\""), "{e}");
        let e = Fragment::parse("x.config", "CONFIG_S=\"abc\n").unwrap_err();
        assert!(e.to_string().contains("unterminated"), "{e}");
    }

    #[test]
    fn later_fragments_win_and_overrides_are_noted() {
        let base =
            Fragment::parse("base", "CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n").unwrap();
        let f1 = Fragment::parse("f1", "CONFIG_B=y\nCONFIG_C=y\nCONFIG_D=\"x y\"\n").unwrap();
        let f2 = Fragment::parse("f2", "# CONFIG_C is not set\nCONFIG_A=y\n").unwrap();
        let m = Merged::new(&base, &[f1, f2]);
        assert_eq!(m.values["A"], Value::Yes);
        assert_eq!(m.values["B"], Value::Yes);
        assert_eq!(m.values["C"], Value::No);
        assert_eq!(m.values["D"], Value::Other("\"x y\"".into()));
        assert_eq!(m.requested["C"].origin.to_string(), "f2:1");
        // A=y over A=y is no override; B and C (twice) are.
        let names: Vec<_> = m.overrides.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["B", "C", "C"]);
        assert_eq!(m.overrides[2].was.1.as_ref().unwrap().to_string(), "f1:2");
        let text = m.to_config();
        assert!(text.contains("# CONFIG_C is not set\n"), "{text}");
        assert!(text.contains("CONFIG_D=\"x y\"\n"), "{text}");
        assert_eq!(read_config(&text), m.values);
    }
}
