//! Loading descriptions: syzlang statements one at a time through syzlang-parser (its
//! errors and panics become `file:line`), attributes syzlang-parser drops, flag constants
//! from `*.const` files, and the checks that make a description usable.

use super::*;
use std::path::{Path, PathBuf};
use syzlang_parser::parser::{ArgOpt, ArgType as SArg, Argument, Statement, Value};

impl Descriptions {
    /// Loads every `*.txt` and `*.const` file of `dir`.
    pub fn load_dir(dir: &Path) -> Result<Descriptions, DescError> {
        let err = |msg: String| DescError {
            loc: Loc {
                file: dir.display().to_string(),
                line: 0,
            },
            msg,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| err(format!("cannot read descriptions directory: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt" || x == "const"))
            .collect();
        paths.sort();
        let mut files = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|e| DescError {
                loc: Loc {
                    file: p.display().to_string(),
                    line: 0,
                },
                msg: format!("cannot read: {e}"),
            })?;
            files.push((p.display().to_string(), text));
        }
        if files.is_empty() {
            return Err(err("no *.txt descriptions in it".into()));
        }
        Descriptions::from_sources(&files)
    }

    /// Builds descriptions from (file name, content) pairs.
    pub fn from_sources(files: &[(String, String)]) -> Result<Descriptions, DescError> {
        let mut consts: HashMap<String, u64> = HashMap::new();
        for (name, text) in files.iter().filter(|(n, _)| n.ends_with(".const")) {
            parse_consts(name, text, &mut consts)?;
        }
        let mut stmts: Vec<(Loc, String, String, Statement)> = Vec::new();
        for (name, text) in files.iter().filter(|(n, _)| n.ends_with(".txt")) {
            for chunk in chunks(text) {
                let loc = Loc {
                    file: name.clone(),
                    line: chunk.line,
                };
                for st in parse_statement(&chunk.text, &loc)? {
                    stmts.push((loc.clone(), chunk.text.clone(), chunk.doc.clone(), st));
                }
            }
        }
        let mut d = Descriptions::default();
        let mut aliases: HashMap<String, (SArg, Vec<ArgOpt>)> = HashMap::new();
        let mut flags: HashMap<String, (Loc, Vec<Value>)> = HashMap::new();
        for (loc, _, _, st) in &stmts {
            match st {
                Statement::Resource(r) => {
                    let bits = int_bits(&r.atype).ok_or_else(|| DescError {
                        loc: loc.clone(),
                        msg: format!("resource {} must be an integer type", r.name.name),
                    })?;
                    if d.resources.contains_key(&r.name.name) {
                        return Err(DescError {
                            loc: loc.clone(),
                            msg: format!("resource {} declared twice", r.name.name),
                        });
                    }
                    d.resources.insert(
                        r.name.name.clone(),
                        ResourceDesc {
                            name: r.name.name.clone(),
                            bits,
                        },
                    );
                }
                Statement::TypeAlias(a) => {
                    aliases.insert(
                        a.identifier().name.clone(),
                        (a.underlying_type().clone(), a.opts().cloned().collect()),
                    );
                }
                Statement::Flag(f) => {
                    flags.insert(f.name.name.clone(), (loc.clone(), f.args.clone()));
                }
                _ => {}
            }
        }
        let ctx = Resolver {
            aliases: &aliases,
            flags: &flags,
            consts: &consts,
            resources: &d.resources,
        };
        for (loc, text, doc, st) in &stmts {
            match st {
                Statement::Function(f) => {
                    let name = f.name.unique_name();
                    if d.by_name.contains_key(&name) {
                        let first = &d.ops[d.by_name[&name]].loc;
                        return Err(DescError {
                            loc: loc.clone(),
                            msg: format!("operation {name} is already described at {first}"),
                        });
                    }
                    let mut args = Vec::new();
                    for a in &f.args {
                        args.push(ArgDesc {
                            name: a.name.name.clone(),
                            ty: ctx.arg_type(a, loc)?,
                        });
                    }
                    for (i, a) in args.iter().enumerate() {
                        if args[..i].iter().any(|b| b.name == a.name) {
                            return Err(DescError {
                                loc: loc.clone(),
                                msg: format!("{name}: argument {} appears twice", a.name),
                            });
                        }
                    }
                    let ret = match &f.output {
                        SArg::Void => None,
                        SArg::Ident(id) if d.resources.contains_key(&id.name) => {
                            Some(id.name.clone())
                        }
                        other => {
                            return Err(DescError {
                                loc: loc.clone(),
                                msg: format!(
                                    "{name}: an operation can only return a declared resource, not {other:?}"
                                ),
                            })
                        }
                    };
                    let attrs = parse_attrs(text, loc)?;
                    let op = OpDesc {
                        name: name.clone(),
                        args,
                        ret,
                        host: attrs.host,
                        arches: attrs.arches,
                        timeout_ms: attrs.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
                        weight: attrs.weight.unwrap_or(DEFAULT_WEIGHT),
                        disabled: attrs.disabled,
                        roles: attrs.roles,
                        persistent: attrs.persistent,
                        doc: doc.clone(),
                        loc: loc.clone(),
                    };
                    d.by_name.insert(name, d.ops.len());
                    d.ops.push(op);
                }
                Statement::Resource(_) | Statement::TypeAlias(_) | Statement::Flag(_) => {}
                other => {
                    return Err(DescError {
                        loc: loc.clone(),
                        msg: format!(
                            "hotfuzz descriptions support resources, type aliases, flag sets and operations, not {}",
                            statement_kind(other)
                        ),
                    })
                }
            }
        }
        if d.ops.is_empty() {
            return Err(DescError {
                loc: Loc {
                    file: files.first().map(|f| f.0.clone()).unwrap_or_default(),
                    line: 0,
                },
                msg: "no operations described".into(),
            });
        }
        Ok(d)
    }
}

