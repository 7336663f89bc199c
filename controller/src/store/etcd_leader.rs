//! Several controllers on one etcd, one leader (issue 20).
//!
//! The leader holds the key `<prefix>controller` (its value names the
//! controller) under a lease it keeps alive. The others stand by: they
//! serve the API, whose writes go through etcd like the leader's, and look
//! at the key every [`STANDBY_POLL`]; when the leader's lease ends (it died,
//! or lost etcd) the key goes with it and the first standby to create it
//! again leads.
//!
//! A term is fenced twice. On etcd: every commit of the leader's loops is
//! guarded by the key's create revision, which changes when another
//! controller takes it, so a deposed leader's write is refused. And on its
//! own clock: a leader that has not had a keep-alive confirmed for two
//! thirds of the lease ends its term itself, before etcd could let the
//! lease go (it is kept from the moment the confirmed keep-alive was sent),
//! so its loops stop publishing before another controller can start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::etcd_store::{EtcdStore, Fence, fenced, kv, retrying};
use super::{Op, Outcome, Store, StoreError, Subscription, View};
use crate::manifest::Kind;
use crate::object::{ApiObject, ObjectKey};

/// How long the leader's lease lasts by default: the longest a dead
/// leader's work waits for another controller to take it over.
pub const DEFAULT_LEADER_LEASE: Duration = Duration::from_secs(3);

/// How often a standby looks whether the leader's key is gone.
const STANDBY_POLL: Duration = Duration::from_millis(200);

/// One controller's term as leader: the store its leader-only loops
/// (reconcilers, scheduler, publisher, inbox) write through, fenced by the
/// term. Ends for good when the lease is lost or given up.
pub struct Term {
    store: Arc<EtcdStore>,
    fence: Fence,
    lease: i64,
    ended: tokio::sync::watch::Sender<bool>,
}

impl EtcdStore {
    /// etcd answered just now (see [`Store::read_failure`]).
    fn touch(&self) {
        *self.last_contact.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
    }

    /// Stands by until this controller holds the leader key, then returns
    /// its term (kept alive from then on). `identity` is what the others
    /// show as the leader.
    pub fn campaign(
        self: &Arc<Self>,
        identity: String,
        lease_ttl: Duration,
    ) -> tokio::task::JoinHandle<Result<Arc<Term>, StoreError>> {
        let store = self.clone();
        self.spawn(async move {
            let key = store.target().controller_key();
            let client = store.client();
            let ttl_s = lease_ttl.as_secs().max(2) as i64;
            let mut last_holder: Option<String> = None;
            loop {
                let current = retrying(|| {
                    let (mut kv, key) = (kv(&client), key.clone());
                    async move { kv.get(key, None).await }
                })
                .await;
                let holder = match current {
                    Ok(answer) => {
                        store.touch();
                        answer.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read who leads; trying again");
                        tokio::time::sleep(STANDBY_POLL).await;
                        continue;
                    }
                };
                if let Some(holder) = holder {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(leader = holder, "standing by: another controller leads");
                        *store.holder.lock().unwrap_or_else(|p| p.into_inner()) = Some(holder.clone());
                        last_holder = Some(holder);
                    }
                    tokio::time::sleep(STANDBY_POLL).await;
                    continue;
                }
                // Free: take it under a fresh lease (a standby holds none,
                // or it would have to keep it alive while it waits).
                let sent = tokio::time::Instant::now();
                let lease = match client.lease_client().grant(ttl_s, None).await {
                    Ok(granted) => granted.id(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot get a lease from etcd; trying again");
                        tokio::time::sleep(STANDBY_POLL).await;
                        continue;
                    }
                };
                let take =
                    Txn::new().when(vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)]).and_then(vec![
                        TxnOp::put(
                            key.clone(),
                            identity.clone(),
                            Some(etcd_client::PutOptions::new().with_lease(lease)),
                        ),
                    ]);
                match kv(&client).txn(take).await {
                    Ok(answer) if answer.succeeded() => {
                        let create_revision = answer.header().map_or(0, |h| h.revision());
                        let lost = Arc::new(AtomicBool::new(false));
                        let fence = Fence { key: key.clone(), create_revision, lost };
                        let (ended, _) = tokio::sync::watch::channel(false);
                        let term = Arc::new(Term { store: store.clone(), fence, lease, ended });
                        *store.holder.lock().unwrap_or_else(|p| p.into_inner()) = Some(identity.clone());
                        tracing::info!(key, lease, identity, "this controller leads");
                        store.touch();
                        tokio::spawn(keep_alive(Arc::downgrade(&term), client.clone(), lease, lease_ttl, sent));
                        return Ok(term);
                    }
                    other => {
                        if let Err(e) = other {
                            tracing::warn!(error = %e, "taking the leader key failed; trying again");
                        }
                        let _ = client.lease_client().revoke(lease).await;
                        tokio::time::sleep(STANDBY_POLL).await;
                    }
                }
            }
        })
    }

    /// What every controller on this etcd must agree on (fingerprints of
    /// the keys they share): records `ours` at `<prefix>keys` if no
    /// controller did yet, and returns what is recorded.
    pub fn agree_on_keys(&self, ours: &str) -> Result<String, StoreError> {
        let key = format!("{}keys", self.target().prefix);
        let client = self.client();
        let (record, value) = (key.clone(), ours.to_owned());
        let answer = self.run(async move {
            let first = Txn::new()
                .when(vec![Compare::create_revision(record.clone(), CompareOp::Equal, 0)])
                .and_then(vec![TxnOp::put(record.clone(), value, None)])
                .or_else(vec![TxnOp::get(record, None)]);
            retrying(|| {
                let (mut kv, first) = (kv(&client), first.clone());
                async move { kv.txn(first).await }
            })
            .await
        });
        let answer = answer.map_err(|e| StoreError::Backend(format!("etcd: reading {key}: {e}")))?;
        if answer.succeeded() {
            return Ok(ours.to_owned());
        }
        let recorded = answer.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => {
                get.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            }
            _ => None,
        });
        Ok(recorded.unwrap_or_default())
    }

    /// Who leads, as this controller last saw it.
    pub fn leader(&self) -> Option<String> {
        self.holder.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Keeps the term's lease alive, and ends the term when etcd says the lease
/// is gone or when no keep-alive was confirmed for two thirds of it.
async fn keep_alive(
    term: std::sync::Weak<Term>,
    client: etcd_client::Client,
    lease: i64,
    ttl: Duration,
    granted_at: tokio::time::Instant,
) {
    let every = ttl / 4;
    let trust = ttl * 2 / 3;
    // From when the last confirmed request was sent: etcd keeps the lease
    // at least `ttl` from when it received it, which is later.
    let mut confirmed = granted_at;
    let end = |why: &str| {
        if let Some(term) = term.upgrade()
            && !term.fence.lost.load(Ordering::Relaxed)
        {
            tracing::error!(lease, reason = why, "this controller's term as leader ended; its loops stop");
            term.end();
        }
    };
    'connect: loop {
        if term.upgrade().is_none_or(|t| t.fence.lost.load(Ordering::Relaxed)) {
            return;
        }
        let deadline = confirmed + trust;
        let keeper = tokio::time::timeout_at(deadline, client.lease_client().keep_alive(lease)).await;
        let (mut keeper, mut answers) = match keeper {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot keep the leader lease alive; retrying");
                tokio::time::sleep(Duration::from_millis(100).min(every)).await;
                continue;
            }
            Err(_) => return end("no keep-alive confirmed in time"),
        };
        loop {
            if term.upgrade().is_none_or(|t| t.fence.lost.load(Ordering::Relaxed)) {
                return;
            }
            let sent = tokio::time::Instant::now();
            let step = async {
                keeper.keep_alive().await?;
                answers.message().await
            };
            match tokio::time::timeout_at(confirmed + trust, step).await {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {
                    confirmed = sent;
                    if let Some(term) = term.upgrade() {
                        term.store.touch();
                    }
                    tokio::time::sleep(every).await;
                }
                Ok(Ok(Some(_))) => return end("etcd says the lease expired"),
                Ok(Ok(None)) | Ok(Err(_)) => continue 'connect,
                Err(_) => return end("no keep-alive confirmed in time"),
            }
        }
    }
}

