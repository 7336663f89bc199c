//! Deployment rollouts: a template change becomes a new revision, and the
//! replicas move to it within `maxSurge` / `maxUnavailable`, counting a new
//! replica only once it has been ready for `minReadySeconds`. A revision
//! that crash-loops or makes no progress within `progressDeadlineSeconds`
//! is marked failed and the Deployment goes back to its last complete
//! revision by itself; the Deployment's spec is left as written, so
//! re-applying the same broken template does not start it again (a new
//! template, `rollout undo` or `rollout retry` does).
//!
//! Replaced replicas are *retired*, not deleted: they leave their node's
//! desired document and the inbox deletes them once the node reports them
//! stopped. Until then they count against `maxSurge`, so more than
//! `replicas + maxSurge` never run at once, as the agents report it.
//!
//! With `maxSurge: 0` a replacement is bound to the node of the replica it
//! replaces, in the same document: the agent pulls the new image while the
//! old replica still runs and only then swaps them, so a slow download
//! never widens the outage.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use crate::manifest::types::{DeploymentSpec, IntOrString, PodTemplate};
use crate::object::ApiObject;
use crate::status::{Condition, ConditionType, DeploymentStatus, PodStatus, Revision, condition, set_condition};
use crate::store::Op;

use super::workload::{TEMPLATE_HASH_LABEL, Template, ordinal, replica, status_op, template_hash};
use super::{Budget, Requeue};

/// Restarts of a new replica that count as a crash loop.
const CRASH_LOOP_RESTARTS: u32 = 3;
/// Kubernetes' defaults.
const DEFAULT_PROGRESS_DEADLINE_S: u64 = 600;
const DEFAULT_HISTORY_LIMIT: usize = 10;

/// Revision states.
pub const PROGRESSING: &str = "Progressing";
/// Every replica of the revision was available at once.
pub const COMPLETE: &str = "Complete";
/// The revision failed and was rolled back (or had nothing to go back to).
pub const FAILED: &str = "Failed";

/// How far replicas may stray from `replicas` during a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Replicas wanted.
    pub replicas: u32,
    /// Extra replicas allowed above `replicas`.
    pub surge: u32,
    /// Replicas allowed below `replicas` being available.
    pub unavailable: u32,
}

impl Bounds {
    /// From a Deployment's spec: RollingUpdate with Kubernetes' 25%/25%
    /// defaults (surge rounds up, unavailable down; both 0 means 1
    /// unavailable), or Recreate (everything old goes first).
    pub fn of(spec: &DeploymentSpec) -> Bounds {
        let replicas = spec.replicas.unwrap_or(1).max(0) as u32;
        let strategy = spec.strategy.clone().unwrap_or_default();
        if strategy.strategy_type.as_deref() == Some("Recreate") {
            return Bounds { replicas, surge: 0, unavailable: replicas };
        }
        let rolling = strategy.rolling_update.unwrap_or_default();
        let surge = resolve(rolling.max_surge.as_ref(), replicas, true);
        let mut unavailable = resolve(rolling.max_unavailable.as_ref(), replicas, false);
        if surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        Bounds { replicas, surge, unavailable }
    }
}

fn resolve(value: Option<&IntOrString>, replicas: u32, round_up: bool) -> u32 {
    match value {
        Some(IntOrString::Int(n)) => (*n).clamp(0, i64::from(u32::MAX)) as u32,
        Some(IntOrString::String(text)) => {
            let percent = text.trim_end_matches('%').parse::<u64>().unwrap_or(25);
            let scaled = u64::from(replicas) * percent;
            (if round_up { scaled.div_ceil(100) } else { scaled / 100 }) as u32
        }
        None => resolve(Some(&IntOrString::String("25%".into())), replicas, round_up),
    }
}

