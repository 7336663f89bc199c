//! End-to-end tests of `flotilla server` and the CLI: real processes, real
//! files, real HTTP.

use std::path::Path;
use std::process::Output;

use flotilla_e2e::ControllerProcess;
use serde_json::{Value, json};

fn manifests() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests"))
}

fn run(mut command: std::process::Command) -> Output {
    command.output().expect("running flotilla")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn cli(server: &ControllerProcess, args: &[&str]) -> Output {
    let mut command = server.cli().unwrap();
    command.args(args);
    run(command)
}

fn ok(server: &ControllerProcess, args: &[&str]) -> String {
    let output = cli(server, args);
    assert!(
        output.status.success(),
        "flotilla {args:?} failed: {}\nserver log:\n{}",
        stderr(&output),
        server.log_text()
    );
    stdout(&output)
}

fn json_of(server: &ControllerProcess, args: &[&str]) -> Value {
    serde_json::from_str(&ok(server, args)).expect("JSON output")
}

/// (kind/namespace/name, uid, resourceVersion) of every object, sorted.
fn identities(server: &ControllerProcess) -> Vec<(String, String, String)> {
    let mut all = Vec::new();
    for resource in ["deployments", "daemonsets", "jobs", "services", "configmaps", "secrets", "nodes", "namespaces"] {
        let list = json_of(server, &["get", resource, "-A", "-o", "json"]);
        for item in list["items"].as_array().unwrap() {
            let m = &item["metadata"];
            all.push((
                format!("{}/{}/{}", item["kind"], m["namespace"], m["name"]),
                m["uid"].as_str().unwrap().to_owned(),
                m["resourceVersion"].as_str().unwrap().to_owned(),
            ));
        }
    }
    all.sort();
    all
}

#[test]
fn applied_objects_survive_a_restart_with_the_same_uid_and_resource_version() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ControllerProcess::start(&data).unwrap();
    let applied = ok(&server, &["apply", "-f", manifests().to_str().unwrap()]);
    assert!(applied.contains("deployment/web (namespace shop) created"), "{applied}");
    // Let the reconcilers settle: the pods they derive are part of the state.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = identities(&server);
    assert!(before.len() >= 9, "{before:?}");
    let pods_before = json_of(&server, &["get", "pods", "-A", "-o", "json"]);
    // SIGKILL: durability must not depend on a clean shutdown.
    server.kill().unwrap();
    let server = ControllerProcess::start(&data).unwrap();
    assert_eq!(identities(&server), before);
    let pods_after = json_of(&server, &["get", "pods", "-A", "-o", "json"]);
    let names = |list: &Value| -> Vec<(String, String)> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["metadata"]["name"].as_str().unwrap().into(), p["metadata"]["uid"].as_str().unwrap().into()))
            .collect()
    };
    assert_eq!(names(&pods_after), names(&pods_before));
    // Applying the same files again changes nothing.
    let again = ok(&server, &["apply", "-f", manifests().to_str().unwrap()]);
    assert!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");
    assert_eq!(identities(&server), before);
}

#[test]
fn an_apply_with_one_bad_document_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ControllerProcess::start(&dir.path().join("data")).unwrap();
    let bad = manifests().join("invalid/second-document-bad.yaml");
    let output =
        cli(&server, &["apply", "-f", manifests().join("sensor.yaml").to_str().unwrap(), "-f", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("second-document-bad.yaml, document 2"), "{message}");
    for resource in ["deployments", "configmaps", "pods"] {
        let list = json_of(&server, &["get", resource, "-A", "-o", "json"]);
        assert_eq!(list["items"], json!([]), "{resource} stored by a refused apply");
    }
}

fn http(server: &ControllerProcess, token: Option<&str>) -> (ureq::Agent, String, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    (agent, server.url.clone(), token.map(|t| format!("Bearer {t}")))
}

