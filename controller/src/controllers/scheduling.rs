//! Scheduling: pending, pinned replicas -> nodes, through the pure
//! scheduler crate, in one batch per pass; new replicas are packed (fewest
//! devices busy), those leaving a lost node are spread (fastest recovery). Replicas that wait (for a
//! ConfigMap or Secret they name, for their image's pin) or that no node
//! can take say why in their status.
//!
//! What the wire cannot carry (`crate::replica_spec`: a ConfigMap over a
//! document's room, more replicas than a document holds) is never bound;
//! a DaemonSet's replica, bound at creation, is checked with its node's
//! whole document, and whichever replica that document leaves out says so
//! (`InvalidReplica`, `TooManyReplicas`). The publisher makes the same
//! projection and writes nothing back.
//!
//! Writes a Pod's `spec.nodeName`, its `PodScheduled` condition and its
//! Pending reason and message, and nothing else.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use flotilla_scheduler::model as sched;

use crate::manifest::types::{NodeSpec, PodSpec};
use crate::manifest::{Kind, Quantity};
use crate::object::{ApiObject, ObjectKey};
use crate::status::{Condition, ConditionType, NodeStatus, PodPhase, PodStatus, condition, set_condition};
use crate::store::Op;

use crate::replica_spec::{self, References};

use super::claims::{self, Claims};
use super::node_lifecycle::{self, Evictions};
use super::{PASS_SLICE, Snapshot, image_pinning};

/// A node taint as the scheduler models it (`None`: an unknown effect).
pub fn taint(t: &crate::manifest::types::NodeTaint) -> Option<sched::Taint> {
    let effect = match t.effect.as_str() {
        "NoSchedule" => sched::TaintEffect::NoSchedule,
        "PreferNoSchedule" => sched::TaintEffect::PreferNoSchedule,
        "NoExecute" => sched::TaintEffect::NoExecute,
        _ => return None,
    };
    Some(sched::Taint::new(&t.key, &t.value, effect))
}

