//! The agent core on the fake runtime.

use firmware_proto::samples;

use super::*;
use crate::runtime::fake::FakeRuntime;
use firmware_proto::DesiredDocument;

const GOOD: [u8; 64] = [9; 64];

fn verifier() -> Verifier {
    Box::new(|_, signature| signature.0 == GOOD)
}

/// The Linux-profile document for `document`'s single-container replicas
/// (each a pod of one container named `main`), and its config objects'
/// frames.
fn pods(document: &DesiredDocument, signature: [u8; 64]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let sign = |_: &[u8]| firmware_proto::Bytes(signature);
    let mut config = firmware_proto::heap::List::new();
    let mut blobs = Vec::new();
    for object in &document.config {
        let blob = ConfigBlob::from(object);
        let frame = firmware_proto::encode_signed_to_vec(&blob, |_| firmware_proto::Bytes(GOOD)).unwrap();
        let digest: [u8; 32] = sha2::Sha256::digest(firmware_proto::pod::signed_body(&frame).unwrap()).into();
        let reference = firmware_proto::pod::ConfigRef {
            name: firmware_proto::heap::Text::new(&object.name).unwrap(),
            secret: object.secret,
            digest: firmware_proto::Bytes(digest),
            size: frame.len() as u32,
            sealed_key: None,
        };
        config.push(reference).unwrap();
        blobs.push(frame);
    }
    let pods: Vec<PodSpec> = document.replicas.iter().map(PodSpec::from).collect();
    let document = PodDocument {
        node_id: document.node_id.clone(),
        generation: document.generation,
        pods: firmware_proto::heap::List::try_from(pods).unwrap(),
        config,
        claims: Default::default(),
    };
    (firmware_proto::encode_signed_to_vec(&document, sign).unwrap(), blobs)
}

fn frame(document: &DesiredDocument, signature: [u8; 64]) -> Vec<u8> {
    pods(document, signature).0
}

/// Offers a document's config objects, then the document.
fn offer(agent: &mut Agent<FakeRuntime>, document: &DesiredDocument, signature: [u8; 64]) -> Result<bool, Rejected> {
    let (frame, blobs) = pods(document, signature);
    for blob in blobs {
        agent.offer_config(&blob).unwrap();
    }
    agent.offer_desired(&frame)
}

/// The runtime id of sample replica `i`'s one container.
fn unit(i: usize) -> String {
    format!("sensor-1a2b-{i}.main")
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths { data_dir: dir.path().to_owned() };
        std::fs::create_dir_all(paths.image_rootfs(&samples::replica(0).image.digest.0)).unwrap();
        Fixture { dir }
    }

    fn agent(&self, runtime: FakeRuntime) -> Agent<FakeRuntime> {
        let paths = Paths { data_dir: self.dir.path().to_owned() };
        let backoff = Backoff { initial_ms: 1_000, max_ms: 8_000, reset_after_ms: 60_000 };
        Agent::new(runtime, paths, samples::node_id(), verifier(), backoff)
    }
}

fn document(generation: u64, replicas: usize, policy: RestartPolicy) -> DesiredDocument {
    let mut document = samples::desired(replicas);
    document.generation = generation;
    for replica in &mut document.replicas {
        replica.restart_policy = policy;
    }
    document
}

#[test]
fn a_document_starts_its_replicas_and_a_second_pass_changes_nothing() {
    let f = Fixture::new();
    let mut agent = f.agent(FakeRuntime::default());
    assert!(offer(&mut agent, &document(1, 3, RestartPolicy::Always), GOOD).unwrap());
    assert_eq!(agent.reconcile(0).unwrap(), 6, "create + start for each of 3");
    assert_eq!(agent.reconcile(100).unwrap(), 0);
    let started = agent.take_events().iter().filter(|e| e.kind == EventKind::Started).count();
    assert_eq!(started, 3);
    // The same document again (a retained redelivery) is a no-op.
    assert!(!offer(&mut agent, &document(1, 3, RestartPolicy::Always), GOOD).unwrap());
    assert_eq!(agent.reconcile(200).unwrap(), 0);
}

