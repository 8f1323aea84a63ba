//! Planting a trigger inside another program: how tests and benchmarks build long programs
//! whose bug needs only a few of their operations.

use crate::program::gen::next_ret_number;
use crate::program::prog::{Arg, Program};

/// Operations of `p` that refer to a result no earlier operation produces (after some
/// operations were cut out): the ones to drop too.
pub fn orphans(p: &Program) -> std::collections::BTreeSet<usize> {
    let mut defined = std::collections::BTreeSet::new();
    let mut bad = std::collections::BTreeSet::new();
    for (i, op) in p.ops.iter().enumerate() {
        if op
            .args
            .iter()
            .any(|a| matches!(a, Arg::Ref(r) if !defined.contains(r)))
        {
            bad.insert(i);
        } else if let Some(r) = op.ret {
            defined.insert(r);
        }
    }
    bad
}

/// `noise` with the operations of `trigger` spread evenly among its operations, in order.
/// The trigger's results are renamed after the noise's so nothing collides; its operations
/// keep their threads.
pub fn interleave(noise: &Program, trigger: &Program) -> Program {
    let mut p = interleave_ops(noise, trigger);
    // A trigger operation that landed inside a block splits it.
    p.normalize_reps();
    p
}

fn interleave_ops(noise: &Program, trigger: &Program) -> Program {
    let off = next_ret_number(noise);
    let t: Vec<_> = trigger
        .ops
        .iter()
        .map(|o| {
            let mut o = o.clone();
            o.ret = o.ret.map(|r| r + off);
            for a in &mut o.args {
                if let Arg::Ref(r) = a {
                    *r += off;
                }
            }
            o
        })
        .collect();
    let (n, k) = (noise.ops.len(), t.len());
    let mut out = Program::default();
    let mut ti = 0;
    for (i, op) in noise.ops.iter().enumerate() {
        // Trigger op j goes after noise op floor((j + 1) * n / (k + 1)).
        while ti < k && (ti + 1) * n / (k + 1) <= i {
            out.ops.push(t[ti].clone());
            ti += 1;
        }
        out.ops.push(op.clone());
    }
    out.ops.extend(t[ti..].iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::desc::Descriptions;

    #[test]
    fn trigger_ops_keep_their_order_and_references() {
        let d = Descriptions::embedded();
        let noise = Program::parse(
            "r0 = mmap_anon(len=0x200000, thp=\"nohuge\", populate=0x1, node=-0x1)\nyield()\nyield()\nmunmap(map=r0)\n",
            &d,
        )
        .unwrap();
        let trig = Program::parse(
            "r0 = memblock_find(which=\"movable\", nth=0x0)\nmemblock_state(block=r0, state=\"offline\")\n",
            &d,
        )
        .unwrap();
        let p = interleave(&noise, &trig);
        p.validate(&d).unwrap();
        assert_eq!(p.ops.len(), 6);
        let names: Vec<_> = p.ops.iter().map(|o| o.name.as_str()).collect();
        let fi = names.iter().position(|n| *n == "memblock_find").unwrap();
        let si = names.iter().position(|n| *n == "memblock_state").unwrap();
        assert!(fi < si && fi > 0 && si < 5, "{names:?}");
        assert_eq!(p.ops[si].args[0], Arg::Ref(p.ops[fi].ret.unwrap()));
    }
}
