//! Reading manifests and indexes just far enough to know what they reference.
//!
//! The registry stores manifests byte for byte (their digest is over those
//! bytes); this module only pulls out the edges of the content graph: an
//! image manifest's config and layers, an index's child manifests. It reads
//! OCI and Docker schema 2 documents alike (the same shape under other media
//! types), so images copied from Docker registries can be stored too.

use serde::Deserialize;

use super::error::RegistryError;
use super::names::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (multi-platform image).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Manifests larger than this are refused: real ones are a few KiB, and the
/// registry holds a manifest in memory while it checks it.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Whether a media type is one of the manifest kinds, as opposed to a blob.
pub fn is_manifest_type(media_type: &str) -> bool {
    [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST].contains(&media_type)
}

/// What a manifest is and what it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Its media type, the `Content-Type` it is served with.
    pub media_type: String,
    /// Blobs that must be in the repository: an image's config and layers.
    pub blobs: Vec<Digest>,
    /// What the manifest says of each of `blobs`, in the same order.
    pub blob_descriptors: Vec<Described>,
    /// Manifests that must be in the repository: an index's entries.
    pub children: Vec<ChildManifest>,
}

/// What a descriptor says of the content it points at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Described {
    /// `size`, when given.
    pub size: Option<u64>,
    /// `mediaType`, when given.
    pub media_type: Option<String>,
}

/// One entry of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildManifest {
    /// The child manifest.
    pub digest: Digest,
    /// `(os, architecture)` from the entry's `platform`, when it has one.
    pub platform: Option<(String, String)>,
    /// What the entry says of the child's size and media type.
    pub described: Described,
}

impl Manifest {
    /// Every digest this manifest references, blobs and child manifests.
    pub fn references(&self) -> impl Iterator<Item = Digest> + '_ {
        self.blobs.iter().copied().chain(self.children.iter().map(|c| c.digest))
    }
}

/// The fields we read; everything else is kept only in the stored bytes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u32>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    digest: String,
    size: Option<u64>,
    media_type: Option<String>,
    /// Foreign layers (Windows base layers) live elsewhere and are never pushed.
    #[serde(default)]
    urls: Vec<String>,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    os: String,
    architecture: String,
}

/// The `os` and `architecture` of an image config blob.
#[derive(Deserialize)]
struct RawConfig {
    os: Option<String>,
    architecture: Option<String>,
}

/// Parses a manifest or index. `content_type` is the `Content-Type` it was
/// pushed with, needed when the document does not name its own media type.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, RegistryError> {
    let invalid = |why: String| RegistryError::ManifestInvalid(why);
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not a JSON manifest: {e}")))?;
    if raw.schema_version != Some(2) {
        return Err(invalid("only schemaVersion 2 manifests (OCI, Docker schema 2) are supported".to_owned()));
    }
    // `application/json` and the like say nothing about the kind of document.
    let content_type = content_type.map(|t| t.split(';').next().unwrap_or(t).trim()).filter(|t| is_manifest_type(t));
    let media_type = match (raw.media_type.as_deref(), content_type) {
        (Some(own), Some(header)) if own != header => {
            return Err(invalid(format!("the manifest says mediaType {own:?}, the request says {header:?}")));
        }
        (Some(own), _) => own.to_owned(),
        (None, Some(header)) => header.to_owned(),
        // The OCI spec made `mediaType` optional for a while; the shape tells.
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    let digest = |d: &RawDescriptor| d.digest.parse::<Digest>().map_err(|e| invalid(e.to_string()));
    let described = |d: &RawDescriptor| Described { size: d.size, media_type: d.media_type.clone() };
    let mut blobs = Vec::new();
    let mut blob_descriptors = Vec::new();
    let mut children = Vec::new();
    if media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST {
        for entry in raw.manifests.iter().flatten() {
            let platform = entry.platform.as_ref().map(|p| (p.os.clone(), p.architecture.clone()));
            children.push(ChildManifest { digest: digest(entry)?, platform, described: described(entry) });
        }
    } else if media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST {
        let config = raw.config.as_ref().ok_or_else(|| invalid("an image manifest needs a config".to_owned()))?;
        blobs.push(digest(config)?);
        blob_descriptors.push(described(config));
        for layer in raw.layers.iter().flatten().filter(|l| l.urls.is_empty()) {
            blobs.push(digest(layer)?);
            blob_descriptors.push(described(layer));
        }
    } else {
        return Err(invalid(format!("unsupported manifest media type {media_type:?}")));
    }
    Ok(Manifest { media_type, blobs, blob_descriptors, children })
}

/// `(os, architecture)` of an image config blob, if it names them.
pub fn config_platform(config: &[u8]) -> Option<(String, String)> {
    let raw: RawConfig = serde_json::from_slice(config).ok()?;
    Some((raw.os?, raw.architecture?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> String {
        Digest::of(&[n]).to_string()
    }

    #[test]
    fn image_manifest_references_config_and_layers_but_not_foreign_layers() {
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
                "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},
                "layers":[{{"digest":"{}","size":1}},{{"digest":"{}","size":1,"urls":["https://x"]}}]}}"#,
            digest(1),
            digest(2),
            digest(3)
        );
        let manifest = parse(text.as_bytes(), None).unwrap();
        assert_eq!(manifest.media_type, OCI_MANIFEST);
        assert_eq!(manifest.blobs, vec![Digest::of(&[1]), Digest::of(&[2])]);
        assert!(manifest.children.is_empty());
    }

    #[test]
    fn index_references_children_with_platforms() {
        let text = format!(
            r#"{{"schemaVersion":2,"manifests":[
                {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9,"platform":{{"os":"linux","architecture":"arm64"}}}},
                {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9}}]}}"#,
            digest(1),
            digest(2)
        );
        let manifest = parse(text.as_bytes(), Some(&format!("{OCI_INDEX}; charset=utf-8"))).unwrap();
        assert_eq!(manifest.media_type, OCI_INDEX);
        assert_eq!(manifest.children[0].platform, Some(("linux".to_owned(), "arm64".to_owned())));
        assert_eq!(manifest.children[1].platform, None);
        assert_eq!(manifest.references().count(), 2);
    }

    #[test]
    fn refuses_what_it_cannot_store_faithfully() {
        let schema1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert!(matches!(parse(schema1, None), Err(RegistryError::ManifestInvalid(_))));
        let mismatched = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(parse(mismatched.as_bytes(), Some(OCI_MANIFEST)).is_err());
        let bad_digest =
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"digest":"md5:x"}}]}}"#);
        assert!(parse(bad_digest.as_bytes(), None).is_err());
        let no_config = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#);
        assert!(parse(no_config.as_bytes(), None).is_err());
        assert!(parse(b"\xff\x00", None).is_err());
    }

    #[test]
    fn config_platform_reads_os_and_architecture() {
        assert_eq!(
            config_platform(br#"{"os":"linux","architecture":"amd64","rootfs":{}}"#),
            Some(("linux".to_owned(), "amd64".to_owned()))
        );
        assert_eq!(config_platform(b"{}"), None);
        assert_eq!(config_platform(b"not json"), None);
    }
}
