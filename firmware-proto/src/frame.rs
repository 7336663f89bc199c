//! The envelope around every message, and the only way to encode or decode one.
//!
//! ```text
//! node frame:       [version][kind][body ...][seq: varint u64][mac: 16 bytes]
//! controller frame: [version][kind][body ...][signature: 64 bytes]
//! ```
//!
//! Every message type names its kind through [`Message::KIND`], and one
//! generic function per envelope encodes it: [`encode_node`] (seq + MAC)
//! and [`encode_signed`] (signature); [`decode_signed`] decodes an owned
//! controller message. [`decode_node_frame`] decodes whichever node message
//! a frame holds into a [`NodeMessage`], and [`decode_desired_frame`] the
//! desired document, whose lists stay borrowed ([`DesiredView`]).
//!
//! The authenticator (MAC or signature) covers every byte before it, so the
//! version, kind, body and sequence number are all protected. Computing and
//! checking it is left to the caller through closures and
//! [`Decoded::authenticated`]: this crate stays free of key handling.

use core::fmt;
use core::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::msg::{
    ConfigObject, CredentialGrant, CredentialRequest, DesiredHeader, DesiredRules, DesiredState, Event, Hello,
    LogChunk, LogRequest, MAX_CONFIG_OBJECTS, MAX_REPLICAS, MacTag, NodeId, Presence, ReplicaSpec, ServiceTable,
    Signature, Status,
};

/// The protocol version this crate speaks and writes in byte 0 of a frame.
pub const PROTOCOL_VERSION: u8 = 2;
/// The largest frame of every kind but the Linux profile's documents
/// ([`MessageKind::max_frame_len`]), in bytes. Larger input is refused
/// before a single byte of it is parsed.
pub const MAX_FRAME_LEN: usize = 64 * 1024;
/// The largest frame of any kind: a Linux-profile pod document.
pub const MAX_ANY_FRAME_LEN: usize = 4 * 1024 * 1024;
/// The largest Linux-profile config object frame: 1 MiB of file contents,
/// 64 KiB of file names and room for the rest.
pub const MAX_CONFIG_FRAME_LEN: usize = (1024 + 64 + 8) * 1024;
/// Length of the per-node MAC that ends a node frame.
pub const MAC_LEN: usize = 16;
/// Length of the Ed25519 signature that ends a controller frame.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes before the body: version and kind.
pub const HEADER_LEN: usize = 2;

/// Byte 1 of a frame: which message the body holds. Values never change
/// meaning; new kinds take new values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageKind {
    /// [`Hello`], node to controller.
    Hello = 1,
    /// [`Presence`], node to controller (also the Last Will).
    Online = 2,
    /// [`Status`] heartbeat, node to controller.
    Status = 3,
    /// [`Event`], node to controller.
    Event = 4,
    /// [`DesiredState`], controller to node.
    Desired = 5,
    /// [`LogRequest`], controller to node.
    LogRequest = 6,
    /// [`LogChunk`], node to controller.
    Logs = 7,
    /// [`ServiceTable`], controller to node.
    Services = 8,
    /// [`crate::pod::PodDocument`], controller to a Linux-profile node.
    Pods = 9,
    /// [`crate::pod::ConfigBlob`], controller to a Linux-profile node.
    Config = 10,
    /// [`CredentialRequest`], node to controller.
    CredentialRequest = 11,
    /// [`CredentialGrant`], controller to node.
    Credentials = 12,
}

impl MessageKind {
    /// Every kind a node sends, each on its own topic leaf.
    pub const FROM_NODE: [MessageKind; 6] = [
        MessageKind::Hello,
        MessageKind::Online,
        MessageKind::Status,
        MessageKind::Event,
        MessageKind::Logs,
        MessageKind::CredentialRequest,
    ];
    /// Every kind the controller sends.
    pub const TO_NODE: [MessageKind; 6] = [
        MessageKind::Desired,
        MessageKind::LogRequest,
        MessageKind::Services,
        MessageKind::Pods,
        MessageKind::Config,
        MessageKind::Credentials,
    ];

