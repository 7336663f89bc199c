//! The registry's files, laid out like Docker's distribution registry:
//!
//! ```text
//! <root>/blobs/sha256/<hex>                              content, shared by all repositories
//! <root>/repositories/<name>/_layers/<hex>               blob linked into the repository (empty)
//! <root>/repositories/<name>/_manifests/revisions/<hex>  manifest in the repository (holds its media type)
//! <root>/repositories/<name>/_manifests/tags/<tag>       tag (holds `sha256:<hex>`)
//! <root>/uploads/<uuid>/                                 upload sessions (see `upload`)
//! <root>/tmp/                                            files on their way to their place
//! ```
//!
//! Every file appears by `rename` from `tmp/` (or from its upload session)
//! after an fsync, so a crash leaves either the old or the new state, never
//! a torn file; a blob's name is the SHA-256 of its bytes, checked before it
//! gets that name. Names come from [`super::names`], whose grammar keeps
//! them inside these directories (no `..`, no leading `_` or `.`).

use std::collections::BTreeSet;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::error::RegistryError;
use super::names::{Digest, RepoName, Tag};

/// Paths and file operations of one registry directory.
#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
}

/// Directory names under a repository; the leading `_` cannot start a
/// repository name component, so they never collide with nested names.
const LAYERS: &str = "_layers";
const MANIFESTS: &str = "_manifests";

impl Storage {
    /// Opens (creating) the registry under `root`.
    pub fn open(root: &Path) -> Result<Storage, RegistryError> {
        let storage = Storage { root: root.to_owned() };
        for dir in [storage.blob_dir(), storage.root.join("repositories"), storage.uploads_dir(), storage.tmp_dir()] {
            std::fs::create_dir_all(&dir).map_err(RegistryError::io("creating", &dir))?;
        }
        Ok(storage)
    }

