//! How far an applied workload is from available: what `apply --wait`
//! follows for each workload and `rollout status` for a Deployment.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::client::Client;
use crate::controllers::deployment::{COMPLETE, FAILED};
use crate::manifest::Kind;
use crate::manifest::types::{DeploymentSpec, JobSpec, StatefulSetSpec};
use crate::object::{ApiObject, ObjectKey};
use crate::progress::{Line, Progress};
use crate::status::{ConditionType, DaemonSetStatus, DeploymentStatus, JobStatus, StatefulSetStatus, condition};

/// Where a workload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// On its way: the text says how.
    Waiting,
    /// Available (complete, for a Job).
    Done,
    /// It will not get there by itself: why.
    Failed(String),
}

/// A workload's progress: `done` of `of` replicas (completions for a Job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// How many are there.
    pub done: u64,
    /// How many are wanted.
    pub of: u64,
    /// Waiting, done or failed.
    pub state: State,
    /// What is happening, in words.
    pub text: String,
}

impl Readiness {
    fn waiting(done: u64, of: u64, text: impl Into<String>) -> Self {
        Readiness { done, of, state: State::Waiting, text: text.into() }
    }
}

/// Whether `kind` is something `apply --wait` waits for.
pub fn is_workload(kind: Kind) -> bool {
    matches!(kind, Kind::Deployment | Kind::DaemonSet | Kind::StatefulSet | Kind::Job)
}

/// How far `object` is from available.
pub fn readiness(object: &ApiObject) -> Readiness {
    let unobserved = |observed: u64| observed < object.metadata.generation;
    match object.kind {
        Kind::Deployment => {
            let spec: DeploymentSpec = object.spec().unwrap_or_default();
            let status: DeploymentStatus = object.status();
            let wanted = spec.replicas.unwrap_or(1).max(0) as u64;
            let available = u64::from(status.updated_available_replicas);
            let spec_hash = crate::controllers::workload::template_hash(&spec.template);
            let revision = status.history.iter().find(|r| r.hash == spec_hash);
            match revision {
                _ if unobserved(status.observed_generation) || revision.is_none() => {
                    Readiness::waiting(0, wanted, "waiting for the spec update to be observed")
                }
                Some(failed) if failed.state == FAILED => {
                    let why = condition(&status.conditions, ConditionType::Progressing)
                        .map_or(failed.reason.clone(), |c| c.message.clone());
                    let text = format!("rollout of revision {} failed: {why}", failed.revision);
                    Readiness { done: available, of: wanted, state: State::Failed(text.clone()), text }
                }
                _ if spec.paused => {
                    Readiness::waiting(available, wanted, "paused (flotilla rollout resume to continue)")
                }
                Some(done) if done.state == COMPLETE && u64::from(status.replicas) == wanted => Readiness {
                    done: wanted,
                    of: wanted,
                    state: State::Done,
                    text: format!("successfully rolled out (revision {})", status.revision),
                },
                _ => Readiness::waiting(
                    available,
                    wanted,
                    format!("updated replicas available (revision {})", status.revision),
                ),
            }
        }
        Kind::DaemonSet => {
            let status: DaemonSetStatus = object.status();
            let wanted = u64::from(status.desired_number_scheduled);
            let available = u64::from(status.number_available.min(status.updated_number_scheduled));
            if unobserved(status.observed_generation) {
                Readiness::waiting(0, wanted, "waiting for the spec update to be observed")
            } else if available >= wanted {
                Readiness { done: wanted, of: wanted, state: State::Done, text: format!("available on {wanted} nodes") }
            } else {
                let text = "nodes run the updated replica, available";
                Readiness::waiting(available, wanted, text)
            }
        }
        Kind::StatefulSet => {
            let spec: StatefulSetSpec = object.spec().unwrap_or_default();
            let status: StatefulSetStatus = object.status();
            let wanted = spec.replicas.unwrap_or(1).max(0) as u64;
            let ready = u64::from(status.ready_replicas.min(status.updated_replicas));
            if unobserved(status.observed_generation) {
                Readiness::waiting(0, wanted, "waiting for the spec update to be observed")
            } else if ready >= wanted && u64::from(status.replicas) == wanted {
                Readiness { done: wanted, of: wanted, state: State::Done, text: format!("{wanted} replicas ready") }
            } else {
                Readiness::waiting(ready, wanted, "updated replicas ready")
            }
        }
        Kind::Job => {
            let spec: JobSpec = object.spec().unwrap_or_default();
            let status: JobStatus = object.status();
            let wanted = spec.completions.unwrap_or(1).max(0) as u64;
            let succeeded = u64::from(status.succeeded);
            if let Some(failed) = condition(&status.conditions, ConditionType::Failed).filter(|c| c.is_true()) {
                let text =
                    format!("failed: {}", if failed.message.is_empty() { &failed.reason } else { &failed.message });
                Readiness { done: succeeded, of: wanted, state: State::Failed(text.clone()), text }
            } else if condition(&status.conditions, ConditionType::Complete).is_some_and(|c| c.is_true()) {
                Readiness { done: wanted, of: wanted, state: State::Done, text: "complete".into() }
            } else {
                let text = format!("completions, {} running", status.active);
                Readiness::waiting(succeeded, wanted, text)
            }
        }
        _ => Readiness { done: 1, of: 1, state: State::Done, text: "applied".into() },
    }
}

