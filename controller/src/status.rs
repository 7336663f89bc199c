//! The `status` of each kind, as written by the reconcilers and (for pods
//! and nodes) the agents. Field names follow Kubernetes so that scripts
//! written for `kubectl -o json` read them the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A condition: `{type, status: "True"|"False"|"Unknown", reason, message}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// E.g. `PodScheduled`, `Ready`, `Complete`.
    #[serde(rename = "type")]
    pub condition_type: ConditionType,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// One CamelCase word.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// For people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When `status` last changed (RFC 3339, milliseconds); kept when only
    /// the reason or message change. Rollouts time readiness with it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_transition_time: String,
}

impl Condition {
    /// A condition.
    pub fn new(condition_type: ConditionType, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            condition_type,
            status: if status { ConditionStatus::True } else { ConditionStatus::False },
            reason: reason.to_owned(),
            message: message.into(),
            last_transition_time: String::new(),
        }
    }

    /// Whether it says the same as `other` (its time aside).
    pub fn says(&self, other: &Condition) -> bool {
        (&self.condition_type, &self.status, &self.reason, &self.message)
            == (&other.condition_type, &other.status, &other.reason, &other.message)
    }

    /// Whether `status` is `True`.
    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

/// What a condition is about: the types Flotilla writes, and any other
/// kept as written (a status set by hand through the API).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// A Pod, Node or DaemonSet replica is ready.
    #[default]
    Ready,
    /// A Pod is placed (or why it is not).
    PodScheduled,
    /// A Deployment's rollout moves (or why it does not).
    Progressing,
    /// A Deployment has its minimum of ready replicas.
    Available,
    /// A Job ran to completion.
    Complete,
    /// A Job gave up.
    Failed,
    /// Any other type.
    Other(String),
}

impl ConditionType {
    /// The name, as in JSON.
    pub fn as_str(&self) -> &str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::PodScheduled => "PodScheduled",
            ConditionType::Progressing => "Progressing",
            ConditionType::Available => "Available",
            ConditionType::Complete => "Complete",
            ConditionType::Failed => "Failed",
            ConditionType::Other(other) => other,
        }
    }

    /// The type named `name`.
    pub fn named(name: &str) -> Self {
        match name {
            "Ready" => ConditionType::Ready,
            "PodScheduled" => ConditionType::PodScheduled,
            "Progressing" => ConditionType::Progressing,
            "Available" => ConditionType::Available,
            "Complete" => ConditionType::Complete,
            "Failed" => ConditionType::Failed,
            other => ConditionType::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for ConditionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for ConditionType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ConditionType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(ConditionType::named(&name))
    }
}

/// A condition's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionStatus {
    /// It holds.
    True,
    /// It does not.
    False,
    /// Nobody can tell (the node that would say is not heard).
    #[default]
    Unknown,
}

impl std::fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        })
    }
}

/// Finds a condition by type.
pub fn condition(conditions: &[Condition], condition_type: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.condition_type == condition_type)
}

/// Sets a condition, replacing one of the same type; its transition time
/// is now if its status changed (or it is new), else the old one.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.condition_type == new.condition_type) {
        Some(existing) => {
            if new.last_transition_time.is_empty() {
                new.last_transition_time = if existing.status == new.status && !existing.last_transition_time.is_empty()
                {
                    existing.last_transition_time.clone()
                } else {
                    crate::object::now_rfc3339_millis()
                };
            }
            *existing = new;
        }
        None => {
            if new.last_transition_time.is_empty() {
                new.last_transition_time = crate::object::now_rfc3339_millis();
            }
            conditions.push(new);
        }
    }
}

/// Usage as the agent measured it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// CPU in millicores.
    #[serde(default)]
    pub cpu_millis: u64,
    /// Memory working set in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// A node's free space for images and volumes (its data directory's
    /// file system), bytes; 0 for a replica.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_free_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `status` of a Pod (a replica).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// Where the replica is in its life.
    #[serde(default)]
    pub phase: PodPhase,
    /// `PodScheduled`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Why it is in this phase, one word (e.g. `Unschedulable`, `OOMKilled`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Container restarts.
    #[serde(default)]
    pub restart_count: u32,
    /// Exit code of the last run, if it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Latest usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Each app container, for a pod of more than one container (a pod of
    /// one is its container).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
    /// Each init container (sidecars too), likewise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_container_statuses: Vec<ContainerStatus>,
}

