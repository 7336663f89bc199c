//! Messages from nodes -> the store: registration (Node objects), presence
//! and leases (a node's `Ready` condition), replica status and usage,
//! events. What a lost node's replicas do then is decided by the node
//! lifecycle controller (`crate::controllers::node_lifecycle`).
//!
//! Every message is checked before it is believed: its topic names an
//! enrolled node, its MAC was made with that node's key and its sequence
//! number is newer than the last one seen, so a node (or anyone holding a
//! broker login) cannot speak for another or replay an old message, even
//! through a broker without topic ACLs. What fails a check is logged with
//! the reason and dropped; nothing here panics on bytes from the network.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use firmware_proto::mac::verify_node_mac;
use firmware_proto::{
    EventKind, Exit, ExitReason, NodeMessage, Phase, Presence, Readiness, ReplicaRef, decode_node_frame,
};

use super::channel::Incoming;
use super::credentials::Enrolment;
use super::desired::PublishedDocuments;
use super::logs::LogRequests;
use super::refusals::{Refusal, RefusalCounter, Refusals};
use super::{FleetConfig, Topics};
use crate::manifest::Kind;
use crate::manifest::types::NodeSpec;
use crate::object::{ApiObject, ObjectKey};
use crate::status::{
    Condition, ConditionType, ContainerState, ContainerStatus, NodeInfo, NodeStatus, PodPhase, PodStatus, StateReason,
    Usage, condition, set_condition,
};
use crate::store::{Op, Store, StoreError, View};

/// How long after its own broker connection came back the controller waits
/// before it evicts a node it has not heard from (told to the node
/// lifecycle controller by [`super::EvictionSource`]): devices reconnect with
/// back-off after a broker restart. 10,000 devices took 11-12 s to be back
/// on Mosquitto here, and a 10 s grace evicted 4 of them (a broker restart
/// is not a node loss); a node that really died meanwhile moves 30 s late.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(30);

/// How long after a document was published a node may still report an
/// older one before it is published again (a status crossing the new
/// document on its way is not a lost delivery).
pub const BEHIND_FOR: Duration = Duration::from_secs(30);

/// Messages handled into one store commit at most (group commit: while one
/// commit is on disk, the next batch queues up).
const MAX_BATCH: usize = 2048;

/// How often the nodes' readiness kept in memory is read again from the
/// store (the inbox writes it, so this only catches nodes deleted or
/// applied through the API).
const RESYNC: Duration = Duration::from_secs(30);

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
    /// Its `Ready` condition as last written (`None`: no Node object), so
    /// that leases are checked without reading every Node.
    ready: Option<ReadyState>,
}

/// A node's `Ready` condition, as far as leases care.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReadyState {
    ready: bool,
    reason: String,
}

impl ReadyState {
    fn of(node: &ApiObject) -> Option<ReadyState> {
        let status: NodeStatus = node.status();
        condition(&status.conditions, ConditionType::Ready)
            .map(|c| ReadyState { ready: c.status == crate::status::ConditionStatus::True, reason: c.reason.clone() })
    }

    /// Whether writing `ready`/`reason` would change nothing that matters:
    /// a ready node stays ready whatever message said so last.
    fn says(&self, ready: bool, reason: &str) -> bool {
        self.ready == ready && (ready || self.reason == reason)
    }
}

/// A change to one object, made on its freshest stored state when the
/// batch commits (and made again if another writer got there first), so
/// a write never rests on a stale read. `None`: the object does not exist
/// (or must stop existing).
type Mutation = Box<dyn FnMut(&mut Option<ApiObject>) + Send>;

/// The mutations waiting for the next commit, per object, in arrival order.
#[derive(Default)]
struct Pending {
    by_key: BTreeMap<ObjectKey, Vec<Mutation>>,
    messages: usize,
}

impl Pending {
    fn push(&mut self, key: ObjectKey, mutation: Mutation) {
        self.by_key.entry(key).or_default().push(mutation);
    }
}

/// Handles node messages and leases.
pub struct Inbox {
    store: Arc<dyn Store>,
    config: FleetConfig,
    enrolment: Enrolment,
    topics: Topics,
    published: PublishedDocuments,
    log_requests: Option<LogRequests>,
    /// Answers credential requests; without, they are dropped.
    rotation: Option<super::rotation::Rotation>,
    /// The controller's own broker connection; `None` (tests): always up.
    link: Option<super::channel::BrokerLink>,
    nodes: HashMap<String, NodeTrack>,
    started: Instant,
    pending: Pending,
    last_resync: Option<Instant>,
    /// The generation last published again per node because the node ran
    /// an older one ([`BEHIND_FOR`]): once per generation.
    resent: HashMap<String, u64>,
    refusals: Refusals,
    /// Shown on the dashboard; without, not kept.
    last_heard: Option<super::LastHeard>,
    /// Messages, OOM kills and pulls, for /metrics.
    counters: super::counters::FleetCounters,
    /// The restart count at which each replica's OOM kill was counted.
    oom_counted: HashMap<String, u32>,
    /// Bytes of each pull in progress counted so far, per node and image.
    pulled: HashMap<(String, [u8; 32]), u64>,
    /// Nodes whose credentials were removed: lost at once.
    removed: tokio::sync::broadcast::Receiver<String>,
}

