//! A bound Pod -> the [`WirePod`] its node runs (the Linux document
//! profile), with the ConfigMap and Secret objects it mounts; and, for a
//! node that takes the compact profile, that pod lowered to the compact
//! [`ReplicaSpec`] when it fits ([`compact`]). Everything the agent needs is
//! resolved here (env from ConfigMaps, Secrets and the downward API,
//! quantities, probe ports, image digests), so the agent never reads the
//! store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use firmware_proto::heap::{List, Text, Texts};
use firmware_proto::pod::{
    self as linux, Claim, ConfigBlob, ConfigRef, Container as WireContainer, Mount, PodSpec as WirePod, PodVolume,
    PodVolumeSource,
};
use firmware_proto::{ImageRef, Port, Probe, ProbeAction, Protocol, Resources, RestartPolicy, Seccomp, User};
use sha2::Digest as _;

use crate::controllers::image_pinning;
use crate::manifest::Quantity;
use crate::manifest::types::{Container, EnvVarSource, IntOrString, PodSpec, QuantityText};
use crate::object::ApiObject;

pub mod compact;

/// One ConfigMap or Secret as its node receives it: the object, and the
/// sha256 of its encoding (what the document names it by).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ConfigEntry {
    /// The files.
    pub blob: ConfigBlob,
    /// sha256 of the blob's encoded body.
    pub digest: [u8; 32],
    /// Bytes of the encoded body.
    pub size: u32,
    /// A Secret's: the key its files are sealed with (sealed again for
    /// each node in the node's document).
    pub data_key: Option<[u8; 32]>,
}

/// What the data keys of Secrets are derived from: the controller's own
/// secret, so a Secret version seals to the same blob after a restart (no
/// resend, no restart on the devices). Set once at start.
static DATA_KEY_ROOT: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();

/// Sets the root of the Secrets' data keys (`flotilla server` at start).
/// A process that never sets it (tests, benchmarks) gets a random one.
pub fn set_data_key_root(root: [u8; 32]) {
    let _ = DATA_KEY_ROOT.set(root);
}

fn data_key_root() -> &'static [u8; 32] {
    DATA_KEY_ROOT.get_or_init(|| {
        let mut root = [0u8; 32];
        getrandom::fill(&mut root).expect("randomness from the OS for the Secrets' data keys");
        root
    })
}

/// The ConfigMaps and Secrets of one desired document, in the order their
/// volumes refer to them by index.
#[derive(Debug, Default)]
pub struct ConfigTable {
    /// Objects in document order.
    pub objects: Vec<Arc<ConfigEntry>>,
    keys: Vec<(bool, String, String)>,
    /// The claims the pods mount, in document order.
    pub claims: Vec<Claim>,
}

/// Entries already built, by `(uid, resourceVersion, secret)`: a 1 MiB
/// ConfigMap is encoded and hashed once, not once per replica and pass.
static ENTRIES: Mutex<Option<EntryCache>> = Mutex::new(None);
/// `(uid, resourceVersion, secret)` -> entry.
type EntryCache = HashMap<(String, String, bool), Arc<ConfigEntry>>;
/// Entries kept at most; past it the cache starts over.
const ENTRIES_MAX: usize = 4096;

impl ConfigTable {
    fn index_of(&mut self, secret: bool, object: &ApiObject) -> Result<u16, String> {
        let key = (secret, object.metadata.namespace.clone(), object.metadata.name.clone());
        if let Some(i) = self.keys.iter().position(|k| *k == key) {
            return Ok(i as u16);
        }
        if self.objects.len() >= linux::LINUX_MAX_CONFIG_OBJECTS {
            return Err(format!("more than {} ConfigMaps/Secrets on one node", linux::LINUX_MAX_CONFIG_OBJECTS));
        }
        self.objects.push(entry(secret, object)?);
        self.keys.push(key);
        Ok((self.objects.len() - 1) as u16)
    }

    fn claim_index(&mut self, object: &ApiObject) -> Result<u16, String> {
        let claim = claim_of(object)?;
        if let Some(i) = self.claims.iter().position(|c| c.id == claim.id) {
            return Ok(i as u16);
        }
        if self.claims.len() >= linux::LINUX_MAX_CLAIMS {
            return Err(format!("more than {} persistent volume claims on one node", linux::LINUX_MAX_CLAIMS));
        }
        self.claims.push(claim);
        Ok((self.claims.len() - 1) as u16)
    }

    /// What the document sealed as `sealing` says of each object.
    pub fn refs(&self, sealing: &Sealing) -> List<ConfigRef, { linux::LINUX_MAX_CONFIG_OBJECTS }> {
        let refs: Vec<ConfigRef> = self
            .objects
            .iter()
            .map(|e| ConfigRef {
                name: e.blob.name.clone(),
                secret: e.blob.secret,
                digest: firmware_proto::Bytes(e.digest),
                size: e.size,
                sealed_key: e.data_key.map(|data_key| {
                    let sealed = firmware_proto::seal::seal(&sealing.key(), &e.digest, &data_key);
                    let mut bytes = [0u8; linux::SEALED_KEY_LEN];
                    bytes.copy_from_slice(&sealed);
                    firmware_proto::Bytes(bytes)
                }),
            })
            .collect();
        // At most LINUX_MAX_CONFIG_OBJECTS were admitted by `index_of`.
        List::try_from(refs).unwrap_or_default()
    }
}

/// A PersistentVolumeClaim as a document lists it: its directory's name
/// is `{namespace}.{name}.{first 8 of its uid}`, so a claim deleted and
/// made again under the same name starts empty.
pub fn claim_of(object: &ApiObject) -> Result<Claim, String> {
    let uid: String = object.metadata.uid.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    let id = format!("{}.{}.{uid}", object.metadata.namespace, object.metadata.name);
    let size_bytes = crate::controllers::claims::size_of(object);
    Ok(Claim { id: Text::new(&id).map_err(|_| format!("claim id {id:?} is too long"))?, size_bytes })
}

