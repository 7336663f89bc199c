//! `flotilla-agent run`: the agent's main loop.
//!
//! Desired documents come from the controller over MQTT (once enrolled:
//! `--join URL --token T`), from a signed file (`--desired-file`, how an
//! air-gapped device is updated from a USB stick) and from local state:
//! after a reboot the agent brings back the last applied document's
//! workloads with no network at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ed25519_dalek::VerifyingKey;

use crate::agent::{Agent, Backoff, Verifier};
use crate::channel::{Channel, ChannelConfig};
use crate::enrolment::Enrolment;
use crate::runtime::Runtime;
use crate::runtime::helper::HelperRuntime;
use crate::services::ServiceDirectory;
use crate::workload::Paths;

/// Options of `flotilla-agent run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Local state: applied document, container records, images, volumes, logs.
    #[arg(long, env = "FLOTILLA_AGENT_DATA_DIR", default_value = "/var/lib/flotilla-agent")]
    pub data_dir: PathBuf,
    /// This node's id [default: the hostname].
    #[arg(long, env = "FLOTILLA_NODE_ID")]
    pub node_id: Option<String>,
    /// The controller's Ed25519 public key (32 bytes raw or 64 hex characters):
    /// documents not signed by it are refused. Enrolled agents pin the key they
    /// received at enrolment and need not give it.
    #[arg(long, env = "FLOTILLA_CONTROLLER_KEY")]
    pub controller_key: Option<PathBuf>,
    /// Enrol with the controller at this API URL (e.g. https://10.0.0.1:7440, with --ca-sha256;
    /// http:// for a controller run with --plain) using --token, then connect. Once enrolled the
    /// credentials kept in the data dir are used (and rotated over the control channel); if the
    /// broker refuses them (offline past their lifetime, or revoked) and --token is not the
    /// token that enrolled this device, it enrols again with it.
    #[arg(long, env = "FLOTILLA_JOIN", requires = "token")]
    pub join: Option<String>,
    /// Join token from `flotilla node token create`.
    #[arg(long, env = "FLOTILLA_JOIN_TOKEN")]
    pub token: Option<String>,
    /// With an https:// --join URL: `sha256:<hex>` of the fleet CA's certificate, printed with
    /// the join token by `flotilla node token create`. The device trusts that CA, and only it,
    /// from then on (it comes with the enrolment).
    #[arg(long, env = "FLOTILLA_CA_SHA256", value_name = "sha256:HEX")]
    pub ca_sha256: Option<String>,
    /// A signed desired-state document to apply (re-read when it changes);
    /// or a directory of signed frames: the pod document and the config
    /// objects it names, as the controller publishes them (offline
    /// provisioning).
    #[arg(long, value_name = "FILE|DIR")]
    pub desired_file: Option<PathBuf>,
    /// Labels this node reports (repeat: --label zone=line-3 --label camera=yes).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// MQTT keep-alive. The broker declares the node lost (its Last Will) after 1.5x this
    /// without traffic: shorter detects a silent partition sooner, longer costs fewer bytes.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub keep_alive: Duration,
    /// Heartbeat period: full status with usage, QoS 0 (any change is sent at once
    /// regardless). rumqttc pings every keep-alive whatever else is sent, so liveness comes
    /// from those pings and the heartbeat only refreshes usage: every 5 minutes keeps an idle
    /// node near 15 KB/hour with TCP/IP headers (see README, "Wire budget").
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
    /// Disk budget for images (blobs, unpacked layers), MiB: above it, images no replica
    /// uses are removed, least recently used first.
    #[arg(long, default_value_t = 1024)]
    pub image_budget_mib: u64,
    /// Where the latest status (the heartbeat, as JSON) is written for local
    /// tools; tmpfs by default so that flash storage is not worn.
    #[arg(long, default_value = "/run/flotilla-agent/status.json")]
    pub status_file: PathBuf,
    /// The IPv4 address other devices reach this one at (its replicas' Service
    /// endpoints) [default: the local address of the route to the broker].
    #[arg(long, env = "FLOTILLA_ADDRESS")]
    pub address: Option<std::net::Ipv4Addr>,
    /// How often the containers are compared with the desired state.
    #[arg(long, default_value_t = 500)]
    pub tick_ms: u64,
    /// After each connection, the agent asks the controller about its credentials within this
    /// (a random delay, so a fleet reconnecting at once does not ask at once), and then when
    /// the controller says. Keep it far below the server's --node-credential-lifetime.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub credential_check_within: Duration,
}

