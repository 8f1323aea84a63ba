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
//! Operations with the same `thread` run in order; different threads run concurrently (thread
//! 0 when omitted). An operation runs once, or as part of a *block* of consecutive operations
//! of one thread repeated a number of times, or in a *loop* on its thread until the threads
//! without a loop are done: the two ways programs overlap in time repeatedly, which is what
//! races need.

use crate::program::desc::{ArgType, Descriptions};
use hotfuzz_executor::protocol::{ExecArg, ExecOp, ExecProgram, ExecRep, PROTOCOL_VERSION};
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

/// How an operation repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Rep {
    /// Once.
    #[default]
    Once,
    /// Part of block `block`: consecutive operations of one thread run `times` times in a row.
    Block {
        /// Which block (operations of a block are consecutive in the program).
        block: u32,
        /// How often the block runs.
        times: u32,
    },
    /// Again and again, until every thread without a loop has finished. The last operation of
    /// its thread; nothing uses its result.
    Loop,
}

/// The most times a block may repeat.
pub const MAX_TIMES: u32 = 256;

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
    /// How it repeats.
    pub rep: Rep,
}

impl Op {
    /// An operation that runs once on `thread`.
    pub fn new(name: &str, args: Vec<Arg>, ret: Option<u32>, thread: u32) -> Op {
        Op {
            name: name.to_string(),
            args,
            ret,
            thread,
            rep: Rep::Once,
        }
    }

    /// How many times it runs at least (a loop counts once).
    pub fn times(&self) -> u32 {
        match self.rep {
            Rep::Block { times, .. } => times,
            _ => 1,
        }
    }
}

/// A program.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Program {
    /// Operations in program order.
    pub ops: Vec<Op>,
}

