//! This node's credentials: enrolment with a one-time join token, and the
//! file that keeps the result (`<data>/enrolment.json`, mode 0600).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use firmware_proto::enrol::{ENROL_PATH, EnrolRequest, EnrolResponse};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::image::http;
use crate::image::registry::Timeouts;

/// File name inside the agent's data directory.
pub const ENROLMENT_FILE: &str = "enrolment.json";

/// What the controller handed out at enrolment ([`EnrolResponse`], whose
/// fields it derefs to), as this node keeps it: the file holds the answer
/// as the controller sent it, with the password and MAC key replaced by
/// each credential rotation (see [`crate::channel`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrolment {
    /// The controller's answer.
    #[serde(flatten)]
    pub answer: EnrolResponse,
    /// Generation of the password and MAC key in `answer` (0: those of the
    /// enrolment).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    /// The seal key (hex) once a rotation replaced the MAC key it is
    /// derived from: Secrets stay sealed under the enrolment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_key: Option<String>,
    /// Credentials a rotation granted that no connection has used yet: a
    /// restart tries them first, and falls back if the broker refuses them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Granted>,
    /// SHA-256 (hex) of the join token this node enrolled with: the agent
    /// enrols again by itself only with another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
}

/// Credentials granted by a rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Granted {
    /// Their generation.
    pub generation: u32,
    /// Broker password.
    pub mqtt_password: String,
    /// MAC key, hex.
    pub mac_key: String,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl std::ops::Deref for Enrolment {
    type Target = EnrolResponse;

    fn deref(&self) -> &EnrolResponse {
        &self.answer
    }
}

