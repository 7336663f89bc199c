//! HTTP routes of node enrolment:
//!
//! - `POST /api/v1/node-tokens` (API token): a one-time join token.
//! - `POST /api/v1/enrol` (join token in the body): spends the token and
//!   answers the node's credentials: broker login, MAC key, the controller's
//!   public key to pin, topic prefix and broker URL.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::credentials::{EnrolError, Enrolment};

/// What the routes need.
pub struct EnrolState {
    /// Tokens and credentials.
    pub enrolment: Enrolment,
    /// The API token (creating join tokens needs it).
    pub api_token: String,
    /// The controller's public key.
    pub controller_key: [u8; 32],
    /// Broker URL for agents.
    pub mqtt_url: String,
    /// Topic prefix.
    pub prefix: String,
}

/// Body of `POST /api/v1/node-tokens`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    /// Validity in seconds (default one hour).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// Answer of `POST /api/v1/node-tokens`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// The one-time token.
    pub token: String,
    /// Seconds it stays valid.
    pub ttl_seconds: u64,
}

/// Body of `POST /api/v1/enrol`.
#[derive(Debug, Serialize, Deserialize)]
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
    /// The node's name.
    pub node_name: String,
    /// `mqtt://host:port`.
    pub mqtt_url: String,
    /// Broker user (the node name).
    pub mqtt_username: String,
    /// Broker password.
    pub mqtt_password: String,
    /// MAC key, hex.
    pub mac_key: String,
    /// The controller's Ed25519 public key, hex.
    pub controller_key: String,
    /// Topic prefix.
    pub topic_prefix: String,
}

/// The routes.
pub fn router(state: Arc<EnrolState>) -> Router {
    Router::new().route("/api/v1/node-tokens", post(create_token)).route("/api/v1/enrol", post(enrol)).with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn create_token(
    State(state): State<Arc<EnrolState>>,
    headers: HeaderMap,
    body: Option<Json<TokenRequest>>,
) -> Response {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !crate::api::constant_time_eq(presented.as_bytes(), state.api_token.as_bytes()) {
        return error(StatusCode::UNAUTHORIZED, "a valid API token is needed (Authorization: Bearer <token>)");
    }
    let ttl = body.and_then(|b| b.ttl_seconds).unwrap_or(3600);
    match state.enrolment.create_join_token(Duration::from_secs(ttl)) {
        Ok(token) => Json(TokenResponse { token, ttl_seconds: ttl }).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

async fn enrol(State(state): State<Arc<EnrolState>>, Json(request): Json<EnrolRequest>) -> Response {
    match state.enrolment.enrol(&request.token, &request.node_name) {
        Ok(credential) => {
            tracing::info!(node = request.node_name, "node enrolled");
            Json(EnrolResponse {
                node_name: request.node_name.clone(),
                mqtt_url: state.mqtt_url.clone(),
                mqtt_username: request.node_name,
                mqtt_password: credential.password,
                mac_key: credential.mac_key,
                controller_key: hex::encode(state.controller_key),
                topic_prefix: state.prefix.clone(),
            })
            .into_response()
        }
        Err(e @ EnrolError::BadToken) => error(StatusCode::FORBIDDEN, e.to_string()),
        Err(e @ EnrolError::BadName { .. }) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ EnrolError::Io(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
