//! Program generation from the descriptions and the guest's state. Programs are valid (every
//! value within what its description allows, resources produced before they are used) and
//! aim at hotplugged memory: sizes that fit the devices, blocks and PFNs in hotpluggable
//! ranges. Deterministic for a seed.
//!
//! Some programs are *races* on purpose: a thread repeats a block of operations that change a
//! memory block (offline, online, plug, poison: `role[mover]`) on a block found at run time,
//! while another thread runs a PFN walker (`role[walker]`) in a loop, so the two overlap again
//! and again on the same pages. Which movers, walkers and targets is random; the shape is what
//! the bugs this tool exists for need.

use crate::program::desc::{ArgType, Descriptions, OpDesc, Role};
use crate::program::prog::{Arg, Op, Program, Rep};
use crate::program::state::GuestState;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;

mod race;
pub use race::WalkerTurns;

/// Resources an operation can only get from an earlier operation (no meaningful literal).
pub const PRODUCED_ONLY: &[&str] = &["mapping", "uring", "splice_pipe", "gup_pin"];

/// Default chance that an argument takes an edge value (the least or most its description
/// allows, a misaligned size): valid by the description, often refused by the kernel.
pub const INVALID_RATE: f64 = 0.03;

/// Default chance that a generated program is a race (see the module documentation).
pub const RACE_RATE: f64 = 0.4;

/// Repeat counts for blocks of generated races.
const RACE_TIMES: &[u32] = &[8, 16, 32, 64, 128];

/// Which memory block a race aims at (`memblock_find` kinds), with weights.
const RACE_TARGETS: &[(&str, u32)] = &[
    ("partial", 6),
    ("movable", 3),
    ("online", 2),
    ("thp", 1),
    ("hugetlb", 1),
    ("any", 1),
];

/// A program generator for one kind of guest.
pub struct Generator<'a> {
    d: &'a Descriptions,
    st: &'a GuestState,
    /// The random source (public so mutators share it).
    pub rng: ChaCha8Rng,
    enabled: Vec<&'a OpDesc>,
    total_weight: u64,
    /// Chance that an argument takes an edge value.
    pub invalid_rate: f64,
    /// Chance that a program is a race.
    pub race_rate: f64,
    /// Whose turn it is to be a race's walker, shared by the generators of a campaign (see
    /// [`WalkerTurns`]); `None` draws the walker at random.
    pub walker_turns: Option<WalkerTurns>,
}