#[test]
fn forged_replayed_and_misaddressed_documents_are_rejected_and_change_nothing() {
    let f = Fixture::new();
    let mut agent = f.agent(FakeRuntime::default());
    offer(&mut agent, &document(5, 1, RestartPolicy::Always), GOOD).unwrap();
    agent.reconcile(0).unwrap();
    let forged = agent.offer_desired(&frame(&document(6, 0, RestartPolicy::Always), [1; 64]));
    assert!(matches!(forged, Err(Rejected::BadSignature)), "{forged:?}");
    let replay = offer(&mut agent, &document(4, 0, RestartPolicy::Always), GOOD);
    assert!(matches!(replay, Err(Rejected::Stale { applied: 5, found: 4 })), "{replay:?}");
    let mut other = document(7, 0, RestartPolicy::Always);
    other.node_id = firmware_proto::Name::new("someone-else").unwrap();
    assert!(matches!(offer(&mut agent, &other, GOOD), Err(Rejected::WrongNode { .. })));
    assert!(matches!(agent.offer_desired(b"\x01\x05garbage"), Err(Rejected::Malformed(_))));
    assert!(matches!(agent.offer_desired(&[]), Err(Rejected::Malformed(_))));
    // Still running generation 5's replica.
    assert_eq!(agent.generation(), 5);
    assert_eq!(agent.reconcile(10).unwrap(), 0);
    assert_eq!(agent.runtime().containers.len(), 1);
}

#[test]
fn always_restarts_with_exponential_back_off_and_never_leaves_it_stopped() {
    let f = Fixture::new();
    let mut agent = f.agent(FakeRuntime::default());
    offer(&mut agent, &document(1, 1, RestartPolicy::Always), GOOD).unwrap();
    agent.reconcile(0).unwrap();
    let id = unit(0);
    let mut restarts_at = Vec::new();
    let mut now = 0;
    for _ in 0..5 {
        agent.runtime().exit(&id, ExitInfo { code: Some(1), signal: None, oom_killed: false });
        agent.reconcile(now).unwrap(); // sees the exit, schedules the restart
        loop {
            now += 250;
            agent.reconcile(now).unwrap();
            if agent.runtime().containers.contains_key(&id) {
                restarts_at.push(now);
                break;
            }
        }
    }
    let gaps: Vec<u64> = restarts_at.windows(2).map(|w| w[1] - w[0]).collect();
    // Each run exits at once: restart n waits 1 s, 2 s, 4 s, then the cap (8 s here).
    assert_eq!(restarts_at[0], 1_000);
    assert_eq!(gaps, vec![2_000, 4_000, 8_000, 8_000], "{restarts_at:?}");
    let status = &agent.replica_statuses(now)[0];
    assert_eq!(status.restarts, 5);
    assert_eq!(status.phase, Phase::Running);
    let exits = agent.take_events().into_iter().filter(|e| matches!(e.kind, EventKind::Exited(_))).count();
    assert_eq!(exits, 5);
}

#[test]
fn on_failure_and_never_follow_their_policies_and_oom_is_reported() {
    let f = Fixture::new();
    let mut agent = f.agent(FakeRuntime::default());
    let mut doc = document(1, 3, RestartPolicy::OnFailure);
    doc.replicas[2].restart_policy = RestartPolicy::Never;
    offer(&mut agent, &doc, GOOD).unwrap();
    agent.reconcile(0).unwrap();
    let ids: Vec<String> = (0..3).map(unit).collect();
    agent.runtime().exit(&ids[0], ExitInfo { code: Some(0), signal: None, oom_killed: false });
    agent.runtime().exit(&ids[1], ExitInfo { code: Some(137), signal: Some(9), oom_killed: true });
    agent.runtime().exit(&ids[2], ExitInfo { code: Some(3), signal: None, oom_killed: false });
    agent.reconcile(10).unwrap();
    agent.reconcile(5_000).unwrap();
    let running: Vec<&String> = agent.runtime().containers.keys().collect();
    assert_eq!(running, vec![&ids[1]], "only the OOM-killed OnFailure replica restarts");
    let statuses = agent.replica_statuses(5_000);
    assert_eq!(statuses[0].phase, Phase::Succeeded);
    assert_eq!(statuses[2].phase, Phase::Failed);
    assert_eq!(statuses[1].last_exit.unwrap().reason, ExitReason::OomKilled);
    let events = agent.take_events();
    assert!(events.iter().any(|e| matches!(e.kind, EventKind::OomKilled { limit_bytes } if limit_bytes == 64 << 20)));
}

