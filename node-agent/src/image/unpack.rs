//! Unpacking a verified layer blob into `layers/<hex>/`, in the form
//! overlayfs reads as a lower directory.
//!
//! OCI whiteouts become overlay's: `.wh.NAME` (NAME deleted by this layer)
//! becomes a 0:0 character device NAME, and `.wh..wh..opq` (the directory's
//! lower contents hidden) becomes the `trusted.overlay.opaque=y` attribute
//! of the directory. The uncompressed stream is hashed on the way and must
//! match the config's `diff_id`. Entries that would land outside the layer
//! directory are refused by the tar crate's `unpack_in`; extended attributes
//! in the archive are not applied (a layer must not set `trusted.overlay.*`
//! itself, and file capabilities are void under `noNewPrivileges`).

use std::io::{BufRead, Read};
use std::path::{Component, Path, PathBuf};

use sha2::Digest as _;

use super::error::PullError;
use super::oci::Sha256;

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `tar+gzip`, Docker's `tar.gzip`.
    Gzip,
    /// Plain tar.
    None,
}

impl Compression {
    /// From a layer media type; `Err` names what is not supported.
    pub fn of(media_type: &str) -> Result<Self, String> {
        if media_type.ends_with("gzip") {
            Ok(Compression::Gzip)
        } else if media_type.ends_with(".tar") || media_type.ends_with("tar.v1") {
            Ok(Compression::None)
        } else if media_type.contains("zstd") {
            Err("zstd-compressed layers are not supported; push the image with gzip layers".into())
        } else {
            Err(format!("unsupported layer type {media_type}"))
        }
    }
}

/// Gzip, without checking its CRC-32: the blob's sha256 and the
/// uncompressed `diff_id` already prove both ends, and flate2's
/// `GzDecoder` would bring a 27 KB CRC table into the agent. Members are
/// read one after the other, as gzip allows.
struct Gunzip<R: BufRead> {
    member: Option<flate2::bufread::DeflateDecoder<R>>,
}

impl<R: BufRead> Gunzip<R> {
    fn new(mut inner: R) -> std::io::Result<Self> {
        skip_gzip_header(&mut inner)?;
        Ok(Gunzip { member: Some(flate2::bufread::DeflateDecoder::new(inner)) })
    }
}

impl<R: BufRead> Read for Gunzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(member) = &mut self.member else { return Ok(0) };
            let n = member.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // End of a member: its trailer (CRC-32, size), then maybe another.
            let Some(member) = self.member.take() else { return Ok(0) };
            let mut inner = member.into_inner();
            std::io::copy(&mut (&mut inner).take(8), &mut std::io::sink())?;
            if !inner.fill_buf()?.is_empty() {
                skip_gzip_header(&mut inner)?;
                self.member = Some(flate2::bufread::DeflateDecoder::new(inner));
            }
        }
    }
}

/// Reads past a gzip member header (RFC 1952, 2.3).
fn skip_gzip_header(input: &mut impl BufRead) -> std::io::Result<()> {
    let mut fixed = [0; 10];
    input.read_exact(&mut fixed)?;
    if fixed[..3] != [0x1f, 0x8b, 8] {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a gzip (deflate) stream"));
    }
    let flags = fixed[3];
    if flags & 4 != 0 {
        let mut length = [0; 2];
        input.read_exact(&mut length)?;
        std::io::copy(&mut input.take(u64::from(u16::from_le_bytes(length))), &mut std::io::sink())?;
    }
    for zero_terminated in [8, 16] {
        if flags & zero_terminated != 0 {
            input.read_until(0, &mut Vec::new())?;
        }
    }
    if flags & 2 != 0 {
        input.read_exact(&mut [0; 2])?;
    }
    Ok(())
}

/// A reader that hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks `blob` into `dest` (which must not exist), checks the
/// uncompressed digest, and returns the bytes of the files written. On
/// error `dest` is left for the caller to remove.
pub fn unpack(blob: &Path, compression: Compression, diff_id: &Sha256, dest: &Path) -> Result<u64, PullError> {
    let file = std::fs::File::open(blob).map_err(|e| PullError::io(blob, "opening", e))?;
    let file = std::io::BufReader::with_capacity(64 * 1024, file);
    let corrupt = |e: std::io::Error| PullError::Io { context: format!("reading layer {}", blob.display()), source: e };
    let stream: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(Gunzip::new(file).map_err(corrupt)?),
        Compression::None => Box::new(file),
    };
    let mut archive = tar::Archive::new(Hashing { inner: stream, hasher: sha2::Sha256::new() });
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    std::fs::create_dir_all(dest).map_err(|e| PullError::io(dest, "creating", e))?;
    let mut bytes = 0;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        bytes += entry.header().size().unwrap_or(0);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let parent = inside(dest, path.parent().unwrap_or(Path::new("")))?;
            std::fs::create_dir_all(&parent).map_err(|e| PullError::io(&parent, "creating", e))?;
            if hidden == ".wh..opq" {
                xattr::set(&parent, "trusted.overlay.opaque", b"y")
                    .map_err(|e| PullError::io(&parent, "marking opaque", e))?;
            } else {
                whiteout(&parent.join(hidden))?;
            }
            continue;
        }
        let unpacked = entry.unpack_in(dest).map_err(|e| PullError::io(&dest.join(&path), "unpacking", e))?;
        if !unpacked {
            tracing::warn!(entry = %path.display(), "layer entry outside the layer refused");
        }
    }
    // The end-of-archive padding is part of the hashed stream.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(corrupt)?;
    let actual = Sha256(rest.hasher.finalize().into());
    if actual != *diff_id {
        return Err(PullError::DigestMismatch { what: "layer content", expected: *diff_id, actual });
    }
    Ok(bytes)
}

