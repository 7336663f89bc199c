//! TLS as `flotilla server` serves it by default: a device enrols over
//! HTTPS pinning the fleet CA by its hash, then runs a workload over
//! `mqtts://` and pulls its image over HTTPS; a wrong pin, or a CA that is
//! not the one pinned, is refused with a clear error. Real processes.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use flotilla_e2e::fleet::{AgentProcess, apply, join_token, push_busybox, shell_deployment, wait_until};
use flotilla_e2e::{ControllerProcess, binary};
use serde_json::Value;

#[test]
fn a_device_enrols_runs_and_pulls_over_tls_with_the_pinned_ca() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start_tls(&dir.path().join("controller"), &[]).unwrap();
    assert!(controller.url.starts_with("https://"));

    // The operator CLI speaks HTTPS, trusting the CA in the data directory.
    let image = push_busybox(&controller, dir.path());

    // A wrong pin: refused before anything is sent, and the token is not spent.
    let token = join_token(&controller);
    let wrong = Command::new(binary("flotilla-agent").unwrap())
        .args(["run", "--node-id", "edge-tls", "--data-dir"])
        .arg(dir.path().join("wrong-pin"))
        .args(["--join", &controller.url, "--token", &token, "--ca-sha256", &format!("sha256:{}", "00".repeat(32))])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(stderr.contains("does not match --ca-sha256"), "{stderr}");
    // An https:// controller without a pin: told what to give.
    let unpinned = Command::new(binary("flotilla-agent").unwrap())
        .args(["run", "--node-id", "edge-tls", "--data-dir"])
        .arg(dir.path().join("no-pin"))
        .args(["--join", &controller.url, "--token", &token])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&unpinned.stderr);
    assert!(!unpinned.status.success() && stderr.contains("needs --ca-sha256"), "{stderr}");

    // The right pin (AgentProcess passes it): enrolled with the CA and an mqtts:// broker.
    let data = dir.path().join("edge-tls");
    let mut agent = AgentProcess::start(&controller, "edge-tls", &data);
    let enrolment: Value = wait_until("enrolment", Duration::from_secs(20), || {
        serde_json::from_slice(&std::fs::read(data.join("enrolment.json")).ok()?).ok()
    });
    assert!(enrolment["mqttUrl"].as_str().unwrap().starts_with("mqtts://"), "{enrolment}");
    let ca = std::fs::read_to_string(controller.ca_path()).unwrap();
    assert_eq!(enrolment["caPem"].as_str(), Some(ca.as_str()));
    let registry = image.split('/').next().unwrap();
    assert_eq!(enrolment["tlsRegistry"].as_str(), Some(registry));

    // A workload runs: its document came over MQTT over TLS, its image over HTTPS.
    apply(&controller, &shell_deployment("tls-web", &image, 1, "echo up; sleep 3600"));
    wait_until("the replica running on edge-tls", Duration::from_secs(90), || {
        let pods = flotilla_e2e::fleet::pods(&controller);
        (pods.len() == 1 && pods[0].1 == "Running" && pods[0].2 == "edge-tls").then_some(())
    });
    assert!(agent.log().contains("connected to the controller's broker"), "{}", agent.log());

    // Neither port speaks in clear: plain MQTT gets no CONNACK, plain HTTP no answer.
    let mut mqtt = std::net::TcpStream::connect(("127.0.0.1", controller.mqtt_port)).unwrap();
    mqtt.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // CONNECT, MQTT 3.1.1, clean session, keep-alive 60, client id "x".
    mqtt.write_all(&[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'x']).unwrap();
    let mut answer = [0u8; 4];
    let read = mqtt.read(&mut answer).unwrap_or(0);
    assert!(read == 0 || answer[0] != 0x20, "a plain MQTT CONNECT was answered: {:?}", &answer[..read]);
    let api = controller.url.trim_start_matches("https://").to_owned();
    let mut http = std::net::TcpStream::connect(&api).unwrap();
    http.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    http.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = http.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was answered: {}", String::from_utf8_lossy(&answer));

    // A CA that is not the pinned one (a device moved to another
    // controller's broker, or a broker impersonated): the device refuses
    // it, says why, and keeps its workload running.
    agent.kill9();
    let other = ControllerProcess::start_tls(&dir.path().join("other"), &[]).unwrap();
    let mut enrolment = enrolment;
    enrolment["mqttUrl"] = Value::String(format!("mqtts://127.0.0.1:{}", other.mqtt_port));
    std::fs::write(data.join("enrolment.json"), serde_json::to_vec_pretty(&enrolment).unwrap()).unwrap();
    let agent = AgentProcess::start(&controller, "edge-tls", &data);
    wait_until("the agent refusing the other CA", Duration::from_secs(30), || {
        agent.log().contains("not from the fleet CA this device pinned").then_some(())
    });
    assert!(!agent.running().is_empty(), "the workload keeps running");
}

/// A board without a real-time clock boots in 1970: its agent still
/// enrols and connects over TLS (the controller's certificates are valid
/// from the epoch). A clock past the certificates' end is refused, and the
/// agent says to look at the clock. The clock is skewed with libfaketime
/// (package `faketime`, installed by scripts/setup) for the agent only.
#[test]
fn a_device_clock_in_1970_connects_and_one_far_ahead_is_told_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start_tls(&dir.path().join("controller"), &[]).unwrap();
    let pin = controller.ca_sha256().unwrap();
    let skewed = |clock: &str, name: &str| {
        let data = dir.path().join(name);
        std::fs::create_dir_all(&data).unwrap();
        let log = data.with_extension("log");
        // libfaketime preloaded into the agent itself (the `faketime`
        // wrapper would fork, and killing it would leave the agent running).
        let libfaketime = format!("/usr/lib/{}-linux-gnu/faketime/libfaketimeMT.so.1", std::env::consts::ARCH);
        assert!(std::path::Path::new(&libfaketime).exists(), "{libfaketime}: scripts/setup installs faketime");
        let child = Command::new(binary("flotilla-agent").unwrap())
            .env("LD_PRELOAD", &libfaketime)
            .env("FAKETIME", clock)
            // Timers keep the real monotonic clock; only the date is wrong.
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .args(["run", "--node-id", name, "--tick-ms", "100", "--keep-alive", "5s", "--data-dir"])
            .arg(&data)
            .arg("--status-file")
            .arg(data.join("status.json"))
            .args(["--join", &controller.url, "--token", &join_token(&controller), "--ca-sha256", &pin])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (child, log, data)
    };
    let stop = |mut child: std::process::Child, data: &std::path::Path| {
        child.kill().ok();
        child.wait().ok();
        let _ = Command::new(binary("flotilla-agent").unwrap()).args(["stop-all", "--data-dir"]).arg(data).status();
    };

    let (child, log, data) = skewed("@1970-01-02 00:00:00", "edge-1970");
    wait_until("the 1970 device connected over TLS", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.contains("TLS with"), "{text}");
        text.contains("connected to the controller's broker").then_some(())
    });
    assert!(std::fs::read_to_string(&log).unwrap().contains("1970-01-02T"), "the agent's clock was not skewed");
    flotilla_e2e::fleet::wait_for_ready_nodes(&controller, 1, Duration::from_secs(30));
    stop(child, &data);

    // 2099 is past the server certificate's 90 days: refused, with the hint.
    let (child, log, data) = skewed("@2099-01-01 00:00:00", "edge-2099");
    let text = wait_until("the 2099 device refusing the certificate", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("certificate expired").then_some(text)
    });
    assert!(text.contains("is this device's clock far ahead?"), "{text}");
    stop(child, &data);
}
