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
//! unchanged is restarted, because a container is identified by its replica
//! id and replaced only when the hash of its spec changes.

use std::collections::BTreeMap;

use firmware_proto::{
    ConfigObject, DecodeError, DesiredDocument, Event, EventKind, Exit, ExitReason, NodeId, Phase, Readiness,
    ReplicaRef, ReplicaSpec, ReplicaStatus, RestartPolicy,
};
use serde::{Deserialize, Serialize};

use crate::image::{ImageSettings, Images};
use crate::probe::ProbeTally;
use crate::runtime::{ContainerState, ExitInfo, Runtime, RuntimeError, Status};
pub use crate::signed::Verifier;
use crate::signed::{self, Refusal};
use crate::workload::{Paths, spec_hash};

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

/// What the agent remembers about one replica.
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
    desired: Option<DesiredDocument>,
    persisted: Persisted,
    /// Containers being stopped: id -> when to SIGKILL.
    stopping: BTreeMap<String, u64>,
    /// Service endpoints for containers' environment and mounts.
    services: Option<std::sync::Arc<crate::services::ServiceDirectory>>,
    /// Events not yet sent.
    outbox: Vec<Event>,
    /// cgroup and node usage.
    usage: Box<dyn crate::telemetry::UsageSource>,
    /// Probe tallies of running replicas, reset when a container starts.
    probes: BTreeMap<String, Probes>,
    /// Image pulls, the layer store and container root filesystems.
    images: Images,
}

/// The three probes of one running replica.
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

