//! Objects as the store and the API hold them: Kubernetes' shape
//! (`apiVersion`, `kind`, `metadata`, then `spec`/`status` or `data`), with
//! the server-owned metadata (uid, resourceVersion, generation, creation
//! time) that manifests do not carry.
//!
//! Content is kept as JSON so that the store stays kind-agnostic; typed
//! views (`spec::<DeploymentSpec>()`) are taken where a reconciler needs
//! them.

use std::any::Any;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use base64::Engine;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use crate::manifest::{Body, Kind, Object};

/// Plural resource names as they appear in URLs, with the kind each names.
pub const RESOURCES: &[(&str, Kind)] = &[
    ("deployments", Kind::Deployment),
    ("daemonsets", Kind::DaemonSet),
    ("jobs", Kind::Job),
    ("pods", Kind::Pod),
    ("services", Kind::Service),
    ("configmaps", Kind::ConfigMap),
    ("secrets", Kind::Secret),
    ("nodes", Kind::Node),
    ("namespaces", Kind::Namespace),
    ("events", Kind::Event),
];

/// The URL resource name of a kind (`Deployment` -> `deployments`).
pub fn resource_of(kind: Kind) -> &'static str {
    RESOURCES.iter().find(|(_, k)| *k == kind).map(|(r, _)| *r).unwrap_or("unknown")
}

/// The kind for a resource name, singular, plural or kubectl short name.
pub fn kind_from_resource(name: &str) -> Option<Kind> {
    let name = name.to_ascii_lowercase();
    Some(match name.as_str() {
        "deployments" | "deployment" | "deploy" => Kind::Deployment,
        "daemonsets" | "daemonset" | "ds" => Kind::DaemonSet,
        "jobs" | "job" => Kind::Job,
        "pods" | "pod" | "po" | "replicas" | "replica" => Kind::Pod,
        "services" | "service" | "svc" => Kind::Service,
        "configmaps" | "configmap" | "cm" => Kind::ConfigMap,
        "secrets" | "secret" => Kind::Secret,
        "nodes" | "node" | "no" => Kind::Node,
        "namespaces" | "namespace" | "ns" => Kind::Namespace,
        "events" | "event" | "ev" => Kind::Event,
        _ => return None,
    })
}

/// A reference from a derived object to the workload that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    /// The owner's kind.
    pub kind: Kind,
    /// The owner's name (same namespace).
    pub name: String,
    /// The owner's uid: a re-created owner with the same name does not adopt.
    pub uid: String,
}

/// `metadata` of a stored object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Name, unique per kind and namespace.
    pub name: String,
    /// Namespace; empty for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Set by the server at creation, never changes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Changes on every write; a write carrying an older one is refused (409).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// Bumped when anything but status changes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// RFC 3339, seconds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub creation_timestamp: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The workload that derived this object, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    /// RFC 3339, set once by the store when a replica is retired
    /// ([`crate::store::Op::Retire`]): it has left its node's desired
    /// document and is deleted once the node reports it stopped. Only
    /// `Retire` writes it, so no status or spec write built from an older
    /// read can bring a retired replica back (Kubernetes' field for a
    /// graceful deletion).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deletion_timestamp: String,
}

/// Annotations the server writes itself (the image pins,
/// `crate::controllers::image_pinning`): an apply that names none of them
/// and leaves the content as it is keeps them.
pub fn is_server_annotation(key: &str) -> bool {
    key.starts_with("flotilla.io/image-")
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A stored object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiObject {
    /// `apps/v1`, `batch/v1` or `v1`.
    pub api_version: String,
    /// The kind.
    pub kind: Kind,
    /// Metadata.
    pub metadata: Metadata,
    /// Everything else: `spec` and `status`, or `data` (ConfigMap, Secret).
    #[serde(flatten)]
    pub content: Map<String, Value>,
    /// What was derived from this content once: its JSON and its typed
    /// `spec` and `status`. Objects in the store are never changed in place
    /// (a write stores a new one), so a stored object's cache stays true; a
    /// clone starts empty because clones are made to be changed.
    #[serde(skip)]
    derived: Derived,
}

/// The lazily filled caches of an [`ApiObject`].
#[derive(Default)]
struct Derived {
    json: OnceLock<Box<[u8]>>,
    spec: OnceLock<Box<dyn Any + Send + Sync>>,
    status: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Clone for Derived {
    fn clone(&self) -> Self {
        Derived::default()
    }
}

impl PartialEq for Derived {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

/// Identifies one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Kind.
    pub kind: Kind,
    /// Namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key; the namespace is dropped for cluster-scoped kinds.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        let namespace = if kind.is_namespaced() { namespace } else { "" };
        ObjectKey { kind, namespace: namespace.to_owned(), name: name.to_owned() }
    }

    /// `kind/namespace/name`, the store's key.
    pub fn encode(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", resource_of(self.kind), self.name)
        } else {
            write!(f, "{}/{} in namespace {}", resource_of(self.kind), self.name, self.namespace)
        }
    }
}