fn statement_kind(s: &Statement) -> &'static str {
    match s {
        Statement::Include(_) => "includes",
        Statement::Struct(_) => "structs",
        Statement::Union(_) => "unions",
        Statement::Define(_) => "defines",
        Statement::TypeRaw(_) => "templates",
        _ => "this statement",
    }
}

struct Resolver<'a> {
    aliases: &'a HashMap<String, (SArg, Vec<ArgOpt>)>,
    flags: &'a HashMap<String, (Loc, Vec<Value>)>,
    consts: &'a HashMap<String, u64>,
    resources: &'a BTreeMap<String, ResourceDesc>,
}

fn int_bits(t: &SArg) -> Option<u8> {
    Some(match t {
        SArg::Int8 => 8,
        SArg::Int16 => 16,
        SArg::Int32 => 32,
        SArg::Int64 | SArg::Intptr => 64,
        _ => return None,
    })
}

fn value_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

impl Resolver<'_> {
    fn arg_type(&self, a: &Argument, loc: &Loc) -> Result<ArgType, DescError> {
        self.resolve(&a.argtype, &a.opts, None, &a.name.name, loc, 0)
    }

    fn resolve(
        &self,
        t: &SArg,
        opts: &[ArgOpt],
        kind: Option<String>,
        arg: &str,
        loc: &Loc,
        depth: usize,
    ) -> Result<ArgType, DescError> {
        let err = |msg: String| DescError {
            loc: loc.clone(),
            msg: format!("argument {arg}: {msg}"),
        };
        if depth > 16 {
            return Err(err("type alias cycle".into()));
        }
        if let Some(bits) = int_bits(t) {
            let full = if bits == 64 {
                i64::MAX
            } else {
                (1i64 << bits) - 1
            };
            let (mut min, mut max, mut align) = (0, full, 1u64);
            for o in opts {
                if let ArgOpt::Range(lo, hi, al) = o {
                    min = value_i64(lo).ok_or_else(|| err(format!("bad range start {lo:?}")))?;
                    max = value_i64(hi).ok_or_else(|| err(format!("bad range end {hi:?}")))?;
                    align = value_i64(al).unwrap_or(1).max(1) as u64;
                }
            }
            if min > max {
                return Err(err(format!("empty range [{min}:{max}]")));
            }
            return Ok(ArgType::Int {
                bits,
                min,
                max,
                align,
                kind,
            });
        }
        match t {
            SArg::Ident(id) => {
                let n = &id.name;
                if self.resources.contains_key(n) {
                    return Ok(ArgType::Resource { name: n.clone() });
                }
                if let Some((ut, uo)) = self.aliases.get(n) {
                    return self.resolve(ut, uo, Some(n.clone()), arg, loc, depth + 1);
                }
                if n == "bool8" || n == "bool32" || n == "bool64" {
                    return Ok(ArgType::Int {
                        bits: 8,
                        min: 0,
                        max: 1,
                        align: 1,
                        kind: None,
                    });
                }
                Err(err(format!("unknown type {n}")))
            }
            SArg::String | SArg::StringNoz => {
                let set = opts
                    .iter()
                    .find_map(|o| match o {
                        ArgOpt::Value(Value::Ident(i)) => Some(i.name.clone()),
                        _ => None,
                    })
                    .ok_or_else(|| err("string needs a set of values: string[set]".into()))?;
                let (_, vals) = self
                    .flags
                    .get(&set)
                    .ok_or_else(|| err(format!("unknown string set {set}")))?;
                let values = vals
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(err(format!("{set} must hold strings, not {other:?}"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ArgType::Str { set, values })
            }
            SArg::Flags => {
                let set = opts
                    .iter()
                    .find_map(|o| match o {
                        ArgOpt::Ident(i) => Some(i.name.clone()),
                        _ => None,
                    })
                    .ok_or_else(|| err("flags needs a flag set: flags[set, int32]".into()))?;
                let bits = opts
                    .iter()
                    .find_map(|o| match o {
                        ArgOpt::FullArg(a) => int_bits(&a.argtype),
                        _ => None,
                    })
                    .unwrap_or(64);
                let (_, vals) = self
                    .flags
                    .get(&set)
                    .ok_or_else(|| err(format!("unknown flag set {set}")))?;
                let values = vals
                    .iter()
                    .map(|v| match v {
                        Value::Int(i) => Ok(*i as u64),
                        Value::Ident(id) => self
                            .consts
                            .get(&id.name)
                            .copied()
                            .ok_or_else(|| err(format!("constant {} has no value in any .const file", id.name))),
                        other => Err(err(format!("{set} must hold numbers, not {other:?}"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ArgType::Flags { set, values, bits })
            }
            SArg::Const => {
                let value = opts
                    .iter()
                    .find_map(|o| match o {
                        ArgOpt::Value(Value::Int(i)) => Some(*i as u64),
                        ArgOpt::Value(Value::Ident(id)) => self.consts.get(&id.name).copied(),
                        _ => None,
                    })
                    .ok_or_else(|| err("const needs a known value".into()))?;
                Ok(ArgType::Const { value })
            }
            other => Err(err(format!(
                "type {other:?} is not supported by hotfuzz operations (integers, flags, strings of a set, resources, consts)"
            ))),
        }
    }
}

/// A statement's text and where it starts.
struct Chunk {
    line: usize,
    text: String,
    doc: String,
}

/// Splits syzlang text into statements: a statement starts on an unindented line and goes on
/// while brackets are open. Comment lines right above it become its documentation.
fn chunks(text: &str) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    let mut doc: Vec<String> = Vec::new();
    let mut depth: i32 = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if depth == 0 {
            if trimmed.is_empty() {
                doc.clear();
                continue;
            }
            if let Some(c) = trimmed.strip_prefix('#') {
                doc.push(c.trim().to_string());
                continue;
            }
            out.push(Chunk {
                line: i + 1,
                text: String::new(),
                doc: doc.join("\n"),
            });
            doc.clear();
        }
        let Some(cur) = out.last_mut() else { continue };
        if !cur.text.is_empty() {
            cur.text.push('\n');
        }
        cur.text.push_str(line);
        depth += bracket_delta(line);
        if depth < 0 {
            depth = 0;
        }
    }
    out
}

fn bracket_delta(line: &str) -> i32 {
    let mut d = 0;
    let mut quote = false;
    for c in line.chars() {
        match c {
            '"' => quote = !quote,
            '#' if !quote => break,
            '(' | '[' | '{' if !quote => d += 1,
            ')' | ']' | '}' if !quote => d -= 1,
            _ => {}
        }
    }
    d
}

/// How deep brackets may nest in one statement. syzlang-parser recurses once per level and
/// overflowed the stack at a few thousand; real descriptions nest four or five deep.
const MAX_NESTING: usize = 32;

/// The deepest bracket nesting in `text` (outside strings and comments), and the line
/// (0-based, within `text`) where it first goes past [`MAX_NESTING`].
fn too_deep(text: &str) -> Option<usize> {
    let mut depth: usize = 0;
    for (i, line) in text.lines().enumerate() {
        let mut quote = false;
        for c in line.chars() {
            match c {
                '"' => quote = !quote,
                '#' if !quote => break,
                '(' | '[' | '{' if !quote => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some(i);
                    }
                }
                ')' | ']' | '}' if !quote => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

static PANIC_HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Parses one statement with syzlang-parser, turning its errors and panics into a
/// [`DescError`] at `loc`.
fn parse_statement(text: &str, loc: &Loc) -> Result<Vec<Statement>, DescError> {
    if let Some(i) = too_deep(text) {
        return Err(DescError {
            loc: Loc {
                file: loc.file.clone(),
                line: loc.line + i,
            },
            msg: format!("brackets nest more than {MAX_NESTING} deep"),
        });
    }
    // syzlang-parser reports unbalanced brackets by panicking in places; contain that and keep
    // the default panic message off the terminal while parsing.
    let _g = PANIC_HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let source = text.to_string();
    let r = std::panic::catch_unwind(move || Statement::parse_from_str(&source));
    std::panic::set_hook(prev);
    let msg = match r {
        Ok(Ok(v)) if !v.is_empty() => return Ok(v),
        Ok(Ok(_)) => "not a statement".to_string(),
        Ok(Err(e)) => clean_parser_message(&e.to_string()),
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "parser panicked".into());
            format!("syzlang parser failed: {}", clean_parser_message(&what))
        }
    };
    let first = text.lines().next().unwrap_or("");
    Err(DescError {
        loc: loc.clone(),
        msg: format!("cannot parse `{first}`: {msg}"),
    })
}

/// Drops the parser's own source location ("…/parser.rs:2865: error: ") from a message.
fn clean_parser_message(m: &str) -> String {
    let m = m.trim();
    let m = m
        .split_once(".rs:")
        .and_then(|(_, rest)| rest.split_once(": ").map(|(_, r)| r))
        .unwrap_or(m);
    let m = m.strip_prefix("error: ").unwrap_or(m);
    m.trim_end_matches(['"', ')']).to_string()
}

#[derive(Debug, Default)]
struct Attrs {
    host: bool,
    arches: Vec<Arch>,
    timeout_ms: Option<u64>,
    weight: Option<u32>,
    disabled: bool,
    roles: Vec<Role>,
    persistent: bool,
}

/// Reads the attribute list `(host, arch[amd64], ...)` after an operation's arguments and
/// optional return resource. syzlang-parser accepts and drops attributes, so hotfuzz reads
/// them from the statement text itself.
fn parse_attrs(text: &str, loc: &Loc) -> Result<Attrs, DescError> {
    let err = |msg: String| DescError {
        loc: loc.clone(),
        msg,
    };
    let flat: String = text.split('#').next().unwrap_or("").replace('\n', " ");
    let open = flat
        .find('(')
        .ok_or_else(|| err("operation without arguments".into()))?;
    let mut depth = 0;
    let mut close = None;
    for (i, c) in flat[open..].char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close.ok_or_else(|| err("unbalanced parentheses".into()))?;
    let rest = flat[close + 1..].trim();
    let Some(start) = rest.find('(') else {
        return Ok(Attrs::default());
    };
    let inner = rest[start + 1..]
        .trim_end()
        .strip_suffix(')')
        .ok_or_else(|| err(format!("attribute list `{}` is not closed", &rest[start..])))?;
    let mut a = Attrs::default();
    for item in split_top(inner) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (key, val) = match item.split_once('[') {
            Some((k, v)) => (
                k.trim(),
                Some(
                    v.strip_suffix(']')
                        .ok_or_else(|| err(format!("attribute `{item}` is not closed")))?
                        .trim(),
                ),
            ),
            None => (item, None),
        };
        let num = |v: Option<&str>| -> Result<u64, DescError> {
            let v = v.ok_or_else(|| err(format!("attribute {key} needs a value: {key}[N]")))?;
            let parsed = if let Some(h) = v.strip_prefix("0x") {
                u64::from_str_radix(h, 16)
            } else {
                v.parse()
            };
            parsed.map_err(|_| err(format!("attribute {key}: `{v}` is not a number")))
        };
        match key {
            "host" => a.host = true,
            "disabled" => a.disabled = true,
            "persistent" => a.persistent = true,
            "timeout" => a.timeout_ms = Some(num(val)?),
            "weight" => a.weight = Some(num(val)? as u32),
            "role" => {
                let v = val.ok_or_else(|| err("role needs a value: role[walker|mover]".into()))?;
                for n in v.split(['|', ' ']).filter(|s| !s.is_empty()) {
                    a.roles.push(match n {
                        "walker" => Role::Walker,
                        "mover" => Role::Mover,
                        other => {
                            return Err(err(format!(
                                "attribute role: `{other}` is not walker or mover"
                            )))
                        }
                    });
                }
            }
            "arch" => {
                let v = val.ok_or_else(|| err("arch needs a value: arch[amd64|ppc64le]".into()))?;
                for n in v.split(['|', ' ']).filter(|s| !s.is_empty()) {
                    a.arches.push(
                        n.parse::<Arch>()
                            .map_err(|e| err(format!("attribute arch: {e}")))?,
                    );
                }
            }
            other => {
                return Err(err(format!(
                "unknown attribute `{other}` (host, arch[...], timeout[ms], weight[n], role[...], persistent, disabled)"
            )))
            }
        }
    }
    Ok(a)
}

fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Parses `NAME = VALUE` lines (decimal or 0x hex; `#` comments).
fn parse_consts(file: &str, text: &str, out: &mut HashMap<String, u64>) -> Result<(), DescError> {
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("arches") {
            continue;
        }
        let loc = Loc {
            file: file.to_string(),
            line: i + 1,
        };
        let (name, value) = line.split_once('=').ok_or_else(|| DescError {
            loc: loc.clone(),
            msg: format!("expected NAME = VALUE, found `{line}`"),
        })?;
        let v = value.trim();
        let parsed = if let Some(h) = v.strip_prefix("0x") {
            u64::from_str_radix(h, 16).ok()
        } else if let Some(n) = v.strip_prefix('-') {
            n.parse::<u64>().ok().map(|n| n.wrapping_neg())
        } else {
            v.parse().ok()
        };
        let parsed = parsed.ok_or_else(|| DescError {
            loc: loc.clone(),
            msg: format!("`{v}` is not a number"),
        })?;
        out.insert(name.trim().to_string(), parsed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> Result<Descriptions, DescError> {
        let v: Vec<(String, String)> = files
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Descriptions::from_sources(&v)
    }

    #[test]
    fn deep_nesting_is_an_error_at_its_line() {
        // 9000 levels overflowed syzlang-parser's stack and aborted hotfuzz.
        let n = 9000;
        let deep = format!(
            "yield()\n\ndeep(a {}int32{})\n",
            "ptr[in, ".repeat(n),
            "]".repeat(n)
        );
        let e = load(&[("t.txt", &deep)]).unwrap_err();
        assert_eq!(e.to_string(), "t.txt:3: brackets nest more than 32 deep");
        // Over several lines, the line where it went too deep.
        let lines = format!(
            "deep(a {}\nint32{})\n",
            "ptr[in,\n".repeat(40),
            "]".repeat(40)
        );
        let e = load(&[("t.txt", &lines)]).unwrap_err();
        assert_eq!(e.loc.line, 32);
        // Brackets in comments and strings do not count.
        let fine = format!("# {}\nyield()\n", "[".repeat(100));
        assert!(too_deep(&fine).is_none());
        assert!(too_deep(&format!("x(\"{}\")", "[".repeat(100))).is_none());
    }

    #[test]
    fn embedded_descriptions_load() {
        let d = Descriptions::embedded();
        assert!(d.ops.len() >= 40, "{}", d.ops.len());
        let r = d.op("virtio_mem_resize").unwrap();
        assert!(r.host);
        assert_eq!(r.arches, vec![Arch::X86_64]);
        assert_eq!(r.timeout_ms, 10_000);
        assert_eq!(
            r.args[0].ty,
            ArgType::Resource {
                name: "vmem_dev".into()
            }
        );
        assert!(
            matches!(&r.args[1].ty, ArgType::Int { kind: Some(k), align: 0x200000, .. } if k == "mem_size")
        );
        let g = d.op("gup_test_run").unwrap();
        let ArgType::Flags { values, .. } = &g.args[5].ty else {
            panic!()
        };
        assert!(
            values.contains(&0x100),
            "FOLL_LONGTERM resolved: {values:?}"
        );
        assert_eq!(d.op("mmap_anon").unwrap().ret.as_deref(), Some("mapping"));
        assert!(d.op("memtrace_enable").unwrap().on_arch(Arch::Ppc64le));
        assert!(!d.op("memtrace_enable").unwrap().on_arch(Arch::X86_64));
        assert!(d.op("sleep_ms").unwrap().doc.contains("Scheduling") || d.op("yield").is_some());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = load(&[("a.txt", "resource r[int32]\n\n# doc\nop1(x int32[0:1]\n")]).unwrap_err();
        assert_eq!(e.loc.file, "a.txt");
        assert_eq!(e.loc.line, 4);
        assert!(e.to_string().starts_with("a.txt:4: "), "{e}");

        let e = load(&[("b.txt", "op1(x nosuchtype)\n")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "b.txt:1: argument x: unknown type nosuchtype"
        );

        let e = load(&[("c.txt", "f = A, B\nop1(x flags[f, int32])\n")]).unwrap_err();
        assert!(e.to_string().starts_with("c.txt:2: "), "{e}");
        assert!(e.msg.contains("constant A"), "{e}");

        let e = load(&[("d.txt", "op1() (hots)\n")]).unwrap_err();
        assert!(
            e.to_string().contains("d.txt:1: unknown attribute `hots`"),
            "{e}"
        );

        let e = load(&[("e.txt", "op1()\n\nop1()\n")]).unwrap_err();
        assert_eq!(e.loc.line, 3);
        assert!(e.msg.contains("already described at e.txt:1"), "{e}");

        let e = load(&[("f.txt", "op1(x ptr[in, array[int8]])\n")]).unwrap_err();
        assert!(e.msg.contains("not supported"), "{e}");

        let e = load(&[("g.const", "FOO 3\n")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "g.const:1: expected NAME = VALUE, found `FOO 3`"
        );
    }

    #[test]
    fn garbage_does_not_panic() {
        for text in [
            "))))(((\n",
            "op(\n",
            "resource\n",
            "type x\n",
            "\u{0}\u{1}binary\n",
            "op(a int32[5:]) \n",
            "op(a int32[0:7]))\n",
            "x = \n",
            "op() (arch[sparc])\n",
        ] {
            let r = load(&[("z.txt", text)]);
            assert!(r.is_err(), "{text:?} was accepted");
            assert!(r.unwrap_err().to_string().starts_with("z.txt:"), "{text:?}");
        }
    }

    #[test]
    fn attributes_and_defaults() {
        let d = load(&[(
            "a.txt",
            "resource r[int64]\n# Makes an r.\nmk(n int32[1:4]) r (arch[amd64|ppc64le], timeout[0x10], weight[7])\nuse(x r)\n",
        )])
        .unwrap();
        let mk = d.op("mk").unwrap();
        assert_eq!(mk.arches, vec![Arch::X86_64, Arch::Ppc64le]);
        assert_eq!(mk.timeout_ms, 16);
        assert_eq!(mk.weight, 7);
        assert_eq!(mk.doc, "Makes an r.");
        let u = d.op("use").unwrap();
        assert_eq!(u.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert!(!u.host);
        assert_eq!(d.producers("r").count(), 1);
    }

    #[test]
    fn chunker_tracks_lines_and_brackets() {
        let c = chunks("# a\nx = 1\n\n# doc\nop(a int32,\n  b int32)\nop2()\n");
        assert_eq!(c.len(), 3);
        assert_eq!(c[1].line, 5);
        assert!(c[1].text.contains("b int32)"));
        assert_eq!(c[1].doc, "doc");
        assert_eq!(c[2].line, 7);
    }
}