    /// The kind for a byte, if it names one.
    pub const fn from_byte(byte: u8) -> Option<MessageKind> {
        Some(match byte {
            1 => MessageKind::Hello,
            2 => MessageKind::Online,
            3 => MessageKind::Status,
            4 => MessageKind::Event,
            5 => MessageKind::Desired,
            6 => MessageKind::LogRequest,
            7 => MessageKind::Logs,
            8 => MessageKind::Services,
            9 => MessageKind::Pods,
            10 => MessageKind::Config,
            11 => MessageKind::CredentialRequest,
            12 => MessageKind::Credentials,
            _ => return None,
        })
    }

    /// Whether nodes send this kind (and so it ends with seq + MAC).
    pub const fn is_from_node(self) -> bool {
        !matches!(
            self,
            MessageKind::Desired
                | MessageKind::LogRequest
                | MessageKind::Services
                | MessageKind::Pods
                | MessageKind::Config
                | MessageKind::Credentials
        )
    }

    /// The largest frame of this kind, in bytes.
    pub const fn max_frame_len(self) -> usize {
        match self {
            MessageKind::Pods => MAX_ANY_FRAME_LEN,
            MessageKind::Config => MAX_CONFIG_FRAME_LEN,
            _ => MAX_FRAME_LEN,
        }
    }

    /// The topic leaf this kind travels on (`nodes/{id}/<leaf>`).
    pub const fn topic_leaf(self) -> &'static str {
        match self {
            MessageKind::Hello => "hello",
            MessageKind::Online => "online",
            MessageKind::Status => "status",
            MessageKind::Event => "events",
            MessageKind::Desired => "desired",
            MessageKind::LogRequest => "logreq",
            MessageKind::Logs => "logs",
            MessageKind::Services => "services",
            MessageKind::Pods => "pods",
            // One retained topic per object: `config/{hex digest}`.
            MessageKind::Config => "config",
            MessageKind::CredentialRequest => "credreq",
            MessageKind::Credentials => "credentials",
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.topic_leaf())
    }
}

/// A message that travels in a frame of its own kind. The generic encoders
/// and decoders take any `Message`; [`MessageKind::is_from_node`] of its
/// kind says which envelope it travels in.
///
/// Adding a message: its type (in [`crate::msg`]), a [`MessageKind`] (byte,
/// topic leaf, [`MessageKind::FROM_NODE`] or [`MessageKind::TO_NODE`]) and
/// an impl below; a node message also gets a [`NodeMessage`] variant so the
/// controller can decode it.
pub trait Message: Serialize {
    /// Byte 1 of its frames, and so its topic leaf.
    const KIND: MessageKind;

    /// Rules the types cannot express. The encoders check them, so what
    /// encodes decodes, and the decoders check them again. None by default.
    fn validate(&self) -> Result<(), &'static str> {
        Ok(())
    }
}

impl Message for Hello {
    const KIND: MessageKind = MessageKind::Hello;
}

impl Message for Presence {
    const KIND: MessageKind = MessageKind::Online;
}

impl Message for Status {
    const KIND: MessageKind = MessageKind::Status;

    fn validate(&self) -> Result<(), &'static str> {
        Status::validate(self)
    }
}

impl Message for Event {
    const KIND: MessageKind = MessageKind::Event;
}

impl Message for LogChunk {
    const KIND: MessageKind = MessageKind::Logs;
}

impl Message for DesiredState<'_> {
    const KIND: MessageKind = MessageKind::Desired;

    fn validate(&self) -> Result<(), &'static str> {
        DesiredState::validate(self)
    }
}

#[cfg(feature = "alloc")]
impl Message for crate::pod::PodDocument {
    const KIND: MessageKind = MessageKind::Pods;

    fn validate(&self) -> Result<(), &'static str> {
        crate::pod::PodDocument::validate(self)
    }
}

#[cfg(feature = "alloc")]
impl Message for crate::pod::ConfigBlob {
    const KIND: MessageKind = MessageKind::Config;

    fn validate(&self) -> Result<(), &'static str> {
        crate::pod::ConfigBlob::validate(self)
    }
}

impl Message for LogRequest {
    const KIND: MessageKind = MessageKind::LogRequest;
}

impl Message for ServiceTable {
    const KIND: MessageKind = MessageKind::Services;
}

impl Message for CredentialRequest {
    const KIND: MessageKind = MessageKind::CredentialRequest;
}

impl Message for CredentialGrant {
    const KIND: MessageKind = MessageKind::Credentials;
}

