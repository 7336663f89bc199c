//! Services: each Service's ready endpoints, published to the nodes whose
//! replicas may use it (every node running a replica in the Service's
//! namespace) as one signed, retained [`ServiceTable`] per node on
//! `nodes/{id}/services`. The agent writes them where workloads read them
//! and forwards a local port to them.
//!
//! An endpoint is a replica that is Ready, not being replaced by a rollout,
//! on a node that reported its address (the `flotilla.io/address` label the
//! agent sets). Only ready replicas are endpoints, so a rollout moves
//! traffic as readiness changes. The endpoints also go into the Service's
//! `status.endpoints` (`flotilla get svc -o wide`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use firmware_proto::{Endpoint, MAX_ENDPOINTS, MAX_SERVICES, ServicePort, ServiceTable};
use serde::{Deserialize, Serialize};

use super::replica_spec::replica_id;
use crate::controllers::Snapshot;
use crate::manifest::types::{IntOrString, PodSpec, ServiceSpec};
use crate::object::ApiObject;
use crate::status::PodStatus;
use crate::store::Op;

/// Node label holding the address other devices reach it at.
pub const ADDRESS_LABEL: &str = "flotilla.io/address";

/// `status` of a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Ready endpoints, `address:port`, per Service port (`name` or the port number).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, Vec<String>>,
}

/// Every Service port with its endpoints, by namespace.
struct Resolved {
    namespace: String,
    port: ServicePort,
}

/// The service tables of every node that needs one (nodes with replicas in
/// a namespace that has Services), and the status writes of Services whose
/// endpoints changed.
pub fn tables(snapshot: &Snapshot, ops: &mut Vec<Op>) -> BTreeMap<String, Vec<ServicePort>> {
    let addresses: BTreeMap<&str, Ipv4Addr> = snapshot
        .nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_str(), n.metadata.labels.get(ADDRESS_LABEL)?.parse().ok()?)))
        .collect();
    let mut resolved = Vec::new();
    for service in &snapshot.services {
        let Some(spec) = service.spec::<ServiceSpec>() else { continue };
        let mut status = ServiceStatus::default();
        // Named like replicas on a node: `<namespace>.<name>` outside `default`.
        let name = firmware_proto::Name::new(&replica_id(service)).ok();
        for port in &spec.ports {
            let endpoints = endpoints(service, &spec, port, &snapshot.pods, &addresses);
            let key = if port.name.is_empty() { port.port.to_string() } else { port.name.clone() };
            status
                .endpoints
                .insert(key, endpoints.iter().map(|e| format!("{}:{}", Ipv4Addr::from(e.address), e.port)).collect());
            let Some(name) = name.clone() else { continue };
            resolved.push(Resolved {
                namespace: service.metadata.namespace.clone(),
                port: ServicePort {
                    service: name,
                    port_name: firmware_proto::bounded::truncated(&port.name),
                    port: port.port.clamp(0, i64::from(u16::MAX)) as u16,
                    protocol: if port.protocol.as_deref() == Some("UDP") {
                        firmware_proto::Protocol::Udp
                    } else {
                        firmware_proto::Protocol::Tcp
                    },
                    endpoints: endpoints.into_iter().take(MAX_ENDPOINTS).collect(),
                },
            });
        }
        if service.status::<ServiceStatus>() != status {
            let mut updated = ApiObject::clone(service);
            updated.set_status(&status);
            ops.push(Op::UpdateStatus(updated));
        }
    }
    // Which namespaces each node's replicas are in.
    let mut namespaces: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for pod in &snapshot.pods {
        if let Some(node) = pod.content.get("spec").and_then(|s| s.get("nodeName")).and_then(|n| n.as_str()) {
            namespaces.entry(node.to_owned()).or_default().insert(pod.metadata.namespace.as_str());
        }
    }
    let mut out = BTreeMap::new();
    for (node, spaces) in namespaces {
        let ports: Vec<ServicePort> = resolved
            .iter()
            .filter(|r| spaces.contains(r.namespace.as_str()))
            .map(|r| r.port.clone())
            .take(MAX_SERVICES)
            .collect();
        out.insert(node, ports);
    }
    out
}