/// The entry of a ConfigMap or Secret, built once per version of it.
fn entry(secret: bool, object: &ApiObject) -> Result<Arc<ConfigEntry>, String> {
    let cache_key = (object.metadata.uid.clone(), object.metadata.resource_version.clone(), secret);
    let cacheable = !cache_key.0.is_empty() && !cache_key.1.is_empty();
    if cacheable
        && let Some(found) = ENTRIES.lock().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|m| m.get(&cache_key))
    {
        return Ok(found.clone());
    }
    let name = &object.metadata.name;
    let mut blob = ConfigBlob {
        name: Text::new(name).map_err(|_| format!("config object name {name:?} is too long"))?,
        secret,
        file_names: Texts::new(),
        contents: Default::default(),
    };
    // A Secret's files are sealed under a key of this version of it.
    let data_key = secret.then(|| {
        let meta = &object.metadata;
        let parts: [&[u8]; 4] =
            [meta.namespace.as_bytes(), name.as_bytes(), meta.uid.as_bytes(), meta.resource_version.as_bytes()];
        firmware_proto::seal::derive_key(data_key_root(), &parts)
    });
    for (key, bytes) in object.config_entries() {
        let bytes = match &data_key {
            Some(data_key) => {
                firmware_proto::seal::seal(data_key, &firmware_proto::seal::file_context(name, &key), &bytes)
            }
            None => bytes,
        };
        blob.file_names.push(&key).map_err(|_| {
            format!(
                "{name}: more than {} keys or {} bytes of key names",
                linux::LINUX_CONFIG_FILES,
                linux::LINUX_CONFIG_NAMES_BYTES
            )
        })?;
        blob.contents.push(&bytes).map_err(|_| format!("{name}/{key}: a ConfigMap or Secret holds at most 1 MiB"))?;
    }
    let body = postcard::to_allocvec(&blob).map_err(|e| format!("{name}: {e}"))?;
    let digest = sha2::Sha256::digest(&body).into();
    let entry = Arc::new(ConfigEntry { digest, size: body.len() as u32, blob, data_key });
    if cacheable {
        let mut cache = ENTRIES.lock().unwrap_or_else(|p| p.into_inner());
        let map = cache.get_or_insert_with(HashMap::new);
        if map.len() >= ENTRIES_MAX {
            map.clear();
        }
        map.insert(cache_key, entry.clone());
    }
    Ok(entry)
}

/// The object of `list` named `name` in `namespace`.
fn named<'a>(list: &'a [Arc<ApiObject>], namespace: &str, name: &str) -> Option<&'a ApiObject> {
    list.iter().find(|o| o.metadata.namespace == namespace && o.metadata.name == name).map(|o| &**o)
}

/// Where ConfigMaps and Secrets are looked up, and the node the document
/// is for (the downward API's `spec.nodeName`, `status.hostIP`).
pub struct References<'a> {
    /// ConfigMaps.
    pub config_maps: &'a [Arc<ApiObject>],
    /// Secrets.
    pub secrets: &'a [Arc<ApiObject>],
    /// The node, when known (not when a replica is checked before binding).
    pub node: Option<&'a ApiObject>,
    /// PersistentVolumeClaims.
    pub claims: &'a [Arc<ApiObject>],
    /// What Secret values are sealed with.
    pub sealing: Sealing,
}

/// What a projection seals Secret values with (`firmware_proto::seal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    /// Nothing built is sent (the scheduler's check): values are sealed
    /// with a zero key, which sizes them right and nothing more.
    Sizing,
    /// For the node with this seal key.
    For([u8; 32]),
    /// For a node with no credentials (revoked, never enrolled): a replica
    /// that takes anything from a Secret is left out of its document.
    Unsealable,
}

impl Sealing {
    fn key(&self) -> [u8; 32] {
        match self {
            Sealing::For(key) => *key,
            Sealing::Sizing | Sealing::Unsealable => [0; 32],
        }
    }

    fn check(&self) -> Result<(), String> {
        match self {
            Sealing::Unsealable => {
                Err("its node has no credentials (revoked or not enrolled) to seal a Secret for".to_owned())
            }
            Sealing::Sizing | Sealing::For(_) => Ok(()),
        }
    }
}

impl References<'_> {
    fn find(&self, secret: bool, namespace: &str, name: &str) -> Option<&ApiObject> {
        named(if secret { self.secrets } else { self.config_maps }, namespace, name)
    }

    fn claim(&self, namespace: &str, name: &str) -> Option<&ApiObject> {
        named(self.claims, namespace, name)
    }

    fn node_address(&self) -> &str {
        self.node
            .and_then(|n| n.metadata.labels.get(crate::controllers::endpoints::ADDRESS_LABEL))
            .map_or("", String::as_str)
    }
}

/// `(registry, repository, tag)` of a reference without its digest, with
/// `default_registry` and `latest` for what it does not name. The agent
/// splits references the same way ([`firmware_proto::image`]).
pub fn split_reference<'a>(image: &'a str, default_registry: &'a str) -> (&'a str, &'a str, &'a str) {
    let parts = firmware_proto::image::split_reference(image);
    let tag = parts.tag.unwrap_or(firmware_proto::image::DEFAULT_TAG);
    (parts.registry.unwrap_or(default_registry), parts.repository, tag)
}

/// An image reference as the wire spells it: registry and tag written out,
/// without a digest (the document carries the pinned one).
pub fn wire_image(image: &str, default_registry: &str) -> String {
    let (registry, repository, tag) = split_reference(image.split('@').next().unwrap_or_default(), default_registry);
    format!("{registry}/{repository}:{tag}")
}

/// Why a bound replica is not in its node's document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// `TooManyReplicas`, `InvalidReplica` or `CompactProfile`.
    pub reason: &'static str,
    /// What is wrong, for the operator.
    pub message: String,
}

/// One node's desired document, projected from the replicas bound to it.
#[derive(Debug, Default)]
pub struct Document<'p> {
    /// The pods, in replica-id order.
    pub pods: Vec<WirePod>,
    /// The ConfigMaps and Secrets they mount, in volume index order.
    pub table: ConfigTable,
    /// The replica each pod stands for, in the same order.
    pub objects: Vec<&'p ApiObject>,
    /// Replicas the document cannot hold, and why.
    pub left_out: Vec<(&'p ApiObject, LeftOut)>,
}

