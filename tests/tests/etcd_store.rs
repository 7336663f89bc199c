//! The etcd store (issue 20) on a real three-member etcd cluster: the same
//! answers as the embedded store (apply, preconditions, status writes,
//! deletes, watches from a version), two controllers' stores on one cluster
//! seeing each other's writes and refusing a write from a stale read, the
//! loss of one member, and a compaction under a live watcher.

use std::time::{Duration, Instant};

use flotilla_controller::manifest::Kind;
use flotilla_controller::object::{ApiObject, ObjectKey};
use flotilla_controller::store::{EtcdStore, EtcdTarget, EventType, Op, Outcome, SecretCipher, Store, StoreError};
use flotilla_e2e::etcd::EtcdCluster;
use serde_json::json;

fn open(cluster: &EtcdCluster) -> EtcdStore {
    let target = EtcdTarget::parse(&cluster.url()).unwrap();
    EtcdStore::open(target, SecretCipher::from_key([7; 32])).unwrap()
}

fn config_map(name: &str, value: &str) -> ApiObject {
    let mut object = ApiObject::new(Kind::ConfigMap, "default", name);
    object.set_field("data", json!({ "k": value }));
    object
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::ConfigMap, "default", name)
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < Duration::from_secs(15), "{what}: not in 15 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_etcd_store_answers_as_the_embedded_one_and_two_controllers_share_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = EtcdCluster::start(3, dir.path()).unwrap();
    let a = open(&cluster);

    // Apply: created, then unchanged, then configured with a new generation.
    let created = a.commit(vec![Op::Apply(config_map("settings", "1"))]).unwrap();
    assert!(matches!(&created[0], Outcome::Created(_)), "{created:?}");
    let stored = a.get(&key("settings")).unwrap();
    assert!(!stored.metadata.uid.is_empty() && stored.metadata.generation == 1);
    assert_eq!(stored.resource_version(), a.resource_version(), "the version is etcd's revision");
    let again = a.commit(vec![Op::Apply(config_map("settings", "1"))]).unwrap();
    assert!(matches!(&again[0], Outcome::Unchanged(_)));
    let changed = a.commit(vec![Op::Apply(config_map("settings", "2"))]).unwrap();
    assert!(matches!(&changed[0], Outcome::Configured(o) if o.metadata.generation == 2));
    assert_eq!(changed[0].object().resource_version(), a.get(&key("settings")).unwrap().resource_version());

    // A stale precondition is a conflict; a failing batch writes nothing.
    let mut stale = config_map("settings", "3");
    stale.metadata.resource_version = stored.metadata.resource_version.clone();
    let refused = a.commit(vec![Op::Apply(config_map("other", "x")), Op::Apply(stale)]);
    assert!(matches!(refused, Err(StoreError::Conflict { .. })), "{refused:?}");
    assert!(a.get(&key("other")).is_none(), "half a batch was written");

    // Watch: from a version, the changes after it, then live ones.
    let before = a.resource_version();
    a.commit(vec![Op::Apply(config_map("watched", "1"))]).unwrap();
    let mut subscription = a.subscribe(before).unwrap();
    assert_eq!(subscription.backlog.len(), 1);
    assert_eq!(subscription.backlog[0].event_type, EventType::Added);
    let deleted = a.commit(vec![Op::Delete(key("watched"), None)]).unwrap();
    assert!(matches!(&deleted[0], Outcome::Deleted(_)));
    let live = subscription.live.try_recv().expect("the delete is announced by the time commit returns");
    assert_eq!((live.event_type.clone(), live.object.metadata.name.as_str()), (EventType::Deleted, "watched"));

    // Secrets are sealed on etcd, as on disk.
    let mut secret = ApiObject::new(Kind::Secret, "default", "token");
    secret.set_field("stringData", json!({ "password": "hunter2-on-etcd" }));
    a.commit(vec![Op::Apply(secret)]).unwrap();
    let raw = cluster.etcdctl(&["get", "--prefix", "/flotilla/objects/Secret/"]).unwrap();
    assert!(raw.contains("Secret/default/token") && !raw.contains("hunter2-on-etcd"), "{raw}");

    // A second controller's store on the same cluster: it loads what is
    // there, sees the first one's writes, and its write from a stale read
    // is refused, then goes through once it has read again.
    let b = open(&cluster);
    assert_eq!(
        b.get(&key("settings")).unwrap().resource_version(),
        a.get(&key("settings")).unwrap().resource_version()
    );
    a.commit(vec![Op::Apply(config_map("settings", "4"))]).unwrap();
    wait_until("b sees a's write", || {
        b.get(&key("settings")).is_some_and(|o| o.field("data") == Some(json!({"k": "4"})))
    });
    let read = b.get(&key("settings")).unwrap();
    a.commit(vec![Op::Apply(config_map("settings", "5"))]).unwrap();
    let mut from_stale = config_map("settings", "6");
    from_stale.metadata.resource_version = read.metadata.resource_version.clone();
    let refused = b.commit(vec![Op::Apply(from_stale)]);
    assert!(matches!(refused, Err(StoreError::Conflict { .. })), "{refused:?}");
    let fresh = b.get(&key("settings")).unwrap();
    assert_eq!(fresh.field("data"), Some(json!({"k": "5"})), "a refused commit leaves the store caught up");
    let mut retried = config_map("settings", "6");
    retried.metadata.resource_version = fresh.metadata.resource_version.clone();
    b.commit(vec![Op::Apply(retried)]).unwrap();
    wait_until("a sees b's write", || {
        a.get(&key("settings")).is_some_and(|o| o.field("data") == Some(json!({"k": "6"})))
    });

    // One member lost: a quorum of two goes on.
    cluster.kill(0);
    let started = Instant::now();
    let mut written = false;
    while !written && started.elapsed() < Duration::from_secs(30) {
        written = a.commit(vec![Op::Apply(config_map("after-loss", "1"))]).is_ok();
    }
    assert!(written, "no write in 30 s with two of three members");
    wait_until("b sees the write made without member 0", || b.get(&key("after-loss")).is_some());
    cluster.restart(0).unwrap();

    // A compaction under a live watcher changes nothing for it. (One that
    // fell behind compaction lists again: `Mirror::reset`, unit-tested.)
    let c = open(&cluster);
    let mut watching = c.subscribe(0).unwrap();
    for i in 0..20 {
        a.commit(vec![Op::Apply(config_map("churn", &i.to_string()))]).unwrap();
    }
    let revision = a.resource_version();
    cluster.etcdctl(&["compact", &revision.to_string()]).unwrap();
    a.commit(vec![Op::Apply(config_map("after-compaction", "1"))]).unwrap();
    wait_until("c sees the write after the compaction", || c.get(&key("after-compaction")).is_some());
    let mut names = Vec::new();
    while let Ok(event) = watching.live.try_recv() {
        names.push(event.object.metadata.name.clone());
    }
    assert!(names.contains(&"after-compaction".to_owned()), "{names:?}");
    assert_eq!(c.get(&key("churn")).unwrap().field("data"), Some(json!({"k": "19"})));

    // More than gRPC's default 4 MiB in one transaction, one watch answer
    // and one listing (7 MB at 1,000 devices stopped a controller from
    // starting): written, followed by b, and loaded by a new store.
    let bulk: Vec<Op> = (0..3000)
        .map(|i| {
            let mut object = ApiObject::new(Kind::ConfigMap, "bulk", &format!("bulk-{i:04}"));
            object.set_field("data", json!({ "k": "x".repeat(2048) }));
            Op::Apply(object)
        })
        .collect();
    a.commit(bulk).unwrap();
    let bulk_count = |store: &EtcdStore| store.list(Kind::ConfigMap, Some("bulk")).items.len();
    wait_until("b follows a 6 MB transaction", || bulk_count(&b) == 3000);
    assert_eq!(bulk_count(&open(&cluster)), 3000, "a new store lists 6 MB of objects");

    // One leader: a's term leads, b campaigns and stands by naming a; once
    // a's lease is gone its term writes nothing more (fenced) and b leads.
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let lease = Duration::from_secs(3);
    let term_a = runtime.block_on(a.campaign("controller a".into(), lease)).unwrap().unwrap();
    term_a.commit(vec![Op::Apply(config_map("by-a", "1"))]).unwrap();
    let campaign_b = b.campaign("controller b".into(), lease);
    wait_until("b names the leader", || b.leader().as_deref() == Some("controller a"));
    std::thread::sleep(lease + Duration::from_secs(1));
    assert!(!campaign_b.is_finished(), "b leads while a keeps its lease alive");
    // A standby's own writes (its API's) are not fenced.
    b.commit(vec![Op::Apply(config_map("through-standby", "1"))]).unwrap();
    let leases = cluster.etcdctl(&["lease", "list"]).unwrap();
    for lease in leases.lines().skip(1).map(str::trim).filter(|l| !l.is_empty()) {
        cluster.etcdctl(&["lease", "revoke", lease]).unwrap();
    }
    let term_b = runtime.block_on(campaign_b).unwrap().unwrap();
    wait_until("a's term ends", || term_a.is_over());
    let fenced = term_a.commit(vec![Op::Apply(config_map("by-a", "2"))]).unwrap_err().to_string();
    assert!(fenced.contains("fenced"), "{fenced}");
    term_b.commit(vec![Op::Apply(config_map("by-b", "1"))]).unwrap();
    assert_eq!(b.get(&key("by-a")).unwrap().field("data"), Some(json!({"k": "1"})), "a's fenced write is not there");
    // A leader that resigns (stops) hands over at once, not after its lease.
    let campaign_a = a.campaign("controller a".into(), lease);
    wait_until("a names b", || a.leader().as_deref() == Some("controller b"));
    let resigned = Instant::now();
    term_b.resign();
    let term_a = runtime.block_on(campaign_a).unwrap().unwrap();
    assert!(resigned.elapsed() < Duration::from_secs(2), "took {:?}", resigned.elapsed());
    term_a.commit(vec![Op::Apply(config_map("by-a", "3"))]).unwrap();
    assert!(term_b.commit(vec![Op::Apply(config_map("by-b", "2"))]).is_err(), "a resigned term writes");
}