    /// Where blobs live.
    pub fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    /// Where a blob lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    /// Where upload sessions live.
    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// Where files wait before they are renamed into place.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn repo_dir(&self, repo: &RepoName) -> PathBuf {
        self.root.join("repositories").join(repo.as_str())
    }

    fn layer_link(&self, repo: &RepoName, digest: &Digest) -> PathBuf {
        self.repo_dir(repo).join(LAYERS).join(digest.hex())
    }

    fn revision_link(&self, repo: &RepoName, digest: &Digest) -> PathBuf {
        self.repo_dir(repo).join(MANIFESTS).join("revisions").join(digest.hex())
    }

    fn tag_dir(&self, repo: &RepoName) -> PathBuf {
        self.repo_dir(repo).join(MANIFESTS).join("tags")
    }

    /// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync
    /// of the directory (so the rename itself survives a power cut).
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
        let temp = self.tmp_dir().join(uuid::Uuid::new_v4().to_string());
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()
        };
        write().map_err(RegistryError::io("writing", &temp))?;
        self.rename_into_place(&temp, path)
    }

    /// Moves a finished, fsynced file to `path`.
    pub fn rename_into_place(&self, from: &Path, path: &Path) -> Result<(), RegistryError> {
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(RegistryError::io("creating", dir))?;
        std::fs::rename(from, path).map_err(RegistryError::io("renaming into place", path))?;
        sync_dir(dir)
    }

    /// Whether the blob's content is stored (in any repository).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Stores a verified file as the blob `digest` (it already is the
    /// right content), or drops it if the blob is already there.
    pub fn commit_blob(&self, digest: &Digest, verified: &Path) -> Result<(), RegistryError> {
        let target = self.blob_path(digest);
        if target.is_file() {
            std::fs::remove_file(verified).map_err(RegistryError::io("removing", verified))?;
            // A re-pushed blob counts as new: garbage collection spares
            // young blobs whose manifest may still be on its way.
            touch(&target)
        } else {
            self.rename_into_place(verified, &target)
        }
    }

    /// Stores small content (a manifest) as a blob.
    pub fn write_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), RegistryError> {
        let target = self.blob_path(digest);
        if target.is_file() { touch(&target) } else { self.write_atomic(&target, bytes) }
    }

    /// Reads a whole blob; for manifests and configs, which are small.
    pub fn read_blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, RegistryError> {
        let path = self.blob_path(digest);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RegistryError::io("reading", path)(e)),
        }
    }

    /// Links a stored blob into a repository.
    pub fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), RegistryError> {
        let link = self.layer_link(repo, digest);
        if link.is_file() { Ok(()) } else { self.write_atomic(&link, b"") }
    }

    /// The blob's file if it is linked into `repo` and stored.
    pub fn linked_blob(&self, repo: &RepoName, digest: &Digest) -> Option<PathBuf> {
        let path = self.blob_path(digest);
        (self.layer_link(repo, digest).is_file() && path.is_file()).then_some(path)
    }

    /// Removes a blob's link from a repository; false if it was not linked.
    pub fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, RegistryError> {
        remove_if_present(&self.layer_link(repo, digest))
    }

    /// Links a stored manifest into a repository, remembering its media type.
    pub fn link_manifest(&self, repo: &RepoName, digest: &Digest, media_type: &str) -> Result<(), RegistryError> {
        self.write_atomic(&self.revision_link(repo, digest), media_type.as_bytes())
    }

    /// The media type of a manifest linked into `repo`, if it is.
    pub fn manifest_media_type(&self, repo: &RepoName, digest: &Digest) -> Result<Option<String>, RegistryError> {
        let link = self.revision_link(repo, digest);
        match std::fs::read_to_string(&link) {
            Ok(media_type) => Ok(Some(media_type)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RegistryError::io("reading", link)(e)),
        }
    }

    /// Removes a manifest from a repository, and every tag pointing at it.
    /// False if it was not there.
    pub fn unlink_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, RegistryError> {
        for (tag, target) in self.tags(repo)? {
            if target == *digest {
                self.untag(repo, &tag)?;
            }
        }
        remove_if_present(&self.revision_link(repo, digest))
    }

    /// Every manifest linked into `repo`.
    pub fn manifests(&self, repo: &RepoName) -> Result<Vec<Digest>, RegistryError> {
        let dir = self.repo_dir(repo).join(MANIFESTS).join("revisions");
        Ok(list_dir(&dir)?.into_iter().filter_map(|hex| format!("sha256:{hex}").parse().ok()).collect())
    }

    /// Every blob linked into `repo`.
    pub fn blob_links(&self, repo: &RepoName) -> Result<Vec<Digest>, RegistryError> {
        let dir = self.repo_dir(repo).join(LAYERS);
        Ok(list_dir(&dir)?.into_iter().filter_map(|hex| format!("sha256:{hex}").parse().ok()).collect())
    }

    /// Points a tag at a manifest.
    pub fn tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<(), RegistryError> {
        self.write_atomic(&self.tag_dir(repo).join(tag.as_str()), digest.to_string().as_bytes())
    }

    /// The manifest a tag points at.
    pub fn tag_target(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, RegistryError> {
        let path = self.tag_dir(repo).join(tag.as_str());
        match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map(Some).map_err(RegistryError::from),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RegistryError::io("reading", path)(e)),
        }
    }

    /// Removes a tag; false if it did not exist.
    pub fn untag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, RegistryError> {
        remove_if_present(&self.tag_dir(repo).join(tag.as_str()))
    }

    /// Every tag of `repo` with its manifest, in lexical order.
    pub fn tags(&self, repo: &RepoName) -> Result<Vec<(Tag, Digest)>, RegistryError> {
        let mut tags = Vec::new();
        for name in list_dir(&self.tag_dir(repo))? {
            let Ok(tag) = name.parse::<Tag>() else { continue };
            if let Some(digest) = self.tag_target(repo, &tag)? {
                tags.push((tag, digest));
            }
        }
        Ok(tags)
    }

    /// Whether `repo` has ever held a manifest or a blob.
    pub fn has_repository(&self, repo: &RepoName) -> bool {
        self.repo_dir(repo).is_dir()
    }

    /// Every repository, in lexical order.
    pub fn repositories(&self) -> Result<Vec<RepoName>, RegistryError> {
        let mut found = BTreeSet::new();
        let mut pending = vec![String::new()];
        while let Some(prefix) = pending.pop() {
            let dir = self.root.join("repositories").join(&prefix);
            for child in list_dir(&dir)? {
                if child.starts_with('_') {
                    continue;
                }
                let name = if prefix.is_empty() { child } else { format!("{prefix}/{child}") };
                let path = self.root.join("repositories").join(&name);
                if (path.join(MANIFESTS).is_dir() || path.join(LAYERS).is_dir())
                    && let Ok(repo) = name.parse()
                {
                    found.insert(repo);
                }
                if path.is_dir() {
                    pending.push(name);
                }
            }
        }
        Ok(found.into_iter().collect())
    }
}

