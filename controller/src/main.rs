//! `flotilla`: the controller and operator CLI.

use anyhow::Context;
use clap::CommandFactory;
use flotilla_controller::cli::{Cli, Command, ImageCommand, ServerArgs};
use flotilla_controller::{commands, server};
use tracing_subscriber::EnvFilter;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rumqttd=warn")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse_args();
    let result = match cli.command {
        Command::Server(args) => run_server(*args),
        Command::Apply(args) => commands::apply(args),
        Command::Get(args) => commands::get(args),
        Command::Describe(args) => commands::describe(args),
        Command::Delete(args) => commands::delete(args),
        Command::Logs(args) => commands::logs(args),
        Command::Rollout(args) => flotilla_controller::rollout_cmd::run(args),
        Command::Node(args) => flotilla_controller::node_cmd::run(args),
        Command::Image(args) => match args.command {
            ImageCommand::Build(build) => flotilla_images::cli::run_build(&build),
            ImageCommand::Push(push) => flotilla_controller::image_cmd::run_push(push),
            ImageCommand::Ls(ls) => flotilla_controller::image_cmd::run_ls(ls),
        },
        Command::MosquittoConfig(args) => {
            let data_dir = args.data_dir.unwrap_or_else(server::default_data_dir);
            flotilla_controller::fleet::mosquitto::write(&data_dir, &args.out, &args.mqtt_prefix, args.port).map(
                |nodes| eprintln!("wrote {}/{{passwd,acl,mosquitto.conf}} for the controller and {nodes} node(s); start with: mosquitto -c {}/mosquitto.conf", args.out.display(), args.out.display()),
            )
        }
        Command::Completion(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "flotilla", &mut std::io::stdout());
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    limit_malloc_arenas();
    let config = server::ServerConfig::from_args(args)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")?;
    runtime.block_on(async {
        // Install the handlers before anything says "ready": a signal that
        // arrives early must still mean a clean shutdown.
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("shutting down: draining (a second signal exits at once)");
            // The first signal drains; a second one means now.
            tokio::spawn(async move {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                tracing::warn!("second signal: exiting without draining");
                std::process::exit(130);
            });
        };
        server::run(config, shutdown).await
    })
}

/// glibc gives threads that allocate at once their own arenas (up to 8 per
/// core), and each keeps its freed memory: the server's short-lived
/// blocking threads grew its RSS by gigabytes at 10,000 devices that way.
/// glibc reads `MALLOC_ARENA_MAX` only at start, so when it is unset the
/// server runs itself again, once, with two arenas (an operator's own
/// setting still decides). `exec` keeps the pid, so a supervisor sees
/// nothing of it.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        use std::os::unix::process::CommandExt;
        let Ok(exe) = std::env::current_exe() else { return };
        let error =
            std::process::Command::new(exe).args(std::env::args_os().skip(1)).env("MALLOC_ARENA_MAX", "2").exec();
        // Only reached when exec failed: run as we are.
        tracing::warn!(%error, "could not limit malloc arenas; running with glibc's defaults");
    }
}
