//! Events: what happened to an object and why, for people (`flotilla get
//! events`, and the end of `flotilla describe`). Kubernetes' shape:
//! `involvedObject`, `type` (`Normal` or `Warning`), `reason`, `message`,
//! `count`, `firstTimestamp`, `lastTimestamp`. Written by the controller
//! (a manifest cannot apply one) and deleted a day after they last
//! happened.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::manifest::Kind;
use crate::object::ApiObject;
pub use crate::object::{EventFields, InvolvedObject};
use crate::store::Op;

/// How long an event is kept after it last happened.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// A `Warning` event about `object`, named `<object>.<key>` so that the
/// same happening recorded twice is one event.
pub fn warning(object: &ApiObject, key: &str, reason: &str, message: &str, now: SystemTime) -> Op {
    let happening = Happening { key, event_type: "Warning", reason, message };
    Op::Apply(recorded(object, &object.metadata.namespace, &happening, now, None))
}

/// What happened, for [`recorded`].
#[derive(Debug, Clone)]
pub struct Happening<'a> {
    /// Names the event `<object>.<key>`: the same happening is one event.
    pub key: &'a str,
    /// `Normal` or `Warning`.
    pub event_type: &'a str,
    /// One word, `NodeNotReady`.
    pub reason: &'a str,
    /// For people.
    pub message: &'a str,
}

/// An event about `object`: a happening already recorded (`previous`) is
/// counted again, keeping when it first happened. Listed in `namespace` (a
/// cluster-scoped object's events go to `default`, as in Kubernetes).
pub fn recorded(
    object: &ApiObject,
    namespace: &str,
    happening: &Happening<'_>,
    now: SystemTime,
    previous: Option<&ApiObject>,
) -> ApiObject {
    let name = format!("{}.{}", object.metadata.name, happening.key);
    let mut event = ApiObject::new(Kind::Event, namespace, &name);
    let at = humantime::format_rfc3339_seconds(now).to_string();
    let before = previous.map(fields);
    let fields = EventFields {
        involved_object: InvolvedObject { kind: object.kind.to_string(), name: object.metadata.name.clone() },
        event_type: happening.event_type.into(),
        reason: happening.reason.into(),
        message: happening.message.into(),
        count: before.as_ref().map_or(1, |f| f.count.saturating_add(1)),
        first_timestamp: before.map_or_else(|| at.clone(), |f| f.first_timestamp),
        last_timestamp: at,
    };
    event.set_content(fields);
    event
}

/// The fields of a stored event.
pub fn fields(event: &ApiObject) -> EventFields {
    event.content::<EventFields>().map(std::borrow::Cow::into_owned).unwrap_or_default()
}

/// Deletes events that last happened more than [`TTL`] ago.
pub fn collect_garbage(events: &[Arc<ApiObject>], now: SystemTime, ops: &mut Vec<Op>) {
    for event in events {
        let last = event
            .content::<EventFields>()
            .and_then(|f| humantime::parse_rfc3339_weak(&f.last_timestamp).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if now.duration_since(last).is_ok_and(|age| age > TTL) {
            ops.push(Op::Delete(event.key(), None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_names_its_object_and_expires_after_a_day() {
        let deployment = ApiObject::new(Kind::Deployment, "default", "web");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let Op::Apply(event) = warning(&deployment, "rollback-3", "RolledBack", "revision 3 failed", now) else {
            panic!("an apply")
        };
        assert_eq!(event.metadata.name, "web.rollback-3");
        let f = fields(&event);
        assert_eq!((f.involved_object.kind.as_str(), f.involved_object.name.as_str()), ("Deployment", "web"));
        assert_eq!((f.event_type.as_str(), f.reason.as_str(), f.count), ("Warning", "RolledBack", 1));
        let mut ops = Vec::new();
        let events = [Arc::new(event.clone())];
        collect_garbage(&events, now + TTL, &mut ops);
        assert!(ops.is_empty());
        collect_garbage(&events, now + TTL + Duration::from_secs(1), &mut ops);
        assert!(matches!(&ops[..], [Op::Delete(key, None)] if key.name == "web.rollback-3"));
    }

    #[test]
    fn the_same_happening_again_is_counted_on_one_event() {
        let node = ApiObject::new(Kind::Node, "", "edge-1");
        let first_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let lost = |message| Happening { key: "not-ready", event_type: "Warning", reason: "NodeNotReady", message };
        let first = recorded(&node, "default", &lost("lost"), first_at, None);
        assert_eq!((first.metadata.namespace.as_str(), first.metadata.name.as_str()), ("default", "edge-1.not-ready"));
        let later = first_at + Duration::from_secs(60);
        let again = recorded(&node, "default", &lost("lost again"), later, Some(&first));
        let (f, g) = (fields(&first), fields(&again));
        assert_eq!((g.count, g.first_timestamp, g.message.as_str()), (2, f.first_timestamp, "lost again"));
        assert_ne!(g.last_timestamp, f.last_timestamp);
        assert_eq!(g.involved_object.kind, "Node");
    }
}
