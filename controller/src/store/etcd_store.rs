//! [`Store`] on etcd v3 (`flotilla server --store etcd://h1:2379,h2:2379`):
//! the replicated store for several controllers (issue 20).
//!
//! Every object is one key, `<prefix>objects/<Kind>/<namespace>/<name>`,
//! its value the object's JSON (Secrets sealed, as on redb). An object's
//! resourceVersion is its key's `mod_revision`, and the store's is etcd's
//! revision, so every controller on the cluster reads the same versions.
//!
//! A commit is staged on the objects in memory (the same staging as redb's)
//! and written as one etcd transaction whose guard is the `mod_revision` of
//! every key it writes as this controller last saw it: a write by anyone
//! else in between fails the guard, and the batch is refused as a conflict
//! (the caller reads again and retries, as with redb). Memory has one
//! writer, the watch on the prefix: a commit waits until its own write has
//! come back through it, so what it returns is what every reader sees, and
//! another controller's writes arrive the same way. A watch that falls
//! behind etcd's compaction lists again, and its watchers are told the
//! differences.
//!
//! etcd refuses transactions over `--max-txn-ops` (default 128) writes or
//! `--max-request-bytes` (default 1.5 MiB); a reconcile pass over a fleet
//! writes up to 2,048 objects at once, so run etcd with
//! `--max-txn-ops 4096 --max-request-bytes 33554432` (the store says so
//! when etcd refuses a batch for its size).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, WatchOptions};

use super::mirror::Mirror;
use super::staging::stage;
use super::{EventType, Objects, Op, Outcome, SecretCipher, Store, StoreError, Subscription, View, WatchEvent};
use crate::manifest::Kind;
use crate::object::{ApiObject, ObjectKey};

/// How long a commit waits for its write to come back through the watch
/// before it answers anyway (the write is durable either way).
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer (a fleet's objects listed at once: 7 MB at 1,000
/// devices) and request (a reconcile pass's transaction) the client takes;
/// gRPC's default of 4 MiB stopped a controller from starting on a few
/// hundred devices.
const MESSAGE_LIMIT: usize = 1 << 30;

/// The KV client, with [`MESSAGE_LIMIT`].
pub(super) fn kv(client: &Client) -> etcd_client::KvClient {
    client.kv_client().max_decoding_message_size(MESSAGE_LIMIT).max_encoding_message_size(MESSAGE_LIMIT)
}

/// The watch client, with [`MESSAGE_LIMIT`] (one transaction's events
/// arrive in one answer).
pub(super) fn watcher(client: &Client) -> etcd_client::WatchClient {
    client.watch_client().max_decoding_message_size(MESSAGE_LIMIT)
}

/// An etcd request's deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the store is: etcd's endpoints and the key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTarget {
    /// `host:port` of each member.
    pub endpoints: Vec<String>,
    /// Every key starts with it (ends with `/`).
    pub prefix: String,
}

impl EtcdTarget {
    /// `etcd://h1:2379,h2:2379[/prefix]`.
    pub fn parse(url: &str) -> Result<EtcdTarget, String> {
        let rest = url.strip_prefix("etcd://").ok_or_else(|| format!("{url:?} is not an etcd:// URL"))?;
        let (hosts, prefix) = match rest.split_once('/') {
            Some((hosts, prefix)) if !prefix.trim_matches('/').is_empty() => {
                (hosts, format!("/{}/", prefix.trim_matches('/')))
            }
            Some((hosts, _)) => (hosts, "/flotilla/".to_owned()),
            None => (rest, "/flotilla/".to_owned()),
        };
        let endpoints: Vec<String> =
            hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(String::from).collect();
        if endpoints.is_empty() {
            return Err(format!("{url:?} names no etcd member: etcd://host1:2379,host2:2379"));
        }
        for endpoint in &endpoints {
            if !endpoint.contains(':') {
                return Err(format!("etcd member {endpoint:?} has no port (etcd's client port is 2379)"));
            }
        }
        Ok(EtcdTarget { endpoints, prefix })
    }

    fn objects(&self) -> String {
        format!("{}objects/", self.prefix)
    }

    pub(super) fn controller_key(&self) -> String {
        format!("{}controller", self.prefix)
    }
}

/// The controller lease a leader's writes are fenced by: the holder key's
/// create revision (it changes when another controller takes it).
#[derive(Debug, Clone)]
pub(super) struct Fence {
    pub(super) key: String,
    pub(super) create_revision: i64,
    /// Set once this term ended (the lease lost or given up): for good.
    pub(super) lost: Arc<std::sync::atomic::AtomicBool>,
}

