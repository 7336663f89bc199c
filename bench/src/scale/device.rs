//! One simulated device: the real agent ([`Agent`], [`Cycle`],
//! [`Channel`], the real enrolment, MACs, sequence numbers, Last Will and
//! retained documents) over the **simulated** runtime
//! ([`SimulatedRuntime`]): no container runs. Its images count as cached
//! on the device (no pulls), which is the one other thing simulated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use flotilla_agent::agent::{Agent, Backoff};
use flotilla_agent::channel::{Channel, ChannelConfig};
use flotilla_agent::enrolment::Enrolment;
use flotilla_agent::run::Cycle;
use flotilla_agent::runtime::simulated::{SimulatedRuntime, SimulatedUsage};
use flotilla_agent::services::ServiceDirectory;
use flotilla_agent::workload::Paths;

/// A device's simulated hardware and what it reports about itself.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Node name.
    pub name: String,
    /// CPU capacity in millicores.
    pub cpu_millis: u32,
    /// Memory capacity in bytes.
    pub memory_bytes: u64,
    /// Labels (`site`, `line`, `class`, ...).
    pub labels: Vec<(String, String)>,
    /// Taints as `(key, value)`, all NoSchedule.
    pub taints: Vec<(String, String)>,
}

impl Profile {
    /// The registration this device sends, as `flotilla-agent run` builds
    /// it from the real hardware (10 % of memory and 100 m of CPU kept for
    /// the system).
    pub fn hello(&self) -> anyhow::Result<firmware_proto::Hello> {
        use firmware_proto::bounded::bounded;
        let capacity = firmware_proto::Capacity {
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_bytes,
            max_workloads: firmware_proto::MAX_REPLICAS as u16,
        };
        let allocatable = firmware_proto::Capacity {
            cpu_millis: self.cpu_millis.saturating_sub(100),
            memory_bytes: self.memory_bytes - self.memory_bytes / 10,
            ..capacity
        };
        let mut labels = heapless::Vec::new();
        for (key, value) in &self.labels {
            let label = firmware_proto::Label {
                key: bounded(key).map_err(|_| anyhow::anyhow!("label key {key:?} too long"))?,
                value: bounded(value).map_err(|_| anyhow::anyhow!("label value {value:?} too long"))?,
            };
            labels.push(label).map_err(|_| anyhow::anyhow!("too many labels"))?;
        }
        let mut taints = heapless::Vec::new();
        for (key, value) in &self.taints {
            let taint = firmware_proto::Taint {
                key: bounded(key).map_err(|_| anyhow::anyhow!("taint key {key:?} too long"))?,
                value: bounded(value).map_err(|_| anyhow::anyhow!("taint value {value:?} too long"))?,
                effect: firmware_proto::TaintEffect::NoSchedule,
            };
            taints.push(taint).map_err(|_| anyhow::anyhow!("too many taints"))?;
        }
        let node_id = firmware_proto::Name::new(&self.name).map_err(|e| anyhow::anyhow!("node {}: {e}", self.name))?;
        Ok(firmware_proto::Hello {
            node_id,
            arch: host_arch(),
            os: firmware_proto::Os::Linux,
            capacity,
            allocatable,
            labels,
            taints,
            devices: heapless::Vec::new(),
            agent_version: firmware_proto::bounded::truncated(env!("CARGO_PKG_VERSION")),
            max_protocol_version: firmware_proto::PROTOCOL_VERSION,
            profile: firmware_proto::Profile::Linux,
        })
    }
}

/// The image built for the benchmark is for this machine's architecture.
fn host_arch() -> firmware_proto::Arch {
    match std::env::consts::ARCH {
        "aarch64" => firmware_proto::Arch::Arm64,
        "arm" => firmware_proto::Arch::Arm,
        _ => firmware_proto::Arch::Amd64,
    }
}

