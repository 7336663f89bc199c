//! The per-node MAC that ends every node frame: HMAC-SHA256 over every byte
//! before it, keyed with the node's enrolment key and cut to its first
//! [`MAC_LEN`] bytes. Nodes compute it with [`node_mac`] (the closure of
//! [`encode_node_frame`](crate::encode_node_frame)); the controller checks
//! it with [`verify_node_mac`] over [`Decoded::authenticated`](crate::Decoded).
//!
//! Feature `mac`. No allocator needed.

use hmac::{KeyInit, Mac};

use crate::frame::MAC_LEN;
use crate::msg::MacTag;

/// Length of a node's MAC key, in bytes.
pub const MAC_KEY_LEN: usize = 32;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The per-node MAC of `bytes`: HMAC-SHA256 with `key`, cut to
/// [`MAC_LEN`] bytes.
pub fn node_mac(key: &[u8; MAC_KEY_LEN], bytes: &[u8]) -> MacTag {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(bytes);
    let full = mac.finalize().into_bytes();
    let mut tag = MacTag::default();
    tag.0.copy_from_slice(&full[..MAC_LEN]);
    tag
}

/// Whether `tag` is the MAC of `bytes` under `key`, checked in constant time.
pub fn verify_node_mac(key: &[u8; MAC_KEY_LEN], bytes: &[u8], tag: &MacTag) -> bool {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(bytes);
    mac.verify_truncated_left(&tag.0).is_ok()
}
