//! The Linux profile's desired document: pods of several containers, with
//! limits sized for real workloads, and ConfigMaps and Secrets sent as
//! objects of their own (feature `alloc`).
//!
//! A [`PodDocument`] (kind 9, `nodes/{id}/pods`, retained, signed) lists a
//! node's pods and names the config objects they use by the sha256 of their
//! encoded body. Each object is a [`ConfigBlob`] (kind 10,
//! `nodes/{id}/config/{hex digest}`, retained, signed), so a pod change
//! does not resend a 1 MiB ConfigMap, and a ConfigMap change resends only
//! itself and the small document that names its new digest.
//!
//! Every list and string has a capacity (the `LINUX_*` constants); the
//! decoder refuses input over one while it reads, and the frame itself is
//! at most [`MAX_PODS_FRAME_LEN`] or [`MAX_CONFIG_FRAME_LEN`] bytes, so a
//! decode is bounded by what arrived.

use serde::{Deserialize, Serialize};

use crate::heap::{Blobs, List, Text, Texts};
use crate::msg::{
    ContainerName, DeviceMapping, Digest, ExtendedRequest, ImageRef, MAX_DEVICE_MAPPINGS, MAX_EXTENDED_REQUESTS,
    NodeId, Port, Probe, ReplicaId, Resources, RestartPolicy, Seccomp, User,
};
use crate::{Bytes, Name};

/// Maximum app containers in one pod.
pub const MAX_CONTAINERS: usize = 16;
/// Maximum init containers (sidecars included) in one pod.
pub const MAX_INIT_CONTAINERS: usize = 16;
/// Maximum `command` or `args` entries of a container.
pub const LINUX_ARGV_ITEMS: usize = 1024;
/// Bytes for all `command` (or all `args`) entries of a container.
pub const LINUX_ARGV_BYTES: usize = 32 * 1024;
/// Maximum environment variables of a container.
pub const LINUX_ENV_ITEMS: usize = 1024;
/// Bytes for all `NAME=value` environment entries of a container.
pub const LINUX_ENV_BYTES: usize = 32 * 1024;
/// Maximum bytes in a path (working dir, mount path, host path, sub path).
pub const LINUX_PATH_MAX: usize = 4096;
/// Maximum ports of a container.
pub const LINUX_MAX_PORTS: usize = 64;
/// Maximum volume mounts of a container.
pub const LINUX_MAX_MOUNTS: usize = 32;
/// Maximum volumes of a pod.
pub const LINUX_MAX_VOLUMES: usize = 64;
/// Maximum bytes in a volume name (a DNS label).
pub const VOLUME_NAME_MAX: usize = 63;
/// Maximum bytes in a ConfigMap/Secret name (a DNS subdomain).
pub const CONFIG_NAME_MAX: usize = 253;
/// Maximum config objects one document names.
pub const LINUX_MAX_CONFIG_OBJECTS: usize = 64;
/// Maximum files in one config object.
pub const LINUX_CONFIG_FILES: usize = 1024;
/// Bytes for all file names of one config object.
pub const LINUX_CONFIG_NAMES_BYTES: usize = 64 * 1024;
/// Bytes for all file contents of one config object (1 MiB, Kubernetes'
/// own limit for a ConfigMap or Secret).
pub const LINUX_CONFIG_DATA_BYTES: usize = 1024 * 1024;
/// Maximum claims one document lists.
pub const LINUX_MAX_CLAIMS: usize = 64;
/// Maximum bytes in a claim id (`{namespace}.{name}.{uid prefix}`).
pub const CLAIM_ID_MAX: usize = 160;
/// The largest [`PodDocument`] frame.
pub const MAX_PODS_FRAME_LEN: usize = crate::frame::MAX_ANY_FRAME_LEN;
pub use crate::frame::MAX_CONFIG_FRAME_LEN;
const _: () = assert!(LINUX_CONFIG_DATA_BYTES + LINUX_CONFIG_NAMES_BYTES + 4096 < MAX_CONFIG_FRAME_LEN);

