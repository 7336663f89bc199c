//! `flotilla-bench sched`: scheduler throughput (issue #5).

/// Options of `flotilla-bench sched`.
#[derive(Debug, clap::Args)]
pub struct SchedArgs {
    /// Number of nodes in the fleet.
    #[arg(long, default_value_t = 10_000)]
    pub nodes: usize,
    /// Number of pending replicas to place.
    #[arg(long, default_value_t = 100_000)]
    pub replicas: usize,
}

/// Runs the benchmark.
pub fn run(_args: SchedArgs) -> anyhow::Result<()> {
    anyhow::bail!("not supported yet: the scheduler arrives with issue #5")
}
