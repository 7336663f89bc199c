//! Pods as the agent runs them: each container of a desired pod is one
//! runtime container (a *unit*), and the ConfigMaps and Secrets the pods
//! mount arrive as content-addressed objects of their own.

use std::collections::BTreeMap;
use std::sync::Arc;

use firmware_proto::pod::{ConfigBlob, ConfigRef, Container, PodDocument, PodSpec};
use firmware_proto::{Digest, RestartPolicy};

/// The runtime id of one container of a pod: `{pod}.{container}`.
/// Container names are DNS labels (no dot), so the last dot splits it.
pub fn unit_id(pod: &str, container: &str) -> String {
    format!("{pod}.{container}")
}

/// The pod a runtime id belongs to.
pub fn pod_of(unit_id: &str) -> &str {
    unit_id.rsplit_once('.').map_or(unit_id, |(pod, _)| pod)
}

/// One container of a desired pod.
#[derive(Debug, Clone)]
pub struct Unit<'a> {
    /// Its pod.
    pub pod: &'a PodSpec,
    /// The container.
    pub container: &'a Container,
    /// Index in the pod: init containers first, then the app containers.
    pub index: usize,
    /// An init container (a sidecar is one too).
    pub init: bool,
    /// The runtime id.
    pub id: String,
}

impl Unit<'_> {
    /// Every container of `pod`, init containers first.
    pub fn all(pod: &PodSpec) -> Vec<Unit<'_>> {
        let init = pod.init_containers.iter().map(|c| (c, true));
        let app = pod.containers.iter().map(|c| (c, false));
        init.chain(app)
            .enumerate()
            .map(|(index, (container, init))| Unit {
                pod,
                container,
                index,
                init,
                id: unit_id(pod.id.as_str(), container.name.as_str()),
            })
            .collect()
    }

    /// When the container is restarted after it exits: a sidecar always; a
    /// regular init container on failure unless the pod says never (as in
    /// Kubernetes); an app container by the pod's policy.
    pub fn restart_policy(&self) -> RestartPolicy {
        match (self.init, self.container.sidecar, self.pod.restart_policy) {
            (true, true, _) => RestartPolicy::Always,
            (true, false, RestartPolicy::Never) => RestartPolicy::Never,
            (true, false, _) => RestartPolicy::OnFailure,
            (false, _, policy) => policy,
        }
    }

    /// A regular init container: runs to completion before what follows.
    pub fn runs_to_completion(&self) -> bool {
        self.init && !self.container.sidecar
    }

    /// The pod has more than this one container (then each reports its own
    /// status entry).
    pub fn shares_pod(&self) -> bool {
        self.pod.init_containers.len() + self.pod.containers.len() > 1
    }
}

/// The config objects the agent holds, by digest: those of the applied
/// document (also kept on disk, so a reboot without network brings them
/// back) and those that arrived ahead of a document naming them.
#[derive(Debug, Default)]
pub struct ConfigObjects {
    objects: BTreeMap<[u8; 32], Arc<ConfigBlob>>,
    /// This node's seal key: what opens its Secrets (`firmware_proto::seal`).
    seal_key: Option<[u8; 32]>,
}

/// Why a pod volume's config object is not here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("waiting for {kind} {name} (sha256:{short}, {size} bytes) from the controller")]
pub struct Missing {
    /// `ConfigMap` or `Secret`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// The first 12 hex digits of its digest.
    pub short: String,
    /// Its size.
    pub size: u32,
}

/// Why a Secret's sealed values do not open here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct SealError {
    /// The Secret or container concerned.
    pub what: String,
    /// Why.
    pub reason: String,
}

impl ConfigObjects {
    /// Secrets are opened with `key`, this node's seal key.
    pub fn set_seal_key(&mut self, key: [u8; 32]) {
        self.seal_key = Some(key);
    }

    fn key(&self, what: &str) -> Result<&[u8; 32], SealError> {
        self.seal_key.as_ref().ok_or_else(|| SealError {
            what: what.to_owned(),
            reason: "this agent has no seal key (not enrolled)".into(),
        })
    }

    /// The files of `object`, the blob a document's `reference` names: a
    /// Secret's opened (in memory only), a ConfigMap's as they are.
    pub fn files(&self, reference: &ConfigRef, object: &ConfigBlob) -> Result<Vec<(String, Vec<u8>)>, SealError> {
        let names = object.file_names.iter().map(str::to_owned);
        if !reference.secret {
            return Ok(names.zip(object.contents.iter().map(<[u8]>::to_vec)).collect());
        }
        let what = format!("Secret {}", object.name.as_str());
        let failed = |reason: String| SealError { what: what.clone(), reason };
        let sealed_key =
            reference.sealed_key.as_ref().ok_or_else(|| failed("its key is not in the document".into()))?;
        let data_key = firmware_proto::seal::open(self.key(&what)?, &reference.digest.0, &sealed_key.0)
            .map_err(|e| failed(e.to_string()))?;
        let data_key: [u8; 32] = data_key.try_into().map_err(|_| failed("its key is not 32 bytes".into()))?;
        names
            .zip(object.contents.iter())
            .map(|(name, sealed)| {
                let context = firmware_proto::seal::file_context(object.name.as_str(), &name);
                let content = firmware_proto::seal::open(&data_key, &context, sealed)
                    .map_err(|e| failed(format!("file {name}: {e}")))?;
                Ok((name, content))
            })
            .collect()
    }

