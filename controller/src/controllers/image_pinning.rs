//! Image pinning: every replica runs the bytes its image named when the
//! replica was pinned, and the scheduler knows which architectures those
//! bytes exist for before it places the replica.
//!
//! A replica is pinned once, when every image its containers name (init
//! containers too) is resolved: the digests and the architectures all of
//! them exist for go into its annotations ([`IMAGE_DIGEST_ANNOTATION`],
//! [`IMAGE_ARCHS_ANNOTATION`]).
//! Until then the scheduler does not place it and its node's document does
//! not list it, so no replica is ever bound to a node its image cannot run
//! on and then taken back. Resolving a tag asks a registry: that half is
//! [`crate::pinning`], which hands [`plan`] its answers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::Snapshot;
use crate::manifest::types::PodSpec;
use crate::object::ApiObject;
use crate::status::PodStatus;
use crate::store::Op;

/// Annotation holding the image digest a replica was pinned to:
/// `sha256:<hex>` when its containers share one image, else
/// `<container>=sha256:<hex>,...` for each container.
pub const IMAGE_DIGEST_ANNOTATION: &str = "flotilla.io/image-digest";
/// Annotation holding the architectures all its images exist for
/// (`amd64,arm64`); the scheduler places the replica only on those.
pub const IMAGE_ARCHS_ANNOTATION: &str = "flotilla.io/image-archs";
/// Annotation saying why the image could not be pinned yet (the scheduler
/// shows it as the replica's Pending message).
pub const IMAGE_ERROR_ANNOTATION: &str = "flotilla.io/image-error";

/// What an image reference resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedImage {
    /// Manifest or index digest.
    pub digest: [u8; 32],
    /// Architectures it has (`amd64`, `arm64`), sorted; empty if unknown.
    pub archs: Vec<String>,
}

/// Answers about images: resolved, or why not.
pub type Answers = HashMap<String, Result<PinnedImage, String>>;

/// What a pass decided.
#[derive(Debug, Default)]
pub struct Plan {
    /// Annotation writes, each with the replica's resourceVersion.
    pub ops: Vec<Op>,
    /// Images some replica waits for that `answers` did not cover.
    pub to_resolve: BTreeSet<String>,
}

/// The images a replica's containers run, each once, init containers'
/// first.
pub fn images_of(pod: &ApiObject) -> Vec<String> {
    let Some(spec) = pod.typed_spec::<PodSpec>() else { return Vec::new() };
    let mut images: Vec<String> = Vec::new();
    for container in spec.init_containers.iter().chain(&spec.containers) {
        if !images.contains(&container.image) {
            images.push(container.image.clone());
        }
    }
    images
}

/// Whether the replica's image is pinned.
pub fn is_pinned(pod: &ApiObject) -> bool {
    pod.metadata.annotations.contains_key(IMAGE_DIGEST_ANNOTATION)
}

/// The digest the image of a replica's `container` is pinned to, if it
/// is pinned.
pub fn pinned_digest(pod: &ApiObject, container: &str) -> Option<[u8; 32]> {
    let pinned = pod.metadata.annotations.get(IMAGE_DIGEST_ANNOTATION)?;
    if !pinned.contains('=') {
        return parse_digest(pinned);
    }
    pinned.split(',').find_map(|entry| {
        let (name, digest) = entry.split_once('=')?;
        (name == container).then(|| parse_digest(digest)).flatten()
    })
}

/// The annotation value for a pod whose containers (name, image) resolved
/// to `digests` (by image).
fn digest_annotation(containers: &[(String, String)], digests: &BTreeMap<&str, [u8; 32]>) -> String {
    let text = |image: &str| format!("sha256:{}", hex::encode(digests[image]));
    let first = containers.first().map(|(_, image)| image.as_str()).unwrap_or_default();
    if containers.iter().all(|(_, image)| image == first) {
        return text(first);
    }
    containers.iter().map(|(name, image)| format!("{name}={}", text(image))).collect::<Vec<_>>().join(",")
}

/// `sha256:<64 hex digits>` -> the digest's bytes.
pub fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:")?;
    hex::decode(hex).ok()?.try_into().ok()
}