/// A message a node sends.
///
/// `Hello` makes this ~7 KB whatever the variant; boxing it would need an
/// allocator, which microcontroller nodes do not have.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeMessage {
    /// Registration.
    Hello(Hello),
    /// Connected or not.
    Online(Presence),
    /// Heartbeat.
    Status(Status),
    /// Something happened.
    Event(Event),
    /// Part of an answer to a [`LogRequest`].
    Logs(LogChunk),
    /// Asks for the next credentials.
    CredentialRequest(CredentialRequest),
}

impl NodeMessage {
    /// The frame kind of this message.
    pub const fn kind(&self) -> MessageKind {
        match self {
            NodeMessage::Hello(_) => Hello::KIND,
            NodeMessage::Online(_) => Presence::KIND,
            NodeMessage::Status(_) => Status::KIND,
            NodeMessage::Event(_) => Event::KIND,
            NodeMessage::Logs(_) => LogChunk::KIND,
            NodeMessage::CredentialRequest(_) => CredentialRequest::KIND,
        }
    }
}

/// A decoded node frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFrame {
    /// The message.
    pub message: NodeMessage,
    /// The node's sequence number; strictly increasing per node, so the
    /// controller refuses replays.
    pub seq: u64,
    /// The MAC over every byte before it.
    pub mac: MacTag,
}

/// A decoded, validated desired-state document. The replicas and config
/// objects stay encoded in the frame and are decoded one at a time by
/// [`DesiredView::replicas`] and [`DesiredView::config`] (see
/// [`DesiredState`] for why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredView<'a> {
    /// The node this document is for; a node refuses any other.
    pub node_id: NodeId,
    /// Increases with every change; a node never applies an older one.
    pub generation: u64,
    /// The controller's signature over every byte before it.
    pub signature: Signature,
    replicas: Items<'a, ReplicaSpec>,
    config: Items<'a, ConfigObject>,
}

impl<'a> DesiredView<'a> {
    /// The replicas, decoded as the iterator advances. The decoder already
    /// checked every one, so the iterator yields exactly `replica_count()`.
    pub fn replicas(&self) -> Items<'a, ReplicaSpec> {
        self.replicas.clone()
    }

    /// The ConfigMap/Secret objects, decoded as the iterator advances.
    pub fn config(&self) -> Items<'a, ConfigObject> {
        self.config.clone()
    }

    /// Number of replicas.
    pub fn replica_count(&self) -> usize {
        self.replicas.remaining
    }
}

/// Items of a list that were validated when the frame was decoded and are
/// decoded again, one at a time, as the iterator advances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Items<'a, T> {
    bytes: &'a [u8],
    remaining: usize,
    item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for Items<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.remaining == 0 {
            return None;
        }
        // Cannot fail: the decoder parsed these same bytes successfully.
        let (item, rest) = postcard::take_from_bytes(self.bytes).ok()?;
        self.bytes = rest;
        self.remaining -= 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<T: DeserializeOwned> ExactSizeIterator for Items<'_, T> {}

/// A decoded frame and the bytes its authenticator covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a, T> {
    /// What was decoded. Not yet authenticated: check the MAC or signature
    /// over [`Decoded::authenticated`] before acting on it.
    pub frame: T,
    /// The bytes the MAC or signature covers.
    pub authenticated: &'a [u8],
}

