//! The messages between the controller and the nodes.
//!
//! Field order is wire order (postcard encodes struct fields in declaration
//! order with no names or tags), so **never reorder fields or enum
//! variants**; enums only grow at the end, and a new struct field means a new
//! protocol version (see `WIRE.md`). Every capacity below is a `pub const`
//! so that the controller can validate manifests against it before anything
//! reaches the wire.

use serde::{Deserialize, Serialize};

use crate::bounded::{ByteList, Bytes, Name, TextList};

// ---------------------------------------------------------------------------
// Capacities

/// Maximum bytes in a node id.
pub const NODE_ID_MAX: usize = 48;
/// Maximum bytes in a replica id (Kubernetes' DNS label limit).
pub const REPLICA_ID_MAX: usize = 63;
/// Maximum replicas in one compact-profile desired document, and so the
/// most workloads a compact-profile node runs.
pub const MAX_REPLICAS: usize = 16;
/// Maximum replicas (pods) in one Linux-profile document
/// ([`crate::pod::PodDocument`]).
pub const LINUX_MAX_PODS: usize = 64;
/// Maximum replicas one heartbeat reports: the larger profile's.
pub const MAX_STATUS_REPLICAS: usize = LINUX_MAX_PODS;
/// Maximum per-container entries in one heartbeat (only pods of more than
/// one container report them).
pub const MAX_STATUS_CONTAINERS: usize = 256;
/// Maximum bytes in a container name (a DNS label).
pub const CONTAINER_NAME_MAX: usize = 63;
/// Maximum bytes in a gRPC probe's service name.
pub const GRPC_SERVICE_MAX: usize = 96;
/// Maximum labels a node reports.
pub const MAX_LABELS: usize = 16;
/// Maximum bytes in a label or taint key.
pub const LABEL_KEY_MAX: usize = 63;
/// Maximum bytes in a label or taint value.
pub const LABEL_VALUE_MAX: usize = 63;
/// Maximum taints a node reports.
pub const MAX_TAINTS: usize = 8;
/// Maximum device classes (extended resources) a node reports.
pub const MAX_DEVICE_CLASSES: usize = 8;
/// Maximum bytes in an extended-resource name such as `flotilla.io/serial`.
pub const RESOURCE_NAME_MAX: usize = 63;
/// Maximum device paths of one device class, and bytes for all of them.
pub const MAX_DEVICE_PATHS: usize = 8;
/// Bytes for all device paths of one device class.
pub const DEVICE_PATHS_BYTES: usize = 256;
/// Maximum bytes in an agent version string.
pub const VERSION_MAX: usize = 32;
/// Maximum bytes in an image reference (`registry/repo:tag`).
pub const IMAGE_REF_MAX: usize = 200;
/// Maximum `command` entries of a container, and bytes for all of them.
pub const COMMAND_ITEMS: usize = 8;
/// Bytes for all `command` entries of a container.
pub const COMMAND_BYTES: usize = 256;
/// Maximum `args` entries of a container.
pub const ARGS_ITEMS: usize = 24;
/// Bytes for all `args` entries of a container.
pub const ARGS_BYTES: usize = 512;
/// Maximum environment variables of a container.
pub const ENV_ITEMS: usize = 32;
/// Bytes for all `NAME=value` environment entries of a container.
pub const ENV_BYTES: usize = 1024;
/// Maximum bytes in a path (working dir, mount path, host path, device path).
pub const PATH_MAX: usize = 96;
/// Maximum extended-resource requests of a container.
pub const MAX_EXTENDED_REQUESTS: usize = 4;
/// Maximum device mappings of a container.
pub const MAX_DEVICE_MAPPINGS: usize = 4;
/// Maximum ports of a container.
pub const MAX_PORTS: usize = 8;
/// Maximum bytes in a port name (Kubernetes' IANA service name limit).
pub const PORT_NAME_MAX: usize = 15;
/// Maximum volume mounts of a container.
pub const MAX_VOLUMES: usize = 6;
/// Maximum bytes in a volume or config object name.
pub const OBJECT_NAME_MAX: usize = 63;
/// Maximum bytes in an HTTP probe path.
pub const PROBE_PATH_MAX: usize = 96;
/// Maximum ConfigMap/Secret objects in one desired document.
pub const MAX_CONFIG_OBJECTS: usize = 8;
/// Maximum files in one ConfigMap/Secret object.
pub const CONFIG_FILES: usize = 16;
/// Bytes for all file names of one ConfigMap/Secret object.
pub const CONFIG_NAMES_BYTES: usize = 256;
/// Bytes for all file contents of one ConfigMap/Secret object.
pub const CONFIG_DATA_BYTES: usize = 4096;
/// Maximum bytes in a human-readable reason carried by an event.
pub const REASON_MAX: usize = 96;
/// Maximum bytes of container output in one [`LogChunk`]: a larger answer
/// travels as several chunks, so no frame nears [`crate::MAX_FRAME_LEN`].
pub const LOG_CHUNK_MAX: usize = 4096;
/// Maximum Service ports in one node's service table.
pub const MAX_SERVICES: usize = 16;
/// Maximum endpoints of one Service port.
pub const MAX_ENDPOINTS: usize = 32;

