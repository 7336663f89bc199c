//! Who may speak on the control channel: the controller's signing key,
//! join tokens and the credentials each enrolled node received.
//!
//! Kept as small files in the data directory (mode 0600) rather than in the
//! object store: they are secrets the API must never list, and the embedded
//! broker's auth handler reads them on every connection.
//!
//! # Join tokens
//!
//! A token may be spent `uses` times before it expires (bulk provisioning:
//! one token for a batch of devices), carries labels that every node it
//! enrols receives, and can be revoked. Only the sha256 of its secret is
//! kept; its id is the first 8 hex digits of that hash. An enrolment is
//! refused when the token is unknown, revoked, used up or expired (in that
//! order of checks, and the name is checked only after the token, so a
//! caller without a valid token learns nothing about which names exist).
//! An enrolled name is never taken over: enrolling it again is refused
//! until an operator resets it ([`Enrolment::reset`]).
//!
//! # Writes: group commit
//!
//! `enrolment.json` is rewritten whole (temp file, fsync, rename) on every
//! change, which costs O(nodes) bytes. A fleet enrolling 10,000 devices at
//! once would make that O(n²) if every enrolment wrote alone, so writes are
//! grouped: callers queue their change on a bounded channel and wait; one
//! writer thread takes everything queued, applies it in order to a copy of
//! the state, writes the copy once and hands each caller its own outcome.
//! While it writes, the next batch queues up, so concurrent callers share
//! one fsync and at most one write runs at a time.
//!
//! Memory is updated only after the write succeeded (like the store's redb
//! commits), so readers (the broker's login check, the inbox's MAC keys)
//! never see a credential that a crash would lose. **If a write fails**,
//! every change in that batch fails with [`EnrolError::Io`] and none of them
//! takes effect: no token use is spent, no node is enrolled or reset, the
//! file keeps its previous content and the next change tries again with the
//! full state. A node refused that way simply enrols again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::store::{random_bytes, write_private};

/// File holding the controller's Ed25519 signing key (32 raw bytes).
pub const CONTROLLER_KEY_FILE: &str = "controller.key";
/// File holding its public key (32 raw bytes), what agents pin.
pub const CONTROLLER_PUBLIC_KEY_FILE: &str = "controller.pub";
/// Enrolled nodes and join tokens.
pub const ENROLMENT_FILE: &str = "enrolment.json";
/// The broker user name the controller itself connects as. Its client ids
/// are `flotilla-controller-<pid>-<random>`, so no node name (nor a node's client
/// id) may start with it.
pub const CONTROLLER_USER: &str = "flotilla-controller";
/// A token that ended (expired) this long ago is dropped from the file
/// when the next token is created; until then `node token ls` shows it.
const TOKEN_KEPT_AFTER_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// The longest a join token may live.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 86_400);

/// Length of a token id (hex digits of its hash).
const TOKEN_ID_LEN: usize = 8;

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

    /// A secret derived from the signing key for `label`: the root of the
    /// Secrets' data keys, which must outlive restarts as the key does.
    pub fn derive_secret(&self, label: &str) -> [u8; 32] {
        firmware_proto::seal::derive_key(&self.key.to_bytes(), &[label.as_bytes()])
    }
}

/// How long node credentials live unless the server is told otherwise.
pub const DEFAULT_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

/// Longest wait a node is told before it asks about rotation again: a
/// controller whose lifetime setting shrinks is heard within a day.
const MAX_ASK_AGAIN: u64 = 86_400;

/// What a node received at enrolment, and what rotations made of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCredential {
    /// Broker password (the user name is the node name).
    pub password: String,
    /// Key of the node's message authentication codes, hex.
    pub mac_key: String,
    /// Labels of the join token that enrolled it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Id of that join token (absent for nodes enrolled before tokens had ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// 0 for the credentials of the enrolment, one more per rotation.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    /// When these were issued (unix seconds, the controller's clock); they
    /// expire a lifetime later. 0 in files of controllers that did not
    /// expire credentials: the load sets it to the time of the load.
    #[serde(default)]
    pub issued: u64,
    /// The node's seal key (hex), kept from its enrolment once a rotation
    /// replaced the MAC key it was derived from: Secrets stay sealed the
    /// same, so a rotation replaces no container. Absent: derived from
    /// `mac_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_key: Option<String>,
    /// Credentials granted to the node and not yet used by it. Until it
    /// uses them, both sets are accepted; its first frame MAC'd with the
    /// new key makes them the current ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<NextCredential>,
}

/// Credentials granted by a rotation, not yet confirmed by the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NextCredential {
    /// Broker password.
    pub password: String,
    /// MAC key, hex.
    pub mac_key: String,
    /// When granted (unix seconds).
    pub issued: u64,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl NodeCredential {
    /// The MAC key as bytes.
    pub fn mac_key_bytes(&self) -> Option<[u8; 32]> {
        hex32(&self.mac_key)
    }

    /// The key the node's Secrets are sealed with.
    pub fn seal_key_bytes(&self) -> Option<[u8; 32]> {
        match &self.seal_key {
            Some(key) => hex32(key),
            None => self.mac_key_bytes().map(|key| firmware_proto::seal::node_seal_key(&key)),
        }
    }

    /// Whether these credentials (not counting `next`) are past their end.
    fn expired(&self, now: u64, lifetime: u64) -> bool {
        now >= self.issued.saturating_add(lifetime)
    }
}

/// The 24 random bytes a broker password is the hex of.
fn password_bytes(text: &str) -> Option<[u8; 24]> {
    hex::decode(text).ok()?.try_into().ok()
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// The MAC keys a node's frames may carry, for the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeKeys {
    /// Those of its current credentials; `None` once they expired.
    pub current: Option<[u8; 32]>,
    /// Those granted and not yet used, with their generation.
    pub next: Option<(u32, [u8; 32])>,
}

/// Why the broker refuses a login.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginRefusal {
    /// No such node, a wrong password, or a client id that is not the user's.
    #[error("MQTT login refused (user {user:?})")]
    Refused {
        /// The user name given.
        user: String,
    },
    /// The node's credentials expired while it was away.
    #[error(
        "node {node:?}: its credentials expired at {at} (it was offline past their lifetime): enrol it again with a fresh join token (`flotilla-agent run --join URL --token T`)"
    )]
    Expired {
        /// The node.
        node: String,
        /// When (RFC 3339).
        at: String,
    },
}

/// The controller's answer to a node asking for new credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationAnswer {
    /// The next credentials (generation, credentials), to be sealed for
    /// the node under its current MAC key; ask again after `ask_again_s`.
    Grant {
        /// Their generation.
        generation: u32,
        /// The credentials.
        next: firmware_proto::seal::NodeCredentials,
        /// The current MAC key, which seals them.
        current_mac_key: [u8; 32],
        /// When to ask again, in seconds.
        ask_again_s: u32,
    },
    /// Not yet: ask again after this many seconds. `generation` is the
    /// node's current one, as the controller holds it.
    NotYet {
        /// The current generation.
        generation: u32,
        /// Seconds.
        ask_again_s: u32,
    },
}

/// What a new join token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// How many nodes it may enrol (at least 1).
    pub uses: u32,
    /// How long it stays valid.
    pub ttl: Duration,
    /// Labels every node it enrols receives.
    pub labels: BTreeMap<String, String>,
}

impl Default for TokenSpec {
    fn default() -> Self {
        TokenSpec { uses: 1, ttl: Duration::from_secs(3600), labels: BTreeMap::new() }
    }
}

/// A join token as stored (keyed by the sha256 of its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinToken {
    uses: u32,
    used: u32,
    /// Unix seconds.
    expires: u64,
    /// Unix seconds.
    created: u64,
    /// Creation order among tokens made in the same second (files written
    /// before it existed read 0 and fall back to the id).
    #[serde(default)]
    serial: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    revoked: bool,
}

