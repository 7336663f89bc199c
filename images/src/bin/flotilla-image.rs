//! `flotilla-image`: `flotilla image build` without the controller, for
//! build scripts (`images/build-examples`).

use clap::Parser;
use flotilla_images::cli::{BuildArgs, run_build};
use tracing_subscriber::EnvFilter;

// The command line: exactly `flotilla image build`'s arguments. No doc
// comment here: the help text is BuildArgs' own.
#[derive(Debug, Parser)]
#[command(name = "flotilla-image", version)]
struct Cli {
    #[command(flatten)]
    build: BuildArgs,
}

fn main() -> anyhow::Result<()> {
    // Warnings (a dynamically linked binary) go to stderr; RUST_LOG=debug shows more.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    run_build(&Cli::parse().build)
}
