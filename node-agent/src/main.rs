//! `flotilla-agent`: the per-device agent.

use clap::Parser;
use flotilla_agent::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
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
        Some(Command::Run) | None => anyhow::bail!(
            "not supported yet: the agent's container runtime and control channel arrive with issues #6 and #8"
        ),
    }
}
