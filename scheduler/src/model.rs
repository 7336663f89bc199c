//! The scheduler's input and output types: plain data, no behaviour beyond
//! small constructors. Everything here derives serde because the controller
//! stores plans and shows reasons through its API.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::reason::UnplacedReason;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Shared, not copied: a fleet's model holds tens of thousands of
        /// ids, and a clone of one is a reference count.
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub std::sync::Arc<str>);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.into())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s.into())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A node's id, as registered by its agent.
    NodeId
);
id_type!(
    /// A replica's stable id (e.g. `web-7f3a-2`).
    ReplicaId
);
id_type!(
    /// The workload (Deployment, DaemonSet, Job) a replica belongs to.
    WorkloadId
);

/// A resource vector: what a node offers or what a replica requests.
///
/// The workload count is not part of it: every replica takes exactly one
/// slot of its node's [`Node::max_workloads`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Extended resources such as `flotilla.io/serial`, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extended: BTreeMap<String, u64>,
}

impl Resources {
    /// CPU and memory only.
    pub fn new(cpu_millis: u64, memory_bytes: u64) -> Self {
        Self { cpu_millis, memory_bytes, extended: BTreeMap::new() }
    }

    /// Adds an extended resource (builder style).
    pub fn with_extended(mut self, name: &str, amount: u64) -> Self {
        self.extended.insert(name.to_owned(), amount);
        self
    }
}

/// What a taint does to replicas that do not tolerate it (Kubernetes semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaintEffect {
    /// Never place an intolerant replica here.
    NoSchedule,
    /// Avoid placing an intolerant replica here; allowed when nothing else fits.
    PreferNoSchedule,
    /// Never place here, and running intolerant replicas are evicted (the
    /// eviction is the node reconciler's job; for placement it acts like
    /// `NoSchedule`).
    NoExecute,
}

impl fmt::Display for TaintEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        })
    }
}

/// A node taint: `key=value:effect`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value (may be empty).
    pub value: String,
    /// What the taint does.
    pub effect: TaintEffect,
}

impl Taint {
    /// A taint `key=value:effect`.
    pub fn new(key: &str, value: &str, effect: TaintEffect) -> Self {
        Self { key: key.to_owned(), value: value.to_owned(), effect }
    }
}

/// How a toleration compares its value with a taint's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TolerationOperator {
    /// Key and value must be equal.
    #[default]
    Equal,
    /// The key must exist (any value); with no key, tolerates every taint.
    Exists,
}

/// A replica's toleration of taints (Kubernetes semantics).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Toleration {
    /// Taint key to match; `None` with `Exists` matches every key.
    pub key: Option<String>,
    /// Comparison.
    pub operator: TolerationOperator,
    /// Value to compare with `Equal`.
    pub value: Option<String>,
    /// Effect to match; `None` matches every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Tolerates `key=value` with any effect.
    pub fn equal(key: &str, value: &str) -> Self {
        Self {
            key: Some(key.to_owned()),
            operator: TolerationOperator::Equal,
            value: Some(value.to_owned()),
            effect: None,
        }
    }

    /// Tolerates any taint with this key.
    pub fn exists(key: &str) -> Self {
        Self { key: Some(key.to_owned()), operator: TolerationOperator::Exists, value: None, effect: None }
    }

    /// Restricts the toleration to one effect (builder style).
    pub fn with_effect(mut self, effect: TaintEffect) -> Self {
        self.effect = Some(effect);
        self
    }

    /// Whether this toleration tolerates `taint` (Kubernetes `ToleratesTaint`).
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        match (&self.key, self.operator) {
            (None, TolerationOperator::Exists) => true,
            (None, TolerationOperator::Equal) => false,
            (Some(k), _) if *k != taint.key => false,
            (Some(_), TolerationOperator::Exists) => true,
            (Some(_), TolerationOperator::Equal) => self.value.as_deref().unwrap_or("") == taint.value,
        }
    }
}