/// What a device last told the simulator: the whole fleet's view, read by
/// the scenarios (never by the controller).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Replica ids running on the device, as its last heartbeat said.
    pub running: Vec<String>,
    /// Containers started so far (restarts included).
    pub starts: u64,
    /// When the last desired frame arrived.
    pub last_frame: Option<Instant>,
    /// When the last connection came up.
    pub last_connect: Option<Instant>,
    /// Connections so far.
    pub connects: u64,
}

/// Every device's [`Observed`], by node name, and a count of the changes
/// to what runs, so that watching for a failover costs nothing while
/// nothing changes (recounting 50,000 replicas every 20 ms took most of a
/// core and held the devices' lock).
#[derive(Debug, Default)]
pub struct FleetState {
    /// By node name.
    pub observed: Mutex<HashMap<String, Observed>>,
    /// Bumped whenever a device's running replicas change.
    pub running_changes: std::sync::atomic::AtomicU64,
}

/// Shared by the devices and the scenarios.
pub type FleetView = Arc<FleetState>;

/// Settings shared by every device.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    /// How long a simulated container start takes.
    pub start_delay: Duration,
    /// The agent's `--tick-ms`.
    pub tick: Duration,
    /// The agent's `--keep-alive`.
    pub keep_alive: Duration,
    /// The agent's `--heartbeat`.
    pub heartbeat: Duration,
}

/// Enrols a device with a join token, as `flotilla-agent run --join`
/// does, keeping its credentials in `data_dir`. Blocking (HTTP).
pub fn enrol(server: &str, token: &str, name: &str, data_dir: &Path) -> anyhow::Result<Enrolment> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    match Enrolment::load(data_dir)? {
        Some(enrolment) => Ok(enrolment),
        None => Enrolment::join(server, token, name, data_dir, None),
    }
}

/// A running device; dropping it does not stop it (see [`DeviceHandle::kill`]).
pub struct DeviceHandle {
    task: tokio::task::JoinHandle<()>,
    connection: Option<tokio::task::AbortHandle>,
}

impl DeviceHandle {
    /// Pulls the plug: the connection's socket closes at once without an
    /// MQTT DISCONNECT (the broker publishes the Last Will), and the agent
    /// stops.
    pub fn kill(&self) {
        if let Some(connection) = &self.connection {
            connection.abort();
        }
        self.task.abort();
    }

    /// Whether the connection ended after [`DeviceHandle::kill`]: its socket
    /// is closed once the task's future is dropped. The abort takes effect
    /// when the runtime next runs the task, which under 10,000 devices took
    /// up to 1.5 s.
    pub fn closed(&self) -> bool {
        self.connection.as_ref().is_none_or(|c| c.is_finished())
    }
}

/// Starts a device on `runtime`: its agent loop is a task that hands each
/// step to the blocking pool (a simulated start blocks, like a real one).
pub fn start(
    runtime: &tokio::runtime::Handle,
    profile: &Profile,
    enrolment: &Enrolment,
    data_dir: PathBuf,
    settings: &DeviceSettings,
    view: FleetView,
) -> anyhow::Result<DeviceHandle> {
    let node_id =
        firmware_proto::Name::new(&enrolment.node_name).map_err(|e| anyhow::anyhow!("{}: {e}", enrolment.node_name))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&enrolment.controller_key_bytes()?)
        .map_err(|e| anyhow::anyhow!("the pinned controller key is not an Ed25519 key: {e}"))?;
    let paths = Paths { data_dir: data_dir.clone() };
    let services = Arc::new(ServiceDirectory::new(
        node_id.clone(),
        flotilla_agent::run::verifier(key),
        flotilla_agent::services::dir_in(&data_dir),
    ));
    let agent = Agent::new(
        SimulatedRuntime::new(settings.start_delay),
        paths.clone(),
        node_id.clone(),
        flotilla_agent::run::verifier(key),
        Backoff::default(),
    )
    .with_services(services.clone())
    .with_usage(Box::new(SimulatedUsage::default()));
    let logs = flotilla_agent::logs::LogService::new(
        node_id,
        flotilla_agent::run::verifier(key),
        Paths { data_dir: data_dir.clone() },
    );
    let config = ChannelConfig {
        keep_alive: settings.keep_alive,
        epoch_file: data_dir.join("sequence-epoch"),
        data_dir: Some(data_dir.clone()),
        first_credential_check_within: flotilla_agent::rotation::FIRST_ASK_WITHIN,
    };
    let channel = Channel::start_on(runtime, enrolment, config, logs, services)?;
    let mut labels = profile.labels.clone();
    labels.push((flotilla_agent::services::ADDRESS_LABEL.into(), "127.0.0.1".into()));
    channel.set_hello(Profile { labels, ..profile.clone() }.hello()?);
    let connection = channel.connection_task();
    let device = Running {
        name: enrolment.node_name.clone(),
        agent,
        channel,
        cycle: Cycle::new(settings.heartbeat, None),
        paths,
        view,
    };
    let task = runtime.spawn(device.run(settings.tick));
    Ok(DeviceHandle { task, connection })
}