#[test]
fn a_changed_replica_is_replaced_gracefully_and_a_removed_one_is_stopped() {
    let f = Fixture::new();
    let mut agent = f.agent(FakeRuntime::default());
    offer(&mut agent, &document(1, 2, RestartPolicy::Always), GOOD).unwrap();
    agent.reconcile(0).unwrap();
    let mut next = document(2, 1, RestartPolicy::Always);
    next.replicas[0].env = firmware_proto::TextList::from_strs(["LINE=4"]).unwrap();
    offer(&mut agent, &next, GOOD).unwrap();
    let calls_before = agent.runtime().calls.len();
    agent.reconcile(1_000).unwrap();
    let calls: Vec<String> = agent.runtime().calls[calls_before..].to_vec();
    assert!(calls.iter().any(|c| c.starts_with("kill sensor-1a2b-1.main 15")), "SIGTERM first: {calls:?}");
    assert!(calls.iter().any(|c| c.starts_with("kill sensor-1a2b-0.main 15")), "{calls:?}");
    // The fake stops on SIGTERM: the next pass deletes, the one after creates the new one.
    agent.reconcile(1_100).unwrap();
    agent.reconcile(1_200).unwrap();
    let containers = &agent.runtime().containers;
    assert_eq!(containers.keys().collect::<Vec<_>>(), ["sensor-1a2b-0.main"]);
    assert_eq!(containers["sensor-1a2b-0.main"].0.env, vec!["LINE=4".to_owned()]);
}

#[test]
fn after_a_restart_the_agent_keeps_running_containers_and_brings_back_missing_ones_from_disk() {
    let f = Fixture::new();
    let mut first = f.agent(FakeRuntime::default());
    offer(&mut first, &document(3, 2, RestartPolicy::Always), GOOD).unwrap();
    first.reconcile(0).unwrap();
    // Reboot: one container survived (re-adopted), the other is gone.
    let mut runtime = std::mem::take(first.runtime());
    drop(first);
    runtime.containers.remove("sensor-1a2b-1.main");
    runtime.calls.clear();
    let mut second = f.agent(runtime);
    assert_eq!(second.generation(), 3, "document restored without any network");
    second.reconcile(10).unwrap();
    let calls = &second.runtime().calls;
    assert_eq!(calls, &vec!["create sensor-1a2b-1.main".to_owned(), "start sensor-1a2b-1.main".to_owned()]);
}

/// A registry that accepts connections and never answers: pulls from it
/// stay in progress for the length of a test.
fn silent_registry() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    (listener, format!("{address}/silent:1"))
}

#[test]
fn a_missing_image_is_pulled_and_blocks_only_its_replica() {
    let f = Fixture::new();
    let (_registry, reference) = silent_registry();
    let mut agent = f.agent(FakeRuntime::default());
    let mut doc = document(1, 2, RestartPolicy::Always);
    doc.replicas[1].image.digest = firmware_proto::Bytes([1; 32]);
    doc.replicas[1].image.reference = reference.as_str().try_into().unwrap();
    offer(&mut agent, &doc, GOOD).unwrap();
    agent.reconcile(0).unwrap();
    assert_eq!(agent.runtime().containers.len(), 1);
    let blocked = agent.persisted.records["sensor-1a2b-1.main"].blocked.clone().unwrap();
    assert_eq!(blocked, format!("pulling image {reference}"));
    assert_eq!(agent.replica_statuses(0)[1].phase, Phase::Pulling);
}

