//! Who may speak on the control channel: the controller's signing key,
//! one-time join tokens and the credentials each enrolled node received.
//!
//! Kept as small files in the data directory (mode 0600) rather than in the
//! object store: they are secrets the API must never list, and the embedded
//! broker's auth handler reads them on every connection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::store::{random_bytes, write_private};

/// File holding the controller's Ed25519 signing key (32 raw bytes).
pub const CONTROLLER_KEY_FILE: &str = "controller.key";
/// File holding its public key (32 raw bytes), what agents pin.
pub const CONTROLLER_PUBLIC_KEY_FILE: &str = "controller.pub";
/// Enrolled nodes and pending join tokens.
pub const ENROLMENT_FILE: &str = "enrolment.json";
/// The broker user name the controller itself connects as.
pub const CONTROLLER_USER: &str = "flotilla-controller";

/// Length of node message authentication codes on the wire.
pub const MAC_LEN: usize = firmware_proto::frame::MAC_LEN;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The per-node MAC: HMAC-SHA256 over the frame, cut to 16 bytes. Agents
/// compute the same.
pub fn node_mac(key: &[u8; 32], bytes: &[u8]) -> [u8; MAC_LEN] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(bytes);
    let full = mac.finalize().into_bytes();
    let mut out = [0; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

/// Checks a MAC in constant time.
pub fn verify_node_mac(key: &[u8; 32], bytes: &[u8], tag: &[u8]) -> bool {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(bytes);
    mac.verify_truncated_left(tag).is_ok()
}

/// The controller's signing key.
pub struct ControllerKey {
    key: SigningKey,
}

impl ControllerKey {
    /// Loads the key from `dir`, creating it (and the public key file) on
    /// first start.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(CONTROLLER_KEY_FILE);
        let secret: [u8; 32] = match std::fs::read(&path) {
            Ok(bytes) => {
                bytes.try_into().map_err(|_| anyhow::anyhow!("{} must hold exactly 32 bytes", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = random_bytes::<32>()?;
                write_file(&path, &secret)?;
                secret
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let key = SigningKey::from_bytes(&secret);
        let public = dir.join(CONTROLLER_PUBLIC_KEY_FILE);
        std::fs::write(&public, key.verifying_key().as_bytes())
            .with_context(|| format!("writing {}", public.display()))?;
        Ok(ControllerKey { key })
    }

    /// Signs a desired-state frame.
    pub fn sign(&self, bytes: &[u8]) -> firmware_proto::Signature {
        firmware_proto::Bytes(self.key.sign(bytes).to_bytes())
    }

    /// The public key agents pin.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
}

/// What a node received at enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCredential {
    /// Broker password (the user name is the node name).
    pub password: String,
    /// Key of the node's message authentication codes, hex.
    pub mac_key: String,
}

impl NodeCredential {
    /// The MAC key as bytes.
    pub fn mac_key_bytes(&self) -> Option<[u8; 32]> {
        hex::decode(&self.mac_key).ok()?.try_into().ok()
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnrolmentFile {
    /// Broker password of the controller's own connection.
    controller_password: String,
    /// sha256 (hex) of each unused join token -> expiry (unix seconds).
    #[serde(default)]
    join_tokens: BTreeMap<String, u64>,
    /// Node name -> its credentials.
    #[serde(default)]
    nodes: BTreeMap<String, NodeCredential>,
}

/// Why an enrolment was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnrolError {
    /// Unknown, used or expired token.
    #[error("the join token is unknown, already used or expired (create one with `flotilla node token create`)")]
    BadToken,
    /// Bad node name.
    #[error("invalid node name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Writing the file failed.
    #[error("saving the enrolment: {0}")]
    Io(String),
}

/// Join tokens and node credentials, shared by the API, the broker's auth
/// handler and the control channel.
#[derive(Clone)]
pub struct Enrolment {
    path: PathBuf,
    state: Arc<RwLock<EnrolmentFile>>,
}

impl Enrolment {
    /// Loads (or creates) `<dir>/enrolment.json`.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(ENROLMENT_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = EnrolmentFile { controller_password: random_text()?, ..EnrolmentFile::default() };
                write_file(&path, &serde_json::to_vec_pretty(&state)?)?;
                state
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Enrolment { path, state: Arc::new(RwLock::new(state)) })
    }

    /// The controller's own broker password.
    pub fn controller_password(&self) -> String {
        self.read().controller_password.clone()
    }

    /// Creates a one-time join token valid for `ttl`.
    pub fn create_join_token(&self, ttl: Duration) -> anyhow::Result<String> {
        let token = random_text()?;
        let expiry = unix_now() + ttl.as_secs();
        self.update(|state| {
            let now = unix_now();
            state.join_tokens.retain(|_, until| *until > now);
            state.join_tokens.insert(sha256_hex(token.as_bytes()), expiry);
        })
        .map_err(|e| anyhow::anyhow!(e))?;
        Ok(token)
    }

    /// Spends a join token on `node`, returning its fresh credentials. A
    /// node enrolling again gets new credentials (the old ones stop working).
    pub fn enrol(&self, token: &str, node: &str) -> Result<NodeCredential, EnrolError> {
        if let Err(e) = firmware_proto::NodeId::new(node) {
            return Err(EnrolError::BadName { name: node.to_owned(), reason: e.to_string() });
        }
        if node == CONTROLLER_USER {
            return Err(EnrolError::BadName { name: node.to_owned(), reason: "reserved for the controller".into() });
        }
        let credential = NodeCredential {
            password: random_text().map_err(|e| EnrolError::Io(e.to_string()))?,
            mac_key: hex::encode(random_bytes::<32>().map_err(|e| EnrolError::Io(e.to_string()))?),
        };
        let hash = sha256_hex(token.as_bytes());
        let mut refused = false;
        self.update(|state| {
            match state.join_tokens.remove(&hash) {
                Some(until) if until > unix_now() => {
                    state.nodes.insert(node.to_owned(), credential.clone());
                }
                _ => refused = true,
            };
        })?;
        if refused { Err(EnrolError::BadToken) } else { Ok(credential) }
    }

    /// The credentials of an enrolled node.
    pub fn node(&self, node: &str) -> Option<NodeCredential> {
        self.read().nodes.get(node).cloned()
    }

    /// Enrolled nodes and their credentials.
    pub fn nodes(&self) -> BTreeMap<String, NodeCredential> {
        self.read().nodes.clone()
    }

    /// The broker's check: the controller, or an enrolled node with its own
    /// password. The client id must be the user name or start with `name:`
    /// (never a node id), so a node cannot take over another node's session.
    pub fn check_broker_login(&self, client_id: &str, user: &str, password: &str) -> bool {
        let state = self.read();
        let expected = if user == CONTROLLER_USER {
            Some(&state.controller_password)
        } else {
            state.nodes.get(user).map(|c| &c.password)
        };
        let id_ok = client_id == user
            || client_id.strip_prefix(user).is_some_and(|rest| rest.starts_with(':'))
            || (user == CONTROLLER_USER && client_id.starts_with(CONTROLLER_USER));
        id_ok && expected.is_some_and(|p| crate::api::constant_time_eq(p.as_bytes(), password.as_bytes()))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, EnrolmentFile> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut EnrolmentFile)) -> Result<(), EnrolError> {
        let mut state = self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = state.clone();
        change(&mut next);
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| EnrolError::Io(e.to_string()))?;
        write_file(&self.path, &bytes).map_err(|e| EnrolError::Io(format!("{e:#}")))?;
        *state = next;
        Ok(())
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn random_text() -> anyhow::Result<String> {
    Ok(hex::encode(random_bytes::<24>()?))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_private(path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_token_enrols_one_node_once() {
        let dir = tempfile::tempdir().unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        let token = enrolment.create_join_token(Duration::from_secs(60)).unwrap();
        let credential = enrolment.enrol(&token, "edge-1").unwrap();
        assert_eq!(enrolment.enrol(&token, "edge-2"), Err(EnrolError::BadToken));
        assert!(enrolment.check_broker_login("edge-1", "edge-1", &credential.password));
        assert!(!enrolment.check_broker_login("edge-2", "edge-1", &credential.password), "client id must match");
        assert!(enrolment.check_broker_login("edge-1:tool", "edge-1", &credential.password));
        assert!(!enrolment.check_broker_login("edge-10", "edge-1", &credential.password));
        assert!(!enrolment.check_broker_login("edge-1", "edge-1", "wrong"));
        // Survives a restart.
        let again = Enrolment::load_or_create(dir.path()).unwrap();
        assert_eq!(again.node("edge-1"), Some(credential));
    }

    #[test]
    fn bad_names_and_expired_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        let token = enrolment.create_join_token(Duration::from_secs(60)).unwrap();
        assert!(matches!(enrolment.enrol(&token, "a/b"), Err(EnrolError::BadName { .. })));
        let expired = enrolment.create_join_token(Duration::ZERO).unwrap();
        assert_eq!(enrolment.enrol(&expired, "edge-1"), Err(EnrolError::BadToken));
    }

    #[test]
    fn macs_verify_and_detect_changes() {
        let key = [9; 32];
        let tag = node_mac(&key, b"frame");
        assert!(verify_node_mac(&key, b"frame", &tag));
        assert!(!verify_node_mac(&key, b"framf", &tag));
        assert!(!verify_node_mac(&[8; 32], b"frame", &tag));
    }

    #[test]
    fn the_controller_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = ControllerKey::load_or_create(dir.path()).unwrap();
        let b = ControllerKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(std::fs::read(dir.path().join(CONTROLLER_PUBLIC_KEY_FILE)).unwrap(), a.public_key());
    }
}