// ---------------------------------------------------------------------------
// Identifiers and small shared types

/// A node's id: also its MQTT client id and the `{id}` in its topics.
pub type NodeId = Name<NODE_ID_MAX>;
/// A replica's stable id, e.g. `web-7f3a-2`.
pub type ReplicaId = Name<REPLICA_ID_MAX>;
/// A sha256 digest, raw (32 bytes on the wire, not 71 characters of hex).
pub type Digest = Bytes<32>;
/// A per-node message authentication code over a node frame.
pub type MacTag = Bytes<16>;
/// An Ed25519 signature over a controller frame.
pub type Signature = Bytes<64>;
/// A human-readable reason, cut to [`REASON_MAX`] bytes.
pub type Reason = heapless::String<REASON_MAX>;
/// A container's name within its pod.
pub type ContainerName = Name<CONTAINER_NAME_MAX>;

/// Which desired document a node takes: the limits it can hold.
///
/// The compact profile is sized for a microcontroller that decodes with no
/// allocator (one container per replica, a few KiB of config); the Linux
/// profile for an agent with megabytes to spare (pods of several
/// containers, large args and env, ConfigMaps of up to 1 MiB sent as
/// objects of their own). A node names its profile in its [`Hello`]; the
/// controller places on it only what the profile holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Profile {
    /// [`DesiredState`] documents: [`MAX_REPLICAS`] single-container
    /// replicas, inline config objects.
    Compact,
    /// [`crate::pod::PodDocument`] documents with
    /// [`crate::pod::ConfigBlob`]s.
    Linux,
}

impl Profile {
    /// The most replicas one document of this profile holds.
    pub const fn max_replicas(self) -> usize {
        match self {
            Profile::Compact => MAX_REPLICAS,
            Profile::Linux => LINUX_MAX_PODS,
        }
    }

    /// The name operators see (`compact`, `linux`).
    pub const fn name(self) -> &'static str {
        match self {
            Profile::Compact => "compact",
            Profile::Linux => "linux",
        }
    }
}

/// CPU architecture, as OCI image platforms name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arch {
    /// x86_64 (`amd64`).
    Amd64,
    /// 64-bit ARM (`arm64`).
    Arm64,
    /// 32-bit ARM (`arm`, variant v7 for Linux boards, Cortex-M for MCUs).
    Arm,
    /// 64-bit RISC-V (`riscv64`).
    Riscv64,
}

impl Arch {
    /// The architecture this code was compiled for, if Flotilla knows it.
    pub const fn current() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::Amd64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Arm64)
        } else if cfg!(target_arch = "arm") {
            Some(Arch::Arm)
        } else if cfg!(target_arch = "riscv64") {
            Some(Arch::Riscv64)
        } else {
            None
        }
    }

    /// The OCI platform name (`amd64`, `arm64`, `arm`, `riscv64`).
    pub const fn oci_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Arm => "arm",
            Arch::Riscv64 => "riscv64",
        }
    }
}

/// Operating system of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Os {
    /// Linux: runs containers.
    Linux,
    /// A microcontroller with no OS: speaks the protocol, runs no containers.
    BareMetal,
}

/// What a node can offer. Memory in bytes, CPU in millicores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Capacity {
    /// CPU in millicores (1000 = one core).
    pub cpu_millis: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Maximum replicas the node runs at once (at most its profile's
    /// [`Profile::max_replicas`]).
    pub max_workloads: u16,
}

