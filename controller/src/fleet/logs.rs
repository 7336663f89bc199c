//! `flotilla logs`: container output stays on the device until asked for
//! (shipping it unasked would cost paid bytes for output nobody reads).
//! The API asks the pod's node over MQTT with a signed [`LogRequest`] on
//! `nodes/{id}/logreq`; the agent answers with [`LogChunk`]s on
//! `nodes/{id}/logs`, which the inbox checks (MAC, sequence) like every
//! node message and hands to [`LogRequests::deliver`].
//!
//! `GET /api/v1/namespaces/{ns}/pods/{name}/log?tailLines=N&limitBytes=N&offset=N`
//! returns the output as text; the `flotilla-log-offset` header says where a
//! follow-up request (`offset=`) continues, which is how `flotilla logs -f`
//! follows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use firmware_proto::{LogChunk, LogRequest, MessageKind, encode_signed_to_vec};
use rumqttc::{AsyncClient, QoS};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::Topics;
use super::credentials::ControllerKey;
use crate::api::ApiError;
use crate::manifest::Kind;
use crate::object::ObjectKey;
use crate::replica_spec::replica_id;
use crate::status::{ConditionType, NodeStatus};
use crate::store::Store;

/// The response header naming the offset a follow-up request continues at.
pub const OFFSET_HEADER: &str = "flotilla-log-offset";
/// Response header naming the container whose output the answer holds.
pub const CONTAINER_HEADER: &str = "flotilla-log-container";
/// How long the API waits for a node's whole answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Output returned when the request names no limit.
const DEFAULT_LIMIT_BYTES: u32 = 1 << 20;

/// Log requests in flight, and what sends them.
#[derive(Clone)]
pub struct LogRequests {
    inner: Arc<Inner>,
}

struct Inner {
    client: AsyncClient,
    key: Arc<ControllerKey>,
    topics: Topics,
    next_id: AtomicU64,
    waiting: Mutex<HashMap<(String, u64), mpsc::UnboundedSender<LogChunk>>>,
    counters: super::counters::FleetCounters,
}

/// A node's answer, reassembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAnswer {
    /// The output.
    pub data: Vec<u8>,
    /// Where a follow-up request continues.
    pub next_offset: u64,
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The request could not be published.
    #[error("cannot send the log request to {node}: {reason}")]
    Send {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// The node did not answer in time.
    #[error("{node} did not answer within {}s (offline, or an agent without log support)", .timeout.as_secs())]
    Timeout {
        /// The node.
        node: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The node answered with a reason instead of output.
    #[error("{0}")]
    Node(String),
    /// A chunk went missing (it cannot be re-sent: ask again).
    #[error("{node}'s answer lost chunk {missing}; try again")]
    Gap {
        /// The node.
        node: String,
        /// The first chunk index not received.
        missing: u32,
    },
}

impl LogRequests {
    /// Requests go out through `client`, signed with `key`.
    pub fn new(
        client: AsyncClient,
        key: Arc<ControllerKey>,
        topics: Topics,
        counters: super::counters::FleetCounters,
    ) -> Self {
        // Ids start at the clock so that a restarted controller does not
        // reuse the ids of answers still in flight.
        let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_millis());
        LogRequests {
            inner: Arc::new(Inner {
                client,
                key,
                topics,
                next_id: AtomicU64::new(start as u64),
                waiting: Mutex::default(),
                counters,
            }),
        }
    }

    /// Hands a chunk `node` sent (already authenticated) to its request.
    /// Chunks for no pending request (late, or after a timeout) are dropped.
    pub fn deliver(&self, node: &str, chunk: LogChunk) {
        let waiting = self.inner.waiting.lock().unwrap_or_else(|p| p.into_inner());
        match waiting.get(&(node.to_owned(), chunk.request_id)) {
            Some(sender) => {
                let _ = sender.send(chunk);
            }
            None => tracing::debug!(node, request = chunk.request_id, "log chunk for no pending request; dropped"),
        }
    }

    /// Asks `node` for the output of `replica`'s `container` and waits for
    /// the whole answer.
    pub async fn fetch(
        &self,
        node: &str,
        replica: firmware_proto::ReplicaId,
        container: Option<firmware_proto::ContainerName>,
        offset: Option<u64>,
        tail_lines: u32,
        max_bytes: u32,
    ) -> Result<LogAnswer, LogError> {
        let send_error = |reason: String| LogError::Send { node: node.to_owned(), reason };
        let node_id = firmware_proto::NodeId::new(node).map_err(|e| send_error(format!("node id: {e}")))?;
        let request_id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let request = LogRequest { node_id, request_id, replica, offset, tail_lines, max_bytes, container };
        let frame = encode_signed_to_vec(&request, |bytes| self.inner.key.sign(bytes))
            .map_err(|e| send_error(e.to_string()))?;
        let (sender, mut chunks) = mpsc::unbounded_channel();
        let slot = (node.to_owned(), request_id);
        let _pending = Pending { requests: self, slot: slot.clone() };
        self.inner.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(slot, sender);
        self.inner
            .client
            .publish(self.inner.topics.node(node, MessageKind::LogRequest), QoS::AtLeastOnce, false, frame)
            .await
            .map_err(|e| send_error(e.to_string()))?;
        self.inner.counters.sent(MessageKind::LogRequest);
        let mut answer = LogAnswer { data: Vec::new(), next_offset: 0 };
        let mut expected = 0u32;
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            let timeout = || LogError::Timeout { node: node.to_owned(), timeout: ANSWER_TIMEOUT };
            let chunk =
                tokio::time::timeout_at(deadline, chunks.recv()).await.map_err(|_| timeout())?.ok_or_else(timeout)?;
            if chunk.index != expected {
                return Err(LogError::Gap { node: node.to_owned(), missing: expected });
            }
            expected += 1;
            answer.data.extend_from_slice(&chunk.data);
            if let Some(end) = chunk.end {
                if let Some(reason) = end.error {
                    return Err(LogError::Node(reason.to_string()));
                }
                answer.next_offset = end.next_offset;
                return Ok(answer);
            }
        }
    }
}

