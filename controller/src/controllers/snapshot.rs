//! What every controller reads: the store as of one resourceVersion.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::manifest::Kind;
use crate::object::ApiObject;
use crate::status::{ConditionType, NodeStatus, PodPhase, PodStatus, condition};
use crate::store::{Store, View, WatchEvent};

/// Everything a pass reads.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Deployments.
    pub deployments: Vec<Arc<ApiObject>>,
    /// DaemonSets.
    pub daemon_sets: Vec<Arc<ApiObject>>,
    /// StatefulSets.
    pub stateful_sets: Vec<Arc<ApiObject>>,
    /// Jobs.
    pub jobs: Vec<Arc<ApiObject>>,
    /// Pods (replicas).
    pub pods: Vec<Arc<ApiObject>>,
    /// Nodes.
    pub nodes: Vec<Arc<ApiObject>>,
    /// ConfigMaps.
    pub config_maps: Vec<Arc<ApiObject>>,
    /// Secrets.
    pub secrets: Vec<Arc<ApiObject>>,
    /// Services.
    pub services: Vec<Arc<ApiObject>>,
    /// PersistentVolumeClaims.
    pub claims: Vec<Arc<ApiObject>>,
    /// Events.
    pub events: Vec<Arc<ApiObject>>,
    /// When it was read: rollouts time readiness and deadlines against it.
    pub now: Option<std::time::SystemTime>,
    /// What the pass is told about evicting lost nodes' replicas.
    pub eviction: super::node_lifecycle::EvictionPolicy,
    /// The registry images without one are pulled from (the server's
    /// `--default-registry`): the wire spells it out, and what a replica's
    /// document can hold is checked as the wire spells it.
    pub default_registry: String,
    /// The store's resourceVersion it shows.
    pub resource_version: u64,
    /// The store's view it was read from, with its indexes (pods by owner,
    /// by node); `None` for a snapshot made by hand (tests), whose lookups
    /// scan the lists instead.
    pub view: Option<View>,
    /// What changed since the last pass: the workloads a pass reconciles.
    pub scope: Scope,
}

/// Which workloads a pass reconciles. Level triggering stays (a full pass
/// at start, after a lagged watch and every resync); in between, a pass
/// looks only at the workloads whose objects or replicas changed, as
/// Kubernetes' controllers take keys from a work queue. A workload waiting
/// on the clock (a rollout) is reconciled every pass regardless.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every workload.
    #[default]
    All,
    /// The workloads (by uid) whose object or replicas changed, and whether
    /// a node changed (every DaemonSet follows the nodes).
    Changed {
        /// Workload uids.
        owners: HashSet<String>,
        /// A node was added, changed or deleted.
        nodes: bool,
    },
}

impl Scope {
    /// Nothing changed yet.
    pub fn nothing() -> Scope {
        Scope::Changed { owners: HashSet::new(), nodes: false }
    }

    /// Takes in one change from the store's watch. `marks` remembers, across
    /// passes, what of each node the DaemonSets read: a node's write that
    /// changes none of it (its usage, a heartbeat's lease) reconciles no
    /// DaemonSet.
    pub fn note(&mut self, event: &WatchEvent, marks: &mut NodeMarks) {
        let object = &event.object;
        let node_moved = object.kind == Kind::Node && marks.moved(event);
        let Scope::Changed { owners, nodes } = self else { return };
        match object.kind {
            Kind::Pod => {
                if let Some(owner) = object.metadata.owner_references.first() {
                    owners.insert(owner.uid.clone());
                }
            }
            // A deleted workload is noted the same way: garbage collection
            // then finds its replicas ownerless.
            Kind::Deployment | Kind::DaemonSet | Kind::Job | Kind::StatefulSet => {
                _ = owners.insert(object.metadata.uid.clone())
            }
            Kind::Node => *nodes |= node_moved,
            _ => {}
        }
    }

    /// Whether a pass reconciles `workload`.
    pub fn wants(&self, workload: &ApiObject) -> bool {
        match self {
            Scope::All => true,
            Scope::Changed { owners, nodes } => {
                owners.contains(&workload.metadata.uid) || (*nodes && workload.kind == Kind::DaemonSet)
            }
        }
    }
}

/// What the DaemonSets read of each node (labels, taints, architecture,
/// readiness), as a hash per node, kept by the reconcile loop across passes.
#[derive(Debug, Default)]
pub struct NodeMarks(HashMap<String, u64>);

