//! The embedded MQTT broker (rumqttd), for a fleet that needs no other
//! server. Large fleets point `--mqtt-url` at Mosquitto instead (see the
//! README for the measured trade-off).
//!
//! rumqttd has no stop API (rumqtt#771): its threads live as long as the
//! process, which is how `flotilla server` uses it.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::credentials::Enrolment;

/// Largest MQTT payload the broker accepts: one frame plus the topic.
pub const MAX_PAYLOAD: usize = firmware_proto::frame::MAX_FRAME_LEN + 1024;

/// Starts the broker on `listen`; logins are checked against `enrolment`.
pub fn start(listen: SocketAddr, enrolment: Enrolment, max_connections: usize) -> anyhow::Result<()> {
    // rumqttd logs a bind failure on its own thread and carries on; binding
    // here first turns the common case (port taken) into a clear error.
    drop(std::net::TcpListener::bind(listen).with_context(|| {
        format!("the embedded MQTT broker cannot listen on {listen} (is another broker running? use --mqtt-listen or --mqtt-url)")
    })?);
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 5_000,
        max_payload_size: MAX_PAYLOAD,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    connections.set_auth_handler(move |client_id: String, user: String, password: String| {
        let allowed = enrolment.check_broker_login(&client_id, &user, &password);
        if !allowed {
            tracing::warn!(client_id, user, "MQTT login refused");
        }
        async move { allowed }
    });
    let server =
        ServerSettings { name: "flotilla".into(), listen, tls: None, next_connection_delay_ms: 0, connections };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 << 20,
            max_segment_count: 4,
            custom_segment: None,
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
    Ok(())
}
