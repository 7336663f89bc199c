//! `flotilla-bench ha` (issue 20): the store's apply latency on a real
//! three-member etcd cluster (Debian's `etcd-server`) beside the embedded
//! redb store, in the same run, each behind a real `flotilla server`; then
//! leader failover with a simulated fleet connected (`flotilla-bench fleet
//! leader-kill`: two controllers on that etcd, Mosquitto, kill -9 of the
//! leader `--leader-kills` times, etcd members killed between, applies
//! running throughout and checked afterwards).
//! Then broker failover (`flotilla-bench fleet broker-kill --broker
//! nats`): the NATS server the devices use is killed under the fleet.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::api::{agent, apply, config_map, ms, percentile, server_binary, start_with};

/// Options of `flotilla-bench ha`.
#[derive(Debug, clap::Args)]
pub struct HaArgs {
    /// Single-object applies timed on each store.
    #[arg(long, default_value_t = 300)]
    pub applies: usize,
    /// The `flotilla` binary [default: next to this benchmark].
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Simulated devices connected while the leader is killed (0: skip the failover part).
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Leader kills (the figure: none of the acknowledged writes lost across 20).
    #[arg(long, default_value_t = 20)]
    pub leader_kills: usize,
    /// etcd member kills, between leader kills.
    #[arg(long, default_value_t = 5)]
    pub etcd_member_kills: usize,
    /// Directory of the flotilla binaries for the failover part [default: this benchmark's own].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// Runs the benchmark.
pub fn run(args: HaArgs) -> anyhow::Result<()> {
    let (binary, profile) = server_binary(args.server_bin)?;
    let dir = tempfile::tempdir()?;
    eprintln!("starting a three-member etcd cluster");
    let cluster = flotilla_e2e::etcd::EtcdCluster::start(3, dir.path())?;
    let version = std::process::Command::new("etcd").arg("--version").output()?;
    let version = String::from_utf8_lossy(&version.stdout).lines().next().unwrap_or_default().to_owned();
    let redb = start_with(&binary, &dir.path().join("redb"), &[])?;
    let etcd = start_with(&binary, &dir.path().join("etcd"), &["--store", &cluster.url()])?;
    let http = agent();
    // Interleaved, so both see the same machine at the same moments.
    let (mut on_redb, mut on_etcd) = (Vec::new(), Vec::new());
    for i in 0..args.applies {
        for (server, times) in [(&redb, &mut on_redb), (&etcd, &mut on_etcd)] {
            let started = Instant::now();
            apply(&http, server, config_map(i, "bench-ha"))?;
            times.push(ms(started.elapsed()));
        }
    }
    for (store, times) in [("redb", &mut on_redb), ("etcd", &mut on_etcd)] {
        times.sort_by(f64::total_cmp);
        println!(
            "{}",
            json!({
                "bench": "ha-apply", "profile": profile, "store": store, "applies": args.applies,
                "p50_ms": percentile(times, 0.5), "p99_ms": percentile(times, 0.99),
                "etcd": if store == "etcd" { version.clone() } else { String::new() },
                "members": if store == "etcd" { 3 } else { 0 },
            })
        );
    }
    drop((redb, etcd, cluster));
    if args.nodes > 0 {
        let fleet = |scenario, broker, store, controllers| crate::scale::FleetArgs {
            scenario,
            nodes: args.nodes,
            replicas: None,
            broker,
            store,
            controllers,
            leader_kills: args.leader_kills,
            etcd_member_kills: args.etcd_member_kills,
            start_delay: Duration::from_millis(50),
            steady_for: Duration::ZERO,
            losses: 0,
            site_size: None,
            keep_alive: Duration::from_secs(60),
            heartbeat: Duration::from_secs(300),
            tick: Duration::from_millis(500),
            connect_rate: 1000,
            timeout: Duration::from_secs(600),
            bin_dir: args.bin_dir.clone(),
            keep: false,
        };
        use crate::scale::{BrokerKind, Scenario, StoreKind};
        crate::scale::run(fleet(Scenario::LeaderKill, BrokerKind::Mosquitto, StoreKind::Etcd, 2))?;
        crate::scale::run(fleet(Scenario::BrokerKill, BrokerKind::Nats, StoreKind::Redb, 1))?;
    }
    Ok(())
}
