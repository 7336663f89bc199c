//! Desired-state publication: level-triggered, one retained QoS 1 document
//! per node, signed, republished only when its content changes (and after
//! every reconnect to the broker).
//!
//! The generation is the store's resourceVersion when the document was
//! built: it increases across controller restarts without any state of its
//! own, and a node never applies an older one (fencing).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};

use super::credentials::ControllerKey;
use super::replica_spec::{self, ConfigTable, References};
use super::{FleetConfig, Topics};
use crate::manifest::Kind;
use crate::manifest::types::PodSpec;
use crate::object::{ApiObject, ObjectKey};
use crate::reconcile::Snapshot;
use crate::status::{NodeStatus, PodStatus};
use crate::store::{EventType, Op, Store, WatchEvent};

/// Annotation holding the image digest a replica was pinned to.
pub const IMAGE_DIGEST_ANNOTATION: &str = "flotilla.io/image-digest";
/// Annotation holding the architectures that image exists for
/// (`amd64,arm64`); the scheduler places the replica only on those.
pub const IMAGE_ARCHS_ANNOTATION: &str = "flotilla.io/image-archs";

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
    /// Each replica's image digest (pull events name images, not replicas).
    pub images: Vec<[u8; 32]>,
    /// Replicas a rollout retired from this node (not in the document): the
    /// inbox deletes each once the node stops reporting it.
    pub retired: Vec<(String, ObjectKey)>,
}

/// The documents last published, shared with the inbox.
#[derive(Debug, Clone, Default)]
pub struct PublishedDocuments(Arc<Mutex<HashMap<String, Arc<Published>>>>);

/// The service tables last published: content fingerprint and frame.
#[derive(Debug, Default)]
struct PublishedTables(Mutex<HashMap<String, (u64, Vec<u8>)>>);

impl PublishedDocuments {
    /// The document last published for `node`.
    pub fn get(&self, node: &str) -> Option<Arc<Published>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(node).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Published>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
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
    /// Unbound pods wait for their image to be pinned.
    pins: bool,
}

impl Dirty {
    fn everything() -> Self {
        Dirty { all: true, nodes: HashSet::new(), services: true, pins: true }
    }

    fn is_empty(&self) -> bool {
        !self.all && self.nodes.is_empty() && !self.services && !self.pins
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
            listed: !status.is_finished() && status.retired_at.is_empty(),
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
                for inputs in before.iter().chain(now.iter()) {
                    match &inputs.node {
                        Some(node) => _ = self.dirty.nodes.insert(node.clone()),
                        None => self.dirty.pins |= inputs.digest.is_none(),
                    }
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
            Kind::ConfigMap | Kind::Secret => self.dirty.all = true,
            _ => {}
        }
    }
}

/// How often every document is built again whatever the watch said (level
/// triggering: nothing depends on having seen one event). Pins that
/// failed are retried every few seconds.
const FULL_PASS_EVERY: Duration = Duration::from_secs(60);
const PIN_RETRY_EVERY: Duration = Duration::from_secs(5);

