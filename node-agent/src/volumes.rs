//! Pod volumes on the device that need more than a directory: an
//! in-memory emptyDir shared by several containers of a pod is one tmpfs,
//! mounted once on the pod's volume directory and bind-mounted into each.

use std::path::Path;

/// Mounts a tmpfs on `dir` (creating it) unless one is mounted there.
pub fn ensure_tmpfs(dir: &Path, size_limit_bytes: Option<u64>) -> std::io::Result<()> {
    ensure_tmpfs_with_mode(dir, size_limit_bytes, 0o1777)
}

/// [`ensure_tmpfs`] with the root directory's `mode`: what holds Secrets
/// in clear lives only in memory. A tmpfs already there that is smaller
/// than `size_limit_bytes` is grown (a Secret grows with a new version).
pub fn ensure_tmpfs_with_mode(dir: &Path, size_limit_bytes: Option<u64>, mode: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let canonical = dir.canonicalize()?;
    let mut flags = nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV;
    if is_mount_point(&canonical) {
        let stat = nix::sys::statvfs::statvfs(&canonical).map_err(std::io::Error::from)?;
        // The statvfs field types are u32 on some 32-bit targets.
        #[allow(clippy::unnecessary_cast)]
        let size = (stat.blocks() as u64).saturating_mul(stat.fragment_size() as u64);
        if size_limit_bytes.is_none_or(|wanted| wanted <= size) {
            return Ok(());
        }
        flags |= nix::mount::MsFlags::MS_REMOUNT;
    }
    let options = match size_limit_bytes {
        Some(size) => format!("size={size},mode={mode:o}"),
        None => format!("mode={mode:o}"),
    };
    nix::mount::mount(Some("tmpfs"), &canonical, Some("tmpfs"), flags, Some(options.as_str()))
        .map_err(std::io::Error::from)
}

/// Unmounts everything mounted under `dir`, deepest first.
pub fn release(dir: &Path) {
    let Ok(canonical) = dir.canonicalize() else { return };
    let mut points: Vec<String> = mount_points().into_iter().filter(|p| Path::new(p).starts_with(&canonical)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        if let Err(e) = nix::mount::umount2(point.as_str(), nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(mount = point, error = %e, "cannot unmount a pod volume");
        }
    }
}

/// Whether something is mounted on `dir` (already canonical).
pub fn is_mount_point(dir: &Path) -> bool {
    mount_points().iter().any(|p| Path::new(p) == dir)
}

fn mount_points() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // Field 5 is the mount point, with spaces and the like octal-escaped.
    info.lines().filter_map(|line| line.split(' ').nth(4)).map(|p| p.replace("\\040", " ")).collect()
}