/// Starts the inbox thread.
/// Runs the inbox on a thread of its own until `incoming` is closed; what
/// it holds then is committed before the thread ends (a clean shutdown
/// drains it).
pub fn spawn(mut inbox: Inbox, incoming: Receiver<Incoming>) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let thread = std::thread::Builder::new().name("fleet-inbox".into()).spawn(move || {
        let tick = Duration::from_millis(100);
        let mut last_tick = Instant::now();
        loop {
            match incoming.recv_timeout(tick) {
                Ok(message) => {
                    inbox.handle(&message.topic, &message.payload, message.retained);
                    // Whatever queued up meanwhile goes into the same commit.
                    while inbox.pending.messages < MAX_BATCH {
                        match incoming.try_recv() {
                            Ok(message) => inbox.handle(&message.topic, &message.payload, message.retained),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => return inbox.flush(),
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return inbox.flush(),
            }
            if last_tick.elapsed() >= tick {
                inbox.tick(Instant::now());
                last_tick = Instant::now();
            }
            inbox.flush();
        }
    })?;
    Ok(thread)
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
            removed: enrolment.watch_removed(),
            store,
            config,
            enrolment,
            topics,
            published,
            log_requests: None,
            rotation: None,
            link: None,
            nodes: HashMap::new(),
            started: Instant::now(),
            pending: Pending::default(),
            last_resync: None,
            resent: HashMap::new(),
            refusals: Refusals::default(),
            last_heard: None,
            counters: Default::default(),
            oom_counted: HashMap::new(),
            pulled: HashMap::new(),
        }
    }

    /// Refusals counted into `counter` (the metrics registry's).
    pub fn with_refusal_counter(mut self, counter: RefusalCounter) -> Self {
        self.refusals = Refusals::with_counter(counter);
        self
    }

    /// Counts messages, OOM kills and pulls on `counters`.
    pub fn with_counters(mut self, counters: super::counters::FleetCounters) -> Self {
        self.counters = counters;
        self
    }

    /// When each node was last heard from is kept in `last_heard`.
    pub fn with_last_heard(mut self, last_heard: super::LastHeard) -> Self {
        self.last_heard = Some(last_heard);
        self
    }

    /// Log chunks from nodes go to `requests`; without, they are dropped.
    pub fn with_log_requests(mut self, requests: LogRequests) -> Self {
        self.log_requests = Some(requests);
        self
    }

    /// Credential requests go to `rotation`; without, they are dropped.
    pub fn with_rotation(mut self, rotation: super::rotation::Rotation) -> Self {
        self.rotation = Some(rotation);
        self
    }

    /// Leases wait for `link`: none expires while it is down.
    pub fn with_broker_link(mut self, link: super::channel::BrokerLink) -> Self {
        self.link = Some(link);
        self
    }

    /// Handles one message. `retained` marks a retained message delivered
    /// on subscription: it may be older than what was already seen. What it
    /// changes is written by the next [`Inbox::flush`].
    pub fn handle(&mut self, topic: &str, payload: &[u8], retained: bool) {
        self.pending.messages += 1;
        match self.check(topic, payload, retained) {
            Ok((node, message)) => {
                self.counters.received(message.kind());
                self.apply(&node, message)
            }
            Err(refusal) => _ = self.refusals.record(&refusal, topic, payload.len(), Instant::now()),
        }
    }

    fn check(&mut self, topic: &str, payload: &[u8], retained: bool) -> Result<(String, NodeMessage), Refusal> {
        let (node, leaf) = self.topics.parse(topic).ok_or(Refusal::anonymous("topic", "not a node topic"))?;
        // Named in the refusal only once the controller knows it: a topic
        // names whatever its sender likes.
        let keys = self.enrolment.node_keys(node);
        let enrolled = keys.is_some();
        let refused = |reason: &'static str, detail: String| match enrolled {
            true => Refusal::of(node, reason, detail),
            false => Refusal::anonymous(reason, format!("{detail} (on {node}'s topic)")),
        };
        if payload.is_empty() {
            // A cleared retained message (e.g. a node being removed).
            return Err(refused("empty", "empty payload".into()));
        }
        let decoded =
            decode_node_frame(payload).map_err(|e| refused("malformed", format!("malformed payload: {e}")))?;
        let expected = decoded.frame.message.kind().topic_leaf();
        if leaf != expected {
            return Err(refused("wrong-topic", format!("a {expected} message on the {leaf} topic")));
        }
        let keys = keys.ok_or_else(|| refused("not-enrolled", format!("node {node:?} is not enrolled")))?;
        let verifies = |key: &[u8; 32]| verify_node_mac(key, decoded.authenticated, &decoded.frame.mac);
        let key = match (keys.current, keys.next) {
            (Some(current), _) if verifies(&current) => current,
            // The first frame made with credentials a rotation granted
            // confirms them; the previous ones stop working.
            (_, Some((generation, next))) if verifies(&next) => {
                self.enrolment.confirm_rotation(node, generation);
                next
            }
            (None, _) => {
                let detail = "its credentials expired: it must enrol again with a fresh join token".to_owned();
                return Err(refused("expired", detail));
            }
            _ => {
                let detail = format!("bad MAC: not made with {node}'s key (forged, or another node's message)");
                return Err(refused("mac", detail));
            }
        };
        if let NodeMessage::Hello(hello) = &decoded.frame.message
            && hello.node_id.as_str() != node
        {
            return Err(refused("hello", format!("hello for {:?} on {node}'s topic", hello.node_id.as_str())));
        }
        let track = self.track(node);
        if track.key != key {
            track.key = key;
            track.last_seq = Default::default();
        }
        let seq = decoded.frame.seq;
        let kind = decoded.frame.message.kind();
        let slot = firmware_proto::MessageKind::FROM_NODE
            .iter()
            .position(|k| *k == kind)
            .ok_or_else(|| Refusal::of(node, "wrong-topic", "not a node message"))?;
        let floor = &mut track.last_seq[slot];
        if seq <= *floor && !retained {
            let detail = format!("replayed or reordered: sequence {seq} after {floor} on the {leaf} topic");
            return Err(Refusal::of(node, "replay", detail));
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
            ready: None,
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
            NodeMessage::CredentialRequest(request) => match &self.rotation {
                Some(rotation) => rotation.ask(node, request.generation),
                None => tracing::debug!(node, "credential request with no rotation service; dropped"),
            },
        }
    }

    fn seen(&mut self, node: &str, now: Instant) {
        let track = self.track(node);
        track.last_seen = now;
        if let Some(last_heard) = &self.last_heard {
            last_heard.heard(node, std::time::SystemTime::now());
        }
    }

    fn register(&mut self, node: &str, hello: &firmware_proto::Hello) {
        let name = node.to_owned();
        let labels: Vec<(String, String)> = hello
            .labels
            .iter()
            .map(|l| (l.key.to_string(), l.value.to_string()))
            .chain([
                (crate::controllers::claims::HOSTNAME_LABEL.to_owned(), node.to_owned()),
                ("kubernetes.io/arch".to_owned(), arch_name(hello.arch).to_owned()),
            ])
            .collect();
        let capacity = capacity_map(&hello.capacity, &hello.devices);
        let allocatable = capacity_map(&hello.allocatable, &hello.devices);
        let node_info = NodeInfo {
            architecture: arch_name(hello.arch).into(),
            operating_system: match hello.os {
                firmware_proto::Os::Linux => "linux",
                firmware_proto::Os::BareMetal => "none",
            }
            .into(),
            agent_version: hello.agent_version.to_string(),
            document_profile: hello.profile.name().to_owned(),
        };
        tracing::info!(node, arch = arch_name(hello.arch), agent = %hello.agent_version, "node registered");
        self.track(node).ready = Some(ReadyState { ready: true, reason: "AgentHello".into() });
        self.pending.push(
            ObjectKey::new(Kind::Node, "", node),
            Box::new(move |object| {
                let object = object.get_or_insert_with(|| ApiObject::new(Kind::Node, "", &name));
                for (key, value) in &labels {
                    object.metadata.labels.insert(key.clone(), value.clone());
                }
                if object.spec_part().is_none() {
                    object.set_spec(NodeSpec::default());
                }
                let mut status: NodeStatus = object.status();
                status.capacity = capacity.clone();
                status.allocatable = allocatable.clone();
                status.node_info = node_info.clone();
                set_condition(&mut status.conditions, Condition::new(ConditionType::Ready, true, "AgentHello", ""));
                object.set_status(&status);
            }),
        );
    }

    fn set_ready(&mut self, node: &str, ready: bool, reason: &str, message: &str) {
        let track = self.track(node);
        if track.ready.as_ref().is_some_and(|r| r.says(ready, reason)) {
            return;
        }
        // An event when a known state turns (not at a restart's first
        // word from each node: that would be the whole fleet).
        let turned = track.ready.as_ref().is_some_and(|r| r.ready != ready);
        // Believed at once, so the rest of the batch does not ask again; the
        // periodic resync corrects it if the write finds no Node.
        track.ready = Some(ReadyState { ready, reason: reason.to_owned() });
        if turned {
            self.node_event(node, ready, reason, message);
        }
        if ready {
            tracing::info!(node, reason, "node ready");
        } else {
            tracing::warn!(node, reason, message, "node not ready");
        }
        let (reason, message) = (reason.to_owned(), message.to_owned());
        self.pending.push(
            ObjectKey::new(Kind::Node, "", node),
            Box::new(move |object| {
                let Some(object) = object else { return };
                let mut status: NodeStatus = object.status();
                if condition(&status.conditions, ConditionType::Ready).is_some_and(|c| {
                    (c.status == crate::status::ConditionStatus::True) == ready && (ready || c.reason == reason)
                }) {
                    return;
                }
                set_condition(&mut status.conditions, Condition::new(ConditionType::Ready, ready, &reason, &message));
                object.set_status(&status);
            }),
        );
    }

    /// `NodeReady` (Normal) or `NodeNotReady` (Warning, with why) on the
    /// Node, listed in `default`; one event of each kind per node, counted.
    fn node_event(&mut self, node: &str, ready: bool, reason: &str, message: &str) {
        let subject = ApiObject::new(Kind::Node, "", node);
        let (key, event_type, event_reason, text) = match ready {
            true => ("ready", "Normal", "NodeReady", format!("device {node} is back ({reason})")),
            false => {
                ("not-ready", "Warning", "NodeNotReady", format!("device {node} is not ready: {reason}: {message}"))
            }
        };
        let now = std::time::SystemTime::now();
        let event_key = ObjectKey::new(Kind::Event, "default", &format!("{node}.{key}"));
        self.pending.push(
            event_key,
            Box::new(move |stored| {
                let happening = crate::events::Happening { key, event_type, reason: event_reason, message: &text };
                let event = crate::events::recorded(&subject, "default", &happening, now, stored.as_ref());
                *stored = Some(event);
            }),
        );
    }

    fn update_replicas(&mut self, node: &str, status: &firmware_proto::Status) {
        let Some(document) = self.published.get(node) else { return };
        // Still on an older document long after this one went out: its
        // delivery was lost (a dropped connection, or a clustered broker
        // that did not keep it as the retained one while electing a
        // leader): publish it again, once per generation.
        if status.generation < document.generation
            && document.published_at.elapsed() >= BEHIND_FOR
            && self.resent.get(node) != Some(&document.generation)
        {
            tracing::warn!(
                node,
                running = status.generation,
                published = document.generation,
                "the node runs an older document than was published to it; publishing it again"
            );
            self.resent.insert(node.to_owned(), document.generation);
            self.published.resend(node);
        }
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
                    self.pending.push(
                        key.clone(),
                        Box::new(|object| {
                            if object.as_ref().is_some_and(|pod| pod.is_retired()) {
                                *object = None;
                            }
                        }),
                    );
                }
            }
        }
        let mut warnings = Vec::new();
        for (entry, replica) in status.replicas.iter().enumerate() {
            let position = match &replica.replica {
                // Slots index the document the node applied: only the one
                // published last is known here.
                ReplicaRef::Slot(_) if status.generation != document.generation => None,
                ReplicaRef::Slot(slot) => Some(usize::from(*slot)).filter(|s| *s < document.replicas.len()),
                ReplicaRef::Id(id) => document.replicas.iter().position(|(r, _)| r == id.as_str()),
            };
            // A replica the node no longer holds (moved, deleted) is not its
            // to report on.
            let Some(position) = position else { continue };
            let key = &document.replicas[position].1;
            if replica.phase == Phase::CrashLoopBackOff {
                let exit = replica.last_exit.map(|e| format!(", last exit code {}", e.code)).unwrap_or_default();
                let message = format!("back-off restarting a failed container (restarts: {}{exit})", replica.restarts);
                warnings.push((key.clone(), "backoff", "BackOff", message));
            }
            // An OOM kill stays the last exit while the replica runs on:
            // counted, and said, once per restart count (the event is
            // idempotent, so a controller restart says it again harmlessly).
            let id = &document.replicas[position].0;
            if let Some(Exit { reason: ExitReason::OomKilled, .. }) = replica.last_exit
                && self.oom_counted.get(id.as_str()) != Some(&replica.restarts)
            {
                self.counters.oom_killed();
                self.oom_counted.insert(id.clone(), replica.restarts);
                let message =
                    format!("a container went over its memory limit and was killed (restarts: {})", replica.restarts);
                warnings.push((key.clone(), "oom-killed", "OOMKilled", message));
            }
            let shapes = document.containers.get(position).map_or(&[][..], Vec::as_slice);
            let entries: Vec<&firmware_proto::ContainerStatus> =
                status.containers.iter().filter(|c| usize::from(c.replica) == entry).collect();
            let containers = container_statuses(shapes, &entries);
            let report = replica.clone();
            let node = node.to_owned();
            self.pending.push(
                key.clone(),
                Box::new(move |object| {
                    let Some(pod) = object else { return };
                    if pod.node_name() != Some(node.as_str()) {
                        return;
                    }
                    let old: PodStatus = pod.status();
                    let new = reported_status(&old, &report, &containers);
                    if new != old {
                        pod.set_status(&new);
                    }
                }),
            );
        }
        for (key, event_key, reason, message) in warnings {
            self.pod_warning(&key, event_key, reason, message);
        }
        let usage = Usage {
            cpu_millis: u64::from(status.usage.cpu_millis),
            memory_bytes: u64::from(status.usage.memory_kib) * 1024,
            disk_free_bytes: u64::from(status.usage.disk_free_mib) << 20,
        };
        self.pending.push(
            ObjectKey::new(Kind::Node, "", node),
            Box::new(move |object| {
                let Some(object) = object else { return };
                let mut node_status: NodeStatus = object.status();
                if usage_moved(node_status.usage.as_ref(), &usage) {
                    node_status.usage = Some(usage.clone());
                    object.set_status(&node_status);
                }
            }),
        );
    }

    fn event(&mut self, node: &str, event: &firmware_proto::Event) {
        let replica = event.replica.as_ref().map(|r| r.as_str().to_owned()).unwrap_or_default();
        match &event.kind {
            EventKind::PullProgress { image, done_bytes, total_bytes } => {
                // Counted as it goes: what this pull added since its last report.
                let pull = (node.to_owned(), image.0);
                let before = self.pulled.get(&pull).copied().unwrap_or(0);
                self.counters.pulled(done_bytes.saturating_sub(before));
                match *done_bytes >= *total_bytes {
                    true => _ = self.pulled.remove(&pull),
                    false => _ = self.pulled.insert(pull, *done_bytes),
                }
                let percent = if *total_bytes > 0 { done_bytes * 100 / total_bytes } else { 0 };
                let message = format!("pulling: {percent}% ({done_bytes} of {total_bytes} bytes)");
                self.pod_message(node, &replica, &image.0, "Pulling", &message);
            }
            EventKind::PullFailed { image, reason } => {
                self.counters.pull_failed();
                self.pulled.remove(&(node.to_owned(), image.0));
                tracing::warn!(node, replica, reason = %reason, "image pull failed");
                self.pod_message(node, &replica, &image.0, "ImagePullFailed", reason);
            }
            // A container the node could not create: said on its replica
            // until it runs.
            EventKind::Rejected { reason, .. } if !replica.is_empty() => {
                let message = match &event.container {
                    Some(container) => format!("container {container}: {reason}"),
                    None => reason.to_string(),
                };
                tracing::warn!(node, replica, message, "a container could not be created");
                self.pod_message(node, &replica, &[0; 32], "CreateContainerError", &message);
            }
            EventKind::Rejected { generation, reason } => {
                tracing::warn!(node, generation, reason = %reason, "the node refused its desired document");
            }
            other => tracing::info!(node, replica, event = ?other, "node event"),
        }
    }

    /// A Warning about a replica (`OOMKilled`, `BackOff`, a failed pull),
    /// named `<pod>.<key>`: written when its message changes, so a device
    /// saying the same thing in every heartbeat costs no write; counted
    /// when it happens again.
    fn pod_warning(&mut self, pod: &ObjectKey, key: &'static str, reason: &'static str, message: String) {
        let subject = ApiObject::new(Kind::Pod, &pod.namespace, &pod.name);
        let event_key = ObjectKey::new(Kind::Event, &pod.namespace, &format!("{}.{key}", pod.name));
        let now = std::time::SystemTime::now();
        self.pending.push(
            event_key,
            Box::new(move |stored| {
                if stored.as_ref().is_some_and(|event| crate::events::fields(event).message == message) {
                    return;
                }
                let happening = crate::events::Happening { key, event_type: "Warning", reason, message: &message };
                let namespace = subject.metadata.namespace.clone();
                *stored = Some(crate::events::recorded(&subject, &namespace, &happening, now, stored.as_ref()));
            }),
        );
    }

    /// Puts a pull's progress or failure on the replicas it concerns: the
    /// one named, or every replica of the node using that image.
    fn pod_message(&mut self, node: &str, replica: &str, image: &[u8; 32], reason: &str, message: &str) {
        let Some(document) = self.published.get(node) else { return };
        let mut failed_pulls = Vec::new();
        for ((id, key), digests) in document.replicas.iter().zip(&document.images) {
            if !(id == replica || (replica.is_empty() && digests.contains(image))) {
                continue;
            }
            if reason == "ImagePullFailed" {
                failed_pulls.push(key.clone());
            }
            let (reason, message) = (reason.to_owned(), message.to_owned());
            self.pending.push(
                key.clone(),
                Box::new(move |object| {
                    let Some(pod) = object else { return };
                    let mut status: PodStatus = pod.status();
                    if status.phase == crate::status::PodPhase::Running
                        || (status.reason == reason && status.message == message)
                    {
                        return;
                    }
                    status.reason = reason.clone();
                    status.message = message.clone();
                    pod.set_status(&status);
                }),
            );
        }
        for key in failed_pulls {
            self.pod_warning(&key, "pull-failed", "Failed", format!("pulling its image failed: {message}"));
        }
    }

    /// Commits what the messages and ticks since the last flush changed, in
    /// one transaction, each change made on the object as stored now.
    pub fn flush(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        if pending.by_key.is_empty() {
            return;
        }
        for attempt in 1..=4 {
            let view = self.store.view();
            let (ops, nodes) = build_ops(&view, &mut pending);
            if ops.is_empty() {
                return;
            }
            let writes = ops.len();
            match self.store.commit(ops) {
                Ok(_) => {
                    for (name, ready) in nodes {
                        self.track(&name).ready = ready;
                    }
                    tracing::debug!(writes, messages = pending.messages, first = %pending.by_key.keys().next().map(|k| k.to_string()).unwrap_or_default(), "node messages recorded");
                    return;
                }
                // Another writer changed one of these objects since the view:
                // make the changes again on what it wrote.
                Err(StoreError::Conflict { .. } | StoreError::NotFound(_) | StoreError::AlreadyExists(_))
                    if attempt < 4 => {}
                Err(e) => {
                    tracing::warn!(error = %e, writes, "cannot record the nodes' messages; kept for the next commit");
                    // Bounded: one list per object, and the oldest changes
                    // of an object go first.
                    for (key, mut mutations) in std::mem::take(&mut pending.by_key) {
                        let keep = mutations.len().saturating_sub(32);
                        mutations.drain(..keep);
                        self.pending.by_key.entry(key).or_default().splice(0..0, mutations);
                    }
                    return;
                }
            }
        }
    }

    /// Leases; called every ~100 ms. Reads nothing from the store (but every
    /// 30 s, the Nodes). What a lost node's replicas do is the node
    /// lifecycle controller's (`crate::controllers::node_lifecycle`).
    pub fn tick(&mut self, now: Instant) {
        if self.last_resync.is_none_or(|at| now.duration_since(at) >= RESYNC) {
            self.resync(now);
        }
        self.revoked();
        // Hearing nothing from the broker says nothing about the nodes.
        if self.link.as_ref().is_some_and(|link| link.up_since().is_none()) {
            return;
        }
        let lease = self.config.lease;
        let expired: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, track)| track.ready.as_ref().is_some_and(|r| r.ready))
            .filter(|(_, track)| now.duration_since(track.last_seen) > lease)
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            let message = format!("no heartbeat for {} s", lease.as_secs());
            self.set_ready(&name, false, "LeaseExpired", &message);
        }
    }

    /// Nodes whose credentials were removed (`flotilla node revoke`) are
    /// lost now: nothing they send is believed, and their Last Will, which
    /// their own key seals, cannot be either.
    fn revoked(&mut self) {
        use tokio::sync::broadcast::error::TryRecvError;
        loop {
            let nodes = match self.removed.try_recv() {
                Ok(node) => vec![node],
                // Missed some: every node known here that is not enrolled.
                Err(TryRecvError::Lagged(_)) => {
                    self.nodes.keys().filter(|node| self.enrolment.node(node).is_none()).cloned().collect()
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            };
            for node in nodes {
                self.set_ready(&node, false, "Revoked", "its credentials were revoked");
            }
        }
    }

    /// Reads every Node's readiness into memory: nodes known before a
    /// restart get a lease from the start, deleted ones stop being watched.
    fn resync(&mut self, now: Instant) {
        self.last_resync = Some(now);
        let view = self.store.view();
        let mut stored = BTreeSet::new();
        for node in view.list(Kind::Node, None) {
            let ready = ReadyState::of(node);
            stored.insert(node.metadata.name.as_str());
            let pending_write = self.pending.by_key.contains_key(&node.key());
            let track = self.track(&node.metadata.name);
            if !pending_write {
                track.ready = ready;
            }
        }
        for (name, track) in &mut self.nodes {
            if !stored.contains(name.as_str())
                && !self.pending.by_key.contains_key(&ObjectKey::new(Kind::Node, "", name))
            {
                track.ready = None;
            }
        }
    }
}

