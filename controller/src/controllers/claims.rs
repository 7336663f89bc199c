//! Local persistent volume claims, as the scheduling and node-lifecycle
//! controllers read them.
//!
//! A claim (`flotilla.io/local`) is a directory on one device. It is bound
//! when the first replica that mounts it is placed: the scheduling
//! controller writes the claim's `status.nodeName` in the same commit as
//! the replica's binding, and is the one writer of the claim's status.
//! From then on every replica that mounts it is pinned to that device:
//! while the device is lost it waits there (`WaitingForVolume`), unless the
//! claim's `flotilla.io/on-device-lost` annotation says `reschedule`, in
//! which case the replica moves and the claim is bound again where it
//! lands, empty (the old device deletes the data when it hears).

use std::collections::{HashMap, HashSet};

use crate::manifest::types::{ClaimSpec, PodSpec};
use crate::manifest::validate::ON_DEVICE_LOST_ANNOTATION;
use crate::object::ApiObject;
use crate::status::{ClaimStatus, NodeStatus};

use super::Snapshot;

/// The extended resource a claim's size is counted in by the scheduler: a
/// node offers its reported free disk, less the sizes of the claims bound
/// to it.
pub const LOCAL_STORAGE: &str = "flotilla.io/local-storage";

/// The node label that names the node itself (written on registration).
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The extended resource that counts claims per device: a document lists
/// at most [`firmware_proto::pod::LINUX_MAX_CLAIMS`].
pub const CLAIM_SLOTS: &str = "flotilla.io/claims";

/// Claims by (namespace, name), nodes by name, and the nodes lost for
/// longer than the eviction grace.
pub struct Claims<'s> {
    claims: HashMap<(&'s str, &'s str), &'s ApiObject>,
    nodes: HashMap<&'s str, &'s ApiObject>,
    lost: HashSet<&'s str>,
}

/// What a replica's claims ask of its placement.
#[derive(Debug, Default)]
pub struct Needs<'s> {
    /// The device a bound claim holds its data on, and that claim's name.
    pub node: Option<(&'s str, String)>,
    /// Claims not bound yet (or moving, by their policy): bound to where
    /// the replica is placed.
    pub binds: Vec<&'s ApiObject>,
    /// Their sizes, bytes: what the placement must have room for.
    pub bind_bytes: u64,
}

