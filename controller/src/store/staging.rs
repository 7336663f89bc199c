//! A batch of writes run against the objects in memory, writing nothing:
//! what every store does first. Preconditions, server-side apply (uids,
//! generations, what the server keeps), status writes, retirements and
//! deletes are decided here, once, for every backend; the backend then
//! makes the staged changes durable (redb's file, etcd's transaction).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Objects, Op, Outcome, StoreError};
use crate::object::{ApiObject, ObjectKey, now_rfc3339};

pub(super) fn check_precondition(
    key: &ObjectKey,
    requested: u64,
    current: Option<&ApiObject>,
) -> Result<(), StoreError> {
    match current {
        Some(current) if requested != 0 && requested != current.resource_version() => {
            Err(StoreError::Conflict { key: key.clone(), current: current.resource_version(), requested })
        }
        None if requested != 0 => Err(StoreError::NotFound(key.clone())),
        _ => Ok(()),
    }
}

pub(super) fn validate(object: &ApiObject) -> Result<(), StoreError> {
    if object.metadata.name.is_empty() {
        return Err(StoreError::Invalid(format!("a {} needs metadata.name", object.kind)));
    }
    if object.kind.is_namespaced() && object.metadata.namespace.is_empty() {
        return Err(StoreError::Invalid(format!("{} {} needs a namespace", object.kind, object.metadata.name)));
    }
    Ok(())
}

/// What a batch writes (`None`: deletes), each op's outcome, and the
/// resourceVersion after it.
pub(super) type Staged = (BTreeMap<ObjectKey, Option<Arc<ApiObject>>>, Vec<Outcome>, u64);

/// Runs a batch against `objects` (as of `base_rv`) in memory, writing
/// nothing: the first op that is refused refuses the batch.
pub(super) fn stage(objects: &Objects, base_rv: u64, ops: Vec<Op>) -> Result<Staged, StoreError> {
    let now = now_rfc3339();
    let mut rv = base_rv;
    // Work on a copy of what the batch touches, so that a failing op
    // leaves nothing behind.
    // Objects are shared, never copied, unless a write changes them.
    let mut staged: BTreeMap<ObjectKey, Option<Arc<ApiObject>>> = BTreeMap::new();
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        let current = |key: &ObjectKey, staged: &BTreeMap<ObjectKey, Option<Arc<ApiObject>>>| match staged.get(key) {
            Some(v) => v.clone(),
            None => objects.get(key).cloned(),
        };
        match op {
            Op::Create(object) if !object.metadata.uid.is_empty() => {
                return Err(StoreError::Invalid(format!("{} carries a uid; uids are set by the server", object.key())));
            }
            Op::Create(object) if current(&object.key(), &staged).is_some() => {
                return Err(StoreError::AlreadyExists(object.key()));
            }
            Op::Apply(object) | Op::Create(object) => {
                validate(&object)?;
                let key = object.key();
                let existing = current(&key, &staged);
                check_precondition(&key, object.resource_version(), existing.as_deref())?;
                // A uid, when given, must be the stored one: a re-created
                // object is another object.
                if !object.metadata.uid.is_empty()
                    && existing.as_ref().is_none_or(|e| e.metadata.uid != object.metadata.uid)
                {
                    return Err(StoreError::Conflict {
                        key,
                        current: existing.map_or(0, |e| e.resource_version()),
                        requested: object.resource_version(),
                    });
                }
                let outcome = apply_one(object, existing, &mut rv, &now);
                if !matches!(outcome, Outcome::Unchanged(_)) {
                    staged.insert(key, Some(outcome.shared().clone()));
                }
                outcomes.push(outcome);
            }
            Op::UpdateStatus(object) => {
                let key = object.key();
                let existing = current(&key, &staged).ok_or_else(|| StoreError::NotFound(key.clone()))?;
                check_precondition(&key, object.resource_version(), Some(&existing))?;
                if existing.same_status(&object) {
                    outcomes.push(Outcome::Unchanged(existing));
                    continue;
                }
                let mut new = ApiObject::clone(&existing);
                let mut object = object;
                new.take_status_of(&mut object);
                rv += 1;
                new.metadata.resource_version = rv.to_string();
                let new = Arc::new(new);
                staged.insert(key, Some(new.clone()));
                outcomes.push(Outcome::Configured(new));
            }
            Op::Retire { key, uid } => {
                let existing = current(&key, &staged).ok_or_else(|| StoreError::NotFound(key.clone()))?;
                if existing.metadata.uid != uid {
                    return Err(StoreError::Conflict { key, current: existing.resource_version(), requested: 0 });
                }
                if existing.is_retired() {
                    outcomes.push(Outcome::Unchanged(existing));
                    continue;
                }
                let mut new = ApiObject::clone(&existing);
                new.metadata.deletion_timestamp = now.clone();
                rv += 1;
                new.metadata.resource_version = rv.to_string();
                let new = Arc::new(new);
                staged.insert(key, Some(new.clone()));
                outcomes.push(Outcome::Configured(new));
            }
            Op::Delete(key, precondition) => {
                let existing = current(&key, &staged).ok_or_else(|| StoreError::NotFound(key.clone()))?;
                check_precondition(&key, precondition.unwrap_or(0), Some(&existing))?;
                let mut gone = ApiObject::clone(&existing);
                rv += 1;
                gone.metadata.resource_version = rv.to_string();
                staged.insert(key, None);
                outcomes.push(Outcome::Deleted(Arc::new(gone)));
            }
        }
    }
    Ok((staged, outcomes, rv))
}