/// Why bytes are not a valid frame. Every decoder returns one of these for
/// every bad input; none panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer than the two header bytes.
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// Longer than [`MAX_FRAME_LEN`].
    TooLarge {
        /// Bytes received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Byte 0 is not a version this crate speaks.
    UnsupportedVersion {
        /// The version byte received.
        found: u8,
        /// The version this crate speaks.
        supported: u8,
    },
    /// Byte 1 names no message kind.
    UnknownKind {
        /// The kind byte received.
        found: u8,
    },
    /// A valid kind, but not one this decoder accepts (e.g. a desired
    /// document handed to the node-frame decoder).
    UnexpectedKind {
        /// The kind received.
        found: MessageKind,
    },
    /// The frame ends before the body and its authenticator are complete.
    Truncated {
        /// The kind being decoded.
        kind: MessageKind,
    },
    /// Bytes left over after the authenticator.
    TrailingBytes {
        /// The kind being decoded.
        kind: MessageKind,
        /// How many extra bytes.
        count: usize,
    },
    /// The body is not a valid encoding of its message.
    Malformed {
        /// The kind being decoded.
        kind: MessageKind,
        /// What was wrong, as far as the decoder can tell.
        detail: &'static str,
    },
    /// The body decodes but breaks a rule of the message (see `validate`).
    Invalid {
        /// The kind being decoded.
        kind: MessageKind,
        /// The rule broken.
        reason: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooShort { len } => {
                write!(f, "frame of {len} bytes is shorter than its 2-byte header")
            }
            DecodeError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the {max}-byte limit")
            }
            DecodeError::UnsupportedVersion { found, supported } => {
                write!(f, "protocol version {found} is not supported (this build speaks {supported})")
            }
            DecodeError::UnknownKind { found } => write!(f, "unknown message kind {found}"),
            DecodeError::UnexpectedKind { found } => {
                write!(f, "a {found} message is not expected here")
            }
            DecodeError::Truncated { kind } => write!(f, "{kind} frame is truncated"),
            DecodeError::TrailingBytes { kind, count } => {
                write!(f, "{kind} frame has {count} unexpected bytes after its authenticator")
            }
            DecodeError::Malformed { kind, detail } => {
                write!(f, "malformed {kind} message: {detail}")
            }
            DecodeError::Invalid { kind, reason } => write!(f, "invalid {kind} message: {reason}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small (or the frame would exceed
    /// [`MAX_FRAME_LEN`]).
    BufferFull,
    /// The message breaks a rule that decoders enforce, so it would be refused.
    Invalid {
        /// The rule broken.
        reason: &'static str,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferFull => {
                write!(f, "message does not fit the buffer or the {MAX_FRAME_LEN}-byte frame limit")
            }
            EncodeError::Invalid { reason } => write!(f, "message would be refused: {reason}"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Reads and checks the two header bytes, and the frame's length against
/// its kind's limit.
pub fn peek_kind(bytes: &[u8]) -> Result<MessageKind, DecodeError> {
    if bytes.len() > MAX_ANY_FRAME_LEN {
        return Err(DecodeError::TooLarge { len: bytes.len(), max: MAX_ANY_FRAME_LEN });
    }
    let [version, kind, ..] = *bytes else {
        return Err(DecodeError::TooShort { len: bytes.len() });
    };
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version, supported: PROTOCOL_VERSION });
    }
    let kind = MessageKind::from_byte(kind).ok_or(DecodeError::UnknownKind { found: kind })?;
    if bytes.len() > kind.max_frame_len() {
        return Err(DecodeError::TooLarge { len: bytes.len(), max: kind.max_frame_len() });
    }
    Ok(kind)
}

/// Encodes a message a node sends (its kind is in [`MessageKind::FROM_NODE`])
/// with its sequence number; `mac` computes the tag over the bytes it is
/// given (every byte before the tag).
pub fn encode_node<'b, M: Message>(
    message: &M,
    seq: u64,
    mac: impl FnOnce(&[u8]) -> MacTag,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], EncodeError> {
    const { assert!(M::KIND.is_from_node(), "a controller message goes in a signed frame: use encode_signed") };
    message.validate().map_err(|reason| EncodeError::Invalid { reason })?;
    let buf = limit(buf, M::KIND);
    let mut len = write_header(M::KIND, buf)?;
    len += write_body(message, &mut buf[len..])?;
    len += write_body(&seq, &mut buf[len..])?;
    let tag = mac(&buf[..len]);
    let end = len + MAC_LEN;
    buf.get_mut(len..end).ok_or(EncodeError::BufferFull)?.copy_from_slice(&tag.0);
    Ok(&mut buf[..end])
}

/// [`encode_node`] for whichever message a [`NodeMessage`] holds (e.g. one
/// decoded by [`decode_node_frame`]).
pub fn encode_node_frame<'b>(
    message: &NodeMessage,
    seq: u64,
    mac: impl FnOnce(&[u8]) -> MacTag,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], EncodeError> {
    match message {
        NodeMessage::Hello(m) => encode_node(m, seq, mac, buf),
        NodeMessage::Online(m) => encode_node(m, seq, mac, buf),
        NodeMessage::Status(m) => encode_node(m, seq, mac, buf),
        NodeMessage::Event(m) => encode_node(m, seq, mac, buf),
        NodeMessage::Logs(m) => encode_node(m, seq, mac, buf),
        NodeMessage::CredentialRequest(m) => encode_node(m, seq, mac, buf),
    }
}

