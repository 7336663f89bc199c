//! Blob upload sessions: `POST` opens one, `PATCH` appends chunks, `PUT
//! ?digest=` checks the digest and hands the bytes over to storage.
//!
//! A session is a directory `uploads/<uuid>/` holding `repository` (which
//! repository it belongs to) and `data` (the bytes so far). The session's
//! length is the length of `data`, so a session survives a failed request
//! (the client asks `GET` for the offset and resumes) and a server restart.
//!
//! The SHA-256 is computed while the bytes are written: each session keeps
//! its hasher in memory next to the count of bytes hashed. After a restart,
//! or a write that failed half way, the hasher is behind the file and
//! catches up by reading the missing tail once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use uuid::Uuid;

use super::error::RegistryError;
use super::names::{Digest, RepoName};
use super::storage::{self, list_dir};

/// The open upload sessions of one registry.
#[derive(Debug)]
pub struct Uploads {
    dir: PathBuf,
    /// Hash state of sessions touched since the server started. The async
    /// mutex also serialises requests on one session.
    progress: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<Progress>>>>,
    /// The reserve uploads leave free, when one is kept.
    space: Option<crate::space::SpaceGuard>,
}

/// How far a session's bytes are hashed.
#[derive(Debug, Default)]
struct Progress {
    hashed: u64,
    hasher: Sha256,
}

/// A finished upload whose bytes hash to the digest the client named.
#[derive(Debug)]
pub struct VerifiedUpload {
    /// The session.
    pub id: Uuid,
    /// The verified, fsynced bytes, ready to be renamed into the blob store.
    pub path: PathBuf,
}

/// How much of a refused upload is still read (and dropped) so that its
/// client sees the answer.
const DRAIN_MAX: u64 = 1 << 30;

/// Bytes written between two looks at the volume's free space.
const SPACE_CHECK_EVERY: u64 = 4 << 20;

/// Buffer for reading a session back when its hasher must catch up.
const CATCH_UP_BUFFER: usize = 256 << 10;

impl Uploads {
    /// Sessions under `dir` (which must exist).
    pub fn new(dir: PathBuf) -> Uploads {
        Uploads { dir, progress: Mutex::default(), space: None }
    }

    /// Uploads refused (and discarded) when they would cross `space`'s reserve.
    pub fn set_space_guard(&mut self, space: crate::space::SpaceGuard) {
        self.space = Some(space);
    }

    fn session_dir(&self, id: Uuid) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Opens a new, empty session for `repo`.
    pub async fn start(&self, repo: &RepoName) -> Result<Uuid, RegistryError> {
        let id = Uuid::new_v4();
        let dir = self.session_dir(id);
        tokio::fs::create_dir(&dir).await.map_err(RegistryError::io("creating", &dir))?;
        let owner = dir.join("repository");
        tokio::fs::write(&owner, repo.as_str()).await.map_err(RegistryError::io("writing", &owner))?;
        let data = dir.join("data");
        tokio::fs::File::create(&data).await.map_err(RegistryError::io("creating", &data))?;
        Ok(id)
    }

    /// The data file of a session of `repo`, or `UploadUnknown`.
    async fn data_path(&self, repo: &RepoName, id: Uuid) -> Result<PathBuf, RegistryError> {
        let dir = self.session_dir(id);
        // A session of another repository is unknown here, not forbidden:
        // its id says nothing about whether it exists.
        match tokio::fs::read_to_string(dir.join("repository")).await {
            Ok(owner) if owner == repo.as_str() => Ok(dir.join("data")),
            _ => Err(RegistryError::UploadUnknown(id.to_string())),
        }
    }

    fn progress_of(&self, id: Uuid) -> Arc<tokio::sync::Mutex<Progress>> {
        let mut open = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        open.entry(id).or_default().clone()
    }

    fn forget(&self, id: Uuid) {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    /// How many bytes the session holds.
    pub async fn size(&self, repo: &RepoName, id: Uuid) -> Result<u64, RegistryError> {
        let data = self.data_path(repo, id).await?;
        let metadata = tokio::fs::metadata(&data).await;
        metadata.map(|m| m.len()).map_err(|_| RegistryError::UploadUnknown(id.to_string()))
    }

    /// Appends a chunk. `start` is where the client says it begins (from
    /// `Content-Range`); it must be the session's current length. Returns
    /// the new length.
    pub async fn append<S, E>(
        &self,
        repo: &RepoName,
        id: Uuid,
        start: Option<u64>,
        chunk: S,
    ) -> Result<u64, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let data = self.data_path(repo, id).await?;
        let progress = self.progress_of(id);
        let mut progress = progress.lock().await;
        let appended = append_locked(&mut progress, &data, id, start, chunk, self.space.as_ref()).await;
        self.discard_if_no_space(id, appended).await
    }

