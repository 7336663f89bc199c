//! `flotilla-bench wire`: the MQTT bytes an idle node costs per hour
//! (issue #8; target <= 20 KB/hour, since devices on cellular pay for them).
//!
//! One real agent with `--replicas` running containers and, by default, the
//! agent's default settings (keep-alive 60 s, heartbeat 300 s) talks to a
//! real `flotilla server` through a byte-counting TCP proxy
//! ([`proxy::CountingProxy`]). Once the replicas run and the link has been
//! quiet for `--quiet`, the proxy's counters are read over `--seconds`.
//!
//! How the agent is routed through the proxy: the controller's broker
//! listens on 127.0.0.1:M and the controller advertises 127.0.0.2 (another
//! loopback address), so enrolment hands the agent `mqtt://127.0.0.2:M`,
//! where the proxy listens and forwards to 127.0.0.1:M. The agent enrols
//! normally and every MQTT byte crosses the proxy from its first connection;
//! nothing is edited. The registry is not proxied: the image reference names
//! 127.0.0.1 explicitly, and image pulls are not idle traffic anyway.
//!
//! Output: `seconds_measured`, `bytes_per_hour` (MQTT bytes, both
//! directions) and `bytes_per_hour_with_tcpip` (plus an IP/TCP header
//! estimate, see [`proxy::Traffic::bytes_with_tcpip`]), the settings, and
//! the raw counts.

pub(crate) mod proxy;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;

use crate::fleet::agent::{AgentProcess, AgentSettings};
use crate::fleet::controller::{Controller, ControllerOptions};
use crate::fleet::{self, Binaries, pause, wait_until};
use proxy::CountingProxy;

/// Options of `flotilla-bench wire`.
#[derive(Debug, clap::Args)]
pub struct WireArgs {
    /// Seconds of idle traffic counted.
    #[arg(long, default_value_t = 300)]
    pub seconds: u64,
    /// Running replicas on the node.
    #[arg(long, default_value_t = 4)]
    pub replicas: usize,
    /// The agent's `--keep-alive` (its default: 60s).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub keep_alive: Duration,
    /// The agent's `--heartbeat` (its default: 300s).
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
    /// How long the link must carry nothing before the node counts as idle
    /// and the measurement starts.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub quiet: Duration,
    /// Directory of the flotilla, flotilla-agent and flotilla-image binaries
    /// [default: next to this benchmark].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// Where the controller, its API and its broker listen.
const CONTROLLER_HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// What the controller advertises as the broker host: the proxy's address.
const PROXY_HOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The target, bytes per node per hour.
const TARGET_BYTES_PER_HOUR: u64 = 20_000;

fn free_port(host: Ipv4Addr) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((host, 0)).context("finding a free port")?.local_addr()?.port())
}

