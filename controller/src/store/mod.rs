//! The durable object store, behind a small trait.
//!
//! [`Store`] is what the API and the reconcilers need: read, list, commit a
//! batch atomically with optimistic concurrency, and watch from a
//! resourceVersion. [`RedbStore`] implements it on redb (an embedded,
//! crash-safe, copy-on-write B-tree database: one file, fsync on commit, no
//! C dependency). [`EtcdStore`] implements it on etcd for several
//! controllers, one of them leading ([`Term`]).

mod cipher;
mod etcd_document;
mod etcd_leader;
mod etcd_store;
mod mirror;
mod redb_store;
mod staging;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use cipher::{SecretCipher, random_bytes, write_private};
pub use etcd_leader::{DEFAULT_LEADER_LEASE, Term};
pub use etcd_store::{EtcdStore, EtcdTarget};
pub use redb_store::RedbStore;

use crate::manifest::Kind;
use crate::object::{ApiObject, ObjectKey};
use crate::status::{ConditionType, NodeStatus, PodPhase, PodStatus, condition};

/// One write of a batch.
#[derive(Debug, Clone)]
pub enum Op {
    /// Server-side apply: create, or replace labels, annotations and content
    /// (keeping `status`). A non-empty `metadata.resourceVersion` is a
    /// precondition. Writing what is already stored is a no-op.
    Apply(ApiObject),
    /// Create; fails if the object exists.
    Create(ApiObject),
    /// Replace `status` only; a non-empty resourceVersion is a precondition.
    UpdateStatus(ApiObject),
    /// Delete; `Some(rv)` is a precondition.
    Delete(ObjectKey, Option<u64>),
    /// Retire a replica: sets `metadata.deletionTimestamp` (the store's
    /// clock) unless already set. The only write of that field. The
    /// precondition is the uid, not the resourceVersion: the node's reports
    /// keep changing the replica's status, and a retirement must not wait
    /// for a quiet moment, only never hit a re-created namesake.
    Retire {
        /// The replica.
        key: ObjectKey,
        /// Its uid.
        uid: String,
    },
}

/// What a write did, with the object as stored (for deletes: as it was).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It did not exist.
    Created(Arc<ApiObject>),
    /// It changed.
    Configured(Arc<ApiObject>),
    /// Nothing to change; nothing written.
    Unchanged(Arc<ApiObject>),
    /// It is gone.
    Deleted(Arc<ApiObject>),
}

impl Outcome {
    /// The object.
    pub fn object(&self) -> &ApiObject {
        self.shared()
    }

    /// The object, as the store shares it.
    pub fn shared(&self) -> &Arc<ApiObject> {
        match self {
            Outcome::Created(o) | Outcome::Configured(o) | Outcome::Unchanged(o) | Outcome::Deleted(o) => o,
        }
    }

    /// kubectl's word for it.
    pub fn verb(&self) -> &'static str {
        match self {
            Outcome::Created(_) => "created",
            Outcome::Configured(_) => "configured",
            Outcome::Unchanged(_) => "unchanged",
            Outcome::Deleted(_) => "deleted",
        }
    }
}

/// What a watcher sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted; the object is its last state.
    Deleted,
}

/// One change, in commit order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The object after the change (before, for deletes, with the deletion's
    /// resourceVersion), shared with the store.
    pub object: Arc<ApiObject>,
}

impl WatchEvent {
    /// The resourceVersion of this change.
    pub fn resource_version(&self) -> u64 {
        self.object.resource_version()
    }
}

/// A list and the store's resourceVersion at the time: watch from there.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Objects in key order.
    pub items: Vec<Arc<ApiObject>>,
    /// The store's resourceVersion when listed.
    pub resource_version: u64,
}

/// Every object, with the indexes kept beside it: pods by their owner's
/// uid, by the node they are bound to and by phase (all but Running), and
/// the nodes that are not Ready. Persistent maps, so a copy (a
/// [`View`]) shares everything with the store until a commit changes it,
/// and a commit changes only the paths to what it wrote.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    by_key: imbl::OrdMap<ObjectKey, Arc<ApiObject>>,
    /// (owner uid, pod) for pods with an owner (the first reference).
    pods_by_owner: imbl::OrdMap<(String, ObjectKey), Arc<ApiObject>>,
    /// (node name, pod) for bound pods.
    pods_by_node: imbl::OrdMap<(String, ObjectKey), Arc<ApiObject>>,
    /// (phase, pod) for pods in any phase but Running: what waits to be
    /// placed or started, or ended. Running pods, the bulk of a settled
    /// fleet, are left out; nothing asks for them by phase.
    pods_by_phase: imbl::OrdMap<(String, ObjectKey), Arc<ApiObject>>,
    /// Nodes whose `Ready` condition is not `True`.
    nodes_not_ready: imbl::OrdMap<ObjectKey, Arc<ApiObject>>,
}

/// A pod's phase as its index files it (`None`: Running, not indexed).
fn indexed_phase(pod: &ApiObject) -> Option<PodPhase> {
    let phase = pod.typed_status::<PodStatus>().phase;
    (phase != PodPhase::Running).then_some(phase)
}

