//! After `olddefconfig`: did every option a fragment asked for keep its value? An option
//! that was dropped is an error that names it, the fragment line that asked for it, and the
//! dependency that dropped it (read from the tree's Kconfig files).

use super::fragment::{Merged, Setting, Value};
use super::kconfig::{eval, Kconfig};
use std::collections::BTreeMap;
use std::fmt;

/// An option that did not survive `olddefconfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// What the fragment asked for.
    pub asked: Setting,
    /// What the final config has (`n` when absent).
    pub got: Value,
    /// Why, as far as Kconfig says.
    pub why: String,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: CONFIG_{}={} was dropped by olddefconfig (now {}): {}",
            self.asked.origin, self.asked.name, self.asked.value, self.got, self.why
        )
    }
}

/// What checking found.
#[derive(Debug, Clone, Default)]
pub struct CheckResult {
    /// Options asked for and lost: errors.
    pub dropped: Vec<Dropped>,
    /// Options a fragment unset that something selected anyway: notes.
    pub forced_on: Vec<(Setting, Value)>,
}

/// Compares what `merged` asked for with `final_config`; `kconfig` explains.
pub fn check(
    merged: &Merged,
    final_config: &BTreeMap<String, Value>,
    kconfig: &Kconfig,
) -> CheckResult {
    let mut out = CheckResult::default();
    for s in merged.requested.values() {
        let got = final_config.get(&s.name).cloned().unwrap_or(Value::No);
        let ok = match (&s.value, &got) {
            (a, b) if a == b => true,
            // `=m` became `=y` (modules off, or selected built in): the code is there.
            (Value::Module, Value::Yes) => true,
            (Value::No, _) => {
                out.forced_on.push((s.clone(), got.clone()));
                true
            }
            _ => false,
        };
        if !ok {
            out.dropped.push(Dropped {
                asked: s.clone(),
                why: explain(&s.name, &s.value, final_config, kconfig),
                got,
            });
        }
    }
    out
}

/// Why `sym` cannot be `want` under `config`.
pub fn explain(
    sym: &str,
    want: &Value,
    config: &BTreeMap<String, Value>,
    kconfig: &Kconfig,
) -> String {
    let defs = kconfig.definitions(sym);
    if defs.is_empty() {
        return format!("CONFIG_{sym} is not defined by any Kconfig file of this tree and architecture (misspelt, removed, or another architecture's)");
    }
    let mut reasons = Vec::new();
    for d in defs {
        let unmet: Vec<String> = d
            .depends
            .iter()
            .filter_map(|e| {
                let (v, named) = eval(e, config);
                let needed = if *want == Value::Module { 1 } else { 2 };
                (v < needed).then(|| {
                    let vals: Vec<String> = named.iter().map(|(n, v)| format!("{n}={v}")).collect();
                    if vals.is_empty() {
                        format!("`depends on {e}`")
                    } else {
                        format!("`depends on {e}` ({})", vals.join(", "))
                    }
                })
            })
            .collect();
        if !unmet.is_empty() {
            reasons.push(format!("{} ({})", unmet.join(" and "), d.at));
        } else if *want == Value::Module && config.get("MODULES") != Some(&Value::Yes) {
            reasons.push("=m needs CONFIG_MODULES=y".to_string());
        } else if !d.has_prompt {
            reasons.push(format!(
                "it has no prompt ({}): only a `select` or a default sets it",
                d.at
            ));
        }
    }
    if reasons.is_empty() {
        format!(
            "its dependencies hold ({}); a `choice` or a range may have overridden it",
            defs.iter()
                .map(|d| d.at.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        reasons.join("; or ")
    }
}

#[cfg(test)]
mod tests {
    use super::super::fragment::{read_config, Fragment};
    use super::*;

    const KCONFIG: &str = r#"
config PPC_MEMTRACE
	bool "Enable runtime allocation of RAM for tracing"
	depends on PPC_POWERNV && MEMORY_HOTPLUG && CONTIG_ALLOC

config ARCH_HAS_THING
	bool

config MEMORY_HOTPLUG
	bool "Memory hotplug"
"#;

    #[test]
    fn a_dropped_option_names_the_dependency_and_the_line() {
        let k = Kconfig::parse_text("arch/powerpc/platforms/powernv/Kconfig", KCONFIG);
        let base = Fragment::parse("base", "CONFIG_MEMORY_HOTPLUG=y\n").unwrap();
        let frag = Fragment::parse(
            "powernv",
            "CONFIG_MEMORY_HOTPLUG=y\nCONFIG_PPC_MEMTRACE=y\nCONFIG_ARCH_HAS_THING=y\nCONFIG_NOPE=y\n# CONFIG_MEMORY_HOTPLUG is not set\n",
        )
        .unwrap();
        let m = Merged::new(&base, &[frag]);
        let fin = read_config("CONFIG_MEMORY_HOTPLUG=y\nCONFIG_CONTIG_ALLOC=y\n");
        let r = check(&m, &fin, &k);
        let msgs: Vec<String> = r.dropped.iter().map(|d| d.to_string()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:#?}");
        assert!(
            msgs[0].starts_with("powernv:3: CONFIG_ARCH_HAS_THING=y was dropped"),
            "{}",
            msgs[0]
        );
        assert!(msgs[0].contains("no prompt"), "{}", msgs[0]);
        assert!(
            msgs[1].starts_with("powernv:4: CONFIG_NOPE=y"),
            "{}",
            msgs[1]
        );
        assert!(msgs[1].contains("not defined"), "{}", msgs[1]);
        assert_eq!(
            msgs[2],
            "powernv:2: CONFIG_PPC_MEMTRACE=y was dropped by olddefconfig (now n): \
             `depends on PPC_POWERNV && MEMORY_HOTPLUG && CONTIG_ALLOC` \
             (PPC_POWERNV=n, MEMORY_HOTPLUG=y, CONTIG_ALLOC=y) \
             (arch/powerpc/platforms/powernv/Kconfig:2)"
        );
        // The later "is not set" wins over the earlier =y; it stayed y: a note, not an error.
        assert_eq!(r.forced_on.len(), 1);
        assert_eq!(r.forced_on[0].0.name, "MEMORY_HOTPLUG");
    }

    #[test]
    fn module_becoming_builtin_is_fine() {
        let k = Kconfig::parse_text("K", "config A\n\ttristate \"a\"\n");
        let frag = Fragment::parse("f", "CONFIG_A=m\n").unwrap();
        let m = Merged::new(&Fragment::parse("b", "").unwrap(), &[frag]);
        assert!(check(&m, &read_config("CONFIG_A=y\n"), &k)
            .dropped
            .is_empty());
        let d = check(&m, &read_config(""), &k).dropped;
        assert!(d[0].why.contains("CONFIG_MODULES"), "{}", d[0].why);
    }
}
