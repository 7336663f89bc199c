//! The HTTP/JSON API of `flotilla server` (axum).
//!
//! Routes (all JSON; everything under `/api` needs `Authorization: Bearer
//! <token>`; the route table is also served at `GET /api/v1`):
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/healthz` | process is up (no token) |
//! | GET | `/readyz` | store open and reconcilers running, etcd in reach (no token) |
//! | GET | `/metrics` | Prometheus text format |
//! | POST | `/api/v1/apply` | server-side apply of manifest documents, atomic |
//! | GET | `/api/v1/{resource}` | list in all namespaces (`?labelSelector=`, `?watch=true&resourceVersion=N`, `?as=table[&wide=true]`: the rows `flotilla get` prints) |
//! | GET | `/api/v1/namespaces/{ns}/{resource}` | list in one namespace (same query) |
//! | GET/PUT/DELETE | `/api/v1/namespaces/{ns}/{resource}/{name}` | one namespaced object |
//! | PUT | `/api/v1/namespaces/{ns}/{resource}/{name}/status` | replace status |
//! | GET/PUT/DELETE | `/api/v1/{resource}/{name}` | one cluster-scoped object (nodes, namespaces) |
//! | PUT | `/api/v1/{resource}/{name}/status` | replace a node's status |
//!
//! Errors are `{"error": "...", "reason": "NotFound"|"Conflict"|...}` with
//! 400, 401, 404, 409, 410, 422 or 500.

mod fleet_metrics;
mod metrics;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub use metrics::Metrics;

pub mod routes;
mod ui;

use crate::manifest::{self, Kind, ManifestError};
use crate::object::{ApiObject, ObjectKey, kind_from_resource, resource_of};
use crate::selector::Selector;
use crate::store::{EventType, Op, Store, StoreError, WatchEvent};

/// What every handler shares.
pub struct ApiState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The bearer token clients must present.
    pub token: String,
    /// Counters and histograms.
    pub metrics: Metrics,
    /// Set once the reconcilers run.
    pub ready: std::sync::atomic::AtomicBool,
    /// The last table rows answered per list.
    pub tables: TableCache,
    /// Largest request body the API takes (`--max-request-body-mib`).
    pub max_body: usize,
    /// The free space writes through the API may not eat into.
    pub space: crate::space::SpaceGuard,
}

/// The API's request body limit unless one is configured: room for a
/// large apply (many objects, ConfigMaps of up to 1 MiB each).
pub const DEFAULT_MAX_BODY: usize = 16 << 20;

/// A body declared over the limit is still read, up to this much, and
/// dropped, so the client sees the 413 instead of a connection reset in
/// the middle of its upload.
const DRAIN_PAST_LIMIT: u64 = 256 << 20;

/// Middleware: a request whose declared body is over the limit is answered
/// 413 with the limit in the JSON body (bodies without a length meet the
/// same limit as they are read).
pub async fn limit_body(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let max = state.max_body as u64;
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let writes = matches!(*request.method(), axum::http::Method::POST | axum::http::Method::PUT);
    if writes && let Err(no_space) = state.space.check(declared.unwrap_or(0).min(max)) {
        return ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage", no_space.to_string())
            .into_response();
    }
    match declared {
        Some(length) if length > max => {
            if length <= max + DRAIN_PAST_LIMIT {
                let mut body = request.into_body().into_data_stream();
                while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
                    if chunk.is_err() {
                        break;
                    }
                }
            }
            too_large(state.max_body, Some(length)).into_response()
        }
        _ => next.run(request).await,
    }
}

fn too_large(max: usize, length: Option<u64>) -> ApiError {
    let size = length.map(|l| format!(" ({l} bytes)")).unwrap_or_default();
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        format!(
            "the request body{size} is over the server's limit of {max} bytes ({} MiB; `flotilla server \
             --max-request-body-mib`); split the manifest into several applies",
            max >> 20
        ),
    )
}

/// Middleware: every error the API answers has the JSON body
/// ([`ErrorBody`]), also the framework's own (a body that is not JSON, of
/// the wrong shape or type, or over the limit).
pub async fn json_errors(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(state.max_body, None).into_response();
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let reason = match status {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
        StatusCode::UNPROCESSABLE_ENTITY => "Invalid",
        s if s.is_server_error() => "InternalError",
        _ => "BadRequest",
    };
    let error = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    let mut answer = ApiError::new(status, reason, error).into_response();
    // Headers that say more than the body (Allow on a 405) are kept.
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        answer.headers_mut().insert(header::ALLOW, allow.clone());
    }
    answer
}

/// The rows last rendered per list (kind, namespace, `-o wide`), with the
/// store version they show: while nothing changes, a fleet listed every
/// second is copied, with fresh ages, instead of walked again.
#[derive(Default)]
pub struct TableCache(std::sync::Mutex<std::collections::HashMap<TableKey, (u64, Arc<RenderedRows>)>>);

/// A list's kind, namespace (`None`: all) and `-o wide`.
type TableKey = (Kind, Option<String>, bool);
use crate::commands::table::RenderedRows;

type Shared = Arc<ApiState>;

/// The API with the built-in OCI registry under `/v2/` (reads anonymous,
/// writes with the same token; see [`crate::registry`]).
pub fn router_with_registry(state: Shared, registry: Arc<crate::registry::Registry>) -> Router {
    routes::router(routes::Parts { api: state, enrol: None, logs: None, registry: Some(registry) })
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

/// The JSON body of an error.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable.
    pub error: String,
    /// Machine-readable, Kubernetes' names.
    pub reason: String,
}

impl ApiError {
    /// An error with its HTTP status, Kubernetes-style reason and message.
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, reason, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message, reason: self.reason.to_owned() })).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, reason) = match &e {
            StoreError::Conflict { .. } => (StatusCode::CONFLICT, "Conflict"),
            StoreError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            StoreError::AlreadyExists(_) => (StatusCode::CONFLICT, "AlreadyExists"),
            StoreError::Gone { .. } => (StatusCode::GONE, "Expired"),
            StoreError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            StoreError::NoSpace(_) => (StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "store failure");
        }
        ApiError::new(status, reason, e.to_string())
    }
}

impl From<ManifestError> for ApiError {
    fn from(e: ManifestError) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string())
    }
}

/// Compares secrets in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: refuses a request without the API token (bearer).
pub async fn require_token(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.as_bytes()) => next.run(request).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "the bearer token is wrong").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing `Authorization: Bearer <token>` (the token is in the server's data directory, file `token`)",
        )
        .into_response(),
    }
}

async fn count_requests(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.observe_request(&method, &route, response.status().as_u16(), started.elapsed());
    response
}

/// 200 `ok` when the controller runs and can write; else 503 with why.
async fn readyz(State(state): State<Shared>) -> Response {
    let unavailable = |reason: &'static str, error: String| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason, error).into_response()
    };
    if !state.ready.load(std::sync::atomic::Ordering::Acquire) {
        return unavailable("Starting", "starting".into());
    }
    if let Some(error) = state.store.write_failure() {
        return unavailable("StoreWritesFailing", format!("the store cannot write: {error}"));
    }
    if let Some(error) = state.store.read_failure() {
        return unavailable("StoreUnreachable", error);
    }
    match state.space.measure(0) {
        Ok(()) => "ok".into_response(),
        Err(no_space) => unavailable("DiskFull", no_space.to_string()),
    }
}

/// The OpenAPI 3 document of the API (`openapi.json`; a test holds it to
/// `routes.txt`).
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}

async fn route_table() -> Json<serde_json::Value> {
    let routes: Vec<&str> = include_str!("routes.txt").lines().filter(|l| !l.is_empty()).collect();
    let resources: Vec<&str> = crate::object::RESOURCES.iter().map(|(r, _)| *r).collect();
    Json(serde_json::json!({ "routes": routes, "resources": resources }))
}

/// Body of `POST /api/v1/apply`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyRequest {
    /// Manifest sources as read by the client.
    pub documents: Vec<SourceText>,
    /// Refuse the apply if anything would be ignored.
    #[serde(default)]
    pub strict: bool,
    /// Store nothing: check, and answer what the apply would do to the
    /// objects as stored now.
    #[serde(default)]
    pub dry_run: bool,
}

/// One manifest file (or stdin).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceText {
    /// File name, for messages.
    pub source: String,
    /// Its YAML or JSON text.
    pub text: String,
}

/// Answer of `POST /api/v1/apply`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApplyResponse {
    /// Everything ignored or skipped, with file, document and field path.
    pub warnings: Vec<String>,
    /// One entry per object.
    pub results: Vec<ApplyResult>,
}

/// What happened to one object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    /// Kind.
    pub kind: Kind,
    /// Namespace (empty for cluster-scoped).
    #[serde(default)]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `created`, `configured` or `unchanged` (with `dryRun`, what the apply
    /// would do); `checked` from `flotilla apply --dry-run=client`.
    pub action: String,
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()))
}

async fn apply(
    State(state): State<Shared>,
    Json(request): Json<ApplyRequest>,
) -> Result<Json<ApplyResponse>, ApiError> {
    let started = Instant::now();
    let mut parsed = manifest::Parsed::default();
    for document in &request.documents {
        let one = manifest::parse_str(&document.source, &document.text)?;
        parsed.objects.extend(one.objects);
        parsed.warnings.extend(one.warnings);
    }
    if request.strict {
        parsed = parsed.strict()?;
    }
    let warnings = parsed.warnings.iter().map(ToString::to_string).collect();
    let ops: Vec<Op> = parsed.objects.iter().map(|o| Op::Apply(ApiObject::from_manifest(o))).collect();
    let store = state.store.clone();
    if request.dry_run {
        // The store's own checks against what it holds now; nothing written.
        let outcomes = blocking(move || store.dry_run(ops)).await??;
        let results = outcomes.iter().map(|o| result_of(o.object(), o.verb())).collect();
        return Ok(Json(ApplyResponse { warnings, results }));
    }
    let outcomes = blocking(move || store.commit(ops)).await??;
    state.metrics.observe_apply(started.elapsed());
    let results = outcomes.iter().map(|o| result_of(o.object(), o.verb())).collect();
    Ok(Json(ApplyResponse { warnings, results }))
}

fn result_of(object: &ApiObject, action: &str) -> ApplyResult {
    ApplyResult {
        kind: object.kind,
        namespace: object.metadata.namespace.clone(),
        name: object.metadata.name.clone(),
        action: action.to_owned(),
    }
}

fn kind_of(resource: &str) -> Result<Kind, ApiError> {
    kind_from_resource(resource).ok_or_else(|| {
        let known: Vec<&str> = crate::object::RESOURCES.iter().map(|(r, _)| *r).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("unknown resource {resource:?}; known: {}", known.join(", ")),
        )
    })
}

/// Query of list and watch.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    /// Label selector.
    #[serde(default)]
    pub label_selector: String,
    /// Stream changes instead of listing.
    #[serde(default)]
    pub watch: bool,
    /// Watch from this version (from a list's `resourceVersion`).
    #[serde(default)]
    pub resource_version: Option<String>,
    /// `table`: the rows `flotilla get` prints instead of the objects
    /// (Kubernetes' server-side printing).
    #[serde(default, rename = "as")]
    pub as_format: Option<String>,
    /// With `as=table`: the `-o wide` columns too.
    #[serde(default)]
    pub wide: bool,
}

/// A list answer, like Kubernetes' `*List`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectList<T = ApiObject> {
    /// `List`.
    pub kind: String,
    /// Watch from here to see every later change.
    pub resource_version: String,
    /// The objects.
    pub items: Vec<T>,
}

/// An [`ObjectList`] as JSON, from each object's own serialised form (the
/// pods of a large fleet are joined, not walked again for every list), in
/// chunks of about [`LIST_CHUNK`] bytes as the client reads them: a list
/// of 50,000 pods is never one 50 MB buffer.
fn list_json(resource_version: u64, items: Vec<Arc<ApiObject>>) -> impl Iterator<Item = bytes::Bytes> {
    let head = format!(r#"{{"kind":"List","resourceVersion":"{resource_version}","items":["#);
    let mut next = 0;
    let mut head = Some(head.into_bytes());
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut chunk = head.take().unwrap_or_default();
        while chunk.len() < LIST_CHUNK && next < items.len() {
            if next > 0 {
                chunk.push(b',');
            }
            chunk.extend_from_slice(&items[next].json());
            next += 1;
        }
        if next == items.len() {
            chunk.extend_from_slice(b"]}");
            done = true;
        }
        Some(bytes::Bytes::from(chunk))
    })
}

/// About how many bytes of a list go out at a time.
const LIST_CHUNK: usize = 256 << 10;

async fn list_all(
    State(state): State<Shared>,
    Path(resource): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    list(state, resource, None, query).await
}

async fn list_namespaced(
    State(state): State<Shared>,
    Path((ns, resource)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    list(state, resource, Some(ns), query).await
}

async fn list(state: Shared, resource: String, ns: Option<String>, query: ListQuery) -> Result<Response, ApiError> {
    let kind = kind_of(&resource)?;
    let selector = Selector::parse(&query.label_selector).map_err(ApiError::bad_request)?;
    let ns = ns.filter(|_| kind.is_namespaced());
    if query.watch {
        let from = match query.resource_version.as_deref() {
            None | Some("") => 0,
            Some(v) => {
                v.parse().map_err(|_| ApiError::bad_request(format!("resourceVersion {v:?} is not a number")))?
            }
        };
        return watch(state, kind, ns, selector, from);
    }
    match query.as_format.as_deref() {
        None | Some("") => {}
        Some("table" | "Table") => {
            let state = state.clone();
            let json = blocking(move || {
                // Read in place from one view: no list of the fleet's
                // objects is made for an answer that is rows.
                let view = state.store.view();
                let table = crate::commands::table::Table::new(kind, query.wide, ns.is_none());
                let render = || {
                    let items = view.list(kind, ns.as_deref()).filter(|o| selector.matches(&o.metadata.labels));
                    Arc::new(table.render(items.map(|o| &**o)))
                };
                let rows = if query.label_selector.is_empty() {
                    let key = (kind, ns.clone(), query.wide);
                    let kept = state.tables.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
                    match kept {
                        Some((version, rows)) if version == view.resource_version => rows,
                        _ => {
                            let rows = render();
                            let mut tables = state.tables.0.lock().unwrap_or_else(|p| p.into_inner());
                            tables.insert(key, (view.resource_version, rows.clone()));
                            rows
                        }
                    }
                } else {
                    render()
                };
                table.write(&rows, view.resource_version)
            })
            .await?;
            return Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], json).into_response());
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!("unknown `as={other}`; `as=table` is the one there is")));
        }
    }
    let store = state.store.clone();
    let listing = blocking(move || store.list(kind, ns.as_deref())).await?;
    // The store's own copies, serialised in place: a list of every pod of a
    // large fleet copies nothing.
    let items: Vec<Arc<ApiObject>> =
        listing.items.into_iter().filter(|o| selector.matches(&o.metadata.labels)).collect();
    let chunks = list_json(listing.resource_version, items).map(Ok::<_, std::convert::Infallible>);
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Newline-delimited JSON watch events. A watcher that falls behind gets an
/// `ERROR` event and the stream ends: it lists again, like kubectl.
fn watch(state: Shared, kind: Kind, ns: Option<String>, selector: Selector, from: u64) -> Result<Response, ApiError> {
    let subscription = state.store.subscribe(from)?;
    let matches = move |event: &WatchEvent| {
        event.object.kind == kind
            && ns.as_ref().is_none_or(|ns| &event.object.metadata.namespace == ns)
            && selector.matches(&event.object.metadata.labels)
    };
    let backlog: Vec<_> =
        subscription.backlog.iter().filter(|e| matches(e)).map(|e| event_line(e, Detail::Whole)).collect();
    Ok(watch_stream(backlog, subscription.live, subscription.after, matches, Detail::Whole, false))
}

/// Query of `GET /api/v1/watch`.
#[derive(Debug, Deserialize)]
pub struct WatchKindsQuery {
    /// Comma-separated resources, `nodes,pods,deployments`.
    #[serde(default)]
    pub resources: String,
    /// Replicas without their spec but `nodeName` (what a screen shows;
    /// the spec is most of a replica's bytes).
    #[serde(default)]
    pub summary: bool,
}

/// How much of an object a watch line carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    Whole,
    /// Replicas' spec cut to `nodeName`.
    Summary,
}

/// Several kinds in one stream (what the dashboard shows, over one
/// connection: a browser keeps six per server): every current object as
/// `ADDED`, a `BOOKMARK` with the store's resourceVersion, then the changes
/// after it. A watcher that falls behind gets `ERROR` and starts again.
pub(crate) async fn watch_kinds(
    State(state): State<Shared>,
    Query(query): Query<WatchKindsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accepted| accepted.split(',').any(|e| e.trim().starts_with("gzip")));
    let kinds = query.resources.split(',').map(str::trim).filter(|r| !r.is_empty());
    let kinds = kinds.map(|r| kind_of(r).map_err(|e| ApiError::bad_request(e.message)));
    let kinds: Vec<Kind> = kinds.collect::<Result<_, _>>()?;
    if kinds.is_empty() {
        return Err(ApiError::bad_request("`resources=` names what to watch, e.g. `resources=nodes,pods`"));
    }
    // Subscribed before the snapshot: a change committed in between is in
    // both, and its copy in the live stream is skipped by version.
    let detail = if query.summary { Detail::Summary } else { Detail::Whole };
    let subscription = state.store.subscribe(0)?;
    let store = state.store.clone();
    let wanted = kinds.clone();
    let (initial, version) = blocking(move || {
        let view = store.view();
        let mut lines: Vec<Result<Vec<u8>, std::convert::Infallible>> = Vec::new();
        for kind in wanted {
            lines.extend(view.list(kind, None).map(|object| object_line("ADDED", object, detail)));
        }
        let version = view.resource_version;
        let bookmark = serde_json::json!({
            "type": "BOOKMARK",
            "object": {"metadata": {"resourceVersion": version.to_string()}},
        });
        lines.push(Ok(format!("{bookmark}\n").into_bytes()));
        (lines, version)
    })
    .await?;
    let matches = move |event: &WatchEvent| kinds.contains(&event.object.kind);
    Ok(watch_stream(initial, subscription.live, version, matches, detail, gzip))
}

/// One watch event's line.
fn event_line(event: &WatchEvent, detail: Detail) -> Result<Vec<u8>, std::convert::Infallible> {
    let event_type = match event.event_type {
        EventType::Added => "ADDED",
        EventType::Modified => "MODIFIED",
        EventType::Deleted => "DELETED",
    };
    object_line(event_type, &event.object, detail)
}

fn object_line(event_type: &str, object: &ApiObject, detail: Detail) -> Result<Vec<u8>, std::convert::Infallible> {
    let object = match (detail, object.kind) {
        (Detail::Summary, Kind::Pod) => {
            let mut summary = object.clone();
            let node = object.node_name().map(str::to_owned);
            summary.set_field("spec", serde_json::json!({ "nodeName": node }));
            summary.json()
        }
        _ => object.json(),
    };
    let mut bytes = Vec::with_capacity(object.len() + 32);
    bytes.extend_from_slice(format!(r#"{{"type":"{event_type}","object":"#).as_bytes());
    bytes.extend_from_slice(&object);
    bytes.extend_from_slice(b"}\n");
    Ok(bytes)
}

/// `first` lines, then the live events after version `after` that match.
fn watch_stream(
    first: Vec<Result<Vec<u8>, std::convert::Infallible>>,
    live: tokio::sync::broadcast::Receiver<Arc<WatchEvent>>,
    after: u64,
    matches: impl Fn(&WatchEvent) -> bool + Send + 'static,
    detail: Detail,
    gzip: bool,
) -> Response {
    let live = futures_util::stream::unfold((live, matches, false), move |(mut live, matches, done)| async move {
        if done {
            return None;
        }
        loop {
            match live.recv().await {
                Ok(event) if event.resource_version() <= after || !matches(&event) => continue,
                Ok(event) => return Some((event_line(&event, detail), (live, matches, false))),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let message = format!("watch fell {n} changes behind; list again");
                    let error = serde_json::json!({"type": "ERROR", "object": {"message": message}});
                    let mut bytes = error.to_string().into_bytes();
                    bytes.push(b'\n');
                    return Some((Ok(bytes), (live, matches, true)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, "application/x-ndjson".parse().expect("static header"));
    if !gzip {
        let stream = futures_util::StreamExt::chain(futures_util::stream::iter(first), live);
        return (headers, Body::from_stream(stream)).into_response();
    }
    // The snapshot in chunks of up to 256 KiB, then each live line: each
    // compressed and flushed at once, so the reader gets every event as it
    // happens (JSON compresses about tenfold).
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for line in first.into_iter().flatten() {
        match chunks.last_mut() {
            Some(chunk) if chunk.len() + line.len() <= 256 << 10 => chunk.extend_from_slice(&line),
            _ => chunks.push(line),
        }
    }
    let lines = futures_util::StreamExt::chain(
        futures_util::stream::iter(chunks),
        futures_util::StreamExt::map(live, |line| line.unwrap_or_else(|never| match never {})),
    );
    let encoder =
        Arc::new(std::sync::Mutex::new(Some(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()))));
    let ending = encoder.clone();
    let compressed = futures_util::StreamExt::map(lines, move |line| gzip_flush(&encoder, Some(&line)));
    let trailer = futures_util::stream::once(async move { gzip_flush(&ending, None) });
    let stream = futures_util::StreamExt::chain(compressed, trailer);
    headers.insert(header::CONTENT_ENCODING, "gzip".parse().expect("static header"));
    headers.insert(header::VARY, "accept-encoding".parse().expect("static header"));
    (headers, Body::from_stream(stream)).into_response()
}

/// `bytes` through the stream's gzip encoder, flushed; `None`: the end
/// (the gzip trailer).
fn gzip_flush(
    encoder: &std::sync::Mutex<Option<flate2::write::GzEncoder<Vec<u8>>>>,
    bytes: Option<&[u8]>,
) -> Result<Vec<u8>, std::io::Error> {
    use std::io::Write as _;
    let mut encoder = encoder.lock().unwrap_or_else(|p| p.into_inner());
    match bytes {
        Some(bytes) => {
            let gz = encoder.as_mut().ok_or_else(|| std::io::Error::other("the stream ended"))?;
            gz.write_all(bytes)?;
            gz.flush()?;
            Ok(std::mem::take(gz.get_mut()))
        }
        None => match encoder.take() {
            Some(gz) => gz.finish(),
            None => Ok(Vec::new()),
        },
    }
}

async fn get_one(state: Shared, key: ObjectKey) -> Result<Json<ApiObject>, ApiError> {
    let store = state.store.clone();
    let lookup = key.clone();
    blocking(move || store.get(&lookup)).await?.map(Json).ok_or_else(|| StoreError::NotFound(key).into())
}

async fn get_namespaced(
    State(state): State<Shared>,
    Path((ns, resource, name)): Path<(String, String, String)>,
) -> Result<Json<ApiObject>, ApiError> {
    let kind = kind_of(&resource)?;
    get_one(state, ObjectKey::new(kind, &ns, &name)).await
}

async fn get_cluster(
    State(state): State<Shared>,
    Path((resource, name)): Path<(String, String)>,
) -> Result<Json<ApiObject>, ApiError> {
    let kind = kind_of(&resource)?;
    if kind.is_namespaced() {
        return Err(ApiError::bad_request(format!(
            "{resource} are namespaced: use /api/v1/namespaces/<namespace>/{resource}/{name}"
        )));
    }
    get_one(state, ObjectKey::new(kind, "", &name)).await
}

/// Checks a PUT body against the URL and validates it like a manifest.
fn checked_put_body(key: &ObjectKey, body: serde_json::Value) -> Result<ApiObject, ApiError> {
    let requested_rv = body.pointer("/metadata/resourceVersion").and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let mut manifest_value = body;
    // Server-owned metadata is not part of a manifest; keep only what an operator sets.
    if let Some(meta) = manifest_value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "labels" | "annotations"));
    }
    let text = manifest_value.to_string();
    let parsed = manifest::parse_str("request body", &text)?;
    let [object] = parsed.objects.as_slice() else {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "the body must be exactly one object"));
    };
    let mut object = ApiObject::from_manifest(object);
    if object.key() != *key {
        return Err(ApiError::bad_request(format!("the body is {}, the URL names {key}", object.key())));
    }
    object.metadata.resource_version = requested_rv;
    Ok(object)
}

async fn put_one(state: Shared, key: ObjectKey, body: serde_json::Value) -> Result<Json<ApiObject>, ApiError> {
    let object = checked_put_body(&key, body)?;
    let store = state.store.clone();
    let outcome = blocking(move || store.commit(vec![Op::Apply(object)])).await??;
    Ok(Json(outcome[0].object().clone()))
}

async fn put_namespaced(
    State(state): State<Shared>,
    Path((ns, resource, name)): Path<(String, String, String)>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<ApiObject>, ApiError> {
    let kind = kind_of(&resource)?;
    put_one(state, ObjectKey::new(kind, &ns, &name), body).await
}

async fn put_cluster(
    State(state): State<Shared>,
    Path((resource, name)): Path<(String, String)>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<ApiObject>, ApiError> {
    let kind = kind_of(&resource)?;
    put_one(state, ObjectKey::new(kind, "", &name), body).await
}

async fn put_status(state: Shared, key: ObjectKey, body: serde_json::Value) -> Result<Json<ApiObject>, ApiError> {
    let mut object = ApiObject::new(key.kind, &key.namespace, &key.name);
    object.metadata.resource_version =
        body.pointer("/metadata/resourceVersion").and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let status = body.get("status").cloned().ok_or_else(|| ApiError::bad_request("the body has no `status`"))?;
    object.set_field("status", status);
    let store = state.store.clone();
    let outcome = blocking(move || store.commit(vec![Op::UpdateStatus(object)])).await??;
    Ok(Json(outcome[0].object().clone()))
}

async fn put_status_namespaced(
    State(state): State<Shared>,
    Path((ns, resource, name)): Path<(String, String, String)>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<ApiObject>, ApiError> {
    let kind = kind_of(&resource)?;
    put_status(state, ObjectKey::new(kind, &ns, &name), body).await
}

async fn put_status_cluster(
    State(state): State<Shared>,
    Path((resource, name)): Path<(String, String)>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<ApiObject>, ApiError> {
    let kind = kind_of(&resource)?;
    put_status(state, ObjectKey::new(kind, "", &name), body).await
}

/// Query of delete.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteQuery {
    /// Only delete if still at this version.
    #[serde(default)]
    pub resource_version: Option<u64>,
}

async fn delete_one(state: Shared, key: ObjectKey, query: DeleteQuery) -> Result<Json<ApiObject>, ApiError> {
    let store = state.store.clone();
    let outcome = blocking(move || {
        // A claim that replicas still mount is retired (Terminating), and
        // deleted, data and all, once none does (the garbage collector's).
        if key.kind == Kind::PersistentVolumeClaim {
            let view = store.view();
            let in_use = view
                .list(Kind::Pod, Some(key.namespace.as_str()))
                .any(|p| crate::controllers::claims::uses(p, &key.name));
            if in_use && let Some(claim) = view.get(&key) {
                let uid = claim.metadata.uid.clone();
                return store.commit(vec![Op::Retire { key, uid }]);
            }
        }
        store.commit(vec![Op::Delete(key, query.resource_version)])
    })
    .await??;
    Ok(Json(outcome[0].object().clone()))
}

async fn delete_namespaced(
    State(state): State<Shared>,
    Path((ns, resource, name)): Path<(String, String, String)>,
    Query(query): Query<DeleteQuery>,
) -> Result<Json<ApiObject>, ApiError> {
    let kind = kind_of(&resource)?;
    delete_one(state, ObjectKey::new(kind, &ns, &name), query).await
}

async fn delete_cluster(
    State(state): State<Shared>,
    Path((resource, name)): Path<(String, String)>,
    Query(query): Query<DeleteQuery>,
) -> Result<Json<ApiObject>, ApiError> {
    let kind = kind_of(&resource)?;
    delete_one(state, ObjectKey::new(kind, "", &name), query).await
}

/// Where an object lives in the API.
pub fn object_path(key: &ObjectKey) -> String {
    if key.kind.is_namespaced() {
        format!("/api/v1/namespaces/{}/{}/{}", key.namespace, resource_of(key.kind), key.name)
    } else {
        format!("/api/v1/{}/{}", resource_of(key.kind), key.name)
    }
}