/// Whether a replica bound to a node of `arch` belongs in the node's
/// document: live (not finished, not retired), its image pinned, and able
/// to run there.
pub fn listed(pod: &ApiObject, arch: &str) -> bool {
    !pod.typed_status::<crate::status::PodStatus>().is_finished()
        && !pod.is_retired()
        && image_pinning::is_pinned(pod)
        && image_pinning::can_run_on(pod, arch)
}

/// A ConfigMap or Secret a replica takes something from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference<'s> {
    /// A Secret, else a ConfigMap.
    pub secret: bool,
    /// Its name (in the replica's namespace).
    pub name: &'s str,
    /// The key an env var takes; `None` for all of it.
    pub key: Option<&'s str>,
    /// Whether the replica runs without it.
    pub optional: bool,
    /// Where the replica takes it (`env MODE`, `envFrom`, `volume rules`).
    pub place: Place<'s>,
}

/// Where a replica takes a [`Reference`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place<'s> {
    /// An env var's `valueFrom`.
    Env(&'s str),
    /// `envFrom`.
    EnvFrom,
    /// A volume.
    Volume(&'s str),
}

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Env(name) => write!(f, "env {name}"),
            Place::EnvFrom => f.write_str("envFrom"),
            Place::Volume(name) => write!(f, "volume {name}"),
        }
    }
}

/// Every ConfigMap and Secret a replica takes something from, in the order
/// the spec names them (init containers first).
pub fn references(spec: &PodSpec) -> Vec<Reference<'_>> {
    let mut out: Vec<Reference<'_>> = Vec::new();
    let mut add = |secret, name, key, optional, place| {
        out.push(Reference { secret, name, key, optional, place });
    };
    for container in spec.init_containers.iter().chain(&spec.containers) {
        for env in &container.env {
            if let Some(source) = &env.value_from {
                if let Some(r) = &source.config_map_key_ref {
                    add(false, r.name.as_str(), Some(r.key.as_str()), r.optional, Place::Env(env.name.as_str()));
                }
                if let Some(r) = &source.secret_key_ref {
                    add(true, r.name.as_str(), Some(r.key.as_str()), r.optional, Place::Env(env.name.as_str()));
                }
            }
        }
        for from in &container.env_from {
            if let Some(r) = &from.config_map_ref {
                add(false, r.name.as_str(), None, r.optional, Place::EnvFrom);
            }
            if let Some(r) = &from.secret_ref {
                add(true, r.name.as_str(), None, r.optional, Place::EnvFrom);
            }
        }
    }
    for volume in &spec.volumes {
        if let Some(r) = &volume.config_map {
            add(false, r.name.as_str(), None, r.optional, Place::Volume(volume.name.as_str()));
        }
        if let Some(r) = &volume.secret {
            add(true, r.secret_name.as_str(), None, r.optional, Place::Volume(volume.name.as_str()));
        }
    }
    out
}

/// Room left in a pod document for framing and the config references.
const DOCUMENT_MARGIN: usize = 64 * 1024;

/// Projects one node's replicas into its document: in replica-id order, as
/// many as a document of the node's `profile` holds. The publisher sends
/// the result; the scheduling controller makes the same projection to say,
/// on the replica, why one is left out, so that the publisher writes
/// nothing back.
pub fn document<'p>(
    mut pods: Vec<&'p ApiObject>,
    refs: &References<'_>,
    default_registry: &str,
    profile: firmware_proto::Profile,
) -> Document<'p> {
    pods.sort_by_cached_key(|p| replica_id(p));
    let mut document = Document::default();
    let mut bytes = 0;
    let max = profile.max_replicas();
    for pod in pods {
        // A pod that does not fit leaves the table as it was.
        let objects_before = document.table.objects.len();
        let keys_before = document.table.keys.len();
        let projected = project(pod, refs, default_registry, &mut document.table).and_then(|wire| match profile {
            firmware_proto::Profile::Compact => compact::lower(&wire, &document.table)
                .map(|_| wire)
                .map_err(|message| LeftOut { reason: "CompactProfile", message }),
            firmware_proto::Profile::Linux => Ok(wire),
        });
        let size = projected.as_ref().map_or(0, |wire| postcard::to_allocvec(wire).map_or(0, |b| b.len()));
        let outcome = match projected {
            Ok(_) if document.pods.len() >= max => Err(LeftOut {
                reason: "TooManyReplicas",
                message: format!(
                    "its node already runs {max} replicas, the most one {} document holds",
                    profile.name()
                ),
            }),
            Ok(_) if bytes + size > linux::MAX_PODS_FRAME_LEN - DOCUMENT_MARGIN => Err(LeftOut {
                reason: "TooManyReplicas",
                message: format!("its node's document would pass {} MiB with it", linux::MAX_PODS_FRAME_LEN >> 20),
            }),
            other => other,
        };
        match outcome {
            Ok(wire) => {
                bytes += size;
                document.pods.push(wire);
                document.objects.push(pod);
            }
            Err(why) => {
                document.table.objects.truncate(objects_before);
                document.table.keys.truncate(keys_before);
                document.left_out.push((pod, why));
            }
        }
    }
    document
}

/// What a replica alone projects to: the pod its node would run (with the
/// objects it mounts), or why none can. Checked before a replica is bound;
/// [`compact::lower`] of the result says whether a compact-profile node
/// could hold it.
pub fn check(
    pod: &ApiObject,
    refs: &References<'_>,
    default_registry: &str,
) -> Result<(WirePod, ConfigTable), LeftOut> {
    let mut table = ConfigTable::default();
    let wire = project(pod, refs, default_registry, &mut table)?;
    Ok((wire, table))
}