fn exit_of(info: &ExitInfo, by_agent: Option<ExitReason>) -> Exit {
    let reason = if by_agent == Some(ExitReason::LivenessFailed) {
        ExitReason::LivenessFailed
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
                            replicas = document.replicas.len(),
                            "restored the last desired document from local state"
                        );
                        self.desired = Some(document);
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
    fn check(&self, frame: &[u8]) -> Result<DesiredDocument, Rejected> {
        let view = signed::check(frame, firmware_proto::decode_desired_frame, &self.verify, &self.node_id)?;
        Ok(DesiredDocument::from(&view))
    }

    /// The generation applied, 0 if none.
    pub fn generation(&self) -> u64 {
        self.desired.as_ref().map_or(0, |d| d.generation)
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
        tracing::info!(
            generation = document.generation,
            replicas = document.replicas.len(),
            "applying desired document"
        );
        self.desired = Some(document);
        Ok(true)
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
    /// `spec`'s ports, if any.
    fn port_holder<'a>(
        &self,
        spec: &firmware_proto::ReplicaSpec,
        running: &'a BTreeMap<String, ContainerState>,
        replicas: &[firmware_proto::ReplicaSpec],
    ) -> Option<&'a str> {
        let wanted = ports_of(spec);
        if wanted.is_empty() {
            return None;
        }
        running
            .iter()
            .filter(|(id, state)| state.status != Status::Stopped && !replicas.iter().any(|r| r.id.as_str() == *id))
            .find(|(id, _)| {
                self.persisted.records.get(id.as_str()).is_some_and(|r| r.ports.iter().any(|p| wanted.contains(p)))
            })
            .map(|(id, _)| id.as_str())
    }

    fn event(&mut self, now_ms: u64, replica: &str, kind: EventKind) {
        self.outbox.push(Event { at_unix_ms: now_ms, replica: firmware_proto::Name::new(replica).ok(), kind });
    }

    /// One step towards the desired document. Returns the number of runtime
    /// actions taken.
    pub fn reconcile(&mut self, now_ms: u64) -> Result<usize, RuntimeError> {
        let running: BTreeMap<String, ContainerState> =
            self.runtime.list()?.into_iter().map(|s| (s.id.clone(), s)).collect();
        let desired = self.desired.clone();
        let replicas = desired.as_ref().map(|d| d.replicas.as_slice()).unwrap_or_default();
        let config = desired.as_ref().map(|d| d.config.as_slice()).unwrap_or_default();
        self.images.retain(replicas, running.keys().map(String::as_str));
        for kind in self.images.take_events(now_ms) {
            self.outbox.push(Event { at_unix_ms: now_ms, replica: None, kind });
        }
        let mut step = self.stop_removed(&running, replicas, now_ms)?;
        for spec in replicas {
            step += self.reconcile_replica(spec, config, replicas, &running, now_ms)?;
        }
        if step.changed || step.actions > 0 {
            self.save_logged();
        }
        Ok(step.actions)
    }

    /// Stops what is no longer desired: SIGTERM, then SIGKILL after the
    /// grace period; its record goes with the container.
    fn stop_removed(
        &mut self,
        running: &BTreeMap<String, ContainerState>,
        replicas: &[ReplicaSpec],
        now_ms: u64,
    ) -> Result<Step, RuntimeError> {
        let mut step = Step::default();
        // Images new replicas still wait for. A replica leaving runs on
        // until they are here (or their pull failed): when a rollout swaps
        // replicas on this node, the download does not widen the outage.
        let awaiting_images = replicas
            .iter()
            .filter(|r| !running.contains_key(r.id.as_str()))
            .filter(|r| !self.persisted.records.get(r.id.as_str()).is_some_and(|rec| rec.finished))
            .any(|r| matches!(self.images.availability(&r.image, now_ms), crate::image::Availability::Pulling));

        for (id, state) in running {
            if replicas.iter().any(|r| r.id.as_str() == id) {
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
        Ok(step)
    }

    /// One step for one desired replica: replace it if its spec changed,
    /// start it, handle its exit by its restart policy, or note why it waits.
    fn reconcile_replica(
        &mut self,
        spec: &ReplicaSpec,
        config: &[ConfigObject],
        replicas: &[ReplicaSpec],
        running: &BTreeMap<String, ContainerState>,
        now_ms: u64,
    ) -> Result<Step, RuntimeError> {
        let id = spec.id.as_str().to_owned();
        let hash = spec_hash(spec, config);
        let mut record = self.persisted.records.get(&id).cloned().unwrap_or_default();
        let state = running.get(&id);

        // A changed spec replaces the container (and starts a fresh history).
        if let Some(state) = state
            && record.spec_hash != hash
            && record.spec_hash != 0
        {
            return self.replace_step(spec, state, now_ms);
        }

        let mut step = Step::default();
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
            }
            Some(Status::Created) => {
                self.runtime.start(&id)?;
                step.actions += 1;
                record.started_at_ms = now_ms;
                self.probes.insert(id.clone(), Probes::started(now_ms));
                self.event(now_ms, &id, EventKind::Started);
            }
            Some(Status::Stopped) => {
                let state = state.expect("matched Some");
                step.actions += self.exited(spec, state, &mut record, now_ms)?;
            }
            None if record.finished && record.spec_hash == hash => {}
            None if record.backoff_until_ms > now_ms => {}
            None if let Some(holder) = self.port_holder(spec, running, replicas) => {
                let reason = format!("waiting for {holder} to stop: it holds a port this replica uses");
                if record.blocked.as_deref() != Some(&reason) {
                    tracing::info!(replica = %id, "{reason}");
                    record.blocked = Some(reason);
                    step.changed = true;
                }
            }
            None => step += self.create_and_start(spec, config, hash, &mut record, now_ms)?,
        }
        if self.persisted.records.get(&id) != Some(&record) {
            self.persisted.records.insert(id, record);
            step.changed = true;
        }
        Ok(step)
    }

    /// A replica whose spec changed: the new version's image first (a
    /// running old container runs on until it is here, and on if its pull
    /// fails), then the old container stops; once it is gone the replica
    /// starts over with a fresh record.
    fn replace_step(&mut self, spec: &ReplicaSpec, state: &ContainerState, now_ms: u64) -> Result<Step, RuntimeError> {
        let mut step = Step::default();
        if state.status == Status::Running
            && !matches!(self.images.availability(&spec.image, now_ms), crate::image::Availability::Ready(_))
        {
            return Ok(step);
        }
        let id = spec.id.as_str();
        step.actions += self.stop_step(id, state, now_ms, spec.termination_grace_s)?;
        if state.status == Status::Stopped {
            self.persisted.records.insert(id.to_owned(), Record::default());
            step.changed = true;
        }
        Ok(step)
    }

    /// A replica's container exited: reports how, deletes the container and,
    /// by the restart policy, schedules the restart after the back-off or
    /// marks the replica finished. Returns actions taken.
    fn exited(
        &mut self,
        spec: &ReplicaSpec,
        state: &ContainerState,
        record: &mut Record,
        now_ms: u64,
    ) -> Result<usize, RuntimeError> {
        let id = spec.id.as_str();
        let info = state.exit.unwrap_or(ExitInfo { code: None, signal: None, oom_killed: false });
        record.last_ended_by_agent = record.ended_by_agent.take();
        let exit = exit_of(&info, record.last_ended_by_agent);
        tracing::info!(replica = %id, code = exit.code, reason = ?exit.reason, "container exited");
        if exit.reason == ExitReason::OomKilled {
            let limit_bytes = spec.resources.memory_limit_bytes.unwrap_or(0);
            self.event(now_ms, id, EventKind::OomKilled { limit_bytes });
        }
        self.event(now_ms, id, EventKind::Exited(exit));
        record.last_exit = Some(info);
        let succeeded = exit.code == 0 && exit.reason == ExitReason::Exited;
        let restart = match spec.restart_policy {
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

    /// Creates and starts a replica's container, or notes in its record why
    /// it cannot run yet (image still pulling, missing...). A failed create
    /// is saved in the record before the error is returned.
    fn create_and_start(
        &mut self,
        spec: &ReplicaSpec,
        config: &[ConfigObject],
        hash: u64,
        record: &mut Record,
        now_ms: u64,
    ) -> Result<Step, RuntimeError> {
        let id = spec.id.as_str();
        let mut step = Step::default();
        let mut container = match crate::workload::prepare(&self.paths, &mut self.images, spec, config, now_ms) {
            Ok(container) => container,
            Err(e) => {
                let reason = e.to_string();
                if record.blocked.as_deref() != Some(&reason) {
                    tracing::warn!(replica = %id, error = %reason, "cannot run replica");
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
        record.grace_s = Some(spec.termination_grace_s);
        record.ports = ports_of(spec);
        record.blocked = None;
        record.finished = false;
        match self.runtime.create(&container) {
            Ok(()) | Err(RuntimeError::AlreadyExists(_)) => {}
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
        self.event(now_ms, id, EventKind::Started);
        tracing::info!(replica = %id, restarts = record.restarts, "container started");
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
                tracing::info!(replica = %id, "container removed");
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

    /// Ends a running replica because its liveness probe failed; the restart
    /// policy then applies on the next pass.
    pub fn kill_for_liveness(&mut self, id: &str) -> Result<(), RuntimeError> {
        if let Some(record) = self.persisted.records.get_mut(id) {
            record.ended_by_agent = Some(ExitReason::LivenessFailed);
        }
        self.runtime.kill(id, nix::sys::signal::Signal::SIGKILL as i32)
    }

    /// The heartbeat: generation, node usage and every replica's status.
    pub fn heartbeat(&mut self, now_ms: u64) -> firmware_proto::Status {
        let node = self.usage.node();
        // The statvfs field types are u32 on some 32-bit targets.
        #[allow(clippy::unnecessary_cast)]
        let disk_free_mib = nix::sys::statvfs::statvfs(&self.paths.data_dir)
            .map(|s| (s.blocks_available() as u64 * s.fragment_size() as u64 / (1 << 20)) as u32)
            .unwrap_or(0);
        let ids: Vec<String> = self.desired.iter().flat_map(|d| d.replicas.iter().map(|r| r.id.to_string())).collect();
        let mut replicas = heapless::Vec::new();
        for (mut status, id) in self.replica_statuses(now_ms).into_iter().zip(&ids) {
            // Usage only here: cgroup reads every heartbeat, not every tick.
            if status.phase == Phase::Running {
                let sample = self.usage.sample(id).unwrap_or_default();
                status.cpu_millis = sample.cpu_millis;
                status.memory_kib = u32::try_from(sample.memory_bytes / 1024).unwrap_or(u32::MAX);
            } else {
                self.usage.forget(id);
            }
            // The document holds at most MAX_REPLICAS, so this always fits.
            let _ = replicas.push(status);
        }
        firmware_proto::Status {
            generation: self.generation(),
            usage: firmware_proto::NodeUsage {
                cpu_millis: node.cpu_millis,
                memory_kib: u32::try_from(node.memory_bytes / 1024).unwrap_or(u32::MAX),
                disk_free_mib,
            },
            replicas,
        }
    }

    /// Runs the probes that are due. A failed startup or liveness probe ends
    /// the container (the restart policy then applies); readiness is
    /// reported in the status. Returns the number of probes run.
    pub fn probe(&mut self, now_ms: u64) -> usize {
        let Some(desired) = self.desired.clone() else { return 0 };
        let mut ran = 0;
        for spec in &desired.replicas {
            let id = spec.id.as_str();
            let Some(mut tallies) = self.probes.get(id).cloned() else { continue };
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
                        self.event(now_ms, id, EventKind::ProbeFailed { probe: kind, failures, reason });
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
                tracing::warn!(replica = %id, probe = ?kind, failures, "probe failed; restarting the container");
                let failures = u16::try_from(failures).unwrap_or(u16::MAX);
                let reason = "probe failed; container killed".try_into().unwrap_or_default();
                self.event(now_ms, id, EventKind::ProbeFailed { probe: kind, failures, reason });
                if let Err(e) = self.kill_for_liveness(id) {
                    tracing::warn!(replica = %id, error = %e, "killing after a failed probe");
                }
                self.probes.remove(id);
            } else {
                self.probes.insert(id.to_owned(), tallies);
            }
        }
        ran
    }

    /// Keeps every desired replica's log file within its limits.
    pub fn rotate_logs(&self, limits: crate::logs::LogLimits) {
        let Some(desired) = &self.desired else { return };
        for spec in &desired.replicas {
            let path = self.paths.log(spec.id.as_str());
            if let Err(e) = crate::logs::rotate_if_needed(&path, limits) {
                tracing::warn!(log = %path.display(), error = %e, "rotating a container log failed");
            }
        }
    }

    /// Per-replica status in desired-document order, without usage (that
    /// is sampled by [`Agent::heartbeat`]).
    pub fn replica_statuses(&mut self, now_ms: u64) -> Vec<ReplicaStatus> {
        let running: BTreeMap<String, ContainerState> =
            self.runtime.list().unwrap_or_default().into_iter().map(|s| (s.id.clone(), s)).collect();
        let Some(desired) = &self.desired else { return Vec::new() };
        desired
            .replicas
            .iter()
            .enumerate()
            .map(|(slot, spec)| {
                let id = spec.id.as_str();
                let record = self.persisted.records.get(id).cloned().unwrap_or_default();
                let phase = match running.get(id).map(|s| s.status) {
                    Some(Status::Running) => Phase::Running,
                    Some(Status::Created) => Phase::Creating,
                    _ if record.finished => match record.last_exit {
                        Some(ExitInfo { code: Some(0), signal: None, .. }) => Phase::Succeeded,
                        _ => Phase::Failed,
                    },
                    _ if record.backoff_until_ms > now_ms => Phase::CrashLoopBackOff,
                    _ if self.images.is_pulling(&spec.image) => Phase::Pulling,
                    _ => Phase::Pending,
                };
                ReplicaStatus {
                    replica: ReplicaRef::Slot(slot as u8),
                    phase,
                    restarts: record.restarts,
                    last_exit: record.last_exit.map(|e| exit_of(&e, record.last_ended_by_agent)),
                    readiness: match (&spec.readiness_probe, self.probes.get(id)) {
                        (None, _) => Readiness::NoProbe,
                        (Some(_), Some(p)) if p.readiness.passing == Some(true) => Readiness::Ready,
                        (Some(_), Some(p)) if p.readiness.passing == Some(false) => Readiness::NotReady,
                        (Some(_), _) => Readiness::Starting,
                    },
                    cpu_millis: 0,
                    memory_kib: 0,
                }
            })
            .collect()
    }
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

/// The device ports a replica listens on (containers share the device's
/// network, so a container port is a device port).
fn ports_of(spec: &firmware_proto::ReplicaSpec) -> Vec<u16> {
    spec.ports.iter().map(|p| p.host_port.unwrap_or(p.container_port)).collect()
}
