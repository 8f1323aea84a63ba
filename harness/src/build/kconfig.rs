//! Just enough of Kconfig to say *why* `olddefconfig` dropped an option: every `config`
//! definition's dependencies (its `depends on` lines, the `if`/`menu`/`choice` blocks around
//! it, and the `if` blocks around the `source` lines that reached its file), whether it has a
//! prompt, and an evaluator of dependency expressions against a final `.config`.

use super::fragment::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One `config`/`menuconfig` definition of a symbol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Definition {
    /// `file:line` of the `config` line, relative to the tree.
    pub at: String,
    /// Dependency expressions, all of which must hold (outermost first).
    pub depends: Vec<String>,
    /// Whether the user can set it (a prompt); without one only `select` or a default sets it.
    pub has_prompt: bool,
}

/// The symbols of a kernel tree for one architecture.
#[derive(Debug, Default)]
pub struct Kconfig {
    defs: BTreeMap<String, Vec<Definition>>,
}

impl Kconfig {
    /// Reads the tree at `src` from its top `Kconfig`, for `srcarch` (`x86`, `powerpc`).
    /// Files that cannot be read are skipped: this explains, it does not validate.
    pub fn load(src: &Path, srcarch: &str) -> Kconfig {
        let mut k = Kconfig::default();
        let mut seen = BTreeSet::new();
        k.file(src, "Kconfig", srcarch, &[], &mut seen);
        k
    }

    /// Parses Kconfig text as if it were file `name` (tests; `source` lines are not followed).
    pub fn parse_text(name: &str, text: &str) -> Kconfig {
        let mut k = Kconfig::default();
        k.parse(
            Path::new("/nonexistent"),
            name,
            text,
            "x86",
            &[],
            &mut BTreeSet::new(),
        );
        k
    }

    /// The definitions of `sym`.
    pub fn definitions(&self, sym: &str) -> &[Definition] {
        self.defs.get(sym).map(Vec::as_slice).unwrap_or(&[])
    }

    fn file(
        &mut self,
        src: &Path,
        rel: &str,
        srcarch: &str,
        outer: &[String],
        seen: &mut BTreeSet<String>,
    ) {
        if !seen.insert(rel.to_string()) {
            return;
        }
        let Ok(text) = std::fs::read_to_string(src.join(rel)) else {
            return;
        };
        self.parse(src, rel, &text, srcarch, outer, seen);
    }

