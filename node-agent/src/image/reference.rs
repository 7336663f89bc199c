//! Image references as written in manifests: `host:port/name[:tag]`.
//!
//! Only the registry and the repository matter to a pull: the bytes are
//! chosen by the digest the controller pinned in the desired document, never
//! by the tag, so a tag moved on the registry cannot change what runs.
//!
//! References are split as the controller splits them
//! ([`firmware_proto::image`]); what this agent can pull from is checked here.

/// Where an image lives: registry and repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host:port` of the registry, spoken to over plain HTTP.
    pub registry: String,
    /// Repository path, e.g. `web` or `shop/web`.
    pub repository: String,
}

/// Why a reference cannot be pulled from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Not `host:port/name[:tag]`.
    #[error("image reference {0:?} is not host:port/name[:tag]")]
    Malformed(String),
    /// The registry would be spoken to over TLS.
    #[error(
        "image {0}: https registries are not supported yet; give the registry's plain-HTTP port \
         (integrity comes from the signed digest)"
    )]
    Https(String),
}

impl Reference {
    /// Parses `host:port/name[:tag][@digest]`. A reference without a port
    /// (Docker Hub, `ghcr.io/...`) or with port 443 means HTTPS, which this
    /// agent does not speak (see [`super::registry`]).
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let malformed = || ReferenceError::Malformed(text.to_owned());
        if text.starts_with("https://") {
            return Err(ReferenceError::Https(text.to_owned()));
        }
        let parts = firmware_proto::image::split_reference(text);
        // Docker's rule: without a first component that looks like a host,
        // the image is on Docker Hub (HTTPS).
        let registry = parts.registry.ok_or_else(|| ReferenceError::Https(text.to_owned()))?;
        let port = registry.rsplit_once(':').map(|(_, port)| port);
        match port {
            None | Some("443") => return Err(ReferenceError::Https(text.to_owned())),
            Some(port) if port.parse::<u16>().is_err() => return Err(malformed()),
            Some(_) => {}
        }
        let repository = parts.repository;
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
        if repository.is_empty() || !repository.chars().all(valid) || repository.split('/').any(str::is_empty) {
            return Err(malformed());
        }
        Ok(Reference { registry: registry.to_owned(), repository: repository.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_name_and_tag_are_split() {
        let r = Reference::parse("reg.local:7441/shop/web:1.2").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("reg.local:7441", "shop/web"));
        let r = Reference::parse("127.0.0.1:5000/web").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("127.0.0.1:5000", "web"));
        let r = Reference::parse("localhost:5000/web:1@sha256:abcd").unwrap();
        assert_eq!(r.repository, "web");
    }

    #[test]
    fn https_registries_are_refused_with_a_reason_and_garbage_is_malformed() {
        for https in ["docker.io/library/busybox:1", "busybox", "ghcr.io/x/y:1", "reg:443/web", "https://reg/web"] {
            let error = Reference::parse(https).unwrap_err();
            assert!(matches!(error, ReferenceError::Https(_)), "{https}: {error}");
            assert!(error.to_string().contains("https registries are not supported yet"));
        }
        for bad in ["reg:port/web", "reg:5000/", "reg:5000/Web", "reg:5000//web"] {
            assert!(matches!(Reference::parse(bad), Err(ReferenceError::Malformed(_))), "{bad}");
        }
    }
}