/// The writes that make every pending change on `view`, and the readiness
/// of each Node written.
fn build_ops(view: &View, pending: &mut Pending) -> (Vec<Op>, Vec<(String, Option<ReadyState>)>) {
    let mut ops = Vec::new();
    let mut nodes = Vec::new();
    for (key, mutations) in &mut pending.by_key {
        let stored = view.get(key);
        let mut object: Option<ApiObject> = stored.map(|o| ApiObject::clone(o));
        for mutation in mutations.iter_mut() {
            mutation(&mut object);
        }
        let before = ops.len();
        match (stored, object) {
            (None, None) => {}
            (Some(stored), None) => ops.push(Op::Delete(key.clone(), Some(stored.resource_version()))),
            (stored, Some(mut object)) => {
                let changed_content = stored.is_none_or(|s| {
                    !s.same_content_but_status(&object)
                        || s.metadata.labels != object.metadata.labels
                        || s.metadata.annotations != object.metadata.annotations
                });
                let changed_status = stored.is_none_or(|s| !s.same_status(&object));
                object.metadata.resource_version = stored.map(|s| s.resource_version().to_string()).unwrap_or_default();
                if changed_content {
                    // Applied first (with the precondition), then the status
                    // on whatever version that made, in the same batch.
                    ops.push(Op::Apply(object.clone()));
                    object.metadata.resource_version.clear();
                }
                if changed_status || (changed_content && object.has_status()) {
                    ops.push(Op::UpdateStatus(object.clone()));
                }
                if key.kind == Kind::Node && ops.len() > before {
                    nodes.push((key.name.clone(), ReadyState::of(&object)));
                }
                continue;
            }
        }
        if key.kind == Kind::Node && ops.len() > before {
            nodes.push((key.name.clone(), None));
        }
    }
    (ops, nodes)
}