/// A pod volume's name.
pub type VolumeName = Name<VOLUME_NAME_MAX>;

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Container {
    /// Its name, unique in the pod (init containers included).
    pub name: ContainerName,
    /// The image, pinned by digest.
    pub image: ImageRef,
    /// Entrypoint override; empty keeps the image's.
    pub command: Texts<LINUX_ARGV_BYTES, LINUX_ARGV_ITEMS>,
    /// Arguments override; empty keeps the image's.
    pub args: Texts<LINUX_ARGV_BYTES, LINUX_ARGV_ITEMS>,
    /// Environment as `NAME=value` entries, resolved by the controller
    /// (ConfigMaps, the downward API).
    pub env: Texts<LINUX_ENV_BYTES, LINUX_ENV_ITEMS>,
    /// Environment taken from Secrets: `NAME=value` entries each sealed for
    /// this node (`crate::seal`, context: pod id and container name). No
    /// name is in both lists.
    pub sealed_env: Blobs<LINUX_ENV_BYTES, LINUX_ENV_ITEMS>,
    /// Working directory; empty keeps the image's.
    pub working_dir: Text<LINUX_PATH_MAX>,
    /// User to run as; `None` keeps the image's.
    pub user: Option<User>,
    /// Requests and limits.
    pub resources: Resources,
    /// Extended resources (devices) requested.
    pub extended: List<ExtendedRequest, MAX_EXTENDED_REQUESTS>,
    /// Host devices mapped in.
    pub devices: List<DeviceMapping, MAX_DEVICE_MAPPINGS>,
    /// Ports.
    pub ports: List<Port, LINUX_MAX_PORTS>,
    /// Volume mounts, naming the pod's volumes by index.
    pub mounts: List<Mount, LINUX_MAX_MOUNTS>,
    /// Startup probe.
    pub startup_probe: Option<Probe>,
    /// Readiness probe.
    pub readiness_probe: Option<Probe>,
    /// Liveness probe.
    pub liveness_probe: Option<Probe>,
    /// Mount the root filesystem read-only.
    pub read_only_rootfs: bool,
    /// Seccomp profile.
    pub seccomp: Seccomp,
    /// An init container that starts before the app containers and stays
    /// up beside them (`restartPolicy: Always` on an init container).
    pub sidecar: bool,
}

/// A volume of a pod, shared by the containers that mount it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodVolume {
    /// Its name in the manifest.
    pub name: VolumeName,
    /// Where its content comes from.
    pub source: PodVolumeSource,
}

/// Where a pod volume's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PodVolumeSource {
    /// A fresh directory that lives as long as the pod on this node.
    EmptyDir {
        /// Back it with memory (tmpfs) instead of disk.
        in_memory: bool,
        /// Size cap, bytes.
        size_limit_bytes: Option<u64>,
    },
    /// A path on the node.
    HostPath {
        /// The host path.
        path: Text<LINUX_PATH_MAX>,
    },
    /// The files of a config object the document names.
    Config {
        /// Index into [`PodDocument::config`].
        index: u16,
    },
    /// A persistent claim's directory, kept on the node across pods and
    /// restarts until the document no longer lists the claim.
    Claim {
        /// Index into [`PodDocument::claims`].
        index: u16,
    },
}

/// A persistent volume claim held on this node: a directory that outlives
/// the pods that mount it. The node keeps every claim its document lists
/// and deletes the data of one it no longer lists.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Claim {
    /// Names its directory: a plain file name, unique in the document, that
    /// a re-created claim of the same name does not share.
    pub id: Text<CLAIM_ID_MAX>,
    /// The size asked for, bytes: checked against the free disk when the
    /// directory is made.
    pub size_bytes: u64,
}

/// A pod volume mounted into one container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mount {
    /// Index into the pod's [`PodSpec::volumes`].
    pub volume: u16,
    /// Where it appears in the container.
    pub mount_path: Text<LINUX_PATH_MAX>,
    /// Mount read-only.
    pub read_only: bool,
    /// A path inside the volume to mount instead of its root; empty for
    /// the root. Relative, without `..`.
    pub sub_path: Text<LINUX_PATH_MAX>,
}

/// One replica the node runs: a pod of one or more containers sharing its
/// volumes and the device's network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodSpec {
    /// Stable replica id; also the containers' hostname.
    pub id: ReplicaId,
    /// Run in order, each to completion (or, for a sidecar, until it
    /// runs), before the app containers start.
    pub init_containers: List<Container, MAX_INIT_CONTAINERS>,
    /// The app containers, started together. At least one.
    pub containers: List<Container, MAX_CONTAINERS>,
    /// The pod's volumes.
    pub volumes: List<PodVolume, LINUX_MAX_VOLUMES>,
    /// Restart policy of every container (sidecars always restart).
    pub restart_policy: RestartPolicy,
    /// Seconds between SIGTERM and SIGKILL when stopping.
    pub termination_grace_s: u16,
}

impl PodSpec {
    /// Init containers then app containers: the order of container
    /// indexes in [`crate::ContainerStatus::container`].
    pub fn all_containers(&self) -> impl Iterator<Item = &Container> {
        self.init_containers.iter().chain(self.containers.iter())
    }