/// The ready endpoints of one Service port, ordered.
fn endpoints(
    service: &ApiObject,
    spec: &ServiceSpec,
    port: &crate::manifest::types::ServicePort,
    pods: &[Arc<ApiObject>],
    addresses: &BTreeMap<&str, Ipv4Addr>,
) -> Vec<Endpoint> {
    if spec.selector.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Endpoint> = pods
        .iter()
        .filter(|p| p.metadata.namespace == service.metadata.namespace)
        .filter(|p| spec.selector.iter().all(|(k, v)| p.metadata.labels.get(k) == Some(v)))
        .filter(|p| {
            let status: PodStatus = p.status();
            status.is_ready() && !p.is_retired() && !status.is_finished()
        })
        .filter_map(|p| {
            let node = p.content.get("spec")?.get("nodeName")?.as_str()?;
            let address = addresses.get(node)?;
            let target = target_port(p, port)?;
            Some(Endpoint { address: address.octets(), port: target })
        })
        .collect();
    out.sort_by_key(|e| (e.address, e.port));
    out.dedup();
    out
}

/// The replica's port a Service port targets: a number, or the name of a
/// container port; default the Service's own port.
fn target_port(pod: &ApiObject, port: &crate::manifest::types::ServicePort) -> Option<u16> {
    let number = match &port.target_port {
        None => port.port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => {
            let spec: PodSpec = pod.spec()?;
            spec.containers.iter().flat_map(|c| &c.ports).find(|p| &p.name == name)?.container_port
        }
    };
    u16::try_from(number).ok().filter(|p| *p != 0)
}

/// One node's table.
pub fn table_for(node_id: &firmware_proto::NodeId, generation: u64, ports: &[ServicePort]) -> ServiceTable {
    ServiceTable { node_id: node_id.clone(), generation, services: ports.iter().take(MAX_SERVICES).cloned().collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;
    use crate::manifest::parse_str;
    use crate::status::Condition;

    fn object(yaml: &str) -> ApiObject {
        ApiObject::from_manifest(&parse_str("t.yaml", yaml).unwrap().objects[0])
    }

    fn pod(name: &str, app: &str, node: &str, ready: bool, retired: bool) -> ApiObject {
        let mut pod = object(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {app}}}}}\nspec:\n  \
             containers:\n  - name: web\n    image: web:1\n    ports: [{{name: http, containerPort: 8080}}]\n"
        ));
        // Bound by the scheduler, not by manifests.
        pod.content["spec"]["nodeName"] = node.into();
        let mut status = PodStatus { phase: "Running".into(), ..PodStatus::default() };
        status.conditions.push(Condition::new("Ready", ready, "", ""));
        if retired {
            pod.metadata.deletion_timestamp = "2026-01-01T00:00:00Z".into();
        }
        pod.set_status(&status);
        pod
    }

    fn node(name: &str, address: &str) -> ApiObject {
        let mut node = ApiObject::new(Kind::Node, "", name);
        node.metadata.labels.insert(ADDRESS_LABEL.into(), address.into());
        node
    }

    #[test]
    fn only_ready_unretired_replicas_on_addressed_nodes_are_endpoints_for_nodes_in_the_namespace() {
        let service = object(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  \
             ports: [{name: http, port: 80, targetPort: http}]\n",
        );
        let snapshot = Snapshot {
            services: vec![Arc::new(service)],
            nodes: [
                node("edge-1", "10.77.0.11"),
                node("edge-2", "10.77.0.12"),
                ApiObject::new(Kind::Node, "", "edge-3"),
            ]
            .map(Arc::new)
            .into(),
            pods: [
                pod("web-1", "web", "edge-1", true, false),
                pod("web-2", "web", "edge-2", false, false),
                pod("web-3", "web", "edge-2", true, true),
                pod("web-4", "web", "edge-3", true, false),
                pod("db-1", "db", "edge-2", true, false),
            ]
            .map(Arc::new)
            .into(),
            ..Snapshot::default()
        };
        let mut ops = Vec::new();
        let by_node = tables(&snapshot, &mut ops);
        assert_eq!(by_node.keys().collect::<Vec<_>>(), ["edge-1", "edge-2", "edge-3"]);
        let web = &by_node["edge-2"][0];
        assert_eq!((web.service.as_str(), web.port), ("web", 80));
        assert_eq!(web.endpoints.as_slice(), [Endpoint { address: [10, 77, 0, 11], port: 8080 }]);
        let Op::UpdateStatus(written) = &ops[0] else { panic!("{ops:?}") };
        let status: ServiceStatus = written.status();
        assert_eq!(status.endpoints["http"], ["10.77.0.11:8080"]);
        // A second pass with that status stored writes nothing.
        let snapshot = Snapshot { services: vec![Arc::new(written.clone())], ..snapshot };
        let mut again = Vec::new();
        tables(&snapshot, &mut again);
        assert!(again.is_empty(), "{again:?}");
    }
}
