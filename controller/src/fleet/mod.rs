//! The control channel: the embedded MQTT broker, the controller's MQTT
//! connection, node registration and leases, and the signed desired-state
//! documents. DESIGN.md "Wire protocol" and `firmware-proto/WIRE.md` are the
//! reference.
//!
//! - [`credentials`]: controller key, join tokens, node credentials, MACs.
//! - [`broker`]: the embedded broker.
//! - [`channel`]: the one task that owns the rumqttc event loop.
//! - [`inbox`]: node messages -> Node and Pod status, leases, eviction.
//! - [`desired`]: bound Pods -> one signed document per node.
//! - [`enrol_api`]: join tokens and enrolment over HTTP.
//! - [`replica_spec`]: one Pod -> the replica its node runs.
//! - [`logs`]: `flotilla logs`, asked of the node over MQTT.
//! - [`services`]: Services' ready endpoints, per node.
//! - [`mosquitto`]: password and ACL files for an external Mosquitto.

pub mod broker;
pub mod channel;
pub mod credentials;
pub mod desired;
pub mod enrol_api;
pub mod inbox;
pub mod logs;
pub mod mosquitto;
pub mod replica_spec;
pub mod services;

use std::sync::Arc;
use std::time::Duration;

use firmware_proto::MessageKind;

use crate::store::Store;

/// Node messages received but not yet handled by the inbox (a burst of a
/// whole fleet's reports; beyond it the MQTT loop waits).
const INCOMING_QUEUE: usize = 32_768;

/// Default topic prefix.
pub const DEFAULT_PREFIX: &str = "flotilla/v1";

/// How the controller runs the channel.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Topic prefix, `flotilla/v1`.
    pub prefix: String,
    /// Broker host the controller connects to.
    pub mqtt_host: String,
    /// Broker port.
    pub mqtt_port: u16,
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

/// Topic names under a prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// Topics under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Topics { prefix: prefix.trim_end_matches('/').to_owned() }
    }

    /// `prefix/nodes/{id}/{leaf}`.
    pub fn node(&self, node: &str, leaf: &str) -> String {
        format!("{}/nodes/{node}/{leaf}", self.prefix)
    }

    /// What the controller subscribes to: every node's messages.
    pub fn controller_filters(&self) -> Vec<String> {
        MessageKind::FROM_NODE.iter().map(|kind| format!("{}/nodes/+/{}", self.prefix, kind.topic_leaf())).collect()
    }

    /// `(node id, leaf)` of a node topic, or `None` for anything else.
    pub fn parse<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        let rest = topic.strip_prefix(self.prefix.as_str())?.strip_prefix("/nodes/")?;
        let (node, leaf) = rest.split_once('/')?;
        (!leaf.contains('/')).then_some((node, leaf))
    }
}

/// The running control channel.
pub struct Fleet {
    /// What asks nodes for container logs.
    pub log_requests: logs::LogRequests,
    /// The MQTT connection's task and the publisher's.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The inbox's thread.
    inbox: std::thread::JoinHandle<()>,
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
) -> anyhow::Result<Fleet> {
    let topics = Topics::new(&config.prefix);
    let (incoming_tx, incoming_rx) = std::sync::mpsc::sync_channel(INCOMING_QUEUE);
    let republish = Arc::new(tokio::sync::Notify::new());
    let link = channel::BrokerLink::default();
    let (client, connection) =
        channel::spawn(&config, &enrolment, topics.clone(), incoming_tx, republish.clone(), link.clone());
    let published = desired::PublishedDocuments::default();
    let log_requests = logs::LogRequests::new(client.clone(), key.clone(), topics.clone());
    let inbox = inbox::Inbox::new(store.clone(), config.clone(), enrolment, topics.clone(), published.clone())
        .with_log_requests(log_requests.clone())
        .with_broker_link(link);
    let inbox = inbox::spawn(inbox, incoming_rx)?;
    let publisher = tokio::spawn(desired::run(store, config, key, topics, client, published, republish));
    Ok(Fleet { log_requests, tasks: vec![connection, publisher], inbox })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_parse_only_single_level_node_topics() {
        let topics = Topics::new("flotilla/v1/");
        assert_eq!(topics.node("edge-1", "desired"), "flotilla/v1/nodes/edge-1/desired");
        assert_eq!(topics.parse("flotilla/v1/nodes/edge-1/status"), Some(("edge-1", "status")));
        assert_eq!(topics.parse("flotilla/v1/nodes/edge-1/status/x"), None);
        assert_eq!(topics.parse("other/v1/nodes/edge-1/status"), None);
    }
}