/// A `key=value` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Label {
    /// The key, e.g. `flotilla.io/zone`.
    pub key: heapless::String<LABEL_KEY_MAX>,
    /// The value, possibly empty.
    pub value: heapless::String<LABEL_VALUE_MAX>,
}

/// What a taint does to replicas that do not tolerate it (Kubernetes semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaintEffect {
    /// Not scheduled here unless tolerated.
    NoSchedule,
    /// Avoided if possible.
    PreferNoSchedule,
    /// Not scheduled here, and evicted if already running.
    NoExecute,
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Taint {
    /// The key.
    pub key: heapless::String<LABEL_KEY_MAX>,
    /// The value, possibly empty.
    pub value: heapless::String<LABEL_VALUE_MAX>,
    /// The effect.
    pub effect: TaintEffect,
}

/// Attached hardware offered as an extended resource, e.g. two serial ports
/// as `flotilla.io/serial: 2` with their device paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceClass {
    /// Extended resource name, e.g. `flotilla.io/serial`.
    pub resource: heapless::String<RESOURCE_NAME_MAX>,
    /// How many are free to allocate.
    pub count: u16,
    /// Device nodes, e.g. `/dev/ttyUSB0`, one per unit where it applies.
    pub paths: TextList<DEVICE_PATHS_BYTES, MAX_DEVICE_PATHS>,
}

// ---------------------------------------------------------------------------
// Node -> controller

/// Registration, published retained on `nodes/{id}/hello` at every connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The node's id; must equal the `{id}` of the topic.
    pub node_id: NodeId,
    /// CPU architecture.
    pub arch: Arch,
    /// Operating system.
    pub os: Os,
    /// Total resources of the device.
    pub capacity: Capacity,
    /// Resources left for workloads after the system's reserve.
    pub allocatable: Capacity,
    /// Node labels.
    pub labels: heapless::Vec<Label, MAX_LABELS>,
    /// Node taints.
    pub taints: heapless::Vec<Taint, MAX_TAINTS>,
    /// Attached devices offered as extended resources.
    pub devices: heapless::Vec<DeviceClass, MAX_DEVICE_CLASSES>,
    /// The agent's version, e.g. `0.1.0`.
    pub agent_version: heapless::String<VERSION_MAX>,
    /// The highest protocol version the node speaks.
    pub max_protocol_version: u8,
    /// The desired-document profile the node takes.
    pub profile: Profile,
}

/// Whether the node is connected; `nodes/{id}/online`, retained. The agent
/// sets [`Presence::Offline`] as its MQTT Last Will.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Presence {
    /// Connected.
    Online,
    /// The connection dropped (the Last Will).
    Offline,
    /// The agent is stopping on purpose (reboot, update).
    ShuttingDown,
}

/// Lifecycle phase of a replica on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Accepted, not started yet.
    Pending,
    /// Downloading its image.
    Pulling,
    /// Container being created.
    Creating,
    /// Process running.
    Running,
    /// Exited 0 and will not be restarted.
    Succeeded,
    /// Exited non-zero (or refused) and will not be restarted.
    Failed,
    /// Waiting out a restart back-off after repeated failures.
    CrashLoopBackOff,
    /// Being stopped.
    Terminating,
    /// The agent lost track of it (e.g. its runtime helper restarted).
    Unknown,
}

/// Probe-derived readiness of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Readiness {
    /// No readiness probe: ready while running.
    NoProbe,
    /// The startup probe has not passed yet.
    Starting,
    /// The readiness probe passes.
    Ready,
    /// The readiness probe fails.
    NotReady,
}

/// Why a container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExitReason {
    /// It exited by itself.
    Exited,
    /// The kernel's OOM killer ended it at its memory limit.
    OomKilled,
    /// The agent killed it after its liveness probe failed.
    LivenessFailed,
    /// A signal ended it (the code is 128 + signal).
    Signaled,
    /// The agent stopped it because it left the desired document.
    Stopped,
}

/// How a container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Exit {
    /// Exit code, shell style: 128 + signal number when killed by a signal.
    pub code: i32,
    /// Why it ended.
    pub reason: ExitReason,
}

/// Which replica a status entry is about.
///
/// A slot (its index in the desired document of [`Status::generation`])
/// costs two bytes instead of the whole id: heartbeats are paid for by the
/// byte. Replicas outside that document (still being stopped) go by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicaRef {
    /// Index into the replicas of the desired document at `generation`.
    Slot(u8),
    /// A replica not in that document.
    Id(ReplicaId),
}

