//! `flotilla-bench failover`: how long a lost node's replicas take to run
//! elsewhere (issue #8; targets: <= 2 s after a crash, <= 1.5 x keep-alive
//! + 1 s after a silent partition).
//!
//! A real `flotilla server` and `--agents` real agents, each in its own
//! network namespace behind a bridge (like devices on a factory network),
//! run busybox containers. Each run applies a fresh Deployment of
//! `--replicas`, waits until they all run, picks the agent holding the most
//! replicas and takes it away:
//!
//! - crash: `kill -9` of the agent (its TCP connection closes, so the
//!   broker publishes its Last Will at once);
//! - silent partition: `eth0` of its namespace goes down; no connection
//!   closes, so the controller learns of it only from the broker's
//!   keep-alive timeout (1.5 x the agent's `--keep-alive`).
//!
//! The clock runs from just before the fault until the API (what the agents
//! reported) shows every one of the victim's replicas `Running` on another
//! node, polled every 10 ms; afterwards each is checked to be a running
//! container on that node. Then the agent is restarted (or its link comes
//! back), it must stop its moved copies (fencing), and the Deployment is
//! deleted before the next run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;

use crate::fleet::agent::AgentProcess;
use crate::fleet::controller::Pod;
use crate::fleet::{self, Binaries, Fleet, FleetSettings, wait_until};

/// Options of `flotilla-bench failover`.
#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// Runs of each fault (crash, partition).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Agents (devices), each in its own network namespace.
    #[arg(long, default_value_t = 3)]
    pub agents: usize,
    /// Replicas of each run's Deployment.
    #[arg(long, default_value_t = 6)]
    pub replicas: usize,
    /// The agents' `--keep-alive` and `--heartbeat`: a partition is noticed
    /// after 1.5 x this.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub keep_alive: Duration,
    /// The controller's `--eviction-grace` (its default).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub eviction_grace: Duration,
    /// Directory of the flotilla, flotilla-agent and flotilla-image binaries
    /// [default: next to this benchmark].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// How a node is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `kill -9` of the agent.
    Crash,
    /// Its link goes down; connections stay open.
    Partition,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::Partition => "partition",
        }
    }
}

/// Polling period while the clock runs.
const POLL: Duration = Duration::from_millis(10);

/// Runs the benchmark.
pub fn run(args: FailoverArgs) -> anyhow::Result<()> {
    fleet::require_root("flotilla-bench failover")?;
    ensure!(args.agents >= 2, "--agents must be at least 2: replicas need somewhere to go");
    ensure!(args.replicas >= 1 && args.runs >= 1, "--replicas and --runs must be at least 1");
    let binaries = Binaries::locate(args.bin_dir.as_deref())?;
    fleet::watch_interrupts()?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let settings = FleetSettings {
        agents: args.agents,
        keep_alive: args.keep_alive,
        extra_server_args: vec!["--eviction-grace".into(), humantime::format_duration(args.eviction_grace).to_string()],
    };
    let mut fleet = Fleet::start("failover", &settings, &binaries, &dir)?;

    let suffix = fleet::unique_suffix();
    let mut crash = Vec::new();
    let mut partition = Vec::new();
    for run in 0..args.runs {
        for fault in [Fault::Crash, Fault::Partition] {
            let deployment = format!("fo-{}-{suffix}-{run}", fault.label());
            let took = trial(&mut fleet, fault, &deployment, args.replicas)
                .with_context(|| format!("run {} ({})", run + 1, fault.label()))?;
            match fault {
                Fault::Crash => crash.push(took),
                Fault::Partition => partition.push(took),
            }
        }
    }

    let seconds = |samples: &[Duration]| samples.iter().map(|d| fleet::round_ms(d.as_secs_f64())).collect::<Vec<_>>();
    let keep_alive = args.keep_alive.as_secs_f64();
    println!(
        "{}",
        json!({
            "runs": args.runs,
            "crash_s_median": fleet::median_s(&crash).map(fleet::round_ms),
            "partition_s_median": fleet::median_s(&partition).map(fleet::round_ms),
            "keepalive_s": keep_alive,
            "crash_s": seconds(&crash),
            "partition_s": seconds(&partition),
            "crash_target_s": 2.0,
            "partition_target_s": 1.5 * keep_alive + 1.0,
            "eviction_grace_s": args.eviction_grace.as_secs_f64(),
            "agents": args.agents,
            "replicas": args.replicas,
            "partition_method": "ip link set eth0 down in the agent's network namespace",
        })
    );
    Ok(())
}

