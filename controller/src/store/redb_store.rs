//! [`Store`] on redb, with every object also held in memory.
//!
//! Reads and lists are served from the in-memory copy (the controller's
//! working set is small: thousands of objects); every commit is one redb
//! write transaction, fsynced before it returns, and only then applied to
//! memory and announced to watchers. On start the objects and the
//! resourceVersion counter are read back, so uids and versions survive a
//! restart. Recent changes are kept in memory for watches; a watch from
//! before them (or from before a restart) gets `Gone` and lists again,
//! exactly like a Kubernetes watch cache.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;

use super::mirror::{Mirror, changes_of};
use super::staging::stage;
use super::{Objects, Op, Outcome, SecretCipher, Store, StoreError, Subscription, View};
use crate::manifest::Kind;
use crate::object::{ApiObject, ObjectKey};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RV_KEY: &str = "resource_version";

/// Record tags: the first byte of every stored value.
const PLAIN: u8 = 0;
const SEALED: u8 = 1;

/// redb's page cache.
const REDB_CACHE: usize = 64 << 20;

/// The embedded store.
pub struct RedbStore {
    /// `None` after a failed write: redb asks to be closed and opened
    /// again after an I/O error, which the next commit does.
    db: Mutex<Option<Database>>,
    path: std::path::PathBuf,
    /// Why the last commit failed on the disk, while writes fail.
    failure: Mutex<Option<(String, std::time::Instant)>>,
    failures: std::sync::atomic::AtomicU64,
    cipher: SecretCipher,
    /// Held by one commit at a time, for all of it (staging, disk, memory);
    /// the mirror's lock only for the moment memory changes, so readers
    /// never wait for a disk write.
    writer: Mutex<()>,
    mirror: Mirror,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn open_database(path: &Path) -> Result<Database, StoreError> {
    // Every object is held in memory already: redb's own cache (1 GiB by
    // default) only needs the pages a commit rewrites.
    redb::Builder::new()
        .set_cache_size(REDB_CACHE)
        .create(path)
        .map_err(|e| backend(format!("opening {}: {e}", path.display())))
}

impl RedbStore {
    /// Opens (or creates) the database file and loads every object.
    pub fn open(path: &Path, cipher: SecretCipher) -> Result<Self, StoreError> {
        let db = open_database(path)?;
        let mut objects = Objects::default();
        let mut templates = crate::object::SharedTemplates::default();
        let mut resource_version = 0;
        {
            // Create the tables on first start so that reads never miss them.
            let txn = db.begin_write().map_err(backend)?;
            txn.open_table(OBJECTS).map_err(backend)?;
            txn.open_table(META).map_err(backend)?;
            txn.commit().map_err(backend)?;
        }
        let txn = db.begin_read().map_err(backend)?;
        if let Some(rv) = txn.open_table(META).map_err(backend)?.get(RV_KEY).map_err(backend)? {
            resource_version = rv.value();
        }
        for entry in txn.open_table(OBJECTS).map_err(backend)?.iter().map_err(backend)? {
            let (key, value) = entry.map_err(backend)?;
            let bytes = value.value();
            let mut object = decode(&cipher, bytes)
                .map_err(|e| backend(format!("stored object {} is unreadable: {e}", key.value())))?;
            // A retirement in an older layout is moved now, written again
            // on the object's next change, served as it is meanwhile.
            migrate_retirement(&mut object);
            // Replicas of one template share it again, as when they were made.
            object.share_template(&mut templates);
            objects.insert(object.key(), Arc::new(object));
        }
        drop(txn);
        tracing::info!(objects = objects.len(), resource_version, path = %path.display(), "store opened");
        Ok(RedbStore {
            db: Mutex::new(Some(db)),
            path: path.to_owned(),
            failure: Mutex::new(None),
            failures: Default::default(),
            cipher,
            writer: Mutex::new(()),
            mirror: Mirror::new(objects, resource_version),
        })
    }

