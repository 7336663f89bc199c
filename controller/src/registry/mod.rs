//! The OCI registry built into `flotilla server` (distribution spec v1.1).
//!
//! Agents pull workload images from the controller with the standard
//! distribution API, so skopeo, `flotilla image push`, or any other OCI
//! client can put images in and take them out.
//!
//! | method | path under `/v2/` | what |
//! |---|---|---|
//! | GET | (empty) | API version check; 200 with valid credentials, else a 401 challenge |
//! | GET | `_catalog` | repositories (`?n=&last=`) |
//! | GET/HEAD | `<name>/manifests/<tag or digest>` | a manifest or index |
//! | PUT | `<name>/manifests/<tag or digest>` | store one (its blobs and child manifests must be in `<name>`) |
//! | DELETE | `<name>/manifests/<tag or digest>` | untag, or delete a manifest and its tags |
//! | GET/HEAD | `<name>/blobs/<digest>` | a blob, with `Range: bytes=` |
//! | DELETE | `<name>/blobs/<digest>` | unlink a blob from the repository |
//! | POST | `<name>/blobs/uploads/` | start an upload; `?digest=` for a monolithic one; `?mount=&from=` to link a blob of another repository |
//! | GET/PATCH/PUT/DELETE | `<name>/blobs/uploads/<uuid>` | offset, append a chunk, finish with `?digest=`, cancel |
//! | GET | `<name>/tags/list` | tags (`?n=&last=`) |
//! | POST | `_flotilla/gc` | garbage collection now, returns a [`GcReport`] |
//!
//! **Auth.** Reads (GET and HEAD of manifests, blobs, tags and the catalog)
//! are anonymous: agents and skopeo pull without credentials (skopeo's
//! `--src-creds` are accepted and ignored). Writes, deletes and garbage
//! collection need the controller's API token, as `Authorization: Bearer
//! <token>` or HTTP Basic with any user name and the token as password
//! (`skopeo copy --dest-creds flotilla:$TOKEN`). Without it the answer is 401
//! with `WWW-Authenticate: Basic realm="flotilla"`; `GET /v2/` answers the
//! same challenge to a client without credentials, which is how skopeo
//! learns to send its `--dest-creds`.
//!
//! # Layout
//! - [`names`]: repository names, tags, digests (the spec's grammar).
//! - [`storage`]: the files, content-addressed blobs shared by all repositories.
//! - [`upload`]: chunked upload sessions, hashed while written.
//! - [`manifest`]: what a manifest or index references.
//! - [`gc`]: mark and sweep of unreferenced blobs.
//! - [`endpoint`] and `http`: URL parsing and the axum handlers; `auth`: tokens.

mod auth;
pub mod endpoint;
pub mod error;
pub mod gc;
mod http;
pub mod manifest;
pub mod names;
pub mod storage;
pub mod upload;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

pub use error::RegistryError;
pub use gc::GcReport;
pub use http::router;

use names::{Digest, Reference, RepoName, Tag};
use storage::Storage;
use upload::Uploads;

/// The registry's directory inside the controller's data directory.
pub const REGISTRY_DIR: &str = "registry";

/// Unreferenced blobs younger than this survive garbage collection: a
/// client pushes the blobs of an image before the manifest that holds them.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);

/// A stored registry: blobs, repositories and upload sessions under one
/// directory. Cheap to share (`Arc`); every method is safe to call from many
/// threads at once.
#[derive(Debug)]
pub struct Registry {
    storage: Storage,
    uploads: Uploads,
    /// Shared by everything that adds a reference (a blob link, a manifest);
    /// garbage collection holds it alone, so nothing gains a reference
    /// between its mark and its sweep.
    references: RwLock<()>,
    gc_grace: Duration,
}

/// A manifest as stored.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// Digest of its bytes.
    pub digest: Digest,
    /// What it is served as.
    pub media_type: String,
    /// Its exact bytes.
    pub bytes: Vec<u8>,
}

/// What a tag or digest resolves to, for pinning workloads to an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// SHA-256 of the manifest or index the reference names.
    pub digest: [u8; 32],
    /// Its media type (image manifest or index, OCI or Docker).
    pub media_type: String,
    /// `(os, architecture)` of every image it holds: the index's entries,
    /// or the single image's config.
    pub platforms: Vec<(String, String)>,
}

impl Registry {
    /// Opens the registry stored under `dir` (usually `<data dir>/registry`),
    /// creating it if needed.
    pub fn open(dir: &Path) -> Result<Registry, RegistryError> {
        let storage = Storage::open(dir)?;
        let uploads = Uploads::new(storage.uploads_dir());
        Ok(Registry { storage, uploads, references: RwLock::new(()), gc_grace: DEFAULT_GC_GRACE })
    }

    /// Refuses (and discards at once) an upload that would cross `space`'s
    /// reserve or finds the volume full: 507.
    pub fn with_space_guard(mut self, space: crate::space::SpaceGuard) -> Registry {
        self.uploads.set_space_guard(space);
        self
    }