/// Runs the publisher until the runtime stops.
pub async fn run(
    store: Arc<dyn Store>,
    config: FleetConfig,
    key: Arc<ControllerKey>,
    topics: Topics,
    client: AsyncClient,
    published: PublishedDocuments,
    republish: Arc<tokio::sync::Notify>,
) {
    let mut live = match store.subscribe(0) {
        Ok(subscription) => subscription.live,
        Err(e) => {
            tracing::error!(error = %e, "desired-state publisher cannot watch the store");
            return;
        }
    };
    let resolver = Arc::new(Resolver::new(&config.default_registry));
    let tables = Arc::new(PublishedTables::default());
    let mut changes = Changes { pods: HashMap::new(), dirty: Dirty::everything() };
    let mut publish_all = false;
    let mut last_full = tokio::time::Instant::now();
    let mut unpinned = false;
    loop {
        let dirty = std::mem::take(&mut changes.dirty);
        if !dirty.is_empty() || publish_all {
            let dirty = if publish_all { Dirty::everything() } else { dirty };
            if dirty.all {
                last_full = tokio::time::Instant::now();
            }
            let pass = {
                let (store, key, published, resolver) =
                    (store.clone(), key.clone(), published.clone(), resolver.clone());
                let tables = tables.clone();
                let all = publish_all;
                tokio::task::spawn_blocking(move || {
                    build_all(store.as_ref(), &key, &published, &tables, &resolver, &dirty, all)
                })
            };
            match pass.await {
                Ok(pass) => {
                    unpinned = pass.unpinned;
                    for (node, leaf, frame) in pass.frames {
                        // `publish` waits for room in the client's queue rather
                        // than dropping a document.
                        if let Err(e) = client.publish(topics.node(&node, leaf), QoS::AtLeastOnce, true, frame).await {
                            tracing::warn!(node, error = %e, "cannot queue a desired document; retried on reconnect");
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "desired-state pass panicked");
                    changes.dirty = Dirty::everything();
                }
            }
        }
        publish_all = false;
        let until_full = FULL_PASS_EVERY.saturating_sub(last_full.elapsed());
        let wait = if unpinned { until_full.min(PIN_RETRY_EVERY) } else { until_full };
        tokio::select! {
            _ = republish.notified() => publish_all = true,
            event = live.recv() => match event {
                Ok(event) => changes.note(&event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => changes.dirty = Dirty::everything(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(wait) => {
                if last_full.elapsed() >= FULL_PASS_EVERY {
                    changes.dirty = Dirty::everything();
                } else {
                    changes.dirty.pins = true;
                }
            }
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

/// What one pass made.
struct PassOutput {
    /// `(node, topic leaf, frame)` to publish.
    frames: Vec<(String, &'static str, Vec<u8>)>,
    /// Some unbound pod's image could not be pinned yet.
    unpinned: bool,
}

/// Builds the documents of the `dirty` nodes; returns the frames to
/// publish: changed ones, or all of them when `all`.
fn build_all(
    store: &dyn Store,
    key: &ControllerKey,
    published: &PublishedDocuments,
    tables: &PublishedTables,
    resolver: &Resolver,
    dirty: &Dirty,
    all: bool,
) -> PassOutput {
    let snapshot = Snapshot::read(store);
    let generation = snapshot.resource_version;
    let mut by_node: BTreeMap<String, Vec<&ApiObject>> = BTreeMap::new();
    let mut retired: BTreeMap<String, Vec<(String, ObjectKey)>> = BTreeMap::new();
    for node in snapshot.nodes.iter().filter(|n| dirty.wants(&n.metadata.name)) {
        by_node.entry(node.metadata.name.clone()).or_default();
    }
    let mut writes = Vec::new();
    let mut unpinned = false;
    let node_arch: HashMap<&str, String> = snapshot
        .nodes
        .iter()
        .filter(|n| dirty.wants(&n.metadata.name))
        .map(|n| (n.metadata.name.as_str(), n.status::<NodeStatus>().node_info.architecture))
        .collect();
    for pod in &snapshot.pods {
        // Only pods of nodes being built, and unbound ones to pin, are read.
        match pod.node_name() {
            Some(node) if !dirty.wants(node) => continue,
            None if !dirty.pins || pod.metadata.annotations.contains_key(IMAGE_DIGEST_ANNOTATION) => continue,
            _ => {}
        }
        let status = pod.typed_status::<PodStatus>();
        if status.is_finished() {
            continue;
        }
        if !status.retired_at.is_empty() {
            if let Some(node) = pod.node_name() {
                retired.entry(node.to_owned()).or_default().push((replica_spec::replica_id(pod), pod.key()));
            }
            continue;
        }
        match pod.node_name() {
            Some(node) => {
                let archs = pod.metadata.annotations.get(IMAGE_ARCHS_ANNOTATION);
                let arch = node_arch.get(node).map(String::as_str).unwrap_or("");
                if let Some(archs) = archs
                    && !archs.is_empty()
                    && !arch.is_empty()
                    && !archs.split(',').any(|a| a == arch)
                {
                    unbind_for_arch(pod, node, arch, archs, &mut writes);
                    continue;
                }
                by_node.entry(node.to_owned()).or_default().push(pod);
            }
            // Pin before the scheduler places it, so it knows the archs.
            // A failure here stays quiet: the scheduler's reason is the one
            // to show, and pinning is tried again once it is bound.
            None if !pod.metadata.annotations.contains_key(IMAGE_DIGEST_ANNOTATION) => {
                if let Err(reason) = pin(pod, resolver, &mut writes) {
                    unpinned = true;
                    tracing::debug!(pod = %pod.metadata.name, reason, "image not pinned yet");
                }
            }
            None => {}
        }
    }
    let refs = References { config_maps: &snapshot.config_maps, secrets: &snapshot.secrets };
    let mut out = Vec::new();
    let mut documents = published.lock();
    for (node, mut pods) in by_node {
        let Ok(node_id) = firmware_proto::NodeId::new(&node) else {
            tracing::warn!(node, "node name is not a valid node id; no document");
            continue;
        };
        pods.sort_by_key(|p| replica_spec::replica_id(p));
        let mut table = ConfigTable::default();
        let mut replicas = Vec::new();
        let mut keys = Vec::new();
        let mut images = Vec::new();
        for pod in pods {
            match replica_of(pod, resolver, &refs, &mut table, &mut writes) {
                Ok(replica) if replicas.len() < firmware_proto::MAX_REPLICAS => {
                    keys.push((replica.id.as_str().to_owned(), pod.key()));
                    images.push(replica.image.digest.0);
                    replicas.push(replica);
                }
                Ok(_) => failed(
                    pod,
                    "TooManyReplicas",
                    "the node already runs the most replicas a document holds",
                    &mut writes,
                ),
                Err(reason) => failed(pod, "InvalidReplica", &reason, &mut writes),
            }
        }
        let fingerprint = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            replicas.hash(&mut hasher);
            table.objects.hash(&mut hasher);
            hasher.finish()
        };
        let retired = retired.remove(&node).unwrap_or_default();
        if let Some(previous) = documents.get_mut(&node)
            && previous.fingerprint == fingerprint
        {
            if previous.retired != retired {
                Arc::make_mut(previous).retired = retired;
            }
            if all {
                out.push((node.clone(), "desired", previous.frame.clone()));
            }
            continue;
        }
        let document =
            firmware_proto::DesiredState { node_id: &node_id, generation, replicas: &replicas, config: &table.objects };
        match firmware_proto::encode_desired_frame_to_vec(&document, |bytes| key.sign(bytes)) {
            Ok(frame) => {
                tracing::info!(
                    node,
                    generation,
                    replicas = replicas.len(),
                    bytes = frame.len(),
                    "desired state changed"
                );
                out.push((node.clone(), "desired", frame.clone()));
                documents.insert(
                    node,
                    Arc::new(Published { generation, fingerprint, frame, replicas: keys, images, retired }),
                );
            }
            Err(e) => tracing::error!(node, error = %e, "cannot encode the desired document"),
        }
    }
    drop(documents);
    // With no Service and no table published, there is nothing to build:
    // the scan of every pod is skipped.
    let any_tables = !tables.0.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
    if (dirty.services || dirty.all) && (!snapshot.services.is_empty() || any_tables) {
        out.extend(service_tables(&snapshot, generation, key, tables, all, &mut writes));
    }
    crate::store::commit_in_chunks(store, writes, "publisher");
    PassOutput { frames: out, unpinned }
}

/// The service tables to publish: changed ones, or all when `all`.
fn service_tables(
    snapshot: &Snapshot,
    generation: u64,
    key: &ControllerKey,
    tables: &PublishedTables,
    all: bool,
    writes: &mut Vec<Op>,
) -> Vec<(String, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut published = tables.0.lock().unwrap_or_else(|p| p.into_inner());
    for (node, ports) in super::services::tables(snapshot, writes) {
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
                out.push((node, "services", frame.clone()));
            }
            continue;
        }
        let table = super::services::table_for(&node_id, generation, &ports);
        match firmware_proto::encode_services_frame_to_vec(&table, |bytes| key.sign(bytes)) {
            Ok(frame) => {
                tracing::debug!(node, generation, services = ports.len(), "service table changed");
                published.insert(node.clone(), (fingerprint, frame.clone()));
                out.push((node, "services", frame));
            }
            Err(e) => tracing::error!(node, error = %e, "cannot encode the service table"),
        }
    }
    out
}

fn replica_of(
    pod: &ApiObject,
    resolver: &Resolver,
    refs: &References<'_>,
    table: &mut ConfigTable,
    writes: &mut Vec<Op>,
) -> Result<firmware_proto::ReplicaSpec, String> {
    let spec = pod.typed_spec::<PodSpec>().ok_or("the pod's spec is unreadable")?;
    let image = spec.containers.first().map(|c| c.image.clone()).unwrap_or_default();
    let digest = match pod.metadata.annotations.get(IMAGE_DIGEST_ANNOTATION).and_then(|d| parse_digest(d)) {
        Some(digest) => digest,
        None => pin(pod, resolver, writes)?,
    };
    let (registry, name, tag) =
        split_reference(image.split('@').next().unwrap_or_default(), &resolver.default_registry);
    replica_spec::build(pod, &spec, &format!("{registry}/{name}:{tag}"), digest, refs, table)
}

/// Resolves the pod's image and records digest and archs on it.
fn pin(pod: &ApiObject, resolver: &Resolver, writes: &mut Vec<Op>) -> Result<[u8; 32], String> {
    let spec: PodSpec = pod.spec().ok_or("the pod's spec is unreadable")?;
    let image = spec.containers.first().map(|c| c.image.clone()).unwrap_or_default();
    let pinned_image = resolver.resolve(&image).map_err(|e| format!("cannot pin image {image:?}: {e}"))?;
    let mut pinned = pod.clone();
    let annotations = &mut pinned.metadata.annotations;
    annotations.insert(IMAGE_DIGEST_ANNOTATION.to_owned(), format!("sha256:{}", hex::encode(pinned_image.digest)));
    if !pinned_image.archs.is_empty() {
        annotations.insert(IMAGE_ARCHS_ANNOTATION.to_owned(), pinned_image.archs.join(","));
    }
    writes.push(Op::Apply(pinned));
    Ok(pinned_image.digest)
}

/// A replica bound to a node its image has no variant for (bound before
/// the image was pinned): back to the scheduler, which now knows.
fn unbind_for_arch(pod: &ApiObject, node: &str, arch: &str, archs: &str, writes: &mut Vec<Op>) {
    let mut unbound = pod.clone();
    if let Some(serde_json::Value::Object(spec)) = unbound.content.get_mut("spec") {
        spec.remove("nodeName");
    }
    writes.push(Op::Apply(unbound.clone()));
    let mut status: PodStatus = pod.status();
    status.phase = "Pending".into();
    status.reason = "ArchMismatch".into();
    status.message = format!("the image has no linux/{arch} variant for node {node} (has {archs}); placing it again");
    unbound.set_status(&status);
    unbound.metadata.resource_version.clear();
    writes.push(Op::UpdateStatus(unbound));
}

fn failed(pod: &ApiObject, reason: &str, message: &str, writes: &mut Vec<Op>) {
    let mut status: PodStatus = pod.status();
    if status.reason == reason && status.message == message {
        return;
    }
    tracing::warn!(pod = %pod.metadata.name, reason, message, "replica left out of its node's document");
    status.reason = reason.to_owned();
    status.message = message.to_owned();
    let mut updated = pod.clone();
    updated.set_status(&status);
    updated.metadata.resource_version.clear();
    writes.push(Op::UpdateStatus(updated));
}

/// `sha256:<64 hex>` -> bytes.
pub fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:")?;
    hex::decode(hex).ok()?.try_into().ok()
}

/// Resolves image tags to digests over the OCI distribution API, so every
/// node runs the same bytes. Images named with `@sha256:` are taken as is.
pub struct Resolver {
    default_registry: String,
    agent: ureq::Agent,
    /// Recent failures per image: not asked again for a while, so an
    /// unreachable registry does not stall every pass on its timeout.
    failures: Mutex<HashMap<String, (std::time::Instant, String)>>,
    /// Recent answers per image: a pass that pins 5,000 replicas of one
    /// image asks the registry once, not 5,000 times (at 1,000 simulated
    /// devices the first pass after an apply never finished in 3 minutes).
    resolved: Mutex<HashMap<String, (std::time::Instant, PinnedImage)>>,
}

/// How long a resolved tag is reused: a tag moved in the registry is seen
/// within this.
const ANSWER_MEMORY: Duration = Duration::from_secs(10);

/// How long a failed resolution is remembered.
const FAILURE_MEMORY: Duration = Duration::from_secs(15);

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

impl Resolver {
    /// A resolver using `default_registry` for names without a registry.
    pub fn new(default_registry: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        Resolver {
            default_registry: default_registry.to_owned(),
            agent,
            failures: Mutex::default(),
            resolved: Mutex::default(),
        }
    }

    /// The digest `image` points to now, and the architectures it exists
    /// for (empty when the registry does not say).
    pub fn resolve(&self, image: &str) -> Result<PinnedImage, String> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.retain(|_, (at, _)| at.elapsed() < FAILURE_MEMORY);
        if let Some((_, reason)) = failures.get(image) {
            return Err(reason.clone());
        }
        drop(failures);
        let mut resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        resolved.retain(|_, (at, _)| at.elapsed() < ANSWER_MEMORY);
        if let Some((_, pinned)) = resolved.get(image) {
            return Ok(pinned.clone());
        }
        drop(resolved);
        let result = self.resolve_now(image);
        if let Ok(pinned) = &result {
            let mut resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
            resolved.insert(image.to_owned(), (std::time::Instant::now(), pinned.clone()));
        }
        if let Err(reason) = &result {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            failures.insert(image.to_owned(), (std::time::Instant::now(), reason.clone()));
        }
        result
    }

    fn resolve_now(&self, image: &str) -> Result<PinnedImage, String> {
        let (name_part, pinned) = match image.split_once('@') {
            Some((name, digest)) => {
                (name, Some(parse_digest(digest).ok_or_else(|| format!("{digest:?} is not a sha256 digest"))?))
            }
            None => (image, None),
        };
        let (registry, name, tag) = split_reference(name_part, &self.default_registry);
        let reference = pinned.map_or_else(|| tag.to_owned(), |d| format!("sha256:{}", hex::encode(d)));
        let (digest, body) = match self.get_json(registry, &format!("{name}/manifests/{reference}")) {
            Ok(found) => found,
            // A digest given in the manifest is enough to run; the archs
            // stay unknown when its registry cannot be asked now.
            Err(_) if pinned.is_some() => {
                return Ok(PinnedImage { digest: pinned.unwrap_or_default(), archs: Vec::new() });
            }
            Err(e) => return Err(e),
        };
        let digest = match (pinned, digest) {
            (Some(pinned), _) => pinned,
            (None, Some(digest)) => digest,
            (None, None) => return Err(format!("registry {registry} gave no Docker-Content-Digest for {name}:{tag}")),
        };
        let mut archs: Vec<String> = match body.get("manifests").and_then(|m| m.as_array()) {
            Some(manifests) => manifests
                .iter()
                .filter_map(|m| m.pointer("/platform/architecture").and_then(|a| a.as_str()))
                .filter(|a| *a != "unknown")
                .map(str::to_owned)
                .collect(),
            None => body
                .pointer("/config/digest")
                .and_then(|d| d.as_str())
                .and_then(|config| self.get_json(registry, &format!("{name}/blobs/{config}")).ok())
                .and_then(|(_, config)| config.get("architecture").and_then(|a| a.as_str()).map(str::to_owned))
                .into_iter()
                .collect(),
        };
        archs.sort();
        archs.dedup();
        Ok(PinnedImage { digest, archs })
    }

    /// GETs a JSON document under `/v2/`: its digest header and body.
    fn get_json(&self, registry: &str, path: &str) -> Result<(Option<[u8; 32]>, serde_json::Value), String> {
        let url = format!("http://{registry}/v2/{path}");
        let mut response = self
            .agent
            .get(&url)
            .header("Accept", MANIFEST_TYPES)
            .call()
            .map_err(|e| format!("registry {registry} unreachable: {e}"))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Err(format!("{path} not found in registry {registry}")),
            code => return Err(format!("registry {registry} answered {code} for {path}")),
        }
        let digest =
            response.headers().get("Docker-Content-Digest").and_then(|v| v.to_str().ok()).and_then(parse_digest);
        let body = response
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()
            .map_err(|e| format!("reading {path} from {registry}: {e}"))?;
        let json = serde_json::from_slice(&body).map_err(|e| format!("{path} from {registry} is not JSON: {e}"))?;
        Ok((digest, json))
    }
}

/// What an image reference resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedImage {
    /// Manifest or index digest.
    pub digest: [u8; 32],
    /// Architectures it has (`amd64`, `arm64`), sorted; empty if unknown.
    pub archs: Vec<String>,
}

/// `(registry, repository, tag)` of a reference; the first path component
/// is a registry when it looks like a host (`.`, `:` or `localhost`).
pub fn split_reference<'a>(image: &'a str, default_registry: &'a str) -> (&'a str, &'a str, &'a str) {
    let (registry, rest) = match image.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => (first, rest),
        _ => (default_registry, image),
    };
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[slash..].rfind(':') {
        Some(colon) => (registry, &rest[..slash + colon], &rest[slash + colon + 1..]),
        None => (registry, rest, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_registry_name_and_tag() {
        assert_eq!(split_reference("busybox:1.35", "reg:7440"), ("reg:7440", "busybox", "1.35"));
        assert_eq!(split_reference("library/busybox", "reg:7440"), ("reg:7440", "library/busybox", "latest"));
        assert_eq!(split_reference("10.0.0.1:5000/a/b:2", "x"), ("10.0.0.1:5000", "a/b", "2"));
        assert_eq!(split_reference("localhost/web", "x"), ("localhost", "web", "latest"));
    }

    #[test]
    fn pinned_images_need_no_registry() {
        let resolver = Resolver::new("127.0.0.1:1");
        let hex = "ab".repeat(32);
        assert_eq!(resolver.resolve(&format!("web:1@sha256:{hex}")).map(|p| p.digest), Ok([0xab; 32]));
        assert!(resolver.resolve("web:1@sha256:abc").is_err());
        assert!(resolver.resolve("web:1").unwrap_err().contains("unreachable"));
    }
}