    /// Writes `staged` at `rv` in one fsynced transaction, reopening the
    /// database first if a failed write closed it.
    fn write(&self, staged: &BTreeMap<ObjectKey, Option<Arc<ApiObject>>>, rv: u64) -> Result<(), StoreError> {
        let mut db = self.db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if db.is_none() {
            *db = Some(open_database(&self.path)?);
            tracing::info!(path = %self.path.display(), "store reopened after a failed write");
        }
        let database = db.as_ref().expect("opened above");
        let outcome = (|| {
            let txn = database.begin_write().map_err(backend)?;
            {
                let mut table = txn.open_table(OBJECTS).map_err(backend)?;
                for (key, object) in staged {
                    match object {
                        Some(object) => {
                            let bytes = encode(&self.cipher, object)?;
                            table.insert(key.encode().as_str(), bytes.as_slice()).map_err(backend)?;
                        }
                        None => {
                            table.remove(key.encode().as_str()).map_err(backend)?;
                        }
                    }
                }
                txn.open_table(META).map_err(backend)?.insert(RV_KEY, rv).map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })();
        let mut failure = self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &outcome {
            Ok(()) => {
                if let Some((error, since)) = failure.take() {
                    tracing::warn!(
                        failed_for_s = since.elapsed().as_secs(),
                        last_error = error,
                        "store writes work again"
                    );
                }
            }
            Err(e) => {
                *db = None;
                self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if failure.is_none() {
                    tracing::error!(error = %e, path = %self.path.display(), "store writes fail (disk full?); each write retries, reopening the database");
                }
                let since = failure.as_ref().map_or_else(std::time::Instant::now, |(_, since)| *since);
                *failure = Some((e.to_string(), since));
            }
        }
        outcome.map_err(|e| match e {
            StoreError::Backend(text) if text.contains("No space left") || text.contains("os error 28") => {
                StoreError::NoSpace(format!("the data volume is full: {text}"))
            }
            other => other,
        })
    }
}

pub(super) fn encode(cipher: &SecretCipher, object: &ApiObject) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(object).map_err(backend)?;
    if object.kind == Kind::Secret {
        let mut out = vec![SEALED];
        out.extend(cipher.seal(&json).map_err(backend)?);
        Ok(out)
    } else {
        let mut out = Vec::with_capacity(json.len() + 1);
        out.push(PLAIN);
        out.extend(json);
        Ok(out)
    }
}

pub(super) fn decode(cipher: &SecretCipher, bytes: &[u8]) -> anyhow::Result<ApiObject> {
    match bytes.split_first() {
        Some((&PLAIN, json)) => Ok(serde_json::from_slice(json)?),
        Some((&SEALED, sealed)) => Ok(serde_json::from_slice(&cipher.open(sealed)?)?),
        _ => anyhow::bail!("unknown record format"),
    }
}

impl Store for RedbStore {
    fn get(&self, key: &ObjectKey) -> Option<ApiObject> {
        self.mirror.get(key).map(|o| ApiObject::clone(&o))
    }

    fn view(&self) -> View {
        self.mirror.view()
    }

    fn commit(&self, ops: Vec<Op>) -> Result<Vec<Outcome>, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only commits change the objects, and they hold `writer`: this copy
        // (shared, not copied) stays current until this commit changes it.
        let (objects, base_rv) = self.mirror.objects();
        let (staged, outcomes, rv) = stage(&objects, base_rv, ops)?;
        if rv == base_rv {
            return Ok(outcomes); // nothing changed: no disk write
        }
        // Durable first: one transaction, fsynced on commit.
        self.write(&staged, rv)?;
        // Then memory and watchers, in resourceVersion order.
        self.mirror.apply(changes_of(&outcomes), rv);
        Ok(outcomes)
    }

    fn dry_run(&self, ops: Vec<Op>) -> Result<Vec<Outcome>, StoreError> {
        let (objects, base_rv) = self.mirror.objects();
        stage(&objects, base_rv, ops).map(|(_, outcomes, _)| outcomes)
    }

    fn subscribe(&self, resource_version: u64) -> Result<Subscription, StoreError> {
        self.mirror.subscribe(resource_version)
    }

    fn resource_version(&self) -> u64 {
        self.mirror.resource_version()
    }

    fn write_failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref().map(|(error, _)| error.clone())
    }

    fn write_failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn counts(&self) -> Vec<(Kind, usize)> {
        self.mirror.counts()
    }
}

