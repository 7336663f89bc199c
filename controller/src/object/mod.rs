//! Objects as the store and the API hold them: Kubernetes' shape
//! (`apiVersion`, `kind`, `metadata`, then `spec`/`status` or `data`), with
//! the server-owned metadata (uid, resourceVersion, generation, creation
//! time) that manifests do not carry.
//!
//! `spec` and `status` are typed by kind ([`content`]); JSON is only how
//! objects are read and written at the edges (the store's file, the API).

mod content;

use std::any::Any;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

pub use content::{
    ConfigMapData, Content, EventFields, InvolvedObject, SecretData, SharedTemplates, Spec, Status, StoredPodSpec,
};

use crate::manifest::{Body, Kind, Object};

/// Plural resource names as they appear in URLs, with the kind each names.
pub const RESOURCES: &[(&str, Kind)] = &[
    ("deployments", Kind::Deployment),
    ("daemonsets", Kind::DaemonSet),
    ("statefulsets", Kind::StatefulSet),
    ("jobs", Kind::Job),
    ("pods", Kind::Pod),
    ("services", Kind::Service),
    ("configmaps", Kind::ConfigMap),
    ("secrets", Kind::Secret),
    ("nodes", Kind::Node),
    ("namespaces", Kind::Namespace),
    ("events", Kind::Event),
    ("persistentvolumeclaims", Kind::PersistentVolumeClaim),
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
        "statefulsets" | "statefulset" | "sts" => Kind::StatefulSet,
        "jobs" | "job" => Kind::Job,
        "pods" | "pod" | "po" | "replicas" | "replica" => Kind::Pod,
        "services" | "service" | "svc" => Kind::Service,
        "configmaps" | "configmap" | "cm" => Kind::ConfigMap,
        "secrets" | "secret" => Kind::Secret,
        "nodes" | "node" | "no" => Kind::Node,
        "namespaces" | "namespace" | "ns" => Kind::Namespace,
        "events" | "event" | "ev" => Kind::Event,
        "persistentvolumeclaims" | "persistentvolumeclaim" | "pvc" => Kind::PersistentVolumeClaim,
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

/// Label carrying the template hash on the replicas a workload derives
/// from one template.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// A stored object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiObject {
    /// `apps/v1`, `batch/v1` or `v1`.
    pub api_version: String,
    /// The kind.
    pub kind: Kind,
    /// Metadata.
    pub metadata: Metadata,
    /// `spec`, typed by kind.
    spec: Option<Spec>,
    /// `status`, typed by kind.
    status: Option<Status>,
    /// Every other field beside `metadata`: a ConfigMap's, Secret's or
    /// Event's content, typed; another kind's extra fields as JSON.
    other: Option<Content>,
    /// Values derived from this version, made once. Objects in the store
    /// are never changed in place (a write stores a new one), so they stay
    /// true; a clone starts without them because clones are made to be
    /// changed.
    derived: Derived,
}

/// The lazily filled caches of an [`ApiObject`].
#[derive(Default)]
struct Derived {
    /// Up to two values derived from this version (the scheduler's model of
    /// a replica or a node, its table row), see [`ApiObject::memo`].
    memos: [OnceLock<Box<dyn Any + Send + Sync>>; 2],
}

/// How objects are written as JSON: `apiVersion`, `kind`, `metadata`, then
/// the other fields in key order.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireObject {
    api_version: String,
    kind: Kind,
    metadata: Metadata,
    #[serde(flatten)]
    content: Map<String, Value>,
}

impl<'de> Deserialize<'de> for ApiObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireObject::deserialize(deserializer)?;
        let mut object = ApiObject {
            api_version: wire.api_version,
            kind: wire.kind,
            metadata: wire.metadata,
            spec: None,
            status: None,
            other: None,
            derived: Derived::default(),
        };
        let mut other = Map::new();
        for (field, value) in wire.content {
            match field.as_str() {
                "spec" | "status" => object.set_field(&field, value),
                _ => _ = other.insert(field, value),
            }
        }
        if !other.is_empty() {
            object.other = Some(Content::from_value(object.kind, Value::Object(other)));
        }
        Ok(object)
    }
}