impl Term {
    /// Resolves once the term has ended.
    pub async fn ended(&self) {
        let mut ended = self.ended.subscribe();
        let _ = ended.wait_for(|ended| *ended).await;
    }

    /// Whether the term is over.
    pub fn is_over(&self) -> bool {
        self.fence.lost.load(Ordering::Relaxed)
    }

    fn end(&self) {
        self.fence.lost.store(true, Ordering::Relaxed);
        self.ended.send_replace(true);
    }

    /// Ends the term and gives the lease back, so a standby takes over at
    /// once instead of after the lease (a controller that stops).
    pub fn resign(&self) {
        if let Some(give_back) = self.give_back() {
            self.store.run(give_back);
        }
    }

    /// Ends the term; the first time, the revocation of its lease to run.
    fn give_back(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let first = !self.fence.lost.swap(true, Ordering::Relaxed);
        self.ended.send_replace(true);
        let (client, lease) = (self.store.client(), self.lease);
        first.then_some(async move {
            match tokio::time::timeout(Duration::from_secs(2), client.lease_client().revoke(lease)).await {
                Ok(Ok(_)) => tracing::info!(lease, "gave up leading"),
                _ => tracing::warn!(lease, "could not give the leader lease back; it ends by itself"),
            }
        })
    }
}

impl Drop for Term {
    /// A term dropped without [`Term::resign`] gives its lease back in the
    /// background: dropping must not block a thread for etcd's answer.
    fn drop(&mut self) {
        if let Some(give_back) = self.give_back() {
            drop(self.store.spawn(give_back));
        }
    }
}

/// The leader's loops read like everyone and write fenced by the term.
impl Store for Term {
    fn get(&self, key: &ObjectKey) -> Option<ApiObject> {
        self.store.get(key)
    }

    fn view(&self) -> View {
        self.store.view()
    }

    fn commit(&self, ops: Vec<Op>) -> Result<Vec<Outcome>, StoreError> {
        if self.is_over() {
            return Err(fenced(&self.fence.key));
        }
        self.store.commit_as(ops, Some(&self.fence))
    }

    fn dry_run(&self, ops: Vec<Op>) -> Result<Vec<Outcome>, StoreError> {
        self.store.dry_run(ops)
    }

    fn subscribe(&self, resource_version: u64) -> Result<Subscription, StoreError> {
        self.store.subscribe(resource_version)
    }

    fn resource_version(&self) -> u64 {
        self.store.resource_version()
    }

    fn counts(&self) -> Vec<(Kind, usize)> {
        self.store.counts()
    }

    fn write_failure(&self) -> Option<String> {
        self.store.write_failure()
    }

    fn read_failure(&self) -> Option<String> {
        self.store.read_failure()
    }

    fn write_failures(&self) -> u64 {
        self.store.write_failures()
    }
}