impl JoinToken {
    fn state(&self, now: u64) -> TokenState {
        if self.revoked {
            TokenState::Revoked
        } else if self.used >= self.uses {
            TokenState::UsedUp
        } else if self.expires <= now {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }

    /// Why it cannot enrol a node now, if it cannot.
    fn refusal(&self, id: &str, now: u64) -> Result<(), EnrolError> {
        let id = id.to_owned();
        match self.state(now) {
            TokenState::Active => Ok(()),
            TokenState::Revoked => Err(EnrolError::TokenRevoked { id }),
            TokenState::UsedUp => Err(EnrolError::TokenUsedUp { id, uses: self.uses }),
            TokenState::Expired => Err(EnrolError::TokenExpired { id, at: rfc3339(self.expires) }),
        }
    }

    fn info(&self, hash: &str, now: u64) -> TokenInfo {
        TokenInfo {
            id: token_id(hash).to_owned(),
            uses: self.uses,
            used: self.used,
            expires: rfc3339(self.expires),
            created: rfc3339(self.created),
            labels: self.labels.clone(),
            state: self.state(now),
        }
    }
}

/// Whether a join token can still enrol nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TokenState {
    /// It can.
    Active,
    /// Its validity ended.
    Expired,
    /// Every use is spent.
    UsedUp,
    /// An operator revoked it.
    Revoked,
}

impl std::fmt::Display for TokenState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenState::Active => "active",
            TokenState::Expired => "expired",
            TokenState::UsedUp => "used up",
            TokenState::Revoked => "revoked",
        })
    }
}

/// A join token as the API lists it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// Short id (first hex digits of the secret's sha256).
    pub id: String,
    /// Enrolments it allows.
    pub uses: u32,
    /// Enrolments spent.
    pub used: u32,
    /// When it expires (RFC 3339).
    pub expires: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Labels of the nodes it enrols.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Whether it can still enrol.
    pub state: TokenState,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnrolmentFile {
    /// Broker password of the controller's own connection.
    controller_password: String,
    /// Files written before tokens could be reused: sha256 (hex) of each
    /// unused one-time token -> expiry (unix seconds). Read and moved into
    /// `tokens` on load, never written.
    #[serde(default, skip_serializing)]
    join_tokens: BTreeMap<String, u64>,
    /// sha256 (hex) of each join token's secret -> the token.
    #[serde(default)]
    tokens: BTreeMap<String, JoinToken>,
    /// Node name -> its credentials.
    #[serde(default)]
    nodes: BTreeMap<String, NodeCredential>,
}

impl EnrolmentFile {
    /// Moves one-time tokens of an old file into `tokens`, and starts the
    /// lifetime of credentials issued before they had one. Says whether it
    /// changed anything (then the file is written at once, so a restart
    /// does not start their lifetime again).
    fn migrate(&mut self) -> bool {
        let now = unix_now();
        let mut changed = !self.join_tokens.is_empty();
        for credential in self.nodes.values_mut().filter(|c| c.issued == 0) {
            credential.issued = now;
            changed = true;
        }
        for (hash, expires) in std::mem::take(&mut self.join_tokens) {
            let token = JoinToken {
                uses: 1,
                used: 0,
                expires,
                created: now,
                serial: 0,
                labels: BTreeMap::new(),
                revoked: false,
            };
            self.tokens.entry(hash).or_insert(token);
        }
        changed
    }

    /// The token whose id is `id`.
    fn token_by_id(&mut self, id: &str) -> Option<(&String, &mut JoinToken)> {
        // Ids are unique (creation retries on a clash) and tokens few, so a
        // scan is fine; enrolment looks tokens up by hash.
        self.tokens.iter_mut().find(|(hash, _)| token_id(hash) == id)
    }
}

/// Why an enrolment (or a token or reset request) was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EnrolError {
    /// No such token. Deliberately says nothing else.
    #[error("the join token is unknown (create one with `flotilla node token create`)")]
    UnknownToken,
    /// Every use of the token is spent.
    #[error(
        "the join token {id} has been used {uses} of {uses} times (create another with `flotilla node token create --uses N`)"
    )]
    TokenUsedUp {
        /// Its id.
        id: String,
        /// Uses it allowed.
        uses: u32,
    },
    /// The token expired.
    #[error("the join token {id} expired at {at} (create another with `flotilla node token create`)")]
    TokenExpired {
        /// Its id.
        id: String,
        /// When (RFC 3339).
        at: String,
    },
    /// An operator revoked the token.
    #[error("the join token {id} has been revoked")]
    TokenRevoked {
        /// Its id.
        id: String,
    },
    /// No token has this id (`node token revoke`).
    #[error("no join token has the id {id:?} (see `flotilla node token ls`)")]
    NoSuchTokenId {
        /// The id asked for.
        id: String,
    },
    /// The name is taken; taking it over needs an operator.
    #[error(
        "node {name:?} is already enrolled; an operator must run `flotilla node revoke {name}` before it can enrol again"
    )]
    AlreadyEnrolled {
        /// The name.
        name: String,
    },
    /// `node revoke` of a name that is not enrolled.
    #[error("node {name:?} is not enrolled")]
    NotEnrolled {
        /// The name.
        name: String,
    },
    /// Bad node name.
    #[error("invalid node name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A token request that makes no sense (no uses, bad labels).
    #[error("invalid join token request: {0}")]
    BadTokenRequest(String),
    /// Writing the file failed; nothing changed.
    #[error("saving the enrolment: {0}")]
    Io(String),
}

/// Called with the write's outcome once the batch holding a change is on disk (or failed).
type Done = Box<dyn FnOnce(Result<(), EnrolError>) + Send>;

/// A queued change. `apply` tells whether it changed the state; it may run
/// more than once, each time on a fresh copy (a shared enrolment another
/// controller wrote meanwhile is read again and the batch applied anew),
/// and what the last run decided is what `done` reports.
struct Change {
    apply: Box<dyn FnMut(&mut EnrolmentFile) -> bool + Send>,
    done: Done,
}

impl Change {
    /// A change whose every run leaves a `T` for `finish`, which gets the
    /// last one with the write's outcome.
    fn new<T: Send + 'static>(
        mut apply: impl FnMut(&mut EnrolmentFile) -> (bool, T) + Send + 'static,
        finish: impl FnOnce(T, Result<(), EnrolError>) + Send + 'static,
    ) -> Change {
        let decided = Arc::new(std::sync::Mutex::new(None));
        let last = decided.clone();
        Change {
            apply: Box::new(move |state| {
                let (changed, value) = apply(state);
                *decided.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
                changed
            }),
            done: Box::new(move |written| {
                if let Some(value) = last.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    finish(value, written);
                }
            }),
        }
    }
}

/// Changes waiting for the writer. Bounded: callers wait when it is full.
const QUEUE: usize = 1024;

/// Removals a slow watcher may fall behind by before it rescans.
const REMOVED_QUEUE: usize = 256;

/// Where the enrolment is kept besides memory.
enum Home {
    /// `enrolment.json` in the data directory: this controller's alone.
    File(PathBuf),
    /// A document every controller on the same etcd shares.
    Shared(Arc<dyn SharedDocument>),
}

impl Home {
    fn describe(&self) -> String {
        match self {
            Home::File(path) => path.display().to_string(),
            Home::Shared(doc) => doc.describe(),
        }
    }
}

/// One document several controllers share (the enrolment on etcd): read
/// whole, replaced whole only if nobody replaced it since it was read, and
/// followed for what the others write.
pub trait SharedDocument: Send + Sync {
    /// Its bytes and revision; `None` while it does not exist.
    fn load(&self) -> anyhow::Result<Option<(Vec<u8>, u64)>>;
    /// Replaces it if its revision is still `expected` (0: it does not
    /// exist yet): `Some(revision)` written, `None` someone wrote first.
    fn replace(&self, bytes: &[u8], expected: u64) -> anyhow::Result<Option<u64>>;
    /// Calls `changed` with every version written after revision `after`
    /// (by anyone, this controller included), until the process ends.
    fn follow(&self, after: u64, changed: Box<dyn Fn(Vec<u8>, u64) + Send + Sync>);
    /// Where it is, for messages.
    fn describe(&self) -> String;
}

/// A shared enrolment replaced by others this many times in a row fails
/// the batch (the callers' requests are refused; they try again).
const SHARED_WRITE_ATTEMPTS: usize = 20;