/// One replica's state in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Which replica.
    pub replica: ReplicaRef,
    /// Its phase.
    pub phase: Phase,
    /// Restarts since it was first started on this node.
    pub restarts: u32,
    /// How its last run ended, if it ever ended.
    pub last_exit: Option<Exit>,
    /// Probe-derived readiness.
    pub readiness: Readiness,
    /// CPU usage in millicores, averaged since the previous heartbeat.
    pub cpu_millis: u32,
    /// Memory working set in KiB (KiB, not bytes: one varint byte less).
    pub memory_kib: u32,
}

/// Usage of the whole node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct NodeUsage {
    /// CPU in use, millicores.
    pub cpu_millis: u32,
    /// Memory in use, KiB.
    pub memory_kib: u32,
    /// Free space for images and volumes, MiB.
    pub disk_free_mib: u32,
}

/// The heartbeat on `nodes/{id}/status`: full level state, not a delta, so
/// that any single heartbeat that arrives tells the whole truth.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Status {
    /// Generation of the last desired document the node applied (0: none).
    pub generation: u64,
    /// Usage of the whole node.
    pub usage: NodeUsage,
    /// Every replica the node runs or is stopping.
    pub replicas: heapless::Vec<ReplicaStatus, MAX_STATUS_REPLICAS>,
    /// Each container of the replicas above that run more than one (init
    /// containers first, then the app containers, in document order). A
    /// single-container replica's entry above is its container's.
    pub containers: heapless::Vec<ContainerStatus, MAX_STATUS_CONTAINERS>,
}

/// Where one container of a pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContainerState {
    /// Not started (waiting for its image, its init containers, a back-off).
    Waiting,
    /// Its process runs.
    Running,
    /// It ended and stays ended (an init container that completed, or by
    /// the restart policy).
    Terminated,
}

/// One container of a multi-container replica, in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Index of its replica in [`Status::replicas`].
    pub replica: u8,
    /// Index of the container in its pod: init containers first, then the
    /// app containers.
    pub container: u8,
    /// Where it is.
    pub state: ContainerState,
    /// Running and passing its readiness probe (if any).
    pub ready: bool,
    /// Restarts on this node.
    pub restarts: u32,
    /// How its last run ended.
    pub last_exit: Option<Exit>,
    /// CPU usage in millicores.
    pub cpu_millis: u32,
    /// Memory working set in KiB.
    pub memory_kib: u32,
}

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProbeKind {
    /// Startup probe.
    Startup,
    /// Readiness probe.
    Readiness,
    /// Liveness probe.
    Liveness,
}

/// What happened, for `nodes/{id}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// The container's process started.
    Started,
    /// The container's process ended.
    Exited(Exit),
    /// The container was OOM-killed at its memory limit.
    OomKilled {
        /// The memory limit it hit, bytes.
        limit_bytes: u64,
    },
    /// A probe failed.
    ProbeFailed {
        /// Which probe.
        probe: ProbeKind,
        /// Consecutive failures so far.
        failures: u16,
        /// What the probe saw.
        reason: Reason,
    },
    /// Image download progress.
    PullProgress {
        /// Manifest digest of the image being pulled.
        image: Digest,
        /// Bytes downloaded so far.
        done_bytes: u64,
        /// Bytes in all, when known.
        total_bytes: u64,
    },
    /// An image pull failed (digest mismatch, disk full, unreachable).
    PullFailed {
        /// Manifest digest of the image.
        image: Digest,
        /// Why.
        reason: Reason,
    },
    /// The node refused a desired document or one replica of it.
    Rejected {
        /// Generation of the refused document.
        generation: u64,
        /// Why (wrong node id, arch mismatch, missing image...).
        reason: Reason,
    },
}

/// An event on `nodes/{id}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    /// When, in milliseconds since the Unix epoch, by the node's clock.
    pub at_unix_ms: u64,
    /// The replica concerned, or `None` for node-wide events.
    pub replica: Option<ReplicaId>,
    /// What happened.
    pub kind: EventKind,
    /// The container concerned in a pod of several, or `None`.
    pub container: Option<ContainerName>,
}

// ---------------------------------------------------------------------------
// Controller -> node

