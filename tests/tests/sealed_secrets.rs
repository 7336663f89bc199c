//! Sealed Secrets (issue 18), with real processes: a Secret's value never
//! crosses the broker in clear nor lands on the device's disk, and the
//! container still reads it, from its env and from a mounted file.
//!
//! Needs root (CI runs as root) and `mosquitto_sub` (scripts/setup).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use flotilla_e2e::ControllerProcess;
use flotilla_e2e::fleet::{AgentProcess, apply, pods, push_busybox, wait_for_ready_nodes, wait_until};
use serde_json::Value;
use sha2::Digest;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every retained message on `node`'s topics, as hex payloads, read with
/// the controller's own broker login.
fn captured_payloads(controller: &ControllerProcess, node: &str) -> Vec<(String, String)> {
    let enrolment: Value =
        serde_json::from_slice(&std::fs::read(controller.data_dir.join("enrolment.json")).unwrap()).unwrap();
    let password = enrolment["controllerPassword"].as_str().unwrap();
    let output = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &controller.mqtt_port.to_string(), "-i", "flotilla-controller-capture"])
        .args(["-u", "flotilla-controller", "-P", password, "-t", &format!("flotilla/v1/nodes/{node}/#")])
        .args(["-F", "%t %x", "-W", "3"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(' ').map(|(t, p)| (t.to_owned(), p.to_owned())))
        .collect()
}

/// Regular files under `dir` on `dir`'s own filesystem (what stays on the
/// disk; tmpfs and overlay mounts under it are skipped) that hold `needle`.
fn files_on_disk_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let device = std::fs::metadata(dir).unwrap().dev();
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.dev() != device {
            continue;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                stack.push(entry.path());
            }
        } else if meta.is_file()
            && let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn a_secret_reaches_its_container_sealed_on_the_wire_and_never_on_the_devices_disk() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller")).unwrap();
    let image = push_busybox(&controller, dir.path());
    let agent = AgentProcess::start(&controller, "seal-a", &dir.path().join("a"));
    wait_for_ready_nodes(&controller, 1, Duration::from_secs(60));

    let value = format!("s3aled-{}", hex(&std::process::id().to_be_bytes()));
    let expected = hex(&sha2::Sha256::digest(value.as_bytes()));
    // The container proves it reads the value by printing its hash only:
    // its log is on the device's disk.
    let script = r#"printf 'env=%s file=%s\n' "$(printf %s "$DB_PASSWORD" | sha256sum | cut -d' ' -f1)" "$(sha256sum < /etc/db/password | cut -d' ' -f1)"; sleep 3600"#;
    let manifest = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: db-credentials}}
stringData: {{password: {value}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: sealed}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: sealed}}}}
  template:
    metadata: {{labels: {{app: sealed}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: {image}
        command: ["/bin/busybox", "sh", "-c", {script:?}]
        env:
        - name: DB_PASSWORD
          valueFrom: {{secretKeyRef: {{name: db-credentials, key: password}}}}
        volumeMounts: [{{name: creds, mountPath: /etc/db}}]
        resources: {{requests: {{cpu: 100m, memory: 16Mi}}, limits: {{memory: 64Mi}}}}
      volumes: [{{name: creds, secret: {{secretName: db-credentials}}}}]
"#
    );
    apply(&controller, &manifest);
    let pod = wait_until("the replica Running", Duration::from_secs(60), || {
        pods(&controller).into_iter().find(|(_, phase, _)| phase == "Running").map(|(name, _, _)| name)
    });
    let line = wait_until("the container's hashes", Duration::from_secs(20), || {
        let output = controller.cli().unwrap().args(["logs", &pod]).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.lines().find(|l| l.starts_with("env=")).map(str::to_owned)
    });
    assert_eq!(line, format!("env={expected} file={expected}"), "the container reads the value from env and file");

    // On the wire: the node's documents, its Secret object among them.
    let captured = captured_payloads(&controller, "seal-a");
    let topics: Vec<&str> = captured.iter().map(|(t, _)| t.as_str()).collect();
    assert!(topics.contains(&"flotilla/v1/nodes/seal-a/pods"), "{topics:?}");
    assert!(topics.iter().any(|t| t.starts_with("flotilla/v1/nodes/seal-a/config/")), "{topics:?}");
    let needle = hex(value.as_bytes());
    for (topic, payload) in &captured {
        assert!(!payload.contains(&needle), "{topic} carries the Secret's value in clear");
        assert!(!payload.contains(&hex(b"s3aled-")), "{topic} carries part of it");
    }

    // On the device's disk: nothing (its files live on a tmpfs, its
    // container's bundle too).
    let on_disk = files_on_disk_holding(&agent.data, value.as_bytes());
    assert!(on_disk.is_empty(), "clear copies on the device's disk: {on_disk:?}");
    // The search does read the disk: the node's name is in its files.
    assert!(!files_on_disk_holding(&agent.data, b"seal-a").is_empty());
}
