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
    pub condition_type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// For people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Condition {
    /// A condition.
    pub fn new(condition_type: &str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            condition_type: condition_type.to_owned(),
            status: if status { "True" } else { "False" }.to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// Finds a condition by type.
pub fn condition<'a>(conditions: &'a [Condition], condition_type: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.condition_type == condition_type)
}

/// Sets a condition, replacing one of the same type.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.condition_type == new.condition_type) {
        Some(existing) => *existing = new,
        None => conditions.push(new),
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
}

/// `status` of a Pod (a replica).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    #[serde(default)]
    pub phase: String,
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
}

impl PodStatus {
    /// Whether the replica finished (it is not restarted any more).
    pub fn is_finished(&self) -> bool {
        matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }

    /// Whether the Ready condition is true.
    pub fn is_ready(&self) -> bool {
        condition(&self.conditions, "Ready").is_some_and(|c| c.status == "True")
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
        condition(&self.conditions, "Ready").is_some_and(|c| c.status == "True")
    }
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
    /// `Complete` or `Failed` once decided.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
