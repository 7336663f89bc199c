//! The fleet on `/metrics`, read from the store at each scrape: devices by
//! state and arch, replicas by phase, and the CPU, memory and restarts the
//! agents report, per device and per replica (issue 21). Nothing is kept
//! between scrapes: the store's view is a free snapshot, and a series of a
//! device or replica that is gone goes with it.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::manifest::{Kind, Quantity};
use crate::status::{ConditionStatus, ConditionType, NodeStatus, PodStatus, condition};
use crate::store::Store;

/// Reads the fleet's state out of `store` on each scrape.
#[derive(Clone)]
pub struct FleetCollector {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for FleetCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetCollector")
    }
}

impl FleetCollector {
    /// A collector over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        FleetCollector { store }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
    arch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadLabels {
    namespace: String,
    kind: String,
    workload: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    namespace: String,
    deployment: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    namespace: String,
    pod: String,
    node: String,
    workload: String,
}

/// A device's state as the dashboard and alerts want it: `ready`, or the
/// reason its Ready condition is not true, in snake case (`unreachable`,
/// `lease_expired`, `revoked`, ...), or `unknown`.
fn node_state(status: &NodeStatus) -> String {
    match condition(&status.conditions, ConditionType::Ready) {
        Some(ready) if ready.status == ConditionStatus::True => "ready".into(),
        Some(ready) if !ready.reason.is_empty() => snake_case(&ready.reason),
        _ => "unknown".into(),
    }
}

/// `LeaseExpired` -> `lease_expired`.
fn snake_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for (i, c) in text.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A quantity in base units (`2` CPUs, `1Gi` bytes) as a float, `millis` of it.
fn units(text: Option<&String>) -> Option<f64> {
    Some(Quantity::parse(text?).ok()?.as_millis() as f64 / 1000.0)
}

fn encode_family<S, M>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    family: &Family<S, M>,
) -> Result<(), std::fmt::Error>
where
    S: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug,
    M: EncodeMetric + prometheus_client::metrics::TypedMetric + Default,
{
    family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)
}

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = self.store.view();
        let nodes = Family::<StateLabels, Gauge>::default();
        let node_cpu = Family::<NodeLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let node_memory = Family::<NodeLabels, Gauge>::default();
        let node_cpu_allocatable = Family::<NodeLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let node_memory_allocatable = Family::<NodeLabels, Gauge>::default();
        for node in view.list(Kind::Node, None) {
            let status = node.typed_status::<NodeStatus>();
            let labels = StateLabels { state: node_state(&status), arch: status.node_info.architecture.clone() };
            nodes.get_or_create(&labels).inc();
            let name = NodeLabels { node: node.metadata.name.clone() };
            if let Some(usage) = &status.usage {
                node_cpu.get_or_create(&name).set(usage.cpu_millis as f64 / 1000.0);
                node_memory.get_or_create(&name).set(usage.memory_bytes.min(i64::MAX as u64) as i64);
            }
            if let Some(cpu) = units(status.allocatable.get("cpu")) {
                node_cpu_allocatable.get_or_create(&name).set(cpu);
            }
            if let Some(memory) = units(status.allocatable.get("memory")) {
                node_memory_allocatable.get_or_create(&name).set(memory as i64);
            }
        }
        let pods = Family::<PhaseLabels, Gauge>::default();
        let pod_cpu = Family::<PodLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let pod_memory = Family::<PodLabels, Gauge>::default();
        let mut restarts: Vec<(PodLabels, u64)> = Vec::new();
        let unschedulable = Family::<ReasonLabels, Gauge>::default();
        for pod in view.list(Kind::Pod, None) {
            let status = pod.typed_status::<PodStatus>();
            pods.get_or_create(&PhaseLabels { phase: status.phase.as_str().to_owned() }).inc();
            let labels = PodLabels {
                namespace: pod.metadata.namespace.clone(),
                pod: pod.metadata.name.clone(),
                node: pod.node_name().unwrap_or_default().to_owned(),
                workload: pod.metadata.owner_references.first().map(|o| o.name.clone()).unwrap_or_default(),
            };
            if let Some(usage) = &status.usage {
                pod_cpu.get_or_create(&labels).set(usage.cpu_millis as f64 / 1000.0);
                pod_memory.get_or_create(&labels).set(usage.memory_bytes.min(i64::MAX as u64) as i64);
            }
            restarts.push((labels, u64::from(status.restart_count)));
            if status.phase == crate::status::PodPhase::Pending && pod.node_name().is_none() {
                let reason = if status.reason.is_empty() { "Pending".to_owned() } else { status.reason.clone() };
                unschedulable.get_or_create(&ReasonLabels { reason }).inc();
            }
        }
        // Workloads: desired and available replicas, and where each
        // Deployment's rollout is (the states `rollout status` reads).
        let desired = Family::<WorkloadLabels, Gauge>::default();
        let available = Family::<WorkloadLabels, Gauge>::default();
        let rollouts = Family::<RolloutLabels, Gauge>::default();
        let revisions = Family::<WorkloadLabels, Gauge>::default();
        for kind in [Kind::Deployment, Kind::DaemonSet, Kind::StatefulSet] {
            for workload in view.list(kind, None) {
                let now = crate::commands::wait::readiness(workload);
                let labels = WorkloadLabels {
                    namespace: workload.metadata.namespace.clone(),
                    kind: kind.to_string(),
                    workload: workload.metadata.name.clone(),
                };
                desired.get_or_create(&labels).set(now.of as i64);
                available.get_or_create(&labels).set(now.done as i64);
                if kind != Kind::Deployment {
                    continue;
                }
                let paused =
                    workload.typed_spec::<crate::manifest::types::DeploymentSpec>().is_some_and(|spec| spec.paused);
                let state = match now.state {
                    crate::commands::wait::State::Done => "complete",
                    crate::commands::wait::State::Failed(_) => "failed",
                    crate::commands::wait::State::Waiting if paused => "paused",
                    crate::commands::wait::State::Waiting => "progressing",
                };
                let status: crate::status::DeploymentStatus = workload.status();
                revisions.get_or_create(&labels).set(status.revision as i64);
                let rollout =
                    RolloutLabels { namespace: labels.namespace, deployment: labels.workload, state: state.to_owned() };
                rollouts.get_or_create(&rollout).set(1);
            }
        }
        encode_family(&mut encoder, "fleet_nodes", "Devices by state (ready, or why not) and arch", &nodes)?;
        encode_family(&mut encoder, "node_cpu_usage_cores", "CPU a device uses, as its agent reports", &node_cpu)?;
        encode_family(
            &mut encoder,
            "node_memory_usage_bytes",
            "Memory a device uses, as its agent reports",
            &node_memory,
        )?;
        encode_family(
            &mut encoder,
            "node_cpu_allocatable_cores",
            "CPU replicas may use on a device",
            &node_cpu_allocatable,
        )?;
        encode_family(
            &mut encoder,
            "node_memory_allocatable_bytes",
            "Memory replicas may use on a device",
            &node_memory_allocatable,
        )?;
        encode_family(&mut encoder, "fleet_pods", "Replicas by phase", &pods)?;
        encode_family(&mut encoder, "pod_cpu_usage_cores", "CPU a replica uses, as its agent reports", &pod_cpu)?;
        encode_family(
            &mut encoder,
            "pod_memory_usage_bytes",
            "Memory (working set) a replica uses, as its agent reports",
            &pod_memory,
        )?;
        encode_family(
            &mut encoder,
            "pods_unschedulable",
            "Replicas waiting for a node, by why (Unschedulable, ImageNotPinned, MissingReference, ...)",
            &unschedulable,
        )?;
        encode_family(&mut encoder, "workload_replicas_desired", "Replicas a workload wants", &desired)?;
        encode_family(
            &mut encoder,
            "workload_replicas_available",
            "A workload's updated replicas that are available",
            &available,
        )?;
        encode_family(
            &mut encoder,
            "deployment_rollout_state",
            "1 for the state of a Deployment's rollout: progressing, complete, failed (rolled back) or paused",
            &rollouts,
        )?;
        encode_family(&mut encoder, "deployment_revision", "A Deployment's current revision", &revisions)?;
        let mut descriptor = encoder.encode_descriptor(
            "pod_restarts",
            "Container restarts of a replica on its device",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (labels, count) in restarts {
            ConstCounter::new(count).encode(descriptor.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_become_snake_case_states() {
        assert_eq!(snake_case("LeaseExpired"), "lease_expired");
        assert_eq!(snake_case("Unreachable"), "unreachable");
        assert_eq!(units(Some(&"1500m".to_owned())), Some(1.5));
        assert_eq!(units(Some(&"1Gi".to_owned())), Some(1073741824.0));
    }
}