/// Reads a public key file: 32 raw bytes, or 64 hex characters.
pub fn read_public_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    let bytes = std::fs::read(path).with_context(|| format!("reading the controller key {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let raw: Vec<u8> = if bytes.len() == 32 {
        bytes.clone()
    } else {
        let hex = text.trim();
        anyhow::ensure!(hex.len() == 64, "{}: expected 32 bytes or 64 hex characters", path.display());
        (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: not hex", path.display()))?
    };
    let key: [u8; 32] = raw.try_into().map_err(|_| anyhow::anyhow!("key length"))?;
    VerifyingKey::from_bytes(&key).map_err(|e| anyhow::anyhow!("{}: not an Ed25519 public key: {e}", path.display()))
}

/// A verifier for documents signed by `key`.
pub fn verifier(key: VerifyingKey) -> Verifier {
    Box::new(move |message, signature| {
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(message, &signature).is_ok()
    })
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("{text:?}: expected key=value"))?;
    Ok((key.to_owned(), value.to_owned()))
}

/// This device's registration: arch, capacity, labels.
fn hello(node_id: &firmware_proto::NodeId, labels: &[(String, String)]) -> anyhow::Result<firmware_proto::Hello> {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let memory = sysinfo::System::new()
        .map(|mut system| {
            system.refresh_memory();
            system.total_memory()
        })
        .context("reading the device's memory size")?;
    let capacity = firmware_proto::Capacity {
        cpu_millis: cpus * 1000,
        memory_bytes: memory,
        max_workloads: firmware_proto::Profile::Linux.max_replicas() as u16,
    };
    // Keep some of the device for the system and the agent itself.
    let allocatable = firmware_proto::Capacity {
        cpu_millis: capacity.cpu_millis.saturating_sub(100),
        memory_bytes: memory - memory / 10,
        ..capacity
    };
    let mut label_list = heapless::Vec::new();
    for (key, value) in labels {
        let label = firmware_proto::Label {
            key: firmware_proto::bounded::bounded(key).map_err(|_| anyhow::anyhow!("label key {key:?} too long"))?,
            value: firmware_proto::bounded::bounded(value)
                .map_err(|_| anyhow::anyhow!("label value {value:?} too long"))?,
        };
        label_list.push(label).map_err(|_| anyhow::anyhow!("at most {} labels", firmware_proto::MAX_LABELS))?;
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => firmware_proto::Arch::Amd64,
        "aarch64" => firmware_proto::Arch::Arm64,
        "arm" => firmware_proto::Arch::Arm,
        _ => firmware_proto::Arch::Riscv64,
    };
    Ok(firmware_proto::Hello {
        node_id: node_id.clone(),
        arch,
        os: firmware_proto::Os::Linux,
        capacity,
        allocatable,
        labels: label_list,
        taints: heapless::Vec::new(),
        devices: heapless::Vec::new(),
        agent_version: firmware_proto::bounded::truncated(env!("CARGO_PKG_VERSION")),
        max_protocol_version: firmware_proto::PROTOCOL_VERSION,
        profile: firmware_proto::Profile::Linux,
    })
}

/// The frames `--desired-file` names: the file, or every file in the
/// directory (sorted).
fn frame_files(path: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
            files.sort();
            files
        }
        Err(_) if path.is_file() => vec![path.to_owned()],
        Err(_) => Vec::new(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "node".into())
}

/// The data directory, the agent's alone (0700): it holds Secret values
/// (container specs, config objects, its state). One made before, more
/// open, is closed.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    crate::persist::create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn write_status(path: &Path, status: &firmware_proto::Status) {
    let result = serde_json::to_vec_pretty(status).map_err(std::io::Error::other).and_then(|json| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temp = path.with_extension("json.tmp");
        std::fs::write(&temp, json)?;
        std::fs::rename(&temp, path)
    });
    if let Err(e) = result {
        tracing::debug!(path = %path.display(), error = %e, "cannot write the status file");
    }
}

/// Removes the `config.json` of every bundle in `bundles` unless a tmpfs is
/// mounted there already.
fn remove_disk_bundles(bundles: &Path) {
    if bundles.canonicalize().is_ok_and(|dir| crate::volumes::is_mount_point(&dir)) {
        return;
    }
    for entry in std::fs::read_dir(bundles).into_iter().flatten().flatten() {
        let config = entry.path().join("config.json");
        if config.exists()
            && let Err(e) = std::fs::remove_file(&config)
        {
            tracing::warn!(path = %config.display(), error = %e, "cannot remove a bundle left on the disk");
        }
    }
}

