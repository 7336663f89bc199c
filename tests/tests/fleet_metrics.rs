//! The fleet on `/metrics` (issue 21), with real agents and containers:
//! devices by state and arch, replicas by phase, per-device and per-replica
//! usage as the agents report it; `promtool check metrics` (Debian's
//! `prometheus` package, installed by scripts/setup) passes on it, and a
//! killed agent shows as an unreachable device, with a NodeNotReady event.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use flotilla_e2e::ControllerProcess;
use flotilla_e2e::fleet::{AgentProcess, SLEEPER, apply, pods, push_busybox, shell_deployment, wait_until};

/// The value of the series whose line starts with `series` (name and labels).
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// `promtool check metrics` on `metrics`: its complaints, if any.
fn promtool(metrics: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/setup (package prometheus)");
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() && said.trim().is_empty() { Ok(()) } else { Err(said) }
}

#[test]
fn the_fleet_is_on_metrics_and_promtool_passes_them() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller")).unwrap();
    let image = push_busybox(&controller, dir.path());
    let mut a = AgentProcess::start(&controller, "metrics-a", &dir.path().join("a"));
    let _b = AgentProcess::start(&controller, "metrics-b", &dir.path().join("b"));
    flotilla_e2e::fleet::wait_for_ready_nodes(&controller, 2, Duration::from_secs(60));
    apply(&controller, &shell_deployment("metered", &image, 2, SLEEPER));
    wait_until("two replicas Running", Duration::from_secs(90), || {
        (pods(&controller).iter().filter(|(_, phase, _)| phase == "Running").count() == 2).then_some(())
    });

    // A malformed frame on metrics-b's own topic, with its own login: refused, and counted.
    let enrolment: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("b").join("enrolment.json")).unwrap()).unwrap();
    let published = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &controller.mqtt_port.to_string(), "-i", "metrics-b:probe"])
        .args(["-u", "metrics-b", "-P", enrolment["mqttPassword"].as_str().unwrap()])
        .args(["-t", "flotilla/v1/nodes/metrics-b/status", "-m", "not a frame"])
        .status()
        .unwrap();
    assert!(published.success());

    // Usage comes with the agents' heartbeats (every 5 s here).
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let metrics = wait_until("both replicas' memory on /metrics", Duration::from_secs(30), || {
        let metrics = controller.metrics().ok()?;
        let replicas = metrics.lines().filter(|l| l.starts_with("flotilla_pod_memory_usage_bytes{")).count();
        let refused =
            metrics.contains("flotilla_node_messages_refused_total{node=\"metrics-b\",reason=\"malformed\"} 1");
        (replicas == 2 && refused).then_some(metrics)
    });
    promtool(&metrics).unwrap_or_else(|said| panic!("promtool check metrics: {said}\n{metrics}"));
    assert_eq!(value(&metrics, &format!("flotilla_fleet_nodes{{state=\"ready\",arch=\"{arch}\"}}")), Some(2.0));
    assert_eq!(value(&metrics, "flotilla_fleet_pods{phase=\"Running\"}"), Some(2.0));
    let memory: Vec<&str> = metrics.lines().filter(|l| l.starts_with("flotilla_pod_memory_usage_bytes{")).collect();
    assert!(
        memory.iter().all(|l| l.contains("workload=\"metered\"") && l.contains("namespace=\"default\"")),
        "{memory:?}"
    );
    assert!(metrics.contains("flotilla_node_memory_usage_bytes{node=\"metrics-a\"}"), "{metrics}");
    assert!(metrics.contains("flotilla_node_cpu_allocatable_cores{node=\"metrics-a\"}"), "{metrics}");
    assert_eq!(metrics.lines().filter(|l| l.starts_with("flotilla_pod_restarts_total{")).count(), 2, "{metrics}");
    // The control channel's and the reconciler's counts.
    assert!(
        value(&metrics, "flotilla_mqtt_messages_received_total{kind=\"status\"}").is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    assert!(value(&metrics, "flotilla_mqtt_messages_sent_total{kind=\"pods\"}").is_some_and(|n| n >= 2.0), "{metrics}");
    assert!(value(&metrics, "flotilla_scheduler_placements_total").is_some_and(|n| n >= 2.0), "{metrics}");
    assert!(value(&metrics, "flotilla_reconcile_pass_duration_seconds_count").is_some_and(|n| n >= 1.0), "{metrics}");
    assert_eq!(value(&metrics, "flotilla_pod_oom_kills_total"), Some(0.0), "{metrics}");
    assert_eq!(value(&metrics, "flotilla_image_pull_failures_total"), Some(0.0), "{metrics}");
    assert!(value(&metrics, "flotilla_image_pull_bytes_total").is_some_and(|n| n > 0.0), "{metrics}");
    let rollout = "flotilla_deployment_rollout_state{namespace=\"default\",deployment=\"metered\",state=\"complete\"}";
    assert_eq!(value(&metrics, rollout), Some(1.0), "{metrics}");
    let available =
        "flotilla_workload_replicas_available{namespace=\"default\",kind=\"Deployment\",workload=\"metered\"}";
    assert_eq!(value(&metrics, available), Some(2.0), "{metrics}");

    // The Grafana dashboard shipped in deploy/ asks only for series the server has.
    let dashboard =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    for expr in panels.iter().flat_map(|p| p["targets"].as_array().unwrap()).map(|t| t["expr"].as_str().unwrap()) {
        for name in
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("flotilla_"))
        {
            // A histogram's series are named after it with a suffix.
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            assert!(
                metrics.contains(&format!("# TYPE {name} ")) || metrics.contains(&format!("# TYPE {family} histogram")),
                "the dashboard asks for {name}, not on /metrics"
            );
        }
    }

    // A device lost: one unreachable, one ready.
    a.kill9();
    wait_until("metrics-a unreachable on /metrics", Duration::from_secs(30), || {
        let metrics = controller.metrics().ok()?;
        let unreachable = value(&metrics, &format!("flotilla_fleet_nodes{{state=\"unreachable\",arch=\"{arch}\"}}"));
        (unreachable == Some(1.0)).then_some(())
    });
    promtool(&controller.metrics().unwrap()).unwrap();
    // And an event says so (issue 21, item 3).
    let events = controller.cli().unwrap().args(["get", "events"]).output().unwrap();
    let events = String::from_utf8_lossy(&events.stdout).into_owned();
    assert!(events.lines().any(|l| l.contains("NodeNotReady") && l.contains("metrics-a")), "{events}");
    // OpenMetrics for a scraper that asks for it.
    let openmetrics = controller
        .http()
        .unwrap()
        .get(format!("{}/metrics", controller.url))
        .header("Authorization", format!("Bearer {}", controller.token().unwrap()))
        .header("Accept", "application/openmetrics-text; version=1.0.0")
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    // Gzip for a scraper that takes it (megabytes at fleet scale).
    let mut zipped = controller
        .http()
        .unwrap()
        .get(format!("{}/metrics", controller.url))
        .header("Authorization", format!("Bearer {}", controller.token().unwrap()))
        .header("Accept-Encoding", "gzip")
        .call()
        .unwrap();
    assert_eq!(zipped.headers().get("content-encoding").and_then(|v| v.to_str().ok()), Some("gzip"));
    assert!(zipped.body_mut().read_to_vec().unwrap().starts_with(&[0x1f, 0x8b]));
}
