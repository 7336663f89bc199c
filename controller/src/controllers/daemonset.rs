//! DaemonSet updates: one replica per eligible node, replaced node by node
//! within `maxUnavailable` (default 1) across the fleet. The replacement
//! takes the old replica's place on its node in the same pass (the agent
//! pulls the new image before it stops the old replica). Nodes matching
//! the `flotilla.io/canary-nodes` selector (an annotation on the DaemonSet,
//! e.g. `role=canary`) go first: the others wait until every canary node
//! runs an available replica of the new template. A node that is offline
//! waits for itself: it is updated when it comes back, without holding up
//! the rest. `updateStrategy: OnDelete` replaces a replica only once it is
//! deleted by hand.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::image_pinning;
use crate::manifest::types::{DaemonSetSpec, IntOrString, NodeSpec, PodSpec};
use crate::object::ApiObject;
use crate::selector::Selector;
use crate::status::{DaemonSetStatus, NodeStatus, PodStatus};
use crate::store::Op;

use super::Requeue;
use super::deployment::{is_available, retire};
use super::scheduling::{taint, toleration};
use super::workload::{TEMPLATE_HASH_LABEL, Template, replica, status_op, template_hash};

/// Annotation on a DaemonSet: a label selector for the nodes updated first.
pub const CANARY_ANNOTATION: &str = "flotilla.io/canary-nodes";

/// When a DaemonSet's pass must run again with nothing changed: while a
/// ready replica waits out `minReadySeconds` to count as available. A
/// replica that is not ready (its node is lost, it is starting) changes
/// by an event, not by the clock: waiting on the clock for those made a
/// pass every second, reconciling every node, for as long as one node of
/// the fleet was down.
pub fn requeue(daemon_set: &ApiObject) -> Requeue {
    let status = daemon_set.typed_status::<DaemonSetStatus>();
    let min_ready = daemon_set.spec_ref::<DaemonSetSpec>().and_then(|s| s.min_ready_seconds).unwrap_or(0);
    if min_ready > 0 && status.number_available < status.number_ready { Requeue::CLOCK } else { Requeue::OnChange }
}

/// Whether a node is eligible for a DaemonSet's replica: selector matches,
/// taints tolerated (`tolerations`: the pod's, as the scheduler models them).
pub fn daemon_eligible(node: &ApiObject, pod: &PodSpec, tolerations: &[flotilla_scheduler::model::Toleration]) -> bool {
    let selector_ok = pod.node_selector.iter().all(|(k, v)| node.metadata.labels.get(k) == Some(v));
    let spec = node.typed_spec::<NodeSpec>();
    let taints = spec.as_ref().map_or(&[][..], |s| s.taints.as_slice());
    let tolerated = taints
        .iter()
        .filter(|t| t.effect != "PreferNoSchedule")
        .filter_map(taint)
        .all(|t| tolerations.iter().any(|tol| tol.tolerates(&t)));
    selector_ok && tolerated
}