/// Runs until killed. Containers keep running when the agent stops.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    create_private_dir(&args.data_dir)?;
    let mut enrolment = Enrolment::load(&args.data_dir)?;
    let node_name = args.node_id.clone().unwrap_or_else(hostname);
    if let (None, Some(server), Some(token)) = (&enrolment, &args.join, &args.token) {
        tracing::info!(server, node = node_name, "enrolling");
        let pin = args.ca_sha256.as_deref().map(crate::tls::parse_pin).transpose()?;
        enrolment = Some(Enrolment::join(server, token, &node_name, &args.data_dir, pin)?);
    }
    let node_name = enrolment.as_ref().map_or(node_name, |e| e.node_name.clone());
    let node_id = firmware_proto::Name::new(&node_name).map_err(|e| anyhow::anyhow!("node id {node_name:?}: {e}"))?;
    let key = match (&enrolment, &args.controller_key) {
        (_, Some(path)) => read_public_key(path)?,
        (Some(enrolment), None) => VerifyingKey::from_bytes(&enrolment.controller_key_bytes()?)
            .map_err(|e| anyhow::anyhow!("the pinned controller key is not an Ed25519 key: {e}"))?,
        (None, None) => anyhow::bail!(
            "not enrolled: give --join <controller URL> --token <token from `flotilla node token create`>, \
             or --controller-key with --desired-file"
        ),
    };
    let paths = Paths { data_dir: args.data_dir.clone() };
    crate::runtime::set_cgroup_parent(&format!("{}/{node_id}", crate::runtime::CGROUP_PARENT));
    let program = std::env::current_exe().context("locating the agent binary for its runtime helper")?;
    // A bundle's config.json holds its container's env, Secret values
    // included: bundles live in memory. Ones an older agent left on the
    // disk go first (their containers do not need them once created).
    remove_disk_bundles(&paths.bundles());
    crate::volumes::ensure_tmpfs_with_mode(&paths.bundles(), Some(64 << 20), 0o700)
        .with_context(|| format!("mounting a tmpfs for container bundles on {}", paths.bundles().display()))?;
    let runtime = HelperRuntime::new(&program, &paths.runtime_state(), &paths.bundles());
    let tls_registry = match &enrolment {
        Some(enrolment) => enrolment.tls_registry()?,
        None => None,
    };
    let images = crate::image::ImageSettings { budget_mib: args.image_budget_mib, tls_registry, ..Default::default() };
    let services =
        Arc::new(ServiceDirectory::new(node_id.clone(), verifier(key), crate::services::dir_in(&args.data_dir)));
    let mut agent = Agent::new(runtime, paths, node_id.clone(), verifier(key), Backoff::default())
        .with_image_settings(images)
        .with_services(services.clone());
    if let Some(enrolment) = &enrolment {
        agent.set_seal_key(enrolment.seal_key_bytes()?);
    }
    tracing::info!(
        node = %node_id,
        generation = agent.generation(),
        data_dir = %args.data_dir.display(),
        seccomp = crate::runtime::SECCOMP_AVAILABLE,
        cgroups = if cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() { "v2" } else { "v1 (hybrid or legacy)" },
        "agent started"
    );
    if !crate::runtime::SECCOMP_AVAILABLE {
        tracing::warn!("built without seccomp: workloads asking for a seccomp profile will be refused");
    }
    let mut channel = match &enrolment {
        Some(enrolment) => Some(connect(enrolment, &args, &node_id, key, &services)?),
        None => None,
    };
    let mut reenrol = Reenrol::default();
    let mut seen_file: Option<(SystemTime, u64)> = None;
    let mut cycle = Cycle::new(args.heartbeat, Some(args.status_file.clone()));
    loop {
        if let Some(current) = &channel {
            let frames = current.wait_desired(Duration::from_millis(args.tick_ms));
            cycle.receive(&mut agent, current, frames);
            if current.login_refused()
                && let Some(enrolled) = reenrol.attempt(&args, &node_name, enrolment.as_ref())
            {
                // The old channel goes first: one connection per node.
                drop(channel.take());
                agent.set_seal_key(enrolled.seal_key_bytes()?);
                channel = Some(connect(&enrolled, &args, &node_id, key, &services)?);
                enrolment = Some(enrolled);
            }
        } else {
            std::thread::sleep(Duration::from_millis(args.tick_ms));
        }
        if let Some(path) = &args.desired_file {
            let files = frame_files(path);
            let stamp = files.iter().fold((UNIX_EPOCH, 0u64), |(time, len), file| {
                let meta = std::fs::metadata(file).ok();
                let modified = meta.as_ref().and_then(|m| m.modified().ok()).unwrap_or(UNIX_EPOCH);
                (time.max(modified), len + meta.map_or(0, |m| m.len()))
            });
            if !files.is_empty() && seen_file != Some(stamp) {
                seen_file = Some(stamp);
                // Config objects first, so the document finds them.
                let mut frames: Vec<(PathBuf, Vec<u8>)> =
                    files.into_iter().filter_map(|f| std::fs::read(&f).ok().map(|b| (f, b))).collect();
                frames.sort_by_key(|(_, b)| firmware_proto::peek_kind(b) != Ok(firmware_proto::MessageKind::Config));
                for (file, frame) in frames {
                    match agent.offer_frame(&frame) {
                        Ok(true) => tracing::info!(file = %file.display(), generation = agent.generation(), "applied"),
                        Ok(false) => tracing::debug!(file = %file.display(), "unchanged"),
                        Err(e) => tracing::warn!(file = %file.display(), error = %e, "desired document rejected"),
                    }
                }
            }
        }
        cycle.step(&mut agent, channel.as_ref(), now_ms());
    }
}

