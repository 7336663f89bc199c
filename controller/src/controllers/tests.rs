//! Tests of the reconcilers, on a real store in a temporary directory.

use std::time::Duration;

use serde_json::json;

use super::workload::{TEMPLATE_HASH_LABEL, template_hash};
use super::*;
use crate::manifest::types::PodTemplate;
use crate::manifest::{Kind, parse_str};
use crate::object::{ApiObject, ObjectKey};
use crate::reconcile::reconcile_once;
use crate::status::{ConditionType, DaemonSetStatus, DeploymentStatus, JobStatus, PodStatus, condition};
use crate::store::{RedbStore, SecretCipher, Store};

/// Whether the controllers want a pass on the clock.
fn waits_on_the_clock(snapshot: &Snapshot) -> bool {
    plan(snapshot).1 != Requeue::OnChange
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: RedbStore,
    /// What the registry stand-in answers for every image.
    registry: std::cell::RefCell<Result<image_pinning::PinnedImage, String>>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb"), SecretCipher::from_key([3; 32])).unwrap();
        let resolved = image_pinning::PinnedImage { digest: [7; 32], archs: Vec::new() };
        Fixture { _dir: dir, store, registry: std::cell::RefCell::new(Ok(resolved)) }
    }

    /// One image pinning pass, every image answered by the registry
    /// stand-in (`crate::pinning` asks a real one). Returns its writes.
    fn pin(&self) -> usize {
        let snapshot = Snapshot::read(&self.store);
        let asked = image_pinning::plan(&snapshot, &image_pinning::Answers::new());
        let answer = self.registry.borrow().clone();
        let answers = asked.to_resolve.into_iter().map(|image| (image, answer.clone())).collect();
        let ops = image_pinning::plan(&snapshot, &answers).ops;
        let writes = ops.len();
        if writes > 0 {
            self.store.commit(ops).unwrap();
        }
        writes
    }

    fn apply(&self, yaml: &str) {
        let parsed = parse_str("test.yaml", yaml).unwrap();
        self.store.commit(parsed.objects.iter().map(|o| Op::Apply(ApiObject::from_manifest(o))).collect()).unwrap();
    }

    /// Passes until nothing changes (level-triggered: converges).
    fn settle(&self) {
        for _ in 0..10 {
            let pins = self.pin();
            if reconcile_once(&self.store).unwrap() == 0 && pins == 0 {
                return;
            }
        }
        let (ops, _) = plan(&Snapshot::read(&self.store));
        panic!("reconcilers did not converge in 10 passes; still writing {ops:#?}");
    }

    fn pods(&self) -> Vec<ApiObject> {
        self.store.list(Kind::Pod, None).items.iter().map(|p| ApiObject::clone(p)).collect()
    }

    fn node(&self, name: &str, cpu: &str, memory: &str, labels: &[(&str, &str)]) {
        self.node_of_arch(name, "arm64", cpu, memory, labels)
    }

    fn node_of_arch(&self, name: &str, arch: &str, cpu: &str, memory: &str, labels: &[(&str, &str)]) {
        self.node_with(
            name,
            labels,
            json!({"capacity": {"cpu": cpu, "memory": memory, "pods": "16"},
               "nodeInfo": {"architecture": arch, "operatingSystem": "linux"},
               "conditions": [{"type": "Ready", "status": "True"}]}),
        );
    }

    /// A node that takes the compact document profile.
    fn compact_node(&self, name: &str, cpu: &str, memory: &str) {
        self.node_with(
            name,
            &[],
            json!({"capacity": {"cpu": cpu, "memory": memory, "pods": "16"},
               "nodeInfo": {"architecture": "arm64", "operatingSystem": "linux", "documentProfile": "compact"},
               "conditions": [{"type": "Ready", "status": "True"}]}),
        );
    }

    fn node_with(&self, name: &str, labels: &[(&str, &str)], status: serde_json::Value) {
        let mut node = ApiObject::new(Kind::Node, "", name);
        node.metadata.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.store.commit(vec![Op::Apply(node.clone())]).unwrap();
        node.set_field("status", status);
        self.store.commit(vec![Op::UpdateStatus(node)]).unwrap();
    }

    fn set_pod_phase(&self, name: &str, phase: crate::status::PodPhase) {
        let mut pod = self.store.get(&ObjectKey::new(Kind::Pod, "default", name)).unwrap();
        let mut status: PodStatus = pod.status();
        status.phase = phase;
        pod.set_status(&status);
        self.store.commit(vec![Op::UpdateStatus(pod)]).unwrap();
    }
}

fn deployment(replicas: u32, memory: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      \
         containers:\n      - name: web\n        image: registry.local/web:1\n        \
         resources: {{requests: {{cpu: 250m, memory: {memory}}}}}\n"
    )
}

fn names(pods: &[ApiObject]) -> Vec<String> {
    pods.iter().map(|p| p.metadata.name.clone()).collect()
}

#[test]
fn deployment_replicas_have_stable_names_and_follow_scaling() {
    let f = Fixture::new();
    f.apply(&deployment(3, "64Mi"));
    f.settle();
    let pods = f.pods();
    let hash = pods[0].metadata.labels[TEMPLATE_HASH_LABEL].clone();
    assert_eq!(names(&pods), [0, 1, 2].map(|i| format!("web-{hash}-{i}")));
    assert_eq!(pods[0].metadata.owner_references[0].kind, Kind::Deployment);
    // Another pass changes nothing: the names are stable.
    let uids: Vec<_> = pods.iter().map(|p| p.metadata.uid.clone()).collect();
    f.settle();
    assert_eq!(f.pods().iter().map(|p| p.metadata.uid.clone()).collect::<Vec<_>>(), uids);
    f.apply(&deployment(1, "64Mi"));
    f.settle();
    assert_eq!(names(&f.pods()), [format!("web-{hash}-0")]);
    let status: DeploymentStatus = f.store.get(&ObjectKey::new(Kind::Deployment, "default", "web")).unwrap().status();
    assert_eq!((status.replicas, status.updated_replicas, status.observed_generation), (1, 1, 2));
}

