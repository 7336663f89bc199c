//! Tabu search on partial packings (after the consistent neighbourhood
//! search of Buljubašić & Vasquez for bin packing and vector packing), in
//! two dimensions.
//!
//! To pack the items into `m` identical nodes, keep `m - 2` of them feasible
//! and the other items in a free list; the goal is a free list that fits
//! into the two remaining nodes. A move exchanges up to two items of one
//! node with up to two free items, keeping the node feasible; the search
//! minimises the free list's weight (normalised cpu + memory). The best
//! move is taken even when it does not improve: moves of equal weight walk
//! the plateau of packings that are equally full, which is where exact
//! fills (triplet-like batches) are found. An item that changed nodes may
//! not change back for a few iterations unless that gives the lightest
//! free list seen so far.
//!
//! Work is counted in move evaluations against the caller's budget, never
//! in time.

use crate::improve::SplitMix;
use crate::mbs::Size;

/// Shortest tabu tenure, in iterations.
const TENURE_MIN: u32 = 3;
/// Spread of the tabu tenure (a random amount below this is added).
const TENURE_SPREAD: u32 = 8;
/// Work allowed to one check whether the free list fits two nodes.
const FIT_WORK: u64 = 2_000;

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

/// No item.
const NONE: u32 = u32::MAX;

/// Up to two items moving together, with their total size and weight.
#[derive(Clone, Copy)]
struct Group {
    items: [u32; 2],
    size: Size,
    weight: u128,
    count: usize,
}

/// Search state.
struct Search<'a> {
    items: &'a [Size],
    cap: Size,
    slots: usize,
    /// Per item, its normalised weight (cpu * cap_mem + mem * cap_cpu).
    weight: Vec<u128>,
    /// Weight of one unit per dimension.
    weight_of: [u128; 2],
    bins: Vec<Vec<u32>>,
    load: Vec<Size>,
    free: Vec<u32>,
    /// Per item: the node it last entered or left, and the iteration until
    /// which it may not move between that node and the free list again.
    tabu: Vec<(u32, u64)>,
    iter: u64,
}

