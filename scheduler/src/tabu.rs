//! Tabu search on partial packings, in two dimensions (after the consistent
//! neighbourhood search of Buljubašić & Vasquez for bin packing and vector
//! packing, with a plateau objective and anchor kicks of our own).
//!
//! To pack the items into `m` identical nodes, `m - 2` "kept" nodes stay
//! feasible and the other items wait in a free list; the goal is a free
//! list that fits the two "loose" nodes left. A move exchanges up to two
//! items of one kept node with up to two free items (0-1, 0-2, 1-1, 1-2,
//! 2-1, 2-2), keeping the node feasible.
//!
//! - **Objective.** The free list's excess over the loose nodes (per
//!   dimension, what exceeds twice the capacity, as a fraction of it). Every
//!   free list that could fit is worth zero, so once there the search walks
//!   freely over the plateau and checks each list for a split into the
//!   two loose nodes (depth first, bounded). Minimising the free weight
//!   instead traps the search in lists of big items that no two nodes take.
//! - **Tabu.** The best admissible move is taken even when it makes things
//!   worse. An item that entered or left a node may not cross between that
//!   node and the free list again for a few (random) iterations, unless the
//!   move reaches an excess never seen before.
//! - **Kicks.** When the best excess has not improved for a while, one of
//!   the kept nodes whose largest item is smallest is emptied into the free
//!   list. Such a node is filled with middling items that better belong
//!   next to a larger one (e.g. three "small" items of a triplet batch);
//!   equal-excess moves alone never break it up.
//!
//! Cost: an iteration scans the kept nodes, each group that may leave a
//! node against the free groups sorted by weight (heaviest that could fit
//! first, stopping once nothing can match the best move so far); on the
//! plateau it stops at the first node offering a move. Work is counted in
//! evaluations against the caller's budget, never in time.

use crate::improve::SplitMix;
use crate::mbs::Size;

/// Shortest tabu tenure, in iterations.
const TENURE_MIN: u32 = 3;
/// Spread of the tabu tenure (a random amount below this is added).
const TENURE_SPREAD: u32 = 8;
/// Work allowed to one check whether the free list splits into the loose
/// nodes.
const SPLIT_WORK: u64 = 2_000;
/// Iterations without a better excess before a kick.
const KICK_AFTER: u64 = 100;
/// A kick empties one of this many kept nodes with the smallest largest
/// item, chosen at random.
const KICK_CHOICE: usize = 3;
/// Nodes left loose (the free list must fit into them).
const LOOSE: usize = 2;

/// No item.
const NONE: u32 = u32::MAX;

#[inline]
fn add(a: Size, b: Size) -> Size {
    [a[0] + b[0], a[1] + b[1]]
}

#[inline]
fn sub(a: Size, b: Size) -> Size {
    [a[0] - b[0], a[1] - b[1]]
}

#[inline]
fn fits(load: Size, cap: Size) -> bool {
    load[0] <= cap[0] && load[1] <= cap[1]
}

/// Up to two items moving together, with their total size and weight.
#[derive(Clone, Copy)]
struct Group {
    items: [u32; 2],
    size: Size,
    weight: u128,
    count: usize,
}

/// Whether two groups hold the same sizes (exchanging them changes nothing).
#[inline]
fn same(a: &Group, b: &Group, items: &[Size]) -> bool {
    if a.count != b.count || a.size != b.size {
        return false;
    }
    // Equal totals: one item each, or pairs with a common size.
    a.count == 1
        || items[a.items[0] as usize] == items[b.items[0] as usize]
        || items[a.items[0] as usize] == items[b.items[1] as usize]
}

