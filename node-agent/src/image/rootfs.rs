//! A container's root filesystem, made from its image's layers.
//!
//! Overlay where it works: the layers are the read-only lower directories
//! (shared by every container of every image that has them) and each
//! container gets its own upper and work directories under
//! `containers/<id>/`, with the merged tree mounted at
//! `containers/<id>/rootfs`. Where overlayfs is missing or refuses the data
//! directory's filesystem (or when asked to), the layers are copied into
//! `containers/<id>/rootfs` instead, applying their whiteouts in order:
//! slower to start and not shared, but it runs anywhere.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::oci::Sha256;
use super::store::{ImageRecord, Store};
use super::unpack::{is_opaque, is_whiteout};

/// Overlay mount options longer than this do not fit the kernel's page of
/// mount data: such images (dozens of layers) are copied instead.
const OVERLAY_OPTIONS_MAX: usize = 4000;

/// How container root filesystems are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootfsMode {
    /// Overlay, falling back to copies when the kernel refuses it.
    #[default]
    Auto,
    /// Always copies (for filesystems overlay cannot use as upper).
    Copy,
}

/// How a root filesystem was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// Overlay mount.
    Overlay,
    /// Copied layers.
    Copy,
}

/// The directory of one container's root filesystem.
pub fn container_dir(store: &Store, id: &str) -> PathBuf {
    store.containers().join(id)
}

/// Builds the root filesystem for container `id` from `record`'s layers
/// and returns its path. One left from an earlier call for the same id and
/// image is reused (its container was never created); any other is
/// removed first. The agent releases a container's root filesystem when it
/// deletes the container, so a restarted container starts from the image,
/// as in Kubernetes.
pub fn prepare(
    store: &Store,
    id: &str,
    image: &Sha256,
    record: &ImageRecord,
    overlay: bool,
) -> std::io::Result<(PathBuf, Made)> {
    let dir = container_dir(store, id);
    let rootfs = dir.join("rootfs");
    if let Some(made) = reusable(&dir, image) {
        // Made for a container that was not created after all (its replica
        // is blocked for another reason): no need to mount or copy again.
        return Ok((rootfs, made));
    }
    release(store, id)?;
    std::fs::create_dir_all(&rootfs)?;
    // Which image it uses, so garbage collection keeps that image's layers.
    std::fs::write(dir.join("image"), image.to_string())?;
    let layers: Vec<PathBuf> = record.layers.iter().map(|l| store.layer(&l.digest)).collect();
    if overlay && !layers.is_empty() {
        let lower: Vec<String> = layers.iter().rev().map(|p| p.display().to_string()).collect();
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        std::fs::create_dir_all(&upper)?;
        std::fs::create_dir_all(&work)?;
        let options = format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
        if options.len() <= OVERLAY_OPTIONS_MAX {
            let flags = nix::mount::MsFlags::empty();
            return match nix::mount::mount(Some("overlay"), &rootfs, Some("overlay"), flags, Some(options.as_str())) {
                Ok(()) => {
                    std::fs::write(dir.join("made"), "overlay")?;
                    Ok((rootfs, Made::Overlay))
                }
                Err(e) => Err(std::io::Error::other(OverlayRefused(e))),
            };
        }
    }
    for layer in &layers {
        merge(layer, &rootfs)?;
    }
    std::fs::write(dir.join("made"), "copy")?;
    Ok((rootfs, Made::Copy))
}

/// How an existing root filesystem in `dir` was made, if it is complete,
/// from `image`, and (overlay) still mounted.
fn reusable(dir: &Path, image: &Sha256) -> Option<Made> {
    let made = std::fs::read_to_string(dir.join("made")).ok()?;
    let from = std::fs::read_to_string(dir.join("image")).ok()?;
    if from != image.to_string() {
        return None;
    }
    let device = |path: &Path| std::fs::metadata(path).map(|m| m.dev()).ok();
    match made.as_str() {
        "copy" => Some(Made::Copy),
        // A mount point is on another device than its parent.
        "overlay" if device(&dir.join("rootfs")) != device(dir) => Some(Made::Overlay),
        _ => None,
    }
}

/// The kernel refused the overlay mount (no overlayfs, or the filesystem
/// cannot be an upper directory): the caller falls back to copies.
#[derive(Debug, thiserror::Error)]
#[error("overlay mount refused: {0}")]
pub struct OverlayRefused(pub nix::errno::Errno);

/// Unmounts and removes container `id`'s root filesystem, if any.
pub fn release(store: &Store, id: &str) -> std::io::Result<()> {
    let dir = container_dir(store, id);
    let rootfs = dir.join("rootfs");
    match nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
        // Not mounted (copy, or after a reboot) or not there.
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    remove_any(&dir)
}

