//! Frames the controller signs for a node: desired documents, service
//! tables, log requests. Each is decoded, its signature checked with the
//! controller's key, and refused unless it is addressed to this node, here,
//! before any of it is used.

use firmware_proto::{CredentialGrant, DecodeError, Decoded, DesiredView, LogRequest, NodeId, ServiceTable, Signature};

/// Checks a controller signature over the authenticated bytes.
pub type Verifier = Box<dyn Fn(&[u8], &Signature) -> bool + Send + Sync>;

/// A decoded controller frame: the node it is for and the signature over it.
pub trait Signed {
    /// The node the frame is addressed to.
    fn node_id(&self) -> &NodeId;
    /// The controller's signature over the frame.
    fn signature(&self) -> &Signature;
}

impl Signed for DesiredView<'_> {
    fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }
}

impl Signed for (firmware_proto::pod::PodDocument, Signature) {
    fn node_id(&self) -> &NodeId {
        &self.0.node_id
    }

    fn signature(&self) -> &Signature {
        &self.1
    }
}

impl Signed for (ServiceTable, Signature) {
    fn node_id(&self) -> &NodeId {
        &self.0.node_id
    }

    fn signature(&self) -> &Signature {
        &self.1
    }
}

impl Signed for (LogRequest, Signature) {
    fn node_id(&self) -> &NodeId {
        &self.0.node_id
    }

    fn signature(&self) -> &Signature {
        &self.1
    }
}

impl Signed for (CredentialGrant, Signature) {
    fn node_id(&self) -> &NodeId {
        &self.0.node_id
    }

    fn signature(&self) -> &Signature {
        &self.1
    }
}

/// Why a signed controller frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a valid frame.
    Malformed(DecodeError),
    /// The signature does not verify with the controller's key.
    BadSignature,
    /// Addressed to another node.
    WrongNode {
        /// This node.
        expected: NodeId,
        /// The node in the frame.
        found: NodeId,
    },
}

impl Refusal {
    /// The refusal as a message about a `what` ("service table").
    pub fn describe(&self, what: &str) -> String {
        match self {
            Refusal::Malformed(e) => format!("malformed {what}: {e}"),
            Refusal::BadSignature => format!("{what} signature does not verify with the controller key"),
            Refusal::WrongNode { expected, found } => format!("{what} for node {found} received by {expected}"),
        }
    }
}

/// Decodes `frame` with `decode` (firmware-proto's `decode_signed::<M>`,
/// or `decode_desired_frame`), then checks it: the signature first, with `verify`
/// over the bytes it covers, then that it is for `node_id`.
pub fn check<'a, T: Signed>(
    frame: &'a [u8],
    decode: impl FnOnce(&'a [u8]) -> Result<Decoded<'a, T>, DecodeError>,
    verify: &Verifier,
    node_id: &NodeId,
) -> Result<T, Refusal> {
    let decoded = decode(frame).map_err(Refusal::Malformed)?;
    let message = decoded.frame;
    if !verify(decoded.authenticated, message.signature()) {
        return Err(Refusal::BadSignature);
    }
    if message.node_id() != node_id {
        return Err(Refusal::WrongNode { expected: node_id.clone(), found: message.node_id().clone() });
    }
    Ok(message)
}
