//! `flotilla-agent`: the per-device agent.

use clap::Parser;
use flotilla_agent::cli::{Cli, Command};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> anyhow::Result<()> {
    // RUST_LOG as `level` or `target=level,...` lists (no regex matching).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|text| text.parse::<Targets>().ok())
        .unwrap_or_else(|| "info,libcgroups=error".parse().expect("a valid default filter"));
    // Plain text: stderr usually goes to journald, which stores escape codes
    // as they are. Explicit, because a workspace build unifies in the
    // controller's `ansi` feature, which colours by default.
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false))
        .with(filter)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Info) => {
            println!(
                "flotilla-agent {} protocol v{} profile {} arch {} os {}",
                env!("CARGO_PKG_VERSION"),
                firmware_proto::PROTOCOL_VERSION,
                firmware_proto::Profile::Linux.name(),
                std::env::consts::ARCH,
                std::env::consts::OS
            );
            Ok(())
        }
        // Single-threaded on purpose: libcontainer clones this process.
        Some(Command::RuntimeHelper(args)) => {
            flotilla_agent::runtime::helper::serve(&args.state_dir, &args.bundles_dir)
        }
        Some(Command::Run(args)) => flotilla_agent::run::run(*args),
        Some(Command::StopAll(args)) => flotilla_agent::run::stop_all(&args.data_dir),
        None => anyhow::bail!("no command given; see `flotilla-agent --help`"),
    }
}
