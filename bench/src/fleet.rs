//! A real fleet on this machine for the end-to-end benchmarks (`failover`,
//! `wire`): the release binaries, a `flotilla server` process, agents with
//! real containers, and device network namespaces.
//!
//! Every part is a guard: dropping it stops its processes, deletes its
//! containers or removes its namespaces, so an error (or Ctrl-C, see
//! [`watch_interrupts`]) leaves nothing behind on the machine.
//!
//! # Layout
//! - [`controller`]: a `flotilla server` process and the API calls the
//!   benchmarks make.
//! - [`agent`]: `flotilla-agent` processes and their containers.
//! - the network: a bridge and one network namespace per device
//!   ([`flotilla_e2e::netns`], shared with the end-to-end tests).

pub mod agent;
pub mod controller;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};

use agent::{AgentProcess, AgentSettings};
use controller::{Controller, ControllerOptions};
use flotilla_e2e::netns::Network;

/// How a benchmark's fleet is set up.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Agents (devices), each in its own network namespace.
    pub agents: usize,
    /// The agents' `--keep-alive` and `--heartbeat`.
    pub keep_alive: Duration,
    /// More `flotilla server` arguments.
    pub extra_server_args: Vec<String>,
}

/// A running fleet: a controller on a bridge and agents in their own
/// network namespaces with the busybox image pushed. Fields drop in order:
/// agents (and their containers), then the controller, then the network.
pub struct Fleet {
    /// The agents, `edge-1`...
    pub agents: Vec<AgentProcess>,
    /// The controller.
    pub controller: Controller,
    /// The bridge and namespaces.
    pub network: Network,
    /// The busybox image's reference in the controller's registry.
    pub image: String,
}

impl Fleet {
    /// Starts the network, the controller on the bridge, the image and the
    /// agents, and waits until every node is Ready. `bench` prefixes progress.
    pub fn start(
        bench: &str,
        settings: &FleetSettings,
        binaries: &Binaries,
        dir: &tempfile::TempDir,
    ) -> anyhow::Result<Fleet> {
        let network = Network::create(settings.agents)?;
        let host = network.host_ip();
        let free_port = || -> anyhow::Result<u16> { Ok(std::net::TcpListener::bind((host, 0))?.local_addr()?.port()) };
        let options = ControllerOptions {
            api_addr: SocketAddr::from((host, free_port()?)),
            mqtt_listen: SocketAddr::from((host, free_port()?)),
            advertise: host.to_string(),
            extra_args: settings.extra_server_args.clone(),
            tls: false,
        };
        let controller = Controller::start(binaries, &dir.path().join("controller"), &options)?;
        eprintln!("{bench}: controller at {} on bridge {host}", controller.url());
        let image = controller.push_busybox(binaries, dir.path(), &host.to_string())?;
        let mut agents = Vec::new();
        for i in 0..settings.agents {
            let agent_settings = AgentSettings {
                binary: binaries.agent.clone(),
                keep_alive: settings.keep_alive,
                heartbeat: settings.keep_alive,
                tick_ms: Some(100),
                netns: Some(network.namespace(i)?.to_owned()),
            };
            let token = controller.join_token()?;
            let name = format!("edge-{}", i + 1);
            let data_dir = dir.path().join(&name);
            agents.push(AgentProcess::start(&name, &data_dir, agent_settings, Some((&controller.url(), &token)))?);
        }
        let fleet = Fleet { agents, controller, network, image };
        wait_until("every node to be Ready", Duration::from_secs(60), Duration::from_millis(100), || {
            Ok((fleet.controller.ready_nodes()?.len() == settings.agents).then_some(()))
        })
        .with_context(|| fleet.diagnostics("-"))?;
        eprintln!("{bench}: {} agents Ready", settings.agents);
        Ok(fleet)
    }

    /// What an operator would look at when a wait fails: the replicas and
    /// the ends of the logs.
    pub fn diagnostics(&self, prefix: &str) -> String {
        let pods = self.controller.pods(prefix).map(|p| format!("{p:?}")).unwrap_or_else(|e| format!("{e:#}"));
        let mut text = format!("replicas: {pods}\ncontroller log:\n{}", self.controller.log_tail(15));
        for agent in &self.agents {
            text += &format!("\nlog of {}:\n{}", agent.name(), agent.log_tail(10));
        }
        text
    }
}

/// The workspace binaries a fleet runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `flotilla`: the controller and the CLI.
    pub flotilla: PathBuf,
    /// `flotilla-agent`.
    pub agent: PathBuf,
    /// `flotilla-image`: builds the benchmark's OCI image.
    pub image: PathBuf,
}

impl Binaries {
    /// Finds the binaries in `dir`, by default the directory of this
    /// benchmark's own executable (`target/release` after
    /// `cargo build --release --bins`).
    pub fn locate(dir: Option<&Path>) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(dir) => dir.to_owned(),
            None => std::env::current_exe()
                .context("locating this benchmark's executable")?
                .parent()
                .map(Path::to_owned)
                .context("this benchmark's executable has no parent directory")?,
        };
        let find = |name: &str| {
            let path = dir.join(name);
            ensure!(
                path.is_file(),
                "{} not found: build the binaries first (`cargo build --release --bins`) or point --bin-dir at them",
                path.display()
            );
            Ok(path)
        };
        Ok(Binaries { flotilla: find("flotilla")?, agent: find("flotilla-agent")?, image: find("flotilla-image")? })
    }
}

/// Fails with a clear message unless this process runs as root.
pub fn require_root(bench: &str) -> anyhow::Result<()> {
    ensure!(nix::unistd::geteuid().is_root(), "{bench} runs real containers and network namespaces: run it as root");
    Ok(())
}

/// Set by the first SIGINT/SIGTERM: waits end with an error, so that the
/// guards unwind and clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Turns SIGINT and SIGTERM into an error at the next wait, instead of an
/// exit that would leave containers and namespaces behind; a second signal
/// exits at once. Child processes run in their own process groups, so a
/// Ctrl-C in the terminal reaches only this process.
pub fn watch_interrupts() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("interrupted twice: exiting without cleaning up");
            std::process::exit(130);
        }
    })
    .context("installing the signal handler")
}

fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; cleaning up");
    }
    Ok(())
}

/// Sleeps for `duration`, waking early with an error on an interrupt.
pub fn pause(duration: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + duration;
    loop {
        check_interrupted()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Calls `check` every `every` until it returns a value; fails after
/// `timeout` naming `what`. Errors from `check` end the wait.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        check_interrupted()?;
        ensure!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(every);
    }
}

/// A short suffix that makes names unique per benchmark run: replica names
/// become container ids and cgroup names, which are machine-wide.
pub fn unique_suffix() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{:05x}", (nanos ^ std::process::id().rotate_left(12)) & 0xf_ffff)
}

/// Median of durations in seconds (the mean of the middle two for an even
/// count); `None` when there are none.
pub fn median_s(samples: &[Duration]) -> Option<f64> {
    let mut seconds: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    seconds.sort_by(f64::total_cmp);
    let n = seconds.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(seconds[n / 2]),
        _ => Some((seconds[n / 2 - 1] + seconds[n / 2]) / 2.0),
    }
}

/// Seconds rounded to milliseconds, for the JSON output.
pub fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = |v: &[u64]| v.iter().map(|ms| Duration::from_millis(*ms)).collect::<Vec<_>>();
        assert_eq!(median_s(&s(&[])), None);
        assert_eq!(median_s(&s(&[3000, 1000, 2000])), Some(2.0));
        assert_eq!(median_s(&s(&[4000, 1000, 2000, 3000])), Some(2.5));
    }
}