    /// Sets how old an unreferenced blob must be before garbage collection
    /// deletes it (default [`DEFAULT_GC_GRACE`]).
    pub fn with_gc_grace(mut self, grace: Duration) -> Registry {
        self.gc_grace = grace;
        self
    }

    /// The upload sessions.
    pub fn uploads(&self) -> &Uploads {
        &self.uploads
    }

    fn adding_references(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.references.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a verified upload as blob `digest` and links it into `repo`.
    pub fn commit_upload(&self, repo: &RepoName, digest: &Digest, verified: &Path) -> Result<(), RegistryError> {
        let _guard = self.adding_references();
        self.storage.commit_blob(digest, verified)?;
        self.storage.link_blob(repo, digest)
    }

    /// Links a blob of repository `from` into `repo` without copying it.
    /// False if `from` does not hold it.
    pub fn mount_blob(&self, repo: &RepoName, digest: &Digest, from: &RepoName) -> Result<bool, RegistryError> {
        let _guard = self.adding_references();
        if self.storage.linked_blob(from, digest).is_none() {
            return Ok(false);
        }
        self.storage.link_blob(repo, digest)?;
        Ok(true)
    }

    /// The file of a blob of `repo`.
    pub fn blob_path(&self, repo: &RepoName, digest: &Digest) -> Result<PathBuf, RegistryError> {
        self.storage
            .linked_blob(repo, digest)
            .ok_or_else(|| RegistryError::BlobUnknown { repository: repo.to_string(), digest: *digest })
    }

    /// Unlinks a blob from `repo` (garbage collection frees the bytes).
    pub fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), RegistryError> {
        if self.storage.unlink_blob(repo, digest)? {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown { repository: repo.to_string(), digest: *digest })
        }
    }

    /// Stores a manifest under a tag or its digest, after checking that
    /// everything it references is in `repo`. Returns its digest.
    pub fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<Digest, RegistryError> {
        if bytes.len() > manifest::MAX_MANIFEST_BYTES {
            return Err(RegistryError::ManifestTooLarge { limit: manifest::MAX_MANIFEST_BYTES });
        }
        let parsed = manifest::parse(bytes, content_type)?;
        let digest = Digest::of(bytes);
        if let Reference::Digest(named) = reference
            && *named != digest
        {
            return Err(RegistryError::DigestInvalid { expected: *named, actual: digest });
        }
        let _guard = self.adding_references();
        let invalid = RegistryError::ManifestInvalid;
        for (i, (blob, described)) in parsed.blobs.iter().zip(&parsed.blob_descriptors).enumerate() {
            let Some(path) = self.storage.linked_blob(repo, blob) else {
                return Err(RegistryError::ManifestBlobUnknown(*blob));
            };
            let what = if i == 0 { "config" } else { "layer" };
            check_blob(&path, described).map_err(|why| invalid(format!("{what} {blob}: {why}")))?;
        }
        for child in &parsed.children {
            let Some(stored_type) = self.storage.manifest_media_type(repo, &child.digest)? else {
                return Err(RegistryError::ManifestBlobUnknown(child.digest));
            };
            let bytes = self.storage.read_blob(&child.digest)?.unwrap_or_default();
            self.check_child(child, &stored_type, &bytes)
                .map_err(|why| invalid(format!("entry {}: {why}", child.digest)))?;
        }
        self.storage.write_blob(&digest, bytes)?;
        self.storage.link_manifest(repo, &digest, &parsed.media_type)?;
        if let Reference::Tag(tag) = reference {
            self.storage.tag(repo, tag, &digest)?;
        }
        Ok(digest)
    }

    /// An index entry against the manifest it names: size, media type, and
    /// the platform its image's config says.
    fn check_child(&self, child: &manifest::ChildManifest, stored_type: &str, bytes: &[u8]) -> Result<(), String> {
        if let Some(size) = child.described.size
            && size != bytes.len() as u64
        {
            return Err(format!("the index says {size} bytes, the manifest has {}", bytes.len()));
        }
        if let Some(declared) = &child.described.media_type
            && declared != stored_type
        {
            return Err(format!("the index says {declared}, the manifest is {stored_type}"));
        }
        let Some((os, architecture)) = &child.platform else { return Ok(()) };
        let Ok(image) = manifest::parse(bytes, Some(stored_type)) else { return Ok(()) };
        let config = image.blobs.first().map(|config| self.storage.read_blob(config)).transpose();
        let Some(config) = config.map_err(|e| e.to_string())?.flatten() else { return Ok(()) };
        match manifest::config_platform(&config) {
            Some((config_os, config_arch)) if (&config_os, &config_arch) != (os, architecture) => {
                Err(format!("the index says {os}/{architecture}, the image's config says {config_os}/{config_arch}"))
            }
            _ => Ok(()),
        }
    }

    /// The manifest a tag or digest names in `repo`, if any.
    pub fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<StoredManifest>, RegistryError> {
        let digest = match reference {
            Reference::Digest(digest) => *digest,
            Reference::Tag(tag) => match self.storage.tag_target(repo, tag)? {
                Some(digest) => digest,
                None => return Ok(None),
            },
        };
        let Some(media_type) = self.storage.manifest_media_type(repo, &digest)? else { return Ok(None) };
        let Some(bytes) = self.storage.read_blob(&digest)? else { return Ok(None) };
        Ok(Some(StoredManifest { digest, media_type, bytes }))
    }

    /// Deletes a tag, or a manifest (by digest) with every tag pointing at it.
    pub fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<(), RegistryError> {
        let deleted = match reference {
            Reference::Tag(tag) => self.storage.untag(repo, tag)?,
            Reference::Digest(digest) => self.storage.unlink_manifest(repo, digest)?,
        };
        if deleted {
            Ok(())
        } else {
            Err(RegistryError::ManifestUnknown { repository: repo.to_string(), reference: reference.to_string() })
        }
    }

    /// The tags of `repo`, with the manifest each points at.
    pub fn tags(&self, repo: &RepoName) -> Result<Vec<(Tag, Digest)>, RegistryError> {
        if !self.storage.has_repository(repo) {
            return Err(RegistryError::NameUnknown(repo.to_string()));
        }
        self.storage.tags(repo)
    }

    /// Every repository.
    pub fn repositories(&self) -> Result<Vec<RepoName>, RegistryError> {
        self.storage.repositories()
    }

    /// Resolves `name:reference` (a tag or a digest) to the manifest it names
    /// and the platforms it serves; `None` if the registry does not hold it.
    pub fn resolve(&self, name: &str, reference: &str) -> Result<Option<ResolvedImage>, RegistryError> {
        let repo: RepoName = name.parse()?;
        let Some(stored) = self.manifest(&repo, &reference.parse()?)? else { return Ok(None) };
        let parsed = manifest::parse(&stored.bytes, Some(&stored.media_type))?;
        let platforms = if parsed.children.is_empty() {
            let config = parsed.blobs.first().map(|config| self.storage.read_blob(config)).transpose()?.flatten();
            config.as_deref().and_then(manifest::config_platform).into_iter().collect()
        } else {
            // Build tools add attestation entries with platform
            // `unknown/unknown`; they are not runnable images.
            parsed
                .children
                .into_iter()
                .filter_map(|child| child.platform)
                .filter(|(os, arch)| os != "unknown" && arch != "unknown")
                .collect()
        };
        Ok(Some(ResolvedImage { digest: stored.digest.0, media_type: stored.media_type, platforms }))
    }

    /// Deletes every blob no tag or manifest of any repository reaches (and
    /// older than the grace period), and abandoned uploads.
    pub fn collect_garbage(&self) -> Result<GcReport, RegistryError> {
        let _exclusive = self.references.write().unwrap_or_else(PoisonError::into_inner);
        gc::collect(&self.storage, &self.uploads, self.gc_grace)
    }

    /// Collects garbage every `every` until `shutdown` completes.
    pub async fn run_gc(self: Arc<Self>, every: Duration, shutdown: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; a start-up is no reason to collect.
        ticker.tick().await;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            let registry = self.clone();
            match tokio::task::spawn_blocking(move || registry.collect_garbage()).await {
                Ok(Ok(report)) => tracing::info!(?report, "registry garbage collection"),
                Ok(Err(e)) => tracing::warn!(error = %e, "registry garbage collection failed"),
                Err(e) => tracing::warn!(error = %e, "registry garbage collection panicked"),
            }
        }
    }
}

