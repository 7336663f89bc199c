//! Services end to end, with the example HTTP service (`hello-http`, built
//! by `images/build-examples`) on three devices, each an agent in its own
//! network namespace behind a bridge:
//!
//! - the Service's ready endpoints reach the nodes: a busybox client in the
//!   same namespace reads them from its environment and from
//!   `/run/flotilla/services/endpoints`, and its requests to
//!   `$WEB_SERVICE_HOST:$WEB_SERVICE_PORT` are answered by the replicas
//!   through the agent's forwarder;
//! - a rollout v1 -> v2 has no moment with zero ready endpoints (sampled
//!   from what the controller publishes and from a node's endpoints file),
//!   and afterwards the forwarder reaches only v2 replicas.
//!
//! Needs root (network namespaces, containers).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flotilla_e2e::ControllerProcess;
use flotilla_e2e::fleet::{
    AgentProcess, apply, is_serving, pod_list, push_busybox, push_examples, wait_for_ready_nodes, wait_until,
};
use flotilla_e2e::netns::Network;
use serde_json::Value;

/// Builds the example images and pushes hello-http into the registry.
fn push_hello_http(controller: &ControllerProcess, dir: &Path) -> String {
    push_examples(controller, dir, &["hello-http:0.1"]).remove(0)
}

/// The web Deployment at `version` and its Service. A replica listens on
/// 8080 (so two never share a device) and is ready when `/ready` answers,
/// `ready_delay` seconds after it starts (hello-http's READY_DELAY).
fn web(image: &str, version: u32, ready_delay: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  progressDeadlineSeconds: 15
  strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        env: [{{name: VERSION, value: "{version}"}}, {{name: READY_DELAY, value: "{ready_delay}"}}]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /ready, port: 8080}}
          periodSeconds: 1
        resources: {{requests: {{cpu: 50m, memory: 16Mi}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    )
}

/// A busybox client that prints what it was told about the Service and
/// asks it, every second.
fn client(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: client}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: client
        image: {image}
        args: ["sh", "-c", "trap 'exit 0' TERM; echo env web=$WEB_SERVICE_HOST:$WEB_SERVICE_PORT; while true; do cat /run/flotilla/services/endpoints; wget -q -O - http://$WEB_SERVICE_HOST:$WEB_SERVICE_PORT/; sleep 1; done"]
        resources: {{requests: {{cpu: 20m, memory: 8Mi}}}}
"#
    )
}

/// The Service's endpoints as the controller publishes them.
fn published_endpoints(controller: &ControllerProcess) -> Vec<String> {
    let output = controller.cli().unwrap().args(["get", "service", "web", "-o", "json"]).output().unwrap();
    let service: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    service["status"]["endpoints"]["http"]
        .as_array()
        .map(|list| list.iter().filter_map(|e| e.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The endpoints in a node's endpoints file, for the web Service.
fn file_endpoints(agent: &AgentProcess) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(agent.data.join("services/endpoints")).ok()?;
    let line = text.lines().find(|l| l.starts_with("web "))?;
    Some(line.split(' ').skip(3).map(str::to_owned).collect())
}

/// Names of the ready, live web replicas.
fn ready_web_replicas(controller: &ControllerProcess) -> Vec<String> {
    pod_list(controller)
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "web" && is_serving(p))
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// `GET /` through the forwarder of the web Service, from inside a device:
/// a thread joins the device's network namespace and connects from there.
fn through_forwarder(netns: &str) -> Option<String> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let namespace = std::fs::File::open(&path).ok()?;
        nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        let local = flotilla_agent::services::local_address("web");
        let mut stream = std::net::TcpStream::connect_timeout(&(local, 80).into(), Duration::from_secs(3)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let (_, body) = answer.split_once("\r\n\r\n")?;
        Some(body.to_owned())
    })
    .join()
    .ok()
    .flatten()
}