#[test]
fn a_template_change_replaces_replicas_and_deleting_the_owner_collects_them() {
    let f = Fixture::new();
    f.apply(&deployment(2, "64Mi"));
    f.settle();
    let before = names(&f.pods());
    f.apply(&deployment(2, "128Mi"));
    f.settle();
    let after = names(&f.pods());
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|n| !before.contains(n)), "{before:?} -> {after:?}");
    f.store.commit(vec![Op::Delete(ObjectKey::new(Kind::Deployment, "default", "web"), None)]).unwrap();
    f.settle();
    assert!(f.pods().is_empty());
}

#[test]
fn pending_replicas_are_packed_onto_ready_nodes_with_reasons_for_the_rest() {
    let f = Fixture::new();
    f.node("pi-1", "1", "256Mi", &[]);
    f.node("pi-2", "1", "256Mi", &[]);
    f.apply(&deployment(5, "100Mi"));
    f.settle();
    let pods = f.pods();
    let bound: Vec<_> = pods.iter().filter_map(|p| p.node_name().map(str::to_owned)).collect();
    // 100Mi each: two fit per 256Mi node, the fifth fits nowhere.
    assert_eq!(bound.len(), 4);
    assert_eq!(bound.iter().filter(|n| *n == "pi-1").count(), 2);
    let pending: Vec<PodStatus> = pods.iter().filter(|p| p.node_name().is_none()).map(|p| p.status()).collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].reason, "Unschedulable");
    assert!(pending[0].message.starts_with("0/2 nodes available"), "{}", pending[0].message);
    assert!(pending[0].message.contains("memory"), "{}", pending[0].message);
    let scheduled: Vec<PodStatus> = pods.iter().filter(|p| p.node_name().is_some()).map(|p| p.status()).collect();
    assert!(scheduled.iter().all(|s| condition(&s.conditions, ConditionType::PodScheduled).unwrap().status
        == crate::status::ConditionStatus::True));
}

#[test]
fn a_missing_config_map_is_a_readable_condition_until_it_appears() {
    let f = Fixture::new();
    f.node("pi-1", "2", "1Gi", &[]);
    f.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: sensor}\nspec:\n  containers:\n  - name: s\n    image: s:1\n    \
         env:\n    - name: MODE\n      valueFrom: {configMapKeyRef: {name: sensor-config, key: mode}}\n",
    );
    f.settle();
    let pod = &f.pods()[0];
    let status: PodStatus = pod.status();
    assert_eq!(status.reason, "MissingReference");
    assert_eq!(status.message, "configmap \"sensor-config\" not found (env MODE)");
    assert!(pod.node_name().is_none());
    f.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: sensor-config}\ndata: {other: x}\n");
    f.settle();
    let status: PodStatus = f.pods()[0].status();
    assert_eq!(status.message, "configmap \"sensor-config\" has no key \"mode\" (env MODE)");
    f.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: sensor-config}\ndata: {mode: fast}\n");
    f.settle();
    assert_eq!(f.pods()[0].node_name(), Some("pi-1"));
}

#[test]
fn daemon_sets_run_one_replica_per_matching_node() {
    let f = Fixture::new();
    f.node("cam-1", "1", "512Mi", &[("role", "camera")]);
    f.node("cam-2", "1", "512Mi", &[("role", "camera")]);
    f.node("gw-1", "1", "512Mi", &[("role", "gateway")]);
    f.apply(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: collector}\nspec:\n  \
         selector: {matchLabels: {app: c}}\n  template:\n    metadata: {labels: {app: c}}\n    spec:\n      \
         nodeSelector: {role: camera}\n      containers: [{name: c, image: c:1}]\n",
    );
    f.settle();
    let mut on: Vec<_> = f.pods().iter().filter_map(|p| p.node_name().map(str::to_owned)).collect();
    on.sort();
    assert_eq!(on, ["cam-1", "cam-2"]);
    assert!(f.pods().iter().all(|p| p.metadata.name.starts_with("collector-") && p.metadata.name.contains("-cam-")));
}

#[test]
fn jobs_run_to_completions_with_parallelism_and_give_up_after_the_backoff_limit() {
    let f = Fixture::new();
    f.apply(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: calib}\nspec:\n  completions: 3\n  parallelism: 2\n  \
         backoffLimit: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: c:1}]\n",
    );
    f.settle();
    let pods = names(&f.pods());
    assert_eq!(pods.len(), 2, "parallelism 2");
    f.set_pod_phase(&pods[0], crate::status::PodPhase::Succeeded);
    f.settle();
    assert_eq!(f.pods().len(), 3, "a third run starts when one succeeds");
    let job = || f.store.get(&ObjectKey::new(Kind::Job, "default", "calib")).unwrap().status::<JobStatus>();
    assert_eq!((job().succeeded, job().active), (1, 2));
    let running: Vec<_> = names(&f.pods()).into_iter().filter(|n| n != &pods[0]).collect();
    f.set_pod_phase(&running[0], crate::status::PodPhase::Failed);
    f.set_pod_phase(&running[1], crate::status::PodPhase::Failed);
    f.settle();
    let status = job();
    assert_eq!(status.failed, 2);
    assert_eq!(status.conditions[0].reason, "BackoffLimitExceeded");
    assert_eq!(status.active, 0);
}

#[test]
fn a_job_past_its_active_deadline_fails_and_its_replicas_stop() {
    let f = Fixture::new();
    f.apply(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: flash}\nspec:\n  activeDeadlineSeconds: 30\n  \
         template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: c:1}]\n",
    );
    f.settle();
    assert_eq!(f.pods().len(), 1);
    let job = || f.store.get(&ObjectKey::new(Kind::Job, "default", "flash")).unwrap();
    // A pass 31 s later: past the deadline.
    let mut snapshot = Snapshot::read(&f.store);
    snapshot.now = Some(std::time::SystemTime::now() + Duration::from_secs(31));
    f.store.commit(plan(&snapshot).0).unwrap();
    let status: JobStatus = job().status();
    let failed = condition(&status.conditions, ConditionType::Failed).unwrap();
    assert_eq!((failed.reason.as_str(), status.active), ("DeadlineExceeded", 0));
    assert!(f.pods().is_empty(), "its replica is stopped");
    // Failed is final: later passes start nothing.
    f.settle();
    assert!(f.pods().is_empty());
}

