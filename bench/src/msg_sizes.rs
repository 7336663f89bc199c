//! `flotilla-bench msg-sizes`: encoded sizes of wire messages.

/// Runs the benchmark.
pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("not supported yet")
}