#[test]
fn a_new_image_is_pulled_while_the_old_container_keeps_running() {
    let f = Fixture::new();
    let (_registry, reference) = silent_registry();
    let mut agent = f.agent(FakeRuntime::default());
    offer(&mut agent, &document(1, 1, RestartPolicy::Always), GOOD).unwrap();
    agent.reconcile(0).unwrap();
    let mut next = document(2, 1, RestartPolicy::Always);
    next.replicas[0].image.digest = firmware_proto::Bytes([2; 32]);
    next.replicas[0].image.reference = reference.as_str().try_into().unwrap();
    offer(&mut agent, &next, GOOD).unwrap();
    let calls_before = agent.runtime().calls.len();
    for now in [1_000, 2_000, 3_000] {
        agent.reconcile(now).unwrap();
    }
    assert_eq!(agent.runtime().calls.len(), calls_before, "the old container is left alone while pulling");
    assert_eq!(agent.replica_statuses(3_000)[0].phase, Phase::Running);
    // The image arrives (here: preloaded): now the old container is replaced.
    std::fs::create_dir_all(Paths { data_dir: f.dir.path().to_owned() }.image_rootfs(&[2; 32])).unwrap();
    agent.reconcile(4_000).unwrap();
    let calls: Vec<String> = agent.runtime().calls[calls_before..].to_vec();
    assert!(calls.iter().any(|c| c.starts_with("kill sensor-1a2b-0.main 15")), "{calls:?}");
}

#[test]
fn a_replica_swapped_for_another_runs_until_the_new_ones_image_is_here() {
    let f = Fixture::new();
    let (_registry, reference) = silent_registry();
    let mut agent = f.agent(FakeRuntime::default());
    offer(&mut agent, &document(1, 1, RestartPolicy::Always), GOOD).unwrap();
    agent.reconcile(0).unwrap();
    // A rollout without surge: the old replica leaves the document and its
    // replacement (another id, a new image) arrives in the same one.
    let mut next = document(2, 2, RestartPolicy::Always);
    next.replicas.remove(0);
    next.replicas[0].image.digest = firmware_proto::Bytes([3; 32]);
    next.replicas[0].image.reference = reference.as_str().try_into().unwrap();
    offer(&mut agent, &next, GOOD).unwrap();
    let calls_before = agent.runtime().calls.len();
    for now in [1_000, 2_000, 3_000] {
        agent.reconcile(now).unwrap();
    }
    assert_eq!(agent.runtime().calls.len(), calls_before, "the old replica runs on while the new image downloads");
    std::fs::create_dir_all(Paths { data_dir: f.dir.path().to_owned() }.image_rootfs(&[3; 32])).unwrap();
    agent.reconcile(4_000).unwrap();
    let calls: Vec<String> = agent.runtime().calls[calls_before..].to_vec();
    assert!(calls.iter().any(|c| c.starts_with("kill sensor-1a2b-0.main 15")), "{calls:?}");
}

#[test]
fn a_replacement_waits_for_the_replica_holding_its_port_to_stop() {
    let f = Fixture::new();
    let mut runtime = FakeRuntime::default();
    runtime.ignore_sigterm.insert("sensor-1a2b-0.main".into());
    let mut agent = f.agent(runtime);
    let first = document(1, 1, RestartPolicy::Always);
    let grace_ms = u64::from(first.replicas[0].termination_grace_s) * 1000;
    offer(&mut agent, &first, GOOD).unwrap();
    agent.reconcile(0).unwrap();
    // Its replacement: another id, the same port (the sample's 8080).
    let mut next = document(2, 2, RestartPolicy::Always);
    next.replicas.remove(0);
    assert_eq!(next.replicas[0].ports, first.replicas[0].ports);
    offer(&mut agent, &next, GOOD).unwrap();
    agent.reconcile(1_000).unwrap();
    agent.reconcile(2_000).unwrap();
    let containers: Vec<String> = agent.runtime().containers.keys().cloned().collect();
    assert_eq!(containers, ["sensor-1a2b-0.main"], "the old one ignores SIGTERM and still holds the port");
    let blocked = agent.persisted.records["sensor-1a2b-1.main"].blocked.clone().unwrap();
    assert!(blocked.contains("waiting for sensor-1a2b-0.main to stop"), "{blocked}");
    // The grace period ends: SIGKILL, delete, and only then the new one.
    for now in [1_000 + grace_ms + 1, 1_100 + grace_ms, 1_200 + grace_ms] {
        agent.reconcile(now).unwrap();
    }
    let containers: Vec<String> = agent.runtime().containers.keys().cloned().collect();
    assert_eq!(containers, ["sensor-1a2b-1.main"]);
    let calls = &agent.runtime().calls;
    let killed = calls.iter().position(|c| c == "kill sensor-1a2b-0.main 9").expect("SIGKILL after the grace");
    let created = calls.iter().position(|c| c == "create sensor-1a2b-1.main").unwrap();
    assert!(killed < created, "{calls:?}");
}

