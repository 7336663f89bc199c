//! A `flotilla server` process for a benchmark, and the API calls the
//! benchmarks make (plain HTTP with ureq: polling the pod list this way is
//! much faster than running `flotilla get pods -o json`).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use super::{Binaries, wait_until};

/// Where a controller listens and what it tells devices.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// The API and registry address.
    pub api_addr: SocketAddr,
    /// The embedded broker's address.
    pub mqtt_listen: SocketAddr,
    /// The host devices are told to use for the broker (`--advertise`).
    pub advertise: String,
    /// More `flotilla server` arguments (e.g. `--eviction-grace 1s`).
    pub extra_args: Vec<String>,
    /// Serve TLS, as `flotilla server` does by default; otherwise `--plain`
    /// (the simulated devices speak plain MQTT).
    pub tls: bool,
}

/// One replica as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// `metadata.name`: also the container id on its node.
    pub name: String,
    /// `status.phase`.
    pub phase: String,
    /// `spec.nodeName`, once placed.
    pub node: Option<String>,
}

impl Pod {
    /// Whether an agent reported it running.
    pub fn is_running(&self) -> bool {
        self.phase == "Running"
    }
}

/// A running `flotilla server`, killed when dropped.
pub struct Controller {
    child: Child,
    binaries: Binaries,
    options: ControllerOptions,
    flotilla: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    api_addr: SocketAddr,
    token: String,
    http: ureq::Agent,
}

impl Controller {
    /// Starts a server with its state in `data_dir` and waits until it is
    /// ready.
    pub fn start(binaries: &Binaries, data_dir: &Path, options: &ControllerOptions) -> anyhow::Result<Self> {
        let log = data_dir.with_extension("log");
        let child = spawn(binaries, data_dir, options, &log)?;
        let http = http_agent(None)?;
        let mut controller = Controller {
            child,
            binaries: binaries.clone(),
            options: options.clone(),
            flotilla: binaries.flotilla.clone(),
            data_dir: data_dir.to_owned(),
            log,
            api_addr: options.api_addr,
            token: String::new(),
            http,
        };
        controller.wait_ready()?;
        let token_file = data_dir.join("token");
        controller.token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("reading the API token {}", token_file.display()))?
            .trim()
            .to_owned();
        Ok(controller)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let ready_url = format!("{}/readyz", self.url());
        wait_until("the controller to answer /readyz", Duration::from_secs(60), Duration::from_millis(50), || {
            if let Some(status) = self.child.try_wait()? {
                bail!("flotilla server exited with {status}:\n{}", self.log_tail(20));
            }
            if self.options.tls {
                // The CA exists once the server made it.
                let Ok(pem) = std::fs::read(self.ca_path()) else { return Ok(None) };
                self.http = http_agent(Some(&pem))?;
            }
            Ok(self.http.get(&ready_url).call().is_ok_and(|r| r.status() == 200).then_some(()))
        })
    }

    /// The fleet CA's certificate (with TLS).
    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("ca.pem")
    }

    /// kill -9, then starts it again on the same data and waits until it is ready.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.restart()
    }

    /// kill -9 (a power cut): its data stays.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same data and waits until it is ready.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.child = spawn(&self.binaries, &self.data_dir, &self.options, &self.log)?;
        self.wait_ready()
    }

    /// How many lines of its log (every run's) contain `text`.
    pub fn log_lines_with(&self, text: &str) -> usize {
        std::fs::read_to_string(&self.log).map_or(0, |log| log.lines().filter(|l| l.contains(text)).count())
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The API token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The server process's resident memory.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        crate::scale::rss_of(self.pid())
    }

    /// The server process's CPU time so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        crate::scale::cpu_seconds_of(self.pid())
    }

    /// The store's resourceVersion (one more per object written): that of
    /// an empty list, which costs the server nothing (`/metrics` would: it
    /// reads the whole fleet).
    pub fn resource_version(&self) -> anyhow::Result<u64> {
        let path = "/api/v1/namespaces/flotilla-bench-nothing/configmaps";
        let mut response = self
            .http
            .get(format!("{}{path}", self.url()))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .with_context(|| format!("GET {path}"))?;
        let list: serde_json::Value = response.body_mut().read_json().with_context(|| format!("reading {path}"))?;
        list["resourceVersion"].as_str().and_then(|v| v.parse().ok()).context("no resourceVersion in an empty list")
    }

    /// A join token for `uses` devices, valid a day
    /// (`flotilla node token create --uses N --expires 24h`).
    pub fn fleet_token(&self, uses: usize) -> anyhow::Result<String> {
        let output = self
            .cli()
            .args(["node", "token", "create", "--uses", &uses.to_string(), "--expires", "24h"])
            .output()
            .context("running flotilla node token create")?;
        ensure!(
            output.status.success(),
            "flotilla node token create --uses {uses} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let token = String::from_utf8(output.stdout).context("the join token is not text")?.trim().to_owned();
        ensure!(!token.is_empty(), "flotilla node token create printed no token");
        Ok(token)
    }

    /// Up to `limit` distinct messages of Pending pods (why they wait).
    pub fn pending_reasons(&self, limit: usize) -> anyhow::Result<Vec<String>> {
        let list = self.get("/api/v1/pods")?;
        let mut reasons: Vec<String> = Vec::new();
        for pod in list["items"].as_array().into_iter().flatten() {
            if pod["status"]["phase"] == "Pending"
                && let Some(message) = pod["status"]["message"].as_str()
                && !reasons.iter().any(|r| r == message)
            {
                reasons.push(message.to_owned());
                if reasons.len() >= limit {
                    break;
                }
            }
        }
        Ok(reasons)
    }
}