/// One run of one fault: returns the time until the victim's replicas run
/// elsewhere; leaves the fleet whole again with no replicas.
fn trial(fleet: &mut Fleet, fault: Fault, deployment: &str, replicas: usize) -> anyhow::Result<Duration> {
    let prefix = format!("{deployment}-");
    fleet.controller.apply(&flotilla_e2e::fleet::shell_deployment(
        deployment,
        &fleet.image,
        replicas,
        flotilla_e2e::fleet::SLEEPER,
    ))?;
    let placed = wait_until("the replicas to run", Duration::from_secs(180), Duration::from_millis(100), || {
        let pods = fleet.controller.pods(&prefix)?;
        Ok((pods.len() == replicas && pods.iter().all(|p| p.is_running() && p.node.is_some())).then_some(pods))
    })
    .with_context(|| fleet.diagnostics(&prefix))?;
    let victim = busiest_agent(&fleet.agents, &placed).context("no replica is on a known agent")?;
    let victim_name = fleet.agents[victim].name().to_owned();
    let moved: Vec<String> =
        placed.iter().filter(|p| p.node.as_deref() == Some(victim_name.as_str())).map(|p| p.name.clone()).collect();

    let started = Instant::now();
    match fault {
        Fault::Crash => fleet.agents[victim].kill9()?,
        Fault::Partition => fleet.network.set_link(victim, false)?,
    }
    let placed = wait_until("the replicas to run on other nodes", Duration::from_secs(120), POLL, || {
        let pods = fleet.controller.pods(&prefix)?;
        let all_moved = moved.iter().all(|name| {
            pods.iter().any(|p| &p.name == name && p.is_running() && p.node.as_ref().is_some_and(|n| *n != victim_name))
        });
        Ok(all_moved.then_some(pods))
    })
    .with_context(|| fleet.diagnostics(&prefix))?;
    let took = started.elapsed();
    eprintln!(
        "failover: {}: {victim_name} held {} of {replicas} replicas; running elsewhere after {:.3} s",
        fault.label(),
        moved.len(),
        took.as_secs_f64()
    );
    check_containers(&mut fleet.agents, &placed, &moved)?;

    // Bring the node back; it must stop its moved copies (fencing).
    match fault {
        Fault::Crash => fleet.agents[victim].restart()?,
        Fault::Partition => fleet.network.set_link(victim, true)?,
    }
    let agent = &mut fleet.agents[victim];
    wait_until("the lost node to come back and stop its moved replicas", Duration::from_secs(120), POLL, || {
        let ready = fleet.controller.ready_nodes()?.contains(&victim_name);
        let stale = agent.running_containers()?.iter().any(|id| moved.contains(id));
        Ok((ready && !stale).then_some(()))
    })
    .with_context(|| format!("log of {victim_name}:\n{}", agent.log_tail(30)))?;

    fleet.controller.delete_deployment(deployment)?;
    wait_until("the replicas to be gone", Duration::from_secs(60), Duration::from_millis(100), || {
        if !fleet.controller.pods(&prefix)?.is_empty() {
            return Ok(None);
        }
        for agent in &mut fleet.agents {
            if agent.running_containers()?.iter().any(|id| id.starts_with(&prefix)) {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .with_context(|| fleet.diagnostics(&prefix))?;
    Ok(took)
}

/// The agent holding the most replicas (the first of equals).
fn busiest_agent(agents: &[AgentProcess], pods: &[Pod]) -> Option<usize> {
    let held = |name: &str| pods.iter().filter(|p| p.node.as_deref() == Some(name)).count();
    let (index, count) = agents.iter().enumerate().map(|(i, a)| (i, held(a.name()))).rev().max_by_key(|(_, n)| *n)?;
    (count > 0).then_some(index)
}

/// Each moved replica must be a running container on the node the API
/// names: the API's `Running` is what that agent reported, checked here
/// against the machine.
fn check_containers(agents: &mut [AgentProcess], pods: &[Pod], moved: &[String]) -> anyhow::Result<()> {
    for pod in pods.iter().filter(|p| moved.contains(&p.name)) {
        let node = pod.node.as_deref().unwrap_or_default();
        let agent = agents.iter_mut().find(|a| a.name() == node).with_context(|| format!("unknown node {node}"))?;
        let running = agent.running_containers()?;
        ensure!(running.contains(&pod.name), "the API says {} runs on {node}, which runs {running:?}", pod.name);
    }
    Ok(())
}