/// One container of a pod, as its node reports it (Kubernetes' shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// The container's name.
    pub name: String,
    /// Running and passing its readiness probe.
    #[serde(default)]
    pub ready: bool,
    /// Restarts on its node.
    #[serde(default)]
    pub restart_count: u32,
    /// Where it is: exactly one of the three.
    #[serde(default)]
    pub state: ContainerState,
    /// Latest usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// `running`, `waiting` or `terminated`, as Kubernetes writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// Its process runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<serde_json::Map<String, serde_json::Value>>,
    /// Not started yet (or between restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<StateReason>,
    /// Ended for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<StateReason>,
}

/// Why a container waits or ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateReason {
    /// One word (`CrashLoopBackOff`, `Completed`, `Error`, `OOMKilled`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// How it last exited, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl PodStatus {
    /// `READY` as `kubectl get pods` shows it: ready containers of the app
    /// containers and sidecars `spec` names.
    pub fn ready_of(&self, spec: &crate::manifest::types::PodSpec) -> String {
        let sidecars: Vec<&str> = spec
            .init_containers
            .iter()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .map(|c| c.name.as_str())
            .collect();
        let total = (spec.containers.len() + sidecars.len()).max(1);
        if self.container_statuses.is_empty() {
            return format!("{}/{total}", usize::from(self.is_ready()).min(total));
        }
        let ready = self.container_statuses.iter().filter(|c| c.ready).count()
            + self.init_container_statuses.iter().filter(|c| c.ready && sidecars.contains(&c.name.as_str())).count();
        format!("{ready}/{total}")
    }
}

/// A replica's phase, Kubernetes' pod phases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PodPhase {
    /// Not running yet: waiting for a node, an image, a reference, or its
    /// node to start it.
    #[default]
    Pending,
    /// Its node runs it.
    Running,
    /// It ran to completion (exit 0) and is not restarted.
    Succeeded,
    /// It ended in failure and is not restarted.
    Failed,
    /// Its node was lost: what it does is not known.
    Unknown,
}

impl PodPhase {
    /// The name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
            PodPhase::Unknown => "Unknown",
        }
    }
}

impl std::fmt::Display for PodPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl PodStatus {
    /// Whether the replica finished (it is not restarted any more).
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, PodPhase::Succeeded | PodPhase::Failed)
    }

    /// Whether the Ready condition is true.
    pub fn is_ready(&self) -> bool {
        condition(&self.conditions, ConditionType::Ready).is_some_and(Condition::is_true)
    }
}

/// What an agent reports about its device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// `arm64`, `amd64`, `arm`.
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub operating_system: String,
    /// The agent's version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
    /// The desired-document profile the node takes: `linux` (pods of
    /// several containers, large config) or `compact` (microcontroller
    /// sized). Empty for nodes that never said: Linux.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub document_profile: String,
}

impl NodeInfo {
    /// The node's document profile.
    pub fn profile(&self) -> firmware_proto::Profile {
        if self.document_profile == firmware_proto::Profile::Compact.name() {
            firmware_proto::Profile::Compact
        } else {
            firmware_proto::Profile::Linux
        }
    }
}

/// `status` of a Node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Totals: `cpu`, `memory`, `pods`, and extended resources, as quantities.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, String>,
    /// What replicas may use (capacity minus what the system keeps).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: BTreeMap<String, String>,
    /// Arch, OS, agent version.
    #[serde(default)]
    pub node_info: NodeInfo,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Latest usage of the whole device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl NodeStatus {
    /// Whether the Ready condition is true.
    pub fn is_ready(&self) -> bool {
        condition(&self.conditions, ConditionType::Ready).is_some_and(Condition::is_true)
    }
}

/// `status` of a PersistentVolumeClaim, written by the scheduling
/// controller when it places the first replica that mounts the claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimStatus {
    /// `Pending` until a replica that mounts it is placed, then `Bound`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// The device that holds its directory (Flotilla's: a local claim's
    /// data is on one device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// `storage`: the size it was bound with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, String>,
    /// The access modes it is served with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
}

