//! The agent's rustls crypto provider, over the RustCrypto crates the agent
//! links anyway (sha2 and hmac for node MACs, ChaCha20-Poly1305 for sealed
//! Secrets, the dalek curves for signed documents), cut to what the fleet
//! CA's certificates need: TLS 1.3, `TLS13_CHACHA20_POLY1305_SHA256`,
//! X25519 and Ed25519 signatures.
//!
//! Why not rustls' ring provider: it carries every algorithm (RSA, P-256
//! with 150 KB of tables, P-384, AES), and rumqttc's TLS code reaches for
//! the crate's default provider, so none of it is left out of the binary:
//! it took the shipped aarch64 agent to 4.63 MB, over its 4.5 MB budget.
//! With this provider the agent also has no C to cross-compile.

use std::sync::Arc;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use hmac::Mac;
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter, MessageEncrypter, Nonce,
    OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload, Tls13AeadAlgorithm, UnsupportedOperationError,
    make_tls13_aad,
};
use rustls::crypto::{ActiveKeyExchange, CryptoProvider, SharedSecret, SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::pki_types::{AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm, alg_id};
use rustls::{ConnectionTrafficSecrets, ContentType, NamedGroup, ProtocolVersion, SignatureScheme};
use sha2::Digest as _;

/// The provider.
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![TLS13_CHACHA20_POLY1305_SHA256],
        kx_groups: vec![&X25519],
        signature_verification_algorithms: SIGNATURES,
        secure_random: &OsRandom,
        key_provider: &NoClientKeys,
    }
}

/// The one cipher suite.
pub static TLS13_CHACHA20_POLY1305_SHA256: rustls::SupportedCipherSuite =
    rustls::SupportedCipherSuite::Tls13(&rustls::Tls13CipherSuite {
        common: rustls::crypto::CipherSuiteCommon {
            suite: rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            hash_provider: &Sha256,
            // ChaCha20-Poly1305 has no practical limit (RFC 8446 5.5).
            confidentiality_limit: u64::MAX,
        },
        hkdf_provider: &rustls::crypto::tls13::HkdfUsingHmac(&HmacSha256),
        aead_alg: &ChaCha20Poly1305,
        quic: None,
    });

/// Ed25519, what the controller's CA and certificates are signed with.
static SIGNATURES: WebPkiSupportedAlgorithms =
    WebPkiSupportedAlgorithms { all: &[&Ed25519], mapping: &[(SignatureScheme::ED25519, &[&Ed25519])] };

#[derive(Debug)]
struct OsRandom;

impl rustls::crypto::SecureRandom for OsRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        getrandom::fill(buf).map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

/// Devices log in with their broker password, not a client certificate.
#[derive(Debug)]
struct NoClientKeys;

impl rustls::crypto::KeyProvider for NoClientKeys {
    fn load_private_key(
        &self,
        _key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General("client certificates are not supported yet".into()))
    }
}

struct Sha256;

impl rustls::crypto::hash::Hash for Sha256 {
    fn start(&self) -> Box<dyn rustls::crypto::hash::Context> {
        Box::new(Sha256Context(sha2::Sha256::new()))
    }

    fn hash(&self, data: &[u8]) -> rustls::crypto::hash::Output {
        rustls::crypto::hash::Output::new(&sha2::Sha256::digest(data))
    }

    fn algorithm(&self) -> rustls::crypto::hash::HashAlgorithm {
        rustls::crypto::hash::HashAlgorithm::SHA256
    }

    fn output_len(&self) -> usize {
        32
    }
}

struct Sha256Context(sha2::Sha256);

impl rustls::crypto::hash::Context for Sha256Context {
    fn fork_finish(&self) -> rustls::crypto::hash::Output {
        rustls::crypto::hash::Output::new(&self.0.clone().finalize())
    }

    fn fork(&self) -> Box<dyn rustls::crypto::hash::Context> {
        Box::new(Sha256Context(self.0.clone()))
    }

