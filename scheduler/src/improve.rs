//! The bounded improvement step: after best-fit decreasing has placed a
//! batch, try to empty whole nodes by repacking the batch's own replicas.
//!
//! Bound replicas never move, and neither do replicas whose placement
//! depends on their neighbours (anti-affinity, topology spread, spread
//! scoring) or on devices (extended resources); only "plain" replicas of
//! this batch are shuffled, and only between nodes the batch already uses
//! and that their static filters allow without a soft-taint penalty.
//!
//! When the batch alone fills identical idle nodes (the homogeneous case:
//! one pool, nothing bound there), the whole batch is repacked: first-fit
//! decreasing and MBS' (`mbs.rs`) replace best-fit decreasing if they use
//! fewer nodes, then the tabu search of `tabu.rs` asks for one node fewer
//! at a time, down to the L2 lower bound or until the budget runs out.
//!
//! Otherwise, and with whatever budget is left (at most
//! `DESCENT_WORK_MAX`), a descent tries to empty nodes one at a time. One
//! attempt (after Levine & Ducatelle's local search for bin packing, and
//! the "remove a bin, repair" scheme of consistent neighbourhood search):
//!
//! 1. take a node that holds only movable replicas and lift them all out
//!    into a free list; the node is closed for the attempt;
//! 2. insert free replicas, largest first, into the fullest node they fit;
//! 3. for each open node, make the best swap between its movable replicas
//!    and the free list (1-1, 1-2, 2-1, 2-2) that makes the node strictly
//!    fuller: the free list then holds smaller replicas, which fit more
//!    easily. Back to 2;
//! 4. when no swap helps, kick: put a random free replica on a random node
//!    and evict what is in its way (evicted replicas may not return there
//!    for a while, so the search does not undo the kick at once);
//! 5. success when the free list is empty (one node fewer); failure when
//!    the kicks or the work budget run out, and then every move is undone.
//!
//! Step 3 strictly increases the total fill of open nodes, so descent
//! terminates; the work budget (counted in candidate evaluations, not
//! time, to stay a pure function) bounds the whole step.

use crate::engine::{Req, State};
use crate::model::ScoreMode;

/// Knobs of the improvement step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ImproveLimits {
    /// Candidate evaluations allowed in total.
    pub budget: u64,
    /// Nodes tried as the one to empty, per round.
    pub targets: usize,
    /// Kicks per attempt.
    pub kicks: u32,
    /// Evaluations per node of the MBS' construction.
    pub mbs_node_work: u64,
}

/// The batch's items when it alone fills identical idle nodes: the case
/// where whole-batch constructions (MBS', bin completion) apply.
struct Homogeneous {
    /// Movable items, largest first (normalised sum, then sizes, then index).
    ids: Vec<u32>,
    /// Their (cpu, memory) requests, parallel to `ids`.
    items: Vec<[u64; 2]>,
    /// Node capacity.
    cap: [u64; 2],
    /// Workload slots per node.
    slots: usize,
}

/// Work the descent may use: its moves cost more than the tabu search's
/// evaluations, and large mixed batches (where only the descent runs) must
/// stay fast.
const DESCENT_WORK_MAX: u64 = 1_000_000;

/// Distinct alpha values tried by the L2 bound (keeps it O(n) per batch).
const L2_ALPHAS: usize = 256;

impl Homogeneous {
    /// Max over dimensions of the Martello-Toth L2 bound: no packing of
    /// these items into these nodes uses fewer.
    fn l2_lower(&self) -> usize {
        (0..2)
            .map(|d| {
                let sizes: Vec<u64> = self.items.iter().map(|it| it[d]).collect();
                crate::mbs::l2_bound(&sizes, self.cap[d], L2_ALPHAS)
            })
            .max()
            .unwrap_or(0)
    }
}

/// A small deterministic generator (SplitMix64): the only randomness, and
/// it is derived from the caller's seed.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// No bin: the replica is on the free list.
const FREE: u32 = u32::MAX;
/// Kicked-out replicas may not return to that node for this many rounds.
const TABU_ROUNDS: u32 = 3;
/// Fill must grow by more than this for a swap to count (float noise).
const EPS: f64 = 1e-9;

struct Ls<'s, 'a> {
    st: &'s mut State<'a>,
    reqs: &'s [Req],
    /// Node per movable item (index into `reqs`), or `FREE`.
    bin_of: Vec<u32>,
    /// Movable items per node.
    items: Vec<Vec<u32>>,
    /// Nodes holding movable items, in node order.
    bins: Vec<u32>,
    /// Per class, per pool: may a movable replica of the class go there?
    allowed: Vec<Vec<bool>>,
    free: Vec<u32>,
    closed: u32,
    /// (item, node, round until which the item may not enter the node).
    tabu: Vec<(u32, u32, u32)>,
    round: u32,
    budget: u64,
    rng: SplitMix,
    /// Moves made in the current attempt: (item, from, to).
    log: Vec<(u32, u32, u32)>,
}