/// Whether a node's `Ready` condition is `True`.
fn node_is_ready(node: &ApiObject) -> bool {
    let status = node.typed_status::<NodeStatus>();
    condition(&status.conditions, ConditionType::Ready).is_some_and(|c| c.is_true())
}

impl Objects {
    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<ApiObject>> {
        self.by_key.get(key)
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.by_key.keys()
    }

    /// Every object with its key, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &Arc<ApiObject>)> {
        self.by_key.iter()
    }

    /// Stores `object` under `key`, replacing what was there.
    pub fn insert(&mut self, key: ObjectKey, object: Arc<ApiObject>) {
        if let Some(old) = self.by_key.insert(key.clone(), object.clone()) {
            self.unindex(&key, &old);
        }
        if key.kind == Kind::Pod {
            if let Some(owner) = object.metadata.owner_references.first() {
                self.pods_by_owner.insert((owner.uid.clone(), key.clone()), object.clone());
            }
            if let Some(node) = object.node_name() {
                self.pods_by_node.insert((node.to_owned(), key.clone()), object.clone());
            }
            if let Some(phase) = indexed_phase(&object) {
                self.pods_by_phase.insert((phase.as_str().to_owned(), key), object);
            }
        } else if key.kind == Kind::Node && !node_is_ready(&object) {
            self.nodes_not_ready.insert(key, object);
        }
    }

    /// Removes the object under `key`.
    pub fn remove(&mut self, key: &ObjectKey) {
        if let Some(old) = self.by_key.remove(key) {
            self.unindex(key, &old);
        }
    }

    fn unindex(&mut self, key: &ObjectKey, old: &ApiObject) {
        if key.kind == Kind::Node {
            self.nodes_not_ready.remove(key);
        }
        if key.kind != Kind::Pod {
            return;
        }
        if let Some(phase) = indexed_phase(old) {
            self.pods_by_phase.remove(&(phase.as_str().to_owned(), key.clone()));
        }
        if let Some(owner) = old.metadata.owner_references.first() {
            self.pods_by_owner.remove(&(owner.uid.clone(), key.clone()));
        }
        if let Some(node) = old.node_name() {
            self.pods_by_node.remove(&(node.to_owned(), key.clone()));
        }
    }

    /// The pods whose (first) owner has `uid`, in key order.
    pub fn pods_owned_by<'v>(&'v self, uid: &str) -> impl Iterator<Item = &'v Arc<ApiObject>> + 'v {
        pods_under(&self.pods_by_owner, uid)
    }

    /// The pods bound to `node`, in key order.
    pub fn pods_on<'v>(&'v self, node: &str) -> impl Iterator<Item = &'v Arc<ApiObject>> + 'v {
        pods_under(&self.pods_by_node, node)
    }

    /// The pods in `phase` (not Running: that phase is not indexed), in key
    /// order.
    pub fn pods_in_phase<'v>(&'v self, phase: PodPhase) -> impl Iterator<Item = &'v Arc<ApiObject>> + 'v {
        debug_assert!(phase != PodPhase::Running, "Running pods are not indexed by phase");
        pods_under(&self.pods_by_phase, phase.as_str())
    }

    /// The nodes whose `Ready` condition is not `True`, in key order.
    pub fn nodes_not_ready(&self) -> impl Iterator<Item = &Arc<ApiObject>> {
        self.nodes_not_ready.values()
    }

    /// Objects of a kind, in one namespace or all (`None`), in key order.
    pub fn list<'v>(&'v self, kind: Kind, namespace: Option<&'v str>) -> impl Iterator<Item = &'v Arc<ApiObject>> + 'v {
        let start = ObjectKey { kind, namespace: namespace.unwrap_or("").to_owned(), name: String::new() };
        self.by_key
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v)
    }
}

/// The pods an index files under `value` (an owner uid, a node name).
fn pods_under<'v>(
    index: &'v imbl::OrdMap<(String, ObjectKey), Arc<ApiObject>>,
    value: &str,
) -> impl Iterator<Item = &'v Arc<ApiObject>> + 'v {
    let value = value.to_owned();
    let start = (value.clone(), ObjectKey { kind: Kind::Pod, namespace: String::new(), name: String::new() });
    index.range(start..).take_while(move |((filed, _), _)| *filed == value).map(|(_, pod)| pod)
}

/// Every object as of one resourceVersion: a consistent snapshot that costs
/// nothing to take (the maps are shared with the store until it changes).
#[derive(Debug, Clone, Default)]
pub struct View {
    objects: Objects,
    /// The store's resourceVersion at the time.
    pub resource_version: u64,
}

impl View {
    /// A view of `objects` at `resource_version`.
    pub fn new(objects: Objects, resource_version: u64) -> Self {
        View { objects, resource_version }
    }

    /// Objects of a kind, in one namespace or all (`None`), in key order.
    pub fn list<'v>(&'v self, kind: Kind, namespace: Option<&'v str>) -> impl Iterator<Item = &'v Arc<ApiObject>> + 'v {
        self.objects.list(kind, namespace)
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<ApiObject>> {
        self.objects.get(key)
    }