impl Serialize for ApiObject {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Part<'a> {
            Spec(&'a Spec),
            Status(&'a Status),
            Json(&'a Value),
        }
        let other = self.other.as_ref().map(Content::to_map).unwrap_or_default();
        let mut rest: Vec<(&str, Part<'_>)> = other.iter().map(|(k, v)| (k.as_str(), Part::Json(v))).collect();
        if let Some(spec) = &self.spec {
            rest.push(("spec", Part::Spec(spec)));
        }
        if let Some(status) = &self.status {
            rest.push(("status", Part::Status(status)));
        }
        rest.sort_by_key(|(key, _)| *key);
        let mut map = serializer.serialize_map(Some(3 + rest.len()))?;
        map.serialize_entry("apiVersion", &self.api_version)?;
        map.serialize_entry("kind", &self.kind)?;
        map.serialize_entry("metadata", &self.metadata)?;
        for (key, part) in rest {
            map.serialize_entry(key, &part)?;
        }
        map.end()
    }
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
            spec: None,
            status: None,
            other: None,
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
        match &self.spec {
            Some(Spec::Pod(spec)) => spec.node_name.as_deref(),
            Some(Spec::Json(spec)) => spec.get("nodeName").and_then(Value::as_str),
            _ => None,
        }
    }

    /// Binds a pod to `node`, or unbinds it (`None`).
    pub fn set_node_name(&mut self, node: Option<&str>) {
        match self.spec.get_or_insert_with(|| Spec::from_typed(self.kind, StoredPodSpec::default())) {
            Spec::Pod(spec) => spec.node_name = node.map(str::to_owned),
            Spec::Json(Value::Object(spec)) => match node {
                Some(node) => _ = spec.insert("nodeName".to_owned(), Value::String(node.to_owned())),
                None => _ = spec.remove("nodeName"),
            },
            _ => {}
        }
        self.derived = Derived::default();
    }

    /// Shares a Pod's template with an equal one already seen from the same
    /// workload and template (the store does this for replicas it reads
    /// back, which would otherwise each hold a copy). Pods without an owner
    /// or template hash are compared with the first such pod seen.
    pub fn share_template(&mut self, seen: &mut SharedTemplates) {
        let owner = self.metadata.owner_references.first().map(|o| o.uid.clone()).unwrap_or_default();
        let hash = self.metadata.labels.get(TEMPLATE_HASH_LABEL).cloned().unwrap_or_default();
        let key = (owner, hash);
        if let Some(spec) = &mut self.spec {
            spec.share_template(key, seen);
        }
    }

    /// `spec`, as stored.
    pub fn spec_part(&self) -> Option<&Spec> {
        self.spec.as_ref()
    }

    /// `status`, as stored.
    pub fn status_part(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    /// `spec` as `T` when that is how it is held (the kind's spec type; a
    /// Pod's template spec), borrowed for as long as the object.
    pub fn spec_ref<T: 'static>(&self) -> Option<&T> {
        self.spec.as_ref()?.get::<T>()
    }

    /// `status` as `T` when that is how it is held (the kind's status type).
    pub fn status_ref<T: 'static>(&self) -> Option<&T> {
        self.status.as_ref()?.get::<T>()
    }

    /// Whether it has a `status`.
    pub fn has_status(&self) -> bool {
        self.status.is_some()
    }

