//! Garbage collection under a disk budget.
//!
//! Left-overs are always removed: layers and blobs no image record refers
//! to, half-unpacked layers (collection runs on the puller's thread, between
//! pulls, so none is in progress). Then, while the images take more than
//! the budget, the least recently used image that no current replica and
//! no existing container uses is removed, with the layers only it had.
//! Partial downloads are kept (a later pull resumes them) unless the store
//! is still over budget after that. Preloaded images are never touched.

use std::time::SystemTime;

use super::oci::Sha256;
use super::store::{ImageRecord, Store};

/// What one collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Images removed, least recently used first.
    pub images: Vec<Sha256>,
    /// Layer directories removed.
    pub layers: usize,
    /// Bytes the store holds afterwards (approximately).
    pub bytes_after: u64,
}

/// Runs one collection. `in_use` are the images of the current desired
/// replicas; images of existing containers are added from the store.
pub fn collect(store: &Store, budget_bytes: u64, in_use: &[Sha256]) -> Collected {
    let mut in_use = in_use.to_vec();
    in_use.extend(container_images(store));
    let mut images: Vec<(Sha256, ImageRecord, SystemTime)> = pulled_images(store);
    let mut collected = Collected::default();

    let referenced = |images: &[(Sha256, ImageRecord, SystemTime)]| -> (Vec<Sha256>, Vec<Sha256>) {
        let layers = images.iter().flat_map(|(_, r, _)| r.layers.iter().map(|l| l.digest)).collect();
        let blobs = images.iter().flat_map(|(_, r, _)| r.metadata_blobs.iter().copied()).collect();
        (layers, blobs)
    };
    let (layers, blobs) = referenced(&images);
    collected.layers += remove_unreferenced(store, &layers, &blobs);

    let total = |images: &[(Sha256, ImageRecord, SystemTime)]| -> u64 {
        let mut seen = Vec::new();
        let layers: u64 = images
            .iter()
            .flat_map(|(_, r, _)| r.layers.iter())
            .filter(|l| {
                let first = !seen.contains(&l.digest);
                seen.push(l.digest);
                first
            })
            .map(|l| l.unpacked_bytes)
            .sum();
        layers + images.iter().map(|(_, r, _)| 4096 * r.metadata_blobs.len() as u64).sum::<u64>()
    };
    let mut bytes = total(&images) + super::pull::dir_bytes(&store.partial_dir());
    while bytes > budget_bytes {
        // The least recently used of the unused (a handful of images: no sort).
        let unused = images.iter().enumerate().filter(|(_, (digest, _, _))| !in_use.contains(digest));
        let Some(position) = unused.min_by_key(|(_, (_, _, used))| *used).map(|(i, _)| i) else { break };
        let (digest, record, _) = images.remove(position);
        tracing::info!(image = %record.reference, %digest, "removing an unused image (over the disk budget)");
        if let Err(e) = super::rootfs::remove_any(&store.image_dir(&digest)) {
            tracing::warn!(%digest, error = %e, "cannot remove an image");
        }
        collected.images.push(digest);
        let (layers, blobs) = referenced(&images);
        collected.layers += remove_unreferenced(store, &layers, &blobs);
        bytes = total(&images) + super::pull::dir_bytes(&store.partial_dir());
    }
    if bytes > budget_bytes {
        let _ = super::rootfs::remove_any(&store.partial_dir());
        bytes = total(&images);
    }
    collected.bytes_after = bytes;
    collected
}

/// Pulled images with their last use.
fn pulled_images(store: &Store) -> Vec<(Sha256, ImageRecord, SystemTime)> {
    let Ok(entries) = std::fs::read_dir(store.images()) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let digest = Sha256::parse(&format!("sha256:{}", entry.file_name().to_str()?))?;
            let record = store.record(&digest)?;
            let used = std::fs::metadata(store.record_path(&digest)).and_then(|m| m.modified()).ok()?;
            Some((digest, record, used))
        })
        .collect()
}

/// Images that existing containers were made from.
fn container_images(store: &Store) -> Vec<Sha256> {
    let Ok(entries) = std::fs::read_dir(store.containers()) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| Sha256::parse(std::fs::read_to_string(entry.path().join("image")).ok()?.trim()))
        .collect()
}

/// Removes layer directories and verified blobs not in the given sets.
/// Returns the number of layer directories removed.
fn remove_unreferenced(store: &Store, layers: &[Sha256], blobs: &[Sha256]) -> usize {
    sweep(&store.blob_dir(), blobs);
    sweep(&store.layers(), layers)
}

/// Removes the entries of `dir` that are not named by a digest in `keep`
/// (half-unpacked layers included). Returns how many were removed.
fn sweep(dir: &std::path::Path, keep: &[Sha256]) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if Sha256::parse(&format!("sha256:{}", name.to_string_lossy())).is_some_and(|d| keep.contains(&d)) {
            continue;
        }
        match super::rootfs::remove_any(&entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove"),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::super::store::{LayerRecord, RunConfig};
    use super::*;

    fn image(store: &Store, digest: u8, layers: &[u8], used_secs_ago: u64) -> Sha256 {
        let digest = Sha256([digest; 32]);
        let record = ImageRecord {
            reference: format!("reg:5000/img{}", digest.0[0]),
            platform: "linux/amd64".into(),
            metadata_blobs: vec![digest],
            layers: layers.iter().map(|l| LayerRecord { digest: Sha256([*l; 32]), unpacked_bytes: 1 << 20 }).collect(),
            run: RunConfig::default(),
        };
        for layer in &record.layers {
            std::fs::create_dir_all(store.layer(&layer.digest)).unwrap();
        }
        store.put_blob(&digest, b"{}").unwrap();
        store.save_record(&digest, &record).unwrap();
        let when = SystemTime::now() - std::time::Duration::from_secs(used_secs_ago);
        std::fs::File::options().write(true).open(store.record_path(&digest)).unwrap().set_modified(when).unwrap();
        digest
    }

    #[test]
    fn unused_images_go_least_recently_used_first_until_under_budget_and_shared_layers_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let old = image(&store, 1, &[10, 11], 300);
        let newer = image(&store, 2, &[10, 12], 200);
        let running = image(&store, 3, &[13], 400);
        std::fs::create_dir_all(store.layer(&Sha256([99; 32]))).unwrap(); // left over
        // A container still runs `running` though no replica wants it.
        std::fs::create_dir_all(store.containers().join("c1")).unwrap();
        std::fs::write(store.containers().join("c1/image"), running.to_string()).unwrap();

        // Three layers of 1 MiB and some metadata fit; four layers do not.
        let collected = collect(&store, (3 << 20) + 65536, &[]);
        assert_eq!(collected.images, vec![old], "only the oldest unused image had to go");
        assert!(!store.layer(&Sha256([11; 32])).exists(), "its own layer went with it");
        assert!(store.layer(&Sha256([10; 32])).is_dir(), "the layer it shared stays");
        assert!(!store.layer(&Sha256([99; 32])).exists(), "left-overs are removed");
        assert!(store.record(&newer).is_some() && store.record(&running).is_some());

        let collected = collect(&store, 0, &[newer]);
        assert!(collected.images.is_empty(), "what is in use stays even over budget");
        assert!(store.layer(&Sha256([13; 32])).is_dir());
    }
}
