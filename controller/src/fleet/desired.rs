//! Desired-state publication: level-triggered, one retained QoS 1 document
//! per node, signed, republished only when its content changes (and after
//! every reconnect to the broker). A node of the Linux profile gets a pod
//! document on `pods` and each ConfigMap or Secret its pods mount as a
//! retained object of its own on `config/{digest}` (cleared when no longer
//! named); a node of the compact profile gets the compact document, with
//! its config inline, on `desired`.
//!
//! The generation is the store's resourceVersion when the document was
//! built: it increases across controller restarts without any state of its
//! own, and a node never applies an older one (fencing).
//!
//! Transport only: the publisher reads the store and writes nothing to it.
//! A replica its node's document cannot hold is left out
//! ([`crate::replica_spec::document`]); the scheduling controller makes the
//! same projection and says why on the replica.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firmware_proto::MessageKind;
use rumqttc::{AsyncClient, QoS};

use super::credentials::{ControllerKey, Enrolment};
use super::{FleetConfig, Topics};
use crate::controllers::Snapshot;
use crate::manifest::Kind;
use crate::object::{ApiObject, ObjectKey};
use crate::replica_spec::{self, References, Sealing};
use crate::status::{ClaimStatus, NodeStatus, PodStatus};
use crate::store::{EventType, Store, WatchEvent};

pub use crate::controllers::image_pinning::{IMAGE_ARCHS_ANNOTATION, IMAGE_DIGEST_ANNOTATION};

/// What was last published for one node.
#[derive(Debug, Clone)]
pub struct Published {
    /// Its generation.
    pub generation: u64,
    /// Hash of the content (everything but the generation).
    fingerprint: u64,
    /// The signed frame.
    frame: Vec<u8>,
    /// Replica ids in document order, with the pod each stands for: status
    /// messages name replicas by slot or id.
    pub replicas: Vec<(String, ObjectKey)>,
    /// Each replica's image digests (pull events name images, not replicas).
    pub images: Vec<Vec<[u8; 32]>>,
    /// Each replica's containers in the order heartbeats number them (init
    /// containers first).
    pub containers: Vec<Vec<ContainerShape>>,
    /// The config objects published for the node, by digest.
    config: Vec<[u8; 32]>,
    /// Replicas a rollout retired from this node (not in the document): the
    /// inbox deletes each once the node stops reporting it.
    pub retired: Vec<(String, ObjectKey)>,
    /// When this generation was first published.
    pub published_at: std::time::Instant,
    /// Its topic's kind (by the node's profile).
    kind: MessageKind,
}

/// One container of a published replica: what its heartbeat entry means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerShape {
    /// Its name.
    pub name: String,
    /// An init container (a sidecar is one too).
    pub init: bool,
    /// A sidecar.
    pub sidecar: bool,
}

/// The documents last published, shared with the inbox; and the nodes the
/// inbox found running an older document than published, for the
/// publisher to publish again.
#[derive(Debug, Clone, Default)]
pub struct PublishedDocuments {
    documents: Arc<Mutex<HashMap<String, Arc<Published>>>>,
    resend: Arc<Resend>,
}

#[derive(Debug, Default)]
struct Resend {
    nodes: Mutex<HashSet<String>>,
    wake: tokio::sync::Notify,
}

/// The service tables last published: content fingerprint and frame.
#[derive(Debug, Default)]
struct PublishedTables(Mutex<HashMap<String, (u64, Vec<u8>)>>);