    /// `spec` as `T`; `None` if absent or of another shape.
    pub fn spec<T: DeserializeOwned + Clone + 'static>(&self) -> Option<T> {
        self.typed_spec::<T>().map(Cow::into_owned)
    }

    /// `status` as `T`; the default when absent or unreadable.
    pub fn status<T: DeserializeOwned + Default + Clone + 'static>(&self) -> T {
        self.typed_status::<T>().into_owned()
    }

    /// `spec` as `T`, borrowed when `T` is the kind's spec type (what the
    /// reconcilers ask for); else converted through JSON.
    pub fn typed_spec<T: DeserializeOwned + Clone + 'static>(&self) -> Option<Cow<'_, T>> {
        let spec = self.spec.as_ref()?;
        if let Some(typed) = spec.get::<T>() {
            return Some(Cow::Borrowed(typed));
        }
        match spec {
            Spec::Json(value) => T::deserialize(value).ok().map(Cow::Owned),
            typed => T::deserialize(typed.to_value()).ok().map(Cow::Owned),
        }
    }

    /// `status` as `T` (see [`ApiObject::typed_spec`]); the default when
    /// absent or unreadable.
    pub fn typed_status<T: DeserializeOwned + Default + Clone + 'static>(&self) -> Cow<'_, T> {
        let Some(status) = &self.status else { return Cow::Owned(T::default()) };
        if let Some(typed) = status.get::<T>() {
            return Cow::Borrowed(typed);
        }
        let converted = match status {
            Status::Json(value) => T::deserialize(value).ok(),
            typed => T::deserialize(typed.to_value()).ok(),
        };
        Cow::Owned(converted.unwrap_or_default())
    }

    /// This object as JSON. Not kept: every stored object holding its JSON
    /// was ~150 MB at 10,000 devices, for lists that now ask for table rows.
    pub fn json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `make(self)`, made once for this stored version and kept with it:
    /// what every pass (or every list) would otherwise derive again from an
    /// object that has not changed. Two types per object; a third type
    /// asked of the same object is made each time (`Cow::Owned`).
    pub fn memo<T: Any + Send + Sync + Clone>(&self, make: impl Fn(&Self) -> T) -> Cow<'_, T> {
        for slot in &self.derived.memos {
            let kept = slot.get_or_init(|| Box::new(make(self)));
            if let Some(value) = kept.downcast_ref::<T>() {
                return Cow::Borrowed(value);
            }
        }
        Cow::Owned(make(self))
    }

    /// Sets `spec` (typed as the kind's when `T` is its spec type).
    pub fn set_spec<T: Serialize + Any>(&mut self, spec: T) {
        self.spec = Some(Spec::from_typed(self.kind, spec));
        self.derived = Derived::default();
    }

    /// Sets `status` (typed as the kind's when `T` is its status type).
    pub fn set_status<T: Serialize + Clone + Any>(&mut self, status: &T) {
        self.status = Some(Status::from_typed(self.kind, status.clone()));
        self.derived = Derived::default();
    }

    /// Takes `status` as `other` has it (or none).
    pub fn copy_status_of(&mut self, other: &ApiObject) {
        self.status = other.status.clone();
        self.derived = Derived::default();
    }

    /// Takes `status` from `other`, leaving it without.
    pub fn take_status_of(&mut self, other: &mut ApiObject) {
        self.status = other.status.take();
        self.derived = Derived::default();
        other.derived = Derived::default();
    }

    /// Whether both have the same `status` (or none).
    pub fn same_status(&self, other: &ApiObject) -> bool {
        self.status == other.status
    }

    /// Whether `self` and `other` hold the same content but for `status`
    /// (what an apply sets).
    pub fn same_content_but_status(&self, other: &ApiObject) -> bool {
        self.spec == other.spec && self.other == other.other
    }

    /// Takes the content (all but metadata and status) of `other`.
    pub fn take_content_of(&mut self, other: &mut ApiObject) {
        self.spec = other.spec.take();
        self.other = other.other.take();
        self.derived = Derived::default();
        other.derived = Derived::default();
    }

    /// One field beside `metadata` as JSON (`spec`, `status`, `data`, ...):
    /// for the edges (describe, tables, tests).
    pub fn field(&self, name: &str) -> Option<Value> {
        match name {
            "spec" => self.spec.as_ref().map(Spec::to_value),
            "status" => self.status.as_ref().map(Status::to_value),
            _ => self.other.as_ref().and_then(|o| o.to_map().remove(name)),
        }
    }

    /// Sets one field beside `metadata` from JSON (typed when it is `spec`
    /// or `status` of the kind's shape).
    pub fn set_field(&mut self, name: &str, value: Value) {
        match name {
            "spec" => self.spec = Some(Spec::from_value(self.kind, value)),
            "status" => self.status = Some(Status::from_value(self.kind, value)),
            _ => {
                let mut other = self.other.as_ref().map(Content::to_map).unwrap_or_default();
                other.insert(name.to_owned(), value);
                self.other = Some(Content::from_value(self.kind, Value::Object(other)));
            }
        }
        self.derived = Derived::default();
    }

    /// Sets the content of a ConfigMap, Secret or Event (typed when `T` is
    /// the kind's content type).
    pub fn set_content<T: Serialize + Any>(&mut self, content: T) {
        self.other = Some(Content::from_typed(self.kind, content));
        self.derived = Derived::default();
    }

    /// The content as `T` when the kind's content is `T` (a ConfigMap's
    /// [`ConfigMapData`], a Secret's [`SecretData`], an Event's
    /// [`EventFields`]): borrowed when held typed, read from JSON when kept
    /// as written.
    pub fn content<T: Clone + DeserializeOwned + 'static>(&self) -> Option<Cow<'_, T>> {
        let other = self.other.as_ref()?;
        match other.get::<T>() {
            Some(typed) => Some(Cow::Borrowed(typed)),
            None => serde_json::from_value(other.to_value()).ok().map(Cow::Owned),
        }
    }

    /// Every field beside `metadata`, as JSON.
    pub fn fields(&self) -> Map<String, Value> {
        let mut out = self.other.as_ref().map(Content::to_map).unwrap_or_default();
        if let Some(spec) = &self.spec {
            out.insert("spec".to_owned(), spec.to_value());
        }
        if let Some(status) = &self.status {
            out.insert("status".to_owned(), status.to_value());
        }
        out
    }

    /// Builds the stored form of a parsed manifest object.
    pub fn from_manifest(object: &Object) -> Self {
        let mut out = ApiObject::new(object.kind, &object.metadata.namespace, &object.metadata.name);
        out.metadata.labels = object.metadata.labels.clone();
        out.metadata.annotations = object.metadata.annotations.clone();
        match &object.body {
            Body::Deployment(s) => out.set_spec(s.clone()),
            Body::DaemonSet(s) => out.set_spec(s.clone()),
            Body::Job(s) => out.set_spec(s.clone()),
            Body::Pod(s) => out.set_spec(StoredPodSpec { template: Arc::new(s.clone()), node_name: None }),
            Body::Service(s) => out.set_spec(s.clone()),
            Body::Node(s) => out.set_spec(s.clone()),
            Body::PersistentVolumeClaim(s) => out.set_spec(s.clone()),
            Body::StatefulSet(s) => out.set_spec(s.clone()),
            Body::Namespace => {}
            Body::ConfigMap(d) => {
                if !d.data.is_empty() || !d.binary_data.is_empty() {
                    out.set_content(ConfigMapData { data: d.data.clone(), binary_data: d.binary_data.clone() });
                }
            }
            Body::Secret(d) => {
                let secret_type = if d.secret_type.is_empty() { "Opaque" } else { &d.secret_type };
                out.set_content(SecretData { secret_type: secret_type.to_owned(), data: d.data.clone() });
            }
        }
        out
    }

    /// A ConfigMap's or Secret's keys (for `describe` and reference checks).
    pub fn data_keys(&self) -> Vec<String> {
        self.config_entries().into_iter().map(|(key, _)| key).collect()
    }

    /// `(key, bytes)` of a ConfigMap (`data`, `binaryData`) or Secret
    /// (`data`, and `stringData` of one kept as written), sorted by key.
    pub fn config_entries(&self) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = match &self.other {
            Some(Content::ConfigMap(config)) => config
                .data
                .iter()
                .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                .chain(config.binary_data.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect(),
            Some(Content::Secret(secret)) => secret.data.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Some(Content::Json(Value::Object(map))) => json_config_entries(self.kind == Kind::Secret, map),
            _ => Vec::new(),
        };
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }
}

