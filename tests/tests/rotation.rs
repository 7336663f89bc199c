//! Credential rotation and expiry (issue 18), with real processes: a
//! device whose credentials reach half their lifetime gets new ones over
//! the control channel and keeps its workload running (no replica
//! restart), even with its clock in 1970; the old broker password stops
//! working; a device offline past the lifetime is refused, and comes back
//! only with a fresh join token.
//!
//! Needs root (CI runs as root), `mosquitto_sub` and libfaketime
//! (scripts/setup).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flotilla_e2e::fleet::{apply, join_token, pod_list, push_busybox, wait_for_ready_nodes, wait_until};
use flotilla_e2e::{ControllerProcess, binary};
use serde_json::Value;

fn json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// `flotilla-agent run` as `name`, joining with `token`, its clock set to
/// `clock` (libfaketime, for the agent only) when given.
fn agent(controller: &ControllerProcess, name: &str, data: &Path, token: &str, clock: Option<&str>) -> Child {
    std::fs::create_dir_all(data).unwrap();
    let mut command = Command::new(binary("flotilla-agent").unwrap());
    if let Some(clock) = clock {
        let libfaketime = format!("/usr/lib/{}-linux-gnu/faketime/libfaketimeMT.so.1", std::env::consts::ARCH);
        assert!(Path::new(&libfaketime).exists(), "{libfaketime}: scripts/setup installs faketime");
        command.env("LD_PRELOAD", libfaketime).env("FAKETIME", clock).env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    command
        .args(["run", "--node-id", name, "--tick-ms", "100", "--keep-alive", "5s", "--heartbeat", "5s"])
        .args(["--credential-check-within", "5s", "--data-dir"])
        .arg(data)
        .arg("--status-file")
        .arg(data.join("status.json"))
        .args(["--join", &controller.url, "--token", token])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(data.with_extension("log")).unwrap());
    if controller.url.starts_with("https://") {
        command.args(["--ca-sha256", &controller.ca_sha256().unwrap()]);
    }
    command.spawn().unwrap()
}

fn stop(mut child: Child, data: &Path) {
    child.kill().ok();
    child.wait().ok();
    let _ = Command::new(binary("flotilla-agent").unwrap()).args(["stop-all", "--data-dir"]).arg(data).status();
}

fn log(data: &Path) -> String {
    std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
}

/// Whether the embedded broker (over TLS, trusting the fleet CA) takes
/// this login.
fn broker_takes(controller: &ControllerProcess, user: &str, password: &str) -> bool {
    let output = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &controller.mqtt_port.to_string(), "-u", user, "-P", password])
        // Not the agent's own client id, which would take its session over.
        .args(["-i", &format!("{user}:probe")])
        .arg("--cafile")
        .arg(controller.ca_path())
        .args(["-t", &format!("flotilla/v1/nodes/{user}/pods"), "-W", "5", "-C", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Taken: the node's retained document arrived. Refused: CONNACK said so.
    match (output.status.success(), stderr.contains("Connection Refused")) {
        (true, _) => true,
        (false, true) => false,
        (false, false) => panic!("mosquitto_sub failed otherwise: {stderr}"),
    }
}

#[test]
fn credentials_rotate_under_a_running_workload_on_a_device_whose_clock_says_1970() {
    let dir = tempfile::tempdir().unwrap();
    // Renewed every 15 s: two rotations within 40 s.
    let controller =
        ControllerProcess::start_tls(&dir.path().join("controller"), &["--node-credential-lifetime", "30s"]).unwrap();
    let image = push_busybox(&controller, dir.path());
    let data = dir.path().join("edge-rot");
    let child = agent(&controller, "edge-rot", &data, &join_token(&controller), Some("@1970-01-02 00:00:00"));
    wait_for_ready_nodes(&controller, 1, Duration::from_secs(60));
    let first: Value = json(&data.join("enrolment.json")).unwrap();
    let first_password = first["mqttPassword"].as_str().unwrap().to_owned();

    // A workload reading a Secret from its env: a rotation must not touch it.
    let manifest = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: line-credentials}}
