//! Garbage collection: replicas whose owner is gone (deleted, or re-created
//! under the same name with another uid), and events past their time.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::manifest::Kind;
use crate::object::ApiObject;
use crate::store::Op;

use super::Snapshot;

/// Deletes what nothing owns any more.
/// `owned`: the pods by their owner's uid ([`Snapshot::pods_by_owner`]).
pub fn reconcile(snapshot: &Snapshot, owned: &HashMap<&str, Vec<&ApiObject>>, now: SystemTime, ops: &mut Vec<Op>) {
    // Per owner, not per pod: the pods come grouped by their owner's uid
    // (uids are never reused, so a uid names one object for good).
    let owners: HashMap<&str, (Kind, &str, &str)> = [
        (Kind::Deployment, &snapshot.deployments),
        (Kind::DaemonSet, &snapshot.daemon_sets),
        (Kind::Job, &snapshot.jobs),
    ]
    .into_iter()
    .flat_map(|(kind, list)| {
        list.iter()
            .map(move |o| (o.metadata.uid.as_str(), (kind, o.metadata.namespace.as_str(), o.metadata.name.as_str())))
    })
    .collect();
    for (uid, pods) in owned {
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
    }
    crate::events::collect_garbage(&snapshot.events, now, ops);
}