#[test]
fn the_api_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = ControllerProcess::start(&dir.path().join("data")).unwrap();
    let (agent, url, _) = http(&server, None);
    let without = agent.get(format!("{url}/api/v1/pods")).call().unwrap();
    assert_eq!(without.status(), 401);
    let wrong = agent.get(format!("{url}/api/v1/pods")).header("Authorization", "Bearer nope").call().unwrap();
    assert_eq!(wrong.status(), 401);
    let metrics = agent.get(format!("{url}/metrics")).call().unwrap();
    assert_eq!(metrics.status(), 401);
    // Health needs no token (load balancers, systemd watchdogs).
    assert_eq!(agent.get(format!("{url}/healthz")).call().unwrap().status(), 200);
    let token = server.token().unwrap();
    let with =
        agent.get(format!("{url}/api/v1/pods")).header("Authorization", format!("Bearer {token}")).call().unwrap();
    assert_eq!(with.status(), 200);
    // The token file is owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(server.data_dir.join("token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The CLI says what is wrong with a bad token.
    let mut command = server.cli().unwrap();
    command.env("FLOTILLA_TOKEN", "wrong").args(["get", "pods"]);
    let output = run(command);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("refused the token from $FLOTILLA_TOKEN"), "{}", stderr(&output));
}

#[test]
fn a_stale_update_gets_409_and_a_fresh_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let server = ControllerProcess::start(&dir.path().join("data")).unwrap();
    ok(&server, &["apply", "-f", manifests().join("sensor.yaml").to_str().unwrap()]);
    let (agent, url, auth) = http(&server, Some(&server.token().unwrap()));
    let auth = auth.unwrap();
    let path = format!("{url}/api/v1/namespaces/line-3/configmaps/sensor-config");
    let mut first: Value =
        agent.get(&path).header("Authorization", &auth).call().unwrap().body_mut().read_json().unwrap();
    let stale = first.clone();
    first["data"]["interval"] = json!("9s");
    let mut response = agent.put(&path).header("Authorization", &auth).send_json(&first).unwrap();
    assert_eq!(response.status(), 200, "{}", response.body_mut().read_to_string().unwrap());
    let mut second = stale;
    second["data"]["interval"] = json!("1s");
    let mut conflict = agent.put(&path).header("Authorization", &auth).send_json(&second).unwrap();
    assert_eq!(conflict.status(), 409);
    let body: Value = conflict.body_mut().read_json().unwrap();
    assert_eq!(body["reason"], "Conflict");
    let now: Value = agent.get(&path).header("Authorization", &auth).call().unwrap().body_mut().read_json().unwrap();
    assert_eq!(now["data"]["interval"], "9s");
    assert_eq!(now["metadata"]["generation"], 2);
}

#[test]
fn get_pods_json_is_a_stable_list_and_describe_shows_the_scheduling_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = ControllerProcess::start(&dir.path().join("data")).unwrap();
    ok(&server, &["apply", "-f", manifests().join("sensor.yaml").to_str().unwrap()]);
    // A node with capacity but no agent yet: it is not ready, which is the reason.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let list = json_of(&server, &["get", "pods", "-n", "line-3", "-o", "json"]);
    assert_eq!(list["kind"], "List");
    assert!(list["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().is_ok());
    let items = list["items"].as_array().unwrap();
    assert!(!items.is_empty());
    for pod in items {
        assert_eq!(pod["kind"], "Pod");
        for field in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
            assert!(pod["metadata"][field].is_string(), "metadata.{field} missing: {pod}");
        }
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Deployment");
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["reason"], "Unschedulable");
        assert!(pod["spec"]["containers"][0]["image"].is_string());
    }
    let name = items[0]["metadata"]["name"].as_str().unwrap();
    let described = ok(&server, &["describe", "pod", name, "-n", "line-3"]);
    assert!(described.contains("Message:           0/0 nodes available"), "{described}");
    let table = ok(&server, &["get", "pods", "-n", "line-3"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("Unschedulable"), "{table}");
    let missing = cli(&server, &["get", "pod", "nope", "-n", "line-3"]);
    assert!(stderr(&missing).contains("pods/nope in namespace line-3 not found"), "{}", stderr(&missing));
}