/// Improves `assign` (node per req, `None` if unplaced) in place.
pub(crate) fn improve(st: &mut State<'_>, reqs: &[Req], assign: &mut [Option<u32>], limits: ImproveLimits, seed: u64) {
    let n_nodes = st.nodes.len();
    let n_pools = st.pools.len();
    let mut allowed: Vec<Vec<bool>> = vec![Vec::new(); st.classes.len()];
    let mut movable_count = vec![0u32; n_nodes];
    let mut bin_of = vec![FREE; reqs.len()];
    let mut items: Vec<Vec<u32>> = vec![Vec::new(); n_nodes];
    for (i, r) in reqs.iter().enumerate() {
        let Some(n) = assign[i] else { continue };
        let plain = r.ext.is_empty()
            && r.max_per_node.is_none()
            && r.spread.is_none()
            && r.mode == ScoreMode::BinPack
            && st.class_allows(r.class, n as usize) == Some(0.0);
        if !plain {
            continue;
        }
        let allow = &mut allowed[r.class as usize];
        if allow.is_empty() {
            *allow = vec![false; n_pools];
            for &(p, pen) in &st.classes[r.class as usize].pools {
                allow[p as usize] = pen == 0.0;
            }
        }
        bin_of[i] = n;
        items[n as usize].push(i as u32);
        movable_count[n as usize] += 1;
    }
    let bins: Vec<u32> = (0..n_nodes as u32).filter(|&n| !items[n as usize].is_empty()).collect();
    if bins.len() < 2 {
        return;
    }
    // A valid lower bound on nodes in use: total demand over the largest node.
    let (max_c, max_m) = st.max_alloc();
    let (sum_c, sum_m) =
        st.nodes.iter().fold((0u128, 0u128), |(c, m), n| (c + u128::from(n.used_cpu), m + u128::from(n.used_mem)));
    let lower = sum_c.div_ceil(u128::from(max_c)).max(sum_m.div_ceil(u128::from(max_m))) as usize;

    let mut ls = Ls {
        st,
        reqs,
        bin_of,
        items,
        bins,
        allowed,
        free: Vec::new(),
        closed: FREE,
        tabu: Vec::new(),
        round: 0,
        budget: limits.budget,
        rng: SplitMix::new(seed ^ 0x5EED_F10A_7111_A5ED),
        log: Vec::new(),
    };
    // Identical idle nodes holding only this batch: a tighter bound (L2
    // per dimension), constructions that beat BFD on hard batches, then
    // the tabu search, one node fewer at a time down to the bound.
    let mut lower = lower;
    if let Some(h) = ls.homogeneous() {
        lower = lower.max(h.l2_lower());
        if ls.bins_in_use() > lower {
            ls.construct_ffd(&h);
        }
        if ls.bins_in_use() > lower {
            ls.construct_mbs(&h, limits.mbs_node_work);
        }
        if ls.bins_in_use() > lower {
            ls.squeeze(&h, lower);
        }
    }
    // Descent for the rest (nodes shared with bound replicas, several
    // pools): cheap moves first, then with kicks, within its own cap.
    let spare = ls.budget.saturating_sub(DESCENT_WORK_MAX);
    ls.budget -= spare;
    ls.rounds(lower, limits.targets, 0);
    ls.rounds(lower, limits.targets, limits.kicks);
    ls.budget += spare;
    for (i, &b) in ls.bin_of.iter().enumerate() {
        if b != FREE {
            assign[i] = Some(b);
        }
    }
}

impl Ls<'_, '_> {
    /// Nodes in use.
    fn used(&self) -> usize {
        self.st.nodes.iter().filter(|n| n.workloads > 0).count()
    }

    /// Empties nodes one at a time until the bound, the budget, or no
    /// target among the `targets` emptiest succeeds.
    fn rounds(&mut self, lower: usize, targets: usize, kicks: u32) {
        while self.used() > lower && self.budget > 0 {
            // Nodes that would be idle if their movable replicas left, emptiest first.
            let mut order: Vec<(f64, u32)> = self
                .bins
                .iter()
                .filter(|&&b| {
                    let node = &self.st.nodes[b as usize];
                    node.workloads_before == 0
                        && node.workloads > 0
                        && node.workloads == self.items[b as usize].len() as u32
                })
                .map(|&b| (self.fill(b), b))
                .collect();
            order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let progress = order.iter().take(targets).any(|&(_, t)| self.try_empty(t, kicks));
            if !progress {
                break;
            }
        }
    }

