//! HTTP routes of node enrolment:
//!
//! - `POST /api/v1/node-tokens` (API token): a join token, `uses` times
//!   reusable until it expires, with labels for the nodes it enrols.
//! - `GET /api/v1/node-tokens` (API token): the tokens, never their secrets.
//! - `DELETE /api/v1/node-tokens/{id}` (API token): revokes one.
//! - `POST /api/v1/enrol` (join token in the body): spends one use and
//!   answers the node's credentials: broker login, MAC key, the controller's
//!   public key to pin, topic prefix, broker URL and the token's labels.
//! - `DELETE /api/v1/node-credentials/{name}` (API token): forgets a node's
//!   credentials: the node is revoked and the name may enrol again
//!   (`flotilla node revoke`).
//!
//! The file writes behind them block (fsync, shared by concurrent callers:
//! see [`super::credentials`]), so they run on tokio's blocking pool rather
//! than stalling the API's worker threads while 10,000 devices enrol.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::credentials::{EnrolError, Enrolment, TokenInfo, TokenSpec};
use crate::api::ApiError;

/// Body and answer of `POST /api/v1/enrol`, shared with the agent.
pub use firmware_proto::enrol::{EnrolRequest, EnrolResponse};

/// What the routes need.
pub struct EnrolState {
    /// Tokens and credentials.
    pub enrolment: Enrolment,
    /// The API token (everything but `enrol` needs it).
    pub api_token: String,
    /// The controller's public key.
    pub controller_key: [u8; 32],
    /// Broker URL for agents.
    pub mqtt_url: String,
    /// Topic prefix.
    pub prefix: String,
    /// The fleet CA's certificate (PEM) when the controller serves TLS.
    pub ca_pem: Option<String>,
    /// `host:port` of the registry when it serves HTTPS.
    pub tls_registry: Option<String>,
    /// `sha256:<hex>` of the CA's certificate.
    pub ca_sha256: Option<String>,
}

/// Body of `POST /api/v1/node-tokens`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    /// Validity in seconds (default one hour).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// How many nodes it may enrol (default 1).
    #[serde(default)]
    pub uses: Option<u32>,
    /// Labels of the nodes it enrols.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Answer of `POST /api/v1/node-tokens`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// The token's secret, shown this once.
    pub token: String,
    /// Seconds it stays valid.
    pub ttl_seconds: u64,
    /// `sha256:<hex>` of the fleet CA's certificate, for devices to pin at
    /// enrolment (`flotilla-agent run --ca-sha256`); absent from a plain
    /// controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_sha256: Option<String>,
    /// The rest of what `GET /api/v1/node-tokens` shows of it (id, uses, ...).
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// Answer of `GET /api/v1/node-tokens`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenList {
    /// Oldest first.
    pub items: Vec<TokenInfo>,
}

/// Answer of `DELETE /api/v1/node-credentials/{name}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetResponse {
    /// The node whose credentials are gone.
    pub node_name: String,
}

impl From<EnrolError> for ApiError {
    fn from(e: EnrolError) -> Self {
        let (status, reason) = match &e {
            EnrolError::UnknownToken
            | EnrolError::TokenUsedUp { .. }
            | EnrolError::TokenExpired { .. }
            | EnrolError::TokenRevoked { .. } => (StatusCode::FORBIDDEN, "Forbidden"),
            EnrolError::AlreadyEnrolled { .. } => (StatusCode::CONFLICT, "AlreadyExists"),
            EnrolError::NoSuchTokenId { .. } | EnrolError::NotEnrolled { .. } => (StatusCode::NOT_FOUND, "NotFound"),
            EnrolError::BadName { .. } | EnrolError::BadTokenRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            EnrolError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        ApiError::new(status, reason, e.to_string())
    }
}

fn authorize(state: &EnrolState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if crate::api::constant_time_eq(presented.as_bytes(), state.api_token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "a valid API token is needed (Authorization: Bearer <token>)",
        ))
    }
}

/// Runs a (fsyncing) enrolment call on the blocking pool.
async fn blocking<T: Send + 'static>(
    state: &Arc<EnrolState>,
    call: impl FnOnce(&Enrolment) -> Result<T, EnrolError> + Send + 'static,
) -> Result<T, EnrolError> {
    let enrolment = state.enrolment.clone();
    tokio::task::spawn_blocking(move || call(&enrolment)).await.unwrap_or_else(|e| Err(EnrolError::Io(e.to_string())))
}