fn project(
    pod: &ApiObject,
    refs: &References<'_>,
    default_registry: &str,
    table: &mut ConfigTable,
) -> Result<WirePod, LeftOut> {
    let invalid = |message: String| LeftOut { reason: "InvalidReplica", message };
    let spec = pod.typed_spec::<PodSpec>().ok_or_else(|| invalid("the pod's spec is unreadable".into()))?;
    build(pod, &spec, default_registry, refs, table).map_err(invalid)
}

/// The replica id of a pod on its node: its name, prefixed with the
/// namespace outside `default` (ids are unique per node, names per
/// namespace).
pub fn replica_id(pod: &ApiObject) -> String {
    if pod.metadata.namespace == "default" {
        pod.metadata.name.clone()
    } else {
        format!("{}.{}", pod.metadata.namespace, pod.metadata.name)
    }
}

/// Converts a pod: every container with its image's pinned digest and the
/// registry spelled out, the pod's volumes, the objects they mount (added
/// to `table`).
pub fn build(
    pod: &ApiObject,
    spec: &PodSpec,
    default_registry: &str,
    refs: &References<'_>,
    table: &mut ConfigTable,
) -> Result<WirePod, String> {
    if spec.containers.is_empty() {
        return Err("the pod has no container".into());
    }
    let namespace = pod.metadata.namespace.as_str();
    let mut volumes: List<PodVolume, { linux::LINUX_MAX_VOLUMES }> = List::new();
    for volume in &spec.volumes {
        let source = if let Some(empty) = &volume.empty_dir {
            PodVolumeSource::EmptyDir {
                in_memory: empty.medium.as_deref() == Some("Memory"),
                size_limit_bytes: empty.size_limit.as_ref().and_then(quantity).map(|q| q.as_units() as u64),
            }
        } else if let Some(host) = &volume.host_path {
            PodVolumeSource::HostPath { path: text(&host.path, "hostPath")? }
        } else if let Some(r) = &volume.config_map {
            match refs.find(false, namespace, &r.name) {
                Some(object) => PodVolumeSource::Config { index: table.index_of(false, object)? },
                None if r.optional => PodVolumeSource::EmptyDir { in_memory: false, size_limit_bytes: None },
                None => return Err(format!("configmap {:?} not found", r.name)),
            }
        } else if let Some(r) = &volume.secret {
            match refs.find(true, namespace, &r.secret_name) {
                Some(object) => {
                    refs.sealing.check()?;
                    PodVolumeSource::Config { index: table.index_of(true, object)? }
                }
                None if r.optional => PodVolumeSource::EmptyDir { in_memory: true, size_limit_bytes: None },
                None => return Err(format!("secret {:?} not found", r.secret_name)),
            }
        } else if let Some(c) = &volume.persistent_volume_claim {
            let claim = refs
                .claim(namespace, &c.claim_name)
                .ok_or_else(|| format!("persistentvolumeclaim {:?} not found", c.claim_name))?;
            PodVolumeSource::Claim { index: table.claim_index(claim)? }
        } else {
            return Err(format!("volume {:?}: no supported source", volume.name));
        };
        let name =
            firmware_proto::Name::new(&volume.name).map_err(|e| format!("volume name {:?}: {e}", volume.name))?;
        volumes
            .push(PodVolume { name, source })
            .map_err(|_| format!("more than {} volumes", linux::LINUX_MAX_VOLUMES))?;
    }
    let id = replica_id(pod);
    let replica = firmware_proto::ReplicaId::new(&id).map_err(|e| format!("replica id: {e}"))?;
    let context = Context { pod, id, spec, refs, namespace, default_registry };
    let mut init_containers = List::new();
    for c in &spec.init_containers {
        let mut wire = context.container(c)?;
        wire.sidecar = c.restart_policy.as_deref() == Some("Always");
        init_containers.push(wire).map_err(|_| format!("more than {} init containers", linux::MAX_INIT_CONTAINERS))?;
    }
    let mut containers = List::new();
    for c in &spec.containers {
        containers
            .push(context.container(c)?)
            .map_err(|_| format!("more than {} containers", linux::MAX_CONTAINERS))?;
    }
    Ok(WirePod {
        id: replica,
        init_containers,
        containers,
        volumes,
        restart_policy: match spec.restart_policy.as_deref() {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        },
        termination_grace_s: spec.termination_grace_period_seconds.unwrap_or(30).min(u16::MAX as u32) as u16,
    })
}

/// What converting one container of a pod needs.
struct Context<'a> {
    pod: &'a ApiObject,
    /// The replica id: the context Secret env is sealed in.
    id: String,
    spec: &'a PodSpec,
    refs: &'a References<'a>,
    namespace: &'a str,
    default_registry: &'a str,
}

