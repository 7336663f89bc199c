//! The bounded improvement step: after best-fit decreasing has placed a
//! batch, try to empty whole nodes by repacking the batch's own replicas.
//!
//! Bound replicas never move, and neither do replicas whose placement
//! depends on their neighbours (anti-affinity, topology spread, spread
//! scoring) or on devices (extended resources); only "plain" replicas of
//! this batch are shuffled, and only between nodes the batch already uses
//! and that their static filters allow without a soft-taint penalty.
//!
//! One attempt (after Levine & Ducatelle's local search for bin packing, and
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

/// Seeded MBS' restarts aiming at the lower bound.
const MBS_RESTARTS: u32 = 1000;

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
    // per dimension) and the MBS' construction, kept if it beats BFD.
    let mut lower = lower;
    if let Some(h) = ls.homogeneous() {
        lower = lower.max(h.l2_lower());
        if ls.bins_in_use() > lower {
            ls.construct_mbs(&h, lower, limits.mbs_node_work);
        }
    }
    // Cheap descent first (no kicks), then bin completion for the
    // homogeneous case with half of what is left, then kicks.
    ls.rounds(lower, limits.targets, 0);
    if ls.used() > lower && ls.budget > 0 {
        let reserve = ls.budget / 2;
        ls.budget -= reserve;
        ls.complete_bins(lower);
        ls.budget += reserve;
    }
    ls.rounds(lower, limits.targets, limits.kicks);
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

/// Completions enumerated per search node of the bin-completion search.
const MAX_COMPLETIONS: usize = 4;

/// Depth-first bin completion (after Korf's bin-completion algorithm): fill
/// bins one at a time, each starting with the largest item left, trying
/// fullest completions first, and prune any branch whose waste exceeds what
/// `k` bins can afford. With zero slack (the triplet case) only exact fills
/// survive the pruning, which is where local search struggles.
struct Completion<'b> {
    items: &'b [[u64; 2]],
    cap: [u64; 2],
    slots: usize,
    used: Vec<bool>,
    bins: Vec<Vec<usize>>,
    budget: &'b mut u64,
}

