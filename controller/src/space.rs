//! Free space on the controller's data volume: what applies and image
//! uploads may not eat into. On a gateway with a small eMMC a full disk is
//! the normal way a controller gets into trouble; this keeps room for the
//! controllers' own writes (status, events) and answers the operator with a
//! 507 naming the numbers instead of failing half way.

use std::path::{Path, PathBuf};

/// The reserve unless one is configured: 5 % of the volume, at most 256 MiB.
pub fn default_reserve(total_bytes: u64) -> u64 {
    (total_bytes / 20).min(256 << 20)
}

/// Free and total bytes of the volume holding `dir`, as an unprivileged
/// writer sees them.
pub fn usage(dir: &Path) -> std::io::Result<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let block = stat.fragment_size().max(1) as u64;
    Ok((stat.blocks_available() as u64 * block, stat.blocks() as u64 * block))
}

/// Why a write would cross the reserve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the data volume ({dir}) has {free_mib} MiB free and keeps {reserve_mib} MiB in reserve: {incoming_mib} MiB more \
     would cross it (free space, or lower `flotilla server --disk-reserve-mib`)"
)]
pub struct NoSpace {
    /// The data directory.
    pub dir: String,
    /// Free MiB now.
    pub free_mib: u64,
    /// The reserve, MiB.
    pub reserve_mib: u64,
    /// What the write would add, MiB (rounded up).
    pub incoming_mib: u64,
}

/// The reserve on one data directory.
#[derive(Debug, Clone)]
pub struct SpaceGuard {
    dir: PathBuf,
    /// `None`: [`default_reserve`] of the volume.
    reserve: Option<u64>,
}

impl SpaceGuard {
    /// A guard on `dir` keeping `reserve` bytes free (`None`: the default).
    pub fn new(dir: &Path, reserve: Option<u64>) -> Self {
        SpaceGuard { dir: dir.to_owned(), reserve }
    }

    /// Whether `incoming` more bytes leave the reserve free. A volume that
    /// cannot be measured is not refused on that account.
    pub fn check(&self, incoming: u64) -> Result<(), NoSpace> {
        let Ok((free, total)) = usage(&self.dir) else { return Ok(()) };
        let reserve = self.reserve.unwrap_or_else(|| default_reserve(total));
        if free >= reserve.saturating_add(incoming) {
            return Ok(());
        }
        Err(NoSpace {
            dir: self.dir.display().to_string(),
            free_mib: free >> 20,
            reserve_mib: reserve >> 20,
            incoming_mib: incoming.div_ceil(1 << 20),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_five_percent_at_most_256_mib_and_refuses_what_would_cross_it() {
        assert_eq!(default_reserve(1 << 30), (1 << 30) / 20);
        assert_eq!(default_reserve(64 << 30), 256 << 20);
        let dir = tempfile::tempdir().unwrap();
        let (free, _) = usage(dir.path()).unwrap();
        let guard = SpaceGuard::new(dir.path(), Some(0));
        assert!(guard.check(0).is_ok());
        let refused = guard.check(free + (1 << 20)).unwrap_err();
        assert!(refused.to_string().contains("--disk-reserve-mib"), "{refused}");
        assert!(SpaceGuard::new(dir.path(), Some(free + 1)).check(0).is_err(), "the reserve alone");
    }
}