/// A pod's containers as its heartbeat's entries say.
#[derive(Debug, Clone, Default)]
struct Containers {
    /// The heartbeat had entries for this pod (one past the heartbeat's
    /// room for entries has none: what is stored stays).
    reported: bool,
    init: Vec<ContainerStatus>,
    app: Vec<ContainerStatus>,
    /// `Init:1/2` and the like while init containers run.
    init_progress: Option<String>,
}

/// A pod's containers as its heartbeat's entries say; empty for a pod of
/// one container (its replica entry speaks for it).
fn container_statuses(
    shapes: &[super::desired::ContainerShape],
    entries: &[&firmware_proto::ContainerStatus],
) -> Containers {
    let (mut init, mut app) = (Vec::new(), Vec::new());
    if shapes.len() < 2 || entries.is_empty() {
        return Containers::default();
    }
    for (index, shape) in shapes.iter().enumerate() {
        let entry = entries.iter().find(|e| usize::from(e.container) == index);
        let exit = entry.and_then(|e| e.last_exit);
        let reason = |exit: Option<Exit>| match exit {
            Some(Exit { reason: ExitReason::OomKilled, .. }) => "OOMKilled",
            Some(Exit { code: 0, .. }) => "Completed",
            Some(_) => "Error",
            None => "",
        };
        let state = match entry.map(|e| e.state) {
            Some(firmware_proto::ContainerState::Running) => {
                ContainerState { running: Some(Default::default()), ..Default::default() }
            }
            Some(firmware_proto::ContainerState::Terminated) => ContainerState {
                terminated: Some(StateReason { reason: reason(exit).into(), exit_code: exit.map(|e| e.code) }),
                ..Default::default()
            },
            // Waiting after a run: backing off before its restart.
            _ => {
                let why = if exit.is_some() { "CrashLoopBackOff" } else { "PodInitializing" };
                ContainerState {
                    waiting: Some(StateReason { reason: why.into(), exit_code: exit.map(|e| e.code) }),
                    ..Default::default()
                }
            }
        };
        let status = ContainerStatus {
            name: shape.name.clone(),
            ready: entry.is_some_and(|e| e.ready),
            restart_count: entry.map_or(0, |e| e.restarts),
            state,
            usage: entry.filter(|e| e.state == firmware_proto::ContainerState::Running).map(|e| Usage {
                cpu_millis: u64::from(e.cpu_millis),
                memory_bytes: u64::from(e.memory_kib) * 1024,
                ..Usage::default()
            }),
        };
        if shape.init { init.push(status) } else { app.push(status) }
    }
    // Once an app container ran, the pod is past its init containers: a
    // sidecar that restarts (or a Job's, stopped) is not "Init:" again.
    let started = app.iter().any(|c| c.state.waiting.as_ref().is_none_or(|w| w.reason != "PodInitializing"));
    let init_progress = if started { None } else { init_progress(shapes, &init) };
    Containers { reported: true, init, app, init_progress }
}

