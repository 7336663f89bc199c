//! Representative messages: what a Raspberry Pi-class node running a few
//! sensor workloads sends and receives. The golden-bytes tests pin their
//! encodings and `flotilla-bench msg-sizes` prints their sizes, so both talk
//! about the same bytes.

use crate::bounded::{Bytes, Name, TextList};
use crate::msg::*;

fn s<const N: usize>(text: &str) -> heapless::String<N> {
    heapless::String::try_from(text).expect("sample text fits")
}

/// A 4-core, 1 GiB arm64 node with two labels, one taint and a serial port.
pub fn hello() -> Hello {
    let mut labels = heapless::Vec::new();
    for (key, value) in [("flotilla.io/zone", "line-3"), ("camera", "")] {
        labels.push(Label { key: s(key), value: s(value) }).expect("fits");
    }
    let mut taints = heapless::Vec::new();
    taints.push(Taint { key: s("zone"), value: s("dmz"), effect: TaintEffect::NoSchedule }).expect("fits");
    let mut devices = heapless::Vec::new();
    devices
        .push(DeviceClass {
            resource: s("flotilla.io/serial"),
            count: 1,
            paths: TextList::from_strs(["/dev/ttyUSB0"]).expect("fits"),
        })
        .expect("fits");
    Hello {
        node_id: node_id(),
        arch: Arch::Arm64,
        os: Os::Linux,
        capacity: Capacity { cpu_millis: 4000, memory_bytes: 1 << 30, max_workloads: 16 },
        allocatable: Capacity { cpu_millis: 3800, memory_bytes: 900 << 20, max_workloads: 16 },
        labels,
        taints,
        devices,
        agent_version: s("0.1.0"),
        max_protocol_version: crate::frame::PROTOCOL_VERSION,
        profile: Profile::Linux,
    }
}

/// A heartbeat of an idle node whose `replicas` are all running, ready and
/// using a little CPU and 12-20 MiB each: the common, steady-state heartbeat.
pub fn status(replicas: usize) -> Status {
    let mut entries = heapless::Vec::new();
    for i in 0..replicas.min(MAX_REPLICAS) {
        entries
            .push(ReplicaStatus {
                replica: ReplicaRef::Slot(i as u8),
                phase: Phase::Running,
                restarts: 0,
                last_exit: None,
                readiness: Readiness::Ready,
                cpu_millis: 3 + i as u32,
                memory_kib: 12_288 + 512 * i as u32,
            })
            .expect("bounded by MAX_REPLICAS");
    }
    Status {
        generation: 42,
        usage: NodeUsage { cpu_millis: 120, memory_kib: 310_000, disk_free_mib: 5_800 },
        replicas: entries,
        containers: heapless::Vec::new(),
    }
}

/// A heartbeat of a node running one pod of an app container and a
/// sidecar (container entries: the sidecar, index 0, then the app).
pub fn pod_status() -> Status {
    let mut status = status(1);
    for (container, memory_kib) in [(0u8, 4_096), (1, 12_288)] {
        let entry = ContainerStatus {
            replica: 0,
            container,
            state: ContainerState::Running,
            ready: true,
            restarts: 0,
            last_exit: None,
            cpu_millis: 1,
            memory_kib,
        };
        status.containers.push(entry).expect("fits");
    }
    status
}

/// An OOM-kill event.
pub fn event() -> Event {
    Event {
        at_unix_ms: 1_795_000_000_000,
        replica: Some(Name::new("sensor-1a2b-0").expect("valid")),
        kind: EventKind::OomKilled { limit_bytes: 64 << 20 },
        container: None,
    }
}

/// A node's service table: one Service port with two ready endpoints.
pub fn service_table() -> ServiceTable {
    let mut endpoints = heapless::Vec::new();
    for (address, port) in [([10, 77, 0, 11], 8080), ([10, 77, 0, 12], 8080)] {
        endpoints.push(Endpoint { address, port }).expect("fits");
    }
    let mut services = heapless::Vec::new();
    let web = ServicePort {
        service: Name::new("web").expect("valid"),
        port_name: s("http"),
        port: 80,
        protocol: Protocol::Tcp,
        endpoints,
        node_port: None,
    };
    services.push(web).expect("fits");
    ServiceTable { node_id: node_id(), generation: 42, services }
}

/// A request for the last 100 lines of a replica's output.
pub fn log_request() -> LogRequest {
    LogRequest {
        node_id: node_id(),
        request_id: 7,
        replica: Name::new("sensor-1a2b-0").expect("valid"),
        offset: None,
        tail_lines: 100,
        max_bytes: 65_536,
        container: None,
    }
}

/// The last chunk of an answer: two lines of output.
pub fn log_chunk() -> LogChunk {
    LogChunk {
        request_id: 7,
        index: 0,
        data: heapless::Vec::from_slice(b"t=21.5\nt=21.6\n").expect("fits"),
        end: Some(LogEnd { next_offset: 14, error: None }),
    }
}

