//! # Images: pulls, the layer store, container root filesystems
//!
//! The controller pins every image to the digest its tag resolved to when
//! the workload was applied, so every node runs the same bytes. The agent
//! pulls that digest (never the tag), picks the manifest for its platform
//! from an index, downloads layers with resume, verifies every digest
//! before use, unpacks each layer once into a store shared by all images,
//! and gives each container its own root filesystem over those layers.
//!
//! # Layout
//! - [`reference`]: `host:port/name[:tag]`; [`oci`]: manifests, configs,
//!   platforms; [`registry`]: the distribution API client (plain HTTP,
//!   and why) over [`http`].
//! - [`download`]: resumable verified blobs; [`unpack`]: layers in
//!   overlay form; [`pull`]: one pull, start to end.
//! - [`store`]: the on-disk layout (and preloaded images); [`gc`]: the disk
//!   budget; [`rootfs`]: overlay or copied container root filesystems.
//! - [`puller`]: the background worker; [`Images`]: what the agent uses.

pub mod download;
pub mod error;
pub mod gc;
pub mod http;
pub mod oci;
pub mod pull;
pub mod puller;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod store;
pub mod unpack;

use std::path::{Path, PathBuf};

use firmware_proto::{EventKind, ImageRef};

pub use error::PullError;
pub use oci::{Platform, Sha256};
pub use pull::Counters;
pub use puller::PullState;
pub use registry::Timeouts;
pub use rootfs::RootfsMode;
pub use store::{ImageRecord, RunConfig, Store};

/// Progress events of one image go out at most this often.
const PROGRESS_EVERY_MS: u64 = 1_000;
/// A failed pull is retried after this, doubling up to [`RETRY_MAX_MS`].
const RETRY_FIRST_MS: u64 = 10_000;
/// Longest wait between retries of a failed pull.
const RETRY_MAX_MS: u64 = 300_000;

/// How the agent handles images (`flotilla-agent run` options).
#[derive(Debug, Clone)]
pub struct ImageSettings {
    /// Disk the store may take, in MiB, before unused images are removed
    /// (`--image-budget-mib`).
    pub budget_mib: u64,
    /// Overlay (with copy fallback) or always copies.
    pub rootfs: RootfsMode,
    /// Network timeouts.
    pub timeouts: Timeouts,
    /// The platform images must be built for (this node's).
    pub platform: Platform,
    /// The controller's registry when it serves HTTPS: pulled from over
    /// TLS trusting the fleet CA.
    pub tls_registry: Option<TlsRegistry>,
}

/// A registry spoken to over HTTPS.
#[derive(Debug, Clone)]
pub struct TlsRegistry {
    /// `host:port` as image references name it.
    pub registry: String,
    /// Trusting the fleet CA.
    pub config: std::sync::Arc<rustls::ClientConfig>,
}

impl Default for ImageSettings {
    fn default() -> Self {
        ImageSettings {
            budget_mib: 1024,
            rootfs: RootfsMode::Auto,
            timeouts: Timeouts::default(),
            platform: Platform::of_this_node(),
            tls_registry: None,
        }
    }
}

/// An image that can run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// Pulled and verified.
    Pulled(ImageRecord),
    /// Placed on the device by its provisioner (see [`store`]).
    Preloaded(PathBuf),
}

/// Whether a replica's image can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// In the store.
    Ready(Ready),
    /// Being pulled (or queued).
    Pulling,
    /// The last pull failed; it is retried later (unless it cannot help).
    Failed(String),
}

/// A container's root filesystem and its image's run configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedRootfs {
    /// The root filesystem.
    pub path: PathBuf,
    /// What the image says to run (`None` for preloaded images).
    pub run: Option<RunConfig>,
}

/// What the agent noted about a pull.
#[derive(Debug, Clone, Default)]
struct Note {
    last_progress_ms: Option<u64>,
    failures: u32,
    retry_at_ms: u64,
    failure_reported: bool,
}

/// The agent's images: availability, background pulls, events, root
/// filesystems, garbage collection.
pub struct Images {
    store: Store,
    puller: puller::Puller,
    settings: ImageSettings,
    overlay_refused: bool,
    notes: Vec<(Sha256, Note)>,
}

impl Images {
    /// The store under `data_dir`; starts the puller thread.
    pub fn new(data_dir: &Path, settings: ImageSettings) -> Self {
        let store = Store::new(data_dir);
        let worker = puller::WorkerSettings {
            platform: settings.platform.clone(),
            timeouts: settings.timeouts,
            tls_registry: settings.tls_registry.clone(),
            budget_bytes: settings.budget_mib.saturating_mul(1 << 20),
        };
        let puller = puller::Puller::start(store.clone(), worker);
        Images { store, puller, settings, overlay_refused: false, notes: Vec::new() }
    }

    fn note(&mut self, digest: Sha256) -> &mut Note {
        let index = match self.notes.iter().position(|(d, _)| *d == digest) {
            Some(index) => index,
            None => {
                self.notes.push((digest, Note::default()));
                self.notes.len() - 1
            }
        };
        &mut self.notes[index].1
    }

