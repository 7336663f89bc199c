//! What an object holds beside its metadata, typed by its kind: `spec` and
//! `status` as the structs the reconcilers read ([`Spec`], [`Status`]).
//! JSON is only the edge: objects are read from it (the store's file, an
//! API request, the CLI reading an answer) and written to it, and a part
//! whose JSON the kind's type does not carry exactly (a hand-written status
//! with fields of its own, a store written by an older version) is kept as
//! it was written, so nothing is lost.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::manifest::Kind;
use crate::manifest::types::{
    ClaimSpec, DaemonSetSpec, DeploymentSpec, JobSpec, NodeSpec, PodSpec, ServiceSpec, StatefulSetSpec,
};
use crate::status::{
    ClaimStatus, DaemonSetStatus, DeploymentStatus, JobStatus, NodeStatus, PodStatus, ServiceStatus, StatefulSetStatus,
};

/// A stored Pod's `spec`: its template's, and the node it is bound to (set
/// by the scheduling controller only; a manifest cannot name it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredPodSpec {
    /// What the template (or the Pod manifest) asked for. Shared: the
    /// replicas a workload makes from one template hold one copy (50,000
    /// copies were ~175 MB at 10,000 devices), and a write of a replica's
    /// status or binding copies a pointer, not the containers.
    #[serde(flatten)]
    pub template: Arc<PodSpec>,
    /// The node it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

/// Whether `written` (a typed part written back as JSON) holds everything
/// `read` held: the same values at every path of `read`. It may add fields
/// at their defaults (`paused: false`), which mean what their absence meant.
fn carries(written: &Value, read: &Value) -> bool {
    match (written, read) {
        (Value::Object(w), Value::Object(r)) => r.iter().all(|(k, rv)| w.get(k).is_some_and(|wv| carries(wv, rv))),
        (Value::Array(w), Value::Array(r)) => w.len() == r.len() && w.iter().zip(r).all(|(wv, rv)| carries(wv, rv)),
        (w, r) => w == r,
    }
}

/// Declares an enum with one typed variant per kind that has the part and a
/// `Json` variant for a part of another shape. Typed parts are boxed: the
/// enum is a JSON value's size whatever the largest kind's type (a StatefulSet's
/// spec is half a kilobyte), and a replica, the object a fleet holds
/// 50,000 of, carries only what its own kind needs.
macro_rules! typed_part {
    ($(#[$doc:meta])* $name:ident { $($variant:ident($ty:ty)),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $(
                #[doc = concat!("A ", stringify!($variant), "'s.")]
                $variant(Box<$ty>),
            )*
            /// Of a kind without a typed form, or a shape its kind's type
            /// does not hold exactly: kept as written.
            Json(Value),
        }

        impl $name {
            /// The typed form of `value` for `kind`, or `Json` when the
            /// kind's type would not write the same JSON back.
            pub fn from_value(kind: Kind, value: Value) -> Self {
                let typed = match kind {
                    $(Kind::$variant => <$ty>::deserialize(&value).ok().map(|t| $name::$variant(Box::new(t))),)*
                    _ => None,
                };
                match typed {
                    Some(typed) if carries(&typed.to_value(), &value) => typed,
                    _ => $name::Json(value),
                }
            }

            /// The typed form of `part` for `kind`: moved in when `T` is the
            /// kind's type, else through JSON.
            pub fn from_typed<T: Serialize + Any>(kind: Kind, part: T) -> Self {
                let mut part = Some(part);
                let slot = &mut part as &mut dyn Any;
                match kind {
                    $(Kind::$variant => {
                        if let Some(typed) = slot.downcast_mut::<Option<$ty>>().and_then(Option::take) {
                            return $name::$variant(Box::new(typed));
                        }
                    })*
                    _ => {}
                }
                let value = part.map(|p| serde_json::to_value(&p).unwrap_or(Value::Null)).unwrap_or(Value::Null);
                Self::from_value(kind, value)
            }

            /// As JSON.
            pub fn to_value(&self) -> Value {
                match self {
                    $($name::$variant(typed) => serde_json::to_value(&**typed).unwrap_or(Value::Null),)*
                    $name::Json(value) => value.clone(),
                }
            }

            /// The typed value, for a downcast.
            fn as_any(&self) -> &dyn Any {
                match self {
                    $($name::$variant(typed) => &**typed,)*
                    $name::Json(value) => value,
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $($name::$variant(typed) => (**typed).serialize(serializer),)*
                    $name::Json(value) => value.serialize(serializer),
                }
            }
        }
    };
}