/// Starts the control channel with `enrolment`'s credentials and this
/// node's registration.
fn connect(
    enrolment: &Enrolment,
    args: &RunArgs,
    node_id: &firmware_proto::NodeId,
    key: VerifyingKey,
    services: &Arc<ServiceDirectory>,
) -> anyhow::Result<Channel> {
    let config = ChannelConfig {
        keep_alive: args.keep_alive,
        epoch_file: args.data_dir.join("sequence-epoch"),
        data_dir: Some(args.data_dir.clone()),
        first_credential_check_within: args.credential_check_within,
    };
    let logs = crate::logs::LogService::new(node_id.clone(), verifier(key), Paths { data_dir: args.data_dir.clone() });
    let channel = Channel::start(enrolment, config, logs, services.clone())?;
    let mut labels = args.labels.clone();
    let address = args.address.or_else(|| {
        let first = firmware_proto::mqtt::broker_list(&enrolment.mqtt_url).next()?;
        let broker = firmware_proto::mqtt::parse_broker_url(first).ok()?;
        crate::services::detect_address(broker.host, broker.port)
    });
    match address {
        Some(address) => labels.push((crate::services::ADDRESS_LABEL.into(), address.to_string())),
        None => tracing::warn!(
            "cannot tell this device's address (give --address): its replicas cannot be Service endpoints"
        ),
    }
    channel.set_hello(hello(node_id, &labels)?);
    tracing::info!(broker = enrolment.mqtt_url, "control channel starting");
    Ok(channel)
}

/// Enrolling again when the broker refuses this node's login (its
/// credentials expired while it was offline, or it was revoked): only with
/// a join token other than the one that enrolled it, so a revoked device
/// restarted with its old command line stays out, and a device given a
/// fresh token comes back without anyone deleting files.
#[derive(Default)]
struct Reenrol {
    /// When the last attempt was made; attempts are a minute apart.
    last: Option<std::time::Instant>,
}

impl Reenrol {
    const INTERVAL: Duration = Duration::from_secs(60);

    fn attempt(&mut self, args: &RunArgs, node_name: &str, current: Option<&Enrolment>) -> Option<Enrolment> {
        let (Some(server), Some(token)) = (&args.join, &args.token) else { return None };
        if current.is_some_and(|enrolment| enrolment.enrolled_with(token)) {
            return None;
        }
        if self.last.is_some_and(|last| last.elapsed() < Self::INTERVAL) {
            return None;
        }
        self.last = Some(std::time::Instant::now());
        tracing::info!(
            server,
            node = node_name,
            "the broker refuses this node's login; enrolling again with the join token given"
        );
        let pin = match args.ca_sha256.as_deref().map(crate::tls::parse_pin).transpose() {
            Ok(pin) => pin,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot enrol again");
                return None;
            }
        };
        match Enrolment::join(server, token, node_name, &args.data_dir, pin) {
            Ok(enrolment) => {
                tracing::info!(node = node_name, "enrolled again");
                Some(enrolment)
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), retry_in_s = Self::INTERVAL.as_secs(), "enrolling again failed");
                None
            }
        }
    }
}

/// What the agent does between two waits, shared by `flotilla-agent run`
/// and the fleet simulator (`flotilla-bench fleet`), so that a simulated
/// device runs exactly the agent's decisions: apply what arrived,
/// reconcile, probe, and report (a heartbeat when one is due or a replica
/// changed, and the events).
pub struct Cycle {
    heartbeat_ms: u64,
    next_heartbeat: u64,
    last_statuses: crate::agent::Statuses,
    status_file: Option<PathBuf>,
}