    fn parse(
        &mut self,
        src: &Path,
        rel: &str,
        text: &str,
        srcarch: &str,
        outer: &[String],
        seen: &mut BTreeSet<String>,
    ) {
        // Blocks open around the current line: (kind, dependency or None).
        let mut blocks: Vec<(&'static str, Option<String>)> = Vec::new();
        let mut current: Option<(String, Definition)> = None;
        // The block a `depends on` line applies to: a config entry, or a menu/choice header.
        let mut in_header: Option<usize> = None;
        let lines = join_continuations(text);
        for (lineno, line) in lines {
            let t = line.trim();
            let (word, rest) = t
                .split_once(char::is_whitespace)
                .map(|(w, r)| (w, r.trim()))
                .unwrap_or((t, ""));
            let context = |blocks: &[(&'static str, Option<String>)]| -> Vec<String> {
                outer
                    .iter()
                    .cloned()
                    .chain(blocks.iter().filter_map(|(_, d)| d.clone()))
                    .collect()
            };
            match word {
                "config" | "menuconfig" => {
                    self.finish(current.take());
                    in_header = None;
                    current = Some((
                        rest.to_string(),
                        Definition {
                            at: format!("{rel}:{lineno}"),
                            depends: context(&blocks),
                            has_prompt: false,
                        },
                    ));
                }
                "if" => {
                    self.finish(current.take());
                    in_header = None;
                    blocks.push(("if", Some(rest.to_string())));
                }
                "menu" | "choice" => {
                    self.finish(current.take());
                    blocks.push((if word == "menu" { "menu" } else { "choice" }, None));
                    in_header = Some(blocks.len() - 1);
                }
                "endif" | "endmenu" | "endchoice" => {
                    self.finish(current.take());
                    in_header = None;
                    blocks.pop();
                }
                "comment" | "mainmenu" => {
                    self.finish(current.take());
                    in_header = None;
                }
                "source" | "rsource" | "osource" | "orsource" => {
                    self.finish(current.take());
                    in_header = None;
                    let path = rest.trim_matches('"').replace("$(SRCARCH)", srcarch);
                    let path = if word.starts_with('r') || word.starts_with("or") {
                        let dir = Path::new(rel).parent().unwrap_or(Path::new(""));
                        dir.join(&path).display().to_string()
                    } else {
                        path
                    };
                    if !path.contains('*') && !path.contains("$(") {
                        let ctx = context(&blocks);
                        self.file(src, &path, srcarch, &ctx, seen);
                    }
                }
                "depends" => {
                    let expr = rest.strip_prefix("on").unwrap_or(rest);
                    let expr = expr.split_whitespace().collect::<Vec<_>>().join(" ");
                    if let Some((_, def)) = current.as_mut() {
                        def.depends.push(expr);
                    } else if let Some(i) = in_header {
                        let d = &mut blocks[i].1;
                        *d = Some(match d.take() {
                            Some(prev) => format!("({prev}) && ({expr})"),
                            None => expr,
                        });
                    }
                }
                "prompt" => {
                    if let Some((_, def)) = current.as_mut() {
                        def.has_prompt = true;
                    }
                }
                "bool" | "tristate" | "string" | "int" | "hex" | "def_bool" | "def_tristate" => {
                    if let Some((_, def)) = current.as_mut() {
                        if rest.starts_with('"') && !word.starts_with("def_") {
                            def.has_prompt = true;
                        }
                    }
                }
                "help" | "---help---" => {
                    // Help text runs until the indentation drops; it never holds keywords we
                    // act on in practice except by accident, so end the entry here.
                    if let Some((name, def)) = current.take() {
                        self.finish(Some((name, def)));
                    }
                    in_header = None;
                }
                _ => {}
            }
        }
        self.finish(current.take());
    }

    fn finish(&mut self, cur: Option<(String, Definition)>) {
        if let Some((name, def)) = cur {
            self.defs.entry(name).or_default().push(def);
        }
    }
}

/// Lines with `\` continuations joined, numbered from 1, help texts dropped.
fn join_continuations(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    let mut help_indent: Option<usize> = None;
    for (i, l) in text.lines().enumerate() {
        let indent = l.len() - l.trim_start().len();
        if let Some(h) = help_indent {
            if l.trim().is_empty() || indent > h {
                continue;
            }
            help_indent = None;
        }
        let l = match l.find('#') {
            // Comments (not inside strings: a `#` in a prompt is rare and harmless here).
            Some(p) if !l[..p].contains('"') => &l[..p],
            _ => l,
        };
        let (n, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        if let Some(s) = l.strip_suffix('\\') {
            acc.push_str(s);
            acc.push(' ');
            pending = Some((n, acc));
            continue;
        }
        acc.push_str(l);
        let word = acc.split_whitespace().next().unwrap_or("");
        if word == "help" || word == "---help---" {
            help_indent = Some(indent);
        }
        out.push((n, acc));
    }
    if let Some(p) = pending {
        out.push(p);
    }
    out
}

/// A tristate: 0 (n), 1 (m), 2 (y).
type Tri = u8;

/// Evaluates a dependency expression against `config` and lists the symbols it names with
/// their values. Unknown syntax evaluates to "y" so an explanation is never invented.
pub fn eval(expr: &str, config: &BTreeMap<String, Value>) -> (Tri, Vec<(String, String)>) {
    let toks = tokenize(expr);
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        config,
        named: Vec::new(),
    };
    let v = p.or().unwrap_or(2);
    let v = if p.pos == toks.len() { v } else { 2 };
    let mut named = p.named;
    named.dedup();
    (v, named)
}

fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' {
            let mut j = i + 1;
            while j < b.len() && b[j] != c {
                j += 1;
            }
            out.push(b[i..(j + 1).min(b.len())].iter().collect());
            i = j + 1;
        } else if "&|!=<>".contains(c) {
            let two: String = b[i..(i + 2).min(b.len())].iter().collect();
            if ["&&", "||", "!=", "<=", ">="].contains(&two.as_str()) {
                out.push(two);
                i += 2;
            } else {
                out.push(c.to_string());
                i += 1;
            }
        } else if c == '(' || c == ')' {
            out.push(c.to_string());
            i += 1;
        } else {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == '_' || b[j] == '-') {
                j += 1;
            }
            if j == i {
                j += 1;
            }
            out.push(b[i..j].iter().collect());
            i = j;
        }
    }
    out
}