/// Removes a request from the pending map however `fetch` ends.
struct Pending<'a> {
    requests: &'a LogRequests,
    slot: (String, u64),
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.requests.inner.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.slot);
    }
}

/// What the log route shares.
#[derive(Clone)]
pub struct LogsApi {
    /// The store, to find the pod's node.
    pub store: Arc<dyn Store>,
    /// The fleet channel while this controller leads; else why not.
    pub link: FleetLink,
}

/// The leader's channel to the devices, which the log routes ask through:
/// set while this controller leads; a standby says who does.
#[derive(Clone)]
pub struct FleetLink(Arc<std::sync::RwLock<Result<(LogRequests, super::LastHeard), Reason>>>);

/// Why there is no channel, worded when asked (who leads changes).
type Reason = Arc<dyn Fn() -> String + Send + Sync>;

impl FleetLink {
    /// No channel yet, saying why.
    pub fn absent(why: impl Fn() -> String + Send + Sync + 'static) -> Self {
        FleetLink(Arc::new(std::sync::RwLock::new(Err(Arc::new(why)))))
    }

    /// This controller's channel (it leads now).
    pub fn set(&self, requests: LogRequests, last_heard: super::LastHeard) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Ok((requests, last_heard));
    }

    /// No channel any more, saying why.
    pub fn clear(&self, why: impl Fn() -> String + Send + Sync + 'static) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Err(Arc::new(why));
    }

    fn current(&self) -> Result<(LogRequests, super::LastHeard), ApiError> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NotLeader", why()))
    }
}

/// `GET /api/v1/node-heartbeats`: when each node's last message arrived
/// (kept in memory, so only since this controller started).
pub(crate) async fn heartbeats(State(api): State<LogsApi>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let (_, last_heard) = api.link.current()?;
    let mut nodes = last_heard.all();
    nodes.sort();
    let now = std::time::SystemTime::now();
    let items: Vec<serde_json::Value> = nodes
        .into_iter()
        .map(|(node, at)| {
            serde_json::json!({
                "node": node,
                "lastHeartbeatTime": humantime::format_rfc3339_millis(at).to_string(),
                "secondsAgo": now.duration_since(at).unwrap_or_default().as_secs_f64(),
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "items": items })))
}