/// `flotilla server --store etcd://...` runs a fleet on etcd: a workload
/// rolls out on a real agent, goes on through the loss of an etcd member,
/// and a controller restart finds every object and restarts nothing.
#[test]
fn a_controller_on_etcd_runs_a_fleet_through_a_member_loss_and_a_restart() {
    use flotilla_e2e::ControllerProcess;
    use flotilla_e2e::fleet::{
        AgentProcess, SLEEPER, apply, pods, push_busybox, shell_deployment, wait_for_ready_nodes,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = EtcdCluster::start(3, dir.path()).unwrap();
    let data = dir.path().join("controller");
    let (port, mqtt_port) = (flotilla_e2e::free_port().unwrap(), flotilla_e2e::free_port().unwrap());
    let url = cluster.url();
    let controller = ControllerProcess::start_on(&data, port, mqtt_port, &["--store", &url]).unwrap();
    assert!(controller.log_text().contains("store opened on etcd"), "{}", controller.log_text());
    let image = push_busybox(&controller, dir.path());
    let agent = AgentProcess::start(&controller, "etcd-a", &dir.path().join("a"));
    wait_for_ready_nodes(&controller, 1, Duration::from_secs(30));
    apply(&controller, &shell_deployment("on-etcd", &image, 2, SLEEPER));
    let running = |controller: &ControllerProcess| {
        pods(controller).iter().filter(|(name, phase, _)| name.starts_with("on-etcd") && phase == "Running").count()
    };
    let started = Instant::now();
    while running(&controller) < 2 {
        assert!(started.elapsed() < Duration::from_secs(90), "two replicas on etcd: {:?}", pods(&controller));
        std::thread::sleep(Duration::from_millis(200));
    }
    let containers = agent.running();
    assert_eq!(containers.len(), 2, "{containers:?}");
    // The objects are etcd's.
    let keys = cluster.etcdctl(&["get", "--prefix", "--keys-only", "/flotilla/objects/Deployment/"]).unwrap();
    assert!(keys.contains("/flotilla/objects/Deployment/default/on-etcd"), "{keys}");

    // A second controller with keys of its own is refused, naming them
    // (one with the same keys stands by: tests/tests/failover.rs).
    let refused =
        ControllerProcess::start_with(&dir.path().join("second"), &["--store", &url]).err().map(|e| e.to_string());
    let refused = refused.expect("a controller with other keys started on the same etcd");
    assert!(refused.contains("differ from the other controllers'"), "{refused}");

    // One member lost: a scale-up still goes through.
    cluster.kill(1);
    apply(&controller, &shell_deployment("on-etcd", &image, 3, SLEEPER));
    let started = Instant::now();
    while running(&controller) < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "three replicas with a member down: {:?}",
            pods(&controller)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.restart(1).unwrap();

    // The controller restarts on the same etcd: every object is there, and
    // nothing restarts on the device.
    let before = agent.running();
    controller.stop().unwrap();
    let controller = ControllerProcess::start_on(&data, port, mqtt_port, &["--store", &url]).unwrap();
    wait_for_ready_nodes(&controller, 1, Duration::from_secs(30));
    assert_eq!(running(&controller), 3, "{:?}", pods(&controller));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(agent.running(), before, "a container restarted");
}
