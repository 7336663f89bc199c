//! A bound Pod -> the [`ReplicaSpec`] its node runs, with the ConfigMap and
//! Secret files it mounts. Everything the agent needs is resolved here
//! (env from ConfigMaps and Secrets, quantities, probe ports), so the agent
//! never reads the store.

use firmware_proto::{
    ConfigObject, ImageRef, Port, Probe, ProbeAction, Protocol, ReplicaSpec, Resources, RestartPolicy, Seccomp,
    TextList, User, VolumeMount, VolumeSource,
};
use std::sync::Arc;

use crate::controllers::image_pinning;
use crate::manifest::Quantity;
use crate::manifest::types::{Container, IntOrString, PodSpec, QuantityText};
use crate::object::ApiObject;

/// The ConfigMaps and Secrets of one desired document, in the order their
/// volumes refer to them by index.
#[derive(Debug, Default)]
pub struct ConfigTable {
    /// Objects in document order.
    pub objects: Vec<ConfigObject>,
    keys: Vec<(bool, String)>,
}

impl ConfigTable {
    fn index_of(&mut self, secret: bool, object: &ApiObject) -> Result<u8, String> {
        let key = (secret, object.metadata.name.clone());
        if let Some(i) = self.keys.iter().position(|k| *k == key) {
            return Ok(i as u8);
        }
        if self.objects.len() >= firmware_proto::MAX_CONFIG_OBJECTS {
            return Err(format!("more than {} ConfigMaps/Secrets on one node", firmware_proto::MAX_CONFIG_OBJECTS));
        }
        let mut config = ConfigObject {
            name: bounded(&object.metadata.name, "config object name")?,
            secret,
            file_names: TextList::default(),
            contents: firmware_proto::ByteList::default(),
        };
        for (name, bytes) in object.config_entries() {
            config.file_names.push(&name).map_err(|_| format!("{}: too many or too long file names", name))?;
            config
                .contents
                .push(&bytes)
                .map_err(|_| format!("{}/{name}: config files are limited to 4 KiB in all", object.metadata.name))?;
        }
        self.objects.push(config);
        self.keys.push(key);
        Ok((self.objects.len() - 1) as u8)
    }
}

/// Where ConfigMaps and Secrets are looked up.
pub struct References<'a> {
    /// ConfigMaps.
    pub config_maps: &'a [Arc<ApiObject>],
    /// Secrets.
    pub secrets: &'a [Arc<ApiObject>],
}

impl References<'_> {
    fn find(&self, secret: bool, namespace: &str, name: &str) -> Option<&ApiObject> {
        let list = if secret { self.secrets } else { self.config_maps };
        list.iter().find(|o| o.metadata.namespace == namespace && o.metadata.name == name).map(|o| &**o)
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
    /// `TooManyReplicas` or `InvalidReplica`.
    pub reason: &'static str,
    /// What is wrong, for the operator.
    pub message: String,
}