/// Why a replica cannot be placed yet, as its Pending reason and message.
pub type Waiting = (&'static str, String);

impl<'s> Claims<'s> {
    /// Indexes the snapshot's claims and nodes; `lost`: the nodes lost
    /// past the eviction grace, as the node-lifecycle step found them.
    pub fn new(snapshot: &'s Snapshot, lost: impl IntoIterator<Item = &'s str>) -> Self {
        Claims {
            claims: snapshot
                .claims
                .iter()
                .map(|c| ((c.metadata.namespace.as_str(), c.metadata.name.as_str()), &**c))
                .collect(),
            // Read only for bound claims: a fleet without claims does not
            // index its nodes on every pass.
            nodes: if snapshot.claims.is_empty() {
                HashMap::new()
            } else {
                snapshot.nodes.iter().map(|n| (n.metadata.name.as_str(), &**n)).collect()
            },
            // A claim that moves when its device is lost moves only once the
            // device counts as lost (past the eviction grace), not on a blip.
            lost: lost.into_iter().collect(),
        }
    }

    /// Whether there are claims at all (most fleets have none).
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }

    /// What the replica's claims ask of where it goes, or why it waits.
    pub fn needs(&self, spec: &PodSpec, namespace: &str) -> Result<Needs<'s>, Waiting> {
        let mut needs = Needs::default();
        for volume in &spec.volumes {
            let Some(source) = &volume.persistent_volume_claim else { continue };
            let name = source.claim_name.as_str();
            let Some(claim) = self.claims.get(&(namespace, name)).copied() else {
                let message = format!("persistentvolumeclaim {name:?} not found (volume {:?})", volume.name);
                return Err(("MissingReference", message));
            };
            if claim.is_retired() {
                let message = format!("persistentvolumeclaim {name:?} is being deleted (volume {:?})", volume.name);
                return Err(("MissingReference", message));
            }
            let status = claim.typed_status::<ClaimStatus>();
            let Some(bound) = status.node_name.as_deref() else {
                needs.binds.push(claim);
                continue;
            };
            let node = match self.nodes.get_key_value(bound) {
                Some((&node, object)) if object.typed_status::<NodeStatus>().is_ready() => node,
                None if reschedules(claim) => {
                    needs.binds.push(claim);
                    continue;
                }
                Some(_) if reschedules(claim) && self.lost.contains(bound) => {
                    needs.binds.push(claim);
                    continue;
                }
                found => {
                    let why = match found {
                        None => "is not in the fleet".to_owned(),
                        Some((_, object)) => format!("is not ready ({})", not_ready_reason(object)),
                    };
                    return Err(("WaitingForVolume", waiting_message(name, bound, &why)));
                }
            };
            if let Some(wanted) = spec.node_selector.get(HOSTNAME_LABEL).filter(|w| *w != node) {
                let message = format!(
                    "nodeSelector {HOSTNAME_LABEL}={wanted}, but claim {name:?} holds its data on device {node}"
                );
                return Err(("VolumeNodeConflict", message));
            }
            match &needs.node {
                Some((other, other_claim)) if *other != node => {
                    let message = format!(
                        "claims {other_claim:?} and {name:?} hold their data on different devices ({other} and {node})"
                    );
                    return Err(("VolumeNodeConflict", message));
                }
                _ => needs.node = Some((node, name.to_owned())),
            }
        }
        needs.bind_bytes = needs.binds.iter().map(|c| size_of(c)).sum();
        Ok(needs)
    }

    /// The claim of `pod` bound to `node` that holds the replica there when
    /// the node is lost (its policy is to wait), if any.
    pub fn holding(&self, spec: &PodSpec, namespace: &str, node: &str) -> Option<&'s ApiObject> {
        spec.volumes.iter().filter_map(|v| v.persistent_volume_claim.as_ref()).find_map(|source| {
            let claim = *self.claims.get(&(namespace, source.claim_name.as_str()))?;
            let status = claim.typed_status::<ClaimStatus>();
            (status.node_name.as_deref() == Some(node) && !reschedules(claim)).then_some(claim)
        })
    }

    /// Pins `replica` to the device its claims hold data on, and asks room
    /// for the claims it binds.
    pub fn constrain(needs: &Needs<'_>, replica: &mut flotilla_scheduler::model::Replica) {
        if let Some((node, _)) = &needs.node {
            replica.node_selector.insert(HOSTNAME_LABEL.to_owned(), (*node).to_owned());
        }
        if needs.bind_bytes > 0 {
            *replica.requests.extended.entry(LOCAL_STORAGE.to_owned()).or_default() += needs.bind_bytes;
        }
        if !needs.binds.is_empty() {
            *replica.requests.extended.entry(CLAIM_SLOTS.to_owned()).or_default() += needs.binds.len() as u64;
        }
    }

    /// Claims not bound yet that a placed replica mounts (its binding and
    /// the claim's were split by a commit, or the replica was bound at
    /// creation): bound to that replica's node. Each with the node.
    pub fn unbound_in_use(&self, snapshot: &'s Snapshot) -> Vec<(&'s ApiObject, &'s str)> {
        let mut unbound: HashSet<(&str, &str)> = self
            .claims
            .iter()
            .filter(|(_, c)| !c.is_retired() && c.typed_status::<ClaimStatus>().node_name.is_none())
            .map(|(k, _)| *k)
            .collect();
        if unbound.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<(&ApiObject, &str)> = Vec::new();
        for pod in &snapshot.pods {
            let Some(node) = pod.node_name() else { continue };
            if pod.is_retired() || pod.typed_status::<crate::status::PodStatus>().is_finished() {
                continue;
            }
            let Some(spec) = pod.spec_ref::<PodSpec>() else { continue };
            for source in spec.volumes.iter().filter_map(|v| v.persistent_volume_claim.as_ref()) {
                let key = (pod.metadata.namespace.as_str(), source.claim_name.as_str());
                // Each claim once: the first placed replica that mounts it.
                if let Some(key) = unbound.take(&key) {
                    out.push((self.claims[&key], node));
                }
            }
        }
        out
    }

    /// Claims bound to each node: how many, and their bytes.
    pub fn bound_per_node(&self) -> HashMap<String, (u64, u64)> {
        let mut out: HashMap<String, (u64, u64)> = HashMap::new();
        for claim in self.claims.values() {
            if let Some(node) = claim.typed_status::<ClaimStatus>().node_name.clone() {
                let entry = out.entry(node).or_default();
                entry.0 += 1;
                entry.1 += size_of(claim);
            }
        }
        out
    }
}

