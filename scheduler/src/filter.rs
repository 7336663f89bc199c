//! Filters: may this node take this replica at all?
//!
//! One small type per concern, in the order a rejection is reported
//! (the first failing filter names the cause). Filters come in two kinds:
//!
//! - [`StaticFilter`]s look only at the node's attributes (readiness,
//!   arch/os, labels, taints). The engine runs them once per *pool* of
//!   identical nodes and *class* of identical replicas, not per placement:
//!   that cache is what makes a placement cost independent of fleet size.
//! - [`DynamicFilter`]s look at what is already on the node (resources,
//!   replicas of the same workload). They run on each candidate node.
//!
//! The fast path and the reason path call the same `check` methods, so a
//! node is never rejected for one reason and reported for another.

use crate::engine::{Req, State};
use crate::model::{Node, Replica, TaintEffect};
use crate::reason::{Rejection, Resource};

/// A check that depends only on the node's attributes and the replica's spec.
pub(crate) trait StaticFilter {
    /// `Ok` if the node passes.
    fn check(&self, node: &Node, replica: &Replica) -> Result<(), Rejection>;
}

/// A check that depends on what is already placed on the node.
pub(crate) trait DynamicFilter {
    /// `Ok` if node `n` can take `req` now.
    fn check(&self, state: &State, n: usize, req: &Req) -> Result<(), Rejection>;
}

/// The node must be ready.
pub(crate) struct Ready;

impl StaticFilter for Ready {
    fn check(&self, node: &Node, _: &Replica) -> Result<(), Rejection> {
        if node.ready { Ok(()) } else { Err(Rejection::NotReady) }
    }
}

/// The image's arch and os must match the node's.
pub(crate) struct ArchOs;

impl StaticFilter for ArchOs {
    fn check(&self, node: &Node, r: &Replica) -> Result<(), Rejection> {
        if let Some(arch) = r.arch.as_ref().filter(|a| **a != node.arch) {
            return Err(Rejection::ArchMismatch { required: arch.clone(), node: node.arch.clone() });
        }
        if let Some(os) = r.os.as_ref().filter(|o| **o != node.os) {
            return Err(Rejection::OsMismatch { required: os.clone(), node: node.os.clone() });
        }
        Ok(())
    }
}

/// A node taking the compact document profile holds only replicas within
/// its limits.
pub(crate) struct Profile;

impl StaticFilter for Profile {
    fn check(&self, node: &Node, r: &Replica) -> Result<(), Rejection> {
        match &r.exceeds_compact {
            Some(limit) if node.compact_profile => Err(Rejection::CompactProfile { limit: limit.clone() }),
            _ => Ok(()),
        }
    }
}

/// Every nodeSelector entry must be a node label with the same value.
pub(crate) struct NodeSelector;

impl StaticFilter for NodeSelector {
    fn check(&self, node: &Node, r: &Replica) -> Result<(), Rejection> {
        for (key, value) in &r.node_selector {
            if node.labels.get(key) != Some(value) {
                return Err(Rejection::SelectorMismatch { key: key.clone(), value: value.clone() });
            }
        }
        Ok(())
    }
}

/// Every `NoSchedule`/`NoExecute` taint must be tolerated.
/// `PreferNoSchedule` only lowers the score (see `score.rs`).
pub(crate) struct Taints;

impl StaticFilter for Taints {
    fn check(&self, node: &Node, r: &Replica) -> Result<(), Rejection> {
        let hard = node.taints.iter().filter(|t| t.effect != TaintEffect::PreferNoSchedule);
        for taint in hard {
            if !r.tolerations.iter().any(|tol| tol.tolerates(taint)) {
                return Err(Rejection::UntoleratedTaint { taint: taint.clone() });
            }
        }
        Ok(())
    }
}

/// A topology spread constraint needs its key on the node: a node outside
/// every domain cannot be accounted for (Kubernetes filters it out too).
pub(crate) struct TopologyKey;

impl StaticFilter for TopologyKey {
    fn check(&self, node: &Node, r: &Replica) -> Result<(), Rejection> {
        match &r.topology_spread {
            Some(ts) if !node.labels.contains_key(&ts.key) => {
                Err(Rejection::MissingTopologyKey { key: ts.key.clone() })
            }
            _ => Ok(()),
        }
    }
}

/// The static filters, in reporting order.
pub(crate) const STATIC_FILTERS: [&dyn StaticFilter; 6] =
    [&Ready, &ArchOs, &Profile, &NodeSelector, &Taints, &TopologyKey];

