//! `flotilla-agent`: the per-device agent.

use clap::Parser;
use flotilla_agent::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,libcgroups=error")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Info) => {
            println!(
                "flotilla-agent {} protocol v{} arch {} os {}",
                env!("CARGO_PKG_VERSION"),
                firmware_proto::PROTOCOL_VERSION,
                std::env::consts::ARCH,
                std::env::consts::OS
            );
            Ok(())
        }
        // Single-threaded on purpose: libcontainer clones this process.
        Some(Command::RuntimeHelper(args)) => {
            flotilla_agent::runtime::helper::serve(&args.state_dir, &args.bundles_dir)
        }
        Some(Command::Run(args)) => flotilla_agent::run::run(args),
        Some(Command::StopAll(args)) => flotilla_agent::run::stop_all(&args.data_dir),
        None => anyhow::bail!("no command given; see `flotilla-agent --help`"),
    }
}