/// `kind/name` as the CLI prints it.
pub fn label(key: &ObjectKey) -> String {
    let kind = key.kind.to_string().to_lowercase();
    match key.namespace.as_str() {
        "" | "default" => format!("{kind}/{}", key.name),
        ns => format!("{kind}/{} -n {ns}", key.name),
    }
}

/// Follows `keys` until every one is available: a live line each. Fails
/// as soon as one fails, or at `timeout`, naming those not there yet.
pub fn until_available(client: &Client, keys: &[ObjectKey], timeout: Duration) -> anyhow::Result<()> {
    let progress = Progress::new();
    let mut lines: Vec<(ObjectKey, Line, bool)> =
        keys.iter().map(|key| (key.clone(), progress.counter(&label(key), 0), false)).collect();
    let started = Instant::now();
    loop {
        for (key, line, finished) in lines.iter_mut().filter(|(_, _, finished)| !*finished) {
            let object = client.get(key)?;
            let now = readiness(&object);
            match &now.state {
                State::Done => {
                    line.set(now.done, now.of, &now.text);
                    line.finish(&now.text);
                    *finished = true;
                }
                State::Failed(why) => {
                    line.finish(&now.text);
                    bail!("{} {why}", label(key));
                }
                State::Waiting => line.set(now.done, now.of, &now.text),
            }
        }
        let waiting: Vec<String> = lines.iter().filter(|(_, _, f)| !*f).map(|(key, _, _)| label(key)).collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!(
                "timed out after {} waiting for {} to be available",
                humantime::format_duration(timeout),
                waiting.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Condition, Revision};

    fn deployment(replicas: i64, status: DeploymentStatus) -> ApiObject {
        let manifest = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: main, image: busybox}}]}}\n"
        );
        let parsed = crate::manifest::parse_str("web.yaml", &manifest).unwrap();
        let mut object = ApiObject::from_manifest(&parsed.objects[0]);
        object.metadata.generation = 1;
        object.set_status(&status);
        object
    }

    #[test]
    fn a_deployment_is_followed_to_its_revision_complete_or_failed() {
        let unobserved = deployment(3, DeploymentStatus::default());
        assert_eq!(readiness(&unobserved).state, State::Waiting);
        let spec: DeploymentSpec = unobserved.spec().unwrap();
        let hash = crate::controllers::workload::template_hash(&spec.template);
        let revision = |state: &str| Revision {
            revision: 1,
            hash: hash.clone(),
            state: state.into(),
            reason: "never ready".into(),
            ..Revision::default()
        };
        let status = |state: &str, available: u32| DeploymentStatus {
            observed_generation: 1,
            replicas: 3,
            updated_available_replicas: available,
            revision: 1,
            history: vec![revision(state)],
            ..DeploymentStatus::default()
        };
        let rolling = readiness(&deployment(3, status("Progressing", 2)));
        assert_eq!((rolling.done, rolling.of, rolling.state), (2, 3, State::Waiting));
        assert_eq!(rolling.text, "updated replicas available (revision 1)");
        assert_eq!(readiness(&deployment(3, status(COMPLETE, 3))).state, State::Done);
        let mut failed = status(FAILED, 1);
        failed.conditions.push(Condition::new(ConditionType::Progressing, false, "RolledBack", "probe never passed"));
        let failed = readiness(&deployment(3, failed));
        assert!(matches!(&failed.state, State::Failed(why) if why.contains("probe never passed")), "{failed:?}");
    }

    #[test]
    fn other_kinds_are_there_once_applied() {
        let config = ApiObject::new(Kind::ConfigMap, "default", "settings");
        assert!(!is_workload(Kind::ConfigMap) && is_workload(Kind::Job));
        assert_eq!(readiness(&config).state, State::Done);
    }
}
