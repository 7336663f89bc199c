//! What the workload controllers share: replica names and templates.
//!
//! Replica names are stable: `<workload>-<template hash>-<ordinal>` for
//! Deployments and Jobs (`web-7f3a-2`) and `<daemonset>-<hash>-<node>` for
//! DaemonSets. A template change gives new names; Deployments replace
//! their replicas gradually ([`super::deployment`]), the others at once.

use std::hash::Hasher;
use std::sync::Arc;

use crate::manifest::Kind;
use crate::manifest::types::{PodSpec, PodTemplate};
use crate::object::{ApiObject, OwnerReference, StoredPodSpec};
use crate::status::PodStatus;
use crate::store::Op;

pub use crate::object::TEMPLATE_HASH_LABEL;

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

/// A template as replicas are made from it: the pod spec is copied once,
/// the first time, and shared by every replica made from it after.
pub struct Template<'t> {
    template: &'t PodTemplate,
    spec: std::cell::OnceCell<Arc<PodSpec>>,
}

impl<'t> Template<'t> {
    /// Replicas of `template`.
    pub fn new(template: &'t PodTemplate) -> Self {
        Template { template, spec: std::cell::OnceCell::new() }
    }

    fn spec(&self) -> Arc<PodSpec> {
        self.spec.get_or_init(|| Arc::new(self.template.spec.clone())).clone()
    }
}

/// A replica of `owner` from its template.
pub fn replica(owner: &ApiObject, template: &Template<'_>, hash: &str, name: String, node: Option<&str>) -> ApiObject {
    let (spec, template) = (template.spec(), template.template);
    let mut pod = ApiObject::new(Kind::Pod, &owner.metadata.namespace, &name);
    pod.metadata.labels = template.metadata.labels.clone();
    pod.metadata.labels.insert(TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    pod.metadata.annotations = template.metadata.annotations.clone();
    pod.metadata.owner_references = vec![owner_of(owner)];
    pod.set_spec(StoredPodSpec { template: spec, node_name: node.map(str::to_owned) });
    pod.set_status(&PodStatus { phase: crate::status::PodPhase::Pending, ..PodStatus::default() });
    pod
}

/// A reference to `owner` from what it made.
pub fn owner_of(owner: &ApiObject) -> OwnerReference {
    OwnerReference { kind: owner.kind, name: owner.metadata.name.clone(), uid: owner.metadata.uid.clone() }
}

/// The ordinal a Deployment or Job replica name ends with.
pub fn ordinal(name: &str) -> Option<u32> {
    name.rsplit('-').next().and_then(|s| s.parse().ok())
}

/// Writes `status` unless the object already has it.
pub fn status_op<T: serde::Serialize + PartialEq + serde::de::DeserializeOwned + Default + Clone + 'static>(
    object: &ApiObject,
    status: &T,
    ops: &mut Vec<Op>,
) {
    if *object.typed_status::<T>() != *status || !object.has_status() {
        let mut updated = object.clone();
        updated.set_status(status);
        ops.push(Op::UpdateStatus(updated));
    }
}
