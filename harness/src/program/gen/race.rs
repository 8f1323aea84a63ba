//! Races: the generator's programs whose threads overlap on purpose. A plug that leaves the
//! block the race aims at, a block found at run time, movers repeated on it on thread 0 and a
//! PFN walker looping over it on thread 1 (see the parent module); the walker rotation that
//! gives every walker its turn; and the replacement of one side of a race by another
//! operation of its kind.

use super::{next_ret_number, next_ret_number_ops, pick_weighted, weighted, Generator};
use super::{RACE_TARGETS, RACE_TIMES};
use crate::program::desc::{ArgType, OpDesc, Role};
use crate::program::prog::{Arg, Op, Program, Rep};
use rand::seq::SliceRandom;
use rand::Rng;

/// The walker rotation of a campaign's generated races. Which walker a race needs is not
/// known, so each is equally likely; but a uniform draw per race leaves one walker out for
/// long stretches (with 13 walkers, a given one is missing from 50 races one time in 50),
/// and a campaign that needs that walker waits that long. Taking the walkers in turn, from a
/// random start, keeps the same share for each and puts every walker into every run of as
/// many races as there are walkers. A campaign hunting a race whose walker it knows keeps
/// only those walkers in the rotation.
#[derive(Debug, Clone, Default)]
pub struct WalkerTurns {
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The walkers in the rotation (operation names); empty: every enabled walker.
    only: std::sync::Arc<Vec<String>>,
}

impl WalkerTurns {
    /// A rotation whose first turn is `start` (taken modulo the number of walkers).
    pub fn starting_at(start: u64) -> WalkerTurns {
        WalkerTurns {
            next: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(start)),
            only: Default::default(),
        }
    }

    /// The rotation with only the walkers named in `names` (all of them when it is empty).
    pub fn only(mut self, names: &[String]) -> WalkerTurns {
        self.only = std::sync::Arc::new(names.to_vec());
        self
    }

    /// The next turn.
    fn take(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether walker `name` is in the rotation.
    fn has(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|n| n == name)
    }
}

impl<'a> Generator<'a> {
    /// Makes the plug at the start of `p` leave a block of the kind a race aims at: whole
    /// memory blocks for a movable, THP or hugetlb block, whole blocks and some subblocks
    /// for a partly plugged one. A race whose target does not exist races nothing, and a
    /// plug drawn without the target in mind (nothing, whole blocks only, or a device that
    /// does not exist) misses it about half the time.
    fn fit_plug(&mut self, p: &mut Program, which: &str) {
        let Some(resize) = p.ops.iter().position(|o| o.name == "virtio_mem_resize") else {
            return;
        };
        let Some(desc) = self.d.op("virtio_mem_resize") else {
            return;
        };
        if self.device_of(&p.ops[resize].args, desc).is_none() && !self.st.devices.is_empty() {
            // An edge value named no device: plug a real one.
            let n = self.rng.gen_range(0..self.st.devices.len()) as u64;
            p.ops[resize].args[0] = Arg::Int(n);
        }
        let Some(dev) = self.device_of(&p.ops[resize].args, desc) else {
            return;
        };
        let Some(size_at) = desc.args.iter().position(|a| a.name == "size") else {
            return;
        };
        let (bs, dmax) = (dev.block_size.max(1), dev.max);
        let mb = self.st.block_size.max(bs);
        let blocks = dmax / mb;
        if blocks == 0 {
            return;
        }
        let Arg::Int(size) = p.ops[resize].args[size_at] else {
            return;
        };
        let fits = match which {
            "partial" => size % mb != 0 && size < dmax,
            "movable" | "thp" | "hugetlb" => size >= mb,
            _ => true,
        };
        if fits {
            return;
        }
        let size = if which == "partial" && mb / bs > 1 {
            mb * self.rng.gen_range(0..blocks.min(4)) + bs * self.rng.gen_range(1..mb / bs)
        } else {
            mb * self.rng.gen_range(1..=blocks.min(4))
        };
        p.ops[resize].args[size_at] = Arg::Int(size);
    }

