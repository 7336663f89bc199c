//! Encryption at rest for Secrets: XChaCha20-Poly1305 with a random 24-byte
//! nonce per write and a 32-byte key kept in the data directory (mode 0600).

use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

const NONCE_LEN: usize = 24;

/// Seals and opens stored Secret records.
#[derive(Clone)]
pub struct SecretCipher {
    cipher: XChaCha20Poly1305,
}

impl SecretCipher {
    /// Reads the key file, creating it with a fresh random key (owner-only)
    /// when it does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let key = match std::fs::read(path) {
            Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                anyhow::anyhow!("{} must hold exactly 32 bytes (it has {})", path.display(), bytes.len())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = random_bytes::<32>()?;
                write_private(path, &key).with_context(|| format!("writing {}", path.display()))?;
                key
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self::from_key(key))
    }

    /// A cipher with a given key (tests).
    pub fn from_key(key: [u8; 32]) -> Self {
        SecretCipher { cipher: XChaCha20Poly1305::new(&Key::from(key)) }
    }

    /// nonce || ciphertext+tag.
    pub fn seal(&self, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let nonce = random_bytes::<NONCE_LEN>()?;
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), plaintext)
            .map_err(|_| anyhow::anyhow!("encrypting a secret failed"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext, or an error if the record was altered or the key is wrong.
    pub fn open(&self, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(sealed.len() >= NONCE_LEN, "sealed record is too short");
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce)?;
        self.cipher
            .decrypt(&XNonce::from(nonce), body)
            .map_err(|_| anyhow::anyhow!("a stored secret does not decrypt: wrong key file or altered record"))
    }
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(bytes)
}

/// Writes a file only its owner can read (mode 0600), atomically: a temp
/// file, fsynced, renamed over the old one, so a crash never leaves half a
/// key.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let cipher = SecretCipher::from_key([7; 32]);
        let sealed = cipher.seal(b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(cipher.open(&sealed).unwrap(), b"hunter2");
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(cipher.open(&bad).is_err());
        assert!(SecretCipher::from_key([8; 32]).open(&sealed).is_err());
    }

    #[test]
    fn key_file_is_created_owner_only_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let sealed = SecretCipher::load_or_create(&path).unwrap().seal(b"x").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(SecretCipher::load_or_create(&path).unwrap().open(&sealed).unwrap(), b"x");
    }
}