    /// The pods whose (first) owner has `uid`.
    pub fn pods_owned_by<'v>(&'v self, uid: &str) -> impl Iterator<Item = &'v Arc<ApiObject>> + 'v {
        self.objects.pods_owned_by(uid)
    }

    /// The pods bound to `node`.
    pub fn pods_on<'v>(&'v self, node: &str) -> impl Iterator<Item = &'v Arc<ApiObject>> + 'v {
        self.objects.pods_on(node)
    }

    /// See [`Objects::pods_in_phase`].
    pub fn pods_in_phase(&self, phase: PodPhase) -> impl Iterator<Item = &Arc<ApiObject>> {
        self.objects.pods_in_phase(phase)
    }

    /// See [`Objects::nodes_not_ready`].
    pub fn nodes_not_ready(&self) -> impl Iterator<Item = &Arc<ApiObject>> {
        self.objects.nodes_not_ready()
    }
}

/// Changes after a resourceVersion: first the ones already committed, then
/// live ones.
pub struct Subscription {
    /// Committed changes after the requested version, in order.
    pub backlog: Vec<Arc<WatchEvent>>,
    /// Live changes. A lagging receiver means the watcher must re-list.
    pub live: tokio::sync::broadcast::Receiver<Arc<WatchEvent>>,
    /// The version of the last event in `backlog` (or the requested one): live
    /// events at or below it are duplicates.
    pub after: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Optimistic concurrency: the object changed since it was read.
    #[error(
        "conflict: {key} was modified (resourceVersion {current}, the request had {requested}); get it again and retry"
    )]
    Conflict {
        /// The object.
        key: ObjectKey,
        /// What is stored.
        current: u64,
        /// What the writer read.
        requested: u64,
    },
    /// No such object.
    #[error("{0} not found")]
    NotFound(ObjectKey),
    /// Create of an existing object.
    #[error("{0} already exists")]
    AlreadyExists(ObjectKey),
    /// A watch from a version the store no longer remembers: list again.
    #[error("resourceVersion {requested} is too old (the oldest change kept is {oldest}); list again")]
    Gone {
        /// Requested.
        requested: u64,
        /// Oldest kept.
        oldest: u64,
    },
    /// The object is not acceptable (e.g. no name).
    #[error("invalid object: {0}")]
    Invalid(String),
    /// The database failed (disk full, I/O error, corruption).
    #[error("store: {0}")]
    Backend(String),
    /// The data volume is full.
    #[error("store: {0}")]
    NoSpace(String),
}

/// The store the API and reconcilers use.
pub trait Store: Send + Sync + 'static {
    /// One object.
    fn get(&self, key: &ObjectKey) -> Option<ApiObject>;
    /// Objects of a kind, in one namespace or all (`None`).
    fn list(&self, kind: Kind, namespace: Option<&str>) -> Listing {
        let view = self.view();
        Listing { items: view.list(kind, namespace).cloned().collect(), resource_version: view.resource_version }
    }
    /// Every object, as of one resourceVersion.
    fn view(&self) -> View;
    /// Applies every op or none; durable on disk when it returns `Ok`.
    fn commit(&self, ops: Vec<Op>) -> Result<Vec<Outcome>, StoreError>;
    /// What [`commit`](Store::commit) would answer now, with the same
    /// checks, writing nothing (a server-side dry run).
    fn dry_run(&self, ops: Vec<Op>) -> Result<Vec<Outcome>, StoreError>;
    /// Changes after `resource_version` (0: only live ones).
    fn subscribe(&self, resource_version: u64) -> Result<Subscription, StoreError>;
    /// The latest resourceVersion.
    fn resource_version(&self) -> u64;
    /// Object count per kind (for metrics).
    fn counts(&self) -> Vec<(Kind, usize)>;
    /// Why writes fail now (the last commit's disk error), if they do.
    fn write_failure(&self) -> Option<String> {
        None
    }
    /// Commits that failed on the disk since start.
    fn write_failures(&self) -> u64 {
        0
    }
    /// Why reads may be stale now (a replicated store out of reach), if so.
    fn read_failure(&self) -> Option<String> {
        None
    }
}

/// Most writes in one commit of [`commit_in_chunks`]: a pass that binds a
/// whole fleet's replicas must not hold the store's writer (and every
/// node's status report behind it) for seconds.
pub const CHUNK: usize = 2048;

/// Commits a pass's independent writes in chunks of [`CHUNK`]. A refused
/// chunk (another writer got there first, or one op is invalid) is written
/// one op at a time; what still fails is left for the next pass, which
/// sees the store as it is then.
pub fn commit_in_chunks(store: &dyn Store, ops: Vec<Op>, writer: &str) {
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        let chunk: Vec<Op> = ops.by_ref().take(CHUNK).collect();
        if let Err(e) = store.commit(chunk.clone()) {
            tracing::debug!(writer, error = %e, "batch refused; writing one by one");
            for op in chunk {
                if let Err(e) = store.commit(vec![op]) {
                    tracing::debug!(writer, error = %e, "write skipped; the next pass retries");
                }
            }
        }
    }
}