/// `dest/relative`, refusing anything that is not plain names or that
/// passes through a symbolic link (which could point out of the layer).
fn inside(dest: &Path, relative: &Path) -> Result<PathBuf, PullError> {
    let mut path = dest.to_owned();
    for component in relative.components() {
        match component {
            Component::Normal(name) => path.push(name),
            Component::CurDir => {}
            _ => {
                return Err(PullError::Io {
                    context: format!("layer whiteout {}", relative.display()),
                    source: std::io::Error::other("path leaves the layer"),
                });
            }
        }
        if path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(PullError::Io {
                context: format!("layer whiteout {}", relative.display()),
                source: std::io::Error::other("path passes through a symbolic link"),
            });
        }
    }
    Ok(path)
}

/// An overlay whiteout: a 0:0 character device.
fn whiteout(path: &Path) -> Result<(), PullError> {
    super::rootfs::remove_any(path).map_err(|e| PullError::io(path, "removing", e))?;
    nix::sys::stat::mknod(path, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
        .map_err(|e| PullError::io(path, "creating a whiteout", e.into()))
}

/// Whether `meta` is an overlay whiteout.
pub fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether `dir` is an opaque directory (hides what lower layers have).
pub fn is_opaque(dir: &Path) -> bool {
    matches!(xattr::get(dir, "trusted.overlay.opaque"), Ok(Some(value)) if value == b"y")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzip layer with a file, a whiteout and an opaque directory marker.
    fn layer(dir: &Path) -> (PathBuf, Sha256) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, data).unwrap();
        };
        add("etc/motd", b"hello");
        add("etc/.wh.old.conf", b"");
        add("var/cache/.wh..wh..opq", b"");
        let raw = tar.into_inner().unwrap();
        let diff_id = Sha256::of(&raw);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        let path = dir.join("layer.tar.gz");
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        (path, diff_id)
    }

    /// Needs root, as the agent does (mknod, `trusted.*` attributes).
    #[test]
    fn files_whiteouts_and_opaque_directories_land_in_overlay_form() {
        let dir = tempfile::tempdir().unwrap();
        let (blob, diff_id) = layer(dir.path());
        let dest = dir.path().join("out");
        let bytes = unpack(&blob, Compression::Gzip, &diff_id, &dest).unwrap();
        assert_eq!(bytes, 5);
        assert_eq!(std::fs::read(dest.join("etc/motd")).unwrap(), b"hello");
        assert!(is_whiteout(&dest.join("etc/old.conf").symlink_metadata().unwrap()));
        assert!(!dest.join("etc/.wh.old.conf").exists());
        assert!(is_opaque(&dest.join("var/cache")));
    }

    #[test]
    fn gzip_headers_with_names_and_several_members_are_read() {
        let member = |data: &[u8], name: Option<&str>| {
            let mut builder = flate2::GzBuilder::new();
            if let Some(name) = name {
                builder = builder.filename(name).comment("c").extra(vec![1, 2, 3]);
            }
            let mut gz = builder.write(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, data).unwrap();
            gz.finish().unwrap()
        };
        let mut stream = member(b"hello ", Some("a.tar"));
        stream.extend(member(b"world", None));
        let mut out = Vec::new();
        Gunzip::new(&stream[..]).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello world");
        assert!(Gunzip::new(&b"BZh91AY&SY"[..]).is_err());
    }

    #[test]
    fn a_wrong_diff_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (blob, _) = layer(dir.path());
        let error = unpack(&blob, Compression::Gzip, &Sha256([1; 32]), &dir.path().join("out")).unwrap_err();
        assert!(matches!(error, PullError::DigestMismatch { what: "layer content", .. }), "{error}");
    }

    #[test]
    fn media_types_map_to_compression() {
        assert_eq!(Compression::of("application/vnd.oci.image.layer.v1.tar+gzip"), Ok(Compression::Gzip));
        assert_eq!(Compression::of("application/vnd.docker.image.rootfs.diff.tar.gzip"), Ok(Compression::Gzip));
        assert_eq!(Compression::of("application/vnd.oci.image.layer.v1.tar"), Ok(Compression::None));
        assert!(Compression::of("application/vnd.oci.image.layer.v1.tar+zstd").unwrap_err().contains("zstd"));
    }
}
