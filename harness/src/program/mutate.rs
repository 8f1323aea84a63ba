//! Program mutations: insert, remove, swap, change an argument, move an operation to another
//! thread, splice two programs, and the repetition ones: repeat a run as a block, change how
//! often a block repeats, undo a block, loop a thread's last operation or stop looping it.
//! Every mutation leaves a valid program: references that lose their producer become literals
//! (or their operation goes), results stay numbered in order, blocks and loops keep their
//! shape.

use crate::program::desc::{ArgType, Descriptions};
use crate::program::gen::{available, canonicalize, next_ret_number, threads_of, Generator};
use crate::program::prog::{Arg, Program, Rep};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::HashMap;

/// The kinds of mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// A new operation (with producers it needs).
    Insert,
    /// An operation removed.
    Remove,
    /// Two neighbouring operations swapped.
    Swap,
    /// One argument regenerated.
    ChangeArg,
    /// An operation moved to another thread.
    MoveThread,
    /// A prefix of this program followed by a suffix of another.
    Splice,
    /// A short run of operations repeated right after itself (offline/online cycles, plug
    /// and unplug again: the hotplug state machine is walked by repetition).
    Duplicate,
    /// A short run of one thread's operations made a repeated block.
    Repeat,
    /// A block repeats more or less often.
    Times,
    /// A block runs once again.
    Unrepeat,
    /// A thread's last operation loops (or stops looping).
    Loop,
    /// A walker or mover replaced by another of its kind (the other side of a race kept).
    Replace,
}

/// All mutation kinds.
pub const ALL: &[Mutation] = &[
    Mutation::Insert,
    Mutation::Remove,
    Mutation::Swap,
    Mutation::ChangeArg,
    Mutation::MoveThread,
    Mutation::Splice,
    Mutation::Duplicate,
    Mutation::Repeat,
    Mutation::Times,
    Mutation::Unrepeat,
    Mutation::Loop,
    Mutation::Replace,
];

/// Applies mutation `m`; returns false when it could not apply (e.g. nothing to remove).
pub fn apply(
    m: Mutation,
    p: &mut Program,
    g: &mut Generator,
    d: &Descriptions,
    other: Option<&Program>,
    max_len: usize,
) -> bool {
    let changed = match m {
        Mutation::Insert => insert(p, g, max_len),
        Mutation::Remove => remove(p, g),
        Mutation::Swap => swap(p, g),
        Mutation::ChangeArg => change_arg(p, g, d),
        Mutation::MoveThread => move_thread(p, g),
        Mutation::Splice => match other {
            Some(o) => splice(p, o, g, max_len),
            None => false,
        },
        Mutation::Duplicate => duplicate(p, g, max_len),
        Mutation::Repeat => repeat(p, g),
        Mutation::Times => times(p, g),
        Mutation::Unrepeat => unrepeat(p, g),
        Mutation::Loop => toggle_loop(p, g),
        Mutation::Replace => replace(p, g, d),
    };
    if changed {
        p.normalize_reps();
        repair(p, g, d);
        // Repairs may remove operations: number the blocks that are left again.
        p.normalize_reps();
        canonicalize(p);
    }
    changed
}

/// Applies a random mutation that changes the program (tries up to a few kinds).
pub fn mutate(
    p: &mut Program,
    g: &mut Generator,
    d: &Descriptions,
    other: Option<&Program>,
    max_len: usize,
) -> Option<Mutation> {
    for _ in 0..8 {
        let m = *ALL.choose(&mut g.rng).expect("non-empty");
        if apply(m, p, g, d, other, max_len) {
            return Some(m);
        }
    }
    None
}

fn insert(p: &mut Program, g: &mut Generator, max_len: usize) -> bool {
    if p.ops.len() >= max_len {
        return false;
    }
    let at = g.rng.gen_range(0..=p.ops.len());
    // Inside a block the new operation joins it (same thread, same count).
    let inside = at > 0
        && at < p.ops.len()
        && matches!(p.ops[at - 1].rep, Rep::Block { .. })
        && p.ops[at - 1].rep == p.ops[at].rep;
    let threads: Vec<u32> = threads_of(p).into_iter().collect();
    let t = if inside {
        p.ops[at].thread
    } else {
        threads.choose(&mut g.rng).copied().unwrap_or(0)
    };
    let mut ops = g.gen_op(p, at, t);
    if inside {
        let rep = p.ops[at].rep;
        for o in &mut ops {
            o.rep = rep;
        }
    }
    p.ops.splice(at..at, ops);
    true
}