/// Runs `action` while `measure` is sampled every 50 ms; returns what the
/// action returned, the smallest value seen of each measurement, and the
/// number of samples.
fn fewest_during<const N: usize, R>(
    measure: impl Fn() -> [usize; N] + Sync,
    action: impl FnOnce() -> R,
) -> (R, [usize; N], usize) {
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(([usize::MAX; N], 0));
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let values = measure();
                let mut seen = seen.lock().unwrap();
                for (fewest, value) in seen.0.iter_mut().zip(values) {
                    *fewest = (*fewest).min(value);
                }
                seen.1 += 1;
                drop(seen);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let result = action();
        stop.store(true, Ordering::Relaxed);
        result
    });
    let (fewest, samples) = seen.into_inner().unwrap();
    (result, fewest, samples)
}

#[test]
fn service_endpoints_reach_workloads_and_a_rollout_never_leaves_none_ready() {
    let network = Network::create(3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start_on_host(&dir.path().join("controller"), network.host_ip()).unwrap();
    let hello = push_hello_http(&controller, dir.path());
    let busybox = push_busybox(&controller, dir.path());
    let agents: Vec<AgentProcess> = (0..3)
        .map(|i| {
            let name = format!("svc-{}", i + 1);
            AgentProcess::start_in(&controller, &name, &dir.path().join(&name), Some(network.namespace(i).unwrap()))
        })
        .collect();
    wait_for_ready_nodes(&controller, 3, Duration::from_secs(30));

    apply(&controller, &web(&hello, 1, 0));
    apply(&controller, &client(&busybox));
    let v1 = wait_until("two ready web replicas published as endpoints", Duration::from_secs(120), || {
        let ready = ready_web_replicas(&controller);
        (ready.len() == 2 && published_endpoints(&controller).len() == 2).then_some(ready)
    });
    // Each endpoint is a device address and the replica's port.
    for endpoint in published_endpoints(&controller) {
        assert!(
            endpoint.starts_with(&format!(
                "{}.",
                network.host_ip().octets()[..3].iter().map(u8::to_string).collect::<Vec<_>>().join(".")
            )),
            "{endpoint}"
        );
        assert!(endpoint.ends_with(":8080"), "{endpoint}");
    }

    // The client sees the Service: env, file, and answers through the forwarder.
    let client_pod = pod_list(&controller)
        .iter()
        .find(|p| p["metadata"]["labels"]["app"] == "client")
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .expect("the client replica");
    let logs = wait_until("the client to reach the service", Duration::from_secs(60), || {
        let output = controller.cli().unwrap().args(["logs", &client_pod]).output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.contains("hello from web-").then_some(text)
    });
    let local = flotilla_agent::services::local_address("web");
    assert!(logs.contains(&format!("env web={local}:80")), "{logs}");
    assert!(logs.contains(&format!("web http {local}:80 ")), "the endpoints file, inside the container: {logs}");
    assert!(v1.iter().any(|name| logs.contains(&format!("hello from {name} "))), "{v1:?}: {logs}");

    // v1 -> v2, sampling what the controller publishes and what a node's
    // endpoints file says.
    let (output, [min_published, min_on_node], samples) = fewest_during(
        || [published_endpoints(&controller).len(), file_endpoints(&agents[0]).map_or(usize::MAX, |e| e.len())],
        || {
            apply(&controller, &web(&hello, 2, 0));
            controller.cli().unwrap().args(["rollout", "status", "deploy/web", "--timeout", "120s"]).output().unwrap()
        },
    );
    assert!(output.status.success(), "v2 rollout: {}", String::from_utf8_lossy(&output.stderr));
    eprintln!(
        "v1 -> v2: fewest endpoints published {min_published}, in a node's file {min_on_node}, {samples} samples"
    );
    assert!(samples > 10);
    assert!(min_published >= 1, "a moment with no ready endpoint published");
    assert!(min_on_node >= 1, "a moment with no endpoint in the node's file");

    // Traffic now reaches v2 only.
    let v2 = wait_until("v2 replicas ready as the only endpoints", Duration::from_secs(60), || {
        let ready = ready_web_replicas(&controller);
        (ready.len() == 2 && ready.iter().all(|n| !v1.contains(n)) && published_endpoints(&controller).len() == 2)
            .then_some(ready)
    });
    let mut answered_by = Vec::new();
    for _ in 0..6 {
        let answer = wait_until("an answer through the forwarder", Duration::from_secs(20), || {
            through_forwarder(network.namespace(0).unwrap())
        });
        let replica = answer.split_whitespace().nth(2).unwrap_or_default().to_owned();
        answered_by.push(replica);
    }
    assert!(answered_by.iter().all(|r| v2.contains(r)), "answers from {answered_by:?}, v2 is {v2:?}");
    assert!(v2.iter().all(|r| answered_by.contains(r)), "round robin reaches both: {answered_by:?}");

    // v3 is never ready: it is rolled back by itself, the CLI says why,
    // and the v2 endpoints serve throughout.
    let (status, [fewest], _) = fewest_during(
        || [published_endpoints(&controller).len()],
        || {
            apply(&controller, &web(&hello, 3, 3600));
            controller.cli().unwrap().args(["rollout", "status", "deploy/web", "--timeout", "120s"]).output().unwrap()
        },
    );
    let why = String::from_utf8_lossy(&status.stderr);
    assert!(!status.status.success(), "a never-ready v3 must not roll out");
    assert!(why.contains("revision 3 failed") && why.contains("rolled back to revision 2"), "{why}");
    assert!(fewest >= 2, "v2's endpoints served throughout v3's attempt");
    wait_until("only v2 replicas again", Duration::from_secs(30), || {
        (ready_web_replicas(&controller).iter().all(|n| v2.contains(n)) && pod_list(&controller).len() == 3)
            .then_some(())
    });
    drop(agents);
}

/// `storefront-loadbalancer.yaml` as written for a cloud: its LoadBalancer
/// Service is served on port 80 of each device running a ready replica,
/// those devices are its `status.loadBalancer.ingress`, and apply says why.
#[test]
fn a_load_balancer_service_is_served_on_the_devices_running_its_replicas() {
    let network = Network::create(2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start_on_host(&dir.path().join("controller"), network.host_ip()).unwrap();
    let hello = push_hello_http(&controller, dir.path());
    let _agents: Vec<AgentProcess> = (0..2)
        .map(|i| {
            let name = format!("lb-{}", i + 1);
            AgentProcess::start_in(&controller, &name, &dir.path().join(&name), Some(network.namespace(i).unwrap()))
        })
        .collect();
    wait_for_ready_nodes(&controller, 2, Duration::from_secs(30));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/storefront-loadbalancer.yaml");
    let manifest = std::fs::read_to_string(path).unwrap().replace("image: hello-http:0.1", &format!("image: {hello}"));
    let mut apply = controller.cli().unwrap();
    apply.args(["apply", "-f", "-"]).stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = apply.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), manifest.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("edge devices have no cloud load balancer"), "{said}");

    let devices = [network.device_ip(0).to_string(), network.device_ip(1).to_string()];
    let ingress = wait_until("both devices in status.loadBalancer.ingress", Duration::from_secs(120), || {
        let output = controller.cli().unwrap().args(["get", "service", "storefront", "-o", "json"]).output().ok()?;
        let service: Value = serde_json::from_slice(&output.stdout).ok()?;
        let mut ips: Vec<String> = service["status"]["loadBalancer"]["ingress"]
            .as_array()?
            .iter()
            .filter_map(|i| i["ip"].as_str().map(str::to_owned))
            .collect();
        ips.sort();
        (ips.len() == 2).then_some((ips, service))
    });
    assert_eq!(ingress.0, devices, "{}", ingress.1);
    assert_eq!(ingress.1["status"]["nodePorts"]["http"], 80, "{}", ingress.1);
    // From outside the devices (the host, on the bridge): port 80 of each
    // device answers, from a storefront replica.
    for device in &devices {
        let answer = wait_until(&format!("{device}:80 answers"), Duration::from_secs(30), || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect((device.as_str(), 80)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            text.contains("hello from storefront-").then_some(text)
        });
        assert!(answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"), "{answer}");
    }
}
