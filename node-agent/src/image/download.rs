//! Resumable, verified blob downloads.
//!
//! A blob is written to `blobs/partial/<hex>` and hashed as it arrives. A
//! cut connection leaves the partial file; the next attempt asks for the
//! rest with `Range: bytes=<length>-` (a registry that ignores Range sends
//! everything again, and the prefix already held is read and dropped).
//! Only a file of the descriptor's size whose sha256 is the digest is moved
//! to `blobs/sha256/<hex>`; a mismatch deletes the partial file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest as _;

use super::error::PullError;
use super::oci::Sha256;
use super::reference::Reference;
use super::registry::Registry;
use super::store::Store;

/// Consecutive attempts that receive nothing before a download gives up
/// (the partial file stays for the next pull).
const ATTEMPTS_WITHOUT_PROGRESS: u32 = 3;

/// What to download.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// Where from.
    pub reference: &'a Reference,
    /// `layer`, `config`: for messages.
    pub what: &'static str,
    /// Its digest.
    pub digest: Sha256,
    /// Its size, from the descriptor.
    pub size: u64,
}

/// Progress of one blob: bytes held so far, and bytes that just came off
/// the network (including any prefix a registry resent).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Downloads a blob into the store (or finds it there) and returns the
/// path of the verified file.
pub fn fetch(registry: &Registry, store: &Store, wanted: Wanted, progress: Progress) -> Result<PathBuf, PullError> {
    let done = store.blob(&wanted.digest);
    if done.is_file() {
        progress(wanted.size, 0);
        return Ok(done);
    }
    let partial = store.partial(&wanted.digest);
    if let Some(dir) = partial.parent() {
        std::fs::create_dir_all(dir).map_err(|e| PullError::io(dir, "creating", e))?;
    }
    if let Ok(held) = std::fs::metadata(&partial).map(|m| m.len())
        && held > 0
        && held <= wanted.size
    {
        // A pull cut short earlier (a lost link, the agent killed).
        tracing::info!(blob = %wanted.digest, have = held, size = wanted.size, "resuming a blob download");
    }
    let mut failures = 0;
    loop {
        let mut file = std::fs::File::options()
            .create(true)
            .append(true)
            .read(true)
            .open(&partial)
            .map_err(|e| PullError::io(&partial, "opening", e))?;
        let mut have = file.metadata().map_err(|e| PullError::io(&partial, "reading", e))?.len();
        if have > wanted.size {
            file.set_len(0).map_err(|e| PullError::io(&partial, "truncating", e))?;
            have = 0;
        }
        let mut hasher = hash_prefix(&partial, have)?;
        progress(have, 0);
        let before = have;
        let outcome = if have < wanted.size {
            receive(registry, wanted, &partial, &mut file, &mut hasher, &mut have, progress)
        } else {
            Ok(())
        };
        match outcome {
            Ok(()) if have == wanted.size => {
                let actual = Sha256(hasher.finalize().into());
                if actual != wanted.digest {
                    let _ = std::fs::remove_file(&partial);
                    return Err(PullError::DigestMismatch { what: wanted.what, expected: wanted.digest, actual });
                }
                file.sync_all().map_err(|e| PullError::io(&partial, "syncing", e))?;
                if let Some(dir) = done.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| PullError::io(dir, "creating", e))?;
                }
                std::fs::rename(&partial, &done).map_err(|e| PullError::io(&done, "moving a blob to", e))?;
                return Ok(done);
            }
            Err(e @ (PullError::DigestMismatch { .. } | PullError::DiskFull { .. } | PullError::Io { .. })) => {
                return Err(e);
            }
            // Cut off, timed out or an error answer: go again from what we hold.
            outcome => {
                let reason = match outcome {
                    Err(e) => e.to_string(),
                    Ok(()) => "the connection ended early".to_owned(),
                };
                failures = if have > before { 1 } else { failures + 1 };
                tracing::info!(
                    blob = %wanted.digest, have, size = wanted.size, error = %reason,
                    "blob transfer interrupted; resuming"
                );
                if failures >= ATTEMPTS_WITHOUT_PROGRESS {
                    return Err(PullError::Truncated {
                        what: wanted.what,
                        digest: wanted.digest,
                        have,
                        size: wanted.size,
                        reason,
                    });
                }
                std::thread::sleep(Duration::from_millis(200 * u64::from(failures)));
            }
        }
    }
}