#[test]
fn template_hashes_are_stable_and_short() {
    let template = PodTemplate::default();
    assert_eq!(template_hash(&template), template_hash(&template.clone()));
    assert_eq!(template_hash(&template).len(), 4);
}

#[test]
fn a_pinned_single_arch_image_is_placed_only_on_nodes_of_that_arch() {
    let f = Fixture::new();
    f.node("pi-1", "1", "256Mi", &[]); // arm64, see Fixture::node
    let pod = |name: &str, archs: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations: {{flotilla.io/image-archs: \"{archs}\"}}\n\
             spec:\n  containers:\n  - name: c\n    image: registry.local/c:1\n"
        )
    };
    f.apply(&pod("amd64-only", "amd64"));
    f.apply(&pod("multi", "amd64,arm64"));
    f.apply(&pod("arm64-only", "arm64"));
    f.settle();
    let pods = f.pods();
    let node_of =
        |name: &str| pods.iter().find(|p| p.metadata.name == name).and_then(|p| p.node_name().map(str::to_owned));
    assert_eq!(node_of("arm64-only").as_deref(), Some("pi-1"));
    assert_eq!(node_of("multi").as_deref(), Some("pi-1"));
    assert_eq!(node_of("amd64-only"), None);
    let status: PodStatus = pods.iter().find(|p| p.metadata.name == "amd64-only").unwrap().status();
    assert_eq!(status.reason, "Unschedulable");
    assert!(status.message.contains("1 node(s) not amd64"), "{}", status.message);
}

#[test]
fn only_rollouts_and_deadlines_in_progress_need_clock_driven_passes() {
    let f = Fixture::new();
    f.apply(&deployment(2, "64Mi"));
    f.settle();
    // No node: the first revision cannot complete, so it waits on the clock
    // (its progress deadline).
    assert!(waits_on_the_clock(&Snapshot::read(&f.store)));
    let mut object = f.store.get(&ObjectKey::new(Kind::Deployment, "default", "web")).unwrap();
    let mut status: DeploymentStatus = object.status();
    status.history.iter_mut().for_each(|r| r.state = deployment::COMPLETE.into());
    object.set_status(&status);
    f.store.commit(vec![Op::UpdateStatus(object)]).unwrap();
    assert!(!waits_on_the_clock(&Snapshot::read(&f.store)), "a settled fleet is resynced slowly");
}

/// Transport used to pin images while building documents, so a replica
/// could be placed before its image was known and then be unbound for the
/// wrong architecture. Pinning is now a step of its own, and the scheduler
/// waits for it.
#[test]
fn a_replica_is_never_bound_before_its_image_is_pinned() {
    let f = Fixture::new();
    f.node("pi-1", "1", "256Mi", &[]);
    f.apply(&deployment(2, "64Mi"));
    for _ in 0..3 {
        reconcile_once(&f.store).unwrap();
    }
    let pods = f.pods();
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        assert_eq!(pod.node_name(), None, "bound before its image was pinned");
        let status: PodStatus = pod.status();
        assert_eq!(status.reason, "ImageNotPinned");
        assert!(status.message.contains("registry.local/web:1"), "{}", status.message);
    }
    // The registry cannot answer: the replicas say why, and stay unplaced.
    *f.registry.borrow_mut() = Err("registry registry.local unreachable".into());
    f.settle();
    for pod in &f.pods() {
        assert_eq!(pod.node_name(), None);
        assert!(pod.status::<PodStatus>().message.contains("unreachable"), "{:?}", pod.status::<PodStatus>());
    }
    // Once pinned, they are placed where the image runs.
    *f.registry.borrow_mut() = Ok(image_pinning::PinnedImage { digest: [9; 32], archs: vec!["arm64".into()] });
    f.settle();
    for pod in &f.pods() {
        assert_eq!(pod.node_name(), Some("pi-1"));
        assert!(image_pinning::is_pinned(pod));
        assert!(!pod.metadata.annotations.contains_key(image_pinning::IMAGE_ERROR_ANNOTATION));
    }
}

/// A DaemonSet's replicas are bound at creation, before their image is
/// pinned. One whose node turns out to be of an architecture the image
/// lacks is retired (it never ran: it was never in a document), not
/// unbound and placed elsewhere, and no new one is made for that node.
#[test]
fn a_daemon_set_replica_on_a_node_its_image_cannot_run_on_is_retired_not_unbound() {
    let f = Fixture::new();
    f.node_of_arch("pi-1", "arm64", "1", "256Mi", &[]);
    f.node_of_arch("gw-1", "amd64", "1", "256Mi", &[]);
    *f.registry.borrow_mut() = Ok(image_pinning::PinnedImage { digest: [9; 32], archs: vec!["amd64".into()] });
    f.apply(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: collector}\nspec:\n  \
         selector: {matchLabels: {app: c}}\n  template:\n    metadata: {labels: {app: c}}\n    spec:\n      \
         containers: [{name: c, image: c:1}]\n",
    );
    for _ in 0..6 {
        f.pin();
        reconcile_once(&f.store).unwrap();
        for pod in f.pods() {
            assert!(&pod.node_name().is_some(), "{} was unbound", pod.metadata.name);
        }
    }
    let pods = f.pods();
    let on = |node: &str| pods.iter().find(|p| p.node_name() == Some(node)).unwrap();
    assert!(!on("gw-1").is_retired());
    assert!(on("pi-1").is_retired(), "the arm64 node's replica leaves");
    assert_eq!(pods.len(), 2, "and is not made again");
    let status = f.store.get(&ObjectKey::new(Kind::DaemonSet, "default", "collector")).unwrap();
    assert_eq!(status.status::<DaemonSetStatus>().desired_number_scheduled, 1, "only nodes the image runs on count");
}

