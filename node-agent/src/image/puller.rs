//! Pulls in the background: the agent's loop is synchronous and must keep
//! ticking (probes, restarts, heartbeats) while a slow link brings an image
//! in. One worker thread pulls one image at a time (a device link is better
//! used by one transfer than split between several) and publishes each
//! pull's state in a list the agent reads; the queued entries of that list
//! are the queue.
//!
//! Lists rather than maps, and a condition variable rather than a channel:
//! a node has a handful of images, and each collection type instantiated
//! costs the 4 MB agent binary kilobytes.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::error::PullError;
use super::gc;
use super::oci::{Platform, Sha256};
use super::pull::{self, Counters};
use super::registry::{Registry, Timeouts};
use super::store::Store;

/// Where one pull is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullState {
    /// Waiting for the worker.
    Queued,
    /// Transferring.
    Pulling(Counters),
    /// In the store.
    Ready(Counters),
    /// Failed; the agent decides when to try again.
    Failed {
        /// What went wrong (the error's message).
        reason: String,
        /// Retrying cannot help (wrong platform...).
        permanent: bool,
        /// Bytes of the failed attempt.
        counters: Counters,
    },
}

/// One requested pull.
#[derive(Debug, Clone)]
struct Pull {
    digest: Sha256,
    reference: String,
    state: PullState,
}

/// What the worker and the agent share.
#[derive(Default)]
struct State {
    pulls: Vec<Pull>,
    /// Images of the current replicas, sorted.
    in_use: Vec<Sha256>,
    /// A garbage collection is due.
    collect: bool,
    /// The agent dropped its handle.
    stopped: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single assignment: a panic cannot leave the
        // state half-written. Keep going with what is there.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, digest: Sha256, state: PullState) {
        if let Some(pull) = self.lock().pulls.iter_mut().find(|p| p.digest == digest) {
            pull.state = state;
        }
    }
}

/// The worker's settings.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// This node's platform.
    pub platform: Platform,
    /// Network timeouts.
    pub timeouts: Timeouts,
    /// The registry spoken to over HTTPS, if any.
    pub tls_registry: Option<super::TlsRegistry>,
    /// The disk budget of the store.
    pub budget_bytes: u64,
}

/// The handle the agent holds. Dropping it stops the worker after the
/// current pull.
pub struct Puller {
    shared: Arc<Shared>,
}

impl Drop for Puller {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.wake.notify_all();
    }
}

impl Puller {
    /// Starts the worker.
    pub fn start(store: Store, settings: WorkerSettings) -> Self {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        let spawned =
            std::thread::Builder::new().name("image-puller".into()).spawn(move || work(&store, &settings, &worker));
        if let Err(e) = spawned {
            // Pulls then stay queued and replicas say "pulling": visible, not a crash.
            tracing::error!(error = %e, "cannot start the image puller thread");
        }
        Puller { shared }
    }

    /// Queues a pull unless one is queued or running.
    pub fn request(&self, reference: &str, digest: Sha256) {
        let mut state = self.shared.lock();
        let queued = Pull { digest, reference: reference.to_owned(), state: PullState::Queued };
        match state.pulls.iter_mut().find(|p| p.digest == digest) {
            Some(Pull { state: PullState::Queued | PullState::Pulling(_), .. }) => return,
            Some(pull) => *pull = queued,
            None => state.pulls.push(queued),
        }
        drop(state);
        self.shared.wake.notify_all();
    }

    /// The state of a pull, if one was requested.
    pub fn state(&self, digest: &Sha256) -> Option<PullState> {
        self.shared.lock().pulls.iter().find(|p| p.digest == *digest).map(|p| p.state.clone())
    }

    /// Every pull's state.
    pub fn states(&self) -> Vec<(Sha256, PullState)> {
        self.shared.lock().pulls.iter().map(|p| (p.digest, p.state.clone())).collect()
    }

    /// Forgets a finished pull (its result has been seen).
    pub fn forget(&self, digest: &Sha256) {
        self.shared
            .lock()
            .pulls
            .retain(|p| p.digest != *digest || matches!(p.state, PullState::Queued | PullState::Pulling(_)));
    }

    /// Sets the images current replicas use and, if that changed, queues a
    /// garbage collection.
    pub fn set_in_use(&self, mut images: Vec<Sha256>) {
        images.sort_unstable();
        images.dedup();
        let mut state = self.shared.lock();
        if state.in_use != images {
            state.in_use = images;
            state.collect = true;
            drop(state);
            self.shared.wake.notify_all();
        }
    }
}

/// What the worker does next.
enum Job {
    Pull { reference: String, digest: Sha256 },
    CollectGarbage,
}

/// Waits for work; `None` when the agent is gone.
fn next_job(shared: &Shared) -> Option<Job> {
    let mut state = shared.lock();
    loop {
        if state.stopped {
            return None;
        }
        if let Some(pull) = state.pulls.iter_mut().find(|p| p.state == PullState::Queued) {
            pull.state = PullState::Pulling(Counters::default());
            return Some(Job::Pull { reference: pull.reference.clone(), digest: pull.digest });
        }
        if state.collect {
            state.collect = false;
            return Some(Job::CollectGarbage);
        }
        state = shared.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
    }
}

fn work(store: &Store, settings: &WorkerSettings, shared: &Shared) {
    let registry = Registry::new(settings.timeouts).with_tls(settings.tls_registry.clone());
    let cx = pull::Context { registry: &registry, store, node: &settings.platform };
    while let Some(job) = next_job(shared) {
        let (reference, digest) = match job {
            Job::CollectGarbage => {
                collect(store, settings.budget_bytes, shared);
                continue;
            }
            Job::Pull { reference, digest } => (reference, digest),
        };
        if store.record(&digest).is_some() {
            shared.set(digest, PullState::Ready(Counters::default()));
            continue;
        }
        tracing::info!(image = %reference, %digest, "pulling");
        let mut last = Counters::default();
        let result = pull::pull(&cx, &reference, digest, &mut |counters| {
            last = counters;
            shared.set(digest, PullState::Pulling(counters));
        });
        let disk_full = matches!(result, Err(PullError::DiskFull { .. }));
        let state = match result {
            Ok(_) => {
                tracing::info!(image = %reference, %digest, bytes = last.received_bytes, "pulled");
                PullState::Ready(last)
            }
            Err(e) => {
                tracing::warn!(image = %reference, %digest, error = %e, "pull failed");
                PullState::Failed { reason: e.to_string(), permanent: e.is_permanent(), counters: last }
            }
        };
        shared.set(digest, state);
        // Make room: within the budget after a pull, everything unused
        // after a full disk.
        collect(store, if disk_full { 0 } else { settings.budget_bytes }, shared);
    }
}

fn collect(store: &Store, budget_bytes: u64, shared: &Shared) {
    let in_use = shared.lock().in_use.clone();
    let collected = gc::collect(store, budget_bytes, &in_use);
    if !collected.images.is_empty() || collected.layers > 0 {
        tracing::info!(
            images = collected.images.len(),
            layers = collected.layers,
            bytes_after = collected.bytes_after,
            "image garbage collected"
        );
    }
}