/// A node as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Node id.
    pub id: NodeId,
    /// Whether the node is ready (lease held, agent healthy).
    pub ready: bool,
    /// CPU architecture (`aarch64`, `armv7`, `x86_64`, ...).
    pub arch: String,
    /// Operating system (`linux`, ...).
    pub os: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Node taints.
    pub taints: Vec<Taint>,
    /// Raw capacity, for display; placement uses `allocatable`.
    pub capacity: Resources,
    /// What workloads may use (capacity minus system reservations).
    pub allocatable: Resources,
    /// Maximum number of replicas on the node.
    pub max_workloads: u32,
    /// The node takes the compact desired-document profile (a
    /// microcontroller-sized one): replicas that need more are not placed
    /// there.
    #[serde(default)]
    pub compact_profile: bool,
}

impl Node {
    /// A ready `aarch64`/`linux` node with no labels or taints whose
    /// capacity equals its allocatable.
    pub fn new(id: &str, allocatable: Resources, max_workloads: u32) -> Self {
        Self {
            id: id.into(),
            ready: true,
            arch: "aarch64".to_owned(),
            os: "linux".to_owned(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            capacity: allocatable.clone(),
            allocatable,
            max_workloads,
            compact_profile: false,
        }
    }

    /// Marks the node as taking the compact document profile (builder style).
    pub fn with_compact_profile(mut self) -> Self {
        self.compact_profile = true;
        self
    }

    /// Adds a label (builder style).
    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds a taint (builder style).
    pub fn with_taint(mut self, taint: Taint) -> Self {
        self.taints.push(taint);
        self
    }

    /// Sets the architecture (builder style).
    pub fn with_arch(mut self, arch: &str) -> Self {
        self.arch = arch.to_owned();
        self
    }

    /// Sets readiness (builder style).
    pub fn with_ready(mut self, ready: bool) -> Self {
        self.ready = ready;
        self
    }
}

/// How a replica's candidate nodes are ranked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScoreMode {
    /// Fullest node that fits, balanced over cpu and memory: fewest nodes
    /// used, so idle devices can sleep (the default).
    #[default]
    BinPack,
    /// Emptiest node that fits: replicas of a workload land apart.
    Spread,
}

/// Kubernetes-style topology spread: replica counts per value of a node
/// label may differ by at most `max_skew` between domains.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TopologySpread {
    /// Node label whose values are the domains (e.g. `zone`).
    pub key: String,
    /// Maximum difference between the fullest and the emptiest domain.
    pub max_skew: u32,
}

/// A replica's scheduling requirements. Pending replicas are placed; bound
/// ones (see [`BoundReplica`]) only occupy resources.
///
/// Constraints that relate replicas to each other (`max_per_node`,
/// `topology_spread`) count replicas of the same `workload`; all replicas of a
/// workload are expected to carry the same constraints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// Stable replica id.
    pub id: ReplicaId,
    /// Owning workload.
    pub workload: WorkloadId,
    /// Higher values are placed first.
    pub priority: i32,
    /// Requested resources.
    pub requests: Resources,
    /// Required architecture of the image, if any.
    pub arch: Option<String>,
    /// Required operating system of the image, if any.
    pub os: Option<String>,
    /// Labels the node must carry with these values.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerated taints.
    pub tolerations: Vec<Toleration>,
    /// At most this many replicas of the workload per node (anti-affinity).
    pub max_per_node: Option<u32>,
    /// Spread over the values of a node label.
    pub topology_spread: Option<TopologySpread>,
    /// Ranking of feasible nodes.
    pub score_mode: ScoreMode,
    /// Why the compact document profile cannot hold the replica (the limit
    /// it exceeds), if it cannot: then only full-profile nodes take it.
    #[serde(default)]
    pub exceeds_compact: Option<String>,
}