    /// A race: plug, find a block at run time, repeat movers on it on thread 0 while a
    /// walker loops over it on thread 1 (and sometimes more on thread 2).
    pub(super) fn race(&mut self, len: usize) -> Program {
        let mut p = Program::default();
        let which = weighted(&mut self.rng, RACE_TARGETS);
        self.plug(&mut p);
        self.fit_plug(&mut p, which);
        // The target, found when the program runs.
        let target = self.enabled_op("memblock_find").map(|find| {
            let r = next_ret_number(&p);
            let nth = self.rng.gen_range(0..4u64);
            p.ops.push(Op::new(
                &find.name,
                vec![Arg::Str(which.into()), Arg::Int(nth)],
                Some(r),
                0,
            ));
            r
        });
        // Other operations first: a few, or as many as the length asks for (the walker and
        // the block take about four).
        let mut few: u32 = self.rng.gen_range(0..=2);
        while few > 0 || p.ops.len() + 4 < len {
            let at = p.ops.len();
            let ops = self.gen_op(&p, at, 0);
            p.ops.extend(ops);
            few = few.saturating_sub(1);
        }
        // Thread 1: a walker in a loop, over the target when it takes a place; the next
        // walker in turn when the campaign keeps turns.
        let turn = self.walker_turns.as_ref().map(WalkerTurns::take);
        self.add_loop_turn(&mut p, Role::Walker, target, turn);
        // Thread 0: a block of movers on the target.
        let movers: Vec<&OpDesc> = self
            .enabled
            .iter()
            .copied()
            .filter(|o| o.has_role(Role::Mover) && !o.persistent)
            .collect();
        let block_start = p.ops.len();
        for _ in 0..self.rng.gen_range(1..=3usize) {
            let Some(m) = pick_weighted(&mut self.rng, &movers) else {
                break;
            };
            let mut made = self.gen_specific(&p, p.ops.len(), 0, m, 0);
            if let Some(t) = target {
                let mut last = made.pop().expect("generated");
                let before = self.aim(&mut p, &mut last, t, 0);
                p.ops.extend(before);
                made.push(last);
            }
            // Movers in pairs (offline, then online again) keep the block cycling.
            if m.name == "memblock_state" {
                if let Some(last) = made.last() {
                    let mut back = last.clone();
                    let undo = match &last.args[1] {
                        Arg::Str(s) if s == "offline" => {
                            ["online", "online_movable", "online_kernel"]
                                .choose(&mut self.rng)
                                .copied()
                        }
                        _ => Some("offline"),
                    };
                    if let Some(u) = undo {
                        back.args[1] = Arg::Str(u.into());
                        back.ret = None;
                        made.push(back);
                    }
                }
            }
            p.ops.extend(made);
        }
        let times = *RACE_TIMES.choose(&mut self.rng).expect("non-empty");
        let block = p.next_block();
        for o in &mut p.ops[block_start..] {
            o.rep = Rep::Block { block, times };
        }
        // Sometimes a third thread: another walker, or pins and workload.
        if self.rng.gen_bool(0.3) {
            if self.rng.gen_bool(0.5) {
                self.add_loop_at(&mut p, Role::Walker, target);
            } else {
                let at = p.ops.len();
                let ops = self.gen_op(&p, at, 2);
                p.ops.extend(ops);
            }
        }
        p
    }