/// The etcd store.
pub struct EtcdStore {
    /// Its own runtime: the store's callers are blocking threads, some of
    /// them inside the server's runtime, where another cannot block on.
    runtime: Option<tokio::runtime::Runtime>,
    client: Client,
    target: EtcdTarget,
    cipher: SecretCipher,
    /// One commit at a time from this controller.
    writer: Mutex<()>,
    mirror: Arc<Mirror>,
    failure: Mutex<Option<String>>,
    failures: std::sync::atomic::AtomicU64,
    /// Who holds the controller lease, as last seen (`campaign`).
    pub(super) holder: Mutex<Option<String>>,
    /// When etcd last answered the campaign's poll or the leader's
    /// keep-alive; `None` until a campaign starts (a store opened without
    /// one makes no claim).
    pub(super) last_contact: Mutex<Option<std::time::Instant>>,
}

/// No answer from etcd for this long: reads from memory may be stale.
pub const OUT_OF_TOUCH_AFTER: Duration = Duration::from_secs(3);

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl EtcdStore {
    /// Connects to `target`, loads every object and follows the prefix.
    pub fn open(target: EtcdTarget, cipher: SecretCipher) -> Result<EtcdStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd-store")
            .enable_all()
            .build()
            .map_err(backend)?;
        let endpoints = target.endpoints.clone();
        let client = run_on(&runtime, async move {
            let options = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(REQUEST_TIMEOUT)
                .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
            Client::connect(endpoints, Some(options)).await
        })
        .map_err(|e| backend(format!("connecting to etcd at {}: {e}", target.endpoints.join(","))))?;
        let (objects, revision) = run_on(&runtime, load(client.clone(), target.objects(), cipher.clone()))?;
        tracing::info!(
            objects = objects.len(),
            revision,
            endpoints = %target.endpoints.join(","),
            prefix = target.prefix,
            "store opened on etcd"
        );
        let mirror = Arc::new(Mirror::new(objects, revision));
        runtime.spawn(follow(client.clone(), target.objects(), cipher.clone(), mirror.clone()));
        Ok(EtcdStore {
            runtime: Some(runtime),
            client,
            target,
            cipher,
            writer: Mutex::new(()),
            mirror,
            failure: Mutex::new(None),
            failures: Default::default(),
            holder: Mutex::new(None),
            last_contact: Mutex::new(None),
        })
    }

    pub(super) fn run<T: Send + 'static>(&self, work: impl std::future::Future<Output = T> + Send + 'static) -> T {
        run_on(self.runtime.as_ref().expect("the runtime lives as long as the store"), work)
    }

    pub(super) fn spawn<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.runtime.as_ref().expect("the runtime lives as long as the store").spawn(work)
    }

    pub(super) fn client(&self) -> Client {
        self.client.clone()
    }

    pub(super) fn target(&self) -> &EtcdTarget {
        &self.target
    }

    /// The enrolment every controller on this etcd shares (sealed with the
    /// Secrets key), at `<prefix>enrolment`.
    pub fn enrolment_document(&self) -> Arc<dyn crate::fleet::credentials::SharedDocument> {
        Arc::new(super::etcd_document::EtcdDocument {
            runtime: self.runtime.as_ref().expect("the runtime lives as long as the store").handle().clone(),
            client: self.client.clone(),
            key: format!("{}enrolment", self.target.prefix),
            cipher: self.cipher.clone(),
        })
    }

    fn key_of(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.target.objects(), key.encode())
    }

    fn note(&self, outcome: &Result<(), StoreError>) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(()) => {
                if let Some(error) = failure.take() {
                    tracing::warn!(last_error = error, "etcd writes work again");
                }
            }
            Err(e) => {
                self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if failure.is_none() {
                    tracing::error!(error = %e, "etcd writes fail");
                }
                *failure = Some(e.to_string());
            }
        }
    }

    /// Writes `staged` if no key of it changed since `objects` was read.
    /// `Ok(Some(revision))`: written at etcd's `revision`; `Ok(None)`: a
    /// key changed (the mirror has caught up with etcd when this returns).
    fn write(
        &self,
        objects: &Objects,
        staged: &BTreeMap<ObjectKey, Option<Arc<ApiObject>>>,
        fence: Option<&Fence>,
    ) -> Result<Option<u64>, StoreError> {
        let mut guards = Vec::with_capacity(staged.len() + 1);
        let mut writes = Vec::with_capacity(staged.len());
        if let Some(fence) = fence {
            if fence.lost.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(fenced(&fence.key));
            }
            guards.push(Compare::create_revision(fence.key.clone(), CompareOp::Equal, fence.create_revision));
        }
        let mut bytes = 0;
        for (key, object) in staged {
            let etcd_key = self.key_of(key);
            let seen = objects.get(key).map_or(0, |o| o.resource_version()) as i64;
            guards.push(Compare::mod_revision(etcd_key.clone(), CompareOp::Equal, seen));
            writes.push(match object {
                Some(object) => {
                    let value = super::redb_store::encode(&self.cipher, object)?;
                    bytes += value.len();
                    TxnOp::put(etcd_key, value, None)
                }
                None => TxnOp::delete(etcd_key, None),
            });
        }
        let count = writes.len();
        let txn = Txn::new().when(guards).and_then(writes);
        // Sent again while etcd answers "unavailable" (a member lost, a
        // leader being elected): such an attempt may have been applied,
        // so a later attempt whose guard fails first checks whether the
        // write is already there.
        let deadline = std::time::Instant::now() + REQUEST_TIMEOUT * 2;
        let mut uncertain = false;
        let answer = loop {
            let (client, attempt) = (self.client.clone(), txn.clone());
            let answer = self.run(async move {
                retrying(|| {
                    let (mut kv, attempt) = (kv(&client), attempt.clone());
                    async move { kv.txn(attempt).await }
                })
                .await
            });
            match answer {
                Err(e) if in_doubt(&e) && std::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "etcd did not answer a write; sending it again");
                    uncertain = true;
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => break other,
            }
        };
        let answer = answer.map_err(|e| {
            let text = e.to_string();
            if text.contains("too many operations") || text.contains("request is too large") {
                backend(format!(
                    "etcd refused a transaction of {count} writes ({bytes} bytes): {text}; start etcd with \
                     --max-txn-ops 4096 --max-request-bytes 33554432"
                ))
            } else {
                backend(format!("etcd: {text}"))
            }
        })?;
        let revision = answer.header().map_or(0, |h| h.revision()).max(0) as u64;
        if answer.succeeded() {
            return Ok(Some(revision));
        }
        if uncertain {
            // Did an attempt that went unanswered land? Then its keys hold
            // exactly what was staged.
            self.mirror.wait_for(revision, ECHO_TIMEOUT);
            let (now, _) = self.mirror.objects();
            let landed = staged.iter().all(|(key, object)| match (object, now.get(key)) {
                (None, None) => true,
                (Some(staged), Some(stored)) => same_but_version(staged, stored),
                _ => false,
            });
            if landed {
                let written = staged.keys().filter_map(|key| now.get(key)).map(|o| o.resource_version()).max();
                return Ok(Some(written.unwrap_or(revision)));
            }
        }
        if let Some(fence) = fence {
            let (client, key) = (self.client.clone(), fence.key.clone());
            let holder = self.run(async move { kv(&client).get(key, None).await });
            let still_ours = holder
                .ok()
                .and_then(|answer| answer.kvs().first().map(|kv| kv.create_revision()))
                .is_some_and(|created| created == fence.create_revision);
            if !still_ours {
                fence.lost.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(fenced(&fence.key));
            }
        }
        // Someone else wrote first: read it before the caller retries.
        self.mirror.wait_for(revision, ECHO_TIMEOUT);
        Ok(None)
    }
}