/// A hasher fed with the first `length` bytes already held.
fn hash_prefix(path: &Path, length: u64) -> Result<sha2::Sha256, PullError> {
    let mut hasher = sha2::Sha256::new();
    if length > 0 {
        let mut file = std::fs::File::open(path).map_err(|e| PullError::io(path, "reading", e))?.take(length);
        let mut buffer = vec![0; 64 * 1024];
        loop {
            match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buffer[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PullError::io(path, "reading", e)),
            }
        }
    }
    Ok(hasher)
}

/// One request: appends what arrives to `file` until the blob is complete
/// or the transfer fails. `have` is kept current so that the caller knows
/// how far it got.
fn receive(
    registry: &Registry,
    wanted: Wanted,
    path: &Path,
    file: &mut std::fs::File,
    hasher: &mut sha2::Sha256,
    have: &mut u64,
    progress: Progress,
) -> Result<(), PullError> {
    let body = registry.blob(wanted.reference, &wanted.digest, *have)?;
    let mut reader = body.reader;
    // Bytes of the body to drop: a registry that ignored Range resends them.
    let mut skip = *have - body.start;
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(PullError::Registry {
                    registry: wanted.reference.registry.clone(),
                    reason: format!("blob {}: {e}", wanted.digest.short()),
                });
            }
        };
        let dropped = (n as u64).min(skip) as usize;
        skip -= dropped as u64;
        let fresh = &buffer[dropped..n];
        if *have + fresh.len() as u64 > wanted.size {
            // More than the descriptor says: whatever this is, it is not the blob.
            let _ = std::fs::remove_file(path);
            let mut extra = hasher.clone();
            extra.update(fresh);
            return Err(PullError::DigestMismatch {
                what: wanted.what,
                expected: wanted.digest,
                actual: Sha256(extra.finalize().into()),
            });
        }
        file.write_all(fresh).map_err(|e| PullError::io(path, "writing", e))?;
        hasher.update(fresh);
        *have += fresh.len() as u64;
        progress(*have, n as u64);
        if *have == wanted.size {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::image::registry::Timeouts;

    /// A registry that ignores Range: every request gets the whole blob.
    fn ignoring_range(blob: &'static [u8]) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", blob.len());
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(blob).unwrap();
            vec![String::from_utf8(request).unwrap()]
        });
        (address, server)
    }

    #[test]
    fn a_registry_ignoring_range_resends_the_prefix_and_it_is_dropped() {
        const BLOB: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let digest = Sha256::of(BLOB);
        std::fs::create_dir_all(store.partial_dir()).unwrap();
        std::fs::write(store.partial(&digest), &BLOB[..10]).unwrap();
        let (address, server) = ignoring_range(BLOB);
        let reference = Reference { registry: address, repository: "web".into() };
        let registry = Registry::new(Timeouts::default());
        let wanted = Wanted { reference: &reference, what: "layer", digest, size: BLOB.len() as u64 };
        let (mut held, mut received) = (0, 0);
        let path = fetch(&registry, &store, wanted, &mut |have, got| {
            held = have;
            received += got;
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), BLOB);
        assert_eq!((held, received), (BLOB.len() as u64, BLOB.len() as u64), "the prefix came again");
        assert!(!store.partial(&digest).exists());
        let requests = server.join().unwrap();
        assert!(requests[0].contains("Range: bytes=10-\r\n"), "{}", requests[0]);
    }
}
