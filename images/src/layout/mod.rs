//! An OCI image layout directory: read, verify and update it.
//!
//! ```text
//! DIR/oci-layout           {"imageLayoutVersion":"1.0.0"}
//! DIR/index.json           one descriptor per tag (annotation org.opencontainers.image.ref.name)
//! DIR/blobs/sha256/<hex>   manifests, indexes, configs and layers, named by their digest
//! ```
//!
//! Several images live in one layout, each under its tag (`busybox:1.35`).
//! A tag points at an image manifest (one platform) or an image index (one
//! manifest per platform). Every blob read through [`OciLayout`] is checked
//! against its digest, so a corrupted or tampered layout is refused rather
//! than served or unpacked.
//!
//! Writers take an advisory lock on `oci-layout` while they rewrite
//! `index.json`, and every file is written to a temporary name and renamed,
//! so readers never see half a blob or half an index.

mod error;
mod ref_name;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{
    ANNOTATION_REF_NAME, Descriptor, Digest, DigestAlgorithm, ImageConfiguration, ImageIndex, ImageIndexBuilder,
    ImageManifest, MediaType, Platform, SCHEMA_VERSION,
};
use serde::de::DeserializeOwned;
use tempfile::NamedTempFile;

use crate::digest::{HashingWriter, canonical_json, sha256_of};

pub use error::LayoutError;
pub use ref_name::is_valid_ref_name;

/// The layout version this crate writes and reads.
const LAYOUT_VERSION: &str = "1.0.0";

/// Manifests, indexes and configs larger than this are refused: real ones
/// are a few KiB, and a hostile layout must not make a reader allocate
/// gigabytes (registries apply the same 4 MiB limit to manifests).
pub const MAX_JSON_BLOB: u64 = 4 << 20;

type Result<T, E = LayoutError> = std::result::Result<T, E>;

/// Attaches the path to an I/O error.
fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io { path: path.to_owned(), source }
}

/// One platform's image, resolved from a tag.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The platform, from the index entry or else from the config.
    pub platform: Platform,
    /// The descriptor of the image manifest.
    pub descriptor: Descriptor,
    /// The image manifest.
    pub manifest: ImageManifest,
    /// The image configuration the manifest names.
    pub config: ImageConfiguration,
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    root: PathBuf,
}