/// A write refused because this controller no longer holds its lease.
pub(super) fn fenced(key: &str) -> StoreError {
    backend(format!(
        "fenced: this controller's term as leader ended ({key} lost or given up); its reconcilers write nothing \
         more (another controller may lead now)"
    ))
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Not joined: the store may be dropped on an async thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `work` on `runtime` and waits for it from any thread (a blocking
/// one, or one inside another runtime, where `block_on` would panic).
fn run_on<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = answer.send(work.await);
    });
    answered.recv().expect("the etcd runtime runs its tasks")
}

/// Whether `error` says the request never reached a member (a member down,
/// a connection being made again): safe to send again, another member
/// answers.
fn never_sent(error: &etcd_client::Error) -> bool {
    let text = error.to_string();
    text.contains("tcp connect error") || text.contains("transport error") || text.contains("connection refused")
}

/// `request` again while it never reached a member, for up to the request
/// deadline: the client spreads requests over the members, and one that
/// went to a member that is down fails at once.
pub(super) async fn retrying<T, F, Fut>(mut request: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        match request().await {
            Err(e) if never_sent(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answer => return answer,
        }
    }
}

/// Whether `error` leaves it unknown if a write was applied: etcd timed
/// out or was electing a leader, so the write may land or may not.
fn in_doubt(error: &etcd_client::Error) -> bool {
    let text = error.to_string();
    text.contains("Unavailable") || text.contains("timed out") || text.contains("leader")
}