impl Program {
    /// A block number no operation of the program uses yet.
    pub fn next_block(&self) -> u32 {
        self.ops
            .iter()
            .filter_map(|o| match o.rep {
                Rep::Block { block, .. } => Some(block + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

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

    /// Checks the program against the descriptions: known operations, argument count, kinds
    /// and values (strings of their set, integers in their range), references to earlier
    /// results of the right resource, and the shape of blocks and loops. (Parsed programs
    /// always pass; this guards programs built in code.)
    pub fn validate(&self, d: &Descriptions) -> Result<(), String> {
        self.validate_reps()?;
        let mut defined: HashMap<u32, String> = HashMap::new();
        let loops: std::collections::HashSet<u32> = self
            .ops
            .iter()
            .filter(|o| o.rep == Rep::Loop)
            .filter_map(|o| o.ret)
            .collect();
        for (i, op) in self.ops.iter().enumerate() {
            for a in &op.args {
                if let Arg::Ref(r) = a {
                    if loops.contains(r) {
                        return Err(format!(
                            "op {i}: r{r} comes from a loop, which gives no result to use"
                        ));
                    }
                }
            }
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
                check_kind(a, &ad.ty, d, &|r| defined.get(&r).cloned())
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

    /// Blocks are consecutive operations of one thread with one repeat count (2 to
    /// [`MAX_TIMES`]); a loop is its thread's last operation.
    fn validate_reps(&self) -> Result<(), String> {
        let mut seen_blocks = std::collections::HashSet::new();
        let mut prev: Option<(u32, u32, u32)> = None;
        for (i, op) in self.ops.iter().enumerate() {
            match op.rep {
                Rep::Block { block, times } => {
                    if !(2..=MAX_TIMES).contains(&times) {
                        return Err(format!(
                            "op {i}: a block repeats 2 to {MAX_TIMES} times, not {times}"
                        ));
                    }
                    match prev {
                        Some((b, t, th)) if b == block => {
                            if t != times || th != op.thread {
                                return Err(format!(
                                    "op {i}: every operation of a block has its thread and count"
                                ));
                            }
                        }
                        _ => {
                            if !seen_blocks.insert(block) {
                                return Err(format!(
                                    "op {i}: the operations of a block must be consecutive"
                                ));
                            }
                        }
                    }
                    prev = Some((block, times, op.thread));
                }
                Rep::Loop => {
                    if self.ops[i + 1..].iter().any(|o| o.thread == op.thread) {
                        return Err(format!(
                            "op {i}: a loop must be the last operation of its thread"
                        ));
                    }
                    prev = None;
                }
                Rep::Once => prev = None,
            }
        }
        Ok(())
    }

    /// Renumbers blocks 0, 1, ... in program order and splits runs that are not consecutive
    /// operations of one thread (after a mutation moved or removed operations); a block of one
    /// operation stays a block.
    pub fn normalize_reps(&mut self) {
        let mut next = 0;
        let mut prev: Option<(u32, u32, u32, u32)> = None; // (old block, times, thread, new)
        let n = self.ops.len();
        for i in 0..n {
            let thread = self.ops[i].thread;
            if let Rep::Block { block, times } = self.ops[i].rep {
                let times = times.clamp(2, MAX_TIMES);
                let new = match prev {
                    Some((b, _, th, new)) if b == block && th == thread => new,
                    _ => {
                        next += 1;
                        next - 1
                    }
                };
                let times = match prev {
                    Some((b, t, th, _)) if b == block && th == thread => t,
                    _ => times,
                };
                self.ops[i].rep = Rep::Block { block: new, times };
                prev = Some((block, times, thread, new));
            } else {
                prev = None;
            }
        }
        // A loop that is no longer its thread's last operation runs once.
        for i in 0..n {
            if self.ops[i].rep == Rep::Loop
                && self.ops[i + 1..]
                    .iter()
                    .any(|o| o.thread == self.ops[i].thread)
            {
                self.ops[i].rep = Rep::Once;
            }
        }
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
                rep: match op.rep {
                    Rep::Once => ExecRep::Once,
                    Rep::Block { block, times } => ExecRep::Block { block, times },
                    Rep::Loop => ExecRep::Loop,
                },
            });
        }
        ExecProgram {
            version: PROTOCOL_VERSION,
            ops,
            kcov,
            timeout_ms,
            kmsg_id: Some(self.id(d)),
            trace: false,
            repeat_budget_ms: None,
        }
    }

    /// Sum of the operations' deadlines, each as often as it runs (a loop once more than the
    /// rest of the program): an upper bound for a sequential run. `repeat_budget_ms` is the
    /// executor's budget for repeated blocks (a campaign's), if any.
    pub fn deadline_ms(&self, d: &Descriptions, repeat_budget_ms: Option<u64>) -> u64 {
        self.ops
            .iter()
            .map(|o| {
                let t = d.op(&o.name).map(|x| x.timeout_ms).unwrap_or(5000);
                let all = t.saturating_mul(o.times() as u64);
                // A repeated block stops starting runs after its budget.
                repeat_budget_ms.map_or(all, |b| all.min(t + b))
            })
            .fold(0u64, u64::saturating_add)
    }
}

/// Checks one argument against its type: the right kind, a value its description allows
/// (a string of its set, an integer in its range, flags of its set, a literal resource that
/// fits its width), and a reference to an earlier result of the right resource.
pub(crate) fn check_kind(
    a: &Arg,
    ty: &ArgType,
    d: &Descriptions,
    defined: &dyn Fn(u32) -> Option<String>,
) -> Result<(), String> {
    match (a, ty) {
        (Arg::Str(s), ArgType::Str { set, values }) => {
            if values.iter().any(|v| v == s) {
                Ok(())
            } else {
                Err(format!(
                    "{s:?} is not one of {set}: {}",
                    values
                        .iter()
                        .map(|v| format!("{v:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
        (Arg::Int(_), ArgType::Str { set, .. }) => Err(format!("expects a string (one of {set})")),
        (Arg::Ref(_), ArgType::Str { set, .. }) => Err(format!("expects a string (one of {set})")),
        (Arg::Int(v), ArgType::Int { min, max, .. }) => {
            let s = *v as i64;
            if s < *min || s > *max {
                Err(format!(
                    "{} is outside its range [{}, {}]",
                    crate::program::text::fmt_int(*v),
                    crate::program::text::fmt_int(*min as u64),
                    crate::program::text::fmt_int(*max as u64)
                ))
            } else {
                Ok(())
            }
        }
        (Arg::Int(v), ArgType::Flags { set, values, .. }) => {
            let all = values.iter().fold(0u64, |a, b| a | b);
            if v & !all != 0 {
                Err(format!(
                    "{} has bits that are not in {set} (allowed: {})",
                    crate::program::text::fmt_int(*v),
                    crate::program::text::fmt_int(all)
                ))
            } else {
                Ok(())
            }
        }
        (Arg::Int(v), ArgType::Const { value }) => {
            if v == value {
                Ok(())
            } else {
                Err(format!("must be {value:#x}"))
            }
        }
        (Arg::Int(v), ArgType::Resource { name }) => {
            let bits = d.resources.get(name).map(|r| r.bits).unwrap_or(64);
            let s = *v as i64;
            let fits = bits >= 64 || *v < (1u64 << bits) || (s < 0 && s >= -(1i64 << (bits - 1)));
            if fits {
                Ok(())
            } else {
                Err(format!(
                    "{} does not fit a {name} ({bits} bits)",
                    crate::program::text::fmt_int(*v)
                ))
            }
        }
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
        assert_eq!(e.ops[8].args["pipe"], ExecArg::Ref(1));
        assert!(e.ops[2].host);
        assert_eq!(e.ops[2].timeout_ms, 10_000);
        assert_eq!(e.ops[1].thread, 1);
        assert_eq!(
            e.ops[6].rep,
            ExecRep::Block {
                block: 0,
                times: 16
            }
        );
        assert_eq!(e.ops[11].rep, ExecRep::Loop);
        assert_eq!(e.ops[11].args["pfn"], ExecArg::Ref(10));
        // A block's operations count as often as they run, up to the block's budget; a
        // loop once.
        let own: u64 = p
            .ops
            .iter()
            .map(|o| d.op(&o.name).unwrap().timeout_ms)
            .sum();
        let budget = hotfuzz_executor::protocol::REPEAT_BUDGET_MS;
        assert_eq!(
            p.deadline_ms(&d, Some(budget)),
            own + 2 * budget.min(15 * 5000)
        );
        // Without a budget (a reproducer) every round counts.
        assert_eq!(p.deadline_ms(&d, None), own + 2 * 15 * 5000);
    }
}