/// A replica of a sensor workload with limits, a probe, a port, a volume and
/// a device.
pub fn replica(index: usize) -> ReplicaSpec {
    let mut id = heapless::String::<REPLICA_ID_MAX>::new();
    core::fmt::write(&mut id, format_args!("sensor-1a2b-{index}")).expect("fits");
    let mut ports = heapless::Vec::new();
    ports.push(Port { name: s("http"), container_port: 8080, host_port: None, protocol: Protocol::Tcp }).expect("fits");
    let mut volumes = heapless::Vec::new();
    volumes
        .push(VolumeMount {
            name: s("config"),
            mount_path: s("/etc/sensor"),
            read_only: true,
            source: VolumeSource::Config { index: 0 },
        })
        .expect("fits");
    let mut devices = heapless::Vec::new();
    devices
        .push(DeviceMapping { host_path: s("/dev/ttyUSB0"), container_path: s("/dev/ttyUSB0"), access: 3 })
        .expect("fits");
    ReplicaSpec {
        id: Name::new(&id).expect("valid"),
        image: ImageRef { reference: s("registry.local:7441/sensor:1.2"), digest: Bytes([0xab; 32]) },
        command: TextList::from_strs(["/bin/sensor"]).expect("fits"),
        args: TextList::from_strs(["--period", "5s"]).expect("fits"),
        env: TextList::from_strs(["LINE=3", "RUST_LOG=info"]).expect("fits"),
        working_dir: heapless::String::new(),
        user: Some(User { uid: 1000, gid: 1000 }),
        resources: Resources {
            cpu_request_millis: 100,
            memory_request_bytes: 32 << 20,
            cpu_limit_millis: Some(500),
            memory_limit_bytes: Some(64 << 20),
            pids_limit: Some(64),
        },
        extended: heapless::Vec::new(),
        devices,
        ports,
        volumes,
        startup_probe: None,
        readiness_probe: Some(Probe {
            action: ProbeAction::HttpGet { path: s("/healthz"), port: 8080, https: false },
            initial_delay_s: 1,
            period_s: 5,
            timeout_s: 1,
            success_threshold: 1,
            failure_threshold: 3,
        }),
        liveness_probe: None,
        restart_policy: RestartPolicy::Always,
        read_only_rootfs: true,
        seccomp: Seccomp::RuntimeDefault,
        termination_grace_s: 10,
    }
}

/// The node id of the samples.
pub fn node_id() -> NodeId {
    Name::new("pi-line3-07").expect("valid")
}

/// The config object the sample replicas mount.
pub fn config() -> ConfigObject {
    let mut contents = crate::bounded::ByteList::new();
    contents.push(b"threshold = 40\n").expect("fits");
    ConfigObject {
        name: s("sensor-config"),
        secret: false,
        file_names: TextList::from_strs(["sensor.toml"]).expect("fits"),
        contents,
    }
}

/// A desired document (generation 42) with `replicas` sensor replicas and
/// their config object.
#[cfg(feature = "alloc")]
pub fn desired(replicas: usize) -> DesiredDocument {
    DesiredDocument {
        node_id: node_id(),
        generation: 42,
        replicas: (0..replicas).map(replica).collect(),
        config: alloc::vec![config()],
    }
}

