//! Garbage collection: replicas whose owner is gone (deleted, or re-created
//! under the same name with another uid), events past their time, and
//! deleted claims no replica mounts any more.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::manifest::Kind;
use crate::object::ApiObject;
use crate::store::Op;

use super::{Scope, Snapshot};

/// Deletes what nothing owns any more: the replicas of the owners in the
/// pass's scope (every owner in a full pass) whose owner is gone.
pub fn reconcile(snapshot: &Snapshot, now: SystemTime, ops: &mut Vec<Op>) {
    // Per owner, not per pod: the pods come grouped by their owner's uid
    // (uids are never reused, so a uid names one object for good).
    let owners: HashMap<&str, (Kind, &str, &str)> = [
        (Kind::Deployment, &snapshot.deployments),
        (Kind::DaemonSet, &snapshot.daemon_sets),
        (Kind::Job, &snapshot.jobs),
        (Kind::StatefulSet, &snapshot.stateful_sets),
    ]
    .into_iter()
    .flat_map(|(kind, list)| {
        list.iter()
            .map(move |o| (o.metadata.uid.as_str(), (kind, o.metadata.namespace.as_str(), o.metadata.name.as_str())))
    })
    .collect();
    let mut check = |uid: &str, pods: &[&ApiObject]| {
        let owner = owners.get(uid);
        for pod in pods {
            let Some(reference) = pod.metadata.owner_references.first() else { continue };
            let same = owner.is_some_and(|(kind, namespace, name)| {
                (*kind, *namespace, *name) == (reference.kind, pod.metadata.namespace.as_str(), reference.name.as_str())
            });
            if !same {
                ops.push(Op::Delete(pod.key(), Some(pod.resource_version())));
            }
        }
    };
    match &snapshot.scope {
        Scope::All => {
            for (uid, pods) in snapshot.pods_by_owner() {
                check(uid, &pods);
            }
        }
        Scope::Changed { owners, .. } => {
            for uid in owners {
                check(uid, &snapshot.owned_by(uid));
            }
        }
    }
    crate::events::collect_garbage(&snapshot.events, now, ops);
    super::claims::collect_deleted(snapshot, ops);
}
