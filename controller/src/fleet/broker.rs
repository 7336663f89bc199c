//! The embedded MQTT broker (rumqttd), for a fleet that needs no other
//! server. Large fleets point `--mqtt-url` at Mosquitto instead (see the
//! README for the measured trade-off).
//!
//! rumqttd has no stop API (rumqtt#771): its threads live as long as the
//! process, which is how `flotilla server` uses it.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};

use super::credentials::Enrolment;

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

/// Starts the broker on `listen`; logins are checked against `enrolment`.
/// `prefix` is the topic prefix (`flotilla/v1`): the controller's filters
/// under it get a longer log than a device's.
pub fn start(listen: SocketAddr, enrolment: Enrolment, max_connections: usize, prefix: &str) -> anyhow::Result<()> {
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
    Ok(())
}