struct Shared {
    home: Home,
    /// The revision `state` is at: the document's on etcd, a count of
    /// writes for the file. Changed only with `state`'s write lock held.
    revision: std::sync::atomic::AtomicU64,
    /// How long node credentials live, in seconds.
    lifetime: std::sync::atomic::AtomicU64,
    /// Whether a rotation gives a new broker password too: not with an
    /// external broker, whose password file holds one password per user
    /// (the MAC key still rotates).
    rotate_password: std::sync::atomic::AtomicBool,
    /// What is on disk; only the writer thread changes it.
    state: RwLock<EnrolmentFile>,
    /// Names whose credentials were just removed, for whoever holds their
    /// connections open (the broker gate, the inbox).
    removed: tokio::sync::broadcast::Sender<String>,
    /// Bumped after every write that changed the file.
    written: tokio::sync::watch::Sender<u64>,
}

/// Join tokens and node credentials, shared by the API, the broker's auth
/// handler and the control channel.
#[derive(Clone)]
pub struct Enrolment {
    shared: Arc<Shared>,
    /// To the writer thread, which stops when the last clone is dropped.
    changes: SyncSender<Change>,
}

impl Enrolment {
    /// Loads (or creates) `<dir>/enrolment.json`.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(ENROLMENT_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let mut state: EnrolmentFile =
                    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
                if state.migrate() {
                    write_file(&path, &serde_json::to_vec(&state)?)?;
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = EnrolmentFile { controller_password: random_text()?, ..EnrolmentFile::default() };
                write_file(&path, &serde_json::to_vec(&state)?)?;
                state
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::start(Home::File(path), state, 0)
    }

    /// Loads (or creates) the enrolment every controller on one etcd
    /// shares, and follows what the others write to it. The first
    /// controller starts it from `<seed_dir>/enrolment.json` when there is
    /// one (what `flotilla mosquitto-config` or a single controller wrote).
    pub fn load_or_create_shared(doc: Arc<dyn SharedDocument>, seed_dir: &Path) -> anyhow::Result<Self> {
        let where_ = doc.describe();
        let (state, revision) = loop {
            match doc.load().with_context(|| format!("reading the enrolment {where_}"))? {
                Some((bytes, revision)) => {
                    let mut state: EnrolmentFile =
                        serde_json::from_slice(&bytes).with_context(|| format!("parsing the enrolment {where_}"))?;
                    // Kept in memory; the next change writes it.
                    state.migrate();
                    break (state, revision);
                }
                None => {
                    let seed = seed_dir.join(ENROLMENT_FILE);
                    let state = match std::fs::read(&seed) {
                        Ok(bytes) => {
                            let mut state: EnrolmentFile = serde_json::from_slice(&bytes)
                                .with_context(|| format!("parsing {}", seed.display()))?;
                            state.migrate();
                            tracing::info!(from = %seed.display(), "starting the shared enrolment from this file");
                            state
                        }
                        Err(_) => EnrolmentFile { controller_password: random_text()?, ..EnrolmentFile::default() },
                    };
                    let created = doc
                        .replace(&serde_json::to_vec(&state)?, 0)
                        .with_context(|| format!("creating the enrolment {where_}"))?;
                    if let Some(revision) = created {
                        tracing::info!(at = where_, "created the shared enrolment");
                        break (state, revision);
                    }
                    // Another controller created it first: read theirs.
                }
            }
        };
        let enrolment = Self::start(Home::Shared(doc.clone()), state, revision)?;
        let shared = Arc::downgrade(&enrolment.shared);
        doc.follow(
            revision,
            Box::new(move |bytes, revision| {
                let Some(shared) = shared.upgrade() else { return };
                match serde_json::from_slice::<EnrolmentFile>(&bytes) {
                    Ok(state) => install(&shared, state, revision),
                    Err(e) => tracing::error!(
                        at = shared.home.describe(),
                        revision,
                        error = %e,
                        "another controller wrote an enrolment this one cannot read; keeping the previous one"
                    ),
                }
            }),
        );
        Ok(enrolment)
    }

    fn start(home: Home, state: EnrolmentFile, revision: u64) -> anyhow::Result<Self> {
        let (removed, _) = tokio::sync::broadcast::channel(REMOVED_QUEUE);
        let shared = Arc::new(Shared {
            home,
            revision: std::sync::atomic::AtomicU64::new(revision),
            lifetime: std::sync::atomic::AtomicU64::new(DEFAULT_CREDENTIAL_LIFETIME.as_secs()),
            rotate_password: std::sync::atomic::AtomicBool::new(true),
            state: RwLock::new(state),
            removed,
            written: tokio::sync::watch::Sender::new(0),
        });
        let (changes, queued) = std::sync::mpsc::sync_channel(QUEUE);
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("enrolment-writer".into())
            .spawn(move || write_batches(&writer, &queued))
            .context("starting the enrolment writer")?;
        Ok(Enrolment { shared, changes })
    }

    /// The controller's own broker password.
    pub fn controller_password(&self) -> String {
        self.read().controller_password.clone()
    }

    /// Creates a join token; returns its secret (shown once, never stored)
    /// and what `node token ls` will show of it.
    pub fn create_join_token(&self, spec: &TokenSpec) -> Result<(String, TokenInfo), EnrolError> {
        if spec.uses == 0 {
            return Err(EnrolError::BadTokenRequest("a token needs at least one use".into()));
        }
        if spec.ttl > MAX_TOKEN_TTL {
            let days = MAX_TOKEN_TTL.as_secs() / 86_400;
            return Err(EnrolError::BadTokenRequest(format!("a token lives at most {days} days")));
        }
        check_labels(&spec.labels)?;
        let io = |e: anyhow::Error| EnrolError::Io(format!("{e:#}"));
        let now = unix_now();
        let token = JoinToken {
            uses: spec.uses,
            used: 0,
            expires: now.saturating_add(spec.ttl.as_secs()),
            created: now,
            serial: 0,
            labels: spec.labels.clone(),
            revoked: false,
        };
        // Retry on the (2^-32) chance that the id is taken.
        for _ in 0..8 {
            let secret = random_text().map_err(io)?;
            let hash = sha256_hex(secret.as_bytes());
            let token = token.clone();
            let created = self.update(move |state| {
                state.tokens.retain(|_, t| t.expires.saturating_add(TOKEN_KEPT_AFTER_EXPIRY.as_secs()) > now);
                if state.tokens.keys().any(|h| token_id(h) == token_id(&hash)) {
                    return Ok(None);
                }
                let mut token = token.clone();
                token.serial = state.tokens.values().map(|t| t.serial).max().unwrap_or(0) + 1;
                let info = token.info(&hash, now);
                state.tokens.insert(hash.clone(), token);
                Ok(Some(info))
            })?;
            if let Some(info) = created {
                return Ok((secret, info));
            }
        }
        Err(EnrolError::Io("no unique token id in 8 tries".into()))
    }

    /// Every join token kept (active, and ended in the last day), oldest first.
    pub fn tokens(&self) -> Vec<TokenInfo> {
        let now = unix_now();
        let state = self.read();
        let mut tokens: Vec<((u64, u64), TokenInfo)> =
            state.tokens.iter().map(|(hash, t)| ((t.created, t.serial), t.info(hash, now))).collect();
        tokens.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        tokens.into_iter().map(|(_, info)| info).collect()
    }

    /// Revokes the token with id `id`: it enrols no more nodes (those it
    /// enrolled keep their credentials).
    pub fn revoke_token(&self, id: &str) -> Result<TokenInfo, EnrolError> {
        let id = id.to_owned();
        self.update(move |state| {
            let (hash, token) = state.token_by_id(&id).ok_or(EnrolError::NoSuchTokenId { id: id.clone() })?;
            token.revoked = true;
            Ok(token.info(hash, unix_now()))
        })
    }