#[test]
fn a_lost_nodes_replicas_move_in_one_pass_spread_over_the_other_nodes() {
    let f = Fixture::new();
    for node in ["pi-1", "pi-2", "pi-3", "pi-4"] {
        f.node(node, "4", "4Gi", &[]);
    }
    f.apply(&deployment(6, "100Mi"));
    f.settle();
    // Packed: new replicas fill the fewest nodes.
    let on = |pods: &[ApiObject]| {
        let mut nodes: Vec<String> = pods.iter().filter_map(|p| p.node_name().map(str::to_owned)).collect();
        nodes.sort();
        nodes
    };
    let before = on(&f.pods());
    let lost = before[0].clone();
    let leaving = before.iter().filter(|n| **n == lost).count();
    assert!(leaving >= 3, "packed onto few nodes: {before:?}");

    // Its Last Will, past the eviction grace.
    lose(&f, &lost);

    // One pass: unbound and bound again, never left unbound in between.
    assert!(reconcile_once(&f.store).unwrap() > 0);
    let pods = f.pods();
    let after = on(&pods);
    assert_eq!(after.len(), 6, "every replica bound after one pass: {after:?}");
    assert!(!after.contains(&lost));
    let moved: Vec<&ApiObject> = pods
        .iter()
        .filter(|p| {
            condition(&p.status::<PodStatus>().conditions, ConditionType::Ready).is_some_and(|c| c.reason == "NodeLost")
        })
        .collect();
    assert_eq!(moved.len(), leaving);
    let targets: std::collections::BTreeSet<&str> = moved.iter().filter_map(|p| p.node_name()).collect();
    assert!(targets.len() >= 2, "{leaving} replicas of {lost} went to {targets:?}");
    for pod in moved {
        let status: PodStatus = pod.status();
        assert_eq!(status.phase, crate::status::PodPhase::Pending, "until its new node reports it");
        assert!(status.usage.is_none());
    }
}

/// Between full passes a pass reconciles only the workloads whose objects
/// or replicas changed (from the store's watch), and any that waits on the
/// clock; the full pass (`Scope::All`) still sees everything.
#[test]
fn a_scoped_pass_reconciles_the_workloads_the_changes_touched() {
    let f = Fixture::new();
    f.node("edge-1", "4", "4Gi", &[]);
    f.apply(&deployment(3, "64Mi"));
    f.settle();
    // Settled and not rolling out (as if its replicas had been available).
    let key = ObjectKey::new(Kind::Deployment, "default", "web");
    let mut object = f.store.get(&key).unwrap();
    let mut status: DeploymentStatus = object.status();
    status.history.iter_mut().for_each(|r| r.state = deployment::COMPLETE.into());
    object.set_status(&status);
    f.store.commit(vec![Op::UpdateStatus(object)]).unwrap();
    assert!(!waits_on_the_clock(&Snapshot::read(&f.store)));

    // A replica disappears behind the controller's back.
    let since = f.store.resource_version();
    let gone = f.pods()[0].clone();
    f.store.commit(vec![Op::Delete(gone.key(), None)]).unwrap();
    let creates = |snapshot: &Snapshot| plan(snapshot).0.iter().filter(|op| matches!(op, Op::Create(_))).count();

    // A change elsewhere (a node) leaves the Deployment alone...
    let mut untouched = Snapshot::read(&f.store);
    untouched.scope = Scope::nothing();
    let node = f.store.get(&ObjectKey::new(Kind::Node, "", "edge-1")).unwrap();
    untouched.scope.note(
        &crate::store::WatchEvent { event_type: crate::store::EventType::Modified, object: node.into() },
        &mut NodeMarks::default(),
    );
    assert_eq!(creates(&untouched), 0);
    // ...the delete of its replica names it...
    let mut touched = Snapshot::read(&f.store);
    touched.scope = Scope::nothing();
    for event in f.store.subscribe(since).unwrap().backlog {
        touched.scope.note(&event, &mut NodeMarks::default());
    }
    assert!(touched.scope.wants(f.store.view().get(&key).unwrap()));
    assert_eq!(creates(&touched), 1);
    // ...and a full pass sees it whatever the watch said.
    assert_eq!(creates(&Snapshot::read(&f.store)), 1);
}

/// A workload's replicas hold one copy of their template's pod spec: at
/// 10,000 devices 50,000 copies were ~175 MB.
#[test]
fn replicas_of_one_template_share_its_pod_spec() {
    let f = Fixture::new();
    f.node("edge-1", "4", "4Gi", &[]);
    f.apply(&deployment(3, "64Mi"));
    f.settle();
    let pods = f.pods();
    let spec = |pod: &ApiObject| pod.spec_ref::<crate::object::StoredPodSpec>().unwrap().template.clone();
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| std::sync::Arc::ptr_eq(&spec(p), &spec(&pods[0]))));
    // Bound and reported since: still the one copy.
    assert!(pods.iter().all(|p| p.node_name() == Some("edge-1")));
}