#[test]
fn the_server_renders_the_tables_get_prints() {
    let dir = tempfile::tempdir().unwrap();
    let server = ControllerProcess::start(&dir.path().join("data")).unwrap();
    ok(&server, &["apply", "-f", manifests().join("sensor.yaml").to_str().unwrap()]);
    let (agent, url, auth) = http(&server, Some(&server.token().unwrap()));
    let auth = auth.unwrap();
    let get = |path: &str| {
        let mut response = agent.get(format!("{url}{path}")).header("Authorization", &auth).call().unwrap();
        (response.status(), response.body_mut().read_json::<Value>().unwrap())
    };
    // The Deployment's replicas are made by the next reconcile pass.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get("/api/v1/namespaces/line-3/pods").1["items"].as_array().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no replicas were made");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (status, table) = get("/api/v1/namespaces/line-3/pods?as=table");
    assert_eq!(status, 200);
    assert_eq!(table["kind"], "Table");
    let columns: Vec<&str> =
        table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["NAME", "READY", "STATUS", "RESTARTS", "NODE", "AGE"]);
    let (_, list) = get("/api/v1/namespaces/line-3/pods");
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|p| p["metadata"]["name"].as_str().unwrap()).collect();
    let rows: Vec<&str> = table["rows"].as_array().unwrap().iter().map(|r| r["cells"][0].as_str().unwrap()).collect();
    assert!(!rows.is_empty());
    assert_eq!(rows, names, "one row per object, in the list's order");
    // All namespaces: a NAMESPACE column first; wide: kubectl's extra ones.
    let (_, all) = get("/api/v1/pods?as=table&wide=true");
    let columns: Vec<&str> =
        all["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns.first(), Some(&"NAMESPACE"));
    assert_eq!(columns.last(), Some(&"MESSAGE"));
    let (status, error) = get("/api/v1/pods?as=yaml");
    assert_eq!(status, 400);
    assert!(error["error"].as_str().unwrap().contains("as=table"), "{error}");
    // What the CLI prints is that table.
    let wide = ok(&server, &["get", "pods", "-A", "-o", "wide"]);
    assert!(wide.starts_with("NAMESPACE"), "{wide}");
    assert!(wide.lines().next().unwrap().ends_with("MESSAGE"), "{wide}");
    // Rows are kept per list while the store is unchanged, and a change
    // shows in the next answer.
    let config_maps = || {
        let (_, table) = get("/api/v1/namespaces/line-3/configmaps?as=table");
        table["rows"].as_array().unwrap().iter().map(|r| r["cells"][0].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let before = config_maps();
    assert_eq!(config_maps(), before);
    let file = dir.path().join("cm.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept-rows, namespace: line-3}\ndata: {a: b}\n",
    )
    .unwrap();
    ok(&server, &["apply", "-f", file.to_str().unwrap()]);
    let after = config_maps();
    assert!(
        after.contains(&"kept-rows".to_owned()) && !before.contains(&"kept-rows".to_owned()),
        "{before:?} -> {after:?}"
    );
}

#[test]
fn the_cli_says_when_the_server_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t\n").unwrap();
    let mut command = std::process::Command::new(flotilla_e2e::binary("flotilla").unwrap());
    command
        .args(["get", "pods", "--server", "http://127.0.0.1:9", "--token-file"])
        .arg(dir.path().join("token"))
        .env_remove("FLOTILLA_TOKEN");
    let output = run(command);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("cannot reach the Flotilla server at http://127.0.0.1:9"), "{}", stderr(&output));
}