impl Cycle {
    /// Heartbeats every `heartbeat`; each is also written to `status_file`.
    pub fn new(heartbeat: Duration, status_file: Option<PathBuf>) -> Self {
        Cycle {
            heartbeat_ms: heartbeat.as_millis() as u64,
            next_heartbeat: 0,
            last_statuses: Default::default(),
            status_file,
        }
    }

    /// Applies the desired frames that arrived (a refused one is reported
    /// as an event); after a new connection, the next step sends full state.
    /// Returns whether a connection came up since the last call.
    pub fn receive<R: Runtime>(&mut self, agent: &mut Agent<R>, channel: &Channel, frames: Vec<Vec<u8>>) -> bool {
        for frame in frames {
            let config = firmware_proto::peek_kind(&frame) == Ok(firmware_proto::MessageKind::Config);
            match agent.offer_frame(&frame) {
                Ok(true) if config => tracing::debug!("config object kept"),
                Ok(true) => tracing::info!(generation = agent.generation(), "desired document applied"),
                Ok(false) => tracing::debug!("desired document or config object unchanged"),
                Err(e) => {
                    tracing::warn!(error = %e, "desired document or config object rejected");
                    channel.send_event(firmware_proto::Event {
                        at_unix_ms: now_ms(),
                        replica: None,
                        kind: firmware_proto::EventKind::Rejected {
                            generation: 0,
                            reason: firmware_proto::bounded::truncated(&e.to_string()),
                        },
                        container: None,
                    });
                }
            }
        }
        let connected = channel.take_connected();
        if connected {
            // A new connection: send full state now (level-triggered).
            self.next_heartbeat = 0;
        }
        connected
    }

    /// Reconciles, probes and reports at `now` (unix ms).
    pub fn step<R: Runtime>(&mut self, agent: &mut Agent<R>, channel: Option<&Channel>, now: u64) {
        if let Err(e) = agent.reconcile(now) {
            tracing::warn!(error = %e, "reconcile step failed; retrying");
        }
        agent.probe(now);
        let now = now_ms().max(now);
        // Pods' and containers' states without usage: a change is sent at once.
        let statuses = agent.statuses(now);
        if now >= self.next_heartbeat || statuses != self.last_statuses {
            let heartbeat = agent.heartbeat(now);
            // Counts, not the whole message: Debug of every wire type would
            // cost the agent's binary kilobytes.
            tracing::debug!(
                generation = heartbeat.generation,
                replicas = heartbeat.replicas.len(),
                containers = heartbeat.containers.len(),
                "heartbeat"
            );
            if let Some(path) = &self.status_file {
                write_status(path, &heartbeat);
            }
            if let Some(channel) = channel {
                channel.send_status(heartbeat);
            }
            agent.rotate_logs(crate::logs::LogLimits::default());
            self.next_heartbeat = now + self.heartbeat_ms;
            self.last_statuses = statuses;
        }
        for event in agent.take_events() {
            tracing::debug!(replica = event.replica.as_ref().map(|r| r.as_str()), "event");
            if let Some(channel) = channel {
                channel.send_event(event);
            }
        }
    }
}

/// `flotilla-agent stop-all`: kills and removes every container this
/// agent's runtime state knows.
pub fn stop_all(data_dir: &Path) -> anyhow::Result<()> {
    let paths = Paths { data_dir: data_dir.to_owned() };
    let program = std::env::current_exe().context("locating the agent binary for its runtime helper")?;
    let mut runtime = HelperRuntime::new(&program, &paths.runtime_state(), &paths.bundles());
    let containers = runtime.list().context("listing containers")?;
    for container in &containers {
        match runtime.delete(&container.id, true) {
            Ok(()) => tracing::info!(container = container.id, "stopped and removed"),
            Err(e) => tracing::warn!(container = container.id, error = %e, "cannot remove"),
        }
    }
    // Container root filesystems (overlay mounts) are the agent's to
    // release; with the agent gone, do it here.
    let mut unmounted = 0;
    let data_dir = data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_owned());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        if Path::new(point).starts_with(&data_dir) {
            match nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) => unmounted += 1,
                Err(e) => tracing::warn!(mount = point, error = %e, "cannot unmount"),
            }
        }
    }
    eprintln!("{} container(s) stopped, {unmounted} mount(s) released", containers.len());
    Ok(())
}