impl Enrolment {
    /// The file's path under `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(ENROLMENT_FILE)
    }

    /// Reads the stored enrolment, if any.
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Enrols with the controller at `server` (its API URL) using a join
    /// token, and stores the credentials. An `https://` controller must
    /// show a CA whose certificate hashes to `ca_pin`.
    pub fn join(
        server: &str,
        token: &str,
        node_name: &str,
        data_dir: &Path,
        ca_pin: Option<[u8; 32]>,
    ) -> anyhow::Result<Self> {
        let url = format!("{}{ENROL_PATH}", server.trim_end_matches('/'));
        let tls = match (url.starts_with("https://"), ca_pin) {
            (true, Some(pin)) => Some(crate::tls::pinned(pin)?),
            (true, None) => anyhow::bail!(
                "{server}: an https:// controller needs --ca-sha256 (printed with the join token by \
                 `flotilla node token create`), so that this device knows it is talking to its own controller"
            ),
            (false, _) if url.starts_with("http://") => None,
            (false, _) => anyhow::bail!("{server}: not an http:// or https:// URL"),
        };
        let body = serde_json::to_string(&EnrolRequest { token: token.to_owned(), node_name: node_name.to_owned() })?;
        let timeouts = Timeouts { connect: Duration::from_secs(10), read: Duration::from_secs(15) };
        let mut response =
            http::post(&url, &[("Content-Type", "application/json")], body.as_bytes(), timeouts, tls.as_ref())
                .with_context(|| format!("cannot reach the controller at {server}"))?;
        let bytes = http::read_limited(&mut response.body, 64 * 1024)
            .with_context(|| format!("reading the enrolment answer from {server}"))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if response.status != 200 {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or(text);
            anyhow::bail!("enrolment refused ({}): {message}", response.status);
        }
        let answer: EnrolResponse = serde_json::from_str(&text).context("unreadable enrolment answer")?;
        let token_sha256 = Some(to_hex(&sha2::Sha256::digest(token.as_bytes())));
        let enrolment = Enrolment { answer, generation: 0, seal_key: None, next: None, token_sha256 };
        anyhow::ensure!(enrolment.node_name == node_name, "the controller enrolled another name");
        enrolment.mac_key_bytes()?;
        enrolment.controller_key_bytes()?;
        if let (Some(pin), Some(pem)) = (ca_pin, &enrolment.ca_pem) {
            anyhow::ensure!(
                crate::tls::pem_matches_pin(pem, &pin)?,
                "the controller answered with a CA that does not match --ca-sha256"
            );
        }
        enrolment.tls_config()?;
        enrolment.save(data_dir)?;
        Ok(enrolment)
    }

    /// Stores it (atomic, 0600).
    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(data_dir);
        crate::persist::write_atomic(&path, &serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The MAC key.
    pub fn mac_key_bytes(&self) -> anyhow::Result<[u8; 32]> {
        hex32(&self.mac_key).context("the stored MAC key is not 64 hex characters")
    }

    /// The key this node's Secrets are sealed with: the one derived from
    /// the enrolment's MAC key, kept across rotations.
    pub fn seal_key_bytes(&self) -> anyhow::Result<[u8; 32]> {
        match &self.seal_key {
            Some(key) => hex32(key).context("the stored seal key is not 64 hex characters"),
            None => Ok(firmware_proto::seal::node_seal_key(&self.mac_key_bytes()?)),
        }
    }

    /// Whether this node enrolled with `token`.
    pub fn enrolled_with(&self, token: &str) -> bool {
        self.token_sha256.as_deref() == Some(to_hex(&sha2::Sha256::digest(token.as_bytes())).as_str())
    }

    /// Takes `granted` as this node's credentials (they connected): the
    /// seal key stays the enrolment's.
    pub fn promote(&mut self, granted: Granted) -> anyhow::Result<()> {
        if self.seal_key.is_none() {
            self.seal_key = Some(to_hex(&self.seal_key_bytes()?));
        }
        self.answer.mqtt_password = granted.mqtt_password;
        self.answer.mac_key = granted.mac_key;
        self.generation = granted.generation;
        self.next = None;
        Ok(())
    }

    /// TLS settings trusting the fleet CA, if the controller gave one.
    pub fn tls_config(&self) -> anyhow::Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        self.ca_pem.as_deref().map(crate::tls::trusting).transpose()
    }

    /// The registry to pull from over HTTPS, with the fleet CA.
    pub fn tls_registry(&self) -> anyhow::Result<Option<crate::image::TlsRegistry>> {
        Ok(match (&self.tls_registry, self.tls_config()?) {
            (Some(registry), Some(config)) => Some(crate::image::TlsRegistry { registry: registry.clone(), config }),
            _ => None,
        })
    }

    /// The pinned controller key.
    pub fn controller_key_bytes(&self) -> anyhow::Result<[u8; 32]> {
        hex32(&self.controller_key).context("the stored controller key is not 64 hex characters")
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// The 32 bytes `text` holds in hex.
pub fn hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_earlier_agents_load_and_save_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (mac_key, controller_key) = ("11".repeat(32), "22".repeat(32));
        let file = format!(
            "{{\n  \"nodeName\": \"edge-1\",\n  \"mqttUrl\": \"mqtt://10.0.0.1:1883\",\n  \
             \"mqttUsername\": \"edge-1\",\n  \"mqttPassword\": \"p\",\n  \"macKey\": \"{mac_key}\",\n  \
             \"controllerKey\": \"{controller_key}\",\n  \"topicPrefix\": \"flotilla/v1\"\n}}"
        );
        std::fs::write(Enrolment::path(dir.path()), &file).unwrap();
        let enrolment = Enrolment::load(dir.path()).unwrap().expect("stored");
        assert_eq!(enrolment.node_name, "edge-1");
        assert_eq!(enrolment.mac_key_bytes().unwrap(), [0x11; 32]);
        assert_eq!(enrolment.controller_key_bytes().unwrap(), [0x22; 32]);
        assert!(enrolment.labels.is_empty());
        enrolment.save(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(Enrolment::path(dir.path())).unwrap(), file);
    }
}