#[test]
fn get_watch_prints_changes_as_they_happen() {
    let dir = tempfile::tempdir().unwrap();
    let server = ControllerProcess::start(&dir.path().join("data")).unwrap();
    let mut command = server.cli().unwrap();
    command.args(["get", "configmaps", "-A", "--watch", "-o", "name"]).stdout(std::process::Stdio::piped());
    let mut watcher = command.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    ok(&server, &["apply", "-f", manifests().join("sensor.yaml").to_str().unwrap()]);
    let mut stdout = std::io::BufReader::new(watcher.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "configmap/sensor-config");
    watcher.kill().unwrap();
    watcher.wait().unwrap();
}

#[test]
fn apply_reads_stdin_and_delete_removes_objects_and_their_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let server = ControllerProcess::start(&dir.path().join("data")).unwrap();
    let mut command = server.cli().unwrap();
    command.args(["apply", "-f", "-"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let yaml = std::fs::read(manifests().join("sensor.yaml")).unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &yaml).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("deployment/sensor (namespace line-3) created"), "{}", stdout(&output));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!json_of(&server, &["get", "pods", "-n", "line-3", "-o", "json"])["items"].as_array().unwrap().is_empty());
    ok(&server, &["delete", "deployment", "sensor", "-n", "line-3"]);
    // The reconciler collects the replicas of a deleted workload.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let pods = json_of(&server, &["get", "pods", "-n", "line-3", "-o", "json"]);
        if pods["items"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "replicas not collected: {pods}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let missing = cli(&server, &["delete", "deployment", "sensor", "-n", "line-3"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("not found"), "{}", stderr(&missing));
}

/// `flotilla` with an environment that points nowhere: only options on the
/// command line reach a server.
fn bare_cli(dir: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(flotilla_e2e::binary("flotilla").unwrap());
    command
        .env("FLOTILLA_SERVER", "http://127.0.0.1:9")
        .env("FLOTILLA_TOKEN_FILE", dir.join("no-such-token"))
        .env_remove("FLOTILLA_TOKEN");
    command
}

#[test]
fn client_options_may_come_before_the_verb() {
    let dir = tempfile::tempdir().unwrap();
    let server = ControllerProcess::start(&dir.path().join("data")).unwrap();
    ok(&server, &["apply", "-f", manifests().join("sensor.yaml").to_str().unwrap()]);
    let token = server.data_dir.join("token");
    let (url, token) = (server.url.as_str(), token.to_str().unwrap());
    let succeeds = |args: &[&str]| {
        let mut command = bare_cli(dir.path());
        command.args(args);
        let output = run(command);
        assert!(output.status.success(), "flotilla {args:?}: {}", stderr(&output));
        output
    };
    // Before the verb, as after it, the command line wins over the environment.
    let output = succeeds(&["--server", url, "--token-file", token, "get", "pods"]);
    assert!(stderr(&output).contains("No pods found in namespace default."), "{}", stderr(&output));
    let output = succeeds(&["--server", url, "-n", "line-3", "-o", "name", "get", "configmaps", "--token-file", token]);
    assert_eq!(stdout(&output).trim(), "configmap/sensor-config");
    let output = succeeds(&["--token-file", token, "-o", "json", "--server", url, "node", "token", "ls"]);
    let list: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(list["items"].is_array(), "{list}");
    // `flotilla server` refuses them rather than ignoring them. (Were they
    // accepted, this server would fail at once: its data dir cannot exist.)
    let mut command = bare_cli(dir.path());
    command
        .args(["--server", url, "server", "--api-addr", "127.0.0.1:0", "--data-dir"])
        .arg(Path::new(token).join("x"));
    let output = run(command);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--server is not an option of `flotilla server`"), "{}", stderr(&output));
}

