//! The agent's core: accept desired-state documents, keep the containers
//! matching them, restart by policy with back-off, and remember everything
//! on local storage so that a reboot without network brings the same
//! workloads back.
//!
//! Synchronous and clock-free (the caller passes `now_ms`), over any
//! [`Runtime`]: the reconciler tests run on the fake runtime, the real agent
//! on the libcontainer helper.
//!
//! Level-triggered: [`Agent::reconcile`] compares the whole desired
//! document with what the runtime reports and moves one step. Nothing
//! unchanged is restarted, because a container is identified by its pod
//! and container name ([`crate::pod::unit_id`]) and replaced only when the
//! hash of its spec changes.
//!
//! The document is the Linux profile's ([`PodDocument`]): pods of one or
//! more containers. A pod's init containers run in order, each to
//! completion (a sidecar: until it runs) before the next starts; then its
//! app containers start together. The ConfigMaps and Secrets the pods
//! mount arrive as objects of their own ([`Agent::offer_config`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use firmware_proto::pod::{ConfigBlob, PodDocument, PodSpec};
use firmware_proto::{
    ContainerState as WireState, ContainerStatus, DecodeError, Event, EventKind, Exit, ExitReason, MessageKind, NodeId,
    Phase, Readiness, ReplicaRef, ReplicaStatus, RestartPolicy,
};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::image::{ImageSettings, Images};
use crate::pod::{ConfigObjects, Unit};
use crate::probe::ProbeTally;
use crate::runtime::{ContainerState, ExitInfo, Runtime, RuntimeError, Status};
pub use crate::signed::Verifier;
use crate::signed::{self, Refusal};
use crate::workload::{Paths, unit_hash};

/// CrashLoopBackOff: the delay before restart n is `initial * 2^(n-1)`,
/// capped; a container that ran for `reset_after_ms` starts over.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub initial_ms: u64,
    /// Cap (Kubernetes: 5 minutes).
    pub max_ms: u64,
    /// Running this long resets the count (Kubernetes: 10 minutes).
    pub reset_after_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial_ms: 1_000, max_ms: 300_000, reset_after_ms: 600_000 }
    }
}

impl Backoff {
    /// Delay before the `restarts`-th restart (1-based).
    pub fn delay_ms(&self, restarts: u32) -> u64 {
        let exp = restarts.saturating_sub(1).min(30);
        self.initial_ms.saturating_mul(1 << exp).min(self.max_ms)
    }
}

/// What the agent remembers about one container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Hash of the spec the container was created from.
    pub spec_hash: u64,
    /// Restarts so far.
    pub restarts: u32,
    /// How the last run ended.
    pub last_exit: Option<ExitInfo>,
    /// Why the current run is being ended by the agent, if it is (liveness).
    pub ended_by_agent: Option<ExitReason>,
    /// Why the last run was ended by the agent, if it was.
    pub last_ended_by_agent: Option<ExitReason>,
    /// When the current run started.
    pub started_at_ms: u64,
    /// Not before this time will it be started again.
    pub backoff_until_ms: u64,
    /// It ended and its policy says it stays ended.
    pub finished: bool,
    /// Last error preventing it from running (image missing...).
    pub blocked: Option<String>,
    /// Its spec's termination grace, for stopping it once it has left the
    /// document (and its spec with it). `None`: recorded by an older agent.
    #[serde(default)]
    pub grace_s: Option<u16>,
    /// Its spec's ports: a replica taking its place waits until it is gone
    /// (containers share the device's network).
    #[serde(default)]
    pub ports: Vec<u16>,
}

impl Record {
    /// It ended for good with exit 0: an init container that completed.
    fn completed(&self) -> bool {
        self.finished && matches!(self.last_exit, Some(ExitInfo { code: Some(0), signal: None, .. }))
    }
}

/// What is kept on disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Persisted {
    /// The last applied desired frame, verbatim (verified again on load).
    desired_frame: Vec<u8>,
    records: BTreeMap<String, Record>,
}

/// Why a desired document was not applied.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    /// Not a valid frame.
    #[error("malformed desired document: {0}")]
    Malformed(#[from] DecodeError),
    /// For another node.
    #[error("desired document for node {found}, this node is {expected}")]
    WrongNode {
        /// This node.
        expected: String,
        /// In the document.
        found: String,
    },
    /// Signature does not verify with the pinned controller key.
    #[error("desired document signature does not verify with the controller key: forged or corrupted")]
    BadSignature,
    /// Older than the one applied (a replay, or a stale retained message).
    #[error("desired document generation {found} is older than the applied generation {applied}")]
    Stale {
        /// Applied.
        applied: u64,
        /// Offered.
        found: u64,
    },
    /// Saving it failed (disk full).
    #[error("saving the desired document: {0}")]
    Storage(String),
    /// A document of the other profile.
    #[error("a {found} frame: this agent takes the Linux profile's pod documents")]
    WrongProfile {
        /// What came.
        found: MessageKind,
    },
}

impl From<Refusal> for Rejected {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Malformed(e) => Rejected::Malformed(e),
            Refusal::BadSignature => Rejected::BadSignature,
            Refusal::WrongNode { expected, found } => {
                Rejected::WrongNode { expected: expected.to_string(), found: found.to_string() }
            }
        }
    }
}

/// The agent.
pub struct Agent<R: Runtime> {
    runtime: R,
    paths: Paths,
    node_id: NodeId,
    verify: Verifier,
    backoff: Backoff,
    desired: Option<Arc<PodDocument>>,
    /// ConfigMaps and Secrets by digest.
    config: ConfigObjects,
    /// Objects that arrived before a document naming them, oldest first,
    /// with their frames (stored once a document names them).
    early_config: Vec<([u8; 32], Vec<u8>)>,
    persisted: Persisted,
    /// Containers being stopped: id -> when to SIGKILL.
    stopping: BTreeMap<String, u64>,
    /// Service endpoints for containers' environment and mounts.
    services: Option<std::sync::Arc<crate::services::ServiceDirectory>>,
    /// Events not yet sent.
    outbox: Vec<Event>,
    /// cgroup and node usage.
    usage: Box<dyn crate::telemetry::UsageSource>,
    /// Probe tallies of running containers, reset when a container starts.
    probes: BTreeMap<String, Probes>,
    /// Image pulls, the layer store and container root filesystems.
    images: Images,
}

