//! The fleet's TLS: a certificate authority made at the first start
//! (`<data dir>/tls/ca.pem`, its key `ca.key` mode 0600), the server
//! certificate it issues for the API, the registry and the MQTT gate, and
//! the trust of the controller's own clients (the CLI, image pushes, the
//! pinning loop).
//!
//! Devices pin the CA, not the server certificate: at enrolment by the
//! SHA-256 of its DER bytes (`flotilla node token create` prints it), then
//! by the CA certificate the enrolment answer carries. So the server
//! certificate is issued again at every start (names may have changed) and
//! renewed while the controller runs, without any device noticing.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::Digest as _;

/// Directory of the CA under the data directory.
pub const TLS_DIR: &str = "tls";
/// The CA certificate (PEM), public: devices and clients trust it.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key (PEM, 0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// The browsers' CA certificate (PEM): operators import it to open the
/// dashboard over HTTPS.
pub const BROWSER_CA_CERT_FILE: &str = "browser-ca.pem";
/// Its private key (PEM, 0600).
pub const BROWSER_CA_KEY_FILE: &str = "browser-ca.key";

/// One of the server's two CAs: what it is called and signs with.
#[derive(Debug, Clone, Copy)]
pub struct CaKind {
    cert_file: &'static str,
    key_file: &'static str,
    algorithm: &'static rcgen::SignatureAlgorithm,
    common_name: &'static str,
    /// Only browsers trust it: a new one costs an import, not a re-enrolment.
    browsers_only: bool,
}

/// The fleet CA, which devices pin: Ed25519, for it and its server
/// certificates. The agent then needs no P-256 code (ring's P-256 tables
/// alone are 150 KB of its 4.5 MB budget), and OpenSSL, Go and rustls
/// clients (curl, skopeo, the CLI) accept it.
pub const FLEET: CaKind = CaKind {
    cert_file: CA_CERT_FILE,
    key_file: CA_KEY_FILE,
    algorithm: &rcgen::PKCS_ED25519,
    common_name: "Flotilla fleet CA",
    browsers_only: false,
};

/// The browsers' CA: ECDSA P-256, because browsers take no Ed25519
/// certificate. The server hands its chain to a client that does not offer
/// Ed25519 signatures (browsers); devices and the CLI offer them and get
/// the fleet CA's, so devices never see this one.
pub const BROWSER: CaKind = CaKind {
    cert_file: BROWSER_CA_CERT_FILE,
    key_file: BROWSER_CA_KEY_FILE,
    algorithm: &rcgen::PKCS_ECDSA_P256_SHA256,
    common_name: "Flotilla browser CA",
    browsers_only: true,
};

/// How long the CA is valid: long, since every device pins it.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 86_400);
/// How long a server certificate is valid, and how often it is renewed.
const SERVER_VALIDITY: Duration = Duration::from_secs(90 * 86_400);
const SERVER_RENEW_EVERY: Duration = Duration::from_secs(86_400);
/// Certificates are valid from the Unix epoch: a device whose clock is
/// behind (a board without a real-time clock boots in 1970) still accepts
/// them. Their end is checked against the device's clock as it is.
const VALID_FROM: time::OffsetDateTime = time::OffsetDateTime::UNIX_EPOCH;

/// The rustls crypto provider of every TLS endpoint here: ring, as on the
/// agent, where it is the provider that cross-compiles and fits the binary
/// budget (rustls deprecates it for lacking post-quantum key exchange).
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA of the server's ([`FLEET`] or [`BROWSER`]): it signs the
/// controller's server certificates.
pub struct FleetCa {
    kind: CaKind,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for FleetCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetCa").field("sha256", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl FleetCa {
    /// The fleet CA certificate's path under `data_dir`.
    pub fn cert_path(data_dir: &Path) -> PathBuf {
        data_dir.join(TLS_DIR).join(CA_CERT_FILE)
    }

    /// Loads the fleet CA from `data_dir`, or makes one (first start).
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<FleetCa> {
        Self::load_or_create_kind(data_dir, FLEET)
    }

