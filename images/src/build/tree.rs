//! The file tree of one layer, collected before anything is written.
//!
//! Collecting first (rather than streaming a directory walk into tar) gives
//! one sorted map from image path to content: the tar's entry order no
//! longer depends on the order the file system lists directories in, extra
//! files replace rootfs files of the same name, and missing parent
//! directories are added once.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use super::BuildError;

/// Mode of directories the builder creates itself (parents of a binary).
const DEFAULT_DIR_MODE: u32 = 0o755;

/// What one path in the layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory with these permission bits.
    Dir {
        /// Permission bits (including setuid/setgid/sticky).
        mode: u32,
    },
    /// A regular file whose content is read from `source` when the layer is
    /// written.
    File {
        /// The file on the build machine.
        source: PathBuf,
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link, stored as is (it is resolved inside the container).
    Symlink {
        /// The link's target.
        target: PathBuf,
    },
}

/// Every entry of a layer, keyed by its path inside the image without the
/// leading `/` (`bin/busybox`). The map's order is the tar's order; a
/// parent sorts before its children because it is their prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileTree {
    entries: BTreeMap<String, Node>,
}

impl FileTree {
    /// Collects everything under `root`: directories, regular files and
    /// symlinks (not followed). Owners are not kept (every entry belongs
    /// to root in the image); hard links become separate files. Device
    /// nodes, fifos and sockets are refused: the runtime creates `/dev`.
    pub fn from_rootfs(root: &Path) -> Result<Self, BuildError> {
        let metadata = fs::metadata(root).map_err(|source| BuildError::Source { path: root.to_owned(), source })?;
        if !metadata.is_dir() {
            return Err(BuildError::NotADirectory(root.to_owned()));
        }
        let mut tree = FileTree::default();
        tree.collect_dir(root, "")?;
        Ok(tree)
    }

    /// Walks one directory, adding its children under `prefix`.
    fn collect_dir(&mut self, dir: &Path, prefix: &str) -> Result<(), BuildError> {
        let read_error = |source| BuildError::Source { path: dir.to_owned(), source };
        for entry in fs::read_dir(dir).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let source = entry.path();
            let name = entry.file_name().into_string().map_err(|_| BuildError::NonUtf8Path(source.clone()))?;
            let image_path = format!("{prefix}{name}");
            let metadata = fs::symlink_metadata(&source)
                .map_err(|error| BuildError::Source { path: source.clone(), source: error })?;
            let mode = metadata.permissions().mode() & 0o7777;
            let file_type = metadata.file_type();
            if file_type.is_dir() {
                self.entries.insert(image_path.clone(), Node::Dir { mode });
                self.collect_dir(&source, &format!("{image_path}/"))?;
            } else if file_type.is_file() {
                self.entries.insert(image_path, Node::File { source, mode });
            } else if file_type.is_symlink() {
                let target = fs::read_link(&source)
                    .map_err(|error| BuildError::Source { path: source.clone(), source: error })?;
                self.entries.insert(image_path, Node::Symlink { target });
            } else {
                return Err(BuildError::UnsupportedFileType(source));
            }
        }
        Ok(())
    }

    /// Adds (or replaces) the file at `image_path` with the content of
    /// `source`, creating missing parent directories. `mode` defaults to
    /// the source file's permission bits.
    pub fn add_file(&mut self, image_path: &str, source: &Path, mode: Option<u32>) -> Result<(), BuildError> {
        let key = normalize_image_path(image_path)?;
        let metadata =
            fs::metadata(source).map_err(|error| BuildError::Source { path: source.to_owned(), source: error })?;
        if !metadata.is_file() {
            return Err(BuildError::NotAFile(source.to_owned()));
        }
        let mode = mode.unwrap_or(metadata.permissions().mode() & 0o7777);
        self.add_parents(&key)?;
        self.entries.insert(key, Node::File { source: source.to_owned(), mode });
        Ok(())
    }

    /// Makes sure every ancestor of `key` is a directory in the tree.
    fn add_parents(&mut self, key: &str) -> Result<(), BuildError> {
        for (at, _) in key.match_indices('/') {
            let parent = &key[..at];
            match self.entries.get(parent) {
                None => {
                    self.entries.insert(parent.to_owned(), Node::Dir { mode: DEFAULT_DIR_MODE });
                }
                Some(Node::Dir { .. }) => {}
                // A file or symlink where a directory is needed (a symlinked
                // /bin, say) would make the tar ambiguous: refuse it.
                Some(_) => {
                    return Err(BuildError::InvalidImagePath {
                        path: format!("/{key}"),
                        reason: format!("/{parent} is not a directory in the image"),
                    });
                }
            }
        }
        Ok(())
    }

    /// The entries, in tar order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|(path, node)| (path.as_str(), node))
    }

    /// The entry at an image path (`/bin/sh` or `bin/sh`), if any.
    pub fn get(&self, image_path: &str) -> Option<&Node> {
        self.entries.get(image_path.trim_start_matches('/'))
    }
}