/// Whether `pod` mounts the claim `name` (of its namespace) and has not
/// ended: a claim it mounts is not deleted under it.
pub fn uses(pod: &ApiObject, name: &str) -> bool {
    // A replica never placed has nothing on a device (Kubernetes' claim
    // protection ignores it too), and could never start without the claim.
    pod.node_name().is_some()
        && !pod.typed_status::<crate::status::PodStatus>().is_finished()
        && pod.typed_spec::<PodSpec>().is_some_and(|spec| {
            spec.volumes.iter().any(|v| v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == name))
        })
}

/// Deletes the claims whose deletion waited for the replicas that mounted
/// them (`flotilla delete pvc` retires a claim in use): once none is left.
/// Retires the claims whose owner (a StatefulSet whose claims go with it)
/// is gone.
pub fn collect_deleted(snapshot: &Snapshot, ops: &mut Vec<crate::store::Op>) {
    let sets: HashSet<&str> = snapshot.stateful_sets.iter().map(|s| s.metadata.uid.as_str()).collect();
    for claim in snapshot.claims.iter().filter(|c| !c.is_retired()) {
        let Some(owner) = claim.metadata.owner_references.first() else { continue };
        if !sets.contains(owner.uid.as_str()) {
            ops.push(crate::store::Op::Retire { key: claim.key(), uid: claim.metadata.uid.clone() });
        }
    }
    for claim in snapshot.claims.iter().filter(|c| c.is_retired()) {
        let namespace = claim.metadata.namespace.as_str();
        let in_use = snapshot.pods.iter().any(|p| p.metadata.namespace == namespace && uses(p, &claim.metadata.name));
        if !in_use {
            ops.push(crate::store::Op::Delete(claim.key(), Some(claim.resource_version())));
        }
    }
}

/// What a replica waiting for its claim's device says.
pub fn waiting_message(claim: &str, node: &str, why: &str) -> String {
    format!(
        "claim {claim:?} holds its data on device {node}, which {why}; the replica waits for it \
         (annotate the claim {ON_DEVICE_LOST_ANNOTATION}=reschedule to start it elsewhere, empty)"
    )
}

fn not_ready_reason(node: &ApiObject) -> String {
    let status = node.typed_status::<NodeStatus>();
    crate::status::condition(&status.conditions, crate::status::ConditionType::Ready)
        .map(|c| c.reason.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "no heartbeat yet".to_owned())
}

/// Whether the claim's replicas start elsewhere, empty, when its device is
/// lost.
pub fn reschedules(claim: &ApiObject) -> bool {
    claim.metadata.annotations.get(ON_DEVICE_LOST_ANNOTATION).is_some_and(|p| p == "reschedule")
}

/// The claim's size, bytes.
pub fn size_of(claim: &ApiObject) -> u64 {
    claim.typed_spec::<ClaimSpec>().map_or(0, |s| s.size_bytes())
}

/// The claim as bound to `node`: its status says where, how big and how.
pub fn bound_to(claim: &ApiObject, node: &str) -> ApiObject {
    let spec = claim.typed_spec::<ClaimSpec>().map(|s| s.into_owned()).unwrap_or_default();
    let mut status = ClaimStatus {
        phase: "Bound".into(),
        node_name: Some(node.to_owned()),
        access_modes: spec.access_modes.clone(),
        ..ClaimStatus::default()
    };
    if status.access_modes.is_empty() {
        status.access_modes.push("ReadWriteOnce".into());
    }
    if let Some(size) = spec.resources.requests.get("storage") {
        status.capacity.insert("storage".into(), size.text());
    }
    let mut bound = claim.clone();
    bound.set_status(&status);
    bound
}