/// How many config objects, and bytes of them, may wait for a document
/// that names them (retained objects are all replayed on reconnect).
const EARLY_CONFIG_MAX: usize = 64;
const EARLY_CONFIG_BYTES: usize = 16 << 20;

/// The three probes of one running container.
#[derive(Debug, Clone, Default)]
struct Probes {
    startup: ProbeTally,
    readiness: ProbeTally,
    liveness: ProbeTally,
}

/// What a part of [`Agent::reconcile`] did: runtime actions taken, and
/// whether the records changed (then they are saved).
#[derive(Debug, Clone, Copy, Default)]
struct Step {
    actions: usize,
    changed: bool,
}

impl std::ops::AddAssign for Step {
    fn add_assign(&mut self, other: Step) {
        self.actions += other.actions;
        self.changed |= other.changed;
    }
}

/// Where one container of a pod stands after its step: what the next
/// container of the pod waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Running (and past its startup probe), or started in this step.
    Up,
    /// Ended for good with exit 0.
    Completed,
    /// Neither yet.
    NotYet,
}

/// The status of every pod (and of each container of pods of several),
/// as a heartbeat carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statuses {
    /// One per pod, in document order.
    pub replicas: Vec<ReplicaStatus>,
    /// One per container of each pod of more than one.
    pub containers: Vec<ContainerStatus>,
}

fn exit_of(info: &ExitInfo, by_agent: Option<ExitReason>) -> Exit {
    let reason = if let Some(reason @ (ExitReason::LivenessFailed | ExitReason::Stopped)) = by_agent {
        reason
    } else if info.oom_killed {
        ExitReason::OomKilled
    } else if info.signal.is_some() {
        ExitReason::Signaled
    } else {
        ExitReason::Exited
    };
    Exit { code: info.code.unwrap_or(-1), reason }
}

impl<R: Runtime> Agent<R> {
    /// An agent; loads the last applied document and records from disk.
    pub fn new(runtime: R, paths: Paths, node_id: NodeId, verify: Verifier, backoff: Backoff) -> Self {
        let images = Images::new(&paths.data_dir, ImageSettings::default());
        let mut agent = Agent {
            runtime,
            paths,
            node_id,
            verify,
            backoff,
            desired: None,
            config: ConfigObjects::default(),
            early_config: Vec::new(),
            persisted: Persisted::default(),
            stopping: BTreeMap::new(),
            services: None,
            outbox: Vec::new(),
            usage: Box::new(crate::telemetry::UsageSampler::default()),
            probes: BTreeMap::new(),
            images,
        };
        agent.load();
        agent
    }

    /// Secrets in documents are opened with `key`, this node's seal key.
    pub fn set_seal_key(&mut self, key: [u8; 32]) {
        self.config.set_seal_key(key);
    }

    /// Replaces the default image settings (disk budget, root filesystem mode).
    pub fn with_image_settings(mut self, settings: ImageSettings) -> Self {
        self.images = Images::new(&self.paths.data_dir, settings);
        self
    }

    /// Takes usage from `usage` instead of the cgroups (the fleet
    /// simulator's devices run no containers).
    pub fn with_usage(mut self, usage: Box<dyn crate::telemetry::UsageSource>) -> Self {
        self.usage = usage;
        self
    }

    /// Containers started from now on get the Services' environment
    /// variables and the endpoints file from `services`.
    pub fn with_services(mut self, services: std::sync::Arc<crate::services::ServiceDirectory>) -> Self {
        self.services = Some(services);
        self
    }

    /// The images (tests and benchmarks look inside).
    pub fn images(&mut self) -> &mut Images {
        &mut self.images
    }

