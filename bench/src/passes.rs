//! The controller's reconcile passes at fleet scale, in process: the real
//! store (redb, in a temporary directory) and the real controllers, over
//! the same devices and workloads as `fleet`, with no broker and no
//! devices. What stands in for them is labelled: nodes are written as
//! registered and Ready (as the inbox writes a hello), image pins as the
//! pinning task writes a registry's answer, and replicas as reported
//! Running and Ready once bound. It measures what a pass costs, which the
//! fleet figures (converge, failover) are made of, in seconds instead of
//! the fleet run's minutes.
//!
//! Prints `{"nodes","replicas","load_s","passes_to_converge","idle_pass_ms",
//! "report_pass_ms","node_loss_pass_ms_first","node_loss_pass_ms_median",
//! "rss_bytes"}`: `idle_pass_ms` is a full pass (the loop's resync every
//! 30 s), `report_pass_ms` the pass after one replica's status changed, and
//! the node-loss passes are scoped to the lost node's change, as the
//! reconcile loop scopes them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use flotilla_controller::controllers::{self, NodeMarks, Scope, Snapshot, image_pinning};
use flotilla_controller::manifest::{Kind, parse_str};
use flotilla_controller::object::ApiObject;
use flotilla_controller::status::{Condition, ConditionType, NodeInfo, NodeStatus, PodStatus, set_condition};
use flotilla_controller::store::{Op, RedbStore, SecretCipher, Store, commit_in_chunks};

use crate::scale::workloads;

/// Arguments of `passes`.
#[derive(Debug, Args)]
pub struct PassesArgs {
    /// Nodes.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Replicas in all [default: 5 per node].
    #[arg(long)]
    replicas: Option<usize>,
    /// Idle passes timed (the median is printed).
    #[arg(long, default_value_t = 5)]
    samples: usize,
    /// Nodes lost one after another, each timed.
    #[arg(long, default_value_t = 5)]
    losses: usize,
}