/// Encodes a message the controller sends (its kind is in
/// [`MessageKind::TO_NODE`]); `sign` computes the signature over the bytes
/// it is given (every byte before the signature).
pub fn encode_signed<'b, M: Message>(
    message: &M,
    sign: impl FnOnce(&[u8]) -> Signature,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], EncodeError> {
    const { assert!(!M::KIND.is_from_node(), "a node message goes in a MAC'd frame: use encode_node") };
    message.validate().map_err(|reason| EncodeError::Invalid { reason })?;
    let buf = limit(buf, M::KIND);
    let mut len = write_header(M::KIND, buf)?;
    len += write_body(message, &mut buf[len..])?;
    let signature = sign(&buf[..len]);
    let end = len + SIGNATURE_LEN;
    buf.get_mut(len..end).ok_or(EncodeError::BufferFull)?.copy_from_slice(&signature.0);
    Ok(&mut buf[..end])
}

/// Decodes a message the controller sent (a log request, a service table;
/// the desired document has [`decode_desired_frame`]), refusing a frame of
/// any other kind. The signature is returned with the bytes it covers;
/// check it before using the message.
pub fn decode_signed<M: Message + DeserializeOwned>(bytes: &[u8]) -> Result<Decoded<'_, (M, Signature)>, DecodeError> {
    const { assert!(!M::KIND.is_from_node(), "a node message comes in a MAC'd frame: use decode_node_frame") };
    let kind = M::KIND;
    let found = peek_kind(bytes)?;
    if found != kind {
        return Err(DecodeError::UnexpectedKind { found });
    }
    let (authenticated, sig) = split_authenticator(bytes, kind, SIGNATURE_LEN)?;
    let (message, rest) = read_message::<M>(&authenticated[HEADER_LEN..])?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { kind, count: rest.len() });
    }
    let mut signature = Signature::default();
    signature.0.copy_from_slice(sig);
    Ok(Decoded { frame: (message, signature), authenticated })
}

/// Decodes a frame a node sent (hello, online, status, event, logs).
pub fn decode_node_frame(bytes: &[u8]) -> Result<Decoded<'_, NodeFrame>, DecodeError> {
    let kind = peek_kind(bytes)?;
    if !kind.is_from_node() {
        return Err(DecodeError::UnexpectedKind { found: kind });
    }
    let (authenticated, mac) = split_authenticator(bytes, kind, MAC_LEN)?;
    let body = &authenticated[HEADER_LEN..];
    let (message, rest) = match kind {
        MessageKind::Hello => read_message(body).map(|(m, r)| (NodeMessage::Hello(m), r))?,
        MessageKind::Online => read_message(body).map(|(m, r)| (NodeMessage::Online(m), r))?,
        MessageKind::Status => read_message(body).map(|(m, r)| (NodeMessage::Status(m), r))?,
        MessageKind::Event => read_message(body).map(|(m, r)| (NodeMessage::Event(m), r))?,
        MessageKind::Logs => read_message(body).map(|(m, r)| (NodeMessage::Logs(m), r))?,
        MessageKind::CredentialRequest => read_message(body).map(|(m, r)| (NodeMessage::CredentialRequest(m), r))?,
        MessageKind::Desired
        | MessageKind::LogRequest
        | MessageKind::Services
        | MessageKind::Pods
        | MessageKind::Config
        | MessageKind::Credentials => {
            return Err(DecodeError::UnexpectedKind { found: kind });
        }
    };
    let (seq, rest) = read_body::<u64>(kind, rest)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { kind, count: rest.len() });
    }
    let mut tag = MacTag::default();
    tag.0.copy_from_slice(mac);
    Ok(Decoded { frame: NodeFrame { message, seq, mac: tag }, authenticated })
}

