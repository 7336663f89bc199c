//! Sealed Secrets: what a Secret puts in a desired document is readable by
//! the one node it is for, not by the broker nor by any other node.
//!
//! - A node's **seal key** is HMAC-SHA256 of a fixed label under its
//!   enrolment MAC key ([`node_seal_key`]): both ends hold the MAC key, no
//!   key travels, and the MAC and the seal never share a key.
//! - A **sealed value** is `nonce (12) || ChaCha20-Poly1305 ciphertext and
//!   tag (16)` ([`SEAL_OVERHEAD`] bytes more than the value). The nonce is
//!   the first 12 bytes of HMAC-SHA256(nonce key, aad length || aad ||
//!   value), the nonce key being HMAC-SHA256(key, a fixed label): the same value under the same key and context seals to the same bytes,
//!   so a document rebuilt unchanged is byte-identical and not resent. It
//!   tells only that two sealed values are equal, never what they hold.
//! - Env vars taken from Secrets are sealed with the node's seal key, with
//!   the pod id and container name as associated data
//!   ([`crate::pod::Container::sealed_env`]).
//! - A Secret's files are sealed once per version of the Secret under a
//!   random-looking **data key** the controller derives, with
//!   `{object name}/{file name}` as associated data, so one blob serves
//!   every node; each node's document carries that data key sealed with
//!   the node's seal key, the blob's digest as associated data
//!   ([`crate::pod::ConfigRef::sealed_key`]).
//!
//! Feature `seal` (needs an allocator).

use alloc::vec::Vec;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::Mac;

/// Bytes a sealed value has beyond the value: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const _: () = assert!(crate::pod::SEALED_KEY_LEN == SEAL_OVERHEAD + 32, "a sealed data key");

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The label a node's seal key is derived with.
const SEAL_KEY_LABEL: &[u8] = b"flotilla/v1 seal key";

/// The label the key that makes nonces is derived with, from the sealing key.
const NONCE_KEY_LABEL: &[u8] = b"flotilla/v1 seal nonce";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a sealed value does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Shorter than a nonce and a tag.
    TooShort,
    /// Altered, sealed for another node or context, or under another key.
    Forged,
}

impl core::fmt::Display for OpenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            OpenError::TooShort => "a sealed value is too short",
            OpenError::Forged => "a sealed value does not open with this node's key (altered, or sealed for another)",
        })
    }
}

impl core::error::Error for OpenError {}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The seal key of the node whose enrolment MAC key is `mac_key`.
pub fn node_seal_key(mac_key: &[u8; 32]) -> [u8; 32] {
    hmac(mac_key, &[SEAL_KEY_LABEL])
}

/// A key derived from `root` for `parts` (HMAC-SHA256 over them, each
/// length-prefixed): the controller's data key of one Secret version.
pub fn derive_key(root: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(root).expect("HMAC takes any key length");
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// `value` sealed under `key` in the context `aad` (see the module doc).
pub fn seal(key: &[u8; 32], aad: &[u8], value: &[u8]) -> Vec<u8> {
    // The nonce comes from a key of its own, not the cipher's.
    let nonce_key = hmac(key, &[NONCE_KEY_LABEL]);
    let nonce_source = hmac(&nonce_key, &[&(aad.len() as u64).to_be_bytes(), aad, value]);
    let nonce = Nonce::from(<[u8; NONCE_LEN]>::try_from(&nonce_source[..NONCE_LEN]).expect("12 of 32 bytes"));
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    // Encryption fails only past ChaCha20's 256 GiB per nonce.
    let sealed = cipher.encrypt(&nonce, Payload { msg: value, aad }).expect("a value under 256 GiB");
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce_source[..NONCE_LEN]);
    out.extend_from_slice(&sealed);
    out
}

/// The value [`seal`] sealed under `key` in the context `aad`.
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(OpenError::TooShort);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::from(<[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| OpenError::TooShort)?);
    ChaCha20Poly1305::new(&Key::from(*key)).decrypt(&nonce, Payload { msg: body, aad }).map_err(|_| OpenError::Forged)
}

/// The context a sealed env var of container `container` in pod `pod` is
/// sealed in.
pub fn env_context(pod: &str, container: &str) -> Vec<u8> {
    context(b"env:", pod, container)
}

/// The context a Secret's file `file` of object `object` is sealed in.
pub fn file_context(object: &str, file: &str) -> Vec<u8> {
    context(b"file:", object, file)
}

/// The label the key that seals a node's next credentials is derived
/// with, from its current MAC key.
const CREDENTIALS_KEY_LABEL: &[u8] = b"flotilla/v1 credentials";

const _: () = assert!(crate::msg::SEALED_CREDENTIALS_LEN == crate::msg::CREDENTIALS_LEN + SEAL_OVERHEAD);

/// A node's credentials as a [`crate::CredentialGrant`] carries them.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeCredentials {
    /// The key of the node's MACs.
    pub mac_key: [u8; 32],
    /// The broker password's random bytes; the password is their lowercase
    /// hex ([`NodeCredentials::password`]).
    pub password: [u8; 24],
}

