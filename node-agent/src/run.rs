//! `flotilla-agent run`: the agent's main loop.
//!
//! Until the MQTT control channel lands (issue #8), desired documents come
//! from a signed file (`--desired-file`, also how an air-gapped device is
//! updated from a USB stick) and from local state: after a reboot the agent
//! brings back the last applied document's workloads with no network at all.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ed25519_dalek::VerifyingKey;

use crate::agent::{Agent, Backoff, Verifier};
use crate::runtime::helper::HelperRuntime;
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
    /// The controller's Ed25519 public key (32 bytes raw or 64 hex characters),
    /// pinned at enrolment: documents not signed by it are refused.
    #[arg(long, env = "FLOTILLA_CONTROLLER_KEY")]
    pub controller_key: PathBuf,
    /// A signed desired-state document to apply (re-read when it changes).
    #[arg(long)]
    pub desired_file: Option<PathBuf>,
    /// MQTT broker of the controller (not supported yet: issue #8).
    #[arg(long, env = "FLOTILLA_MQTT_URL")]
    pub mqtt_url: Option<String>,
    /// Where the latest status (the heartbeat, as JSON) is written for local
    /// tools; tmpfs by default so that flash storage is not worn.
    #[arg(long, default_value = "/run/flotilla-agent/status.json")]
    pub status_file: PathBuf,
    /// How often the containers are compared with the desired state.
    #[arg(long, default_value_t = 500)]
    pub tick_ms: u64,
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "node".into())
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

/// Runs until killed. Containers keep running when the agent stops.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if let Some(url) = &args.mqtt_url {
        anyhow::bail!("not supported yet: the MQTT control channel ({url}) arrives with issue #8; use --desired-file");
    }
    let node_id = args.node_id.clone().unwrap_or_else(hostname);
    let node_id = firmware_proto::Name::new(&node_id).map_err(|e| anyhow::anyhow!("node id {node_id:?}: {e}"))?;
    let key = read_public_key(&args.controller_key)?;
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let paths = Paths { data_dir: args.data_dir.clone() };
    let program = std::env::current_exe().context("locating the agent binary for its runtime helper")?;
    let runtime = HelperRuntime::new(&program, &paths.runtime_state(), &paths.bundles());
    let mut agent = Agent::new(runtime, paths, node_id.clone(), verifier(key), Backoff::default());
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
    let mut seen_file: Option<(SystemTime, u64)> = None;
    let mut next_heartbeat = 0;
    let mut last_phases = Vec::new();
    loop {
        if let Some(file) = &args.desired_file
            && let Ok(meta) = std::fs::metadata(file)
        {
            let stamp = (meta.modified().unwrap_or(UNIX_EPOCH), meta.len());
            if seen_file != Some(stamp) {
                seen_file = Some(stamp);
                match std::fs::read(file) {
                    Ok(frame) => match agent.offer_desired(&frame) {
                        Ok(true) => tracing::info!(generation = agent.generation(), "desired document applied"),
                        Ok(false) => tracing::debug!("desired document unchanged"),
                        Err(e) => tracing::warn!(file = %file.display(), error = %e, "desired document rejected"),
                    },
                    Err(e) => tracing::warn!(file = %file.display(), error = %e, "cannot read the desired document"),
                }
            }
        }
        if let Err(e) = agent.reconcile(now_ms()) {
            tracing::warn!(error = %e, "reconcile step failed; retrying");
        }
        agent.probe(now_ms());
        let now = now_ms();
        let phases: Vec<_> =
            agent.replica_statuses(now).into_iter().map(|r| (r.phase, r.restarts, r.readiness)).collect();
        if now >= next_heartbeat || phases != last_phases {
            // Published on nodes/{id}/status once the control channel exists (#8).
            let heartbeat = agent.heartbeat(now);
            tracing::debug!(?heartbeat, "heartbeat");
            write_status(&args.status_file, &heartbeat);
            agent.rotate_logs(crate::logs::LogLimits::default());
            next_heartbeat = now + 10_000;
            last_phases = phases;
        }
        for event in agent.take_events() {
            // Published on nodes/{id}/events once the control channel exists (#8).
            tracing::debug!(?event, "event");
        }
        std::thread::sleep(Duration::from_millis(args.tick_ms));
    }
}
