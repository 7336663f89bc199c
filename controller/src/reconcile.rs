//! Level-triggered reconcilers: workloads -> replicas (Pods), pending
//! replicas -> nodes.
//!
//! Every pass reads the whole desired and observed state from the store
//! ([`Snapshot`]), computes the writes that move it one step closer
//! ([`plan`], a pure function) and commits them. A pass runs after every
//! change (debounced) and every 30 s regardless, so no correctness
//! depends on having seen a particular event.
//!
//! Replica names are stable: `<workload>-<template hash>-<ordinal>` for
//! Deployments and Jobs (`web-7f3a-2`) and `<daemonset>-<hash>-<node>` for
//! DaemonSets. A template change gives new names; Deployments replace
//! their replicas gradually ([`rollout`]), the others all at once.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::sync::Arc;
use std::time::Duration;

use flotilla_scheduler::model as sched;
use serde_json::Value;

use crate::controllers::image_pinning;
use crate::manifest::types::{JobSpec, NodeSpec, PodSpec, PodTemplate};
use crate::manifest::{Kind, Quantity};
use crate::object::{ApiObject, ObjectKey, OwnerReference};
use crate::status::{
    Condition, DaemonSetStatus, DeploymentStatus, JobStatus, NodeStatus, PodStatus, condition, set_condition,
};
use crate::store::{Op, Store};

/// Label carrying the template hash on derived replicas.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Everything a pass reads.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Deployments.
    pub deployments: Vec<Arc<ApiObject>>,
    /// DaemonSets.
    pub daemon_sets: Vec<Arc<ApiObject>>,
    /// Jobs.
    pub jobs: Vec<Arc<ApiObject>>,
    /// Pods (replicas).
    pub pods: Vec<Arc<ApiObject>>,
    /// Nodes.
    pub nodes: Vec<Arc<ApiObject>>,
    /// ConfigMaps.
    pub config_maps: Vec<Arc<ApiObject>>,
    /// Secrets.
    pub secrets: Vec<Arc<ApiObject>>,
    /// Services.
    pub services: Vec<Arc<ApiObject>>,
    /// Events.
    pub events: Vec<Arc<ApiObject>>,
    /// When it was read: rollouts time readiness and deadlines against it.
    pub now: Option<std::time::SystemTime>,
    /// The store's resourceVersion it shows.
    pub resource_version: u64,
}

impl Snapshot {
    /// Reads the store: every kind as of one resourceVersion, shared with
    /// the store (no object is copied).
    pub fn read(store: &dyn Store) -> Snapshot {
        let view = store.view();
        let list = |kind| view.list(kind, None).cloned().collect();
        Snapshot {
            deployments: list(Kind::Deployment),
            daemon_sets: list(Kind::DaemonSet),
            jobs: list(Kind::Job),
            pods: list(Kind::Pod),
            nodes: list(Kind::Node),
            config_maps: list(Kind::ConfigMap),
            secrets: list(Kind::Secret),
            services: list(Kind::Service),
            events: list(Kind::Event),
            now: Some(std::time::SystemTime::now()),
            resource_version: view.resource_version,
        }
    }
}

/// Runs passes until the task is aborted.
pub async fn run(store: Arc<dyn Store>) {
    let mut live = match store.subscribe(0) {
        Ok(subscription) => subscription.live,
        Err(e) => {
            tracing::error!(error = %e, "reconciler cannot watch the store");
            return;
        }
    };
    loop {
        let pass_store = store.clone();
        let mut resync = IDLE_RESYNC;
        let started = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || reconcile_pass(pass_store.as_ref())).await {
            Ok(Ok(pass)) => {
                if pass.writes > 0 {
                    tracing::debug!(writes = pass.writes, "reconcile pass");
                }
                if pass.waits_on_the_clock {
                    resync = Duration::from_secs(1);
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "reconcile pass failed; retrying"),
            Err(e) => tracing::error!(error = %e, "reconcile pass panicked; retrying"),
        }
        let took = started.elapsed();
        // Wait for a change or the periodic resync (every second while a
        // rollout or deadline waits on the clock rather than on events),
        // then let a burst settle: at least as long as the pass took, so a
        // large fleet's stream of status writes is taken in a few large
        // passes rather than one pass per write.
        let _ = tokio::time::timeout(resync, async {
            loop {
                match live.recv().await {
                    Ok(event) if event.object.kind == Kind::Event => continue,
                    _ => return,
                }
            }
        })
        .await;
        tokio::time::sleep(took.clamp(Duration::from_millis(20), Duration::from_secs(1))).await;
        while live.try_recv().is_ok() {}
    }
}