/// Runs the benchmark.
pub fn run(args: PassesArgs) -> anyhow::Result<()> {
    let replicas = args.replicas.unwrap_or(args.nodes * 5);
    let dir = tempfile::tempdir()?;
    let store = RedbStore::open(&dir.path().join("store.redb"), SecretCipher::from_key([7; 32]))?;
    let started = Instant::now();
    let profiles = workloads::profiles(args.nodes, (args.nodes / 10).max(1));
    let mut ops = Vec::new();
    for profile in &profiles {
        let mut node = ApiObject::new(Kind::Node, "", &profile.name);
        node.metadata.labels = profile.labels.iter().cloned().collect();
        let taints: Vec<serde_json::Value> = profile
            .taints
            .iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": v, "effect": "NoSchedule"}))
            .collect();
        node.set_field("spec", serde_json::json!({ "taints": taints }));
        ops.push(Op::Apply(node));
    }
    commit_in_chunks(&store, ops, "bench");
    let mut ops = Vec::new();
    for profile in &profiles {
        let mut node = store.get(&node_key(&profile.name)).context("node not stored")?;
        let quantities = |cpu: u32, memory: u64| -> BTreeMap<String, String> {
            [("cpu", format!("{cpu}m")), ("memory", memory.to_string()), ("pods", "16".to_owned())]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect()
        };
        let mut status = NodeStatus {
            capacity: quantities(profile.cpu_millis, profile.memory_bytes),
            allocatable: quantities(profile.cpu_millis - 100, profile.memory_bytes - profile.memory_bytes / 10),
            node_info: NodeInfo {
                architecture: "arm64".into(),
                operating_system: "linux".into(),
                ..NodeInfo::default()
            },
            ..NodeStatus::default()
        };
        set_condition(&mut status.conditions, Condition::new(ConditionType::Ready, true, "AgentHello", ""));
        node.set_status(&status);
        ops.push(Op::UpdateStatus(node));
    }
    commit_in_chunks(&store, ops, "bench");
    let (_, yaml) = workloads::manifest(&profiles, replicas, "registry.local/fleet/app:1")?;
    let parsed = parse_str("fleet.yaml", &yaml).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ops = parsed.objects.iter().map(|o| Op::Apply(ApiObject::from_manifest(o))).collect();
    store.commit(ops)?;
    let answers: image_pinning::Answers = [(
        "registry.local/fleet/app:1".to_owned(),
        Ok(image_pinning::PinnedImage { digest: [1; 32], archs: vec!["amd64".into(), "arm64".into()] }),
    )]
    .into();

    // Converge: passes, pins and "the devices report Running" until a pass
    // writes nothing.
    let mut passes = 0;
    loop {
        passes += 1;
        anyhow::ensure!(passes < 200, "no convergence after 200 passes");
        let snapshot = Snapshot::read(&store);
        let (mut ops, _) = controllers::plan(&snapshot);
        ops.extend(image_pinning::plan(&snapshot, &answers).ops);
        ops.extend(report_running(&snapshot));
        if ops.is_empty() {
            break;
        }
        commit_in_chunks(&store, ops, "bench");
    }
    let load_s = started.elapsed().as_secs_f64();
    let unplaced: Vec<String> = store
        .list(Kind::Pod, None)
        .items
        .iter()
        .filter(|p| p.node_name().is_none())
        .map(|p| {
            let status: PodStatus = p.status();
            format!("{}: {} {}", p.metadata.name, status.reason, status.message)
        })
        .collect();

    let mut idle = Vec::new();
    for _ in 0..args.samples.max(1) {
        let started = Instant::now();
        let snapshot = Snapshot::read(&store);
        let (ops, _) = controllers::plan(&snapshot);
        idle.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(ops.is_empty(), "an idle pass wrote {} objects", ops.len());
    }
    idle.sort_by(f64::total_cmp);

    // A device's report changes one replica's status: the pass after it
    // looks at that replica's workload only (the reconcile loop's scope).
    let mut after_report = Vec::new();
    let reported: Vec<Arc<ApiObject>> = store.list(Kind::Pod, None).items.into_iter().step_by(997).collect();
    for pod in reported.iter().take(args.samples.max(1)) {
        let mut changed = ApiObject::clone(pod);
        let mut status: PodStatus = changed.status();
        status.restart_count += 1;
        changed.set_status(&status);
        let since = store.resource_version();
        store.commit(vec![Op::UpdateStatus(changed)])?;
        let started = Instant::now();
        let snapshot = scoped(&store, since)?;
        let (ops, _) = controllers::plan(&snapshot);
        after_report.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(ops.is_empty(), "the pass after a report wrote {} objects", ops.len());
    }
    after_report.sort_by(f64::total_cmp);

    // Nodes are lost one at a time (the ones with most replicas that move,
    // not DaemonSets'): each time, the pass that places their replicas
    // elsewhere, committed as the reconcile loop commits it. The first
    // pass also derives the scheduler's model of every replica (kept with
    // the stored objects after that).
    let moves = |pod: &ApiObject| !pod.metadata.owner_references.iter().any(|o| o.kind == Kind::DaemonSet);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for pod in store.list(Kind::Pod, None).items.iter().filter(|p| moves(p)) {
        *per_node.entry(pod.node_name().unwrap_or_default().to_owned()).or_default() += 1;
    }
    let mut victims: Vec<(String, usize)> = per_node.into_iter().collect();
    victims.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let mut loss_ms = Vec::new();
    let mut moved = 0;
    for (lost, count) in victims.into_iter().take(args.losses.max(1)) {
        // What the inbox writes when the node's Last Will arrives, dated
        // past the eviction grace: the next pass moves its replicas.
        let mut node = store.get(&node_key(&lost)).context("node not stored")?;
        let mut status: NodeStatus = node.status();
        let mut unreachable =
            Condition::new(ConditionType::Ready, false, "Unreachable", "connection to the broker lost (last will)");
        unreachable.last_transition_time =
            humantime::format_rfc3339_millis(std::time::SystemTime::now() - std::time::Duration::from_secs(5))
                .to_string();
        set_condition(&mut status.conditions, unreachable);
        node.set_status(&status);
        let since = store.resource_version();
        store.commit(vec![Op::UpdateStatus(node)])?;
        let started = Instant::now();
        let snapshot = scoped(&store, since)?;
        let (ops, _) = controllers::plan(&snapshot);
        loss_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let bound =
            ops.iter().filter(|op| matches!(op, Op::Apply(o) if o.node_name().is_some_and(|n| n != lost))).count();
        anyhow::ensure!(bound >= count, "the pass after losing {lost} placed {bound} of {count} replicas");
        moved += count;
        commit_in_chunks(&store, ops, "bench");
        commit_in_chunks(&store, report_running(&Snapshot::read(&store)), "bench");
    }

    let line = serde_json::json!({
        "bench": "passes",
        "nodes": args.nodes,
        "replicas": replicas,
        "pods": store.list(Kind::Pod, None).items.len(),
        "load_s": round(load_s),
        "passes_to_converge": passes,
        "idle_pass_ms": round(idle[idle.len() / 2]),
        "report_pass_ms": round(after_report[after_report.len() / 2]),
        "node_loss_pass_ms_first": round(loss_ms[0]),
        "node_loss_pass_ms_median": round({
            let mut sorted = loss_ms.clone();
            sorted.sort_by(f64::total_cmp);
            sorted[sorted.len() / 2]
        }),
        "replicas_moved": moved,
        "unplaced": unplaced.len(),
        "unplaced_first": unplaced.first(),
        "rss_bytes": crate::scale::rss_of(std::process::id())?,
        "stand_ins": "nodes, image pins and Running reports written directly (no broker, no devices)",
    });
    println!("{line}");
    Ok(())
}

/// A snapshot scoped as the reconcile loop scopes it: to the changes
/// committed after `since`.
fn scoped(store: &RedbStore, since: u64) -> anyhow::Result<Snapshot> {
    let mut snapshot = Snapshot::read(store);
    snapshot.scope = Scope::nothing();
    // Marks start empty: every node written since counts as changed.
    let mut marks = NodeMarks::default();
    for event in store.subscribe(since)?.backlog {
        snapshot.scope.note(&event, &mut marks);
    }
    Ok(snapshot)
}

fn node_key(name: &str) -> flotilla_controller::object::ObjectKey {
    flotilla_controller::object::ObjectKey::new(Kind::Node, "", name)
}

/// What the devices would report for replicas bound to them: Running and
/// Ready.
fn report_running(snapshot: &Snapshot) -> Vec<Op> {
    let mut ops = Vec::new();
    for pod in &snapshot.pods {
        let status = pod.typed_status::<PodStatus>();
        if pod.node_name().is_none() || pod.is_retired() || status.is_ready() {
            continue;
        }
        let mut running = ApiObject::clone(pod);
        let mut status = status.into_owned();
        status.phase = flotilla_controller::status::PodPhase::Running;
        status.reason.clear();
        status.message.clear();
        let mut ready = Condition::new(ConditionType::Ready, true, "", "");
        ready.last_transition_time = "2026-01-01T00:00:00.000Z".into();
        set_condition(&mut status.conditions, ready);
        running.set_status(&status);
        ops.push(Op::UpdateStatus(running));
    }
    ops
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
