//! What the control channel and the reconciler count for `/metrics`
//! (issue 21): MQTT messages in and out by kind, OOM kills, image pulls
//! (bytes and failures), scheduler placements and reconcile pass time.
//! Cheap clones of one set of counters, registered once by the API's
//! metrics and handed to the parts that count.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// The fleet's counters.
#[derive(Clone, Debug)]
pub struct FleetCounters {
    received: Family<KindLabels, Counter>,
    sent: Family<KindLabels, Counter>,
    oom_kills: Counter,
    pull_failures: Counter,
    pull_bytes: Counter,
    placements: Counter,
    pass_seconds: Histogram,
}

impl Default for FleetCounters {
    fn default() -> Self {
        FleetCounters {
            received: Family::default(),
            sent: Family::default(),
            oom_kills: Counter::default(),
            pull_failures: Counter::default(),
            pull_bytes: Counter::default(),
            placements: Counter::default(),
            // 1 ms to 16 s: a pass over 10,000 devices takes hundreds of ms.
            pass_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        }
    }
}

impl FleetCounters {
    /// Registers every counter in `registry` (prefixed `flotilla_` there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "mqtt_messages_received",
            "Messages from nodes taken by the controller (verified), by kind; refusals are in node_messages_refused",
            self.received.clone(),
        );
        registry.register(
            "mqtt_messages_sent",
            "Messages the controller published to nodes, by kind",
            self.sent.clone(),
        );
        registry.register(
            "pod_oom_kills",
            "Containers killed for going over their memory limit, as the nodes reported them",
            self.oom_kills.clone(),
        );
        registry.register(
            "image_pull_failures",
            "Image pulls the nodes reported failed (each attempt)",
            self.pull_failures.clone(),
        );
        registry.register(
            "image_pull_bytes",
            "Image bytes the nodes reported pulled (from their pull progress)",
            self.pull_bytes.clone(),
        );
        registry.register(
            "scheduler_placements",
            "Replicas the scheduler bound to a node (placed, or moved off a lost one)",
            self.placements.clone(),
        );
        registry.register(
            "reconcile_pass_duration_seconds",
            "How long one reconcile pass took (every controller, the scheduler, the writes)",
            self.pass_seconds.clone(),
        );
    }

    /// A message of `kind` from a node was taken.
    pub fn received(&self, kind: firmware_proto::MessageKind) {
        self.received.get_or_create(&KindLabels { kind: kind.topic_leaf().to_owned() }).inc();
    }

    /// A message of `kind` was published to a node.
    pub fn sent(&self, kind: firmware_proto::MessageKind) {
        self.sent.get_or_create(&KindLabels { kind: kind.topic_leaf().to_owned() }).inc();
    }

    /// A container was OOM-killed.
    pub fn oom_killed(&self) {
        self.oom_kills.inc();
    }

    /// A pull failed.
    pub fn pull_failed(&self) {
        self.pull_failures.inc();
    }

    /// `bytes` more were pulled.
    pub fn pulled(&self, bytes: u64) {
        self.pull_bytes.inc_by(bytes);
    }

    /// `replicas` were bound to nodes.
    pub fn placed(&self, replicas: u64) {
        self.placements.inc_by(replicas);
    }

    /// A reconcile pass took `seconds`.
    pub fn pass(&self, seconds: f64) {
        self.pass_seconds.observe(seconds);
    }
}
