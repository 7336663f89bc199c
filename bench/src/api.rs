//! `flotilla-bench api`: the controller API's apply latency and the time to
//! list many objects (issue #4), against a real `flotilla server` process.
//!
//! The server binary is the one built next to this benchmark (build both
//! with `cargo build --release -p flotilla-controller -p flotilla-bench` to
//! measure the release build), or `--server-bin`. Every apply is durable
//! (fsynced) before the server answers, so the floor is the disk's fsync
//! latency: it is measured in the same run, in the same directory, as the
//! reference figure.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

/// Options of `flotilla-bench api`.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Objects to load and then list.
    #[arg(long, default_value_t = 10_000)]
    pub objects: usize,
    /// Single-object applies timed one by one.
    #[arg(long, default_value_t = 200)]
    pub applies: usize,
    /// Objects per apply request when loading.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Lists timed.
    #[arg(long, default_value_t = 5)]
    pub lists: usize,
    /// The `flotilla` binary [default: next to this benchmark].
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
}

pub(crate) struct Server {
    child: Child,
    url: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(binary: &PathBuf, data: &std::path::Path) -> anyhow::Result<Server> {
    start_with(binary, data, &[])
}

/// A `flotilla server --plain` on free ports, with `extra` arguments.
pub(crate) fn start_with(binary: &PathBuf, data: &std::path::Path, extra: &[&str]) -> anyhow::Result<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mqtt_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(binary)
        .args(["server", "--plain", "--api-addr", &format!("127.0.0.1:{port}")])
        .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt_port}"), "--data-dir"])
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let url = format!("http://127.0.0.1:{port}");
    let agent = agent();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.get(format!("{url}/readyz")).call().map(|r| r.status() != 200).unwrap_or(true) {
        anyhow::ensure!(Instant::now() < deadline, "the server did not become ready in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let token = std::fs::read_to_string(data.join("token"))?.trim().to_owned();
    Ok(Server { child, url, token })
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

pub(crate) fn config_map(i: usize, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bench-{i:06}\n  namespace: {namespace}\n  labels: {{app: bench, shard: \"{}\"}}\n\
         data:\n  interval: \"{}s\"\n  endpoint: mqtt://broker.line-{}.local:1883\n",
        i % 16,
        i % 60,
        i % 8
    )
}

pub(crate) fn apply(agent: &ureq::Agent, server: &Server, text: String) -> anyhow::Result<()> {
    let body = json!({ "documents": [{ "source": "bench.yaml", "text": text }] });
    let mut response = agent
        .post(format!("{}/api/v1/apply", server.url))
        .header("Authorization", format!("Bearer {}", server.token))
        .send_json(&body)?;
    anyhow::ensure!(response.status() == 200, "apply: {}", response.body_mut().read_to_string()?);
    Ok(())
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The `flotilla` binary (`given`, or the one next to this benchmark) and
/// the profile it was built with.
pub(crate) fn server_binary(given: Option<PathBuf>) -> anyhow::Result<(PathBuf, &'static str)> {
    let binary = match given {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("flotilla"),
    };
    anyhow::ensure!(
        binary.is_file(),
        "{} not found: build it (cargo build --release -p flotilla-controller)",
        binary.display()
    );
    let profile = if binary.components().any(|c| c.as_os_str() == "release") { "release" } else { "debug" };
    Ok((binary, profile))
}

/// Runs the benchmark.
pub fn run(args: ApiArgs) -> anyhow::Result<()> {
    let (binary, profile) = server_binary(args.server_bin)?;
    let dir = tempfile::tempdir()?;
    let server = start(&binary, &dir.path().join("data"))?;
    let agent = agent();

    // Reference: the floor of a durable write in the same directory, the
    // way a database does it (rewrite a page of an existing file, fdatasync).
    let mut fsyncs = Vec::new();
    let mut probe =
        std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(dir.path().join("probe"))?;
    probe.write_all(&[0u8; 4096])?;
    probe.sync_all()?;
    for i in 0..args.applies.max(1) {
        use std::os::unix::fs::FileExt;
        let started = Instant::now();
        probe.write_all_at(&[i as u8; 4096], 0)?;
        probe.sync_data()?;
        fsyncs.push(ms(started.elapsed()));
    }
    fsyncs.sort_by(f64::total_cmp);

    let mut latencies = Vec::with_capacity(args.applies);
    for i in 0..args.applies {
        let started = Instant::now();
        apply(&agent, &server, config_map(i, "bench-latency"))?;
        latencies.push(ms(started.elapsed()));
    }
    latencies.sort_by(f64::total_cmp);
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    println!(
        "{}",
        json!({
            "bench": "apply", "profile": profile, "applies": args.applies,
            "p50_ms": percentile(&latencies, 0.5), "p99_ms": percentile(&latencies, 0.99),
            "mean_ms": (mean * 1000.0).round() / 1000.0,
            "reference": "4 KiB pwrite + fdatasync in the same directory",
            "fsync_p50_ms": percentile(&fsyncs, 0.5), "fsync_p99_ms": percentile(&fsyncs, 0.99),
        })
    );

    eprintln!("loading {} objects in batches of {}", args.objects, args.batch);
    let started = Instant::now();
    let mut loaded = 0;
    while loaded < args.objects {
        let end = (loaded + args.batch.max(1)).min(args.objects);
        let text: Vec<String> = (loaded..end).map(|i| config_map(i, "bench")).collect();
        apply(&agent, &server, text.join("---\n"))?;
        loaded = end;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "bench": "bulk-apply", "profile": profile, "objects": args.objects, "batch": args.batch,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "objects_per_s": (args.objects as f64 / seconds).round(),
        })
    );

    let mut times = Vec::new();
    let mut bytes = 0;
    let mut items = 0;
    for _ in 0..args.lists.max(1) {
        let started = Instant::now();
        let mut response = agent
            .get(format!("{}/api/v1/namespaces/bench/configmaps", server.url))
            .header("Authorization", format!("Bearer {}", server.token))
            .call()?;
        let body = response.body_mut().with_config().limit(1 << 30).read_to_string()?;
        let list: Value = serde_json::from_str(&body)?;
        times.push(ms(started.elapsed()));
        bytes = body.len();
        items = list["items"].as_array().map_or(0, Vec::len);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "bench": "list", "profile": profile, "objects": items, "bytes": bytes,
            "median_ms": percentile(&times, 0.5), "best_ms": times[0],
            "server_rss_kib": rss_kib(server.child.id()),
        })
    );
    Ok(())
}
