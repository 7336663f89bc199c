//! StatefulSets: replicas with stable names, `<name>-0` to `<name>-(n-1)`,
//! each with claims of its own made from `volumeClaimTemplates`
//! (`<template>-<name>-<ordinal>`), kept when the replica is replaced, so
//! it comes back with its data on the device that holds it (see
//! [`super::claims`]).
//!
//! - `OrderedReady` (the default): replica `i` is made once replicas
//!   `0..i` run and are ready; scaling down removes the highest ordinal
//!   first, one at a time. `Parallel`: all at once.
//! - `RollingUpdate` (the default): once every replica is available, the
//!   highest ordinal not on the current template (and not below
//!   `partition`) is retired; its replacement, of the same name, is made
//!   when it has stopped. `OnDelete`: a replica is replaced once it is
//!   deleted by hand.
//! - Claims are kept when replicas go (`Retain`); with
//!   `persistentVolumeClaimRetentionPolicy.whenScaled: Delete` the claims
//!   of ordinals scaled away are deleted, and with `whenDeleted: Delete`
//!   the claims carry the StatefulSet as their owner and go with it.
//!
//! A replica missing below `partition` is made from the current template:
//! earlier templates are not kept.
//!
//! Writes: its replicas (create, retire), its claims (create; delete when
//! the retention policy says so), its `status`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::manifest::Kind;
use crate::manifest::types::{ClaimTemplate, StatefulSetSpec};
use crate::object::{ApiObject, StoredPodSpec};
use crate::status::{PodStatus, StatefulSetStatus};
use crate::store::Op;

use super::Requeue;
use super::deployment::{is_available, retire};
use super::workload::{self, TEMPLATE_HASH_LABEL, Template, status_op, template_hash};

/// The label naming a StatefulSet replica (Kubernetes').
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

/// The label on the claims a StatefulSet made: only those are deleted by
/// its retention policy, never a claim that merely has a similar name.
pub const CLAIM_OF_LABEL: &str = "flotilla.io/stateful-set";

/// When a StatefulSet's pass must run again with nothing changed: while a
/// ready replica waits out `minReadySeconds`.
pub fn requeue(set: &ApiObject) -> Requeue {
    let status = set.typed_status::<StatefulSetStatus>();
    let min_ready = set.spec_ref::<StatefulSetSpec>().and_then(|s| s.min_ready_seconds).unwrap_or(0);
    if min_ready > 0 && status.available_replicas < status.ready_replicas { Requeue::CLOCK } else { Requeue::OnChange }
}

/// The ordinal of a replica of `set` named `<set>-<ordinal>`.
fn ordinal_of(set: &str, pod: &ApiObject) -> Option<u32> {
    let ordinal = pod.metadata.name.strip_prefix(set)?.strip_prefix('-')?;
    // `web-01` is not replica 1: only the name the controller makes counts.
    ordinal.parse::<u32>().ok().filter(|o| o.to_string() == ordinal)
}