/// The API client: trusting the fleet CA in `ca_pem` if given.
fn http_agent(ca_pem: Option<&[u8]>) -> anyhow::Result<ureq::Agent> {
    let tls = match ca_pem {
        Some(pem) => flotilla_controller::tls::trusting(pem)?,
        None => Default::default(),
    };
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(tls)
        .build()
        .into())
}

/// Starts `flotilla server` with its log in `log`.
fn spawn(binaries: &Binaries, data_dir: &Path, options: &ControllerOptions, log: &Path) -> anyhow::Result<Child> {
    {
        let child = Command::new(&binaries.flotilla)
            .args(["server", "--api-addr", &options.api_addr.to_string()])
            .args(["--mqtt-listen", &options.mqtt_listen.to_string()])
            .args(["--advertise", &options.advertise])
            // The simulated devices speak plain MQTT, as the figures
            // before TLS did: they measure the controller, not handshakes.
            .args(if options.tls { None } else { Some("--plain") })
            .args(&options.extra_args)
            .arg("--data-dir")
            .arg(data_dir)
            // FLOTILLA_BENCH_CONTROLLER_LOG: the controller's RUST_LOG, to look closer.
            .env("RUST_LOG", std::env::var("FLOTILLA_BENCH_CONTROLLER_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .with_context(|| format!("opening {}", log.display()))?,
            )
            // Its own process group: a Ctrl-C in the terminal is the
            // benchmark's to handle (see `watch_interrupts`).
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", binaries.flotilla.display()))?;
        Ok(child)
    }
}

impl Controller {
    /// `http://<api address>`.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.options.tls { "https" } else { "http" }, self.api_addr)
    }

    /// The last `lines` lines of the server's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// A `flotilla` CLI command pointed at this server.
    fn cli(&self) -> Command {
        let mut command = Command::new(&self.flotilla);
        command
            .env("FLOTILLA_SERVER", self.url())
            .env("FLOTILLA_TOKEN_FILE", self.data_dir.join("token"))
            .env("FLOTILLA_CA_FILE", self.ca_path())
            .env_remove("FLOTILLA_TOKEN");
        command
    }

    /// A one-time join token (`flotilla node token create --uses 1`).
    pub fn join_token(&self) -> anyhow::Result<String> {
        self.fleet_token(1)
    }

    /// Builds a busybox image from the host's static busybox, pushes it into
    /// this server's registry with skopeo, and returns its reference as
    /// devices see it (`<registry_host>:<api port>/bench/busybox:1`).
    pub fn push_busybox(&self, binaries: &Binaries, work_dir: &Path, registry_host: &str) -> anyhow::Result<String> {
        ensure!(Path::new("/bin/busybox").is_file(), "/bin/busybox missing: run scripts/setup (apt busybox-static)");
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => bail!("no OCI architecture name for this machine ({other})"),
        };
        let layout = work_dir.join("busybox-oci");
        let output = Command::new(&binaries.image)
            .args(["--tag", "busybox:b", "--binary", &format!("{arch}=/bin/busybox"), "--path", "/bin/busybox"])
            .args(["--entrypoint", "/bin/busybox", "--output"])
            .arg(&layout)
            .output()
            .with_context(|| format!("running {}", binaries.image.display()))?;
        ensure!(output.status.success(), "building the busybox image: {}", String::from_utf8_lossy(&output.stderr));
        let output = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false", "--dest-creds"])
            .arg(format!("flotilla:{}", self.token))
            .arg(format!("oci:{}:busybox:b", layout.display()))
            .arg(format!("docker://{}/bench/busybox:1", self.api_addr))
            .output()
            .context("running skopeo (installed by scripts/setup)")?;
        ensure!(output.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&output.stderr).trim());
        Ok(format!("{registry_host}:{}/bench/busybox:1", self.api_addr.port()))
    }

    /// Sends a request built by `build` (with the token) and returns the
    /// JSON answer (`null` for an empty one); a non-2xx answer is an error.
    fn request(
        &self,
        what: &str,
        build: impl FnOnce(&ureq::Agent, &str, &str) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        let bearer = format!("Bearer {}", self.token);
        let mut response = build(&self.http, &self.url(), &bearer).with_context(|| what.to_owned())?;
        let status = response.status().as_u16();
        // A fleet's pod list is far past ureq's 10 MB default.
        let text = response
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .with_context(|| format!("reading the answer to {what}"))?;
        ensure!((200..300).contains(&status), "{what}: {status} {text}");
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{what}: the answer is not JSON: {text}"))
    }

    /// Whether it leads now (`flotilla_controller_leading` on /metrics).
    pub fn leading(&self) -> anyhow::Result<bool> {
        let mut response = self
            .http
            .get(format!("{}/metrics", self.url()))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .context("GET /metrics")?;
        let text = response.body_mut().with_config().limit(1 << 30).read_to_string()?;
        Ok(text.lines().any(|l| l.trim() == "flotilla_controller_leading 1"))
    }

    /// GET an API path as JSON.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.request(&format!("GET {path}"), |http, url, bearer| {
            http.get(format!("{url}{path}")).header("Authorization", bearer).call()
        })
    }

    /// Applies one YAML manifest.
    pub fn apply(&self, manifest: &str) -> anyhow::Result<()> {
        let body = json!({ "documents": [{ "source": "bench.yaml", "text": manifest }] });
        self.request("POST /api/v1/apply", |http, url, bearer| {
            http.post(format!("{url}/api/v1/apply")).header("Authorization", bearer).send_json(&body)
        })
        .map(drop)
    }

    /// Deletes a Deployment in the default namespace.
    pub fn delete_deployment(&self, name: &str) -> anyhow::Result<()> {
        let path = format!("/api/v1/namespaces/default/deployments/{name}");
        self.request(&format!("DELETE {path}"), |http, url, bearer| {
            http.delete(format!("{url}{path}")).header("Authorization", bearer).call()
        })
        .map(drop)
    }

    /// The replicas in the default namespace whose names start with `prefix`.
    pub fn pods(&self, prefix: &str) -> anyhow::Result<Vec<Pod>> {
        let list = self.get("/api/v1/namespaces/default/pods")?;
        Ok(parse_pods(&list).into_iter().filter(|p| p.name.starts_with(prefix)).collect())
    }

    /// The replicas whose names start with `prefix`, as the API serves them.
    pub fn pod_objects(&self, prefix: &str) -> anyhow::Result<Vec<Value>> {
        let list = self.get("/api/v1/namespaces/default/pods")?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        Ok(items
            .into_iter()
            .filter(|p| p["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .collect())
    }

    /// Names of the nodes whose `Ready` condition is `True`.
    pub fn ready_nodes(&self) -> anyhow::Result<Vec<String>> {
        let list = self.get("/api/v1/nodes")?;
        Ok(parse_ready_nodes(&list))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn text(value: &Value) -> Option<String> {
    value.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Pods of a list answer; items without a name are skipped.
fn parse_pods(list: &Value) -> Vec<Pod> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pod| {
            Some(Pod {
                name: text(&pod["metadata"]["name"])?,
                phase: text(&pod["status"]["phase"]).unwrap_or_default(),
                node: text(&pod["spec"]["nodeName"]),
            })
        })
        .collect()
}

/// Names of the Ready nodes of a list answer.
fn parse_ready_nodes(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|node| {
            node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .filter_map(|node| text(&node["metadata"]["name"]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_read_from_a_list() {
        let list = json!({"items": [
            {"metadata": {"name": "a-1"}, "spec": {"nodeName": "edge-1"}, "status": {"phase": "Running"}},
            {"metadata": {"name": "a-2"}, "spec": {}, "status": {"phase": "Pending"}},
            {"metadata": {}, "status": {"phase": "Running"}},
        ]});
        assert_eq!(
            parse_pods(&list),
            vec![
                Pod { name: "a-1".into(), phase: "Running".into(), node: Some("edge-1".into()) },
                Pod { name: "a-2".into(), phase: "Pending".into(), node: None },
            ]
        );
        assert!(parse_pods(&json!({"error": "x"})).is_empty());
    }

    #[test]
    fn only_ready_nodes_are_listed() {
        let list = json!({"items": [
            {"metadata": {"name": "up"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "down"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
            {"metadata": {"name": "new"}, "status": {}},
        ]});
        assert_eq!(parse_ready_nodes(&list), vec!["up".to_owned()]);
    }
}