impl<'a> Generator<'a> {
    /// A generator for `st` seeded with `seed`. Operations that do not apply to the guest's
    /// architecture, are disabled, or are known unsupported are never picked.
    pub fn new(d: &'a Descriptions, st: &'a GuestState, seed: u64) -> Generator<'a> {
        let enabled: Vec<&OpDesc> = d
            .ops
            .iter()
            .filter(|o| !o.disabled && o.on_arch(st.arch) && !st.unsupported.contains(&o.name))
            .filter(|o| o.weight > 0)
            .collect();
        let total_weight = enabled.iter().map(|o| o.weight as u64).sum();
        Generator {
            d,
            st,
            rng: ChaCha8Rng::seed_from_u64(seed),
            enabled,
            total_weight,
            invalid_rate: INVALID_RATE,
            race_rate: RACE_RATE,
            walker_turns: None,
        }
    }

    /// Operations the generator may pick.
    pub fn enabled(&self) -> impl Iterator<Item = &OpDesc> {
        self.enabled.iter().copied()
    }

    fn enabled_op(&self, name: &str) -> Option<&'a OpDesc> {
        self.enabled.iter().copied().find(|o| o.name == name)
    }

    /// A new program of about `len` operations (producers the operations need are added, so
    /// the result can be a little longer).
    pub fn generate(&mut self, len: usize) -> Program {
        let mut p = if self.rng.gen_bool(self.race_rate) {
            self.race(len)
        } else {
            self.plain(len)
        };
        p.normalize_reps();
        canonicalize(&mut p);
        p
    }

    fn plain(&mut self, len: usize) -> Program {
        let mut p = Program::default();
        let threads = if self.rng.gen_bool(0.7) {
            1
        } else {
            self.rng.gen_range(2..=3)
        };
        // Most interesting paths need hotplugged memory: usually start by plugging some.
        if self.rng.gen_bool(0.6) {
            self.plug(&mut p);
        }
        while p.ops.len() < len.max(1) {
            let t = self.rng.gen_range(0..threads);
            let at = p.ops.len();
            let ops = self.gen_op(&p, at, t);
            p.ops.extend(ops);
        }
        // Now and then a repetition or a loop of what is there.
        if self.rng.gen_bool(0.15) {
            self.wrap_block(&mut p);
        }
        if self.rng.gen_bool(0.1) {
            self.add_loop(&mut p, Role::Walker);
        }
        p
    }

    /// virtio_mem_resize + virtio_mem_wait on thread 0 (when the guest has virtio-mem).
    fn plug(&mut self, p: &mut Program) {
        for name in ["virtio_mem_resize", "virtio_mem_wait"] {
            if let Some(op) = self.enabled_op(name) {
                let ops = self.gen_specific(p, p.ops.len(), 0, op, 0);
                p.ops.extend(ops);
            }
        }
    }

    /// Turns a short run of consecutive operations of one thread into a repeated block.
    fn wrap_block(&mut self, p: &mut Program) {
        if p.ops.is_empty() {
            return;
        }
        let start = self.rng.gen_range(0..p.ops.len());
        let thread = p.ops[start].thread;
        let mut end = start;
        let want = self.rng.gen_range(1..=3);
        while end < p.ops.len()
            && end - start < want
            && p.ops[end].thread == thread
            && p.ops[end].rep == Rep::Once
        {
            end += 1;
        }
        if end == start {
            return;
        }
        let block = p.ops.len() as u32 + 1000;
        let times = self.rng.gen_range(2..=16);
        for o in &mut p.ops[start..end] {
            o.rep = Rep::Block { block, times };
        }
    }

    fn pick_op(&mut self) -> &'a OpDesc {
        if self.total_weight == 0 {
            return self.d.op("yield").unwrap_or(&self.d.ops[0]);
        }
        let mut x = self.rng.gen_range(0..self.total_weight);
        for o in &self.enabled {
            if x < o.weight as u64 {
                return o;
            }
            x -= o.weight as u64;
        }
        self.enabled[0]
    }

    /// Generates one operation to be inserted at `at` in `p` (on thread `thread`), preceded by
    /// the producers of resources it needs that `p` does not have before `at`.
    pub fn gen_op(&mut self, p: &Program, at: usize, thread: u32) -> Vec<Op> {
        let desc = self.pick_op();
        self.gen_specific(p, at, thread, desc, 0)
    }

    /// Generates operation `desc` (and the producers it needs) for position `at` of `p`.
    pub fn gen_specific(
        &mut self,
        p: &Program,
        at: usize,
        thread: u32,
        desc: &OpDesc,
        depth: usize,
    ) -> Vec<Op> {
        let mut out: Vec<Op> = Vec::new();
        let mut next_ret = next_ret_number(p);
        let mut args = Vec::with_capacity(desc.args.len());
        for ad in &desc.args {
            let avail = available(self.d, p, at, &out);
            let a = match &ad.ty {
                ArgType::Resource { name } => {
                    let mine: Vec<u32> = avail
                        .iter()
                        .filter(|(_, r)| r == name)
                        .map(|(n, _)| *n)
                        .collect();
                    let produced_only = PRODUCED_ONLY.contains(&name.as_str());
                    if !mine.is_empty() && (produced_only || self.rng.gen_bool(0.6)) {
                        Arg::Ref(*mine.choose(&mut self.rng).expect("non-empty"))
                    } else if produced_only && depth < 3 {
                        // Make the resource first.
                        let prods: Vec<&OpDesc> = self
                            .d
                            .producers(name)
                            .filter(|o| {
                                o.on_arch(self.st.arch) && !self.st.unsupported.contains(&o.name)
                            })
                            .collect();
                        match prods.choose(&mut self.rng) {
                            Some(prod) => {
                                let mut tmp = p.clone();
                                tmp.ops.splice(at..at, out.iter().cloned());
                                let made = self.gen_specific(
                                    &tmp,
                                    at + out.len(),
                                    thread,
                                    prod,
                                    depth + 1,
                                );
                                let r = made.last().and_then(|o| o.ret);
                                next_ret = next_ret.max(
                                    made.iter().filter_map(|o| o.ret).max().map_or(0, |m| m + 1),
                                );
                                out.extend(made);
                                match r {
                                    Some(r) => Arg::Ref(r),
                                    None => Arg::Int(0),
                                }
                            }
                            None => Arg::Int(0),
                        }
                    } else {
                        Arg::Int(self.literal(name))
                    }
                }
                ty => self.value(ty, &args, desc),
            };
            args.push(a);
        }
        let ret = desc.ret.as_ref().map(|_| {
            let r = next_ret.max(next_ret_number_ops(&out));
            next_ret = r + 1;
            r
        });
        out.push(Op::new(&desc.name, args, ret, thread));
        out
    }

    /// A literal value for resource `name` (it fits the resource's width).
    fn literal(&mut self, name: &str) -> u64 {
        let st = self.st;
        if self.rng.gen_bool(self.invalid_rate) {
            // A number naming nothing that exists: the kernel says ENOENT/EINVAL.
            return self.rng.gen::<u16>() as u64 + 4096;
        }
        match name {
            "memblock" => self.block(),
            "pfn" => {
                let b = self.block();
                let ppb = st.pages_per_block();
                b * ppb + self.rng.gen_range(0..ppb)
            }
            "vmem_dev" => self.rng.gen_range(0..st.devices.len().max(1)) as u64,
            "dimm" => self.rng.gen_range(0..2),
            _ => self.rng.gen_range(0..8),
        }
    }

    fn block(&mut self) -> u64 {
        let hot = self.st.hotplug_blocks();
        let roll: f64 = self.rng.gen();
        if !hot.is_empty() && roll < 0.7 {
            // Low blocks of a device are the ones plugged first.
            let n = hot.len();
            let i = if self.rng.gen_bool(0.6) {
                self.rng.gen_range(0..n.min(4))
            } else {
                self.rng.gen_range(0..n)
            };
            hot[i]
        } else if !self.st.blocks.is_empty() && roll < 0.95 {
            self.st.blocks.choose(&mut self.rng).expect("non-empty").id
        } else {
            self.rng.gen_range(0..64)
        }
    }

    fn node(&mut self) -> u64 {
        *self.st.nodes.choose(&mut self.rng).unwrap_or(&0) as u64
    }

    /// The device a `vmem_dev` argument earlier in `prev` points to, if a literal one.
    fn device_of(
        &self,
        prev: &[Arg],
        desc: &OpDesc,
    ) -> Option<&crate::program::state::DeviceState> {
        let i = desc
            .args
            .iter()
            .position(|a| matches!(&a.ty, ArgType::Resource { name } if name == "vmem_dev"))?;
        match prev.get(i)? {
            Arg::Int(v) => self.st.devices.get(*v as usize),
            _ => None,
        }
    }

    fn value(&mut self, ty: &ArgType, prev: &[Arg], desc: &OpDesc) -> Arg {
        let edge = self.rng.gen_bool(self.invalid_rate);
        match ty {
            ArgType::Const { value } => Arg::Int(*value),
            ArgType::Str { values, .. } => {
                Arg::Str(values.choose(&mut self.rng).cloned().unwrap_or_default())
            }
            ArgType::Flags { values, .. } => {
                if edge {
                    return Arg::Int(values.iter().fold(0, |a, b| a | b));
                }
                let n = self.rng.gen_range(0..=3.min(values.len()));
                let mut v = 0;
                for _ in 0..n {
                    v |= values.choose(&mut self.rng).copied().unwrap_or(0);
                }
                Arg::Int(v)
            }
            ArgType::Int {
                min,
                max,
                align,
                kind,
                ..
            } => {
                let v = if edge {
                    match self.rng.gen_range(0..3) {
                        0 => *min,
                        1 => *max,
                        // Misaligned, inside the range.
                        _ => (*min + 1).min(*max),
                    }
                } else {
                    self.int_of_kind(kind.as_deref(), *min, *max, *align, prev, desc) as i64
                };
                Arg::Int(v.clamp(*min, *max) as u64)
            }
            ArgType::Resource { .. } => Arg::Int(0),
        }
    }

    fn int_of_kind(
        &mut self,
        kind: Option<&str>,
        min: i64,
        max: i64,
        align: u64,
        prev: &[Arg],
        desc: &OpDesc,
    ) -> u64 {
        let st = self.st;
        match kind {
            Some("mem_size") => {
                let (bs, dmax) = match self.device_of(prev, desc) {
                    Some(d) => (d.block_size, d.max),
                    None => (2 << 20, 4 << 30),
                };
                // A state that went unchecked must not divide by zero.
                let bs = bs.max(1);
                let mb = st.block_size.max(bs);
                let r: f64 = self.rng.gen();
                if r < 0.15 {
                    0
                } else if r < 0.22 {
                    dmax
                } else if r < 0.6 {
                    // Whole memory blocks, mostly few.
                    let n = dmax / mb;
                    mb * self.rng.gen_range(1..=n.clamp(1, 4))
                } else if r < 0.9 {
                    // Whole blocks and a few subblocks more: the last block partly plugged,
                    // its other subblocks fake-offline.
                    let n = dmax / mb;
                    mb * self.rng.gen_range(0..=n.clamp(1, 3)) + bs * self.rng.gen_range(1..8)
                } else {
                    bs * self.rng.gen_range(0..=(dmax / bs).max(1))
                }
            }
            Some("map_len") => {
                let choices: [u64; 7] = [4096, 8192, 65536, 2 << 20, 4 << 20, 16 << 20, 1 << 20];
                if self.rng.gen_bool(0.7) {
                    *choices.choose(&mut self.rng).expect("non-empty")
                } else {
                    4096 * self.rng.gen_range(1..=4096u64)
                }
            }
            Some("map_off") => {
                if self.rng.gen_bool(0.5) {
                    0
                } else if self.rng.gen_bool(0.8) {
                    4096 * self.rng.gen_range(0..512u64)
                } else {
                    self.rng.gen_range(0..(4u64 << 20))
                }
            }
            Some("numa_node") => {
                if self.rng.gen_bool(0.4) {
                    (-1i64) as u64
                } else {
                    self.node()
                }
            }
            Some("node_id") => self.node(),
            Some("msecs") => {
                if self.rng.gen_bool(0.8) {
                    self.rng.gen_range(0..50)
                } else {
                    self.rng.gen_range(0..=max.max(0) as u64)
                }
            }
            Some("page_count") => {
                if self.rng.gen_bool(0.7) {
                    self.rng.gen_range(1..=16)
                } else {
                    self.rng.gen_range(1..=max.max(1) as u64)
                }
            }
            Some("memtrace_size") => st.block_size * self.rng.gen_range(0..=2),
            Some("hugepage_count") => {
                // At most a quarter of boot RAM in the pool (the executor lowers it further
                // to what the guest can spare when it runs).
                let page: u64 = match prev.first() {
                    Some(Arg::Str(s)) if s == "1G" => 1 << 30,
                    Some(Arg::Str(s)) if s == "16M" => 16 << 20,
                    _ => 2 << 20,
                };
                let most = (st.boot_ram / 4 / page).min(max.max(0) as u64);
                self.rng.gen_range(0..=most)
            }
            Some("dimm_size") => st.block_size.max(align) * self.rng.gen_range(1..=4),
            Some("balloon_target") => {
                let boot = st.boot_ram.max(256 << 20);
                let lo = boot / 2;
                lo + self.rng.gen_range(0..=(boot - lo) / align.max(1)) * align.max(1)
            }
            Some("damon_aggr_us") => *[1000u64, 2000, 5000, 20000, 100000]
                .choose(&mut self.rng)
                .expect("non-empty"),
            _ => self.ranged(min, max, align),
        }
    }

    fn ranged(&mut self, min: i64, max: i64, align: u64) -> u64 {
        let align = align.max(1) as i64;
        let v = match self.rng.gen_range(0..10) {
            0 => min,
            1 => max,
            2 if min <= 0 && max >= 0 => 0,
            _ => {
                let steps = ((max as i128 - min as i128) / align as i128).max(0) as u64;
                min + (self.rng.gen_range(0..=steps.min(u64::MAX - 1)) as i64).wrapping_mul(align)
            }
        };
        v as u64
    }
}

