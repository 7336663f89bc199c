//! The control channel: the embedded MQTT broker, the controller's MQTT
//! connection, node registration and leases, and the signed desired-state
//! documents. DESIGN.md "Wire protocol" and `firmware-proto/WIRE.md` are the
//! reference.
//!
//! - [`credentials`]: controller key, join tokens, node credentials.
//! - [`broker`]: the embedded broker.
//! - [`channel`]: the one task that owns the rumqttc event loop.
//! - [`inbox`]: node messages -> Node and Pod status, leases.
//! - [`desired`]: bound Pods -> one signed document per node
//!   (`crate::replica_spec` projects them; nothing is written back).
//! - [`enrol_api`]: join tokens and enrolment over HTTP.
//! - [`logs`]: `flotilla logs`, asked of the node over MQTT.
//! - [`services`]: Services' ready endpoints, per node.
//! - [`mosquitto`]: password and ACL files for an external Mosquitto.
//! - [`rotation`]: nodes' credential requests answered.

pub mod broker;
pub mod channel;
pub mod counters;
pub mod credentials;
pub mod desired;
pub mod enrol_api;
pub mod gate;
pub mod inbox;
pub mod logs;
pub mod mosquitto;
pub mod refusals;
pub mod rotation;
pub mod services;

use std::sync::Arc;
use std::time::Duration;

/// Default topic prefix, and the topic names under a prefix (shared with
/// the agent).
pub use firmware_proto::mqtt::{DEFAULT_PREFIX, Topics};

use crate::store::Store;

/// Node messages received but not yet handled by the inbox (a burst of a
/// whole fleet's reports; beyond it the MQTT loop waits).
const INCOMING_QUEUE: usize = 32_768;

/// How the controller runs the channel.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Topic prefix, `flotilla/v1`.
    pub prefix: String,
    /// Broker host the controller connects to.
    pub mqtt_host: String,
    /// Broker port.
    pub mqtt_port: u16,
    /// More brokers of the same cluster, tried in turn when the one in use
    /// is lost (`--mqtt-url a,b,c`).
    pub mqtt_more: Vec<(String, u16)>,
    /// The URL agents are told at enrolment (`mqtt://host:port`).
    pub advertised_mqtt_url: String,
    /// Registry used for images named without one (`busybox:1.35`).
    pub default_registry: String,
    /// MQTT keep-alive of the controller's own connection.
    pub keep_alive: Duration,
    /// How long a node whose connection dropped (Last Will) keeps its
    /// replicas before they are placed elsewhere.
    pub eviction_grace: Duration,
    /// A connected node that sends no heartbeat for this long is treated
    /// as lost too.
    pub lease: Duration,
}

/// When each node's last message arrived, kept in memory by the inbox (a
/// heartbeat is not written to the store: 10,000 devices every few seconds
/// would be thousands of writes a second for a field only a screen reads).
#[derive(Debug, Clone, Default)]
pub struct LastHeard(Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::SystemTime>>>);

impl LastHeard {
    /// `node` was heard from now.
    pub fn heard(&self, node: &str, at: std::time::SystemTime) {
        let mut nodes = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match nodes.get_mut(node) {
            Some(last) => *last = at,
            None => {
                nodes.insert(node.to_owned(), at);
            }
        }
    }

    /// Every node heard from since the controller started, with when.
    pub fn all(&self) -> Vec<(String, std::time::SystemTime)> {
        let nodes = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        nodes.iter().map(|(node, at)| (node.clone(), *at)).collect()
    }
}

/// The running control channel.
pub struct Fleet {
    /// What asks nodes for container logs.
    pub log_requests: logs::LogRequests,
    /// When each node was last heard from.
    pub last_heard: LastHeard,
    /// The MQTT connection's task and the publisher's.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The inbox's thread.
    inbox: std::thread::JoinHandle<()>,
    /// What the node lifecycle controller is told about evictions.
    pub eviction: EvictionSource,
}

/// What the transport tells the node lifecycle controller: the eviction
/// grace, and no eviction while the controller's own broker connection is
/// down nor within [`inbox::RECONNECT_GRACE`] after it came back (devices
/// reconnecting after a broker restart are not lost nodes). That holds for
/// the process's first connection too: with the embedded broker a
/// controller restart is a broker restart, and a 1,000-device restart
/// without the wait restarted 332 of 5,000 replicas (why is not known yet).
#[derive(Clone)]
pub struct EvictionSource {
    link: channel::BrokerLink,
    grace: std::time::Duration,
}

impl EvictionSource {
    /// The policy as of now.
    pub fn policy(&self) -> crate::controllers::node_lifecycle::EvictionPolicy {
        let now = std::time::SystemTime::now();
        let not_before = match self.link.up_since() {
            Some(since) => now.checked_sub(since.elapsed()).map(|up| up + inbox::RECONNECT_GRACE),
            None => Some(now + inbox::RECONNECT_GRACE),
        };
        crate::controllers::node_lifecycle::EvictionPolicy { grace: self.grace, not_before }
    }
}

impl Fleet {
    /// Stops the channel: the connection and the publisher end, and the
    /// inbox commits what it had received before its thread ends.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        // The connection's task held the inbox's sender: the inbox sees the
        // channel closed, flushes and returns.
        let inbox = self.inbox;
        if tokio::task::spawn_blocking(move || inbox.join()).await.is_err() {
            tracing::error!("the fleet inbox did not stop cleanly");
        }
    }
}

/// Starts the channel's tasks and the inbox's thread.
pub fn spawn(
    store: Arc<dyn Store>,
    config: FleetConfig,
    enrolment: credentials::Enrolment,
    key: Arc<credentials::ControllerKey>,
    refusals: refusals::RefusalCounter,
    counters: counters::FleetCounters,
) -> anyhow::Result<Fleet> {
    let topics = Topics::new(&config.prefix);
    let (incoming_tx, incoming_rx) = std::sync::mpsc::sync_channel(INCOMING_QUEUE);
    let republish = Arc::new(tokio::sync::Notify::new());
    let link = channel::BrokerLink::default();
    let eviction = EvictionSource { link: link.clone(), grace: config.eviction_grace };
    let (client, connection) =
        channel::spawn(&config, &enrolment, topics.clone(), incoming_tx, republish.clone(), link.clone());
    let published = desired::PublishedDocuments::default();
    let log_requests = logs::LogRequests::new(client.clone(), key.clone(), topics.clone(), counters.clone());
    let last_heard = LastHeard::default();
    let seal_keys = enrolment.clone();
    let rotation =
        rotation::Rotation::new(client.clone(), key.clone(), topics.clone(), enrolment.clone(), counters.clone());
    let inbox = inbox::Inbox::new(store.clone(), config.clone(), enrolment, topics.clone(), published.clone())
        .with_log_requests(log_requests.clone())
        .with_rotation(rotation)
        .with_broker_link(link)
        .with_refusal_counter(refusals)
        .with_last_heard(last_heard.clone())
        .with_counters(counters.clone());
    let inbox = inbox::spawn(inbox, incoming_rx)?;
    let keys = desired::Keys { controller: key, enrolment: seal_keys };
    let outbox = desired::Outbox { client, counters };
    let publisher = tokio::spawn(desired::run(store, config, keys, topics, outbox, published, republish));
    Ok(Fleet { log_requests, last_heard, tasks: vec![connection, publisher], inbox, eviction })
}
