//! `flotilla-bench rollout`: an over-the-air update of a 20-replica
//! Deployment across 4 agents (issue #9).
//!
//! A real `flotilla server` and real agents, each in its own network
//! namespace, run busybox replicas with an exec readiness probe. Each run
//! changes the template (a new revision) and times it from the apply until
//! the Deployment reports the revision complete and no replaced replica is
//! left running. Meanwhile the pod list is polled every 50 ms:
//!
//! - `max_running`: replicas the agents report `Running`, replaced ones
//!   still stopping included: the rollout must keep it <= replicas +
//!   maxSurge;
//! - `min_ready`: ready replicas that are not being replaced (what a
//!   Service would send traffic to): must never reach 0.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;

use flotilla_e2e::fleet::is_serving;

use crate::fleet::{self, Binaries, Fleet, FleetSettings, wait_until};

/// Options of `flotilla-bench rollout`.
#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    /// Replicas of the Deployment.
    #[arg(long, default_value_t = 20)]
    pub replicas: usize,
    /// Agents (devices), each in its own network namespace.
    #[arg(long, default_value_t = 4)]
    pub agents: usize,
    /// Rollouts timed (each to a new revision).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// `maxSurge` (a number or a percentage).
    #[arg(long, default_value = "25%")]
    pub max_surge: String,
    /// `maxUnavailable` (a number or a percentage).
    #[arg(long, default_value = "25%")]
    pub max_unavailable: String,
    /// Directory of the flotilla, flotilla-agent and flotilla-image binaries
    /// [default: next to this benchmark].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// Poll period of the sampler.
const POLL: Duration = Duration::from_millis(50);

/// The Deployment at `version`: ready once its script wrote /ready.
fn deployment(name: &str, image: &str, args: &RolloutArgs, version: usize) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  strategy: {{rollingUpdate: {{maxSurge: "{surge}", maxUnavailable: "{unavailable}"}}}}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: main
        image: {image}
        args: ["sh", "-c", "trap 'exit 0' TERM; echo ok > /ready; while true; do sleep 1; done"]
        env: [{{name: VERSION, value: "{version}"}}]
        readinessProbe:
          exec: {{command: ["/bin/busybox", "test", "-f", "/ready"]}}
          periodSeconds: 1
        resources: {{requests: {{cpu: 20m, memory: 8Mi}}, limits: {{memory: 32Mi}}}}
"#,
        replicas = args.replicas,
        surge = args.max_surge,
        unavailable = args.max_unavailable,
    )
}

/// What one rollout took and what was seen meanwhile.
#[derive(Debug, Clone, Copy)]
struct Run {
    seconds: f64,
    max_running: usize,
    min_ready: usize,
}

/// Runs the benchmark.
pub fn run(args: RolloutArgs) -> anyhow::Result<()> {
    fleet::require_root("flotilla-bench rollout")?;
    ensure!(args.replicas >= 1 && args.agents >= 1 && args.runs >= 1, "--replicas, --agents and --runs must be >= 1");
    let binaries = Binaries::locate(args.bin_dir.as_deref())?;
    fleet::watch_interrupts()?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let settings = FleetSettings { agents: args.agents, keep_alive: Duration::from_secs(5), extra_server_args: vec![] };
    let fleet = Fleet::start("rollout", &settings, &binaries, &dir)?;
    let name = format!("ro-{}", fleet::unique_suffix());
    let prefix = format!("{name}-");

    fleet.controller.apply(&deployment(&name, &fleet.image, &args, 0))?;
    wait_for_revision(&fleet, &name, 1, Duration::from_secs(300)).context("the first revision")?;
    eprintln!("rollout: {} replicas of {name} ready on {} agents", args.replicas, args.agents);

    let mut runs = Vec::new();
    for version in 1..=args.runs {
        let started = Instant::now();
        fleet.controller.apply(&deployment(&name, &fleet.image, &args, version))?;
        let (mut max_running, mut min_ready) = (0, usize::MAX);
        let deadline = started + Duration::from_secs(600);
        loop {
            let pods = fleet.controller.pod_objects(&prefix)?;
            let running = pods.iter().filter(|p| p["status"]["phase"] == "Running").count();
            let ready = pods.iter().filter(|p| is_serving(p)).count();
            max_running = max_running.max(running);
            min_ready = min_ready.min(ready);
            let done = revision_complete(&fleet, &name, (version + 1) as u64)?
                && pods.len() == args.replicas
                && pods.iter().all(|p| p["metadata"]["deletionTimestamp"].is_null());
            if done {
                break;
            }
            ensure!(Instant::now() < deadline, "revision {} did not roll out in 10 minutes", version + 1);
            fleet::pause(POLL)?;
        }
        let run = Run { seconds: started.elapsed().as_secs_f64(), max_running, min_ready };
        eprintln!("rollout: revision {}: {run:?}", version + 1);
        runs.push(run);
    }

    let mut seconds: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let max_running = runs.iter().map(|r| r.max_running).max().unwrap_or(0);
    let min_ready = runs.iter().map(|r| r.min_ready).min().unwrap_or(0);
    let surge = resolve(&args.max_surge, args.replicas, true);
    println!(
        "{}",
        json!({
            "replicas": args.replicas,
            "agents": args.agents,
            "seconds": fleet::round_ms(median),
            "max_running": max_running,
            "min_ready": min_ready,
            "runs": args.runs,
            "seconds_each": runs.iter().map(|r| fleet::round_ms(r.seconds)).collect::<Vec<_>>(),
            "max_surge": args.max_surge,
            "max_unavailable": args.max_unavailable,
            "running_limit": args.replicas + surge,
            "within_limit": max_running <= args.replicas + surge,
            "never_zero_ready": min_ready > 0,
        })
    );
    Ok(())
}

/// `maxSurge`-style text -> a count (percentages rounded up or down).
fn resolve(value: &str, replicas: usize, round_up: bool) -> usize {
    match value.strip_suffix('%') {
        Some(percent) => {
            let scaled = replicas * percent.parse::<usize>().unwrap_or(0);
            if round_up { scaled.div_ceil(100) } else { scaled / 100 }
        }
        None => value.parse().unwrap_or(0),
    }
}

/// Whether the Deployment reports `revision` complete.
fn revision_complete(fleet: &Fleet, name: &str, revision: u64) -> anyhow::Result<bool> {
    let deployment = fleet.controller.get(&format!("/api/v1/namespaces/default/deployments/{name}"))?;
    let history = deployment["status"]["history"].as_array().cloned().unwrap_or_default();
    let failed = history.iter().find(|r| r["revision"] == revision && r["state"] == "Failed");
    ensure!(
        failed.is_none(),
        "revision {revision} failed: {}",
        failed.map(|r| r["reason"].clone()).unwrap_or_default()
    );
    Ok(deployment["status"]["revision"] == revision
        && history.iter().any(|r| r["revision"] == revision && r["state"] == "Complete"))
}

fn wait_for_revision(fleet: &Fleet, name: &str, revision: u64, timeout: Duration) -> anyhow::Result<()> {
    wait_until("the revision to be complete", timeout, Duration::from_millis(200), || {
        Ok(revision_complete(fleet, name, revision)?.then_some(()))
    })
    .with_context(|| fleet.diagnostics(&format!("{name}-")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_percentages_round_like_the_controller() {
        assert_eq!(resolve("25%", 20, true), 5);
        assert_eq!(resolve("30%", 4, true), 2);
        assert_eq!(resolve("30%", 4, false), 1);
        assert_eq!(resolve("3", 20, true), 3);
    }
}