    /// Loads the CA of `kind` from `data_dir`, or makes one (first start,
    /// or the first start of a version that has it).
    pub fn load_or_create_kind(data_dir: &Path, kind: CaKind) -> anyhow::Result<FleetCa> {
        let dir = data_dir.join(TLS_DIR);
        let (cert_path, key_path) = (dir.join(kind.cert_file), dir.join(kind.key_file));
        match (std::fs::read_to_string(&cert_path), std::fs::read_to_string(&key_path)) {
            (Ok(cert_pem), Ok(key_pem)) => {
                let key = KeyPair::from_pem(&key_pem)
                    .with_context(|| format!("{}: not a private key in PEM", key_path.display()))?;
                let cert_der = pem_certificates(cert_pem.as_bytes())
                    .with_context(|| format!("reading {}", cert_path.display()))?
                    .into_iter()
                    .next()
                    .with_context(|| format!("{}: no certificate in it", cert_path.display()))?;
                let issuer = Issuer::from_ca_cert_der(&cert_der, key)
                    .with_context(|| format!("{}: not a CA certificate rcgen can sign with", cert_path.display()))?;
                Ok(FleetCa { kind, cert_der, cert_pem, issuer })
            }
            (Err(a), Err(b)) if a.kind() == std::io::ErrorKind::NotFound && b.kind() == a.kind() => {
                let ca = FleetCa::generate(kind)?;
                std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                crate::store::write_private(&key_path, ca.issuer.key().serialize_pem().as_bytes())
                    .with_context(|| format!("writing {}", key_path.display()))?;
                std::fs::write(&cert_path, &ca.cert_pem).with_context(|| format!("writing {}", cert_path.display()))?;
                tracing::info!(path = %cert_path.display(), sha256 = ca.fingerprint(), "made the {}", kind.common_name);
                Ok(ca)
            }
            (cert, _) if kind.browsers_only => {
                let missing = if cert.is_err() { &cert_path } else { &key_path };
                anyhow::bail!(
                    "{} is missing or unreadable while its pair is there: restore it from a backup, or remove both \
                     {} and {} to make a new one (and import it into the browsers again)",
                    missing.display(),
                    cert_path.display(),
                    key_path.display()
                )
            }
            (cert, _) => {
                let missing = if cert.is_err() { &cert_path } else { &key_path };
                anyhow::bail!(
                    "{} is missing or unreadable while its pair is there: restore it from a backup (devices pin this \
                     CA), or remove {} to make a new CA and enrol every device again",
                    missing.display(),
                    dir.display()
                )
            }
        }
    }