    /// Points `op`'s memory block arguments at `target` and its PFN arguments at a page of
    /// `target` (a `pfn_find` or `pfn_in_block` on `thread`, returned to go before `op`).
    fn aim(&mut self, p: &mut Program, op: &mut Op, target: u32, thread: u32) -> Vec<Op> {
        let mut before = Vec::new();
        let Some(desc) = self.d.op(&op.name) else {
            return before;
        };
        for (i, a) in desc.args.iter().enumerate() {
            let ArgType::Resource { name } = &a.ty else {
                continue;
            };
            if name == "memblock" {
                op.args[i] = Arg::Ref(target);
            } else if name == "pfn" {
                let r = next_ret_number(p)
                    .max(next_ret_number_ops(&before))
                    .max(op.ret.map_or(0, |r| r + 1));
                let kind = weighted(
                    &mut self.rng,
                    &[
                        ("offline", 3),
                        ("any", 2),
                        ("lru", 2),
                        ("buddy", 1),
                        ("thp", 1),
                    ],
                );
                let nth = self.rng.gen_range(0..256u64);
                let producer = if self.enabled_op("pfn_find").is_some() && self.rng.gen_bool(0.7) {
                    Op::new(
                        "pfn_find",
                        vec![Arg::Ref(target), Arg::Str(kind.into()), Arg::Int(nth)],
                        Some(r),
                        thread,
                    )
                } else {
                    Op::new(
                        "pfn_in_block",
                        vec![Arg::Ref(target), Arg::Int(0)],
                        Some(r),
                        thread,
                    )
                };
                before.push(producer);
                op.args[i] = Arg::Ref(r);
            }
        }
        // Keep results numbered after the producers.
        if let Some(mut r) = op.ret {
            let n = next_ret_number_ops(&before);
            if r < n {
                r = n;
                op.ret = Some(r);
            }
        }
        before
    }

    /// Puts a loop of an operation with role `role` on a new thread (after what it needs).
    pub(super) fn add_loop(&mut self, p: &mut Program, role: Role) {
        self.add_loop_at(p, role, None)
    }

    /// [`Generator::add_loop`], aimed at memory block `target` when given. A persistent walker
    /// (one that starts a kernel thread walking by itself, like DAMON) runs once instead.
    /// Walkers are picked uniformly: which one a race needs is what is not known.
    fn add_loop_at(&mut self, p: &mut Program, role: Role, target: Option<u32>) {
        self.add_loop_turn(p, role, target, None)
    }

    /// [`Generator::add_loop_at`] with the operation picked by `turn` (modulo the candidates)
    /// instead of at random when given.
    fn add_loop_turn(
        &mut self,
        p: &mut Program,
        role: Role,
        target: Option<u32>,
        turn: Option<u64>,
    ) {
        let mut cands: Vec<&OpDesc> = self
            .enabled
            .iter()
            .copied()
            .filter(|o| o.has_role(role) && !o.host)
            .filter(|o| !o.persistent || role == Role::Walker)
            .collect();
        if let (Some(_), Some(turns)) = (turn, &self.walker_turns) {
            // A rotation kept to some walkers; all of them when none of those is enabled here.
            let kept: Vec<&OpDesc> = cands
                .iter()
                .copied()
                .filter(|o| turns.has(&o.name))
                .collect();
            if !kept.is_empty() {
                cands = kept;
            }
        }
        let picked = match turn {
            Some(k) if !cands.is_empty() => cands.get((k % cands.len() as u64) as usize),
            _ => cands.choose(&mut self.rng),
        };
        let Some(&w) = picked else {
            return;
        };
        let t = p.ops.iter().map(|o| o.thread).max().map_or(1, |m| m + 1);
        let mut made = self.gen_specific(p, p.ops.len(), t, w, 0);
        let Some(mut last) = made.pop() else { return };
        if let Some(target) = target {
            let before = self.aim(p, &mut last, target, t);
            made.extend(before);
            self.cover_block(&mut last);
        }
        if !w.persistent {
            last.rep = Rep::Loop;
        }
        p.ops.extend(made);
        p.ops.push(last);
    }

    /// Stretches a walker's page count over a whole memory block (DAMON's region, a
    /// kpageflags read): a race on the block's pages needs the walker to reach them.
    fn cover_block(&mut self, op: &mut Op) {
        let Some(desc) = self.d.op(&op.name) else {
            return;
        };
        let per = self.st.pages_per_block();
        for (i, a) in desc.args.iter().enumerate() {
            if let ArgType::Int { max, kind, .. } = &a.ty {
                let counts = matches!(kind.as_deref(), Some("page_count")) || a.name == "npages";
                if counts && self.rng.gen_bool(0.7) {
                    op.args[i] = Arg::Int(per.min(*max as u64));
                }
            }
        }
    }

