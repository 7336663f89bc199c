//! The controller's MQTT connection. One task owns the rumqttc event loop
//! (it must be polled continuously); everything else talks to it through
//! the cloned [`AsyncClient`] and a channel of incoming messages.
//!
//! rumqttc neither replays subscriptions after a reconnect (rumqtt#250) nor
//! keeps unacknowledged QoS 1 publishes when the broker lost the session, so
//! every ConnAck re-subscribes and asks the publisher to republish every
//! desired document (they are level state, republishing is harmless).

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::credentials::{CONTROLLER_USER, Enrolment};
use super::{FleetConfig, Topics};

/// A message a node published.
#[derive(Debug)]
pub struct Incoming {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: bytes::Bytes,
    /// Delivered because it was retained (on subscription), not live.
    pub retained: bool,
}

/// Whether the controller's own broker connection is up, and since when.
/// While it is down the controller hears no node, so a node's silence (or a
/// Last Will the broker sent as it went down) says nothing about the node:
/// no lease expires then, and no eviction is allowed then nor until the
/// fleet had time to reconnect after it (a broker restart is not a node
/// loss; see `super::EvictionSource`).
#[derive(Debug, Clone, Default)]
pub struct BrokerLink(Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl BrokerLink {
    /// When the current connection came up; `None` while down.
    pub fn up_since(&self) -> Option<std::time::Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, up_since: Option<std::time::Instant>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = up_since;
    }
}

/// Connects and starts the event loop task; returns the client handle.
pub fn spawn(
    config: &FleetConfig,
    enrolment: &Enrolment,
    topics: Topics,
    incoming: SyncSender<Incoming>,
    republish: Arc<tokio::sync::Notify>,
    link: BrokerLink,
) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    // Unique per connection: controllers on several machines may share a
    // pid, and a broker drops the older of two sessions with one id.
    let nonce = crate::store::random_bytes::<4>().map(hex::encode).unwrap_or_default();
    let client_id = format!("{CONTROLLER_USER}-{}-{nonce}", std::process::id());
    let brokers: Vec<(String, u16)> =
        std::iter::once((config.mqtt_host.clone(), config.mqtt_port)).chain(config.mqtt_more.iter().cloned()).collect();
    let mut options = MqttOptions::new(client_id, config.mqtt_host.clone(), config.mqtt_port);
    options.set_keep_alive(config.keep_alive);
    options.set_credentials(CONTROLLER_USER, enrolment.controller_password());
    // The broker's limit both ways: a node frame over its 64 KiB is refused
    // by the decoder (and logged); refusing it here would drop the
    // connection, and a retained one would drop it on every reconnect.
    options.set_max_packet_size(super::broker::MAX_PAYLOAD, super::broker::MAX_PAYLOAD);
    options.set_clean_session(true);
    let (client, mut event_loop) = AsyncClient::new(options, 1024);
    let subscriber = client.clone();
    let mut broker = format!("{}:{}", config.mqtt_host, config.mqtt_port);
    let task = tokio::spawn(async move {
        let mut failures = 0u32;
        let mut using = 0;
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    failures = 0;
                    tracing::info!(%broker, "connected to the MQTT broker");
                    // One SUBSCRIBE at QoS 0: the session is clean, so QoS 1
                    // redelivers nothing across connections; on NATS each
                    // QoS 1 subscription is a JetStream consumer, and
                    // creating them timed out while the cluster took in a
                    // server's devices, which made this connection refused
                    // and made again, republishing every document each time.
                    let filters = topics
                        .controller_filters()
                        .into_iter()
                        .map(|filter| rumqttc::SubscribeFilter::new(filter, QoS::AtMostOnce));
                    if let Err(e) = subscriber.try_subscribe_many(filters) {
                        tracing::error!(error = %e, "cannot queue the subscriptions");
                    }
                    republish.notify_one();
                    link.set(Some(std::time::Instant::now()));
                }
                Ok(Event::Incoming(Packet::SubAck(ack)))
                    if ack.return_codes.contains(&rumqttc::SubscribeReasonCode::Failure) =>
                {
                    // A clustered broker refuses subscriptions while it
                    // recovers (NATS electing a JetStream leader): connect
                    // again, which subscribes again.
                    tracing::warn!(%broker, "the broker refused a subscription; connecting again");
                    let _ = subscriber.try_disconnect();
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let mut message =
                        Incoming { topic: publish.topic, payload: publish.payload, retained: publish.retain };
                    // Never dropped: while the inbox is behind, this loop
                    // waits, the broker holds the rest and TCP slows the
                    // senders down.
                    let mut waited = false;
                    loop {
                        match incoming.try_send(message) {
                            Ok(()) => break,
                            Err(std::sync::mpsc::TrySendError::Full(back)) => {
                                if !waited {
                                    tracing::debug!("node messages arrive faster than they are handled; waiting");
                                    waited = true;
                                }
                                message = back;
                                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                            }
                            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    link.set(None);
                    failures += 1;
                    // Each broker of a cluster once at once, then backing off.
                    let delay = match failures as usize <= brokers.len() {
                        true if brokers.len() > 1 => Duration::from_millis(100),
                        _ => backoff(failures.saturating_sub(brokers.len() as u32 - 1)),
                    };
                    tracing::warn!(%broker, error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost");
                    if brokers.len() > 1 {
                        using = (using + 1) % brokers.len();
                        let (host, port) = &brokers[using];
                        event_loop.mqtt_options = moved_to(&event_loop.mqtt_options, host, *port);
                        broker = format!("{host}:{port}");
                        tracing::info!(%broker, "trying the next broker of the cluster");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    });
    (client, task)
}

/// `old`'s options for another broker of the same cluster.
fn moved_to(old: &MqttOptions, host: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(old.client_id(), host, port);
    options.set_keep_alive(old.keep_alive());
    if let Some(login) = old.credentials() {
        options.set_credentials(login.username, login.password);
    }
    options.set_max_packet_size(super::broker::MAX_PAYLOAD, super::broker::MAX_PAYLOAD);
    options.set_clean_session(old.clean_session());
    options
}

/// Exponential back-off with jitter, 100 ms doubling to 10 s, so a fleet
/// does not reconnect in lockstep after a broker restart.
pub fn backoff(failures: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << failures.min(7)).min(10_000);
    let mut noise = [0u8; 2];
    let _ = getrandom::fill(&mut noise);
    let jitter = u64::from(u16::from_le_bytes(noise)) % (base / 2 + 1);
    Duration::from_millis(base / 2 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for failures in 0..40 {
            let d = backoff(failures).as_millis();
            assert!(d <= 10_000, "{d}");
            assert!(d >= 50, "{d}");
        }
        assert!(backoff(1) < Duration::from_millis(300));
        assert!(backoff(20) >= Duration::from_secs(5));
    }
}