#[test]
fn apply_dry_run_asks_the_server_which_answers_from_what_it_stores_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ControllerProcess::start(&dir.path().join("data")).unwrap();
    let sensor = manifests().join("sensor.yaml");
    let sensor = sensor.to_str().unwrap();
    let planned = ok(&server, &["apply", "--dry-run", "-f", sensor]);
    assert!(planned.contains("configmap/sensor-config (namespace line-3) created (server dry run)"), "{planned}");
    assert!(planned.contains("deployment/sensor (namespace line-3) created (server dry run)"), "{planned}");
    for resource in ["deployments", "configmaps", "pods"] {
        let list = json_of(&server, &["get", resource, "-A", "-o", "json"]);
        assert_eq!(list["items"], json!([]), "{resource} stored by a dry run");
    }
    // Only the server knows what is stored: after the apply, a changed
    // ConfigMap would be configured and the Deployment left as it is.
    ok(&server, &["apply", "-f", sensor]);
    let configmap = ["get", "configmap", "sensor-config", "-n", "line-3", "-o", "json"];
    let stored = json_of(&server, &configmap);
    let text = std::fs::read_to_string(sensor).unwrap();
    assert!(text.contains("threshold = 40"));
    let changed = dir.path().join("sensor-changed.yaml");
    std::fs::write(&changed, text.replace("threshold = 40", "threshold = 50")).unwrap();
    let changed = changed.to_str().unwrap();
    let planned = ok(&server, &["apply", "--dry-run", "-f", changed]);
    assert!(planned.contains("configmap/sensor-config (namespace line-3) configured (server dry run)"), "{planned}");
    assert!(planned.contains("deployment/sensor (namespace line-3) unchanged (server dry run)"), "{planned}");
    let answer = json_of(&server, &["apply", "--dry-run=server", "-o", "json", "-f", changed]);
    assert_eq!(answer["results"][0]["action"], "configured", "{answer}");
    assert_eq!(json_of(&server, &configmap), stored, "a dry run changed the stored ConfigMap");
    // The server checks a dry run itself; a client that skipped the local
    // checks (or another version of them) gets its verdict, and nothing is stored.
    let (agent, url, auth) = http(&server, Some(&server.token().unwrap()));
    let auth = auth.unwrap();
    let bad = std::fs::read_to_string(manifests().join("invalid/bad-quantity.yaml")).unwrap();
    let request = json!({"documents": [{"source": "bad.yaml", "text": bad}], "dryRun": true});
    let mut refused =
        agent.post(format!("{url}/api/v1/apply")).header("Authorization", &auth).send_json(&request).unwrap();
    assert_eq!(refused.status(), 422);
    let body: Value = refused.body_mut().read_json().unwrap();
    let reason = "bad.yaml, document 1: spec.template.spec.containers[0].resources.limits.memory";
    assert!(body["error"].as_str().unwrap().contains(reason), "{body}");
    // What the server answers is what the user sees, a refusal too...
    let mut command = server.cli().unwrap();
    command.env("FLOTILLA_TOKEN", "wrong").args(["apply", "--dry-run", "-f", sensor]);
    let output = run(command);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("refused the token") && message.contains("--dry-run=client"), "{message}");
    // ...and `--dry-run=client` needs no server.
    let mut command = bare_cli(dir.path());
    command.args(["apply", "--dry-run=client", "-f", sensor]);
    let output = run(command);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("deployment/sensor (namespace line-3) checked (dry run)"), "{}", stdout(&output));
}

/// SIGTERM drains: the API closes, the reconcilers and the fleet channel
/// stop (the inbox commits what it holds) and the process exits 0, saying
/// so; the store it leaves opens again with everything in it.
#[test]
fn sigterm_stops_every_part_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ControllerProcess::start(&data).unwrap();
    ok(&server, &["apply", "-f", manifests().join("sensor.yaml").to_str().unwrap()]);
    let before = identities(&server);
    let log = server.log.clone();
    let status = server.stop().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit {status:?}:\n{text}");
    for line in ["draining", "stopping the reconcilers and the fleet channel", "stopped"] {
        assert!(text.contains(line), "the log does not say {line:?}:\n{text}");
    }
    let again = ControllerProcess::start(&data).unwrap();
    // Same objects, same uids (statuses go on changing).
    let uids = |list: Vec<(String, String, String)>| list.into_iter().map(|(k, uid, _)| (k, uid)).collect::<Vec<_>>();
    assert_eq!(uids(identities(&again)), uids(before));
}