/// A DaemonSet short of available replicas waits on the clock only while
/// a ready replica waits out `minReadySeconds`: a replica on a lost node
/// comes back by an event, and waiting on the clock for it made a pass
/// every second over every node for as long as any node was down.
#[test]
fn a_daemon_set_waits_on_the_clock_only_for_min_ready_seconds() {
    let daemon_set = |min_ready: u32| {
        format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: collector}}\nspec:\n  minReadySeconds: {min_ready}\n  \
             selector: {{matchLabels: {{app: c}}}}\n  template:\n    metadata: {{labels: {{app: c}}}}\n    spec:\n      \
             containers: [{{name: c, image: c:1}}]\n"
        )
    };
    let ready = |f: &Fixture| {
        for pod in f.pods() {
            let mut pod = pod.clone();
            let mut status: PodStatus = pod.status();
            status.phase = crate::status::PodPhase::Running;
            crate::status::set_condition(
                &mut status.conditions,
                crate::status::Condition::new(ConditionType::Ready, true, "", ""),
            );
            pod.set_status(&status);
            f.store.commit(vec![Op::UpdateStatus(pod)]).unwrap();
        }
    };
    let f = Fixture::new();
    f.node("cam-1", "1", "512Mi", &[]);
    f.apply(&daemon_set(0));
    f.settle();
    // Not ready (not started yet, or its node lost): no clock.
    let status: DaemonSetStatus =
        f.store.get(&ObjectKey::new(Kind::DaemonSet, "default", "collector")).unwrap().status();
    assert_eq!((status.desired_number_scheduled, status.number_available), (1, 0));
    assert!(!waits_on_the_clock(&Snapshot::read(&f.store)));
    // Ready, and minReadySeconds to wait out: the clock.
    f.apply(&daemon_set(30));
    f.settle();
    ready(&f);
    f.settle();
    assert!(waits_on_the_clock(&Snapshot::read(&f.store)));
}

/// A ConfigMap `rules` holding `content`, and one web replica mounting it.
fn apply_web_with_rules(f: &Fixture, content: &str) {
    f.apply(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: rules}}\ndata: {{rules.txt: {content}}}\n"));
    f.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  \
         selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      \
         containers:\n      - name: web\n        image: registry.local/web:1\n        \
         volumeMounts: [{name: rules, mountPath: /etc/rules}]\n      \
         volumes: [{name: rules, configMap: {name: rules}}]\n",
    );
}

#[test]
fn a_replica_the_wire_cannot_carry_is_never_bound_and_says_why() {
    let f = Fixture::new();
    f.node("pi-1", "4", "4Gi", &[]);
    // Over 1 MiB of configuration: more than a ConfigMap carries (as in
    // Kubernetes), which only the projection onto the wire knows.
    let big = "x".repeat((1 << 20) + 1);
    apply_web_with_rules(&f, &big);
    f.settle();
    let pod = &f.pods()[0];
    let status: PodStatus = pod.status();
    assert_eq!(pod.node_name(), None, "bound although its node's document would leave it out");
    assert_eq!((status.phase, status.reason.as_str()), (crate::status::PodPhase::Pending, "InvalidReplica"));
    assert!(status.message.contains("at most 1 MiB"), "{}", status.message);
    // Made to fit, it is placed.
    f.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: rules}\ndata: {rules.txt: small}\n");
    f.settle();
    assert_eq!(f.pods()[0].node_name(), Some("pi-1"));
}

#[test]
fn a_pod_the_compact_profile_cannot_hold_goes_only_to_a_linux_profile_node_and_says_why() {
    let f = Fixture::new();
    f.compact_node("mcu-1", "4", "4Gi");
    // 5 KiB of configuration: past the compact profile's 4 KiB per object.
    let big = "x".repeat(5 * 1024);
    apply_web_with_rules(&f, &big);
    f.settle();
    let pod = &f.pods()[0];
    let status: PodStatus = pod.status();
    assert_eq!(pod.node_name(), None);
    assert_eq!(status.reason, "Unschedulable");
    assert_eq!(
        status.message,
        "0/1 nodes available: 1 node(s) take the compact document profile: ConfigMap rules of 1 files in 5120 bytes \
         (the compact profile holds 16 files in 4096 bytes)"
    );
    f.node("pi-1", "4", "4Gi", &[]);
    f.settle();
    assert_eq!(f.pods()[0].node_name(), Some("pi-1"));
}

#[test]
fn a_daemon_set_replica_past_what_a_document_holds_is_named_by_the_controller() {
    let f = Fixture::new();
    // A compact-profile node: its document holds 16 replicas.
    f.compact_node("pi-1", "4", "8Gi");
    f.apply(&deployment(firmware_proto::MAX_REPLICAS as u32, "8Mi").replace("cpu: 250m", "cpu: 10m"));
    f.settle();
    assert!(f.pods().iter().all(|p| p.node_name() == Some("pi-1")));
    // A DaemonSet's replica is bound at creation, past the node's slots.
    f.apply(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  \
         selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec:\n      \
         containers: [{name: a, image: a:1}]\n",
    );
    f.settle();
    let mut pods = f.pods();
    assert_eq!(pods.len(), firmware_proto::MAX_REPLICAS + 1);
    pods.sort_by_key(crate::replica_spec::replica_id);
    let left_out: Vec<&str> = pods
        .iter()
        .filter(|p| p.status::<PodStatus>().reason == "TooManyReplicas")
        .map(|p| p.metadata.name.as_str())
        .collect();
    // The document holds the first sixteen by replica id; the last says so.
    assert_eq!(left_out, [pods.last().unwrap().metadata.name.as_str()]);
}

/// A node's write that changes nothing a DaemonSet reads (its usage) does
/// not make every DaemonSet reconcile every node; its labels or readiness
/// do.
#[test]
fn only_what_daemon_sets_read_of_a_node_scopes_them_in() {
    use crate::store::{EventType, WatchEvent};
    let f = Fixture::new();
    f.node("edge-1", "4", "4Gi", &[("site", "a")]);
    let node = || f.store.get(&ObjectKey::new(Kind::Node, "", "edge-1")).unwrap();
    let mut marks = NodeMarks::default();
    let noted = |object: ApiObject, marks: &mut NodeMarks| {
        let mut scope = Scope::nothing();
        scope.note(&WatchEvent { event_type: EventType::Modified, object: object.into() }, marks);
        scope == Scope::Changed { owners: Default::default(), nodes: true }
    };
    assert!(noted(node(), &mut marks), "a node first seen");
    assert!(!noted(node(), &mut marks), "the same again");
    let mut used = node();
    let mut status: crate::status::NodeStatus = used.status();
    status.usage = Some(crate::status::Usage { cpu_millis: 900, memory_bytes: 1 << 30, ..Default::default() });
    used.set_status(&status);
    assert!(!noted(used.clone(), &mut marks), "only its usage moved");
    let mut relabelled = used.clone();
    relabelled.metadata.labels.insert("site".into(), "b".into());
    assert!(noted(relabelled.clone(), &mut marks), "a label changed");
    let mut lost = relabelled;
    let mut status: crate::status::NodeStatus = lost.status();
    status.conditions = vec![crate::status::Condition::new(ConditionType::Ready, false, "Unreachable", "")];
    lost.set_status(&status);
    assert!(noted(lost, &mut marks), "its readiness changed");
}

