//! Persistent volume claims on the device: one directory per claim under
//! `claims/`, named by the claim's id, that outlives the pods mounting it,
//! agent restarts and rollouts. It is deleted, data and all, once the
//! applied document no longer lists the claim (the claim was deleted, or
//! moved to another device by its `reschedule` policy).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use firmware_proto::pod::{Claim, PodDocument};

/// Where claims live: `{data_dir}/claims`.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("claims")
}

/// Why a claim's directory cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The device has less free disk than the claim asks for.
    #[error("claim {id} asks for {wanted} bytes and the device has {free} bytes free")]
    NoRoom {
        /// The claim.
        id: String,
        /// Its size.
        wanted: u64,
        /// Free bytes where claims live.
        free: u64,
    },
    /// Making the directory failed.
    #[error("claim {id}: {source}")]
    Io {
        /// The claim.
        id: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The claim's directory, made on first use if the device has room for its
/// size (the data it already holds stays whatever the disk has left since).
pub fn ensure(data_dir: &Path, claim: &Claim) -> Result<PathBuf, ClaimError> {
    let id = claim.id.to_string();
    let io = |source| ClaimError::Io { id: id.clone(), source };
    let dir = root(data_dir).join(claim.id.as_str());
    if dir.is_dir() {
        return Ok(dir);
    }
    std::fs::create_dir_all(root(data_dir)).map_err(io)?;
    let free = free_bytes(&root(data_dir)).map_err(io)?;
    if free < claim.size_bytes {
        return Err(ClaimError::NoRoom { id, wanted: claim.size_bytes, free });
    }
    // Made under a temporary name and renamed: a crash leaves no half-made
    // claim that would pass for one. World-writable like Kubernetes' local
    // volumes, so an image's non-root user can write its data.
    let making = root(data_dir).join(format!(".making-{id}"));
    std::fs::create_dir_all(&making).map_err(io)?;
    std::fs::set_permissions(&making, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
    std::fs::rename(&making, &dir).map_err(io)?;
    tracing::info!(claim = id, size_bytes = claim.size_bytes, "claim directory made");
    Ok(dir)
}

/// Deletes the directories of claims `document` does not list, and what a
/// crash left half made. Returns the ids deleted.
pub fn prune(data_dir: &Path, document: &PodDocument) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root(data_dir)) else { return Vec::new() };
    let mut deleted = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if document.claims.iter().any(|c| c.id.as_str() == name) {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => {
                if !name.starts_with(".making-") {
                    tracing::info!(claim = name, "claim no longer listed: its data is deleted");
                }
                deleted.push(name);
            }
            Err(e) => tracing::warn!(claim = name, error = %e, "deleting a claim's data failed"),
        }
    }
    deleted
}

/// Free bytes of the file system `dir` is on.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    // The statvfs field types are u32 on some 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    Ok((stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_proto::heap::Text;

    fn claim(id: &str, size_bytes: u64) -> Claim {
        Claim { id: Text::new(id).unwrap(), size_bytes }
    }

    #[test]
    fn a_claim_keeps_its_data_until_the_document_drops_it() {
        let data = tempfile::tempdir().unwrap();
        let db = claim("default.db.0a1b2c3d", 1 << 20);
        let dir = ensure(data.path(), &db).unwrap();
        std::fs::write(dir.join("rows"), b"42").unwrap();
        // Made again (another pod, a restart): the data is there.
        assert_eq!(std::fs::read(ensure(data.path(), &db).unwrap().join("rows")).unwrap(), b"42");
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o777);

        let mut document = firmware_proto::samples::pod_document(0, firmware_proto::Bytes([0; 32]));
        document.claims = vec![db.clone()].try_into().unwrap();
        std::fs::create_dir_all(root(data.path()).join(".making-default.x.1")).unwrap();
        assert_eq!(prune(data.path(), &document), [".making-default.x.1"]);
        assert!(dir.join("rows").exists(), "a listed claim is kept");
        document.claims = Default::default();
        assert_eq!(prune(data.path(), &document), ["default.db.0a1b2c3d"]);
        assert!(!dir.exists(), "an unlisted claim's data is deleted");
    }

    #[test]
    fn a_claim_larger_than_the_free_disk_is_refused_and_nothing_is_made() {
        let data = tempfile::tempdir().unwrap();
        let huge = claim("default.huge.0a1b2c3d", u64::MAX);
        let error = ensure(data.path(), &huge).unwrap_err();
        assert!(matches!(error, ClaimError::NoRoom { wanted: u64::MAX, .. }), "{error}");
        assert!(error.to_string().contains("bytes free"), "{error}");
        assert!(!root(data.path()).join("default.huge.0a1b2c3d").exists());
    }
}