    /// Normalised fill of node `b` (cpu fraction + memory fraction).
    fn fill(&self, b: u32) -> f64 {
        let n = &self.st.nodes[b as usize];
        frac(n.used_cpu, n.alloc_cpu) + frac(n.used_mem, n.alloc_mem)
    }

    /// Item `i`'s share of node `b`.
    fn weight(&self, i: u32, b: u32) -> f64 {
        let (r, n) = (&self.reqs[i as usize], &self.st.nodes[b as usize]);
        frac(r.cpu, n.alloc_cpu) + frac(r.mem, n.alloc_mem)
    }

    /// Static and tabu admissibility of item `i` on node `b`.
    fn admits(&self, i: u32, b: u32) -> bool {
        let class = self.reqs[i as usize].class as usize;
        let pool = self.st.nodes[b as usize].pool as usize;
        // An idle node stays idle: filling it would undo the point.
        b != self.closed
            && self.st.nodes[b as usize].workloads > 0
            && self.allowed[class][pool]
            && !self.tabu.iter().any(|&(ti, tb, until)| ti == i && tb == b && until >= self.round)
    }

    /// Whether node `b` has room for `cpu`/`mem`/`slots` more.
    fn room(&self, b: u32, cpu: i128, mem: i128, slots: i64) -> bool {
        let n = &self.st.nodes[b as usize];
        i128::from(n.used_cpu) + cpu <= i128::from(n.alloc_cpu)
            && i128::from(n.used_mem) + mem <= i128::from(n.alloc_mem)
            && i64::from(n.workloads) + slots <= i64::from(n.max_workloads)
    }

    fn move_item(&mut self, i: u32, to: u32) {
        let from = self.bin_of[i as usize];
        if from != FREE {
            self.st.account(from as usize, &self.reqs[i as usize], false);
            let list = &mut self.items[from as usize];
            let pos = list.iter().position(|&x| x == i).expect("item is in its bin");
            list.swap_remove(pos);
        } else {
            let pos = self.free.iter().position(|&x| x == i).expect("item is free");
            self.free.swap_remove(pos);
        }
        if to != FREE {
            self.st.account(to as usize, &self.reqs[i as usize], true);
            self.items[to as usize].push(i);
        } else {
            self.free.push(i);
        }
        self.bin_of[i as usize] = to;
        self.log.push((i, from, to));
    }

    /// One attempt to empty node `t`; undone entirely on failure.
    fn try_empty(&mut self, t: u32, max_kicks: u32) -> bool {
        self.log.clear();
        self.tabu.clear();
        self.closed = t;
        for i in self.items[t as usize].clone() {
            self.move_item(i, FREE);
        }
        let mut kicks = 0;
        let ok = loop {
            self.round += 1;
            self.insert_free();
            if self.free.is_empty() {
                break true;
            }
            if self.budget == 0 {
                break false;
            }
            let mut improved = false;
            for k in 0..self.bins.len() {
                let b = self.bins[k];
                if b != t && self.best_swap(b) {
                    improved = true;
                    if self.budget == 0 {
                        break;
                    }
                }
            }
            if !improved {
                if kicks == max_kicks || !self.kick() {
                    break false;
                }
                kicks += 1;
            }
        };
        self.closed = FREE;
        if !ok {
            while let Some((i, from, _)) = self.log.pop() {
                self.move_item(i, from);
                self.log.pop();
            }
        }
        ok
    }

    /// Puts free items, largest first, on the fullest node they fit.
    fn insert_free(&mut self) {
        let mut order = self.free.clone();
        order.sort_by(|&a, &b| self.reqs[b as usize].size.total_cmp(&self.reqs[a as usize].size).then(a.cmp(&b)));
        for i in order {
            let r = &self.reqs[i as usize];
            let (c, m) = (i128::from(r.cpu), i128::from(r.mem));
            let mut best: Option<(f64, u32)> = None;
            for &b in &self.bins {
                if self.admits(i, b) && self.room(b, c, m, 1) {
                    let f = self.fill(b) + self.weight(i, b);
                    if best.is_none_or(|(bf, _)| f > bf) {
                        best = Some((f, b));
                    }
                }
            }
            self.budget = self.budget.saturating_sub(self.bins.len() as u64);
            if let Some((_, b)) = best {
                self.move_item(i, b);
            }
        }
    }