/// An image pinned to its manifest digest, so every node runs the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageRef {
    /// Where to pull from, e.g. `registry.local:7441/sensor:1.2`.
    pub reference: heapless::String<IMAGE_REF_MAX>,
    /// sha256 of the image manifest (or index) to run.
    pub digest: Digest,
}

/// Resource requests and limits of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Resources {
    /// CPU the scheduler reserves, millicores.
    pub cpu_request_millis: u32,
    /// Memory the scheduler reserves, bytes.
    pub memory_request_bytes: u64,
    /// CPU quota, millicores; `None` for no quota.
    pub cpu_limit_millis: Option<u32>,
    /// Memory limit, bytes (the cgroup's hard limit); `None` for none.
    pub memory_limit_bytes: Option<u64>,
    /// Maximum processes; `None` for the agent's default.
    pub pids_limit: Option<u32>,
}

/// A request for units of an extended resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExtendedRequest {
    /// Resource name, e.g. `flotilla.io/serial`.
    pub resource: heapless::String<RESOURCE_NAME_MAX>,
    /// Units requested.
    pub count: u16,
}

/// A host device node made visible in the container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceMapping {
    /// Path on the host, e.g. `/dev/ttyUSB0`.
    pub host_path: heapless::String<PATH_MAX>,
    /// Path in the container.
    pub container_path: heapless::String<PATH_MAX>,
    /// Access bits: 1 read, 2 write, 4 mknod (cgroup device `rwm`).
    pub access: u8,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A port a container listens on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Port {
    /// Optional name, referenced by Services and probes.
    pub name: heapless::String<PORT_NAME_MAX>,
    /// Port inside the container.
    pub container_port: u16,
    /// Port on the node, if published there.
    pub host_port: Option<u16>,
    /// Protocol.
    pub protocol: Protocol,
}

/// Where a volume's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VolumeSource {
    /// A fresh directory that lives as long as the replica on this node.
    EmptyDir {
        /// Back it with memory (tmpfs) instead of disk.
        in_memory: bool,
        /// Size cap, bytes.
        size_limit_bytes: Option<u64>,
    },
    /// A path on the node.
    HostPath {
        /// The host path.
        path: heapless::String<PATH_MAX>,
    },
    /// Files of a ConfigMap or Secret carried in [`DesiredState::config`].
    Config {
        /// Index into [`DesiredState::config`].
        index: u8,
    },
}

/// A volume mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VolumeMount {
    /// Volume name from the manifest.
    pub name: heapless::String<OBJECT_NAME_MAX>,
    /// Where it appears in the container.
    pub mount_path: heapless::String<PATH_MAX>,
    /// Mount read-only.
    pub read_only: bool,
    /// Its content.
    pub source: VolumeSource,
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProbeAction {
    /// Run a command in the container's namespaces; exit 0 passes.
    Exec {
        /// argv.
        command: TextList<COMMAND_BYTES, COMMAND_ITEMS>,
    },
    /// HTTP GET on the container; 200-399 passes.
    HttpGet {
        /// Request path.
        path: heapless::String<PROBE_PATH_MAX>,
        /// Port.
        port: u16,
        /// Use HTTPS.
        https: bool,
    },
    /// A TCP connect passes.
    Tcp {
        /// Port.
        port: u16,
    },
    /// The standard gRPC health check (`grpc.health.v1.Health/Check`)
    /// answers SERVING.
    Grpc {
        /// Port.
        port: u16,
        /// The service asked about; empty for the server as a whole.
        service: heapless::String<GRPC_SERVICE_MAX>,
    },
}

/// A container probe (Kubernetes semantics and defaults).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Probe {
    /// What to check.
    pub action: ProbeAction,
    /// Seconds after start before the first check.
    pub initial_delay_s: u16,
    /// Seconds between checks.
    pub period_s: u16,
    /// Seconds before one check counts as failed.
    pub timeout_s: u16,
    /// Consecutive passes to count as passing.
    pub success_threshold: u8,
    /// Consecutive failures to count as failing.
    pub failure_threshold: u8,
}

/// When a container is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Always (Deployments, DaemonSets).
    Always,
    /// Only after a non-zero exit (Jobs).
    OnFailure,
    /// Never (Jobs).
    Never,
}

