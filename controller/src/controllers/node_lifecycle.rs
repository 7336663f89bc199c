//! Node lifecycle: the replicas of a lost node move.
//!
//! The fleet inbox hears the nodes and writes what it hears: a node's
//! `Ready` condition goes `False` with reason `Unreachable` (its Last
//! Will), `LeaseExpired` (no heartbeat), `AgentShutdown` or `Revoked` (its
//! credentials were removed). This controller
//! decides what follows, from the condition alone: once a node has been
//! lost for the eviction grace (timed from the condition's transition, so a
//! controller restart does not restart the clock), its replicas are
//! evicted:
//!
//! - a retired one is deleted (it was only waiting for its node to say it
//!   stopped, and the node is gone);
//! - a DaemonSet's stays bound and says `Unknown` / `NodeLost` (it belongs
//!   to that node and runs again when the node is back);
//! - one that mounts a claim bound to that node stays bound and says
//!   `Unknown` / `WaitingForVolume` (its data is there), unless the claim's
//!   `flotilla.io/on-device-lost` annotation says `reschedule`;
//! - any other is handed to [`super::scheduling`] to be placed elsewhere
//!   in the same pass ([`Evictions::moving`]): one write binds it to its new
//!   node, or unbinds it with the reason no node can take it.
//!
//! Writes: the status of a lost node's DaemonSet replicas and of those its
//! claims hold there, and deletes of its retired replicas. `spec.nodeName` stays the scheduling controller's.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::manifest::Kind;
use crate::object::ApiObject;
use crate::status::{Condition, ConditionType, NodeStatus, PodPhase, PodStatus, condition, set_condition};
use crate::store::Op;

use super::{Requeue, Snapshot};

/// Reasons of a node's `Ready=False` that make its replicas move.
pub const LOST_REASONS: [&str; 4] = ["Unreachable", "LeaseExpired", "AgentShutdown", "Revoked"];

/// What the pass is told about evictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvictionPolicy {
    /// How long a node stays lost before its replicas move.
    pub grace: Duration,
    /// No eviction before this time: the controller's own broker
    /// connection came back recently, and devices reconnecting after it
    /// (a broker restart) are not lost nodes. Told by the transport.
    pub not_before: Option<SystemTime>,
}

impl Default for EvictionPolicy {
    fn default() -> Self {
        EvictionPolicy { grace: Duration::from_millis(500), not_before: None }
    }
}

/// The replicas to move off lost nodes, for the scheduling controller.
#[derive(Debug, Default)]
pub struct Evictions<'s> {
    /// Replica (namespace, name) -> why it moves (`node edge-1 lost
    /// (Unreachable)`).
    pub moving: BTreeMap<(&'s str, &'s str), String>,
    /// The replicas that move, as read.
    pub pods: Vec<&'s ApiObject>,
    /// The nodes lost past the grace.
    pub lost: Vec<&'s str>,
}

/// The nodes lost for longer than the grace, each with its reason; and when
/// to look again for the ones still within it.
pub fn lost_nodes<'s>(
    snapshot: &'s Snapshot,
    policy: &EvictionPolicy,
    now: SystemTime,
) -> (BTreeMap<&'s str, String>, Requeue) {
    let mut lost = BTreeMap::new();
    let mut requeue = Requeue::OnChange;
    for node in snapshot.nodes_not_ready() {
        let status = node.typed_status::<NodeStatus>();
        let Some(ready) = condition(&status.conditions, ConditionType::Ready) else { continue };
        if ready.is_true() || !LOST_REASONS.contains(&ready.reason.as_str()) {
            continue;
        }
        let since = humantime::parse_rfc3339_weak(&ready.last_transition_time).unwrap_or(SystemTime::UNIX_EPOCH);
        let due = (since + policy.grace).max(policy.not_before.unwrap_or(SystemTime::UNIX_EPOCH));
        match due.duration_since(now) {
            Ok(wait) if !wait.is_zero() => requeue = requeue.sooner(Requeue::After(wait)),
            _ => _ = lost.insert(node.metadata.name.as_str(), ready.reason.clone()),
        }
    }
    (lost, requeue)
}

