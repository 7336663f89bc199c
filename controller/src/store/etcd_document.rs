//! One document on etcd that every controller shares, sealed with the
//! Secrets key: the enrolment (join tokens, node credentials) when the
//! store is etcd. Replaced whole under a `mod_revision` guard, followed by
//! a watch.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, WatchOptions};

use super::SecretCipher;
use super::etcd_store::{kv, watcher};
use crate::fleet::credentials::SharedDocument;

/// A sealed document at one etcd key.
pub struct EtcdDocument {
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) client: Client,
    pub(super) key: String,
    pub(super) cipher: SecretCipher,
}

impl EtcdDocument {
    fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = answer.send(work.await);
        });
        let answer = answered.recv().map_err(|_| anyhow::anyhow!("the etcd client stopped"))?;
        answer.map_err(|e| anyhow::anyhow!("etcd: {e}"))
    }
}

impl SharedDocument for EtcdDocument {
    fn load(&self) -> anyhow::Result<Option<(Vec<u8>, u64)>> {
        let (client, key) = (self.client.clone(), self.key.clone());
        let answer = self.run(super::etcd_store::retrying(move || {
            let (mut kv, key) = (kv(&client), key.clone());
            async move { kv.get(key, None).await }
        }))?;
        match answer.kvs().first() {
            Some(kv) => Ok(Some((self.cipher.open(kv.value())?, kv.mod_revision().max(0) as u64))),
            None => Ok(None),
        }
    }

    fn replace(&self, bytes: &[u8], expected: u64) -> anyhow::Result<Option<u64>> {
        let sealed = self.cipher.seal(bytes)?;
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(self.key.clone(), CompareOp::Equal, expected as i64)])
            .and_then(vec![TxnOp::put(self.key.clone(), sealed.clone(), None)]);
        let client = self.client.clone();
        let answer = self.run(super::etcd_store::retrying(move || {
            let (mut kv, txn) = (kv(&client), txn.clone());
            async move { kv.txn(txn).await }
        }));
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                // Unanswered (a leader election): it may have landed. It
                // did if the key holds exactly these sealed bytes (the
                // nonce makes them unique).
                let (client, key) = (self.client.clone(), self.key.clone());
                let now = self.run(async move { kv(&client).get(key, None).await })?;
                return match now.kvs().first() {
                    Some(kv) if kv.value() == sealed.as_slice() => Ok(Some(kv.mod_revision().max(0) as u64)),
                    _ => Err(e),
                };
            }
        };
        Ok(answer.succeeded().then(|| answer.header().map_or(0, |h| h.revision()).max(0) as u64))
    }

    fn follow(&self, after: u64, changed: Box<dyn Fn(Vec<u8>, u64) + Send + Sync>) {
        let (client, key, cipher) = (self.client.clone(), self.key.clone(), self.cipher.clone());
        self.runtime.spawn(async move {
            let mut seen = after;
            loop {
                let options = WatchOptions::new().with_start_revision(seen as i64 + 1);
                let mut stream = match watcher(&client).watch(key.clone(), Some(options)).await {
                    Ok((_watcher, stream)) => stream,
                    Err(e) => {
                        tracing::warn!(key, error = %e, "cannot watch the shared document; trying again");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                loop {
                    let answer = match stream.message().await {
                        Ok(Some(answer)) => answer,
                        Ok(None) | Err(_) => break,
                    };
                    if answer.compact_revision() > 0 || answer.canceled() {
                        // Fell behind compaction: read what is there now.
                        if let Ok(now) = kv(&client).get(key.clone(), None).await
                            && let Some(kv) = now.kvs().first()
                        {
                            seen = seen.max(kv.mod_revision().max(0) as u64);
                            match cipher.open(kv.value()) {
                                Ok(bytes) => changed(bytes, kv.mod_revision().max(0) as u64),
                                Err(e) => tracing::error!(key, error = %e, "cannot open the shared document"),
                            }
                        }
                        break;
                    }
                    for event in answer.events() {
                        let Some(kv) = event.kv() else { continue };
                        seen = seen.max(kv.mod_revision().max(0) as u64);
                        if event.event_type() != etcd_client::EventType::Put {
                            tracing::error!(key, "the shared document was deleted on etcd; keeping the last one read");
                            continue;
                        }
                        match cipher.open(kv.value()) {
                            Ok(bytes) => changed(bytes, kv.mod_revision().max(0) as u64),
                            Err(e) => tracing::error!(
                                key,
                                error = %e,
                                "cannot open the shared document (another controller with a different secrets.key?)"
                            ),
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    fn describe(&self) -> String {
        format!("etcd key {}", self.key)
    }
}