impl Completion<'_> {
    fn solve(&mut self, bins_left: usize) -> bool {
        let Some(first) = self.used.iter().position(|u| !u) else { return true };
        if bins_left == 0 || *self.budget == 0 {
            return false;
        }
        // Suffix sums of unused items, for the "can still reach" prune.
        let n = self.items.len();
        *self.budget = self.budget.saturating_sub(n as u64);
        let mut suffix = vec![[0u64; 2]; n + 1];
        for k in (0..n).rev() {
            suffix[k] = suffix[k + 1];
            if !self.used[k] {
                suffix[k][0] += self.items[k][0];
                suffix[k][1] += self.items[k][1];
            }
        }
        let remaining = suffix[0];
        // Each bin may waste at most what the k bins have beyond the demand.
        let mut need = [0u64; 2];
        for d in 0..2 {
            let slack = (bins_left as u64 * self.cap[d]).checked_sub(remaining[d]);
            let Some(slack) = slack else { return false };
            need[d] = self.cap[d].saturating_sub(slack);
        }
        self.used[first] = true;
        let mut out = Vec::new();
        let mut chosen = vec![first];
        self.enumerate(first + 1, self.items[first], &mut chosen, &mut out, &suffix, need);
        // Fullest first: least normalised waste.
        let waste = |c: &Vec<usize>| {
            (0..2)
                .map(|d| {
                    let load: u64 = c.iter().map(|&i| self.items[i][d]).sum();
                    frac(self.cap[d] - load, self.cap[d])
                })
                .sum::<f64>()
        };
        let mut ranked: Vec<(f64, Vec<usize>)> = out.into_iter().map(|c| (waste(&c), c)).collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        for (_, comp) in ranked {
            for &i in &comp[1..] {
                self.used[i] = true;
            }
            self.bins.push(comp);
            if self.solve(bins_left - 1) {
                return true;
            }
            let comp = self.bins.pop().expect("pushed above");
            for &i in &comp[1..] {
                self.used[i] = false;
            }
            if *self.budget == 0 {
                break;
            }
        }
        self.used[first] = false;
        false
    }

    fn enumerate(
        &mut self,
        from: usize,
        load: [u64; 2],
        chosen: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
        suffix: &[[u64; 2]],
        need: [u64; 2],
    ) {
        *self.budget = self.budget.saturating_sub(1);
        if out.len() >= MAX_COMPLETIONS || *self.budget == 0 {
            return;
        }
        if (0..2).any(|d| load[d] + suffix[from][d] < need[d]) {
            return;
        }
        if (0..2).all(|d| load[d] >= need[d]) {
            out.push(chosen.clone());
        }
        if chosen.len() >= self.slots {
            return;
        }
        let mut k = from;
        while k < self.items.len() {
            if !self.used[k] && (0..2).all(|d| load[d] + self.items[k][d] <= self.cap[d]) {
                let it = self.items[k];
                chosen.push(k);
                let next = [load[0] + it[0], load[1] + it[1]];
                self.enumerate(k + 1, next, chosen, out, suffix, need);
                chosen.pop();
                // Equal items give equal subtrees: try one of them only.
                while k + 1 < self.items.len() && self.items[k + 1] == it {
                    k += 1;
                }
            }
            k += 1;
        }
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
    /// the current packing (ties keep the current one). Short of `lower`,
    /// seeded restarts aim at exactly `lower` nodes, each abandoned as soon
    /// as its slack rules that out. The construction may use half of the
    /// budget, restarts a quarter; what it does
    /// not use is returned.
    fn construct_mbs(&mut self, h: &Homogeneous, lower: usize, node_work: u64) {
        let mut best = self.bins_in_use();
        let mut budget = self.budget * 3 / 4;
        let reserve = self.budget - budget;
        let mut winner = None;
        let packed =
            crate::mbs::pack(&h.items, h.cap, h.slots, node_work, best - 1, None, None, None, &mut budget, &mut None);
        if let Some(bins) = packed
            && bins.len() < best
        {
            best = bins.len();
            winner = Some(bins);
        }
        // Restarts may spend at most a quarter of the whole budget. Each
        // aims at exactly `lower` nodes; the item whose node could not be
        // filled well enough starts the next run earlier (squeaky wheel).
        let floor = budget.saturating_sub((reserve + budget) / 2);
        // A restart only needs (near-)exact fills: a node that has none
        // ends the run, so it is searched briefly.
        let restart_work = node_work.min(4 * h.items.len() as u64);
        let mut order: Vec<usize> = (0..h.items.len()).collect();
        let mut restarts = 0;
        while best > lower && budget > floor && restarts < MBS_RESTARTS {
            restarts += 1;
            let mut failed = None;
            let packed = crate::mbs::pack(
                &h.items,
                h.cap,
                h.slots,
                restart_work,
                best - 1,
                Some(lower),
                Some(&order),
                Some(&mut self.rng),
                &mut budget,
                &mut failed,
            );
            if let Some(bins) = packed
                && bins.len() < best
            {
                best = bins.len();
                winner = Some(bins);
            }
            if let Some(i) = failed {
                let pos = order.iter().position(|&x| x == i).expect("a permutation");
                order[..=pos].rotate_right(1);
            }
        }
        self.budget = reserve + budget;
        if let Some(bins) = winner {
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

    /// When the batch alone fills identical, otherwise idle nodes, searches
    /// for a packing into `target` nodes by bin completion and applies it.
    fn complete_bins(&mut self, target: usize) {
        let Some(h) = self.homogeneous() else { return };
        if self.bins_in_use() <= target {
            return;
        }
        let mut budget = self.budget;
        let mut search = Completion {
            items: &h.items,
            cap: h.cap,
            slots: h.slots,
            used: vec![false; h.items.len()],
            bins: Vec::new(),
            budget: &mut budget,
        };
        let solved = search.solve(target);
        let bins = std::mem::take(&mut search.bins);
        self.budget = budget;
        if solved {
            self.apply(&h, &bins);
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
