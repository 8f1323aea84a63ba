//! The program text format: printing and parsing, with line and column in every error, and
//! reading program files (`FILE:LINE:COL: message`).
//!
//! ```text
//! # comments start with '#'
//! r0 = mmap_anon(len=0x200000, thp="huge", populate=0x1, node=-0x1)
//! r1 = vmsplice_pin(map=r0, offset=0x0, len=0x10000) (thread: 1)
//! memblock_state(block=0x21, state="offline")
//! ```
//!
//! One operation per line, arguments by name in description order, integers in hex, strings
//! quoted, `rN` naming a produced resource, properties in parentheses after it (`thread: N`,
//! `loop`). A block of operations repeated N times is written
//!
//! ```text
//! repeat 32 {
//!   memblock_state(block=r0, state="offline")
//!   memblock_state(block=r0, state="online_movable")
//! }
//! split_huge_pages_all() (thread: 1, loop)
//! ```
//!
//! Printing then parsing gives the same program.

use crate::program::desc::{Descriptions, OpDesc};
use crate::program::prog::{check_kind, Arg, Op, Program, Rep};
use anyhow::{anyhow, Context, Result};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

/// A parse or validation error at a position of the program text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {col}: {msg}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong.
    pub msg: String,
}

/// Formats an integer the way programs print them: hex, negative when it is a small negative
/// number in two's complement (errnos, -1 for "no node").
pub fn fmt_int(v: u64) -> String {
    let s = v as i64;
    if (-(1i64 << 31)..0).contains(&s) {
        format!("-0x{:x}", s.unsigned_abs())
    } else {
        format!("0x{v:x}")
    }
}

fn fmt_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(o, "\\x{:02x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl Op {
    /// The operation as one line of program text (without newline).
    pub fn print(&self, d: &Descriptions) -> String {
        let mut s = String::new();
        if let Some(r) = self.ret {
            let _ = write!(s, "r{r} = ");
        }
        s.push_str(&self.name);
        s.push('(');
        let desc = d.op(&self.name);
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let name = desc
                .and_then(|o| o.args.get(i))
                .map(|a| a.name.as_str())
                .unwrap_or("?");
            s.push_str(name);
            s.push('=');
            match a {
                Arg::Int(v) => s.push_str(&fmt_int(*v)),
                Arg::Str(v) => s.push_str(&fmt_str(v)),
                Arg::Ref(r) => {
                    let _ = write!(s, "r{r}");
                }
            }
        }
        s.push(')');
        let looping = self.rep == Rep::Loop;
        match (self.thread, looping) {
            (0, false) => {}
            (0, true) => s.push_str(" (loop)"),
            (t, false) => {
                let _ = write!(s, " (thread: {t})");
            }
            (t, true) => {
                let _ = write!(s, " (thread: {t}, loop)");
            }
        }
        s
    }
}

impl Program {
    /// The program as text.
    pub fn print(&self, d: &Descriptions) -> String {
        let mut s = String::new();
        let mut open: Option<u32> = None;
        for op in &self.ops {
            let block = match op.rep {
                Rep::Block { block, .. } => Some(block),
                _ => None,
            };
            if open.is_some() && open != block {
                s.push_str("}\n");
                open = None;
            }
            if let (Some(b), Rep::Block { times, .. }) = (block, op.rep) {
                if open != Some(b) {
                    let _ = writeln!(s, "repeat {times} {{");
                    open = Some(b);
                }
                s.push_str("  ");
            }
            s.push_str(&op.print(d));
            s.push('\n');
        }
        if open.is_some() {
            s.push_str("}\n");
        }
        s
    }