/// Evicts the replicas of lost nodes: writes what stays (retired ones
/// deleted, DaemonSet replicas marked), returns what moves.
pub fn reconcile<'s>(
    snapshot: &'s Snapshot,
    policy: &EvictionPolicy,
    now: SystemTime,
    ops: &mut Vec<Op>,
) -> (Evictions<'s>, Requeue) {
    let (lost, requeue) = lost_nodes(snapshot, policy, now);
    let mut evictions = Evictions::default();
    if lost.is_empty() {
        return (evictions, requeue);
    }
    // The lost nodes' pods, from the store's index by node.
    let mut moving_from: BTreeMap<&str, usize> = BTreeMap::new();
    evictions.lost = lost.keys().copied().collect();
    let claims = super::claims::Claims::new(snapshot, evictions.lost.iter().copied());
    let held = |pod: &ApiObject, node: &str| {
        if claims.is_empty() {
            return None;
        }
        let spec = pod.typed_spec::<crate::manifest::types::PodSpec>()?;
        claims.holding(&spec, &pod.metadata.namespace, node)
    };
    for (node, why) in &lost {
        for pod in snapshot.pods_on(node) {
            let status = pod.typed_status::<PodStatus>();
            if status.is_finished() {
                continue;
            }
            if pod.is_retired() {
                ops.push(Op::Delete(pod.key(), Some(pod.resource_version())));
            } else if pod.metadata.owner_references.iter().any(|o| o.kind == Kind::DaemonSet) {
                let message = format!("node {node} lost ({why}); it runs again when the node is back");
                stays(pod, &status, "NodeLost", message, ops);
            } else if let Some(claim) = held(pod, node) {
                let why = format!("was lost ({why})");
                let message = super::claims::waiting_message(&claim.metadata.name, node, &why);
                stays(pod, &status, "WaitingForVolume", message, ops);
            } else {
                let key = (pod.metadata.namespace.as_str(), pod.metadata.name.as_str());
                evictions.moving.insert(key, format!("node {node} lost ({why})"));
                evictions.pods.push(pod);
                *moving_from.entry(node).or_default() += 1;
            }
        }
    }
    for (node, replicas) in moving_from {
        tracing::warn!(node, replicas, reason = %lost[node], "node lost: its replicas move");
    }
    (evictions, requeue)
}

/// Marks a replica that stays on its lost node: `Unknown`, not Ready, and
/// why (once).
fn stays(pod: &ApiObject, status: &PodStatus, reason: &str, message: String, ops: &mut Vec<Op>) {
    if status.reason == reason {
        return;
    }
    let mut status = status.clone();
    status.phase = PodPhase::Unknown;
    status.reason = reason.into();
    status.message = message;
    set_condition(&mut status.conditions, Condition::new(ConditionType::Ready, false, reason, ""));
    let mut marked = ApiObject::clone(pod);
    marked.set_status(&status);
    ops.push(Op::UpdateStatus(marked));
}