    /// A fresh operation with role `role` in place of `p.ops[i]` (same thread and
    /// repetition), with the producers it needs before it; `None` when there is none.
    pub fn replace_with_role(&mut self, p: &Program, i: usize, role: Role) -> Option<Vec<Op>> {
        let cands: Vec<&OpDesc> = self
            .enabled
            .iter()
            .copied()
            .filter(|o| o.has_role(role) && !o.host && o.name != p.ops[i].name)
            .filter(|o| !o.persistent || p.ops[i].rep == Rep::Once)
            .collect();
        let w = *cands.choose(&mut self.rng)?;
        let mut made = self.gen_specific(p, i, p.ops[i].thread, w, 0);
        // Aim it where the old one was aimed: the same memory block, if it had one.
        let old_block = self.d.op(&p.ops[i].name).and_then(|od| {
            od.args
                .iter()
                .zip(&p.ops[i].args)
                .find_map(|(a, v)| match (&a.ty, v) {
                    (ArgType::Resource { name }, Arg::Ref(r)) if name == "memblock" => Some(*r),
                    _ => None,
                })
        });
        let mut last = made.pop()?;
        if let Some(b) = old_block {
            let mut tmp = p.clone();
            tmp.ops.truncate(i);
            tmp.ops.extend(made.iter().cloned());
            let before = self.aim(&mut tmp, &mut last, b, p.ops[i].thread);
            made.extend(before);
        }
        last.rep = p.ops[i].rep;
        for o in &mut made {
            o.rep = match p.ops[i].rep {
                Rep::Loop => Rep::Once,
                r => r,
            };
        }
        made.push(last);
        Some(made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::desc::Descriptions;
    use crate::program::state::GuestState;
    use hotfuzz_vm::{Arch, MachineConfig};
    use std::collections::BTreeSet;

    #[test]
    fn races_repeat_movers_on_a_target_while_a_walker_loops() {
        let d = Descriptions::embedded();
        let st = GuestState::model(&MachineConfig::new(Arch::X86_64));
        let mut races = 0;
        let mut partial = 0;
        for seed in 0..200 {
            let mut g = Generator::new(&d, &st, seed);
            g.race_rate = 1.0;
            let p = g.generate(12);
            p.validate(&d).unwrap();
            let block: Vec<&Op> = p
                .ops
                .iter()
                .filter(|o| matches!(o.rep, Rep::Block { .. }))
                .collect();
            // The walker: a loop, or a walker that runs by itself (DAMON) started once.
            let walker = p
                .ops
                .iter()
                .find(|o| o.thread != 0 && d.op(&o.name).unwrap().has_role(Role::Walker));
            if let (Some(w), false) = (walker, block.is_empty()) {
                let wd = d.op(&w.name).unwrap();
                assert!(w.rep == Rep::Loop || wd.persistent, "{}", w.name);
                assert!(block.iter().all(|o| o.thread == 0));
                races += 1;
            }
            if p.print(&d).contains("which=\"partial\"") {
                partial += 1;
            }
        }
        assert!(races > 150, "{races} of 200 are races");
        assert!(
            partial > 50,
            "{partial} of 200 aim at partly plugged blocks"
        );
    }

    #[test]
    fn a_race_plugs_what_its_target_needs() {
        let d = Descriptions::embedded();
        let st = GuestState::model(&MachineConfig::new(Arch::X86_64));
        let (mut partial, mut whole) = (0, 0);
        for seed in 0..300 {
            let mut g = Generator::new(&d, &st, seed);
            g.race_rate = 1.0;
            let p = g.generate(12);
            p.validate(&d).unwrap();
            let Some(Arg::Int(size)) = p
                .ops
                .iter()
                .find(|o| o.name == "virtio_mem_resize")
                .map(|o| o.args[1].clone())
            else {
                continue;
            };
            let Some(Arg::Str(which)) = p
                .ops
                .iter()
                .find(|o| o.name == "memblock_find")
                .map(|o| o.args[0].clone())
            else {
                continue;
            };
            let dev = &st.devices[0];
            let mb = st.block_size;
            match which.as_str() {
                "partial" => {
                    // Some subblocks of a block plugged, the others fake-offline.
                    assert!(
                        size % mb != 0 && size < dev.max,
                        "{size:#x}\n{}",
                        p.print(&d)
                    );
                    partial += 1;
                }
                "movable" | "thp" | "hugetlb" => {
                    assert!(size >= mb, "{which}: {size:#x}");
                    whole += 1;
                }
                _ => {}
            }
        }
        assert!(
            partial > 80 && whole > 50,
            "{partial} partial, {whole} whole"
        );
    }

    #[test]
    fn races_take_their_walkers_in_turn() {
        let d = Descriptions::embedded();
        let st = GuestState::model(&MachineConfig::new(Arch::X86_64));
        let turns = WalkerTurns::starting_at(5);
        let walkers: BTreeSet<String> = Generator::new(&d, &st, 0)
            .enabled()
            .filter(|o| o.has_role(Role::Walker) && !o.host)
            .map(|o| o.name.clone())
            .collect();
        assert!(walkers.len() >= 8, "{walkers:?}");
        let mut seen = Vec::new();
        for seed in 0..(walkers.len() * 3) as u64 {
            let mut g = Generator::new(&d, &st, seed);
            g.race_rate = 1.0;
            g.walker_turns = Some(turns.clone());
            let p = g.generate(12);
            p.validate(&d).unwrap();
            let w = p
                .ops
                .iter()
                .rfind(|o| o.thread == 1)
                .expect("a walker thread");
            assert!(walkers.contains(&w.name), "{} is not a walker", w.name);
            seen.push(w.name.clone());
        }
        // Every run of as many races as there are walkers has each walker once.
        for window in seen.windows(walkers.len()) {
            let distinct: BTreeSet<&String> = window.iter().collect();
            assert_eq!(distinct.len(), walkers.len(), "{window:?}");
        }
        // Without turns the draw is random, and some walker is left out of such a run.
        let random: Vec<String> = (0..walkers.len() as u64 * 3)
            .map(|seed| {
                let mut g = Generator::new(&d, &st, seed);
                g.race_rate = 1.0;
                let p = g.generate(12);
                p.ops.iter().rfind(|o| o.thread == 1).unwrap().name.clone()
            })
            .collect();
        assert!(random
            .windows(walkers.len())
            .any(|w| w.iter().collect::<BTreeSet<_>>().len() < walkers.len()));
    }

    #[test]
    fn a_rotation_kept_to_some_walkers_takes_only_those_in_turn() {
        let d = Descriptions::embedded();
        let st = GuestState::model(&MachineConfig::new(Arch::X86_64));
        let keep = vec![
            "split_huge_pages_all".to_string(),
            "kpageflags_read".to_string(),
        ];
        let turns = WalkerTurns::starting_at(0).only(&keep);
        let mut seen = Vec::new();
        for seed in 0..12u64 {
            let mut g = Generator::new(&d, &st, seed);
            g.race_rate = 1.0;
            g.walker_turns = Some(turns.clone());
            let p = g.generate(12);
            p.validate(&d).unwrap();
            let w = p.ops.iter().rfind(|o| o.thread == 1).expect("a walker");
            assert!(keep.contains(&w.name), "{} is not kept", w.name);
            seen.push(w.name.clone());
        }
        for pair in seen.windows(2) {
            assert_ne!(pair[0], pair[1], "{seen:?}");
        }
        // A name no enabled walker has leaves the whole rotation.
        let turns = WalkerTurns::starting_at(0).only(&["nope".to_string()]);
        let mut g = Generator::new(&d, &st, 1);
        g.race_rate = 1.0;
        g.walker_turns = Some(turns);
        let p = g.generate(12);
        assert!(p.ops.iter().any(|o| o.thread == 1), "{}", p.print(&d));
    }
}