    /// Applies the swap between node `b` and the free list that fills `b`
    /// the most, if it fills it strictly more. Returns whether it did.
    fn best_swap(&mut self, b: u32) -> bool {
        let inside = self.items[b as usize].clone();
        let free = self.free.clone();
        if inside.is_empty() || free.is_empty() {
            return false;
        }
        // Candidate sets: singles and pairs on each side.
        let sets = |v: &[u32]| {
            let mut s: Vec<(u32, u32)> = v.iter().map(|&a| (a, FREE)).collect();
            for x in 0..v.len() {
                for y in x + 1..v.len() {
                    s.push((v[x], v[y]));
                }
            }
            s
        };
        let outs = sets(&inside);
        let ins: Vec<(u32, u32)> =
            sets(&free).into_iter().filter(|&(x, y)| self.admits(x, b) && (y == FREE || self.admits(y, b))).collect();
        self.budget = self.budget.saturating_sub((outs.len() * ins.len()) as u64);
        let sum = |s: (u32, u32)| {
            let (mut c, mut m, mut w, mut k) = (0i128, 0i128, 0.0, 0i64);
            for i in [s.0, s.1] {
                if i != FREE {
                    let r = &self.reqs[i as usize];
                    c += i128::from(r.cpu);
                    m += i128::from(r.mem);
                    w += self.weight(i, b);
                    k += 1;
                }
            }
            (c, m, w, k)
        };
        let ins: Vec<_> = ins.into_iter().map(|s| (s, sum(s))).collect();
        // (gain, pair leaving the node, pair entering it)
        type Swap = (f64, (u32, u32), (u32, u32));
        let mut best: Option<Swap> = None;
        for &o in &outs {
            let (oc, om, ow, ok) = sum(o);
            for &(s, (ic, im, iw, ik)) in &ins {
                let gain = iw - ow;
                if gain > EPS && best.is_none_or(|(g, _, _)| gain > g) && self.room(b, ic - oc, im - om, ik - ok) {
                    best = Some((gain, o, s));
                }
            }
        }
        let Some((_, o, s)) = best else { return false };
        for i in [o.0, o.1] {
            if i != FREE {
                self.move_item(i, FREE);
            }
        }
        for i in [s.0, s.1] {
            if i != FREE {
                self.move_item(i, b);
            }
        }
        true
    }

    /// Forces a random free item onto a random admissible node, evicting
    /// what is in its way. Returns false if no node could ever hold it.
    fn kick(&mut self) -> bool {
        let i = self.free[self.rng.below(self.free.len())];
        let r = &self.reqs[i as usize];
        let (c, m) = (i128::from(r.cpu), i128::from(r.mem));
        // Nodes where the item fits once the movable items are gone.
        let candidates: Vec<u32> = self
            .bins
            .iter()
            .copied()
            .filter(|&b| {
                if !self.admits(i, b) {
                    return false;
                }
                let (mc, mm) = self.items[b as usize].iter().fold((0i128, 0i128), |(x, y), &j| {
                    let q = &self.reqs[j as usize];
                    (x + i128::from(q.cpu), y + i128::from(q.mem))
                });
                self.room(b, c - mc, m - mm, 1 - self.items[b as usize].len() as i64)
            })
            .collect();
        self.budget = self.budget.saturating_sub(self.bins.len() as u64);
        if candidates.is_empty() {
            return false;
        }
        let b = candidates[self.rng.below(candidates.len())];
        while !self.room(b, c, m, 1) {
            let inside = &self.items[b as usize];
            let j = inside[self.rng.below(inside.len())];
            self.move_item(j, FREE);
            self.tabu.push((j, b, self.round + TABU_ROUNDS));
        }
        self.move_item(i, b);
        true
    }
}

impl Ls<'_, '_> {
    /// The batch's movable items if they alone fill identical, otherwise
    /// idle nodes (one pool, nothing bound, nothing unmovable).
    fn homogeneous(&self) -> Option<Homogeneous> {
        let &first = self.bins.first()?;
        let pool = self.st.nodes[first as usize].pool;
        let homogeneous = self.bins.iter().all(|&b| {
            let n = &self.st.nodes[b as usize];
            n.pool == pool && n.workloads_before == 0 && n.workloads as usize == self.items[b as usize].len()
        }) && self.st.nodes.iter().filter(|n| n.workloads > 0).count() == self.bins_in_use();
        if !homogeneous {
            return None;
        }
        let node = &self.st.nodes[first as usize];
        let (cap, slots) = ([node.alloc_cpu, node.alloc_mem], node.max_workloads as usize);
        let mut ids: Vec<u32> = (0..self.bin_of.len() as u32).filter(|&i| self.bin_of[i as usize] != FREE).collect();
        let key = |i: u32| {
            let r = &self.reqs[i as usize];
            [r.cpu, r.mem]
        };
        ids.sort_by(|&a, &b| {
            let (ra, rb) = (&self.reqs[a as usize], &self.reqs[b as usize]);
            rb.size.total_cmp(&ra.size).then(key(b).cmp(&key(a))).then(a.cmp(&b))
        });
        let items: Vec<[u64; 2]> = ids.iter().map(|&i| key(i)).collect();
        Some(Homogeneous { ids, items, cap, slots })
    }