    /// A container's env entries taken from Secrets, opened (in memory only).
    pub fn secret_env(&self, pod: &str, container: &Container) -> Result<Vec<String>, SealError> {
        if container.sealed_env.is_empty() {
            return Ok(Vec::new());
        }
        let what = format!("env of container {}", container.name.as_str());
        let key = self.key(&what)?;
        let context = firmware_proto::seal::env_context(pod, container.name.as_str());
        container
            .sealed_env
            .iter()
            .map(|sealed| {
                let entry = firmware_proto::seal::open(key, &context, sealed)
                    .map_err(|e| SealError { what: what.clone(), reason: e.to_string() })?;
                String::from_utf8(entry)
                    .map_err(|_| SealError { what: what.clone(), reason: "an entry is not UTF-8".into() })
            })
            .collect()
    }

    /// Keeps an object (its digest already checked).
    pub fn insert(&mut self, digest: Digest, blob: ConfigBlob) {
        self.objects.insert(digest.0, Arc::new(blob));
    }

    /// Whether the object is here.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.objects.contains_key(&digest.0)
    }

    /// The object a pod volume's `Config { index }` names.
    pub fn get(&self, document: &PodDocument, index: u16) -> Result<Arc<ConfigBlob>, Missing> {
        // The decoder checked the index is inside the document.
        let reference = &document.config[usize::from(index)];
        self.objects.get(&reference.digest.0).cloned().ok_or_else(|| Missing {
            kind: if reference.secret { "Secret" } else { "ConfigMap" },
            name: reference.name.to_string(),
            short: reference.digest.0[..6].iter().map(|b| format!("{b:02x}")).collect(),
            size: reference.size,
        })
    }

    /// Drops every object `document` does not name, except those in
    /// `keep` (arrived, not yet named by an applied document).
    pub fn retain(&mut self, document: Option<&PodDocument>, keep: &[[u8; 32]]) {
        self.objects.retain(|digest, _| {
            keep.contains(digest) || document.is_some_and(|d| d.config.iter().any(|r| r.digest.0 == *digest))
        });
    }

    /// How many objects and bytes are held.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_opens_with_this_nodes_key_only() {
        use firmware_proto::seal;
        let (mac_key, data_key) = ([3u8; 32], [4u8; 32]);
        let node_key = seal::node_seal_key(&mac_key);
        let mut blob = firmware_proto::samples::config_blob();
        blob.secret = true;
        let name = blob.name.to_string();
        let mut contents = firmware_proto::heap::Blobs::new();
        contents.push(&seal::seal(&data_key, &seal::file_context(&name, "sensor.toml"), b"token = 42")).unwrap();
        blob.contents = contents;
        let digest = [6u8; 32];
        let mut sealed_key = [0u8; firmware_proto::pod::SEALED_KEY_LEN];
        sealed_key.copy_from_slice(&seal::seal(&node_key, &digest, &data_key));
        let reference = ConfigRef {
            name: blob.name.clone(),
            secret: true,
            digest: firmware_proto::Bytes(digest),
            size: 0,
            sealed_key: Some(firmware_proto::Bytes(sealed_key)),
        };
        let mut objects = ConfigObjects::default();
        assert!(objects.files(&reference, &blob).unwrap_err().reason.contains("no seal key"));
        objects.set_seal_key(seal::node_seal_key(&[5; 32]));
        assert!(objects.files(&reference, &blob).is_err(), "another node's key");
        objects.set_seal_key(node_key);
        assert_eq!(objects.files(&reference, &blob).unwrap(), [("sensor.toml".to_owned(), b"token = 42".to_vec())]);
        let unsealed = ConfigRef { sealed_key: None, ..reference };
        assert!(objects.files(&unsealed, &blob).unwrap_err().reason.contains("not in the document"));

        let mut container = firmware_proto::samples::pod(0).containers[0].clone();
        let context = seal::env_context("web-0", container.name.as_str());
        container.sealed_env.push(&seal::seal(&node_key, &context, b"PASSWORD=hunter2")).unwrap();
        assert_eq!(objects.secret_env("web-0", &container).unwrap(), ["PASSWORD=hunter2"]);
        assert!(objects.secret_env("web-1", &container).is_err(), "sealed for another pod");
    }

    #[test]
    fn units_list_init_containers_first_with_their_restart_rules() {
        let pod = firmware_proto::samples::pod(0);
        let units = Unit::all(&pod);
        let ids: Vec<&str> = units.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["sensor-1a2b-0.wait-config", "sensor-1a2b-0.exporter", "sensor-1a2b-0.sensor"]);
        assert_eq!(pod_of(&units[2].id), "sensor-1a2b-0");
        assert_eq!(units[0].restart_policy(), RestartPolicy::OnFailure, "init container under Always");
        assert!(units[0].runs_to_completion());
        assert_eq!(units[1].restart_policy(), RestartPolicy::Always, "sidecar");
        assert!(!units[1].runs_to_completion());
        assert_eq!(units[2].restart_policy(), RestartPolicy::Always);
        assert!(units.iter().all(Unit::shares_pod));
    }
}