/// Decodes a frame the controller sent (a desired-state document), checking
/// every replica and config object in it.
pub fn decode_desired_frame(bytes: &[u8]) -> Result<Decoded<'_, DesiredView<'_>>, DecodeError> {
    let kind = peek_kind(bytes)?;
    if kind != MessageKind::Desired {
        return Err(DecodeError::UnexpectedKind { found: kind });
    }
    let invalid = |reason| DecodeError::Invalid { kind, reason };
    let (authenticated, sig) = split_authenticator(bytes, kind, SIGNATURE_LEN)?;
    let (header, rest) = read_body::<DesiredHeader>(kind, &authenticated[HEADER_LEN..])?;
    let mut rules = DesiredRules::new();
    let (replicas, rest) = read_list::<ReplicaSpec>(kind, rest, MAX_REPLICAS, |r| rules.replica(r))?;
    let (config, rest) = read_list::<ConfigObject>(kind, rest, MAX_CONFIG_OBJECTS, DesiredRules::config)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { kind, count: rest.len() });
    }
    rules.finish(config.remaining).map_err(invalid)?;
    let mut signature = Signature::default();
    signature.0.copy_from_slice(sig);
    let view = DesiredView { node_id: header.node_id, generation: header.generation, signature, replicas, config };
    Ok(Decoded { frame: view, authenticated })
}

/// Reads a postcard sequence of at most `max` items, checking each with
/// `check`, and returns it as lazily decoded [`Items`].
fn read_list<'a, T: DeserializeOwned>(
    kind: MessageKind,
    bytes: &'a [u8],
    max: usize,
    mut check: impl FnMut(&T) -> Result<(), &'static str>,
) -> Result<(Items<'a, T>, &'a [u8]), DecodeError> {
    let (count, mut rest) = read_body::<u64>(kind, bytes)?;
    if count > max as u64 {
        return Err(DecodeError::Malformed { kind, detail: "a list is longer than its capacity" });
    }
    let start = rest;
    for _ in 0..count {
        let (item, after) = read_body::<T>(kind, rest)?;
        check(&item).map_err(|reason| DecodeError::Invalid { kind, reason })?;
        rest = after;
    }
    let used = start.len() - rest.len();
    Ok((Items { bytes: &start[..used], remaining: count as usize, item: PhantomData }, rest))
}

/// Splits off the fixed-length authenticator at the end of the frame.
///
/// Why from the end: the authenticator has a fixed length, so the body parser
/// never sees it and a body that claims to be longer than the frame is
/// caught as truncated, not misread as MAC bytes.
fn split_authenticator(bytes: &[u8], kind: MessageKind, len: usize) -> Result<(&[u8], &[u8]), DecodeError> {
    if bytes.len() < HEADER_LEN + len {
        return Err(DecodeError::Truncated { kind });
    }
    Ok(bytes.split_at(bytes.len() - len))
}

fn limit(buf: &mut [u8], kind: MessageKind) -> &mut [u8] {
    let len = buf.len().min(kind.max_frame_len());
    &mut buf[..len]
}

fn write_header(kind: MessageKind, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let header = buf.get_mut(..HEADER_LEN).ok_or(EncodeError::BufferFull)?;
    header.copy_from_slice(&[PROTOCOL_VERSION, kind as u8]);
    Ok(HEADER_LEN)
}

fn write_body<T: Serialize + ?Sized>(value: &T, buf: &mut [u8]) -> Result<usize, EncodeError> {
    postcard::to_slice(value, buf).map(|used| used.len()).map_err(|err| match err {
        postcard::Error::SerializeBufferFull => EncodeError::BufferFull,
        // Our types only serialize what they can also deserialize; anything
        // else would be a bug caught by the round-trip tests.
        _ => EncodeError::Invalid { reason: "value cannot be serialized" },
    })
}

/// Reads one message body and checks its [`Message::validate`] rules.
fn read_message<M: Message + DeserializeOwned>(bytes: &[u8]) -> Result<(M, &[u8]), DecodeError> {
    let (message, rest) = read_body::<M>(M::KIND, bytes)?;
    message.validate().map_err(|reason| DecodeError::Invalid { kind: M::KIND, reason })?;
    Ok((message, rest))
}