/// Checks that `path` is an absolute path inside the image with no `.`,
/// `..` or empty components, and returns it without its leading `/`.
pub fn normalize_image_path(path: &str) -> Result<String, BuildError> {
    let invalid = |reason: &str| BuildError::InvalidImagePath { path: path.to_owned(), reason: reason.to_owned() };
    let relative = path.strip_prefix('/').ok_or_else(|| invalid("it must be absolute (start with /)"))?;
    if relative.is_empty() || relative.ends_with('/') {
        return Err(invalid("it must name a file, not a directory"));
    }
    for component in Path::new(relative).components() {
        if !matches!(component, Component::Normal(_)) {
            return Err(invalid("it must not contain . or .. components"));
        }
    }
    if relative.contains("//") {
        return Err(invalid("it must not contain empty components"));
    }
    Ok(relative.to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn image_paths_must_be_absolute_and_plain() {
        assert_eq!(normalize_image_path("/bin/hello").unwrap(), "bin/hello");
        for bad in ["bin/hello", "/", "/bin/", "/bin/../etc/passwd", "/./x", "/a//b"] {
            assert!(normalize_image_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rootfs_walk_is_sorted_and_keeps_symlinks_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::create_dir(root.join("bin")).unwrap();
        fs::write(root.join("bin/busybox"), b"elf").unwrap();
        fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o4755)).unwrap();
        symlink("/bin/busybox", root.join("bin/sh")).unwrap();
        fs::create_dir(root.join("tmp")).unwrap();
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();

        let tree = FileTree::from_rootfs(root).unwrap();
        let paths: Vec<&str> = tree.entries().map(|(path, _)| path).collect();
        assert_eq!(paths, ["bin", "bin/busybox", "bin/sh", "tmp", "usr", "usr/bin"]);
        assert_eq!(tree.get("/bin/busybox"), Some(&Node::File { source: root.join("bin/busybox"), mode: 0o4755 }));
        assert_eq!(tree.get("bin/sh"), Some(&Node::Symlink { target: "/bin/busybox".into() }));
        assert_eq!(tree.get("tmp"), Some(&Node::Dir { mode: 0o1777 }));
    }

    #[test]
    fn added_file_gets_parents_and_replaces_rootfs_file() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        fs::write(&script, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();

        let mut tree = FileTree::default();
        tree.add_file("/usr/local/bin/run", &script, Some(0o755)).unwrap();
        let paths: Vec<&str> = tree.entries().map(|(path, _)| path).collect();
        assert_eq!(paths, ["usr", "usr/local", "usr/local/bin", "usr/local/bin/run"]);

        tree.add_file("/usr/local/bin/run", &script, None).unwrap();
        assert_eq!(tree.get("/usr/local/bin/run"), Some(&Node::File { source: script.clone(), mode: 0o644 }));
    }

    #[test]
    fn file_under_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir(&root).unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();

        let mut tree = FileTree::from_rootfs(&root).unwrap();
        let error = tree.add_file("/bin/f", &file, None).unwrap_err();
        assert!(error.to_string().contains("/bin is not a directory"), "{error}");
    }

    #[test]
    fn missing_rootfs_is_an_error_naming_it() {
        let error = FileTree::from_rootfs(Path::new("/no/such/rootfs")).unwrap_err();
        assert!(error.to_string().contains("/no/such/rootfs"), "{error}");
    }
}