impl Replica {
    /// A replica with the given requests and no constraints.
    pub fn new(id: &str, workload: &str, requests: Resources) -> Self {
        Self::unconstrained(id.into(), workload.into(), requests)
    }

    fn unconstrained(id: ReplicaId, workload: WorkloadId, requests: Resources) -> Self {
        Self {
            id,
            workload,
            priority: 0,
            requests,
            arch: None,
            os: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            max_per_node: None,
            topology_spread: None,
            score_mode: ScoreMode::BinPack,
            exceeds_compact: None,
        }
    }

    /// The replica as what it is once bound: its id, workload, priority and
    /// requests occupy its node; its constraints no longer matter. The ids
    /// are shared, not copied.
    pub fn occupying(&self) -> Self {
        let mut bound = Self::unconstrained(self.id.clone(), self.workload.clone(), self.requests.clone());
        bound.priority = self.priority;
        bound
    }

    /// Sets the priority (builder style).
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Requires an architecture (builder style).
    pub fn with_arch(mut self, arch: &str) -> Self {
        self.arch = Some(arch.to_owned());
        self
    }

    /// Adds a nodeSelector entry (builder style).
    pub fn with_selector(mut self, key: &str, value: &str) -> Self {
        self.node_selector.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds a toleration (builder style).
    pub fn with_toleration(mut self, toleration: Toleration) -> Self {
        self.tolerations.push(toleration);
        self
    }

    /// Limits replicas of the workload per node (builder style).
    pub fn with_max_per_node(mut self, max: u32) -> Self {
        self.max_per_node = Some(max);
        self
    }

    /// Adds a topology spread constraint (builder style).
    pub fn with_topology_spread(mut self, key: &str, max_skew: u32) -> Self {
        self.topology_spread = Some(TopologySpread { key: key.to_owned(), max_skew });
        self
    }

    /// Sets the score mode (builder style).
    pub fn with_score_mode(mut self, mode: ScoreMode) -> Self {
        self.score_mode = mode;
        self
    }
}

/// A replica already running (or starting) on a node. The scheduler never
/// moves it; it only counts its requests and its workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundReplica {
    /// The replica's requirements.
    pub replica: Replica,
    /// Where it is bound.
    pub node: NodeId,
}

/// Everything the scheduler reads: the nodes and what is bound to them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// All known nodes, in a stable order (the order breaks exact ties).
    /// Shared: a controller keeps each node's model between passes and
    /// hands the same ones to every pass (copying 10,000 nodes' labels and
    /// taints was half of a node-loss pass).
    pub nodes: Vec<std::sync::Arc<Node>>,
    /// Replicas bound to nodes. Entries naming a node that is not in `nodes`
    /// are ignored by [`schedule`](crate::schedule): they occupy nothing.
    pub bound: Vec<BoundReplica>,
}

impl ClusterView {
    /// A view of `nodes` (in this order) and `bound`.
    pub fn new(nodes: impl IntoIterator<Item = Node>, bound: Vec<BoundReplica>) -> Self {
        ClusterView { nodes: nodes.into_iter().map(std::sync::Arc::new).collect(), bound }
    }
}

/// One placement decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The replica placed.
    pub replica: ReplicaId,
    /// Where it goes.
    pub node: NodeId,
}

/// A replica the scheduler could not place, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unplaced {
    /// The replica left pending.
    pub replica: ReplicaId,
    /// Why no node was feasible.
    pub reason: UnplacedReason,
}

/// The scheduler's output: a pure function of its input and seed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Placements, in the order the replicas were considered
    /// (priority first, then larger requests, then replica id).
    pub placements: Vec<Placement>,
    /// Replicas left pending, each with a reason, in the same order.
    pub unplaced: Vec<Unplaced>,
}

impl Plan {
    /// Number of distinct nodes receiving a placement.
    pub fn nodes_receiving(&self) -> usize {
        let mut ids: Vec<&NodeId> = self.placements.iter().map(|p| &p.node).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }
}