/// One pass over a StatefulSet.
pub fn reconcile(
    set: &ApiObject,
    owned: &[&ApiObject],
    claims: &[Arc<ApiObject>],
    now: SystemTime,
    budget: &mut super::Budget,
    ops: &mut Vec<Op>,
) {
    let Some(spec) = set.spec::<StatefulSetSpec>() else { return };
    let name = set.metadata.name.as_str();
    let hash = template_hash(&spec.template);
    let replicas = spec.replicas.unwrap_or(1).clamp(0, i64::from(u32::MAX)) as u32;
    let min_ready = Duration::from_secs(spec.min_ready_seconds.unwrap_or(0).max(0) as u64);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.strategy_type.as_deref() == Some("OnDelete");
    let partition = strategy.rolling_update.and_then(|r| r.partition).unwrap_or(0).max(0) as u32;
    let retention = spec.persistent_volume_claim_retention_policy.clone().unwrap_or_default();

    let mut by_ordinal: BTreeMap<u32, &ApiObject> = BTreeMap::new();
    for pod in owned {
        match ordinal_of(name, pod) {
            Some(ordinal) => _ = by_ordinal.insert(ordinal, pod),
            // Not a name this controller makes: not a replica of it.
            None if !pod.is_retired() => retire(pod, ops),
            None => {}
        }
    }
    let live = |pod: &&ApiObject| !pod.is_retired() && !pod.typed_status::<PodStatus>().is_finished();
    let available = |pod: &ApiObject| live(&pod) && is_available(pod, min_ready, now);

    // Claims first: a replica is made only once its claims exist.
    let existing: HashSet<&str> = claims
        .iter()
        .filter(|c| c.metadata.namespace == set.metadata.namespace)
        .map(|c| c.metadata.name.as_str())
        .collect();
    let mut claims_missing = false;
    for ordinal in 0..replicas {
        for template in &spec.volume_claim_templates {
            let claim = StatefulSetSpec::claim_name(template, name, ordinal);
            if !existing.contains(claim.as_str()) {
                claims_missing = true;
                // Made a slice per pass, like replicas (see `Budget`).
                if budget.create() {
                    ops.push(Op::Apply(claim_for(set, &spec, template, claim, retention.when_deleted.as_deref())));
                }
            }
        }
    }

    // Scale down, highest ordinal first.
    let condemned: Vec<&ApiObject> = by_ordinal.range(replicas..).rev().map(|(_, p)| *p).collect();
    let stopping = by_ordinal.values().any(|p| p.is_retired());
    for pod in &condemned {
        if !pod.is_retired() && (parallel || !stopping) {
            retire(pod, ops);
            if !parallel {
                break;
            }
        }
    }
    if retention.when_scaled.as_deref() == Some("Delete") {
        let made_here = |c: &&Arc<ApiObject>| {
            c.metadata.namespace == set.metadata.namespace
                && c.metadata.labels.get(CLAIM_OF_LABEL) == Some(&set.metadata.name)
        };
        for claim in claims.iter().filter(made_here) {
            let scaled_away = spec.volume_claim_templates.iter().any(|t| {
                claim
                    .metadata
                    .name
                    .strip_prefix(&format!("{}-{name}-", t.metadata.name))
                    .and_then(|o| o.parse::<u32>().ok())
                    .is_some_and(|o| o >= replicas && !by_ordinal.contains_key(&o))
            });
            if scaled_away && !claim.is_retired() {
                ops.push(Op::Retire { key: claim.key(), uid: claim.metadata.uid.clone() });
            }
        }
    }

    // Replicas missing below `replicas`: in order, each once the ones
    // before it are available (OrderedReady), or all at once.
    if !claims_missing && (parallel || condemned.is_empty()) {
        for ordinal in 0..replicas {
            if by_ordinal.contains_key(&ordinal) {
                if !parallel && !by_ordinal.get(&ordinal).is_some_and(|p| available(p)) {
                    break;
                }
                continue;
            }
            if !budget.create() {
                break;
            }
            ops.push(Op::Apply(replica(set, &spec, &hash, ordinal)));
            if !parallel {
                break;
            }
        }
    }

    // Rolling update: once every replica is there and available, the
    // highest outdated ordinal at or above the partition goes; its
    // replacement is made when it has stopped.
    let all_available = (0..replicas).all(|o| by_ordinal.get(&o).is_some_and(|p| available(p)));
    if !on_delete && all_available && !stopping {
        let outdated = by_ordinal
            .range(partition..replicas)
            .rev()
            .map(|(_, p)| *p)
            .find(|p| p.metadata.labels.get(TEMPLATE_HASH_LABEL) != Some(&hash));
        if let Some(pod) = outdated {
            retire(pod, ops);
        }
    }

    let kept: Vec<&ApiObject> = by_ordinal.range(..replicas).map(|(_, p)| *p).filter(live).collect();
    let updated = kept.iter().filter(|p| p.metadata.labels.get(TEMPLATE_HASH_LABEL) == Some(&hash)).count() as u32;
    let update_revision = format!("{name}-{hash}");
    let previous = set.typed_status::<StatefulSetStatus>();
    let current_revision = if updated == replicas {
        update_revision.clone()
    } else if previous.current_revision.is_empty() {
        // The revision most replicas still run.
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for pod in &kept {
            *counts.entry(pod.metadata.labels.get(TEMPLATE_HASH_LABEL).map_or("", String::as_str)).or_default() += 1;
        }
        counts.into_iter().max_by_key(|(_, n)| *n).map_or(update_revision.clone(), |(h, _)| format!("{name}-{h}"))
    } else {
        previous.current_revision.clone()
    };
    let current_hash = current_revision.strip_prefix(&format!("{name}-")).unwrap_or("").to_owned();
    let status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        replicas: kept.len() as u32,
        ready_replicas: kept.iter().filter(|p| p.typed_status::<PodStatus>().is_ready()).count() as u32,
        current_replicas: kept
            .iter()
            .filter(|p| p.metadata.labels.get(TEMPLATE_HASH_LABEL) == Some(&current_hash))
            .count() as u32,
        updated_replicas: updated,
        available_replicas: kept.iter().filter(|p| is_available(p, min_ready, now)).count() as u32,
        current_revision,
        update_revision,
    };
    status_op(set, &status, ops);
}

/// Replica `ordinal` of `set`: a workload replica whose spec mounts its
/// own claims (so not shared with its siblings).
fn replica(set: &ApiObject, spec: &StatefulSetSpec, hash: &str, ordinal: u32) -> ApiObject {
    let name = format!("{}-{ordinal}", set.metadata.name);
    let mut pod = workload::replica(set, &Template::new(&spec.template), hash, name.clone(), None);
    pod.metadata.labels.insert(POD_NAME_LABEL.to_owned(), name);
    let template = Arc::new(spec.pod_spec(&set.metadata.name, ordinal));
    pod.set_spec(StoredPodSpec { template, node_name: None });
    pod
}

/// A claim from a template: its labels, the set's selector labels (as
/// Kubernetes gives them), and the set as owner when the claims go with it.
fn claim_for(
    set: &ApiObject,
    spec: &StatefulSetSpec,
    template: &ClaimTemplate,
    name: String,
    when_deleted: Option<&str>,
) -> ApiObject {
    let mut claim = ApiObject::new(Kind::PersistentVolumeClaim, &set.metadata.namespace, &name);
    claim.metadata.labels = template.metadata.labels.clone();
    claim.metadata.labels.extend(spec.selector.match_labels.clone());
    claim.metadata.labels.insert(CLAIM_OF_LABEL.to_owned(), set.metadata.name.clone());
    claim.metadata.annotations = template.metadata.annotations.clone();
    if when_deleted == Some("Delete") {
        claim.metadata.owner_references = vec![workload::owner_of(set)];
    }
    claim.set_spec(template.spec.clone());
    claim
}