    /// A full disk ends the session at once: its partial data is removed,
    /// not left for a day.
    async fn discard_if_no_space<T>(&self, id: Uuid, outcome: Result<T, RegistryError>) -> Result<T, RegistryError> {
        if let Err(RegistryError::NoSpace(why)) = &outcome {
            tracing::warn!(upload = %id, reason = why, "upload refused for want of space; discarded");
            self.forget(id);
            self.discard(id).await;
        }
        outcome
    }

    /// Appends the last chunk (possibly empty), checks the digest and seals
    /// the session. On a mismatch the session is deleted: nothing is stored.
    pub async fn finish<S, E>(
        &self,
        repo: &RepoName,
        id: Uuid,
        expected: Digest,
        last_chunk: S,
    ) -> Result<VerifiedUpload, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let data = self.data_path(repo, id).await?;
        let progress = self.progress_of(id);
        let mut progress = progress.lock().await;
        let appended = append_locked(&mut progress, &data, id, None, last_chunk, self.space.as_ref()).await;
        self.discard_if_no_space(id, appended).await?;
        let actual = Digest::from_hasher(progress.hasher.clone());
        if actual != expected {
            self.forget(id);
            self.discard(id).await;
            return Err(RegistryError::DigestInvalid { expected, actual });
        }
        let file = tokio::fs::File::open(&data).await.map_err(RegistryError::io("opening", &data))?;
        file.sync_all().await.map_err(RegistryError::io("syncing", &data))?;
        // Renamed under the session lock, so no later PATCH can add bytes
        // to content that is already verified.
        let sealed = data.with_file_name("verified");
        tokio::fs::rename(&data, &sealed).await.map_err(RegistryError::io("renaming", &data))?;
        self.forget(id);
        Ok(VerifiedUpload { id, path: sealed })
    }

    /// Deletes a session and whatever it holds.
    pub async fn cancel(&self, repo: &RepoName, id: Uuid) -> Result<(), RegistryError> {
        self.data_path(repo, id).await?;
        // Wait for a request that is still writing to this session.
        let progress = self.progress_of(id);
        let _writing = progress.lock().await;
        self.forget(id);
        self.discard(id).await;
        Ok(())
    }

    /// Removes a session's directory (after its blob is stored, or when it
    /// is cancelled). Failures are only logged: garbage collection removes
    /// what is left.
    pub async fn discard(&self, id: Uuid) {
        let dir = self.session_dir(id);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove an upload session");
        }
    }

    /// Deletes sessions that have not changed for `max_idle`. Returns how
    /// many.
    pub fn remove_stale(&self, max_idle: Duration) -> Result<usize, RegistryError> {
        let now = SystemTime::now();
        let mut removed = 0;
        for name in list_dir(&self.dir)? {
            let dir = self.dir.join(&name);
            let data = dir.join("data");
            let last_change = storage::modified(&data).or_else(|_| storage::modified(&dir))?;
            if now.duration_since(last_change).unwrap_or_default() < max_idle {
                continue;
            }
            std::fs::remove_dir_all(&dir).map_err(RegistryError::io("removing", &dir))?;
            if let Ok(id) = name.parse() {
                self.forget(id);
            }
            removed += 1;
        }
        Ok(removed)
    }
}

/// Appends `chunk` to `data` while the session's lock is held.
async fn append_locked<S, E>(
    progress: &mut Progress,
    data: &Path,
    id: Uuid,
    start: Option<u64>,
    mut chunk: S,
    space: Option<&crate::space::SpaceGuard>,
) -> Result<u64, RegistryError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let open = tokio::fs::OpenOptions::new().append(true).open(data).await;
    // The data file is gone when the session was finished or cancelled
    // while this request waited for the lock.
    let mut file = open.map_err(|_| RegistryError::UploadUnknown(id.to_string()))?;
    let mut size = file.metadata().await.map_err(RegistryError::io("reading the size of", data))?.len();
    if let Some(start) = start.filter(|start| *start != size) {
        return Err(RegistryError::UploadOutOfOrder { expected: size, got: start });
    }
    catch_up(progress, data, size).await?;
    let mut outcome = Ok(());
    // The volume is looked at every few MiB, not every chunk.
    let (mut unchecked, mut looked) = (0u64, false);
    while let Some(next) = chunk.next().await {
        let bytes = match next {
            Ok(bytes) => bytes,
            Err(e) => {
                outcome = Err(RegistryError::Body(e.to_string()));
                break;
            }
        };
        unchecked += bytes.len() as u64;
        // The first chunk, then every few MiB.
        let check = unchecked >= SPACE_CHECK_EVERY || !looked;
        looked |= check;
        if let Some(Err(no_space)) = space.filter(|_| check).map(|space| space.check(std::mem::take(&mut unchecked))) {
            outcome = Err(RegistryError::NoSpace(no_space.to_string()));
            // Read the rest (up to a bound) so the client gets the 507, not
            // a connection reset in the middle of its upload.
            let mut drained = 0u64;
            while drained < DRAIN_MAX
                && let Some(Ok(more)) = chunk.next().await
            {
                drained += more.len() as u64;
            }
            break;
        }
        if let Err(e) = file.write_all(&bytes).await {
            outcome = Err(write_error(e, data));
            break;
        }
        progress.hasher.update(&bytes);
        progress.hashed += bytes.len() as u64;
        size += bytes.len() as u64;
    }
    // tokio writes in the background: flush so the bytes are in the file
    // before anyone reads its length, also when the body broke off (what
    // arrived is kept, and the client may resume from there).
    if let Err(e) = file.flush().await {
        return Err(write_error(e, data));
    }
    outcome.map(|()| size)
}

