//! What can go wrong reading or writing a layout.

use std::io;
use std::path::PathBuf;

use oci_spec::image::{Digest, MediaType};

use super::MAX_JSON_BLOB;

/// What went wrong reading or writing a layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A file of the layout could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The directory is not an OCI image layout this crate understands.
    #[error("{path} is not an OCI image layout: {reason}")]
    NotALayout {
        /// The directory.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A JSON file or blob did not parse as what it should be.
    #[error("{what} is not a valid {kind}: {source}")]
    InvalidJson {
        /// The file, or the blob's digest.
        what: String,
        /// The document type expected.
        kind: &'static str,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A document could not be serialised (a bug, not an input problem).
    #[error("could not serialise {kind}: {source}")]
    Serialize {
        /// The document type.
        kind: &'static str,
        /// The serialiser's error.
        source: serde_json::Error,
    },
    /// A tag does not follow the OCI `ref.name` grammar.
    #[error("invalid tag {0:?}: use letters and digits separated by one of -._:@+ (or --), e.g. busybox:1.35")]
    InvalidTag(String),
    /// No `index.json` entry carries the tag.
    #[error("tag {tag:?} not found in {layout} (tags: {known})")]
    TagNotFound {
        /// The tag asked for.
        tag: String,
        /// The layout directory.
        layout: PathBuf,
        /// The tags that exist, comma-separated.
        known: String,
    },
    /// The tag exists but has no manifest for the platform asked for.
    #[error("tag {tag:?} has no manifest for {platform} (it has: {available})")]
    PlatformNotFound {
        /// The tag asked for.
        tag: String,
        /// The platform asked for, as `os/arch`.
        platform: String,
        /// The platforms the tag has, comma-separated.
        available: String,
    },
    /// A digest uses an algorithm other than sha256.
    #[error("blob {0}: only sha256 digests are supported")]
    UnsupportedDigest(Digest),
    /// A blob is missing from `blobs/`.
    #[error("blob {digest} is missing from {layout}")]
    BlobNotFound {
        /// The blob's digest.
        digest: Digest,
        /// The layout directory.
        layout: PathBuf,
    },
    /// A blob's content does not hash to its name: it was corrupted or
    /// tampered with.
    #[error("blob {path} does not match its digest: its content hashes to {actual}")]
    DigestMismatch {
        /// The blob's file.
        path: PathBuf,
        /// The digest of what the file holds.
        actual: Digest,
    },
    /// A blob's size differs from what its descriptor says.
    #[error("blob {digest} has {actual} bytes but its descriptor says {expected}")]
    SizeMismatch {
        /// The blob's digest.
        digest: Digest,
        /// The descriptor's size.
        expected: u64,
        /// The file's size.
        actual: u64,
    },
    /// A JSON blob is larger than [`MAX_JSON_BLOB`].
    #[error("blob {digest} is {size} bytes, more than the {MAX_JSON_BLOB} allowed for a {kind}")]
    TooLarge {
        /// The blob's digest.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The document type expected.
        kind: &'static str,
    },
    /// A descriptor points at something that is neither an image manifest
    /// nor an image index where one of those was expected.
    #[error("{digest}: media type {media_type} is not an OCI image manifest or index")]
    UnexpectedMediaType {
        /// The descriptor's digest.
        digest: Digest,
        /// Its media type.
        media_type: MediaType,
    },
}