impl Context<'_> {
    fn container(&self, container: &Container) -> Result<WireContainer, String> {
        let digest = image_pinning::pinned_digest(self.pod, &container.name)
            .ok_or_else(|| format!("container {}: its image digest is not pinned", container.name))?;
        let image = wire_image(&container.image, self.default_registry);
        let (env, sealed_env) = split_env(self.env_of(container)?);
        let mut wire = WireContainer {
            name: firmware_proto::Name::new(&container.name)
                .map_err(|e| format!("container name {:?}: {e}", container.name))?,
            image: ImageRef { reference: bounded(&image, "image")?, digest: firmware_proto::Bytes(digest) },
            command: texts(&container.command, "command")?,
            args: texts(&container.args, "args")?,
            env: texts(&env, "env")?,
            sealed_env: self.sealed_env(&sealed_env, &container.name)?,
            working_dir: text(container.working_dir.as_deref().unwrap_or(""), "workingDir")?,
            user: None,
            resources: resources(container),
            extended: List::new(),
            devices: List::new(),
            ports: List::new(),
            mounts: List::new(),
            startup_probe: container.startup_probe.as_ref().map(|p| probe(p, container)).transpose()?,
            readiness_probe: container.readiness_probe.as_ref().map(|p| probe(p, container)).transpose()?,
            liveness_probe: container.liveness_probe.as_ref().map(|p| probe(p, container)).transpose()?,
            read_only_rootfs: false,
            seccomp: Seccomp::RuntimeDefault,
            sidecar: false,
        };
        for port in &container.ports {
            let protocol = match port.protocol.as_deref() {
                Some("UDP") => Protocol::Udp,
                _ => Protocol::Tcp,
            };
            let container_port =
                u16::try_from(port.container_port).map_err(|_| "containerPort out of range".to_owned())?;
            let host_port =
                port.host_port.map(u16::try_from).transpose().map_err(|_| "hostPort out of range".to_owned())?;
            wire.ports
                .push(Port { name: bounded(&port.name, "port name")?, container_port, host_port, protocol })
                .map_err(|_| format!("more than {} ports", linux::LINUX_MAX_PORTS))?;
        }
        for mount in &container.volume_mounts {
            let volume = self
                .spec
                .volumes
                .iter()
                .position(|v| v.name == mount.name)
                .ok_or_else(|| format!("volumeMount {:?} names no volume", mount.name))?;
            let forced_read_only = {
                let v = &self.spec.volumes[volume];
                v.config_map.is_some()
                    || v.secret.is_some()
                    || v.persistent_volume_claim.as_ref().is_some_and(|c| c.read_only)
            };
            wire.mounts
                .push(Mount {
                    volume: volume as u16,
                    mount_path: text(&mount.mount_path, "mountPath")?,
                    read_only: mount.read_only || forced_read_only,
                    sub_path: text(mount.sub_path.as_deref().unwrap_or(""), "subPath")?,
                })
                .map_err(|_| format!("more than {} volume mounts", linux::LINUX_MAX_MOUNTS))?;
        }
        if let Some(security) = &container.security_context {
            wire.read_only_rootfs = security.read_only_root_filesystem.unwrap_or(false);
            if let Some(uid) = security.run_as_user {
                let uid = u32::try_from(uid).map_err(|_| "runAsUser out of range".to_owned())?;
                let gid = u32::try_from(security.run_as_group.unwrap_or(uid as i64))
                    .map_err(|_| "runAsGroup out of range".to_owned())?;
                wire.user = Some(User { uid, gid });
            }
            if security.seccomp_profile.as_ref().is_some_and(|p| p.profile_type == "Unconfined") {
                wire.seccomp = Seccomp::Unconfined;
            }
        }
        Ok(wire)
    }

    /// `(NAME=value, from a Secret)` in manifest order: `envFrom` first,
    /// then `env`.
    fn env_of(&self, container: &Container) -> Result<Vec<(String, bool)>, String> {
        let (namespace, refs) = (self.namespace, self.refs);
        let mut env = Vec::new();
        for from in &container.env_from {
            let (secret, r) = match (&from.config_map_ref, &from.secret_ref) {
                (Some(r), _) => (false, r),
                (None, Some(r)) => (true, r),
                (None, None) => continue,
            };
            match refs.find(secret, namespace, &r.name) {
                Some(object) => {
                    for (key, bytes) in object.config_entries() {
                        env.push((format!("{}{key}={}", from.prefix, String::from_utf8_lossy(&bytes)), secret));
                    }
                }
                None if r.optional => {}
                None => return Err(format!("envFrom: {:?} not found", r.name)),
            }
        }
        for var in &container.env {
            let secret = var.value_from.as_ref().is_some_and(|source| source.secret_key_ref.is_some());
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(source)) => match self.value_from(var.name.as_str(), source, container)? {
                    Some(value) => value,
                    None => continue,
                },
                (None, None) => String::new(),
            };
            env.push((format!("{}={value}", var.name), secret && var.value.is_none()));
        }
        Ok(env)
    }

    /// Secret env entries sealed for the node (see [`firmware_proto::seal`]).
    /// Unplaced replicas are sized with a zero key: a sealed value's length
    /// does not depend on the key.
    fn sealed_env<const B: usize, const I: usize>(
        &self,
        entries: &[String],
        container: &str,
    ) -> Result<firmware_proto::heap::Blobs<B, I>, String> {
        if entries.is_empty() {
            return Ok(firmware_proto::heap::Blobs::new());
        }
        self.refs.sealing.check()?;
        let context = firmware_proto::seal::env_context(&self.id, container);
        let mut sealed = firmware_proto::heap::Blobs::new();
        for entry in entries {
            let bytes = match self.refs.sealing {
                Sealing::For(key) => firmware_proto::seal::seal(&key, &context, entry.as_bytes()),
                // Only its length counts: nothing is sealed to be measured.
                Sealing::Sizing | Sealing::Unsealable => vec![0; entry.len() + firmware_proto::seal::SEAL_OVERHEAD],
            };
            sealed
                .push(&bytes)
                .map_err(|_| format!("env: at most {I} items and {B} bytes in all (Secret values sealed)"))?;
        }
        Ok(sealed)
    }

    /// An env var's `valueFrom`; `None` for an optional key that is absent.
    fn value_from(&self, var: &str, source: &EnvVarSource, container: &Container) -> Result<Option<String>, String> {
        if let Some(field) = &source.field_ref {
            return self.field(&field.field_path).map(Some);
        }
        if let Some(resource) = &source.resource_field_ref {
            let whose = match &resource.container_name {
                Some(name) => self
                    .spec
                    .containers
                    .iter()
                    .chain(&self.spec.init_containers)
                    .find(|c| c.name == *name)
                    .ok_or_else(|| format!("env {var}: no container named {name:?}"))?,
                None => container,
            };
            return Ok(Some(self.resource(whose, &resource.resource, resource.divisor.as_ref())));
        }
        let (secret, r) = match (&source.config_map_key_ref, &source.secret_key_ref) {
            (Some(r), _) => (false, r),
            (None, Some(r)) => (true, r),
            (None, None) => return Ok(None),
        };
        let found = self
            .refs
            .find(secret, self.namespace, &r.name)
            .and_then(|o| o.config_entries().into_iter().find(|(k, _)| *k == r.key));
        match found {
            Some((_, bytes)) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            None if r.optional => Ok(None),
            None => Err(format!("env {var}: key {:?} of {:?} not found", r.key, r.name)),
        }
    }

    /// A downward-API `fieldRef`, resolved for this replica on its node.
    fn field(&self, path: &str) -> Result<String, String> {
        let meta = &self.pod.metadata;
        let node = self.pod.node_name().unwrap_or_default();
        let address = self.refs.node_address();
        let keyed = |prefix: &str| path.strip_prefix(prefix).and_then(|rest| rest.strip_suffix("']"));
        Ok(match path {
            "metadata.name" => meta.name.clone(),
            "metadata.namespace" => meta.namespace.clone(),
            "metadata.uid" => meta.uid.clone(),
            "metadata.generateName" => String::new(),
            "spec.nodeName" => node.to_owned(),
            "spec.serviceAccountName" => "default".to_owned(),
            // Containers share the device's network: the pod's address is
            // the device's.
            "status.hostIP" | "status.hostIPs" | "status.podIP" | "status.podIPs" => address.to_owned(),
            _ => {
                if let Some(key) = keyed("metadata.labels['") {
                    meta.labels.get(key).cloned().unwrap_or_default()
                } else if let Some(key) = keyed("metadata.annotations['") {
                    meta.annotations.get(key).cloned().unwrap_or_default()
                } else {
                    return Err(format!("fieldRef {path:?} is not supported"));
                }
            }
        })
    }

    /// A downward-API `resourceFieldRef`: the quantity in units of the
    /// divisor, rounded up; a limit not set is the node's allocatable.
    fn resource(&self, container: &Container, resource: &str, divisor: Option<&QuantityText>) -> String {
        let (section, name) = resource.split_once('.').unwrap_or(("limits", resource));
        let map = if section == "requests" { &container.resources.requests } else { &container.resources.limits };
        let fallback = if section == "requests" { &container.resources.limits } else { &container.resources.requests };
        let node = || -> Option<Quantity> {
            let status = self.refs.node?.typed_status::<crate::status::NodeStatus>();
            status.allocatable.get(name).and_then(|text| Quantity::parse(text).ok())
        };
        let value = map
            .get(name)
            .and_then(quantity)
            .or_else(|| if section == "requests" { fallback.get(name).and_then(quantity) } else { None })
            .or_else(|| if section == "limits" { node() } else { None });
        let Some(value) = value else { return "0".into() };
        let divisor = divisor.and_then(quantity).map_or(1000, |d| d.as_millis().max(1));
        value.as_millis().div_ceil(divisor).to_string()
    }
}