/// Replicas retired before retirement moved into metadata carried
/// `status.retiredAt`; they stay retired (on disk with their next write).
/// Whether it changed the object.
fn migrate_retirement(object: &mut ApiObject) -> bool {
    if !matches!(object.status_part(), Some(crate::object::Status::Json(_))) {
        return false; // typed: no field of its own, no `retiredAt`
    }
    let Some(Value::Object(mut status)) = object.field("status") else { return false };
    let Some(Value::String(at)) = status.remove("retiredAt") else { return false };
    if object.metadata.deletion_timestamp.is_empty() {
        object.metadata.deletion_timestamp = at;
    }
    object.set_field("status", Value::Object(status));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventType;
    use serde_json::json;

    fn open(dir: &Path) -> RedbStore {
        RedbStore::open(&dir.join("store.redb"), SecretCipher::from_key([1; 32])).unwrap()
    }

    fn config_map(name: &str, value: &str) -> ApiObject {
        let mut object = ApiObject::new(Kind::ConfigMap, "default", name);
        object.set_field("data", json!({ "k": value }));
        object
    }

    /// A full disk under the store: commits fail (and say why) while it is
    /// full, and the store goes on by itself once space is freed, though
    /// redb wants to be reopened after an I/O error. On a real 4 MiB tmpfs
    /// (root, as CI runs).
    #[test]
    fn a_full_disk_fails_writes_until_space_is_freed_then_the_store_goes_on() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("small");
        std::fs::create_dir_all(&mount).unwrap();
        let flags = nix::mount::MsFlags::empty();
        nix::mount::mount(Some("tmpfs"), &mount, Some("tmpfs"), flags, Some("size=4m")).unwrap();
        struct Unmount<'p>(&'p Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _unmount = Unmount(&mount);
        let store = open(&mount);
        store.commit(vec![Op::Apply(config_map("first", "x"))]).unwrap();
        let value = "v".repeat(64 << 10);
        let mut failed = None;
        for i in 0..200 {
            if let Err(e) = store.commit(vec![Op::Apply(config_map(&format!("cm-{i}"), &value))]) {
                failed = Some(e);
                break;
            }
        }
        let failed = failed.expect("a 4 MiB volume fills up");
        assert!(matches!(failed, StoreError::NoSpace(_) | StoreError::Backend(_)), "{failed}");
        assert!(store.write_failure().is_some() && store.write_failures() >= 1);
        // Still full: still refused, and the store still reads.
        assert!(store.commit(vec![Op::Apply(config_map("again", &value))]).is_err());
        assert!(store.get(&ObjectKey::new(Kind::ConfigMap, "default", "first")).is_some());
        // Space freed (the volume grown, as an operator would clear it): the
        // next write goes through, with no restart.
        nix::mount::mount(Some("tmpfs"), &mount, Some("tmpfs"), nix::mount::MsFlags::MS_REMOUNT, Some("size=16m"))
            .unwrap();
        store.commit(vec![Op::Apply(config_map("after", "y"))]).unwrap();
        assert_eq!(store.write_failure(), None);
        let reopened = {
            drop(store);
            open(&mount)
        };
        assert!(reopened.get(&ObjectKey::new(Kind::ConfigMap, "default", "after")).is_some(), "durable");
    }

    #[test]
    fn objects_uids_and_versions_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let created = {
            let store = open(dir.path());
            let outcome = store.commit(vec![Op::Apply(config_map("a", "1"))]).unwrap();
            outcome[0].object().clone()
        };
        let store = open(dir.path());
        let again = store.get(&created.key()).unwrap();
        assert_eq!(again, created);
        assert_eq!(store.resource_version(), 1);
        // The counter continues instead of restarting.
        let next = store.commit(vec![Op::Apply(config_map("b", "1"))]).unwrap();
        assert_eq!(next[0].object().resource_version(), 2);
    }

    #[test]
    fn pods_are_indexed_by_owner_and_node_through_binds_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let pod = |name: &str, owner: &str| {
            let mut pod = ApiObject::new(Kind::Pod, "default", name);
            pod.set_field("spec", json!({ "containers": [{ "name": "c", "image": "web:1" }] }));
            pod.metadata.owner_references.push(crate::object::OwnerReference {
                kind: Kind::Deployment,
                name: owner.into(),
                uid: format!("uid-{owner}"),
            });
            pod
        };
        store.commit(vec![Op::Apply(pod("a-1", "a")), Op::Apply(pod("a-2", "a")), Op::Apply(pod("b-1", "b"))]).unwrap();
        let names = |pods: Vec<&Arc<ApiObject>>| pods.iter().map(|p| p.metadata.name.clone()).collect::<Vec<_>>();
        let view = store.view();
        assert_eq!(names(view.pods_owned_by("uid-a").collect()), ["a-1", "a-2"]);
        assert_eq!(names(view.pods_owned_by("uid-b").collect()), ["b-1"]);
        assert!(view.pods_owned_by("uid-").next().is_none());
        assert!(view.pods_on("edge-1").next().is_none());

        let mut bound = store.get(&pod("a-1", "a").key()).unwrap();
        bound.set_node_name(Some("edge-1"));
        store.commit(vec![Op::Apply(bound.clone())]).unwrap();
        assert_eq!(names(store.view().pods_on("edge-1").collect()), ["a-1"]);
        // The view taken before the bind still shows the store as it was.
        assert!(view.pods_on("edge-1").next().is_none());

        // Moved to another node: indexed there only, the newest version.
        let mut moved = store.get(&bound.key()).unwrap();
        moved.set_node_name(Some("edge-2"));
        store.commit(vec![Op::Apply(moved)]).unwrap();
        let view = store.view();
        assert!(view.pods_on("edge-1").next().is_none());
        assert_eq!(view.pods_on("edge-2").next().and_then(|p| p.node_name()), Some("edge-2"));
        assert_eq!(view.pods_owned_by("uid-a").find(|p| p.metadata.name == "a-1").unwrap().node_name(), Some("edge-2"));

        store.commit(vec![Op::Delete(bound.key(), None)]).unwrap();
        let view = store.view();
        assert!(view.pods_on("edge-2").next().is_none());
        assert_eq!(names(view.pods_owned_by("uid-a").collect()), ["a-2"]);
        // And after a reopen, rebuilt from the file.
        drop((view, store));
        let store = open(dir.path());
        assert_eq!(names(store.view().pods_owned_by("uid-a").collect()), ["a-2"]);
    }

    #[test]
    fn pods_are_indexed_by_phase_but_running_and_nodes_by_readiness() {
        use crate::status::{Condition, ConditionType, NodeStatus, PodPhase, PodStatus};
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut pod = ApiObject::new(Kind::Pod, "default", "web-1");
        pod.set_field("spec", json!({ "containers": [{ "name": "c", "image": "web:1" }] }));
        let node = ApiObject::new(Kind::Node, "", "edge-1");
        store.commit(vec![Op::Apply(pod.clone()), Op::Apply(node.clone())]).unwrap();
        let names = |view: &View, phase| view.pods_in_phase(phase).map(|p| p.metadata.name.clone()).collect::<Vec<_>>();
        let not_ready = |view: &View| view.nodes_not_ready().map(|n| n.metadata.name.clone()).collect::<Vec<_>>();
        // A new pod is Pending; a node that never said Ready is not ready.
        assert_eq!(names(&store.view(), PodPhase::Pending), ["web-1"]);
        assert_eq!(not_ready(&store.view()), ["edge-1"]);

        let set_phase = |phase| {
            let mut pod = store.get(&pod.key()).unwrap();
            pod.set_status(&PodStatus { phase, ..PodStatus::default() });
            store.commit(vec![Op::UpdateStatus(pod)]).unwrap();
        };
        set_phase(PodPhase::Running);
        let view = store.view();
        assert!(names(&view, PodPhase::Pending).is_empty(), "Running is not indexed");
        set_phase(PodPhase::Failed);
        assert_eq!(names(&store.view(), PodPhase::Failed), ["web-1"]);
        assert!(names(&view, PodPhase::Failed).is_empty(), "an older view keeps its own index");

        let set_ready = |ready| {
            let mut node = store.get(&node.key()).unwrap();
            let mut status = NodeStatus::default();
            status.conditions.push(Condition::new(ConditionType::Ready, ready, "", ""));
            node.set_status(&status);
            store.commit(vec![Op::UpdateStatus(node)]).unwrap();
        };
        set_ready(true);
        assert!(not_ready(&store.view()).is_empty());
        set_ready(false);
        assert_eq!(not_ready(&store.view()), ["edge-1"]);
        store.commit(vec![Op::Delete(pod.key(), None), Op::Delete(node.key(), None)]).unwrap();
        assert!(names(&store.view(), PodPhase::Failed).is_empty() && not_ready(&store.view()).is_empty());
    }

    #[test]
    fn replicas_read_back_share_equal_templates() {
        let dir = tempfile::tempdir().unwrap();
        let pod = |name: &str, image: &str| {
            let mut pod = ApiObject::new(Kind::Pod, "default", name);
            pod.set_field("spec", json!({ "containers": [{ "name": "c", "image": image }] }));
            pod
        };
        {
            let store = open(dir.path());
            store
                .commit(vec![Op::Apply(pod("a", "web:1")), Op::Apply(pod("b", "web:1")), Op::Apply(pod("c", "db:1"))])
                .unwrap();
        }
        let store = open(dir.path());
        let view = store.view();
        let template = |name: &str| {
            let key = pod(name, "").key();
            view.get(&key).unwrap().spec_ref::<crate::object::StoredPodSpec>().unwrap().template.clone()
        };
        assert!(Arc::ptr_eq(&template("a"), &template("b")));
        assert!(!Arc::ptr_eq(&template("a"), &template("c")));
        assert_eq!(template("c").containers[0].image, "db:1");
    }

    #[test]
    fn replicas_share_by_workload_and_template_hash_only_when_equal() {
        let dir = tempfile::tempdir().unwrap();
        let pod = |name: &str, image: &str, hash: &str| {
            let mut pod = ApiObject::new(Kind::Pod, "default", name);
            pod.set_field("spec", json!({ "containers": [{ "name": "c", "image": image }] }));
            pod.metadata.labels.insert(crate::object::TEMPLATE_HASH_LABEL.into(), hash.into());
            pod.metadata.owner_references.push(crate::object::OwnerReference {
                kind: Kind::Deployment,
                name: "web".into(),
                uid: "uid-web".into(),
            });
            pod
        };
        {
            let store = open(dir.path());
            let pods =
                [pod("a", "web:1", "h1"), pod("b", "web:1", "h1"), pod("c", "web:2", "h1"), pod("d", "web:1", "h2")];
            store.commit(pods.into_iter().map(Op::Apply).collect()).unwrap();
        }
        let store = open(dir.path());
        let view = store.view();
        let template = |name: &str| {
            let key = ObjectKey::new(Kind::Pod, "default", name);
            view.get(&key).unwrap().spec_ref::<crate::object::StoredPodSpec>().unwrap().template.clone()
        };
        assert!(Arc::ptr_eq(&template("a"), &template("b")));
        // Same key, other content (a hash collision): kept apart.
        assert!(!Arc::ptr_eq(&template("a"), &template("c")));
        assert_eq!(template("c").containers[0].image, "web:2");
        // Equal content under another template hash is not looked for.
        assert!(!Arc::ptr_eq(&template("a"), &template("d")));
    }

    #[test]
    fn an_apply_keeps_the_servers_image_pin_unless_the_content_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let bare = |image: &str| {
            let mut pod = ApiObject::new(Kind::Pod, "default", "probe");
            pod.set_field("spec", json!({ "containers": [{ "name": "c", "image": image }] }));
            pod
        };
        store.commit(vec![Op::Apply(bare("probe:1"))]).unwrap();
        let key = bare("probe:1").key();
        // The pinning step's write: names the pin annotations itself.
        let mut failed = store.get(&key).unwrap();
        failed.metadata.annotations.insert("flotilla.io/image-error".into(), "unreachable".into());
        store.commit(vec![Op::Apply(failed)]).unwrap();
        let mut pinned = store.get(&key).unwrap();
        pinned.metadata.annotations.remove("flotilla.io/image-error");
        pinned.metadata.annotations.insert("flotilla.io/image-digest".into(), format!("sha256:{}", "ab".repeat(32)));
        store.commit(vec![Op::Apply(pinned)]).unwrap();
        let annotations = || store.get(&key).unwrap().metadata.annotations.clone();
        assert_eq!(
            annotations().keys().collect::<Vec<_>>(),
            ["flotilla.io/image-digest"],
            "the pin write dropped the error"
        );

        // The operator applies the same file again: unchanged, still pinned.
        let outcome = store.commit(vec![Op::Apply(bare("probe:1"))]).unwrap();
        assert!(matches!(outcome[0], Outcome::Unchanged(_)), "{outcome:?}");
        // Another image: the old pin goes, to be made again.
        store.commit(vec![Op::Apply(bare("probe:2"))]).unwrap();
        assert!(annotations().is_empty(), "{:?}", annotations());
    }

    #[test]
    fn apply_is_idempotent_and_bumps_generation_only_on_content_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let first = store.commit(vec![Op::Apply(config_map("a", "1"))]).unwrap();
        assert_eq!(first[0].verb(), "created");
        let same = store.commit(vec![Op::Apply(config_map("a", "1"))]).unwrap();
        assert_eq!(same[0].verb(), "unchanged");
        assert_eq!(store.resource_version(), 1);
        let mut labelled = config_map("a", "1");
        labelled.metadata.labels.insert("tier".into(), "edge".into());
        let labelled = store.commit(vec![Op::Apply(labelled)]).unwrap();
        assert_eq!(labelled[0].object().metadata.generation, 1);
        let changed = store.commit(vec![Op::Apply(config_map("a", "2"))]).unwrap();
        assert_eq!(changed[0].verb(), "configured");
        assert_eq!(changed[0].object().metadata.generation, 2);
        assert_eq!(changed[0].object().metadata.uid, first[0].object().metadata.uid);
    }

    #[test]
    fn a_stale_resource_version_is_a_conflict_and_a_failed_batch_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let v1 = store.commit(vec![Op::Apply(config_map("a", "1"))]).unwrap()[0].object().clone();
        store.commit(vec![Op::Apply(config_map("a", "2"))]).unwrap();
        let mut stale = config_map("a", "3");
        stale.metadata.resource_version = v1.metadata.resource_version.clone();
        let err = store.commit(vec![Op::Apply(config_map("b", "1")), Op::Apply(stale)]).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { current: 2, requested: 1, .. }), "{err}");
        assert!(store.get(&ObjectKey::new(Kind::ConfigMap, "default", "b")).is_none());
        assert_eq!(store.resource_version(), 2);
        drop(store);
        assert!(open(dir.path()).get(&ObjectKey::new(Kind::ConfigMap, "default", "b")).is_none());
    }

    #[test]
    fn status_is_kept_by_apply_and_written_by_update_status() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut object = store.commit(vec![Op::Apply(config_map("a", "1"))]).unwrap()[0].object().clone();
        object.set_field("status", json!({"phase": "Ready"}));
        store.commit(vec![Op::UpdateStatus(object)]).unwrap();
        let applied = store.commit(vec![Op::Apply(config_map("a", "2"))]).unwrap();
        assert_eq!(applied[0].object().field("status").unwrap()["phase"], "Ready");
    }

    #[test]
    fn secrets_are_encrypted_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            let mut secret = ApiObject::new(Kind::Secret, "default", "db");
            secret.set_field("data", json!({ "password": "c3VwZXJzZWNyZXQtdmFsdWU=" }));
            secret.metadata.labels.insert("marker".into(), "plainlabel-visible".into());
            store.commit(vec![Op::Apply(secret)]).unwrap();
            store.commit(vec![Op::Apply(config_map("cm", "plain-config-visible"))]).unwrap();
        }
        let raw = std::fs::read(dir.path().join("store.redb")).unwrap();
        let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
        assert!(contains(b"plain-config-visible"), "the check itself must be able to see plaintext");
        assert!(!contains(b"c3VwZXJzZWNyZXQtdmFsdWU="));
        assert!(!contains(b"plainlabel-visible"));
        let store = open(dir.path());
        let secret = store.get(&ObjectKey::new(Kind::Secret, "default", "db")).unwrap();
        assert_eq!(secret.field("data").unwrap()["password"], "c3VwZXJzZWNyZXQtdmFsdWU=");
        drop(store);
        // The wrong key refuses to start instead of serving garbage.
        let wrong = RedbStore::open(&dir.path().join("store.redb"), SecretCipher::from_key([2; 32]));
        assert!(wrong.is_err());
    }

    #[test]
    fn list_filters_by_kind_and_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut other = config_map("x", "1");
        other.metadata.namespace = "factory".into();
        store.commit(vec![Op::Apply(config_map("a", "1")), Op::Apply(other)]).unwrap();
        store.commit(vec![Op::Apply(ApiObject::new(Kind::Node, "", "n1"))]).unwrap();
        assert_eq!(store.list(Kind::ConfigMap, None).items.len(), 2);
        assert_eq!(store.list(Kind::ConfigMap, Some("factory")).items.len(), 1);
        assert_eq!(store.list(Kind::Node, None).items.len(), 1);
        assert_eq!(store.list(Kind::Pod, None).items.len(), 0);
    }

    #[test]
    fn watch_replays_from_a_version_then_follows_live() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.commit(vec![Op::Apply(config_map("a", "1"))]).unwrap();
        store.commit(vec![Op::Apply(config_map("b", "1"))]).unwrap();
        let mut sub = store.subscribe(1).unwrap();
        assert_eq!(sub.backlog.len(), 1);
        assert_eq!(sub.backlog[0].object.metadata.name, "b");
        store.commit(vec![Op::Delete(ObjectKey::new(Kind::ConfigMap, "default", "a"), None)]).unwrap();
        let live = sub.live.try_recv().unwrap();
        assert_eq!(live.event_type, EventType::Deleted);
        assert_eq!(live.resource_version(), 3);
        drop(store);
        // After a restart the history is gone: a watcher must list again.
        let store = open(dir.path());
        assert!(matches!(store.subscribe(1), Err(StoreError::Gone { .. })));
        assert!(store.subscribe(3).is_ok());
    }

    #[test]
    fn create_refuses_existing_and_delete_checks_preconditions() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.commit(vec![Op::Create(config_map("a", "1"))]).unwrap();
        assert!(matches!(store.commit(vec![Op::Create(config_map("a", "1"))]), Err(StoreError::AlreadyExists(_))));
        let key = ObjectKey::new(Kind::ConfigMap, "default", "a");
        assert!(matches!(store.commit(vec![Op::Delete(key.clone(), Some(9))]), Err(StoreError::Conflict { .. })));
        store.commit(vec![Op::Delete(key.clone(), Some(1))]).unwrap();
        assert!(matches!(store.commit(vec![Op::Delete(key, None)]), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn a_dry_run_answers_like_a_commit_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.commit(vec![Op::Apply(config_map("a", "1")), Op::Apply(config_map("b", "1"))]).unwrap();
        let mut sub = store.subscribe(0).unwrap();
        let ops =
            vec![Op::Apply(config_map("a", "2")), Op::Apply(config_map("b", "1")), Op::Apply(config_map("c", "1"))];
        let verbs: Vec<&str> = store.dry_run(ops).unwrap().iter().map(Outcome::verb).collect();
        assert_eq!(verbs, ["configured", "unchanged", "created"]);
        // Refused like a commit.
        let mut stale = config_map("a", "3");
        stale.metadata.resource_version = "7".into();
        assert!(matches!(store.dry_run(vec![Op::Apply(stale)]), Err(StoreError::Conflict { .. })));
        // Nothing changed, in memory, on disk or for watchers.
        assert_eq!(store.resource_version(), 2);
        assert_eq!(
            store.get(&ObjectKey::new(Kind::ConfigMap, "default", "a")).unwrap().field("data").unwrap()["k"],
            "1"
        );
        assert!(store.get(&ObjectKey::new(Kind::ConfigMap, "default", "c")).is_none());
        assert!(sub.live.try_recv().is_err());
        drop(store);
        assert_eq!(open(dir.path()).resource_version(), 2);
    }
}