/// A ConfigMap's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapData {
    /// Text values by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Binary values by key (base64 in JSON).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "base64_values")]
    pub binary_data: BTreeMap<String, Vec<u8>>,
}

/// A Secret's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretData {
    /// `Opaque` unless the manifest says otherwise.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub secret_type: String,
    /// Values by key (base64 in JSON).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "base64_values")]
    pub data: BTreeMap<String, Vec<u8>>,
}

/// The fields of an Event (its content, beside `metadata`), Kubernetes'
/// shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFields {
    /// The object it is about.
    #[serde(default)]
    pub involved_object: InvolvedObject,
    /// `Normal` or `Warning`.
    #[serde(default, rename = "type")]
    pub event_type: String,
    /// One CamelCase word.
    #[serde(default)]
    pub reason: String,
    /// For people.
    #[serde(default)]
    pub message: String,
    /// Times it happened.
    #[serde(default)]
    pub count: u32,
    /// First time (RFC 3339).
    #[serde(default)]
    pub first_timestamp: String,
    /// Last time (RFC 3339).
    #[serde(default)]
    pub last_timestamp: String,
}

/// What an event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvolvedObject {
    /// Its kind.
    #[serde(default)]
    pub kind: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
}

/// Byte values written as base64 strings, as Kubernetes writes them.
mod base64_values {
    use std::collections::BTreeMap;

    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(values: &BTreeMap<String, Vec<u8>>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(values.iter().map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let text = BTreeMap::<String, String>::deserialize(deserializer)?;
        text.into_iter()
            .map(|(k, v)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&v)
                    .map_err(|e| serde::de::Error::custom(format!("{k}: not base64: {e}")))?;
                Ok((k, bytes))
            })
            .collect()
    }
}

typed_part! {
    /// The fields of a ConfigMap, Secret or Event beside `metadata` (they
    /// have no `spec`), as one JSON object.
    Content {
        ConfigMap(ConfigMapData),
        Secret(SecretData),
        Event(EventFields),
    }
}

impl Content {
    /// The content as `T`, borrowed when `T` is what is held.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.as_any().downcast_ref::<T>()
    }

    /// Its fields by name.
    pub fn to_map(&self) -> Map<String, Value> {
        match self.to_value() {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}

typed_part! {
    /// A stored object's `spec`.
    Spec {
        Deployment(DeploymentSpec),
        DaemonSet(DaemonSetSpec),
        Job(JobSpec),
        Pod(StoredPodSpec),
        Service(ServiceSpec),
        Node(NodeSpec),
        PersistentVolumeClaim(ClaimSpec),
        StatefulSet(StatefulSetSpec),
    }
}

typed_part! {
    /// A stored object's `status`.
    Status {
        Deployment(DeploymentStatus),
        DaemonSet(DaemonSetStatus),
        Job(JobStatus),
        Pod(PodStatus),
        Service(ServiceStatus),
        Node(NodeStatus),
        PersistentVolumeClaim(ClaimStatus),
        StatefulSet(StatefulSetStatus),
    }
}

impl Spec {
    /// The spec as `T`, borrowed when `T` is what is held (a Pod's template
    /// spec included).
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.as_any().downcast_ref::<T>().or_else(|| match self {
            Spec::Pod(pod) => (&*pod.template as &dyn Any).downcast_ref::<T>(),
            _ => None,
        })
    }
}

/// Pod templates seen so far, by the workload and template hash their
/// replicas carry: replicas read back from the store each hold their own
/// copy until [`Spec::share_template`] makes equal ones one.
#[derive(Debug, Default)]
pub struct SharedTemplates(HashMap<(String, String), Arc<PodSpec>>);

impl Spec {
    /// Makes a Pod's template the one already seen under `key` (its owner's
    /// uid and its `pod-template-hash` label), when the two are equal: the
    /// key only says where to look, equality decides.
    pub fn share_template(&mut self, key: (String, String), seen: &mut SharedTemplates) {
        let Spec::Pod(pod) = self else { return };
        match seen.0.entry(key) {
            std::collections::hash_map::Entry::Occupied(kept) => {
                if **kept.get() == *pod.template {
                    pod.template = kept.get().clone();
                }
            }
            std::collections::hash_map::Entry::Vacant(slot) => _ = slot.insert(pod.template.clone()),
        }
    }
}