impl PublishedDocuments {
    /// The document last published for `node`.
    pub fn get(&self, node: &str) -> Option<Arc<Published>> {
        self.lock().get(node).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Published>>> {
        self.documents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the publisher to publish `node`'s document (and its config
    /// objects) again, unchanged.
    pub fn resend(&self, node: &str) {
        self.resend.nodes.lock().unwrap_or_else(|p| p.into_inner()).insert(node.to_owned());
        self.resend.wake.notify_one();
    }

    /// The nodes asked for by [`PublishedDocuments::resend`] since last taken.
    pub fn take_resends(&self) -> HashSet<String> {
        std::mem::take(&mut *self.resend.nodes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A document as if published `at` (tests of the inbox).
    #[cfg(test)]
    pub(crate) fn insert_for_test(&self, node: &str, generation: u64, at: std::time::Instant) {
        let published = Published {
            generation,
            fingerprint: 0,
            frame: vec![generation as u8],
            replicas: Vec::new(),
            images: Vec::new(),
            containers: Vec::new(),
            config: Vec::new(),
            retired: Vec::new(),
            published_at: at,
            kind: MessageKind::Pods,
        };
        self.lock().insert(node.to_owned(), Arc::new(published));
    }

    /// The frames of `nodes`' documents as last published, config objects
    /// first (`blobs`: the signed config frames by digest).
    fn frames_of(&self, nodes: &HashSet<String>, blobs: &BlobFrames) -> Frames {
        let documents = self.lock();
        let config = blobs.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut frames = Frames::new();
        for (node, document) in nodes.iter().filter_map(|n| Some((n, documents.get(n)?))) {
            for digest in &document.config {
                if let Some(frame) = config.get(digest) {
                    frames.push((node.clone(), MessageKind::Config, Some(*digest), (**frame).clone()));
                }
            }
            frames.push((node.clone(), document.kind, None, document.frame.clone()));
        }
        frames
    }
}

/// Which documents a pass must build again.
#[derive(Debug, Default)]
struct Dirty {
    /// Every node's (a ConfigMap or Secret changed, the watch lagged, the
    /// periodic level-triggered pass).
    all: bool,
    /// These nodes'.
    nodes: HashSet<String>,
    /// The service tables (a Service, or a pod's readiness or labels).
    services: bool,
}

impl Dirty {
    fn everything() -> Self {
        Dirty { all: true, nodes: HashSet::new(), services: true }
    }

    fn is_empty(&self) -> bool {
        !self.all && self.nodes.is_empty() && !self.services
    }

    fn wants(&self, node: &str) -> bool {
        self.all || self.nodes.contains(node)
    }
}

/// What of a pod its node's document and the service tables depend on,
/// so that the many status writes that change neither (usage, restarts,
/// messages) cost no pass.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodInputs {
    node: Option<String>,
    /// Spec and metadata (a spec change bumps the generation).
    generation: u64,
    uid: String,
    digest: Option<String>,
    archs: Option<String>,
    labels: u64,
    /// In the document at all (not finished, not retired).
    listed: bool,
    /// An endpoint candidate.
    ready: bool,
}

impl PodInputs {
    fn of(pod: &ApiObject) -> Self {
        let status = pod.typed_status::<PodStatus>();
        let labels = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            pod.metadata.labels.hash(&mut hasher);
            hasher.finish()
        };
        PodInputs {
            node: pod.node_name().map(str::to_owned),
            generation: pod.metadata.generation,
            uid: pod.metadata.uid.clone(),
            digest: pod.metadata.annotations.get(IMAGE_DIGEST_ANNOTATION).cloned(),
            archs: pod.metadata.annotations.get(IMAGE_ARCHS_ANNOTATION).cloned(),
            labels,
            listed: !status.is_finished() && !pod.is_retired(),
            ready: status.is_ready(),
        }
    }
}

/// The pods' document inputs as last seen, and what changed since a pass.
#[derive(Default)]
struct Changes {
    pods: HashMap<ObjectKey, PodInputs>,
    dirty: Dirty,
}

impl Changes {
    fn note(&mut self, event: &WatchEvent) {
        let object = &event.object;
        match object.kind {
            Kind::Pod => {
                let key = object.key();
                let now = (event.event_type != EventType::Deleted).then(|| PodInputs::of(object));
                let before = match &now {
                    Some(inputs) => self.pods.insert(key, inputs.clone()),
                    None => self.pods.remove(&key),
                };
                if before == now {
                    return;
                }
                for node in before.iter().chain(now.iter()).filter_map(|i| i.node.as_ref()) {
                    self.dirty.nodes.insert(node.clone());
                }
                let endpoint =
                    |i: &Option<PodInputs>| i.as_ref().map(|i| (i.ready, i.labels, i.listed, i.node.clone()));
                self.dirty.services |= endpoint(&before) != endpoint(&now);
            }
            Kind::Node => {
                self.dirty.nodes.insert(object.metadata.name.clone());
                self.dirty.services = true;
            }
            Kind::Service => self.dirty.services = true,
            // Claims change rarely (bound once, deleted once), and the node
            // a deleted one was on is known only from what it was.
            Kind::ConfigMap | Kind::Secret | Kind::PersistentVolumeClaim => self.dirty.all = true,
            _ => {}
        }
    }
}

/// How often every document is built again whatever the watch said (level
/// triggering: nothing depends on having seen one event).
const FULL_PASS_EVERY: Duration = Duration::from_secs(60);

/// What documents are signed and sealed with.
pub struct Keys {
    /// Signs every frame.
    pub controller: Arc<ControllerKey>,
    /// Each node's credentials, its seal key derived from them.
    pub enrolment: Enrolment,
}

/// How documents go out: the MQTT client, and what counts them.
pub struct Outbox {
    /// The controller's connection.
    pub client: AsyncClient,
    /// Messages sent, by kind.
    pub counters: super::counters::FleetCounters,
}

/// Runs the publisher until the runtime stops.
pub async fn run(
    store: Arc<dyn Store>,
    config: FleetConfig,
    keys: Keys,
    topics: Topics,
    outbox: Outbox,
    published: PublishedDocuments,
    republish: Arc<tokio::sync::Notify>,
) {
    let Outbox { client, counters } = outbox;
    let Keys { controller: key, enrolment } = keys;
    let mut live = match store.subscribe(0) {
        Ok(subscription) => subscription.live,
        Err(e) => {
            tracing::error!(error = %e, "desired-state publisher cannot watch the store");
            return;
        }
    };
    let default_registry: Arc<str> = config.default_registry.clone().into();
    let tables = Arc::new(PublishedTables::default());
    let blobs = Arc::new(BlobFrames::default());
    let mut changes = Changes { pods: HashMap::new(), dirty: Dirty::everything() };
    let mut publish_all = false;
    let mut last_full = tokio::time::Instant::now();
    loop {
        let dirty = std::mem::take(&mut changes.dirty);
        if !dirty.is_empty() || publish_all {
            let dirty = if publish_all { Dirty::everything() } else { dirty };
            if dirty.all {
                last_full = tokio::time::Instant::now();
            }
            let pass = {
                let (store, key, published, default_registry) =
                    (store.clone(), key.clone(), published.clone(), default_registry.clone());
                let enrolment = enrolment.clone();
                let (tables, blobs) = (tables.clone(), blobs.clone());
                let all = publish_all;
                tokio::task::spawn_blocking(move || {
                    let sources = Sources {
                        key: &key,
                        enrolment: &enrolment,
                        published: &published,
                        tables: &tables,
                        blobs: &blobs,
                    };
                    build_all(store.as_ref(), &sources, &default_registry, &dirty, all)
                })
            };
            match pass.await {
                Ok(frames) => send(&client, &topics, &counters, frames).await,
                Err(e) => {
                    tracing::error!(error = %e, "desired-state pass panicked");
                    changes.dirty = Dirty::everything();
                }
            }
        }
        publish_all = false;
        let wait = FULL_PASS_EVERY.saturating_sub(last_full.elapsed());
        tokio::select! {
            _ = republish.notified() => publish_all = true,
            _ = published.resend.wake.notified() => {
                let nodes = published.take_resends();
                send(&client, &topics, &counters, published.frames_of(&nodes, &blobs)).await;
                continue;
            }
            event = live.recv() => match event {
                Ok(event) => changes.note(&event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => changes.dirty = Dirty::everything(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(wait) => changes.dirty = Dirty::everything(),
        }
        // Let a burst of changes settle into one pass.
        tokio::time::sleep(Duration::from_millis(10)).await;
        loop {
            match live.try_recv() {
                Ok(event) => changes.note(&event),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => changes.dirty = Dirty::everything(),
                Err(_) => break,
            }
        }
    }
}

/// Publishes `frames`, retained. `publish` waits for room in the client's
/// queue rather than dropping a document.
async fn send(client: &AsyncClient, topics: &Topics, counters: &super::counters::FleetCounters, frames: Frames) {
    for (node, kind, digest, frame) in frames {
        let topic = match digest {
            Some(digest) => topics.config(&node, &digest),
            None => topics.node(&node, kind),
        };
        match client.publish(topic, QoS::AtLeastOnce, true, frame).await {
            Ok(()) => counters.sent(kind),
            Err(e) => tracing::warn!(node, error = %e, "cannot queue a desired document; retried on reconnect"),
        }
    }
}

/// `(node, kind, config digest, frame)` to publish on the node's topic for
/// that kind (a config object's: `config/{digest}`; an empty frame clears
/// it).
type Frames = Vec<(String, MessageKind, Option<[u8; 32]>, Vec<u8>)>;

/// Signed config object frames by digest: the same bytes for every node
/// (a config object names no node), signed once.
#[derive(Debug, Default)]
struct BlobFrames(Mutex<HashMap<[u8; 32], Arc<Vec<u8>>>>);

impl BlobFrames {
    fn frame(&self, entry: &replica_spec::ConfigEntry, key: &ControllerKey) -> Option<Arc<Vec<u8>>> {
        let mut frames = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(frame) = frames.get(&entry.digest) {
            return Some(frame.clone());
        }
        match firmware_proto::encode_signed_to_vec(&entry.blob, |bytes| key.sign(bytes)) {
            Ok(frame) => {
                let frame = Arc::new(frame);
                frames.insert(entry.digest, frame.clone());
                Some(frame)
            }
            Err(e) => {
                tracing::error!(name = %entry.blob.name, error = %e, "cannot encode a config object");
                None
            }
        }
    }

    /// Forgets frames of objects no published document names.
    fn retain(&self, named: &HashSet<[u8; 32]>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|digest, _| named.contains(digest));
    }
}

/// What a pass signs with and remembers.
struct Sources<'a> {
    key: &'a ControllerKey,
    /// Each node's seal key comes from its credentials.
    enrolment: &'a Enrolment,
    published: &'a PublishedDocuments,
    tables: &'a PublishedTables,
    blobs: &'a BlobFrames,
}

/// Builds the documents of the `dirty` nodes; returns the frames to
/// publish: changed ones, or all of them when `all`. A replica is listed
/// once its image is pinned (and only where that image can run: the
/// scheduler says why elsewhere).
fn build_all(store: &dyn Store, sources: &Sources<'_>, default_registry: &str, dirty: &Dirty, all: bool) -> Frames {
    let Sources { key, enrolment, published, tables, blobs } = *sources;
    // The store's view, not a snapshot of every kind: a pass after a few
    // replicas moved reads the nodes they moved to and those nodes' replicas.
    let view = store.view();
    let generation = view.resource_version;
    let nodes: Vec<&Arc<ApiObject>> = if dirty.all {
        view.list(Kind::Node, None).collect()
    } else {
        dirty.nodes.iter().filter_map(|name| view.get(&ObjectKey::new(Kind::Node, "", name))).collect()
    };
    let mut by_node: BTreeMap<String, Vec<&ApiObject>> = BTreeMap::new();
    let mut retired: BTreeMap<String, Vec<(String, ObjectKey)>> = BTreeMap::new();
    for node in &nodes {
        by_node.entry(node.metadata.name.clone()).or_default();
    }
    let node_arch: HashMap<&str, String> = nodes
        .iter()
        .map(|n| (n.metadata.name.as_str(), n.typed_status::<NodeStatus>().node_info.architecture.clone()))
        .collect();
    let node_object: HashMap<&str, &ApiObject> = nodes.iter().map(|n| (n.metadata.name.as_str(), &***n)).collect();
    // Only bound pods of the nodes being built are read: from the store's
    // index by node, unless every document is built.
    let pods: Vec<&ApiObject> = if dirty.all {
        view.list(Kind::Pod, None).map(|p| &**p).collect()
    } else {
        dirty.nodes.iter().flat_map(|node| view.pods_on(node)).map(|p| &**p).collect()
    };
    for pod in pods {
        let Some(node) = pod.node_name() else { continue };
        if !dirty.wants(node) {
            continue;
        }
        if pod.is_retired() && !pod.typed_status::<PodStatus>().is_finished() {
            retired.entry(node.to_owned()).or_default().push((replica_spec::replica_id(pod), pod.key()));
            continue;
        }
        let arch = node_arch.get(node).map_or("", String::as_str);
        if replica_spec::listed(pod, arch) {
            by_node.entry(node.to_owned()).or_default().push(pod);
        }
    }
    let config_maps: Vec<Arc<ApiObject>> = view.list(Kind::ConfigMap, None).cloned().collect();
    let secrets: Vec<Arc<ApiObject>> = view.list(Kind::Secret, None).cloned().collect();
    let claims: Vec<Arc<ApiObject>> = view.list(Kind::PersistentVolumeClaim, None).cloned().collect();
    // Each node keeps the claims bound to it, mounted by a pod or not: a
    // claim a document leaves out is deleted on the device.
    let mut claims_on: HashMap<&str, Vec<firmware_proto::pod::Claim>> = HashMap::new();
    for claim in &claims {
        let Some(node) = claim.typed_status::<ClaimStatus>().node_name.clone() else { continue };
        let Some(node) = node_object.get_key_value(node.as_str()).map(|(n, _)| *n) else { continue };
        match replica_spec::claim_of(claim) {
            Ok(listed) => claims_on.entry(node).or_default().push(listed),
            Err(e) => tracing::warn!(claim = %claim.metadata.name, error = e, "claim left out of its node's document"),
        }
    }
    let mut out = Vec::new();
    let mut documents = published.lock();
    for (node, pods) in by_node {
        let Ok(node_id) = firmware_proto::NodeId::new(&node) else {
            tracing::warn!(node, "node name is not a valid node id; no document");
            continue;
        };
        let object = node_object.get(node.as_str()).copied();
        let profile =
            object.map_or(firmware_proto::Profile::Linux, |n| n.typed_status::<NodeStatus>().node_info.profile());
        // A node not enrolled (any more) gets no Secret at all.
        let sealing = match enrolment.seal_key(&node) {
            Some(seal_key) => Sealing::For(seal_key),
            None => Sealing::Unsealable,
        };
        let refs = References { config_maps: &config_maps, secrets: &secrets, node: object, claims: &claims, sealing };
        // What is left out is said on the replica by the scheduling
        // controller, which makes the same projection.
        let document = replica_spec::document(pods, &refs, default_registry, profile);
        for (pod, why) in &document.left_out {
            tracing::debug!(node, pod = %pod.metadata.name, reason = why.reason, message = why.message, "replica left out of its node's document");
        }
        let keys: Vec<(String, ObjectKey)> =
            document.pods.iter().zip(&document.objects).map(|(p, o)| (p.id.as_str().to_owned(), o.key())).collect();
        let images: Vec<Vec<[u8; 32]>> =
            document.pods.iter().map(|p| p.all_containers().map(|c| c.image.digest.0).collect()).collect();
        let config: Vec<[u8; 32]> = document.table.objects.iter().map(|e| e.digest).collect();
        let mut node_claims = document.table.claims.clone();
        for bound in claims_on.get(node.as_str()).into_iter().flatten() {
            if !node_claims.iter().any(|c| c.id == bound.id) {
                node_claims.push(bound.clone());
            }
        }
        let containers: Vec<Vec<ContainerShape>> = document
            .pods
            .iter()
            .map(|p| {
                let init = p.init_containers.iter().map(|c| (c, true));
                init.chain(p.containers.iter().map(|c| (c, false)))
                    .map(|(c, init)| ContainerShape { name: c.name.to_string(), init, sidecar: c.sidecar })
                    .collect()
            })
            .collect();
        let fingerprint = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            profile.hash(&mut hasher);
            document.pods.hash(&mut hasher);
            config.hash(&mut hasher);
            node_claims.hash(&mut hasher);
            hasher.finish()
        };
        let retired = retired.remove(&node).unwrap_or_default();
        let kind = match profile {
            firmware_proto::Profile::Linux => MessageKind::Pods,
            firmware_proto::Profile::Compact => MessageKind::Desired,
        };
        let objects = |previous: &[[u8; 32]]| -> Frames {
            if profile == firmware_proto::Profile::Compact {
                return Vec::new();
            }
            let mut frames: Frames = document
                .table
                .objects
                .iter()
                .filter(|e| all || !previous.contains(&e.digest))
                .filter_map(|e| {
                    Some((node.clone(), MessageKind::Config, Some(e.digest), (*blobs.frame(e, key)?).clone()))
                })
                .collect();
            // Objects no longer named: their retained messages cleared.
            frames.extend(
                previous
                    .iter()
                    .filter(|d| !config.contains(d))
                    .map(|d| (node.clone(), MessageKind::Config, Some(*d), Vec::new())),
            );
            frames
        };
        if let Some(previous) = documents.get_mut(&node)
            && previous.fingerprint == fingerprint
        {
            if previous.retired != retired {
                Arc::make_mut(previous).retired = retired;
            }
            if all {
                out.extend(objects(&[]));
                out.push((node.clone(), kind, None, previous.frame.clone()));
            }
            continue;
        }
        let encoded = match profile {
            firmware_proto::Profile::Linux => {
                let pods = firmware_proto::heap::List::try_from(document.pods.clone()).map_err(|e| e.to_string());
                let claims = firmware_proto::heap::List::try_from(node_claims).map_err(|e| e.to_string());
                pods.and_then(|pods| Ok((pods, claims?))).and_then(|(pods, claims)| {
                    let config = document.table.refs(&sealing);
                    let doc = firmware_proto::pod::PodDocument { node_id, generation, pods, config, claims };
                    firmware_proto::encode_signed_to_vec(&doc, |bytes| key.sign(bytes)).map_err(|e| e.to_string())
                })
            }
            firmware_proto::Profile::Compact => replica_spec::compact::document(&document.pods, &document.table)
                .and_then(|(replicas, config)| {
                    let doc = firmware_proto::DesiredState {
                        node_id: &node_id,
                        generation,
                        replicas: &replicas,
                        config: &config,
                    };
                    firmware_proto::encode_signed_to_vec(&doc, |bytes| key.sign(bytes)).map_err(|e| e.to_string())
                }),
        };
        match encoded {
            Ok(frame) => {
                tracing::info!(
                    node,
                    generation,
                    profile = profile.name(),
                    replicas = document.pods.len(),
                    config_objects = config.len(),
                    bytes = frame.len(),
                    "desired state changed"
                );
                let previous = documents.get(&node).map(|p| p.config.clone()).unwrap_or_default();
                out.extend(objects(&previous));
                out.push((node.clone(), kind, None, frame.clone()));
                documents.insert(
                    node,
                    Arc::new(Published {
                        generation,
                        fingerprint,
                        frame,
                        replicas: keys,
                        images,
                        containers,
                        config,
                        retired,
                        published_at: std::time::Instant::now(),
                        kind,
                    }),
                );
            }
            Err(e) => tracing::error!(node, error = %e, "cannot encode the desired document"),
        }
    }
    if dirty.all {
        let named: HashSet<[u8; 32]> = documents.values().flat_map(|d| d.config.iter().copied()).collect();
        blobs.retain(&named);
    }
    drop(documents);
    // With no Service and no table published, there is nothing to build:
    // the scan of every pod is skipped.
    let any_tables = !tables.0.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
    if (dirty.services || dirty.all) && (view.list(Kind::Service, None).next().is_some() || any_tables) {
        // Services read endpoints across the fleet: a snapshot of their own,
        // numbered by the version it shows.
        let snapshot = Snapshot::read(store);
        out.extend(service_tables(&snapshot, snapshot.resource_version, key, tables, all));
    }
    out
}

/// The service tables to publish: changed ones, or all when `all`.
fn service_tables(
    snapshot: &Snapshot,
    generation: u64,
    key: &ControllerKey,
    tables: &PublishedTables,
    all: bool,
) -> Frames {
    let mut out = Vec::new();
    let mut published = tables.0.lock().unwrap_or_else(|p| p.into_inner());
    for (node, ports) in super::services::tables(snapshot) {
        let Ok(node_id) = firmware_proto::NodeId::new(&node) else { continue };
        let fingerprint = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            ports.hash(&mut hasher);
            hasher.finish()
        };
        if let Some((previous, frame)) = published.get(&node)
            && *previous == fingerprint
        {
            if all {
                out.push((node, MessageKind::Services, None, frame.clone()));
            }
            continue;
        }
        let table = super::services::table_for(&node_id, generation, &ports);
        match firmware_proto::encode_signed_to_vec(&table, |bytes| key.sign(bytes)) {
            Ok(frame) => {
                tracing::debug!(node, generation, services = ports.len(), "service table changed");
                published.insert(node.clone(), (fingerprint, frame.clone()));
                out.push((node, MessageKind::Services, None, frame));
            }
            Err(e) => tracing::error!(node, error = %e, "cannot encode the service table"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resent_document_is_the_frame_last_published_on_its_kind() {
        let published = PublishedDocuments::default();
        published.insert_for_test("edge-1", 7, std::time::Instant::now());
        published.resend("edge-1");
        published.resend("gone");
        let nodes = published.take_resends();
        assert_eq!(nodes.len(), 2);
        let frames = published.frames_of(&nodes, &BlobFrames::default());
        // Only documents that exist; the same bytes, on the same topic kind.
        assert_eq!(frames, vec![("edge-1".to_owned(), MessageKind::Pods, None, vec![7])]);
        assert!(published.take_resends().is_empty(), "taken once");
    }
}
