//! `flotilla-bench`: Flotilla's benchmarks. Each prints one JSON object per
//! line with the keys its issue names.

use clap::{Parser, Subcommand};

mod api;
mod connections;
mod failover;
mod fleet;
mod footprint;
mod ha;
mod handshake;
mod msg_sizes;
mod pack;
mod passes;
mod profiles;
mod rollout;
mod scale;
mod sched;
mod start;
mod wire;

/// Flotilla's benchmarks. Each prints one JSON object per line on stdout;
/// progress and notes go to stderr.
#[derive(Debug, Parser)]
#[command(name = "flotilla-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Controller API: apply latency, bulk load and listing 10,000 objects, on a real server process.
    Api(api::ApiArgs),
    /// Bytes a device pays per (re)connect to the broker: MQTT over TLS beside plain MQTT.
    Handshake(handshake::HandshakeArgs),
    /// The store's apply latency on a three-member etcd cluster beside the embedded redb store
    /// (leader and broker failover figures: not supported yet).
    Ha(ha::HaArgs),
    /// Broker memory per idle device connection: the embedded broker (gate + rumqttd) beside
    /// Mosquitto (and rumqttd alone, from an older build, with --baseline-bin-dir).
    Connections(connections::ConnectionsArgs),
    /// Node loss -> replicas running elsewhere, after kill -9 and after a silent partition (root).
    Failover(failover::FailoverArgs),
    /// Thousands of simulated devices (real agent and MQTT, simulated runtime) against a real
    /// controller: converge, steady, node-loss, site-loss, controller-restart, reconnect-storm.
    Fleet(scale::FleetArgs),
    /// The agent's binary size (aarch64) and idle RSS with 5 running containers.
    Footprint(footprint::FootprintArgs),
    /// Encoded size of the wire messages (heartbeats with 0, 4 and 16 replicas, ...).
    MsgSizes,
    /// The controller's reconcile passes in process at fleet scale (real store and controllers,
    /// nodes and device reports written directly): idle pass and node-loss pass times, memory.
    Passes(passes::PassesArgs),
    /// The largest desired document of each profile (compact, Linux): bytes, decode time, and the
    /// agent's apply of the Linux one (time, memory held).
    Profiles,
    /// Run the scheduler on bin-packing instances (BPPLIB 1-D or 2-D text files).
    Pack(pack::PackArgs),
    /// A 20-replica rolling update across 4 agents: time, most replicas running at once, fewest ready (root).
    Rollout(rollout::RolloutArgs),
    /// Scheduler throughput on a large mixed fleet.
    Sched(sched::SchedArgs),
    /// Time from a desired document to the container's process running, beside runc and an unshare floor (root).
    Start(start::StartArgs),
    /// MQTT bytes per hour of an idle node with running replicas, through a counting proxy (root).
    Wire(wire::WireArgs),
}

fn main() -> anyhow::Result<()> {
    // The controller's and agent's logs, when asked for (RUST_LOG); the
    // figures go to stdout.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()))
        .init();
    match Cli::parse().bench {
        Bench::Api(args) => api::run(args),
        Bench::Connections(args) => connections::run(args),
        Bench::Handshake(args) => handshake::run(args),
        Bench::Ha(args) => ha::run(args),
        Bench::Failover(args) => failover::run(args),
        Bench::Fleet(args) => scale::run(args),
        Bench::Footprint(args) => footprint::run(args),
        Bench::MsgSizes => msg_sizes::run(),
        Bench::Profiles => profiles::run(),
        Bench::Pack(args) => pack::run(args),
        Bench::Passes(args) => passes::run(args),
        Bench::Rollout(args) => rollout::run(args),
        Bench::Sched(args) => sched::run(args),
        Bench::Start(args) => start::run(args),
        Bench::Wire(args) => wire::run(args),
    }
}