/// How often a pass runs with no change to trigger it (level triggering:
/// nothing depends on having seen a particular event).
const IDLE_RESYNC: Duration = Duration::from_secs(30);

/// One pass: read, plan, write. Returns the number of writes.
pub fn reconcile_once(store: &dyn Store) -> Result<usize, crate::store::StoreError> {
    reconcile_pass(store).map(|pass| pass.writes)
}

/// What a pass did.
struct Pass {
    writes: usize,
    /// A later pass may have work that no store change will announce.
    waits_on_the_clock: bool,
}

fn reconcile_pass(store: &dyn Store) -> Result<Pass, crate::store::StoreError> {
    let snapshot = Snapshot::read(store);
    let ops = plan(&snapshot);
    let pass = Pass { writes: ops.len(), waits_on_the_clock: waits_on_the_clock(&snapshot) };
    if ops.is_empty() {
        return Ok(pass);
    }
    crate::store::commit_in_chunks(store, ops, "reconcile");
    Ok(pass)
}

/// Whether a later pass may have work with no store change to trigger it:
/// a rollout counting `minReadySeconds` or its progress deadline, a
/// DaemonSet waiting for replicas to become available, a Job with an
/// active deadline.
fn waits_on_the_clock(snapshot: &Snapshot) -> bool {
    snapshot
        .deployments
        .iter()
        .any(|d| d.status::<DeploymentStatus>().history.iter().any(|r| r.state == rollout::PROGRESSING))
        || snapshot.daemon_sets.iter().any(|d| {
            let status: DaemonSetStatus = d.status();
            status.number_available < status.desired_number_scheduled
        })
        || snapshot.jobs.iter().any(|j| {
            j.spec::<JobSpec>().is_some_and(|s| s.active_deadline_seconds.is_some())
                && j.status::<JobStatus>().active > 0
        })
}

/// The writes that move the snapshot one step towards the desired state.
pub fn plan(snapshot: &Snapshot) -> Vec<Op> {
    let mut ops = Vec::new();
    let owners: std::collections::HashSet<(Kind, &str, &str, &str)> = [
        (Kind::Deployment, &snapshot.deployments),
        (Kind::DaemonSet, &snapshot.daemon_sets),
        (Kind::Job, &snapshot.jobs),
    ]
    .into_iter()
    .flat_map(|(kind, list)| {
        list.iter()
            .map(move |o| (kind, o.metadata.namespace.as_str(), o.metadata.name.as_str(), o.metadata.uid.as_str()))
    })
    .collect();
    // Garbage collection: replicas whose owner is gone.
    for pod in &snapshot.pods {
        if let Some(owner) = pod.metadata.owner_references.first()
            && !owners.contains(&(owner.kind, pod.metadata.namespace.as_str(), owner.name.as_str(), owner.uid.as_str()))
        {
            ops.push(Op::Delete(pod.key(), Some(pod.resource_version())));
        }
    }
    let now = snapshot.now.unwrap_or_else(std::time::SystemTime::now);
    crate::events::collect_garbage(&snapshot.events, now, &mut ops);
    for deployment in &snapshot.deployments {
        rollout::reconcile(deployment, &owned_by(deployment, &snapshot.pods), now, &mut ops);
    }
    for daemon_set in &snapshot.daemon_sets {
        daemon_rollout::reconcile(daemon_set, &owned_by(daemon_set, &snapshot.pods), &snapshot.nodes, now, &mut ops);
    }
    for job in &snapshot.jobs {
        reconcile_job(job, &snapshot.pods, now, &mut ops);
    }
    let scheduling = schedule_pending(snapshot, &ops);
    ops.extend(scheduling);
    ops
}