/// The entries of a ConfigMap or Secret whose content its type does not
/// carry (kept as written): text in `data` (base64 for a Secret),
/// `stringData`, base64 in `binaryData`.
fn json_config_entries(secret: bool, map: &Map<String, Value>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for field in ["data", "binaryData", "stringData"] {
        let Some(Value::Object(values)) = map.get(field) else { continue };
        for (key, value) in values {
            let Some(text) = value.as_str() else { continue };
            let base64 = field == "binaryData" || (secret && field == "data");
            let bytes = if base64 {
                base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_else(|_| text.as_bytes().to_vec())
            } else {
                text.as_bytes().to_vec()
            };
            out.push((key.clone(), bytes));
        }
    }
    out
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
    Age::since(then, now).to_string()
}

/// An AGE cell (see [`age`]), written where it is displayed: the server
/// writes one per row of every table answer.
pub struct Age(u64);

impl Age {
    /// The age at `now` of something made at `then`.
    pub fn since(then: std::time::SystemTime, now: std::time::SystemTime) -> Self {
        Age(now.duration_since(then).map(|d| d.as_secs()).unwrap_or(0))
    }
}

impl std::fmt::Display for Age {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            s if s < 120 => write!(f, "{s}s"),
            s if s < 2 * 3600 => write!(f, "{}m", s / 60),
            s if s < 2 * 86400 => write!(f, "{}h", s / 3600),
            s => write!(f, "{}d", s / 86400),
        }
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
        assert_eq!(secret.field("data").unwrap()["token"], "YWJj");
        assert_eq!(secret.field("type").unwrap(), "Opaque");
        let deployment = ApiObject::from_manifest(&parsed.objects[1]);
        let json = serde_json::to_value(&deployment).unwrap();
        assert_eq!(json["apiVersion"], "apps/v1");
        assert_eq!(json["spec"]["replicas"], 2);
        let spec: crate::manifest::types::DeploymentSpec = deployment.spec().unwrap();
        assert_eq!(spec.template.spec.containers[0].image, "web:1");
    }

    #[test]
    fn objects_read_back_from_json_are_typed_again() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  \
                    selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    \
                    spec:\n      containers: [{name: c, image: web:1, resources: {limits: {memory: 64Mi}}}]\n";
        let parsed = parse_str("t.yaml", text).unwrap();
        let mut deployment = ApiObject::from_manifest(&parsed.objects[0]);
        deployment.set_status(&crate::status::DeploymentStatus { replicas: 2, ..Default::default() });
        let mut pod = ApiObject::new(Kind::Pod, "default", "web-1");
        let template =
            Arc::new(deployment.spec_ref::<crate::manifest::types::DeploymentSpec>().unwrap().template.spec.clone());
        pod.set_spec(StoredPodSpec { template, node_name: Some("edge-1".into()) });
        pod.set_status(&crate::status::PodStatus { phase: crate::status::PodPhase::Running, ..Default::default() });
        for object in [deployment, pod] {
            // What the store writes and reads back (and the CLI reads).
            let read: ApiObject = serde_json::from_slice(&object.json()).unwrap();
            assert_eq!(read, object);
            assert!(!matches!(read.spec_part(), Some(Spec::Json(_)) | None), "{:?}", read.spec_part());
            assert!(!matches!(read.status_part(), Some(Status::Json(_)) | None), "{:?}", read.status_part());
        }
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

    #[test]
    fn config_entries_read_typed_content_and_content_kept_as_written() {
        let mut secret = ApiObject::new(Kind::Secret, "default", "db");
        secret.set_field("data", serde_json::json!({"password": "aHVudGVyMg=="}));
        secret.set_field("type", serde_json::json!("Opaque"));
        assert!(secret.content::<SecretData>().is_some_and(|s| matches!(s, Cow::Borrowed(_))));
        assert_eq!(secret.config_entries(), [("password".to_owned(), b"hunter2".to_vec())]);
        let mut kept = ApiObject::new(Kind::Secret, "default", "db");
        kept.set_field("stringData", serde_json::json!({"user": "admin"}));
        assert_eq!(kept.config_entries(), [("user".to_owned(), b"admin".to_vec())]);
        assert_eq!(kept.field("stringData").unwrap()["user"], "admin");
    }
}