/// One node's desired document, projected from the replicas bound to it.
#[derive(Debug, Default)]
pub struct Document<'p> {
    /// The replicas, in replica-id order.
    pub replicas: Vec<ReplicaSpec>,
    /// The ConfigMaps and Secrets they mount, in volume index order.
    pub table: ConfigTable,
    /// The pod each replica stands for, in the same order.
    pub pods: Vec<&'p ApiObject>,
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
/// the spec names them.
pub fn references(spec: &PodSpec) -> Vec<Reference<'_>> {
    let mut out: Vec<Reference<'_>> = Vec::new();
    let mut add = |secret, name, key, optional, place| {
        out.push(Reference { secret, name, key, optional, place });
    };
    for container in &spec.containers {
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

/// Projects one node's replicas into its document: in replica-id order, as
/// many as a document holds. The publisher sends the result; the
/// scheduling controller makes the same projection to say, on the replica,
/// why one is left out, so that the publisher writes nothing back.
pub fn document<'p>(mut pods: Vec<&'p ApiObject>, refs: &References<'_>, default_registry: &str) -> Document<'p> {
    pods.sort_by_cached_key(|p| replica_id(p));
    let mut document = Document::default();
    for pod in pods {
        match project(pod, refs, default_registry, &mut document.table) {
            Ok(replica) if document.replicas.len() < firmware_proto::MAX_REPLICAS => {
                document.replicas.push(replica);
                document.pods.push(pod);
            }
            Ok(_) => document.left_out.push((
                pod,
                LeftOut {
                    reason: "TooManyReplicas",
                    message: format!(
                        "its node already runs {} replicas, the most one desired document holds",
                        firmware_proto::MAX_REPLICAS
                    ),
                },
            )),
            Err(message) => document.left_out.push((pod, LeftOut { reason: "InvalidReplica", message })),
        }
    }
    document
}

/// Whether `pod` alone projects onto the wire (a document of its own): what
/// is checked before a replica is bound.
pub fn check(pod: &ApiObject, refs: &References<'_>, default_registry: &str) -> Result<(), LeftOut> {
    project(pod, refs, default_registry, &mut ConfigTable::default())
        .map(drop)
        .map_err(|message| LeftOut { reason: "InvalidReplica", message })
}

/// `default_registry` spells out images that name none, as the agent pulls
/// them.
fn project(
    pod: &ApiObject,
    refs: &References<'_>,
    default_registry: &str,
    table: &mut ConfigTable,
) -> Result<ReplicaSpec, String> {
    let spec = pod.typed_spec::<PodSpec>().ok_or("the pod's spec is unreadable")?;
    let image = spec.containers.first().map(|c| c.image.as_str()).unwrap_or_default();
    let digest = image_pinning::pinned_digest(pod).ok_or("its image digest annotation is not a sha256 digest")?;
    build(pod, &spec, &wire_image(image, default_registry), digest, refs, table)
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

/// Converts a pod. `image` is its image reference with the registry
/// spelled out; `digest` the digest the controller pinned.
pub fn build(
    pod: &ApiObject,
    spec: &PodSpec,
    image: &str,
    digest: [u8; 32],
    refs: &References<'_>,
    table: &mut ConfigTable,
) -> Result<ReplicaSpec, String> {
    let container = match spec.containers.as_slice() {
        [one] => one,
        [] => return Err("the pod has no container".into()),
        _ => return Err("pods with more than one container are not supported yet".into()),
    };
    let namespace = pod.metadata.namespace.as_str();
    let mut replica = ReplicaSpec {
        id: firmware_proto::ReplicaId::new(&replica_id(pod)).map_err(|e| format!("replica id: {e}"))?,
        image: ImageRef { reference: bounded(image, "image")?, digest: firmware_proto::Bytes(digest) },
        command: text_list(&container.command, "command")?,
        args: text_list(&container.args, "args")?,
        env: text_list(&env_of(container, namespace, refs)?, "env")?,
        working_dir: bounded(container.working_dir.as_deref().unwrap_or(""), "workingDir")?,
        user: None,
        resources: resources(container),
        extended: heapless::Vec::new(),
        devices: heapless::Vec::new(),
        ports: heapless::Vec::new(),
        volumes: heapless::Vec::new(),
        startup_probe: None,
        readiness_probe: None,
        liveness_probe: None,
        restart_policy: RestartPolicy::Always,
        read_only_rootfs: false,
        seccomp: Seccomp::RuntimeDefault,
        termination_grace_s: 30,
    };
    for port in &container.ports {
        let protocol = match port.protocol.as_deref() {
            Some("UDP") => Protocol::Udp,
            _ => Protocol::Tcp,
        };
        let container_port = u16::try_from(port.container_port).map_err(|_| "containerPort out of range".to_owned())?;
        let host_port =
            port.host_port.map(u16::try_from).transpose().map_err(|_| "hostPort out of range".to_owned())?;
        replica
            .ports
            .push(Port { name: bounded(&port.name, "port name")?, container_port, host_port, protocol })
            .map_err(|_| format!("more than {} ports", firmware_proto::MAX_PORTS))?;
    }
    for mount in &container.volume_mounts {
        let volume = spec
            .volumes
            .iter()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| format!("volumeMount {:?} names no volume", mount.name))?;
        let source = if let Some(empty) = &volume.empty_dir {
            VolumeSource::EmptyDir {
                in_memory: empty.medium.as_deref() == Some("Memory"),
                size_limit_bytes: empty.size_limit.as_ref().and_then(quantity).map(|q| q.as_units() as u64),
            }
        } else if let Some(host) = &volume.host_path {
            VolumeSource::HostPath { path: bounded(&host.path, "hostPath")? }
        } else if let Some(r) = &volume.config_map {
            let object =
                refs.find(false, namespace, &r.name).ok_or_else(|| format!("configmap {:?} not found", r.name))?;
            VolumeSource::Config { index: table.index_of(false, object)? }
        } else if let Some(r) = &volume.secret {
            let object = refs
                .find(true, namespace, &r.secret_name)
                .ok_or_else(|| format!("secret {:?} not found", r.secret_name))?;
            VolumeSource::Config { index: table.index_of(true, object)? }
        } else {
            return Err(format!("volume {:?}: no supported source", volume.name));
        };
        replica
            .volumes
            .push(VolumeMount {
                name: bounded(&mount.name, "volume name")?,
                mount_path: bounded(&mount.mount_path, "mountPath")?,
                read_only: mount.read_only,
                source,
            })
            .map_err(|_| format!("more than {} volumes", firmware_proto::MAX_VOLUMES))?;
    }
    replica.startup_probe = container.startup_probe.as_ref().map(|p| probe(p, container)).transpose()?;
    replica.readiness_probe = container.readiness_probe.as_ref().map(|p| probe(p, container)).transpose()?;
    replica.liveness_probe = container.liveness_probe.as_ref().map(|p| probe(p, container)).transpose()?;
    replica.restart_policy = match spec.restart_policy.as_deref() {
        Some("Never") => RestartPolicy::Never,
        Some("OnFailure") => RestartPolicy::OnFailure,
        _ => RestartPolicy::Always,
    };
    if let Some(security) = &container.security_context {
        replica.read_only_rootfs = security.read_only_root_filesystem.unwrap_or(false);
        if let Some(uid) = security.run_as_user {
            let uid = u32::try_from(uid).map_err(|_| "runAsUser out of range".to_owned())?;
            let gid = u32::try_from(security.run_as_group.unwrap_or(uid as i64))
                .map_err(|_| "runAsGroup out of range".to_owned())?;
            replica.user = Some(User { uid, gid });
        }
        if security.seccomp_profile.as_ref().is_some_and(|p| p.profile_type == "Unconfined") {
            replica.seccomp = Seccomp::Unconfined;
        }
    }
    replica.termination_grace_s = spec.termination_grace_period_seconds.unwrap_or(30).min(u16::MAX as u32) as u16;
    Ok(replica)
}

fn env_of(container: &Container, namespace: &str, refs: &References<'_>) -> Result<Vec<String>, String> {
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
                    env.push(format!("{}{key}={}", from.prefix, String::from_utf8_lossy(&bytes)));
                }
            }
            None if r.optional => {}
            None => return Err(format!("envFrom: {:?} not found", r.name)),
        }
    }
    for var in &container.env {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(source)) => {
                let (secret, r) = match (&source.config_map_key_ref, &source.secret_key_ref) {
                    (Some(r), _) => (false, r),
                    (None, Some(r)) => (true, r),
                    (None, None) => continue,
                };
                let found = refs
                    .find(secret, namespace, &r.name)
                    .and_then(|o| o.config_entries().into_iter().find(|(k, _)| *k == r.key));
                match found {
                    Some((_, bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
                    None if r.optional => continue,
                    None => return Err(format!("env {}: key {:?} of {:?} not found", var.name, r.key, r.name)),
                }
            }
            (None, None) => String::new(),
        };
        env.push(format!("{}={value}", var.name));
    }
    Ok(env)
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
        ProbeAction::Exec { command: text_list(&exec.command, "probe command")? }
    } else if let Some(http) = &p.http_get {
        ProbeAction::HttpGet {
            path: bounded(http.path.as_deref().unwrap_or("/"), "probe path")?,
            port: port_of(&http.port)?,
            https: http.scheme.as_deref() == Some("HTTPS"),
        }
    } else if let Some(tcp) = &p.tcp_socket {
        ProbeAction::Tcp { port: port_of(&tcp.port)? }
    } else {
        return Err("a probe needs exec, httpGet or tcpSocket".into());
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

fn text_list<const B: usize, const I: usize>(items: &[String], what: &str) -> Result<TextList<B, I>, String> {
    TextList::from_strs(items.iter().map(String::as_str))
        .map_err(|_| format!("{what}: at most {I} items and {B} bytes in all"))
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
}