/// Search state.
struct Search<'a> {
    items: &'a [Size],
    cap: Size,
    slots: usize,
    /// Per item, its normalised weight (cpu * cap_mem + mem * cap_cpu).
    weight: Vec<u128>,
    /// Weight of one unit per dimension.
    unit: [u128; 2],
    /// Items per kept node.
    bins: Vec<Vec<u32>>,
    /// Per kept node, the groups that may leave it (empty, singles, pairs).
    outs: Vec<Vec<Group>>,
    load: Vec<Size>,
    free: Vec<u32>,
    /// Total size of the free list.
    free_size: Size,
    /// What the loose nodes hold together.
    room: Size,
    /// Per item: the node it last entered or left, and the iteration until
    /// which it may not cross between that node and the free list again.
    tabu: Vec<(u32, u64)>,
    iter: u64,
}

impl Search<'_> {
    fn group(&self, a: u32, b: u32) -> Group {
        let mut g = Group { items: [a, b], size: [0, 0], weight: 0, count: 0 };
        for i in [a, b] {
            if i != NONE {
                g.size = add(g.size, self.items[i as usize]);
                g.weight += self.weight[i as usize];
                g.count += 1;
            }
        }
        g
    }

    /// Singles and pairs of `list`, after the empty group if asked.
    fn groups(&self, list: &[u32], with_empty: bool) -> Vec<Group> {
        let mut out = Vec::with_capacity(1 + list.len() * (list.len() + 1) / 2);
        if with_empty {
            out.push(self.group(NONE, NONE));
        }
        for (x, &a) in list.iter().enumerate() {
            out.push(self.group(a, NONE));
            for &b in &list[x + 1..] {
                out.push(self.group(a, b));
            }
        }
        out
    }

    #[inline]
    fn weigh(&self, size: Size) -> u128 {
        u128::from(size[0]) * self.unit[0] + u128::from(size[1]) * self.unit[1]
    }

    /// The excess of a free list of total size `size` over the loose nodes.
    #[inline]
    fn excess(&self, size: Size) -> u128 {
        self.weigh([size[0].saturating_sub(self.room[0]), size[1].saturating_sub(self.room[1])])
    }

    #[inline]
    fn is_tabu(&self, g: &Group, b: u32) -> bool {
        g.items.iter().any(|&i| i != NONE && self.tabu[i as usize].0 == b && self.tabu[i as usize].1 >= self.iter)
    }

    fn tenure(&self, rng: &mut SplitMix) -> u64 {
        self.iter + u64::from(TENURE_MIN + rng.below(TENURE_SPREAD as usize) as u32)
    }

    /// Moves `out` from kept node `b` to the free list and `inn` the other
    /// way.
    fn apply(&mut self, b: usize, out: Group, inn: Group, rng: &mut SplitMix) {
        for i in out.items {
            if i != NONE {
                let pos = self.bins[b].iter().position(|&x| x == i).expect("item is in its node");
                self.bins[b].swap_remove(pos);
                self.free.push(i);
                self.tabu[i as usize] = (b as u32, self.tenure(rng));
            }
        }
        for i in inn.items {
            if i != NONE {
                let pos = self.free.iter().position(|&x| x == i).expect("item is free");
                self.free.swap_remove(pos);
                self.bins[b].push(i);
                self.tabu[i as usize] = (b as u32, self.tenure(rng));
            }
        }
        self.load[b] = add(sub(self.load[b], out.size), inn.size);
        self.free_size = add(sub(self.free_size, inn.size), out.size);
        self.outs[b] = self.groups(&self.bins[b], true);
    }

    /// One tabu step: the best admissible exchange over all kept nodes
    /// (ties at random). `best` is the lowest excess seen (aspiration).
    /// Returns false when no exchange is possible at all.
    fn step(&mut self, best: u128, rng: &mut SplitMix, budget: &mut u64) -> bool {
        let mut ins = self.groups(&self.free, false);
        ins.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.items.cmp(&b.items)));
        let in_weights: Vec<u128> = ins.iter().map(|s| s.weight).collect();
        let log = u64::from(usize::BITS - ins.len().leading_zeros());
        let free_w = self.weigh(self.free_size);
        let room_w = self.weigh(self.room);
        let mut found: Option<(u128, usize, Group, Group)> = None;
        let mut ties = 0usize;
        // Sorting and bookkeeping, in evaluations.
        let mut evals = 4 * ins.len() as u64 + 16;
        let n = self.bins.len();
        let first_bin = rng.below(n.max(1));
        for k in 0..n {
            let b = (first_bin + k) % n;
            let (load, count) = (self.load[b], self.bins[b].len());
            // No exchange here can take the excess below this (what enters
            // outweighs what leaves by at most the node's free room). Ties
            // with a move found on an earlier node are not worth a look.
            let floor = free_w.saturating_sub(room_w + self.weigh(sub(self.cap, load)));
            evals += 1;
            if found.as_ref().is_some_and(|f| floor >= f.0) {
                continue;
            }
            for o in &self.outs[b] {
                let limit = sub(add(self.cap, o.size), load);
                let room = self.slots - (count - o.count);
                let heaviest = self.weigh(limit);
                let first = in_weights.partition_point(|&w| w > heaviest);
                let tabu_o = self.is_tabu(o, b as u32);
                let base = add(self.free_size, o.size);
                evals += log;
                for s in &ins[first..] {
                    evals += 1;
                    // The excess only grows as the free groups get lighter
                    // (it is at least the excess of the summed weight).
                    let floor = (free_w + o.weight).saturating_sub(s.weight + room_w);
                    if found.as_ref().is_some_and(|f| floor > f.0) {
                        break;
                    }
                    if s.count > room || !fits(s.size, limit) || same(o, s, self.items) {
                        continue;
                    }
                    evals += 1;
                    let v = self.excess(sub(base, s.size));
                    if found.as_ref().is_some_and(|f| v > f.0) {
                        continue;
                    }
                    if (tabu_o || self.is_tabu(s, b as u32)) && v >= best {
                        continue;
                    }
                    if found.as_ref().is_some_and(|f| v == f.0) {
                        ties += 1;
                        if rng.below(ties + 1) != 0 {
                            continue;
                        }
                    } else {
                        ties = 0;
                    }
                    found = Some((v, b, *o, *s));
                }
            }
            // On the plateau: the first node offering a move will do.
            if found.as_ref().is_some_and(|f| f.0 == 0) {
                break;
            }
        }
        *budget = budget.saturating_sub(evals);
        match found {
            Some((_, b, o, s)) => {
                self.apply(b, o, s, rng);
                true
            }
            None => false,
        }
    }

    /// Empties one of the kept nodes whose largest item is smallest into
    /// the free list (see the module docs).
    fn kick(&mut self, rng: &mut SplitMix, budget: &mut u64) {
        let anchor = |b: usize| self.bins[b].iter().map(|&i| self.weight[i as usize]).max().unwrap_or(0);
        let mut order: Vec<(u128, usize)> = (0..self.bins.len()).map(|b| (anchor(b), b)).collect();
        *budget = budget.saturating_sub(self.free.len() as u64 + 4 * order.len() as u64);
        let k = KICK_CHOICE.min(order.len());
        if k == 0 {
            return;
        }
        order.select_nth_unstable(k - 1);
        order[..k].sort_unstable();
        let b = order[rng.below(k)].1;
        let empty = self.group(NONE, NONE);
        while let Some(&i) = self.bins[b].first() {
            let out = self.group(i, NONE);
            self.apply(b, out, empty, rng);
        }
    }

    /// Splits the free list into `k` nodes if it can within `work`.
    fn split_free(&self, k: usize, work: &mut u64) -> Option<Vec<Vec<u32>>> {
        if self.free.len() > k.saturating_mul(self.slots) || self.excess(self.free_size) > 0 {
            return None;
        }
        let mut order = self.free.clone();
        order.sort_by(|&a, &b| self.weight[b as usize].cmp(&self.weight[a as usize]).then(a.cmp(&b)));
        let mut bins = vec![Vec::new(); k];
        let mut load = vec![[0u64; 2]; k];
        self.split_dfs(&order, 0, &mut bins, &mut load, work).then_some(bins)
    }

    fn split_dfs(&self, order: &[u32], pos: usize, bins: &mut [Vec<u32>], load: &mut [Size], work: &mut u64) -> bool {
        if pos == order.len() {
            return true;
        }
        if *work == 0 {
            return false;
        }
        *work -= 1;
        let i = order[pos];
        let it = self.items[i as usize];
        for b in 0..bins.len() {
            // Empty nodes are interchangeable: try the first one only.
            if bins[b].is_empty() && b > 0 && bins[b - 1].is_empty() {
                break;
            }
            if bins[b].len() < self.slots && fits(add(load[b], it), self.cap) {
                bins[b].push(i);
                load[b] = add(load[b], it);
                if self.split_dfs(order, pos + 1, bins, load, work) {
                    return true;
                }
                load[b] = sub(load[b], it);
                bins[b].pop();
            }
        }
        false
    }
}