    /// Spends one use of a join token on `node`, returning its fresh
    /// credentials (with the token's labels). A name that is enrolled
    /// already is refused without spending the use: [`Enrolment::reset`]
    /// frees it.
    pub fn enrol(&self, token: &str, node: &str) -> Result<NodeCredential, EnrolError> {
        check_node_name(node)?;
        let io = |e: anyhow::Error| EnrolError::Io(format!("{e:#}"));
        let now = unix_now();
        let credential = NodeCredential {
            password: random_text().map_err(io)?,
            mac_key: hex::encode(random_bytes::<32>().map_err(io)?),
            labels: BTreeMap::new(),
            token_id: None,
            generation: 0,
            issued: now,
            seal_key: None,
            next: None,
        };
        let hash = sha256_hex(token.as_bytes());
        let node = node.to_owned();
        let lifetime = self.lifetime_s();
        self.update(move |state| {
            // The token first: only its holder may learn whether a name is taken.
            let join = state.tokens.get_mut(&hash).ok_or(EnrolError::UnknownToken)?;
            let id = token_id(&hash);
            join.refusal(id, now)?;
            // A node whose credentials expired (offline past their
            // lifetime) enrols again with a fresh token, no operator step.
            if let Some(enrolled) = state.nodes.get(&node)
                && !(enrolled.expired(now, lifetime)
                    && enrolled.next.as_ref().is_none_or(|n| n.issued + lifetime <= now))
            {
                return Err(EnrolError::AlreadyEnrolled { name: node.clone() });
            }
            join.used += 1;
            let mut credential = credential.clone();
            credential.labels = join.labels.clone();
            credential.token_id = Some(id.to_owned());
            state.nodes.insert(node.clone(), credential.clone());
            Ok(credential)
        })
    }

    /// Removes a node's credentials: its broker login and MAC key stop
    /// working at once (the inbox looks keys up per message; a connection
    /// already open stays open until it drops, but nothing it sends is
    /// believed), and the name may enrol again.
    pub fn reset(&self, node: &str) -> Result<(), EnrolError> {
        let name = node.to_owned();
        // The writer tells `watch_removed` once the removal is saved.
        self.update(move |state| match state.nodes.remove(&name) {
            Some(_) => Ok(()),
            None => Err(EnrolError::NotEnrolled { name: name.clone() }),
        })
    }

