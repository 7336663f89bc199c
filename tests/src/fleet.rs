//! Helpers for tests of a whole fleet: real `flotilla-agent`s enrolled
//! with a controller, images pushed into its registry, manifests applied
//! and pods read through the real CLI. They panic with a message on
//! failure: they exist for tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_agent::runtime::helper::HelperRuntime;
use flotilla_agent::runtime::{Runtime, Status};
use serde_json::Value;

use crate::{ControllerProcess, binary};

/// An agent process, killed (and its containers removed) when dropped.
pub struct AgentProcess {
    child: Option<Child>,
    /// Its data directory; its log is `<data>.log`.
    pub data: PathBuf,
}

impl AgentProcess {
    /// Starts `flotilla-agent run` as node `name` (enrolling with a fresh
    /// join token the first time), with a 5 s keep-alive and heartbeat.
    pub fn start(controller: &ControllerProcess, name: &str, data: &Path) -> AgentProcess {
        Self::start_in(controller, name, data, None)
    }

    /// [`AgentProcess::start`] inside the network namespace `netns` (see
    /// [`crate::netns`]), like a device of its own.
    pub fn start_in(controller: &ControllerProcess, name: &str, data: &Path, netns: Option<&str>) -> AgentProcess {
        let token = if data.join("enrolment.json").exists() { None } else { Some(join_token(controller)) };
        let agent = binary("flotilla-agent").unwrap();
        let mut command = match netns {
            // Only the network namespace: `ip netns exec` would also mount a
            // fresh /sys, which hides the cgroup hierarchy from libcontainer.
            Some(netns) => {
                let mut command = Command::new("nsenter");
                command.arg(format!("--net=/run/netns/{netns}")).arg("--").arg(agent);
                command
            }
            None => Command::new(agent),
        };
        command
            .args(["run", "--node-id", name, "--tick-ms", "100", "--keep-alive", "5s", "--heartbeat", "5s"])
            // Tests run credential lifetimes of seconds.
            .args(["--credential-check-within", "5s"])
            .arg("--data-dir")
            .arg(data)
            .arg("--status-file")
            .arg(data.join("status.json"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(data.with_extension("log")).unwrap());
        if let Some(token) = token {
            command.args(["--join", &controller.url, "--token", &token]);
            if controller.url.starts_with("https://") {
                command.args(["--ca-sha256", &controller.ca_sha256().unwrap()]);
            }
        }
        AgentProcess { child: Some(command.spawn().unwrap()), data: data.to_owned() }
    }

    /// kill -9 (its containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn runtime(&self) -> HelperRuntime {
        HelperRuntime::new(&binary("flotilla-agent").unwrap(), &self.data.join("runtime"), &self.data.join("bundles"))
    }

    /// Running containers: id -> pid.
    pub fn running(&self) -> Vec<(String, i32)> {
        let mut runtime = self.runtime();
        let mut out: Vec<(String, i32)> = runtime
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.status == Status::Running)
            .map(|s| (s.id.clone(), s.pid.unwrap_or(0)))
            .collect();
        out.sort();
        out
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
        // Containers and their overlay root filesystems outlive the agent.
        let _ = Command::new(binary("flotilla-agent").unwrap())
            .args(["stop-all", "--data-dir"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .status();
    }
}

/// A one-time join token from `flotilla node token create`.
pub fn join_token(controller: &ControllerProcess) -> String {
    let output = controller.cli().unwrap().args(["node", "token", "create"]).output().unwrap();
    assert!(output.status.success(), "token create: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Builds a busybox image (the host's static busybox) and pushes it into
/// the controller's registry as `e2e/busybox:1`; returns its reference.
pub fn push_busybox(controller: &ControllerProcess, dir: &Path) -> String {
    push_built(controller, dir, "busybox", &[])
}

/// Builds a busybox image named `name` with `flotilla-image` (`extra`: more
/// of its arguments, such as `--file /PATH=FILE`) and pushes it to the
/// controller's registry as `e2e/<name>:1`; returns its reference.
pub fn push_built(controller: &ControllerProcess, dir: &Path, name: &str, extra: &[&str]) -> String {
    let layout = dir.join(format!("oci-{name}"));
    let status = Command::new(binary("flotilla-image").unwrap())
        .args(["--tag", &format!("{name}:e2e"), "--binary", "amd64=/bin/busybox", "--path", "/bin/busybox"])
        .args(["--entrypoint", "/bin/busybox"])
        .args(extra)
        .arg("--output")
        .arg(&layout)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "building the test image {name}");
    let registry = controller.url.split_once("://").unwrap().1.to_owned();
    // Over HTTPS, skopeo trusts the fleet CA (a directory of *.crt files).
    let certs = dir.join("registry-certs");
    std::fs::create_dir_all(&certs).unwrap();
    let tls = match controller.url.starts_with("https://") {
        true => {
            std::fs::copy(controller.ca_path(), certs.join("ca.crt")).unwrap();
            format!("--dest-cert-dir={}", certs.display())
        }
        false => "--dest-tls-verify=false".to_owned(),
    };
    let output = Command::new("skopeo")
        .args(["copy", "--quiet", &tls, "--dest-creds"])
        .arg(format!("flotilla:{}", controller.token().unwrap()))
        .arg(format!("oci:{}:{name}:e2e", layout.display()))
        .arg(format!("docker://{registry}/e2e/{name}:1"))
        .output()
        .expect("skopeo is installed by scripts/setup");
    assert!(output.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&output.stderr));
    format!("{registry}/e2e/{name}:1")
}

/// Builds the example images (`images/build-examples`) and pushes each of
/// `tags` (e.g. `hello-http:0.1`, all its platforms) into the controller's
/// registry under `examples/`; returns their references.
pub fn push_examples(controller: &ControllerProcess, dir: &Path, tags: &[&str]) -> Vec<String> {
    // One build at a time: builds share their work directory under target/.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let layout = dir.join("examples");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/build-examples");
    let output = {
        let _one = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
        Command::new(&script)
            .arg(&layout)
            .env("FLOTILLA_IMAGE", binary("flotilla-image").unwrap())
            .stdout(Stdio::null())
            .output()
            .unwrap()
    };
    assert!(output.status.success(), "build-examples: {}", String::from_utf8_lossy(&output.stderr));
    let registry = controller.url.trim_start_matches("http://").to_owned();
    tags.iter()
        .map(|tag| {
            let output = Command::new("skopeo")
                .args(["copy", "--quiet", "--all", "--dest-tls-verify=false", "--dest-creds"])
                .arg(format!("flotilla:{}", controller.token().unwrap()))
                .arg(format!("oci:{}:{tag}", layout.display()))
                .arg(format!("docker://{registry}/examples/{tag}"))
                .output()
                .expect("skopeo is installed by scripts/setup");
            assert!(output.status.success(), "skopeo copy {tag}: {}", String::from_utf8_lossy(&output.stderr));
            format!("{registry}/examples/{tag}")
        })
        .collect()
}

/// A script that sleeps until SIGTERM ends it at once (a shell as PID 1
/// ignores SIGTERM without a trap).
pub const SLEEPER: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

/// A Deployment of `replicas` busybox containers running `script` (sh -c),
/// with a 2 s termination grace (a plain `sleep` as PID 1 ignores SIGTERM).
pub fn shell_deployment(name: &str, image: &str, replicas: usize, script: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: {image}
        args: ["sh", "-c", "{script}"]
        resources: {{requests: {{cpu: 100m, memory: 16Mi}}, limits: {{memory: 64Mi}}}}
"#
    )
}