    /// Parses program text, checking it against the descriptions.
    pub fn parse(text: &str, d: &Descriptions) -> Result<Program, ParseError> {
        let mut prog = Program::default();
        // rN -> (producing op index, resource)
        let mut defined: HashMap<u32, (usize, String)> = HashMap::new();
        // The open block: (id, times, its first operation's thread, where it opened).
        let mut block: Option<(u32, u32, Option<u32>, usize)> = None;
        let mut blocks = 0u32;
        let mut loop_threads: HashMap<u32, usize> = HashMap::new();
        let mut last_line = 0;
        for (ln, line) in text.lines().enumerate() {
            last_line = ln + 1;
            let mut p = Cursor::new(line, ln + 1);
            p.skip_ws();
            if p.done() || p.peek() == Some('#') {
                continue;
            }
            if p.peek() == Some('}') {
                if block.take().is_none() {
                    return Err(p.here("`}` without an open `repeat N {`"));
                }
                p.pos += 1;
                p.skip_ws();
                if !p.done() && p.peek() != Some('#') {
                    return Err(p.here("unexpected text after `}`"));
                }
                continue;
            }
            if let Some(times) = p.repeat_header()? {
                if block.is_some() {
                    return Err(p.err(0, "blocks do not nest: close the open block with `}` first"));
                }
                block = Some((blocks, times, None, ln + 1));
                blocks += 1;
                continue;
            }
            let mut op = p.op(d, &defined)?;
            if let Some(&at) = loop_threads.get(&op.thread) {
                return Err(p.err(
                    0,
                    format!(
                        "thread {} already ended with a loop (line {at}): a loop is its thread's last operation",
                        op.thread
                    ),
                ));
            }
            if let Some((id, times, thread, _)) = block.as_mut() {
                if op.rep == Rep::Loop {
                    return Err(p.err(0, "a loop cannot be inside a repeated block"));
                }
                match thread {
                    Some(t) if *t != op.thread => {
                        return Err(p.err(
                            0,
                            format!("every operation of a block runs on one thread (this one is on {}, the block on {t})", op.thread),
                        ))
                    }
                    _ => *thread = Some(op.thread),
                }
                op.rep = Rep::Block {
                    block: *id,
                    times: *times,
                };
            }
            if op.rep == Rep::Loop {
                loop_threads.insert(op.thread, ln + 1);
            }
            for a in &op.args {
                if let Arg::Ref(r) = a {
                    if let Some((j, _)) = defined.get(r) {
                        if prog.ops[*j].rep == Rep::Loop {
                            return Err(p.err(
                                0,
                                format!("r{r} comes from a loop, which gives no result to use"),
                            ));
                        }
                    }
                }
            }
            if let Some(r) = op.ret {
                let res = d
                    .op(&op.name)
                    .and_then(|o| o.ret.clone())
                    .unwrap_or_default();
                defined.insert(r, (prog.ops.len(), res));
            }
            prog.ops.push(op);
        }
        if let Some((_, _, _, at)) = block {
            return Err(ParseError {
                line: last_line.max(at),
                col: 1,
                msg: format!("the block opened on line {at} is not closed with `}}`"),
            });
        }
        Ok(prog)
    }
}

/// The comment line that heads program `i` (0-based) of a history of `n` (`programs.prog`,
/// a multi-program `repro.prog`); only the last one says it was running when the report
/// appeared. `# program ` starts every such line: that is where a history is split again.
pub fn history_header(i: usize, n: usize) -> String {
    if i + 1 == n {
        format!("# program {n} of {n}: the one running when the report appeared\n")
    } else {
        format!("# program {} of {n}\n", i + 1)
    }
}

/// Reads and parses a program from `path` (`-` for stdin).
pub fn read_program(path: &Path, d: &Descriptions) -> Result<Program> {
    let (name, text) = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the program from stdin")?;
        ("<stdin>".to_string(), s)
    } else {
        let s = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let s = String::from_utf8(s).map_err(|e| {
            anyhow!(
                "{}: not UTF-8 text (byte {})",
                path.display(),
                e.utf8_error().valid_up_to()
            )
        })?;
        (path.display().to_string(), s)
    };
    let p =
        Program::parse(&text, d).map_err(|e| anyhow!("{name}:{}:{}: {}", e.line, e.col, e.msg))?;
    if p.ops.is_empty() {
        return Err(anyhow!("{name}: the program has no operations"));
    }
    Ok(p)
}