/// The seccomp filter a container runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Seccomp {
    /// The agent's default profile, like Docker's.
    RuntimeDefault,
    /// No filter (must be asked for explicitly in the manifest).
    Unconfined,
}

/// A numeric user and group to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// One replica the node must run: a single container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaSpec {
    /// Stable replica id; also the container's hostname.
    pub id: ReplicaId,
    /// The image, pinned by digest.
    pub image: ImageRef,
    /// Entrypoint override; empty keeps the image's.
    pub command: TextList<COMMAND_BYTES, COMMAND_ITEMS>,
    /// Arguments override; empty keeps the image's.
    pub args: TextList<ARGS_BYTES, ARGS_ITEMS>,
    /// Environment as `NAME=value` entries (already resolved from ConfigMaps
    /// and Secrets by the controller).
    pub env: TextList<ENV_BYTES, ENV_ITEMS>,
    /// Working directory; empty keeps the image's.
    pub working_dir: heapless::String<PATH_MAX>,
    /// User to run as; `None` keeps the image's.
    pub user: Option<User>,
    /// Requests and limits.
    pub resources: Resources,
    /// Extended resources (devices) requested.
    pub extended: heapless::Vec<ExtendedRequest, MAX_EXTENDED_REQUESTS>,
    /// Host devices mapped in (chosen by the controller from the requests).
    pub devices: heapless::Vec<DeviceMapping, MAX_DEVICE_MAPPINGS>,
    /// Ports.
    pub ports: heapless::Vec<Port, MAX_PORTS>,
    /// Volume mounts.
    pub volumes: heapless::Vec<VolumeMount, MAX_VOLUMES>,
    /// Startup probe.
    pub startup_probe: Option<Probe>,
    /// Readiness probe.
    pub readiness_probe: Option<Probe>,
    /// Liveness probe.
    pub liveness_probe: Option<Probe>,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// Mount the root filesystem read-only.
    pub read_only_rootfs: bool,
    /// Seccomp profile.
    pub seccomp: Seccomp,
    /// Seconds between SIGTERM and SIGKILL when stopping.
    pub termination_grace_s: u16,
}

/// Files of a ConfigMap or Secret, mounted by [`VolumeSource::Config`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConfigObject {
    /// Object name.
    pub name: heapless::String<OBJECT_NAME_MAX>,
    /// A Secret (files mode 0400, never logged) rather than a ConfigMap.
    pub secret: bool,
    /// File names; the same count as `contents`.
    pub file_names: TextList<CONFIG_NAMES_BYTES, CONFIG_FILES>,
    /// File contents, in the order of `file_names`.
    pub contents: ByteList<CONFIG_DATA_BYTES, CONFIG_FILES>,
}

/// One node's whole desired state, published retained on
/// `nodes/{id}/desired` and signed by the controller: the form that is
/// encoded. Borrowed slices, so the controller encodes from wherever it
/// keeps replicas; decoding gives a [`crate::DesiredView`] instead.
///
/// Why not one owned struct: a `heapless::Vec` of [`MAX_REPLICAS`] full
/// replica specs is ~150 KB, which serde copies through several stack
/// frames while decoding; that overflowed 2 MiB threads in debug builds.
/// Replicas are instead decoded one at a time (~7 KB each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct DesiredState<'a> {
    /// The node this document is for; a node refuses any other.
    pub node_id: &'a NodeId,
    /// Increases with every change; a node never applies an older one.
    pub generation: u64,
    /// Every replica the node must run, at most [`MAX_REPLICAS`]; anything
    /// else it stops.
    pub replicas: &'a [ReplicaSpec],
    /// ConfigMap and Secret files referenced by the replicas' volumes, at
    /// most [`MAX_CONFIG_OBJECTS`].
    pub config: &'a [ConfigObject],
}

/// An owned desired-state document, for hosts with an allocator: what the
/// controller builds and the agent keeps.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DesiredDocument {
    /// The node this document is for.
    pub node_id: NodeId,
    /// Increases with every change.
    pub generation: u64,
    /// Every replica the node must run.
    pub replicas: alloc::vec::Vec<ReplicaSpec>,
    /// ConfigMap and Secret files referenced by the replicas' volumes.
    pub config: alloc::vec::Vec<ConfigObject>,
}