impl NodeMarks {
    /// Whether `event` (of a Node) changed what DaemonSets read of it; a
    /// node seen for the first time, or deleted, did.
    fn moved(&mut self, event: &WatchEvent) -> bool {
        use std::hash::{Hash, Hasher};
        let node = &event.object;
        if event.event_type == crate::store::EventType::Deleted {
            self.0.remove(&node.metadata.name);
            return true;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        node.metadata.labels.hash(&mut hasher);
        serde_json::to_string(&node.typed_spec::<crate::manifest::types::NodeSpec>().unwrap_or_default())
            .unwrap_or_default()
            .hash(&mut hasher);
        let status = node.typed_status::<NodeStatus>();
        status.node_info.architecture.hash(&mut hasher);
        status.is_ready().hash(&mut hasher);
        let mark = hasher.finish();
        self.0.insert(node.metadata.name.clone(), mark) != Some(mark)
    }
}

impl Snapshot {
    /// Reads the store: every kind as of one resourceVersion, shared with
    /// the store (no object is copied).
    pub fn read(store: &dyn Store) -> Snapshot {
        let view = store.view();
        let list = |kind| view.list(kind, None).cloned().collect();
        Snapshot {
            deployments: list(Kind::Deployment),
            daemon_sets: list(Kind::DaemonSet),
            stateful_sets: list(Kind::StatefulSet),
            jobs: list(Kind::Job),
            pods: list(Kind::Pod),
            nodes: list(Kind::Node),
            config_maps: list(Kind::ConfigMap),
            secrets: list(Kind::Secret),
            services: list(Kind::Service),
            claims: list(Kind::PersistentVolumeClaim),
            events: list(Kind::Event),
            now: Some(std::time::SystemTime::now()),
            eviction: Default::default(),
            default_registry: String::new(),
            resource_version: view.resource_version,
            view: Some(view),
            scope: Scope::All,
        }
    }
}

impl Snapshot {
    /// The pods the workload with `uid` derived: from the store's index,
    /// or a scan of the pods for a snapshot made by hand.
    pub fn owned_by(&self, uid: &str) -> Vec<&ApiObject> {
        match &self.view {
            Some(view) => view.pods_owned_by(uid).map(|p| &**p).collect(),
            None => self
                .pods
                .iter()
                .filter(|p| p.metadata.owner_references.first().is_some_and(|o| o.uid == uid))
                .map(|p| &**p)
                .collect(),
        }
    }

    /// The pods bound to `node` (see [`Snapshot::owned_by`]).
    pub fn pods_on(&self, node: &str) -> Vec<&ApiObject> {
        match &self.view {
            Some(view) => view.pods_on(node).map(|p| &**p).collect(),
            None => self.pods.iter().filter(|p| p.node_name() == Some(node)).map(|p| &**p).collect(),
        }
    }

    /// The pods in `phase`, which is not Running (see
    /// [`crate::store::Objects::pods_in_phase`]; a scan for a snapshot made
    /// by hand).
    pub fn pods_in_phase(&self, phase: PodPhase) -> Vec<&ApiObject> {
        match &self.view {
            Some(view) => view.pods_in_phase(phase).map(|p| &**p).collect(),
            None => self.pods.iter().filter(|p| p.typed_status::<PodStatus>().phase == phase).map(|p| &**p).collect(),
        }
    }

    /// The nodes whose `Ready` condition is not `True` (a scan for a
    /// snapshot made by hand).
    pub fn nodes_not_ready(&self) -> Vec<&ApiObject> {
        match &self.view {
            Some(view) => view.nodes_not_ready().map(|n| &**n).collect(),
            None => self
                .nodes
                .iter()
                .filter(|n| {
                    let status = n.typed_status::<NodeStatus>();
                    !condition(&status.conditions, ConditionType::Ready).is_some_and(|c| c.is_true())
                })
                .map(|n| &**n)
                .collect(),
        }
    }

    /// The pods each owner (by uid) derived, from one scan of the pods: a
    /// workload's replicas are found without a scan per workload.
    pub fn pods_by_owner(&self) -> HashMap<&str, Vec<&ApiObject>> {
        let mut owned: HashMap<&str, Vec<&ApiObject>> = HashMap::new();
        for pod in &self.pods {
            if let Some(owner) = pod.metadata.owner_references.first() {
                owned.entry(owner.uid.as_str()).or_default().push(pod);
            }
        }
        owned
    }
}
