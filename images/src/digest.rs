//! SHA-256 content addresses and the canonical JSON that keeps them stable.
//!
//! Everything in a layout is named by the SHA-256 of its bytes, so the same
//! image must serialise to the same bytes every time. oci-spec keeps labels,
//! annotations and exposed ports in `HashMap`s, whose iteration order is
//! random per process: [`canonical_json`] sorts every object's keys first.

use std::io::{self, Write};

use oci_spec::image::{Digest, Sha256Digest};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// The `sha256:<hex>` digest of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> Digest {
    digest_from_hasher(Sha256::new_with_prefix(bytes))
}

/// Turns a finished hasher into an OCI digest.
fn digest_from_hasher(hasher: Sha256) -> Digest {
    let hex = hex::encode(hasher.finalize());
    // A SHA-256 output is always 64 lowercase hex characters, which is
    // exactly what `Sha256Digest` accepts.
    let sha = hex.parse::<Sha256Digest>().expect("hex-encoded SHA-256 output is a valid sha256 digest");
    sha.into()
}

/// Serialises `value` as compact JSON with the keys of every object sorted,
/// so equal values always give equal bytes (and equal digests).
pub fn canonical_json<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut tree = serde_json::to_value(value)?;
    tree.sort_all_objects();
    serde_json::to_vec(&tree)
}

/// A writer that hashes and counts every byte on its way to `inner`.
///
/// Layers are hashed twice while they stream out (the tar for the
/// config's `diff_ids`, the gzip for the blob name): two of these, one on
/// each side of the compressor, do that in one pass.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), len: 0 }
    }

    /// Returns `inner`, the digest of everything written and its length.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, digest_from_hasher(self.hasher), self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn digest_of_known_input() {
        // `printf abc | sha256sum`
        assert_eq!(
            sha256_of(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hashing_writer_matches_one_shot_digest() {
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(b"a").unwrap();
        writer.write_all(b"bc").unwrap();
        let (bytes, digest, len) = writer.finish();
        assert_eq!(bytes, b"abc");
        assert_eq!(len, 3);
        assert_eq!(digest, sha256_of(b"abc"));
    }

    #[test]
    fn canonical_json_sorts_hash_map_keys() {
        let map: HashMap<String, u32> = (0..64).map(|i| (format!("k{i:02}"), i)).collect();
        let json = String::from_utf8(canonical_json(&map).unwrap()).unwrap();
        let keys: Vec<&str> = json.match_indices("\"k").map(|(at, _)| &json[at + 1..at + 4]).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys.len(), 64);
        assert_eq!(keys, sorted);
    }
}