/// Names in a directory (none if it does not exist), sorted.
pub fn list_dir(dir: &Path) -> Result<Vec<String>, RegistryError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RegistryError::io("listing", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(RegistryError::io("listing", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Deletes a file; false if it was already gone.
pub fn remove_if_present(path: &Path) -> Result<bool, RegistryError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(RegistryError::io("removing", path)(e)),
    }
}

/// When a file last changed (its age decides garbage collection).
pub fn modified(path: &Path) -> Result<SystemTime, RegistryError> {
    std::fs::metadata(path).and_then(|m| m.modified()).map_err(RegistryError::io("reading the time of", path))
}

fn touch(path: &Path) -> Result<(), RegistryError> {
    let file = std::fs::File::options().append(true).open(path).map_err(RegistryError::io("opening", path))?;
    file.set_modified(SystemTime::now()).map_err(RegistryError::io("touching", path))
}

fn sync_dir(dir: &Path) -> Result<(), RegistryError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(RegistryError::io("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> RepoName {
        name.parse().unwrap()
    }

    #[test]
    fn tags_links_and_repositories_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let digest = Digest::of(b"{}");
        storage.write_blob(&digest, b"{}").unwrap();
        assert_eq!(storage.read_blob(&digest).unwrap().as_deref(), Some(&b"{}"[..]));

        let nested = repo("library/busybox");
        storage.link_manifest(&nested, &digest, "application/x").unwrap();
        storage.tag(&nested, &"v1".parse().unwrap(), &digest).unwrap();
        storage.tag(&nested, &"v2".parse().unwrap(), &digest).unwrap();
        storage.link_blob(&repo("library"), &digest).unwrap();

        assert_eq!(storage.repositories().unwrap(), vec![repo("library"), nested.clone()]);
        assert_eq!(storage.tags(&nested).unwrap().len(), 2);
        assert_eq!(storage.manifest_media_type(&nested, &digest).unwrap().as_deref(), Some("application/x"));
        assert!(storage.linked_blob(&repo("library"), &digest).is_some());
        assert!(storage.linked_blob(&nested, &digest).is_none(), "links are per repository");

        assert!(storage.unlink_manifest(&nested, &digest).unwrap());
        assert!(storage.tags(&nested).unwrap().is_empty(), "deleting a manifest removes its tags");
        assert!(!storage.unlink_manifest(&nested, &digest).unwrap());
        assert!(list_dir(&storage.tmp_dir()).unwrap().is_empty(), "no temp file is left behind");
    }

    #[test]
    fn committing_a_blob_twice_keeps_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let digest = Digest::of(b"layer");
        for _ in 0..2 {
            let upload = dir.path().join("upload");
            std::fs::write(&upload, b"layer").unwrap();
            storage.commit_blob(&digest, &upload).unwrap();
            assert!(!upload.exists());
        }
        assert_eq!(list_dir(&storage.blob_dir()).unwrap(), vec![digest.hex()]);
    }
}
