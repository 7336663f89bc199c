//! The whole system over MQTT: `flotilla server` (embedded broker and
//! registry) and real `flotilla-agent`s with real containers, each enrolled
//! with a join token.
//!
//! - apply -> replicas Running in real containers on the agents;
//! - kill -9 one agent -> its replicas run on the other;
//! - the agent comes back -> the moved replicas are stopped there, nothing
//!   else restarts;
//! - controller restart -> nothing restarts on the nodes;
//! - a malformed payload and a forged message on a status topic are logged
//!   and ignored.
//!
//! Needs root (CI runs as root). Replica names are unique per test: they are
//! container ids and cgroup names on this one machine.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_e2e::ControllerProcess;
use flotilla_e2e::fleet::{
    AgentProcess, all_running_on, apply, pods, push_busybox, shell_deployment, wait_for_ready_nodes, wait_until,
};
use flotilla_e2e::mosquitto::{MosquittoBeside, mosquitto_config};
use serde_json::Value;

#[test]
fn replicas_run_move_on_node_loss_and_survive_a_controller_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("controller");
    let port = flotilla_e2e::free_port().unwrap();
    let mqtt_port = flotilla_e2e::free_port().unwrap();
    let controller = ControllerProcess::start_on(&data, port, mqtt_port, &[]).unwrap();
    let image = push_busybox(&controller, dir.path());
    let mut a = AgentProcess::start(&controller, "fleet-a", &dir.path().join("a"));
    let b = AgentProcess::start(&controller, "fleet-b", &dir.path().join("b"));
    wait_for_ready_nodes(&controller, 2, Duration::from_secs(20));

    // Apply: four replicas, real containers on the two agents.
    apply(&controller, &shell_deployment("fleetmove", &image, 4, "sleep 3600"));
    let placed = wait_until("4 replicas Running", Duration::from_secs(60), || {
        all_running_on(&controller, 4, &["fleet-a", "fleet-b"])
    });
    let on_a: Vec<String> = placed.iter().filter(|p| p.2 == "fleet-a").map(|p| p.0.clone()).collect();
    assert!(!on_a.is_empty(), "bin-packing put nothing on fleet-a: {placed:?}");
    assert_eq!(a.running().len(), on_a.len(), "containers on fleet-a: {:?}", a.running());
    let b_before = b.running();

    // kill -9 fleet-a: its replicas come up on fleet-b.
    a.kill9();
    let started = Instant::now();
    wait_until("the replicas running on fleet-b", Duration::from_secs(30), || {
        all_running_on(&controller, 4, &["fleet-b"])
    });
    eprintln!("failover took {:?}", started.elapsed());
    assert_eq!(b.running().len(), 4);
    for (id, pid) in &b_before {
        assert!(b.running().contains(&(id.clone(), *pid)), "{id} on fleet-b restarted");
    }

    // fleet-a comes back: the moved replicas are stopped there (fencing by
    // generation), fleet-b's are untouched.
    let b_before = b.running();
    let a = AgentProcess::start(&controller, "fleet-a", &dir.path().join("a"));
    wait_until("fleet-a stops its moved replicas", Duration::from_secs(30), || a.running().is_empty().then_some(()));
    assert_eq!(b.running(), b_before, "nothing on fleet-b restarts");

    // Controller restart: nothing restarts on the nodes.
    controller.stop().unwrap();
    let controller = ControllerProcess::start_on(&data, port, mqtt_port, &[]).unwrap();
    wait_for_ready_nodes(&controller, 2, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.running(), b_before, "a controller restart restarted containers");
    assert!(all_running_on(&controller, 4, &["fleet-b"]).is_some(), "{:?}", pods(&controller));
    assert!(!b.log().contains("panicked"), "{}", b.log());

    // Garbage and a forged frame on fleet-b's status topic: logged, ignored.
    let enrolment: Value = serde_json::from_slice(&std::fs::read(b.data.join("enrolment.json")).unwrap()).unwrap();
    let password = enrolment["mqttPassword"].as_str().unwrap();
    let topic = "flotilla/v1/nodes/fleet-b/status";
    // A well-formed status with a MAC from the wrong key and a huge
    // sequence number: what a node holding only a broker login could forge.
    let forged = firmware_proto::encode_node_frame_to_vec(
        &firmware_proto::NodeMessage::Status(firmware_proto::samples::status(1)),
        u64::MAX - 1,
        |_| firmware_proto::Bytes([7; 16]),
    )
    .unwrap();
    let forged_file = dir.path().join("forged.bin");
    std::fs::write(&forged_file, forged).unwrap();
    let publish = |payload: &[&str]| {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &mqtt_port.to_string(), "-i", "fleet-b:probe", "-u", "fleet-b"])
            .args(["-P", password, "-t", topic])
            .args(payload)
            .status()
            .expect("mosquitto_pub is installed by scripts/setup");
        assert!(status.success());
    };
    publish(&["-m", "not a frame"]);
    publish(&["-f", forged_file.to_str().unwrap()]);
    wait_until("both refusals logged", Duration::from_secs(10), || {
        let log = controller.log_text();
        (log.contains("malformed payload") && log.contains("bad MAC")).then_some(())
    });
    // The node's own messages still count: the forged sequence number was not taken.
    std::thread::sleep(Duration::from_secs(6));
    let log = controller.log_text();
    let after_forgery = &log[log.find("bad MAC").unwrap()..];
    assert!(!after_forgery.contains("replayed"), "the forged frame moved the sequence: {after_forgery}");
    assert!(all_running_on(&controller, 4, &["fleet-b"]).is_some());
    drop(b);
    drop(a);
}