fn weighted<'b>(rng: &mut ChaCha8Rng, items: &[(&'b str, u32)]) -> &'b str {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen_range(0..total.max(1));
    for (s, w) in items {
        if x < *w {
            return s;
        }
        x -= w;
    }
    items[0].0
}

fn pick_weighted<'b>(rng: &mut ChaCha8Rng, ops: &[&'b OpDesc]) -> Option<&'b OpDesc> {
    let total: u64 = ops.iter().map(|o| o.weight as u64).sum();
    if total == 0 {
        return None;
    }
    let mut x = rng.gen_range(0..total);
    for o in ops {
        if x < o.weight as u64 {
            return Some(o);
        }
        x -= o.weight as u64;
    }
    ops.first().copied()
}

/// Resources produced before position `at` of `p`, plus those in `extra` (which come right
/// before the operation being generated): (rN, resource name). Loops give none.
pub fn available(d: &Descriptions, p: &Program, at: usize, extra: &[Op]) -> Vec<(u32, String)> {
    p.ops[..at.min(p.ops.len())]
        .iter()
        .chain(extra)
        .filter(|o| o.rep != Rep::Loop)
        .filter_map(|o| {
            let r = o.ret?;
            let res = d.op(&o.name)?.ret.clone()?;
            Some((r, res))
        })
        .collect()
}

