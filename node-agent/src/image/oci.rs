//! The OCI (and Docker v2 schema 2) documents a pull reads: index,
//! manifest, image config, and choosing the manifest for this node's
//! platform. Only the fields the agent uses are declared; unknown fields
//! are ignored.

use serde::Deserialize;
use sha2::Digest as _;

/// Media types, in the order they are offered in `Accept`.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list (the Docker name for an index).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A sha256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Parses `sha256:<64 hex>`.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return None;
        }
        let mut out = [0; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Sha256(out))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256(sha2::Sha256::digest(bytes).into())
    }

    /// 64 lowercase hex characters (file names in the store).
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `sha256:` and the first 12 hex characters, for messages that must
    /// fit an event's reason.
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.hex()[..12])
    }
}

impl serde::Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Sha256::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("not a sha256 digest: {text:?}")))
    }
}

impl std::fmt::Display for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

/// A reference to a blob or a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What it is.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// In an index: which platform the manifest is for.
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// OCI (Go) name: `amd64`, `arm64`, `arm`...
    #[serde(default)]
    pub architecture: String,
    /// `v7`, `v8`...
    #[serde(default)]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) if !variant.is_empty() => write!(f, "/{variant}"),
            _ => Ok(()),
        }
    }
}

impl Platform {
    /// The platform this agent runs on, in OCI's names.
    pub fn of_this_node() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            other => other, // arm, riscv64, s390x: the same word in both
        };
        let variant = (architecture == "arm").then(|| "v7".to_owned());
        Platform { os: std::env::consts::OS.to_owned(), architecture: architecture.to_owned(), variant }
    }

    /// Whether an image built for `image` runs here. Variants matter only
    /// for 32-bit ARM, where a v7 node also runs v6 and v5 code.
    pub fn runs(&self, image: &Platform) -> bool {
        if self.os != image.os || self.architecture != image.architecture {
            return false;
        }
        match (self.architecture.as_str(), image.variant.as_deref()) {
            ("arm", Some(wanted)) => {
                let level = |v: &str| v.trim_start_matches('v').parse::<u8>().unwrap_or(u8::MAX);
                level(wanted) <= self.variant.as_deref().map_or(7, level)
            }
            _ => true,
        }
    }
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone)]
pub struct Index {
    /// One manifest per platform.
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The config blob.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
}

/// A manifest or an index, told apart by media type (or, when the registry
/// does not say, by the presence of `manifests`).
#[derive(Debug, Clone)]
pub enum Document {
    /// Several platforms.
    Index(Index),
    /// One image.
    Manifest(Manifest),
}

impl Document {
    /// Parses manifest bytes.
    pub fn parse(bytes: &[u8], content_type: &str) -> Result<Self, String> {
        // Both shapes in one pass (one deserializer in the binary, not three).
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Either {
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<Vec<Descriptor>>,
            #[serde(default)]
            config: Option<Descriptor>,
            #[serde(default)]
            layers: Vec<Descriptor>,
        }
        let either: Either = serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
        let media_type = either.media_type.unwrap_or_else(|| content_type.to_owned());
        if media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
            return Err(format!("unsupported manifest type {media_type} (Docker schema 1 is long deprecated)"));
        }
        let is_index = media_type.starts_with(OCI_INDEX) || media_type.starts_with(DOCKER_LIST);
        match (either.manifests, either.config) {
            (Some(manifests), _) => Ok(Document::Index(Index { manifests })),
            (None, _) if is_index => Err("bad image index: no manifests".into()),
            (None, Some(config)) => Ok(Document::Manifest(Manifest { config, layers: either.layers })),
            (None, None) => Err("bad image manifest: no config".into()),
        }
    }
}

/// The image config: what to run and where it was built for.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfigBlob {
    /// Build platform.
    #[serde(default)]
    pub architecture: String,
    /// Build OS.
    #[serde(default)]
    pub os: String,
    /// Build variant.
    #[serde(default)]
    pub variant: Option<String>,
    /// The run configuration.
    #[serde(default)]
    pub config: Option<RunSection>,
    /// Uncompressed layer digests.
    #[serde(default)]
    pub rootfs: Option<RootfsSection>,
}