    fn finish(self: Box<Self>) -> rustls::crypto::hash::Output {
        rustls::crypto::hash::Output::new(&self.0.finalize())
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

struct HmacSha256;

impl rustls::crypto::hmac::Hmac for HmacSha256 {
    fn with_key(&self, key: &[u8]) -> Box<dyn rustls::crypto::hmac::Key> {
        // HMAC takes keys of any length.
        Box::new(HmacSha256Key(hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length")))
    }

    fn hash_output_len(&self) -> usize {
        32
    }
}

struct HmacSha256Key(hmac::Hmac<sha2::Sha256>);

impl rustls::crypto::hmac::Key for HmacSha256Key {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> rustls::crypto::hmac::Tag {
        let mut mac = self.0.clone();
        mac.update(first);
        for part in middle {
            mac.update(part);
        }
        mac.update(last);
        rustls::crypto::hmac::Tag::new(&mac.finalize().into_bytes())
    }

    fn tag_len(&self) -> usize {
        32
    }
}

/// The Poly1305 tag after each record.
const TAG_LEN: usize = 16;

struct ChaCha20Poly1305;

impl Tls13AeadAlgorithm for ChaCha20Poly1305 {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(RecordCipher(cipher(&key), iv))
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(RecordCipher(cipher(&key), iv))
    }

    fn key_len(&self) -> usize {
        32
    }

    fn extract_keys(&self, key: AeadKey, iv: Iv) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok(ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv })
    }
}

fn cipher(key: &AeadKey) -> chacha20poly1305::ChaCha20Poly1305 {
    // rustls hands over key_len() bytes.
    chacha20poly1305::ChaCha20Poly1305::new_from_slice(key.as_ref()).expect("a 32-byte key")
}

/// Protects records in one direction: the per-record nonce is the IV
/// XORed with the sequence number (RFC 8446 5.3).
struct RecordCipher(chacha20poly1305::ChaCha20Poly1305, Iv);

impl RecordCipher {
    fn nonce(&self, seq: u64) -> chacha20poly1305::Nonce {
        chacha20poly1305::Nonce::from(Nonce::new(&self.1, seq).0)
    }
}

impl MessageEncrypter for RecordCipher {
    fn encrypt(&mut self, message: OutboundPlainMessage<'_>, seq: u64) -> Result<OutboundOpaqueMessage, rustls::Error> {
        let total = self.encrypted_payload_len(message.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total);
        payload.extend_from_chunks(&message.payload);
        // TLSInnerPlaintext: the content, then its real type.
        payload.extend_from_slice(&message.typ.to_array());
        let tag = self
            .0
            .encrypt_inout_detached(&self.nonce(seq), &make_tls13_aad(total), payload.as_mut().into())
            .map_err(|_| rustls::Error::EncryptError)?;
        payload.extend_from_slice(&tag);
        Ok(OutboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, payload))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

impl MessageDecrypter for RecordCipher {
    fn decrypt<'a>(
        &mut self,
        mut message: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, rustls::Error> {
        let total = message.payload.len();
        let body = total.checked_sub(TAG_LEN).ok_or(rustls::Error::DecryptError)?;
        let nonce = self.nonce(seq);
        let (text, tag) = message.payload.split_at_mut(body);
        let tag = chacha20poly1305::Tag::try_from(&*tag).map_err(|_| rustls::Error::DecryptError)?;
        self.0
            .decrypt_inout_detached(&nonce, &make_tls13_aad(total), text.into(), &tag)
            .map_err(|_| rustls::Error::DecryptError)?;
        message.payload.truncate(body);
        message.into_tls13_unpadded_message()
    }
}

#[derive(Debug)]
struct X25519;

impl SupportedKxGroup for X25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        let public = curve25519_dalek::MontgomeryPoint::mul_base_clamped(secret).to_bytes();
        Ok(Box::new(X25519Exchange { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

struct X25519Exchange {
    secret: [u8; 32],
    public: [u8; 32],
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer: [u8; 32] =
            peer.try_into().map_err(|_| rustls::Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = curve25519_dalek::MontgomeryPoint(peer).mul_clamped(self.secret).to_bytes();
        // A low-order peer key gives all zeros (RFC 7748 6.1): refused.
        if shared == [0; 32] {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

#[derive(Debug)]
struct Ed25519;

impl SignatureVerificationAlgorithm for Ed25519 {
    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ED25519
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ED25519
    }

    fn verify_signature(&self, public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), InvalidSignature> {
        let key: [u8; 32] = public_key.try_into().map_err(|_| InvalidSignature)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| InvalidSignature)?;
        let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| InvalidSignature)?;
        key.verify_strict(message, &signature).map_err(|_| InvalidSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x25519_agrees_with_rfc_7748() {
        // RFC 7748 6.1: Alice's and Bob's keys and their shared secret.
        let hex = |s: &str| -> [u8; 32] {
            let mut out = [0; 32];
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
            }
            out
        };
        let alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let bob_public = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let exchange = Box::new(X25519Exchange {
            secret: alice,
            public: curve25519_dalek::MontgomeryPoint::mul_base_clamped(alice).to_bytes(),
        });
        assert_eq!(exchange.public, hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"));
        let shared = exchange.complete(&bob_public).unwrap();
        assert_eq!(shared.secret_bytes(), hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"));
        let low_order = Box::new(X25519Exchange { secret: alice, public: [0; 32] });
        assert!(low_order.complete(&[0; 32]).is_err());
    }

    #[test]
    fn records_round_trip_and_forgeries_are_refused() {
        let key = AeadKey::from([7u8; 32]);
        let iv = Iv::from([9u8; 12]);
        let mut sender = ChaCha20Poly1305.encrypter(AeadKey::from([7u8; 32]), Iv::from([9u8; 12]));
        let mut receiver = ChaCha20Poly1305.decrypter(key, iv);
        let plain = OutboundPlainMessage {
            typ: ContentType::ApplicationData,
            version: ProtocolVersion::TLSv1_2,
            payload: rustls::crypto::cipher::OutboundChunks::Single(b"heartbeat"),
        };
        let sealed = sender.encrypt(plain, 3).unwrap().encode();
        let mut good = sealed[5..].to_vec();
        let opened = receiver
            .decrypt(InboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, &mut good), 3)
            .unwrap();
        assert_eq!((opened.typ, opened.payload), (ContentType::ApplicationData, &b"heartbeat"[..]));
        // Another sequence number, or a flipped bit: refused.
        let mut replayed = sealed[5..].to_vec();
        let wrong_seq = receiver.decrypt(
            InboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, &mut replayed),
            4,
        );
        assert!(wrong_seq.is_err());
        let mut forged = sealed[5..].to_vec();
        forged[0] ^= 1;
        let forged = receiver
            .decrypt(InboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, &mut forged), 3);
        assert!(forged.is_err());
    }
}
