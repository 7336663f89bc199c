//! Garbage collection: mark every blob reachable from a repository's tags
//! and manifests, sweep the rest.
//!
//! Roots are every manifest linked into a repository (tagged or not) and
//! every tag; from them the walk follows index entries to child manifests
//! and image manifests to their config and layers. A blob nothing reaches is
//! deleted once it is older than the grace period: a client pushes blobs
//! first and the manifest that references them last, so a young
//! unreferenced blob is most likely waiting for its manifest.
//!
//! The caller holds the registry's write lock while this runs, so no
//! manifest can be stored between the mark and the sweep.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::error::RegistryError;
use super::manifest;
use super::names::Digest;
use super::storage::{self, Storage, list_dir};
use super::upload::Uploads;

/// Upload sessions and temp files untouched for this long are abandoned.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Blobs (manifests included) reachable from some repository.
    pub blobs_kept: usize,
    /// Unreachable blobs deleted.
    pub blobs_deleted: usize,
    /// Their total size.
    pub bytes_freed: u64,
    /// Unreachable blobs kept because they are younger than the grace period.
    pub young_blobs_spared: usize,
    /// Repository links to blobs that no longer exist, removed.
    pub links_removed: usize,
    /// Abandoned upload sessions removed.
    pub uploads_removed: usize,
    /// Abandoned temp files removed.
    pub temp_files_removed: usize,
}

/// Runs one collection. `grace` spares unreachable blobs younger than that.
pub fn collect(storage: &Storage, uploads: &Uploads, grace: Duration) -> Result<GcReport, RegistryError> {
    let reachable = mark(storage)?;
    let mut report = sweep_blobs(storage, &reachable, grace)?;
    report.links_removed = remove_dangling_links(storage)?;
    report.uploads_removed = uploads.remove_stale(ABANDONED_AFTER)?;
    report.temp_files_removed = remove_old_files(&storage.tmp_dir(), ABANDONED_AFTER)?;
    Ok(report)
}

/// Every digest reachable from a root.
fn mark(storage: &Storage) -> Result<HashSet<Digest>, RegistryError> {
    let mut pending = Vec::new();
    for repo in storage.repositories()? {
        pending.extend(storage.manifests(&repo)?);
        pending.extend(storage.tags(&repo)?.into_iter().map(|(_, digest)| digest));
    }
    let mut reachable = HashSet::new();
    // Separate from `reachable`: a digest first met as a blob must still be
    // walked if it is also a manifest.
    let mut walked = HashSet::new();
    while let Some(digest) = pending.pop() {
        reachable.insert(digest);
        if !walked.insert(digest) {
            continue;
        }
        let Some(bytes) = storage.read_blob(&digest)? else {
            tracing::warn!(%digest, "a repository links a manifest whose blob is missing");
            continue;
        };
        // Every stored manifest parsed when it was pushed. If one no longer
        // does, its references are unknown, and sweeping could delete
        // content it needs: stop instead.
        let parsed = manifest::parse(&bytes, None).map_err(|e| {
            RegistryError::Internal(format!("garbage collection stopped: stored manifest {digest} is unreadable: {e}"))
        })?;
        reachable.extend(parsed.blobs.iter().copied());
        pending.extend(parsed.children.iter().map(|child| child.digest));
    }
    Ok(reachable)
}

