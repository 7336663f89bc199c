//! `flotilla-bench pack`: the scheduler on bin-packing instances (issue #5).

/// Options of `flotilla-bench pack`.
#[derive(Debug, clap::Args)]
pub struct PackArgs {
    /// Instance files.
    pub files: Vec<std::path::PathBuf>,
}

/// Runs the benchmark.
pub fn run(_args: PackArgs) -> anyhow::Result<()> {
    anyhow::bail!("not supported yet: the scheduler arrives with issue #5")
}