/// Whether two versions of an object are the same but for their resourceVersion.
fn same_but_version(a: &ApiObject, b: &ApiObject) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    a.metadata.resource_version.clear();
    b.metadata.resource_version.clear();
    // As stored: the same JSON (in memory a spec may be typed in one and
    // kept as JSON in the other).
    serde_json::to_value(&a).ok() == serde_json::to_value(&b).ok()
}

/// A stored value as an object at `revision`.
fn object_of(cipher: &SecretCipher, value: &[u8], revision: i64) -> anyhow::Result<ApiObject> {
    let mut object = super::redb_store::decode(cipher, value)?;
    object.metadata.resource_version = revision.to_string();
    Ok(object)
}

/// Every object under `prefix`, and etcd's revision then.
async fn load(client: Client, prefix: String, cipher: SecretCipher) -> Result<(Objects, u64), StoreError> {
    let answer = retrying(|| {
        let (mut kv, prefix) = (kv(&client), prefix.clone());
        async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await }
    })
    .await
    .map_err(|e| backend(format!("listing {prefix} on etcd: {e}")))?;
    let mut objects = Objects::default();
    let mut templates = crate::object::SharedTemplates::default();
    for kv in answer.kvs() {
        match object_of(&cipher, kv.value(), kv.mod_revision()) {
            Ok(mut object) => {
                object.share_template(&mut templates);
                objects.insert(object.key(), Arc::new(object));
            }
            Err(e) => {
                tracing::error!(key = %String::from_utf8_lossy(kv.key()), error = %e, "unreadable object on etcd; left out")
            }
        }
    }
    let revision = answer.header().map_or(0, |h| h.revision()).max(0) as u64;
    Ok((objects, revision))
}

/// The key an etcd key names (for a delete whose last value etcd no longer has).
fn key_of_etcd(prefix: &str, key: &[u8]) -> Option<ObjectKey> {
    let text = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    let mut parts = text.splitn(3, '/');
    let kind: Kind = serde_json::from_value(serde_json::Value::String(parts.next()?.to_owned())).ok()?;
    let (namespace, name) = (parts.next()?, parts.next()?);
    Some(ObjectKey::new(kind, namespace, name))
}