/// A short, stable hash of a pod template (FNV-1a, 16 bits as 4 hex digits).
pub fn template_hash(template: &PodTemplate) -> String {
    let json = serde_json::to_string(template).unwrap_or_default();
    let mut hasher = Fnv1a::default();
    hasher.write(json.as_bytes());
    let h = hasher.finish();
    format!("{:04x}", (h ^ (h >> 16) ^ (h >> 32) ^ (h >> 48)) & 0xffff)
}

struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn owned_by<'a>(owner: &ApiObject, pods: &'a [Arc<ApiObject>]) -> Vec<&'a ApiObject> {
    pods.iter()
        .filter(|p| {
            p.metadata.namespace == owner.metadata.namespace
                && p.metadata.owner_references.first().is_some_and(|r| r.uid == owner.metadata.uid)
        })
        .map(|p| &**p)
        .collect()
}

/// A replica of `owner` from its template.
fn replica(owner: &ApiObject, template: &PodTemplate, hash: &str, name: String, node: Option<&str>) -> ApiObject {
    let mut pod = ApiObject::new(Kind::Pod, &owner.metadata.namespace, &name);
    pod.metadata.labels = template.metadata.labels.clone();
    pod.metadata.labels.insert(TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    pod.metadata.annotations = template.metadata.annotations.clone();
    pod.metadata.owner_references =
        vec![OwnerReference { kind: owner.kind, name: owner.metadata.name.clone(), uid: owner.metadata.uid.clone() }];
    let mut spec = serde_json::to_value(&template.spec).unwrap_or(Value::Null);
    if let (Some(node), Value::Object(map)) = (node, &mut spec) {
        map.insert("nodeName".to_owned(), Value::String(node.to_owned()));
    }
    pod.content.insert("spec".to_owned(), spec);
    pod.set_status(&PodStatus { phase: "Pending".to_owned(), ..PodStatus::default() });
    pod
}

fn ordinal(name: &str) -> Option<u32> {
    name.rsplit('-').next().and_then(|s| s.parse().ok())
}

fn status_op<T: serde::Serialize + PartialEq + serde::de::DeserializeOwned + Default>(
    object: &ApiObject,
    status: &T,
    ops: &mut Vec<Op>,
) {
    if object.status::<T>() != *status || !object.content.contains_key("status") {
        let mut updated = object.clone();
        updated.set_status(status);
        ops.push(Op::UpdateStatus(updated));
    }
}

/// Whether a node is eligible for a DaemonSet's replica: selector matches,
/// taints tolerated.
fn daemon_eligible(node: &ApiObject, pod: &PodSpec) -> bool {
    let selector_ok = pod.node_selector.iter().all(|(k, v)| node.metadata.labels.get(k) == Some(v));
    let no_taints = Vec::new();
    let spec = node.typed_spec::<NodeSpec>();
    let taints = spec.as_ref().map_or(&no_taints, |s| &s.taints);
    let tolerations: Vec<sched::Toleration> = pod.tolerations.iter().filter_map(toleration).collect();
    let tolerated = taints
        .iter()
        .filter(|t| t.effect != "PreferNoSchedule")
        .filter_map(taint)
        .all(|t| tolerations.iter().any(|tol| tol.tolerates(&t)));
    selector_ok && tolerated
}

fn reconcile_job(job: &ApiObject, pods: &[Arc<ApiObject>], now: std::time::SystemTime, ops: &mut Vec<Op>) {
    let Some(spec) = job.spec::<JobSpec>() else { return };
    let hash = template_hash(&spec.template);
    let completions = spec.completions.unwrap_or(1).max(0) as u32;
    let parallelism = spec.parallelism.unwrap_or(1).max(0) as u32;
    let backoff_limit = spec.backoff_limit.unwrap_or(6).max(0) as u32;
    let owned = owned_by(job, pods);
    let phase = |p: &&&ApiObject| p.typed_status::<PodStatus>().phase.clone();
    let succeeded = owned.iter().filter(|p| phase(p) == "Succeeded").count() as u32;
    let failed = owned.iter().filter(|p| phase(p) == "Failed").count() as u32;
    let active: Vec<_> = owned.iter().filter(|p| !p.typed_status::<PodStatus>().is_finished()).collect();
    let previous: JobStatus = job.status();
    let start_time = if previous.start_time.is_empty() {
        humantime::format_rfc3339_seconds(now).to_string()
    } else {
        previous.start_time.clone()
    };
    let running_for = humantime::parse_rfc3339_weak(&start_time)
        .ok()
        .and_then(|start| now.duration_since(start).ok())
        .unwrap_or_default();
    let deadline = spec.active_deadline_seconds.map(|s| Duration::from_secs(s.max(0) as u64));
    let already_failed = condition(&previous.conditions, "Failed").is_some_and(|c| c.is_true());
    let mut status = JobStatus {
        observed_generation: job.metadata.generation,
        active: active.len() as u32,
        succeeded,
        failed,
        start_time,
        conditions: previous.conditions,
    };
    if succeeded >= completions {
        set_condition(&mut status.conditions, Condition::new("Complete", true, "Completed", ""));
    } else if already_failed {
        // Failed is final: what still runs is stopped, nothing new starts.
        for pod in &active {
            ops.push(Op::Delete(pod.key(), Some(pod.resource_version())));
        }
        status.active = 0;
    } else if let Some(deadline) = deadline.filter(|d| running_for > *d) {
        let message = format!("active for more than activeDeadlineSeconds ({} s)", deadline.as_secs());
        set_condition(&mut status.conditions, Condition::new("Failed", true, "DeadlineExceeded", message));
        for pod in &active {
            ops.push(Op::Delete(pod.key(), Some(pod.resource_version())));
        }
        status.active = 0;
    } else if failed > backoff_limit {
        let message = format!("{failed} replicas failed; backoffLimit is {backoff_limit}");
        set_condition(&mut status.conditions, Condition::new("Failed", true, "BackoffLimitExceeded", message));
        for pod in &active {
            ops.push(Op::Delete(pod.key(), Some(pod.resource_version())));
        }
        status.active = 0;
    } else {
        let mut next = owned.iter().filter_map(|p| ordinal(&p.metadata.name)).max().map_or(0, |m| m + 1);
        let mut running = active.len() as u32;
        while running < parallelism && succeeded + running < completions {
            let name = format!("{}-{hash}-{next}", job.metadata.name);
            ops.push(Op::Create(replica(job, &spec.template, &hash, name, None)));
            next += 1;
            running += 1;
        }
        status.active = running;
    }
    status_op(job, &status, ops);
}

fn taint(t: &crate::manifest::types::NodeTaint) -> Option<sched::Taint> {
    let effect = match t.effect.as_str() {
        "NoSchedule" => sched::TaintEffect::NoSchedule,
        "PreferNoSchedule" => sched::TaintEffect::PreferNoSchedule,
        "NoExecute" => sched::TaintEffect::NoExecute,
        _ => return None,
    };
    Some(sched::Taint::new(&t.key, &t.value, effect))
}

fn toleration(t: &crate::manifest::types::Toleration) -> Option<sched::Toleration> {
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
    let status: NodeStatus = node.status();
    let spec = node.spec::<NodeSpec>().unwrap_or_default();
    let list = if status.allocatable.is_empty() { &status.capacity } else { &status.allocatable };
    let mut allocatable = sched::Resources::new(0, 0);
    let mut max_workloads = 0;
    for (name, text) in list {
        let Some(q) = quantity(text) else { continue };
        match name.as_str() {
            "cpu" => allocatable.cpu_millis = q.as_millis() as u64,
            "memory" => allocatable.memory_bytes = q.as_units() as u64,
            "pods" => max_workloads = q.as_units() as u32,
            other => _ = allocatable.extended.insert(other.to_owned(), q.as_units() as u64),
        }
    }
    let mut out = sched::Node::new(&node.metadata.name, allocatable.clone(), max_workloads)
        .with_ready(status.is_ready() && !spec.unschedulable);
    out.capacity = allocatable;
    out.arch = status.node_info.architecture.clone();
    out.os = status.node_info.operating_system.clone();
    out.labels = node.metadata.labels.clone();
    out.taints = spec.taints.iter().filter_map(taint).collect();
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
        if spread.topology_key == "kubernetes.io/hostname" {
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

fn node_name(pod: &ApiObject) -> Option<String> {
    pod.content.get("spec")?.get("nodeName")?.as_str().map(str::to_owned)
}

/// References a pod needs before it can run: `(kind, name, key, where)`.
fn missing_references(pod: &PodSpec, namespace: &str, snapshot: &Snapshot) -> Vec<String> {
    let find = |list: &[Arc<ApiObject>], name: &str| {
        list.iter().find(|o| o.metadata.namespace == namespace && o.metadata.name == name).cloned()
    };
    let mut missing = Vec::new();
    let mut check = |kind: &str, name: &str, key: Option<&str>, optional: bool, place: String| {
        if optional {
            return;
        }
        let list = if kind == "configmap" { &snapshot.config_maps } else { &snapshot.secrets };
        match find(list, name) {
            None => missing.push(format!("{kind} {name:?} not found ({place})")),
            Some(object) => {
                if let Some(key) = key
                    && !object.data_keys().iter().any(|k| k == key)
                {
                    missing.push(format!("{kind} {name:?} has no key {key:?} ({place})"));
                }
            }
        }
    };
    for container in &pod.containers {
        for env in &container.env {
            if let Some(source) = &env.value_from {
                if let Some(r) = &source.config_map_key_ref {
                    check("configmap", &r.name, Some(&r.key), r.optional, format!("env {}", env.name));
                }
                if let Some(r) = &source.secret_key_ref {
                    check("secret", &r.name, Some(&r.key), r.optional, format!("env {}", env.name));
                }
            }
        }
        for from in &container.env_from {
            if let Some(r) = &from.config_map_ref {
                check("configmap", &r.name, None, r.optional, "envFrom".to_owned());
            }
            if let Some(r) = &from.secret_ref {
                check("secret", &r.name, None, r.optional, "envFrom".to_owned());
            }
        }
    }
    for volume in &pod.volumes {
        if let Some(r) = &volume.config_map {
            check("configmap", &r.name, None, r.optional, format!("volume {}", volume.name));
        }
        if let Some(r) = &volume.secret {
            check("secret", &r.secret_name, None, r.optional, format!("volume {}", volume.name));
        }
    }
    missing
}

/// Places pending replicas in one batch and records why others stay pending.
/// `earlier` are this pass's other writes: replicas they create are placed by
/// the next pass (they do not exist yet), those they delete are skipped.
fn schedule_pending(snapshot: &Snapshot, earlier: &[Op]) -> Vec<Op> {
    // Replicas this pass deletes or retires are left alone.
    let deleted: BTreeSet<ObjectKey> = earlier
        .iter()
        .filter_map(|op| match op {
            Op::Delete(key, _) | Op::Retire { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect();
    let nodes: Vec<sched::Node> = snapshot.nodes.iter().map(|n| scheduler_node(n)).collect();
    let arch_of: std::collections::HashMap<&str, &str> =
        nodes.iter().map(|n| (n.id.as_str(), n.arch.as_str())).collect();
    let mut bound = Vec::new();
    let mut pending = Vec::new();
    let mut unpinned = Vec::new();
    let mut blocked: Vec<(&ApiObject, &str, String)> = Vec::new();
    for pod in snapshot.pods.iter().filter(|p| deleted.is_empty() || !deleted.contains(&p.key())) {
        if pod.typed_status::<PodStatus>().is_finished() {
            continue;
        }
        let Some(spec) = pod.typed_spec::<PodSpec>() else { continue };
        match node_name(pod) {
            Some(node) => {
                // Bound at creation (a DaemonSet's, a replacement in place)
                // to a node its image turned out not to run on: it stays
                // off that node's document, and says why.
                let arch = arch_of.get(node.as_str()).copied().unwrap_or("");
                if image_pinning::is_pinned(pod) && !image_pinning::can_run_on(pod, arch) && !pod.is_retired() {
                    let archs = image_pinning::archs_of(pod).unwrap_or_default().join(",");
                    let message = format!("the image has no linux/{arch} variant for node {node} (has {archs})");
                    blocked.push((pod, "ArchMismatch", message));
                }
                bound.push(sched::BoundReplica { replica: scheduler_replica(pod, &spec), node: node.into() })
            }
            None => {
                let missing = missing_references(&spec, &pod.metadata.namespace, snapshot);
                if !missing.is_empty() {
                    blocked.push((pod, "MissingReference", missing.join("; ")));
                } else if !image_pinning::is_pinned(pod) {
                    // Placed only once the scheduler knows where its image
                    // runs: never bound first and taken back.
                    let message = match pod.metadata.annotations.get(image_pinning::IMAGE_ERROR_ANNOTATION) {
                        Some(error) => error.clone(),
                        None => format!(
                            "waiting for image {:?} to be resolved",
                            spec.containers.first().map_or("", |c| c.image.as_str())
                        ),
                    };
                    unpinned.push((pod, scheduler_replica(pod, &spec), message));
                } else {
                    pending.push((pod, scheduler_replica(pod, &spec)));
                }
            }
        }
    }
    let mut ops = Vec::new();
    for (pod, reason, message) in blocked {
        pending_status(pod, reason, &message, &mut ops);
    }
    if pending.is_empty() && unpinned.is_empty() {
        return ops;
    }
    let mut view = sched::ClusterView { nodes, bound };
    let replicas: Vec<sched::Replica> = pending.iter().map(|(_, r)| r.clone()).collect();
    let plan = flotilla_scheduler::schedule(&view, &replicas, 0);
    let by_id: BTreeMap<&str, &ApiObject> = pending.iter().map(|(p, r)| (r.id.as_str(), &***p)).collect();
    for placement in &plan.placements {
        let Some(pod) = by_id.get(placement.replica.as_str()) else { continue };
        let mut bound = (*pod).clone();
        if let Some(Value::Object(spec)) = bound.content.get_mut("spec") {
            spec.insert("nodeName".to_owned(), Value::String(placement.node.as_str().to_owned()));
        }
        let mut status: PodStatus = pod.status();
        status.phase = "Pending".to_owned();
        status.reason.clear();
        status.message.clear();
        set_condition(&mut status.conditions, Condition::new("PodScheduled", true, "Scheduled", ""));
        bound.set_status(&status);
        // Binding changes spec (nodeName) and status: two writes on one version.
        ops.push(Op::Apply(bound.clone()));
        let mut status_only = bound;
        status_only.metadata.resource_version.clear();
        ops.push(Op::UpdateStatus(status_only));
    }
    for unplaced in &plan.unplaced {
        let Some(pod) = by_id.get(unplaced.replica.as_str()) else { continue };
        pending_status(pod, "Unschedulable", &unplaced.reason.to_string(), &mut ops);
    }
    if !unpinned.is_empty() {
        // Replicas still waiting for their image are not placed, but an
        // operator should hear first what no pin would mend: whether any
        // node could take them once the pinned ones above are placed.
        let replica_of: BTreeMap<&str, &sched::Replica> = pending.iter().map(|(_, r)| (r.id.as_str(), r)).collect();
        for placement in &plan.placements {
            if let Some(replica) = replica_of.get(placement.replica.as_str()) {
                view.bound.push(sched::BoundReplica { replica: (*replica).clone(), node: placement.node.clone() });
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

fn pending_status(pod: &ApiObject, reason: &str, message: &str, ops: &mut Vec<Op>) {
    let mut status: PodStatus = pod.status();
    let condition_now = Condition::new("PodScheduled", false, reason, message);
    if status.phase == "Pending"
        && condition(&status.conditions, "PodScheduled").is_some_and(|c| c.says(&condition_now))
    {
        return;
    }
    status.phase = "Pending".to_owned();
    status.reason = reason.to_owned();
    status.message = message.to_owned();
    set_condition(&mut status.conditions, condition_now);
    let mut updated = pod.clone();
    updated.set_status(&status);
    ops.push(Op::UpdateStatus(updated));
}

pub mod daemon_rollout;
pub mod rollout;

#[cfg(test)]
mod tests;