/// Server-side apply of one object onto what is stored.
fn apply_one(mut object: ApiObject, existing: Option<Arc<ApiObject>>, rv: &mut u64, now: &str) -> Outcome {
    let Some(old) = existing else {
        *rv += 1;
        object.metadata.uid = uuid::Uuid::new_v4().to_string();
        object.metadata.resource_version = rv.to_string();
        object.metadata.generation = 1;
        object.metadata.creation_timestamp = now.to_owned();
        object.metadata.deletion_timestamp.clear();
        object.api_version = object.kind.api_version().to_owned();
        return Outcome::Created(Arc::new(object));
    };
    let content_changed = !old.same_content_but_status(&object);
    // What the server wrote into annotations (image pins) stays when an
    // apply that names none of them leaves the content as it was:
    // re-applying a bare Pod keeps its pin. A changed spec may name another
    // image, so then they go; the server's own writes name them.
    if !content_changed && !object.metadata.annotations.keys().any(|k| crate::object::is_server_annotation(k)) {
        for (key, value) in old.metadata.annotations.iter().filter(|(k, _)| crate::object::is_server_annotation(k)) {
            object.metadata.annotations.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    let owners_changed = !object.metadata.owner_references.is_empty()
        && object.metadata.owner_references != old.metadata.owner_references;
    let metadata_changed =
        old.metadata.labels != object.metadata.labels || old.metadata.annotations != object.metadata.annotations;
    if !content_changed && !owners_changed && !metadata_changed {
        return Outcome::Unchanged(old);
    }
    // The applied object with the stored identity and status: apply never
    // writes status, that belongs to the controller and agents.
    let mut metadata = old.metadata.clone();
    metadata.labels = std::mem::take(&mut object.metadata.labels);
    metadata.annotations = std::mem::take(&mut object.metadata.annotations);
    if owners_changed {
        metadata.owner_references = std::mem::take(&mut object.metadata.owner_references);
    }
    let mut new = ApiObject::new(old.kind, &old.metadata.namespace, &old.metadata.name);
    new.api_version = old.api_version.clone();
    new.metadata = metadata;
    new.take_content_of(&mut object);
    new.copy_status_of(&old);
    *rv += 1;
    new.metadata.resource_version = rv.to_string();
    if content_changed {
        new.metadata.generation += 1;
    }
    Outcome::Configured(Arc::new(new))
}