pub(crate) async fn create_token(
    State(state): State<Arc<EnrolState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<TokenResponse>, ApiError> {
    // Parsed after the token check, so that a caller without one learns nothing.
    authorize(&state, &headers)?;
    let request: TokenRequest = match body.iter().all(u8::is_ascii_whitespace) {
        true => TokenRequest::default(),
        false => serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", format!("unreadable join token request: {e}"))
        })?,
    };
    let ttl = request.ttl_seconds.unwrap_or(3600);
    let spec = TokenSpec { uses: request.uses.unwrap_or(1), ttl: Duration::from_secs(ttl), labels: request.labels };
    let (token, info) = blocking(&state, move |e| e.create_join_token(&spec)).await?;
    tracing::info!(id = info.id, uses = info.uses, expires = info.expires, "join token created");
    Ok(Json(TokenResponse { token, ttl_seconds: ttl, ca_sha256: state.ca_sha256.clone(), info }))
}

pub(crate) async fn list_tokens(
    State(state): State<Arc<EnrolState>>,
    headers: HeaderMap,
) -> Result<Json<TokenList>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(TokenList { items: state.enrolment.tokens() }))
}

pub(crate) async fn revoke_token(
    State(state): State<Arc<EnrolState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    authorize(&state, &headers)?;
    let info = blocking(&state, move |e| e.revoke_token(&id)).await?;
    tracing::info!(id = info.id, "join token revoked");
    Ok(Json(info))
}

pub(crate) async fn enrol(
    State(state): State<Arc<EnrolState>>,
    Json(request): Json<EnrolRequest>,
) -> Result<Json<EnrolResponse>, ApiError> {
    let (token, name) = (request.token, request.node_name.clone());
    let credential = match blocking(&state, move |e| e.enrol(&token, &name)).await {
        Ok(credential) => credential,
        Err(e) => {
            tracing::warn!(node = request.node_name, error = %e, "enrolment refused");
            return Err(e.into());
        }
    };
    tracing::info!(node = request.node_name, token = credential.token_id, "node enrolled");
    Ok(Json(EnrolResponse {
        node_name: request.node_name.clone(),
        mqtt_url: state.mqtt_url.clone(),
        mqtt_username: request.node_name,
        mqtt_password: credential.password,
        mac_key: credential.mac_key,
        controller_key: hex::encode(state.controller_key),
        topic_prefix: state.prefix.clone(),
        labels: credential.labels,
        ca_pem: state.ca_pem.clone(),
        tls_registry: state.tls_registry.clone(),
    }))
}