fn repeat(p: &mut Program, g: &mut Generator) -> bool {
    let once: Vec<usize> = (0..p.ops.len())
        .filter(|&i| p.ops[i].rep == Rep::Once)
        .collect();
    let Some(&start) = once.choose(&mut g.rng) else {
        return false;
    };
    let thread = p.ops[start].thread;
    let want = g.rng.gen_range(1..=4);
    let mut end = start;
    while end < p.ops.len()
        && end - start < want
        && p.ops[end].thread == thread
        && p.ops[end].rep == Rep::Once
    {
        end += 1;
    }
    let times = *[2u32, 4, 8, 16, 32, 64]
        .choose(&mut g.rng)
        .expect("non-empty");
    let block = u32::MAX - 1;
    for o in &mut p.ops[start..end] {
        o.rep = Rep::Block { block, times };
    }
    true
}

fn blocks(p: &Program) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = p
        .ops
        .iter()
        .filter_map(|o| match o.rep {
            Rep::Block { block, times } => Some((block, times)),
            _ => None,
        })
        .collect();
    v.dedup();
    v
}

fn times(p: &mut Program, g: &mut Generator) -> bool {
    let Some(&(block, t)) = blocks(p).choose(&mut g.rng) else {
        return false;
    };
    let new = match g.rng.gen_range(0..3) {
        0 => t.saturating_mul(2),
        1 => t / 2,
        _ => g.rng.gen_range(2..=128),
    }
    .clamp(2, crate::program::prog::MAX_TIMES);
    if new == t {
        return false;
    }
    for o in &mut p.ops {
        if o.rep == (Rep::Block { block, times: t }) {
            o.rep = Rep::Block { block, times: new };
        }
    }
    true
}

fn unrepeat(p: &mut Program, g: &mut Generator) -> bool {
    let Some(&(block, t)) = blocks(p).choose(&mut g.rng) else {
        return false;
    };
    for o in &mut p.ops {
        if o.rep == (Rep::Block { block, times: t }) {
            o.rep = Rep::Once;
        }
    }
    true
}

fn replace(p: &mut Program, g: &mut Generator, d: &Descriptions) -> bool {
    let with_role: Vec<usize> = (0..p.ops.len())
        .filter(|&i| d.op(&p.ops[i].name).is_some_and(|o| !o.roles.is_empty()))
        .collect();
    let Some(&i) = with_role.choose(&mut g.rng) else {
        return false;
    };
    let roles = d
        .op(&p.ops[i].name)
        .map(|o| o.roles.clone())
        .unwrap_or_default();
    let Some(&role) = roles.choose(&mut g.rng) else {
        return false;
    };
    let Some(new) = g.replace_with_role(p, i, role) else {
        return false;
    };
    p.ops.splice(i..=i, new);
    true
}

fn toggle_loop(p: &mut Program, g: &mut Generator) -> bool {
    // The last operation of a thread: loop it, or stop looping it.
    let lasts: Vec<usize> = threads_of(p)
        .into_iter()
        .filter_map(|t| p.ops.iter().rposition(|o| o.thread == t))
        .collect();
    let Some(&i) = lasts.choose(&mut g.rng) else {
        return false;
    };
    let was = p.ops[i].rep;
    p.ops[i].rep = match was {
        Rep::Loop => Rep::Once,
        _ => Rep::Loop,
    };
    // Nothing may use a loop's result; then the operation stays as it was (in its block, if
    // it was in one: a block that lost a member would need renumbering).
    if p.ops[i].rep == Rep::Loop {
        if let Some(r) = p.ops[i].ret {
            if p.ops.iter().any(|o| o.args.contains(&Arg::Ref(r))) {
                p.ops[i].rep = was;
                return false;
            }
        }
    }
    true
}

fn remove(p: &mut Program, g: &mut Generator) -> bool {
    if p.ops.len() <= 1 {
        return false;
    }
    let i = g.rng.gen_range(0..p.ops.len());
    p.ops.remove(i);
    true
}

fn swap(p: &mut Program, g: &mut Generator) -> bool {
    if p.ops.len() < 2 {
        return false;
    }
    let i = g.rng.gen_range(0..p.ops.len() - 1);
    let produced = p.ops[i].ret;
    if let Some(r) = produced {
        if p.ops[i + 1].args.contains(&Arg::Ref(r)) {
            return false;
        }
    }
    p.ops.swap(i, i + 1);
    true
}

