//! How frames travel over MQTT: the topic of every message kind and the
//! broker URL a node is given at enrolment.
//!
//! ```text
//! {prefix}/nodes/{node id}/{leaf}     leaf: MessageKind::topic_leaf
//! ```
//!
//! A node id is a [`NodeId`](crate::NodeId): it can never add a topic level
//! or a wildcard, so a topic names exactly one node and one kind.
//! `Topics` (feature `alloc`) builds and reads these names.

use core::fmt;

#[cfg(feature = "alloc")]
use alloc::{format, string::String, vec::Vec};

#[cfg(feature = "alloc")]
use crate::frame::MessageKind;

/// The topic prefix unless one is configured.
pub const DEFAULT_PREFIX: &str = "flotilla/v1";

/// The broker port when a URL names none.
pub const DEFAULT_MQTT_PORT: u16 = 1883;
/// The MQTT-over-TLS port, when a `mqtts://` URL names none.
pub const DEFAULT_MQTTS_PORT: u16 = 8883;

/// Topic names under a prefix: `{prefix}/nodes/{id}/{leaf}`, one leaf per
/// [`MessageKind`] ([`MessageKind::topic_leaf`]).
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

#[cfg(feature = "alloc")]
impl Topics {
    /// Topics under `prefix` (trailing `/`s are ignored).
    pub fn new(prefix: &str) -> Self {
        Topics { prefix: String::from(prefix.trim_end_matches('/')) }
    }

    /// The prefix, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `prefix/nodes/{node}/{leaf of kind}`. `node` may also be a filter
    /// or broker placeholder standing for any node (`+`, Mosquitto's `%u`).
    pub fn node(&self, node: &str, kind: MessageKind) -> String {
        format!("{}/nodes/{node}/{}", self.prefix, kind.topic_leaf())
    }

    /// The retained topic of one config object for `node`:
    /// `{prefix}/nodes/{node}/config/{hex digest}`.
    pub fn config(&self, node: &str, digest: &[u8; 32]) -> String {
        let mut hex = String::with_capacity(64);
        for byte in digest {
            let _ = core::fmt::Write::write_fmt(&mut hex, format_args!("{byte:02x}"));
        }
        format!("{}/{hex}", self.node(node, MessageKind::Config))
    }

    /// What the controller subscribes to: every node's messages, one
    /// filter per kind a node sends.
    pub fn controller_filters(&self) -> Vec<String> {
        MessageKind::FROM_NODE.iter().map(|kind| self.node("+", *kind)).collect()
    }

    /// `(node id, leaf)` of a node topic, or `None` for anything else.
    pub fn parse<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        let rest = topic.strip_prefix(self.prefix.as_str())?.strip_prefix("/nodes/")?;
        let (node, leaf) = rest.split_once('/')?;
        (!leaf.contains('/')).then_some((node, leaf))
    }
}

/// Why a broker URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MqttUrlError {
    /// A scheme other than `mqtt://`, `tcp://` or `mqtts://`, or `mqtts://`
    /// where only plain TCP is taken ([`parse_mqtt_url`]).
    UnsupportedScheme,
    /// The port is not a number from 0 to 65535.
    BadPort,
    /// Nothing before the port.
    NoHost,
}

impl fmt::Display for MqttUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MqttUrlError::UnsupportedScheme => {
                "not an mqtt:// or mqtts:// URL (or mqtts:// where only plain TCP is supported)"
            }
            MqttUrlError::BadPort => "bad port",
            MqttUrlError::NoHost => "no host",
        })
    }
}

impl core::error::Error for MqttUrlError {}

/// A broker's address, from its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerUrl<'a> {
    /// Host name or address.
    pub host: &'a str,
    /// TCP port.
    pub port: u16,
    /// `mqtts://`: MQTT over TLS.
    pub tls: bool,
}

/// The brokers of a list `mqtt://a:1883,mqtt://b:1883` (one URL is a list of
/// one), in order: a device or controller moves to the next when one is lost.
pub fn broker_list(urls: &str) -> impl Iterator<Item = &str> {
    urls.split(',').map(str::trim).filter(|url| !url.is_empty())
}

/// `mqtt://host:port` (or `tcp://host:port`, or bare `host:port`; the port
/// defaults to [`DEFAULT_MQTT_PORT`]) or `mqtts://host:port` (the port
/// defaults to [`DEFAULT_MQTTS_PORT`]).
pub fn parse_broker_url(url: &str) -> Result<BrokerUrl<'_>, MqttUrlError> {
    let (rest, tls) = match url.strip_prefix("mqtts://") {
        Some(rest) => (rest, true),
        None => (url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://")).unwrap_or(url), false),
    };
    if rest.contains("://") {
        return Err(MqttUrlError::UnsupportedScheme);
    }
    let rest = rest.trim_end_matches('/');
    let default_port = if tls { DEFAULT_MQTTS_PORT } else { DEFAULT_MQTT_PORT };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| MqttUrlError::BadPort)?),
        None => (rest, default_port),
    };
    if host.is_empty() {
        return Err(MqttUrlError::NoHost);
    }
    Ok(BrokerUrl { host, port, tls })
}

/// A plain-TCP broker URL (see [`parse_broker_url`]) -> host and port;
/// `mqtts://` is refused.
pub fn parse_mqtt_url(url: &str) -> Result<(&str, u16), MqttUrlError> {
    match parse_broker_url(url)? {
        BrokerUrl { tls: true, .. } => Err(MqttUrlError::UnsupportedScheme),
        BrokerUrl { host, port, .. } => Ok((host, port)),
    }
}