stringData: {{token: r0tate-me}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: line-3.rotating}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: rotating}}}}
  template:
    metadata: {{labels: {{app: rotating}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {image}
        command: ["/bin/busybox", "sh", "-c", "echo started; sleep 3600"]
        env:
        - name: LINE_TOKEN
          valueFrom: {{secretKeyRef: {{name: line-credentials, key: token}}}}
        resources: {{requests: {{cpu: 50m, memory: 16Mi}}, limits: {{memory: 64Mi}}}}
"#
    );
    apply(&controller, &manifest);
    let pod = wait_until("the replica Running", Duration::from_secs(90), || {
        let pods = pod_list(&controller);
        pods.iter().find(|p| p["status"]["phase"] == "Running").cloned()
    });
    let uid = pod["metadata"]["uid"].clone();

    // Two rotations: the agent's file and the controller's agree on the generation.
    let rotated: Value = wait_until("two rotations", Duration::from_secs(90), || {
        let file = json(&data.join("enrolment.json"))?;
        (file["generation"].as_u64()? >= 2).then_some(file)
    });
    let generation = rotated["generation"].as_u64().unwrap();
    wait_until("the controller confirming the rotation", Duration::from_secs(30), || {
        let enrolled = json(&controller.data_dir.join("enrolment.json"))?;
        let node = &enrolled["nodes"]["edge-rot"];
        (node["generation"].as_u64()? >= generation && node["next"].is_null()).then_some(())
    });
    assert_ne!(rotated["mqttPassword"], first["mqttPassword"]);
    assert_ne!(rotated["macKey"], first["macKey"]);
    assert!(rotated["next"].is_null(), "{rotated}");
    let text = log(&data);
    assert!(text.contains("1970-01-02T"), "the agent's clock was not skewed");
    assert!(text.contains("now using rotated credentials"), "{text}");
    assert!(controller.log_text().contains("node credentials rotated"));

    // The old password is refused at the broker, the new one taken.
    assert!(!broker_takes(&controller, "edge-rot", &first_password), "the first password still logs in");
    assert!(broker_takes(&controller, "edge-rot", rotated["mqttPassword"].as_str().unwrap()));

    // The same replica, never restarted, still Running and Ready on a Ready node.
    wait_for_ready_nodes(&controller, 1, Duration::from_secs(30));
    let pods = pod_list(&controller);
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0]["metadata"]["uid"], uid);
    assert_eq!(pods[0]["status"]["phase"], "Running");
    assert_eq!(pods[0]["status"]["restartCount"], 0, "{}", pods[0]);
    assert_eq!(log(&data).matches("container started").count(), 1, "{}", log(&data));
    stop(child, &data);
}

#[test]
fn a_device_offline_past_its_credentials_lifetime_comes_back_only_with_a_fresh_token() {
    let dir = tempfile::tempdir().unwrap();
    let controller =
        ControllerProcess::start_tls(&dir.path().join("controller"), &["--node-credential-lifetime", "8s"]).unwrap();
    let data = dir.path().join("edge-away");
    let token = join_token(&controller);
    let child = agent(&controller, "edge-away", &data, &token, None);
    wait_for_ready_nodes(&controller, 1, Duration::from_secs(60));
    stop(child, &data);
    // Away for longer than the lifetime (of any rotation made meanwhile too).
    std::thread::sleep(Duration::from_secs(10));

    // Its old command line: refused, and the spent token is not tried again.
    let child = agent(&controller, "edge-away", &data, &token, None);
    wait_until("the expired login refused", Duration::from_secs(30), || {
        log(&data).contains("the broker refused this node's login").then_some(())
    });
    assert!(controller.log_text().contains("credentials expired"), "{}", controller.log_text());
    stop(child, &data);
    assert!(!log(&data).contains("enrolling again"), "{}", log(&data));

    // A fresh token: it enrols again by itself and is Ready.
    let fresh = join_token(&controller);
    let before: Value = json(&data.join("enrolment.json")).unwrap();
    let child = agent(&controller, "edge-away", &data, &fresh, None);
    wait_until("enrolled again", Duration::from_secs(30), || log(&data).contains("enrolled again").then_some(()));
    wait_for_ready_nodes(&controller, 1, Duration::from_secs(30));
    let after: Value = json(&data.join("enrolment.json")).unwrap();
    assert_ne!(after["macKey"], before["macKey"]);
    assert_ne!(after["tokenSha256"], before["tokenSha256"]);
    stop(child, &data);
}