impl Status {
    /// The status as `T`, borrowed when `T` is what is held.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.as_any().downcast_ref::<T>()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parts_are_typed_when_their_type_writes_the_same_json() {
        let spec = json!({"containers": [{"name": "c", "image": "web:1"}], "nodeName": "edge-1"});
        let Spec::Pod(pod) = Spec::from_value(Kind::Pod, spec.clone()) else { panic!("not typed") };
        assert_eq!(pod.node_name.as_deref(), Some("edge-1"));
        assert_eq!(pod.template.containers[0].image, "web:1");
        assert!(carries(&Spec::Pod(pod).to_value(), &spec));
        // No larger than a JSON value, whatever the largest kind's type.
        assert_eq!(std::mem::size_of::<Spec>(), std::mem::size_of::<Value>());

        let status = json!({"phase": "Running"});
        assert!(matches!(Status::from_value(Kind::Pod, status), Status::Pod(_)));
    }

    #[test]
    fn parts_of_another_shape_are_kept_as_written() {
        // A field PodStatus does not have would be lost by typing it.
        let status = json!({"phase": "Running", "mine": 1});
        assert_eq!(Status::from_value(Kind::Pod, status.clone()), Status::Json(status.clone()));
        assert_eq!(Status::from_value(Kind::Pod, status.clone()).to_value(), status);
        // Fields added at their defaults lose nothing.
        let spec = json!({});
        assert!(matches!(Spec::from_value(Kind::Node, spec), Spec::Node(_)));
        // A kind without a typed status.
        assert!(matches!(Status::from_value(Kind::ConfigMap, json!({"a": 1})), Status::Json(_)));
    }

    #[test]
    fn config_maps_secrets_and_events_are_typed_and_what_their_types_lack_is_kept() {
        let config = json!({"data": {"mode": "fast"}, "binaryData": {"blob": "AAEC"}});
        let Content::ConfigMap(typed) = Content::from_value(Kind::ConfigMap, config.clone()) else {
            panic!("not typed")
        };
        assert_eq!((typed.data["mode"].as_str(), typed.binary_data["blob"].as_slice()), ("fast", &[0u8, 1, 2][..]));
        assert_eq!(Content::ConfigMap(typed).to_value(), config);

        let secret = json!({"type": "Opaque", "data": {"password": "aHVudGVyMg=="}});
        let Content::Secret(typed) = Content::from_value(Kind::Secret, secret.clone()) else { panic!("not typed") };
        assert_eq!(typed.data["password"], b"hunter2");
        assert_eq!(Content::Secret(typed).to_value(), secret);

        let event = json!({"involvedObject": {"kind": "Deployment", "name": "web"}, "type": "Warning",
                           "reason": "RolledBack", "message": "m", "count": 2,
                           "firstTimestamp": "2026-12-07T00:00:00Z", "lastTimestamp": "2026-12-07T00:01:00Z"});
        assert!(matches!(Content::from_value(Kind::Event, event.clone()), Content::Event(e) if e.count == 2));

        // Fields the types do not have (`immutable`, `stringData`), and data
        // that is not base64, are kept as written.
        for (kind, kept) in [
            (Kind::ConfigMap, json!({"data": {"a": "b"}, "immutable": true})),
            (Kind::Secret, json!({"stringData": {"user": "admin"}})),
            (Kind::Secret, json!({"data": {"k": "not base64!"}})),
        ] {
            assert_eq!(Content::from_value(kind, kept.clone()), Content::Json(kept));
        }
    }

    #[test]
    fn typed_parts_move_in_without_json() {
        let status = PodStatus { phase: crate::status::PodPhase::Running, ..PodStatus::default() };
        let Status::Pod(typed) = Status::from_typed(Kind::Pod, status.clone()) else { panic!("not typed") };
        assert_eq!(*typed, status);
        // Another type goes through JSON.
        let from_json = Status::from_typed(Kind::Pod, json!({"phase": "Pending"}));
        assert_eq!(from_json.get::<PodStatus>().map(|s| s.phase.as_str()), Some("Pending"));
        let spec = Spec::from_typed(Kind::Pod, StoredPodSpec::default());
        assert!(spec.get::<PodSpec>().is_some() && spec.get::<StoredPodSpec>().is_some());
    }
}