pub(crate) async fn reset_node(
    State(state): State<Arc<EnrolState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<ResetResponse>, ApiError> {
    authorize(&state, &headers)?;
    let node = name.clone();
    blocking(&state, move |e| e.reset(&node)).await?;
    tracing::warn!(node = name, "node revoked: credentials removed, connections closed");
    Ok(Json(ResetResponse { node_name: name }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiState, Metrics};
    use crate::store::{RedbStore, SecretCipher};

    const TOKEN: &str = "api-token";

    /// The API's and these routes merged as `flotilla server` merges them,
    /// served on a free loopback port.
    fn serve(dir: &std::path::Path) -> (String, tokio::runtime::Runtime) {
        let store = RedbStore::open(&dir.join("store.redb"), SecretCipher::from_key([7; 32])).unwrap();
        let api = Arc::new(ApiState {
            store: Arc::new(store),
            token: TOKEN.into(),
            metrics: Metrics::default(),
            ready: true.into(),
            tables: Default::default(),
            max_body: crate::api::DEFAULT_MAX_BODY,
            space: crate::space::SpaceGuard::new(dir, Some(0)),
        });
        let enrol = Arc::new(EnrolState {
            enrolment: Enrolment::load_or_create(dir).unwrap(),
            api_token: TOKEN.into(),
            controller_key: [1; 32],
            mqtt_url: "mqtt://127.0.0.1:1883".into(),
            prefix: "flotilla/v1".into(),
            ca_pem: None,
            tls_registry: None,
            ca_sha256: None,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = crate::api::routes::router(crate::api::routes::Parts {
            api,
            enrol: Some(enrol),
            logs: None,
            registry: None,
        });
        runtime.spawn(async move { axum::serve(listener, app).await });
        (url, runtime)
    }

    fn call(method: &str, url: &str, token: Option<&str>, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let auth = format!("Bearer {}", token.unwrap_or(""));
        let response = match (method, body) {
            ("GET", _) => agent.get(url).header("Authorization", &auth).call(),
            ("DELETE", _) => agent.delete(url).header("Authorization", &auth).call(),
            (_, body) => agent.post(url).header("Authorization", &auth).send_json(body.unwrap_or_default()),
        };
        let mut response = response.unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_json().unwrap_or_default())
    }

    #[test]
    fn token_and_reset_routes_answer_with_the_right_statuses() {
        let dir = tempfile::tempdir().unwrap();
        let (url, _runtime) = serve(dir.path());
        let tokens = format!("{url}/api/v1/node-tokens");
        assert_eq!(call("GET", &tokens, None, None).0, 401);
        assert_eq!(call("POST", &tokens, Some("wrong"), None).0, 401);
        assert_eq!(call("POST", &tokens, Some(TOKEN), Some(serde_json::json!({"uses": 0}))).0, 400);
        let (status, created) = call("POST", &tokens, Some(TOKEN), Some(serde_json::json!({"uses": 2})));
        assert_eq!(status, 200, "{created}");
        let secret = created["token"].as_str().unwrap().to_owned();
        let id = created["id"].as_str().unwrap().to_owned();

        // Not mistaken for a resource list (`/api/v1/{resource}`).
        let (status, listed) = call("GET", &tokens, Some(TOKEN), None);
        assert_eq!(status, 200, "{listed}");
        assert_eq!(listed["items"][0]["id"], id.as_str());
        assert_eq!(listed["items"][0]["state"], "active");
        assert!(!listed.to_string().contains(&secret));

        let enrol = format!("{url}/api/v1/enrol");
        let body = |name: &str| Some(serde_json::json!({"token": secret, "nodeName": name}));
        let (status, answer) = call("POST", &enrol, None, body("edge-1"));
        assert_eq!(status, 200, "{answer}");
        assert!(answer.get("labels").is_none(), "no labels, no field: {answer}");
        let (status, answer) = call("POST", &enrol, None, body("edge-1"));
        assert_eq!((status, answer["reason"].as_str()), (409, Some("AlreadyExists")), "{answer}");
        assert_eq!(call("POST", &enrol, None, body("flotilla-controller-1")).0, 400);

        let reset = format!("{url}/api/v1/node-credentials/edge-1");
        assert_eq!(call("DELETE", &reset, None, None).0, 401);
        assert_eq!(call("DELETE", &reset, Some(TOKEN), None).0, 200);
        assert_eq!(call("DELETE", &reset, Some(TOKEN), None).0, 404);
        assert_eq!(call("POST", &enrol, None, body("edge-1")).0, 200, "the name enrols again");
        let (status, answer) = call("POST", &enrol, None, body("edge-2"));
        assert_eq!(status, 403, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains("used 2 of 2 times"), "{answer}");

        assert_eq!(call("DELETE", &format!("{tokens}/{id}"), None, None).0, 401);
        let (status, revoked) = call("DELETE", &format!("{tokens}/{id}"), Some(TOKEN), None);
        assert_eq!((status, revoked["state"].as_str()), (200, Some("revoked")), "{revoked}");
        assert_eq!(call("DELETE", &format!("{tokens}/nosuchid"), Some(TOKEN), None).0, 404);
    }

    #[test]
    fn enrolment_json_keeps_its_field_names() {
        let request: EnrolRequest = serde_json::from_str(r#"{"token": "t", "nodeName": "edge-1"}"#).unwrap();
        assert_eq!((request.token.as_str(), request.node_name.as_str()), ("t", "edge-1"));
        let mut answer = EnrolResponse {
            node_name: "edge-1".into(),
            mqtt_url: "mqtt://10.0.0.1:1883".into(),
            mqtt_username: "edge-1".into(),
            mqtt_password: "p".into(),
            mac_key: "00".into(),
            controller_key: "11".into(),
            topic_prefix: "flotilla/v1".into(),
            labels: BTreeMap::new(),
            ca_pem: None,
            tls_registry: None,
        };
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            concat!(
                r#"{"nodeName":"edge-1","mqttUrl":"mqtt://10.0.0.1:1883","mqttUsername":"edge-1","#,
                r#""mqttPassword":"p","macKey":"00","controllerKey":"11","topicPrefix":"flotilla/v1"}"#,
            )
        );
        answer.labels.insert("site".into(), "berlin".into());
        let json = serde_json::to_value(&answer).unwrap();
        assert_eq!(json["labels"], serde_json::json!({"site": "berlin"}));
    }
}
