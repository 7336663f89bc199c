//! The axum handlers of the distribution API.
//!
//! One wildcard route takes every path under `/v2/`; [`Endpoint::parse`]
//! works out what it names, because repository names contain `/`. Storage
//! calls block (std file I/O) and run on tokio's blocking pool; blob bodies
//! stream from and to files in both directions, never whole in memory.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::StreamExt;
use http_range_header::RangeUnsatisfiableError;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use super::Registry;
use super::auth::authorize;
use super::endpoint::Endpoint;
use super::error::RegistryError;
use super::manifest::MAX_MANIFEST_BYTES;
use super::names::{Digest, Reference, RepoName};

const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

/// Blob bodies go out in pieces this large: big enough that per-piece
/// overhead does not limit loopback throughput.
const BLOB_READ_CHUNK: usize = 256 << 10;

struct HttpState {
    registry: Arc<Registry>,
    token: String,
}

type Shared = Arc<HttpState>;

/// The registry's routes (`/v2/...`), to merge into the controller's router.
/// `token` is the controller's API token, needed for writes.
pub fn router<S: Clone + Send + Sync + 'static>(registry: Arc<Registry>, token: String) -> Router<S> {
    let state = Arc::new(HttpState { registry, token });
    Router::new()
        .route("/v2", get(api_version))
        .route("/v2/", get(api_version))
        .route("/v2/{*path}", any(dispatch))
        .layer(middleware::from_fn(announce_api_version))
        .with_state(state)
}

/// Clients recognise a registry by this header (the spec's `GET /v2/` check).
async fn announce_api_version(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    response
}