#[test]
fn with_mosquitto_and_its_acl_a_node_cannot_publish_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let MosquittoBeside { data, dir: broker_dir, port: mqtt_port, url, broker: mosquitto } =
        MosquittoBeside::start(dir.path());
    let controller = ControllerProcess::start_with(&data, &["--mqtt-url", &url]).unwrap();
    let image = push_busybox(&controller, dir.path());
    let a = AgentProcess::start(&controller, "mosq-a", &dir.path().join("a"));
    let b = AgentProcess::start(&controller, "mosq-b", &dir.path().join("b"));
    wait_until("both agents enrolled", Duration::from_secs(20), || {
        (a.data.join("enrolment.json").exists() && b.data.join("enrolment.json").exists()).then_some(())
    });
    // New nodes: write the files again and reload Mosquitto; the agents'
    // reconnect loop then gets in.
    mosquitto_config(&data, &broker_dir, mqtt_port);
    mosquitto.reload();
    wait_for_ready_nodes(&controller, 2, Duration::from_secs(60));
    let ticker = "echo hello from $(hostname); i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done";
    apply(&controller, &shell_deployment("mosqrun", &image, 2, ticker));
    let placed = wait_until("2 replicas Running", Duration::from_secs(60), || {
        all_running_on(&controller, 2, &["mosq-a", "mosq-b"])
    });
    logs_come_from_the_device(&controller, &placed[0].0);

    // mosq-a's login on mosq-b's status topic: Mosquitto's ACL denies it
    // (and still PUBACKs under MQTT 3.1.1, so mosquitto_pub succeeds).
    let enrolment: Value = serde_json::from_slice(&std::fs::read(a.data.join("enrolment.json")).unwrap()).unwrap();
    let refused = || controller.counter("flotilla_node_messages_refused").unwrap();
    let refused_before = refused();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &mqtt_port.to_string(), "-i", "mosq-a:probe", "-u", "mosq-a", "-q", "1"])
        .args(["-P", enrolment["mqttPassword"].as_str().unwrap()])
        .args(["-t", "flotilla/v1/nodes/mosq-b/status", "-m", "impersonation"])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("Mosquitto's denial logged", Duration::from_secs(10), || {
        mosquitto.log().contains("Denied PUBLISH from mosq-a:probe").then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(refused(), refused_before, "the denied message reached the controller");

    // 500 malformed frames on mosq-a's own topic (its ACL allows it): all
    // refused and counted, under its name, and logged in one line.
    let lines_before = controller.log_text().matches("node message refused").count();
    let mut flood = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &mqtt_port.to_string(), "-i", "mosq-a:flood", "-u", "mosq-a", "-q", "1"])
        .args(["-P", enrolment["mqttPassword"].as_str().unwrap()])
        .args(["-t", "flotilla/v1/nodes/mosq-a/status", "-l"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = flood.stdin.take().unwrap();
        for i in 0..500 {
            writeln!(stdin, "not a frame {i}").unwrap();
        }
    }
    assert!(flood.wait().unwrap().success());
    wait_until("500 refusals counted", Duration::from_secs(20), || (refused() >= refused_before + 500.0).then_some(()));
    let metrics_line = r#"flotilla_node_messages_refused_total{node="mosq-a",reason="malformed"} 500"#;
    let text = controller.metrics().unwrap();
    assert!(text.contains(metrics_line), "{text}");
    let lines = controller.log_text().matches("node message refused").count() - lines_before;
    assert_eq!(lines, 1, "a flood is one line per node and reason per minute");
    assert!(all_running_on(&controller, 2, &["mosq-a", "mosq-b"]).is_some());
}

/// `flotilla logs`: the output the container wrote on its device, asked for
/// over MQTT (through Mosquitto's ACL here): all of it, the last line, and
/// followed as it grows.
fn logs_come_from_the_device(controller: &ControllerProcess, pod: &str) {
    let logs = |args: &[&str]| {
        let output = controller.cli().unwrap().arg("logs").arg(pod).args(args).output().unwrap();
        assert!(output.status.success(), "flotilla logs {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let all = wait_until("two ticks of output", Duration::from_secs(20), || {
        let all = logs(&[]);
        all.contains("tick-2").then_some(all)
    });
    assert!(all.starts_with(&format!("hello from {pod}\ntick-1\n")), "{all:?}");
    let last = logs(&["--tail", "1"]);
    assert_eq!(last.lines().count(), 1, "{last:?}");
    assert!(last.starts_with("tick-"), "{last:?}");

    // Following: new ticks arrive without asking again.
    let mut follow =
        controller.cli().unwrap().args(["logs", pod, "--tail", "1", "-f"]).stdout(Stdio::piped()).spawn().unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let tick = |line: &str| line.strip_prefix("tick-").and_then(|n| n.parse::<u32>().ok());
    let first = tick(&lines.recv_timeout(Duration::from_secs(15)).unwrap()).expect("a tick line");
    let mut seen = vec![first];
    while seen.len() < 4 {
        let line = lines.recv_timeout(Duration::from_secs(15)).expect("followed output keeps coming");
        seen.push(tick(&line).unwrap_or_else(|| panic!("unexpected line {line:?}")));
    }
    follow.kill().unwrap();
    follow.wait().unwrap();
    let expected: Vec<u32> = (first..first + 4).collect();
    assert_eq!(seen, expected, "every tick once, in order");

    // A pod that does not exist: a clear error.
    let output = controller.cli().unwrap().args(["logs", "no-such-pod"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"no-such-pod\" not found"), "{stderr}");
}