/// `flotilla apply -f -` with `manifest`.
pub fn apply(controller: &ControllerProcess, manifest: &str) {
    let mut child = controller
        .cli()
        .unwrap()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(manifest.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "apply failed");
}

/// Every pod as `flotilla get pods -o json` shows it.
pub fn pod_list(controller: &ControllerProcess) -> Vec<Value> {
    let output = controller.cli().unwrap().args(["get", "pods", "-o", "json"]).output().unwrap();
    let list: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Whether a pod (as the API serves it) is ready and not being replaced by
/// a rollout: what a Service counts as an endpoint.
pub fn is_serving(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// `(name, phase, node)` of every pod, sorted.
pub fn pods(controller: &ControllerProcess) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = pod_list(controller)
        .iter()
        .map(|p| {
            let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
            (text(&p["metadata"]["name"]), text(&p["status"]["phase"]), text(&p["spec"]["nodeName"]))
        })
        .collect();
    out.sort();
    out
}

/// How many replicas whose names start with `prefix` the API shows Running.
pub fn running_count(controller: &ControllerProcess, prefix: &str) -> usize {
    pods(controller).iter().filter(|(name, phase, _)| name.starts_with(prefix) && phase == "Running").count()
}

/// [`push_busybox`], named by digest: replicas of it need no registry once
/// the controller that holds it is gone (the registry is per controller in
/// the HA tests).
pub fn push_busybox_pinned(controller: &ControllerProcess, dir: &Path) -> String {
    let pushed = push_busybox(controller, dir);
    let output = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}", "--creds"])
        .arg(format!("flotilla:{}", controller.token().unwrap()))
        .arg(format!("docker://{pushed}"))
        .output()
        .expect("skopeo is installed by scripts/setup");
    assert!(output.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&output.stderr));
    let digest = String::from_utf8(output.stdout).unwrap();
    format!("{}@{}", pushed.rsplit_once(':').unwrap().0, digest.trim())
}

/// Polls `check` every 100 ms until it gives a value; panics after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pods, if there are `count` and all run on `nodes`.
pub fn all_running_on(
    controller: &ControllerProcess,
    count: usize,
    nodes: &[&str],
) -> Option<Vec<(String, String, String)>> {
    let pods = pods(controller);
    (pods.len() == count && pods.iter().all(|(_, phase, node)| phase == "Running" && nodes.contains(&node.as_str())))
        .then_some(pods)
}

/// Waits until `count` nodes show as Ready.
pub fn wait_for_ready_nodes(controller: &ControllerProcess, count: usize, timeout: Duration) {
    wait_until(&format!("{count} nodes Ready"), timeout, || {
        let output = controller.cli().unwrap().args(["get", "nodes"]).output().unwrap();
        (String::from_utf8_lossy(&output.stdout).matches(" Ready ").count() == count).then_some(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_names_its_replicas_and_image() {
        let manifest = shell_deployment("fo-1", "10.0.0.1:7440/bench/busybox:1", 6, SLEEPER);
        assert!(manifest.contains("name: fo-1}"), "{manifest}");
        assert!(manifest.contains("replicas: 6"), "{manifest}");
        assert!(manifest.contains("image: 10.0.0.1:7440/bench/busybox:1"), "{manifest}");
    }
}