impl Search<'_> {
    fn free_weight(&self) -> u128 {
        self.free.iter().map(|&i| self.weight[i as usize]).sum()
    }

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

    /// The empty group, singles and pairs of `list`.
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
    fn is_tabu(&self, g: &Group, b: u32) -> bool {
        g.items.iter().any(|&i| i != NONE && self.tabu[i as usize].0 == b && self.tabu[i as usize].1 >= self.iter)
    }

    fn tenure(&self, rng: &mut SplitMix) -> u64 {
        self.iter + u64::from(TENURE_MIN + rng.below(TENURE_SPREAD as usize) as u32)
    }

    /// Moves `out` from node `b` to the free list and `inn` the other way.
    fn apply(&mut self, b: usize, out: Group, inn: Group, rng: &mut SplitMix) {
        for i in out.items {
            if i != NONE {
                let pos = self.bins[b].iter().position(|&x| x == i).expect("item is in its bin");
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
    }

    /// One tabu step: the best admissible exchange over all nodes. Returns
    /// false when there is none.
    ///
    /// Free groups are scanned heaviest first from the heaviest that could
    /// fit, and a scan stops as soon as it cannot match the best exchange
    /// found so far, so a step costs about one evaluation per node and
    /// group leaving it when nodes are nearly full.
    fn step(&mut self, best: u128, rng: &mut SplitMix, budget: &mut u64) -> bool {
        let cur = self.free_weight() as i128;
        let mut ins = self.groups(&self.free, false);
        ins.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.items.cmp(&b.items)));
        let mut found: Option<(i128, usize, Group, Group)> = None;
        let mut ties = 0usize;
        let mut evals = 0u64;
        let full = self.cap;
        for b in 0..self.bins.len() {
            let outs = self.groups(&self.bins[b], true);
            let (load, count) = (self.load[b], self.bins[b].len());
            for o in &outs {
                let limit = sub(add(full, o.size), load);
                let room = self.slots - (count - o.count);
                let heaviest = u128::from(limit[0]) * self.weight_of[0] + u128::from(limit[1]) * self.weight_of[1];
                let first = ins.partition_point(|s| s.weight > heaviest);
                let tabu_o = self.is_tabu(o, b as u32);
                evals += 1;
                for s in &ins[first..] {
                    evals += 1;
                    let delta = o.weight as i128 - s.weight as i128;
                    if found.as_ref().is_some_and(|f| delta > f.0) {
                        break;
                    }
                    if s.count > room || !fits(s.size, limit) {
                        continue;
                    }
                    if (tabu_o || self.is_tabu(s, b as u32)) && (cur + delta) as u128 >= best {
                        continue;
                    }
                    if found.as_ref().is_some_and(|f| delta == f.0) {
                        ties += 1;
                        if rng.below(ties + 1) != 0 {
                            continue;
                        }
                    } else {
                        ties = 0;
                    }
                    found = Some((delta, b, *o, *s));
                }
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

    /// Splits the free list into `k` nodes if it can (within `work`).
    fn split_free(&self, k: usize, work: &mut u64) -> Option<Vec<Vec<u32>>> {
        let mut order = self.free.clone();
        order.sort_by(|&a, &b| self.weight[b as usize].cmp(&self.weight[a as usize]).then(a.cmp(&b)));
        let total = order.iter().fold([0u64; 2], |l, &i| add(l, self.items[i as usize]));
        if k == 0 {
            return order.is_empty().then(Vec::new);
        }
        if order.len() > k * self.slots || (0..2).any(|d| total[d] > self.cap[d] * k as u64) {
            return None;
        }
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
/// `target` bins, indices into `items`). Returns the packing if it finds
/// one within `budget` move evaluations.
pub(crate) fn reduce(
    items: &[Size],
    cap: Size,
    slots: usize,
    start: &[Vec<usize>],
    target: usize,
    rng: &mut SplitMix,
    budget: &mut u64,
) -> Option<Vec<Vec<usize>>> {
    if target == 0 || slots == 0 || target * slots < items.len() {
        return None;
    }
    let wc = u128::from(cap[1].max(1));
    let wm = u128::from(cap[0].max(1));
    let weight: Vec<u128> = items.iter().map(|it| u128::from(it[0]) * wc + u128::from(it[1]) * wm).collect();
    // Keep the fullest bins; the others go to the free list.
    let kept = target.saturating_sub(2);
    let loose = target - kept;
    let fill = |bin: &Vec<usize>| bin.iter().map(|&i| weight[i]).sum::<u128>();
    let mut order: Vec<usize> = (0..start.len()).collect();
    order.sort_by(|&a, &b| fill(&start[b]).cmp(&fill(&start[a])).then(a.cmp(&b)));
    let mut s = Search {
        items,
        cap,
        slots,
        weight,
        weight_of: [wc, wm],
        bins: order[..kept].iter().map(|&b| start[b].iter().map(|&i| i as u32).collect()).collect(),
        load: order[..kept].iter().map(|&b| start[b].iter().fold([0, 0], |l, &i| add(l, items[i]))).collect(),
        free: order[kept..].iter().flat_map(|&b| start[b].iter().map(|&i| i as u32)).collect(),
        tabu: vec![(NONE, 0); items.len()],
        iter: 0,
    };
    let mut best = s.free_weight();
    let mut result = None;
    while *budget > 0 {
        let mut work = FIT_WORK.min(*budget);
        let spent = work;
        let split = s.split_free(loose, &mut work);
        *budget -= spent - work;
        if let Some(extra) = split {
            let mut bins = s.bins.clone();
            bins.extend(extra);
            result = Some(bins);
            break;
        }
        s.iter += 1;
        if !s.step(best, rng, budget) {
            break;
        }
        best = best.min(s.free_weight());
        if std::env::var("TABU_TRACE").is_ok() && s.iter % 20 == 0 {
            eprintln!("it {} free {} w {} best {}", s.iter, s.free.len(), s.free_weight(), best);
        }
    }
    if std::env::var("TABU_DEBUG").is_ok() {
        eprintln!("target {target} iters {} best {best} ok {}", s.iter, result.is_some());
    }
    result.map(|bins: Vec<Vec<u32>>| {
        bins.into_iter().map(|b| b.into_iter().map(|i| i as usize).collect()).collect()
    })
}
