//! `flotilla-bench ha` (issue 20): the store's apply latency on a real
//! three-member etcd cluster (Debian's `etcd-server`) beside the embedded
//! redb store, in the same run, each behind a real `flotilla server`.
//!
//! Leader failover, acknowledged writes across leader and member kills and
//! broker failover are the other figures; they need leader election
//! and broker failover, which are not built yet: the benchmark says so.

use std::path::PathBuf;
use std::time::Instant;

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
    eprintln!(
        "leader failover, writes across leader and member kills, broker failover: not supported yet \
         (issue 20: leader election and broker failover are not built); no figures printed for them"
    );
    Ok(())
}
