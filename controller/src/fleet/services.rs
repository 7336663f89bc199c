//! Service tables: each Service's ready endpoints
//! ([`crate::controllers::endpoints`]), published to the nodes whose
//! replicas may use it (every node running a replica in the Service's
//! namespace) as one signed, retained [`ServiceTable`] per node on
//! `nodes/{id}/services`. The agent writes them where workloads read them
//! and forwards a local port to them. This module only projects: the
//! Services' status is written by the endpoints controller.

use std::collections::{BTreeMap, BTreeSet};

use firmware_proto::{MAX_ENDPOINTS, MAX_SERVICES, ServicePort, ServiceTable};

use crate::controllers::{Snapshot, endpoints};
use crate::replica_spec::replica_id;

pub use crate::controllers::endpoints::{ADDRESS_LABEL, ServiceStatus};

/// One Service port for the nodes of a namespace.
struct Resolved {
    namespace: String,
    port: ServicePort,
    /// The devices' port, for an exposed Service.
    node_port: Option<u16>,
}

/// The service tables of every node that needs one (nodes with replicas in
/// a namespace that has Services).
pub fn tables(snapshot: &Snapshot) -> BTreeMap<String, Vec<ServicePort>> {
    let mut resolved = Vec::new();
    for service in endpoints::resolve(snapshot) {
        // Named like replicas on a node: `<namespace>.<name>` outside `default`.
        let Ok(name) = firmware_proto::Name::new(&replica_id(service.service)) else { continue };
        for (port, endpoints, node_port) in service.ports {
            resolved.push(Resolved {
                namespace: service.service.metadata.namespace.clone(),
                node_port,
                port: ServicePort {
                    service: name.clone(),
                    port_name: firmware_proto::bounded::truncated(&port.name),
                    port: port.port.clamp(0, i64::from(u16::MAX)) as u16,
                    protocol: if port.protocol.as_deref() == Some("UDP") {
                        firmware_proto::Protocol::Udp
                    } else {
                        firmware_proto::Protocol::Tcp
                    },
                    endpoints: endpoints.into_iter().take(MAX_ENDPOINTS).collect(),
                    node_port: None,
                },
            });
        }
    }
    // Which namespaces each node's replicas are in.
    let mut namespaces: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for pod in &snapshot.pods {
        if let Some(node) = pod.node_name() {
            namespaces.entry(node.to_owned()).or_default().insert(pod.metadata.namespace.as_str());
        }
    }
    // A NodePort or LoadBalancer Service is served on the devices that
    // run one of its ready replicas (an endpoint at the device's address).
    let addresses: BTreeMap<&str, [u8; 4]> = snapshot
        .nodes
        .iter()
        .filter_map(|n| {
            let address: std::net::Ipv4Addr = n.metadata.labels.get(ADDRESS_LABEL)?.parse().ok()?;
            Some((n.metadata.name.as_str(), address.octets()))
        })
        .collect();
    let mut out = BTreeMap::new();
    for (node, spaces) in namespaces {
        let here = addresses.get(node.as_str());
        let ports: Vec<ServicePort> = resolved
            .iter()
            .filter(|r| spaces.contains(r.namespace.as_str()))
            .map(|r| {
                let mut port = r.port.clone();
                port.node_port =
                    r.node_port.filter(|_| here.is_some_and(|a| port.endpoints.iter().any(|e| &e.address == a)));
                port
            })
            .take(MAX_SERVICES)
            .collect();
        out.insert(node, ports);
    }
    out
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
    use crate::object::ApiObject;
    use crate::status::{Condition, ConditionType, PodStatus};
    use firmware_proto::Endpoint;
    use std::sync::Arc;

    fn object(yaml: &str) -> ApiObject {
        ApiObject::from_manifest(&parse_str("t.yaml", yaml).unwrap().objects[0])
    }

    #[test]
    fn nodes_with_replicas_in_the_namespace_get_the_ready_endpoints() {
        let service = object(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  \
             ports: [{name: http, port: 80, targetPort: 8080}]\n",
        );
        let pod = |name: &str, node: &str, ready: bool| {
            let mut pod = object(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\nspec:\n  \
                 containers: [{{name: web, image: web:1}}]\n"
            ));
            pod.set_node_name(Some(node));
            let mut status = PodStatus { phase: crate::status::PodPhase::Running, ..PodStatus::default() };
            status.conditions.push(Condition::new(ConditionType::Ready, ready, "", ""));
            pod.set_status(&status);
            Arc::new(pod)
        };
        let mut node = ApiObject::new(Kind::Node, "", "edge-1");
        node.metadata.labels.insert(ADDRESS_LABEL.into(), "10.77.0.11".into());
        let snapshot = Snapshot {
            services: vec![Arc::new(service)],
            nodes: vec![Arc::new(node), Arc::new(ApiObject::new(Kind::Node, "", "edge-2"))],
            pods: vec![pod("web-1", "edge-1", true), pod("web-2", "edge-2", false)],
            ..Snapshot::default()
        };
        let by_node = tables(&snapshot);
        assert_eq!(by_node.keys().collect::<Vec<_>>(), ["edge-1", "edge-2"]);
        let web = &by_node["edge-2"][0];
        assert_eq!((web.service.as_str(), web.port), ("web", 80));
        assert_eq!(web.endpoints.as_slice(), [Endpoint { address: [10, 77, 0, 11], port: 8080 }]);
        assert_eq!(web.node_port, None, "a ClusterIP Service is not served on the devices' addresses");

        // As a LoadBalancer: served on port 80 of the device running the
        // ready replica (edge-1), not on the other.
        let mut exposed = ApiObject::clone(&snapshot.services[0]);
        let mut spec: crate::manifest::types::ServiceSpec = exposed.spec().unwrap();
        spec.service_type = Some("LoadBalancer".into());
        exposed.set_spec(spec);
        let by_node = tables(&Snapshot { services: vec![Arc::new(exposed)], ..snapshot });
        assert_eq!(by_node["edge-1"][0].node_port, Some(80));
        assert_eq!(by_node["edge-2"][0].node_port, None);
    }
}
