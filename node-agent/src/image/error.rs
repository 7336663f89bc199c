//! Why a pull failed. Every variant names what is wrong; the first
//! [`firmware_proto::REASON_MAX`] bytes of the message become the
//! `PullFailed` event's reason, so the important part comes first and
//! digests are shortened there (the log has them in full).

use super::oci::Sha256;
use super::reference::ReferenceError;

/// A failed pull.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference cannot be pulled from (malformed, HTTPS).
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The registry could not be reached or answered with an error.
    #[error("registry {registry}: {reason}")]
    Registry {
        /// `host:port`.
        registry: String,
        /// What went wrong.
        reason: String,
    },
    /// The bytes do not hash to the digest they were asked for.
    #[error("{what} {}: digest mismatch, got {} (tampered or corrupt)", expected.short(), actual.short())]
    DigestMismatch {
        /// `manifest`, `config`, `layer`.
        what: &'static str,
        /// The digest that was asked for.
        expected: Sha256,
        /// The digest of the bytes received.
        actual: Sha256,
    },
    /// A download ended early and could not be resumed.
    #[error("{what} {} truncated at {have}/{size} bytes: {reason}", digest.short())]
    Truncated {
        /// `layer`, `config`...
        what: &'static str,
        /// Its digest.
        digest: Sha256,
        /// Bytes kept (the next attempt resumes from here).
        have: u64,
        /// Bytes expected.
        size: u64,
        /// Last transport error.
        reason: String,
    },
    /// No manifest for this node's platform.
    #[error("image {reference} has no {node} variant (has {})", available.join(", "))]
    NoVariant {
        /// As written in the manifest.
        reference: String,
        /// This node.
        node: String,
        /// What the index offers.
        available: Vec<String>,
    },
    /// A single-platform image built for another platform.
    #[error("image {reference} is {image}, this node is {node}")]
    WrongPlatform {
        /// As written in the manifest.
        reference: String,
        /// The image's config says.
        image: String,
        /// This node.
        node: String,
    },
    /// Valid, but not something this agent can run (zstd layers...).
    #[error("image {reference}: {reason}")]
    Unsupported {
        /// As written in the manifest.
        reference: String,
        /// What.
        reason: String,
    },
    /// The disk (or the agent's filesystem) is full.
    #[error("disk full writing {}: free space or lower --image-budget-mib", path.display())]
    DiskFull {
        /// Where.
        path: std::path::PathBuf,
    },
    /// Another local I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl PullError {
    /// A local I/O error, told apart as [`PullError::DiskFull`] when the
    /// disk or quota is full.
    pub fn io(path: &std::path::Path, doing: &str, source: std::io::Error) -> Self {
        if is_disk_full(&source) {
            PullError::DiskFull { path: path.to_owned() }
        } else {
            PullError::Io { context: format!("{doing} {}", path.display()), source }
        }
    }

    /// Retrying cannot help until the desired document changes.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            PullError::Reference(_)
                | PullError::NoVariant { .. }
                | PullError::WrongPlatform { .. }
                | PullError::Unsupported { .. }
        )
    }
}

/// ENOSPC or EDQUOT, also when wrapped (the tar crate wraps the I/O
/// errors of unpacking in its own).
pub fn is_disk_full(error: &std::io::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            let full = [nix::libc::ENOSPC, nix::libc::EDQUOT];
            if io.raw_os_error().is_some_and(|code| full.contains(&code)) {
                return true;
            }
            // An io::Error carrying another error shows it as get_ref, not source.
            if let Some(inner) = io.get_ref() {
                current = Some(inner);
                continue;
            }
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_fit_an_event_reason_and_name_what_is_wrong() {
        let mismatch =
            PullError::DigestMismatch { what: "layer", expected: Sha256([0x12; 32]), actual: Sha256([0xef; 32]) };
        let text = mismatch.to_string();
        assert_eq!(text, "layer sha256:121212121212: digest mismatch, got sha256:efefefefefef (tampered or corrupt)");
        assert!(text.len() <= firmware_proto::REASON_MAX);
        let full = PullError::io(std::path::Path::new("/d"), "writing", std::io::Error::from_raw_os_error(28));
        assert!(matches!(full, PullError::DiskFull { .. }));
        assert!(full.to_string().starts_with("disk full writing /d"));
        let wrapped = std::io::Error::other(std::io::Error::from_raw_os_error(nix::libc::ENOSPC));
        assert!(is_disk_full(&wrapped));
        assert!(!is_disk_full(&std::io::Error::from_raw_os_error(nix::libc::EACCES)));
        let arch = PullError::NoVariant {
            reference: "reg:7441/web:1".into(),
            node: "linux/arm64".into(),
            available: vec!["linux/amd64".into()],
        };
        assert_eq!(arch.to_string(), "image reg:7441/web:1 has no linux/arm64 variant (has linux/amd64)");
        assert!(arch.is_permanent() && !mismatch.is_permanent());
    }
}