fn change_arg(p: &mut Program, g: &mut Generator, d: &Descriptions) -> bool {
    let with_args: Vec<usize> = (0..p.ops.len())
        .filter(|&i| !p.ops[i].args.is_empty())
        .collect();
    let Some(&i) = with_args.choose(&mut g.rng) else {
        return false;
    };
    let Some(desc) = d.op(&p.ops[i].name) else {
        return false;
    };
    // Regenerate the operation with the same name and keep one new argument.
    let fresh = {
        let mut ops = generated_like(g, p, i, desc);
        match ops.pop() {
            Some(o) => o,
            None => return false,
        }
    };
    let j = g.rng.gen_range(0..p.ops[i].args.len());
    let new = fresh.args[j].clone();
    // A reference in the fresh op may point at a producer the fresh op brought along; only
    // keep references that exist in p before i.
    let ok = match &new {
        Arg::Ref(r) => available(d, p, i, &[]).iter().any(|(n, res)| {
            n == r && matches!(&desc.args[j].ty, ArgType::Resource { name } if name == res)
        }),
        _ => true,
    };
    if !ok || p.ops[i].args[j] == new {
        return false;
    }
    p.ops[i].args[j] = new;
    true
}

fn generated_like(
    g: &mut Generator,
    p: &Program,
    at: usize,
    desc: &crate::program::desc::OpDesc,
) -> Vec<crate::program::prog::Op> {
    // Generate ops until one with the wanted name comes out (bounded), else give up.
    let mut prefix = p.clone();
    prefix.ops.truncate(at);
    for _ in 0..64 {
        let ops = g.gen_op(&prefix, at, 0);
        if ops.last().is_some_and(|o| o.name == desc.name) {
            return ops;
        }
    }
    Vec::new()
}

fn move_thread(p: &mut Program, g: &mut Generator) -> bool {
    if p.ops.is_empty() {
        return false;
    }
    let i = g.rng.gen_range(0..p.ops.len());
    let max_t = threads_of(p).into_iter().max().unwrap_or(0);
    let t = g.rng.gen_range(0..=(max_t + 1).min(3));
    if p.ops[i].thread == t {
        return false;
    }
    p.ops[i].thread = t;
    true
}

fn duplicate(p: &mut Program, g: &mut Generator, max_len: usize) -> bool {
    if p.ops.is_empty() || p.ops.len() >= max_len {
        return false;
    }
    let start = g.rng.gen_range(0..p.ops.len());
    let most = (p.ops.len() - start).min(4).min(max_len - p.ops.len());
    let len = g.rng.gen_range(1..=most);
    let mut copy = fresh_copy(&p.ops[start..start + len], next_ret_number(p));
    for o in &mut copy {
        // A copy of a loop or of part of a block runs once where it lands.
        o.rep = Rep::Once;
    }
    let at = start + len;
    p.ops.splice(at..at, copy);
    true
}

/// A copy of `ops` that produces results of its own, numbered from `next`: references to
/// results made inside the copied run follow the copy, references to earlier results stay.
/// Repetition is copied as it is.
pub fn fresh_copy<'a>(
    ops: impl IntoIterator<Item = &'a crate::program::prog::Op>,
    mut next: u32,
) -> Vec<crate::program::prog::Op> {
    let mut map: HashMap<u32, u32> = HashMap::new();
    let mut copy = Vec::new();
    for op in ops {
        let mut op = op.clone();
        for a in &mut op.args {
            if let Arg::Ref(r) = a {
                if let Some(n) = map.get(r) {
                    *r = *n;
                }
            }
        }
        if let Some(r) = op.ret {
            map.insert(r, next);
            op.ret = Some(next);
            next += 1;
        }
        copy.push(op);
    }
    copy
}

fn splice(p: &mut Program, other: &Program, g: &mut Generator, max_len: usize) -> bool {
    if other.ops.is_empty() {
        return false;
    }
    let cut = g.rng.gen_range(0..=p.ops.len());
    let from = g.rng.gen_range(0..other.ops.len());
    let mut tail: Vec<crate::program::prog::Op> = other.ops[from..].to_vec();
    // Renumber the tail's results so they do not clash with the prefix.
    let base = next_ret_number(p);
    let mut map: HashMap<u32, u32> = HashMap::new();
    for op in &mut tail {
        for a in &mut op.args {
            if let Arg::Ref(r) = a {
                // References to results before `from` in `other` have no producer any more.
                *r = map.get(r).copied().unwrap_or(u32::MAX);
            }
        }
        if let Some(r) = op.ret {
            let n = base + map.len() as u32;
            map.insert(r, n);
            op.ret = Some(n);
        }
    }
    p.ops.truncate(cut);
    p.ops.extend(tail);
    p.ops.truncate(max_len.max(1));
    true
}