#[cfg(feature = "alloc")]
impl DesiredDocument {
    /// The borrowed form that [`crate::encode_signed`] takes.
    pub fn as_state(&self) -> DesiredState<'_> {
        DesiredState {
            node_id: &self.node_id,
            generation: self.generation,
            replicas: &self.replicas,
            config: &self.config,
        }
    }
}

#[cfg(feature = "alloc")]
impl From<&crate::frame::DesiredView<'_>> for DesiredDocument {
    fn from(view: &crate::frame::DesiredView<'_>) -> Self {
        DesiredDocument {
            node_id: view.node_id.clone(),
            generation: view.generation,
            replicas: view.replicas().collect(),
            config: view.config().collect(),
        }
    }
}

/// The fields of a desired document before its two lists (wire order).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct DesiredHeader {
    pub(crate) node_id: NodeId,
    pub(crate) generation: u64,
}

// ---------------------------------------------------------------------------
// Services: where the ready replicas behind each Service are, for the
// nodes whose replicas use it. A document of its own (not part of the
// desired state): endpoints change with readiness, and a change must not
// look like a change of the replicas.

/// One ready replica behind a Service: its node's address and the port it
/// listens on there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// IPv4 address of the replica's node.
    pub address: [u8; 4],
    /// The replica's port on that node.
    pub port: u16,
}

/// One port of one Service and its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServicePort {
    /// The Service's name (`<namespace>.<name>` outside `default`).
    pub service: Name<REPLICA_ID_MAX>,
    /// The port's name (empty for an unnamed port).
    pub port_name: heapless::String<PORT_NAME_MAX>,
    /// The Service's port: where the node forwards from.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Ready endpoints, at most [`MAX_ENDPOINTS`] (empty: none ready).
    pub endpoints: heapless::Vec<Endpoint, MAX_ENDPOINTS>,
    /// Also serve this port on every address of the device (a NodePort or
    /// LoadBalancer Service, on a device running one of its replicas).
    pub node_port: Option<u16>,
}

/// Controller -> node on `nodes/{id}/services` (retained), signed: every
/// Service port the node's replicas may use, with its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceTable {
    /// The node this table is for; a node refuses any other.
    pub node_id: NodeId,
    /// Increases with every change; a node never applies an older one.
    pub generation: u64,
    /// The Service ports, at most [`MAX_SERVICES`].
    pub services: heapless::Vec<ServicePort, MAX_SERVICES>,
}

// ---------------------------------------------------------------------------
// Container logs (`flotilla logs`): a request from the controller, answered
// by the node in chunks. Logs stay on the device until asked for: shipping
// them unasked would cost paid bytes for output nobody reads.

/// Controller -> node on `nodes/{id}/logreq` (not retained), signed: send
/// one replica's container output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogRequest {
    /// The node asked; a node refuses a request for another.
    pub node_id: NodeId,
    /// Chosen by the controller; every chunk of the answer carries it.
    pub request_id: u64,
    /// Whose output.
    pub replica: ReplicaId,
    /// `Some(offset)`: continue the live log at this byte offset (the
    /// `next_offset` of the previous answer, for following); `None`: the
    /// most recent output.
    pub offset: Option<u64>,
    /// With no offset: only the last this many lines (0: no line limit).
    pub tail_lines: u32,
    /// At most this many bytes of output in the whole answer.
    pub max_bytes: u32,
    /// Which container of the replica; `None` for its first app container.
    pub container: Option<ContainerName>,
}

/// Node -> controller on `nodes/{id}/logs`: one piece of the answer to a
/// [`LogRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogChunk {
    /// The request answered.
    pub request_id: u64,
    /// Position of this chunk in the answer, from 0, so a gap shows.
    pub index: u32,
    /// Container output (stdout and stderr interleaved, as written).
    pub data: heapless::Vec<u8, LOG_CHUNK_MAX>,
    /// Set on the last chunk only.
    pub end: Option<LogEnd>,
}

/// How an answer to a [`LogRequest`] ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogEnd {
    /// Offset in the live log after the last byte sent: where a follow-up
    /// request continues.
    pub next_offset: u64,
    /// Why there is no (or not all) output, e.g. no such replica here.
    pub error: Option<Reason>,
}

/// Checks of a desired document that the types cannot express. Both the
/// encoder and the decoder apply them, so a document that encodes decodes.
pub(crate) struct DesiredRules {
    ids: heapless::Vec<ReplicaId, MAX_REPLICAS>,
    max_config_index: Option<u8>,
}