/// A device with free disk for claims.
fn disk_node(f: &Fixture, name: &str, disk_free: &str) {
    let free = crate::manifest::Quantity::parse(disk_free).unwrap().as_units() as u64;
    f.node_with(
        name,
        &[],
        json!({"capacity": {"cpu": "4", "memory": "4Gi", "pods": "16"},
               "nodeInfo": {"architecture": "arm64", "operatingSystem": "linux"},
               "conditions": [{"type": "Ready", "status": "True"}],
               "usage": {"cpuMillis": 0, "memoryBytes": 0, "diskFreeBytes": free}}),
    );
}

fn claim_and_database(size: &str, policy: Option<&str>, image: &str) -> String {
    let annotations = policy.map_or(String::new(), |p| format!("  annotations: {{flotilla.io/on-device-lost: {p}}}\n"));
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\n{annotations}spec:\n  \
         accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: {size}}}}}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: db}}\nspec:\n  replicas: 1\n  \
         selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec:\n      \
         containers:\n      - name: db\n        image: {image}\n        \
         volumeMounts: [{{name: data, mountPath: /var/lib/db}}]\n      \
         volumes: [{{name: data, persistentVolumeClaim: {{claimName: data}}}}]\n"
    )
}

/// Two devices with room, the claim and its database placed: where.
fn database_on_two_devices(f: &Fixture, policy: Option<&str>) -> String {
    disk_node(f, "pi-1", "8Gi");
    disk_node(f, "pi-2", "8Gi");
    f.apply(&claim_and_database("2Gi", policy, "registry.local/db:1"));
    f.settle();
    live(f)[0].node_name().unwrap().to_owned()
}

fn claim_status(f: &Fixture) -> crate::status::ClaimStatus {
    f.store.get(&ObjectKey::new(Kind::PersistentVolumeClaim, "default", "data")).unwrap().status()
}

/// The node's Last Will, 5 s ago: past the eviction grace.
fn lose(f: &Fixture, name: &str) {
    let mut node = f.store.get(&ObjectKey::new(Kind::Node, "", name)).unwrap();
    let mut status: crate::status::NodeStatus = node.status();
    let mut unreachable = crate::status::Condition::new(ConditionType::Ready, false, "Unreachable", "last will");
    unreachable.last_transition_time =
        humantime::format_rfc3339_millis(std::time::SystemTime::now() - Duration::from_secs(5)).to_string();
    crate::status::set_condition(&mut status.conditions, unreachable);
    node.set_status(&status);
    f.store.commit(vec![Op::UpdateStatus(node)]).unwrap();
}

fn live(f: &Fixture) -> Vec<ApiObject> {
    f.pods().into_iter().filter(|p| !p.is_retired()).collect()
}

#[test]
fn a_claim_binds_where_its_first_replica_lands_and_holds_its_replicas_there() {
    let f = Fixture::new();
    let first = database_on_two_devices(&f, None);
    let pods = live(&f);
    assert_eq!(pods.len(), 1);
    let claim = claim_status(&f);
    assert_eq!((claim.phase.as_str(), claim.node_name.as_deref()), ("Bound", Some(first.as_str())));
    assert_eq!(claim.capacity["storage"], "2Gi");

    // A rollout: the new replica goes where the data is, however empty the
    // other device.
    f.apply(&claim_and_database("2Gi", None, "registry.local/db:2"));
    f.settle();
    let new: Vec<ApiObject> = live(&f).into_iter().filter(|p| p.metadata.name != pods[0].metadata.name).collect();
    assert_eq!(new.len(), 1, "{:?}", names(&live(&f)));
    assert_eq!(new[0].node_name(), Some(first.as_str()));

    // The device is lost: its replicas stay, waiting for it, and say why.
    lose(&f, &first);
    f.settle();
    for pod in live(&f) {
        let status: PodStatus = pod.status();
        assert_eq!(pod.node_name(), Some(first.as_str()), "{} moved", pod.metadata.name);
        assert_eq!((status.phase.as_str(), status.reason.as_str()), ("Unknown", "WaitingForVolume"));
        assert!(
            status.message.contains(&format!("device {first}, which was lost (Unreachable)")),
            "{}",
            status.message
        );
    }
    assert_eq!(claim_status(&f).node_name.as_deref(), Some(first.as_str()), "the claim stays");
}

#[test]
fn a_claim_whose_policy_is_reschedule_moves_with_its_replica_and_starts_empty() {
    let f = Fixture::new();
    let first = database_on_two_devices(&f, Some("reschedule"));
    lose(&f, &first);
    f.settle();
    let pods = live(&f);
    let other = if first == "pi-1" { "pi-2" } else { "pi-1" };
    assert_eq!(pods[0].node_name(), Some(other));
    assert_eq!(claim_status(&f).node_name.as_deref(), Some(other), "bound again where it landed");
}

