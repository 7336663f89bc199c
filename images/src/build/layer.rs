//! Writes a [`FileTree`] as one gzip-compressed tar layer blob.
//!
//! Reproducible by construction: entries in path order, owner 0:0 with no
//! user or group names, one fixed mtime for every entry, and a gzip header
//! with no name, mtime 0 and a fixed OS byte. The same tree and timestamp
//! give the same bytes, so the same `diff_id` and layer digest.
//!
//! One pass: tar -> hash (the `diff_id`, over the uncompressed tar) ->
//! gzip -> hash (the blob digest) -> temporary blob file.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use flate2::{Compression, GzBuilder};
use oci_spec::image::{Descriptor, Digest, MediaType};
use tar::{EntryType, Header};

use crate::digest::HashingWriter;
use crate::layout::OciLayout;

use super::BuildError;
use super::tree::{FileTree, Node};

/// gzip's "unknown" operating system byte: the same on every build host.
const GZIP_OS_UNKNOWN: u8 = 255;

/// A layer written into a layout.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    /// Descriptor of the compressed blob (what the manifest lists).
    pub descriptor: Descriptor,
    /// SHA-256 of the uncompressed tar (what the config's rootfs lists).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
}

/// Writes `tree` as a gzip tar blob into `layout`, every entry stamped with
/// `mtime` (seconds since the epoch).
pub fn write_layer(layout: &OciLayout, tree: &FileTree, mtime: u64) -> Result<LayerBlob, BuildError> {
    let blob = layout.blob_writer()?;
    let gzip = GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNKNOWN)
        // Devices pay for every byte they pull: compress hard once here.
        .write(blob, Compression::best());
    let mut tar = tar::Builder::new(HashingWriter::new(gzip));

    for (path, node) in tree.entries() {
        append_node(&mut tar, path, node, mtime)?;
    }

    let layer_error = |source| BuildError::WriteLayer { source };
    let tar_hash = tar.into_inner().map_err(layer_error)?;
    let (gzip, diff_id, tar_size) = tar_hash.finish();
    let blob = gzip.finish().map_err(layer_error)?;
    let (digest, size) = blob.commit()?;
    Ok(LayerBlob { descriptor: Descriptor::new(MediaType::ImageLayerGzip, size, digest), diff_id, tar_size })
}

/// A tar header with the fields every entry shares.
fn header(entry_type: EntryType, mode: u32, mtime: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(0);
    header
}

/// Appends one entry, reading a file's content from its source.
fn append_node<W: io::Write>(tar: &mut tar::Builder<W>, path: &str, node: &Node, mtime: u64) -> Result<(), BuildError> {
    let layer_error = |source| BuildError::WriteLayer { source };
    match node {
        Node::Dir { mode } => {
            let mut header = header(EntryType::Directory, *mode, mtime);
            tar.append_data(&mut header, format!("{path}/"), io::empty()).map_err(layer_error)
        }
        Node::Symlink { target } => {
            let mut header = header(EntryType::Symlink, 0o777, mtime);
            tar.append_link(&mut header, path, target).map_err(layer_error)
        }
        Node::File { source, mode } => {
            let (file, size) = open_sized(source)?;
            let mut header = header(EntryType::Regular, *mode, mtime);
            header.set_size(size);
            let mut content = ExactReader { inner: file.take(size), remaining: size, path: source };
            tar.append_data(&mut header, path, &mut content).map_err(|error| match error.kind() {
                // ExactReader's "file shrank" error names the file already.
                io::ErrorKind::UnexpectedEof => BuildError::Source { path: source.clone(), source: error },
                _ => BuildError::WriteLayer { source: error },
            })
        }
    }
}

/// Opens a source file and returns it with its current size.
fn open_sized(path: &Path) -> Result<(File, u64), BuildError> {
    let io_error = |source| BuildError::Source { path: path.to_owned(), source };
    let file = File::open(path).map_err(io_error)?;
    let size = file.metadata().map_err(io_error)?.len();
    Ok((file, size))
}

/// Reads exactly the size put in the tar header: a file that shrinks
/// while the layer is written must fail the build, not corrupt the tar.
struct ExactReader<'a, R> {
    inner: R,
    remaining: u64,
    path: &'a Path,
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if read == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was being added", self.path.display()),
            ));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use flate2::read::GzDecoder;

    use super::*;
    use crate::digest::sha256_of;

    /// A tree of a directory, a file and a symlink, and the layout to write it to.
    fn sample() -> (tempfile::TempDir, OciLayout, FileTree) {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::open_or_create(dir.path().join("oci")).unwrap();
        let source = dir.path().join("hello");
        fs::write(&source, b"hello world").unwrap();
        let mut tree = FileTree::default();
        tree.add_file("/bin/hello", &source, Some(0o755)).unwrap();
        (dir, layout, tree)
    }

    #[test]
    fn layer_is_a_gzip_tar_with_normalised_headers() {
        let (_dir, layout, tree) = sample();
        let layer = write_layer(&layout, &tree, 1_700_000_000).unwrap();
        let gz = layout.read_described(&layer.descriptor).unwrap();

        let mut tar_bytes = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut tar_bytes).unwrap();
        assert_eq!(sha256_of(&tar_bytes), layer.diff_id);
        assert_eq!(tar_bytes.len() as u64, layer.tar_size);

        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            assert_eq!(header.uid().unwrap(), 0);
            assert_eq!(header.gid().unwrap(), 0);
            assert_eq!(header.mtime().unwrap(), 1_700_000_000);
            let path = entry.path().unwrap().display().to_string();
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            seen.push((path, header.mode().unwrap(), content));
        }
        assert_eq!(
            seen,
            [("bin/".to_owned(), 0o755, String::new()), ("bin/hello".to_owned(), 0o755, "hello world".to_owned()),]
        );
    }

    #[test]
    fn same_tree_gives_same_digests_and_mtime_changes_them() {
        let (_dir, layout, tree) = sample();
        let first = write_layer(&layout, &tree, 0).unwrap();
        let again = write_layer(&layout, &tree, 0).unwrap();
        assert_eq!(first.descriptor, again.descriptor);
        assert_eq!(first.diff_id, again.diff_id);
        let later = write_layer(&layout, &tree, 1).unwrap();
        assert_ne!(first.diff_id, later.diff_id);
    }
}
