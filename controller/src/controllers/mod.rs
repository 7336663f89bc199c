//! Controllers: pure steps from a [`Snapshot`] to the writes that move it
//! towards what was declared, one file per concern.
//!
//! - [`gc`]: replicas whose owner is gone, old events.
//! - [`deployment`]: rollouts (surge, availability, rollback).
//! - [`daemonset`]: one replica per eligible node, node-by-node updates.
//! - [`statefulset`]: replicas with stable names and claims of their own.
//! - [`job`]: run to completion.
//! - [`node_lifecycle`]: a lost node's replicas move (eviction).
//! - [`scheduling`]: pending, pinned replicas -> nodes.
//! - [`claims`]: which device a replica's persistent volume claims hold it to.
//! - [`image_pinning`]: image digests and architectures on replicas.
//! - [`endpoints`]: each Service's ready endpoints.
//! - [`workload`]: replica names and templates, shared by the workload
//!   controllers; [`snapshot`]: what they all read.
//!
//! [`plan`] runs them in that order over one snapshot and says when it
//! wants to run again ([`Requeue`]); `crate::reconcile` is the loop that
//! reads the store, commits the writes and waits.
//!
//! A controller reads a snapshot and what it is told (answers it asked
//! for, the time) and returns writes; it does no I/O. Whatever must ask
//! the world (a registry, the network) lives outside this module and feeds
//! it answers, so every decision here is testable without a server. Nothing
//! here imports the fleet transport, the API, the registry, `rumqttc`,
//! `axum` or an HTTP client.
//!
//! Fields and their one writer (the others only read):
//!
//! | field | writer |
//! |---|---|
//! | Pod `metadata.annotations[flotilla.io/image-digest, image-archs, image-error]` | [`image_pinning`] |
//! | Pod `metadata.deletionTimestamp` | the rollouts (`Op::Retire`, set once by the store) |
//! | Pod `spec.nodeName`, status `PodScheduled` and Pending reasons (also `InvalidReplica`, `TooManyReplicas`: what its node's document leaves out) | [`scheduling`] |
//! | Pod status of a lost node's DaemonSet replica (`Unknown`, `NodeLost`) and of a replica its claim holds there (`Unknown`, `WaitingForVolume`); deletes of its retired replicas | [`node_lifecycle`] |
//! | PersistentVolumeClaim `status` (the device it is bound to) | [`scheduling`] (see [`claims`]) |
//! | Node `Ready` condition (registration, leases, Last Will) | the fleet inbox |
//! | Deployment, DaemonSet, Job, StatefulSet `status` | [`deployment`], [`daemonset`], [`job`], [`statefulset`] |
//! | PersistentVolumeClaims made from `volumeClaimTemplates` (create; delete by the retention policy) | [`statefulset`]; deletes of retired claims no replica mounts: [`gc`] |
//! | Service `status` (endpoints) | [`endpoints`] |
//! | Pod status reported by the node (phase once running, restarts, usage, Ready) | the fleet inbox |

pub mod claims;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod image_pinning;
pub mod job;
pub mod node_lifecycle;
pub mod scheduling;
pub mod snapshot;
pub mod statefulset;
pub mod workload;

use std::time::{Duration, SystemTime};

use crate::manifest::Kind;
use crate::object::ApiObject;
use crate::store::Op;

pub use snapshot::{NodeMarks, Scope, Snapshot};

/// When a controller wants its next pass if nothing changes before: like
/// kube-runtime's `Action::requeue`, so "does anything wait on the clock"
/// is what the controllers answered, not a separate guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Only after a change (and the loop's slow level-triggered resync).
    OnChange,
    /// After this long, changed or not.
    After(Duration),
}

impl Requeue {
    /// A rollout, a readiness count or a deadline that waits on the clock.
    pub const CLOCK: Requeue = Requeue::After(Duration::from_secs(1));

    /// The sooner of two.
    pub fn sooner(self, other: Requeue) -> Requeue {
        match (self, other) {
            (Requeue::After(a), Requeue::After(b)) => Requeue::After(a.min(b)),
            (Requeue::After(a), Requeue::OnChange) | (Requeue::OnChange, Requeue::After(a)) => Requeue::After(a),
            (Requeue::OnChange, Requeue::OnChange) => Requeue::OnChange,
        }
    }
}

/// Most replicas one pass creates, binds or pins. A fleet-wide change (the
/// first apply onto 10,000 devices: 50,000 replicas to create, pin and
/// bind) is taken in slices of this many, so no pass holds tens of
/// thousands of copied objects at once: the controller's memory is its
/// largest pass, which the allocator keeps after it. The next slice
/// follows at once (the writes of one pass wake the next).
pub const PASS_SLICE: usize = 4096;