/// `GET /v2/`: 200 for valid credentials, else the challenge that tells
/// clients which credentials to send (reads need none; see the module docs).
async fn api_version(State(state): State<Shared>, headers: HeaderMap) -> Response {
    match authorize(&headers, &state.token) {
        Ok(()) => (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Query parameters of all endpoints (each uses some).
type Params = HashMap<String, String>;

async fn dispatch(
    State(state): State<Shared>,
    method: Method,
    Path(path): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&state, method, &path, &params, &headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn handle(
    state: &Shared,
    method: Method,
    path: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let endpoint = Endpoint::parse(path)?;
    let reads = method == Method::GET || method == Method::HEAD;
    // Upload sessions are part of a push, even when asked with GET.
    let writes = matches!(endpoint, Endpoint::GarbageCollect | Endpoint::StartUpload(_) | Endpoint::Upload(..));
    if !reads || writes {
        authorize(headers, &state.token)?;
    }
    let head = method == Method::HEAD;
    match (method, endpoint) {
        (_, Endpoint::Catalog) if reads => catalog(state, params).await,
        (Method::POST, Endpoint::GarbageCollect) => collect_garbage(state).await,
        (_, Endpoint::Tags(repo)) if reads => tags(state, repo, params).await,
        (_, Endpoint::Manifest(repo, reference)) if reads => get_manifest(state, repo, reference, head).await,
        (Method::PUT, Endpoint::Manifest(repo, reference)) => put_manifest(state, repo, reference, headers, body).await,
        (Method::DELETE, Endpoint::Manifest(repo, reference)) => {
            run_blocking(state, move |r| r.delete_manifest(&repo, &reference)).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (_, Endpoint::Blob(repo, digest)) if reads => get_blob(state, repo, digest, headers, head).await,
        (Method::DELETE, Endpoint::Blob(repo, digest)) => {
            run_blocking(state, move |r| r.delete_blob(&repo, &digest)).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (Method::POST, Endpoint::StartUpload(repo)) => start_upload(state, repo, params, body).await,
        (Method::GET, Endpoint::Upload(repo, id)) => {
            let size = state.registry.uploads().size(&repo, id).await?;
            Ok(upload_progress(StatusCode::NO_CONTENT, &repo, id, size))
        }
        (Method::PATCH, Endpoint::Upload(repo, id)) => {
            let start = headers.get(header::CONTENT_RANGE).map(chunk_start).transpose()?;
            let size = state.registry.uploads().append(&repo, id, start, body.into_data_stream()).await?;
            Ok(upload_progress(StatusCode::ACCEPTED, &repo, id, size))
        }
        (Method::PUT, Endpoint::Upload(repo, id)) => {
            let digest = params
                .get("digest")
                .ok_or_else(|| RegistryError::UploadInvalid("finishing an upload needs `?digest=`".to_owned()))?
                .parse()?;
            finish_upload(state, repo, id, digest, body).await
        }
        (Method::DELETE, Endpoint::Upload(repo, id)) => {
            state.registry.uploads().cancel(&repo, id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (method, _) => Err(RegistryError::Unsupported { method: method.to_string() }),
    }
}

/// Runs storage work on the blocking pool.
async fn run_blocking<T: Send + 'static>(
    state: &Shared,
    work: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    let registry = state.registry.clone();
    tokio::task::spawn_blocking(move || work(&registry)).await.map_err(|e| RegistryError::Internal(e.to_string()))?
}

fn header_value(text: &str) -> HeaderValue {
    // Everything we put in headers is ASCII built from validated names.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Pagination of `_catalog` and `tags/list`: `n` entries after `last`.
fn paginate(
    all: Vec<String>,
    params: &Params,
    link_base: &str,
) -> Result<(Vec<String>, Option<String>), RegistryError> {
    let after: Vec<String> = match params.get("last") {
        Some(last) => all.into_iter().filter(|name| name > last).collect(),
        None => all,
    };
    let Some(n) = params.get("n") else { return Ok((after, None)) };
    let n: usize = n.parse().map_err(|_| RegistryError::PaginationInvalid(format!("`n={n}` is not a number")))?;
    if after.len() <= n {
        return Ok((after, None));
    }
    let page: Vec<String> = after.into_iter().take(n).collect();
    let next = page.last().map(|last| format!("<{link_base}?n={n}&last={last}>; rel=\"next\""));
    Ok((page, next))
}

fn json_page(body: serde_json::Value, next: Option<String>) -> Response {
    let mut response = axum::Json(body).into_response();
    if let Some(link) = next {
        response.headers_mut().insert(header::LINK, header_value(&link));
    }
    response
}

async fn catalog(state: &Shared, params: &Params) -> Result<Response, RegistryError> {
    let repos = run_blocking(state, |r| r.repositories()).await?;
    let names = repos.iter().map(ToString::to_string).collect();
    let (page, next) = paginate(names, params, "/v2/_catalog")?;
    Ok(json_page(serde_json::json!({ "repositories": page }), next))
}

async fn tags(state: &Shared, repo: RepoName, params: &Params) -> Result<Response, RegistryError> {
    let lookup = repo.clone();
    let tags = run_blocking(state, move |r| r.tags(&lookup)).await?;
    let names = tags.iter().map(|(tag, _)| tag.to_string()).collect();
    let (page, next) = paginate(names, params, &format!("/v2/{repo}/tags/list"))?;
    Ok(json_page(serde_json::json!({ "name": repo.to_string(), "tags": page }), next))
}

async fn collect_garbage(state: &Shared) -> Result<Response, RegistryError> {
    let report = run_blocking(state, |r| r.collect_garbage()).await?;
    tracing::info!(?report, "registry garbage collection (requested)");
    Ok(axum::Json(report).into_response())
}

async fn get_manifest(
    state: &Shared,
    repo: RepoName,
    reference: Reference,
    head: bool,
) -> Result<Response, RegistryError> {
    let (lookup_repo, lookup_ref) = (repo.clone(), reference.clone());
    let stored = run_blocking(state, move |r| r.manifest(&lookup_repo, &lookup_ref)).await?.ok_or_else(|| {
        RegistryError::ManifestUnknown { repository: repo.to_string(), reference: reference.to_string() }
    })?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, header_value(&stored.media_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(stored.bytes.len()));
    headers.insert(DOCKER_CONTENT_DIGEST, header_value(&stored.digest.to_string()));
    let body = if head { Body::empty() } else { Body::from(stored.bytes) };
    Ok((headers, body).into_response())
}

/// Reads a request body of at most `limit` bytes.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, RegistryError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Body(e.to_string()))?;
        if bytes.len() + chunk.len() > limit {
            return Err(RegistryError::ManifestTooLarge { limit });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

async fn put_manifest(
    state: &Shared,
    repo: RepoName,
    reference: Reference,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|length: usize| length > MAX_MANIFEST_BYTES) {
        return Err(RegistryError::ManifestTooLarge { limit: MAX_MANIFEST_BYTES });
    }
    let bytes = read_limited(body, MAX_MANIFEST_BYTES).await?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let target = repo.clone();
    let digest =
        run_blocking(state, move |r| r.put_manifest(&target, &reference, &bytes, content_type.as_deref())).await?;
    tracing::debug!(repository = %repo, %digest, "manifest stored");
    Ok(created(&format!("/v2/{repo}/manifests/{digest}"), &digest))
}

/// 201 with the new content's location and digest.
fn created(location: &str, digest: &Digest) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, header_value(location));
    headers.insert(DOCKER_CONTENT_DIGEST, header_value(&digest.to_string()));
    (StatusCode::CREATED, headers).into_response()
}

/// What the `Range` header asks of a blob of `size` bytes.
enum Wanted {
    Whole,
    Part { start: u64, end: u64 },
    Unsatisfiable,
}

fn wanted_range(headers: &HeaderMap, size: u64) -> Wanted {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Wanted::Whole };
    match http_range_header::parse_range_header(value).and_then(|ranges| ranges.validate(size)) {
        Ok(ranges) => match ranges.as_slice() {
            [one] => Wanted::Part { start: *one.start(), end: *one.end() },
            // Multipart answers are allowed to be skipped (RFC 9110 14.2);
            // registry clients only ever ask for one range.
            _ => Wanted::Whole,
        },
        Err(RangeUnsatisfiableError::Unsatisfiable) => Wanted::Unsatisfiable,
        // A malformed Range header is ignored, as the RFC allows.
        Err(_) => Wanted::Whole,
    }
}

async fn get_blob(
    state: &Shared,
    repo: RepoName,
    digest: Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, RegistryError> {
    let lookup = repo.clone();
    let path = run_blocking(state, move |r| r.blob_path(&lookup, &digest)).await?;
    // Garbage collection may delete the file after the lookup: then the
    // blob is as unknown as if the lookup had failed.
    let unknown = || RegistryError::BlobUnknown { repository: repo.to_string(), digest };
    let mut file = tokio::fs::File::open(&path).await.map_err(|_| unknown())?;
    let size = file.metadata().await.map_err(RegistryError::io("reading the size of", &path))?.len();

    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert(DOCKER_CONTENT_DIGEST, header_value(&digest.to_string()));
    response_headers.insert(header::ETAG, header_value(&format!("\"{digest}\"")));
    let (status, start, length) = match wanted_range(headers, size) {
        Wanted::Whole => (StatusCode::OK, 0, size),
        Wanted::Part { start, end } => {
            response_headers.insert(header::CONTENT_RANGE, header_value(&format!("bytes {start}-{end}/{size}")));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Wanted::Unsatisfiable => {
            response_headers.insert(header::CONTENT_RANGE, header_value(&format!("bytes */{size}")));
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, response_headers).into_response());
        }
    };
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if head {
        return Ok((status, response_headers).into_response());
    }
    file.seek(std::io::SeekFrom::Start(start)).await.map_err(RegistryError::io("reading", &path))?;
    let stream = ReaderStream::with_capacity(file.take(length), BLOB_READ_CHUNK);
    Ok((status, response_headers, Body::from_stream(stream)).into_response())
}

/// The start offset of a `Content-Range: <start>-<end>` of a chunk.
fn chunk_start(value: &HeaderValue) -> Result<u64, RegistryError> {
    let text = value.to_str().unwrap_or_default();
    let range = text.trim().trim_start_matches("bytes").trim_start_matches(['=', ' ']);
    let start = range.split_once('-').and_then(|(start, _)| start.trim().parse().ok());
    start.ok_or_else(|| RegistryError::UploadInvalid(format!("Content-Range {text:?} is not `<start>-<end>`")))
}

/// An upload's location and how many bytes it holds.
fn upload_progress(status: StatusCode, repo: &RepoName, id: Uuid, size: u64) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, header_value(&format!("/v2/{repo}/blobs/uploads/{id}")));
    // `0-0` for an empty upload is what Docker's registry answers, and what
    // clients expect.
    headers.insert(header::RANGE, header_value(&format!("0-{}", size.saturating_sub(1))));
    headers.insert(DOCKER_UPLOAD_UUID, header_value(&id.to_string()));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    (status, headers).into_response()
}

async fn start_upload(state: &Shared, repo: RepoName, params: &Params, body: Body) -> Result<Response, RegistryError> {
    if let (Some(mount), Some(from)) = (params.get("mount"), params.get("from")) {
        let digest: Digest = mount.parse()?;
        let from: RepoName = from.parse()?;
        let target = repo.clone();
        if run_blocking(state, move |r| r.mount_blob(&target, &digest, &from)).await? {
            return Ok(created(&format!("/v2/{repo}/blobs/{digest}"), &digest));
        }
        // The spec: when the mount cannot happen, start a normal upload.
    }
    let id = state.registry.uploads().start(&repo).await?;
    match params.get("digest") {
        Some(digest) => finish_upload(state, repo, id, digest.parse()?, body).await,
        None => Ok(upload_progress(StatusCode::ACCEPTED, &repo, id, 0)),
    }
}

async fn finish_upload(
    state: &Shared,
    repo: RepoName,
    id: Uuid,
    digest: Digest,
    body: Body,
) -> Result<Response, RegistryError> {
    let uploads = state.registry.uploads();
    let verified = uploads.finish(&repo, id, digest, body.into_data_stream()).await?;
    let target = repo.clone();
    run_blocking(state, move |r| r.commit_upload(&target, &digest, &verified.path)).await?;
    uploads.discard(id).await;
    tracing::debug!(repository = %repo, %digest, "blob stored");
    Ok(created(&format!("/v2/{repo}/blobs/{digest}"), &digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let with = |range: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::RANGE, range.parse().unwrap());
            wanted_range(&headers, 100)
        };
        assert!(matches!(wanted_range(&HeaderMap::new(), 100), Wanted::Whole));
        assert!(matches!(with("bytes=10-19"), Wanted::Part { start: 10, end: 19 }));
        assert!(matches!(with("bytes=90-"), Wanted::Part { start: 90, end: 99 }));
        assert!(matches!(with("bytes=-5"), Wanted::Part { start: 95, end: 99 }));
        assert!(matches!(with("bytes=50-500"), Wanted::Part { start: 50, end: 99 }));
        assert!(matches!(with("bytes=100-"), Wanted::Unsatisfiable));
        assert!(matches!(with("bytes=0-1,5-6"), Wanted::Whole));
        assert!(matches!(with("pages=1-2"), Wanted::Whole));
    }

    #[test]
    fn chunk_ranges_accept_the_spec_form_and_common_variants() {
        let start = |text: &str| chunk_start(&HeaderValue::from_str(text).unwrap()).ok();
        assert_eq!(start("0-99"), Some(0));
        assert_eq!(start("100-199"), Some(100));
        assert_eq!(start("bytes 100-199/*"), Some(100));
        assert_eq!(start("bytes=5-9"), Some(5));
        assert_eq!(start("nonsense"), None);
    }

    #[test]
    fn pages_link_to_the_next_one() {
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let params =
            |pairs: &[(&str, &str)]| -> Params { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
        let (page, next) = paginate(names.clone(), &params(&[("n", "2")]), "/v2/_catalog").unwrap();
        assert_eq!(page, ["a", "b"]);
        assert_eq!(next.as_deref(), Some("</v2/_catalog?n=2&last=b>; rel=\"next\""));
        let (page, next) = paginate(names.clone(), &params(&[("n", "2"), ("last", "b")]), "/v2/_catalog").unwrap();
        assert_eq!((page, next), (vec!["c".to_owned()], None));
        assert!(paginate(names, &params(&[("n", "x")]), "/v2/_catalog").is_err());
    }
}