struct Running {
    name: String,
    agent: Agent<SimulatedRuntime>,
    channel: Channel,
    cycle: Cycle,
    paths: Paths,
    view: FleetView,
}

impl Running {
    async fn run(mut self, tick: Duration) {
        loop {
            tokio::select! {
                _ = self.channel.changed() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            // Frames are taken here, before choosing where the step runs: a
            // step can block only to start a container (a simulated start
            // sleeps as a real one does), which needs a new document or a
            // replica that is not running. Any other step (most ticks of a
            // settled fleet) runs on this worker, as a real agent's loop runs
            // on its own thread; handing every tick of 10,000 devices to the
            // blocking pool spent a third of the machine waking threads.
            let frames = self.channel.wait_desired(Duration::ZERO);
            if frames.is_empty() && self.settled() {
                self.step(frames);
                continue;
            }
            let step = tokio::task::spawn_blocking(move || {
                self.step(frames);
                self
            });
            match step.await {
                Ok(device) => self = device,
                Err(_) => return, // cancelled or panicked: the device is gone
            }
        }
    }

    /// Whether every desired replica of the device runs: a step without a
    /// new document then starts nothing.
    fn settled(&mut self) -> bool {
        self.agent.replica_statuses(now_ms()).iter().all(|r| r.phase == firmware_proto::Phase::Running)
    }

    /// One pass of the agent's loop (`flotilla-agent run`) over the frames
    /// taken from the channel, and what the simulator observes of it.
    fn step(&mut self, frames: Vec<Vec<u8>>) {
        let got_frames = !frames.is_empty();
        for frame in &frames {
            self.cache_images(frame);
        }
        let connected = self.cycle.receive(&mut self.agent, &self.channel, frames);
        self.cycle.step(&mut self.agent, Some(&self.channel), now_ms());
        let runtime = self.agent.runtime();
        let starts = runtime.starts();
        let mut view = self.view.observed.lock().unwrap_or_else(|p| p.into_inner());
        if !view.contains_key(&self.name) {
            view.insert(self.name.clone(), Observed::default());
        }
        let observed = view.get_mut(&self.name).expect("inserted above");
        if !observed.running.iter().map(String::as_str).eq(runtime.running()) {
            observed.running = runtime.running().map(str::to_owned).collect();
            self.view.running_changes.fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        if got_frames {
            observed.last_frame = Some(Instant::now());
        }
        if connected {
            observed.last_connect = Some(Instant::now());
            observed.connects += 1;
        }
        observed.starts = starts;
    }

    /// The simulated image cache: every image a document names is on the
    /// device already (a preloaded root filesystem, as air-gapped devices
    /// are provisioned), so no pull is made.
    fn cache_images(&self, frame: &[u8]) {
        let Ok(decoded) = firmware_proto::decode_signed::<firmware_proto::pod::PodDocument>(frame) else { return };
        for container in decoded.frame.0.pods.iter().flat_map(|p| p.all_containers()) {
            let rootfs = self.paths.image_rootfs(&container.image.digest.0);
            if !rootfs.is_dir() {
                let _ = std::fs::create_dir_all(&rootfs);
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