/// Fixes references that no longer point to an earlier producer of the right resource:
/// literal-capable resources get a literal, the rest lose their operation.
pub fn repair(p: &mut Program, g: &mut Generator, d: &Descriptions) {
    loop {
        let mut defined: HashMap<u32, String> = HashMap::new();
        let mut bad: Option<(usize, usize)> = None;
        'ops: for (i, op) in p.ops.iter().enumerate() {
            let Some(desc) = d.op(&op.name) else {
                bad = Some((i, usize::MAX));
                break;
            };
            for (j, a) in op.args.iter().enumerate() {
                if let Arg::Ref(r) = a {
                    let want = match &desc.args.get(j).map(|x| &x.ty) {
                        Some(ArgType::Resource { name }) => name.clone(),
                        _ => String::new(),
                    };
                    if defined.get(r) != Some(&want) {
                        bad = Some((i, j));
                        break 'ops;
                    }
                }
            }
            if let (Some(r), Some(res)) = (op.ret, desc.ret.clone()) {
                // A loop's result is never there to use.
                if op.rep != Rep::Loop {
                    defined.insert(r, res);
                }
            }
        }
        let Some((i, j)) = bad else { return };
        let literal_ok = j != usize::MAX
            && d.op(&p.ops[i].name)
                .and_then(|o| o.args.get(j))
                .is_some_and(|a| matches!(&a.ty, ArgType::Resource { name } if !["mapping", "uring", "splice_pipe", "gup_pin"].contains(&name.as_str())));
        if literal_ok {
            p.ops[i].args[j] = Arg::Int(g.rng.gen_range(0..64));
        } else {
            p.ops.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::state::GuestState;
    use hotfuzz_vm::{Arch, MachineConfig};

    #[test]
    fn every_mutation_keeps_programs_valid_and_printable() {
        let d = Descriptions::embedded();
        let st = GuestState::model(&MachineConfig::new(Arch::X86_64));
        let mut g = Generator::new(&d, &st, 9);
        let mut p = g.generate(20);
        let mut counts: HashMap<Mutation, usize> = HashMap::new();
        for round in 0..2000 {
            let other = g.generate(10);
            let m = *ALL.choose(&mut g.rng).unwrap();
            if apply(m, &mut p, &mut g, &d, Some(&other), 60) {
                *counts.entry(m).or_default() += 1;
            }
            p.validate(&d)
                .unwrap_or_else(|e| panic!("round {round} after {m:?}: {e}\n{}", p.print(&d)));
            assert_eq!(
                Program::parse(&p.print(&d), &d).unwrap(),
                p,
                "round {round} after {m:?}\n{}",
                p.print(&d)
            );
            assert!(p.ops.len() <= 60 + 8);
            if p.ops.is_empty() {
                p = g.generate(5);
            }
        }
        for m in ALL {
            assert!(
                counts.get(m).copied().unwrap_or(0) > 50,
                "{m:?} applied {counts:?}"
            );
        }
    }

    #[test]
    fn mutation_is_deterministic() {
        let d = Descriptions::embedded();
        let st = GuestState::model(&MachineConfig::new(Arch::X86_64));
        let run = || {
            let mut g = Generator::new(&d, &st, 5);
            let mut p = g.generate(10);
            for _ in 0..50 {
                mutate(&mut p, &mut g, &d, None, 40);
            }
            p
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn removing_a_producer_repairs_its_consumers() {
        let d = Descriptions::embedded();
        let st = GuestState::model(&MachineConfig::new(Arch::X86_64));
        let mut g = Generator::new(&d, &st, 1);
        let mut p = Program::parse(
            "r0 = memblock_find(which=\"any\", nth=0x0)\nmemblock_state(block=r0, state=\"offline\")\nr1 = mmap_anon(len=0x1000, thp=\"default\", populate=0x1, node=-0x1)\nmunmap(map=r1)\n",
            &d,
        )
        .unwrap();
        p.ops.remove(2); // mmap_anon
        p.ops.remove(0); // memblock_find
        repair(&mut p, &mut g, &d);
        assert_eq!(p.ops.len(), 1, "munmap without a mapping goes");
        assert!(
            matches!(p.ops[0].args[0], Arg::Int(_)),
            "the block becomes a literal"
        );
    }
}
