//! Enrolment: a node spends a join token at the controller's HTTP API
//! ([`ENROL_PATH`]) and receives what it needs to join the control channel.
//!
//! The bodies are JSON with camelCase field names. This crate only derives
//! serde's traits; each side brings its own JSON library.
//!
//! Feature `alloc`.

use alloc::collections::BTreeMap;
use alloc::string::String;

use serde::{Deserialize, Serialize};

/// The route a node posts an [`EnrolRequest`] to, under the controller's
/// API URL.
pub const ENROL_PATH: &str = "/api/v1/enrol";

/// Body of `POST /api/v1/enrol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrolRequest {
    /// The join token.
    pub token: String,
    /// The node's name (its id on the wire).
    pub node_name: String,
}

/// Answer of `POST /api/v1/enrol`: everything a node needs to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrolResponse {
    /// The node's name, its id on the wire.
    pub node_name: String,
    /// `mqtt://host:port` or `mqtts://host:port` (see
    /// [`parse_broker_url`](crate::mqtt::parse_broker_url)).
    pub mqtt_url: String,
    /// Broker user (the node name).
    pub mqtt_username: String,
    /// Broker password.
    pub mqtt_password: String,
    /// Key of the node's MACs, hex (64 digits).
    pub mac_key: String,
    /// The controller's Ed25519 public key, hex: nodes pin it.
    pub controller_key: String,
    /// Topic prefix (see [`Topics`](crate::mqtt::Topics)).
    pub topic_prefix: String,
    /// Labels of the join token, for the node to report. Absent when empty,
    /// so agents that predate it parse the answer unchanged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The fleet's CA certificate (PEM) when the controller serves TLS:
    /// the node trusts it, and only it, for `mqtts://`, the API and the
    /// registry. Absent from a plain controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// `host:port` of the controller's image registry when it serves
    /// HTTPS (with the CA above); images from it are pulled over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_registry: Option<String>,
}