/// A Linux-profile pod: a sensor reader with an init container that waits
/// for its config, a metrics-exporter sidecar, and an emptyDir both share.
#[cfg(feature = "alloc")]
pub fn pod(index: usize) -> crate::pod::PodSpec {
    use crate::heap::{List, Text, Texts};
    use crate::pod::{Container, Mount, PodSpec, PodVolume, PodVolumeSource};

    let base = replica(index);
    let text = |t: &str| Text::new(t).expect("fits");
    let texts = |items: &[&str]| Texts::from_strs(items.iter().copied()).expect("fits");
    let mount = |volume: u16, path: &str, read_only: bool| Mount {
        volume,
        mount_path: text(path),
        read_only,
        sub_path: Text::default(),
    };
    let container = |name: &str, image: &str| Container {
        name: Name::new(name).expect("valid"),
        image: ImageRef { reference: s(image), digest: Bytes([0xab; 32]) },
        command: Texts::new(),
        args: Texts::new(),
        env: Texts::new(),
        sealed_env: Default::default(),
        working_dir: Text::default(),
        user: base.user,
        resources: Resources {
            cpu_request_millis: 50,
            memory_request_bytes: 16 << 20,
            cpu_limit_millis: None,
            memory_limit_bytes: Some(32 << 20),
            pids_limit: None,
        },
        extended: List::new(),
        devices: List::new(),
        ports: List::new(),
        mounts: List::new(),
        startup_probe: None,
        readiness_probe: None,
        liveness_probe: None,
        read_only_rootfs: true,
        seccomp: Seccomp::RuntimeDefault,
        sidecar: false,
    };
    let mut init = container("wait-config", "registry.local:7441/busybox:1.36");
    init.command = texts(&["sh", "-c", "test -s /etc/sensor/sensor.toml"]);
    init.mounts.push(mount(0, "/etc/sensor", true)).expect("fits");
    let mut exporter = container("exporter", "registry.local:7441/exporter:0.4");
    exporter.sidecar = true;
    exporter.args = texts(&["--listen=:9100", "--spool=/spool"]);
    exporter
        .ports
        .push(Port { name: s("metrics"), container_port: 9100, host_port: None, protocol: Protocol::Tcp })
        .expect("fits");
    exporter.mounts.push(mount(1, "/spool", true)).expect("fits");
    let mut app = container("sensor", "registry.local:7441/sensor:1.2");
    app.command = texts(&["/bin/sensor"]);
    app.args = texts(&["--period", "5s", "--spool", "/spool"]);
    app.env = texts(&["LINE=3", "RUST_LOG=info", "POD_NAME=sensor-1a2b-0", "NODE_NAME=pi-line3-07"]);
    app.resources = base.resources;
    app.ports = List::try_from(base.ports.iter().cloned().collect::<alloc::vec::Vec<_>>()).expect("fits");
    app.devices = List::try_from(base.devices.iter().cloned().collect::<alloc::vec::Vec<_>>()).expect("fits");
    app.readiness_probe = base.readiness_probe.clone();
    app.mounts.push(mount(0, "/etc/sensor", true)).expect("fits");
    app.mounts.push(mount(1, "/spool", false)).expect("fits");
    app.mounts.push(mount(2, "/var/lib/sensor", false)).expect("fits");
    let mut volumes = List::new();
    let config = PodVolume { name: Name::new("config").expect("valid"), source: PodVolumeSource::Config { index: 0 } };
    volumes.push(config).expect("fits");
    let spool = PodVolumeSource::EmptyDir { in_memory: false, size_limit_bytes: Some(64 << 20) };
    volumes.push(PodVolume { name: Name::new("spool").expect("valid"), source: spool }).expect("fits");
    let history = PodVolume { name: Name::new("history").expect("valid"), source: PodVolumeSource::Claim { index: 0 } };
    volumes.push(history).expect("fits");
    let mut init_containers = List::new();
    init_containers.push(init).expect("fits");
    init_containers.push(exporter).expect("fits");
    let mut containers = List::new();
    containers.push(app).expect("fits");
    PodSpec {
        id: base.id,
        init_containers,
        containers,
        volumes,
        restart_policy: RestartPolicy::Always,
        termination_grace_s: 10,
    }
}

/// The sample config object as a Linux-profile blob.
#[cfg(feature = "alloc")]
pub fn config_blob() -> crate::pod::ConfigBlob {
    let compact = config();
    let mut contents = crate::heap::Blobs::new();
    for file in compact.contents.iter() {
        contents.push(file).expect("fits");
    }
    crate::pod::ConfigBlob {
        name: crate::heap::Text::new(&compact.name).expect("fits"),
        secret: false,
        file_names: crate::heap::Texts::from_strs(compact.file_names.iter()).expect("fits"),
        contents,
    }
}

/// A Linux-profile document (generation 42) with `pods` sample pods naming
/// the sample config blob by `digest`, and the claim they keep their
/// history in.
#[cfg(feature = "alloc")]
pub fn pod_document(pods: usize, digest: Digest) -> crate::pod::PodDocument {
    use crate::pod::{Claim, ConfigRef, PodDocument};
    let mut config = crate::heap::List::new();
    let size = postcard::to_allocvec(&config_blob()).map(|b| b.len() as u32).unwrap_or(0);
    config
        .push(ConfigRef {
            name: crate::heap::Text::new("sensor-config").expect("fits"),
            secret: false,
            digest,
            size,
            sealed_key: None,
        })
        .expect("fits");
    PodDocument {
        node_id: node_id(),
        generation: 42,
        pods: crate::heap::List::try_from((0..pods).map(pod).collect::<alloc::vec::Vec<_>>()).expect("fits"),
        config,
        claims: crate::heap::List::try_from(alloc::vec![Claim {
            id: crate::heap::Text::new("default.sensor-history.5f0c2a91").expect("fits"),
            size_bytes: 1 << 30,
        }])
        .expect("fits"),
    }
}

/// A node asking for the credentials after its first rotation.
pub fn credential_request() -> CredentialRequest {
    CredentialRequest { generation: 1 }
}

/// A grant of generation 2 (its sealed bytes are a pattern, not a real seal).
pub fn credential_grant() -> CredentialGrant {
    CredentialGrant {
        node_id: node_id(),
        generation: 2,
        ask_again_s: 3600,
        sealed: Some(Bytes([0x5a; SEALED_CREDENTIALS_LEN])),
    }
}