/// What a pass may still create (see [`PASS_SLICE`]), shared by the
/// Deployments and Jobs. DaemonSets are not sliced: their replicas are
/// bound at creation, outside the scheduler, and must exist before it packs
/// their nodes.
#[derive(Debug)]
pub struct Budget {
    creations: usize,
}

impl Budget {
    /// Room for `creations`.
    pub fn new(creations: usize) -> Self {
        Budget { creations }
    }

    /// Takes room for one creation; `false` once the pass made its share
    /// (the rest is created by the next pass).
    pub fn create(&mut self) -> bool {
        let room = self.creations > 0;
        self.creations = self.creations.saturating_sub(1);
        room
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(PASS_SLICE)
    }
}

/// One pass of every controller over `snapshot`: the writes, in order,
/// and when to come back.
pub fn plan(snapshot: &Snapshot) -> (Vec<Op>, Requeue) {
    let mut ops = Vec::new();
    let now = snapshot.now.unwrap_or_else(SystemTime::now);
    let mut timing = PassTiming::start();
    gc::reconcile(snapshot, now, &mut ops);
    timing.mark("gc");
    let mut requeue = Requeue::OnChange;
    let mut budget = Budget::default();
    let mut reconciled = 0;
    // A workload outside the pass's scope is reconciled anyway while it
    // waits on the clock (its requeue says so).
    let due = |workload: &ApiObject, wants: Requeue| snapshot.scope.wants(workload) || wants != Requeue::OnChange;
    let workloads = [
        (Kind::Deployment, &snapshot.deployments),
        (Kind::DaemonSet, &snapshot.daemon_sets),
        (Kind::Job, &snapshot.jobs),
        (Kind::StatefulSet, &snapshot.stateful_sets),
    ];
    for (kind, list) in workloads {
        for workload in list {
            let wants = match kind {
                Kind::Deployment => deployment::requeue(workload),
                Kind::DaemonSet => daemonset::requeue(workload),
                Kind::StatefulSet => statefulset::requeue(workload),
                _ => job::requeue(workload),
            };
            requeue = requeue.sooner(wants);
            if !due(workload, wants) {
                continue;
            }
            let owned = snapshot.owned_by(&workload.metadata.uid);
            match kind {
                Kind::Deployment => deployment::reconcile(workload, &owned, now, &mut budget, &mut ops),
                Kind::DaemonSet => daemonset::reconcile(workload, &owned, &snapshot.nodes, now, &mut ops),
                Kind::StatefulSet => {
                    statefulset::reconcile(workload, &owned, &snapshot.claims, now, &mut budget, &mut ops)
                }
                _ => job::reconcile(workload, &owned, now, &mut budget, &mut ops),
            }
            reconciled += 1;
        }
    }
    timing.mark("workloads");
    let (evictions, lifecycle) = node_lifecycle::reconcile(snapshot, &snapshot.eviction, now, &mut ops);
    timing.mark("node_lifecycle");
    requeue = requeue.sooner(lifecycle);
    let scheduled = scheduling::reconcile(snapshot, &ops, &evictions);
    timing.mark("scheduling");
    ops.extend(scheduled);
    endpoints::reconcile(snapshot, &mut ops);
    timing.mark("endpoints");
    tracing::debug!(writes = ops.len(), reconciled, all = snapshot.scope == Scope::All, "pass: {timing}");
    (ops, requeue)
}

/// How long each step of a pass took, for the debug log
/// (`RUST_LOG=flotilla_controller::controllers=debug`): at fleet scale a
/// pass is the controller's main cost, and this says which step grew.
struct PassTiming {
    started: std::time::Instant,
    last: std::time::Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl PassTiming {
    fn start() -> Self {
        let now = std::time::Instant::now();
        PassTiming { started: now, last: now, steps: Vec::new() }
    }

    fn mark(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.steps.push((step, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for PassTiming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} ms", self.last.duration_since(self.started).as_secs_f64() * 1000.0)?;
        for (step, took) in &self.steps {
            write!(f, ", {step} {:.1}", took.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod import_rules {
    /// The rule of this module, held by reading its sources: a controller
    /// that reached for the transport, the API or the network could no
    /// longer be tested from a snapshot alone.
    #[test]
    fn controllers_import_no_transport_api_registry_or_network() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controllers");
        let forbidden =
            ["crate::fleet", "crate::api", "crate::registry", "crate::pinning", "rumqttc", "axum", "ureq", "tokio"];
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let source = std::fs::read_to_string(&path).unwrap();
            // Code only: docs may name what is not used, and the rule's own
            // list in this test is not an import.
            let code = source.split("#[cfg(test)]").next().unwrap_or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for word in forbidden {
                    assert!(!line.contains(word), "{} uses {word}: {line}", path.display());
                }
            }
            checked += 1;
        }
        assert!(checked >= 2, "no sources found in {}", dir.display());
    }
}
