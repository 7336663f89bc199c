//! One pull, start to end: the pinned manifest (or index, then this node's
//! manifest), the config, then each layer not yet in the store: download
//! (resumable), verify, unpack, share. The image becomes usable only when
//! its record is written, after everything it needs is verified on disk.

use std::os::fd::AsRawFd;

use super::download::{self, Wanted};
use super::error::PullError;
use super::oci::{Document, ImageConfigBlob, Manifest, Platform, Sha256, choose};
use super::reference::Reference;
use super::registry::{FetchedManifest, Registry};
use super::store::{ImageRecord, LayerRecord, RunConfig, Store};
use super::unpack::{self, Compression};

/// Configs larger than this are refused (they are a few KiB).
const CONFIG_LIMIT: u64 = 4 << 20;

/// How far a pull is, in layer bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Layer bytes held (downloaded now or by an earlier, interrupted pull).
    pub done_bytes: u64,
    /// Layer bytes this pull needs (layers already in the store excluded).
    pub total_bytes: u64,
    /// Layer bytes received from the network by this pull, including any a
    /// registry resent (manifests and config are not counted).
    pub received_bytes: u64,
}

/// What a pull needs.
pub struct Context<'a> {
    /// The registry client.
    pub registry: &'a Registry,
    /// The store.
    pub store: &'a Store,
    /// This node's platform.
    pub node: &'a Platform,
}

/// Pulls `reference` pinned at `digest` and returns its record (already
/// saved in the store). `report` is called as bytes arrive.
pub fn pull(
    cx: &Context,
    reference_text: &str,
    digest: Sha256,
    report: &mut dyn FnMut(Counters),
) -> Result<ImageRecord, PullError> {
    let reference = Reference::parse(reference_text)?;
    let unsupported = |reason: String| PullError::Unsupported { reference: reference_text.to_owned(), reason };
    let digest_of =
        |text: &str| Sha256::parse(text).ok_or_else(|| unsupported(format!("digest {text:?} is not sha256:<64 hex>")));
    let mut metadata_blobs = vec![digest];
    let top = manifest(cx, &reference, &digest)?;
    let manifest: Manifest = match Document::parse(&top.bytes, &top.content_type).map_err(unsupported)? {
        Document::Manifest(manifest) => manifest,
        Document::Index(index) => {
            let chosen = choose(&index, cx.node).map_err(|available| PullError::NoVariant {
                reference: reference_text.to_owned(),
                node: cx.node.to_string(),
                available,
            })?;
            let chosen = digest_of(&chosen.digest)?;
            metadata_blobs.push(chosen);
            let fetched = manifest(cx, &reference, &chosen)?;
            match Document::parse(&fetched.bytes, &fetched.content_type).map_err(unsupported)? {
                Document::Manifest(manifest) => manifest,
                Document::Index(_) => return Err(unsupported("an index inside an index".into())),
            }
        }
    };

    let config_digest = digest_of(&manifest.config.digest)?;
    if manifest.config.size > CONFIG_LIMIT {
        return Err(unsupported(format!("config of {} bytes", manifest.config.size)));
    }
    let wanted = Wanted { reference: &reference, what: "config", digest: config_digest, size: manifest.config.size };
    let config_path = download::fetch(cx.registry, cx.store, wanted, &mut |_, _| {})?;
    metadata_blobs.push(config_digest);
    let config_bytes = std::fs::read(&config_path).map_err(|e| PullError::io(&config_path, "reading", e))?;
    let config: ImageConfigBlob =
        serde_json::from_slice(&config_bytes).map_err(|e| unsupported(format!("bad image config: {e}")))?;
    if !cx.node.runs(&config.platform()) {
        return Err(PullError::WrongPlatform {
            reference: reference_text.to_owned(),
            image: config.platform().to_string(),
            node: cx.node.to_string(),
        });
    }
    let diff_ids = config.rootfs.as_ref().map(|r| r.diff_ids.as_slice()).unwrap_or_default();
    if diff_ids.len() != manifest.layers.len() {
        return Err(unsupported(format!(
            "{} layers but {} diff_ids in the config",
            manifest.layers.len(),
            diff_ids.len()
        )));
    }

    let mut counters = Counters::default();
    let mut layers = Vec::new();
    for (descriptor, diff_id) in manifest.layers.iter().zip(diff_ids) {
        let layer = digest_of(&descriptor.digest)?;
        let diff_id = digest_of(diff_id)?;
        let compression = Compression::of(&descriptor.media_type).map_err(unsupported)?;
        layers.push((layer, diff_id, compression, descriptor.size));
        if !cx.store.layer(&layer).is_dir() {
            counters.total_bytes += descriptor.size;
        }
    }
    report(counters);

    let mut records = Vec::new();
    for (layer, diff_id, compression, size) in layers {
        let dir = cx.store.layer(&layer);
        if dir.is_dir() {
            // Shared with an image already here: stored once.
            records.push(LayerRecord { digest: layer, unpacked_bytes: dir_bytes(&dir) });
            continue;
        }
        let base = counters.done_bytes;
        let wanted = Wanted { reference: &reference, what: "layer", digest: layer, size };
        let blob = download::fetch(cx.registry, cx.store, wanted, &mut |have, received| {
            counters.done_bytes = base + have;
            counters.received_bytes += received;
            report(counters);
        })?;
        counters.done_bytes = base + size;
        let unpacking = cx.store.layers().join(format!(".unpacking-{}", layer.hex()));
        super::rootfs::remove_any(&unpacking).map_err(|e| PullError::io(&unpacking, "removing", e))?;
        let unpacked = unpack::unpack(&blob, compression, &diff_id, &unpacking);
        let unpacked_bytes = match unpacked {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = super::rootfs::remove_any(&unpacking);
                if matches!(e, PullError::DigestMismatch { .. }) {
                    // The blob matched its digest, so the image itself is bad.
                    let _ = std::fs::remove_file(&blob);
                }
                return Err(e);
            }
        };
        // The files must be on disk before the layer is visible under its name.
        sync_filesystem(&unpacking);
        std::fs::rename(&unpacking, &dir).map_err(|e| PullError::io(&dir, "moving a layer to", e))?;
        // The unpacked layer is the cached form: devices have little flash.
        let _ = std::fs::remove_file(&blob);
        records.push(LayerRecord { digest: layer, unpacked_bytes });
    }

    let platform = config.platform().to_string();
    let run = config.config.unwrap_or_default();
    let record = ImageRecord {
        reference: reference_text.to_owned(),
        platform,
        metadata_blobs,
        layers: records,
        run: RunConfig {
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            working_dir: run.working_dir.unwrap_or_default(),
            user: run.user.unwrap_or_default(),
        },
    };
    cx.store.save_record(&digest, &record)?;
    Ok(record)
}

/// A manifest from the store (verified again: it is small) or the registry.
fn manifest(cx: &Context, reference: &Reference, digest: &Sha256) -> Result<FetchedManifest, PullError> {
    if let Ok(bytes) = std::fs::read(cx.store.blob(digest))
        && Sha256::of(&bytes) == *digest
    {
        return Ok(FetchedManifest { bytes, content_type: String::new() });
    }
    let fetched = cx.registry.manifest(reference, digest)?;
    cx.store.put_blob(digest, &fetched.bytes)?;
    Ok(fetched)
}

/// Bytes of the regular files under `dir`.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

fn sync_filesystem(path: &std::path::Path) {
    let result =
        std::fs::File::open(path).and_then(|dir| nix::unistd::syncfs(dir.as_raw_fd()).map_err(std::io::Error::from));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "syncing an unpacked layer failed");
    }
}
