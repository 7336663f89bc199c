//! What can go wrong in the registry, and the distribution spec's error
//! body for each: `{"errors":[{"code":"BLOB_UNKNOWN","message":...}]}`.

use std::path::PathBuf;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::names::{Digest, NameError};

/// A failed registry operation.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file of the registry's storage could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What we were doing (`reading`, `renaming`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The data volume is full, or the upload would cross its reserve: the
    /// upload's partial data is removed.
    #[error("{0}; the upload was discarded")]
    NoSpace(String),
    /// A repository name, tag or digest that breaks the spec's grammar.
    #[error(transparent)]
    Name(#[from] NameError),
    /// No such repository.
    #[error("repository {0} is unknown")]
    NameUnknown(String),
    /// No such manifest (tag or digest) in this repository.
    #[error("manifest {reference} is not in repository {repository}")]
    ManifestUnknown {
        /// The repository.
        repository: String,
        /// The tag or digest asked for.
        reference: String,
    },
    /// The manifest is not JSON of a kind we can store.
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),
    /// The manifest is bigger than we accept.
    #[error("the manifest is larger than {limit} bytes")]
    ManifestTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A manifest names a blob or manifest this repository does not hold.
    #[error("the manifest references {0}, which is not in this repository; push it first")]
    ManifestBlobUnknown(Digest),
    /// No such blob in this repository.
    #[error("blob {digest} is not in repository {repository}")]
    BlobUnknown {
        /// The repository.
        repository: String,
        /// The blob.
        digest: Digest,
    },
    /// No such upload session (never started, finished, cancelled or expired).
    #[error("upload session {0} is unknown (finished, cancelled or expired)")]
    UploadUnknown(String),
    /// A chunk that does not start where the upload ends.
    #[error("the chunk starts at byte {got}, the upload holds {expected} bytes")]
    UploadOutOfOrder {
        /// Where the next chunk must start.
        expected: u64,
        /// Where it started.
        got: u64,
    },
    /// A header or parameter of an upload is missing or malformed.
    #[error("invalid upload request: {0}")]
    UploadInvalid(String),
    /// The uploaded bytes do not hash to the digest the client named.
    #[error("the content's digest is {actual}, not {expected}; nothing was stored")]
    DigestInvalid {
        /// What the client said.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// Pushing or deleting without the controller's token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A method this URL does not support.
    #[error("{method} is not supported on this URL")]
    Unsupported {
        /// The HTTP method.
        method: String,
    },
    /// A URL under `/v2/` that names no endpoint.
    #[error("no such endpoint: /v2/{0}")]
    NotFound(String),
    /// `n` or `last` of a listing is malformed.
    #[error("invalid pagination: {0}")]
    PaginationInvalid(String),
    /// The request body broke off.
    #[error("reading the request body: {0}")]
    Body(String),
    /// A blocking task died.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RegistryError {
    /// An I/O error with the file it concerns.
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RegistryError {
        let path = path.into();
        move |source| RegistryError::Io { action, path, source }
    }

    /// The spec's error code and the HTTP status that goes with it.
    pub fn code(&self) -> (StatusCode, &'static str) {
        match self {
            RegistryError::Io { .. } | RegistryError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
            RegistryError::NoSpace(_) => (StatusCode::INSUFFICIENT_STORAGE, "DENIED"),
            RegistryError::Name(NameError::Repository(_)) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            RegistryError::Name(NameError::Tag(_)) => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
            RegistryError::Name(NameError::Digest(_)) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            RegistryError::NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            RegistryError::ManifestUnknown { .. } => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            RegistryError::ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            RegistryError::ManifestTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
            RegistryError::ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
            RegistryError::BlobUnknown { .. } => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            RegistryError::UploadUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            RegistryError::UploadOutOfOrder { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
            RegistryError::UploadInvalid(_) | RegistryError::Body(_) => {
                (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID")
            }
            RegistryError::PaginationInvalid(_) => (StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID"),
            RegistryError::DigestInvalid { .. } => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            RegistryError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            RegistryError::Unsupported { .. } => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            RegistryError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.code();
        if status.is_server_error() {
            tracing::error!(error = %self, "registry failure");
        }
        let body = serde_json::json!({ "errors": [{ "code": code, "message": self.to_string(), "detail": {} }] });
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // Clients such as skopeo only send credentials after a challenge
            // names the scheme.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Basic realm="flotilla""#));
        }
        response
    }
}
