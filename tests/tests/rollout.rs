//! Over-the-air updates end to end: `flotilla server` and two real agents
//! running real containers.
//!
//! - a rollout v1 -> v2 keeps every moment at least one ready replica and
//!   never runs more than replicas + maxSurge (sampled from the pods'
//!   statuses, which the agents report);
//! - a v3 whose readiness probe never passes is rolled back to v2 by
//!   itself, and `flotilla rollout status` / `history` say why;
//! - kill -9 of an agent mid-rollout: the rollout still converges;
//! - a Job with completions 3 finishes with succeeded 3, though the node
//!   of one of its running replicas is lost (it is retried elsewhere).
//!
//! Needs root (CI runs as root).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flotilla_e2e::ControllerProcess;
use flotilla_e2e::fleet::{AgentProcess, apply, is_serving, pod_list, push_busybox, wait_for_ready_nodes, wait_until};
use serde_json::Value;

/// A Deployment of 4 busybox replicas at `version`. Ready once the script
/// wrote /ready (an exec readiness probe); `ready: false` never writes
/// it. The TERM trap makes a stop quick (a shell as PID 1 ignores SIGTERM).
fn web(image: &str, version: u32, ready: bool) -> String {
    let mark = if ready { "echo ok > /ready; " } else { "" };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: roll}}
