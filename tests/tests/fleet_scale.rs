//! The fleet simulator works end to end: `flotilla-bench fleet all` with
//! 200 simulated devices, on the embedded broker and on Mosquitto, prints
//! every scenario's line with the keys the fleet-scale issue names. A smoke
//! test of the harness, not a timing: the figures come from the benchmark
//! at 1,000 and 10,000 devices (docs/scale.md).

use std::process::Command;

use serde_json::Value;

/// Keys every scenario's line must carry, besides `api_p99_ms`.
const KEYS: &[(&str, &[&str])] = &[
    ("converge", &["nodes", "replicas", "converge_s", "controller_rss_bytes", "controller_cpu_s", "broker_rss_bytes"]),
    ("steady", &["controller_cpu_pct", "controller_rss_bytes", "store_writes_per_s"]),
    ("node-loss", &["failover_s_median", "failover_s_max"]),
    ("site-loss", &["rescheduled_s", "unplaceable"]),
    ("controller-restart", &["redelivered_s", "replicas_restarted"]),
    ("reconnect-storm", &["reconnected_s", "nodes_evicted", "replicas_moved"]),
];

fn run_all(broker: &str) -> Vec<Value> {
    let bench = flotilla_e2e::binary("flotilla-bench").unwrap();
    let output = Command::new(bench)
        .args(["fleet", "all", "--nodes", "200", "--broker", broker, "--steady-for", "5s", "--losses", "3"])
        .args(["--timeout", "240s"])
        .output()
        .expect("running flotilla-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "flotilla-bench fleet failed:\n{stderr}");
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), KEYS.len(), "one line per scenario:\n{lines:#?}\n{stderr}");
    for (line, (scenario, keys)) in lines.iter().zip(KEYS) {
        assert_eq!(line["scenario"], *scenario, "{line}");
        assert_eq!(line["runtime"], "simulated", "{line}");
        assert_eq!(line["broker"], broker, "{line}");
        assert!(line.get("api_p99_ms").is_some(), "{line}");
        if line.get("skipped").is_some() {
            continue;
        }
        for key in *keys {
            assert!(line.get(*key).is_some_and(|v| !v.is_null()), "{scenario}: no {key} in {line}");
        }
    }
    lines
}

#[test]
fn the_fleet_simulator_runs_every_scenario_on_the_embedded_broker() {
    let lines = run_all("embedded");
    assert_eq!(lines[0]["nodes"], 200);
    assert_eq!(lines[0]["replicas"], 1000);
    // A controller restart must not restart a single replica.
    assert_eq!(lines[4]["replicas_restarted"], 0, "{}", lines[4]);
    assert!(lines[5].get("skipped").is_some(), "the embedded broker has no separate restart: {}", lines[5]);
}

#[test]
fn the_fleet_simulator_runs_every_scenario_on_mosquitto() {
    let lines = run_all("mosquitto");
    assert!(lines[0]["broker_rss_bytes"].as_u64().is_some_and(|b| b > 0), "{}", lines[0]);
    // A broker restart is not a node loss.
    assert_eq!(lines[5]["nodes_evicted"], 0, "{}", lines[5]);
    assert_eq!(lines[5]["replicas_moved"], 0, "{}", lines[5]);
}

/// `flotilla-bench passes` (the controller's passes in process) runs and
/// moves a lost node's replicas in one pass: a smoke test, not a timing.
#[test]
fn the_pass_benchmark_converges_and_moves_a_lost_nodes_replicas() {
    let bench = flotilla_e2e::binary("flotilla-bench").unwrap();
    let output = Command::new(bench)
        .args(["passes", "--nodes", "60", "--samples", "1", "--losses", "2"])
        .output()
        .expect("running flotilla-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "flotilla-bench passes failed:\n{stderr}");
    let line: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));
    assert_eq!(line["bench"], "passes");
    assert_eq!(line["pods"], 300, "{line}");
    assert_eq!(line["unplaced"], 0, "{line}");
    assert!(line["replicas_moved"].as_u64().unwrap() > 0, "{line}");
    for key in ["idle_pass_ms", "node_loss_pass_ms_first", "node_loss_pass_ms_median", "rss_bytes"] {
        assert!(line[key].is_number(), "no {key} in {line}");
    }
}