/// When `pod` became ready, if it is ready.
fn ready_since(status: &PodStatus) -> Option<SystemTime> {
    let ready = condition(&status.conditions, ConditionType::Ready).filter(|c| c.is_true())?;
    // A Ready condition without a time (written by an older controller)
    // counts as ready long ago.
    Some(humantime::parse_rfc3339_weak(&ready.last_transition_time).unwrap_or(SystemTime::UNIX_EPOCH))
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

fn format_time(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// When a Deployment's pass must run again with nothing changed: while a
/// revision rolls out (`minReadySeconds` and the progress deadline count
/// on the clock).
pub fn requeue(deployment: &ApiObject) -> Requeue {
    let rolling = deployment.typed_status::<DeploymentStatus>().history.iter().any(|r| r.state == PROGRESSING);
    if rolling { Requeue::CLOCK } else { Requeue::OnChange }
}

/// The writes that move `deployment`'s replicas (`owned`) one step along
/// its rollout, and its status.
pub fn reconcile(
    deployment: &ApiObject,
    owned: &[&ApiObject],
    now: SystemTime,
    budget: &mut Budget,
    ops: &mut Vec<Op>,
) {
    let Some(spec) = deployment.spec::<DeploymentSpec>() else { return };
    let bounds = Bounds::of(&spec);
    let min_ready = Duration::from_secs(spec.min_ready_seconds.unwrap_or(0).max(0) as u64);
    let deadline =
        Duration::from_secs(spec.progress_deadline_seconds.map_or(DEFAULT_PROGRESS_DEADLINE_S, |s| s.max(0) as u64));
    let old_status: DeploymentStatus = deployment.status();
    let mut status = old_status.clone();
    status.observed_generation = deployment.metadata.generation;

    // The spec's template is a revision; a new one starts a rollout.
    let spec_hash = template_hash(&spec.template);
    if !status.history.iter().any(|r| r.hash == spec_hash) {
        let revision = status.history.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
        status.history.push(Revision {
            revision,
            hash: spec_hash.clone(),
            state: PROGRESSING.into(),
            reason: String::new(),
            created_at: format_time(now),
            template: spec.template.clone(),
        });
        status.progress_at = format_time(now);
    }
    let mut target = target_revision(&status.history, &spec_hash);

    let available = |pod: &ApiObject| is_available(pod, min_ready, now);
    let is_retired = |pod: &&&ApiObject| pod.is_retired();
    let retiring = owned.iter().filter(is_retired).count() as u32;
    let live: Vec<&ApiObject> = owned.iter().filter(|p| !is_retired(p)).copied().collect();
    fn hash_of(pod: &ApiObject) -> &str {
        pod.metadata.labels.get(TEMPLATE_HASH_LABEL).map_or("", String::as_str)
    }

    // A target that fails is rolled back (or, with nothing to go back to,
    // marked failed and left to run).
    if target.state == PROGRESSING {
        let new: Vec<&ApiObject> = live.iter().filter(|p| hash_of(p) == target.hash).copied().collect();
        let progress_at = parse_time(&status.progress_at).unwrap_or(now);
        if let Some(reason) = failure(&new, bounds, available, progress_at, deadline, now) {
            let failed_revision = target.revision;
            if let Some(record) = status.history.iter_mut().find(|r| r.revision == failed_revision) {
                record.state = FAILED.into();
                record.reason = reason.clone();
            }
            let back = target_revision(&status.history, &spec_hash);
            let (why, message) = if back.revision != failed_revision {
                let message =
                    format!("revision {failed_revision} failed: {reason}; rolled back to revision {}", back.revision);
                tracing::warn!(deployment = %deployment.metadata.name, "{message}");
                ("RolledBack", message)
            } else {
                let message = format!(
                    "revision {failed_revision} failed: {reason}; no earlier complete revision to roll back to"
                );
                tracing::warn!(deployment = %deployment.metadata.name, "{message}");
                ("ProgressDeadlineExceeded", message)
            };
            ops.push(crate::events::warning(deployment, &format!("rollback-{failed_revision}"), why, &message, now));
            set_condition(&mut status.conditions, Condition::new(ConditionType::Progressing, false, why, message));
            status.progress_at = format_time(now);
            target = back;
        }
    }

    let new: Vec<&ApiObject> = live.iter().filter(|p| hash_of(p) == target.hash).copied().collect();
    let old: Vec<&ApiObject> = live.iter().filter(|p| hash_of(p) != target.hash).copied().collect();
    let template = &target.template;
    if !spec.paused {
        step(deployment, template, &target.hash, bounds, &new, &old, retiring, &available, budget, ops);
    }

    // Status, from what exists now (this pass's writes show next pass).
    let new_available = new.iter().filter(|p| available(p)).count() as u32;
    if new_available > old_status.updated_available_replicas || status.revision != target.revision {
        status.progress_at = format_time(now);
    }
    status.revision = target.revision;
    status.replicas = live.len() as u32;
    status.updated_replicas = new.len() as u32;
    status.ready_replicas = live.iter().filter(|p| p.typed_status::<PodStatus>().is_ready()).count() as u32;
    status.available_replicas = live.iter().filter(|p| available(p)).count() as u32;
    status.updated_available_replicas = new_available;
    let complete =
        new.len() as u32 == bounds.replicas && old.is_empty() && retiring == 0 && new_available == bounds.replicas;
    if complete && target.state == PROGRESSING {
        if let Some(record) = status.history.iter_mut().find(|r| r.revision == target.revision) {
            record.state = COMPLETE.into();
        }
        let message = format!("revision {} is available on all {} replicas", target.revision, bounds.replicas);
        set_condition(
            &mut status.conditions,
            Condition::new(ConditionType::Progressing, true, "NewReplicasAvailable", message),
        );
    } else if target.state == PROGRESSING && !spec.paused {
        let message = format!(
            "rolling out revision {}: {new_available} of {} updated replicas available",
            target.revision, bounds.replicas
        );
        set_condition(
            &mut status.conditions,
            Condition::new(ConditionType::Progressing, true, "ReplicasUpdating", message),
        );
    } else if spec.paused {
        set_condition(
            &mut status.conditions,
            Condition::new(ConditionType::Progressing, false, "DeploymentPaused", ""),
        );
    }
    let min_available = bounds.replicas.saturating_sub(bounds.unavailable);
    let enough = status.available_replicas >= min_available;
    let message = format!(
        "{} of {} replicas available (at least {min_available} wanted)",
        status.available_replicas, bounds.replicas
    );
    set_condition(
        &mut status.conditions,
        Condition::new(
            ConditionType::Available,
            enough,
            if enough { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
            message,
        ),
    );
    trim_history(&mut status.history, &spec_hash, target.revision, spec.revision_history_limit);
    status_op(deployment, &status, ops);
}

/// The revision to run: the spec's, unless it failed, then the newest
/// complete one (if any).
fn target_revision(history: &[Revision], spec_hash: &str) -> Revision {
    let spec_revision = history.iter().find(|r| r.hash == spec_hash).cloned().unwrap_or_default();
    if spec_revision.state != FAILED {
        return spec_revision;
    }
    history.iter().filter(|r| r.state == COMPLETE).max_by_key(|r| r.revision).cloned().unwrap_or(spec_revision)
}

/// Why the target revision counts as failed, if it does.
fn failure(
    new: &[&ApiObject],
    bounds: Bounds,
    available: impl Fn(&ApiObject) -> bool,
    progress_at: SystemTime,
    deadline: Duration,
    now: SystemTime,
) -> Option<String> {
    for pod in new {
        let status = pod.typed_status::<PodStatus>();
        if status.restart_count >= CRASH_LOOP_RESTARTS || status.reason == "CrashLoopBackOff" {
            return Some(format!("replica {} is crash-looping ({} restarts)", pod.metadata.name, status.restart_count));
        }
        if status.phase == crate::status::PodPhase::Failed {
            return Some(format!("replica {} failed ({})", pod.metadata.name, status.reason));
        }
    }
    let new_available = new.iter().filter(|p| available(p)).count() as u32;
    if new_available < bounds.replicas && now.duration_since(progress_at).unwrap_or_default() > deadline {
        let not_ready: Vec<&&ApiObject> = new.iter().filter(|p| !p.typed_status::<PodStatus>().is_ready()).collect();
        // The first stuck replica's own reason says most (unschedulable,
        // pulling, a failing probe).
        let example = not_ready.first().map_or(String::new(), |p| {
            let status: PodStatus = p.status();
            let why = [status.reason.as_str(), status.message.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            format!(" ({} {})", p.metadata.name, if why.is_empty() { "not ready" } else { why.as_str() })
        });
        return Some(format!(
            "no progress for {} s (progressDeadlineSeconds): {new_available} of {} new replicas available, {} not ready{example}",
            deadline.as_secs(),
            bounds.replicas,
            not_ready.len(),
        ));
    }
    None
}

/// One step: create new replicas within the surge, retire old ones within
/// the unavailability budget.
#[allow(clippy::too_many_arguments)]
fn step(
    deployment: &ApiObject,
    template: &PodTemplate,
    hash: &str,
    bounds: Bounds,
    new: &[&ApiObject],
    old: &[&ApiObject],
    retiring: u32,
    available: &dyn Fn(&ApiObject) -> bool,
    budget: &mut Budget,
    ops: &mut Vec<Op>,
) {
    let name = &deployment.metadata.name;
    let template = &Template::new(template);
    let taken: BTreeSet<u32> = new.iter().filter_map(|p| ordinal(&p.metadata.name)).collect();
    let mut free = (0..).filter(move |i| !taken.contains(i));
    let mut total = (new.len() + old.len()) as u32 + retiring;
    let mut new_count = new.len() as u32;
    let max_total = bounds.replicas + bounds.surge;

    // Too many of the new revision (scaled down): retire the highest.
    if new_count > bounds.replicas {
        let mut extra: Vec<&&ApiObject> = new.iter().collect();
        extra.sort_by_key(|p| (available(p), std::cmp::Reverse(ordinal(&p.metadata.name))));
        for pod in extra.into_iter().take((new_count - bounds.replicas) as usize) {
            retire(pod, ops);
        }
        new_count = bounds.replicas;
    }

    // Scale up the new revision within the surge.
    while new_count < bounds.replicas && total < max_total && budget.create() {
        let Some(ordinal) = free.next() else { break };
        ops.push(Op::Create(replica(deployment, template, hash, format!("{name}-{hash}-{ordinal}"), None)));
        new_count += 1;
        total += 1;
    }

    // Retire old replicas: unavailable ones freely (they serve nothing),
    // available ones while enough stay available.
    let min_available = bounds.replicas.saturating_sub(bounds.unavailable);
    let mut available_now =
        new.iter().filter(|p| available(p)).count() as u32 + old.iter().filter(|p| available(p)).count() as u32;
    let mut order: Vec<&&ApiObject> = old.iter().collect();
    order.sort_by_key(|p| (available(p), p.metadata.name.clone()));
    for pod in order {
        let counts = available(pod);
        if counts && available_now <= min_available {
            break;
        }
        retire(pod, ops);
        if counts {
            available_now -= 1;
        }
        // With no surge the replacement cannot wait for room: it takes the
        // retired replica's place on the same node, so the node pulls the
        // new image before it stops the old replica.
        if new_count < bounds.replicas && bounds.surge == 0 && budget.create() {
            let Some(ordinal) = free.next() else { continue };
            ops.push(Op::Create(replica(
                deployment,
                template,
                hash,
                format!("{name}-{hash}-{ordinal}"),
                pod.node_name(),
            )));
            new_count += 1;
        }
    }
}

/// Whether a replica has been ready for at least `min_ready` at `now`.
pub fn is_available(pod: &ApiObject, min_ready: Duration, now: SystemTime) -> bool {
    let status = pod.typed_status::<PodStatus>();
    if min_ready.is_zero() {
        // Ready at all is enough: no time to read.
        return status.is_ready();
    }
    ready_since(&status).is_some_and(|since| now.duration_since(since).unwrap_or_default() >= min_ready)
}

/// Marks a replica retired: it leaves its node's document now and is
/// deleted when the node reports it stopped. An unbound one has nothing
/// to stop and is deleted at once.
pub fn retire(pod: &ApiObject, ops: &mut Vec<Op>) {
    if pod.node_name().is_none() {
        ops.push(Op::Delete(pod.key(), Some(pod.resource_version())));
        return;
    }
    ops.push(Op::Retire { key: pod.key(), uid: pod.metadata.uid.clone() });
}

/// Keeps the target, the spec's revision and the newest `limit` others.
fn trim_history(history: &mut Vec<Revision>, spec_hash: &str, target: u64, limit: Option<i64>) {
    let limit = limit.map_or(DEFAULT_HISTORY_LIMIT, |l| l.max(0) as usize);
    history.sort_by_key(|r| r.revision);
    let mut others: Vec<u64> =
        history.iter().filter(|r| r.revision != target && r.hash != spec_hash).map(|r| r.revision).collect();
    others.reverse();
    let keep: BTreeSet<u64> = others.into_iter().take(limit).collect();
    history.retain(|r| r.revision == target || r.hash == spec_hash || keep.contains(&r.revision));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_str;
    use crate::status::DeploymentStatus;

    /// A tiny stand-in for the store and the agents: applies the planner's
    /// writes, binds new replicas to a node, makes them ready (or not), and
    /// deletes retired ones as a node reporting them stopped would.
    struct Sim {
        deployment: ApiObject,
        pods: Vec<ApiObject>,
        now: SystemTime,
        /// Whether replicas of a hash become ready.
        healthy: fn(&str) -> bool,
        /// Events written.
        events: Vec<ApiObject>,
        max_total: usize,
        min_available: usize,
    }

    fn manifest(image: &str, extra: &str) -> ApiObject {
        let yaml = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 4\n{extra}  \
             selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      \
             containers:\n      - {{name: web, image: {image}}}\n"
        );
        let parsed = parse_str("web.yaml", &yaml).unwrap();
        let mut object = ApiObject::from_manifest(&parsed.objects[0]);
        object.metadata.uid = "uid-web".into();
        object.metadata.generation = 1;
        object
    }

    impl Sim {
        fn new(deployment: ApiObject, healthy: fn(&str) -> bool) -> Sim {
            Sim {
                deployment,
                pods: Vec::new(),
                now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
                healthy,
                events: Vec::new(),
                max_total: 0,
                min_available: usize::MAX,
            }
        }

        fn status(&self) -> DeploymentStatus {
            self.deployment.status()
        }

        /// One planner pass, then one second of agents.
        fn pass(&mut self) {
            let owned: Vec<&ApiObject> = self.pods.iter().collect();
            let mut ops = Vec::new();
            reconcile(&self.deployment, &owned, self.now, &mut Budget::default(), &mut ops);
            for op in ops {
                match op {
                    Op::Create(pod) => self.pods.push(pod),
                    Op::UpdateStatus(object) if object.kind == crate::manifest::Kind::Deployment => {
                        self.deployment = object
                    }
                    Op::UpdateStatus(pod) => {
                        let slot = self.pods.iter_mut().find(|p| p.metadata.name == pod.metadata.name).unwrap();
                        *slot = pod;
                    }
                    Op::Delete(key, _) => self.pods.retain(|p| p.metadata.name != key.name),
                    Op::Retire { key, .. } => {
                        let slot = self.pods.iter_mut().find(|p| p.metadata.name == key.name).unwrap();
                        slot.metadata.deletion_timestamp = format_time(self.now);
                    }
                    Op::Apply(event) if event.kind == crate::manifest::Kind::Event => self.events.push(event),
                    Op::Apply(_) => panic!("rollouts do not rewrite objects"),
                }
            }
            self.now += Duration::from_secs(1);
            // Agents: retired replicas stop; the rest run, ready if healthy.
            let running = self.pods.len();
            self.max_total = self.max_total.max(running);
            self.pods.retain(|p| !p.is_retired());
            let healthy = self.healthy;
            let now = format_time(self.now);
            for pod in &mut self.pods {
                let mut status: PodStatus = pod.status();
                if pod.node_name().is_none() {
                    pod.set_node_name(Some("edge-1"));
                }
                let ready = healthy(&pod.metadata.labels[TEMPLATE_HASH_LABEL]);
                status.phase = crate::status::PodPhase::Running;
                let mut condition = Condition::new(ConditionType::Ready, ready, "", "");
                if crate::status::condition(&status.conditions, ConditionType::Ready)
                    .is_none_or(|c| c.status != condition.status)
                {
                    condition.last_transition_time = now.clone();
                    status.conditions.retain(|c| c.condition_type != ConditionType::Ready);
                    status.conditions.push(condition);
                }
                pod.set_status(&status);
            }
            let available = self.pods.iter().filter(|p| p.status::<PodStatus>().is_ready()).count();
            self.min_available = self.min_available.min(available);
        }

        fn hashes(&self) -> Vec<String> {
            let mut hashes: Vec<String> =
                self.pods.iter().map(|p| p.metadata.labels[TEMPLATE_HASH_LABEL].clone()).collect();
            hashes.sort();
            hashes
        }

        fn settle(&mut self, passes: usize) {
            for _ in 0..passes {
                self.pass();
            }
        }

        fn apply(&mut self, spec: ApiObject) {
            let old = std::mem::replace(&mut self.deployment, spec);
            self.deployment.metadata.generation = 2;
            if old.has_status() {
                self.deployment.copy_status_of(&old);
            }
            self.max_total = 0;
            self.min_available = usize::MAX;
        }
    }

    #[test]
    fn bounds_follow_kubernetes_rounding_and_defaults() {
        let spec = |extra: &str| manifest("web:1", extra).spec::<DeploymentSpec>().unwrap();
        assert_eq!(Bounds::of(&spec("")), Bounds { replicas: 4, surge: 1, unavailable: 1 });
        let rolling = "  strategy: {rollingUpdate: {maxSurge: 30%, maxUnavailable: 30%}}\n";
        assert_eq!(Bounds::of(&spec(rolling)), Bounds { replicas: 4, surge: 2, unavailable: 1 });
        let zeros = "  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}\n";
        assert_eq!(Bounds::of(&spec(zeros)), Bounds { replicas: 4, surge: 0, unavailable: 1 });
        let recreate = "  strategy: {type: Recreate}\n";
        assert_eq!(Bounds::of(&spec(recreate)), Bounds { replicas: 4, surge: 0, unavailable: 4 });
    }

    #[test]
    fn a_rollout_stays_within_surge_and_availability_and_completes() {
        let surge_only = "  minReadySeconds: 2\n  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}\n";
        let mut sim = Sim::new(manifest("web:1", surge_only), |_| true);
        sim.settle(10);
        let v1 = sim.status();
        assert_eq!((v1.revision, v1.available_replicas), (1, 4));
        assert_eq!(v1.history[0].state, COMPLETE);
        sim.apply(manifest("web:2", surge_only));
        sim.settle(40);
        let v2 = sim.status();
        assert_eq!(v2.revision, 2);
        assert_eq!(v2.history.iter().map(|r| r.state.as_str()).collect::<Vec<_>>(), [COMPLETE, COMPLETE]);
        assert_eq!(sim.hashes(), vec![v2.history[1].hash.clone(); 4]);
        assert!(sim.max_total <= 5, "more than replicas + maxSurge at once: {}", sim.max_total);
        assert_eq!(sim.min_available, 4, "maxUnavailable 0: never fewer than 4 ready");
    }

    #[test]
    fn a_pass_creates_no_more_than_its_share_and_the_next_pass_goes_on() {
        let deployment = manifest("web:1", "");
        let created = |ops: &[Op]| ops.iter().filter(|op| matches!(op, Op::Create(_))).count();
        let mut ops = Vec::new();
        let mut budget = Budget::new(3);
        reconcile(&deployment, &[], SystemTime::now(), &mut budget, &mut ops);
        assert_eq!(created(&ops), 3, "4 replicas wanted, room for 3");
        assert!(!budget.create(), "the share is used up");
        let made: Vec<ApiObject> =
            ops.into_iter().filter_map(|op| if let Op::Create(p) = op { Some(p) } else { None }).collect();
        let owned: Vec<&ApiObject> = made.iter().collect();
        let mut ops = Vec::new();
        reconcile(&deployment, &owned, SystemTime::now(), &mut Budget::default(), &mut ops);
        assert_eq!(created(&ops), 1, "the next pass creates the rest");
    }

    #[test]
    fn without_surge_a_replacement_takes_the_old_replicas_node_in_the_same_pass() {
        let no_surge = "  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 1}}\n";
        let mut sim = Sim::new(manifest("web:1", no_surge), |_| true);
        sim.settle(5);
        sim.apply(manifest("web:2", no_surge));
        let owned: Vec<&ApiObject> = sim.pods.iter().collect();
        let mut ops = Vec::new();
        reconcile(&sim.deployment, &owned, sim.now, &mut Budget::default(), &mut ops);
        let retired: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Retire { key, .. } => Some(key),
                _ => None,
            })
            .collect();
        let created: Vec<_> = ops.iter().filter_map(|op| if let Op::Create(p) = op { Some(p) } else { None }).collect();
        assert_eq!((retired.len(), created.len()), (1, 1), "one at a time");
        assert_eq!(created[0].node_name(), Some("edge-1"), "bound where the old one runs");
        sim.settle(30);
        assert!(sim.max_total <= 5 && sim.min_available >= 3, "{} {}", sim.max_total, sim.min_available);
        assert_eq!(sim.status().updated_available_replicas, 4);
    }

    #[test]
    fn a_revision_that_never_gets_ready_is_rolled_back_to_the_last_complete_one() {
        let rules = "  progressDeadlineSeconds: 10\n  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}\n";
        let v3 = manifest("web:3", rules);
        let bad_hash = template_hash(&v3.spec::<DeploymentSpec>().unwrap().template);
        thread_local!(static BAD: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
        BAD.with(|b| *b.borrow_mut() = bad_hash.clone());
        let mut sim = Sim::new(manifest("web:2", rules), |hash| BAD.with(|b| *b.borrow() != hash));
        sim.settle(10);
        let good = sim.status();
        sim.apply(v3);
        sim.settle(40);
        let status = sim.status();
        assert_eq!(status.revision, good.revision, "back on the good revision");
        assert_eq!(sim.hashes(), vec![good.history[0].hash.clone(); 4]);
        let failed = status.history.iter().find(|r| r.hash == bad_hash).unwrap();
        assert_eq!(failed.state, FAILED);
        assert!(failed.reason.contains("no progress for 10 s"), "{}", failed.reason);
        let progressing = crate::status::condition(&status.conditions, ConditionType::Progressing).unwrap();
        assert_eq!(progressing.reason, "RolledBack");
        assert!(progressing.message.contains("rolled back to revision 1"), "{}", progressing.message);
        let events: Vec<_> = sim.events.iter().map(crate::events::fields).collect();
        assert_eq!(events.len(), 1, "one event for one rollback");
        assert_eq!((events[0].reason.as_str(), events[0].event_type.as_str()), ("RolledBack", "Warning"));
        assert_eq!(events[0].message, progressing.message);
        assert_eq!(sim.min_available, 4, "the failed revision never cost availability");
        // The same broken template applied again does not start over.
        let before = sim.pods.iter().map(|p| p.metadata.name.clone()).collect::<Vec<_>>();
        sim.settle(5);
        assert_eq!(sim.pods.iter().map(|p| p.metadata.name.clone()).collect::<Vec<_>>(), before);
    }

    #[test]
    fn a_crash_looping_revision_is_rolled_back_before_its_deadline() {
        let rules = "  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}\n";
        let mut sim = Sim::new(manifest("web:1", rules), |_| true);
        sim.settle(5);
        sim.apply(manifest("web:2", rules));
        sim.pass();
        let v1_hash = sim.status().history[0].hash.clone();
        let new = sim.pods.iter_mut().find(|p| p.metadata.labels[TEMPLATE_HASH_LABEL] != v1_hash);
        let new = new.expect("a new replica was created");
        let mut status: PodStatus = new.status();
        status.restart_count = 3;
        status.reason = "CrashLoopBackOff".into();
        new.set_status(&status);
        let owned: Vec<&ApiObject> = sim.pods.iter().collect();
        let mut ops = Vec::new();
        reconcile(&sim.deployment, &owned, sim.now, &mut Budget::default(), &mut ops);
        let written = ops.iter().find_map(|op| match op {
            Op::UpdateStatus(d) if d.kind == crate::manifest::Kind::Deployment => Some(d.status::<DeploymentStatus>()),
            _ => None,
        });
        let written = written.unwrap();
        assert_eq!(written.revision, 1);
        assert!(written.history[1].reason.contains("crash-looping (3 restarts)"), "{:?}", written.history[1]);
    }
}
