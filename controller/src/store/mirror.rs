//! Every object in memory, as of one resourceVersion, with the recent
//! changes for watches: what every store serves reads, lists and watches
//! from. Its one writer is the backend's commit path (redb: after the disk
//! write; etcd: the watch on etcd), which hands it each change in order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use super::{EventType, Objects, Outcome, StoreError, Subscription, View, WatchEvent};
use crate::manifest::Kind;
use crate::object::{ApiObject, ObjectKey};

/// Changes remembered for watches (a watch from an older resourceVersion is
/// told 410 Gone and lists again, as Kubernetes'). Each holds an object
/// version alive: 20,000 of them kept gigabytes of old pod versions at
/// 10,000 devices.
const HISTORY: usize = 4096;

struct State {
    /// Shared with every [`View`] taken since it last changed.
    objects: Objects,
    resource_version: u64,
    history: VecDeque<Arc<WatchEvent>>,
    /// The oldest version a watch may start from.
    oldest: u64,
}

/// The objects in memory and their watchers.
pub(super) struct Mirror {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    /// The resourceVersion the mirror has reached, and its waiters (a
    /// commit waits here for its own write to come back through etcd's watch).
    reached: (Mutex<u64>, std::sync::Condvar),
}

impl Mirror {
    /// `objects` as of `resource_version`.
    pub(super) fn new(objects: Objects, resource_version: u64) -> Mirror {
        let (events, _) = broadcast::channel(4096);
        let reached = (Mutex::new(resource_version), std::sync::Condvar::new());
        let state = State { objects, resource_version, history: VecDeque::new(), oldest: resource_version };
        Mirror { state: Mutex::new(state), events, reached }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Memory changes only after the backend's write, in one step, so a
        // panic elsewhere cannot leave it half changed: go on.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The objects and their version, shared (a commit stages on these).
    pub(super) fn objects(&self) -> (Objects, u64) {
        let state = self.lock();
        (state.objects.clone(), state.resource_version)
    }

    pub(super) fn get(&self, key: &ObjectKey) -> Option<Arc<ApiObject>> {
        self.lock().objects.get(key).cloned()
    }

    pub(super) fn view(&self) -> View {
        let state = self.lock();
        View::new(state.objects.clone(), state.resource_version)
    }

    pub(super) fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// Waits (blocking) until the mirror is at `resource_version` or past it,
    /// or `timeout` passes; whether it got there.
    pub(super) fn wait_for(&self, resource_version: u64, timeout: std::time::Duration) -> bool {
        let (reached, changed) = &self.reached;
        let reached = reached.lock().unwrap_or_else(|p| p.into_inner());
        let (reached, _) = changed
            .wait_timeout_while(reached, timeout, |at| *at < resource_version)
            .unwrap_or_else(|p| p.into_inner());
        *reached >= resource_version
    }

    pub(super) fn counts(&self) -> Vec<(Kind, usize)> {
        let state = self.lock();
        let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
        for key in state.objects.keys() {
            *counts.entry(key.kind).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    pub(super) fn subscribe(&self, resource_version: u64) -> Result<Subscription, StoreError> {
        let state = self.lock();
        // Subscribe under the lock: no change can slip between backlog and live.
        let live = self.events.subscribe();
        if resource_version == 0 {
            return Ok(Subscription { backlog: Vec::new(), live, after: state.resource_version });
        }
        if resource_version < state.oldest {
            return Err(StoreError::Gone { requested: resource_version, oldest: state.oldest });
        }
        let backlog: Vec<_> =
            state.history.iter().filter(|e| e.resource_version() > resource_version).cloned().collect();
        Ok(Subscription { backlog, live, after: state.resource_version.max(resource_version) })
    }

    /// Takes `changes` (in order), the store now at `resource_version`.
    pub(super) fn apply(&self, changes: Vec<Arc<WatchEvent>>, resource_version: u64) {
        let mut state = self.lock();
        for event in changes {
            let key = event.object.key();
            match event.event_type {
                EventType::Deleted => state.objects.remove(&key),
                EventType::Added | EventType::Modified => state.objects.insert(key, event.object.clone()),
            }
            if state.history.len() == HISTORY
                && let Some(old) = state.history.pop_front()
            {
                state.oldest = old.resource_version();
            }
            state.history.push_back(event.clone());
            let _ = self.events.send(event); // no watcher is fine
        }
        state.resource_version = state.resource_version.max(resource_version);
        drop(state);
        let (reached, changed) = &self.reached;
        let mut at = reached.lock().unwrap_or_else(|p| p.into_inner());
        *at = (*at).max(resource_version);
        changed.notify_all();
    }

    /// Starts again from `objects` (a relist after the backend lost track,
    /// etcd's compaction): watchers get the differences as changes, and a
    /// watch from before `resource_version` is told to list again.
    pub(super) fn reset(&self, objects: Objects, resource_version: u64) {
        let (before, _) = self.objects();
        let mut changes = Vec::new();
        for (key, object) in before.iter() {
            if objects.get(key).is_none() {
                let mut gone = ApiObject::clone(object);
                gone.metadata.resource_version = resource_version.to_string();
                changes.push(Arc::new(WatchEvent { event_type: EventType::Deleted, object: Arc::new(gone) }));
            }
        }
        for (key, object) in objects.iter() {
            match before.get(key) {
                None => changes.push(Arc::new(WatchEvent { event_type: EventType::Added, object: object.clone() })),
                Some(old) if old.resource_version() != object.resource_version() => {
                    changes.push(Arc::new(WatchEvent { event_type: EventType::Modified, object: object.clone() }))
                }
                Some(_) => {}
            }
        }
        self.apply(changes, resource_version);
        let mut state = self.lock();
        state.history.clear();
        state.oldest = resource_version;
    }
}

/// The watch events of a batch's outcomes (in op order, which is
/// resourceVersion order); unchanged objects make none.
pub(super) fn changes_of(outcomes: &[Outcome]) -> Vec<Arc<WatchEvent>> {
    outcomes
        .iter()
        .filter_map(|outcome| {
            let event_type = match outcome {
                Outcome::Created(_) => EventType::Added,
                Outcome::Configured(_) => EventType::Modified,
                Outcome::Deleted(_) => EventType::Deleted,
                Outcome::Unchanged(_) => return None,
            };
            Some(Arc::new(WatchEvent { event_type, object: outcome.shared().clone() }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, rv: u64) -> Arc<ApiObject> {
        let mut object = ApiObject::new(Kind::ConfigMap, "default", name);
        object.metadata.resource_version = rv.to_string();
        Arc::new(object)
    }

    #[test]
    fn a_relist_tells_watchers_the_differences_and_refuses_older_watches() {
        let mut before = Objects::default();
        for (name, rv) in [("kept", 1), ("changed", 2), ("gone", 3)] {
            before.insert(object(name, rv).key(), object(name, rv));
        }
        let mirror = Mirror::new(before, 3);
        let mut watching = mirror.subscribe(0).unwrap();
        let mut after = Objects::default();
        for (name, rv) in [("kept", 1), ("changed", 9), ("new", 10)] {
            after.insert(object(name, rv).key(), object(name, rv));
        }
        mirror.reset(after, 12);
        let mut told = Vec::new();
        while let Ok(event) = watching.live.try_recv() {
            told.push((event.event_type.clone(), event.object.metadata.name.clone()));
        }
        told.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            told,
            [
                (EventType::Modified, "changed".to_owned()),
                (EventType::Deleted, "gone".to_owned()),
                (EventType::Added, "new".to_owned()),
            ]
        );
        assert_eq!(mirror.resource_version(), 12);
        assert!(matches!(mirror.subscribe(5), Err(StoreError::Gone { .. })));
        assert!(mirror.wait_for(12, std::time::Duration::ZERO));
    }
}
