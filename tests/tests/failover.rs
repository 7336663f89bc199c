//! Several controllers on one etcd (issue 20): one leads, the other stands
//! by serving the API; kill -9 of the leader in the middle of a rollout
//! hands the fleet to the standby, which finishes the rollout, and nothing
//! else restarts on the device. Real processes: a three-member etcd,
//! Mosquitto as the shared broker, two `flotilla server`s, a real agent
//! with real containers.
//!
//! Needs root (CI runs as root), etcd-server, Mosquitto and skopeo
//! (scripts/setup).

use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_e2e::ControllerProcess;
use flotilla_e2e::etcd::EtcdCluster;
use flotilla_e2e::fleet::{
    AgentProcess, SLEEPER, apply, pods, push_busybox_pinned, running_count as running, shell_deployment, wait_until,
};
use flotilla_e2e::mosquitto::MosquittoBeside;

/// Copies what controllers on one etcd share from `from` into `to`.
fn copy_shared_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in ["token", "secrets.key", "controller.key", "controller.pub"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

fn leads(controller: &ControllerProcess) -> bool {
    controller.log_text().matches("this controller leads").count() > 0
}

#[test]
fn the_standby_takes_over_a_rollout_when_the_leader_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start(3, dir.path()).unwrap();
    let etcd = cluster.url();
    let MosquittoBeside { data: data_a, dir: broker_dir, url: mqtt, broker: _mosquitto, .. } =
        MosquittoBeside::start(dir.path());
    let broker = broker_dir.to_str().unwrap();
    let args = ["--store", &etcd, "--mqtt-url", &mqtt, "--mosquitto-dir", broker, "--leader-lease", "3s"];

    let a = ControllerProcess::start_with(&data_a, &args).unwrap();
    wait_until("a leads", Duration::from_secs(20), || leads(&a).then_some(()));
    // A controller with keys of its own is refused, naming them.
    let stranger = ControllerProcess::start_with(&dir.path().join("stranger"), &args).err().unwrap().to_string();
    assert!(stranger.contains("differ from the other controllers'") && stranger.contains("secrets.key"), "{stranger}");
    let data_b = dir.path().join("controller-b");
    copy_shared_keys(&data_a, &data_b);
    let b = ControllerProcess::start_with(&data_b, &args).unwrap();
    wait_until("b stands by", Duration::from_secs(20), || b.log_text().contains("standing by").then_some(()));
    assert!(!leads(&b), "two leaders: {}", b.log_text());

    // By digest: the replicas need no registry after the leader is gone
    // (the registry is per controller here; see the README's HA section).
    let image = push_busybox_pinned(&a, dir.path());
    let agent = AgentProcess::start(&a, "ha-a", &dir.path().join("agent-a"));
    flotilla_e2e::fleet::wait_for_ready_nodes(&a, 1, Duration::from_secs(60));
    apply(&a, &shell_deployment("steady", &image, 2, SLEEPER));
    apply(&a, &shell_deployment("rolling", &image, 2, SLEEPER));
    wait_until("four replicas running", Duration::from_secs(120), || {
        (running(&a, "steady") == 2 && running(&a, "rolling") == 2).then_some(())
    });
    let steady_containers = |agent: &AgentProcess| -> Vec<(String, i32)> {
        agent.running().into_iter().filter(|(id, _)| id.starts_with("steady-")).collect()
    };
    let steady_before = steady_containers(&agent);
    assert_eq!(steady_before.len(), 2, "{:?}", agent.running());

    // The standby serves the API: reads, and a write (the new revision),
    // acknowledged before the leader dies. Logs need the leader.
    assert_eq!(running(&b, "rolling"), 2, "the standby reads what the leader wrote");
    let pod = pods(&b).into_iter().find(|(name, _, _)| name.starts_with("steady")).unwrap().0;
    let logs = b.cli().unwrap().args(["logs", &pod]).output().unwrap();
    let said = String::from_utf8_lossy(&logs.stderr).into_owned();
    assert!(!logs.status.success() && said.contains("stands by"), "{said}");
    apply(&b, &shell_deployment("rolling", &image, 2, &format!("echo v2; {SLEEPER}")));
    let killed = Instant::now();
    a.kill().unwrap();

    wait_until("b leads", Duration::from_secs(15), || leads(&b).then_some(()));
    let took_over = killed.elapsed();
    let status = b.cli().unwrap().args(["rollout", "status", "deploy/rolling", "--timeout", "120s"]).output().unwrap();
    assert!(
        status.status.success(),
        "the rollout did not complete under the new leader: {}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    let template = b.cli().unwrap().args(["get", "deploy", "rolling", "-o", "json"]).output().unwrap();
    let template = String::from_utf8_lossy(&template.stdout);
    assert!(template.contains("echo v2"), "the acknowledged write is there: {template}");
    wait_until("two rolling replicas", Duration::from_secs(60), || (running(&b, "rolling") == 2).then_some(()));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(steady_containers(&agent), steady_before, "a replica the rollout did not touch restarted");
    let node = b.cli().unwrap().args(["get", "nodes"]).output().unwrap();
    assert!(String::from_utf8_lossy(&node.stdout).contains(" Ready "), "the device stayed Ready");
    eprintln!("leader killed -> standby leading in {took_over:?}");

    // The old leader comes back as a standby; when the leader stops (and
    // gives its lease back) it takes over at once.
    let a = ControllerProcess::start_with(&data_a, &args).unwrap();
    wait_until("a stands by", Duration::from_secs(20), || a.log_text().contains("standing by").then_some(()));
    let stopped = Instant::now();
    b.stop().unwrap();
    wait_until("a leads again", Duration::from_secs(10), || leads(&a).then_some(()));
    assert!(stopped.elapsed() < Duration::from_secs(3), "handover took {:?}", stopped.elapsed());
    apply(&a, &shell_deployment("steady", &image, 3, SLEEPER));
    wait_until("three steady replicas", Duration::from_secs(60), || (running(&a, "steady") == 3).then_some(()));
    let after: Vec<_> = steady_containers(&agent);
    for container in &steady_before {
        assert!(after.contains(container), "{container:?} restarted: {after:?}");
    }
}
