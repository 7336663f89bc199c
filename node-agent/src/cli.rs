//! The `flotilla-agent` command line.

use std::path::PathBuf;

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
    /// Run this node's workloads: apply signed desired documents, keep the
    /// containers running, bring them back after a reboot from local state.
    Run(Box<crate::run::RunArgs>),
    /// Print the wire protocol version and build facts, then exit.
    Info,
    /// Stop and remove every container of this agent (decommissioning a device, or
    /// cleaning up after a demo). The agent itself must not be running.
    StopAll(StopAllArgs),
    /// Internal: the single-threaded process that runs libcontainer for the
    /// agent (started by the agent itself; requests on stdin, answers on stdout).
    #[command(hide = true)]
    RuntimeHelper(RuntimeHelperArgs),
}

/// Options of the runtime helper.
#[derive(Debug, clap::Args)]
pub struct RuntimeHelperArgs {
    /// libcontainer's state directory.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Where container bundles are written.
    #[arg(long)]
    pub bundles_dir: PathBuf,
}

/// Options of `flotilla-agent stop-all`.
#[derive(Debug, clap::Args)]
pub struct StopAllArgs {
    /// The agent's data directory.
    #[arg(long, env = "FLOTILLA_AGENT_DATA_DIR", default_value = "/var/lib/flotilla-agent")]
    pub data_dir: PathBuf,
}
