//! The `flotilla` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Flotilla: a container orchestrator for fleets of ARM and bare-metal edge devices.
///
/// One binary, like k3s: `flotilla server` runs the control plane; the other
/// subcommands talk to it.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `flotilla`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: store, API, scheduler and reconcilers.
    Server(ServerArgs),
}

/// Options of `flotilla server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Directory for the controller's durable state (store, keys, token).
    #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = "/var/lib/flotilla")]
    pub data_dir: PathBuf,
    /// Address the HTTP API listens on.
    #[arg(long, env = "FLOTILLA_API_ADDR", default_value = "127.0.0.1:7440")]
    pub api_addr: SocketAddr,
}
