//! Pods of several containers on real agents, from the realistic manifests
//! in `tests/manifests/` (their `busybox:1.36` swapped for the image pushed
//! into the controller's registry):
//!
//! - `shop-frontend-sidecar.yaml`: the init container runs first and
//!   completes, the sidecar starts before the app and stays up, both share
//!   the app's emptyDir (the sidecar ships the lines the app writes), the
//!   app reads its own name, node and limit from env and a ConfigMap file
//!   by subPath; `get pods` says READY 2/2 and `logs -c` reads each
//!   container;
//! - `orders-wait-for-database.yaml`: an init container that fails holds the
//!   pod (`Init:...`, the app never starts) and its output says why;
//! - `checkout-grpc.yaml`: `grpc` readiness and liveness probes against the
//!   `hello-grpc` example (tonic's health service): v1 rolls out, and a v2
//!   that never reports SERVING fails its rollout and is rolled back;
//! - `line-3-history-claim.yaml`: a PersistentVolumeClaim keeps the
//!   recorder's data on its device across a rollout and an agent restart,
//!   the replica waits for its device while it is lost, and deleting the
//!   claim deletes the data.
//!
//! Needs root (containers, network namespaces).

use std::path::Path;
use std::time::Duration;

use flotilla_e2e::ControllerProcess;
use flotilla_e2e::fleet::{
    AgentProcess, apply, pod_list, push_busybox, push_examples, wait_for_ready_nodes, wait_until,
};
use serde_json::Value;