impl NodeCredentials {
    /// The broker password: 48 lowercase hex digits.
    pub fn password(&self) -> alloc::string::String {
        use core::fmt::Write;
        let mut text = alloc::string::String::with_capacity(48);
        for byte in self.password {
            let _ = write!(text, "{byte:02x}");
        }
        text
    }
}

impl core::fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NodeCredentials { .. }")
    }
}

/// `next` sealed for node `node` under its current MAC key `current`, as
/// generation `generation` (the key of generation n seals generation n+1,
/// so only the holder of the credentials being replaced opens them).
pub fn seal_credentials(
    current: &[u8; 32],
    node: &str,
    generation: u32,
    next: &NodeCredentials,
) -> crate::Bytes<{ crate::msg::SEALED_CREDENTIALS_LEN }> {
    let mut value = [0u8; crate::msg::CREDENTIALS_LEN];
    value[..32].copy_from_slice(&next.mac_key);
    value[32..].copy_from_slice(&next.password);
    let sealed = seal(&derive_key(current, &[CREDENTIALS_KEY_LABEL]), &credentials_context(node, generation), &value);
    let mut out = crate::Bytes([0; crate::msg::SEALED_CREDENTIALS_LEN]);
    out.0.copy_from_slice(&sealed);
    out
}

/// The credentials [`seal_credentials`] sealed.
pub fn open_credentials(
    current: &[u8; 32],
    node: &str,
    generation: u32,
    sealed: &[u8],
) -> Result<NodeCredentials, OpenError> {
    let value = open(&derive_key(current, &[CREDENTIALS_KEY_LABEL]), &credentials_context(node, generation), sealed)?;
    if value.len() != crate::msg::CREDENTIALS_LEN {
        return Err(OpenError::Forged);
    }
    let mut credentials = NodeCredentials { mac_key: [0; 32], password: [0; 24] };
    credentials.mac_key.copy_from_slice(&value[..32]);
    credentials.password.copy_from_slice(&value[32..]);
    Ok(credentials)
}

fn credentials_context(node: &str, generation: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(node.len() + 16);
    aad.extend_from_slice(b"credentials:");
    aad.extend_from_slice(node.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&generation.to_be_bytes());
    aad
}

/// `tag || first || 0 || second`: neither part can contain a NUL (names).
fn context(tag: &[u8], first: &str, second: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(tag.len() + first.len() + second.len() + 1);
    aad.extend_from_slice(tag);
    aad.extend_from_slice(first.as_bytes());
    aad.push(0);
    aad.extend_from_slice(second.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_context_and_seals_the_same_each_time() {
        let key = node_seal_key(&[7; 32]);
        assert_ne!(key, [7; 32]);
        let sealed = seal(&key, b"env:pod\0app", b"PASSWORD=hunter2");
        assert_eq!(sealed.len(), 16 + SEAL_OVERHEAD);
        assert_eq!(sealed, seal(&key, b"env:pod\0app", b"PASSWORD=hunter2"), "deterministic");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(open(&key, b"env:pod\0app", &sealed).unwrap(), b"PASSWORD=hunter2");
        assert_eq!(open(&node_seal_key(&[8; 32]), b"env:pod\0app", &sealed), Err(OpenError::Forged), "another node");
        assert_eq!(open(&key, b"env:pod\0web", &sealed), Err(OpenError::Forged), "another container");
        let mut altered = sealed.clone();
        altered[20] ^= 1;
        assert_eq!(open(&key, b"env:pod\0app", &altered), Err(OpenError::Forged));
        assert_eq!(open(&key, b"", &sealed[..10]), Err(OpenError::TooShort));
        assert_ne!(seal(&key, b"env:pod\0app", b"PASSWORD=hunter3")[..12], sealed[..12], "a new value, a new nonce");
    }

    #[test]
    fn credentials_open_only_for_their_node_generation_and_current_key() {
        let next = NodeCredentials { mac_key: [3; 32], password: [0xab; 24] };
        let sealed = seal_credentials(&[1; 32], "edge-1", 2, &next);
        assert!(!sealed.0.windows(8).any(|w| w == [3; 8]), "the key is not in clear");
        assert_eq!(open_credentials(&[1; 32], "edge-1", 2, &sealed.0), Ok(next.clone()));
        assert_eq!(next.password(), "ab".repeat(24));
        assert_eq!(open_credentials(&[2; 32], "edge-1", 2, &sealed.0), Err(OpenError::Forged), "another key");
        assert_eq!(open_credentials(&[1; 32], "edge-2", 2, &sealed.0), Err(OpenError::Forged), "another node");
        assert_eq!(open_credentials(&[1; 32], "edge-1", 3, &sealed.0), Err(OpenError::Forged), "a replayed grant");
    }

    #[test]
    fn contexts_do_not_run_into_each_other() {
        assert_ne!(env_context("a", "bc"), env_context("ab", "c"));
        assert_ne!(file_context("a", "bc"), file_context("ab", "c"));
        assert_ne!(derive_key(&[1; 32], &[b"a", b"bc"]), derive_key(&[1; 32], &[b"ab", b"c"]));
    }
}