impl DesiredRules {
    pub(crate) const fn new() -> Self {
        DesiredRules { ids: heapless::Vec::new(), max_config_index: None }
    }

    pub(crate) fn replica(&mut self, replica: &ReplicaSpec) -> Result<(), &'static str> {
        if self.ids.contains(&replica.id) {
            return Err("two replicas share an id");
        }
        self.ids.push(replica.id.clone()).map_err(|_| "more replicas than MAX_REPLICAS")?;
        for volume in &replica.volumes {
            if let VolumeSource::Config { index } = volume.source {
                self.max_config_index = self.max_config_index.max(Some(index));
            }
        }
        Ok(())
    }

    pub(crate) fn config(object: &ConfigObject) -> Result<(), &'static str> {
        if object.file_names.len() != object.contents.len() {
            return Err("a config object has a different number of file names and contents");
        }
        if object.file_names.iter().any(|n| n.is_empty() || n.contains('/') || n == "." || n == "..") {
            return Err("a config file name is empty or a path");
        }
        Ok(())
    }

    pub(crate) fn finish(&self, config_len: usize) -> Result<(), &'static str> {
        match self.max_config_index {
            Some(index) if usize::from(index) >= config_len => {
                Err("a volume refers to a config object that is not in the document")
            }
            _ => Ok(()),
        }
    }
}

impl DesiredState<'_> {
    /// Checks what the types cannot: counts, unique ids, cross references.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.config.len() > MAX_CONFIG_OBJECTS {
            return Err("more config objects than MAX_CONFIG_OBJECTS");
        }
        let mut rules = DesiredRules::new();
        for replica in self.replicas {
            rules.replica(replica)?;
        }
        for object in self.config {
            DesiredRules::config(object)?;
        }
        rules.finish(self.config.len())
    }
}

impl Status {
    /// Checks what the types cannot: slots are unique, container entries
    /// point at a replica of this heartbeat and are unique.
    pub fn validate(&self) -> Result<(), &'static str> {
        for (i, entry) in self.replicas.iter().enumerate() {
            if self.replicas[..i].iter().any(|r| r.replica == entry.replica) {
                return Err("two status entries are about the same replica");
            }
        }
        for (i, entry) in self.containers.iter().enumerate() {
            if usize::from(entry.replica) >= self.replicas.len() {
                return Err("a container entry points past the replicas");
            }
            if self.containers[..i].iter().any(|c| (c.replica, c.container) == (entry.replica, entry.container)) {
                return Err("two container entries are about the same container");
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Credential rotation: a node asks, the controller answers with the next
// credentials sealed under the current ones (`crate::seal::seal_credentials`)
// or with when to ask again. Expiry is judged on the controller's clock
// alone: the node only follows `ask_again_s`, a duration, so a board whose
// clock says 1970 rotates like any other.

/// Bytes of a node's credentials as a grant carries them: the MAC key (32)
/// and the broker password's 24 random bytes (the password is their
/// lowercase hex).
pub const CREDENTIALS_LEN: usize = 32 + 24;
/// Bytes of sealed credentials: [`CREDENTIALS_LEN`] plus a nonce and a tag.
pub const SEALED_CREDENTIALS_LEN: usize = CREDENTIALS_LEN + 28;

/// Node -> controller on `nodes/{id}/credreq` (not retained): "here is the
/// generation of the credentials I use; have you newer ones for me?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CredentialRequest {
    /// The generation of the credentials this frame's MAC was made with
    /// (0: those of the enrolment).
    pub generation: u32,
}

/// Controller -> node on `nodes/{id}/credentials` (not retained), signed:
/// the answer to a [`CredentialRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CredentialGrant {
    /// The node answered; a node refuses a grant for another.
    pub node_id: NodeId,
    /// With `sealed`: the generation of the credentials it holds (the
    /// node's current one plus one). Without: the generation the
    /// controller holds as the node's current one.
    pub generation: u32,
    /// Seconds until the node should ask again (a duration, not a date).
    pub ask_again_s: u32,
    /// The next credentials, sealed under the key of generation
    /// `generation - 1` ([`crate::seal::seal_credentials`]); `None` when it
    /// is not yet time to rotate.
    pub sealed: Option<Bytes<SEALED_CREDENTIALS_LEN>>,
}