#[test]
fn root_filesystems_of_replicas_that_are_gone_are_removed() {
    let f = Fixture::new();
    let containers = f.dir.path().join("containers");
    std::fs::create_dir_all(containers.join("gone-replica/rootfs")).unwrap();
    std::fs::create_dir_all(containers.join("sensor-1a2b-0.main/rootfs")).unwrap();
    let mut agent = f.agent(FakeRuntime::default());
    offer(&mut agent, &document(1, 1, RestartPolicy::Always), GOOD).unwrap();
    agent.reconcile(0).unwrap();
    assert!(!containers.join("gone-replica").exists());
    assert!(containers.join("sensor-1a2b-0.main").exists(), "a desired replica's stays");
}

#[test]
fn back_off_doubles_and_caps() {
    let b = Backoff { initial_ms: 1_000, max_ms: 300_000, reset_after_ms: 1 };
    assert_eq!([1, 2, 3, 4].map(|n| b.delay_ms(n)), [1_000, 2_000, 4_000, 8_000]);
    assert_eq!(b.delay_ms(20), 300_000);
    assert_eq!(b.delay_ms(u32::MAX), 300_000);
}

#[test]
fn a_failing_liveness_probe_kills_and_restarts_the_container_and_says_why() {
    let f = Fixture::new();
    let mut agent = f.agent(FakeRuntime::default());
    let mut doc = document(1, 1, RestartPolicy::Always);
    doc.replicas[0].readiness_probe = None;
    doc.replicas[0].liveness_probe = Some(firmware_proto::Probe {
        action: firmware_proto::ProbeAction::Exec {
            command: firmware_proto::TextList::from_strs(["cat", "/tmp/healthy"]).unwrap(),
        },
        initial_delay_s: 0,
        period_s: 1,
        timeout_s: 1,
        success_threshold: 1,
        failure_threshold: 2,
    });
    offer(&mut agent, &doc, GOOD).unwrap();
    agent.reconcile(0).unwrap();
    let id = unit(0);
    assert_eq!(agent.probe(0), 1);
    agent.runtime().exec_results.insert(id.clone(), Some(1));
    assert_eq!(agent.probe(500), 0, "not due before the period");
    agent.probe(1_000);
    assert!(agent.runtime().calls.iter().all(|c| !c.starts_with("kill")), "one failure is below the threshold");
    agent.probe(2_000);
    assert!(agent.runtime().calls.iter().any(|c| c == &format!("kill {id} 9")), "{:?}", agent.runtime().calls);
    agent.reconcile(2_100).unwrap();
    agent.reconcile(3_200).unwrap();
    let status = &agent.replica_statuses(3_200)[0];
    assert_eq!(status.restarts, 1);
    assert_eq!(status.last_exit.unwrap().reason, ExitReason::LivenessFailed);
    assert_eq!(status.phase, Phase::Running);
    let events = agent.take_events();
    assert!(events.iter().any(|e| matches!(e.kind, EventKind::ProbeFailed { .. })));
}

/// The sample pod (init container, sidecar, app) and its config object,
/// offered to `agent`. Returns the three container ids.
fn offer_pod(agent: &mut Agent<FakeRuntime>, edit: impl FnOnce(&mut PodSpec)) -> [String; 3] {
    let blob = firmware_proto::encode_signed_to_vec(&samples::config_blob(), |_| firmware_proto::Bytes(GOOD)).unwrap();
    let digest = sha2::Sha256::digest(firmware_proto::pod::signed_body(&blob).unwrap()).into();
    let mut document = samples::pod_document(1, firmware_proto::Bytes(digest));
    edit(&mut document.pods.as_mut_slice()[0]);
    assert!(agent.offer_config(&blob).unwrap());
    let frame = firmware_proto::encode_signed_to_vec(&document, |_| firmware_proto::Bytes(GOOD)).unwrap();
    assert!(agent.offer_desired(&frame).unwrap());
    ["wait-config", "exporter", "sensor"].map(|c| format!("sensor-1a2b-0.{c}"))
}

