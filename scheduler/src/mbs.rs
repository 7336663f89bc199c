//! Minimum Bin Slack construction (Gupta & Ho 1999; the MBS' variant of
//! Fleszar & Hindi 2002), in two dimensions, and the Martello-Toth L2 lower
//! bound.
//!
//! MBS' fills one node at a time: it fixes the largest item left, then
//! searches the subsets of the remaining items (largest first, depth-first)
//! for the one that leaves the least slack, feasible in every dimension and
//! within the node's workload slots. An exact fill (zero slack) ends the
//! search for that node at once; so does the per-node work limit, keeping
//! the best subset found so far. Slack is the normalised sum over
//! dimensions (cpu fraction + memory fraction left).
//!
//! Two shortcuts make exact fills cheap to find, which is what triplet-like
//! batches need (every node filled exactly by three items):
//!
//! - an exact-residual lookup: at every search node, a hash map of the
//!   remaining items by size says whether one item completes the node
//!   exactly;
//! - a reachability prune: a branch whose load plus everything after it
//!   cannot beat the best slack so far is cut.
//!
//! Work is counted in item evaluations against a caller-provided budget,
//! never in time.

use std::collections::HashMap;

/// One item's size per dimension (cpu, memory).
pub(crate) type Size = [u64; 2];

/// The Martello-Toth L2 lower bound on the bins needed for `sizes` in one
/// dimension with bins of capacity `cap`. O(n log n + n * distinct sizes
/// at most half the capacity), bounded by `max_alphas` alpha values.
pub(crate) fn l2_bound(sizes: &[u64], cap: u64, max_alphas: usize) -> usize {
    if cap == 0 {
        return 0;
    }
    let total: u128 = sizes.iter().map(|&s| u128::from(s)).sum();
    let mut best = total.div_ceil(u128::from(cap)) as usize;
    let mut alphas: Vec<u64> = sizes.iter().copied().filter(|&w| 2 * w <= cap).collect();
    alphas.push(0);
    alphas.sort_unstable();
    alphas.dedup();
    // Evenly spaced sample if there are too many distinct values.
    let step = alphas.len().div_ceil(max_alphas.max(1)).max(1);
    for alpha in alphas.into_iter().step_by(step) {
        let (mut j1, mut j2, mut sum2, mut sum3) = (0u128, 0u128, 0u128, 0u128);
        for &w in sizes {
            if w > cap - alpha {
                j1 += 1;
            } else if 2 * w > cap {
                j2 += 1;
                sum2 += u128::from(w);
            } else if w >= alpha {
                sum3 += u128::from(w);
            }
        }
        let room = j2 * u128::from(cap) - sum2;
        let extra = sum3.saturating_sub(room).div_ceil(u128::from(cap));
        best = best.max((j1 + j2 + extra) as usize);
    }
    best
}

/// Search state for one MBS' run.
struct Mbs<'a> {
    items: &'a [Size],
    cap: Size,
    slots: usize,
    /// Unpacked items, as indices into `items`, in `items` order.
    rem: Vec<usize>,
    /// Unpacked items by size: the exact-residual lookup.
    by_size: HashMap<Size, Vec<usize>>,
    /// Per position of `rem`, the sum of the sizes from there on.
    suffix: Vec<[u128; 2]>,
    /// Current subset (indices into `items`).
    chosen: Vec<usize>,
    best: Vec<usize>,
    best_slack: f64,
    exact: bool,
    /// Evaluations left for the current node.
    node_work: u64,
    budget: &'a mut u64,
}

