//! Image pinning's I/O half: resolving image tags to digests over the OCI
//! distribution API, for the pure [`crate::controllers::image_pinning`]
//! step that writes the pins.
//!
//! [`run`] watches for replicas that are not pinned yet, asks the registry
//! once per image (answers are reused for a few seconds, failures
//! remembered for a while so an unreachable registry does not stall every
//! pass on its timeout), and commits the pins with preconditions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::controllers::Snapshot;
use crate::controllers::image_pinning::{self, Answers, PinnedImage};
use crate::manifest::Kind;
use crate::store::Store;

/// Pins replicas until the task is aborted.
pub async fn run(store: Arc<dyn Store>, default_registry: String, tls: Option<ureq::tls::TlsConfig>) {
    let mut live = match store.subscribe(0) {
        Ok(subscription) => subscription.live,
        Err(e) => {
            tracing::error!(error = %e, "image pinning cannot watch the store");
            return;
        }
    };
    let resolver = Arc::new(Resolver::new(&default_registry, tls));
    loop {
        let (pass_store, pass_resolver) = (store.clone(), resolver.clone());
        let waiting = match tokio::task::spawn_blocking(move || pin_pass(pass_store.as_ref(), &pass_resolver)).await {
            Ok(waiting) => waiting,
            Err(e) => {
                tracing::error!(error = %e, "image pinning pass panicked; retrying");
                true
            }
        };
        // A new or re-created replica without a pin wakes the next pass;
        // while some image cannot be resolved, it is asked again now and
        // then (the resolver remembers failures meanwhile).
        let retry = if waiting { RETRY_EVERY } else { IDLE_RESYNC };
        let _ = tokio::time::timeout(retry, async {
            loop {
                match live.recv().await {
                    Ok(event) if event.object.kind == Kind::Pod && !image_pinning::is_pinned(&event.object) => return,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        })
        .await;
        // Let a burst of new replicas settle into one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while live.try_recv().is_ok() {}
    }
}

/// How often images that could not be resolved are asked for again.
const RETRY_EVERY: Duration = Duration::from_secs(5);
/// How often a pass runs with nothing to announce it.
const IDLE_RESYNC: Duration = Duration::from_secs(60);

/// One pass; returns whether some replica still waits for its image.
fn pin_pass(store: &dyn Store, resolver: &Resolver) -> bool {
    let snapshot = Snapshot::read(store);
    let asked = image_pinning::plan(&snapshot, &Answers::new());
    if asked.to_resolve.is_empty() {
        return false;
    }
    let answers: Answers = asked.to_resolve.iter().map(|image| (image.clone(), resolver.resolve(image))).collect();
    let waiting = answers.values().any(Result::is_err);
    for (image, answer) in &answers {
        match answer {
            Ok(pinned) => tracing::debug!(image, digest = hex::encode(pinned.digest), "image pinned"),
            Err(reason) => tracing::warn!(image, reason, "cannot pin image; its replicas wait"),
        }
    }
    let plan = image_pinning::plan(&snapshot, &answers);
    crate::store::commit_in_chunks(store, plan.ops, "image pinning");
    waiting
}

pub use crate::controllers::image_pinning::parse_digest;

/// Resolves image tags to digests over the OCI distribution API, so every
/// node runs the same bytes. Images named with `@sha256:` are taken as is.
pub struct Resolver {
    default_registry: String,
    /// The default registry speaks HTTPS (the controller's own, with TLS).
    default_https: bool,
    agent: ureq::Agent,
    /// Recent failures per image: not asked again for a while, so an
    /// unreachable registry does not stall every pass on its timeout.
    failures: Mutex<HashMap<String, (std::time::Instant, String)>>,
    /// Recent answers per image: a pass that pins 5,000 replicas of one
    /// image asks the registry once, not 5,000 times (at 1,000 simulated
    /// devices the first pass after an apply never finished in 3 minutes).
    resolved: Mutex<HashMap<String, (std::time::Instant, PinnedImage)>>,
}

/// How long a resolved tag is reused: a tag moved in the registry is seen
/// within this.
const ANSWER_MEMORY: Duration = Duration::from_secs(10);

/// How long a failed resolution is remembered.
const FAILURE_MEMORY: Duration = Duration::from_secs(15);

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

impl Resolver {
    /// A resolver using `default_registry` for names without a registry,
    /// over HTTPS with `tls` if given (other registries: plain HTTP).
    pub fn new(default_registry: &str, tls: Option<ureq::tls::TlsConfig>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .tls_config(tls.clone().unwrap_or_default())
            .build()
            .into();
        Resolver {
            default_registry: default_registry.to_owned(),
            default_https: tls.is_some(),
            agent,
            failures: Mutex::default(),
            resolved: Mutex::default(),
        }
    }

    /// The digest `image` points to now, and the architectures it exists
    /// for (empty when the registry does not say).
    pub fn resolve(&self, image: &str) -> Result<PinnedImage, String> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.retain(|_, (at, _)| at.elapsed() < FAILURE_MEMORY);
        if let Some((_, reason)) = failures.get(image) {
            return Err(reason.clone());
        }
        drop(failures);
        let mut resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        resolved.retain(|_, (at, _)| at.elapsed() < ANSWER_MEMORY);
        if let Some((_, pinned)) = resolved.get(image) {
            return Ok(pinned.clone());
        }
        drop(resolved);
        let result = self.resolve_now(image);
        if let Ok(pinned) = &result {
            let mut resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
            resolved.insert(image.to_owned(), (std::time::Instant::now(), pinned.clone()));
        }
        if let Err(reason) = &result {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            failures.insert(image.to_owned(), (std::time::Instant::now(), reason.clone()));
        }
        result
    }

    fn resolve_now(&self, image: &str) -> Result<PinnedImage, String> {
        let (name_part, pinned) = match image.split_once('@') {
            Some((name, digest)) => {
                (name, Some(parse_digest(digest).ok_or_else(|| format!("{digest:?} is not a sha256 digest"))?))
            }
            None => (image, None),
        };
        let (registry, name, tag) = split_reference(name_part, &self.default_registry);
        let reference = pinned.map_or_else(|| tag.to_owned(), |d| format!("sha256:{}", hex::encode(d)));
        let (digest, body) = match self.get_json(registry, &format!("{name}/manifests/{reference}")) {
            Ok(found) => found,
            // A digest given in the manifest is enough to run; the archs
            // stay unknown when its registry cannot be asked now.
            Err(_) if pinned.is_some() => {
                return Ok(PinnedImage { digest: pinned.unwrap_or_default(), archs: Vec::new() });
            }
            Err(e) => return Err(e),
        };
        let digest = match (pinned, digest) {
            (Some(pinned), _) => pinned,
            (None, Some(digest)) => digest,
            (None, None) => return Err(format!("registry {registry} gave no Docker-Content-Digest for {name}:{tag}")),
        };
        let mut archs: Vec<String> = match body.get("manifests").and_then(|m| m.as_array()) {
            Some(manifests) => manifests
                .iter()
                .filter_map(|m| m.pointer("/platform/architecture").and_then(|a| a.as_str()))
                .filter(|a| *a != "unknown")
                .map(str::to_owned)
                .collect(),
            None => body
                .pointer("/config/digest")
                .and_then(|d| d.as_str())
                .and_then(|config| self.get_json(registry, &format!("{name}/blobs/{config}")).ok())
                .and_then(|(_, config)| config.get("architecture").and_then(|a| a.as_str()).map(str::to_owned))
                .into_iter()
                .collect(),
        };
        archs.sort();
        archs.dedup();
        Ok(PinnedImage { digest, archs })
    }

    /// GETs a JSON document under `/v2/`: its digest header and body.
    fn get_json(&self, registry: &str, path: &str) -> Result<(Option<[u8; 32]>, serde_json::Value), String> {
        let scheme = if self.default_https && registry == self.default_registry { "https" } else { "http" };
        let url = format!("{scheme}://{registry}/v2/{path}");
        let mut response = self
            .agent
            .get(&url)
            .header("Accept", MANIFEST_TYPES)
            .call()
            .map_err(|e| format!("registry {registry} unreachable: {e}"))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Err(format!("{path} not found in registry {registry}")),
            code => return Err(format!("registry {registry} answered {code} for {path}")),
        }
        let digest =
            response.headers().get("Docker-Content-Digest").and_then(|v| v.to_str().ok()).and_then(parse_digest);
        let body = response
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()
            .map_err(|e| format!("reading {path} from {registry}: {e}"))?;
        let json = serde_json::from_slice(&body).map_err(|e| format!("{path} from {registry} is not JSON: {e}"))?;
        Ok((digest, json))
    }
}

pub use crate::replica_spec::split_reference;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_registry_name_and_tag() {
        assert_eq!(split_reference("busybox:1.35", "reg:7440"), ("reg:7440", "busybox", "1.35"));
        assert_eq!(split_reference("library/busybox", "reg:7440"), ("reg:7440", "library/busybox", "latest"));
        assert_eq!(split_reference("10.0.0.1:5000/a/b:2", "x"), ("10.0.0.1:5000", "a/b", "2"));
        assert_eq!(split_reference("localhost/web", "x"), ("localhost", "web", "latest"));
    }

    #[test]
    fn pinned_images_need_no_registry() {
        let resolver = Resolver::new("127.0.0.1:1", None);
        let hex = "ab".repeat(32);
        assert_eq!(resolver.resolve(&format!("web:1@sha256:{hex}")).map(|p| p.digest), Ok([0xab; 32]));
        assert!(resolver.resolve("web:1@sha256:abc").is_err());
        assert!(resolver.resolve("web:1").unwrap_err().contains("unreachable"));
    }
}