/// Query of the log route (Kubernetes' names where they exist).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogQuery {
    /// Only the last this many lines.
    #[serde(default)]
    pub tail_lines: Option<u32>,
    /// At most this many bytes.
    #[serde(default)]
    pub limit_bytes: Option<u32>,
    /// Continue at this offset (the previous answer's `flotilla-log-offset`).
    #[serde(default)]
    pub offset: Option<u64>,
    /// Which container of the pod (default: the one its
    /// `kubectl.kubernetes.io/default-container` annotation names, else its
    /// first app container).
    #[serde(default)]
    pub container: Option<String>,
}

/// The annotation naming the container `logs` shows by default.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// The container of `pod` a log request is for: the one asked, or the
/// default; an error naming the choices if the pod has no such container.
fn log_container(pod: &crate::object::ApiObject, asked: Option<&str>) -> Result<String, ApiError> {
    let spec = pod.typed_spec::<crate::manifest::types::PodSpec>().unwrap_or_default();
    let names: Vec<&str> = spec.containers.iter().chain(&spec.init_containers).map(|c| c.name.as_str()).collect();
    let name = match asked {
        Some(name) => name,
        None => match pod.metadata.annotations.get(DEFAULT_CONTAINER_ANNOTATION) {
            Some(name) => name.as_str(),
            None => names.first().copied().unwrap_or_default(),
        },
    };
    if names.contains(&name) {
        Ok(name.to_owned())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "NoSuchContainer",
            format!("pod {} has no container {name:?}: choose one of {}", pod.metadata.name, names.join(", ")),
        ))
    }
}

pub(crate) async fn pod_log(
    State(api): State<LogsApi>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let pod = api.store.get(&ObjectKey::new(Kind::Pod, &namespace, &name)).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", format!("pod {name:?} not found in namespace {namespace:?}"))
    })?;
    let node = pod.node_name().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "NotScheduled",
            format!("pod {name} is not on a node (yet): it has no output to show"),
        )
    })?;
    if let Some(reason) = unreachable_reason(api.store.as_ref(), node) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NodeUnreachable",
            format!("{node} is not connected ({reason}): its logs stay on the device until it reconnects"),
        ));
    }
    let replica = firmware_proto::ReplicaId::new(&replica_id(&pod))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "BadReplicaId", e.to_string()))?;
    let container = log_container(&pod, query.container.as_deref())?;
    let container_id = firmware_proto::ContainerName::new(&container)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "BadContainerName", e.to_string()))?;
    let tail_lines = query.tail_lines.unwrap_or(0);
    let limit = query.limit_bytes.unwrap_or(DEFAULT_LIMIT_BYTES);
    let (requests, _) = api.link.current()?;
    match requests.fetch(node, replica, Some(container_id), query.offset, tail_lines, limit).await {
        Ok(answer) => {
            let mut response = answer.data.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            headers.insert(OFFSET_HEADER, HeaderValue::from(answer.next_offset));
            if let Ok(value) = HeaderValue::from_str(&container) {
                headers.insert(CONTAINER_HEADER, value);
            }
            Ok(response)
        }
        Err(e @ LogError::Timeout { .. }) => {
            Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, "NodeTimeout", e.to_string()))
        }
        Err(e @ LogError::Node(_)) => Err(ApiError::new(StatusCode::NOT_FOUND, "NoLogs", e.to_string())),
        Err(e) => Err(ApiError::new(StatusCode::BAD_GATEWAY, "LogTransfer", e.to_string())),
    }
}

/// Why `node` cannot answer now, if its Ready condition says so.
fn unreachable_reason(store: &dyn Store, node: &str) -> Option<String> {
    let object = store.get(&ObjectKey::new(Kind::Node, "", node))?;
    let status: NodeStatus = object.status();
    let ready = crate::status::condition(&status.conditions, ConditionType::Ready)?;
    (ready.status != crate::status::ConditionStatus::True).then(|| ready.reason.clone())
}