    fn generate(kind: CaKind) -> anyhow::Result<FleetCa> {
        let key = KeyPair::generate_for(kind.algorithm).context("generating the CA key")?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        let id = hex::encode(crate::store::random_bytes::<4>()?);
        name.push(DnType::OrganizationName, "Flotilla");
        name.push(DnType::CommonName, format!("{} {id}", kind.common_name));
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = VALID_FROM;
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key).context("signing the CA certificate")?;
        Ok(FleetCa { kind, cert_der: cert.der().clone(), cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// `sha256:<hex>` of the CA certificate's DER bytes: what a device pins
    /// at enrolment (`flotilla-agent run --ca-sha256`).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// A server certificate for `names` (host names and addresses), with
    /// the CA after it in the chain (devices that pin the CA by its hash
    /// find it there).
    pub fn issue_server(&self, names: &[String]) -> anyhow::Result<CertifiedKey> {
        let mut params = CertificateParams::new(names.to_vec()).context("certificate names")?;
        params.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = VALID_FROM;
        params.not_after = now + SERVER_VALIDITY;
        let key = KeyPair::generate_for(self.kind.algorithm).context("generating the server key")?;
        let cert = params.signed_by(&key, &self.issuer).context("signing the server certificate")?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = provider().key_provider.load_private_key(private).context("loading the server key")?;
        Ok(CertifiedKey::new(vec![cert.der().clone(), self.cert_der.clone()], signing))
    }
}

/// `sha256:<hex>` of a certificate's DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(der)))
}

/// The certificates in a PEM text.
pub fn pem_certificates(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().context("not PEM certificates")
}

/// The names a server certificate holds: the advertised host, this host's
/// name, loopback, the listen addresses that name one, and `extra`.
pub fn server_names(advertise: &str, listen: &[IpAddr], extra: &[String]) -> Vec<String> {
    let mut names = vec![advertise.to_owned()];
    names.extend(extra.iter().cloned());
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname")
        && !host.trim().is_empty()
    {
        names.push(host.trim().to_owned());
    }
    names.extend(["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()]);
    names.extend(listen.iter().filter(|ip| !ip.is_unspecified()).map(IpAddr::to_string));
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(name.clone()));
    names
}

/// The server certificates in use (the fleet CA's and the browsers'),
/// renewed in place.
#[derive(Debug)]
pub struct ServerCertificate {
    fleet: RwLock<Arc<CertifiedKey>>,
    browser: RwLock<Arc<CertifiedKey>>,
}

impl ServerCertificate {
    fn issue(fleet: &FleetCa, browser: &FleetCa, names: &[String]) -> anyhow::Result<(CertifiedKey, CertifiedKey)> {
        Ok((fleet.issue_server(names)?, browser.issue_server(names)?))
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Devices and the CLI offer Ed25519 and pin or trust the fleet CA;
        // browsers offer no Ed25519 and get the P-256 chain.
        let chain = match hello.signature_schemes().contains(&rustls::SignatureScheme::ED25519) {
            true => &self.fleet,
            false => &self.browser,
        };
        Some(chain.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// What the TLS endpoints of a running server share.
#[derive(Clone)]
pub struct ServerTls {
    /// The acceptor for the API and the MQTT gate.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The CA (its PEM goes to devices at enrolment).
    pub ca: Arc<FleetCa>,
    /// The browsers' CA (operators import it to open the dashboard).
    pub browser_ca: Arc<FleetCa>,
}

impl ServerTls {
    /// Issues a certificate for `names` and renews it every day while the
    /// runtime lives.
    pub fn start(ca: FleetCa, browser_ca: FleetCa, names: Vec<String>) -> anyhow::Result<ServerTls> {
        let (ca, browser_ca) = (Arc::new(ca), Arc::new(browser_ca));
        let (fleet, browser) = ServerCertificate::issue(&ca, &browser_ca, &names)?;
        let certificate = Arc::new(ServerCertificate {
            fleet: RwLock::new(Arc::new(fleet)),
            browser: RwLock::new(Arc::new(browser)),
        });
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        tracing::info!(names = ?names, ca_sha256 = ca.fingerprint(), "TLS server certificate issued");
        let (renewing, renewing_browser) = (ca.clone(), browser_ca.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SERVER_RENEW_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                match ServerCertificate::issue(&renewing, &renewing_browser, &names) {
                    Ok((fleet, browser)) => {
                        *certificate.fleet.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fleet);
                        *certificate.browser.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(browser);
                    }
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "renewing the TLS server certificate failed"),
                }
            }
        });
        Ok(ServerTls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca, browser_ca })
    }
}

/// How long a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener handing out TLS streams whose handshake is done, for
/// `axum::serve`. Handshakes run in their own tasks, so a client that
/// stalls in one holds up no other.
pub struct TlsListener {
    accepted:
        tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
}