fn resources(container: &Container) -> Resources {
    let get = |map: &std::collections::BTreeMap<String, QuantityText>, name: &str| map.get(name).and_then(quantity);
    let r = &container.resources;
    let cpu_limit = get(&r.limits, "cpu").map(|q| q.as_millis() as u32);
    let memory_limit = get(&r.limits, "memory").map(|q| q.as_units() as u64);
    Resources {
        cpu_request_millis: get(&r.requests, "cpu").map(|q| q.as_millis() as u32).or(cpu_limit).unwrap_or(0),
        memory_request_bytes: get(&r.requests, "memory").map(|q| q.as_units() as u64).or(memory_limit).unwrap_or(0),
        cpu_limit_millis: cpu_limit,
        memory_limit_bytes: memory_limit,
        pids_limit: None,
    }
}

fn probe(p: &crate::manifest::types::Probe, container: &Container) -> Result<Probe, String> {
    let port_of = |port: &IntOrString| -> Result<u16, String> {
        match port {
            IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("probe port {n} out of range")),
            IntOrString::String(name) => container
                .ports
                .iter()
                .find(|p| p.name == *name)
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("probe port {name:?} names no container port")),
        }
    };
    let action = if let Some(exec) = &p.exec {
        let command = firmware_proto::TextList::from_strs(exec.command.iter().map(String::as_str)).map_err(|_| {
            format!(
                "probe command: at most {} items and {} bytes",
                firmware_proto::COMMAND_ITEMS,
                firmware_proto::COMMAND_BYTES
            )
        })?;
        ProbeAction::Exec { command }
    } else if let Some(http) = &p.http_get {
        ProbeAction::HttpGet {
            path: bounded(http.path.as_deref().unwrap_or("/"), "probe path")?,
            port: port_of(&http.port)?,
            https: http.scheme.as_deref() == Some("HTTPS"),
        }
    } else if let Some(tcp) = &p.tcp_socket {
        ProbeAction::Tcp { port: port_of(&tcp.port)? }
    } else if let Some(grpc) = &p.grpc {
        ProbeAction::Grpc {
            port: u16::try_from(grpc.port).map_err(|_| format!("probe port {} out of range", grpc.port))?,
            service: bounded(grpc.service.as_deref().unwrap_or(""), "grpc probe service")?,
        }
    } else {
        return Err("a probe needs exec, httpGet, tcpSocket or grpc".into());
    };
    let clamp16 = |v: Option<i64>, default: u16| v.map_or(default, |v| v.clamp(0, u16::MAX as i64) as u16);
    let clamp8 = |v: Option<i64>, default: u8| v.map_or(default, |v| v.clamp(1, u8::MAX as i64) as u8);
    Ok(Probe {
        action,
        initial_delay_s: clamp16(p.initial_delay_seconds, 0),
        period_s: clamp16(p.period_seconds, 10).max(1),
        timeout_s: clamp16(p.timeout_seconds, 1).max(1),
        success_threshold: clamp8(p.success_threshold, 1),
        failure_threshold: clamp8(p.failure_threshold, 3),
    })
}

fn quantity(q: &QuantityText) -> Option<Quantity> {
    Quantity::parse(&q.text()).ok()
}

fn bounded<const N: usize>(text: &str, what: &str) -> Result<heapless::String<N>, String> {
    firmware_proto::bounded::bounded(text).map_err(|_| format!("{what} is longer than {N} bytes"))
}

fn text<const N: usize>(value: &str, what: &str) -> Result<Text<N>, String> {
    Text::new(value).map_err(|_| format!("{what} is longer than {N} bytes"))
}

