//! Messages from nodes -> the store: registration (Node objects), presence
//! and leases, replica status and usage, events. Also evicts the replicas
//! of lost nodes so the scheduler places them elsewhere in one batch.
//!
//! Every message is checked before it is believed: its topic names an
//! enrolled node, its MAC was made with that node's key and its sequence
//! number is newer than the last one seen, so a node (or anyone holding a
//! broker login) cannot speak for another or replay an old message, even
//! through a broker without topic ACLs. What fails a check is logged with
//! the reason and dropped; nothing here panics on bytes from the network.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use firmware_proto::{
    EventKind, Exit, ExitReason, NodeMessage, Phase, Presence, Readiness, ReplicaRef, decode_node_frame,
};

use super::channel::Incoming;
use super::credentials::{Enrolment, verify_node_mac};
use super::desired::PublishedDocuments;
use super::logs::LogRequests;
use super::{FleetConfig, Topics};
use crate::manifest::Kind;
use crate::object::{ApiObject, ObjectKey};
use crate::status::{Condition, NodeInfo, NodeStatus, PodStatus, Usage, condition, set_condition};
use crate::store::{Op, Store};

/// Reasons of a node's `Ready=False` that make its replicas move.
const LOST_REASONS: [&str; 3] = ["Unreachable", "LeaseExpired", "AgentShutdown"];

/// How long after its own broker connection came back the controller waits
/// before it evicts a node it has not heard from: devices reconnect with
/// back-off after a broker restart, most within a second or two.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(10);

/// What the controller tracks per node between messages.
#[derive(Debug, Clone)]
struct NodeTrack {
    /// The newest sequence number seen per message kind (in
    /// `MessageKind::FROM_NODE` order). Per kind, not per node: a broker
    /// keeps order within a topic only (rumqttd delivered a node's first
    /// heartbeat before its hello and presence, which a single floor then
    /// refused as replays), and a replay is still refused on its own topic.
    last_seq: [u64; firmware_proto::MessageKind::FROM_NODE.len()],
    /// The MAC key `last_seq` was verified with. A reset node enrolled
    /// again has a new key and may count from a new epoch (a fresh data
    /// directory), so its sequence starts over: messages of the old key fail
    /// the MAC check, so they cannot be replayed through that door.
    key: [u8; 32],
    last_seen: Instant,
    lost_since: Option<Instant>,
    /// Its replicas were moved for this loss: later ticks skip the scan of
    /// every pod until the node is seen again.
    evicted: bool,
}

/// Handles node messages and leases.
pub struct Inbox {
    store: Arc<dyn Store>,
    config: FleetConfig,
    enrolment: Enrolment,
    topics: Topics,
    published: PublishedDocuments,
    log_requests: Option<LogRequests>,
    /// The controller's own broker connection; `None` (tests): always up.
    link: Option<super::channel::BrokerLink>,
    nodes: HashMap<String, NodeTrack>,
    started: Instant,
}

