//! Pods as the agent runs them: each container of a desired pod is one
//! runtime container (a *unit*), and the ConfigMaps and Secrets the pods
//! mount arrive as content-addressed objects of their own.

use std::collections::BTreeMap;
use std::sync::Arc;

use firmware_proto::pod::{ConfigBlob, Container, PodDocument, PodSpec};
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

impl ConfigObjects {
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