impl OciLayout {
    /// Opens an existing layout, checking its `oci-layout` marker and that
    /// `index.json` parses.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let layout = OciLayout { root: root.into() };
        let marker = layout.root.join("oci-layout");
        let text = fs::read(&marker).map_err(|source| LayoutError::NotALayout {
            path: layout.root.clone(),
            reason: format!("cannot read oci-layout: {source}"),
        })?;
        let header: serde_json::Value = serde_json::from_slice(&text).map_err(|source| LayoutError::InvalidJson {
            what: marker.display().to_string(),
            kind: "oci-layout file",
            source,
        })?;
        let version = header.get("imageLayoutVersion").and_then(|v| v.as_str());
        if version != Some(LAYOUT_VERSION) {
            return Err(LayoutError::NotALayout {
                path: layout.root,
                reason: format!("imageLayoutVersion is {version:?}, expected {LAYOUT_VERSION:?}"),
            });
        }
        layout.index()?;
        Ok(layout)
    }

    /// Opens the layout at `root`, creating an empty one (directories,
    /// `oci-layout`, an `index.json` with no manifests) where none exists.
    pub fn open_or_create(root: impl Into<PathBuf>) -> Result<Self> {
        let layout = OciLayout { root: root.into() };
        let blobs = layout.root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(io_at(&blobs))?;
        if !layout.root.join("oci-layout").exists() {
            let header = serde_json::json!({ "imageLayoutVersion": LAYOUT_VERSION });
            layout.write_file_atomically(
                "oci-layout",
                &canonical_json(&header)
                    .map_err(|source| LayoutError::Serialize { kind: "oci-layout file", source })?,
            )?;
        }
        if !layout.root.join("index.json").exists() {
            layout.write_index(&empty_index())?;
        }
        OciLayout::open(layout.root)
    }

    /// The layout's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The top-level `index.json`.
    pub fn index(&self) -> Result<ImageIndex> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        parse_json(&bytes, &path.display().to_string(), "image index")
    }

    /// Every tag in `index.json` with the descriptor it points at. Entries
    /// without a `ref.name` annotation are not tags and are left out.
    pub fn tags(&self) -> Result<BTreeMap<String, Descriptor>> {
        Ok(self
            .index()?
            .manifests()
            .iter()
            .filter_map(|descriptor| Some((ref_name(descriptor)?.to_owned(), descriptor.clone())))
            .collect())
    }

    /// The descriptor a tag points at.
    pub fn tag(&self, tag: &str) -> Result<Descriptor> {
        let mut tags = self.tags()?;
        tags.remove(tag).ok_or_else(|| LayoutError::TagNotFound {
            tag: tag.to_owned(),
            layout: self.root.clone(),
            known: join_or_none(tags.keys()),
        })
    }

    /// Where the blob with this digest lives (whether or not it exists).
    /// Only sha256 digests are accepted; oci-spec has already checked that
    /// they are 64 lowercase hex characters, so the path cannot escape.
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        if *digest.algorithm() != DigestAlgorithm::Sha256 {
            return Err(LayoutError::UnsupportedDigest(digest.clone()));
        }
        Ok(self.root.join("blobs").join("sha256").join(digest.digest()))
    }

    /// Reads a blob and checks that its content hashes to `digest`.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let bytes = fs::read(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => LayoutError::BlobNotFound { digest: digest.clone(), layout: self.root.clone() },
            _ => LayoutError::Io { path: path.clone(), source },
        })?;
        let actual = sha256_of(&bytes);
        if actual != *digest {
            return Err(LayoutError::DigestMismatch { path, actual });
        }
        Ok(bytes)
    }

    /// Reads the blob a descriptor names, checking its size (before reading
    /// it) and its digest.
    pub fn read_described(&self, descriptor: &Descriptor) -> Result<Vec<u8>> {
        self.check_size(descriptor)?;
        self.read_blob(descriptor.digest())
    }

    /// Reads and parses a JSON blob (manifest, index, config), refusing
    /// anything over [`MAX_JSON_BLOB`].
    fn read_json<T: DeserializeOwned>(&self, descriptor: &Descriptor, kind: &'static str) -> Result<T> {
        if descriptor.size() > MAX_JSON_BLOB {
            return Err(LayoutError::TooLarge { digest: descriptor.digest().clone(), size: descriptor.size(), kind });
        }
        let bytes = self.read_described(descriptor)?;
        parse_json(&bytes, descriptor.digest().as_ref(), kind)
    }

    /// Reads the image manifest a descriptor names.
    pub fn read_manifest(&self, descriptor: &Descriptor) -> Result<ImageManifest> {
        self.read_json(descriptor, "image manifest")
    }

    /// Reads the image index a descriptor names.
    pub fn read_index(&self, descriptor: &Descriptor) -> Result<ImageIndex> {
        self.read_json(descriptor, "image index")
    }

    /// Reads the image configuration a manifest names.
    pub fn read_config(&self, manifest: &ImageManifest) -> Result<ImageConfiguration> {
        self.read_json(manifest.config(), "image configuration")
    }

    /// Resolves a tag to one image per platform: the manifests of its index,
    /// or its single manifest.
    pub fn resolve(&self, tag: &str) -> Result<Vec<ResolvedImage>> {
        self.manifest_descriptors(tag)?.iter().map(|descriptor| self.resolve_manifest(descriptor)).collect()
    }

    /// Resolves a tag to the image for one platform (matching os and
    /// architecture; variants are not compared). Only that platform's
    /// manifest and config are read, so a damaged blob of another platform
    /// does not stand in the way.
    pub fn resolve_platform(&self, tag: &str, platform: &Platform) -> Result<ResolvedImage> {
        let matches = |candidate: &Platform| {
            candidate.os() == platform.os() && candidate.architecture() == platform.architecture()
        };
        let mut available = Vec::new();
        for descriptor in self.manifest_descriptors(tag)? {
            // Index entries carry their platform; a lone manifest may not,
            // and then its config says.
            let image = match descriptor.platform() {
                Some(listed) if !matches(listed) => {
                    available.push(platform_name(listed));
                    continue;
                }
                _ => self.resolve_manifest(&descriptor)?,
            };
            if matches(&image.platform) {
                return Ok(image);
            }
            available.push(platform_name(&image.platform));
        }
        Err(LayoutError::PlatformNotFound {
            tag: tag.to_owned(),
            platform: platform_name(platform),
            available: join_or_none(available),
        })
    }

    /// The manifest descriptors a tag leads to: the entries of its index,
    /// or the tag's own descriptor.
    fn manifest_descriptors(&self, tag: &str) -> Result<Vec<Descriptor>> {
        let top = self.tag(tag)?;
        match top.media_type() {
            MediaType::ImageManifest => Ok(vec![top]),
            MediaType::ImageIndex => Ok(self.read_index(&top)?.manifests().clone()),
            other => Err(LayoutError::UnexpectedMediaType { digest: top.digest().clone(), media_type: other.clone() }),
        }
    }

    /// Reads one manifest and its config; the platform comes from the
    /// descriptor when it has one, else from the config.
    fn resolve_manifest(&self, descriptor: &Descriptor) -> Result<ResolvedImage> {
        if *descriptor.media_type() != MediaType::ImageManifest {
            return Err(LayoutError::UnexpectedMediaType {
                digest: descriptor.digest().clone(),
                media_type: descriptor.media_type().clone(),
            });
        }
        let manifest = self.read_manifest(descriptor)?;
        let config = self.read_config(&manifest)?;
        let platform = descriptor.platform().clone().unwrap_or_else(|| {
            let mut platform = Platform::default();
            platform.set_os(config.os().clone());
            platform.set_architecture(config.architecture().clone());
            platform
        });
        Ok(ResolvedImage { platform, descriptor: descriptor.clone(), manifest, config })
    }

    /// Fails unless the blob a descriptor names has the size it states.
    fn check_size(&self, descriptor: &Descriptor) -> Result<()> {
        let path = self.blob_path(descriptor.digest())?;
        let actual = match fs::metadata(&path) {
            Ok(metadata) => metadata.len(),
            Err(source) if source.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::BlobNotFound {
                    digest: descriptor.digest().clone(),
                    layout: self.root.clone(),
                });
            }
            Err(source) => return Err(LayoutError::Io { path, source }),
        };
        if actual != descriptor.size() {
            return Err(LayoutError::SizeMismatch {
                digest: descriptor.digest().clone(),
                expected: descriptor.size(),
                actual,
            });
        }
        Ok(())
    }

    /// Stores `bytes` as a blob and returns a descriptor for it. Writing a
    /// blob that already exists is a no-op (same digest, same content).
    pub fn write_blob(&self, media_type: MediaType, bytes: &[u8]) -> Result<Descriptor> {
        let mut writer = self.blob_writer()?;
        writer.write_all(bytes).map_err(io_at(&self.root))?;
        let (digest, size) = writer.commit()?;
        Ok(Descriptor::new(media_type, size, digest))
    }

    /// Serialises `value` as canonical JSON and stores it as a blob.
    pub fn write_json_blob<T: serde::Serialize>(&self, media_type: MediaType, value: &T) -> Result<Descriptor> {
        let kind = match media_type {
            MediaType::ImageManifest => "image manifest",
            MediaType::ImageIndex => "image index",
            MediaType::ImageConfig => "image configuration",
            _ => "JSON blob",
        };
        let bytes = canonical_json(value).map_err(|source| LayoutError::Serialize { kind, source })?;
        self.write_blob(media_type, &bytes)
    }

    /// A writer for a blob whose digest is not known yet (a layer being
    /// compressed): bytes go to a temporary file under `blobs/`, and
    /// [`BlobWriter::commit`] names it by its digest.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.root.join("blobs");
        let file = NamedTempFile::with_prefix_in(".tmp-blob-", &dir).map_err(io_at(&dir))?;
        Ok(BlobWriter { layout: self.clone(), file: HashingWriter::new(file) })
    }

    /// Points `tag` at `descriptor` in `index.json`, replacing the entry
    /// that tag had (in place, so the order of other tags is kept).
    pub fn set_tag(&self, tag: &str, descriptor: &Descriptor) -> Result<()> {
        if !is_valid_ref_name(tag) {
            return Err(LayoutError::InvalidTag(tag.to_owned()));
        }
        let mut tagged = descriptor.clone();
        let mut annotations = tagged.annotations().clone().unwrap_or_default();
        annotations.insert(ANNOTATION_REF_NAME.to_owned(), tag.to_owned());
        tagged.set_annotations(Some(annotations));

        // Serialise writers: two builds into one layout must not lose a tag.
        let _lock = self.lock()?;
        let mut index = self.index()?;
        let mut manifests = index.manifests().clone();
        match manifests.iter().position(|entry| ref_name(entry) == Some(tag)) {
            Some(at) => {
                manifests[at] = tagged;
                // Drop any further entries with the same tag (another tool's doing).
                let mut seen = 0;
                manifests.retain(|entry| {
                    let same = ref_name(entry) == Some(tag);
                    seen += usize::from(same);
                    !same || seen == 1
                });
            }
            None => manifests.push(tagged),
        }
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// Takes the layout's writer lock (an advisory `flock` on `oci-layout`,
    /// released when the returned file is dropped).
    fn lock(&self) -> Result<File> {
        let path = self.root.join("oci-layout");
        let file = File::open(&path).map_err(io_at(&path))?;
        file.lock().map_err(io_at(&path))?;
        Ok(file)
    }

    /// Replaces `index.json` atomically.
    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let bytes = canonical_json(index).map_err(|source| LayoutError::Serialize { kind: "image index", source })?;
        self.write_file_atomically("index.json", &bytes)
    }

    /// Writes a top-level file through a temporary file and a rename.
    fn write_file_atomically(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.root.join(name);
        let mut file = NamedTempFile::with_prefix_in(".tmp-", &self.root).map_err(io_at(&self.root))?;
        file.write_all(bytes).map_err(io_at(&path))?;
        file.persist(&path).map_err(|error| LayoutError::Io { path, source: error.error })?;
        Ok(())
    }
}