/// `config` of an image config (Docker's capitalised names).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunSection {
    /// Entrypoint.
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    /// `NAME=value`.
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    /// Working directory.
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    /// `uid[:gid]` or `name[:group]`.
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootfsSection {
    /// `sha256:` digests of the uncompressed layers, base first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ImageConfigBlob {
    /// The platform the image was built for.
    pub fn platform(&self) -> Platform {
        Platform { os: self.os.clone(), architecture: self.architecture.clone(), variant: self.variant.clone() }
    }
}

/// The manifest of `index` that runs on `node`, or the list of platforms
/// it has (for the refusal).
pub fn choose<'a>(index: &'a Index, node: &Platform) -> Result<&'a Descriptor, Vec<String>> {
    index
        .manifests
        .iter()
        .filter(|m| m.platform.as_ref().is_some_and(|p| node.runs(p)))
        // Prefer the most specific ARM variant: v7 over v6 on a v7 node.
        .max_by_key(|m| m.platform.as_ref().and_then(|p| p.variant.clone()))
        .ok_or_else(|| index.manifests.iter().filter_map(|m| m.platform.as_ref()).map(Platform::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform { os: os.into(), architecture: arch.into(), variant: variant.map(Into::into) }
    }

    fn index(platforms: &[(&str, Option<&str>)]) -> Index {
        let manifests = platforms
            .iter()
            .enumerate()
            .map(|(i, (arch, variant))| Descriptor {
                media_type: OCI_MANIFEST.into(),
                digest: format!("sha256:{:064x}", i),
                size: 1,
                platform: Some(platform("linux", arch, *variant)),
            })
            .collect();
        Index { manifests }
    }

    #[test]
    fn the_node_platform_is_named_as_oci_names_it() {
        let here = Platform::of_this_node();
        assert_eq!(here.os, "linux");
        let expected = if cfg!(target_arch = "x86_64") { "amd64" } else { "arm64" };
        assert_eq!(here.architecture, expected);
    }

    #[test]
    fn an_index_yields_this_nodes_manifest_or_the_platforms_it_has() {
        let amd64 = platform("linux", "amd64", None);
        let multi = index(&[("arm64", Some("v8")), ("amd64", None), ("arm", Some("v7"))]);
        assert_eq!(choose(&multi, &amd64).unwrap().digest, format!("sha256:{:064x}", 1));
        let arm_only = index(&[("arm64", None), ("arm", Some("v6"))]);
        assert_eq!(choose(&arm_only, &amd64).unwrap_err(), ["linux/arm64", "linux/arm/v6"]);
        let armv7 = platform("linux", "arm", Some("v7"));
        assert_eq!(choose(&arm_only, &armv7).unwrap().digest, format!("sha256:{:064x}", 1), "v6 runs on v7");
        assert!(!armv7.runs(&platform("linux", "arm", Some("v8"))));
        assert!(!amd64.runs(&platform("windows", "amd64", None)));
    }

    #[test]
    fn documents_are_told_apart_by_media_type_or_shape() {
        let manifest = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:00","size":2},"layers":[]}"#;
        assert!(matches!(Document::parse(manifest, DOCKER_MANIFEST), Ok(Document::Manifest(_))));
        assert!(matches!(Document::parse(manifest, "application/json"), Ok(Document::Manifest(_))));
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(Document::parse(index, ""), Ok(Document::Index(_))));
        assert!(matches!(Document::parse(index, OCI_INDEX), Ok(Document::Index(_))));
        assert!(Document::parse(b"{not json", "").is_err());
        assert!(Document::parse(manifest, "application/vnd.docker.distribution.manifest.v1+json").is_err());
    }

    #[test]
    fn digests_parse_strictly() {
        let hex = "ab".repeat(32);
        assert_eq!(Sha256::parse(&format!("sha256:{hex}")), Some(Sha256([0xab; 32])));
        assert_eq!(Sha256::parse(&format!("sha512:{hex}")), None);
        assert_eq!(Sha256::parse(&format!("sha256:{}", "AB".repeat(32))), None);
        assert_eq!(Sha256::parse("sha256:abc"), None);
        assert_eq!(Sha256([0xab; 32]).short(), "sha256:abababababab");
        assert_eq!(Sha256::of(b"").hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
