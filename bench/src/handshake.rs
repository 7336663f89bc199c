//! `flotilla-bench handshake`: the bytes a device pays to (re)connect to
//! the controller's broker, over TLS (the default) beside plain MQTT
//! (`--plain`), in the same run.
//!
//! A real `flotilla server` of each kind; a device enrolled with the
//! agent's own code (`Enrolment::join`, the CA pinned by its hash); then
//! `--connects` MQTT connections as the agent makes them (its login, its
//! TLS settings: the fleet CA, TLS 1.3, ring), each through a byte-counting
//! TCP proxy from the first byte until CONNACK plus what the broker sends
//! right after it (TLS 1.3 session tickets), then a clean disconnect. The
//! first TLS connection is a full handshake; later ones resume the session
//! (the agent keeps its TLS settings, and with them rustls' session cache,
//! for the life of the process, so every reconnect but the first after a
//! restart resumes).
//!
//! Output, one line per connection: `transport` (`mqtt`, `mqtts`),
//! `connect` (1, 2, ...), `bytes_up`, `bytes_down`, `bytes`, `segments`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::fleet::Binaries;
use crate::fleet::controller::{Controller, ControllerOptions};
use crate::wire::proxy::CountingProxy;

/// Options of `flotilla-bench handshake`.
#[derive(Debug, clap::Args)]
pub struct HandshakeArgs {
    /// Connections measured per transport (the first is a full handshake).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub connects: u32,
    /// Directory of the flotilla binary [default: next to this benchmark].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// Runs the benchmark.
pub fn run(args: HandshakeArgs) -> anyhow::Result<()> {
    let binaries = Binaries::locate(args.bin_dir.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for tls in [false, true] {
        let dir = tempfile::tempdir()?;
        let options = ControllerOptions {
            api_addr: free_addr()?,
            mqtt_listen: free_addr()?,
            advertise: "127.0.0.1".into(),
            extra_args: Vec::new(),
            tls,
        };
        let transport = if tls { "mqtts" } else { "mqtt" };
        eprintln!("handshake: {transport}: starting the controller");
        let controller = Controller::start(&binaries, &dir.path().join("controller"), &options)?;
        let pin = match tls {
            true => Some(flotilla_agent::tls::pem_pin(&std::fs::read_to_string(controller.ca_path())?)?),
            false => None,
        };
        let token = controller.join_token()?;
        let enrolment = flotilla_agent::enrolment::Enrolment::join(
            &controller.url(),
            &token,
            "handshake-1",
            &dir.path().join("device"),
            pin,
        )?;
        let proxy = CountingProxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), options.mqtt_listen)?;
        // The agent's TLS settings, kept across its reconnects.
        let config = enrolment.tls_config()?;
        for connect in 1..=args.connects {
            let before = proxy.traffic();
            runtime.block_on(connect_once(&enrolment, proxy.local_addr(), config.clone()))?;
            let used = proxy.traffic().since(before);
            println!(
                "{}",
                json!({
                    "bench": "handshake",
                    "transport": transport,
                    "connect": connect,
                    "bytes_up": used.bytes_up,
                    "bytes_down": used.bytes_down,
                    "bytes": used.bytes(),
                    "segments": used.segments_up + used.segments_down,
                })
            );
        }
        drop(controller);
    }
    Ok(())
}

/// One MQTT connection as the agent makes it, until CONNACK and what
/// follows it at once, then a clean disconnect.
async fn connect_once(
    enrolment: &flotilla_agent::enrolment::Enrolment,
    proxy: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let mut options = MqttOptions::new(&enrolment.node_name, "127.0.0.1", proxy.port());
    options.set_credentials(&enrolment.mqtt_username, &enrolment.mqtt_password);
    options.set_keep_alive(Duration::from_secs(60));
    options.set_clean_session(true);
    if let Some(config) = tls {
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config)));
    }
    let (client, mut events) = AsyncClient::new(options, 10);
    let connected = async {
        loop {
            if let Event::Incoming(Packet::ConnAck(ack)) = events.poll().await.context("connecting")? {
                anyhow::ensure!(ack.code == rumqttc::ConnectReturnCode::Success, "login refused: {:?}", ack.code);
                return Ok(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), connected).await.context("no CONNACK in 10 s")??;
    // Session tickets come right after the handshake; let them cross.
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if events.poll().await.is_err() {
                break;
            }
        }
    })
    .await;
    client.disconnect().await.ok();
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while events.poll().await.is_ok() {} }).await;
    Ok(())
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
