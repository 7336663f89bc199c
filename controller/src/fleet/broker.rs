//! The embedded MQTT broker (rumqttd behind the [gate](super::gate)), for a
//! fleet that needs no other server. Large fleets point `--mqtt-url` at Mosquitto instead (see the
//! README for the measured trade-off).
//!
//! rumqttd has no stop API (rumqtt#771): its threads live as long as the
//! process, which is how `flotilla server` uses it.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};

use super::credentials::{CONTROLLER_USER, Enrolment};
use super::gate::{Gate, GateSettings, LoginLimits};
use super::refusals::RefusalCounter;

/// Largest MQTT payload the broker accepts: the largest frame (a Linux
/// profile's pod document) plus the topic. Buffers grow to what arrives,
/// so a device that sends small frames costs no more for it.
pub const MAX_PAYLOAD: usize = firmware_proto::frame::MAX_ANY_FRAME_LEN + 1024;

/// What rumqttd keeps of the messages on one subscription filter. It keeps
/// a log per filter and frees old data only when a segment fills, so these
/// bound its memory: a log per device-side filter (its own desired
/// document, service table and log requests: the newest is what counts,
/// and the retained copy is kept apart) and a few seconds' backlog of the
/// whole fleet's messages for each of the controller's wildcard filters.
/// rumqttd counts only topic and payload, about half of what a message
/// really holds.
const DEVICE_FILTER_LOG: (usize, usize) = (64 << 10, 2);
const CONTROLLER_FILTER_LOG: (usize, usize) = (4 << 20, 4);

/// The embedded broker, running.
pub struct EmbeddedBroker {
    /// rumqttd's loopback listener: the controller's own connection.
    pub internal: SocketAddr,
    /// The devices' door on the public listener.
    pub gate: Gate,
}

/// Starts rumqttd on a loopback port and the gate in front of it on
/// `listen`; device logins are checked against `enrolment` by the gate.
/// With `tls`, devices speak MQTT over TLS to the gate.
/// `prefix` is the topic prefix (`flotilla/v1`): the controller's filters
/// under it get a longer log than a device's.
pub async fn start(
    listen: SocketAddr,
    enrolment: Enrolment,
    max_connections: usize,
    prefix: &str,
    limits: LoginLimits,
    refusals: RefusalCounter,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<EmbeddedBroker> {
    // rumqttd logs a bind failure on its own thread and carries on: it gets
    // a port that was free a moment ago, and is waited for below.
    let internal = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .context("finding a loopback port for the MQTT broker")?;
    let gate_password = hex::encode(crate::store::random_bytes::<32>()?);
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 5_000,
        max_payload_size: MAX_PAYLOAD,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let upstream_password = gate_password.clone();
    let controller = enrolment.clone();
    connections.set_auth_handler(move |client_id: String, user: String, password: String| {
        // The controller with its own password; nodes only through the
        // gate, which checked their password and sends its own.
        let allowed = if user == CONTROLLER_USER {
            controller.check_broker_login(&client_id, &user, &password)
        } else {
            crate::api::constant_time_eq(password.as_bytes(), gate_password.as_bytes())
        };
        if !allowed {
            tracing::warn!(client_id, user, "MQTT login on the broker's loopback port refused");
        }
        async move { allowed }
    });
    let server = ServerSettings {
        name: "flotilla".into(),
        listen: internal,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: DEVICE_FILTER_LOG.0,
            max_segment_count: DEVICE_FILTER_LOG.1,
            // Keys must not overlap: rumqttd takes the last match in map order.
            custom_segment: Some(
                super::Topics::new(prefix)
                    .controller_filters()
                    .into_iter()
                    .map(|filter| {
                        let (max_segment_size, max_segment_count) = CONTROLLER_FILTER_LOG;
                        (filter, SegmentConfig { max_segment_size, max_segment_count })
                    })
                    .collect(),
            ),
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4".to_owned(), server.clone())])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "the embedded MQTT broker stopped");
            }
        })
        .context("starting the broker thread")?;
    wait_listening(internal, &upstream_password).await?;
    let settings = GateSettings {
        listen,
        upstream: internal,
        upstream_password,
        prefix: prefix.to_owned(),
        limits,
        max_connections,
        max_packet: MAX_PAYLOAD,
        tls,
    };
    let gate = Gate::start(settings, enrolment, refusals).await?;
    Ok(EmbeddedBroker { internal, gate })
}

/// Waits until rumqttd takes a login on `addr` (the gate's; a bare TCP
/// probe would make it log an error).
async fn wait_listening(addr: SocketAddr, password: &str) -> anyhow::Result<()> {
    use rumqttc::mqttbytes::v4::{Connect, Disconnect};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connect = Connect::new(format!("{CONTROLLER_USER}-gate-probe"));
    connect.set_login("gate-probe", password);
    let mut hello = bytes::BytesMut::new();
    connect.write(&mut hello).map_err(|e| anyhow::anyhow!("encoding a CONNECT: {e:?}"))?;
    Disconnect.write(&mut hello).map_err(|e| anyhow::anyhow!("encoding a DISCONNECT: {e:?}"))?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(&hello).await?;
            let mut connack = [0u8; 4];
            stream.read_exact(&mut connack).await?;
            Ok::<_, std::io::Error>(connack)
        };
        match attempt.await {
            Ok(connack) if connack[3] == 0 => return Ok(()),
            Ok(connack) => anyhow::bail!("the embedded MQTT broker refused the gate's login (code {})", connack[3]),
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(e).with_context(|| format!("the embedded MQTT broker did not start on {addr}"));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}
