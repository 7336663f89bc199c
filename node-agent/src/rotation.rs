//! Credential rotation, the node's side. The controller decides when (on
//! its own clock: half the credentials' lifetime); the node only asks and
//! follows the answer's "ask again in N seconds", a duration measured on
//! the monotonic clock. So a board whose date is wrong (no RTC, booted in
//! 1970) rotates like any other.
//!
//! 1. A random while after each connection (up to
//!    [`FIRST_ASK_WITHIN`]), and then whenever the last answer said, the node sends a [`CredentialRequest`] MAC'd with its
//!    current key.
//! 2. A [`CredentialGrant`] holding sealed credentials (signed by the
//!    controller, for this node, of the next generation, and opening with
//!    the current MAC key) is kept in `enrolment.json` as `next` before
//!    anything else, then the node reconnects with it (a clean DISCONNECT:
//!    no Last Will, and no container is touched).
//! 3. Connected with it, the node makes it its current credentials; its
//!    first frame confirms them at the controller, which drops the old
//!    ones. Refused, the node goes back to the old ones (still valid at the
//!    controller until the new ones are used) and asks again later.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use firmware_proto::{CredentialGrant, NodeId, decode_signed};

use crate::enrolment::{Enrolment, Granted, to_hex};
use crate::signed::Verifier;

/// The first request of a connection goes out after a random delay of up
/// to this (`flotilla-agent run --credential-check-within`), so a fleet
/// reconnecting at once (a controller restart) does not ask at once: 10,000
/// devices ask ~33 times a second.
pub const FIRST_ASK_WITHIN: Duration = Duration::from_secs(300);
/// A request nobody answered is sent again after this long.
pub const UNANSWERED: Duration = Duration::from_secs(60);

/// When the next credential request is due.
#[derive(Debug)]
pub struct Asking {
    due: Mutex<tokio::time::Instant>,
    changed: tokio::sync::Notify,
}

impl Default for Asking {
    fn default() -> Self {
        Asking { due: Mutex::new(tokio::time::Instant::now() + UNANSWERED), changed: tokio::sync::Notify::new() }
    }
}

impl Asking {
    /// The next request goes out `after` from now.
    pub fn after(&self, after: Duration) {
        *self.due.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now() + after;
        self.changed.notify_one();
    }

    /// When the next request is due.
    pub fn due(&self) -> tokio::time::Instant {
        *self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the request is due (and still due: an answer may have
    /// moved it meanwhile).
    pub async fn wait(&self) {
        loop {
            let due = self.due();
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = self.changed.notified() => continue,
            }
            if tokio::time::Instant::now() >= self.due() {
                return;
            }
        }
    }
}

/// A random delay between a tenth of `within` and `within`.
pub fn jitter(within: Duration) -> Duration {
    let mut noise = [0u8; 4];
    let _ = getrandom::fill(&mut noise);
    let low = within / 10;
    let span = within.saturating_sub(low).as_millis().max(1) as u64;
    low + Duration::from_millis(u64::from(u32::from_le_bytes(noise)) % span)
}

/// What a grant asks of the node.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Nothing new; ask again after this long.
    AskAgain(Duration),
    /// Switch to these credentials; ask again after this long.
    Switch(Granted, Duration),
}

/// Checks a credential grant frame for this node, whose current
/// credentials are those of `enrolment`.
pub fn read_grant(frame: &[u8], verify: &Verifier, node_id: &NodeId, enrolment: &Enrolment) -> Result<Answer, String> {
    let (grant, _) = crate::signed::check(frame, decode_signed::<CredentialGrant>, verify, node_id)
        .map_err(|e| e.describe("credential grant"))?;
    let ask_again = Duration::from_secs(u64::from(grant.ask_again_s.max(1)));
    let Some(sealed) = grant.sealed else {
        if grant.generation != enrolment.generation {
            return Err(format!(
                "the controller holds generation {} of this node's credentials, this node {}",
                grant.generation, enrolment.generation
            ));
        }
        return Ok(Answer::AskAgain(ask_again));
    };
    if grant.generation != enrolment.generation.wrapping_add(1) {
        return Err(format!(
            "a grant of generation {} for a node of generation {} (replayed or out of order)",
            grant.generation, enrolment.generation
        ));
    }
    let current = enrolment.mac_key_bytes().map_err(|e| e.to_string())?;
    let next = firmware_proto::seal::open_credentials(&current, node_id.as_str(), grant.generation, &sealed.0)
        .map_err(|e| format!("the granted credentials: {e}"))?;
    let granted =
        Granted { generation: grant.generation, mqtt_password: next.password(), mac_key: to_hex(&next.mac_key) };
    Ok(Answer::Switch(granted, ask_again))
}