/// Runs every static filter; the first failure is the reason.
pub(crate) fn check_static(node: &Node, r: &Replica) -> Result<(), Rejection> {
    STATIC_FILTERS.iter().try_for_each(|f| f.check(node, r))
}

/// Requests must fit what is left in every dimension: cpu, memory,
/// extended resources and workload slots.
pub(crate) struct Fit;

impl DynamicFilter for Fit {
    #[inline]
    fn check(&self, st: &State, n: usize, req: &Req) -> Result<(), Rejection> {
        let node = &st.nodes[n];
        // Cheap comparisons first; the rejection is only built on failure.
        if node.used_cpu + req.cpu > node.alloc_cpu {
            return Err(Rejection::Insufficient {
                resource: Resource::Cpu,
                requested: req.cpu,
                used: node.used_cpu,
                capacity: node.alloc_cpu,
            });
        }
        if node.used_mem + req.mem > node.alloc_mem {
            return Err(Rejection::Insufficient {
                resource: Resource::Memory,
                requested: req.mem,
                used: node.used_mem,
                capacity: node.alloc_mem,
            });
        }
        for &(k, amount) in &req.ext {
            let (used, cap) = (node.used_ext[k as usize], node.alloc_ext[k as usize]);
            if used + amount > cap {
                return Err(Rejection::Insufficient {
                    resource: Resource::Extended(st.ext_names[k as usize].clone()),
                    requested: amount,
                    used,
                    capacity: cap,
                });
            }
        }
        if node.workloads >= node.max_workloads {
            return Err(Rejection::Insufficient {
                resource: Resource::Workloads,
                requested: 1,
                used: u64::from(node.workloads),
                capacity: u64::from(node.max_workloads),
            });
        }
        Ok(())
    }
}

/// At most `max_per_node` replicas of the same workload on one node.
pub(crate) struct MaxPerNode;

impl DynamicFilter for MaxPerNode {
    #[inline]
    fn check(&self, st: &State, n: usize, req: &Req) -> Result<(), Rejection> {
        match req.max_per_node {
            Some(max) if st.same_workload(req.workload, n) >= max => {
                Err(Rejection::MaxPerNode { workload: st.workload_names[req.workload as usize].clone(), max })
            }
            _ => Ok(()),
        }
    }
}

/// Topology spread: after placing here, the node's domain may hold at most
/// `max_skew` more replicas of the workload than the emptiest eligible domain.
pub(crate) struct TopologySkew;

impl DynamicFilter for TopologySkew {
    #[inline]
    fn check(&self, st: &State, n: usize, req: &Req) -> Result<(), Rejection> {
        let Some(s) = req.spread else { return Ok(()) };
        let sp = &st.spreads[s as usize];
        let Some(d) = sp.domain_of(st, n) else {
            // Unreachable behind TopologyKey, but never panic on odd input.
            return Err(Rejection::MissingTopologyKey { key: sp.key.clone() });
        };
        if sp.counts[d] + 1 > sp.min_count() + sp.max_skew {
            return Err(Rejection::TopologySkew {
                key: sp.key.clone(),
                value: sp.domains[d].clone(),
                max_skew: sp.max_skew,
            });
        }
        Ok(())
    }
}

/// The dynamic filters, in reporting order.
pub(crate) const DYNAMIC_FILTERS: [&dyn DynamicFilter; 3] = [&Fit, &MaxPerNode, &TopologySkew];

/// Runs every dynamic filter; the first failure is the reason.
#[inline]
pub(crate) fn check_dynamic(st: &State, n: usize, req: &Req) -> Result<(), Rejection> {
    DYNAMIC_FILTERS.iter().try_for_each(|f| f.check(st, n, req))
}

/// Whether the dynamic filters pass: the hot path's form of
/// [`check_dynamic`]. The common case (cpu, memory, slots, no constraints)
/// is decided inline without building a rejection.
#[inline]
pub(crate) fn passes_dynamic(st: &State, n: usize, req: &Req) -> bool {
    let node = &st.nodes[n];
    if node.used_cpu + req.cpu > node.alloc_cpu
        || node.used_mem + req.mem > node.alloc_mem
        || node.workloads >= node.max_workloads
    {
        return false;
    }
    if !req.ext.is_empty() || req.max_per_node.is_some() || req.spread.is_some() {
        return check_dynamic(st, n, req).is_ok();
    }
    true
}