/// Env entries split into plain and Secret ones. A name set twice keeps
/// its last value, as Kubernetes does, so the two lists never name the same
/// variable and their order on the device does not matter.
fn split_env(entries: Vec<(String, bool)>) -> (Vec<String>, Vec<String>) {
    let name = |entry: &str| entry.split_once('=').map_or(entry, |(n, _)| n).to_owned();
    let mut last = HashMap::new();
    for (i, (entry, _)) in entries.iter().enumerate() {
        last.insert(name(entry), i);
    }
    let (mut plain, mut sealed) = (Vec::new(), Vec::new());
    for (i, (entry, secret)) in entries.into_iter().enumerate() {
        if last.get(&name(&entry)) != Some(&i) {
            continue;
        }
        if secret { sealed.push(entry) } else { plain.push(entry) }
    }
    (plain, sealed)
}

fn texts<const B: usize, const I: usize>(items: &[String], what: &str) -> Result<Texts<B, I>, String> {
    Texts::from_strs(items.iter().map(String::as_str))
        .map_err(|_| format!("{what}: at most {I} items and {B} bytes in all"))
}

/// A pod of `containers` (its spec, as JSON) with every image pinned: for
/// the tests of the projection and of the compact lowering.
#[cfg(test)]
pub(crate) fn sample_pod(containers: serde_json::Value) -> ApiObject {
    let mut pod = ApiObject::new(crate::manifest::Kind::Pod, "default", "web-0");
    pod.metadata.uid = "u-1".into();
    pod.set_field("spec", containers);
    let spec = pod.typed_spec::<PodSpec>().unwrap_or_default().into_owned();
    let digests: Vec<String> = spec
        .init_containers
        .iter()
        .chain(&spec.containers)
        .map(|c| format!("{}=sha256:{}", c.name, "ab".repeat(32)))
        .collect();
    pod.metadata.annotations.insert(image_pinning::IMAGE_DIGEST_ANNOTATION.into(), digests.join(","));
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_spelled_on_the_wire_with_registry_and_tag() {
        assert_eq!(wire_image("busybox", "reg:7440"), "reg:7440/busybox:latest");
        assert_eq!(wire_image("library/web:1.2", "reg:7440"), "reg:7440/library/web:1.2");
        assert_eq!(wire_image("10.0.0.1:5000/a/b:2", "reg:7440"), "10.0.0.1:5000/a/b:2");
        let digest = format!("web:1@sha256:{}", "ab".repeat(32));
        assert_eq!(wire_image(&digest, "r"), "r/web:1");
    }

    fn no_refs() -> References<'static> {
        References { config_maps: &[], secrets: &[], node: None, claims: &[], sealing: Sealing::Sizing }
    }

    #[test]
    fn a_pod_of_several_containers_becomes_one_wire_pod_sharing_its_volumes() {
        let pod = sample_pod(serde_json::json!({
            "initContainers": [
                { "name": "migrate", "image": "busybox", "command": ["sh", "-c", "true"] },
                { "name": "proxy", "image": "envoy:1", "restartPolicy": "Always" },
            ],
            "containers": [
                { "name": "app", "image": "web:1", "volumeMounts": [{ "name": "cache", "mountPath": "/cache" }] },
                { "name": "logs", "image": "busybox",
                  "volumeMounts": [{ "name": "cache", "mountPath": "/var/log/app", "subPath": "logs", "readOnly": true }] },
            ],
            "volumes": [{ "name": "cache", "emptyDir": {} }],
        }));
        let (wire, _) = check(&pod, &no_refs(), "reg:7440").unwrap();
        let names: Vec<&str> = wire.all_containers().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["migrate", "proxy", "app", "logs"]);
        assert!(!wire.init_containers[0].sidecar && wire.init_containers[1].sidecar);
        assert_eq!(wire.containers[0].mounts[0].volume, wire.containers[1].mounts[0].volume);
        assert_eq!(wire.containers[1].mounts[0].sub_path.as_str(), "logs");
        assert_eq!(wire.containers[0].image.reference.as_str(), "reg:7440/web:1");
        // The compact profile holds one container per replica.
        let (wire, table) = check(&pod, &no_refs(), "reg:7440").unwrap();
        let why = compact::lower(&wire, &table).unwrap_err();
        assert_eq!(why, "4 containers with init containers (the compact profile runs one container per replica)");
    }

    #[test]
    fn the_downward_api_is_resolved_per_replica_on_its_node() {
        let mut pod = sample_pod(serde_json::json!({
            "containers": [{
                "name": "app", "image": "web:1",
                "resources": { "limits": { "memory": "64Mi" }, "requests": { "cpu": "250m" } },
                "env": [
                    { "name": "POD", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                    { "name": "NS", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                    { "name": "NODE", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } },
                    { "name": "HOST_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.hostIP" } } },
                    { "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
                    { "name": "APP", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['app']" } } },
                    { "name": "MEM_MI", "valueFrom": { "resourceFieldRef": { "resource": "limits.memory", "divisor": "1Mi" } } },
                    { "name": "CPU_M", "valueFrom": { "resourceFieldRef": { "resource": "requests.cpu", "divisor": "1m" } } },
                    { "name": "CPU", "valueFrom": { "resourceFieldRef": { "resource": "limits.cpu" } } },
                ],
            }],
        }));
        pod.metadata.labels.insert("app".into(), "web".into());
        pod.set_node_name(Some("edge-3"));
        let mut node = ApiObject::new(crate::manifest::Kind::Node, "", "edge-3");
        node.metadata.labels.insert(crate::controllers::endpoints::ADDRESS_LABEL.into(), "10.77.0.13".into());
        let mut status = crate::status::NodeStatus::default();
        status.allocatable.insert("cpu".into(), "1500m".into());
        node.set_status(&status);
        let refs =
            References { config_maps: &[], secrets: &[], node: Some(&node), claims: &[], sealing: Sealing::Sizing };
        let (wire, _) = check(&pod, &refs, "r").unwrap();
        let env: Vec<&str> = wire.containers[0].env.iter().collect();
        assert_eq!(
            env,
            [
                "POD=web-0",
                "NS=default",
                "NODE=edge-3",
                "HOST_IP=10.77.0.13",
                "POD_IP=10.77.0.13",
                "APP=web",
                "MEM_MI=64",
                "CPU_M=250",
                "CPU=2",
            ],
            "no cpu limit: the node's allocatable, in whole cores rounded up"
        );
    }

    #[test]
    fn a_config_object_is_one_entry_named_by_its_digest_and_built_once_per_version() {
        let mut map = ApiObject::new(crate::manifest::Kind::ConfigMap, "default", "settings");
        map.metadata.uid = "cm-1".into();
        map.metadata.resource_version = "5".into();
        map.set_field("data", serde_json::json!({ "big.txt": "x".repeat(600 * 1024), "small": "1" }));
        let maps = [Arc::new(map)];
        let refs = References { config_maps: &maps, secrets: &[], node: None, claims: &[], sealing: Sealing::Sizing };
        let pod = sample_pod(serde_json::json!({
            "containers": [
                { "name": "a", "image": "web:1", "volumeMounts": [{ "name": "s", "mountPath": "/etc/s" }] },
                { "name": "b", "image": "web:1", "volumeMounts": [{ "name": "s", "mountPath": "/etc/s" }] },
            ],
            "volumes": [{ "name": "s", "configMap": { "name": "settings" } }],
        }));
        let (wire, table) = check(&pod, &refs, "r").unwrap();
        assert_eq!(table.objects.len(), 1);
        let entry = &table.objects[0];
        let body = postcard::to_allocvec(&entry.blob).unwrap();
        assert_eq!(entry.digest, <[u8; 32]>::from(sha2::Sha256::digest(&body)));
        assert!(wire.containers.iter().all(|c| c.mounts[0].read_only), "config volumes mount read-only");
        let (_, again) = check(&pod, &refs, "r").unwrap();
        assert!(Arc::ptr_eq(&again.objects[0], entry), "the same version is not encoded twice");
        // 600 KiB is past the compact profile's 4 KiB.
        let why = compact::lower(&wire, &table).unwrap_err();
        assert!(why.contains("2 containers"), "{why}");
    }

    #[test]
    fn secret_values_are_sealed_for_the_one_node_and_open_with_its_key_only() {
        use firmware_proto::seal;
        let mut secret = ApiObject::new(crate::manifest::Kind::Secret, "default", "db");
        secret.metadata.uid = "s-1".into();
        secret.metadata.resource_version = "7".into();
        secret.set_field("stringData", serde_json::json!({ "password": "hunter2-secret", "user": "admin" }));
        let secrets = [Arc::new(secret)];
        let pod = sample_pod(serde_json::json!({
            "containers": [{
                "name": "app", "image": "web:1",
                "envFrom": [{ "secretRef": { "name": "db" }, "prefix": "DB_" }],
                "env": [
                    { "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "db", "key": "password" } } },
                    { "name": "MODE", "value": "prod" },
                    // Set after the Secret's: the plain value wins.
                    { "name": "DB_user", "value": "reader" },
                ],
                "volumeMounts": [{ "name": "creds", "mountPath": "/etc/db" }],
            }],
            "volumes": [{ "name": "creds", "secret": { "secretName": "db" } }],
        }));
        let node_key = seal::node_seal_key(&[9; 32]);
        let refs = References {
            config_maps: &[],
            secrets: &secrets,
            node: None,
            claims: &[],
            sealing: Sealing::For(node_key),
        };
        let (wire, table) = check(&pod, &refs, "r").unwrap();
        let container = &wire.containers[0];
        let plain: Vec<&str> = container.env.iter().collect();
        assert_eq!(plain, ["MODE=prod", "DB_user=reader"]);
        let context = seal::env_context(wire.id.as_str(), "app");
        let opened: Vec<String> = container
            .sealed_env
            .iter()
            .map(|sealed| String::from_utf8(seal::open(&node_key, &context, sealed).unwrap()).unwrap())
            .collect();
        assert_eq!(opened, ["DB_password=hunter2-secret", "PASSWORD=hunter2-secret"]);
        let other = seal::node_seal_key(&[8; 32]);
        assert!(seal::open(&other, &context, container.sealed_env.iter().next().unwrap()).is_err());

        // The files: sealed once under the version's data key, which the
        // document carries sealed for this node.
        let document = postcard::to_allocvec(&wire).unwrap();
        let entry = &table.objects[0];
        let blob = postcard::to_allocvec(&entry.blob).unwrap();
        for bytes in [&document, &blob] {
            assert!(!bytes.windows(b"hunter2".len()).any(|w| w == b"hunter2"), "a clear Secret value on the wire");
        }
        let reference = &table.refs(&Sealing::For(node_key))[0];
        let sealed_key = reference.sealed_key.as_ref().unwrap();
        let data_key: [u8; 32] = seal::open(&node_key, &entry.digest, &sealed_key.0).unwrap().try_into().unwrap();
        let names: Vec<&str> = entry.blob.file_names.iter().collect();
        let password = names.iter().position(|n| *n == "password").unwrap();
        let sealed_file = entry.blob.contents.iter().nth(password).unwrap();
        assert_eq!(
            seal::open(&data_key, &seal::file_context("db", "password"), sealed_file).unwrap(),
            b"hunter2-secret"
        );
        assert!(seal::open(&other, &entry.digest, &table.refs(&Sealing::For(other))[0].sealed_key.unwrap().0).is_ok());
        assert_ne!(table.refs(&Sealing::For(other))[0].sealed_key, reference.sealed_key.clone(), "each node its own");
        // Rebuilt, the document is the same bytes: nothing is resent.
        let (again, _) = check(&pod, &refs, "r").unwrap();
        assert_eq!(postcard::to_allocvec(&again).unwrap(), document);
        // A compact device cannot open sealed values.
        assert!(compact::lower(&wire, &table).unwrap_err().contains("not supported on compact-profile devices yet"));
        // A node with no credentials gets nothing of a Secret.
        let unsealable = References { sealing: Sealing::Unsealable, ..refs };
        let why = check(&pod, &unsealable, "r").unwrap_err();
        assert!(why.message.contains("no credentials"), "{why:?}");
    }
}