impl Mbs<'_> {
    fn slack(&self, load: Size) -> f64 {
        (0..2).map(|d| frac(self.cap[d] - load[d], self.cap[d])).sum()
    }

    fn charge(&mut self, w: u64) -> bool {
        self.node_work = self.node_work.saturating_sub(w);
        *self.budget = self.budget.saturating_sub(w);
        self.node_work > 0 && *self.budget > 0
    }

    fn offer(&mut self, load: Size) {
        let s = self.slack(load);
        if s < self.best_slack {
            self.best_slack = s;
            self.best.clone_from(&self.chosen);
            self.exact = load == self.cap;
        }
    }

    /// Depth-first over `rem[pos..]` with the current subset at `load`.
    fn search(&mut self, pos: usize, load: Size) {
        if self.exact || !self.charge(1) {
            return;
        }
        if self.chosen.len() >= self.slots {
            return;
        }
        // One item that completes the node exactly?
        let residual = [self.cap[0] - load[0], self.cap[1] - load[1]];
        if let Some(list) = self.by_size.get(&residual)
            && let Some(&i) = list.iter().find(|i| !self.chosen.contains(i))
        {
            self.chosen.push(i);
            self.offer(self.cap);
            self.chosen.pop();
            return;
        }
        let n = self.rem.len();
        // Two items that complete the node exactly? One pass with the
        // lookup finds them in O(n), before the search enumerates pairs.
        if self.chosen.len() + 2 <= self.slots {
            self.charge((n - pos) as u64);
            for &i in &self.rem[pos..] {
                let it = self.items[i];
                if it[0] > residual[0] || it[1] > residual[1] {
                    continue;
                }
                let need = [residual[0] - it[0], residual[1] - it[1]];
                if let Some(list) = self.by_size.get(&need)
                    && let Some(&j) = list.iter().find(|&&j| j != i && !self.chosen.contains(&j))
                {
                    self.chosen.push(i);
                    self.chosen.push(j);
                    self.offer(self.cap);
                    self.chosen.truncate(self.chosen.len() - 2);
                    return;
                }
            }
        }
        // Cannot beat the best even with everything that is left.
        let reach: f64 = (0..2)
            .map(|d| {
                let top = u128::from(load[d]) + self.suffix[pos][d];
                let left = u128::from(self.cap[d]).saturating_sub(top);
                frac(left as u64, self.cap[d])
            })
            .sum();
        if reach >= self.best_slack {
            return;
        }
        let mut k = pos;
        while k < n {
            let i = self.rem[k];
            let it = self.items[i];
            if load[0] + it[0] <= self.cap[0] && load[1] + it[1] <= self.cap[1] {
                let next = [load[0] + it[0], load[1] + it[1]];
                self.chosen.push(i);
                self.offer(next);
                self.search(k + 1, next);
                self.chosen.pop();
                if self.exact || self.node_work == 0 || *self.budget == 0 {
                    return;
                }
                // Equal items give equal subtrees.
                while k + 1 < n && self.items[self.rem[k + 1]] == it {
                    k += 1;
                }
            }
            k += 1;
            if !self.charge(1) {
                return;
            }
        }
    }
}

/// Packs `items` (sorted largest first by the caller) by MBS' into bins of
/// capacity `cap` holding at most `slots` items, spending at most
/// `node_work` evaluations per bin and `budget` in total. Returns the bins
/// (indices into `items`), or `None` if the budget ran out before every
/// item was packed or more than `give_up` bins would be needed. Every item
/// must fit an empty bin on its own.
pub(crate) fn pack(
    items: &[Size],
    cap: Size,
    slots: usize,
    node_work: u64,
    give_up: usize,
    budget: &mut u64,
) -> Option<Vec<Vec<usize>>> {
    if slots == 0 || items.iter().any(|it| it[0] > cap[0] || it[1] > cap[1]) {
        return None;
    }
    let mut by_size: HashMap<Size, Vec<usize>> = HashMap::new();
    for (i, &it) in items.iter().enumerate() {
        by_size.entry(it).or_default().push(i);
    }
    let mut m = Mbs {
        items,
        cap,
        slots,
        rem: (0..items.len()).collect(),
        by_size,
        suffix: Vec::new(),
        chosen: Vec::new(),
        best: Vec::new(),
        best_slack: f64::INFINITY,
        exact: false,
        node_work,
        budget,
    };
    let mut bins = Vec::new();
    let mut packed = vec![false; items.len()];
    while !m.rem.is_empty() {
        if bins.len() >= give_up || *m.budget == 0 {
            return None;
        }
        // The fixed item: the largest left.
        let first = m.rem.remove(0);
        // Suffix sums of what is left, for the reachability prune.
        let n = m.rem.len();
        *m.budget = m.budget.saturating_sub(2 * n as u64);
        m.suffix.clear();
        m.suffix.resize(n + 1, [0, 0]);
        for k in (0..n).rev() {
            let it = items[m.rem[k]];
            m.suffix[k] = [m.suffix[k + 1][0] + u128::from(it[0]), m.suffix[k + 1][1] + u128::from(it[1])];
        }
        // Search the rest for the least slack.
        remove(&mut m.by_size, items[first], first);
        m.chosen.clear();
        m.chosen.push(first);
        m.best.clone_from(&m.chosen);
        m.best_slack = m.slack(items[first]);
        m.exact = items[first] == cap;
        m.node_work = node_work;
        m.search(0, items[first]);
        let bin = std::mem::take(&mut m.best);
        for &i in &bin[1..] {
            remove(&mut m.by_size, items[i], i);
        }
        for &i in &bin {
            packed[i] = true;
        }
        m.rem.retain(|&i| !packed[i]);
        bins.push(bin);
    }
    Some(bins)
}