fn manifest(name: &str, image: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests").join(name);
    // The test image is a static busybox alone: its applets by name.
    std::fs::read_to_string(&path)
        .unwrap()
        .replace("busybox:1.36", image)
        .replace(r#"["sh", "-c""#, r#"["/bin/busybox", "sh", "-c""#)
        .replace(r#"["test", "#, r#"["/bin/busybox", "test", "#)
        .replace("- \"sh\"\n            - \"-c\"", "- \"/bin/busybox\"\n            - \"sh\"\n            - \"-c\"")
}

fn pod_named(controller: &ControllerProcess, prefix: &str) -> Option<Value> {
    pod_list(controller).into_iter().find(|p| p["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
}

fn logs(controller: &ControllerProcess, pod: &str, container: Option<&str>) -> String {
    let mut command = controller.cli().unwrap();
    command.args(["logs", pod]);
    if let Some(container) = container {
        command.args(["-c", container]);
    }
    let output = command.output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// [`wait_until`], and on a timeout what the pods, the agent and the
/// controller say.
fn wait_or_explain<T>(
    what: &str,
    timeout: Duration,
    controller: &ControllerProcess,
    agent: &AgentProcess,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if std::time::Instant::now() > deadline {
            let tail = |text: String| {
                text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
            };
            panic!(
                "timed out after {timeout:?} waiting for {what}\npods: {:#?}\nagent log:\n{}\ncontroller log:\n{}",
                pod_list(controller),
                tail(agent.log()),
                tail(controller.log_text())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get_pods(controller: &ControllerProcess) -> String {
    String::from_utf8(controller.cli().unwrap().args(["get", "pods"]).output().unwrap().stdout).unwrap()
}

#[test]
fn a_pod_with_an_init_container_and_a_sidecar_shares_its_volumes_and_reads_its_own_identity() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller")).unwrap();
    let image = push_busybox(&controller, dir.path());
    let agent = AgentProcess::start(&controller, "pods-a", &dir.path().join("a"));
    wait_for_ready_nodes(&controller, 1, Duration::from_secs(20));

    apply(&controller, &manifest("shop-frontend-sidecar.yaml", &image));
    let pod = wait_or_explain("shop-frontend Running and ready", Duration::from_secs(90), &controller, &agent, || {
        let pod = pod_named(&controller, "shop-frontend-")?;
        let ready = pod["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        (pod["status"]["phase"] == "Running" && ready).then_some(pod)
    });
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let running: Vec<String> = agent.running().into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        running,
        [format!("{name}.frontend"), format!("{name}.log-shipper")],
        "the app and its sidecar run; the init container completed"
    );
    let init = &pod["status"]["initContainerStatuses"];
    assert_eq!(init[0]["name"], "migrate");
    assert_eq!(init[0]["state"]["terminated"]["exitCode"], 0, "{pod}");
    assert!(init[1]["state"]["running"].is_object(), "the sidecar runs: {pod}");
    let table = get_pods(&controller);
    let row = table.lines().find(|l| l.starts_with(&name)).unwrap();
    assert!(row.split_whitespace().nth(1) == Some("2/2"), "app + sidecar ready: {table}");

    // The app's own view: identity from the downward API, the init
    // container's file, the ConfigMap file by subPath (the default
    // container, by the annotation).
    let app = wait_until("the app's first line", Duration::from_secs(20), || {
        let out = logs(&controller, &name, None);
        out.contains("schema=").then_some(out)
    });
    assert!(
        app.contains(&format!("pod={name} namespace=default node=pods-a ip=")),
        "identity from the downward API: {app}"
    );
    assert!(app.contains("memory=64Mi"), "{app}");
    assert!(app.contains("schema=schema-v7"), "the init container's work, shared by emptyDir: {app}");
    assert!(app.contains("FEATURE_FLAGS=checkout,search"), "the ConfigMap file by subPath: {app}");
    // The sidecar ships what the app writes to their shared emptyDir.
    let shipped = wait_until("the sidecar ships the app's log lines", Duration::from_secs(20), || {
        let out = logs(&controller, &name, Some("log-shipper"));
        out.contains("GET /checkout 200 request=2").then_some(out)
    });
    assert!(shipped.contains("request=1"), "{shipped}");
    assert!(logs(&controller, &name, Some("migrate")).contains("migrated to schema-v7"));
    let unknown = logs(&controller, &name, Some("nginx"));
    assert!(unknown.contains("has no container \"nginx\": choose one of frontend, migrate, log-shipper"), "{unknown}");

    // What can hold Secret values on the device is the agent's alone: its
    // data directory 0700, its state and each container's spec 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&agent.data), 0o700);
    assert_eq!(mode(&agent.data.join("agent-state.bin")), 0o600);
    let specs: Vec<u32> = std::fs::read_dir(agent.data.join("bundles"))
        .unwrap()
        .flatten()
        .map(|bundle| mode(&bundle.path().join("config.json")))
        .collect();
    assert!(!specs.is_empty() && specs.iter().all(|m| *m == 0o600), "{specs:?}");
}

#[test]
fn a_failing_init_container_holds_its_pod_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller")).unwrap();
    let image = push_busybox(&controller, dir.path());
    let agent = AgentProcess::start(&controller, "pods-b", &dir.path().join("b"));
    wait_for_ready_nodes(&controller, 1, Duration::from_secs(20));

    apply(&controller, &manifest("orders-wait-for-database.yaml", &image));
    let pod =
        wait_or_explain("orders held by its init container", Duration::from_secs(60), &controller, &agent, || {
            let pod = pod_named(&controller, "orders-")?;
            let init = &pod["status"]["initContainerStatuses"][0];
            (init["restartCount"].as_u64() >= Some(1)).then_some(pod)
        });
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    let reason = pod["status"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("Init:"), "{pod}");
    assert!(
        agent.running().iter().all(|(id, _)| id != &format!("{name}.orders")),
        "the app container never starts: {:?}",
        agent.running()
    );
    let out = logs(&controller, &name, Some("wait-for-db"));
    assert!(out.contains("orders-db.shop.svc:5432 is not reachable yet"), "{out}");
    let table = get_pods(&controller);
    assert!(table.lines().any(|l| l.starts_with(&name) && l.contains(" 0/1 ") && l.contains("Init:")), "{table}");
}

fn rollout_status(controller: &ControllerProcess) -> (bool, String) {
    let output =
        controller.cli().unwrap().args(["rollout", "status", "deploy/checkout", "--timeout", "120s"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn a_grpc_probe_gates_a_rollout_and_one_that_never_serves_is_rolled_back() {
    // Two devices, each in a network namespace of its own: replicas that
    // listen on a port never share one.
    let network = flotilla_e2e::netns::Network::create(2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start_on_host(&dir.path().join("controller"), network.host_ip()).unwrap();
    let image = push_examples(&controller, dir.path(), &["hello-grpc:0.1"]).remove(0);
    let agent =
        AgentProcess::start_in(&controller, "pods-c", &dir.path().join("c"), Some(network.namespace(0).unwrap()));
    let _other =
        AgentProcess::start_in(&controller, "pods-d", &dir.path().join("d"), Some(network.namespace(1).unwrap()));
    let checkout = |health: &str| {
        manifest("checkout-grpc.yaml", &image)
            .replace("hello-grpc:0.1", &image)
            .replace("{name: HEALTH, value: serving}", &format!("{{name: HEALTH, value: {health}}}"))
    };
    wait_for_ready_nodes(&controller, 2, Duration::from_secs(20));

    apply(&controller, &checkout("serving"));
    let (ok, text) = rollout_status(&controller);
    assert!(ok, "v1 (SERVING) rolls out: {text}\n{}", agent.log());
    let ready = pod_list(&controller)
        .iter()
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        })
        .count();
    assert_eq!(ready, 2);

    // v2 answers NOT_SERVING: never ready, the rollout fails and is undone.
    apply(&controller, &checkout("not-serving"));
    let (ok, text) = rollout_status(&controller);
    assert!(!ok, "a revision that never serves must not roll out: {text}");
    assert!(text.contains("rollout of revision 2 failed"), "{text}");
    assert!(text.contains("rolled back to revision 1"), "{text}");
    let events = String::from_utf8(controller.cli().unwrap().args(["get", "events"]).output().unwrap().stdout).unwrap();
    assert!(events.lines().any(|l| l.contains("ProbeFailed") || l.contains("RolledBack")), "{events}");
}

/// What the compact profile cannot hold runs unchanged on a Linux device:
/// `node-exporter-daemonset.yaml` (35 args in 1,187 bytes, eight host
/// paths), `line-3-vibration-sensors.yaml` (24 replicas on one device,
/// 1,137 bytes of env each, an 11.8 KB ConfigMap) and a 900 KiB ConfigMap,
/// sent to the device as an object of its own.
#[test]
fn manifests_past_the_compact_limits_run_unchanged_on_a_linux_device() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller")).unwrap();
    let image = push_busybox(&controller, dir.path());
    let agent = AgentProcess::start(&controller, "pods-e", &dir.path().join("e"));
    wait_for_ready_nodes(&controller, 1, Duration::from_secs(20));

    apply(&controller, &manifest("node-exporter-daemonset.yaml", &image));
    // The test's agent carries no `line` label.
    apply(&controller, &manifest("line-3-vibration-sensors.yaml", &image).replace("nodeSelector: {line: line-3}", ""));
    let weights = "0.125,".repeat(150 * 1024);
    apply(
        &controller,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: model-weights}}\ndata:\n  weights.csv: \"{weights}\"\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: inference}}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
             containers:\n  - name: model\n    image: {image}\n    \
             command: [/bin/busybox, sh, -c, \"wc -c /models/weights.csv; trap 'exit 0' TERM; while true; do sleep 1; done\"]\n    \
             volumeMounts: [{{name: weights, mountPath: /models}}]\n  volumes: [{{name: weights, configMap: {{name: model-weights}}}}]\n"
        ),
    );
    wait_or_explain("26 replicas running on the one device", Duration::from_secs(120), &controller, &agent, || {
        let pods = pod_list(&controller);
        let running = |p: &Value| p["status"]["phase"] == "Running" && p["status"]["reason"].is_null();
        (pods.len() == 26 && pods.iter().all(running)).then_some(())
    });
    if agent.running().len() != 26 {
        let text = agent.log();
        let log: Vec<&str> =
            text.lines().filter(|l| l.contains("node-exporter") && !l.contains("libcgroups")).collect();
        panic!("{:?}\n{}", agent.running(), log[log.len().saturating_sub(30)..].join("\n"));
    }

    let exporter = pod_named(&controller, "node-exporter-").unwrap();
    let out = logs(&controller, exporter["metadata"]["name"].as_str().unwrap(), None);
    assert!(out.contains("node-exporter: 35 flags"), "{out}");
    assert_eq!(out.matches("mounted /host/").count(), 8, "{out}");
    let sensor = pod_named(&controller, "vibration-sensor-").unwrap();
    let out = logs(&controller, sensor["metadata"]["name"].as_str().unwrap(), None);
    assert!(out.contains("401 calibration rows"), "{out}");
    let out = logs(&controller, "inference", None);
    assert!(out.contains(&format!("{} /models/weights.csv", weights.len())), "{out}");
}

fn claim_dir(agent: &AgentProcess) -> Option<std::path::PathBuf> {
    let entries = std::fs::read_dir(agent.data.join("claims")).ok()?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("default.line-3-history.")))
}

fn running_recorder(controller: &ControllerProcess) -> Option<(String, String)> {
    let pod = pod_list(controller).into_iter().find(|p| {
        p["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("history-recorder-"))
            && p["metadata"]["deletionTimestamp"].is_null()
            && p["status"]["phase"] == "Running"
    })?;
    Some((pod["metadata"]["name"].as_str()?.to_owned(), pod["spec"]["nodeName"].as_str()?.to_owned()))
}

#[test]
fn a_replica_with_a_local_claim_keeps_its_data_across_a_rollout_and_waits_for_its_lost_device() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller")).unwrap();
    let image = push_busybox(&controller, dir.path());
    let mut agents = [
        AgentProcess::start(&controller, "pods-g", &dir.path().join("g")),
        AgentProcess::start(&controller, "pods-h", &dir.path().join("h")),
    ];
    wait_for_ready_nodes(&controller, 2, Duration::from_secs(20));
    let recorder = |revision: &str| {
        manifest("line-3-history-claim.yaml", &image).replace(
            r#"{name: RECORDER_REVISION, value: "1"}"#,
            &format!(r#"{{name: RECORDER_REVISION, value: "{revision}"}}"#),
        )
    };

    apply(&controller, &recorder("1"));
    let (first, node) =
        wait_or_explain("the recorder running", Duration::from_secs(60), &controller, &agents[0], || {
            running_recorder(&controller)
        });
    let holder = if node == "pods-g" { 0 } else { 1 };
    let pvc = String::from_utf8(controller.cli().unwrap().args(["get", "pvc"]).output().unwrap().stdout).unwrap();
    let row = pvc.lines().find(|l| l.starts_with("line-3-history")).unwrap_or_default().to_owned();
    assert_eq!(
        row.split_whitespace().take(4).collect::<Vec<_>>(),
        ["line-3-history", "Bound", &node, "256Mi"],
        "{pvc}"
    );
    let data =
        wait_until("the claim's directory on its device", Duration::from_secs(10), || claim_dir(&agents[holder]));
    assert!(claim_dir(&agents[1 - holder]).is_none(), "only the device that holds the claim has it");

    // A rollout: the new recorder runs on the same device and reads what
    // the old one wrote.
    apply(&controller, &recorder("2"));
    let (second, again) =
        wait_or_explain("revision 2 running", Duration::from_secs(60), &controller, &agents[holder], || {
            running_recorder(&controller).filter(|(name, _)| *name != first)
        });
    assert_eq!(again, node, "the claim holds its replica on its device");
    let out = wait_until("revision 2's history", Duration::from_secs(20), || {
        let out = logs(&controller, &second, None);
        out.contains("revision 2").then_some(out)
    });
    assert!(out.contains(&format!("recorder {first} revision 1 started on {node}")), "{out}");
    assert!(out.contains(&format!("recorder {second} revision 2 started on {node}")), "{out}");

    // The device is lost: the recorder waits for it, bound there, and says
    // why; nothing starts empty on the other device.
    agents[holder].kill9();
    let waiting = wait_until("the recorder waiting for its device", Duration::from_secs(60), || {
        let pod = pod_named(&controller, &second)?;
        (pod["status"]["reason"] == "WaitingForVolume").then_some(pod)
    });
    assert_eq!(waiting["spec"]["nodeName"], node.as_str());
    let message = waiting["status"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("claim \"line-3-history\" holds its data on device {node}")), "{message}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(agents[1 - holder].running().is_empty(), "nothing runs on the other device");
    assert_eq!(pod_list(&controller).len(), 1);

    // Back: the same replica runs there again, its data intact.
    agents[holder] = AgentProcess::start(&controller, &node, &agents[holder].data.clone());
    wait_or_explain("the recorder running again", Duration::from_secs(60), &controller, &agents[holder], || {
        running_recorder(&controller).filter(|(name, _)| *name == second)
    });
    let starts = std::fs::read_to_string(data.join("starts.log")).unwrap();
    assert!(starts.contains("revision 1") && starts.contains("revision 2"), "{starts}");

    // Deleting the claim deletes the data, once nothing mounts it: until
    // then it is Terminating and the recorder keeps writing.
    let delete = |what: &[&str]| {
        let output = controller.cli().unwrap().arg("delete").args(what).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let said = delete(&["pvc", "line-3-history"]);
    assert!(said.contains("replicas still mount it"), "{said}");
    let pvc = String::from_utf8(controller.cli().unwrap().args(["get", "pvc"]).output().unwrap().stdout).unwrap();
    assert!(pvc.contains("Terminating"), "{pvc}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(data.join("samples.log").exists() && running_recorder(&controller).is_some());
    delete(&["deployment", "history-recorder"]);
    wait_or_explain("the claim's data deleted", Duration::from_secs(60), &controller, &agents[holder], || {
        (!data.exists()).then_some(())
    });
    let pvc = String::from_utf8(controller.cli().unwrap().args(["get", "pvc"]).output().unwrap().stdout).unwrap();
    assert!(!pvc.contains("line-3-history"), "{pvc}");
}

#[test]
fn a_stateful_sets_replicas_keep_their_names_devices_and_data_through_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller")).unwrap();
    let image = push_busybox(&controller, dir.path());
    let agent = AgentProcess::start(&controller, "pods-i", &dir.path().join("i"));
    let _other = AgentProcess::start(&controller, "pods-j", &dir.path().join("j"));
    wait_for_ready_nodes(&controller, 2, Duration::from_secs(20));
    let store = |schema: &str| {
        manifest("line-3-timeseries-statefulset.yaml", &image).replace(
            r#"{name: SCHEMA_VERSION, value: "1"}"#,
            &format!(r#"{{name: SCHEMA_VERSION, value: "{schema}"}}"#),
        )
    };
    // Both replicas running, each of the template `schema` was applied with.
    let running = |hash: Option<&str>| {
        let pods = pod_list(&controller);
        let ours: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running")
            .filter(|p| hash.is_none_or(|h| p["metadata"]["labels"]["pod-template-hash"] == h))
            .collect();
        let mut out: Vec<(String, String, String)> = ours
            .iter()
            .map(|p| {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (
                    text(&p["metadata"]["name"]),
                    text(&p["spec"]["nodeName"]),
                    text(&p["metadata"]["labels"]["pod-template-hash"]),
                )
            })
            .collect();
        out.sort();
        (out.len() == 2).then_some(out)
    };

    apply(&controller, &store("1"));
    let first =
        wait_or_explain("both replicas running", Duration::from_secs(90), &controller, &agent, || running(None));
    assert_eq!([first[0].0.as_str(), first[1].0.as_str()], ["timeseries-0", "timeseries-1"]);
    let pvc = String::from_utf8(controller.cli().unwrap().args(["get", "pvc"]).output().unwrap().stdout).unwrap();
    for (i, (_, node, _)) in first.iter().enumerate() {
        let row = pvc.lines().find(|l| l.starts_with(&format!("series-timeseries-{i} "))).unwrap_or_default();
        assert!(row.contains("Bound") && row.contains(node.as_str()), "claim {i} on {node}: {pvc}");
    }

    // The update replaces each under its own name on its own device, and
    // each reads what it wrote before.
    apply(&controller, &store("2"));
    let old_hash = first[0].2.clone();
    let second = wait_or_explain("both replicas updated", Duration::from_secs(120), &controller, &agent, || {
        running(None).filter(|pods| pods.iter().all(|(_, _, hash)| *hash != old_hash))
    });
    for ((name, node, _), (_, before, _)) in second.iter().zip(&first) {
        assert_eq!(node, before, "{name} stays on its claim's device");
        let out = wait_until("the replica's history", Duration::from_secs(20), || {
            let out = logs(&controller, name, None);
            out.contains("schema 2").then_some(out)
        });
        assert!(out.contains(&format!("{name} schema 1\n{name} schema 2")), "{name}: {out}");
    }
    // The set's status follows its replicas' reports.
    wait_until("get statefulsets: 2/2 ready, 2 up to date", Duration::from_secs(20), || {
        let sets = controller.cli().unwrap().args(["get", "statefulsets"]).output().unwrap().stdout;
        let sets = String::from_utf8(sets).unwrap();
        let row = ["timeseries", "2/2", "2"];
        sets.lines().any(|l| l.split_whitespace().take(3).collect::<Vec<_>>() == row).then_some(())
    });
}
