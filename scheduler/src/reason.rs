//! Why a replica could not be placed, as data an operator (and the
//! controller's API) can read.
//!
//! Every node that rejects a replica yields one [`Unplaceable`]: the first
//! filter that failed, with the numbers behind it (after Kubernetes'
//! `InsufficientResource` and Nomad's `FilterConstraint*`). They are folded
//! into an [`UnplacedReason`] per replica, one [`RejectionGroup`] per distinct
//! [`Rejection::summary`], so a 10,000-node fleet does not produce 10,000
//! entries per pending replica. Its `Display` is the familiar
//! `0/12 nodes available: 9 insufficient memory, 3 node(s) had untolerated taint {zone: dmz}`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{NodeId, Taint, WorkloadId};

/// A resource dimension that can run out.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Resource {
    /// CPU millicores.
    Cpu,
    /// Memory bytes.
    Memory,
    /// Workload slots (`max_workloads`).
    Workloads,
    /// An extended resource such as `flotilla.io/serial`.
    Extended(String),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Memory => f.write_str("memory"),
            Self::Workloads => f.write_str("workload slots"),
            Self::Extended(name) => f.write_str(name),
        }
    }
}

/// Why one node rejected one replica: the first filter that failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// The node is not ready.
    NotReady,
    /// The image needs another architecture.
    ArchMismatch {
        /// Architecture the replica needs.
        required: String,
        /// Architecture of the node.
        node: String,
    },
    /// The image needs another operating system.
    OsMismatch {
        /// OS the replica needs.
        required: String,
        /// OS of the node.
        node: String,
    },
    /// The node takes the compact document profile, which cannot hold the
    /// replica.
    CompactProfile {
        /// The limit the replica exceeds, e.g. `2 containers (it holds 1)`.
        limit: String,
    },
    /// A nodeSelector entry is missing or different on the node.
    SelectorMismatch {
        /// Selector key.
        key: String,
        /// Value the selector wants.
        value: String,
    },
    /// The node has a `NoSchedule`/`NoExecute` taint the replica does not tolerate.
    UntoleratedTaint {
        /// The first such taint.
        taint: Taint,
    },
    /// The node lacks the label a topology spread constraint is keyed on.
    MissingTopologyKey {
        /// The label key.
        key: String,
    },
    /// Requests do not fit what is left.
    Insufficient {
        /// The exhausted dimension.
        resource: Resource,
        /// What the replica requests.
        requested: u64,
        /// What is already used on the node (bound plus placed in this plan).
        used: u64,
        /// Allocatable amount.
        capacity: u64,
    },
    /// The node already runs `max` replicas of the workload.
    MaxPerNode {
        /// The workload.
        workload: WorkloadId,
        /// The limit.
        max: u32,
    },
    /// Placing here would exceed the topology spread's maximum skew.
    TopologySkew {
        /// The label key.
        key: String,
        /// The node's value of it.
        value: String,
        /// The limit.
        max_skew: u32,
    },
}

impl Rejection {
    /// The text nodes are grouped by in an [`UnplacedReason`]: numbers that
    /// differ per node are left out so that equal causes add up.
    pub fn summary(&self) -> String {
        match self {
            Self::NotReady => "node(s) not ready".to_owned(),
            Self::ArchMismatch { required, .. } => format!("node(s) not {required}"),
            Self::OsMismatch { required, .. } => format!("node(s) not running {required}"),
            Self::CompactProfile { limit } => format!("node(s) take the compact document profile: {limit}"),
            Self::SelectorMismatch { key, value } => {
                format!("node(s) didn't match nodeSelector {{{key}: {value}}}")
            }
            Self::UntoleratedTaint { taint } => {
                format!("node(s) had untolerated taint {{{}: {}}}", taint.key, taint.value)
            }
            Self::MissingTopologyKey { key } => format!("node(s) missing label {key}"),
            Self::Insufficient { resource, .. } => format!("insufficient {resource}"),
            Self::MaxPerNode { workload, max } => {
                format!("node(s) already run {max} replica(s) of {workload}")
            }
            Self::TopologySkew { key, max_skew, .. } => {
                format!("node(s) would exceed max skew {max_skew} over {key}")
            }
        }
    }
}

/// One node's rejection of a replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unplaceable {
    /// The node.
    pub node: NodeId,
    /// Why it cannot take the replica.
    pub reason: Rejection,
}

/// Nodes that rejected a replica for the same [`Rejection::summary`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectionGroup {
    /// How many nodes.
    pub count: usize,
    /// The first of them (in node order), with its numbers.
    pub example: Unplaceable,
}

/// Why a replica was left pending: every node's rejection, folded by cause.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnplacedReason {
    /// Nodes in the view.
    pub nodes_total: usize,
    /// Causes, most frequent first (ties by summary text).
    pub groups: Vec<RejectionGroup>,
}

impl UnplacedReason {
    /// Folds per-node rejections (in node order) into groups.
    pub fn from_rejections(nodes_total: usize, rejections: impl IntoIterator<Item = Unplaceable>) -> Self {
        // Few distinct causes per replica, so a linear scan beats a map.
        let mut groups: Vec<(String, RejectionGroup)> = Vec::new();
        for r in rejections {
            let key = r.reason.summary();
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, g)) => g.count += 1,
                None => groups.push((key, RejectionGroup { count: 1, example: r })),
            }
        }
        groups.sort_by(|(ka, a), (kb, b)| b.count.cmp(&a.count).then_with(|| ka.cmp(kb)));
        Self { nodes_total, groups: groups.into_iter().map(|(_, g)| g).collect() }
    }

    /// Number of nodes that rejected the replica.
    pub fn nodes_rejecting(&self) -> usize {
        self.groups.iter().map(|g| g.count).sum()
    }
}

impl fmt::Display for UnplacedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every node rejected the replica, hence always `0/N`.
        write!(f, "0/{} nodes available", self.nodes_total)?;
        for (i, g) in self.groups.iter().enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            write!(f, "{sep}{} {}", g.count, g.example.reason.summary())?;
        }
        Ok(())
    }
}