/// Where the node keeps its credentials, if anywhere (the fleet simulator
/// keeps them in memory).
#[derive(Debug, Clone)]
pub struct Store {
    /// The agent's data directory.
    pub data_dir: Option<PathBuf>,
}

impl Store {
    /// Saves `enrolment`; a failure is logged (the rotation goes on in
    /// memory, and a restart falls back to what the file holds).
    pub fn save(&self, enrolment: &Enrolment) -> bool {
        let Some(dir) = &self.data_dir else { return true };
        match enrolment.save(dir) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot save the rotated credentials");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;
    use firmware_proto::enrol::EnrolResponse;

    fn enrolment(mac_key: [u8; 32], generation: u32) -> Enrolment {
        Enrolment {
            answer: EnrolResponse {
                node_name: "edge-1".into(),
                mqtt_url: "mqtt://127.0.0.1:1883".into(),
                mqtt_username: "edge-1".into(),
                mqtt_password: "old".into(),
                mac_key: to_hex(&mac_key),
                controller_key: "00".repeat(32),
                topic_prefix: "flotilla/v1".into(),
                labels: Default::default(),
                ca_pem: None,
                tls_registry: None,
            },
            generation,
            seal_key: None,
            next: None,
            token_sha256: None,
        }
    }

    fn signed(grant: &CredentialGrant, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
        firmware_proto::encode_signed_to_vec(grant, |bytes| firmware_proto::Bytes(key.sign(bytes).to_bytes())).unwrap()
    }

    #[test]
    fn a_grant_is_taken_only_signed_for_this_node_of_the_next_generation_and_sealed_with_the_current_key() {
        let controller = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let verify = crate::run::verifier(controller.verifying_key());
        let node = NodeId::new("edge-1").unwrap();
        let next = firmware_proto::seal::NodeCredentials { mac_key: [2; 32], password: [3; 24] };
        let grant = |node: &str, generation: u32, sealing_key: [u8; 32]| CredentialGrant {
            node_id: NodeId::new(node).unwrap(),
            generation,
            ask_again_s: 600,
            sealed: Some(firmware_proto::seal::seal_credentials(&sealing_key, node, generation, &next)),
        };
        let current = enrolment([1; 32], 4);
        let answer = read_grant(&signed(&grant("edge-1", 5, [1; 32]), &controller), &verify, &node, &current);
        let expected = Granted { generation: 5, mqtt_password: "03".repeat(24), mac_key: "02".repeat(32) };
        assert_eq!(answer, Ok(Answer::Switch(expected, Duration::from_secs(600))));

        let refused = |frame: Vec<u8>| read_grant(&frame, &verify, &node, &current).unwrap_err();
        assert!(refused(signed(&grant("edge-1", 4, [1; 32]), &controller)).contains("replayed"));
        assert!(refused(signed(&grant("edge-1", 5, [9; 32]), &controller)).contains("does not open"));
        assert!(refused(signed(&grant("edge-2", 5, [1; 32]), &controller)).contains("received by edge-1"));
        let forger = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        assert!(refused(signed(&grant("edge-1", 5, [1; 32]), &forger)).contains("signature"));
        assert!(refused(vec![2, 12, 0]).contains("malformed"));

        let later = CredentialGrant { node_id: node.clone(), generation: 4, ask_again_s: 0, sealed: None };
        let answer = read_grant(&signed(&later, &controller), &verify, &node, &current);
        assert_eq!(answer, Ok(Answer::AskAgain(Duration::from_secs(1))), "at least a second");
    }

    #[test]
    fn promoting_a_grant_keeps_the_enrolments_seal_key() {
        let mut current = enrolment([1; 32], 0);
        let seal_key = current.seal_key_bytes().unwrap();
        let granted = Granted { generation: 1, mqtt_password: "new".into(), mac_key: "02".repeat(32) };
        current.next = Some(granted.clone());
        current.promote(granted).unwrap();
        assert_eq!((current.generation, current.mqtt_password.as_str(), current.next.clone()), (1, "new", None));
        assert_eq!(current.mac_key_bytes().unwrap(), [2; 32]);
        assert_eq!(current.seal_key_bytes().unwrap(), seal_key);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_until_due_and_an_answer_moves_it() {
        let asking = std::sync::Arc::new(Asking::default());
        asking.after(Duration::from_secs(10));
        let waiting = tokio::spawn({
            let asking = asking.clone();
            async move {
                asking.wait().await;
                tokio::time::Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        let moved = tokio::time::Instant::now() + Duration::from_secs(30);
        asking.after(Duration::from_secs(30));
        assert!(waiting.await.unwrap() >= moved);
    }
}