/// Runs the benchmark.
pub fn run(args: WireArgs) -> anyhow::Result<()> {
    fleet::require_root("flotilla-bench wire")?;
    ensure!(args.seconds > 0, "--seconds must be at least 1");
    let binaries = Binaries::locate(args.bin_dir.as_deref())?;
    fleet::watch_interrupts()?;
    // Declared in this order so that they drop in the reverse one: the agent
    // and its containers first, the proxy and the files last.
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let broker = SocketAddr::from((CONTROLLER_HOST, free_port(CONTROLLER_HOST)?));
    let proxy = CountingProxy::start(SocketAddr::from((PROXY_HOST, broker.port())), broker)
        .with_context(|| format!("starting the proxy on {PROXY_HOST}:{}", broker.port()))?;
    let options = ControllerOptions {
        api_addr: SocketAddr::from((CONTROLLER_HOST, free_port(CONTROLLER_HOST)?)),
        mqtt_listen: broker,
        advertise: PROXY_HOST.to_string(),
        extra_args: Vec::new(),
        tls: false,
    };
    let controller = Controller::start(&binaries, &dir.path().join("controller"), &options)?;
    eprintln!("wire: controller at {}, broker {broker}, proxy {}", controller.url(), proxy.local_addr());
    let image = controller.push_busybox(&binaries, dir.path(), &CONTROLLER_HOST.to_string())?;

    let suffix = fleet::unique_suffix();
    let node = format!("wire-{suffix}");
    let settings = AgentSettings {
        binary: binaries.agent.clone(),
        keep_alive: args.keep_alive,
        heartbeat: args.heartbeat,
        tick_ms: None,
        netns: None,
    };
    let token = controller.join_token()?;
    let mut agent = AgentProcess::start(&node, &dir.path().join("agent"), settings, Some((&controller.url(), &token)))?;
    wait_until("the node to be Ready", Duration::from_secs(60), Duration::from_millis(100), || {
        Ok(controller.ready_nodes()?.contains(&node).then_some(()))
    })
    .with_context(|| format!("agent log:\n{}", agent.log_tail(20)))?;
    ensure!(
        proxy.traffic().connections > 0,
        "the agent is Ready but never connected through the proxy: check mqttUrl in {}",
        agent.data_dir().join("enrolment.json").display()
    );

    let deployment = format!("wire-{suffix}");
    let prefix = format!("{deployment}-");
    controller.apply(&flotilla_e2e::fleet::shell_deployment(
        &deployment,
        &image,
        args.replicas,
        flotilla_e2e::fleet::SLEEPER,
    ))?;
    wait_until("the replicas to run", Duration::from_secs(180), Duration::from_millis(200), || {
        let pods = controller.pods(&prefix)?;
        Ok((pods.len() == args.replicas && pods.iter().all(|p| p.is_running())).then_some(()))
    })
    .with_context(|| format!("agent log:\n{}", agent.log_tail(20)))?;
    eprintln!("wire: {} replicas running; waiting for {:?} of silence on the link", args.replicas, args.quiet);
    wait_until("the link to go quiet", Duration::from_secs(300), Duration::ZERO, || {
        let before = proxy.traffic();
        pause(args.quiet)?;
        Ok((proxy.traffic() == before).then_some(()))
    })?;

    eprintln!("wire: counting for {} s", args.seconds);
    let before = proxy.traffic();
    let started = Instant::now();
    pause(Duration::from_secs(args.seconds))?;
    let measured = proxy.traffic().since(before);
    let seconds = started.elapsed().as_secs_f64();

    // The node must still be doing its job at the end.
    let pods = controller.pods(&prefix)?;
    ensure!(
        pods.len() == args.replicas && pods.iter().all(|p| p.is_running()),
        "replicas stopped running while measured: {pods:?}"
    );
    let containers = agent.running_containers()?;
    ensure!(
        pods.iter().all(|p| containers.contains(&p.name)),
        "the API lists {pods:?} but the node runs {containers:?}"
    );

    let per_hour = |bytes: u64| (bytes as f64 * 3600.0 / seconds).round() as u64;
    let bytes_per_hour = per_hour(measured.bytes());
    println!(
        "{}",
        json!({
            "seconds_measured": fleet::round_ms(seconds),
            "bytes_per_hour": bytes_per_hour,
            "bytes_per_hour_with_tcpip": per_hour(measured.bytes_with_tcpip()),
            "target_bytes_per_hour": TARGET_BYTES_PER_HOUR,
            "replicas": args.replicas,
            "keepalive_s": args.keep_alive.as_secs_f64(),
            "heartbeat_s": args.heartbeat.as_secs_f64(),
            "bytes_up": measured.bytes_up,
            "bytes_down": measured.bytes_down,
            "segments_up": measured.segments_up,
            "segments_down": measured.segments_down,
            "reconnects": measured.connections,
            "tcpip_estimate": format!(
                "{} header bytes per data segment (one per proxy read) plus one ACK of the same size back",
                proxy::HEADER_BYTES
            ),
        })
    );
    if bytes_per_hour > TARGET_BYTES_PER_HOUR {
        eprintln!("wire: {bytes_per_hour} bytes/hour is above the {TARGET_BYTES_PER_HOUR} target");
    }
    Ok(())
}