/// Starts the inbox thread.
pub fn spawn(mut inbox: Inbox, incoming: Receiver<Incoming>) -> anyhow::Result<()> {
    std::thread::Builder::new().name("fleet-inbox".into()).spawn(move || {
        let tick = Duration::from_millis(100);
        let mut last_tick = Instant::now();
        loop {
            match incoming.recv_timeout(tick) {
                Ok(message) => inbox.handle(&message.topic, &message.payload, message.retained),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if last_tick.elapsed() >= tick {
                inbox.tick(Instant::now());
                last_tick = Instant::now();
            }
        }
    })?;
    Ok(())
}

impl Inbox {
    /// An inbox writing to `store`.
    pub fn new(
        store: Arc<dyn Store>,
        config: FleetConfig,
        enrolment: Enrolment,
        topics: Topics,
        published: PublishedDocuments,
    ) -> Self {
        Inbox {
            store,
            config,
            enrolment,
            topics,
            published,
            log_requests: None,
            link: None,
            nodes: HashMap::new(),
            started: Instant::now(),
        }
    }

    /// Log chunks from nodes go to `requests`; without, they are dropped.
    pub fn with_log_requests(mut self, requests: LogRequests) -> Self {
        self.log_requests = Some(requests);
        self
    }

    /// Evictions wait for `link`: none while it is down, nor within
    /// [`RECONNECT_GRACE`] after it came back.
    pub fn with_broker_link(mut self, link: super::channel::BrokerLink) -> Self {
        self.link = Some(link);
        self
    }

    /// Handles one message. `retained` marks a retained message delivered
    /// on subscription: it may be older than what was already seen.
    pub fn handle(&mut self, topic: &str, payload: &[u8], retained: bool) {
        match self.check(topic, payload, retained) {
            Ok((node, message)) => self.apply(&node, message),
            Err(reason) => tracing::warn!(topic, bytes = payload.len(), reason, "node message refused"),
        }
    }

    fn check(&mut self, topic: &str, payload: &[u8], retained: bool) -> Result<(String, NodeMessage), String> {
        let (node, leaf) = self.topics.parse(topic).ok_or("not a node topic")?;
        if payload.is_empty() {
            // A cleared retained message (e.g. a node being removed).
            return Err("empty payload".into());
        }
        let decoded = decode_node_frame(payload).map_err(|e| format!("malformed payload: {e}"))?;
        let expected = decoded.frame.message.kind().topic_leaf();
        if leaf != expected {
            return Err(format!("a {expected} message on the {leaf} topic"));
        }
        let credential = self.enrolment.node(node).ok_or_else(|| format!("node {node:?} is not enrolled"))?;
        let key = credential.mac_key_bytes().ok_or("the node's stored MAC key is unreadable")?;
        if !verify_node_mac(&key, decoded.authenticated, &decoded.frame.mac.0) {
            return Err(format!("bad MAC: not made with {node}'s key (forged, or another node's message)"));
        }
        if let NodeMessage::Hello(hello) = &decoded.frame.message
            && hello.node_id.as_str() != node
        {
            return Err(format!("hello for {:?} on {node}'s topic", hello.node_id.as_str()));
        }
        let track = self.track(node);
        if track.key != key {
            track.key = key;
            track.last_seq = Default::default();
        }
        let seq = decoded.frame.seq;
        let kind = decoded.frame.message.kind();
        let slot =
            firmware_proto::MessageKind::FROM_NODE.iter().position(|k| *k == kind).ok_or("not a node message")?;
        let floor = &mut track.last_seq[slot];
        if seq <= *floor && !retained {
            return Err(format!("replayed or reordered: sequence {seq} after {floor} on the {leaf} topic"));
        }
        *floor = (*floor).max(seq);
        Ok((node.to_owned(), decoded.frame.message))
    }

    fn track(&mut self, node: &str) -> &mut NodeTrack {
        let started = self.started;
        self.nodes.entry(node.to_owned()).or_insert(NodeTrack {
            last_seq: Default::default(),
            key: [0; 32],
            last_seen: started,
            lost_since: None,
            evicted: false,
        })
    }

    fn apply(&mut self, node: &str, message: NodeMessage) {
        let now = Instant::now();
        match message {
            NodeMessage::Hello(hello) => {
                self.seen(node, now);
                self.register(node, &hello);
            }
            NodeMessage::Online(Presence::Online) => {
                self.seen(node, now);
                self.set_ready(node, true, "AgentConnected", "");
            }
            NodeMessage::Online(presence) => {
                let (reason, message) = match presence {
                    Presence::ShuttingDown => ("AgentShutdown", "the agent is shutting down"),
                    _ => ("Unreachable", "connection to the broker lost (last will)"),
                };
                self.track(node).lost_since = Some(now);
                self.set_ready(node, false, reason, message);
            }
            NodeMessage::Status(status) => {
                self.seen(node, now);
                self.set_ready(node, true, "AgentReporting", "");
                self.update_replicas(node, &status);
            }
            NodeMessage::Event(event) => self.event(node, &event),
            NodeMessage::Logs(chunk) => match &self.log_requests {
                Some(requests) => requests.deliver(node, chunk),
                None => tracing::debug!(node, "log chunk with no log service; dropped"),
            },
        }
    }

    fn seen(&mut self, node: &str, now: Instant) {
        let track = self.track(node);
        track.last_seen = now;
        track.lost_since = None;
        track.evicted = false;
    }

    fn register(&self, node: &str, hello: &firmware_proto::Hello) {
        let key = ObjectKey::new(Kind::Node, "", node);
        let existing = self.store.get(&key);
        let mut object = existing.clone().unwrap_or_else(|| ApiObject::new(Kind::Node, "", node));
        for label in &hello.labels {
            object.metadata.labels.insert(label.key.to_string(), label.value.to_string());
        }
        object.metadata.labels.insert("kubernetes.io/hostname".into(), node.to_owned());
        object.metadata.labels.insert("kubernetes.io/arch".into(), arch_name(hello.arch).into());
        if !object.content.contains_key("spec") {
            object.content.insert("spec".into(), serde_json::json!({}));
        }
        let mut status: NodeStatus = object.status();
        status.capacity = capacity_map(&hello.capacity, &hello.devices);
        status.allocatable = capacity_map(&hello.allocatable, &hello.devices);
        status.node_info = NodeInfo {
            architecture: arch_name(hello.arch).into(),
            operating_system: match hello.os {
                firmware_proto::Os::Linux => "linux",
                firmware_proto::Os::BareMetal => "none",
            }
            .into(),
            agent_version: hello.agent_version.to_string(),
        };
        set_condition(&mut status.conditions, Condition::new("Ready", true, "AgentHello", ""));
        let mut ops = Vec::new();
        if existing.as_ref().is_none_or(|e| e.metadata.labels != object.metadata.labels) || existing.is_none() {
            object.metadata.resource_version.clear();
            ops.push(Op::Apply(object.clone()));
        }
        object.set_status(&status);
        object.metadata.resource_version.clear();
        ops.push(Op::UpdateStatus(object));
        match self.store.commit(ops) {
            Ok(_) => {
                tracing::info!(node, arch = arch_name(hello.arch), agent = %hello.agent_version, "node registered")
            }
            Err(e) => tracing::warn!(node, error = %e, "cannot register the node"),
        }
    }

    fn set_ready(&self, node: &str, ready: bool, reason: &str, message: &str) {
        let key = ObjectKey::new(Kind::Node, "", node);
        let Some(mut object) = self.store.get(&key) else { return };
        let mut status: NodeStatus = object.status();
        let was = condition(&status.conditions, "Ready").cloned();
        if was.as_ref().is_some_and(|c| (c.status == "True") == ready && (ready || c.reason == reason)) {
            return;
        }
        set_condition(&mut status.conditions, Condition::new("Ready", ready, reason, message));
        object.set_status(&status);
        object.metadata.resource_version.clear();
        match self.store.commit(vec![Op::UpdateStatus(object)]) {
            Ok(_) if ready => tracing::info!(node, reason, "node ready"),
            Ok(_) => tracing::warn!(node, reason, message, "node not ready"),
            Err(e) => tracing::warn!(node, error = %e, "cannot update the node"),
        }
    }

    fn update_replicas(&self, node: &str, status: &firmware_proto::Status) {
        let Some(document) = self.published.get(node) else { return };
        let mut ops = Vec::new();
        // Retired replicas the node no longer reports have stopped: delete
        // them. Only once the node applied the document without them; before
        // that, slot numbers of an older document cannot be resolved.
        if status.generation >= document.generation {
            let reported: Vec<&str> = status
                .replicas
                .iter()
                .filter_map(|r| match &r.replica {
                    ReplicaRef::Slot(slot) => document.replicas.get(usize::from(*slot)).map(|(id, _)| id.as_str()),
                    ReplicaRef::Id(id) => Some(id.as_str()),
                })
                .collect();
            for (id, key) in &document.retired {
                if !reported.contains(&id.as_str()) {
                    tracing::debug!(node, replica = id, "retired replica stopped; deleting it");
                    ops.push(Op::Delete(key.clone(), None));
                }
            }
        }
        for replica in &status.replicas {
            let key = match &replica.replica {
                // Slots index the document the node applied: only the one
                // published last is known here.
                ReplicaRef::Slot(_) if status.generation != document.generation => None,
                ReplicaRef::Slot(slot) => document.replicas.get(usize::from(*slot)).map(|(_, key)| key),
                ReplicaRef::Id(id) => document.replicas.iter().find(|(r, _)| r == id.as_str()).map(|(_, key)| key),
            };
            // A replica the node no longer holds (moved, deleted) is not its
            // to report on.
            let Some(key) = key else { continue };
            let Some(pod) = self.store.get(key) else { continue };
            if pod.content.get("spec").and_then(|s| s.get("nodeName")).and_then(|n| n.as_str()) != Some(node) {
                continue;
            }
            let old: PodStatus = pod.status();
            let mut new = old.clone();
            let (phase, reason) = match replica.phase {
                Phase::Pending => ("Pending", "ContainerCreating"),
                Phase::Pulling => ("Pending", "Pulling"),
                Phase::Creating => ("Pending", "ContainerCreating"),
                Phase::Running => ("Running", ""),
                Phase::Succeeded => ("Succeeded", "Completed"),
                Phase::Failed => ("Failed", "Error"),
                Phase::CrashLoopBackOff => ("Running", "CrashLoopBackOff"),
                Phase::Terminating => ("Running", "Terminating"),
                Phase::Unknown => ("Unknown", ""),
            };
            new.phase = phase.into();
            if new.reason != reason {
                new.reason = reason.into();
                if reason != "Pulling" {
                    new.message.clear();
                }
            }
            if let Some(Exit { code, reason: exit_reason }) = replica.last_exit {
                new.exit_code = Some(code);
                if exit_reason == ExitReason::OomKilled && phase != "Running" {
                    new.reason = "OOMKilled".into();
                }
            }
            new.restart_count = replica.restarts;
            let ready =
                replica.phase == Phase::Running && matches!(replica.readiness, Readiness::Ready | Readiness::NoProbe);
            set_condition(&mut new.conditions, Condition::new("Ready", ready, if ready { "" } else { "NotReady" }, ""));
            new.usage = Some(Usage {
                cpu_millis: u64::from(replica.cpu_millis),
                memory_bytes: u64::from(replica.memory_kib) * 1024,
            });
            if new != old {
                let mut updated = pod;
                updated.set_status(&new);
                updated.metadata.resource_version.clear();
                ops.push(Op::UpdateStatus(updated));
            }
        }
        if let Some(mut object) = self.store.get(&ObjectKey::new(Kind::Node, "", node)) {
            let mut node_status: NodeStatus = object.status();
            let usage = Some(Usage {
                cpu_millis: u64::from(status.usage.cpu_millis),
                memory_bytes: u64::from(status.usage.memory_kib) * 1024,
            });
            if node_status.usage != usage {
                node_status.usage = usage;
                object.set_status(&node_status);
                object.metadata.resource_version.clear();
                ops.push(Op::UpdateStatus(object));
            }
        }
        if !ops.is_empty()
            && let Err(e) = self.store.commit(ops)
        {
            tracing::warn!(node, error = %e, "cannot record the node's status");
        }
    }

    fn event(&self, node: &str, event: &firmware_proto::Event) {
        let replica = event.replica.as_ref().map(|r| r.as_str().to_owned()).unwrap_or_default();
        match &event.kind {
            EventKind::PullProgress { image, done_bytes, total_bytes } => {
                let percent = if *total_bytes > 0 { done_bytes * 100 / total_bytes } else { 0 };
                let message = format!("pulling: {percent}% ({done_bytes} of {total_bytes} bytes)");
                self.pod_message(node, &replica, &image.0, "Pulling", &message);
            }
            EventKind::PullFailed { image, reason } => {
                tracing::warn!(node, replica, reason = %reason, "image pull failed");
                self.pod_message(node, &replica, &image.0, "ImagePullFailed", reason);
            }
            EventKind::Rejected { generation, reason } => {
                tracing::warn!(node, generation, reason = %reason, "the node refused its desired document");
            }
            other => tracing::info!(node, replica, event = ?other, "node event"),
        }
    }

    /// Puts a pull's progress or failure on the replicas it concerns: the
    /// one named, or every replica of the node using that image.
    fn pod_message(&self, node: &str, replica: &str, image: &[u8; 32], reason: &str, message: &str) {
        let Some(document) = self.published.get(node) else { return };
        let mut ops = Vec::new();
        for ((id, key), digest) in document.replicas.iter().zip(&document.images) {
            if !(id == replica || (replica.is_empty() && digest == image)) {
                continue;
            }
            let Some(mut pod) = self.store.get(key) else { continue };
            let mut status: PodStatus = pod.status();
            if status.phase == "Running" || (status.reason == reason && status.message == message) {
                continue;
            }
            status.reason = reason.into();
            status.message = message.into();
            pod.set_status(&status);
            pod.metadata.resource_version.clear();
            ops.push(Op::UpdateStatus(pod));
        }
        if !ops.is_empty()
            && let Err(e) = self.store.commit(ops)
        {
            tracing::debug!(error = %e, "pull progress not recorded");
        }
    }

    /// Leases and evictions; called every ~100 ms.
    pub fn tick(&mut self, now: Instant) {
        // Hearing nothing from the broker says nothing about the nodes.
        let heard_since = match &self.link {
            Some(link) => match link.up_since() {
                Some(since) => Some(since),
                None => return,
            },
            None => None,
        };
        let nodes = self.store.list(Kind::Node, None).items;
        for node in nodes {
            let name = node.metadata.name.clone();
            let status: NodeStatus = node.status();
            let Some(ready) = condition(&status.conditions, "Ready").cloned() else { continue };
            let (lease, grace) = (self.config.lease, self.config.eviction_grace);
            let track = self.track(&name);
            if ready.status == "True" {
                if now.duration_since(track.last_seen) > lease {
                    track.lost_since = Some(now);
                    let message = format!("no heartbeat for {} s", lease.as_secs());
                    self.set_ready(&name, false, "LeaseExpired", &message);
                }
                continue;
            }
            if !LOST_REASONS.contains(&ready.reason.as_str()) {
                continue;
            }
            let lost_since = *track.lost_since.get_or_insert(now);
            let reconnecting = heard_since.is_some_and(|since| now < since + RECONNECT_GRACE);
            if !track.evicted && !reconnecting && now.duration_since(lost_since) >= grace {
                let evicted = self.evict(&name, &ready.reason);
                self.track(&name).evicted = evicted;
            }
        }
    }

    /// Unbinds the node's unfinished replicas; the scheduler places them
    /// again in its next pass. Returns whether that is done (false: retry).
    fn evict(&self, node: &str, why: &str) -> bool {
        let mut ops = Vec::new();
        for pod in self.store.list(Kind::Pod, None).items {
            if pod.content.get("spec").and_then(|s| s.get("nodeName")).and_then(|n| n.as_str()) != Some(node) {
                continue;
            }
            let mut status: PodStatus = pod.status();
            if status.is_finished() {
                continue;
            }
            // A replica a rollout retired was only waiting for its node to
            // report it stopped: with the node gone, it is gone too.
            if !status.retired_at.is_empty() {
                ops.push(Op::Delete(pod.key(), None));
                continue;
            }
            // A DaemonSet's replica belongs to its node: it waits there.
            if pod.metadata.owner_references.iter().any(|o| o.kind == Kind::DaemonSet) {
                if status.reason != "NodeLost" {
                    status.phase = "Unknown".into();
                    status.reason = "NodeLost".into();
                    status.message = format!("node {node} lost ({why}); it runs again when the node is back");
                    set_condition(&mut status.conditions, Condition::new("Ready", false, "NodeLost", ""));
                    let mut marked = pod.clone();
                    marked.set_status(&status);
                    marked.metadata.resource_version.clear();
                    ops.push(Op::UpdateStatus(marked));
                }
                continue;
            }
            let mut unbound = pod.clone();
            if let Some(serde_json::Value::Object(spec)) = unbound.content.get_mut("spec") {
                spec.remove("nodeName");
            }
            status.phase = "Pending".into();
            status.reason = "NodeLost".into();
            status.message = format!("node {node} lost ({why}); placing it elsewhere");
            status.usage = None;
            set_condition(&mut status.conditions, Condition::new("Ready", false, "NodeLost", ""));
            set_condition(&mut status.conditions, Condition::new("PodScheduled", false, "NodeLost", ""));
            ops.push(Op::Apply(unbound.clone()));
            unbound.set_status(&status);
            unbound.metadata.resource_version.clear();
            ops.push(Op::UpdateStatus(unbound));
        }
        if ops.is_empty() {
            return true;
        }
        let count = ops.len();
        match self.store.commit(ops) {
            Ok(_) => {
                tracing::warn!(node, writes = count, reason = why, "node lost: its replicas move");
                true
            }
            Err(e) => {
                tracing::warn!(node, error = %e, "eviction deferred");
                false
            }
        }
    }
}

fn arch_name(arch: firmware_proto::Arch) -> &'static str {
    match arch {
        firmware_proto::Arch::Amd64 => "amd64",
        firmware_proto::Arch::Arm64 => "arm64",
        firmware_proto::Arch::Arm => "arm",
        _ => "riscv64",
    }
}

fn capacity_map(
    capacity: &firmware_proto::Capacity,
    devices: &[firmware_proto::DeviceClass],
) -> std::collections::BTreeMap<String, String> {
    let mut map = std::collections::BTreeMap::new();
    map.insert("cpu".to_owned(), format!("{}m", capacity.cpu_millis));
    map.insert("memory".to_owned(), capacity.memory_bytes.to_string());
    map.insert("pods".to_owned(), capacity.max_workloads.to_string());
    for device in devices {
        map.insert(device.resource.to_string(), device.count.to_string());
    }
    map
}
