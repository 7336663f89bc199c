//! Image references as manifests name them and as the controller writes
//! them into [`ImageRef::reference`](crate::ImageRef):
//! `[registry/]repository[:tag][@digest]`.
//!
//! Docker's rule tells a registry from a repository's first component: it
//! is a registry when it looks like a host (a `.` or a `:`, or
//! `localhost`). Splitting checks nothing else; what a part may contain is
//! up to the caller (the agent refuses registries it cannot reach over
//! plain HTTP, the controller fills in its default registry).

/// The tag of a reference that names none.
pub const DEFAULT_TAG: &str = "latest";

/// The parts of an image reference, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceParts<'a> {
    /// `host[:port]`, when the first component looks like a host.
    pub registry: Option<&'a str>,
    /// The repository path, e.g. `web` or `shop/web`.
    pub repository: &'a str,
    /// What follows the last `:` of the last path component.
    pub tag: Option<&'a str>,
    /// What follows the first `@`, e.g. `sha256:...`.
    pub digest: Option<&'a str>,
}

/// Whether the first component of a reference names a registry: it has a
/// `.` or a `:`, or is `localhost`.
pub fn is_registry(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// Splits `[registry/]repository[:tag][@digest]` into its parts. Never
/// fails: an empty or odd part is left for the caller to refuse.
pub fn split_reference(text: &str) -> ReferenceParts<'_> {
    let (name, digest) = match text.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (text, None),
    };
    let (registry, rest) = match name.split_once('/') {
        Some((first, rest)) if is_registry(first) => (Some(first), rest),
        _ => (None, name),
    };
    // A tag is after the last ':' of the last path component.
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match rest[slash..].rfind(':') {
        Some(colon) => (&rest[..slash + colon], Some(&rest[slash + colon + 1..])),
        None => (rest, None),
    };
    ReferenceParts { registry, repository, tag, digest }
}