impl ApiObject {
    /// A new object of `kind` with empty content.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        let key = ObjectKey::new(kind, namespace, name);
        ApiObject {
            api_version: kind.api_version().to_owned(),
            kind,
            metadata: Metadata { name: key.name, namespace: key.namespace, ..Metadata::default() },
            content: Map::new(),
            derived: Derived::default(),
        }
    }

    /// Whether it was retired: leaving its node, deleted once stopped.
    pub fn is_retired(&self) -> bool {
        !self.metadata.deletion_timestamp.is_empty()
    }

    /// Its key.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(self.kind, &self.metadata.namespace, &self.metadata.name)
    }

    /// The resourceVersion as a number (0 when unset or not a number).
    pub fn resource_version(&self) -> u64 {
        self.metadata.resource_version.parse().unwrap_or(0)
    }

    /// A pod's `spec.nodeName`: the node it is bound to.
    pub fn node_name(&self) -> Option<&str> {
        self.content.get("spec").and_then(|s| s.get("nodeName")).and_then(|n| n.as_str())
    }

    /// `spec`, typed; `None` if absent or of another shape.
    pub fn spec<T: DeserializeOwned>(&self) -> Option<T> {
        // Deserialised from the borrowed value: no copy of the tree.
        self.content.get("spec").and_then(|v| T::deserialize(v).ok())
    }

    /// `status`, typed; the default when absent or unreadable.
    pub fn status<T: DeserializeOwned + Default>(&self) -> T {
        self.content.get("status").and_then(|v| T::deserialize(v).ok()).unwrap_or_default()
    }

    /// `spec` as `T`, deserialised once per object: what passes over every
    /// object of a fleet read. Only for objects that are not changed after
    /// the first call (the store's); `None` as [`ApiObject::spec`]. A second
    /// type asked of the same object is deserialised each time.
    pub fn typed_spec<T: DeserializeOwned + Clone + Send + Sync + 'static>(&self) -> Option<Cow<'_, T>> {
        let cached = self.derived.spec.get_or_init(|| Box::new(self.spec::<T>()));
        match cached.downcast_ref::<Option<T>>() {
            Some(spec) => spec.as_ref().map(Cow::Borrowed),
            None => self.spec::<T>().map(Cow::Owned),
        }
    }

    /// `status` as `T`, deserialised once per object (see
    /// [`ApiObject::typed_spec`]); the default when absent or unreadable.
    pub fn typed_status<T: DeserializeOwned + Default + Clone + Send + Sync + 'static>(&self) -> Cow<'_, T> {
        let cached = self.derived.status.get_or_init(|| Box::new(self.status::<T>()));
        match cached.downcast_ref::<T>() {
            Some(status) => Cow::Borrowed(status),
            None => Cow::Owned(self.status::<T>()),
        }
    }

    /// This object as JSON, serialised once (a list of a large fleet's pods
    /// copies bytes instead of walking every tree again).
    pub fn json(&self) -> &[u8] {
        self.derived.json.get_or_init(|| serde_json::to_vec(self).unwrap_or_default().into_boxed_slice())
    }

    /// Seeds [`ApiObject::json`] with bytes already serialised from this
    /// object (the store writes them to disk anyway).
    pub fn remember_json(&self, json: &[u8]) {
        let _ = self.derived.json.set(json.into());
    }

    /// Sets `status`.
    pub fn set_status<T: Serialize>(&mut self, status: &T) {
        let value = serde_json::to_value(status).unwrap_or(Value::Null);
        self.content.insert("status".to_owned(), value);
        // What was derived from the old status is not true any more.
        self.derived = Derived::default();
    }

    /// Whether `self` and `other` hold the same content but for `status`
    /// (what an apply sets), compared in place.
    pub fn same_content_but_status(&self, other: &ApiObject) -> bool {
        let mut mine = self.content.iter().filter(|(k, _)| *k != "status");
        let mut theirs = other.content.iter().filter(|(k, _)| *k != "status");
        loop {
            match (mine.next(), theirs.next()) {
                (None, None) => return true,
                (Some(a), Some(b)) if a == b => {}
                _ => return false,
            }
        }
    }

    /// Builds the stored form of a parsed manifest object.
    pub fn from_manifest(object: &Object) -> Self {
        let mut out = ApiObject::new(object.kind, &object.metadata.namespace, &object.metadata.name);
        out.metadata.labels = object.metadata.labels.clone();
        out.metadata.annotations = object.metadata.annotations.clone();
        let b64 = |bytes: &Vec<u8>| Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
        let spec = |value: Result<Value, serde_json::Error>| value.unwrap_or(Value::Null);
        match &object.body {
            Body::Deployment(s) => _ = out.content.insert("spec".into(), spec(serde_json::to_value(s))),
            Body::DaemonSet(s) => _ = out.content.insert("spec".into(), spec(serde_json::to_value(s))),
            Body::Job(s) => _ = out.content.insert("spec".into(), spec(serde_json::to_value(s))),
            Body::Pod(s) => _ = out.content.insert("spec".into(), spec(serde_json::to_value(s))),
            Body::Service(s) => _ = out.content.insert("spec".into(), spec(serde_json::to_value(s))),
            Body::Node(s) => _ = out.content.insert("spec".into(), spec(serde_json::to_value(s))),
            Body::Namespace => {}
            Body::ConfigMap(d) => {
                if !d.data.is_empty() {
                    out.content.insert("data".into(), spec(serde_json::to_value(&d.data)));
                }
                if !d.binary_data.is_empty() {
                    let map = d.binary_data.iter().map(|(k, v)| (k.clone(), b64(v))).collect();
                    out.content.insert("binaryData".into(), Value::Object(map));
                }
            }
            Body::Secret(d) => {
                let secret_type = if d.secret_type.is_empty() { "Opaque" } else { &d.secret_type };
                out.content.insert("type".into(), Value::String(secret_type.to_owned()));
                let map = d.data.iter().map(|(k, v)| (k.clone(), b64(v))).collect();
                out.content.insert("data".into(), Value::Object(map));
            }
        }
        out
    }

    /// A ConfigMap's or Secret's keys (for `describe` and reference checks).
    pub fn data_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for field in ["data", "binaryData"] {
            if let Some(Value::Object(map)) = self.content.get(field) {
                keys.extend(map.keys().cloned());
            }
        }
        keys.sort();
        keys
    }
}