struct Parser<'a> {
    toks: &'a [String],
    pos: usize,
    config: &'a BTreeMap<String, Value>,
    named: Vec<(String, String)>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(String::as_str)
    }

    fn or(&mut self) -> Option<Tri> {
        let mut v = self.and()?;
        while self.peek() == Some("||") {
            self.pos += 1;
            v = v.max(self.and()?);
        }
        Some(v)
    }

    fn and(&mut self) -> Option<Tri> {
        let mut v = self.not()?;
        while self.peek() == Some("&&") {
            self.pos += 1;
            v = v.min(self.not()?);
        }
        Some(v)
    }

    fn not(&mut self) -> Option<Tri> {
        if self.peek() == Some("!") {
            self.pos += 1;
            return Some(2 - self.not()?);
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Option<Tri> {
        if self.peek() == Some("(") {
            self.pos += 1;
            let v = self.or()?;
            if self.peek() != Some(")") {
                return None;
            }
            self.pos += 1;
            return Some(v);
        }
        let a = self.atom()?;
        match self.peek() {
            Some(op @ ("=" | "!=" | "<" | ">" | "<=" | ">=")) => {
                let op = op.to_string();
                self.pos += 1;
                let b = self.atom()?;
                let (x, y) = (a.1, b.1);
                let ord = match (x.parse::<i64>(), y.parse::<i64>()) {
                    (Ok(i), Ok(j)) => i.cmp(&j),
                    _ => x.cmp(&y),
                };
                let r = match op.as_str() {
                    "=" => x == y,
                    "!=" => x != y,
                    "<" => ord.is_lt(),
                    ">" => ord.is_gt(),
                    "<=" => ord.is_le(),
                    _ => ord.is_ge(),
                };
                Some(if r { 2 } else { 0 })
            }
            _ => Some(a.0),
        }
    }

    /// A symbol or a constant: its tristate and its value as a string.
    fn atom(&mut self) -> Option<(Tri, String)> {
        let t = self.toks.get(self.pos)?.clone();
        self.pos += 1;
        if t.starts_with('"') || t.starts_with('\'') {
            let s = t.trim_matches(|c| c == '"' || c == '\'').to_string();
            return Some((tri_of(&s), s));
        }
        if matches!(t.as_str(), "y" | "m" | "n") || t.chars().all(|c| c.is_ascii_digit()) {
            return Some((tri_of(&t), t));
        }
        if !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let v = match self.config.get(&t) {
            Some(v) => v.to_string(),
            None => "n".to_string(),
        };
        self.named.push((t, v.clone()));
        Some((tri_of(&v), v))
    }
}

fn tri_of(v: &str) -> Tri {
    match v {
        "y" => 2,
        "m" => 1,
        "n" | "" => 0,
        // A set non-bool symbol counts as visible.
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
        let text: String = pairs
            .iter()
            .map(|(k, v)| format!("CONFIG_{k}={v}\n"))
            .collect();
        super::super::fragment::read_config(&text)
    }

    #[test]
    fn expressions() {
        let c = cfg(&[("A", "y"), ("B", "m"), ("N", "123")]);
        assert_eq!(eval("A && B", &c).0, 1);
        assert_eq!(eval("A && !B", &c).0, 1);
        assert_eq!(eval("A && (C || B)", &c).0, 1);
        assert_eq!(eval("C", &c).0, 0);
        assert_eq!(eval("!C", &c).0, 2);
        assert_eq!(eval("N > 100", &c).0, 2);
        assert_eq!(eval("B = m", &c).0, 2);
        assert_eq!(eval("B != \"m\"", &c).0, 0);
        let (v, named) = eval("X86_64 || ARM64 || RISCV", &c);
        assert_eq!(v, 0);
        assert_eq!(named.len(), 3);
        // Syntax it does not understand: no explanation invented.
        assert_eq!(eval("A &&", &c).0, 2);
    }

    #[test]
    fn blocks_and_depends_lines() {
        let k = Kconfig::parse_text(
            "drivers/virtio/Kconfig",
            r#"
menuconfig VIRTIO_MENU
	bool "Virtio drivers"
	default y

if VIRTIO_MENU

config VIRTIO_MEM
	tristate "Virtio mem driver"
	depends on X86_64 || ARM64 || RISCV
	depends on VIRTIO
	depends on MEMORY_HOTPLUG && \
		   CONTIG_ALLOC
	help
	  This driver provides access to virtio-mem paravirtualized memory
	  devices. depends on NOTHING here.

endif

menu "Things"
	depends on PCI

config HIDDEN
	bool
	default y if FOO

endmenu
"#,
        );
        let d = &k.definitions("VIRTIO_MEM")[0];
        assert_eq!(
            d.depends,
            [
                "VIRTIO_MENU",
                "X86_64 || ARM64 || RISCV",
                "VIRTIO",
                "MEMORY_HOTPLUG && CONTIG_ALLOC"
            ]
        );
        assert!(d.has_prompt);
        assert_eq!(d.at, "drivers/virtio/Kconfig:8");
        let h = &k.definitions("HIDDEN")[0];
        assert_eq!(h.depends, ["PCI"]);
        assert!(!h.has_prompt);
        assert!(k.definitions("VIRTIO_MENU")[0].depends.is_empty());
    }
}