fn remove(map: &mut HashMap<Size, Vec<usize>>, key: Size, i: usize) {
    if let Some(list) = map.get_mut(&key) {
        list.retain(|&x| x != i);
        if list.is_empty() {
            map.remove(&key);
        }
    }
}

/// `part / whole`, with a zero-sized dimension counting as nothing.
#[inline]
fn frac(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::improve::SplitMix;

    /// `bins` triplets filling `cap` exactly in every dimension with a
    /// positive capacity, shuffled, sorted largest first (normalised sum).
    fn triplets(bins: usize, cap: Size, seed: u64) -> Vec<Size> {
        let mut rng = SplitMix::new(seed);
        let mut items = Vec::new();
        for _ in 0..bins {
            let mut t = [[0u64; 2]; 3];
            for d in 0..2 {
                if cap[d] == 0 {
                    continue;
                }
                // Falkenauer-style: one item of 38-49 % of the node, a
                // second of at least a quarter, the third the rest.
                let c = cap[d];
                let a = c * 38 / 100 + rng.below((c * 11 / 100) as usize) as u64;
                let lo = c / 4;
                let b = lo + rng.below(((c - a) / 2 - lo + 1) as usize) as u64;
                let c = c - a - b;
                t[0][d] = a;
                t[1][d] = b;
                t[2][d] = c;
            }
            items.extend(t);
        }
        let key = |s: &Size| frac(s[0], cap[0]) + frac(s[1], cap[1]);
        items.sort_by(|a, b| key(b).total_cmp(&key(a)).then(b.cmp(a)));
        items
    }

    fn check(items: &[Size], cap: Size, bins: &[Vec<usize>]) {
        let mut seen = vec![false; items.len()];
        for bin in bins {
            let mut load = [0u64; 2];
            for &i in bin {
                assert!(!seen[i], "item {i} packed twice");
                seen[i] = true;
                load[0] += items[i][0];
                load[1] += items[i][1];
            }
            assert!(load[0] <= cap[0] && load[1] <= cap[1], "bin over capacity");
        }
        assert!(seen.iter().all(|&s| s), "an item was not packed");
    }

    /// Packs `runs` generated triplet instances of `bins` exact bins;
    /// returns how many came out optimal. None may need more than `slack`
    /// extra bins, and the lower bound must be the known optimum.
    fn triplet_runs(cap: Size, bins: usize, runs: u64, slack: usize) -> usize {
        let mut optimal = 0;
        for seed in 0..runs {
            let items = triplets(bins, cap, seed);
            for d in 0..2 {
                if cap[d] > 0 {
                    let sizes: Vec<u64> = items.iter().map(|s| s[d]).collect();
                    assert_eq!(l2_bound(&sizes, cap[d], 1000), bins);
                }
            }
            let mut budget = u64::MAX;
            let got = pack(&items, cap, usize::MAX, 2_000, usize::MAX, &mut budget).expect("budget is unlimited");
            check(&items, cap, &got);
            assert!(got.len() <= bins + slack, "seed {seed}: {} bins for {bins} exact triplets", got.len());
            optimal += usize::from(got.len() == bins);
        }
        optimal
    }

    #[test]
    fn one_dimensional_triplets_are_packed_within_two() {
        // MBS' alone (no restarts, no improvement step): one-dimensional
        // triplets are its weak spot, the restarts and bin completion in
        // `improve` take it from here.
        // Regression guard only: today none of these is optimal after
        // MBS' alone; every one is within two bins.
        triplet_runs([0, 1000], 40, 20, 2);
    }

    #[test]
    fn two_dimensional_triplets_are_packed_optimally() {
        let optimal = triplet_runs([4000, 4096], 50, 20, 1);
        assert!(optimal >= 18, "only {optimal}/20 optimal");
    }

    #[test]
    fn respects_slots_and_budget() {
        let cap = [0, 100];
        let items = vec![[0, 10]; 30];
        let mut budget = u64::MAX;
        let bins = pack(&items, cap, 4, 1000, usize::MAX, &mut budget).expect("budget is unlimited");
        check(&items, cap, &bins);
        assert!(bins.iter().all(|b| b.len() <= 4));
        assert_eq!(bins.len(), 8);
        let mut tiny = 5;
        assert!(pack(&items, cap, 4, 1000, usize::MAX, &mut tiny).is_none());
    }

    #[test]
    fn l2_beats_the_sum_bound() {
        // Six items just over half: six bins although the sum needs four.
        assert_eq!(l2_bound(&[51; 6], 100, 100), 6);
        assert_eq!(l2_bound(&[50; 6], 100, 100), 3);
    }
}