/// One pass over a DaemonSet.
pub fn reconcile(
    daemon_set: &ApiObject,
    owned: &[&ApiObject],
    nodes: &[Arc<ApiObject>],
    now: SystemTime,
    ops: &mut Vec<Op>,
) {
    let Some(spec) = daemon_set.spec::<DaemonSetSpec>() else { return };
    let hash = template_hash(&spec.template);
    let template = Template::new(&spec.template);
    let name = &daemon_set.metadata.name;
    let min_ready = Duration::from_secs(spec.min_ready_seconds.unwrap_or(0).max(0) as u64);
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.strategy_type.as_deref() == Some("OnDelete");
    // Once a replica of this template is pinned, its image's architectures
    // are known: nodes of others are not eligible (their replica, bound at
    // creation, is retired rather than run or moved).
    let image_archs = owned
        .iter()
        .filter(|p| p.metadata.labels.get(TEMPLATE_HASH_LABEL) == Some(&hash))
        .find(|p| image_pinning::archs_of(p).is_some());
    let tolerations: Vec<flotilla_scheduler::model::Toleration> =
        spec.template.spec.tolerations.iter().filter_map(toleration).collect();
    let eligible: Vec<&ApiObject> = nodes
        .iter()
        .filter(|n| daemon_eligible(n, &spec.template.spec, &tolerations))
        .filter(|n| {
            image_archs
                .is_none_or(|p| image_pinning::can_run_on(p, &n.typed_status::<NodeStatus>().node_info.architecture))
        })
        .map(|n| &**n)
        .collect();
    let max_unavailable = match strategy.rolling_update.and_then(|r| r.max_unavailable) {
        Some(IntOrString::Int(n)) => n.max(0) as usize,
        Some(IntOrString::String(p)) => eligible.len() * p.trim_end_matches('%').parse::<usize>().unwrap_or(0) / 100,
        None => 1,
    }
    .max(1);
    let canary = daemon_set.metadata.annotations.get(CANARY_ANNOTATION).and_then(|s| Selector::parse(s).ok());
    let is_canary = |node: &ApiObject| canary.as_ref().is_some_and(|s| s.matches(&node.metadata.labels));
    let available = |pod: &ApiObject| is_available(pod, min_ready, now);

    // Live replicas by node; retired ones are only waited for.
    let mut by_node: BTreeMap<&str, Vec<&ApiObject>> = BTreeMap::new();
    for pod in owned {
        if !pod.is_retired() {
            by_node.entry(pod.node_name().unwrap_or_default()).or_default().push(pod);
        }
    }
    let eligible_names: std::collections::HashSet<&str> = eligible.iter().map(|n| n.metadata.name.as_str()).collect();
    // Replicas on nodes that are no longer eligible go.
    for (node, pods) in &by_node {
        if !eligible_names.contains(node) {
            pods.iter().for_each(|p| retire(p, ops));
        }
    }
    let new_name = |node: &str| format!("{name}-{hash}-{node}");
    let is_new = |pod: &ApiObject| pod.metadata.labels.get(TEMPLATE_HASH_LABEL) == Some(&hash);

    let mut unavailable = 0;
    let mut to_replace: Vec<(&ApiObject, &ApiObject)> = Vec::new();
    for node in &eligible {
        let pods = by_node.get(node.metadata.name.as_str()).map_or(&[][..], Vec::as_slice);
        // An offline node's replica is unavailable whatever is done here:
        // it does not hold up the others (it is updated when it is back).
        let online = node.typed_status::<NodeStatus>().is_ready();
        match pods.iter().find(|p| is_new(p)) {
            Some(pod) => {
                if online && !available(pod) {
                    unavailable += 1;
                }
                // An old replica left beside the new one (an earlier pass).
                pods.iter().filter(|p| !is_new(p)).for_each(|p| retire(p, ops));
            }
            None if pods.is_empty() => {
                // A new node (or a replica deleted by hand): start one.
                // Not sliced (`super::PASS_SLICE`): bound at creation,
                // outside the scheduler, it must exist before the scheduler
                // packs its node (a sliced run at 10,000 devices left 2,218
                // replicas out of full nodes' documents).
                let pod =
                    replica(daemon_set, &template, &hash, new_name(&node.metadata.name), Some(&node.metadata.name));
                ops.push(Op::Create(pod));
                if online {
                    unavailable += 1;
                }
            }
            None => {
                if online && !pods.iter().any(|p| available(p)) {
                    unavailable += 1;
                }
                if !on_delete {
                    to_replace.push((node, pods[0]));
                }
            }
        }
    }

    // Replace old replicas: unavailable ones first (they cost nothing),
    // canary nodes before the rest, offline nodes not at all.
    let canaries_done = eligible.iter().filter(|n| is_canary(n)).all(|n| {
        by_node.get(n.metadata.name.as_str()).is_some_and(|pods| pods.iter().any(|p| is_new(p) && available(p)))
    });
    to_replace.retain(|(node, _)| node.typed_status::<NodeStatus>().is_ready());
    to_replace.retain(|(node, _)| canaries_done || is_canary(node));
    to_replace.sort_by_key(|(node, pod)| (!is_canary(node), available(pod), node.metadata.name.clone()));
    for (node, old) in to_replace {
        let costs = available(old);
        if costs && unavailable >= max_unavailable {
            break;
        }
        retire(old, ops);
        let pod = replica(daemon_set, &template, &hash, new_name(&node.metadata.name), Some(&node.metadata.name));
        ops.push(Op::Create(pod));
        if costs {
            unavailable += 1;
        }
    }

    let live: Vec<&&ApiObject> = owned.iter().filter(|p| !p.is_retired()).collect();
    let status = DaemonSetStatus {
        observed_generation: daemon_set.metadata.generation,
        desired_number_scheduled: eligible.len() as u32,
        current_number_scheduled: live.len() as u32,
        number_ready: live.iter().filter(|p| p.typed_status::<PodStatus>().is_ready()).count() as u32,
        updated_number_scheduled: live.iter().filter(|p| is_new(p)).count() as u32,
        number_available: live.iter().filter(|p| available(p)).count() as u32,
    };
    status_op(daemon_set, &status, ops);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Kind, parse_str};
    use crate::status::{Condition, ConditionType};

    fn daemon_set(image: &str) -> ApiObject {
        let yaml = format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agentd\n  annotations: {{{CANARY_ANNOTATION}: role=canary}}\n\
             spec:\n  selector: {{matchLabels: {{app: agentd}}}}\n  template:\n    metadata: {{labels: {{app: agentd}}}}\n    \
             spec:\n      containers:\n      - {{name: main, image: {image}}}\n"
        );
        let mut object = ApiObject::from_manifest(&parse_str("ds.yaml", &yaml).unwrap().objects[0]);
        object.metadata.uid = "uid-ds".into();
        object
    }

    fn node(name: &str, canary: bool, ready: bool) -> ApiObject {
        let mut node = ApiObject::new(Kind::Node, "", name);
        if canary {
            node.metadata.labels.insert("role".into(), "canary".into());
        }
        let mut status = NodeStatus::default();
        status.conditions.push(Condition::new(ConditionType::Ready, ready, "", ""));
        node.set_status(&status);
        node
    }

    /// Runs one pass, applies its writes, then marks every live replica on
    /// a ready node ready and drops retired ones (their node stopped them).
    fn pass(ds: &ApiObject, pods: &mut Vec<ApiObject>, nodes: &[Arc<ApiObject>]) -> Vec<Op> {
        let owned: Vec<&ApiObject> = pods.iter().collect();
        let mut ops = Vec::new();
        reconcile(ds, &owned, nodes, SystemTime::now(), &mut ops);
        for op in &ops {
            match op {
                Op::Create(pod) => pods.push(pod.clone()),
                Op::UpdateStatus(pod) if pod.kind == Kind::Pod => {
                    *pods.iter_mut().find(|p| p.metadata.name == pod.metadata.name).unwrap() = pod.clone();
                }
                Op::Retire { key, .. } => {
                    pods.iter_mut().find(|p| p.metadata.name == key.name).unwrap().metadata.deletion_timestamp =
                        "2026-12-06T00:00:00Z".into()
                }
                _ => {}
            }
        }
        pods.retain(|p| !p.is_retired());
        for pod in pods.iter_mut() {
            let on = pod.node_name().unwrap_or_default().to_owned();
            let ready = nodes.iter().any(|n| n.metadata.name == on && n.status::<NodeStatus>().is_ready());
            let mut status: PodStatus = pod.status();
            status.conditions = vec![Condition::new(ConditionType::Ready, ready, "", "")];
            pod.set_status(&status);
        }
        ops
    }

    fn hashes_by_node(pods: &[ApiObject]) -> Vec<(String, String)> {
        let mut out: Vec<_> = pods
            .iter()
            .map(|p| (p.node_name().unwrap_or_default().to_owned(), p.metadata.labels[TEMPLATE_HASH_LABEL].clone()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn canaries_first_then_one_node_at_a_time_and_an_offline_node_waits() {
        let mut nodes: Vec<Arc<ApiObject>> =
            [node("a", false, true), node("b", false, true), node("c", true, true), node("d", false, false)]
                .map(Arc::new)
                .into();
        let v1 = daemon_set("agentd:1");
        let mut pods = Vec::new();
        pass(&v1, &mut pods, &nodes);
        assert_eq!(pods.len(), 4, "one replica per node, the offline one included");
        let old = hashes_by_node(&pods)[0].1.clone();
        let v2 = daemon_set("agentd:2");
        let new = template_hash(&v2.spec::<DaemonSetSpec>().unwrap().template);

        // First pass: only the canary node is replaced.
        pass(&v2, &mut pods, &nodes);
        let now = hashes_by_node(&pods);
        assert_eq!(now.iter().filter(|(_, h)| *h == new).map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["c"]);
        // Then one node at a time (maxUnavailable 1); d, offline, waits.
        pass(&v2, &mut pods, &nodes);
        let second: Vec<_> = hashes_by_node(&pods).into_iter().filter(|(_, h)| *h == new).collect();
        assert_eq!(second.len(), 2, "{second:?}");
        for _ in 0..5 {
            pass(&v2, &mut pods, &nodes);
        }
        let settled = hashes_by_node(&pods);
        assert_eq!(settled.iter().filter(|(_, h)| *h == new).count(), 3);
        assert_eq!(settled.iter().find(|(n, _)| n == "d").unwrap().1, old, "the offline node keeps its replica");
        // d comes back: it gets the current revision.
        nodes[3] = Arc::new(node("d", false, true));
        for _ in 0..3 {
            pass(&v2, &mut pods, &nodes);
        }
        assert!(hashes_by_node(&pods).iter().all(|(_, h)| *h == new), "{:?}", hashes_by_node(&pods));
    }
}