/// A stored blob against its descriptor: its size, that a config is a JSON
/// object, and that a layer said to be gzip or zstd starts like one.
fn check_blob(path: &std::path::Path, described: &manifest::Described) -> Result<(), String> {
    use std::io::Read;
    let actual = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if let Some(size) = described.size
        && size != actual
    {
        return Err(format!("the manifest says {size} bytes, the blob has {actual}"));
    }
    let Some(media_type) = described.media_type.as_deref() else { return Ok(()) };
    // An image config is JSON (and small: a few KiB).
    if media_type == "application/vnd.oci.image.config.v1+json"
        || media_type == "application/vnd.docker.container.image.v1+json"
    {
        let bytes = if actual <= 4 << 20 { std::fs::read(path).map_err(|e| e.to_string())? } else { Vec::new() };
        if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).is_err() {
            return Err(format!("the manifest says {media_type}, the blob is not a JSON object of at most 4 MiB"));
        }
        return Ok(());
    }
    let magic: &[u8] = if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
        &[0x1f, 0x8b]
    } else if media_type.ends_with("+zstd") {
        &[0x28, 0xb5, 0x2f, 0xfd]
    } else if manifest::is_manifest_type(media_type) {
        return Err(format!("{media_type} is a manifest type, not a blob's"));
    } else {
        return Ok(());
    };
    let mut head = vec![0u8; magic.len()];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
    if read.is_err() || head != magic {
        return Err(format!("the manifest says {media_type}, the blob does not start like one"));
    }
    Ok(())
}