    /// The container with this name.
    pub fn container(&self, name: &str) -> Option<&Container> {
        self.all_containers().find(|c| c.name.as_str() == name)
    }
}

/// A config object a document names: the node takes its files from the
/// [`ConfigBlob`] whose encoded body hashes to `digest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConfigRef {
    /// The ConfigMap's or Secret's name.
    pub name: Text<CONFIG_NAME_MAX>,
    /// A Secret (files mode 0400, never logged).
    pub secret: bool,
    /// sha256 of the [`ConfigBlob`] body.
    pub digest: Digest,
    /// Bytes of the blob body, so a node can tell what it waits for.
    pub size: u32,
    /// A Secret's: the key its files are sealed with, sealed for this node
    /// (`crate::seal`, context: `digest`). `None` for a ConfigMap.
    pub sealed_key: Option<Bytes<SEALED_KEY_LEN>>,
}

/// Bytes of a [`ConfigRef::sealed_key`]: a 32-byte key, nonce and tag.
pub const SEALED_KEY_LEN: usize = 60;

/// A Linux-profile node's whole desired state, on `nodes/{id}/pods`
/// (retained, signed).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodDocument {
    /// The node this document is for; a node refuses any other.
    pub node_id: NodeId,
    /// Increases with every change; a node never applies an older one.
    pub generation: u64,
    /// Every pod the node must run; anything else it stops.
    pub pods: List<PodSpec, { crate::msg::LINUX_MAX_PODS }>,
    /// The config objects the pods' volumes name.
    pub config: List<ConfigRef, LINUX_MAX_CONFIG_OBJECTS>,
    /// The claims this node holds, mounted by a pod or not.
    pub claims: List<Claim, LINUX_MAX_CLAIMS>,
}

/// A ConfigMap's or Secret's files, on `nodes/{id}/config/{hex digest}`
/// (retained, signed), named by the sha256 of this body's encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConfigBlob {
    /// The object's name.
    pub name: Text<CONFIG_NAME_MAX>,
    /// A Secret rather than a ConfigMap.
    pub secret: bool,
    /// File names; as many as `contents`.
    pub file_names: Texts<LINUX_CONFIG_NAMES_BYTES, LINUX_CONFIG_FILES>,
    /// File contents, in the order of `file_names`.
    pub contents: Blobs<LINUX_CONFIG_DATA_BYTES, LINUX_CONFIG_FILES>,
}

fn plain_file_name(name: &str) -> bool {
    !(name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0'))
}

fn relative_inside(path: &str) -> bool {
    !path.starts_with('/') && !path.split('/').any(|part| part == "..") && !path.contains('\0')
}

impl PodDocument {
    /// Checks what the types cannot: unique pod ids, at least one app
    /// container, container names unique in their pod, sidecars only among
    /// init containers, mounts and config volumes pointing inside the
    /// document, sub paths that stay inside their volume, claims with
    /// unique plain ids.
    pub fn validate(&self) -> Result<(), &'static str> {
        for (i, claim) in self.claims.iter().enumerate() {
            if !plain_file_name(&claim.id) {
                return Err("a claim id is empty or a path");
            }
            if self.claims[..i].iter().any(|c| c.id == claim.id) {
                return Err("two claims share an id");
            }
        }
        for (i, pod) in self.pods.iter().enumerate() {
            if self.pods[..i].iter().any(|p| p.id == pod.id) {
                return Err("two pods share an id");
            }
            if pod.containers.is_empty() {
                return Err("a pod has no container");
            }
            if pod.containers.iter().any(|c| c.sidecar) {
                return Err("a sidecar is not among its pod's init containers");
            }
            let names: alloc::vec::Vec<&str> = pod.all_containers().map(|c| c.name.as_str()).collect();
            if names.iter().enumerate().any(|(i, n)| names[..i].contains(n)) {
                return Err("two containers of a pod share a name");
            }
            for (i, volume) in pod.volumes.iter().enumerate() {
                if pod.volumes[..i].iter().any(|v| v.name == volume.name) {
                    return Err("two volumes of a pod share a name");
                }
                if let PodVolumeSource::Config { index } = volume.source
                    && usize::from(index) >= self.config.len()
                {
                    return Err("a volume refers to a config object that is not in the document");
                }
                if let PodVolumeSource::Claim { index } = volume.source
                    && usize::from(index) >= self.claims.len()
                {
                    return Err("a volume refers to a claim that is not in the document");
                }
            }
            for mount in pod.all_containers().flat_map(|c| c.mounts.iter()) {
                if usize::from(mount.volume) >= pod.volumes.len() {
                    return Err("a mount refers to a volume that is not in its pod");
                }
                if !relative_inside(&mount.sub_path) {
                    return Err("a mount's sub path leaves its volume");
                }
            }
        }
        Ok(())
    }
}

