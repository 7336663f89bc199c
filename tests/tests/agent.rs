//! The real `flotilla-agent run` with real containers: it applies a signed
//! desired document (a directory of frames, as `--desired-file` takes for
//! offline provisioning: the pod document and its config objects), survives
//! `kill -9` without restarting its containers, and brings workloads back
//! from local state with no controller.
//!
//! Needs root (CI runs as root); see node-agent/tests/containers.rs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use firmware_proto::{Bytes, DesiredDocument, Name, RestartPolicy, TextList, samples};
use flotilla_agent::runtime::helper::HelperRuntime;
use flotilla_agent::runtime::{ContainerState, Runtime, Status};
use flotilla_e2e::binary;
use sha2::Digest as _;

const NODE: &str = "e2e-node";
const IMAGE: [u8; 32] = [0x5a; 32];

struct Setup {
    _dir: tempfile::TempDir,
    data: PathBuf,
    key_file: PathBuf,
    desired_file: PathBuf,
    signing: SigningKey,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn setup() -> Setup {
    assert!(nix::unistd::geteuid().is_root(), "agent e2e tests need root (namespaces, cgroups)");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    // A preloaded image (flotilla_agent::image::store): used as is, no pull.
    let rootfs = data.join("images").join(hex(&IMAGE)).join("rootfs");
    for sub in ["bin", "proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("/bin/busybox (apt busybox-static)");
    for applet in ["sh", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let signing = SigningKey::from_bytes(&[42; 32]);
    let key_file = dir.path().join("controller.pub");
    std::fs::write(&key_file, hex(signing.verifying_key().as_bytes())).unwrap();
    let desired_file = dir.path().join("desired");
    std::fs::create_dir_all(&desired_file).unwrap();
    Setup { data, key_file, desired_file, signing, _dir: dir }
}

/// Container ids are host-wide (cgroups are): each test uses its own.
fn document(tag: &str, generation: u64, replicas: usize) -> DesiredDocument {
    let mut document = samples::desired(replicas);
    document.node_id = Name::new(NODE).unwrap();
    document.generation = generation;
    for (i, replica) in document.replicas.iter_mut().enumerate() {
        replica.id = Name::new(&format!("e2e-{tag}-{}-{i}", std::process::id())).unwrap();
        replica.image.digest = Bytes(IMAGE);
        replica.command = TextList::from_strs(["/bin/sh", "-c"]).unwrap();
        replica.args = TextList::from_strs(["cat /etc/sensor/sensor.toml; exec sleep 1000"]).unwrap();
        replica.user = None;
        replica.devices.clear();
        replica.read_only_rootfs = false;
        replica.readiness_probe = None;
        replica.restart_policy = RestartPolicy::Always;
    }
    document
}

/// The pods the replicas stand for (one container each, `main`), their
/// config objects and the document naming them, signed with `key`, as
/// frames in the desired directory.
fn write_desired_signed(setup: &Setup, document: &DesiredDocument, key: &SigningKey) {
    let sign = |bytes: &[u8]| Bytes(key.sign(bytes).to_bytes());
    let mut config = Vec::new();
    for (i, object) in document.config.iter().enumerate() {
        let blob = firmware_proto::pod::ConfigBlob::from(object);
        let frame = firmware_proto::encode_signed_to_vec(&blob, sign).unwrap();
        let digest: [u8; 32] = sha2::Sha256::digest(firmware_proto::pod::signed_body(&frame).unwrap()).into();
        std::fs::write(setup.desired_file.join(format!("config-{i}.frame")), &frame).unwrap();
        config.push(firmware_proto::pod::ConfigRef {
            name: firmware_proto::heap::Text::new(&object.name).unwrap(),
            secret: object.secret,
            digest: Bytes(digest),
            size: frame.len() as u32,
            sealed_key: None,
        });
    }
    let pods: Vec<firmware_proto::pod::PodSpec> = document.replicas.iter().map(Into::into).collect();
    let pods = firmware_proto::pod::PodDocument {
        node_id: document.node_id.clone(),
        generation: document.generation,
        pods: pods.try_into().unwrap(),
        config: config.try_into().unwrap(),
        claims: Default::default(),
    };
    std::fs::write(setup.desired_file.join("pods.frame"), firmware_proto::encode_signed_to_vec(&pods, sign).unwrap())
        .unwrap();
}

fn write_desired(setup: &Setup, document: &DesiredDocument) {
    write_desired_signed(setup, document, &setup.signing);
}

/// The runtime id of a replica's one container.
fn container_ids(document: &DesiredDocument) -> Vec<String> {
    document.replicas.iter().map(|r| format!("{}.main", r.id)).collect()
}

/// Kills the agent when the test ends, even when it fails.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(setup: &Setup, with_desired_file: bool) -> AgentProcess {
    let mut command = Command::new(binary("flotilla-agent").unwrap());
    command
        .args(["run", "--node-id", NODE, "--tick-ms", "100", "--data-dir"])
        .arg(&setup.data)
        .arg("--status-file")
        .arg(setup.data.join("status.json"))
        .arg("--controller-key")
        .arg(&setup.key_file)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if with_desired_file {
        command.arg("--desired-file").arg(&setup.desired_file);
    }
    AgentProcess(command.spawn().unwrap())
}

fn observer(setup: &Setup) -> HelperRuntime {
    let data = &setup.data;
    HelperRuntime::new(&binary("flotilla-agent").unwrap(), &data.join("runtime"), &data.join("bundles"))
}

fn wait_running(runtime: &mut HelperRuntime, ids: &[String]) -> Vec<ContainerState> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = runtime.list().unwrap();
        let running: Vec<ContainerState> = ids
            .iter()
            .filter_map(|id| states.iter().find(|s| &s.id == id && s.status == Status::Running).cloned())
            .collect();
        if running.len() == ids.len() {
            return running;
        }
        assert!(Instant::now() < deadline, "not all running after 30 s: {states:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill9(agent: &mut AgentProcess) {
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
}

fn cleanup(runtime: &mut HelperRuntime, ids: &[String]) {
    for id in ids {
        let _ = runtime.delete(id, true);
    }
}

fn log_of(data: &Path, id: &str) -> String {
    std::fs::read_to_string(data.join("logs").join(format!("{id}.log"))).unwrap_or_default()
}

#[test]
fn kill_9_and_restart_re_adopts_running_containers_and_an_offline_restart_brings_them_back() {
    let setup = setup();
    let document = document("adopt", 1, 2);
    let ids = container_ids(&document);
    write_desired(&setup, &document);
    let mut agent = start_agent(&setup, true);
    let mut runtime = observer(&setup);
    let first = wait_running(&mut runtime, &ids);
    // The ConfigMap file from the document is mounted.
    std::thread::sleep(Duration::from_millis(200));
    assert!(log_of(&setup.data, &ids[0]).contains("threshold = 40"), "{}", log_of(&setup.data, &ids[0]));

    // kill -9 of the agent, then a new agent with no controller and no file:
    // the same processes keep running, nothing restarts.
    kill9(&mut agent);
    let mut agent = start_agent(&setup, false);
    std::thread::sleep(Duration::from_millis(1_500));
    let after = wait_running(&mut runtime, &ids);
    assert_eq!(
        first.iter().map(|s| s.pid).collect::<Vec<_>>(),
        after.iter().map(|s| s.pid).collect::<Vec<_>>(),
        "re-adopted, not restarted"
    );

    // A "reboot": the agent and every container die; the agent comes back
    // with the controller unreachable and restores the workloads from disk.
    kill9(&mut agent);
    for state in &after {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.pid.unwrap()), nix::sys::signal::Signal::SIGKILL)
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while runtime.list().unwrap().iter().any(|s| ids.contains(&s.id) && s.status == Status::Running) {
        assert!(Instant::now() < deadline, "killed containers still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut agent = start_agent(&setup, false);
    let back = wait_running(&mut runtime, &ids);
    assert!(back.iter().zip(&after).all(|(b, a)| b.pid != a.pid), "new processes after the reboot");
    kill9(&mut agent);
    cleanup(&mut runtime, &ids);
}

#[test]
fn forged_documents_are_refused_and_the_running_workloads_stay() {
    let setup = setup();
    let document = document("forged", 1, 1);
    let ids = container_ids(&document);
    write_desired(&setup, &document);
    let mut agent = start_agent(&setup, true);
    let mut runtime = observer(&setup);
    let first = wait_running(&mut runtime, &ids);
    // A document with no replicas, signed by someone else.
    let mut forged = self::document("forged", 2, 0);
    forged.replicas.clear();
    write_desired_signed(&setup, &forged, &SigningKey::from_bytes(&[7; 32]));
    // Garbage too: it must not crash the agent.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(setup.desired_file.join("pods.frame"), b"\x02\x09 not a frame").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.0.try_wait().unwrap().is_none(), "the agent must keep running");
    let still = wait_running(&mut runtime, &ids);
    assert_eq!(still[0].pid, first[0].pid);
    kill9(&mut agent);
    cleanup(&mut runtime, &ids);
}

#[test]
fn a_failing_liveness_probe_restarts_the_container_and_the_status_says_why() {
    let setup = setup();
    let mut document = document("liveness", 1, 1);
    // Healthy for about a second, then the probe's file disappears.
    document.replicas[0].args =
        TextList::from_strs(["touch /tmp/healthy; sleep 1; rm /tmp/healthy; exec sleep 1000"]).unwrap();
    document.replicas[0].liveness_probe = Some(firmware_proto::Probe {
        action: firmware_proto::ProbeAction::Exec { command: TextList::from_strs(["cat", "/tmp/healthy"]).unwrap() },
        initial_delay_s: 0,
        period_s: 1,
        timeout_s: 1,
        success_threshold: 1,
        failure_threshold: 1,
    });
    let ids = container_ids(&document);
    write_desired(&setup, &document);
    let _agent = start_agent(&setup, true);
    let mut runtime = observer(&setup);
    let first = wait_running(&mut runtime, &ids);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let text = std::fs::read_to_string(setup.data.join("status.json")).unwrap_or_default();
        if let Ok(status) = serde_json::from_str::<serde_json::Value>(&text)
            && status["replicas"][0]["restarts"].as_u64() >= Some(1)
        {
            break status;
        }
        assert!(Instant::now() < deadline, "no restart after the liveness probe failed: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["replicas"][0]["last_exit"]["reason"], "LivenessFailed", "{status}");
    let again = wait_running(&mut runtime, &ids);
    assert_ne!(again[0].pid, first[0].pid, "a new process");
    cleanup(&mut runtime, &ids);
}