fn created(agent: &mut Agent<FakeRuntime>) -> Vec<String> {
    agent.runtime().calls.iter().filter_map(|c| c.strip_prefix("create ")).map(str::to_owned).collect()
}

const OK: ExitInfo = ExitInfo { code: Some(0), signal: None, oom_killed: false };
const FAIL: ExitInfo = ExitInfo { code: Some(1), signal: None, oom_killed: false };

#[test]
fn init_containers_run_to_completion_in_order_then_the_sidecar_and_app_start() {
    let f = Fixture::new();
    let mut agent = f.agent(FakeRuntime::default());
    let [init, sidecar, app] = offer_pod(&mut agent, |_| {});
    agent.reconcile(0).unwrap();
    assert_eq!(created(&mut agent), std::slice::from_ref(&init), "only the first init container");
    let statuses = agent.statuses(0);
    assert_eq!(statuses.replicas[0].phase, Phase::Pending);
    let states: Vec<WireState> = statuses.containers.iter().map(|c| c.state).collect();
    assert_eq!(states, [WireState::Running, WireState::Waiting, WireState::Waiting]);
    assert_eq!(agent.persisted.records[&app].blocked.as_deref(), Some("waiting for init container wait-config"));

    agent.runtime().exit(&init, OK);
    agent.reconcile(10).unwrap();
    agent.reconcile(20).unwrap();
    assert_eq!(created(&mut agent), [init.clone(), sidecar.clone(), app.clone()], "sidecar before the app");
    let statuses = agent.statuses(20);
    assert_eq!(statuses.replicas[0].phase, Phase::Running);
    assert_eq!(statuses.replicas[0].readiness, Readiness::Starting, "the app's readiness probe has not passed");
    let states: Vec<(WireState, bool)> = statuses.containers.iter().map(|c| (c.state, c.ready)).collect();
    assert_eq!(states, [(WireState::Terminated, false), (WireState::Running, true), (WireState::Running, false)]);
    // Events name the container.
    let started: Vec<String> = agent
        .take_events()
        .into_iter()
        .filter(|e| e.kind == EventKind::Started)
        .map(|e| e.container.unwrap().to_string())
        .collect();
    assert_eq!(started, ["wait-config", "exporter", "sensor"]);
    // The init container does not run again.
    agent.reconcile(30).unwrap();
    assert_eq!(created(&mut agent).len(), 3);
}

#[test]
fn a_failing_init_container_holds_the_pod_with_its_reason() {
    let f = Fixture::new();
    let mut agent = f.agent(FakeRuntime::default());
    let [init, _, app] = offer_pod(&mut agent, |_| {});
    agent.reconcile(0).unwrap();
    agent.runtime().exit(&init, FAIL);
    agent.reconcile(10).unwrap();
    let statuses = agent.statuses(10);
    assert_eq!(statuses.replicas[0].phase, Phase::CrashLoopBackOff);
    assert_eq!(statuses.replicas[0].last_exit.map(|e| e.code), Some(1));
    assert_eq!(statuses.containers[0].restarts, 1);
    // Restarted after the back-off; the app never started.
    agent.reconcile(1_100).unwrap();
    assert_eq!(created(&mut agent), [init.clone(), init.clone()]);
    assert!(!agent.runtime().containers.contains_key(&app));

    // Under `restartPolicy: Never` the pod fails.
    let f = Fixture::new();
    let mut agent = f.agent(FakeRuntime::default());
    let [init, _, _] = offer_pod(&mut agent, |pod| pod.restart_policy = RestartPolicy::Never);
    agent.reconcile(0).unwrap();
    agent.runtime().exit(&init, FAIL);
    agent.reconcile(10).unwrap();
    agent.reconcile(5_000).unwrap();
    assert_eq!(agent.statuses(5_000).replicas[0].phase, Phase::Failed);
    assert_eq!(created(&mut agent), [init]);

    // A sidecar started before the init container that failed for good is
    // stopped with the pod.
    let f = Fixture::new();
    let mut agent = f.agent(FakeRuntime::default());
    let [_, sidecar, _] = offer_pod(&mut agent, |pod| {
        pod.restart_policy = RestartPolicy::Never;
        pod.init_containers.as_mut_slice().swap(0, 1);
    });
    let init = "sensor-1a2b-0.wait-config".to_owned();
    agent.reconcile(0).unwrap();
    agent.reconcile(10).unwrap();
    assert!(agent.runtime().containers.contains_key(&sidecar) && agent.runtime().containers.contains_key(&init));
    agent.runtime().exit(&init, FAIL);
    for now in [20, 30, 40, 50] {
        agent.reconcile(now).unwrap();
    }
    assert!(agent.runtime().containers.is_empty(), "{:?}", agent.runtime().containers.keys());
    assert_eq!(agent.statuses(50).replicas[0].phase, Phase::Failed);
}