/// Removes a file, link or directory tree; absent is fine.
pub fn remove_any(path: &Path) -> std::io::Result<()> {
    match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies layer directory `layer` over `dest` as overlay would show it:
/// whiteouts delete, opaque directories replace, everything else is
/// copied with its owner and mode.
pub fn merge(layer: &Path, dest: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(layer)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dest.join(entry.file_name()));
        let meta = from.symlink_metadata()?;
        if is_whiteout(&meta) {
            remove_any(&to)?;
            continue;
        }
        if meta.is_dir() {
            let keep = to.symlink_metadata().is_ok_and(|m| m.is_dir()) && !is_opaque(&from);
            if !keep {
                remove_any(&to)?;
                std::fs::create_dir(&to)?;
            }
            merge(&from, &to)?;
            std::os::unix::fs::chown(&to, Some(meta.uid()), Some(meta.gid()))?;
            std::fs::set_permissions(&to, meta.permissions())?;
            continue;
        }
        remove_any(&to)?;
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if file_type.is_file() {
            std::fs::copy(&from, &to)?;
        } else if file_type.is_char_device() || file_type.is_block_device() || file_type.is_fifo() {
            let kind = nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & nix::libc::S_IFMT);
            let mode = nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777);
            nix::sys::stat::mknod(&to, kind, mode, meta.rdev())?;
        } else {
            continue; // sockets are not image content
        }
        std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
        if !file_type.is_symlink() {
            // After chown, which clears set-user-id bits.
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::store::{LayerRecord, RunConfig};
    use super::*;

    /// Needs root (mounts), as the agent does.
    #[test]
    fn a_root_filesystem_is_reused_for_its_image_made_fresh_for_another_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let layer = Sha256([1; 32]);
        std::fs::create_dir_all(store.layer(&layer).join("etc")).unwrap();
        std::fs::write(store.layer(&layer).join("etc/motd"), "hi").unwrap();
        let record = ImageRecord {
            reference: "reg:5000/x".into(),
            platform: "linux/amd64".into(),
            metadata_blobs: vec![],
            layers: vec![LayerRecord { digest: layer, unpacked_bytes: 2 }],
            run: RunConfig::default(),
        };
        for (overlay, expected) in [(false, Made::Copy), (true, Made::Overlay)] {
            let (rootfs, made) = prepare(&store, "c1", &Sha256([9; 32]), &record, overlay).unwrap();
            assert_eq!(made, expected);
            assert_eq!(std::fs::read_to_string(rootfs.join("etc/motd")).unwrap(), "hi");
            std::fs::write(rootfs.join("scratch"), "").unwrap();
            let (again, made) = prepare(&store, "c1", &Sha256([9; 32]), &record, overlay).unwrap();
            assert_eq!((again.join("scratch").exists(), made), (true, expected), "reused");
            let (fresh, _) = prepare(&store, "c1", &Sha256([8; 32]), &record, overlay).unwrap();
            assert!(!fresh.join("scratch").exists(), "another image: made again");
            assert!(!store.layer(&layer).join("scratch").exists(), "the layer is never written");
            release(&store, "c1").unwrap();
            assert!(!container_dir(&store, "c1").exists());
        }
    }

    /// Needs root, as the agent does (whiteout devices, `trusted.*`).
    #[test]
    fn copies_apply_whiteouts_and_opaque_directories_in_layer_order() {
        let dir = tempfile::tempdir().unwrap();
        let (base, top, dest) = (dir.path().join("base"), dir.path().join("top"), dir.path().join("dest"));
        for d in ["etc", "var/cache", "bin"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::write(base.join("etc/old.conf"), "old").unwrap();
        std::fs::write(base.join("etc/kept"), "kept").unwrap();
        std::fs::write(base.join("var/cache/stale"), "stale").unwrap();
        std::fs::write(base.join("bin/tool"), "v1").unwrap();
        std::os::unix::fs::symlink("tool", base.join("bin/alias")).unwrap();
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::create_dir_all(top.join("var/cache")).unwrap();
        std::fs::create_dir_all(top.join("bin")).unwrap();
        nix::sys::stat::mknod(
            &top.join("etc/old.conf"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        xattr::set(top.join("var/cache"), "trusted.overlay.opaque", b"y").unwrap();
        std::fs::write(top.join("var/cache/fresh"), "fresh").unwrap();
        std::fs::write(top.join("bin/tool"), "v2").unwrap();
        std::fs::set_permissions(top.join("bin/tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::create_dir_all(&dest).unwrap();
        merge(&base, &dest).unwrap();
        merge(&top, &dest).unwrap();
        assert!(!dest.join("etc/old.conf").exists(), "whited out");
        assert_eq!(std::fs::read_to_string(dest.join("etc/kept")).unwrap(), "kept");
        assert!(!dest.join("var/cache/stale").exists(), "hidden by the opaque directory");
        assert_eq!(std::fs::read_to_string(dest.join("var/cache/fresh")).unwrap(), "fresh");
        assert_eq!(std::fs::read_to_string(dest.join("bin/alias")).unwrap(), "v2", "the link follows the new file");
        assert_eq!(std::fs::metadata(dest.join("bin/tool")).unwrap().mode() & 0o7777, 0o4755, "set-user-id kept");
    }
}