    fn load(&mut self) {
        let path = self.paths.state_file();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read local state; starting empty");
                return;
            }
        };
        match postcard::from_bytes::<Persisted>(&bytes) {
            Ok(persisted) => {
                match self.check(&persisted.desired_frame) {
                    Ok(document) => {
                        tracing::info!(
                            generation = document.generation,
                            pods = document.pods.len(),
                            "restored the last desired document from local state"
                        );
                        for reference in document.config.iter() {
                            let file = self.paths.config_object(&reference.digest.0);
                            match std::fs::read(&file).map_err(|e| e.to_string()).and_then(|f| self.check_config(&f)) {
                                Ok((digest, blob)) if digest == reference.digest.0 => {
                                    self.config.insert(firmware_proto::Bytes(digest), blob)
                                }
                                Ok(_) => tracing::error!(file = %file.display(), "a stored config object changed"),
                                Err(e) => {
                                    tracing::warn!(file = %file.display(), error = %e, "a config object is not stored; waiting for it")
                                }
                            }
                        }
                        self.desired = Some(Arc::new(document));
                    }
                    Err(e) => tracing::error!(error = %e, "the stored desired document does not verify; ignoring it"),
                }
                self.persisted = persisted;
            }
            Err(e) => tracing::error!(path = %path.display(), error = %e, "local state unreadable; starting empty"),
        }
    }

    fn save(&self) -> Result<(), String> {
        let bytes = postcard::to_stdvec(&self.persisted).map_err(|e| e.to_string())?;
        crate::persist::write_atomic(&self.paths.state_file(), &bytes).map_err(|e| e.to_string())
    }

    fn save_logged(&self) {
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "saving local state failed (disk full?); running on");
        }
    }

    /// Decodes and verifies a frame without applying it.
    fn check(&self, frame: &[u8]) -> Result<PodDocument, Rejected> {
        match firmware_proto::peek_kind(frame)? {
            MessageKind::Pods => {}
            found => return Err(Rejected::WrongProfile { found }),
        }
        let (document, _) = signed::check(frame, firmware_proto::decode_signed, &self.verify, &self.node_id)?;
        Ok(document)
    }

    /// Decodes and verifies a config object frame: its digest and the object.
    fn check_config(&self, frame: &[u8]) -> Result<([u8; 32], ConfigBlob), String> {
        let decoded = firmware_proto::decode_signed::<ConfigBlob>(frame).map_err(|e| e.to_string())?;
        if !(self.verify)(decoded.authenticated, &decoded.frame.1) {
            return Err("config object signature does not verify with the controller key".into());
        }
        let body = firmware_proto::pod::signed_body(frame).ok_or("config object frame too short")?;
        Ok((sha2::Sha256::digest(body).into(), decoded.frame.0))
    }

    /// The generation applied, 0 if none.
    pub fn generation(&self) -> u64 {
        self.desired.as_ref().map_or(0, |d| d.generation)
    }

    /// Offers a frame from the controller: a pod document or a config
    /// object. Returns whether it changed anything.
    pub fn offer_frame(&mut self, frame: &[u8]) -> Result<bool, Rejected> {
        match firmware_proto::peek_kind(frame)? {
            MessageKind::Config => self.offer_config(frame).map_err(Rejected::Storage),
            _ => self.offer_desired(frame),
        }
    }

    /// Offers a desired-state frame (from MQTT or a file). Returns whether it
    /// changed anything; a document equal to the applied one is accepted
    /// and ignored (retained messages are redelivered on every reconnect).
    pub fn offer_desired(&mut self, frame: &[u8]) -> Result<bool, Rejected> {
        let document = self.check(frame)?;
        let applied = self.generation();
        if document.generation < applied || (document.generation == applied && frame != self.persisted.desired_frame) {
            return Err(Rejected::Stale { applied, found: document.generation });
        }
        if document.generation == applied {
            return Ok(false);
        }
        self.persisted.desired_frame = frame.to_vec();
        self.save().map_err(Rejected::Storage)?;
        tracing::info!(generation = document.generation, pods = document.pods.len(), "applying desired document");
        let (named, early): (Vec<_>, Vec<_>) = std::mem::take(&mut self.early_config)
            .into_iter()
            .partition(|(digest, _)| document.config.iter().any(|r| r.digest.0 == *digest));
        self.early_config = early;
        let keep: Vec<[u8; 32]> = self.early_config.iter().map(|(d, _)| *d).collect();
        self.config.retain(Some(&document), &keep);
        self.desired = Some(Arc::new(document));
        self.store_config_objects(&named);
        Ok(true)
    }

    /// Offers a config object frame. Kept if it verifies; on disk too when
    /// the applied document names it. Returns whether it was new.
    pub fn offer_config(&mut self, frame: &[u8]) -> Result<bool, String> {
        let (digest, blob) = self.check_config(frame)?;
        let digest = firmware_proto::Bytes(digest);
        if self.config.contains(&digest) {
            return Ok(false);
        }
        let named = self.desired.as_ref().is_some_and(|d| d.config.iter().any(|r| r.digest == digest));
        tracing::info!(name = %blob.name, bytes = frame.len(), named, "config object received");
        self.config.insert(digest, blob);
        if named {
            let path = self.paths.config_object(&digest.0);
            crate::persist::write_atomic(&path, frame)
                .map_err(|e| format!("storing config object {}: {e}", path.display()))?;
        } else {
            self.early_config.push((digest.0, frame.to_vec()));
            while self.early_config.len() > EARLY_CONFIG_MAX
                || self.early_config.iter().map(|(_, f)| f.len()).sum::<usize>() > EARLY_CONFIG_BYTES
            {
                self.early_config.remove(0);
            }
            let keep: Vec<[u8; 32]> = self.early_config.iter().map(|(d, _)| *d).collect();
            self.config.retain(self.desired.as_deref(), &keep);
        }
        Ok(true)
    }

    /// Keeps on disk exactly the config objects the applied document names:
    /// stores `arrived` (frames that came before it), removes the rest.
    fn store_config_objects(&self, arrived: &[([u8; 32], Vec<u8>)]) {
        let Some(document) = &self.desired else { return };
        for (digest, frame) in arrived {
            let path = self.paths.config_object(digest);
            if let Err(e) = crate::persist::write_atomic(&path, frame) {
                tracing::error!(path = %path.display(), error = %e, "storing a config object failed (disk full?)");
            }
        }
        let dir = self.paths.config_dir();
        let keep: Vec<String> = document.config.iter().map(|r| crate::image::Sha256(r.digest.0).hex()).collect();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !keep.iter().any(|k| name.starts_with(k.as_str())) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.outbox)
    }

    /// The runtime (tests and benchmarks look inside).
    pub fn runtime(&mut self) -> &mut R {
        &mut self.runtime
    }

    /// A container leaving the document that still runs and holds one of
    /// `unit`'s ports, if any.
    fn port_holder<'a>(
        &self,
        unit: &Unit<'_>,
        running: &'a BTreeMap<String, ContainerState>,
        desired: &[Unit<'_>],
    ) -> Option<&'a str> {
        let wanted = ports_of(unit);
        if wanted.is_empty() {
            return None;
        }
        running
            .iter()
            .filter(|(id, state)| state.status != Status::Stopped && !desired.iter().any(|u| u.id == **id))
            .find(|(id, _)| {
                self.persisted.records.get(id.as_str()).is_some_and(|r| r.ports.iter().any(|p| wanted.contains(p)))
            })
            .map(|(id, _)| id.as_str())
    }

    fn event(&mut self, now_ms: u64, unit: &Unit<'_>, kind: EventKind) {
        let container = unit.shares_pod().then(|| unit.container.name.clone());
        self.outbox.push(Event { at_unix_ms: now_ms, replica: Some(unit.pod.id.clone()), kind, container });
    }

    /// One step towards the desired document. Returns the number of runtime
    /// actions taken.
    pub fn reconcile(&mut self, now_ms: u64) -> Result<usize, RuntimeError> {
        let running: BTreeMap<String, ContainerState> =
            self.runtime.list()?.into_iter().map(|s| (s.id.clone(), s)).collect();
        let desired = self.desired.clone();
        let pods = desired.as_ref().map(|d| d.pods.as_slice()).unwrap_or_default();
        let units: Vec<Unit<'_>> = pods.iter().flat_map(Unit::all).collect();
        self.images.retain(
            units.iter().map(|u| &u.container.image),
            units.iter().map(|u| u.id.as_str()).chain(running.keys().map(String::as_str)),
        );
        for kind in self.images.take_events(now_ms) {
            self.outbox.push(Event { at_unix_ms: now_ms, replica: None, kind, container: None });
        }
        // With no document (none yet, or the stored one is of an older
        // protocol after an offline upgrade), what runs keeps running and
        // nothing is removed until one arrives.
        let mut step = if desired.is_some() { self.stop_removed(&running, &units, now_ms)? } else { Step::default() };
        if let Some(document) = &desired {
            for pod in document.pods.iter() {
                step += self.reconcile_pod(pod, document, &units, &running, now_ms)?;
            }
        }
        if step.changed || step.actions > 0 {
            self.save_logged();
        }
        Ok(step.actions)
    }

    /// Stops what is no longer desired: SIGTERM, then SIGKILL after the
    /// grace period; its record goes with the container, and a pod's
    /// volumes go with its last container.
    fn stop_removed(
        &mut self,
        running: &BTreeMap<String, ContainerState>,
        units: &[Unit<'_>],
        now_ms: u64,
    ) -> Result<Step, RuntimeError> {
        let mut step = Step::default();
        // Images new containers still wait for. A container leaving runs on
        // until they are here (or their pull failed): when a rollout swaps
        // replicas on this node, the download does not widen the outage.
        let awaiting_images = units
            .iter()
            .filter(|u| !running.contains_key(&u.id))
            .filter(|u| !self.persisted.records.get(&u.id).is_some_and(|rec| rec.finished))
            .any(|u| {
                matches!(self.images.availability(&u.container.image, now_ms), crate::image::Availability::Pulling)
            });

        for (id, state) in running {
            if units.iter().any(|u| u.id == *id) {
                continue;
            }
            if awaiting_images && state.status == Status::Running && !self.stopping.contains_key(id) {
                continue;
            }
            let grace = self.persisted.records.get(id).and_then(|r| r.grace_s).unwrap_or(10);
            step.actions += self.stop_step(id, state, now_ms, grace)?;
            if state.status == Status::Stopped {
                self.persisted.records.remove(id);
                step.changed = true;
            }
        }
        // Records of containers that are gone with their pod.
        let gone: Vec<String> = self
            .persisted
            .records
            .keys()
            .filter(|id| !running.contains_key(*id) && !units.iter().any(|u| u.id == **id))
            .cloned()
            .collect();
        for id in gone {
            self.persisted.records.remove(&id);
            step.changed = true;
        }
        self.remove_volumes_of_gone_pods(running, units);
        self.remove_claims_not_listed(running, units);
        Ok(step)
    }

    /// A claim's data goes once the document no longer lists it, and no
    /// container of a pod that left the document still runs (it may be
    /// writing to it while it stops).
    fn remove_claims_not_listed(&self, running: &BTreeMap<String, ContainerState>, units: &[Unit<'_>]) {
        let Some(document) = self.desired.as_deref() else { return };
        if running.keys().all(|id| units.iter().any(|u| u.id == *id)) {
            crate::claims::prune(&self.paths.data_dir, document);
        }
    }

    /// emptyDir volumes live as long as their pod on this node.
    fn remove_volumes_of_gone_pods(&self, running: &BTreeMap<String, ContainerState>, units: &[Unit<'_>]) {
        let Ok(entries) = std::fs::read_dir(self.paths.data_dir.join("volumes")) else { return };
        for entry in entries.flatten() {
            let pod = entry.file_name().to_string_lossy().into_owned();
            let desired = units.iter().any(|u| u.pod.id.as_str() == pod);
            let alive = running.keys().any(|id| crate::pod::pod_of(id) == pod);
            if !desired && !alive {
                crate::workload::remove_volumes(&entry.path());
                tracing::info!(pod, "removed the volumes of a pod that is gone");
            }
        }
    }

    /// One step for each container of a pod, in order: an init container
    /// starts once the one before it completed (a sidecar: once it runs),
    /// the app containers once every init container has. When a pod's app
    /// containers have all finished, its sidecars are stopped.
    fn reconcile_pod(
        &mut self,
        pod: &PodSpec,
        document: &PodDocument,
        units: &[Unit<'_>],
        running: &BTreeMap<String, ContainerState>,
        now_ms: u64,
    ) -> Result<Step, RuntimeError> {
        let mut step = Step::default();
        let mut gate: Option<String> = None;
        let pod_units = Unit::all(pod);
        let finished = |u: &Unit<'_>| {
            self.persisted.records.get(&u.id).is_some_and(|r| r.finished) && !running.contains_key(&u.id)
        };
        // The pod is done: its app containers all ended for good, or an
        // init container failed for good (restartPolicy Never).
        let app_done = pod_units.iter().filter(|u| !u.init).all(finished)
            || pod_units
                .iter()
                .filter(|u| u.runs_to_completion())
                .any(|u| finished(u) && self.persisted.records.get(&u.id).is_some_and(|r| !r.completed()));
        // Once an app container was created the pod is initialised: a
        // sidecar restarting later holds nothing up.
        let initialised = pod_units.iter().filter(|u| !u.init).any(|u| {
            running.contains_key(&u.id) || self.persisted.records.get(&u.id).is_some_and(|r| r.spec_hash != 0)
        });
        for unit in &pod_units {
            if unit.container.sidecar && app_done {
                step += self.retire_sidecar(unit, running, now_ms)?;
                continue;
            }
            let (unit_step, progress) = self.reconcile_unit(unit, document, units, running, gate.as_deref(), now_ms)?;
            step += unit_step;
            if unit.init && gate.is_none() && !initialised {
                let ready = if unit.container.sidecar { Progress::Up } else { Progress::Completed };
                if progress != ready {
                    gate = Some(format!("waiting for init container {}", unit.container.name));
                }
            }
        }
        Ok(step)
    }

    /// Stops a sidecar whose app containers have all finished (a Job's
    /// pod), for good.
    fn retire_sidecar(
        &mut self,
        unit: &Unit<'_>,
        running: &BTreeMap<String, ContainerState>,
        now_ms: u64,
    ) -> Result<Step, RuntimeError> {
        let mut step = Step::default();
        let Some(state) = running.get(&unit.id) else { return Ok(step) };
        let record = self.persisted.records.entry(unit.id.clone()).or_default();
        if !record.finished {
            record.finished = true;
            record.ended_by_agent = Some(ExitReason::Stopped);
            step.changed = true;
        }
        step.actions += self.stop_step(&unit.id, state, now_ms, unit.pod.termination_grace_s)?;
        if state.status == Status::Stopped
            && let Some(record) = self.persisted.records.get_mut(&unit.id)
        {
            record.last_exit = state.exit;
            record.last_ended_by_agent = record.ended_by_agent.take();
        }
        Ok(step)
    }

    /// One step for one container: replace it if its spec changed, start
    /// it (unless `gate` says what it waits for), handle its exit by its
    /// restart policy, or note why it waits.
    fn reconcile_unit(
        &mut self,
        unit: &Unit<'_>,
        document: &PodDocument,
        units: &[Unit<'_>],
        running: &BTreeMap<String, ContainerState>,
        gate: Option<&str>,
        now_ms: u64,
    ) -> Result<(Step, Progress), RuntimeError> {
        let id = unit.id.clone();
        let hash = unit_hash(unit, document);
        let mut record = self.persisted.records.get(&id).cloned().unwrap_or_default();
        let state = running.get(&id);

        // A changed spec replaces the container (and starts a fresh history).
        if let Some(state) = state
            && record.spec_hash != hash
            && record.spec_hash != 0
        {
            return Ok((self.replace_step(unit, state, now_ms)?, Progress::NotYet));
        }

        let mut step = Step::default();
        let mut progress = Progress::NotYet;
        match state.map(|s| s.status) {
            Some(Status::Running) => {
                // Re-adopted after an agent restart: probes count from now.
                self.probes.entry(id.clone()).or_insert_with(|| Probes::started(now_ms));
                if record.spec_hash == 0 {
                    // Re-adopted (agent restarted with a lost record): keep it.
                    record.spec_hash = hash;
                    record.started_at_ms = now_ms;
                }
                if record.restarts > 0 && now_ms.saturating_sub(record.started_at_ms) > self.backoff.reset_after_ms {
                    record.restarts = 0;
                }
                let started = unit.container.startup_probe.is_none()
                    || self.probes.get(&id).is_some_and(|p| p.startup.passing == Some(true));
                if started {
                    progress = Progress::Up;
                }
            }
            Some(Status::Created) => {
                self.runtime.start(&id)?;
                step.actions += 1;
                record.started_at_ms = now_ms;
                self.probes.insert(id.clone(), Probes::started(now_ms));
                self.event(now_ms, unit, EventKind::Started);
            }
            Some(Status::Stopped) => {
                let state = state.expect("matched Some");
                step.actions += self.exited(unit, state, &mut record, now_ms)?;
            }
            None if record.finished && record.spec_hash == hash => {}
            None if record.backoff_until_ms > now_ms => {}
            None if let Some(reason) = gate => {
                if record.blocked.as_deref() != Some(reason) {
                    record.blocked = Some(reason.to_owned());
                    step.changed = true;
                }
            }
            None if let Some(holder) = self.port_holder(unit, running, units) => {
                let reason = format!("waiting for {holder} to stop: it holds a port this container uses");
                if record.blocked.as_deref() != Some(&reason) {
                    tracing::info!(container = %id, "{reason}");
                    record.blocked = Some(reason);
                    step.changed = true;
                }
            }
            None => {
                step += self.create_and_start(unit, document, hash, &mut record, now_ms)?;
                if record.blocked.is_none() && unit.container.startup_probe.is_none() {
                    progress = Progress::Up;
                }
            }
        }
        if record.completed() && record.spec_hash == hash && state.is_none() {
            progress = Progress::Completed;
        }
        if self.persisted.records.get(&id) != Some(&record) {
            self.persisted.records.insert(id, record);
            step.changed = true;
        }
        Ok((step, progress))
    }

    /// A container whose spec changed: the new version's image first (a
    /// running old container runs on until it is here, and on if its pull
    /// fails), then the old container stops; once it is gone the container
    /// starts over with a fresh record.
    fn replace_step(&mut self, unit: &Unit<'_>, state: &ContainerState, now_ms: u64) -> Result<Step, RuntimeError> {
        let mut step = Step::default();
        if state.status == Status::Running
            && !matches!(self.images.availability(&unit.container.image, now_ms), crate::image::Availability::Ready(_))
        {
            return Ok(step);
        }
        step.actions += self.stop_step(&unit.id, state, now_ms, unit.pod.termination_grace_s)?;
        if state.status == Status::Stopped {
            self.persisted.records.insert(unit.id.clone(), Record::default());
            step.changed = true;
        }
        Ok(step)
    }

    /// A container exited: reports how, deletes the container and, by its
    /// restart policy, schedules the restart after the back-off or marks it
    /// finished. Returns actions taken.
    fn exited(
        &mut self,
        unit: &Unit<'_>,
        state: &ContainerState,
        record: &mut Record,
        now_ms: u64,
    ) -> Result<usize, RuntimeError> {
        let id = unit.id.as_str();
        let info = state.exit.unwrap_or(ExitInfo { code: None, signal: None, oom_killed: false });
        record.last_ended_by_agent = record.ended_by_agent.take();
        let exit = exit_of(&info, record.last_ended_by_agent);
        tracing::info!(container = %id, code = exit.code, reason = ?exit.reason, "container exited");
        if exit.reason == ExitReason::OomKilled {
            let limit_bytes = unit.container.resources.memory_limit_bytes.unwrap_or(0);
            self.event(now_ms, unit, EventKind::OomKilled { limit_bytes });
        }
        self.event(now_ms, unit, EventKind::Exited(exit));
        record.last_exit = Some(info);
        let succeeded = exit.code == 0 && exit.reason == ExitReason::Exited;
        let restart = match unit.restart_policy() {
            _ if exit.reason == ExitReason::Stopped => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !succeeded,
            RestartPolicy::Never => false,
        };
        self.runtime.delete(id, true)?;
        self.images.release_rootfs(id);
        if restart {
            record.restarts += 1;
            record.backoff_until_ms = now_ms + self.backoff.delay_ms(record.restarts);
        } else {
            record.finished = true;
        }
        Ok(1)
    }

    /// Creates and starts a container, or notes in its record why it cannot
    /// run yet (image still pulling, config object still coming...). A
    /// failed create is saved in the record before the error is returned.
    fn create_and_start(
        &mut self,
        unit: &Unit<'_>,
        document: &PodDocument,
        hash: u64,
        record: &mut Record,
        now_ms: u64,
    ) -> Result<Step, RuntimeError> {
        let id = unit.id.as_str();
        let mut step = Step::default();
        let prepared = crate::workload::prepare(&self.paths, &mut self.images, unit, document, &self.config, now_ms);
        let mut container = match prepared {
            Ok(container) => container,
            Err(e) => {
                let reason = e.to_string();
                if record.blocked.as_deref() != Some(&reason) {
                    tracing::warn!(container = %id, error = %reason, "cannot run container");
                    record.blocked = Some(reason);
                    step.changed = true;
                }
                return Ok(step);
            }
        };
        if let Some(services) = &self.services {
            let (env, mount) = services.for_container();
            container.env.extend(env);
            container.mounts.push(mount);
        }
        if record.spec_hash != hash {
            *record = Record { spec_hash: hash, ..Record::default() };
        }
        record.grace_s = Some(unit.pod.termination_grace_s);
        record.ports = ports_of(unit);
        record.blocked = None;
        record.finished = false;
        match self.runtime.create(&container) {
            Ok(()) | Err(RuntimeError::AlreadyExists(_)) => {}
            // This container cannot be made (its command is not in the
            // image, its bundle cannot be written): it backs off and says
            // why, as an exit would, and the other containers go on.
            Err(e @ (RuntimeError::Container { .. } | RuntimeError::Bundle { .. })) => {
                let reason = e.to_string();
                tracing::warn!(container = %id, error = %reason, "cannot create the container; backing off");
                let _ = self.runtime.delete(id, true);
                self.images.release_rootfs(id);
                record.blocked = Some(reason.clone());
                record.restarts += 1;
                record.backoff_until_ms = now_ms + self.backoff.delay_ms(record.restarts);
                let generation = self.generation();
                let reason = firmware_proto::bounded::truncated(&reason);
                self.event(now_ms, unit, EventKind::Rejected { generation, reason });
                step.changed = true;
                return Ok(step);
            }
            Err(e) => {
                record.blocked = Some(e.to_string());
                self.persisted.records.insert(id.to_owned(), std::mem::take(record));
                self.save_logged();
                return Err(e);
            }
        }
        self.runtime.start(id)?;
        step.actions += 2;
        record.started_at_ms = now_ms;
        self.probes.insert(id.to_owned(), Probes::started(now_ms));
        self.event(now_ms, unit, EventKind::Started);
        tracing::info!(container = %id, restarts = record.restarts, "container started");
        Ok(step)
    }

    /// Moves a container towards stopped and deleted. Returns actions taken.
    fn stop_step(
        &mut self,
        id: &str,
        state: &ContainerState,
        now_ms: u64,
        grace_s: u16,
    ) -> Result<usize, RuntimeError> {
        match state.status {
            Status::Stopped | Status::Created => {
                self.stopping.remove(id);
                match self.runtime.delete(id, true) {
                    Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
                self.images.release_rootfs(id);
                tracing::info!(container = %id, "container removed");
                Ok(1)
            }
            Status::Running => match self.stopping.get(id) {
                None => {
                    self.runtime.kill(id, nix::sys::signal::Signal::SIGTERM as i32)?;
                    self.stopping.insert(id.to_owned(), now_ms + u64::from(grace_s) * 1000);
                    Ok(1)
                }
                Some(deadline) if *deadline <= now_ms => {
                    self.runtime.kill(id, nix::sys::signal::Signal::SIGKILL as i32)?;
                    Ok(1)
                }
                Some(_) => Ok(0),
            },
        }
    }

    /// Ends a running container because its liveness probe failed; the
    /// restart policy then applies on the next pass.
    pub fn kill_for_liveness(&mut self, id: &str) -> Result<(), RuntimeError> {
        if let Some(record) = self.persisted.records.get_mut(id) {
            record.ended_by_agent = Some(ExitReason::LivenessFailed);
        }
        self.runtime.kill(id, nix::sys::signal::Signal::SIGKILL as i32)
    }

    /// The heartbeat: generation, node usage and every pod's status.
    pub fn heartbeat(&mut self, now_ms: u64) -> firmware_proto::Status {
        let node = self.usage.node();
        let disk_free_mib = crate::claims::free_bytes(&self.paths.data_dir)
            .map(|bytes| u32::try_from(bytes >> 20).unwrap_or(u32::MAX))
            .unwrap_or(0);
        let statuses = self.statuses_with_usage(now_ms);
        let mut replicas = heapless::Vec::new();
        // The document holds at most LINUX_MAX_PODS (= MAX_STATUS_REPLICAS).
        for status in statuses.replicas {
            let _ = replicas.push(status);
        }
        let mut containers = heapless::Vec::new();
        for (i, status) in statuses.containers.into_iter().enumerate() {
            if containers.push(status).is_err() {
                tracing::warn!(
                    reported = i,
                    limit = firmware_proto::MAX_STATUS_CONTAINERS,
                    "more containers than a heartbeat reports; the rest are left out"
                );
                break;
            }
        }
        firmware_proto::Status {
            generation: self.generation(),
            usage: firmware_proto::NodeUsage {
                cpu_millis: node.cpu_millis,
                memory_kib: u32::try_from(node.memory_bytes / 1024).unwrap_or(u32::MAX),
                disk_free_mib,
            },
            replicas,
            containers,
        }
    }

    /// [`Agent::statuses`] with each running container's usage, summed per
    /// pod. Usage only here: cgroup reads every heartbeat, not every tick.
    fn statuses_with_usage(&mut self, now_ms: u64) -> Statuses {
        // One listing of the runtime for both the states and the samples.
        let listed = self.running_containers();
        let mut statuses = self.statuses_of(&listed, now_ms);
        let Some(document) = self.desired.clone() else { return statuses };
        let running: std::collections::BTreeSet<&String> =
            listed.iter().filter(|(_, s)| s.status == Status::Running).map(|(id, _)| id).collect();
        let mut entry = 0;
        for (slot, pod) in document.pods.iter().enumerate() {
            let units = Unit::all(pod);
            let (mut cpu, mut memory) = (0u32, 0u32);
            for unit in &units {
                let sample = if running.contains(&unit.id) { self.usage.sample(&unit.id) } else { None };
                let Some(sample) = sample else {
                    self.usage.forget(&unit.id);
                    if unit.shares_pod() {
                        entry += 1;
                    }
                    continue;
                };
                let unit_memory = u32::try_from(sample.memory_bytes / 1024).unwrap_or(u32::MAX);
                cpu = cpu.saturating_add(sample.cpu_millis);
                memory = memory.saturating_add(unit_memory);
                if unit.shares_pod() {
                    if let Some(status) = statuses.containers.get_mut(entry) {
                        status.cpu_millis = sample.cpu_millis;
                        status.memory_kib = unit_memory;
                    }
                    entry += 1;
                }
            }
            if statuses.replicas[slot].phase == Phase::Running {
                statuses.replicas[slot].cpu_millis = cpu;
                statuses.replicas[slot].memory_kib = memory;
            }
        }
        statuses
    }

    /// Runs the probes that are due. A failed startup or liveness probe ends
    /// the container (the restart policy then applies); readiness is
    /// reported in the status. Returns the number of probes run.
    pub fn probe(&mut self, now_ms: u64) -> usize {
        let Some(desired) = self.desired.clone() else { return 0 };
        let mut ran = 0;
        for pod in desired.pods.iter() {
            for unit in Unit::all(pod) {
                ran += self.probe_unit(&unit, now_ms);
            }
        }
        ran
    }

    fn probe_unit(&mut self, unit: &Unit<'_>, now_ms: u64) -> usize {
        let spec = unit.container;
        let id = unit.id.as_str();
        let Some(mut tallies) = self.probes.get(id).cloned() else { return 0 };
        let mut ran = 0;
        let started = spec.startup_probe.as_ref().is_none_or(|_| tallies.startup.passing == Some(true));
        let mut failed: Option<(firmware_proto::ProbeKind, u32)> = None;
        if let Some(probe) = spec.startup_probe.as_ref().filter(|_| !started)
            && tallies.startup.due(probe, now_ms)
        {
            ran += 1;
            let ok = crate::probe::run(probe, id, &mut self.runtime);
            if tallies.startup.record(probe, now_ms, ok) == Some(false) {
                failed = Some((firmware_proto::ProbeKind::Startup, tallies.startup.failures));
            }
        }
        if started {
            if let Some(probe) = &spec.readiness_probe
                && tallies.readiness.due(probe, now_ms)
            {
                ran += 1;
                let ok = crate::probe::run(probe, id, &mut self.runtime);
                let before = tallies.readiness.passing;
                if tallies.readiness.record(probe, now_ms, ok) == Some(false) && before != Some(false) {
                    let kind = firmware_proto::ProbeKind::Readiness;
                    let failures = u16::try_from(tallies.readiness.failures).unwrap_or(u16::MAX);
                    let reason = "readiness probe failed".try_into().unwrap_or_default();
                    self.event(now_ms, unit, EventKind::ProbeFailed { probe: kind, failures, reason });
                }
            }
            if let Some(probe) = &spec.liveness_probe
                && tallies.liveness.due(probe, now_ms)
            {
                ran += 1;
                let ok = crate::probe::run(probe, id, &mut self.runtime);
                if tallies.liveness.record(probe, now_ms, ok) == Some(false) {
                    failed = Some((firmware_proto::ProbeKind::Liveness, tallies.liveness.failures));
                }
            }
        }
        if let Some((kind, failures)) = failed {
            tracing::warn!(container = %id, probe = ?kind, failures, "probe failed; restarting the container");
            let failures = u16::try_from(failures).unwrap_or(u16::MAX);
            let reason = "probe failed; container killed".try_into().unwrap_or_default();
            self.event(now_ms, unit, EventKind::ProbeFailed { probe: kind, failures, reason });
            if let Err(e) = self.kill_for_liveness(id) {
                tracing::warn!(container = %id, error = %e, "killing after a failed probe");
            }
            self.probes.remove(id);
        } else {
            self.probes.insert(id.to_owned(), tallies);
        }
        ran
    }

    /// Keeps every desired container's log file within its limits.
    pub fn rotate_logs(&self, limits: crate::logs::LogLimits) {
        let Some(desired) = &self.desired else { return };
        for unit in desired.pods.iter().flat_map(Unit::all) {
            let path = self.paths.log(&unit.id);
            if let Err(e) = crate::logs::rotate_if_needed(&path, limits) {
                tracing::warn!(log = %path.display(), error = %e, "rotating a container log failed");
            }
        }
    }

    /// Per-pod status in desired-document order, and per-container status of
    /// pods of several containers, without usage (that is sampled by
    /// [`Agent::heartbeat`]).
    pub fn statuses(&mut self, now_ms: u64) -> Statuses {
        let running = self.running_containers();
        self.statuses_of(&running, now_ms)
    }

    /// The runtime's containers by id.
    fn running_containers(&mut self) -> BTreeMap<String, ContainerState> {
        self.runtime.list().unwrap_or_default().into_iter().map(|s| (s.id.clone(), s)).collect()
    }

    fn statuses_of(&self, running: &BTreeMap<String, ContainerState>, now_ms: u64) -> Statuses {
        let mut out = Statuses::default();
        let Some(desired) = self.desired.clone() else { return out };
        for (slot, pod) in desired.pods.iter().enumerate() {
            let units: Vec<UnitStatus> =
                Unit::all(pod).iter().map(|unit| self.unit_status(unit, running, now_ms)).collect();
            let mut replica = pod_status(&units);
            replica.replica = ReplicaRef::Slot(slot as u8);
            if units.len() > 1 {
                for (index, unit) in units.iter().enumerate() {
                    out.containers.push(ContainerStatus {
                        replica: out.replicas.len() as u8,
                        container: index as u8,
                        state: unit.state,
                        ready: unit.ready(),
                        restarts: unit.restarts,
                        last_exit: unit.last_exit,
                        cpu_millis: 0,
                        memory_kib: 0,
                    });
                }
            }
            out.replicas.push(replica);
        }
        out
    }

    /// Per-pod status, as [`Agent::statuses`] gives it.
    pub fn replica_statuses(&mut self, now_ms: u64) -> Vec<ReplicaStatus> {
        self.statuses(now_ms).replicas
    }

    fn unit_status(&self, unit: &Unit<'_>, running: &BTreeMap<String, ContainerState>, now_ms: u64) -> UnitStatus {
        let record = self.persisted.records.get(&unit.id).cloned().unwrap_or_default();
        let phase = match running.get(&unit.id).map(|s| s.status) {
            Some(Status::Running) => Phase::Running,
            Some(Status::Created) => Phase::Creating,
            _ if record.finished => match record.last_exit {
                Some(ExitInfo { code: Some(0), signal: None, .. }) => Phase::Succeeded,
                _ if record.last_ended_by_agent == Some(ExitReason::Stopped) => Phase::Succeeded,
                _ => Phase::Failed,
            },
            _ if record.backoff_until_ms > now_ms => Phase::CrashLoopBackOff,
            _ if self.images.is_pulling(&unit.container.image) => Phase::Pulling,
            _ => Phase::Pending,
        };
        let readiness = match (&unit.container.readiness_probe, self.probes.get(&unit.id)) {
            (None, _) => Readiness::NoProbe,
            (Some(_), Some(p)) if p.readiness.passing == Some(true) => Readiness::Ready,
            (Some(_), Some(p)) if p.readiness.passing == Some(false) => Readiness::NotReady,
            (Some(_), _) => Readiness::Starting,
        };
        let state = match phase {
            Phase::Running => WireState::Running,
            Phase::Succeeded | Phase::Failed => WireState::Terminated,
            _ => WireState::Waiting,
        };
        UnitStatus {
            phase,
            readiness,
            state,
            restarts: record.restarts,
            last_exit: record.last_exit.map(|e| exit_of(&e, record.last_ended_by_agent)),
            init: unit.init,
            sidecar: unit.container.sidecar,
        }
    }
}

/// One container's status, before it is folded into its pod's.
#[derive(Debug, Clone, Copy)]
struct UnitStatus {
    phase: Phase,
    readiness: Readiness,
    state: WireState,
    restarts: u32,
    last_exit: Option<Exit>,
    init: bool,
    sidecar: bool,
}

impl UnitStatus {
    fn ready(&self) -> bool {
        self.phase == Phase::Running && matches!(self.readiness, Readiness::NoProbe | Readiness::Ready)
    }
}

/// A pod's status from its containers': while a regular init container has
/// not completed the pod is not running yet (failing, backing off or
/// pending); then its app containers decide the phase, and it is ready when
/// every app container and sidecar is.
fn pod_status(units: &[UnitStatus]) -> ReplicaStatus {
    let restarts = units.iter().map(|u| u.restarts).sum();
    let mut status = ReplicaStatus {
        replica: ReplicaRef::Slot(0),
        phase: Phase::Pending,
        restarts,
        last_exit: None,
        readiness: Readiness::NoProbe,
        cpu_millis: 0,
        memory_kib: 0,
    };
    if let [only] = units {
        status.phase = only.phase;
        status.readiness = only.readiness;
        status.last_exit = only.last_exit;
        return status;
    }
    if let Some(init) = units.iter().find(|u| u.init && !u.sidecar && u.phase != Phase::Succeeded) {
        status.phase = match init.phase {
            Phase::Failed | Phase::CrashLoopBackOff | Phase::Pulling => init.phase,
            _ => Phase::Pending,
        };
        status.last_exit = init.last_exit;
        status.readiness = Readiness::Starting;
        return status;
    }
    let app: Vec<&UnitStatus> = units.iter().filter(|u| !u.init).collect();
    status.last_exit = app.iter().find_map(|u| u.last_exit);
    status.phase = if app.iter().all(|u| matches!(u.phase, Phase::Succeeded | Phase::Failed)) {
        if app.iter().all(|u| u.phase == Phase::Succeeded) { Phase::Succeeded } else { Phase::Failed }
    } else if let Some(u) = app.iter().find(|u| u.phase == Phase::CrashLoopBackOff) {
        u.phase
    } else if app.iter().any(|u| u.phase == Phase::Running) {
        Phase::Running
    } else if app.iter().any(|u| u.phase == Phase::Pulling) {
        Phase::Pulling
    } else if app.iter().any(|u| u.phase == Phase::Creating) {
        Phase::Creating
    } else {
        Phase::Pending
    };
    let serving: Vec<&UnitStatus> = units.iter().filter(|u| !u.init || u.sidecar).collect();
    status.readiness = if serving.iter().all(|u| u.readiness == Readiness::NoProbe) && serving.iter().all(|u| u.ready())
    {
        Readiness::NoProbe
    } else if serving.iter().all(|u| u.ready()) {
        Readiness::Ready
    } else if serving.iter().any(|u| u.readiness == Readiness::Starting) {
        Readiness::Starting
    } else {
        Readiness::NotReady
    };
    status
}

impl Probes {
    fn started(now_ms: u64) -> Self {
        Probes {
            startup: ProbeTally::new(now_ms),
            readiness: ProbeTally::new(now_ms),
            liveness: ProbeTally::new(now_ms),
        }
    }
}

#[cfg(test)]
mod tests;

/// The device ports a container listens on (containers share the device's
/// network, so a container port is a device port).
fn ports_of(unit: &Unit<'_>) -> Vec<u16> {
    unit.container.ports.iter().map(|p| p.host_port.unwrap_or(p.container_port)).collect()
}
