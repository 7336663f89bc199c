//! What an object holds beside its metadata, typed by its kind: `spec` and
//! `status` as the structs the reconcilers read ([`Spec`], [`Status`]).
//! JSON is only the edge: objects are read from it (the store's file, an
//! API request, the CLI reading an answer) and written to it, and a part
//! whose JSON the kind's type does not carry exactly (a hand-written status
//! with fields of its own, a store written by an older version) is kept as
//! it was written, so nothing is lost.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::Kind;
use crate::manifest::types::{DaemonSetSpec, DeploymentSpec, JobSpec, NodeSpec, PodSpec, ServiceSpec};
use crate::status::{DaemonSetStatus, DeploymentStatus, JobStatus, NodeStatus, PodStatus, ServiceStatus};

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
/// `Json` variant for a part of another shape.
macro_rules! typed_part {
    ($(#[$doc:meta])* $name:ident { $($variant:ident($ty:ty)),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $(
                #[doc = concat!("A ", stringify!($variant), "'s.")]
                $variant($ty),
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
                    $(Kind::$variant => <$ty>::deserialize(&value).ok().map($name::$variant),)*
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
                            return $name::$variant(typed);
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
                    $($name::$variant(typed) => serde_json::to_value(typed).unwrap_or(Value::Null),)*
                    $name::Json(value) => value.clone(),
                }
            }

            /// The typed value, for a downcast.
            fn as_any(&self) -> &dyn Any {
                match self {
                    $($name::$variant(typed) => typed,)*
                    $name::Json(value) => value,
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $($name::$variant(typed) => typed.serialize(serializer),)*
                    $name::Json(value) => value.serialize(serializer),
                }
            }
        }
    };
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

/// Pod templates seen so far, by their JSON: replicas read back from the
/// store each hold their own copy until [`Spec::share_template`] makes
/// equal ones one.
#[derive(Debug, Default)]
pub struct SharedTemplates(HashMap<Vec<u8>, Arc<PodSpec>>);

impl Spec {
    /// Makes a Pod's template the one already seen with the same content.
    pub fn share_template(&mut self, seen: &mut SharedTemplates) {
        let Spec::Pod(pod) = self else { return };
        let Ok(json) = serde_json::to_vec(&*pod.template) else { return };
        pod.template = seen.0.entry(json).or_insert_with(|| pod.template.clone()).clone();
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
    fn typed_parts_move_in_without_json() {
        let status = PodStatus { phase: crate::status::PodPhase::Running, ..PodStatus::default() };
        let Status::Pod(typed) = Status::from_typed(Kind::Pod, status.clone()) else { panic!("not typed") };
        assert_eq!(typed, status);
        // Another type goes through JSON.
        let from_json = Status::from_typed(Kind::Pod, json!({"phase": "Pending"}));
        assert_eq!(from_json.get::<PodStatus>().map(|s| s.phase.as_str()), Some("Pending"));
        let spec = Spec::from_typed(Kind::Pod, StoredPodSpec::default());
        assert!(spec.get::<PodSpec>().is_some() && spec.get::<StoredPodSpec>().is_some());
    }
}