#[test]
fn containers_of_a_pod_share_its_volumes_and_a_job_pod_stops_its_sidecar_when_done() {
    let f = Fixture::new();
    let mut agent = f.agent(FakeRuntime::default());
    let [init, sidecar, app] = offer_pod(&mut agent, |pod| pod.restart_policy = RestartPolicy::Never);
    agent.reconcile(0).unwrap();
    agent.runtime().exit(&init, OK);
    agent.reconcile(10).unwrap();
    agent.reconcile(20).unwrap();
    let spool = |agent: &mut Agent<FakeRuntime>, id: &str| {
        let mounts = &agent.runtime().containers[id].0.mounts;
        mounts.iter().find(|m| m.destination == "/spool").unwrap().source.clone()
    };
    assert_eq!(spool(&mut agent, &sidecar), spool(&mut agent, &app));
    assert!(spool(&mut agent, &app).ends_with("volumes/sensor-1a2b-0/spool"));

    agent.runtime().exit(&app, OK);
    agent.reconcile(30).unwrap();
    agent.reconcile(40).unwrap();
    assert!(agent.runtime().calls.contains(&format!("kill {sidecar} 15")), "{:?}", agent.runtime().calls);
    agent.reconcile(50).unwrap();
    agent.reconcile(60).unwrap();
    assert!(agent.runtime().containers.is_empty());
    assert_eq!(agent.statuses(60).replicas[0].phase, Phase::Succeeded);
    agent.reconcile(70).unwrap();
    assert_eq!(created(&mut agent).len(), 3, "nothing restarts");

    // The pod leaves the document: its volumes go with it.
    let volumes = f.dir.path().join("volumes/sensor-1a2b-0");
    assert!(volumes.exists());
    let empty = document(43, 0, RestartPolicy::Always);
    offer(&mut agent, &empty, GOOD).unwrap();
    agent.reconcile(80).unwrap();
    assert!(!volumes.exists());
}

#[test]
fn a_pod_waits_for_its_config_object_and_starts_once_it_arrives() {
    let f = Fixture::new();
    let mut agent = f.agent(FakeRuntime::default());
    let blob = firmware_proto::encode_signed_to_vec(&samples::config_blob(), |_| firmware_proto::Bytes(GOOD)).unwrap();
    let digest: [u8; 32] = sha2::Sha256::digest(firmware_proto::pod::signed_body(&blob).unwrap()).into();
    let document = samples::pod_document(1, firmware_proto::Bytes(digest));
    let frame = firmware_proto::encode_signed_to_vec(&document, |_| firmware_proto::Bytes(GOOD)).unwrap();
    agent.offer_desired(&frame).unwrap();
    agent.reconcile(0).unwrap();
    assert!(agent.runtime().containers.is_empty());
    let blocked = agent.persisted.records["sensor-1a2b-0.wait-config"].blocked.clone().unwrap();
    assert!(blocked.starts_with("waiting for ConfigMap sensor-config (sha256:"), "{blocked}");
    // A forged object is refused; the real one lets the pod start, and is
    // kept on disk for a reboot without network.
    let forged =
        firmware_proto::encode_signed_to_vec(&samples::config_blob(), |_| firmware_proto::Bytes([1; 64])).unwrap();
    assert!(agent.offer_frame(&forged).is_err());
    assert!(agent.offer_frame(&blob).unwrap());
    agent.reconcile(10).unwrap();
    assert_eq!(created(&mut agent), ["sensor-1a2b-0.wait-config"]);
    assert!(Paths { data_dir: f.dir.path().to_owned() }.config_object(&digest).exists());
    // A compact document is the other profile's.
    let compact = firmware_proto::encode_signed_to_vec(&document_compact(), |_| firmware_proto::Bytes(GOOD)).unwrap();
    assert!(matches!(agent.offer_frame(&compact), Err(Rejected::WrongProfile { .. })));
}

