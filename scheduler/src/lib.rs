#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - [`model`]: input and output types (nodes, replicas, the plan).
//! - [`reason`]: why a replica stayed pending, as data and as text.
//! - `filter`: one type per feasibility concern (static and dynamic).
//! - `score`: one type per ranking concern (bin-packing, spread, soft taints).
//! - `engine`: pools, classes, the capacity grid, best-fit decreasing.
//! - `improve`: the bounded repacking step.
//! - `mbs`: the Minimum Bin Slack construction and the L2 lower bound.
//! - `tabu`: the tabu search on partial packings (one node fewer at a time).

pub mod model;
pub mod reason;

mod engine;
mod filter;
mod improve;
mod mbs;
mod score;
mod tabu;

pub use model::{
    BoundReplica, ClusterView, Node, NodeId, Placement, Plan, Replica, ReplicaId, Resources, ScoreMode, Taint,
    TaintEffect, Toleration, TolerationOperator, TopologySpread, Unplaced, WorkloadId,
};
pub use reason::{Rejection, RejectionGroup, Resource, Unplaceable, UnplacedReason};

/// Tuning of [`schedule_with`]. The defaults are what [`schedule`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Run the improvement step after best-fit decreasing.
    pub improve: bool,
    /// Work allowed to the improvement step, in candidate evaluations per
    /// pending replica, on top of `improve_budget_base` (the total is
    /// capped by `improve_budget_max`). Counted in work, not time, so the
    /// result does not depend on the machine.
    pub improve_budget_per_replica: u64,
    /// Work allowed to the improvement step whatever the batch size (small
    /// hard batches need a minimum of search to find their optimum).
    pub improve_budget_base: u64,
    /// Upper bound on the improvement step's total work.
    pub improve_budget_max: u64,
    /// Nodes tried as the one to empty per round of the improvement step.
    pub improve_targets: usize,
    /// Random kicks per attempt to empty a node.
    pub improve_kicks: u32,
    /// Work allowed per node to the Minimum Bin Slack construction (subset
    /// evaluations while searching one node's fill), within the
    /// improvement step's budget.
    pub mbs_node_work: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            improve: true,
            improve_budget_per_replica: 3_000,
            improve_budget_base: 2_000_000,
            improve_budget_max: 6_000_000,
            improve_targets: 4,
            improve_kicks: 200,
            mbs_node_work: 2_000,
        }
    }
}

/// Places `pending` replicas on `view`'s nodes with the default [`Options`].
///
/// A pure function: no I/O, no clock, and the only randomness is derived
/// from `seed` (derive it from the plan generation so a plan can be
/// replayed). The same input and seed always give the same plan.
///
/// - Replicas are considered by priority (highest first), then by size
///   (largest first), then by id.
/// - Each goes to the best node that passes every filter: the fullest
///   (bin-packing) or the emptiest (spread), see the crate README.
/// - A replica that is already bound (its id is in `view.bound`) or repeated
///   in `pending` is skipped: placing it again is a no-op.
/// - Bound replicas are never moved; those on nodes missing from the view
///   are ignored: which replicas leave a lost node, and when, is the
///   controller's policy (its node lifecycle), not the scheduler's.
/// - Every replica left unplaced comes with an [`UnplacedReason`].
pub fn schedule(view: &ClusterView, pending: &[Replica], seed: u64) -> Plan {
    schedule_with(view, pending, seed, &Options::default())
}

/// [`schedule`] with explicit [`Options`].
pub fn schedule_with(view: &ClusterView, pending: &[Replica], seed: u64, opts: &Options) -> Plan {
    let (mut st, reqs) = engine::compile(view, pending);

    // Priority first (preemption is a later issue), then largest first:
    // the "decreasing" of best-fit decreasing. Ids break ties so the order
    // does not depend on the input order of equal replicas.
    let mut order: Vec<usize> = (0..reqs.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&pending[reqs[a].pending], &pending[reqs[b].pending]);
        rb.priority.cmp(&ra.priority).then(reqs[b].size.total_cmp(&reqs[a].size)).then_with(|| ra.id.cmp(&rb.id))
    });

    let mut assign: Vec<Option<u32>> = vec![None; reqs.len()];
    let mut reasons = engine::ReasonCache::default();
    let mut unplaced = Vec::new();
    for &i in &order {
        let req = &reqs[i];
        match engine::best_node(&st, req) {
            Some(n) => {
                st.account(n, req, true);
                assign[i] = Some(n as u32);
            }
            None => {
                let replica = &pending[req.pending];
                unplaced.push(Unplaced { replica: replica.id.clone(), reason: reasons.get(&st, replica, req) });
            }
        }
    }

    if opts.improve {
        let limits = improve::ImproveLimits {
            budget: opts
                .improve_budget_per_replica
                .saturating_mul(reqs.len() as u64)
                .saturating_add(opts.improve_budget_base)
                .min(opts.improve_budget_max),
            targets: opts.improve_targets,
            kicks: opts.improve_kicks,
            mbs_node_work: opts.mbs_node_work,
        };
        improve::improve(&mut st, &reqs, &mut assign, limits, seed);
    }

    let placements = order
        .iter()
        .filter_map(|&i| {
            assign[i].map(|n| Placement {
                replica: pending[reqs[i].pending].id.clone(),
                node: view.nodes[n as usize].id.clone(),
            })
        })
        .collect();
    Plan { placements, unplaced }
}
