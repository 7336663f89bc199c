//! Garbage collection: replicas whose owner is gone (deleted, or re-created
//! under the same name with another uid), and events past their time.

use std::collections::HashSet;
use std::time::SystemTime;

use crate::manifest::Kind;
use crate::store::Op;

use super::Snapshot;

/// Deletes what nothing owns any more.
pub fn reconcile(snapshot: &Snapshot, now: SystemTime, ops: &mut Vec<Op>) {
    let owners: HashSet<(Kind, &str, &str, &str)> = [
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
    for pod in &snapshot.pods {
        if let Some(owner) = pod.metadata.owner_references.first()
            && !owners.contains(&(owner.kind, pod.metadata.namespace.as_str(), owner.name.as_str(), owner.uid.as_str()))
        {
            ops.push(Op::Delete(pod.key(), Some(pod.resource_version())));
        }
    }
    crate::events::collect_garbage(&snapshot.events, now, ops);
}