fn document_compact() -> firmware_proto::DesiredState<'static> {
    static NODE: std::sync::OnceLock<firmware_proto::NodeId> = std::sync::OnceLock::new();
    firmware_proto::DesiredState {
        node_id: NODE.get_or_init(samples::node_id),
        generation: 9,
        replicas: &[],
        config: &[],
    }
}

#[test]
fn a_container_that_cannot_be_created_backs_off_says_why_and_holds_up_no_other() {
    let f = Fixture::new();
    let mut runtime = FakeRuntime::default();
    let reason = "exec process failed: executable 'sh' not found in $PATH";
    runtime.fail_create.insert(unit(0), reason.into());
    let mut agent = f.agent(runtime);
    offer(&mut agent, &document(1, 2, RestartPolicy::Always), GOOD).unwrap();
    agent.reconcile(0).unwrap();
    assert_eq!(agent.runtime().containers.keys().collect::<Vec<_>>(), [&unit(1)], "the other replica starts");
    let statuses = agent.replica_statuses(10);
    assert_eq!(statuses[0].phase, Phase::CrashLoopBackOff);
    assert_eq!(statuses[0].restarts, 1);
    let said: Vec<String> = agent
        .take_events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Rejected { reason, .. } => Some(reason.to_string()),
            _ => None,
        })
        .collect();
    assert!(said.iter().any(|r| r.contains("not found in $PATH")), "{said:?}");
    // Tried again only after the back-off.
    agent.reconcile(500).unwrap();
    agent.reconcile(1_100).unwrap();
    let creates = agent.runtime().calls.iter().filter(|c| **c == format!("create {}", unit(0))).count();
    assert_eq!(creates, 2);
}

#[test]
fn a_sidecar_restarting_after_the_pod_started_holds_up_no_app_container() {
    let f = Fixture::new();
    let mut agent = f.agent(FakeRuntime::default());
    let [init, sidecar, app] = offer_pod(&mut agent, |_| {});
    agent.reconcile(0).unwrap();
    agent.runtime().exit(&init, OK);
    agent.reconcile(10).unwrap();
    agent.reconcile(20).unwrap();
    // The sidecar crashes and backs off; meanwhile the app exits too.
    agent.runtime().exit(&sidecar, FAIL);
    agent.runtime().exit(&app, FAIL);
    agent.reconcile(30).unwrap();
    agent.reconcile(1_100).unwrap();
    assert!(agent.runtime().containers.contains_key(&app), "the app restarts on its own back-off");
    assert_ne!(agent.statuses(1_100).replicas[0].phase, Phase::Pending);
}

#[test]
fn with_no_document_loaded_what_runs_keeps_running() {
    let f = Fixture::new();
    let mut first = f.agent(FakeRuntime::default());
    offer(&mut first, &document(1, 2, RestartPolicy::Always), GOOD).unwrap();
    first.reconcile(0).unwrap();
    let runtime = std::mem::take(first.runtime());
    drop(first);
    // The stored document no longer verifies (an agent upgraded offline to
    // a newer protocol): nothing is stopped while no document is loaded.
    std::fs::remove_file(Paths { data_dir: f.dir.path().to_owned() }.state_file()).unwrap();
    let mut second = f.agent(runtime);
    assert_eq!(second.generation(), 0);
    second.reconcile(10).unwrap();
    assert_eq!(second.runtime().containers.len(), 2);
    assert!(second.runtime().calls.iter().all(|c| !c.starts_with("kill")), "{:?}", second.runtime().calls);
}