/// The body of a signed frame: what a [`ConfigRef::digest`] is the sha256
/// of. `None` for bytes too short to be a signed frame.
pub fn signed_body(frame: &[u8]) -> Option<&[u8]> {
    frame.get(crate::frame::HEADER_LEN..frame.len().checked_sub(crate::SIGNATURE_LEN)?)
}

impl ConfigBlob {
    /// Checks what the types cannot: as many names as contents, names that
    /// are plain file names.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.file_names.len() != self.contents.len() {
            return Err("a config object has a different number of file names and contents");
        }
        if !self.file_names.iter().all(plain_file_name) {
            return Err("a config file name is empty or a path");
        }
        Ok(())
    }
}

/// The name a compact replica's one container takes as a pod container.
pub const COMPACT_CONTAINER_NAME: &str = "main";

impl From<&crate::msg::ConfigObject> for ConfigBlob {
    fn from(object: &crate::msg::ConfigObject) -> Self {
        let mut contents = Blobs::new();
        for file in object.contents.iter() {
            // Cannot fail: the compact capacities are far below these.
            let _ = contents.push(file);
        }
        ConfigBlob {
            name: Text::new(&object.name).unwrap_or_default(),
            secret: object.secret,
            file_names: Texts::from_strs(object.file_names.iter()).unwrap_or_default(),
            contents,
        }
    }
}

impl From<&crate::msg::ReplicaSpec> for PodSpec {
    /// A compact replica as the one-container pod it stands for (its
    /// container named [`COMPACT_CONTAINER_NAME`]); a `Config` volume keeps
    /// its index into the document's config objects.
    fn from(replica: &crate::msg::ReplicaSpec) -> Self {
        use crate::msg::VolumeSource;
        // Nothing here can fail: every compact capacity is below the Linux one.
        let texts = |items: &mut dyn Iterator<Item = &str>| Texts::from_strs(items).unwrap_or_default();
        let text = |item: &str| Text::new(item).unwrap_or_default();
        let mut volumes = List::new();
        let mut mounts = List::new();
        for (i, volume) in replica.volumes.iter().enumerate() {
            let source = match &volume.source {
                VolumeSource::EmptyDir { in_memory, size_limit_bytes } => {
                    PodVolumeSource::EmptyDir { in_memory: *in_memory, size_limit_bytes: *size_limit_bytes }
                }
                VolumeSource::HostPath { path } => PodVolumeSource::HostPath { path: text(path) },
                VolumeSource::Config { index } => PodVolumeSource::Config { index: u16::from(*index) },
            };
            let name = Name::new(&volume.name).unwrap_or_else(|_| Name::new("volume").unwrap_or_default());
            let _ = volumes.push(PodVolume { name, source });
            let _ = mounts.push(Mount {
                volume: i as u16,
                mount_path: text(&volume.mount_path),
                read_only: volume.read_only,
                sub_path: Text::default(),
            });
        }
        let container = Container {
            name: Name::new(COMPACT_CONTAINER_NAME).unwrap_or_default(),
            image: replica.image.clone(),
            command: texts(&mut replica.command.iter()),
            args: texts(&mut replica.args.iter()),
            env: texts(&mut replica.env.iter()),
            sealed_env: Blobs::new(),
            working_dir: text(&replica.working_dir),
            user: replica.user,
            resources: replica.resources,
            extended: List::try_from(replica.extended.iter().cloned().collect::<alloc::vec::Vec<_>>())
                .unwrap_or_default(),
            devices: List::try_from(replica.devices.iter().cloned().collect::<alloc::vec::Vec<_>>())
                .unwrap_or_default(),
            ports: List::try_from(replica.ports.iter().cloned().collect::<alloc::vec::Vec<_>>()).unwrap_or_default(),
            mounts,
            startup_probe: replica.startup_probe.clone(),
            readiness_probe: replica.readiness_probe.clone(),
            liveness_probe: replica.liveness_probe.clone(),
            read_only_rootfs: replica.read_only_rootfs,
            seccomp: replica.seccomp,
            sidecar: false,
        };
        let mut containers = List::new();
        let _ = containers.push(container);
        PodSpec {
            id: replica.id.clone(),
            init_containers: List::new(),
            containers,
            volumes,
            restart_policy: replica.restart_policy,
            termination_grace_s: replica.termination_grace_s,
        }
    }
}
