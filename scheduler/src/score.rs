//! Scores: among the nodes that pass every filter, which is best?
//!
//! Lower is better. One small type per concern; [`rank`] adds them up. The
//! soft taint penalty dominates so that a `PreferNoSchedule` node is used
//! only when no untainted node fits, as in Kubernetes' `TaintToleration`.

use crate::engine::{Req, State};
use crate::model::ScoreMode;

/// A node's desirability for a replica that passed the filters.
pub(crate) trait Score {
    /// Lower is better.
    fn score(&self, st: &State, n: usize, req: &Req) -> f64;
}

/// Fractions of cpu and memory left on node `n` after placing `req`.
/// A dimension the node does not offer counts as neither free nor used.
#[inline]
fn slack_after(st: &State, n: usize, req: &Req) -> (f64, f64) {
    let node = &st.nodes[n];
    let frac = |alloc: u64, used: u64| {
        if alloc == 0 { 0.0 } else { alloc.saturating_sub(used) as f64 / alloc as f64 }
    };
    (frac(node.alloc_cpu, node.used_cpu + req.cpu), frac(node.alloc_mem, node.used_mem + req.mem))
}

/// Two-dimensional best fit (Kubernetes `MostAllocated` plus a balance
/// term): the least slack left in cpu plus memory, and a penalty for
/// leaving one dimension much freer than the other, since a node full on
/// cpu with memory to spare strands that memory.
pub(crate) struct BinPack;

/// Weight of the imbalance term; half keeps "fuller" the main criterion.
const BALANCE_WEIGHT: f64 = 0.5;

impl Score for BinPack {
    #[inline]
    fn score(&self, st: &State, n: usize, req: &Req) -> f64 {
        let (c, m) = slack_after(st, n, req);
        c + m + BALANCE_WEIGHT * (c - m).abs()
    }
}

/// Spread: fewest replicas of the same workload on the node first, then
/// the most free cpu plus memory (Kubernetes `LeastAllocated`).
pub(crate) struct Spread;

impl Score for Spread {
    #[inline]
    fn score(&self, st: &State, n: usize, req: &Req) -> f64 {
        let (c, m) = slack_after(st, n, req);
        // Each replica already there outweighs any difference in free space (<= 2).
        4.0 * f64::from(st.same_workload(req.workload, n)) + (2.0 - c - m)
    }
}

/// Added for a `PreferNoSchedule` taint the replica does not tolerate: more
/// than any difference the other scores can make.
pub(crate) const PREFER_NO_SCHEDULE_PENALTY: f64 = 1.0e6;

/// The full score of node `n` for `req`; `penalty` is the class's static
/// soft-taint penalty for the node's pool.
#[inline]
pub(crate) fn rank(st: &State, n: usize, req: &Req, penalty: f64) -> f64 {
    penalty
        + match req.mode {
            ScoreMode::BinPack => BinPack.score(st, n, req),
            ScoreMode::Spread => Spread.score(st, n, req),
        }
}
