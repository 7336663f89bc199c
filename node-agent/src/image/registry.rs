//! A pull-only, anonymous client for the OCI distribution API over
//! HTTP/1.1 (see [`super::http`]): HTTPS to the controller's registry when
//! it serves TLS (trusting the fleet CA), plain HTTP to other registries.
//!
//! Integrity does not depend on the transport: every manifest and blob is
//! checked against the digest in the controller-signed desired document
//! before it is used. TLS adds confidentiality of image contents.

use std::io::Read;
use std::time::Duration;

use super::error::PullError;
use super::http;
use super::oci::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Sha256};
use super::reference::Reference;

/// Manifests larger than this are refused (they are a few KiB).
pub const MANIFEST_LIMIT: u64 = 4 << 20;

/// Network timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Establishing a TCP connection.
    pub connect: Duration,
    /// Waiting for any one read (headers or a piece of body): a stalled
    /// transfer fails after this and is resumed.
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(10), read: Duration::from_secs(30) }
    }
}

/// A registry client.
pub struct Registry {
    timeouts: Timeouts,
    tls: Option<super::TlsRegistry>,
}

/// A manifest or index as received: verified bytes and the type the
/// registry gave.
#[derive(Debug)]
pub struct FetchedManifest {
    /// The document.
    pub bytes: Vec<u8>,
    /// `Content-Type`.
    pub content_type: String,
}

/// A blob response, positioned at `start`.
pub struct BlobBody {
    /// Offset of the first body byte: the requested one (206), or 0 when
    /// the registry ignored the Range header (200).
    pub start: u64,
    /// The body.
    pub reader: Box<dyn Read + Send>,
}

impl Registry {
    /// A client with these timeouts.
    pub fn new(timeouts: Timeouts) -> Self {
        Registry { timeouts, tls: None }
    }

    /// Speaks HTTPS to `tls`'s registry.
    pub fn with_tls(self, tls: Option<super::TlsRegistry>) -> Self {
        Registry { tls, ..self }
    }

    /// The TLS settings for `reference`'s registry, if it speaks HTTPS.
    fn tls_for(&self, reference: &Reference) -> Option<&std::sync::Arc<rustls::ClientConfig>> {
        self.tls.as_ref().filter(|tls| tls.registry == reference.registry).map(|tls| &tls.config)
    }

    fn url(&self, reference: &Reference, kind: &str, digest: &Sha256) -> String {
        let scheme = if self.tls_for(reference).is_some() { "https" } else { "http" };
        format!("{scheme}://{}/v2/{}/{kind}/{digest}", reference.registry, reference.repository)
    }

    fn failed(reference: &Reference, reason: impl std::fmt::Display) -> PullError {
        PullError::Registry { registry: reference.registry.clone(), reason: reason.to_string() }
    }

    /// `GET /v2/<name>/manifests/<digest>`, verified against `digest`.
    pub fn manifest(&self, reference: &Reference, digest: &Sha256) -> Result<FetchedManifest, PullError> {
        let accept = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", ");
        let url = self.url(reference, "manifests", digest);
        let mut response = http::get(&url, &[("Accept", &accept)], self.timeouts, self.tls_for(reference))
            .map_err(|e| Self::failed(reference, e))?;
        if response.status != 200 {
            return Err(Self::failed(
                reference,
                format!("manifest {} of {}: HTTP {}", digest.short(), reference.repository, response.status),
            ));
        }
        let content_type = response.header("content-type").unwrap_or_default().to_owned();
        let bytes = http::read_limited(&mut response.body, MANIFEST_LIMIT)
            .map_err(|e| Self::failed(reference, format!("manifest {}: {e}", digest.short())))?;
        let actual = Sha256::of(&bytes);
        if actual != *digest {
            return Err(PullError::DigestMismatch { what: "manifest", expected: *digest, actual });
        }
        Ok(FetchedManifest { bytes, content_type })
    }

    /// `GET /v2/<name>/blobs/<digest>` from byte `offset` on (`Range:
    /// bytes=offset-`). The body is not verified here: the caller hashes it.
    pub fn blob(&self, reference: &Reference, digest: &Sha256, offset: u64) -> Result<BlobBody, PullError> {
        let range = format!("bytes={offset}-");
        let headers: &[(&str, &str)] = if offset > 0 { &[("Range", &range)] } else { &[] };
        let url = self.url(reference, "blobs", digest);
        let response =
            http::get(&url, headers, self.timeouts, self.tls_for(reference)).map_err(|e| Self::failed(reference, e))?;
        let start = match response.status {
            200 => 0,
            206 => {
                let range = response.header("content-range").unwrap_or("");
                content_range_start(range).ok_or_else(|| {
                    Self::failed(reference, format!("blob {}: bad Content-Range {range:?}", digest.short()))
                })?
            }
            status => {
                return Err(Self::failed(
                    reference,
                    format!("blob {} of {}: HTTP {status}", digest.short(), reference.repository),
                ));
            }
        };
        if start > offset {
            return Err(Self::failed(
                reference,
                format!("blob {}: asked from byte {offset}, got {start}", digest.short()),
            ));
        }
        Ok(BlobBody { start, reader: Box::new(response.body) })
    }
}

/// The first byte of `bytes START-END/TOTAL`.
fn content_range_start(header: &str) -> Option<u64> {
    header.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_gives_the_first_byte() {
        assert_eq!(content_range_start("bytes 500-999/1000"), Some(500));
        assert_eq!(content_range_start("bytes */1000"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
    }
}