/// `status` of a Deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// The generation this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// Replicas that exist.
    #[serde(default)]
    pub replicas: u32,
    /// Replicas of the current template.
    #[serde(default)]
    pub updated_replicas: u32,
    /// Replicas that are ready.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Replicas ready for at least `minReadySeconds`.
    #[serde(default)]
    pub available_replicas: u32,
    /// Replicas of the current template that are available.
    #[serde(default)]
    pub updated_available_replicas: u32,
    /// The revision the replicas run or are moving to.
    #[serde(default)]
    pub revision: u64,
    /// `Available` and `Progressing`, with why (e.g. `RolledBack`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Revisions, oldest first: the current one and up to
    /// `revisionHistoryLimit` older ones to roll back to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Revision>,
    /// When the current rollout last made progress (RFC 3339): the
    /// progress deadline counts from here.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub progress_at: String,
}

/// One revision of a Deployment's pod template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// 1, 2, ...: a new number for every new template.
    pub revision: u64,
    /// The template's hash (the `pod-template-hash` of its replicas).
    pub hash: String,
    /// `Progressing`, `Complete` (every replica of it was available at
    /// once: a good revision to roll back to) or `Failed`.
    pub state: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When it was first seen (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    /// The template itself, to roll back to.
    pub template: crate::manifest::types::PodTemplate,
}

/// `status` of a DaemonSet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetStatus {
    /// The generation this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// Nodes that should run a replica.
    #[serde(default)]
    pub desired_number_scheduled: u32,
    /// Nodes that have one.
    #[serde(default)]
    pub current_number_scheduled: u32,
    /// Ready replicas.
    #[serde(default)]
    pub number_ready: u32,
    /// Replicas of the current template.
    #[serde(default)]
    pub updated_number_scheduled: u32,
    /// Replicas ready for at least `minReadySeconds`.
    #[serde(default)]
    pub number_available: u32,
}

/// `status` of a StatefulSet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetStatus {
    /// The generation this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// Replicas that exist (not being replaced or removed).
    #[serde(default)]
    pub replicas: u32,
    /// Ready replicas.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Replicas of the revision the update started from.
    #[serde(default)]
    pub current_replicas: u32,
    /// Replicas of the current template.
    #[serde(default)]
    pub updated_replicas: u32,
    /// Replicas ready for at least `minReadySeconds`.
    #[serde(default)]
    pub available_replicas: u32,
    /// `<name>-<template hash>` the update started from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_revision: String,
    /// `<name>-<template hash>` of the current template.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub update_revision: String,
}

/// `status` of a Job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// The generation this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// Replicas running or pending.
    #[serde(default)]
    pub active: u32,
    /// Replicas that succeeded.
    #[serde(default)]
    pub succeeded: u32,
    /// Replicas that failed.
    #[serde(default)]
    pub failed: u32,
    /// When the Job was first seen (RFC 3339): `activeDeadlineSeconds`
    /// counts from here.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub start_time: String,
    /// `Complete` or `Failed` once decided.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// `status` of a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Ready endpoints, `address:port`, per Service port (`name` or the port number).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, Vec<String>>,
    /// For a `NodePort` or `LoadBalancer` Service: the devices' port each
    /// Service port is served on (the same key as `endpoints`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_ports: BTreeMap<String, u16>,
    /// For a `LoadBalancer` Service: the devices serving it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerStatus>,
    /// Why the Service is not served as asked (a devices' port another
    /// Service has).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// `status.loadBalancer`, as Kubernetes shapes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerStatus {
    /// One per device running a ready replica.
    #[serde(default)]
    pub ingress: Vec<LoadBalancerIngress>,
}

/// One `status.loadBalancer.ingress` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancerIngress {
    /// The device's address.
    pub ip: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_types_read_and_write_as_kubernetes_spells_them_and_unknown_ones_are_kept() {
        let json = r#"[{"type":"Ready","status":"True"},{"type":"DiskPressure","status":"False","reason":"Fine"}]"#;
        let conditions: Vec<Condition> = serde_json::from_str(json).unwrap();
        assert_eq!(conditions[0].condition_type, ConditionType::Ready);
        assert_eq!(conditions[1].condition_type, ConditionType::Other("DiskPressure".into()));
        assert!(condition(&conditions, ConditionType::Other("DiskPressure".into())).is_some());
        assert_eq!(serde_json::to_string(&conditions).unwrap(), json);
        assert_eq!(format!("{:<8}|", ConditionType::Failed), "Failed  |");
    }
}