/// A toleration as the scheduler models it (`None`: an unknown effect).
pub fn toleration(t: &crate::manifest::types::Toleration) -> Option<sched::Toleration> {
    let operator = match t.operator.as_deref() {
        Some("Exists") => sched::TolerationOperator::Exists,
        _ => sched::TolerationOperator::Equal,
    };
    let effect = match t.effect.as_str() {
        "" => None,
        "NoSchedule" => Some(sched::TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(sched::TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(sched::TaintEffect::NoExecute),
        _ => return None,
    };
    Some(sched::Toleration {
        key: (!t.key.is_empty()).then(|| t.key.clone()),
        operator,
        value: (!t.value.is_empty()).then(|| t.value.clone()),
        effect,
    })
}

fn quantity(text: &str) -> Option<Quantity> {
    Quantity::parse(text).ok()
}

/// Requests of a pod: per resource, requests, or limits where no request is
/// given (Kubernetes' defaulting).
fn requests(spec: &PodSpec) -> sched::Resources {
    let mut total = sched::Resources::new(0, 0);
    for container in &spec.containers {
        let mut names: BTreeSet<&String> = container.resources.requests.keys().collect();
        names.extend(container.resources.limits.keys());
        for name in names {
            let text = container
                .resources
                .requests
                .get(name)
                .or_else(|| container.resources.limits.get(name))
                .map(|q| q.text());
            let Some(q) = text.as_deref().and_then(quantity) else { continue };
            match name.as_str() {
                "cpu" => total.cpu_millis += q.as_millis() as u64,
                "memory" => total.memory_bytes += q.as_units() as u64,
                "ephemeral-storage" => {}
                other => *total.extended.entry(other.to_owned()).or_default() += q.as_units() as u64,
            }
        }
    }
    total
}

fn scheduler_node(node: &ApiObject) -> sched::Node {
    let status = node.typed_status::<NodeStatus>();
    let spec = node.typed_spec::<NodeSpec>().map(|s| s.into_owned()).unwrap_or_default();
    let list = if status.allocatable.is_empty() { &status.capacity } else { &status.allocatable };
    let mut allocatable = sched::Resources::new(0, 0);
    let mut max_workloads = 0;
    let profile = status.node_info.profile();
    for (name, text) in list {
        let Some(q) = quantity(text) else { continue };
        match name.as_str() {
            "cpu" => allocatable.cpu_millis = q.as_millis() as u64,
            "memory" => allocatable.memory_bytes = q.as_units() as u64,
            // No more than one desired document holds, whatever the node
            // says it could run.
            "pods" => max_workloads = (q.as_units() as u32).min(profile.max_replicas() as u32),
            other => _ = allocatable.extended.insert(other.to_owned(), q.as_units() as u64),
        }
    }
    let mut out = sched::Node::new(&node.metadata.name, allocatable.clone(), max_workloads)
        .with_ready(status.is_ready() && !spec.unschedulable);
    out.capacity = allocatable;
    out.arch = status.node_info.architecture.clone();
    out.os = status.node_info.operating_system.clone();
    out.labels = node.metadata.labels.clone();
    // Every node answers to its own name, whatever labels a Node manifest
    // left it: claims pin replicas by it.
    out.labels.insert(claims::HOSTNAME_LABEL.to_owned(), node.metadata.name.clone());
    out.taints = spec.taints.iter().filter_map(taint).collect();
    out.compact_profile = profile == firmware_proto::Profile::Compact;
    out
}

fn scheduler_replica(pod: &ApiObject, spec: &PodSpec) -> sched::Replica {
    let workload = pod
        .metadata
        .owner_references
        .first()
        .map(|o| format!("{}/{}/{}", o.kind, pod.metadata.namespace, o.name))
        .unwrap_or_else(|| format!("Pod/{}/{}", pod.metadata.namespace, pod.metadata.name));
    let id = format!("{}/{}", pod.metadata.namespace, pod.metadata.name);
    let mut replica = sched::Replica::new(&id, &workload, requests(spec));
    replica.priority = spec.priority.unwrap_or(0);
    // Pinned before it is placed: a single-arch image runs only on nodes
    // of that arch.
    if let Some(archs) = pod.metadata.annotations.get(image_pinning::IMAGE_ARCHS_ANNOTATION)
        && !archs.is_empty()
        && !archs.contains(',')
    {
        replica.arch = Some(archs.clone());
    }
    replica.node_selector = spec.node_selector.clone();
    replica.tolerations = spec.tolerations.iter().filter_map(toleration).collect();
    if let Some(spread) = spec.topology_spread_constraints.first() {
        if spread.topology_key == claims::HOSTNAME_LABEL {
            replica.max_per_node = Some(spread.max_skew.max(1));
        } else {
            replica.topology_spread =
                Some(sched::TopologySpread { key: spread.topology_key.clone(), max_skew: spread.max_skew.max(1) });
        }
    }
    // Containers share the device's network: two replicas of a workload
    // that listen on a port cannot share a node.
    if spec.containers.iter().any(|c| !c.ports.is_empty()) {
        replica.max_per_node = Some(1);
    }
    replica
}

/// References a pod needs before it can run: `(kind, name, key, where)`.
fn missing_references(pod: &PodSpec, namespace: &str, snapshot: &Snapshot) -> Vec<String> {
    let mut missing = Vec::new();
    for r in replica_spec::references(pod).into_iter().filter(|r| !r.optional) {
        let (kind, list) = if r.secret { ("secret", &snapshot.secrets) } else { ("configmap", &snapshot.config_maps) };
        let name = r.name;
        match list.iter().find(|o| o.metadata.namespace == namespace && o.metadata.name == name) {
            None => missing.push(format!("{kind} {name:?} not found ({})", r.place)),
            Some(object) => {
                if let Some(key) = r.key
                    && !object.data_keys().iter().any(|k| k == key)
                {
                    missing.push(format!("{kind} {name:?} has no key {key:?} ({})", r.place));
                }
            }
        }
    }
    missing
}

/// Places pending replicas, and those leaving lost nodes (`evictions`), in
/// one batch, and records why others stay pending. `earlier` are this pass's
/// other writes: replicas they create are placed by the next pass (they do
/// not exist yet), those they delete are skipped.
///
/// The scheduler's model of the fleet (every node, every bound replica) is
/// built only when something is to be placed: an idle pass reads each
/// replica's binding and status and nothing more.
pub fn reconcile(snapshot: &Snapshot, earlier: &[Op], evictions: &Evictions<'_>) -> Vec<Op> {
    // Replicas this pass deletes or retires are left alone.
    let deleted: BTreeSet<ObjectKey> = earlier
        .iter()
        .filter_map(|op| match op {
            Op::Delete(key, _) | Op::Retire { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect();
    // Made only if a replica bound at creation still waits to start.
    // (Read as the publisher reads it, a status kept as JSON included.)
    let arch_of: std::cell::OnceCell<HashMap<&str, String>> = std::cell::OnceCell::new();
    let arch_of = || {
        arch_of.get_or_init(|| {
            snapshot
                .nodes
                .iter()
                .map(|n| (n.metadata.name.as_str(), n.typed_status::<NodeStatus>().node_info.architecture.clone()))
                .collect()
        })
    };
    let mut pending: Vec<Placing<'_>> = Vec::new();
    let mut moving: Vec<Placing<'_>> = Vec::new();
    let mut unpinned = Vec::new();
    let mut blocked: Vec<(&ApiObject, &str, String)> = Vec::new();
    let mut unbinds: Vec<(&ApiObject, &str, &str, String)> = Vec::new();
    let mut created_bound: Vec<(&ApiObject, &str)> = Vec::new();
    let claims = Claims::new(snapshot, evictions.lost.iter().copied());
    let mut moved = MovedReplicas::default();
    let now = snapshot.now.unwrap_or_else(std::time::SystemTime::now);
    // Claims bound this pass: by the first replica placed that mounts one.
    let mut binding: BTreeSet<ObjectKey> = BTreeSet::new();
    // A placed replica whose claim is not bound yet (bound at creation, or
    // its claim's write was split from its binding by a commit): the claim
    // is bound where the replica is.
    let mut claim_ops: Vec<Op> = Vec::new();
    for (claim, node) in claims.unbound_in_use(snapshot) {
        binding.insert(claim.key());
        claim_ops.push(Op::UpdateStatus(claims::bound_to(claim, node)));
    }
    // What may need placing or a word: pending replicas and those in an
    // unknown phase (the store's index by phase), and those leaving lost
    // nodes. The rest of the fleet, running, is read only if something is
    // placed.
    let candidates = evictions.pods.iter().copied().chain(
        [PodPhase::Pending, PodPhase::Unknown]
            .into_iter()
            .flat_map(|phase| snapshot.pods_in_phase(phase))
            .filter(|p| !evictions.moving.contains_key(&(p.metadata.namespace.as_str(), p.metadata.name.as_str()))),
    );
    for pod in candidates.filter(|p| deleted.is_empty() || !deleted.contains(&p.key())) {
        let status = pod.typed_status::<PodStatus>();
        if status.is_finished() {
            continue;
        }
        let leaving = evictions.moving.get(&(pod.metadata.namespace.as_str(), pod.metadata.name.as_str()));
        match (pod.node_name(), leaving) {
            (Some(node), None) => {
                // Bound at creation (a DaemonSet's, a replacement in place)
                // to a node its image turned out not to run on: it stays
                // off that node's document, and says why. (One that runs
                // was started by its node: nothing to check.)
                if status.phase == PodPhase::Pending && image_pinning::is_pinned(pod) && !pod.is_retired() {
                    let arch = arch_of().get(node).map_or("", String::as_str);
                    if !image_pinning::can_run_on(pod, arch) {
                        let archs = image_pinning::archs_of(pod).unwrap_or_default().join(",");
                        let message = format!("the image has no linux/{arch} variant for node {node} (has {archs})");
                        blocked.push((pod, "ArchMismatch", message));
                    } else if !condition(&status.conditions, ConditionType::PodScheduled).is_some_and(|c| c.is_true()) {
                        // Never placed, so never checked against the wire
                        // (and checked again while it says why it waits).
                        created_bound.push((pod, node));
                    }
                }
            }
            (_, leaving) => {
                let Some(spec) = pod.typed_spec::<PodSpec>() else { continue };
                let missing = missing_references(&spec, &pod.metadata.namespace, snapshot);
                let needs = claims.needs(&spec, &pod.metadata.namespace);
                // Placed only once its references exist, its claims' device
                // is there and the scheduler knows where its image runs:
                // never bound first and taken back.
                let waiting = if !missing.is_empty() {
                    Some(("MissingReference", missing.join("; ")))
                } else if let Err((reason, message)) = &needs {
                    Some((*reason, message.clone()))
                } else if !image_pinning::is_pinned(pod) {
                    let message = match pod.metadata.annotations.get(image_pinning::IMAGE_ERROR_ANNOTATION) {
                        Some(error) => error.clone(),
                        None => format!(
                            "waiting for image {:?} to be resolved",
                            spec.containers.first().map_or("", |c| c.image.as_str())
                        ),
                    };
                    Some(("ImageNotPinned", message))
                } else {
                    None
                };
                let needs = needs.unwrap_or_default();
                let replica = || {
                    let mut replica = scheduler_replica(pod, &spec);
                    Claims::constrain(&needs, &mut replica);
                    replica
                };
                // One replica at a time binds a claim: the others that
                // mount it follow it there in a later pass.
                if waiting.is_none() && needs.binds.iter().any(|c| binding.contains(&c.key())) {
                    continue;
                }
                let mut placing = |replica, leaving| {
                    binding.extend(needs.binds.iter().map(|c| c.key()));
                    Placing { pod, replica, leaving, pinned_by: needs.node.clone(), binds: needs.binds.clone() }
                };
                match (waiting, leaving) {
                    // Leaving a lost node for a wait: off the node first.
                    (Some((reason, message)), Some(why)) => {
                        moved.note(pod, why, format!("{} nowhere yet ({reason}: {message})", pod.metadata.name));
                        unbinds.push((pod, reason, why.as_str(), message))
                    }
                    (Some(("ImageNotPinned", message)), None) => unpinned.push((pod, replica(), message)),
                    (Some((reason, message)), None) => blocked.push((pod, reason, message)),
                    (None, Some(why)) => {
                        // Spread, not packed: a lost node's replicas go to
                        // the emptiest nodes that fit, so several devices
                        // start them at once (one device starts its
                        // containers one after another) and no one device
                        // takes them all.
                        let mut replica = replica();
                        replica.score_mode = sched::ScoreMode::Spread;
                        moving.push(placing(replica, Some(why.as_str())));
                    }
                    (None, None) => pending.push(placing(replica(), None)),
                }
            }
        }
    }
    let refs = References {
        config_maps: &snapshot.config_maps,
        secrets: &snapshot.secrets,
        node: None,
        claims: &snapshot.claims,
        sealing: crate::replica_spec::Sealing::Sizing,
    };
    let registry = snapshot.default_registry.as_str();
    // What no longer holds its node after this pass: deleted or retired by
    // it, or leaving a lost node (looked up only on the nodes left).
    let leaving_nodes: BTreeSet<&str> = evictions.pods.iter().filter_map(|p| p.node_name()).collect();
    let gone = |pod: &ApiObject| {
        (!deleted.is_empty() && deleted.contains(&pod.key()))
            || (pod.node_name().is_some_and(|n| leaving_nodes.contains(n))
                && evictions.moving.contains_key(&(pod.metadata.namespace.as_str(), pod.metadata.name.as_str())))
    };
    blocked.extend(left_out_of_documents(snapshot, &created_bound, arch_of(), registry, &gone));
    let mut ops = claim_ops;
    for (pod, reason, message) in blocked {
        pending_status(pod, reason, &message, &mut ops);
    }
    for (pod, reason, why, message) in unbinds {
        unbind(pod, reason, why, &message, &mut ops);
    }
    if pending.is_empty() && unpinned.is_empty() && moving.is_empty() {
        moved.record(now, &mut ops);
        return ops;
    }
    // A slice at a time (see `PASS_SLICE`), highest priority first; those
    // leaving lost nodes always.
    if pending.len() > PASS_SLICE {
        pending.sort_by_key(|p| std::cmp::Reverse(p.replica.priority));
        pending.truncate(PASS_SLICE);
    }
    // What the wire cannot carry is never bound (the publisher would leave
    // it out of the node's document).
    let mut placing: Vec<Placing<'_>> = Vec::with_capacity(moving.len() + pending.len());
    for mut candidate in moving.into_iter().chain(pending) {
        match replica_spec::check(candidate.pod, &refs, registry) {
            Ok((wire, table)) => {
                // Only nodes of the Linux profile take what the compact
                // one cannot hold.
                candidate.replica.exceeds_compact = replica_spec::compact::lower(&wire, &table).err();
                placing.push(candidate)
            }
            Err(why) => match candidate.leaving {
                Some(leaving) => {
                    let line = format!("{} nowhere ({}: {})", candidate.pod.metadata.name, why.reason, why.message);
                    moved.note(candidate.pod, leaving, line);
                    unbind(candidate.pod, why.reason, leaving, &why.message, &mut ops)
                }
                None => pending_status(candidate.pod, why.reason, &why.message, &mut ops),
            },
        }
    }
    if placing.is_empty() && unpinned.is_empty() {
        moved.record(now, &mut ops);
        return ops;
    }
    // Each node's model is kept with the stored node and shared with the
    // view, not copied.
    let mut nodes: Vec<Arc<sched::Node>> =
        snapshot.nodes.iter().map(|n| n.memo(|n| Arc::new(scheduler_node(n))).into_owned()).collect();
    // A claim reserves its size on its device: what a new one may take is
    // the free disk less the claims bound there; and a device's document
    // lists at most LINUX_MAX_CLAIMS claims.
    // (Only in a pass that binds claims: the models kept with the nodes do
    // not carry these, so a fleet without claims pays nothing for them.)
    if placing.iter().any(|p| !p.binds.is_empty()) {
        let bound = claims.bound_per_node();
        for (node, object) in nodes.iter_mut().zip(&snapshot.nodes) {
            let (count, bytes) = bound.get(node.id.as_str()).copied().unwrap_or_default();
            let free = object.typed_status::<NodeStatus>().usage.as_ref().map_or(0, |u| u.disk_free_bytes);
            let model = Arc::make_mut(node);
            let slots = (firmware_proto::pod::LINUX_MAX_CLAIMS as u64).saturating_sub(count);
            model.allocatable.extended.insert(claims::CLAIM_SLOTS.to_owned(), slots);
            model.allocatable.extended.insert(claims::LOCAL_STORAGE.to_owned(), free.saturating_sub(bytes));
        }
    }
    // Every replica that holds its node (not ended, not gone), read node by
    // node from the store's index: the node's id is shared, not made again
    // per replica.
    let mut bound = Vec::with_capacity(snapshot.pods.len());
    for node in &nodes {
        for pod in snapshot.pods_on(node.id.as_str()) {
            if pod.typed_status::<PodStatus>().is_finished() || gone(pod) {
                continue;
            }
            // What the scheduler reads of a bound replica: its id, workload
            // and requests (not its constraints), from the model kept with
            // the stored replica.
            let model = pod.memo(|pod| scheduler_replica(pod, &pod.typed_spec::<PodSpec>().unwrap_or_default()));
            bound.push(sched::BoundReplica { replica: model.occupying(), node: node.id.clone() });
        }
    }
    let mut view = sched::ClusterView { nodes, bound };
    let replicas: Vec<sched::Replica> = placing.iter().map(|p| p.replica.clone()).collect();
    let plan = flotilla_scheduler::schedule(&view, &replicas, 0);
    let by_id: BTreeMap<&str, &Placing<'_>> = placing.iter().map(|p| (p.replica.id.as_str(), p)).collect();
    for placement in &plan.placements {
        let Some(placing) = by_id.get(placement.replica.as_str()) else { continue };
        let pod = placing.pod;
        if let Some(why) = placing.leaving {
            moved.note(pod, why, format!("{} to {}", pod.metadata.name, placement.node));
        }
        let mut bound = pod.clone();
        bound.set_node_name(Some(placement.node.as_str()));
        let mut status: PodStatus = pod.status();
        if placing.leaving.is_some() {
            status = node_lifecycle::moved_status(&status, "", "");
        }
        status.phase = PodPhase::Pending;
        status.reason.clear();
        status.message.clear();
        set_condition(&mut status.conditions, Condition::new(ConditionType::PodScheduled, true, "Scheduled", ""));
        bound.set_status(&status);
        // Binding changes spec (nodeName) and status: two writes on one version.
        ops.push(Op::Apply(bound.clone()));
        let mut status_only = bound;
        status_only.metadata.resource_version.clear();
        ops.push(Op::UpdateStatus(status_only));
        // Its claims are bound where it landed, in the same commit.
        for claim in &placing.binds {
            ops.push(Op::UpdateStatus(claims::bound_to(claim, placement.node.as_str())));
        }
    }
    for unplaced in &plan.unplaced {
        let Some(placing) = by_id.get(unplaced.replica.as_str()) else { continue };
        let reason = match &placing.pinned_by {
            Some((node, claim)) => {
                format!(
                    "claim {claim:?} holds its data on device {node}, which cannot take it now: {}",
                    unplaced.reason
                )
            }
            None => unplaced.reason.to_string(),
        };
        match placing.leaving {
            Some(why) => {
                moved.note(placing.pod, why, format!("{} nowhere ({reason})", placing.pod.metadata.name));
                unbind(placing.pod, "Unschedulable", why, &reason, &mut ops)
            }
            None => pending_status(placing.pod, "Unschedulable", &reason, &mut ops),
        }
    }
    moved.record(now, &mut ops);
    if !unpinned.is_empty() {
        // Replicas still waiting for their image are not placed, but an
        // operator should hear first what no pin would mend: whether any
        // node could take them once the pinned ones above are placed.
        for placement in &plan.placements {
            if let Some(placing) = by_id.get(placement.replica.as_str()) {
                view.bound.push(sched::BoundReplica { replica: placing.replica.clone(), node: placement.node.clone() });
            }
        }
        let replicas: Vec<sched::Replica> = unpinned.iter().map(|(_, r, _)| r.clone()).collect();
        let trial = flotilla_scheduler::schedule(&view, &replicas, 0);
        let unplaceable: BTreeMap<&str, String> =
            trial.unplaced.iter().map(|u| (u.replica.as_str(), u.reason.to_string())).collect();
        for (pod, replica, waiting) in &unpinned {
            match unplaceable.get(replica.id.as_str()) {
                Some(reason) => pending_status(pod, "Unschedulable", reason, &mut ops),
                None => pending_status(pod, "ImageNotPinned", waiting, &mut ops),
            }
        }
    }
    ops
}

/// Replicas bound at creation (a DaemonSet's) that their node's document
/// would leave out, with why: one that does not project onto the wire,
/// and, on a node with more replicas than a document holds (DaemonSets do
/// not go through the scheduler's slot count) or with ConfigMaps and
/// Secrets that may not fit one document, whichever the document leaves
/// out. Only nodes with a replica bound at creation still pending are
/// projected, without the replicas this pass removes from them (`gone`).
fn left_out_of_documents<'s>(
    snapshot: &'s Snapshot,
    created_bound: &[(&'s ApiObject, &'s str)],
    arch_of: &HashMap<&str, String>,
    default_registry: &str,
    gone: &dyn Fn(&ApiObject) -> bool,
) -> Vec<(&'s ApiObject, &'static str, String)> {
    let mut out = Vec::new();
    let mut nodes: BTreeSet<&str> = BTreeSet::new();
    let unplaced = References {
        config_maps: &snapshot.config_maps,
        secrets: &snapshot.secrets,
        node: None,
        claims: &snapshot.claims,
        sealing: crate::replica_spec::Sealing::Sizing,
    };
    for &(pod, node) in created_bound {
        match replica_spec::check(pod, &unplaced, default_registry) {
            Ok(_) => {
                nodes.insert(node);
            }
            Err(why) => out.push((pod, why.reason, why.message)),
        }
    }
    for node in nodes {
        let arch = arch_of.get(node).map_or("", String::as_str);
        let object = snapshot.nodes.iter().find(|n| n.metadata.name == node).map(|n| &**n);
        let profile =
            object.map_or(firmware_proto::Profile::Linux, |n| n.typed_status::<NodeStatus>().node_info.profile());
        let listed: Vec<&ApiObject> =
            snapshot.pods_on(node).into_iter().filter(|p| replica_spec::listed(p, arch) && !gone(p)).collect();
        let crowded = listed.len() > profile.max_replicas();
        if !crowded
            && profile == firmware_proto::Profile::Linux
            && !listed
                .iter()
                .any(|p| p.typed_spec::<PodSpec>().is_some_and(|s| !replica_spec::references(&s).is_empty()))
        {
            continue;
        }
        let refs = References { node: object, ..unplaced };
        for (pod, why) in replica_spec::document(listed, &refs, default_registry, profile).left_out {
            if !out.iter().any(|(p, _, _)| std::ptr::eq(*p, pod)) {
                out.push((pod, why.reason, why.message));
            }
        }
    }
    out
}

/// A replica the scheduler is asked to place this pass.
/// Where the replicas leaving lost nodes went, per workload and node, for
/// one `ReplicasMoved` Warning on the workload each (not one per replica:
/// a site loss moves thousands).
#[derive(Default)]
struct MovedReplicas<'s> {
    /// Why they left, and a "pod to node" line each.
    by_workload: BTreeMap<WorkloadOnNode<'s>, (&'s str, Vec<String>)>,
}

/// The owner's kind, namespace and name, and the lost node.
type WorkloadOnNode<'s> = (Kind, &'s str, &'s str, &'s str);

/// Most replicas an event names; the rest are counted.
const MOVED_NAMED: usize = 20;

impl<'s> MovedReplicas<'s> {
    fn note(&mut self, pod: &'s ApiObject, why: &'s str, line: String) {
        let (kind, name) = match pod.metadata.owner_references.first() {
            Some(owner) => (owner.kind, owner.name.as_str()),
            None => (Kind::Pod, pod.metadata.name.as_str()),
        };
        let node = pod.node_name().unwrap_or_default();
        let entry = self.by_workload.entry((kind, &pod.metadata.namespace, name, node)).or_insert((why, Vec::new()));
        entry.1.push(line);
    }

    fn record(self, now: std::time::SystemTime, ops: &mut Vec<Op>) {
        for ((kind, namespace, name, node), (why, mut lines)) in self.by_workload {
            let more = lines.len().saturating_sub(MOVED_NAMED);
            lines.truncate(MOVED_NAMED);
            let mut message = format!("{why}: moved {}", lines.join(", "));
            if more > 0 {
                message.push_str(&format!(" and {more} more"));
            }
            let subject = ApiObject::new(kind, namespace, name);
            ops.push(crate::events::warning(&subject, &format!("moved-from-{node}"), "ReplicasMoved", &message, now));
        }
    }
}

struct Placing<'s> {
    pod: &'s ApiObject,
    replica: sched::Replica,
    /// Why it leaves its node, if it leaves a lost one.
    leaving: Option<&'s str>,
    /// The device its claims hold it to, and the claim that does.
    pinned_by: Option<(&'s str, String)>,
    /// Claims it binds where it is placed.
    binds: Vec<&'s ApiObject>,
}

/// Takes a replica leaving a lost node off it: `NodeLost`, and in its
/// `PodScheduled` condition why it waits (as a pending replica says it, so
/// the next pass has nothing to rewrite).
fn unbind(pod: &ApiObject, reason: &str, why: &str, message: &str, ops: &mut Vec<Op>) {
    let mut unbound = pod.clone();
    unbound.set_node_name(None);
    let mut status = node_lifecycle::moved_status(&pod.status(), "NodeLost", &format!("{why}; {message}"));
    set_condition(&mut status.conditions, Condition::new(ConditionType::PodScheduled, false, reason, message));
    unbound.set_status(&status);
    ops.push(Op::Apply(unbound.clone()));
    unbound.metadata.resource_version.clear();
    ops.push(Op::UpdateStatus(unbound));
}

fn pending_status(pod: &ApiObject, reason: &str, message: &str, ops: &mut Vec<Op>) {
    let status = pod.typed_status::<PodStatus>();
    let condition_now = Condition::new(ConditionType::PodScheduled, false, reason, message);
    if status.phase == crate::status::PodPhase::Pending
        && condition(&status.conditions, ConditionType::PodScheduled).is_some_and(|c| c.says(&condition_now))
    {
        return; // said already: nothing copied
    }
    let mut status = status.into_owned();
    status.phase = crate::status::PodPhase::Pending;
    status.reason = reason.to_owned();
    status.message = message.to_owned();
    set_condition(&mut status.conditions, condition_now);
    let mut updated = pod.clone();
    updated.set_status(&status);
    ops.push(Op::UpdateStatus(updated));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;

    #[test]
    fn a_node_offering_more_pods_than_a_document_holds_is_held_to_the_document() {
        let mut node = ApiObject::new(Kind::Node, "", "big");
        node.set_field("status", serde_json::json!({"capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"}}));
        assert_eq!(scheduler_node(&node).max_workloads, firmware_proto::LINUX_MAX_PODS as u32);
        node.set_field("status", serde_json::json!({"capacity": {"cpu": "1", "memory": "1Gi", "pods": "4"}}));
        assert_eq!(scheduler_node(&node).max_workloads, 4);
        // A compact-profile node: its document holds fewer.
        node.set_field(
            "status",
            serde_json::json!({"capacity": {"pods": "110"}, "nodeInfo": {"documentProfile": "compact"}}),
        );
        assert_eq!(scheduler_node(&node).max_workloads, firmware_proto::MAX_REPLICAS as u32);
        assert!(scheduler_node(&node).compact_profile);
    }
}
