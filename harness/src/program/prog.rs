//! Programs: ordered, possibly concurrent sequences of typed operations (the model; the text
//! format is in `text.rs`).
//!
//! ```text
//! # comments start with '#'
//! r0 = mmap_anon(len=0x200000, thp="huge", populate=0x1, node=-0x1)
//! r1 = vmsplice_pin(map=r0, offset=0x0, len=0x10000) (thread: 1)
//! memblock_state(block=0x21, state="offline")
//! ```
//!
//! One operation per line, arguments by name in description order, integers in hex, strings
//! quoted, `rN` naming a produced resource. Operations with the same `thread` run in order;
//! different threads run concurrently (thread 0 when omitted). Printing then parsing gives the
//! same program; every parse error names its line and column.

use crate::program::desc::{ArgType, Descriptions};
use hotfuzz_executor::protocol::{ExecArg, ExecOp, ExecProgram, PROTOCOL_VERSION};
use std::collections::{BTreeMap, HashMap};

/// An argument value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arg {
    /// An integer (two's complement for negative values).
    Int(u64),
    /// A string.
    Str(String),
    /// The resource produced by the operation that assigned `rN`.
    Ref(u32),
}

/// One operation of a program.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Op {
    /// Operation name (from the descriptions).
    pub name: String,
    /// Arguments, in the order the description declares them.
    pub args: Vec<Arg>,
    /// `rN` this operation's result is assigned to.
    pub ret: Option<u32>,
    /// Thread.
    pub thread: u32,
}

/// A program.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Program {
    /// Operations in program order.
    pub ops: Vec<Op>,
}

impl Program {
    /// A short stable identifier: the hash of the program's text.
    pub fn id(&self, d: &Descriptions) -> String {
        blake3::hash(self.print(d).as_bytes()).to_hex()[..16].to_string()
    }

    /// Number of distinct threads.
    pub fn threads(&self) -> usize {
        let mut t: Vec<u32> = self.ops.iter().map(|o| o.thread).collect();
        t.sort_unstable();
        t.dedup();
        t.len()
    }

    /// Checks the program against the descriptions: known operations, argument count and
    /// kinds, references to earlier results of the right resource. (Parsed programs always
    /// pass; this guards programs built in code.)
    pub fn validate(&self, d: &Descriptions) -> Result<(), String> {
        let mut defined: HashMap<u32, String> = HashMap::new();
        for (i, op) in self.ops.iter().enumerate() {
            let desc = d
                .op(&op.name)
                .ok_or_else(|| format!("op {i}: unknown operation {}", op.name))?;
            if op.args.len() != desc.args.len() {
                return Err(format!(
                    "op {i}: {} takes {} arguments, has {}",
                    op.name,
                    desc.args.len(),
                    op.args.len()
                ));
            }
            for (a, ad) in op.args.iter().zip(&desc.args) {
                check_kind(a, &ad.ty, &|r| defined.get(&r).cloned())
                    .map_err(|m| format!("op {i} ({}): argument {}: {m}", op.name, ad.name))?;
            }
            if let Some(r) = op.ret {
                let res = desc
                    .ret
                    .clone()
                    .ok_or_else(|| format!("op {i}: {} produces nothing to assign", op.name))?;
                if defined.insert(r, res).is_some() {
                    return Err(format!("op {i}: r{r} assigned twice"));
                }
            }
        }
        Ok(())
    }

    /// The program as the executor runs it. `timeout_ms` bounds the whole program.
    pub fn to_exec(&self, d: &Descriptions, timeout_ms: u64, kcov: bool) -> ExecProgram {
        let mut producer: HashMap<u32, usize> = HashMap::new();
        let mut ops = Vec::with_capacity(self.ops.len());
        for (i, op) in self.ops.iter().enumerate() {
            let desc = d.op(&op.name);
            let mut args = BTreeMap::new();
            for (j, a) in op.args.iter().enumerate() {
                let name = desc
                    .and_then(|o| o.args.get(j))
                    .map(|a| a.name.clone())
                    .unwrap_or_else(|| format!("arg{j}"));
                let v = match a {
                    Arg::Int(v) => ExecArg::Int(*v),
                    Arg::Str(s) => ExecArg::Str(s.clone()),
                    Arg::Ref(r) => ExecArg::Ref(producer.get(r).copied().unwrap_or(usize::MAX)),
                };
                args.insert(name, v);
            }
            if let Some(r) = op.ret {
                producer.insert(r, i);
            }
            ops.push(ExecOp {
                index: i,
                thread: op.thread,
                name: op.name.clone(),
                host: desc.is_some_and(|o| o.host),
                args,
                timeout_ms: desc.map(|o| o.timeout_ms).unwrap_or(5000),
                text: Some(op.print(d)),
            });
        }
        ExecProgram {
            version: PROTOCOL_VERSION,
            ops,
            kcov,
            timeout_ms,
            kmsg_id: Some(self.id(d)),
            trace: false,
        }
    }

    /// Sum of the operations' deadlines: an upper bound for a sequential run.
    pub fn deadline_ms(&self, d: &Descriptions) -> u64 {
        self.ops
            .iter()
            .map(|o| d.op(&o.name).map(|x| x.timeout_ms).unwrap_or(5000))
            .sum()
    }
}

pub(crate) fn check_kind(
    a: &Arg,
    ty: &ArgType,
    defined: &dyn Fn(u32) -> Option<String>,
) -> Result<(), String> {
    match (a, ty) {
        (Arg::Str(_), ArgType::Str { .. }) => Ok(()),
        (Arg::Int(_), ArgType::Str { set, .. }) => Err(format!("expects a string (one of {set})")),
        (Arg::Ref(_), ArgType::Str { set, .. }) => Err(format!("expects a string (one of {set})")),
        (Arg::Int(_), _) => Ok(()),
        (Arg::Str(_), _) => Err("expects an integer, not a string".into()),
        (Arg::Ref(r), ArgType::Resource { name }) => match defined(*r) {
            None => Err(format!("r{r} is not assigned by an earlier operation")),
            Some(res) if &res == name => Ok(()),
            Some(res) => Err(format!("expects a {name}, but r{r} is a {res}")),
        },
        (Arg::Ref(r), _) => Err(format!("expects an integer, not the resource r{r}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::text::tests::SAMPLE;

    fn d() -> Descriptions {
        Descriptions::embedded()
    }

    #[test]
    fn exec_form_resolves_references_to_op_indices() {
        let d = d();
        let p = Program::parse(SAMPLE, &d).unwrap();
        let e = p.to_exec(&d, 60_000, false);
        assert_eq!(e.ops[1].args["map"], ExecArg::Ref(0));
        assert_eq!(e.ops[4].args["block"], ExecArg::Ref(3));
        assert_eq!(e.ops[6].args["pipe"], ExecArg::Ref(1));
        assert!(e.ops[2].host);
        assert_eq!(e.ops[2].timeout_ms, 10_000);
        assert_eq!(e.ops[1].thread, 1);
    }
}