/// The status of a replica leaving a lost node: `Pending` until its new
/// node reports it, not Ready, no usage.
pub fn moved_status(old: &PodStatus, reason: &str, message: &str) -> PodStatus {
    let mut status = old.clone();
    status.phase = crate::status::PodPhase::Pending;
    status.reason = reason.to_owned();
    status.message = message.to_owned();
    status.usage = None;
    set_condition(&mut status.conditions, Condition::new(ConditionType::Ready, false, "NodeLost", ""));
    status
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::object::{ObjectKey, OwnerReference};

    fn node(name: &str, ready: bool, reason: &str, since: SystemTime) -> Arc<ApiObject> {
        let mut node = ApiObject::new(Kind::Node, "", name);
        node.set_field("spec", serde_json::json!({}));
        let mut status = NodeStatus::default();
        let mut ready = Condition::new(ConditionType::Ready, ready, reason, "");
        ready.last_transition_time = humantime::format_rfc3339_millis(since).to_string();
        status.conditions.push(ready);
        node.set_status(&status);
        Arc::new(node)
    }

    fn pod(name: &str, node: &str, owner: Kind) -> ApiObject {
        let mut pod = ApiObject::new(Kind::Pod, "default", name);
        pod.set_field("spec", serde_json::json!({ "nodeName": node, "containers": [] }));
        pod.metadata.owner_references = vec![OwnerReference { kind: owner, name: "owner".into(), uid: "u-1".into() }];
        pod.set_status(&PodStatus { phase: crate::status::PodPhase::Running, ..PodStatus::default() });
        pod
    }

    fn fleet(lost_at: SystemTime) -> Snapshot {
        let mut retired = pod("web-old", "lost-1", Kind::Deployment);
        retired.metadata.deletion_timestamp = "2026-01-01T00:00:00Z".into();
        Snapshot {
            nodes: vec![
                node("lost-1", false, "Unreachable", lost_at),
                node("lost-2", false, "LeaseExpired", lost_at),
                node("fine", true, "AgentReporting", lost_at),
                node("cordoned", false, "KubeletNotReady", lost_at),
            ],
            pods: [
                pod("web-1", "lost-1", Kind::Deployment),
                pod("web-2", "lost-2", Kind::Deployment),
                retired,
                pod("agent-lost-1", "lost-1", Kind::DaemonSet),
                pod("web-3", "fine", Kind::Deployment),
                pod("web-4", "cordoned", Kind::Deployment),
            ]
            .into_iter()
            .map(Arc::new)
            .collect(),
            ..Snapshot::default()
        }
    }

    fn written(ops: &[Op], name: &str) -> Option<ApiObject> {
        ops.iter().rev().find_map(|op| match op {
            Op::UpdateStatus(o) if o.metadata.name == name => Some(o.clone()),
            _ => None,
        })
    }

    #[test]
    fn lost_nodes_replicas_move_and_nothing_of_other_nodes_is_touched() {
        let now = SystemTime::now();
        let snapshot = fleet(now - Duration::from_secs(2));
        let policy = EvictionPolicy { grace: Duration::from_secs(1), not_before: None };
        let mut ops = Vec::new();
        let (evictions, _) = reconcile(&snapshot, &policy, now, &mut ops);
        let moving: Vec<&str> = evictions.moving.keys().map(|(_, name)| *name).collect();
        assert_eq!(moving, ["web-1", "web-2"]);
        // The scheduling controller writes where they go: here nowhere
        // (no pin), so off their nodes, saying which node was lost.
        ops.extend(super::super::scheduling::reconcile(&snapshot, &ops, &evictions));
        let web_1 = written(&ops, "web-1").unwrap();
        let status: PodStatus = web_1.status();
        assert_eq!((web_1.node_name(), status.phase.as_str(), status.reason.as_str()), (None, "Pending", "NodeLost"));
        assert!(status.message.contains("lost-1"), "{}", status.message);
        assert_eq!(written(&ops, "web-2").unwrap().node_name(), None);
        assert!(
            ops.iter()
                .any(|op| matches!(op, Op::Delete(k, _) if *k == ObjectKey::new(Kind::Pod, "default", "web-old"))),
            "a retired replica goes with its node"
        );
        let daemon = written(&ops, "agent-lost-1").unwrap();
        assert_eq!((daemon.node_name(), daemon.status::<PodStatus>().phase.as_str()), (Some("lost-1"), "Unknown"));
        for untouched in ["web-3", "web-4"] {
            assert!(written(&ops, untouched).is_none(), "{untouched} was written: not ready is not lost");
        }
        // One Warning per workload and lost node says where its replicas went.
        let moved: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Apply(o) if o.kind == Kind::Event => Some(crate::events::fields(o)),
                _ => None,
            })
            .collect();
        assert!(!moved.is_empty(), "no ReplicasMoved event");
        assert!(
            moved.iter().all(|e| e.reason == "ReplicasMoved" && e.involved_object.kind == "Deployment"),
            "{moved:?}"
        );
        assert!(
            moved.iter().any(|e| e.message.contains("web-1 nowhere yet") && e.message.contains("lost-1")),
            "{moved:?}"
        );
    }

    #[test]
    fn nothing_moves_within_the_grace_or_before_the_transport_allows() {
        let now = SystemTime::now();
        let snapshot = fleet(now - Duration::from_millis(200));
        let mut ops = Vec::new();
        let policy = EvictionPolicy { grace: Duration::from_secs(1), not_before: None };
        let (evictions, requeue) = reconcile(&snapshot, &policy, now, &mut ops);
        assert!(evictions.moving.is_empty() && ops.is_empty());
        assert!(matches!(requeue, Requeue::After(wait) if wait <= Duration::from_millis(800)), "{requeue:?}");

        // Past the grace, but the controller's broker link only just came back.
        let policy = EvictionPolicy { grace: Duration::ZERO, not_before: Some(now + Duration::from_secs(30)) };
        let (evictions, requeue) = reconcile(&snapshot, &policy, now, &mut ops);
        assert!(evictions.moving.is_empty() && ops.is_empty());
        assert!(matches!(requeue, Requeue::After(wait) if wait > Duration::from_secs(29)), "{requeue:?}");
    }
}