fn next_ret_number_ops(ops: &[Op]) -> u32 {
    ops.iter().filter_map(|o| o.ret).max().map_or(0, |m| m + 1)
}

/// The smallest rN not used in `p`.
pub fn next_ret_number(p: &Program) -> u32 {
    next_ret_number_ops(&p.ops)
}

/// Renumbers results r0, r1, ... in program order (references follow).
pub fn canonicalize(p: &mut Program) {
    let mut map = std::collections::HashMap::new();
    let mut n = 0;
    for op in &mut p.ops {
        for a in &mut op.args {
            if let Arg::Ref(r) = a {
                if let Some(&m) = map.get(r) {
                    *r = m;
                }
            }
        }
        if let Some(r) = op.ret {
            map.insert(r, n);
            op.ret = Some(n);
            n += 1;
        }
    }
}

/// Threads used by `p`.
pub fn threads_of(p: &Program) -> BTreeSet<u32> {
    p.ops.iter().map(|o| o.thread).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotfuzz_vm::{Arch, MachineConfig};

    #[test]
    fn generation_is_deterministic_and_valid() {
        let d = Descriptions::embedded();
        let st = GuestState::model(&MachineConfig::new(Arch::X86_64));
        let a = Generator::new(&d, &st, 42).generate(30);
        let b = Generator::new(&d, &st, 42).generate(30);
        let c = Generator::new(&d, &st, 43).generate(30);
        assert_eq!(a, b);
        assert_ne!(a, c);
        a.validate(&d).unwrap();
        assert!(a.ops.len() >= 8);
    }

    #[test]
    fn thousand_programs_print_and_parse_back() {
        let d = Descriptions::embedded();
        for arch in [Arch::X86_64, Arch::Ppc64le] {
            let st = GuestState::model(&MachineConfig::new(arch));
            for seed in 0..500u64 {
                let p = Generator::new(&d, &st, seed).generate(1 + (seed % 40) as usize);
                p.validate(&d)
                    .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", p.print(&d)));
                let text = p.print(&d);
                let back = Program::parse(&text, &d)
                    .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
                assert_eq!(back, p, "seed {seed}\n{text}");
                for op in &p.ops {
                    assert!(
                        d.op(&op.name).unwrap().on_arch(arch),
                        "{} on {arch}",
                        op.name
                    );
                }
            }
        }
    }

    #[test]
    fn values_stay_within_their_descriptions() {
        let d = Descriptions::embedded();
        let st = GuestState::model(&MachineConfig::new(Arch::X86_64));
        for seed in 0..300 {
            let mut g = Generator::new(&d, &st, seed);
            g.invalid_rate = 0.5;
            let p = g.generate(20);
            // validate() checks every value against its description.
            p.validate(&d)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", p.print(&d)));
        }
    }

    #[test]
    fn produced_resources_come_first() {
        let d = Descriptions::embedded();
        let st = GuestState::model(&MachineConfig::new(Arch::X86_64));
        let mut g = Generator::new(&d, &st, 7);
        let p = Program::default();
        let ops = g.gen_specific(&p, 0, 0, d.op("uring_pin").unwrap(), 0);
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert_eq!(ops[0].name, "mmap_anon");
        assert_eq!(ops[1].args[0], Arg::Ref(ops[0].ret.unwrap()));
    }

    #[test]
    fn unsupported_ops_are_not_picked() {
        let d = Descriptions::embedded();
        let mut st = GuestState::model(&MachineConfig::new(Arch::X86_64));
        st.unsupported.insert("memblock_state".into());
        let mut g = Generator::new(&d, &st, 1);
        let p = g.generate(300);
        assert!(p.ops.iter().all(|o| o.name != "memblock_state"));
        assert!(g.enabled().all(|o| o.name != "memtrace_enable"));
    }

    #[test]
    fn sizes_fit_the_device_mostly() {
        let d = Descriptions::embedded();
        let st = GuestState::model(&MachineConfig::new(Arch::X86_64));
        let mut g = Generator::new(&d, &st, 3);
        g.invalid_rate = 0.0;
        let resize = d.op("virtio_mem_resize").unwrap();
        let mut aligned = 0;
        let mut partial = 0;
        for _ in 0..200 {
            let op = g
                .gen_specific(&Program::default(), 0, 0, resize, 0)
                .pop()
                .unwrap();
            let Arg::Int(size) = op.args[1] else { panic!() };
            assert!(size <= 4 << 30, "{size:#x}");
            if size % (2 << 20) == 0 {
                aligned += 1;
            }
            if size % (128 << 20) != 0 {
                partial += 1;
            }
        }
        assert!(aligned > 190, "{aligned}");
        assert!(partial > 40, "{partial} sizes leave a block partly plugged");
    }
}