    /// Changes each time the file was written with a change (an
    /// enrolment, a revocation, a rotation): what an external broker's
    /// password file follows ([`super::mosquitto::spawn_sync`]).
    pub fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.written.subscribe()
    }

    /// Names of nodes as their credentials are removed ([`Enrolment::reset`]).
    pub fn watch_removed(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.shared.removed.subscribe()
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
    /// (never a node id), so a node cannot take over another node's session,
    /// and only the controller may use client ids starting with
    /// `flotilla-controller`.
    pub fn check_broker_login(&self, client_id: &str, user: &str, password: &str) -> bool {
        self.broker_login(client_id, user, password).is_ok()
    }

    /// [`Enrolment::check_broker_login`], saying why it refuses. A node's
    /// current password is taken until it expires, and the password of a
    /// rotation granted and not yet used until that one expires.
    pub fn broker_login(&self, client_id: &str, user: &str, password: &str) -> Result<(), LoginRefusal> {
        let refused = || LoginRefusal::Refused { user: user.to_owned() };
        let id_ok = client_id == user
            || client_id.strip_prefix(user).is_some_and(|rest| rest.starts_with(':'))
            || (user == CONTROLLER_USER && client_id.starts_with(CONTROLLER_USER));
        if !id_ok {
            return Err(refused());
        }
        let matches = |expected: &str| crate::api::constant_time_eq(expected.as_bytes(), password.as_bytes());
        let state = self.read();
        if user == CONTROLLER_USER {
            return if matches(&state.controller_password) { Ok(()) } else { Err(refused()) };
        }
        if client_id.starts_with(CONTROLLER_USER) || user.starts_with(CONTROLLER_USER) {
            // A node enrolled under such a name before names were checked.
            return Err(refused());
        }
        let credential = state.nodes.get(user).ok_or_else(refused)?;
        let (now, lifetime) = (unix_now(), self.lifetime_s());
        let next = credential.next.as_ref().filter(|next| matches(&next.password));
        let (issued, known) = match next {
            Some(next) => (next.issued, true),
            None => (credential.issued, matches(&credential.password)),
        };
        match (known, now >= issued.saturating_add(lifetime)) {
            (false, _) => Err(refused()),
            (true, false) => Ok(()),
            (true, true) => {
                Err(LoginRefusal::Expired { node: user.to_owned(), at: rfc3339(issued.saturating_add(lifetime)) })
            }
        }
    }

    /// How long node credentials live from now on; a rotation is granted
    /// once half of it has passed.
    pub fn set_credential_lifetime(&self, lifetime: Duration) {
        self.shared.lifetime.store(lifetime.as_secs().max(2), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether rotations give new broker passwords (see [`Shared`]).
    pub fn set_rotate_password(&self, rotate: bool) {
        self.shared.rotate_password.store(rotate, std::sync::atomic::Ordering::Relaxed);
    }

    fn lifetime_s(&self) -> u64 {
        self.shared.lifetime.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The MAC keys a node's frames may be made with, read in place.
    pub fn node_keys(&self, node: &str) -> Option<NodeKeys> {
        let state = self.read();
        let credential = state.nodes.get(node)?;
        let (now, lifetime) = (unix_now(), self.lifetime_s());
        Some(NodeKeys {
            current: credential.mac_key_bytes().filter(|_| !credential.expired(now, lifetime)),
            next: credential.next.as_ref().and_then(|next| {
                let live = now < next.issued.saturating_add(lifetime);
                hex32(&next.mac_key).filter(|_| live).map(|key| (credential.generation + 1, key))
            }),
        })
    }

    /// The key a node's Secrets are sealed with.
    pub fn seal_key(&self, node: &str) -> Option<[u8; 32]> {
        self.read().nodes.get(node)?.seal_key_bytes()
    }

    /// A node of generation `generation` asks for new credentials: `answer`
    /// gets the grant once it is on disk (the same grant again while the
    /// node has not used it), or when to ask again. A node whose credentials
    /// expired, or that names a generation the controller does not hold,
    /// gets no answer (logged). Never blocks on the disk: the inbox calls it.
    pub fn rotate(&self, node: &str, generation: u32, answer: impl FnOnce(RotationAnswer) + Send + 'static) {
        let fresh = match (random_bytes::<32>(), random_bytes::<24>()) {
            (Ok(mac_key), Ok(password)) => firmware_proto::seal::NodeCredentials { mac_key, password },
            (Err(e), _) | (_, Err(e)) => return tracing::error!(node, error = %e, "no randomness for new credentials"),
        };
        let (lifetime, rotate_password) =
            (self.lifetime_s(), self.shared.rotate_password.load(std::sync::atomic::Ordering::Relaxed));
        // Most requests change nothing ("not yet", or a grant made before):
        // answered here from a copy of the one node, without the writer,
        // which copies the whole file per batch. A fleet asks after every
        // reconnection.
        let mut node_only = {
            let state = self.read();
            let Some(credential) = state.nodes.get(node) else {
                return tracing::warn!(
                    node,
                    generation,
                    reason = "the node is not enrolled",
                    "credential request not answered"
                );
            };
            EnrolmentFile { nodes: BTreeMap::from([(node.to_owned(), credential.clone())]), ..EnrolmentFile::default() }
        };
        let now = unix_now();
        match decide_rotation(&mut node_only, node, generation, now, lifetime, rotate_password, fresh.clone()) {
            Ok((reply, false)) => return answer(reply),
            Err(reason) => return tracing::warn!(node, generation, reason, "credential request not answered"),
            Ok((_, true)) => {}
        }
        let node = node.to_owned();
        let change = Change::new(
            move |state| {
                let now = unix_now();
                let decided = decide_rotation(state, &node, generation, now, lifetime, rotate_password, fresh.clone());
                (matches!(decided, Ok((_, true))), (decided, node.clone()))
            },
            move |(decided, node), written| match (decided, written) {
                (Ok((reply, _)), Ok(())) => answer(reply),
                (Ok(_), Err(e)) => {
                    tracing::warn!(node, error = %e, "a rotation could not be saved; the node asks again")
                }
                (Err(reason), _) => tracing::warn!(node, generation, reason, "credential request not answered"),
            },
        );
        if self.changes.send(change).is_err() {
            tracing::error!("the enrolment writer stopped: credential requests go unanswered");
        }
    }

    /// The node made a frame with the credentials of generation
    /// `generation`, granted by a rotation: they become its current ones
    /// and the previous ones stop working. Does not wait for the disk.
    pub fn confirm_rotation(&self, node: &str, generation: u32) {
        let node = node.to_owned();
        let change = Change::new(
            move |state| {
                let promoted = state.nodes.get_mut(&node).is_some_and(|credential| {
                    if credential.generation + 1 != generation {
                        return false;
                    }
                    let Some(next) = credential.next.take() else { return false };
                    if credential.seal_key.is_none() {
                        credential.seal_key = credential.seal_key_bytes().map(hex::encode);
                    }
                    credential.password = next.password;
                    credential.mac_key = next.mac_key;
                    credential.issued = next.issued;
                    credential.generation = generation;
                    true
                });
                (promoted, (promoted, node.clone()))
            },
            move |(promoted, node), written| match written {
                Ok(()) if promoted => tracing::info!(node, generation, "node credentials rotated"),
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(node, error = %e, "a confirmed rotation could not be saved; tried again on the node's next frame")
                }
            },
        );
        if self.changes.send(change).is_err() {
            tracing::error!("the enrolment writer stopped: a rotation stays unconfirmed");
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, EnrolmentFile> {
        self.shared.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `change` and waits until it is on disk; an `Err` from
    /// `change` must leave the state as it was. See the module doc.
    fn update<R: Send + 'static>(
        &self,
        mut change: impl FnMut(&mut EnrolmentFile) -> Result<R, EnrolError> + Send + 'static,
    ) -> Result<R, EnrolError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let change = Change::new(
            move |state| {
                let outcome = change(state);
                (outcome.is_ok(), outcome)
            },
            move |outcome, written| {
                let _ = tx.send(outcome.and_then(|value| written.map(|()| value)));
            },
        );
        let stopped = || EnrolError::Io("the enrolment writer stopped".into());
        self.changes.send(change).map_err(|_| stopped())?;
        rx.recv().unwrap_or_else(|_| Err(stopped()))
    }
}

/// What to answer a node of `generation` asking for new credentials, and
/// whether the state changed (a grant made).
fn decide_rotation(
    state: &mut EnrolmentFile,
    node: &str,
    generation: u32,
    now: u64,
    lifetime: u64,
    rotate_password: bool,
    fresh: firmware_proto::seal::NodeCredentials,
) -> Result<(RotationAnswer, bool), &'static str> {
    let credential = state.nodes.get_mut(node).ok_or("the node is not enrolled")?;
    if credential.generation != generation {
        return Err("the node names a generation of credentials the controller does not hold");
    }
    let current_mac_key = credential.mac_key_bytes().ok_or("the node's stored MAC key is unreadable")?;
    if credential.expired(now, lifetime) {
        return Err("the node's credentials expired");
    }
    let renew_at = credential.issued.saturating_add(lifetime / 2);
    let ask_again = |at: u64| at.saturating_sub(now).clamp(1, MAX_ASK_AGAIN) as u32;
    if let Some(next) = &credential.next
        && let Some(mac_key) = hex32(&next.mac_key)
        && let Some(password) = password_bytes(&next.password)
    {
        // Granted before: the same again (the node may have missed it).
        let next_credentials = firmware_proto::seal::NodeCredentials { mac_key, password };
        let reply = RotationAnswer::Grant {
            generation: generation + 1,
            next: next_credentials,
            current_mac_key,
            ask_again_s: ask_again(next.issued.saturating_add(lifetime / 2)),
        };
        return Ok((reply, false));
    }
    if now < renew_at {
        return Ok((RotationAnswer::NotYet { generation, ask_again_s: ask_again(renew_at) }, false));
    }
    let mut next_credentials = fresh;
    if !rotate_password {
        // The external broker's password file keeps the current one.
        match password_bytes(&credential.password) {
            Some(password) => next_credentials.password = password,
            None => return Err("the node's broker password predates rotation and cannot be carried over"),
        }
    }
    credential.next = Some(NextCredential {
        password: next_credentials.password(),
        mac_key: hex::encode(next_credentials.mac_key),
        issued: now,
    });
    let reply = RotationAnswer::Grant {
        generation: generation + 1,
        next: next_credentials,
        current_mac_key,
        ask_again_s: ask_again(now.saturating_add(lifetime / 2)),
    };
    Ok((reply, true))
}

/// Makes `next`, at `revision`, what readers see, unless memory is at a
/// later revision already (the write came back through the follower after
/// the writer installed it, or the other way round). Tells the removal
/// watchers which names it dropped.
fn install(shared: &Shared, next: EnrolmentFile, revision: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut state = shared.state.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    if revision <= shared.revision.load(Relaxed) {
        return;
    }
    let gone: Vec<String> = state.nodes.keys().filter(|name| !next.nodes.contains_key(*name)).cloned().collect();
    let old = std::mem::replace(&mut *state, next);
    shared.revision.store(revision, Relaxed);
    drop(state);
    drop(old); // Freed outside the lock.
    for name in gone {
        // No receiver is fine: nothing is open to close.
        let _ = shared.removed.send(name);
    }
    shared.written.send_modify(|count| *count += 1);
}

/// Applies `batch` to a copy of memory and saves it: in the file, or on the
/// shared document if no other controller replaced it since (else reads
/// theirs and applies the batch again).
fn save_batch(shared: &Shared, batch: &mut [Change]) -> Result<(), EnrolError> {
    let io = |e: anyhow::Error| EnrolError::Io(format!("{e:#}"));
    for _ in 0..SHARED_WRITE_ATTEMPTS {
        let (mut next, revision) = {
            let state = shared.state.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            (state.clone(), shared.revision.load(std::sync::atomic::Ordering::Relaxed))
        };
        // Every change runs (no short circuit): each leaves its outcome.
        let changed = batch.iter_mut().map(|change| (change.apply)(&mut next)).fold(false, |a, b| a | b);
        if !changed {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&next).map_err(|e| io(e.into()))?;
        match &shared.home {
            Home::File(path) => {
                write_file(path, &bytes).map_err(io)?;
                install(shared, next, revision + 1);
                return Ok(());
            }
            Home::Shared(doc) => match doc.replace(&bytes, revision).map_err(io)? {
                Some(written) => {
                    install(shared, next, written);
                    return Ok(());
                }
                None => {
                    tracing::debug!("another controller changed the enrolment first; applying the batch again");
                    if let Some((bytes, revision)) = doc.load().map_err(io)? {
                        let theirs = serde_json::from_slice(&bytes).map_err(|e| io(e.into()))?;
                        install(shared, theirs, revision);
                    }
                }
            },
        }
    }
    Err(EnrolError::Io(format!(
        "other controllers changed the enrolment {SHARED_WRITE_ATTEMPTS} times while this one tried to; try again"
    )))
}

/// The writer thread: one write per batch of whatever queued meanwhile.
fn write_batches(shared: &Shared, queued: &Receiver<Change>) {
    while let Ok(first) = queued.recv() {
        let mut batch: Vec<Change> = std::iter::once(first).chain(queued.try_iter()).collect();
        let written = save_batch(shared, &mut batch);
        if let Err(e) = &written {
            tracing::error!(error = %e, at = shared.home.describe(), "cannot save the enrolment; a batch of changes is refused")
        }
        for change in batch {
            (change.done)(written.clone());
        }
    }
}

/// Node names are wire ids, and never the controller's.
fn check_node_name(node: &str) -> Result<(), EnrolError> {
    let bad = |reason: String| Err(EnrolError::BadName { name: node.to_owned(), reason });
    if let Err(e) = firmware_proto::NodeId::new(node) {
        return bad(e.to_string());
    }
    if node.starts_with(CONTROLLER_USER) {
        return bad(format!(
            "names starting with {CONTROLLER_USER:?} are reserved for the controller's own MQTT connections"
        ));
    }
    Ok(())
}

/// Labels must fit the wire's label fields, as the agent will report them.
fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), EnrolError> {
    use firmware_proto::msg::{LABEL_KEY_MAX, LABEL_VALUE_MAX, MAX_LABELS};
    let bad = |reason: String| Err(EnrolError::BadTokenRequest(reason));
    if labels.len() > MAX_LABELS {
        return bad(format!("{} labels, at most {MAX_LABELS} fit a node's registration", labels.len()));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    for (key, value) in labels {
        if key.is_empty() || key.len() > LABEL_KEY_MAX || !key.chars().all(allowed) {
            return bad(format!(
                "label key {key:?}: 1 to {LABEL_KEY_MAX} characters of letters, digits, '-', '_', '.' and '/'"
            ));
        }
        if value.len() > LABEL_VALUE_MAX || !value.chars().all(allowed) || value.contains('/') {
            return bad(format!(
                "label {key}={value:?}: values are at most {LABEL_VALUE_MAX} letters, digits, '-', '_' and '.'"
            ));
        }
    }
    Ok(())
}

/// A token's id: the first hex digits of its hash.
fn token_id(hash: &str) -> &str {
    &hash[..TOKEN_ID_LEN.min(hash.len())]
}

fn rfc3339(unix: u64) -> String {
    // humantime formats years up to 9999 only (and panics past them).
    const LAST: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix.min(LAST))).to_string()
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

    fn token(enrolment: &Enrolment, uses: u32, ttl: Duration) -> (String, TokenInfo) {
        enrolment.create_join_token(&TokenSpec { uses, ttl, ..TokenSpec::default() }).unwrap()
    }

    #[test]
    fn a_join_token_enrols_one_node_once() {
        let dir = tempfile::tempdir().unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        let (token, info) = token(&enrolment, 1, Duration::from_secs(60));
        let credential = enrolment.enrol(&token, "edge-1").unwrap();
        assert_eq!(enrolment.enrol(&token, "edge-2"), Err(EnrolError::TokenUsedUp { id: info.id.clone(), uses: 1 }));
        assert!(enrolment.check_broker_login("edge-1", "edge-1", &credential.password));
        assert!(!enrolment.check_broker_login("edge-2", "edge-1", &credential.password), "client id must match");
        assert!(enrolment.check_broker_login("edge-1:tool", "edge-1", &credential.password));
        assert!(!enrolment.check_broker_login("edge-10", "edge-1", &credential.password));
        assert!(!enrolment.check_broker_login("edge-1", "edge-1", "wrong"));
        // Survives a restart.
        let again = Enrolment::load_or_create(dir.path()).unwrap();
        assert_eq!(again.node("edge-1"), Some(credential));
        assert_eq!(again.tokens()[0].used, 1);
    }

    /// Found by schemathesis: a ttl of ~2^63 s made a date humantime cannot
    /// print, which panicked the writer thread, and every enrolment write
    /// after it failed.
    #[test]
    fn a_token_living_for_ever_is_refused_and_far_dates_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        let spec = TokenSpec { uses: 1, ttl: Duration::from_secs(u64::MAX / 2), ..TokenSpec::default() };
        let refused = enrolment.create_join_token(&spec).unwrap_err();
        assert!(matches!(refused, EnrolError::BadTokenRequest(_)), "{refused}");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
        // The writer still works.
        token(&enrolment, 1, Duration::from_secs(60));
    }

    #[test]
    fn a_token_with_three_uses_enrols_three_nodes_and_refuses_the_fourth() {
        let dir = tempfile::tempdir().unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        let labels = BTreeMap::from([("site".to_owned(), "berlin".to_owned())]);
        let spec = TokenSpec { uses: 3, ttl: Duration::from_secs(60), labels: labels.clone() };
        let (token, info) = enrolment.create_join_token(&spec).unwrap();
        assert_eq!((info.uses, info.used, info.state), (3, 0, TokenState::Active));
        for name in ["edge-1", "edge-2", "edge-3"] {
            let credential = enrolment.enrol(&token, name).unwrap();
            assert_eq!(credential.labels, labels, "the token's labels go with the node");
            assert_eq!(credential.token_id.as_deref(), Some(info.id.as_str()));
        }
        let refused = enrolment.enrol(&token, "edge-4").unwrap_err();
        assert_eq!(refused, EnrolError::TokenUsedUp { id: info.id.clone(), uses: 3 });
        assert!(refused.to_string().contains("has been used 3 of 3 times"), "{refused}");
        assert_eq!(enrolment.node("edge-4"), None);
        let listed = &enrolment.tokens()[0];
        assert_eq!((listed.used, listed.uses, listed.state), (3, 3, TokenState::UsedUp));
        assert_eq!(listed.labels, labels);
        assert_eq!(Enrolment::load_or_create(dir.path()).unwrap().node("edge-2").unwrap().labels, labels);
    }

    #[test]
    fn unknown_expired_and_revoked_tokens_are_refused_saying_which() {
        let dir = tempfile::tempdir().unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        assert_eq!(enrolment.enrol("0123", "edge-1"), Err(EnrolError::UnknownToken));
        assert!(EnrolError::UnknownToken.to_string().contains("flotilla node token create"));

        let (expired, info) = token(&enrolment, 5, Duration::ZERO);
        let refused = enrolment.enrol(&expired, "edge-1").unwrap_err();
        assert!(matches!(&refused, EnrolError::TokenExpired { id, .. } if *id == info.id), "{refused:?}");
        assert!(refused.to_string().contains("expired at 20"), "{refused}");

        let (revoked, info) = token(&enrolment, 5, Duration::from_secs(60));
        enrolment.enrol(&revoked, "edge-1").unwrap();
        assert_eq!(enrolment.revoke_token(&info.id).unwrap().state, TokenState::Revoked);
        assert_eq!(enrolment.enrol(&revoked, "edge-2"), Err(EnrolError::TokenRevoked { id: info.id.clone() }));
        assert!(enrolment.node("edge-1").is_some(), "nodes a revoked token enrolled stay enrolled");
        assert_eq!(enrolment.revoke_token("nosuchid"), Err(EnrolError::NoSuchTokenId { id: "nosuchid".into() }));
        let states: Vec<TokenState> = enrolment.tokens().iter().map(|t| t.state).collect();
        assert_eq!(states, [TokenState::Expired, TokenState::Revoked]);
    }

    #[test]
    fn an_enrolled_name_is_not_taken_over_until_it_is_reset() {
        let dir = tempfile::tempdir().unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        let (token, info) = token(&enrolment, 3, Duration::from_secs(60));
        let first = enrolment.enrol(&token, "edge-1").unwrap();

        let refused = enrolment.enrol(&token, "edge-1").unwrap_err();
        assert_eq!(refused, EnrolError::AlreadyEnrolled { name: "edge-1".into() });
        assert!(refused.to_string().contains("`flotilla node revoke edge-1`"), "{refused}");
        assert_eq!(enrolment.node("edge-1"), Some(first.clone()), "the enrolled node keeps its credentials");
        assert!(enrolment.check_broker_login("edge-1", "edge-1", &first.password));
        assert_eq!(enrolment.tokens()[0].used, 1, "a refused enrolment spends no use");
        // An invalid token says nothing about the name.
        assert_eq!(enrolment.enrol("0123", "edge-1"), Err(EnrolError::UnknownToken));

        enrolment.reset("edge-1").unwrap();
        assert!(!enrolment.check_broker_login("edge-1", "edge-1", &first.password), "the old login stops working");
        assert_eq!(enrolment.node("edge-1"), None, "the inbox finds no MAC key for it");
        let second = enrolment.enrol(&token, "edge-1").unwrap();
        assert_ne!(second.password, first.password);
        assert_ne!(second.mac_key, first.mac_key);
        assert!(!enrolment.check_broker_login("edge-1", "edge-1", &first.password));
        assert!(enrolment.check_broker_login("edge-1", "edge-1", &second.password));
        assert_eq!(enrolment.reset("edge-9"), Err(EnrolError::NotEnrolled { name: "edge-9".into() }));
        assert_eq!(info.id.len(), TOKEN_ID_LEN);
    }

    #[test]
    fn the_controllers_names_are_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        let (token, _) = token(&enrolment, 5, Duration::from_secs(60));
        for name in ["flotilla-controller", "flotilla-controller-1234", "flotilla-controllerx"] {
            let refused = enrolment.enrol(&token, name).unwrap_err();
            assert!(matches!(refused, EnrolError::BadName { .. }), "{name}: {refused:?}");
            assert!(refused.to_string().contains("reserved for the controller's own MQTT connections"), "{refused}");
        }
        assert!(matches!(enrolment.enrol(&token, "a/b"), Err(EnrolError::BadName { .. })));
        assert_eq!(enrolment.tokens()[0].used, 0);

        let node = enrolment.enrol(&token, "edge-1").unwrap();
        assert!(!enrolment.check_broker_login("flotilla-controller-99", "edge-1", &node.password));
        let password = enrolment.controller_password();
        assert!(enrolment.check_broker_login("flotilla-controller-99", CONTROLLER_USER, &password));
        assert!(!enrolment.check_broker_login("edge-1", CONTROLLER_USER, &password));
    }

    #[test]
    fn a_node_enrolled_under_a_reserved_name_before_the_check_cannot_log_in() {
        let dir = tempfile::tempdir().unwrap();
        let file =
            r#"{"controllerPassword": "c", "nodes": {"flotilla-controller-7": {"password": "p", "macKey": "00"}}}"#;
        std::fs::write(dir.path().join(ENROLMENT_FILE), file).unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        assert!(!enrolment.check_broker_login("flotilla-controller-7", "flotilla-controller-7", "p"));
    }

    #[test]
    fn token_requests_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        let spec = |uses, labels: &[(&str, &str)]| TokenSpec {
            uses,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..TokenSpec::default()
        };
        assert!(matches!(enrolment.create_join_token(&spec(0, &[])), Err(EnrolError::BadTokenRequest(_))));
        assert!(matches!(enrolment.create_join_token(&spec(1, &[("", "x")])), Err(EnrolError::BadTokenRequest(_))));
        assert!(matches!(enrolment.create_join_token(&spec(1, &[("a", "b c")])), Err(EnrolError::BadTokenRequest(_))));
        assert!(enrolment.create_join_token(&spec(1, &[("example.com/site", "berlin-3")])).is_ok());
    }

    #[test]
    fn files_of_one_time_tokens_load_and_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "legacy-secret";
        let file = serde_json::json!({
            "controllerPassword": "c",
            "joinTokens": { sha256_hex(secret.as_bytes()): unix_now() + 600 },
            "nodes": { "old-1": { "password": "p", "macKey": hex::encode([1u8; 32]) } },
        });
        std::fs::write(dir.path().join(ENROLMENT_FILE), serde_json::to_vec_pretty(&file).unwrap()).unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        assert!(enrolment.check_broker_login("old-1", "old-1", "p"));
        assert_eq!(enrolment.tokens()[0].uses, 1);
        enrolment.enrol(secret, "edge-1").unwrap();
        assert!(matches!(enrolment.enrol(secret, "edge-2"), Err(EnrolError::TokenUsedUp { .. })));
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(ENROLMENT_FILE)).unwrap()).unwrap();
        assert!(written.get("joinTokens").is_none(), "migrated: {written}");
        let again = Enrolment::load_or_create(dir.path()).unwrap();
        assert!(again.node("old-1").is_some() && again.node("edge-1").is_some());
        assert_eq!(again.tokens()[0].state, TokenState::UsedUp);
    }

    #[test]
    fn the_file_stays_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        let (token, _) = token(&enrolment, 1, Duration::from_secs(60));
        enrolment.enrol(&token, "edge-1").unwrap();
        let mode = std::fs::metadata(dir.path().join(ENROLMENT_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_failed_write_changes_nothing_and_the_next_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        let (token, _) = token(&enrolment, 2, Duration::from_secs(60));
        // The temp file cannot be created while a directory sits at its path.
        let blocker = dir.path().join(ENROLMENT_FILE).with_extension("tmp");
        std::fs::create_dir(&blocker).unwrap();
        assert!(matches!(enrolment.enrol(&token, "edge-1"), Err(EnrolError::Io(_))));
        assert_eq!(enrolment.node("edge-1"), None);
        assert_eq!(enrolment.tokens()[0].used, 0, "no use spent");
        std::fs::remove_dir(&blocker).unwrap();
        enrolment.enrol(&token, "edge-1").unwrap();
        assert_eq!(Enrolment::load_or_create(dir.path()).unwrap().tokens()[0].used, 1);
    }

    /// Concurrent enrolments share writes; each caller gets its own answer.
    fn enrol_concurrently(dir: &Path, nodes: usize, threads: usize) -> Duration {
        let enrolment = Enrolment::load_or_create(dir).unwrap();
        let (token, _) = token(&enrolment, nodes as u32, Duration::from_secs(3600));
        let started = std::time::Instant::now();
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let (enrolment, token) = (&enrolment, &token);
                scope.spawn(move || {
                    for i in (thread..nodes).step_by(threads) {
                        enrolment.enrol(token, &format!("edge-{i}")).unwrap();
                    }
                });
            }
        });
        let elapsed = started.elapsed();
        assert!(matches!(enrolment.enrol(&token, "one-too-many"), Err(EnrolError::TokenUsedUp { .. })));
        let again = Enrolment::load_or_create(dir).unwrap();
        assert_eq!(again.nodes().len(), nodes);
        assert_eq!(again.tokens()[0].used, nodes as u32);
        elapsed
    }

    #[test]
    fn concurrent_enrolments_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        enrol_concurrently(dir.path(), 500, 16);
    }

    /// `cargo test -p flotilla-controller --release -- --ignored ten_thousand --nocapture`
    #[test]
    #[ignore = "a measurement: run it with --release"]
    fn ten_thousand_enrolments_from_32_threads() {
        // On the disk the target directory is on, not a tmpfs /tmp: fsync must cost.
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
        let elapsed = enrol_concurrently(dir.path(), 10_000, 32);
        println!("10,000 enrolments from 32 threads: {elapsed:?}");
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    }

    /// Asks for a rotation and waits for the answer.
    fn ask(enrolment: &Enrolment, node: &str, generation: u32) -> Option<RotationAnswer> {
        let (tx, rx) = std::sync::mpsc::channel();
        enrolment.rotate(node, generation, move |answer| _ = tx.send(answer));
        rx.recv_timeout(Duration::from_secs(5)).ok()
    }

    fn age(dir: &Path, node: &str, by: u64) -> Enrolment {
        let path = dir.join(ENROLMENT_FILE);
        let mut file: EnrolmentFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let credential = file.nodes.get_mut(node).unwrap();
        credential.issued -= by;
        if let Some(next) = &mut credential.next {
            next.issued -= by;
        }
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        Enrolment::load_or_create(dir).unwrap()
    }

    #[test]
    fn credentials_rotate_at_half_life_with_both_sets_taken_until_the_new_one_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        let (secret, _) = token(&enrolment, 1, Duration::from_secs(60));
        let first = enrolment.enrol(&secret, "edge-1").unwrap();
        enrolment.set_credential_lifetime(Duration::from_secs(100));
        // Young credentials: not yet, ask again when half the lifetime is gone.
        match ask(&enrolment, "edge-1", 0) {
            Some(RotationAnswer::NotYet { generation: 0, ask_again_s }) => assert!((49..=50).contains(&ask_again_s)),
            other => panic!("{other:?}"),
        }
        assert_eq!(ask(&enrolment, "edge-1", 7), None, "a generation the controller does not hold");
        let enrolment = age(dir.path(), "edge-1", 60);
        enrolment.set_credential_lifetime(Duration::from_secs(100));
        let Some(RotationAnswer::Grant { generation: 1, next, current_mac_key, ask_again_s }) =
            ask(&enrolment, "edge-1", 0)
        else {
            panic!("a grant expected")
        };
        assert_eq!(hex::encode(current_mac_key), first.mac_key);
        assert!((49..=50).contains(&ask_again_s));
        // The grant is on disk, and asking again gives the same one.
        let again = Enrolment::load_or_create(dir.path()).unwrap();
        let Some(RotationAnswer::Grant { next: same, .. }) = ask(&again, "edge-1", 0) else { panic!() };
        assert_eq!(same, next);
        // Both logins work, both keys are taken, until the new one is used.
        assert!(enrolment.check_broker_login("edge-1", "edge-1", &first.password));
        assert!(enrolment.check_broker_login("edge-1", "edge-1", &next.password()));
        let keys = enrolment.node_keys("edge-1").unwrap();
        assert_eq!(keys.current, first.mac_key_bytes());
        assert_eq!(keys.next, Some((1, next.mac_key)));
        let seal_key = enrolment.seal_key("edge-1").unwrap();
        enrolment.confirm_rotation("edge-1", 1);
        let wait = std::time::Instant::now();
        while enrolment.node_keys("edge-1").unwrap().next.is_some() {
            assert!(wait.elapsed() < Duration::from_secs(5), "the confirmation was not applied");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(enrolment.node_keys("edge-1").unwrap().current, Some(next.mac_key));
        assert!(!enrolment.check_broker_login("edge-1", "edge-1", &first.password), "the old password stops");
        assert!(enrolment.check_broker_login("edge-1", "edge-1", &next.password()));
        assert_eq!(enrolment.seal_key("edge-1"), Some(seal_key), "Secrets stay sealed the same");
        assert_eq!(Enrolment::load_or_create(dir.path()).unwrap().seal_key("edge-1"), Some(seal_key));
        assert!(matches!(ask(&enrolment, "edge-1", 1), Some(RotationAnswer::NotYet { generation: 1, .. })));
    }

    #[test]
    fn expired_credentials_are_refused_and_the_node_enrols_again_with_a_fresh_token() {
        let dir = tempfile::tempdir().unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        let (secret, _) = token(&enrolment, 1, Duration::from_secs(60));
        let first = enrolment.enrol(&secret, "edge-1").unwrap();
        let enrolment = age(dir.path(), "edge-1", 200);
        enrolment.set_credential_lifetime(Duration::from_secs(100));
        match enrolment.broker_login("edge-1", "edge-1", &first.password) {
            Err(LoginRefusal::Expired { node, .. }) => assert_eq!(node, "edge-1"),
            other => panic!("{other:?}"),
        }
        assert_eq!(enrolment.node_keys("edge-1").unwrap().current, None);
        assert_eq!(ask(&enrolment, "edge-1", 0), None, "no rotation past expiry");
        let (fresh, _) = token(&enrolment, 1, Duration::from_secs(60));
        let second = enrolment.enrol(&fresh, "edge-1").unwrap();
        assert!(enrolment.check_broker_login("edge-1", "edge-1", &second.password));
        // A live node's name is still not taken over.
        let (third, _) = token(&enrolment, 1, Duration::from_secs(60));
        assert!(matches!(enrolment.enrol(&third, "edge-1"), Err(EnrolError::AlreadyEnrolled { .. })));
    }

    #[test]
    fn with_an_external_broker_a_rotation_keeps_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let enrolment = Enrolment::load_or_create(dir.path()).unwrap();
        let (secret, _) = token(&enrolment, 1, Duration::from_secs(60));
        let first = enrolment.enrol(&secret, "edge-1").unwrap();
        let enrolment = age(dir.path(), "edge-1", 60);
        enrolment.set_credential_lifetime(Duration::from_secs(100));
        enrolment.set_rotate_password(false);
        let Some(RotationAnswer::Grant { next, .. }) = ask(&enrolment, "edge-1", 0) else { panic!() };
        assert_eq!(next.password(), first.password);
        assert_ne!(hex::encode(next.mac_key), first.mac_key);
    }

    #[test]
    fn credentials_of_older_files_start_their_lifetime_at_the_first_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = r#"{"controllerPassword":"c","nodes":{"old-1":{"password":"p","macKey":"00"}}}"#;
        std::fs::write(dir.path().join(ENROLMENT_FILE), file).unwrap();
        let before = unix_now();
        Enrolment::load_or_create(dir.path()).unwrap();
        let stored: EnrolmentFile =
            serde_json::from_slice(&std::fs::read(dir.path().join(ENROLMENT_FILE)).unwrap()).unwrap();
        assert!(stored.nodes["old-1"].issued >= before, "written at once, so a restart does not restart it");
    }

    #[test]
    fn the_controller_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = ControllerKey::load_or_create(dir.path()).unwrap();
        let b = ControllerKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(std::fs::read(dir.path().join(CONTROLLER_PUBLIC_KEY_FILE)).unwrap(), a.public_key());
    }

    type Follower = Box<dyn Fn(Vec<u8>, u64) + Send + Sync>;

    /// A document in memory with etcd's rules: replaced only at the
    /// revision it was read at; followers told of every version (here at
    /// once, on the writer's thread; on etcd by a watch).
    #[derive(Default)]
    struct MemoryDocument {
        inner: std::sync::Mutex<(Vec<u8>, u64)>,
        followers: std::sync::Mutex<Vec<Follower>>,
        /// Replacements refused for a stale revision.
        refused: std::sync::atomic::AtomicUsize,
        /// Followers not told (a watch running behind).
        behind: std::sync::atomic::AtomicBool,
    }

    impl SharedDocument for MemoryDocument {
        fn load(&self) -> anyhow::Result<Option<(Vec<u8>, u64)>> {
            let inner = self.inner.lock().unwrap();
            Ok((inner.1 > 0).then(|| inner.clone()))
        }

        fn replace(&self, bytes: &[u8], expected: u64) -> anyhow::Result<Option<u64>> {
            let written = {
                let mut inner = self.inner.lock().unwrap();
                if inner.1 != expected {
                    self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(None);
                }
                *inner = (bytes.to_vec(), inner.1 + 1);
                inner.clone()
            };
            if !self.behind.load(std::sync::atomic::Ordering::Relaxed) {
                for follower in self.followers.lock().unwrap().iter() {
                    follower(written.0.clone(), written.1);
                }
            }
            Ok(Some(written.1))
        }

        fn follow(&self, _after: u64, changed: Box<dyn Fn(Vec<u8>, u64) + Send + Sync>) {
            self.followers.lock().unwrap().push(changed);
        }

        fn describe(&self) -> String {
            "memory".into()
        }
    }

    #[test]
    fn controllers_sharing_an_enrolment_see_each_others_changes_and_lose_none() {
        let doc = Arc::new(MemoryDocument::default());
        let seed = tempfile::tempdir().unwrap();
        let a = Enrolment::load_or_create_shared(doc.clone(), seed.path()).unwrap();
        let b = Enrolment::load_or_create_shared(doc.clone(), seed.path()).unwrap();
        assert_eq!(a.controller_password(), b.controller_password(), "the second reads what the first created");
        let (token, _) = a.create_join_token(&TokenSpec { uses: 42, ..TokenSpec::default() }).unwrap();
        // b writes from a stale read (its watch behind a's write): refused,
        // read again, applied again; neither enrolment is lost.
        doc.behind.store(true, std::sync::atomic::Ordering::Relaxed);
        let first = a.enrol(&token, "early-a").unwrap();
        let second = b.enrol(&token, "early-b").unwrap();
        doc.behind.store(false, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(doc.refused.load(std::sync::atomic::Ordering::Relaxed), 1, "b's stale write was refused once");
        assert_eq!(b.node("early-a"), Some(first));
        assert_eq!(b.node("early-b"), Some(second));
        // Both enrol at once with the one token: every enrolment lands, and
        // each spends its own use.
        let enrolled: Vec<NodeCredential> = std::thread::scope(|scope| {
            let joins: Vec<_> = (0..40)
                .map(|i| {
                    let (side, token) = (if i % 2 == 0 { &a } else { &b }, &token);
                    scope.spawn(move || side.enrol(token, &format!("edge-{i}")).unwrap())
                })
                .collect();
            joins.into_iter().map(|join| join.join().unwrap()).collect()
        });
        for (i, credential) in enrolled.iter().enumerate() {
            let name = format!("edge-{i}");
            assert_eq!(a.node(&name).as_ref(), Some(credential), "{name} on a");
            assert_eq!(b.node(&name).as_ref(), Some(credential), "{name} on b");
        }
        assert_eq!(a.tokens()[0].used, 42);
        assert!(matches!(b.enrol(&token, "edge-41"), Err(EnrolError::TokenUsedUp { .. })));
        // A revocation on one closes connections held by the other.
        let mut removed = a.watch_removed();
        b.reset("edge-3").unwrap();
        assert_eq!(removed.try_recv().unwrap(), "edge-3");
        assert!(!a.check_broker_login("edge-3", "edge-3", &enrolled[3].password));
    }

    #[test]
    fn the_first_controller_on_etcd_starts_from_the_local_enrolment() {
        let seed = tempfile::tempdir().unwrap();
        let local = Enrolment::load_or_create(seed.path()).unwrap();
        let password = local.controller_password();
        drop(local);
        let doc = Arc::new(MemoryDocument::default());
        let shared = Enrolment::load_or_create_shared(doc, seed.path()).unwrap();
        assert_eq!(shared.controller_password(), password, "what mosquitto-config wrote for the broker");
    }
}