fn read_body<T: DeserializeOwned>(kind: MessageKind, bytes: &[u8]) -> Result<(T, &[u8]), DecodeError> {
    postcard::take_from_bytes(bytes).map_err(|err| {
        let detail = match err {
            postcard::Error::DeserializeUnexpectedEnd => return DecodeError::Truncated { kind },
            postcard::Error::DeserializeBadVarint => "bad varint",
            postcard::Error::DeserializeBadBool => "bad bool",
            postcard::Error::DeserializeBadChar => "bad char",
            postcard::Error::DeserializeBadUtf8 => "invalid UTF-8 in a string",
            postcard::Error::DeserializeBadOption => "bad option tag",
            postcard::Error::DeserializeBadEnum => "unknown enum variant",
            postcard::Error::DeserializeBadEncoding => "bad encoding",
            // serde's own errors (an unknown enum variant) and those of the
            // bounded types (capacity exceeded, bad identifier) all arrive
            // here: postcard keeps no message.
            postcard::Error::SerdeDeCustom => {
                "a field value is out of range (unknown variant, over capacity or bad identifier)"
            }
            _ => "undecodable",
        };
        DecodeError::Malformed { kind, detail }
    })
}

#[cfg(feature = "alloc")]
mod with_alloc {
    extern crate alloc;
    use alloc::vec::Vec;

    use super::*;

    /// Header and body in a `Vec` grown to fit (no frame-sized scratch: a
    /// pod document may be 4 MiB, and the controller keeps one frame per
    /// node, so each is sized to its bytes).
    fn header_and_body<M: Message>(message: &M) -> Result<Vec<u8>, EncodeError> {
        message.validate().map_err(|reason| EncodeError::Invalid { reason })?;
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&[PROTOCOL_VERSION, M::KIND as u8]);
        postcard::to_extend(message, out).map_err(|_| EncodeError::Invalid { reason: "value cannot be serialized" })
    }

    fn finish(mut out: Vec<u8>, kind: MessageKind, authenticator: &[u8]) -> Result<Vec<u8>, EncodeError> {
        if out.len() + authenticator.len() > kind.max_frame_len() {
            return Err(EncodeError::BufferFull);
        }
        out.extend_from_slice(authenticator);
        out.shrink_to_fit();
        Ok(out)
    }

    /// [`encode_node`] into a fresh `Vec`.
    pub fn encode_node_to_vec<M: Message>(
        message: &M,
        seq: u64,
        mac: impl FnOnce(&[u8]) -> MacTag,
    ) -> Result<Vec<u8>, EncodeError> {
        const { assert!(M::KIND.is_from_node(), "a controller message goes in a signed frame") };
        let out = header_and_body(message)?;
        let out = postcard::to_extend(&seq, out).map_err(|_| EncodeError::BufferFull)?;
        if out.len() + MAC_LEN > M::KIND.max_frame_len() {
            return Err(EncodeError::BufferFull);
        }
        let tag = mac(&out);
        finish(out, M::KIND, &tag.0)
    }

    /// [`encode_node_frame`] into a fresh `Vec`.
    pub fn encode_node_frame_to_vec(
        message: &NodeMessage,
        seq: u64,
        mac: impl FnOnce(&[u8]) -> MacTag,
    ) -> Result<Vec<u8>, EncodeError> {
        match message {
            NodeMessage::Hello(m) => encode_node_to_vec(m, seq, mac),
            NodeMessage::Online(m) => encode_node_to_vec(m, seq, mac),
            NodeMessage::Status(m) => encode_node_to_vec(m, seq, mac),
            NodeMessage::Event(m) => encode_node_to_vec(m, seq, mac),
            NodeMessage::Logs(m) => encode_node_to_vec(m, seq, mac),
            NodeMessage::CredentialRequest(m) => encode_node_to_vec(m, seq, mac),
        }
    }

    /// [`encode_signed`] into a fresh `Vec`.
    pub fn encode_signed_to_vec<M: Message>(
        message: &M,
        sign: impl FnOnce(&[u8]) -> Signature,
    ) -> Result<Vec<u8>, EncodeError> {
        const { assert!(!M::KIND.is_from_node(), "a node message goes in a MAC'd frame") };
        let out = header_and_body(message)?;
        if out.len() + SIGNATURE_LEN > M::KIND.max_frame_len() {
            return Err(EncodeError::BufferFull);
        }
        let signature = sign(&out);
        finish(out, M::KIND, &signature.0)
    }
}

#[cfg(feature = "alloc")]
pub use with_alloc::{encode_node_frame_to_vec, encode_node_to_vec, encode_signed_to_vec};