/// A character cursor over one line, tracking the column for errors.
struct Cursor {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

impl Cursor {
    fn new(src: &str, line: usize) -> Cursor {
        Cursor {
            chars: src.chars().collect(),
            pos: 0,
            line,
        }
    }

    fn err(&self, col: usize, msg: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            col: col + 1,
            msg: msg.into(),
        }
    }

    fn here(&self, msg: impl Into<String>) -> ParseError {
        self.err(self.pos, msg)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn done(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: char, what: &str) -> Result<(), ParseError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.here(format!(
                "expected `{c}` {what}, found {}",
                self.describe_here()
            )))
        }
    }

    fn describe_here(&self) -> String {
        match self.peek() {
            None => "end of line".into(),
            Some(c) => format!("`{c}`"),
        }
    }

    fn ident(&mut self) -> Option<String> {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        (self.pos > start).then(|| self.chars[start..self.pos].iter().collect())
    }

    /// `rN`, if the next token is one.
    fn res_ref(&mut self) -> Option<u32> {
        if self.peek() != Some('r') {
            return None;
        }
        let start = self.pos;
        self.pos += 1;
        let dstart = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
            self.pos += 1;
        }
        let is_ident_char = matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_');
        if self.pos == dstart || is_ident_char {
            self.pos = start;
            return None;
        }
        let s: String = self.chars[dstart..self.pos].iter().collect();
        match s.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                self.pos = start;
                None
            }
        }
    }

    fn int(&mut self) -> Result<u64, ParseError> {
        let start = self.pos;
        let neg = self.peek() == Some('-');
        if neg {
            self.pos += 1;
        }
        let hex = self.chars.get(self.pos) == Some(&'0')
            && matches!(self.chars.get(self.pos + 1), Some('x' | 'X'));
        if hex {
            self.pos += 2;
        }
        let dstart = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_hexdigit()) {
            self.pos += 1;
        }
        let digits: String = self.chars[dstart..self.pos].iter().collect();
        let parsed = if hex {
            u64::from_str_radix(&digits, 16).ok()
        } else if digits.chars().all(|c| c.is_ascii_digit()) {
            digits.parse().ok()
        } else {
            None
        };
        match parsed {
            Some(v) if !digits.is_empty() => Ok(if neg { v.wrapping_neg() } else { v }),
            _ => Err(self.err(start, "expected a number (like 0x1000 or 42)")),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1; // opening quote
        let mut s = String::new();
        loop {
            match self.peek() {
                None => return Err(self.err(start, "unterminated string")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some('\\') => {
                    let esc_at = self.pos;
                    self.pos += 1;
                    match self.peek() {
                        Some('"') => s.push('"'),
                        Some('\\') => s.push('\\'),
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some('x') => {
                            let h: String = self
                                .chars
                                .get(self.pos + 1..self.pos + 3)
                                .unwrap_or(&[])
                                .iter()
                                .collect();
                            let v = u8::from_str_radix(&h, 16)
                                .map_err(|_| self.err(esc_at, "bad \\x escape (two hex digits)"))?;
                            s.push(v as char);
                            self.pos += 2;
                        }
                        _ => {
                            return Err(self.err(esc_at, "unknown escape (\\\" \\\\ \\n \\t \\xNN)"))
                        }
                    }
                    self.pos += 1;
                }
                Some(c) => {
                    s.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn op(
        &mut self,
        d: &Descriptions,
        defined: &HashMap<u32, (usize, String)>,
    ) -> Result<Op, ParseError> {
        let op_start = self.pos;
        let mut ret = None;
        if let Some(r) = self.res_ref() {
            self.skip_ws();
            if self.peek() == Some('=') {
                if defined.contains_key(&r) {
                    return Err(self.err(op_start, format!("r{r} is already assigned")));
                }
                self.pos += 1;
                ret = Some(r);
                self.skip_ws();
            } else {
                self.pos = op_start;
            }
        }
        let name_at = self.pos;
        let name = self.ident().ok_or_else(|| {
            self.here(format!(
                "expected an operation name, found {}",
                self.describe_here()
            ))
        })?;
        let desc: &OpDesc = d
            .op(&name)
            .ok_or_else(|| self.err(name_at, format!("unknown operation `{name}`")))?;
        if ret.is_some() && desc.ret.is_none() {
            return Err(self.err(op_start, format!("{name} produces no resource to assign")));
        }
        self.expect('(', &format!("after {name}"))?;
        let mut vals: Vec<Option<Arg>> = vec![None; desc.args.len()];
        self.skip_ws();
        if self.peek() == Some(')') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                let an_at = self.pos;
                let an = self.ident().ok_or_else(|| {
                    self.here(format!(
                        "expected an argument name, found {}",
                        self.describe_here()
                    ))
                })?;
                let ai = desc.arg_index(&an).ok_or_else(|| {
                    let names: Vec<&str> = desc.args.iter().map(|a| a.name.as_str()).collect();
                    self.err(
                        an_at,
                        format!(
                            "{name} has no argument `{an}` (it takes: {})",
                            names.join(", ")
                        ),
                    )
                })?;
                if vals[ai].is_some() {
                    return Err(self.err(an_at, format!("argument `{an}` given twice")));
                }
                self.expect('=', &format!("after argument name `{an}`"))?;
                self.skip_ws();
                let v_at = self.pos;
                let v = match self.peek() {
                    Some('"') => Arg::Str(self.string()?),
                    Some('r') => match self.res_ref() {
                        Some(r) => Arg::Ref(r),
                        None => {
                            return Err(self.here("expected a value (number, \"string\" or rN)"))
                        }
                    },
                    Some(c) if c == '-' || c.is_ascii_digit() => Arg::Int(self.int()?),
                    _ => {
                        return Err(self.here(format!(
                            "expected a value (number, \"string\" or rN), found {}",
                            self.describe_here()
                        )))
                    }
                };
                let lookup = |r: u32| defined.get(&r).map(|(_, res)| res.clone());
                check_kind(&v, &desc.args[ai].ty, d, &lookup)
                    .map_err(|m| self.err(v_at, format!("argument `{an}` of {name}: {m}")))?;
                vals[ai] = Some(v);
                self.skip_ws();
                match self.peek() {
                    Some(',') => {
                        self.pos += 1;
                    }
                    Some(')') => {
                        self.pos += 1;
                        break;
                    }
                    _ => {
                        return Err(self.here(format!(
                            "expected `,` or `)` after an argument, found {}",
                            self.describe_here()
                        )))
                    }
                }
            }
        }
        let mut args = Vec::with_capacity(vals.len());
        for (i, v) in vals.into_iter().enumerate() {
            match v {
                Some(v) => args.push(v),
                None => {
                    return Err(self.err(
                        name_at,
                        format!("{name} is missing argument `{}`", desc.args[i].name),
                    ))
                }
            }
        }
        let mut thread = 0;
        let mut rep = Rep::Once;
        self.skip_ws();
        if self.peek() == Some('(') {
            self.pos += 1;
            loop {
                self.skip_ws();
                let k_at = self.pos;
                let k = self
                    .ident()
                    .ok_or_else(|| self.here("expected a property name (thread, loop)"))?;
                match k.as_str() {
                    "loop" => rep = Rep::Loop,
                    "thread" => {
                        self.expect(':', &format!("after property `{k}`"))?;
                        self.skip_ws();
                        let v_at = self.pos;
                        let v = self.int()?;
                        thread = u32::try_from(v)
                            .ok()
                            .filter(|&t| t < 64)
                            .ok_or_else(|| self.err(v_at, "thread must be 0..63"))?
                    }
                    _ => {
                        return Err(self.err(k_at, format!("unknown property `{k}` (thread, loop)")))
                    }
                }
                self.skip_ws();
                match self.peek() {
                    Some(',') => self.pos += 1,
                    Some(')') => {
                        self.pos += 1;
                        break;
                    }
                    _ => {
                        return Err(self.here(format!(
                            "expected `,` or `)`, found {}",
                            self.describe_here()
                        )))
                    }
                }
            }
        }
        self.skip_ws();
        if !self.done() && self.peek() != Some('#') {
            return Err(self.here(format!(
                "unexpected {} after the operation",
                self.describe_here()
            )));
        }
        Ok(Op {
            name,
            args,
            ret,
            thread,
            rep,
        })
    }

    /// `repeat N {`, if the line is one: N.
    fn repeat_header(&mut self) -> Result<Option<u32>, ParseError> {
        let start = self.pos;
        match self.ident() {
            Some(w) if w == "repeat" => {}
            _ => {
                self.pos = start;
                return Ok(None);
            }
        }
        self.skip_ws();
        if self.peek() == Some('(') {
            // `repeat(...)` is an operation name, not a block.
            self.pos = start;
            return Ok(None);
        }
        let n_at = self.pos;
        let n = self.int()?;
        let times = u32::try_from(n)
            .ok()
            .filter(|t| (2..=crate::program::prog::MAX_TIMES).contains(t))
            .ok_or_else(|| {
                self.err(
                    n_at,
                    format!(
                        "a block repeats 2 to {} times",
                        crate::program::prog::MAX_TIMES
                    ),
                )
            })?;
        self.expect('{', "after the repeat count")?;
        self.skip_ws();
        if !self.done() && self.peek() != Some('#') {
            return Err(self.here("a block's operations go on the lines after `{`"));
        }
        Ok(Some(times))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn only_the_last_program_of_a_history_says_it_was_running() {
        assert_eq!(history_header(0, 3), "# program 1 of 3\n");
        assert_eq!(history_header(1, 3), "# program 2 of 3\n");
        assert!(history_header(2, 3).starts_with("# program 3 of 3: the one running"));
        assert!(history_header(0, 1).starts_with("# program 1 of 1: the one running"));
    }

    fn d() -> Descriptions {
        Descriptions::embedded()
    }

    pub(crate) const SAMPLE: &str = "\
r0 = mmap_anon(len=0x200000, thp=\"huge\", populate=0x1, node=-0x1)
r1 = vmsplice_pin(map=r0, offset=0x0, len=0x10000) (thread: 1)
virtio_mem_resize(dev=0x0, size=0x10000000)
r2 = memblock_find(which=\"movable\", nth=0x0)
memblock_state(block=r2, state=\"offline\")
notifier_fail_offline(errno=\"EBUSY\")
repeat 16 {
  memblock_state(block=r2, state=\"offline\")
  memblock_state(block=r2, state=\"online_movable\")
}
pipe_release(pipe=r1) (thread: 1)
damon_stop()
r3 = pfn_find(block=r2, kind=\"offline\", nth=0x3) (thread: 2)
kpageflags_read(pfn=r3, count=0x200) (thread: 2, loop)
";

    #[test]
    fn print_parse_identity() {
        let d = d();
        let p = Program::parse(SAMPLE, &d).unwrap();
        assert_eq!(p.ops.len(), 12);
        assert_eq!(p.ops[1].thread, 1);
        assert_eq!(p.ops[5].args[0], Arg::Str("EBUSY".into()));
        assert_eq!(
            p.ops[6].rep,
            Rep::Block {
                block: 0,
                times: 16
            }
        );
        assert_eq!(
            p.ops[7].rep,
            Rep::Block {
                block: 0,
                times: 16
            }
        );
        assert_eq!(p.ops[11].rep, Rep::Loop);
        assert_eq!(p.print(&d), SAMPLE);
        assert_eq!(Program::parse(&p.print(&d), &d).unwrap(), p);
        p.validate(&d).unwrap();
    }

    #[test]
    fn blocks_and_loops_are_checked() {
        let e = err("repeat 4 {\nyield()\n");
        assert!(e.msg.contains("not closed"), "{e}");
        let e = err("}\n");
        assert!(e.msg.contains("without an open"), "{e}");
        let e = err("repeat 1 {\nyield()\n}\n");
        assert!(e.msg.contains("2 to 256"), "{e}");
        let e = err("repeat 4 {\nyield()\nyield() (thread: 1)\n}\n");
        assert!(e.msg.contains("one thread"), "{e}");
        let e = err("repeat 4 {\nrepeat 2 {\n");
        assert!(e.msg.contains("do not nest"), "{e}");
        let e = err("yield() (loop)\nyield()\n");
        assert!(e.msg.contains("last operation"), "{e}");
        let e = err("r0 = memblock_find(which=\"any\", nth=0x0) (loop)\nmemblock_state(block=r0, state=\"offline\") (thread: 1)\n");
        assert!(e.msg.contains("comes from a loop"), "{e}");
        let e = err("repeat 4 {\nyield() (loop)\n}\n");
        assert!(e.msg.contains("inside a repeated block"), "{e}");
        // An operation called repeat would still parse as one (none is described).
        let e = err("repeat(x=0x1)\n");
        assert!(e.msg.contains("unknown operation"), "{e}");
        // Two blocks in a row stay two blocks.
        let d = d();
        let text = "repeat 2 {\n  yield()\n}\nrepeat 3 {\n  yield()\n}\n";
        let p = Program::parse(text, &d).unwrap();
        assert_eq!(p.print(&d), text);
        assert_ne!(p.ops[0].rep, p.ops[1].rep);
    }

    #[test]
    fn values_outside_their_description_are_refused() {
        let e = err("memblock_state(block=0x21, state=\"ofline\")");
        assert!(
            e.msg.contains("\"ofline\" is not one of memblock_states"),
            "{e}"
        );
        // At the value, not at the operation.
        assert_eq!((e.line, e.col), (1, 34), "{e}");
        let e = err("yield()\nmemblock_find(which=\"any\", nth=0xffffffffffffffff)");
        assert!(e.msg.contains("outside its range"), "{e}");
        assert_eq!((e.line, e.col), (2, 32), "{e}");
        let e = err("virtio_mem_wait(dev=0x0, ms=0x11653371)");
        assert!(e.msg.contains("outside its range [0x0, 0x1388]"), "{e}");
        let e = err("notifier_fail_offline(errno=\"../../x\")");
        assert!(e.msg.contains("not one of offline_errnos"), "{e}");
        let e = err("memblock_state(block=0x100000000, state=\"offline\")");
        assert!(e.msg.contains("does not fit a memblock"), "{e}");
        Program::parse("memblock_state(block=-0x1, state=\"offline\")", &d()).unwrap();
    }

    #[test]
    fn accepts_any_argument_order_decimal_and_comments() {
        let d = d();
        let p = Program::parse(
            "# setup\n  virtio_mem_resize( size = 268435456 , dev=0 )   # plug\n\nyield()\n",
            &d,
        )
        .unwrap();
        assert_eq!(
            p.print(&d),
            "virtio_mem_resize(dev=0x0, size=0x10000000)\nyield()\n"
        );
    }

    #[test]
    fn strings_escape_round_trip() {
        let d = d();
        let weird = "a\"b\\c\n\u{1}é";
        let p = Program {
            ops: vec![Op::new(
                "memblock_state",
                vec![Arg::Int(3), Arg::Str(weird.into())],
                None,
                0,
            )],
        };
        let text = p.print(&d);
        assert_eq!(
            text,
            "memblock_state(block=0x3, state=\"a\\\"b\\\\c\\n\\x01é\")\n"
        );
        // The string reads back exactly; as a block state it is refused, with the set named.
        let quoted = fmt_str(weird);
        assert_eq!(Cursor::new(&quoted, 1).string().unwrap(), weird);
        let e = Program::parse(&text, &d).unwrap_err();
        assert!(e.msg.contains("is not one of memblock_states"), "{e}");
    }

    fn err(text: &str) -> ParseError {
        Program::parse(text, &d()).unwrap_err()
    }

    #[test]
    fn errors_point_at_the_mistake() {
        let e = err("yield()\nmemblock_stat(block=0x1, state=\"online\")\n");
        assert_eq!((e.line, e.col), (2, 1));
        assert!(e.msg.contains("unknown operation `memblock_stat`"), "{e}");

        let e = err("memblock_state(block=0x1, stat=\"online\")");
        assert_eq!((e.line, e.col), (1, 27));
        assert!(
            e.msg.contains("no argument `stat`") && e.msg.contains("block, state"),
            "{e}"
        );

        let e = err("memblock_state(block=0x1, state=0x5)");
        assert_eq!(e.col, 33);
        assert!(e.msg.contains("expects a string"), "{e}");

        let e = err("memblock_state(block=0x1)");
        assert!(e.msg.contains("missing argument `state`"), "{e}");

        let e = err("memblock_state(block=r7, state=\"online\")");
        assert_eq!(e.col, 22);
        assert!(e.msg.contains("r7 is not assigned"), "{e}");

        let e = err("r0 = mmap_anon(len=0x1000, thp=\"huge\", populate=0x0, node=0x0)\nmemblock_state(block=r0, state=\"online\")");
        assert_eq!((e.line, e.col), (2, 22));
        assert!(
            e.msg.contains("expects a memblock, but r0 is a mapping"),
            "{e}"
        );

        let e = err("memblock_state(block=0x1, state=\"online)");
        assert!(e.msg.contains("unterminated string"), "{e}");

        let e = err("yield() junk");
        assert_eq!(e.col, 9);

        let e = err("yield() (thread: 99)");
        assert!(e.msg.contains("thread must be"), "{e}");

        let e = err("r0 = yield()");
        assert!(e.msg.contains("produces no resource"), "{e}");

        let e = err("r0 = memblock_find(which=\"any\", nth=0x0)\nr0 = memblock_find(which=\"any\", nth=0x1)");
        assert_eq!(e.line, 2);
        assert!(e.msg.contains("already assigned"), "{e}");

        let e = err("sleep_ms(ms=0xzz)");
        assert!(e.msg.contains("expected a number"), "{e}");

        let e = err("sleep_ms(ms=0x1");
        assert!(e.msg.contains("expected `,` or `)`"), "{e}");

        assert_eq!(
            e.to_string(),
            format!("line 1, column {}: {}", e.col, e.msg)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let d = d();
        for s in [
            "(",
            ")",
            "=",
            "r",
            "r0",
            "r0 =",
            "x(",
            "yield(,)",
            "\"",
            "yield() (",
            "yield() (thread",
            "yield() (thread: -1)",
            "\u{feff}yield()",
            "sleep_ms(ms=-)",
            "sleep_ms(ms=\"\\x\")",
        ] {
            let _ = Program::parse(s, &d);
        }
    }

    use std::collections::BTreeSet;

    fn corpus() -> Vec<(String, Program)> {
        let d = Descriptions::embedded();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
        let mut v = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "prog") {
                v.push((p.display().to_string(), read_program(&p, &d).unwrap()));
            }
        }
        v
    }

    #[test]
    fn corpus_seeds_parse_and_use_every_operation() {
        let d = Descriptions::embedded();
        let seeds = corpus();
        assert!(seeds.len() >= 8);
        let used: BTreeSet<&str> = seeds
            .iter()
            .flat_map(|(_, p)| p.ops.iter().map(|o| o.name.as_str()))
            .collect();
        let missing: Vec<&str> = d
            .ops
            .iter()
            .map(|o| o.name.as_str())
            .filter(|n| !used.contains(n))
            .collect();
        assert!(missing.is_empty(), "no seed uses {missing:?}");
        for (name, p) in &seeds {
            assert_eq!(&Program::parse(&p.print(&d), &d).unwrap(), p, "{name}");
        }
    }

    #[test]
    fn file_errors_carry_the_file_name() {
        let d = Descriptions::embedded();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.prog");
        std::fs::write(&f, "yield()\nmemblock_state(block=0x1, state=0x2)\n").unwrap();
        let e = read_program(&f, &d).unwrap_err().to_string();
        assert_eq!(e, format!("{}:2:33: argument `state` of memblock_state: expects a string (one of memblock_states)", f.display()));
        std::fs::write(&f, "# nothing\n").unwrap();
        assert!(read_program(&f, &d)
            .unwrap_err()
            .to_string()
            .contains("no operations"));
        std::fs::write(&f, b"\xff\xfe").unwrap();
        assert!(read_program(&f, &d)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
    }
}
