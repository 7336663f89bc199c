//! `flotilla`: the controller and operator CLI.

use anyhow::Context;
use clap::Parser;
use flotilla_controller::cli::{ApplyArgs, Cli, Command, ServerArgs};
use flotilla_controller::manifest;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server(args),
        Command::Apply(args) => apply(args),
    }
}

fn server(args: ServerArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")?;
    runtime.block_on(async {
        tracing::info!(
            data_dir = %args.data_dir.display(),
            api_addr = %args.api_addr,
            protocol_version = firmware_proto::PROTOCOL_VERSION,
            "flotilla controller started"
        );
        tracing::warn!(
            "nothing to do yet: the store, API, broker and scheduler loop are not built \
             (issues #4-#8); press Ctrl-C to stop"
        );
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        tracing::info!("stopping");
        anyhow::Ok(())
    })
}

fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let mut parsed = manifest::load(&args.files)?;
    for warning in &parsed.warnings {
        eprintln!("warning: {warning}");
    }
    if args.strict {
        parsed = parsed.strict()?;
    }
    if !args.dry_run {
        anyhow::bail!(
            "not supported yet: storing objects needs the controller's API (issue #4); \
             use --dry-run to check manifests"
        );
    }
    for object in &parsed.objects {
        let name = &object.metadata.name;
        match object.metadata.namespace.as_str() {
            "" => println!("{}/{name} checked (dry run)", object.kind),
            ns => println!("{}/{name} in {ns} checked (dry run)", object.kind),
        }
    }
    Ok(())
}