/// The mirror's one writer: follows every change under `prefix` from the
/// revision after the mirror's, and lists again when etcd compacted past it.
async fn follow(client: Client, prefix: String, cipher: SecretCipher, mirror: Arc<Mirror>) {
    loop {
        let from = mirror.resource_version() + 1;
        let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(from as i64);
        let mut watch = watcher(&client);
        let mut stream = match watch.watch(prefix.clone(), Some(options)).await {
            Ok((_watcher, stream)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch etcd; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let answer = match stream.message().await {
                Ok(Some(answer)) => answer,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "the etcd watch broke; watching again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            };
            if answer.compact_revision() > 0 || answer.canceled() {
                tracing::warn!(
                    compacted_to = answer.compact_revision(),
                    at = mirror.resource_version(),
                    "the etcd watch fell behind compaction; listing again"
                );
                match load(client.clone(), prefix.clone(), cipher.clone()).await {
                    Ok((objects, revision)) => mirror.reset(objects, revision),
                    Err(e) => {
                        tracing::warn!(error = %e, "listing etcd again failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                break;
            }
            let mut changes = Vec::with_capacity(answer.events().len());
            let mut revision = mirror.resource_version();
            for event in answer.events() {
                let Some(kv) = event.kv() else { continue };
                revision = revision.max(kv.mod_revision().max(0) as u64);
                let change = match event.event_type() {
                    etcd_client::EventType::Put => match object_of(&cipher, kv.value(), kv.mod_revision()) {
                        Ok(object) => {
                            let event_type = match kv.create_revision() == kv.mod_revision() {
                                true => EventType::Added,
                                false => EventType::Modified,
                            };
                            WatchEvent { event_type, object: Arc::new(object) }
                        }
                        Err(e) => {
                            tracing::error!(key = %String::from_utf8_lossy(kv.key()), error = %e, "unreadable object on etcd; left out");
                            continue;
                        }
                    },
                    etcd_client::EventType::Delete => {
                        let last = match event.prev_kv() {
                            Some(prev) => object_of(&cipher, prev.value(), kv.mod_revision()).ok(),
                            None => key_of_etcd(&prefix, kv.key()).and_then(|key| mirror.get(&key)).map(|o| {
                                let mut gone = ApiObject::clone(&o);
                                gone.metadata.resource_version = kv.mod_revision().to_string();
                                gone
                            }),
                        };
                        let Some(object) = last else { continue };
                        WatchEvent { event_type: EventType::Deleted, object: Arc::new(object) }
                    }
                };
                changes.push(Arc::new(change));
            }
            if !changes.is_empty() {
                mirror.apply(changes, revision);
            }
        }
    }
}

impl EtcdStore {
    /// A commit, guarded by `fence` when a leader's loop makes it.
    pub(super) fn commit_as(&self, ops: Vec<Op>, fence: Option<&Fence>) -> Result<Vec<Outcome>, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (objects, base_rv) = self.mirror.objects();
        let (staged, outcomes, rv) = stage(&objects, base_rv, ops)?;
        if rv == base_rv {
            return Ok(outcomes);
        }
        let written = self.write(&objects, &staged, fence);
        self.note(&written.as_ref().map(|_| ()).map_err(backend));
        let Some(revision) = written? else {
            // Name what changed, as a redb conflict does.
            let (now, _) = self.mirror.objects();
            let changed = staged.keys().find(|key| {
                objects.get(key).map(|o| o.resource_version()) != now.get(key).map(|o| o.resource_version())
            });
            let key = changed.or_else(|| staged.keys().next()).cloned().expect("a batch that writes has a key");
            let current = now.get(&key).map_or(0, |o| o.resource_version());
            let requested = objects.get(&key).map_or(0, |o| o.resource_version());
            return Err(StoreError::Conflict { key, current, requested });
        };
        // Answer with what readers will see: the write as the watch brings it.
        if !self.mirror.wait_for(revision, ECHO_TIMEOUT) {
            tracing::warn!(revision, "a write to etcd did not come back through the watch in time");
        }
        let stamped = |object: &Arc<ApiObject>| {
            let mut object = ApiObject::clone(object);
            object.metadata.resource_version = revision.to_string();
            Arc::new(object)
        };
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Created(o) => Outcome::Created(stamped(&o)),
                Outcome::Configured(o) => Outcome::Configured(stamped(&o)),
                Outcome::Deleted(o) => Outcome::Deleted(stamped(&o)),
                unchanged @ Outcome::Unchanged(_) => unchanged,
            })
            .collect())
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &ObjectKey) -> Option<ApiObject> {
        self.mirror.get(key).map(|o| ApiObject::clone(&o))
    }

    fn view(&self) -> View {
        self.mirror.view()
    }

    fn commit(&self, ops: Vec<Op>) -> Result<Vec<Outcome>, StoreError> {
        self.commit_as(ops, None)
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

    fn counts(&self) -> Vec<(Kind, usize)> {
        self.mirror.counts()
    }

    fn write_failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn read_failure(&self) -> Option<String> {
        let last = (*self.last_contact.lock().unwrap_or_else(|p| p.into_inner()))?;
        let silent = last.elapsed();
        (silent > OUT_OF_TOUCH_AFTER).then(|| {
            format!(
                "no answer from etcd ({}) for {:.1} s: what this controller serves from memory may be stale",
                self.target.endpoints.join(","),
                silent.as_secs_f64()
            )
        })
    }

    fn write_failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_urls_name_members_and_a_prefix() {
        let target = EtcdTarget::parse("etcd://10.0.0.1:2379,10.0.0.2:2379").unwrap();
        assert_eq!(target.endpoints, ["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(target.prefix, "/flotilla/");
        assert_eq!(EtcdTarget::parse("etcd://h:2379/plant-7").unwrap().prefix, "/plant-7/");
        assert!(EtcdTarget::parse("etcd://h").unwrap_err().contains("no port"));
        assert!(EtcdTarget::parse("http://h:2379").is_err());
        assert!(EtcdTarget::parse("etcd://").unwrap_err().contains("names no etcd member"));
    }

    #[test]
    fn an_etcd_key_names_its_object() {
        let key = ObjectKey::new(Kind::Pod, "default", "web-1");
        let etcd = format!("/flotilla/objects/{}", key.encode());
        assert_eq!(key_of_etcd("/flotilla/objects/", etcd.as_bytes()), Some(key));
        assert_eq!(key_of_etcd("/flotilla/objects/", b"/elsewhere/x"), None);
    }
}