/// `Init:1/2`, `Init:CrashLoopBackOff`, `Init:Error`: what `kubectl get
/// pods` shows for a pod still in its init containers, if it is. A
/// sidecar counts once it runs; another init container once it completed.
fn init_progress(shapes: &[super::desired::ContainerShape], init: &[ContainerStatus]) -> Option<String> {
    let done = |(shape, c): &(&super::desired::ContainerShape, &ContainerStatus)| {
        if shape.sidecar {
            c.state.running.is_some()
        } else {
            c.state.terminated.as_ref().is_some_and(|t| t.exit_code == Some(0))
        }
    };
    let pairs: Vec<(&super::desired::ContainerShape, &ContainerStatus)> =
        shapes.iter().filter(|s| s.init).zip(init).collect();
    let (_, pending) = pairs.iter().find(|pair| !done(pair))?;
    if pending.state.waiting.as_ref().is_some_and(|w| w.reason == "CrashLoopBackOff") {
        return Some("Init:CrashLoopBackOff".into());
    }
    if pending.state.terminated.is_some() {
        return Some("Init:Error".into());
    }
    Some(format!("Init:{}/{}", pairs.iter().filter(|pair| done(pair)).count(), pairs.len()))
}

/// `old` as one status report of the replica says it is now.
fn reported_status(old: &PodStatus, replica: &firmware_proto::ReplicaStatus, containers: &Containers) -> PodStatus {
    let mut new = old.clone();
    let (phase, reason) = match replica.phase {
        Phase::Pending => (PodPhase::Pending, "ContainerCreating"),
        Phase::Pulling => (PodPhase::Pending, "Pulling"),
        Phase::Creating => (PodPhase::Pending, "ContainerCreating"),
        Phase::Running => (PodPhase::Running, ""),
        Phase::Succeeded => (PodPhase::Succeeded, "Completed"),
        Phase::Failed => (PodPhase::Failed, "Error"),
        Phase::CrashLoopBackOff => (PodPhase::Running, "CrashLoopBackOff"),
        Phase::Terminating => (PodPhase::Running, "Terminating"),
        Phase::Unknown => (PodPhase::Unknown, ""),
    };
    new.phase = phase;
    if new.reason != reason {
        // Pull progress, and why a container backs off, stay said.
        let keep = reason == "Pulling" || (reason == "CrashLoopBackOff" && old.reason == "CreateContainerError");
        new.reason = reason.into();
        if !keep {
            new.message.clear();
        }
    }
    if let Some(Exit { code, reason: exit_reason }) = replica.last_exit {
        new.exit_code = Some(code);
        if exit_reason == ExitReason::OomKilled && phase != PodPhase::Running {
            new.reason = "OOMKilled".into();
        }
    }
    new.restart_count = replica.restarts;
    let ready = replica.phase == Phase::Running && matches!(replica.readiness, Readiness::Ready | Readiness::NoProbe);
    set_condition(
        &mut new.conditions,
        Condition::new(ConditionType::Ready, ready, if ready { "" } else { "NotReady" }, ""),
    );
    let usage = Usage {
        cpu_millis: u64::from(replica.cpu_millis),
        memory_bytes: u64::from(replica.memory_kib) * 1024,
        ..Usage::default()
    };
    if usage_moved(old.usage.as_ref(), &usage) {
        new.usage = Some(usage);
    }
    // Still in its init containers: Pending (or Failed) with how far it got.
    if let Some(progress) = &containers.init_progress {
        if new.phase != PodPhase::Failed {
            new.phase = PodPhase::Pending;
        }
        new.reason = progress.clone();
    }
    // Usage jitters: a container's is kept unless it moved enough (as the
    // pod's), so that an idle pod costs no write per heartbeat.
    let keep_usage = |new: &[ContainerStatus], old: &[ContainerStatus]| -> Vec<ContainerStatus> {
        new.iter()
            .map(|c| {
                let mut c = c.clone();
                if let (Some(now), Some(before)) =
                    (&c.usage, old.iter().find(|o| o.name == c.name).and_then(|o| o.usage.as_ref()))
                    && !usage_moved(Some(before), now)
                {
                    c.usage = Some(before.clone());
                }
                c
            })
            .collect()
    };
    if containers.reported {
        new.init_container_statuses = keep_usage(&containers.init, &old.init_container_statuses);
        new.container_statuses = keep_usage(&containers.app, &old.container_statuses);
    }
    new
}

