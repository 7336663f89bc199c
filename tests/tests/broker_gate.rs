//! What one device's broker login can reach (issue 18), with real
//! processes: the controller's embedded broker behind its gate, Mosquitto
//! with the ACL `flotilla mosquitto-config` writes, real agents.
//!
//! - a node login subscribing to another node's topics, and to `#`, gets
//!   no other node's document (embedded broker and Mosquitto);
//! - a flood of bad frames from one login is cut off, with the
//!   controller's memory and log flat and the other devices' leases kept;
//! - a revoked node is disconnected and refused, and its replicas move.
//!
//! Needs root (CI runs as root), Mosquitto and its clients (scripts/setup).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_e2e::ControllerProcess;
use flotilla_e2e::fleet::{AgentProcess, all_running_on, apply, pods, push_busybox, shell_deployment, wait_until};
use flotilla_e2e::mosquitto::{MosquittoBeside, mosquitto_config};
use serde_json::Value;

/// The MQTT password an agent was given at enrolment.
fn mqtt_password(agent: &AgentProcess) -> String {
    let enrolment: Value = serde_json::from_slice(&std::fs::read(agent.data.join("enrolment.json")).unwrap()).unwrap();
    enrolment["mqttPassword"].as_str().unwrap().to_owned()
}

/// The topics `node`'s login receives in `seconds` when it subscribes to
/// `filters` (one SUBSCRIBE), as `mosquitto_sub` prints them.
fn topics_received(port: u16, node: &str, password: &str, filters: &[&str], seconds: u32) -> Vec<String> {
    let mut command = Command::new("mosquitto_sub");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", &format!("{node}:probe"), "-u", node, "-P", password])
        .args(["-q", "1", "-F", "%t", "-W", &seconds.to_string()]);
    for filter in filters {
        command.args(["-t", filter]);
    }
    let output = command.output().unwrap();
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

/// Two agents with a replica each, so both have documents on the broker.
fn two_nodes_with_work(controller: &ControllerProcess, dir: &Path, prefix: &str) -> (AgentProcess, AgentProcess) {
    let image = push_busybox(controller, dir);
    let (a_name, b_name) = (format!("{prefix}-a"), format!("{prefix}-b"));
    let a = AgentProcess::start(controller, &a_name, &dir.join("a"));
    let b = AgentProcess::start(controller, &b_name, &dir.join("b"));
    one_replica_on_each(controller, &image, prefix, &[&a_name, &b_name]);
    (a, b)
}

fn one_replica_on_each(controller: &ControllerProcess, image: &str, prefix: &str, nodes: &[&str]) {
    flotilla_e2e::fleet::wait_for_ready_nodes(controller, 2, Duration::from_secs(60));
    // Spread one per device (kubernetes.io/hostname); a lost device's
    // replica may still go to the other, the only domain left.
    let spread = "      topologySpreadConstraints:\n      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule}\n";
    let manifest = shell_deployment(&format!("{prefix}run"), image, 2, "sleep 3600")
        .replace("      containers:\n", &format!("{spread}      containers:\n"));
    assert!(manifest.contains("topologySpreadConstraints"), "{manifest}");
    apply(controller, &manifest);
    wait_until("a replica Running on each node", Duration::from_secs(60), || {
        let pods = all_running_on(controller, 2, nodes)?;
        (pods[0].2 != pods[1].2).then_some(())
    });
}

/// `node`'s login asks for its own pod document (a Linux agent's desired
/// state), another node's, every node's, and `#`: it gets its own topics
/// only.
fn check_isolation(port: u16, node: &str, other: &str, password: &str) {
    let own = format!("flotilla/v1/nodes/{node}/pods");
    let theirs = format!("flotilla/v1/nodes/{other}/pods");
    let every = ["flotilla/v1/nodes/+/pods", "flotilla/v1/nodes/+/desired", "flotilla/v1/#", "#"];
    let received = topics_received(port, node, password, &[&[own.as_str(), &theirs], &every[..]].concat(), 3);
    assert!(received.contains(&own), "its own document is delivered: {received:?}");
    let foreign: Vec<&String> =
        received.iter().filter(|t| !t.starts_with(&format!("flotilla/v1/nodes/{node}/"))).collect();
    assert!(foreign.is_empty(), "{node}'s login received {foreign:?}");
    // Asked for alone, the other node's topic gives nothing at all.
    let received = topics_received(port, node, password, &[&theirs], 2);
    assert!(received.is_empty(), "{received:?}");
}

#[test]
fn on_the_embedded_broker_a_node_login_reads_and_writes_only_its_own_topics() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller")).unwrap();
    let (a, _b) = two_nodes_with_work(&controller, dir.path(), "gate");
    let password = mqtt_password(&a);
    check_isolation(controller.mqtt_port, "gate-a", "gate-b", &password);
    let metrics = controller.metrics().unwrap();
    let refused = |reason: &str| {
        let prefix = format!("flotilla_node_messages_refused_total{{node=\"gate-a\",reason=\"{reason}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&prefix)?.parse::<f64>().ok()).unwrap_or(0.0)
    };
    assert!(refused("subscribe") >= 6.0, "every refused filter counted: {metrics}");

    // A publish on the other node's status topic is dropped at the door:
    // the controller never sees it (no MAC refusal), the gate counts it.
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &controller.mqtt_port.to_string(), "-i", "gate-a:probe", "-u", "gate-a"])
        .args(["-P", &password, "-q", "1", "-t", "flotilla/v1/nodes/gate-b/status", "-m", "impersonation"])
        .status()
        .unwrap();
    assert!(status.success(), "acknowledged, as Mosquitto does");
    wait_until("the publish refused at the gate", Duration::from_secs(10), || {
        let text = controller.metrics().unwrap();
        text.contains(r#"flotilla_node_messages_refused_total{node="gate-a",reason="topic"} 1"#).then_some(())
    });
    assert!(!controller.metrics().unwrap().contains(r#"node="gate-b",reason="mac""#));
    assert!(controller.log_text().contains("a subscription outside the node's own topics"));
}

#[test]
fn on_mosquitto_a_node_login_reads_only_its_own_topics() {
    let dir = tempfile::tempdir().unwrap();
    let MosquittoBeside { data, dir: broker_dir, port, url, broker: mosquitto } = MosquittoBeside::start(dir.path());
    let controller = ControllerProcess::start_with(&data, &["--mqtt-url", &url]).unwrap();
    let image = push_busybox(&controller, dir.path());
    let a = AgentProcess::start(&controller, "mosqiso-a", &dir.path().join("a"));
    let b = AgentProcess::start(&controller, "mosqiso-b", &dir.path().join("b"));
    wait_until("both agents enrolled", Duration::from_secs(20), || {
        (a.data.join("enrolment.json").exists() && b.data.join("enrolment.json").exists()).then_some(())
    });
    mosquitto_config(&data, &broker_dir, port);
    mosquitto.reload();
    one_replica_on_each(&controller, &image, "mosqiso", &["mosqiso-a", "mosqiso-b"]);
    check_isolation(port, "mosqiso-a", "mosqiso-b", &mqtt_password(&a));
}

/// `flotilla server --mosquitto-dir`: the controller keeps Mosquitto's
/// password file in step and signals it, so a device enrols, rotates its
/// MAC key (the password stays: one per user in Mosquitto's file) and is
/// revoked with no operator step on the broker.
#[test]
fn on_mosquitto_enrolment_rotation_and_revocation_need_no_operator_step() {
    let dir = tempfile::tempdir().unwrap();
    // The files are written once, before any device exists.
    let MosquittoBeside { data, dir: broker_dir, port, url, broker: mosquitto } = MosquittoBeside::start(dir.path());
    let broker = broker_dir.to_str().unwrap();
    let args = ["--mqtt-url", &url, "--mosquitto-dir", broker, "--node-credential-lifetime", "20s"];
    let controller = ControllerProcess::start_with(&data, &args).unwrap();
    let a = AgentProcess::start(&controller, "mosqsync-a", &dir.path().join("a"));
    flotilla_e2e::fleet::wait_for_ready_nodes(&controller, 1, Duration::from_secs(60));
    let first = mqtt_password(&a);

    // A rotation through Mosquitto: a new MAC key, the same password.
    let rotated: Value = wait_until("a rotation", Duration::from_secs(60), || {
        let file: Value = serde_json::from_slice(&std::fs::read(a.data.join("enrolment.json")).ok()?).ok()?;
        (file["generation"].as_u64()? >= 1 && file["next"].is_null()).then_some(file)
    });
    assert_eq!(rotated["mqttPassword"].as_str(), Some(first.as_str()));
    flotilla_e2e::fleet::wait_for_ready_nodes(&controller, 1, Duration::from_secs(30));

    // Revoked: Mosquitto refuses the login from then on, without anyone running a command there.
    let output = controller.cli().unwrap().args(["node", "revoke", "mosqsync-a"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    wait_until("Mosquitto refusing the revoked login", Duration::from_secs(20), || {
        let (_, code) = raw::connect(port, "mosqsync-a:probe", "mosqsync-a", &first).ok()?;
        (code != 0).then_some(())
    });
    wait_until("the agent told it is refused", Duration::from_secs(30), || {
        a.log().contains("the broker refused this node's login").then_some(())
    });
    assert!(controller.log_text().contains("Mosquitto's password and ACL files updated"));
    drop(mosquitto);
}

/// A bare MQTT 3.1.1 client: enough to flood.
mod raw {
    use super::*;

    fn remaining_length(mut len: usize, out: &mut Vec<u8>) {
        loop {
            let mut byte = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if len == 0 {
                return;
            }
        }
    }

    fn string(text: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(&(text.len() as u16).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }

    /// Connects; the CONNACK's return code (0: accepted).
    pub fn connect(port: u16, client_id: &str, user: &str, password: &str) -> std::io::Result<(TcpStream, u8)> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut body = Vec::new();
        string("MQTT", &mut body);
        body.extend_from_slice(&[4, 0xC2, 0, 60]);
        for field in [client_id, user, password] {
            string(field, &mut body);
        }
        let mut packet = vec![0x10];
        remaining_length(body.len(), &mut packet);
        packet.extend_from_slice(&body);
        stream.write_all(&packet)?;
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack)?;
        Ok((stream, connack[3]))
    }

    /// A QoS 0 PUBLISH.
    pub fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        string(topic, &mut body);
        body.extend_from_slice(payload);
        let mut packet = vec![0x30];
        remaining_length(body.len(), &mut packet);
        packet.extend_from_slice(&body);
        packet
    }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// The Ready condition of a node: (status, reason, lastTransitionTime).
fn ready_condition(controller: &ControllerProcess, node: &str) -> (String, String, String) {
    let output = controller.cli().unwrap().args(["get", "nodes", node, "-o", "json"]).output().unwrap();
    let node: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let ready = node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or(Value::Null);
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    (text(&ready["status"]), text(&ready["reason"]), text(&ready["lastTransitionTime"]))
}

#[test]
fn a_flood_of_bad_frames_from_one_login_is_cut_off_with_memory_and_log_flat() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller")).unwrap();
    let (mut a, b) = two_nodes_with_work(&controller, dir.path(), "flood");
    // A stolen device: its agent is gone, its login floods.
    a.kill9();
    let password = mqtt_password(&a);
    let b_ready = ready_condition(&controller, "flood-b");
    assert_eq!(b_ready.0, "True");
    std::thread::sleep(Duration::from_secs(2));
    let pid = controller.pid();
    let idle = rss_bytes(pid);
    let log_before = std::fs::metadata(&controller.log).unwrap().len();

    let topic = "flotilla/v1/nodes/flood-a/status";
    let start = Instant::now();
    let (mut sent, mut refused_connects, mut cut_offs, mut peak) = (0u64, 0u64, 0u64, idle);
    let mut last_sample = start;
    while start.elapsed() < Duration::from_secs(60) {
        match raw::connect(controller.mqtt_port, "flood-a:flood", "flood-a", &password) {
            Ok((mut stream, 0)) => {
                // 10,000 a second, in batches of 100 every 10 ms, until the
                // gate closes the connection.
                'flood: while start.elapsed() < Duration::from_secs(60) {
                    let batch: Vec<u8> = (0..100)
                        .flat_map(|i| raw::publish(topic, format!("not a frame {}", sent + i).as_bytes()))
                        .collect();
                    if stream.write_all(&batch).is_err() {
                        cut_offs += 1;
                        break 'flood;
                    }
                    sent += 100;
                    std::thread::sleep(Duration::from_millis(10));
                    if last_sample.elapsed() >= Duration::from_secs(1) {
                        peak = peak.max(rss_bytes(pid));
                        last_sample = Instant::now();
                    }
                }
            }
            Ok((_, _refused)) => {
                refused_connects += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
        if last_sample.elapsed() >= Duration::from_secs(1) {
            peak = peak.max(rss_bytes(pid));
            last_sample = Instant::now();
        }
    }
    peak = peak.max(rss_bytes(pid));
    let log_growth = std::fs::metadata(&controller.log).unwrap().len() - log_before;
    eprintln!(
        "flood: {sent} frames sent, {cut_offs} connections cut, {refused_connects} connects refused; \
         RSS idle {} MB, peak {} MB; log +{log_growth} bytes",
        idle >> 20,
        peak >> 20
    );
    assert!(cut_offs >= 1, "the flooding connection was closed");
    assert!(refused_connects >= 10, "the login stays refused after the cut: {refused_connects}");
    assert!(peak < idle + (50 << 20), "RSS idle {idle}, peak {peak}");
    assert!(log_growth < 1 << 20, "log grew by {log_growth} bytes");
    let metrics = controller.metrics().unwrap();
    assert!(metrics.contains(r#"flotilla_node_messages_refused_total{node="flood-a",reason="rate"}"#), "{metrics}");
    assert!(metrics.contains(r#"flotilla_node_messages_refused_total{node="flood-a",reason="cut-off"}"#));
    // The other device kept its lease throughout, and its replicas run.
    assert_eq!(ready_condition(&controller, "flood-b"), b_ready, "flood-b's Ready never changed");
    assert!(!b.log().contains("connection error"), "flood-b stayed connected");
}

#[test]
fn a_revoked_node_is_disconnected_and_refused_and_its_replicas_move() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller")).unwrap();
    let (a, _b) = two_nodes_with_work(&controller, dir.path(), "revoke");
    let password = mqtt_password(&a);
    let output = controller.cli().unwrap().args(["node", "revoke", "revoke-a"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Lost at once, not after a lease: its replica leaves it (and waits,
    // Pending, for a second device: the spread keeps one per device).
    let ready = wait_until("revoke-a Revoked", Duration::from_secs(10), || {
        let ready = ready_condition(&controller, "revoke-a");
        (ready.1 == "Revoked").then_some(ready)
    });
    assert_eq!(ready.0, "False");
    wait_until("no replica on revoke-a", Duration::from_secs(30), || {
        let pods = pods(&controller);
        (pods.len() == 2 && pods.iter().all(|(_, _, node)| node != "revoke-a")).then_some(())
    });
    assert!(pods(&controller).iter().any(|(_, phase, node)| phase == "Running" && node == "revoke-b"));
    // Its login is refused at the next connect: CONNACK 4, bad user name or password.
    let (_, code) = raw::connect(controller.mqtt_port, "revoke-a:probe", "revoke-a", &password).unwrap();
    assert_eq!(code, 4);
    wait_until("the agent told it is refused", Duration::from_secs(20), || {
        a.log().contains("the broker refused this node's login").then_some(())
    });
}