impl TlsListener {
    /// Serves TLS on `listener` with `acceptor`.
    pub fn new(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, accepted) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors, mostly: wait instead of spinning.
                            tracing::warn!(error = %e, "API accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    () = sender.closed() => return,
                };
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    stream.set_nodelay(true).ok();
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            sender.send((tls, peer)).await.ok();
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop ends only with this listener.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// TLS settings of the controller's own HTTP clients (the CLI, image
/// pushes): `https://` servers are trusted if the fleet CA in `ca_file`
/// signed them, or by the public roots when there is no such file.
pub fn client_tls(ca_file: Option<&Path>) -> anyhow::Result<ureq::tls::TlsConfig> {
    if let Some(path) = ca_file {
        match std::fs::read(path) {
            Ok(pem) => return trusting(&pem).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls).build())
}

/// TLS settings trusting only the CA certificates in `pem`.
pub fn trusting(pem: &[u8]) -> anyhow::Result<ureq::tls::TlsConfig> {
    let certs = pem_certificates(pem)?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in it");
    let certs = certs.into_iter().map(|c| ureq::tls::Certificate::from_der(&c).to_owned()).collect();
    Ok(ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = FleetCa::load_or_create(dir.path()).unwrap();
        let again = FleetCa::load_or_create(dir.path()).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert!(first.fingerprint().starts_with("sha256:") && first.fingerprint().len() == 7 + 64);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(TLS_DIR).join(CA_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // One of the pair gone: a clear error, never a silent new CA.
        std::fs::remove_file(dir.path().join(TLS_DIR).join(CA_KEY_FILE)).unwrap();
        let error = FleetCa::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(error.contains("ca.key is missing"), "{error}");
    }

    #[test]
    fn a_reloaded_ca_issues_certificates_that_chain_to_the_stored_one() {
        let dir = tempfile::tempdir().unwrap();
        FleetCa::load_or_create(dir.path()).unwrap();
        let ca = FleetCa::load_or_create(dir.path()).unwrap();
        let key = ca.issue_server(&["controller.plant".into(), "10.0.0.5".into()]).unwrap();
        assert_eq!(key.cert.len(), 2);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem_certificates(ca.cert_pem().as_bytes()).unwrap().remove(0)).unwrap();
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap();
        use rustls::client::danger::ServerCertVerifier as _;
        let now = rustls::pki_types::UnixTime::now();
        for name in ["controller.plant", "10.0.0.5"] {
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier.verify_server_cert(&key.cert[0], &key.cert[1..], &name, &[], now).unwrap();
        }
        let other = rustls::pki_types::ServerName::try_from("elsewhere.example").unwrap();
        assert!(verifier.verify_server_cert(&key.cert[0], &key.cert[1..], &other, &[], now).is_err());
    }

    /// The chain a client with `verify` (its signature algorithms, which
    /// its hello offers) and trusting `ca` gets from the server, verified.
    async fn handshake(server: &ServerTls, ca: &FleetCa, verify: rustls::crypto::WebPkiSupportedAlgorithms) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem_certificates(ca.cert_pem().as_bytes()).unwrap().remove(0)).unwrap();
        let provider =
            rustls::crypto::CryptoProvider { signature_verification_algorithms: verify, ..(*provider()).clone() };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (client_end, server_end) = tokio::io::duplex(64 << 10);
        let acceptor = server.acceptor.clone();
        let accepting = tokio::spawn(async move { acceptor.accept(server_end).await.map(|_| ()) });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let stream = connector.connect(name, client_end).await.expect("handshake");
        accepting.await.unwrap().unwrap();
        stream.get_ref().1.peer_certificates().unwrap()[1].to_vec()
    }

    #[tokio::test]
    async fn browsers_get_the_p256_chain_and_devices_the_fleet_cas() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = FleetCa::load_or_create(dir.path()).unwrap();
        let browser = FleetCa::load_or_create_kind(dir.path(), BROWSER).unwrap();
        let (fleet_der, browser_der) = (fleet.cert_der.to_vec(), browser.cert_der.to_vec());
        let again = FleetCa::load_or_create_kind(dir.path(), BROWSER).unwrap();
        assert_eq!(again.fingerprint(), browser.fingerprint(), "kept, not made again");
        let server = ServerTls::start(fleet, browser, vec!["127.0.0.1".into()]).unwrap();
        // A rustls client offers Ed25519 (as the agent and the CLI do).
        let all = provider().signature_verification_algorithms;
        assert_eq!(handshake(&server, &server.ca, all).await, fleet_der);
        // A browser offers ECDSA and RSA, no Ed25519.
        let offered: Vec<_> =
            all.mapping.iter().filter(|(scheme, _)| *scheme != rustls::SignatureScheme::ED25519).copied().collect();
        let no_ed25519 = rustls::crypto::WebPkiSupportedAlgorithms { all: all.all, mapping: Vec::leak(offered) };
        assert_eq!(handshake(&server, &server.browser_ca, no_ed25519).await, browser_der);
    }

    #[test]
    fn server_names_hold_the_advertised_host_and_loopback_once() {
        let names = server_names(
            "10.1.2.3",
            &["0.0.0.0".parse().unwrap(), "10.1.2.3".parse().unwrap()],
            &["ctl.example".into()],
        );
        assert_eq!(names[0], "10.1.2.3");
        assert!(names.contains(&"ctl.example".to_owned()) && names.contains(&"127.0.0.1".to_owned()));
        assert!(!names.contains(&"0.0.0.0".to_owned()));
        assert_eq!(names.iter().filter(|n| *n == "10.1.2.3").count(), 1);
    }
}