/// A blob being written; see [`OciLayout::blob_writer`]. Dropped without
/// [`commit`](BlobWriter::commit), it leaves nothing behind.
#[derive(Debug)]
pub struct BlobWriter {
    layout: OciLayout,
    file: HashingWriter<NamedTempFile>,
}

impl BlobWriter {
    /// Moves the blob to `blobs/sha256/<digest>` and returns its digest and
    /// size.
    pub fn commit(mut self) -> Result<(Digest, u64)> {
        self.file.flush().map_err(io_at(self.layout.root()))?;
        let (file, digest, size) = self.file.finish();
        let path = self.layout.blob_path(&digest)?;
        // The content is named by its hash: an existing file with that name
        // holds the same bytes, so keep it and drop the temporary copy.
        if !path.exists() {
            file.persist(&path).map_err(|error| LayoutError::Io { path: path.clone(), source: error.error })?;
        }
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// An image index with no manifests: a fresh layout's `index.json`.
fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        // Every required field is set just above.
        .expect("image index with schema version and manifests set")
}

/// Parses a JSON document, naming it in the error.
fn parse_json<T: DeserializeOwned>(bytes: &[u8], what: &str, kind: &'static str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| LayoutError::InvalidJson { what: what.to_owned(), kind, source })
}

/// The tag a descriptor in `index.json` carries, if any.
pub fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor.annotations().as_ref()?.get(ANNOTATION_REF_NAME).map(String::as_str)
}