fn sweep_blobs(storage: &Storage, reachable: &HashSet<Digest>, grace: Duration) -> Result<GcReport, RegistryError> {
    let mut report = GcReport::default();
    let now = SystemTime::now();
    for name in list_dir(&storage.blob_dir())? {
        let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else { continue };
        if reachable.contains(&digest) {
            report.blobs_kept += 1;
            continue;
        }
        let path = storage.blob_path(&digest);
        if now.duration_since(storage::modified(&path)?).unwrap_or_default() < grace {
            report.young_blobs_spared += 1;
            continue;
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if storage::remove_if_present(&path)? {
            tracing::debug!(%digest, size, "deleted an unreferenced blob");
            report.blobs_deleted += 1;
            report.bytes_freed += size;
        }
    }
    Ok(report)
}

/// Removes repository links whose blob is gone, so that a repository never
/// claims content it cannot serve.
fn remove_dangling_links(storage: &Storage) -> Result<usize, RegistryError> {
    let mut removed = 0;
    for repo in storage.repositories()? {
        for digest in storage.blob_links(&repo)? {
            if !storage.has_blob(&digest) && storage.unlink_blob(&repo, &digest)? {
                removed += 1;
            }
        }
        for digest in storage.manifests(&repo)? {
            if !storage.has_blob(&digest) && storage.unlink_manifest(&repo, &digest)? {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn remove_old_files(dir: &std::path::Path, max_age: Duration) -> Result<usize, RegistryError> {
    let now = SystemTime::now();
    let mut removed = 0;
    for name in list_dir(dir)? {
        let path = dir.join(name);
        if now.duration_since(storage::modified(&path)?).unwrap_or_default() >= max_age
            && storage::remove_if_present(&path)?
        {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::names::RepoName;

    /// Stores an image (config + one layer) and an index over it in `repo`,
    /// tagging only the index.
    fn store_tagged_index(storage: &Storage, repo: &RepoName) -> (Digest, Vec<Digest>) {
        let config = Digest::of(b"{}");
        let layer = Digest::of(b"layer");
        storage.write_blob(&config, b"{}").unwrap();
        storage.write_blob(&layer, b"layer").unwrap();
        let image = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"digest":"{config}"}},"layers":[{{"digest":"{layer}"}}]}}"#,
            manifest::OCI_MANIFEST
        );
        let image_digest = Digest::of(image.as_bytes());
        storage.write_blob(&image_digest, image.as_bytes()).unwrap();
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"digest":"{image_digest}"}}]}}"#,
            manifest::OCI_INDEX
        );
        let index_digest = Digest::of(index.as_bytes());
        storage.write_blob(&index_digest, index.as_bytes()).unwrap();
        storage.link_manifest(repo, &index_digest, manifest::OCI_INDEX).unwrap();
        storage.tag(repo, &"v1".parse().unwrap(), &index_digest).unwrap();
        (index_digest, vec![config, layer, image_digest, index_digest])
    }

    #[test]
    fn keeps_what_a_tag_reaches_through_an_index_and_deletes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let uploads = Uploads::new(storage.uploads_dir());
        let repo: RepoName = "app".parse().unwrap();
        let (_, referenced) = store_tagged_index(&storage, &repo);
        let orphan = Digest::of(b"orphan");
        storage.write_blob(&orphan, b"orphan").unwrap();
        storage.link_blob(&repo, &orphan).unwrap();

        let spared = collect(&storage, &uploads, Duration::from_secs(3600)).unwrap();
        assert_eq!((spared.blobs_deleted, spared.young_blobs_spared), (0, 1), "young blobs are spared");

        let report = collect(&storage, &uploads, Duration::ZERO).unwrap();
        assert_eq!(report.blobs_kept, 4);
        assert_eq!(report.blobs_deleted, 1);
        assert_eq!(report.bytes_freed, 6);
        assert_eq!(report.links_removed, 1, "the orphan's link goes with it");
        assert!(!storage.has_blob(&orphan));
        assert!(referenced.iter().all(|d| storage.has_blob(d)));
    }

    #[test]
    fn deleting_the_only_manifest_frees_everything_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let uploads = Uploads::new(storage.uploads_dir());
        let repo: RepoName = "app".parse().unwrap();
        let (index, referenced) = store_tagged_index(&storage, &repo);
        storage.unlink_manifest(&repo, &index).unwrap();
        let report = collect(&storage, &uploads, Duration::ZERO).unwrap();
        assert_eq!(report.blobs_deleted, referenced.len());
        assert!(list_dir(&storage.blob_dir()).unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_manifest_stops_collection_before_any_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let uploads = Uploads::new(storage.uploads_dir());
        let repo: RepoName = "app".parse().unwrap();
        let garbage = Digest::of(b"not json");
        storage.write_blob(&garbage, b"not json").unwrap();
        storage.link_manifest(&repo, &garbage, manifest::OCI_MANIFEST).unwrap();
        let orphan = Digest::of(b"orphan");
        storage.write_blob(&orphan, b"orphan").unwrap();
        assert!(collect(&storage, &uploads, Duration::ZERO).is_err());
        assert!(storage.has_blob(&orphan));
    }
}
