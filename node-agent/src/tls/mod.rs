//! TLS to the controller (`mqtts://`, `https://`): the agent trusts the
//! fleet's CA and nothing else, not the public roots.
//!
//! At enrolment the agent knows only the SHA-256 of the CA's certificate
//! (`--ca-sha256`, printed by `flotilla node token create`): the server
//! sends the CA after its own certificate, and [`pinned`] accepts the
//! chain if a certificate in it has that hash and signed the server's. The
//! enrolment answer then carries the CA itself, which [`trusting`] uses
//! from then on.
//!
//! Clocks: the controller dates its certificates from the Unix epoch, so a
//! board without a real-time clock that boots in 1970 still accepts them;
//! expiry is checked against the device's clock as it is.

use std::sync::Arc;

use anyhow::Context;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest as _;

mod crypto;

/// The crypto provider ([`crypto`]): TLS 1.3, ChaCha20-Poly1305, X25519
/// and Ed25519, what the fleet CA's certificates need.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::provider())
}

/// Parses `sha256:<64 hex digits>` (the prefix may be left out).
pub fn parse_pin(text: &str) -> anyhow::Result<[u8; 32]> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    let bad = || anyhow::anyhow!("--ca-sha256 {text:?}: not sha256:<64 hex digits>");
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut pin = [0; 32];
    for (i, byte) in pin.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(pin)
}

/// The certificates in a PEM text.
pub fn pem_certificates(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the fleet CA is not PEM certificates")?;
    anyhow::ensure!(!certs.is_empty(), "the fleet CA holds no certificate");
    Ok(certs)
}

/// The pin of the (first) CA certificate in `pem`: its SHA-256, what
/// `--ca-sha256` gives as `sha256:<hex>` ([`pin_text`]).
pub fn pem_pin(pem: &str) -> anyhow::Result<[u8; 32]> {
    Ok(sha2::Sha256::digest(&pem_certificates(pem)?[0]).into())
}

/// A pin as `--ca-sha256` takes it: `sha256:<64 hex digits>`.
pub fn pin_text(pin: &[u8; 32]) -> String {
    format!("sha256:{}", crate::enrolment::to_hex(pin))
}

/// Whether the CA certificates in `pem` include one hashing to `pin`.
pub fn pem_matches_pin(pem: &str, pin: &[u8; 32]) -> anyhow::Result<bool> {
    Ok(pem_certificates(pem)?.iter().any(|cert| sha2::Sha256::digest(cert).as_slice() == pin))
}

/// A client config trusting only the CA certificates in `pem`.
pub fn trusting(pem: &str) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in pem_certificates(pem)? {
        roots.add(cert).context("the fleet CA certificate is unusable")?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .context("building the certificate verifier")?;
    config(verifier)
}

/// A client config for enrolment: the server's chain must carry a CA
/// certificate whose SHA-256 is `pin`, and that CA must have signed the
/// server's certificate for the name dialled.
pub fn pinned(pin: [u8; 32]) -> anyhow::Result<Arc<ClientConfig>> {
    config(Arc::new(PinnedCa { pin, algorithms: provider().signature_verification_algorithms }))
}

fn config(verifier: Arc<dyn ServerCertVerifier>) -> anyhow::Result<Arc<ClientConfig>> {
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

const PIN_MISMATCH: &str = "the controller's CA certificate does not match --ca-sha256";

/// Trusts the chain's certificate with the pinned hash as the root.
#[derive(Debug)]
struct PinnedCa {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca =
            intermediates.iter().find(|cert| sha2::Sha256::digest(cert).as_slice() == self.pin).ok_or_else(|| {
                rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(WrongCa(
                    PIN_MISMATCH,
                )))))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[derive(Debug)]
struct WrongCa(&'static str);

impl std::fmt::Display for WrongCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for WrongCa {}

/// The message of a TLS failure, with what it likely means for a device.
pub fn explain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    if text.contains(PIN_MISMATCH) {
        text = format!(
            "{PIN_MISMATCH}: this is not the controller the join token came from, or the pin was mistyped \
             (`flotilla node token create` prints it)"
        );
    } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        text += " (the server's certificate is not from the fleet CA this device pinned at enrolment: \
                 a different controller, or its CA was made again; enrol the device again)";
    } else if text.contains("Expired") || text.contains("certificate expired") {
        text += " (is this device's clock far ahead?)";
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_with_or_without_their_prefix() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_pin(&format!("sha256:{hex}")).unwrap(), [0xab; 32]);
        assert_eq!(parse_pin(&hex).unwrap(), [0xab; 32]);
        for bad in ["sha256:ab", "", &"zz".repeat(32), &format!("sha1:{hex}")] {
            assert!(parse_pin(bad).unwrap_err().to_string().contains("--ca-sha256"), "{bad}");
        }
    }
}