#[test]
fn a_replica_waits_with_a_reason_for_a_missing_claim_a_claim_too_big_and_a_lost_device() {
    let f = Fixture::new();
    disk_node(&f, "pi-1", "8Gi");
    // No claim yet.
    f.apply(claim_and_database("2Gi", None, "registry.local/db:1").split("---").nth(1).unwrap());
    f.settle();
    let status: PodStatus = live(&f)[0].status();
    assert_eq!(status.reason, "MissingReference");
    assert!(status.message.contains("persistentvolumeclaim \"data\" not found"), "{}", status.message);

    // A claim larger than any device's free disk is not bound.
    f.apply(&claim_and_database("20Gi", None, "registry.local/db:1"));
    f.settle();
    let status: PodStatus = live(&f)[0].status();
    assert_eq!(status.reason, "Unschedulable");
    assert!(status.message.contains(super::claims::LOCAL_STORAGE), "{}", status.message);
    assert_eq!(claim_status(&f).node_name, None);
    assert_eq!(live(&f)[0].node_name(), None);

    // Room once the device reports more free disk; then a new replica of a
    // claim on a lost device waits for it, unplaced.
    disk_node(&f, "pi-1", "64Gi");
    f.settle();
    assert_eq!(live(&f)[0].node_name(), Some("pi-1"));
    lose(&f, "pi-1");
    f.settle();
    f.store.commit(vec![Op::Delete(live(&f)[0].key(), None)]).unwrap();
    f.settle();
    let pods = live(&f);
    let status: PodStatus = pods[0].status();
    assert_eq!((pods[0].node_name(), status.reason.as_str()), (None, "WaitingForVolume"));
    assert!(status.message.contains("device pi-1, which is not ready (Unreachable)"), "{}", status.message);

    // A replica never placed does not hold up the claim's deletion.
    let key = ObjectKey::new(Kind::PersistentVolumeClaim, "default", "data");
    let uid = f.store.get(&key).unwrap().metadata.uid.clone();
    f.store.commit(vec![Op::Retire { key: key.clone(), uid }]).unwrap();
    f.settle();
    assert!(f.store.get(&key).is_none());
}

#[test]
fn a_deleted_claim_waits_for_the_replicas_that_mount_it_and_blocks_new_ones() {
    let f = Fixture::new();
    disk_node(&f, "pi-1", "8Gi");
    f.apply(&claim_and_database("2Gi", None, "registry.local/db:1"));
    f.settle();
    let key = ObjectKey::new(Kind::PersistentVolumeClaim, "default", "data");
    let uid = f.store.get(&key).unwrap().metadata.uid.clone();
    f.store.commit(vec![Op::Retire { key: key.clone(), uid }]).unwrap();
    f.settle();
    assert!(f.store.get(&key).is_some(), "kept while its replica mounts it");
    assert_eq!(live(&f)[0].node_name(), Some("pi-1"), "the running replica is left alone");

    // Once nothing mounts it, it goes; a replica made after does not
    // start without it.
    f.store.commit(vec![Op::Delete(live(&f)[0].key(), None)]).unwrap();
    f.settle();
    assert!(f.store.get(&key).is_none(), "deleted once nothing mounts it");
    let status: PodStatus = live(&f)[0].status();
    assert_eq!((live(&f)[0].node_name(), status.reason.as_str()), (None, "MissingReference"));
}

fn stateful_set(replicas: u32, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  replicas: {replicas}\n  \
         serviceName: db\n  selector: {{matchLabels: {{app: db}}}}\n{extra}  template:\n    \
         metadata: {{labels: {{app: db}}}}\n    spec:\n      containers:\n      - name: db\n        image: {image}\n        \
         volumeMounts: [{{name: data, mountPath: /var/lib/db}}]\n  \
         volumeClaimTemplates:\n  - metadata: {{name: data}}\n    \
         spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
    )
}

/// The agent's word: the replica runs and is ready.
fn make_ready(f: &Fixture, name: &str) {
    let mut pod = f.store.get(&ObjectKey::new(Kind::Pod, "default", name)).unwrap();
    let mut status: PodStatus = pod.status();
    status.phase = crate::status::PodPhase::Running;
    status.reason.clear();
    crate::status::set_condition(
        &mut status.conditions,
        crate::status::Condition::new(ConditionType::Ready, true, "ProbesPassed", ""),
    );
    pod.set_status(&status);
    f.store.commit(vec![Op::UpdateStatus(pod)]).unwrap();
}

/// The agent's word: a retired replica stopped (it is deleted).
fn stopped(f: &Fixture) -> Vec<String> {
    let retired: Vec<ApiObject> = f.pods().into_iter().filter(|p| p.is_retired()).collect();
    for pod in &retired {
        f.store.commit(vec![Op::Delete(pod.key(), None)]).unwrap();
    }
    retired.iter().map(|p| p.metadata.name.clone()).collect()
}

fn claim_node(f: &Fixture, name: &str) -> Option<String> {
    let claim = f.store.get(&ObjectKey::new(Kind::PersistentVolumeClaim, "default", name))?;
    claim.status::<crate::status::ClaimStatus>().node_name
}

#[test]
fn a_stateful_set_makes_its_replicas_in_order_each_on_the_device_of_its_own_claim() {
    let f = Fixture::new();
    disk_node(&f, "pi-1", "8Gi");
    disk_node(&f, "pi-2", "8Gi");
    f.apply(&stateful_set(3, "registry.local/db:1", ""));
    f.settle();
    // One at a time, in order: db-1 waits for db-0 to be ready.
    assert_eq!(names(&live(&f)), ["db-0"]);
    for next in ["db-1", "db-2"] {
        let last = names(&live(&f)).last().unwrap().clone();
        make_ready(&f, &last);
        f.settle();
        assert!(names(&live(&f)).contains(&next.to_owned()), "{next} after {last}: {:?}", names(&live(&f)));
    }
    make_ready(&f, "db-2");
    f.settle();
    let nodes: Vec<String> = live(&f).iter().map(|p| p.node_name().unwrap().to_owned()).collect();
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(
            claim_node(&f, &format!("data-db-{i}")).as_deref(),
            Some(node.as_str()),
            "each on its claim's device"
        );
    }
    let set = f.store.get(&ObjectKey::new(Kind::StatefulSet, "default", "db")).unwrap();
    let status: crate::status::StatefulSetStatus = set.status();
    assert_eq!((status.replicas, status.ready_replicas, status.updated_replicas), (3, 3, 3));

    // An update: highest ordinal first, one at a time, each replacement of
    // the same name on the same device.
    f.apply(&stateful_set(3, "registry.local/db:2", ""));
    for expected in ["db-2", "db-1", "db-0"] {
        f.settle();
        assert_eq!(stopped(&f), [expected]);
        f.settle();
        let pod = f.store.get(&ObjectKey::new(Kind::Pod, "default", expected)).unwrap();
        let ordinal: usize = expected[3..].parse().unwrap();
        assert_eq!(pod.node_name(), Some(nodes[ordinal].as_str()), "{expected} back on its claim's device");
        make_ready(&f, expected);
    }
    f.settle();
    let status: crate::status::StatefulSetStatus =
        f.store.get(&ObjectKey::new(Kind::StatefulSet, "default", "db")).unwrap().status();
    assert_eq!((status.updated_replicas, &status.current_revision), (3, &status.update_revision));

    // Scaled down: highest first; the claims stay.
    f.apply(&stateful_set(1, "registry.local/db:2", ""));
    f.settle();
    assert_eq!(stopped(&f), ["db-2"]);
    f.settle();
    assert_eq!(stopped(&f), ["db-1"]);
    f.settle();
    assert_eq!(names(&live(&f)), ["db-0"]);
    assert!(claim_node(&f, "data-db-2").is_some(), "kept (Retain)");
}