    /// Forgets a finished pull and what was noted about it.
    fn forget(&mut self, digest: &Sha256) {
        self.puller.forget(digest);
        self.notes.retain(|(d, _)| d != digest);
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether `image` can run; starts (or retries) its pull if not.
    pub fn availability(&mut self, image: &ImageRef, now_ms: u64) -> Availability {
        let digest = Sha256(image.digest.0);
        let preloaded = self.store.preloaded_rootfs(&digest);
        if preloaded.is_dir() {
            return Availability::Ready(Ready::Preloaded(preloaded));
        }
        if let Some(record) = self.store.record(&digest) {
            return Availability::Ready(Ready::Pulled(record));
        }
        match self.puller.state(&digest) {
            Some(PullState::Queued | PullState::Pulling(_)) => return Availability::Pulling,
            Some(PullState::Failed { reason, permanent, .. }) => {
                let note = self.notes.iter().find(|(d, _)| *d == digest).map(|(_, n)| n);
                if permanent || note.is_none_or(|n| now_ms < n.retry_at_ms) {
                    return Availability::Failed(reason);
                }
                tracing::info!(image = %image.reference, "retrying a failed pull");
                self.note(digest).failure_reported = false;
            }
            // Ready without a record: removed since; pull it again.
            Some(PullState::Ready(_)) | None => {}
        }
        self.puller.forget(&digest);
        self.puller.request(&image.reference, digest);
        Availability::Pulling
    }

    /// Whether `image` is being pulled (the replica's phase is `Pulling`).
    pub fn is_pulling(&self, image: &ImageRef) -> bool {
        matches!(self.puller.state(&Sha256(image.digest.0)), Some(PullState::Queued | PullState::Pulling(_)))
    }

    /// The state of `image`'s pull, if one was requested and not yet
    /// reported as finished.
    pub fn pull_state(&self, image: &ImageRef) -> Option<PullState> {
        self.puller.state(&Sha256(image.digest.0))
    }

    /// Tells the store which images the desired containers use and which
    /// containers (desired or existing) to keep: images none uses may be
    /// garbage-collected when the store is over budget, their finished
    /// pulls are forgotten, and root filesystems of containers in neither
    /// (one removed before it was created) are removed.
    pub fn retain<'a>(
        &mut self,
        images: impl IntoIterator<Item = &'a ImageRef>,
        containers: impl IntoIterator<Item = &'a str>,
    ) {
        let in_use: Vec<Sha256> = images.into_iter().map(|image| Sha256(image.digest.0)).collect();
        for (digest, _) in self.puller.states() {
            if !in_use.contains(&digest) {
                self.forget(&digest); // finished ones only: the puller keeps running ones
            }
        }
        self.puller.set_in_use(in_use);
        let keep: Vec<&str> = containers.into_iter().collect();
        let Ok(entries) = std::fs::read_dir(self.store.containers()) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            if !keep.contains(&id) {
                tracing::info!(container = id, "removing the root filesystem of a replica that is gone");
                self.release_rootfs(id);
            }
        }
    }

    /// Pull events since the last call: `PullProgress` at most every second
    /// per image (and once at the end), `PullFailed` once per failure.
    pub fn take_events(&mut self, now_ms: u64) -> Vec<EventKind> {
        let mut events = Vec::new();
        for (digest, state) in self.puller.states() {
            let note = self.note(digest);
            let image = firmware_proto::Bytes(digest.0);
            match state {
                PullState::Queued => {}
                PullState::Pulling(c) => {
                    if note.last_progress_ms.is_none_or(|last| now_ms.saturating_sub(last) >= PROGRESS_EVERY_MS) {
                        note.last_progress_ms = Some(now_ms);
                        events.push(EventKind::PullProgress {
                            image,
                            done_bytes: c.done_bytes,
                            total_bytes: c.total_bytes,
                        });
                    }
                }
                PullState::Ready(c) => {
                    events.push(EventKind::PullProgress {
                        image,
                        done_bytes: c.total_bytes,
                        total_bytes: c.total_bytes,
                    });
                    self.forget(&digest);
                }
                PullState::Failed { reason, .. } => {
                    if !note.failure_reported {
                        note.failure_reported = true;
                        note.last_progress_ms = None;
                        note.failures += 1;
                        let wait = RETRY_FIRST_MS.saturating_mul(1 << (note.failures - 1).min(16));
                        note.retry_at_ms = now_ms + wait.min(RETRY_MAX_MS);
                        let reason = firmware_proto::bounded::truncated(&reason);
                        events.push(EventKind::PullFailed { image, reason });
                    }
                }
            }
        }
        events
    }

    /// The root filesystem for container `id` from a ready image: made from
    /// its layers, or the one made before for this id and image if that
    /// container was never created (see [`rootfs::prepare`]).
    pub fn prepare_rootfs(&mut self, id: &str, image: &ImageRef, ready: &Ready) -> Result<PreparedRootfs, String> {
        let record = match ready {
            Ready::Preloaded(path) => return Ok(PreparedRootfs { path: path.clone(), run: None }),
            Ready::Pulled(record) => record,
        };
        let digest = Sha256(image.digest.0);
        self.store.touch(&digest);
        let overlay = self.settings.rootfs == RootfsMode::Auto && !self.overlay_refused;
        let made = match rootfs::prepare(&self.store, id, &digest, record, overlay) {
            Err(e) if e.get_ref().is_some_and(|inner| inner.is::<rootfs::OverlayRefused>()) => {
                tracing::warn!(error = %e, "overlay unavailable on the data directory; copying image layers instead");
                self.overlay_refused = true;
                rootfs::prepare(&self.store, id, &digest, record, false)
            }
            other => other,
        };
        match made {
            Ok((path, _)) => Ok(PreparedRootfs { path, run: Some(record.run.clone()) }),
            Err(e) => {
                let _ = rootfs::release(&self.store, id);
                Err(if error::is_disk_full(&e) {
                    format!("disk full preparing the root filesystem of {id}")
                } else {
                    format!("preparing the root filesystem of {id}: {e}")
                })
            }
        }
    }

    /// Unmounts and removes container `id`'s root filesystem (after the
    /// container is deleted). Preloaded images have none.
    pub fn release_rootfs(&self, id: &str) {
        if let Err(e) = rootfs::release(&self.store, id) {
            tracing::warn!(container = id, error = %e, "removing a container root filesystem failed");
        }
    }
}