/// The architectures a pinned replica's image exists for; `None` when
/// unpinned or unknown (the registry did not say).
pub fn archs_of(pod: &ApiObject) -> Option<Vec<&str>> {
    let archs = pod.metadata.annotations.get(IMAGE_ARCHS_ANNOTATION)?;
    (!archs.is_empty()).then(|| archs.split(',').collect())
}

/// Whether a pinned replica's image can run on a node of `arch` (unknown
/// archs, of the image or the node, do not stop it).
pub fn can_run_on(pod: &ApiObject, arch: &str) -> bool {
    match pod.metadata.annotations.get(IMAGE_ARCHS_ANNOTATION) {
        Some(archs) if !arch.is_empty() && !archs.is_empty() => archs.split(',').any(|a| a == arch),
        _ => true,
    }
}

/// Pins every live unpinned replica whose image `answers` resolves, records
/// the reason on those it cannot, and names the images still to resolve.
pub fn plan(snapshot: &Snapshot, answers: &Answers) -> Plan {
    let mut plan = Plan::default();
    for pod in &snapshot.pods {
        if is_pinned(pod) || pod.is_retired() || pod.typed_status::<PodStatus>().is_finished() {
            continue;
        }
        let images = images_of(pod);
        if images.is_empty() {
            continue;
        }
        // A slice of writes per pass (see `super::PASS_SLICE`); the images
        // still to resolve are all named.
        if plan.ops.len() >= super::PASS_SLICE && images.iter().all(|i| answers.contains_key(i)) {
            continue;
        }
        // Decide first; copy the replica only to write it.
        let mut written = |change: &dyn Fn(&mut BTreeMap<String, String>)| {
            let mut pinned = ApiObject::clone(pod);
            change(&mut pinned.metadata.annotations);
            plan.ops.push(Op::Apply(pinned));
        };
        let unanswered: Vec<&String> = images.iter().filter(|i| !answers.contains_key(*i)).collect();
        if !unanswered.is_empty() {
            plan.to_resolve.extend(unanswered.into_iter().cloned());
            continue;
        }
        if let Some((image, Err(reason))) = images.iter().map(|i| (i, &answers[i])).find(|(_, a)| a.is_err()) {
            let reason = format!("cannot pin image {image:?}: {reason}");
            if pod.metadata.annotations.get(IMAGE_ERROR_ANNOTATION) != Some(&reason) {
                written(&|annotations| _ = annotations.insert(IMAGE_ERROR_ANNOTATION.to_owned(), reason.clone()));
            }
            continue;
        }
        let resolved: Vec<(&str, &PinnedImage)> =
            images.iter().filter_map(|i| answers[i].as_ref().ok().map(|r| (i.as_str(), r))).collect();
        let digests: BTreeMap<&str, [u8; 32]> = resolved.iter().map(|(i, r)| (*i, r.digest)).collect();
        let containers: Vec<(String, String)> = pod
            .typed_spec::<PodSpec>()
            .map(|s| s.init_containers.iter().chain(&s.containers).map(|c| (c.name.clone(), c.image.clone())).collect())
            .unwrap_or_default();
        // Where every image exists: the intersection of the known lists.
        let mut archs: Option<Vec<String>> = None;
        for (_, r) in resolved.iter().filter(|(_, r)| !r.archs.is_empty()) {
            archs = Some(match archs {
                None => r.archs.clone(),
                Some(so_far) => so_far.into_iter().filter(|a| r.archs.contains(a)).collect(),
            });
        }
        if archs.as_ref().is_some_and(Vec::is_empty) {
            let reason = format!("no architecture has all of this pod's images ({})", images.join(", "));
            if pod.metadata.annotations.get(IMAGE_ERROR_ANNOTATION) != Some(&reason) {
                written(&|annotations| _ = annotations.insert(IMAGE_ERROR_ANNOTATION.to_owned(), reason.clone()));
            }
            continue;
        }
        let digest = digest_annotation(&containers, &digests);
        written(&|annotations| {
            annotations.remove(IMAGE_ERROR_ANNOTATION);
            annotations.insert(IMAGE_DIGEST_ANNOTATION.to_owned(), digest.clone());
            if let Some(archs) = &archs {
                annotations.insert(IMAGE_ARCHS_ANNOTATION.to_owned(), archs.join(","));
            }
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;
    use std::sync::Arc;

    fn pod(name: &str, image: &str) -> Arc<ApiObject> {
        let mut pod = ApiObject::new(Kind::Pod, "default", name);
        pod.metadata.resource_version = "7".into();
        pod.set_field("spec", serde_json::json!({ "containers": [{ "name": "c", "image": image }] }));
        Arc::new(pod)
    }

    #[test]
    fn replicas_are_pinned_from_answers_and_ask_for_the_rest() {
        let snapshot =
            Snapshot { pods: vec![pod("a", "web:1"), pod("b", "web:1"), pod("c", "db:2")], ..Snapshot::default() };
        let plan = plan(&snapshot, &Answers::new());
        assert!(plan.ops.is_empty());
        assert_eq!(plan.to_resolve.into_iter().collect::<Vec<_>>(), ["db:2", "web:1"], "each image asked once");

        let mut answers = Answers::new();
        answers.insert(
            "web:1".into(),
            Ok(PinnedImage { digest: [0xab; 32], archs: vec!["amd64".into(), "arm64".into()] }),
        );
        answers.insert("db:2".into(), Err("registry unreachable".into()));
        let plan = super::plan(&snapshot, &answers);
        assert!(plan.to_resolve.is_empty());
        let written: Vec<&ApiObject> =
            plan.ops.iter().map(|op| if let Op::Apply(o) = op { o } else { panic!("{op:?}") }).collect();
        assert_eq!(written.len(), 3);
        assert_eq!(written[0].metadata.annotations[IMAGE_DIGEST_ANNOTATION], format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(archs_of(written[0]), Some(vec!["amd64", "arm64"]));
        assert_eq!(written[0].metadata.resource_version, "7", "written against what was read");
        assert!(!is_pinned(written[2]));
        assert!(written[2].metadata.annotations[IMAGE_ERROR_ANNOTATION].contains("registry unreachable"));
    }

    #[test]
    fn a_pod_of_several_images_is_pinned_once_all_resolve_and_runs_where_all_exist() {
        let mut pod = ApiObject::new(Kind::Pod, "default", "p");
        pod.set_field(
            "spec",
            serde_json::json!({
                "initContainers": [{ "name": "init", "image": "busybox:1" }],
                "containers": [{ "name": "app", "image": "web:1" }, { "name": "proxy", "image": "busybox:1" }],
            }),
        );
        let snapshot = Snapshot { pods: vec![Arc::new(pod)], ..Snapshot::default() };
        let mut answers = Answers::new();
        answers
            .insert("web:1".into(), Ok(PinnedImage { digest: [1; 32], archs: vec!["amd64".into(), "arm64".into()] }));
        let half = plan(&snapshot, &answers);
        assert!(half.ops.is_empty(), "not pinned before every image resolves");
        assert_eq!(half.to_resolve.into_iter().collect::<Vec<_>>(), ["busybox:1"]);
        answers.insert("busybox:1".into(), Ok(PinnedImage { digest: [2; 32], archs: vec!["arm64".into()] }));
        let Op::Apply(pinned) = &plan(&snapshot, &answers).ops[0] else { panic!() };
        let ones = "01".repeat(32);
        let twos = "02".repeat(32);
        assert_eq!(
            pinned.metadata.annotations[IMAGE_DIGEST_ANNOTATION],
            format!("init=sha256:{twos},app=sha256:{ones},proxy=sha256:{twos}")
        );
        assert_eq!(pinned_digest(pinned, "app"), Some([1; 32]));
        assert_eq!(pinned_digest(pinned, "proxy"), Some([2; 32]));
        assert_eq!(pinned_digest(pinned, "nobody"), None);
        assert_eq!(archs_of(pinned), Some(vec!["arm64"]), "only where both images exist");
    }

    #[test]
    fn the_same_failure_is_not_written_again() {
        let mut failed = ApiObject::clone(&pod("c", "db:2"));
        failed.metadata.annotations.insert(IMAGE_ERROR_ANNOTATION.into(), "cannot pin image \"db:2\": gone".into());
        let snapshot = Snapshot { pods: vec![Arc::new(failed)], ..Snapshot::default() };
        let answers = Answers::from([("db:2".to_owned(), Err("gone".to_owned()))]);
        assert!(plan(&snapshot, &answers).ops.is_empty());
    }
}
