//! The reconcile loop: level-triggered passes of the pure
//! [`controllers`](crate::controllers) over the store.
//!
//! Every pass reads the whole desired and observed state from the store
//! ([`Snapshot`]), lets the controllers compute the writes that move it one
//! step closer ([`controllers::plan`]) and commits them. A pass runs after
//! every change (debounced), when a controller asked for one
//! ([`Requeue`]), and every 30 s regardless. Between those full passes a
//! pass reconciles only the workloads the watched changes touched
//! ([`Scope`]: at 10,000 devices reconciling every workload took 200-400 ms
//! a pass); the full pass every 30 s means no correctness depends on
//! having seen a particular event.

use std::sync::Arc;
use std::time::Duration;

use crate::controllers::node_lifecycle::EvictionPolicy;
use crate::controllers::{self, NodeMarks, Requeue, Scope};
use crate::manifest::Kind;
use crate::store::Store;

pub use crate::controllers::Snapshot;

/// Runs passes until the task is aborted. `eviction` tells each pass what
/// the transport knows about evicting lost nodes' replicas.
pub async fn run(
    store: Arc<dyn Store>,
    eviction: impl Fn() -> EvictionPolicy + Send + Sync + 'static,
    default_registry: String,
    counters: crate::fleet::counters::FleetCounters,
) {
    let mut live = match store.subscribe(0) {
        Ok(subscription) => subscription.live,
        Err(e) => {
            tracing::error!(error = %e, "reconciler cannot watch the store");
            return;
        }
    };
    // What changed since the last pass; the first pass, a lagged watch and
    // the periodic resync look at everything.
    let mut scope = Scope::All;
    let mut node_marks = NodeMarks::default();
    let mut last_full = std::time::Instant::now();
    loop {
        if last_full.elapsed() >= IDLE_RESYNC {
            scope = Scope::All;
        }
        if scope == Scope::All {
            last_full = std::time::Instant::now();
        }
        let pass_scope = std::mem::replace(&mut scope, Scope::nothing());
        let pass_store = store.clone();
        let policy = eviction();
        let registry = default_registry.clone();
        let mut resync = IDLE_RESYNC;
        let started = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || reconcile_pass(pass_store.as_ref(), policy, pass_scope, registry))
            .await
        {
            Ok(Ok(pass)) => {
                counters.pass(started.elapsed().as_secs_f64());
                counters.placed(pass.placements);
                if pass.writes > 0 {
                    tracing::debug!(writes = pass.writes, "reconcile pass");
                }
                if let Requeue::After(after) = pass.requeue {
                    resync = resync.min(after);
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reconcile pass failed; retrying");
                scope = Scope::All;
            }
            Err(e) => {
                tracing::error!(error = %e, "reconcile pass panicked; retrying");
                scope = Scope::All;
            }
        }
        let took = started.elapsed();
        // Wait for a change or the periodic resync (every second while a
        // rollout or deadline waits on the clock rather than on events),
        // then let a burst settle: at least as long as the pass took, so a
        // large fleet's stream of status writes is taken in a few large
        // passes rather than one pass per write. The clock counts from the
        // pass's snapshot, not its end: an eviction due while the pass ran
        // is made at once.
        let changed = tokio::time::timeout(resync.saturating_sub(took), async {
            loop {
                match live.recv().await {
                    Ok(event) if event.object.kind == Kind::Event => continue,
                    Ok(event) => return Some(event),
                    Err(_) => return None, // lagged (or closed): look at everything
                }
            }
        })
        .await;
        // The clock a controller asked for (an eviction grace, a rollout's
        // readiness) runs the pass at once; a change lets its burst settle.
        if let Ok(event) = changed {
            match event {
                Some(event) => scope.note(&event, &mut node_marks),
                None => {
                    // Changes were missed: the marks may be stale too.
                    scope = Scope::All;
                    node_marks = NodeMarks::default();
                }
            }
            tokio::time::sleep(took.clamp(Duration::from_millis(20), MAX_SETTLE)).await;
        }
        loop {
            match live.try_recv() {
                Ok(event) => scope.note(&event, &mut node_marks),
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
                Err(_) => {
                    scope = Scope::All;
                    node_marks = NodeMarks::default();
                    break;
                }
            }
        }
    }
}

/// The longest a burst of changes is left to settle before the next pass:
/// at 10,000 devices a pass takes a few hundred milliseconds, and waiting
/// that long again after a node's Last Will was part of every failover.
const MAX_SETTLE: Duration = Duration::from_millis(100);

/// How often a pass runs with no change to trigger it (level triggering:
/// nothing depends on having seen a particular event).
const IDLE_RESYNC: Duration = Duration::from_secs(30);

/// One pass: read, plan, write. Returns the number of writes.
pub fn reconcile_once(store: &dyn Store) -> Result<usize, crate::store::StoreError> {
    reconcile_pass(store, EvictionPolicy::default(), Scope::All, String::new()).map(|pass| pass.writes)
}

/// What a pass did.
struct Pass {
    writes: usize,
    /// Replicas bound to a node by this pass.
    placements: u64,
    /// When the controllers want the next pass if nothing changes.
    requeue: Requeue,
}

/// Replicas `ops` bind to a node that were on none (or did not exist: a
/// DaemonSet's, bound at creation).
fn placements(snapshot: &Snapshot, ops: &[crate::store::Op]) -> u64 {
    let Some(view) = &snapshot.view else { return 0 };
    let bound = |op: &crate::store::Op| match op {
        crate::store::Op::Apply(pod) if pod.kind == crate::manifest::Kind::Pod && pod.node_name().is_some() => {
            view.get(&pod.key()).is_none_or(|stored| stored.node_name().is_none())
        }
        _ => false,
    };
    ops.iter().filter(|op| bound(op)).count() as u64
}

fn reconcile_pass(
    store: &dyn Store,
    eviction: EvictionPolicy,
    scope: Scope,
    default_registry: String,
) -> Result<Pass, crate::store::StoreError> {
    let mut snapshot = Snapshot::read(store);
    snapshot.eviction = eviction;
    snapshot.default_registry = default_registry;
    snapshot.scope = scope;
    let (ops, requeue) = controllers::plan(&snapshot);
    let pass = Pass { writes: ops.len(), placements: placements(&snapshot, &ops), requeue };
    if ops.is_empty() {
        return Ok(pass);
    }
    crate::store::commit_in_chunks(store, ops, "reconcile");
    Ok(pass)
}