/// `os/arch` of a platform, as people write it.
pub fn platform_name(platform: &Platform) -> String {
    format!("{}/{}", platform.os(), platform.architecture())
}

/// Joins names with ", ", or says "none".
fn join_or_none<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    let names: Vec<String> = names.into_iter().map(|name| name.as_ref().to_owned()).collect();
    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_layout_has_marker_and_empty_index() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::open_or_create(dir.path()).unwrap();
        assert!(layout.tags().unwrap().is_empty());
        let marker = fs::read_to_string(dir.path().join("oci-layout")).unwrap();
        assert_eq!(marker, r#"{"imageLayoutVersion":"1.0.0"}"#);
        // Opening again keeps what is there.
        OciLayout::open_or_create(dir.path()).unwrap();
        OciLayout::open(dir.path()).unwrap();
    }

    #[test]
    fn open_refuses_a_directory_without_marker() {
        let dir = tempfile::tempdir().unwrap();
        let error = OciLayout::open(dir.path()).unwrap_err();
        assert!(matches!(error, LayoutError::NotALayout { .. }), "{error}");
    }

    #[test]
    fn set_tag_replaces_in_place_and_keeps_other_tags() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::open_or_create(dir.path()).unwrap();
        let one = layout.write_blob(MediaType::ImageManifest, b"{}").unwrap();
        let two = layout.write_blob(MediaType::ImageManifest, b"{ }").unwrap();
        layout.set_tag("a:1", &one).unwrap();
        layout.set_tag("b:1", &one).unwrap();
        layout.set_tag("a:1", &two).unwrap();
        let index = layout.index().unwrap();
        let names: Vec<_> = index.manifests().iter().filter_map(ref_name).collect();
        assert_eq!(names, ["a:1", "b:1"]);
        assert_eq!(layout.tag("a:1").unwrap().digest(), two.digest());
        assert_eq!(layout.tag("b:1").unwrap().digest(), one.digest());
        assert!(matches!(layout.set_tag("no good", &one), Err(LayoutError::InvalidTag(_))));
    }

    #[test]
    fn read_blob_verifies_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::open_or_create(dir.path()).unwrap();
        let blob = layout.write_blob(MediaType::ImageLayerGzip, b"layer bytes").unwrap();
        assert_eq!(layout.read_described(&blob).unwrap(), b"layer bytes");

        let path = layout.blob_path(blob.digest()).unwrap();
        fs::write(&path, b"LAYER BYTES").unwrap();
        let error = layout.read_described(&blob).unwrap_err();
        assert!(matches!(error, LayoutError::DigestMismatch { .. }), "{error}");

        fs::write(&path, b"short").unwrap();
        let error = layout.read_described(&blob).unwrap_err();
        assert!(matches!(error, LayoutError::SizeMismatch { expected: 11, actual: 5, .. }), "{error}");

        fs::remove_file(&path).unwrap();
        let error = layout.read_blob(blob.digest()).unwrap_err();
        assert!(matches!(error, LayoutError::BlobNotFound { .. }), "{error}");
    }

    #[test]
    fn unknown_tag_names_the_tags_there_are() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::open_or_create(dir.path()).unwrap();
        let blob = layout.write_blob(MediaType::ImageManifest, b"{}").unwrap();
        layout.set_tag("there:1", &blob).unwrap();
        let error = layout.tag("missing:1").unwrap_err().to_string();
        assert!(error.contains("missing:1") && error.contains("there:1"), "{error}");
    }
}