/// A failed write to a session: a full volume is told apart (507).
fn write_error(e: std::io::Error, data: &Path) -> RegistryError {
    match e.raw_os_error() {
        Some(28) => RegistryError::NoSpace(format!("the data volume is full ({e})")),
        _ => RegistryError::io("writing", data)(e),
    }
}

/// Hashes the part of the file the hasher has not seen (after a restart, or
/// a write that failed half way).
async fn catch_up(progress: &mut Progress, data: &Path, size: u64) -> Result<(), RegistryError> {
    if progress.hashed == size {
        return Ok(());
    }
    if progress.hashed > size {
        *progress = Progress::default();
    }
    let mut file = tokio::fs::File::open(data).await.map_err(RegistryError::io("opening", data))?;
    file.seek(std::io::SeekFrom::Start(progress.hashed)).await.map_err(RegistryError::io("reading", data))?;
    let mut tail = file.take(size - progress.hashed);
    let mut buffer = vec![0; CATCH_UP_BUFFER];
    loop {
        let n = tail.read(&mut buffer).await.map_err(RegistryError::io("reading", data))?;
        if n == 0 {
            break;
        }
        progress.hasher.update(&buffer[..n]);
        progress.hashed += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures_util::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    fn repo() -> RepoName {
        "test/upload".parse().unwrap()
    }

    #[tokio::test]
    async fn chunks_in_order_give_the_digest_of_their_concatenation() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::new(dir.path().to_owned());
        let id = uploads.start(&repo()).await.unwrap();
        assert_eq!(uploads.append(&repo(), id, Some(0), chunks(&[b"hello ", b"wor"])).await.unwrap(), 9);
        let out_of_order = uploads.append(&repo(), id, Some(3), chunks(&[b"x"])).await;
        assert!(matches!(out_of_order, Err(RegistryError::UploadOutOfOrder { expected: 9, got: 3 })));
        let verified = uploads.finish(&repo(), id, Digest::of(b"hello world"), chunks(&[b"ld"])).await.unwrap();
        assert_eq!(std::fs::read(&verified.path).unwrap(), b"hello world");
        assert!(uploads.size(&repo(), id).await.is_err(), "a finished session takes no more chunks");
    }

    #[tokio::test]
    async fn a_wrong_digest_deletes_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::new(dir.path().to_owned());
        let id = uploads.start(&repo()).await.unwrap();
        let result = uploads.finish(&repo(), id, Digest::of(b"other"), chunks(&[b"data"])).await;
        assert!(matches!(result, Err(RegistryError::DigestInvalid { .. })));
        assert!(list_dir(dir.path()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_session_resumes_after_a_restart_and_belongs_to_its_repository() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let uploads = Uploads::new(dir.path().to_owned());
            let id = uploads.start(&repo()).await.unwrap();
            uploads.append(&repo(), id, None, chunks(&[b"first "])).await.unwrap();
            id
        };
        // A new `Uploads` has no hasher for the session: it must re-read the file.
        let uploads = Uploads::new(dir.path().to_owned());
        let other: RepoName = "someone/else".parse().unwrap();
        assert!(matches!(uploads.size(&other, id).await, Err(RegistryError::UploadUnknown(_))));
        assert_eq!(uploads.size(&repo(), id).await.unwrap(), 6);
        let verified = uploads.finish(&repo(), id, Digest::of(b"first second"), chunks(&[b"second"])).await.unwrap();
        assert_eq!(std::fs::read(verified.path).unwrap(), b"first second");
    }

    #[tokio::test]
    async fn stale_sessions_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::new(dir.path().to_owned());
        uploads.start(&repo()).await.unwrap();
        assert_eq!(uploads.remove_stale(Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(uploads.remove_stale(Duration::ZERO).unwrap(), 1);
        assert!(list_dir(dir.path()).unwrap().is_empty());
    }
}
