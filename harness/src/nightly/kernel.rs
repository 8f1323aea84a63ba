//! The kernel under test as the night sees it: its release, version, origin and config, and
//! the conditions regression entries put on kernels (version ranges, config options,
//! architecture, bug-zoo bugs).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A kernel version: numeric parts and an `-rcN` (release candidates come before the release).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    parts: [u64; 3],
    /// `u64::MAX` for a release, N for `-rcN`.
    rc: u64,
}

impl Version {
    /// Parses the leading version of a release or version string: `6.12.117+deb12-amd64`,
    /// `6.13-rc3`, `v6.13`, `7.2`.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().trim_start_matches('v');
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let nums: Vec<u64> = s[..end]
            .split('.')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        if nums.is_empty() || nums.len() > 3 {
            return None;
        }
        let mut parts = [0; 3];
        parts[..nums.len()].copy_from_slice(&nums);
        let rest = &s[end..];
        let rc = rest
            .strip_prefix("-rc")
            .and_then(|r| {
                r.chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect::<String>()
                    .parse()
                    .ok()
            })
            .unwrap_or(u64::MAX);
        Some(Version { parts, rc })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c] = self.parts;
        write!(f, "{a}.{b}.{c}")?;
        if self.rc != u64::MAX {
            write!(f, "-rc{}", self.rc)?;
        }
        Ok(())
    }
}

/// Whether `v` is in `range`: constraints separated by commas, all of which must hold
/// (`>=6.1, <6.13`; operators `>=`, `<=`, `>`, `<`, `=`).
pub fn in_range(v: &Version, range: &str) -> Result<bool> {
    let mut all = true;
    for c in range.split(',').map(str::trim) {
        if c.is_empty() {
            bail!("empty constraint in version range {range:?}");
        }
        let (op, rest) = [">=", "<=", "==", ">", "<", "="]
            .iter()
            .find_map(|op| c.strip_prefix(op).map(|r| (*op, r)))
            .ok_or_else(|| {
                anyhow::anyhow!("{c:?} in version range {range:?}: expected >=, <=, >, < or =")
            })?;
        let w = Version::parse(rest)
            .ok_or_else(|| anyhow::anyhow!("{rest:?} in version range {range:?} is no version"))?;
        all &= match op {
            ">=" => *v >= w,
            "<=" => *v <= w,
            ">" => *v > w,
            "<" => *v < w,
            _ => *v == w,
        };
    }
    Ok(all)
}

/// A kernel config: option → value (`y`, `m`, a string or number); unset options are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelConfig(pub BTreeMap<String, String>);

impl KernelConfig {
    /// Parses a `.config`.
    pub fn parse(text: &str) -> KernelConfig {
        let mut m = BTreeMap::new();
        for l in text.lines() {
            if let Some((k, v)) = l.split_once('=') {
                if k.starts_with("CONFIG_") {
                    m.insert(k.to_string(), v.trim_matches('"').to_string());
                }
            }
        }
        KernelConfig(m)
    }

    /// Reads a `.config` file.
    pub fn read(path: &Path) -> Result<KernelConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the kernel config {}", path.display()))?;
        Ok(KernelConfig::parse(&text))
    }

    /// Whether `cond` holds: `CONFIG_X` (set to y or m), `CONFIG_X=n` (not set), or
    /// `CONFIG_X=VALUE`.
    pub fn holds(&self, cond: &str) -> Result<bool> {
        let (k, want) = match cond.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (cond.trim(), None),
        };
        if !k.starts_with("CONFIG_") || k.len() <= 7 {
            bail!("{cond:?}: expected CONFIG_NAME, CONFIG_NAME=n or CONFIG_NAME=VALUE");
        }
        let have = self.0.get(k).map(String::as_str);
        Ok(match want {
            None => matches!(have, Some("y") | Some("m")),
            Some("n") => have.is_none() || have == Some("n"),
            Some(w) => have == Some(w.trim_matches('"')),
        })
    }
}

