//! The `flotilla-agent` command line.

use clap::{Parser, Subcommand};

/// Flotilla node agent: runs this device's workloads in containers and keeps
/// them running through reboots and lost links.
#[derive(Debug, Parser)]
#[command(name = "flotilla-agent", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands of `flotilla-agent`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect to the controller and run this node's workloads.
    Run,
    /// Print the wire protocol version and build facts, then exit.
    Info,
}
