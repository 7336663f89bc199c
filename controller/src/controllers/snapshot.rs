//! What every controller reads: the store as of one resourceVersion.

use std::collections::HashMap;
use std::sync::Arc;

use crate::manifest::Kind;
use crate::object::ApiObject;
use crate::store::Store;

/// Everything a pass reads.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Deployments.
    pub deployments: Vec<Arc<ApiObject>>,
    /// DaemonSets.
    pub daemon_sets: Vec<Arc<ApiObject>>,
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
    /// Events.
    pub events: Vec<Arc<ApiObject>>,
    /// When it was read: rollouts time readiness and deadlines against it.
    pub now: Option<std::time::SystemTime>,
    /// What the pass is told about evicting lost nodes' replicas.
    pub eviction: super::node_lifecycle::EvictionPolicy,
    /// The store's resourceVersion it shows.
    pub resource_version: u64,
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
            jobs: list(Kind::Job),
            pods: list(Kind::Pod),
            nodes: list(Kind::Node),
            config_maps: list(Kind::ConfigMap),
            secrets: list(Kind::Secret),
            services: list(Kind::Service),
            events: list(Kind::Event),
            now: Some(std::time::SystemTime::now()),
            eviction: Default::default(),
            resource_version: view.resource_version,
        }
    }
}

impl Snapshot {
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

    /// The pods bound to each node, from one scan of the pods.
    pub fn pods_by_node(&self) -> HashMap<&str, Vec<&ApiObject>> {
        let mut bound: HashMap<&str, Vec<&ApiObject>> = HashMap::new();
        for pod in &self.pods {
            if let Some(node) = pod.node_name() {
                bound.entry(node).or_default().push(pod);
            }
        }
        bound
    }
}