/// What the night knows about the kernel under test (recorded in the summary).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelFacts {
    /// `uname -r`.
    pub release: String,
    /// Where it came from (Debian package and version, or a path).
    pub origin: String,
    /// The `Linux version ...` banner, when found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner: Option<String>,
    /// The commit it was built from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Hash of its config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Its config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
    /// Guest architecture.
    pub arch: String,
    /// Bug-zoo bugs armed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bugzoo: Option<String>,
}

/// The kernel under test with its parsed config, for deciding which entries apply.
#[derive(Debug, Clone, Default)]
pub struct KernelUnderTest {
    /// Recorded facts.
    pub facts: KernelFacts,
    /// Its version, when the release has one.
    pub version: Option<Version>,
    /// Its config, when known.
    pub config: Option<KernelConfig>,
}

impl KernelUnderTest {
    /// From a resolved kernel and the bug zoo armed with it.
    pub fn new(k: &hotfuzz_vm::Kernel, bugzoo: Option<&str>) -> KernelUnderTest {
        let info = crate::store::kernel_info(k);
        let config = k.config.as_deref().and_then(|p| KernelConfig::read(p).ok());
        KernelUnderTest {
            version: Version::parse(&info.release),
            facts: KernelFacts {
                release: info.release,
                origin: info.origin,
                banner: k.banner.clone(),
                commit: None,
                config_hash: info.config_hash,
                config_file: k.config.as_ref().map(|p| p.display().to_string()),
                arch: k.arch.name().to_string(),
                bugzoo: bugzoo.filter(|b| !b.is_empty()).map(str::to_string),
            },
            config,
        }
    }

    /// Bug-zoo bugs armed.
    pub fn bugzoo(&self) -> Vec<&str> {
        self.facts
            .bugzoo
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_like_kernel_releases() {
        let v = |s| Version::parse(s).unwrap();
        assert_eq!(v("6.12.117+deb12-amd64").to_string(), "6.12.117");
        assert!(v("6.13-rc3") < v("6.13"));
        assert!(v("6.13-rc3") > v("6.12.200"));
        assert!(v("v6.13") == v("6.13.0"));
        assert!(v("7.2.13+deb14-amd64") > v("6.13"));
        assert!(Version::parse("linux").is_none());
        assert!(in_range(&v("6.12.117"), ">=6.1, <6.13").unwrap());
        assert!(!in_range(&v("6.13"), ">=6.1, <6.13").unwrap());
        assert!(in_range(&v("6.13-rc1"), "<6.13").unwrap());
        assert!(in_range(&v("6.1.0"), "=6.1").unwrap());
        let e = in_range(&v("6.1"), "~6.1").unwrap_err().to_string();
        assert!(e.contains("expected >="), "{e}");
        assert!(in_range(&v("6.1"), ">=six").is_err());
    }

    #[test]
    fn config_conditions() {
        let c = KernelConfig::parse(
            "CONFIG_MEMORY_HOTREMOVE=y\nCONFIG_VIRTIO_MEM=m\n# CONFIG_KASAN is not set\nCONFIG_NR_CPUS=64\nCONFIG_LOCALVERSION=\"-x\"\n",
        );
        assert!(c.holds("CONFIG_MEMORY_HOTREMOVE").unwrap());
        assert!(c.holds("CONFIG_VIRTIO_MEM").unwrap());
        assert!(!c.holds("CONFIG_VIRTIO_MEM=y").unwrap());
        assert!(c.holds("CONFIG_KASAN=n").unwrap());
        assert!(!c.holds("CONFIG_KASAN").unwrap());
        assert!(c.holds("CONFIG_NR_CPUS=64").unwrap());
        assert!(c.holds("CONFIG_LOCALVERSION=\"-x\"").unwrap());
        assert!(c.holds("MEMORY_HOTREMOVE").is_err());
    }
}