/// The current time as RFC 3339 with milliseconds, the format of condition
/// transition times.
pub fn now_rfc3339_millis() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// The current time as RFC 3339 (seconds), the format of `creationTimestamp`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// `5s`, `3m`, `2h`, `4d` since an RFC 3339 time, as kubectl's AGE column.
pub fn age(timestamp: &str, now: std::time::SystemTime) -> String {
    let Ok(then) = humantime::parse_rfc3339_weak(timestamp) else { return "<unknown>".to_owned() };
    let secs = now.duration_since(then).map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_str;

    #[test]
    fn manifests_become_kubernetes_shaped_objects() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {token: abc}\n---\n\
                    apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, labels: {app: web}}\n\
                    spec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    \
                    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: c, image: web:1}]\n";
        let parsed = parse_str("t.yaml", text).unwrap();
        let secret = ApiObject::from_manifest(&parsed.objects[0]);
        assert_eq!(secret.key(), ObjectKey::new(Kind::Secret, "default", "s"));
        assert_eq!(secret.content["data"]["token"], "YWJj");
        assert_eq!(secret.content["type"], "Opaque");
        let deployment = ApiObject::from_manifest(&parsed.objects[1]);
        let json = serde_json::to_value(&deployment).unwrap();
        assert_eq!(json["apiVersion"], "apps/v1");
        assert_eq!(json["spec"]["replicas"], 2);
        let spec: crate::manifest::types::DeploymentSpec = deployment.spec().unwrap();
        assert_eq!(spec.template.spec.containers[0].image, "web:1");
    }

    #[test]
    fn resource_names_and_short_names() {
        assert_eq!(kind_from_resource("deploy"), Some(Kind::Deployment));
        assert_eq!(kind_from_resource("Pods"), Some(Kind::Pod));
        assert_eq!(kind_from_resource("ingress"), None);
        for (name, kind) in RESOURCES {
            assert_eq!(resource_of(*kind), *name);
            assert_eq!(kind_from_resource(name), Some(*kind));
        }
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now = humantime::parse_rfc3339("2026-01-01T12:00:00Z").unwrap();
        assert_eq!(age("2026-01-01T11:59:30Z", now), "30s");
        assert_eq!(age("2026-01-01T11:00:00Z", now), "60m");
        assert_eq!(age("2025-12-30T12:00:00Z", now), "2d");
        assert_eq!(age("garbage", now), "<unknown>");
    }
}