spec:
  replicas: 4
  minReadySeconds: 1
  progressDeadlineSeconds: 15
  strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  selector: {{matchLabels: {{app: roll}}}}
  template:
    metadata: {{labels: {{app: roll}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: {image}
        args: ["sh", "-c", "trap 'exit 0' TERM; echo version {version}; {mark}while true; do sleep 1; done"]
        env: [{{name: VERSION, value: "{version}"}}]
        readinessProbe:
          exec: {{command: ["/bin/busybox", "test", "-f", "/ready"]}}
          periodSeconds: 1
        resources: {{requests: {{cpu: 50m, memory: 8Mi}}, limits: {{memory: 32Mi}}}}
"#
    )
}

/// What the sampler saw while a rollout ran.
#[derive(Debug, Default, Clone)]
struct Seen {
    samples: usize,
    min_ready: usize,
    max_running: usize,
}

/// Samples the pods every 100 ms until stopped: ready replicas (not being
/// replaced) and replicas whose containers run (retired ones included:
/// they run until their node stops them).
fn sample(controller: &ControllerProcess, stop: &AtomicBool, seen: &Mutex<Seen>) {
    while !stop.load(Ordering::Relaxed) {
        let pods = pod_list(controller);
        let ready = pods.iter().filter(|p| is_serving(p)).count();
        let running = pods.iter().filter(|p| p["status"]["phase"] == "Running").count();
        let mut seen = seen.lock().unwrap();
        if seen.samples == 0 {
            seen.min_ready = ready;
        }
        seen.samples += 1;
        seen.min_ready = seen.min_ready.min(ready);
        seen.max_running = seen.max_running.max(running);
        drop(seen);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rollout(controller: &ControllerProcess, args: &[&str]) -> (bool, String) {
    let output = controller.cli().unwrap().arg("rollout").args(args).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// Template hashes of the live (not retired) pods, sorted.
fn live_hashes(controller: &ControllerProcess) -> Vec<String> {
    let mut hashes: Vec<String> = pod_list(controller)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["metadata"]["labels"]["pod-template-hash"].as_str().unwrap_or("").to_owned())
        .collect();
    hashes.sort();
    hashes
}

fn revision_hash(controller: &ControllerProcess, revision: u64) -> String {
    let output = controller.cli().unwrap().args(["get", "deployment", "roll", "-o", "json"]).output().unwrap();
    let object: Value = serde_json::from_slice(&output.stdout).unwrap();
    let history = object["status"]["history"].as_array().cloned().unwrap_or_default();
    let entry = history.iter().find(|r| r["revision"] == revision).unwrap_or_else(|| panic!("no revision {revision}"));
    entry["hash"].as_str().unwrap().to_owned()
}

#[test]
fn rollouts_keep_replicas_ready_roll_back_a_bad_revision_and_survive_a_lost_agent() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller")).unwrap();
    let image = push_busybox(&controller, dir.path());
    let mut a = AgentProcess::start(&controller, "roll-a", &dir.path().join("a"));
    let _b = AgentProcess::start(&controller, "roll-b", &dir.path().join("b"));
    wait_for_ready_nodes(&controller, 2, Duration::from_secs(20));

    // v1.
    apply(&controller, &web(&image, 1, true));
    let (ok, text) = rollout(&controller, &["status", "deploy/roll", "--timeout", "90s"]);
    if !ok {
        // What the pods and one agent say, to see why.
        let pods = controller.cli().unwrap().args(["get", "pods", "-o", "json"]).output().unwrap();
        let agent_status = std::fs::read_to_string(a.data.join("status.json")).unwrap_or_default();
        panic!("v1 rollout: {text}\n{}\n{agent_status}", String::from_utf8_lossy(&pods.stdout));
    }
    assert!(text.contains("successfully rolled out (revision 1)"), "{text}");

    // v1 -> v2 with the sampler running.
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let (ok, text) = std::thread::scope(|scope| {
        scope.spawn(|| sample(&controller, &stop, &seen));
        apply(&controller, &web(&image, 2, true));
        let result = rollout(&controller, &["status", "deploy/roll", "--timeout", "120s"]);
        stop.store(true, Ordering::Relaxed);
        result
    });
    let seen = seen.lock().unwrap().clone();
    eprintln!("v1 -> v2: {seen:?}");
    assert!(ok, "v2 rollout: {text}");
    assert!(seen.samples > 10, "{seen:?}");
    assert!(seen.min_ready >= 1, "a moment with no ready replica: {seen:?}");
    assert!(seen.max_running <= 5, "more than replicas + maxSurge ran at once: {seen:?}");
    let v2 = revision_hash(&controller, 2);
    wait_until("only v2 replicas left", Duration::from_secs(30), || {
        (live_hashes(&controller) == vec![v2.clone(); 4]).then_some(())
    });

    // v3 never gets ready: rolled back to v2, and the CLI says why.
    apply(&controller, &web(&image, 3, false));
    let (ok, text) = rollout(&controller, &["status", "deploy/roll", "--timeout", "120s"]);
    assert!(!ok, "a never-ready revision must not roll out: {text}");
    assert!(text.contains("rollout of revision 3 failed"), "{text}");
    assert!(text.contains("rolled back to revision 2"), "{text}");
    let events = controller.cli().unwrap().args(["get", "events"]).output().unwrap();
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.lines().any(|l| l.contains("Warning") && l.contains("RolledBack") && l.contains("deployment/roll")),
        "{events}"
    );
    let (_, history) = rollout(&controller, &["history", "deploy/roll"]);
    assert!(history.lines().any(|l| l.starts_with('3') && l.contains("Failed")), "{history}");
    assert!(history.lines().any(|l| l.starts_with('2') && l.contains("(current)")), "{history}");
    wait_until("v3 replicas gone, v2 back", Duration::from_secs(30), || {
        (live_hashes(&controller) == vec![v2.clone(); 4]).then_some(())
    });

    // v4, and roll-a is killed mid-rollout: the rollout still converges on roll-b.
    apply(&controller, &web(&image, 4, true));
    wait_until("the v4 rollout under way", Duration::from_secs(30), || {
        let hashes = live_hashes(&controller);
        (hashes.iter().any(|h| *h != v2)).then_some(())
    });
    a.kill9();
    let (ok, text) = rollout(&controller, &["status", "deploy/roll", "--timeout", "120s"]);
    assert!(ok, "v4 rollout after losing roll-a: {text}");
    let v4 = revision_hash(&controller, 4);
    wait_until("only v4 replicas left", Duration::from_secs(30), || {
        (live_hashes(&controller) == vec![v4.clone(); 4]).then_some(())
    });
    assert!(pod_list(&controller).iter().all(|p| p["spec"]["nodeName"] == "roll-b"));
}

#[test]
fn a_job_runs_to_its_completions_on_the_agents_even_when_one_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller")).unwrap();
    let image = push_busybox(&controller, dir.path());
    let mut agents = [
        AgentProcess::start(&controller, "job-a", &dir.path().join("a")),
        AgentProcess::start(&controller, "job-b", &dir.path().join("b")),
    ];
    wait_for_ready_nodes(&controller, 2, Duration::from_secs(20));
    apply(
        &controller,
        &format!(
            r#"apiVersion: batch/v1
kind: Job
metadata: {{name: calibrate}}
spec:
  completions: 3
  parallelism: 2
  backoffLimit: 2
  template:
    spec:
      restartPolicy: OnFailure
      containers:
      - name: main
        image: {image}
        args: ["sh", "-c", "echo calibrated; sleep 3"]
        resources: {{requests: {{cpu: 50m, memory: 8Mi}}}}
"#
        ),
    );
    // The node of a running replica is lost: the replica is retried elsewhere.
    let node = wait_until("a job replica running", Duration::from_secs(60), || {
        pod_list(&controller)
            .iter()
            .find(|p| p["status"]["phase"] == "Running")
            .and_then(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
    });
    let lost = usize::from(node == "job-b");
    agents[lost].kill9();
    let job = wait_until("the job to complete", Duration::from_secs(90), || {
        let output = controller.cli().unwrap().args(["get", "job", "calibrate", "-o", "json"]).output().unwrap();
        let job: Value = serde_json::from_slice(&output.stdout).ok()?;
        let complete =
            job["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "Complete" && c["status"] == "True");
        complete.then_some(job)
    });
    assert_eq!(job["status"]["succeeded"], 3, "{job}");
    assert_eq!(job["status"]["failed"], 0, "{job}");
    let table = controller.cli().unwrap().args(["get", "jobs"]).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.lines().any(|l| l.starts_with("calibrate") && l.contains("3/3") && l.contains("Complete")),
        "{table}"
    );
}
