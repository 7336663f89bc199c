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
    /// Apply manifests (Kubernetes-style YAML or JSON).
    ///
    /// Every document is checked first; fields Flotilla does not support are
    /// listed as warnings, and one invalid document refuses the whole apply.
    Apply(ApplyArgs),
}

/// Options of `flotilla apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Manifest files, directories (their .yaml, .yml and .json files) or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Treat every warning (ignored field, skipped kind) as an error.
    #[arg(long)]
    pub strict: bool,
    /// Only check the manifests and print what would be applied.
    #[arg(long)]
    pub dry_run: bool,
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