#[test]
fn a_parallel_stateful_set_whose_claims_go_when_scaled_deletes_them_with_its_replicas() {
    let f = Fixture::new();
    disk_node(&f, "pi-1", "8Gi");
    let extra = "  podManagementPolicy: Parallel\n  \
                 persistentVolumeClaimRetentionPolicy: {whenScaled: Delete, whenDeleted: Delete}\n";
    f.apply(&stateful_set(2, "registry.local/db:1", extra));
    // A claim of the same shape that the set did not make is not its own.
    f.apply("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data-db-7}\nspec: {resources: {requests: {storage: 1Gi}}}\n");
    f.settle();
    assert_eq!(names(&live(&f)), ["db-0", "db-1"], "all at once");
    f.apply(&stateful_set(1, "registry.local/db:1", extra));
    f.settle();
    stopped(&f);
    f.settle();
    assert!(f.store.get(&ObjectKey::new(Kind::PersistentVolumeClaim, "default", "data-db-1")).is_none());
    assert!(f.store.get(&ObjectKey::new(Kind::PersistentVolumeClaim, "default", "data-db-7")).is_some());
    assert!(claim_node(&f, "data-db-0").is_some());
    // Deleted with the set once its last replica is gone.
    f.store.commit(vec![Op::Delete(ObjectKey::new(Kind::StatefulSet, "default", "db"), None)]).unwrap();
    f.settle();
    assert!(f.store.get(&ObjectKey::new(Kind::PersistentVolumeClaim, "default", "data-db-0")).is_none());
}

#[test]
fn a_reschedule_claim_moves_only_once_its_device_is_lost_past_the_grace() {
    let f = Fixture::new();
    let first = database_on_two_devices(&f, Some("reschedule"));
    // Not ready just now (a blip, a broker reconnect): a new replica waits.
    let mut node = f.store.get(&ObjectKey::new(Kind::Node, "", &first)).unwrap();
    let mut status: crate::status::NodeStatus = node.status();
    crate::status::set_condition(
        &mut status.conditions,
        crate::status::Condition::new(ConditionType::Ready, false, "Unreachable", "last will"),
    );
    node.set_status(&status);
    f.store.commit(vec![Op::UpdateStatus(node)]).unwrap();
    f.store.commit(vec![Op::Delete(live(&f)[0].key(), None)]).unwrap();
    reconcile_once(&f.store).unwrap();
    reconcile_once(&f.store).unwrap();
    let status: PodStatus = live(&f)[0].status();
    assert_eq!(status.reason, "WaitingForVolume", "{}", status.message);
    assert_eq!(claim_status(&f).node_name.as_deref(), Some(first.as_str()), "not moved on a blip");
}

#[test]
fn a_placed_replica_whose_claim_lost_its_binding_binds_it_again_where_it_runs() {
    let f = Fixture::new();
    disk_node(&f, "pi-1", "8Gi");
    f.apply(&claim_and_database("2Gi", None, "registry.local/db:1"));
    f.settle();
    make_ready(&f, &live(&f)[0].metadata.name);
    // The claim's write was split from the replica's binding (a commit in
    // chunks, a crash between them).
    let mut claim = f.store.get(&ObjectKey::new(Kind::PersistentVolumeClaim, "default", "data")).unwrap();
    claim.set_status(&crate::status::ClaimStatus::default());
    f.store.commit(vec![Op::UpdateStatus(claim)]).unwrap();
    f.settle();
    assert_eq!(claim_status(&f).node_name.as_deref(), Some("pi-1"));
}

#[test]
fn a_device_holding_as_many_claims_as_a_document_lists_takes_no_new_one() {
    let f = Fixture::new();
    disk_node(&f, "pi-1", "64Gi");
    // 64 claims already bound there (their replicas elsewhere, or gone).
    for i in 0..firmware_proto::pod::LINUX_MAX_CLAIMS {
        f.apply(&format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: old-{i}}}\n\
             spec: {{resources: {{requests: {{storage: 1Mi}}}}}}\n"
        ));
        let claim = f.store.get(&ObjectKey::new(Kind::PersistentVolumeClaim, "default", &format!("old-{i}"))).unwrap();
        f.store.commit(vec![Op::UpdateStatus(super::claims::bound_to(&claim, "pi-1"))]).unwrap();
    }
    f.apply(&claim_and_database("1Gi", None, "registry.local/db:1"));
    f.settle();
    let status: PodStatus = live(&f)[0].status();
    assert_eq!((live(&f)[0].node_name(), status.reason.as_str()), (None, "Unschedulable"));
    assert!(status.message.contains(super::claims::CLAIM_SLOTS), "{}", status.message);
    // One fewer, and it fits.
    f.store.commit(vec![Op::Delete(ObjectKey::new(Kind::PersistentVolumeClaim, "default", "old-0"), None)]).unwrap();
    f.settle();
    assert_eq!(live(&f)[0].node_name(), Some("pi-1"));
}
