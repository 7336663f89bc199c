//! Credential rotation on the control channel: a node asks
//! ([`firmware_proto::CredentialRequest`], MAC'd with its current key), the
//! controller answers on the node's `credentials` topic with a signed
//! [`firmware_proto::CredentialGrant`]: the next credentials sealed under
//! the current MAC key once half their lifetime has passed, or when to ask
//! again. What is granted and when is decided by
//! [`Enrolment::rotate`](super::credentials::Enrolment::rotate), the
//! credentials' one writer; the node's first frame MAC'd with the new key
//! confirms them (the inbox calls
//! [`Enrolment::confirm_rotation`](super::credentials::Enrolment::confirm_rotation)).

use std::sync::Arc;

use firmware_proto::{CredentialGrant, MessageKind, NodeId, encode_signed_to_vec};
use rumqttc::{AsyncClient, QoS};

use super::Topics;
use super::credentials::{ControllerKey, Enrolment, RotationAnswer};

/// Answers nodes' credential requests.
#[derive(Clone)]
pub struct Rotation {
    client: AsyncClient,
    key: Arc<ControllerKey>,
    topics: Topics,
    enrolment: Enrolment,
    counters: super::counters::FleetCounters,
}

impl Rotation {
    /// Answers go out through `client`, signed with `key`.
    pub fn new(
        client: AsyncClient,
        key: Arc<ControllerKey>,
        topics: Topics,
        enrolment: Enrolment,
        counters: super::counters::FleetCounters,
    ) -> Self {
        Rotation { client, key, topics, enrolment, counters }
    }

    /// Node `node`, whose frame was MAC'd with generation `generation`,
    /// asks for new credentials. Returns at once; the answer is published
    /// when decided (and a grant once it is on disk).
    pub fn ask(&self, node: &str, generation: u32) {
        let Ok(node_id) = NodeId::new(node) else { return };
        let (client, key, counters) = (self.client.clone(), self.key.clone(), self.counters.clone());
        let topic = self.topics.node(node, MessageKind::Credentials);
        let name = node.to_owned();
        self.enrolment.rotate(node, generation, move |answer| {
            let grant = grant(node_id, &name, answer);
            let frame = match encode_signed_to_vec(&grant, |bytes| key.sign(bytes)) {
                Ok(frame) => frame,
                Err(e) => return tracing::error!(node = name, error = %e, "cannot encode a credential grant"),
            };
            if grant.sealed.is_some() {
                tracing::info!(node = name, generation = grant.generation, "new credentials granted");
            }
            match client.try_publish(topic, QoS::AtLeastOnce, false, frame) {
                Ok(()) => counters.sent(MessageKind::Credentials),
                Err(e) => tracing::warn!(node = name, error = %e, "credential answer not sent; the node asks again"),
            }
        });
    }
}

/// The frame body of `answer`.
fn grant(node_id: NodeId, node: &str, answer: RotationAnswer) -> CredentialGrant {
    match answer {
        RotationAnswer::Grant { generation, next, current_mac_key, ask_again_s } => CredentialGrant {
            node_id,
            generation,
            ask_again_s,
            sealed: Some(firmware_proto::seal::seal_credentials(&current_mac_key, node, generation, &next)),
        },
        RotationAnswer::NotYet { generation, ask_again_s } => {
            CredentialGrant { node_id, generation, ask_again_s, sealed: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_opens_with_the_current_key_only() {
        let next = firmware_proto::seal::NodeCredentials { mac_key: [4; 32], password: [5; 24] };
        let answer =
            RotationAnswer::Grant { generation: 3, next: next.clone(), current_mac_key: [9; 32], ask_again_s: 60 };
        let grant = grant(NodeId::new("edge-1").unwrap(), "edge-1", answer);
        let sealed = grant.sealed.expect("sealed credentials");
        assert_eq!(firmware_proto::seal::open_credentials(&[9; 32], "edge-1", 3, &sealed.0), Ok(next));
        assert!(firmware_proto::seal::open_credentials(&[4; 32], "edge-1", 3, &sealed.0).is_err());
        let later = grant_not_yet();
        assert_eq!((later.generation, later.ask_again_s, later.sealed), (2, 30, None));
    }

    fn grant_not_yet() -> CredentialGrant {
        grant(NodeId::new("edge-1").unwrap(), "edge-1", RotationAnswer::NotYet { generation: 2, ask_again_s: 30 })
    }
}