/// Tries to pack `items` into `target` nodes of capacity `cap` holding at
/// most `slots` items each, starting from the packing `start` (more than
/// `target` nodes, indices into `items`; its fullest nodes are kept).
/// Returns a packing into at most `target` nodes if it finds one within
/// `budget` evaluations, which it charges.
pub(crate) fn reduce(
    items: &[Size],
    cap: Size,
    slots: usize,
    start: &[Vec<usize>],
    target: usize,
    rng: &mut SplitMix,
    budget: &mut u64,
) -> Option<Vec<Vec<usize>>> {
    if target == 0 || slots == 0 || target.saturating_mul(slots) < items.len() {
        return None;
    }
    let unit = [u128::from(cap[1].max(1)), u128::from(cap[0].max(1))];
    let weight: Vec<u128> = items.iter().map(|it| u128::from(it[0]) * unit[0] + u128::from(it[1]) * unit[1]).collect();
    let kept = target.saturating_sub(LOOSE);
    let loose = target - kept;
    let fill = |bin: &Vec<usize>| bin.iter().map(|&i| weight[i]).sum::<u128>();
    let mut order: Vec<usize> = (0..start.len()).collect();
    order.sort_by(|&a, &b| fill(&start[b]).cmp(&fill(&start[a])).then(a.cmp(&b)));
    *budget = budget.saturating_sub(2 * (items.len() + start.len()) as u64);
    let kept_bins: Vec<Vec<u32>> =
        order[..kept].iter().map(|&b| start[b].iter().map(|&i| i as u32).collect()).collect();
    let mut s = Search {
        items,
        cap,
        slots,
        weight,
        unit,
        load: kept_bins.iter().map(|b| b.iter().fold([0, 0], |l, &i| add(l, items[i as usize]))).collect(),
        bins: kept_bins,
        outs: Vec::new(),
        free: order[kept..].iter().flat_map(|&b| start[b].iter().map(|&i| i as u32)).collect(),
        free_size: [0, 0],
        room: [cap[0] * loose as u64, cap[1] * loose as u64],
        tabu: vec![(NONE, 0); items.len()],
        iter: 0,
    };
    s.outs = s.bins.iter().map(|b| s.groups(b, true)).collect();
    s.free_size = s.free.iter().fold([0, 0], |l, &i| add(l, items[i as usize]));
    let mut best = s.excess(s.free_size);
    let mut last_gain = 0;
    while *budget > 0 {
        let mut work = SPLIT_WORK.min(*budget);
        let split = s.split_free(loose, &mut work);
        *budget -= SPLIT_WORK.min(*budget) - work;
        if let Some(extra) = split {
            let mut bins = s.bins;
            bins.extend(extra.into_iter().filter(|b| !b.is_empty()));
            return Some(bins.into_iter().map(|b| b.into_iter().map(|i| i as usize).collect()).collect());
        }
        s.iter += 1;
        if s.iter - last_gain > KICK_AFTER {
            s.kick(rng, budget);
            last_gain = s.iter;
        }
        if !s.step(best, rng, budget) {
            return None;
        }
        let excess = s.excess(s.free_size);
        if excess < best {
            best = excess;
            last_gain = s.iter;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(items: &[Size], cap: Size, slots: usize, bins: &[Vec<usize>]) {
        let mut seen = vec![false; items.len()];
        for bin in bins {
            assert!(bin.len() <= slots, "too many items in a node");
            let mut load = [0u64; 2];
            for &i in bin {
                assert!(!seen[i], "item {i} packed twice");
                seen[i] = true;
                load = add(load, items[i]);
            }
            assert!(fits(load, cap), "node over capacity");
        }
        assert!(seen.iter().all(|&s| s), "an item was not packed");
    }

    /// One item per node: the worst start there is.
    fn singletons(n: usize) -> Vec<Vec<usize>> {
        (0..n).map(|i| vec![i]).collect()
    }

    /// Falkenauer-style triplets, `bins` nodes filled exactly in every
    /// dimension with a positive capacity.
    fn triplets(bins: usize, cap: Size, seed: u64) -> Vec<Size> {
        let mut rng = SplitMix::new(seed);
        let mut items = Vec::new();
        for _ in 0..bins {
            let mut t = [[0u64; 2]; 3];
            for d in 0..2 {
                let c = cap[d];
                if c == 0 {
                    continue;
                }
                let a = c * 38 / 100 + rng.below((c * 11 / 100) as usize) as u64;
                let lo = c / 4;
                let b = lo + rng.below(((c - a) / 2 - lo + 1) as usize) as u64;
                let mut v = [a, b, c - a - b];
                if d == 1 {
                    v.swap(0, rng.below(3));
                }
                for k in 0..3 {
                    t[k][d] = v[k];
                }
            }
            items.extend(t);
        }
        // Shuffle so that the start packing says nothing.
        for i in (1..items.len()).rev() {
            items.swap(i, rng.below(i + 1));
        }
        items
    }

    /// Reduces from one item per node down to `target`, one node at a time.
    fn squeeze(items: &[Size], cap: Size, slots: usize, target: usize, seed: u64) -> Vec<Vec<usize>> {
        let mut rng = SplitMix::new(seed);
        let mut budget = 50_000_000;
        let mut bins = singletons(items.len());
        while bins.len() > target {
            let Some(b) = reduce(items, cap, slots, &bins, bins.len() - 1, &mut rng, &mut budget) else { break };
            check(items, cap, slots, &b);
            bins = b;
        }
        bins
    }

    #[test]
    fn one_dimensional_triplets_reach_their_optimum() {
        for seed in 0..5 {
            let items = triplets(40, [0, 1000], seed);
            let bins = squeeze(&items, [0, 1000], usize::MAX, 40, seed);
            assert_eq!(bins.len(), 40, "seed {seed}");
        }
    }

    #[test]
    fn two_dimensional_triplets_reach_their_optimum() {
        for seed in 0..5 {
            let items = triplets(30, [100, 100], seed);
            let bins = squeeze(&items, [100, 100], usize::MAX, 30, seed);
            assert_eq!(bins.len(), 30, "seed {seed}");
        }
    }

    #[test]
    fn respects_slots() {
        // Twenty items of a tenth each: two nodes by size, five by slots.
        let items = vec![[0, 10]; 20];
        let bins = squeeze(&items, [0, 100], 4, 1, 1);
        assert_eq!(bins.len(), 5);
        check(&items, [0, 100], 4, &bins);
    }

    #[test]
    fn gives_up_below_what_is_possible_and_charges_the_budget() {
        // Three items over half a node each need three nodes.
        let items = vec![[0, 60]; 3];
        let mut rng = SplitMix::new(3);
        let mut budget = 10_000;
        assert!(reduce(&items, [0, 100], 8, &singletons(3), 2, &mut rng, &mut budget).is_none());
        assert!(budget < 10_000);
    }

    #[test]
    fn is_deterministic_for_a_seed() {
        let items = triplets(20, [1000, 1000], 9);
        let a = squeeze(&items, [1000, 1000], usize::MAX, 20, 4);
        let b = squeeze(&items, [1000, 1000], usize::MAX, 20, 4);
        assert_eq!(a, b);
    }
}
