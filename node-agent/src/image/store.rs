//! The image store on local disk, under the agent's data directory:
//!
//! ```text
//! blobs/sha256/<hex>        verified blobs: indexes, manifests, configs (and a
//!                           layer between its download and its unpacking)
//! blobs/partial/<hex>       a download in progress, resumed from its length
//! layers/<hex>/             an unpacked layer, named by its blob digest and
//!                           shared by every image that has it
//! images/<hex>/image.json   a pulled image, named by the digest the desired
//!                           document pins (index or manifest): its layers and
//!                           run configuration; its mtime is its last use
//! images/<hex>/rootfs/      a preloaded image (see below)
//! containers/<id>/          a container's root filesystem (see rootfs.rs)
//! ```
//!
//! **Preloaded images.** A directory `images/<hex>/rootfs` without an
//! `image.json`, placed there by whoever provisions the device (root only:
//! the data directory is root's), is taken as that image, already verified,
//! and used as the root filesystem of its containers directly. It has no
//! run configuration, so its replicas must give a command. The agent never
//! pulls, copies or garbage-collects it. This is for air-gapped
//! provisioning and for tests that need a container without a registry.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::PullError;
use super::oci::Sha256;

/// What the agent needs to run an image, from its config blob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Default arguments.
    pub cmd: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    /// Working directory (empty: `/`).
    pub working_dir: String,
    /// `uid[:gid]` or `name[:group]` (empty: root).
    pub user: String,
}

/// One layer of a pulled image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the (compressed) blob: the name of its `layers/` directory.
    pub digest: Sha256,
    /// Bytes of its files once unpacked (for the disk budget).
    pub unpacked_bytes: u64,
}

/// `images/<hex>/image.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// As written in the manifest it was first pulled for.
    pub reference: String,
    /// `os/arch[/variant]` it was built for.
    pub platform: String,
    /// The manifests and configs it was read from (the pinned digest, the
    /// platform manifest an index led to, the config).
    pub metadata_blobs: Vec<Sha256>,
    /// Layers, base first.
    pub layers: Vec<LayerRecord>,
    /// How to run it.
    pub run: RunConfig,
}

/// The store's directories.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Store { root: data_dir.to_owned() }
    }

    /// Verified blobs.
    pub fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }
    /// A verified blob.
    pub fn blob(&self, digest: &Sha256) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }
    /// Downloads in progress.
    pub fn partial_dir(&self) -> PathBuf {
        self.root.join("blobs/partial")
    }
    /// A download in progress.
    pub fn partial(&self, digest: &Sha256) -> PathBuf {
        self.partial_dir().join(digest.hex())
    }
    /// All unpacked layers.
    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }
    /// An unpacked layer.
    pub fn layer(&self, digest: &Sha256) -> PathBuf {
        self.layers().join(digest.hex())
    }
    /// All images.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    /// One image's directory.
    pub fn image_dir(&self, digest: &Sha256) -> PathBuf {
        self.images().join(digest.hex())
    }
    /// A pulled image's record.
    pub fn record_path(&self, digest: &Sha256) -> PathBuf {
        self.image_dir(digest).join("image.json")
    }
    /// A preloaded image's root filesystem.
    pub fn preloaded_rootfs(&self, digest: &Sha256) -> PathBuf {
        self.image_dir(digest).join("rootfs")
    }
    /// All container root filesystems.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The record of a pulled image, if it is complete on disk.
    pub fn record(&self, digest: &Sha256) -> Option<ImageRecord> {
        let path = self.record_path(digest);
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable image record; the image will be pulled again");
                None
            }
        }
    }

    /// Records a pulled image (last step of a pull: it is now usable).
    pub fn save_record(&self, digest: &Sha256, record: &ImageRecord) -> Result<(), PullError> {
        let path = self.record_path(digest);
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| PullError::io(&path, "encoding", e.into()))?;
        crate::persist::write_atomic(&path, &bytes).map_err(|e| PullError::io(&path, "writing", e))
    }

    /// Marks an image as used now (garbage collection removes the least
    /// recently used first).
    pub fn touch(&self, digest: &Sha256) {
        // Best effort: at worst an image in use looks older than it is, and
        // only unused images are ever removed.
        let file = std::fs::File::options().write(true).open(self.record_path(digest));
        let _ = file.and_then(|f| f.set_modified(std::time::SystemTime::now()));
    }

    /// Stores a small verified blob (manifest, config) from memory.
    pub fn put_blob(&self, digest: &Sha256, bytes: &[u8]) -> Result<(), PullError> {
        let path = self.blob(digest);
        crate::persist::write_atomic(&path, bytes).map_err(|e| PullError::io(&path, "writing", e))
    }
}