/// Whether reported usage differs enough from what is stored to be worth
/// a store write: by more than a quarter and more than 10 m of CPU or
/// 256 KiB of memory; free disk by more than a sixteenth and 64 MiB (what
/// a new claim is checked against). Usage jitters on every heartbeat;
/// writing each jitter of 10,000 devices kept the store busy with nothing
/// to say.
fn usage_moved(stored: Option<&Usage>, reported: &Usage) -> bool {
    let moved = |old: u64, new: u64, floor: u64, share: u64| {
        let delta = old.abs_diff(new);
        delta > floor && delta.saturating_mul(share) > old
    };
    stored.is_none_or(|old| {
        moved(old.cpu_millis, reported.cpu_millis, 10, 4)
            || moved(old.memory_bytes, reported.memory_bytes, 256 << 10, 4)
            || moved(old.disk_free_bytes, reported.disk_free_bytes, 64 << 20, 16)
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::OwnerReference;
    use crate::store::{RedbStore, SecretCipher};
    use std::collections::HashSet;

    fn inbox(dir: &std::path::Path) -> (Inbox, Arc<dyn Store>) {
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(&dir.join("store.redb"), SecretCipher::from_key([1; 32])).unwrap());
        let config = FleetConfig {
            prefix: super::super::DEFAULT_PREFIX.into(),
            mqtt_host: "127.0.0.1".into(),
            mqtt_port: 1883,
            mqtt_more: Vec::new(),
            advertised_mqtt_url: "mqtt://127.0.0.1:1883".into(),
            default_registry: "127.0.0.1:7440".into(),
            keep_alive: Duration::from_secs(30),
            eviction_grace: Duration::ZERO,
            lease: Duration::from_secs(600),
        };
        let enrolment = Enrolment::load_or_create(dir).unwrap();
        let topics = Topics::new(&config.prefix);
        (Inbox::new(store.clone(), config, enrolment, topics, PublishedDocuments::default()), store)
    }

    fn pod(name: &str, node: &str, owner: Kind) -> Vec<Op> {
        let mut pod = ApiObject::new(Kind::Pod, "default", name);
        pod.set_field("spec", serde_json::json!({ "nodeName": node, "containers": [] }));
        pod.metadata.owner_references = vec![OwnerReference { kind: owner, name: "owner".into(), uid: "u-1".into() }];
        pod.set_status(&PodStatus { phase: crate::status::PodPhase::Running, ..PodStatus::default() });
        vec![Op::Apply(pod.clone()), Op::UpdateStatus(pod)]
    }

    /// Retires a stored replica as a rollout does.
    fn retire(store: &Arc<dyn Store>, name: &str) {
        let key = ObjectKey::new(Kind::Pod, "default", name);
        let uid = store.get(&key).unwrap().metadata.uid.clone();
        store.commit(vec![Op::Retire { key, uid }]).unwrap();
    }

    fn get(store: &Arc<dyn Store>, name: &str) -> Option<(Option<String>, PodStatus)> {
        let pod = store.get(&ObjectKey::new(Kind::Pod, "default", name))?;
        let node = pod.node_name().map(str::to_owned);
        Some((node, pod.status()))
    }

    #[test]
    fn a_node_long_behind_its_published_document_gets_it_again_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut inbox, _store) = inbox(dir.path());
        let long_ago = Instant::now().checked_sub(BEHIND_FOR + Duration::from_secs(1)).unwrap();
        inbox.published.insert_for_test("edge-1", 7, long_ago);
        inbox.published.insert_for_test("edge-2", 7, Instant::now());
        let mut status = firmware_proto::samples::status(0);
        status.generation = 5;
        inbox.update_replicas("edge-1", &status);
        assert_eq!(inbox.published.take_resends(), HashSet::from(["edge-1".to_owned()]));
        inbox.update_replicas("edge-1", &status);
        assert!(inbox.published.take_resends().is_empty(), "once per generation");
        // Published just now: a status that crossed it on the way.
        inbox.update_replicas("edge-2", &status);
        assert!(inbox.published.take_resends().is_empty());
        // A newer generation, still not taken: once more.
        inbox.published.insert_for_test("edge-1", 8, long_ago);
        inbox.update_replicas("edge-1", &status);
        assert_eq!(inbox.published.take_resends().len(), 1);
        status.generation = 8;
        inbox.update_replicas("edge-1", &status);
        assert!(inbox.published.take_resends().is_empty(), "up to date");
    }

    #[test]
    fn a_queued_change_is_made_on_the_object_as_stored_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut inbox, store) = inbox(dir.path());
        store.commit(pod("web-1", "edge-1", Kind::Deployment)).unwrap();
        let key = ObjectKey::new(Kind::Pod, "default", "web-1");
        inbox.pending.push(
            key.clone(),
            Box::new(|object| {
                let pod = object.as_mut().unwrap();
                let mut status: PodStatus = pod.status();
                status.restart_count = 3;
                pod.set_status(&status);
            }),
        );
        // A rollout retires the replica between the report and the commit.
        retire(&store, "web-1");

        inbox.flush();
        let (_, status) = get(&store, "web-1").unwrap();
        assert_eq!(status.restart_count, 3);
        assert!(store.get(&key).unwrap().is_retired(), "the rollout's write is kept");
    }

    /// The fault behind one-writer-per-field: a status write computed from a
    /// read taken before a rollout retired the replica, committed without a
    /// precondition (as the publisher's and reconciler's status writes were),
    /// used to replace the whole status and with it the retirement, so the
    /// replica went back into its node's document. Retirement now lives in
    /// metadata, which only `Op::Retire` writes.
    #[test]
    fn a_status_report_racing_a_rollout_never_unretires_a_replica() {
        let dir = tempfile::tempdir().unwrap();
        let (mut inbox, store) = inbox(dir.path());
        store.commit(pod("web-1", "edge-1", Kind::Deployment)).unwrap();
        let key = ObjectKey::new(Kind::Pod, "default", "web-1");
        let stale = store.get(&key).unwrap();

        // The rollout retires it; then writes built from the stale read land.
        retire(&store, "web-1");
        let mut report = ApiObject::clone(&stale);
        let mut status: PodStatus = report.status();
        status.restart_count = 7;
        status.message = "restarted".into();
        report.set_status(&status);
        report.metadata.resource_version.clear();
        store.commit(vec![Op::UpdateStatus(report.clone())]).unwrap();
        let mut respec = ApiObject::clone(&stale);
        respec.metadata.resource_version.clear();
        respec.metadata.annotations.insert("touched".into(), "yes".into());
        store.commit(vec![Op::Apply(respec)]).unwrap();
        // And the inbox's own queued report, re-applied at commit.
        inbox.pending.push(
            key.clone(),
            Box::new(|object| {
                let pod = object.as_mut().unwrap();
                let mut status: PodStatus = pod.status();
                status.restart_count = 8;
                pod.set_status(&status);
            }),
        );
        inbox.flush();

        let stored = store.get(&key).unwrap();
        assert_eq!(stored.status::<PodStatus>().restart_count, 8, "the reports were written");
        assert!(stored.is_retired(), "a status or spec write from before the retirement undid it");
        // A re-created namesake is another replica: the old retirement does
        // not reach it.
        store.commit(vec![Op::Delete(key.clone(), None)]).unwrap();
        store.commit(pod("web-1", "edge-1", Kind::Deployment)).unwrap();
        let refused = store.commit(vec![Op::Retire { key: key.clone(), uid: stale.metadata.uid.clone() }]);
        assert!(matches!(refused, Err(crate::store::StoreError::Conflict { .. })), "{refused:?}");
        assert!(!store.get(&key).unwrap().is_retired());
    }

    #[test]
    fn a_replica_warning_is_written_once_per_message_and_counted_when_it_happens_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut inbox, store) = inbox(dir.path());
        store.commit(pod("web-1", "edge-1", Kind::Deployment)).unwrap();
        let key = ObjectKey::new(Kind::Pod, "default", "web-1");
        let event = ObjectKey::new(Kind::Event, "default", "web-1.oom-killed");
        let said =
            |restarts: u32| format!("a container went over its memory limit and was killed (restarts: {restarts})");
        inbox.pod_warning(&key, "oom-killed", "OOMKilled", said(1));
        inbox.flush();
        let first = store.get(&event).unwrap();
        // Every heartbeat says it again: no write.
        inbox.pod_warning(&key, "oom-killed", "OOMKilled", said(1));
        inbox.flush();
        assert_eq!(store.get(&event).unwrap().metadata.resource_version, first.metadata.resource_version);
        // Killed again: counted.
        inbox.pod_warning(&key, "oom-killed", "OOMKilled", said(2));
        inbox.flush();
        let fields = crate::events::fields(&store.get(&event).unwrap());
        assert_eq!((fields.reason.as_str(), fields.event_type.as_str(), fields.count), ("OOMKilled", "Warning", 2));
        assert_eq!((fields.involved_object.kind.as_str(), fields.involved_object.name.as_str()), ("Pod", "web-1"));
        assert!(fields.message.ends_with("(restarts: 2)"), "{}", fields.message);
    }

    #[test]
    fn usage_is_written_when_it_moves_by_more_than_a_quarter() {
        let usage = |cpu_millis, mib: u64| Usage { cpu_millis, memory_bytes: mib << 20, ..Usage::default() };
        assert!(usage_moved(None, &usage(0, 0)));
        assert!(!usage_moved(Some(&usage(100, 64)), &usage(110, 70)), "jitter");
        assert!(!usage_moved(Some(&usage(0, 0)), &usage(8, 0)), "below the floors");
        // A small container's first real figures are written: a 4 MiB floor
        // left every busybox replica of the demo at 0 for good.
        let kib = |cpu_millis, kib: u64| Usage { cpu_millis, memory_bytes: kib << 10, ..Usage::default() };
        assert!(usage_moved(Some(&usage(0, 0)), &kib(0, 492)), "0 -> 492 KiB");
        assert!(!usage_moved(Some(&kib(0, 492)), &kib(0, 520)), "jitter of a small one");
        assert!(usage_moved(Some(&usage(100, 64)), &usage(200, 64)), "cpu doubled");
        assert!(usage_moved(Some(&usage(100, 64)), &usage(100, 128)), "memory doubled");
        assert!(usage_moved(Some(&usage(400, 64)), &usage(100, 64)), "cpu fell");
        // Free disk: what a new claim is checked against.
        let disk = |gib: u64| Usage { disk_free_bytes: gib << 30, ..usage(100, 64) };
        assert!(!usage_moved(Some(&disk(32)), &disk(31)), "a thirty-second of the disk");
        assert!(usage_moved(Some(&disk(32)), &disk(24)), "a quarter of the disk");
        assert!(usage_moved(Some(&usage(100, 64)), &disk(8)), "first figure");
    }
}