    /// Runs MBS' on the batch and applies it if it uses fewer nodes than
    /// the current packing (ties keep the current one). It may use half of
    /// the budget; what it does not use is returned.
    fn construct_mbs(&mut self, h: &Homogeneous, node_work: u64) {
        let best = self.bins_in_use();
        let mut budget = self.budget / 2;
        let reserve = self.budget - budget;
        let packed = crate::mbs::pack(&h.items, h.cap, h.slots, node_work, best - 1, &mut budget);
        self.budget = reserve + budget;
        if let Some(bins) = packed
            && bins.len() < best
        {
            self.apply(h, &bins);
        }
    }

    /// First-fit decreasing (largest normalised size first) on the batch,
    /// applied if it uses fewer nodes than the current packing: a cheap
    /// guarantee never to end up behind it.
    fn construct_ffd(&mut self, h: &Homogeneous) {
        let best = self.bins_in_use();
        let mut bins: Vec<Vec<usize>> = Vec::new();
        let mut load: Vec<[u64; 2]> = Vec::new();
        for (k, it) in h.items.iter().enumerate() {
            self.budget = self.budget.saturating_sub(bins.len() as u64 + 1);
            let fit = (0..bins.len())
                .find(|&b| bins[b].len() < h.slots && load[b][0] + it[0] <= h.cap[0] && load[b][1] + it[1] <= h.cap[1]);
            match fit {
                Some(b) => {
                    bins[b].push(k);
                    load[b] = [load[b][0] + it[0], load[b][1] + it[1]];
                }
                None => {
                    bins.push(vec![k]);
                    load.push(*it);
                }
            }
        }
        if bins.len() < best {
            self.apply(h, &bins);
        }
    }

    /// Replaces the packing of the batch by `bins` (indices into `h.ids`),
    /// reusing the nodes already in use in node order.
    fn apply(&mut self, h: &Homogeneous, bins: &[Vec<usize>]) {
        let nodes: Vec<u32> = self.bins.iter().copied().filter(|&b| self.st.nodes[b as usize].workloads > 0).collect();
        debug_assert!(bins.len() <= nodes.len());
        for &i in &h.ids {
            self.move_item(i, FREE);
        }
        for (bin, &node) in bins.iter().zip(&nodes) {
            for &k in bin {
                self.move_item(h.ids[k], node);
            }
        }
        self.log.clear();
    }

    /// The current packing of the homogeneous batch, as bins of indices
    /// into `h.ids`.
    fn current_bins(&self, h: &Homogeneous) -> Vec<Vec<usize>> {
        let mut pos = vec![usize::MAX; self.bin_of.len()];
        for (k, &i) in h.ids.iter().enumerate() {
            pos[i as usize] = k;
        }
        self.bins
            .iter()
            .filter(|&&b| !self.items[b as usize].is_empty())
            .map(|&b| self.items[b as usize].iter().map(|&i| pos[i as usize]).collect())
            .collect()
    }

    /// Tabu search for packings one node smaller at a time, down to `lower`.
    fn squeeze(&mut self, h: &Homogeneous, lower: usize) {
        let mut bins = self.current_bins(h);
        let mut budget = self.budget;
        let mut improved = false;
        while bins.len() > lower && budget > 0 {
            match crate::tabu::reduce(&h.items, h.cap, h.slots, &bins, bins.len() - 1, &mut self.rng, &mut budget) {
                Some(b) => {
                    bins = b;
                    improved = true;
                }
                None => break,
            }
        }
        self.budget = budget;
        if improved {
            self.apply(h, &bins);
        }
    }

    /// Nodes currently holding movable items.
    fn bins_in_use(&self) -> usize {
        self.bins.iter().filter(|&&b| !self.items[b as usize].is_empty()).count()
    }
}

/// `part / whole`, with a zero-sized dimension counting as nothing.
#[inline]
fn frac(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}
