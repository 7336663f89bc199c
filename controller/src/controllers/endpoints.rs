//! Endpoints: each Service's ready endpoints, in its `status.endpoints`
//! (`flotilla get svc -o wide`). The fleet's service tables are built from
//! the same [`resolve`], so what a device is told and what the API shows
//! agree.
//!
//! An endpoint is a replica that is Ready, not retired, on a node that
//! reported its address (the `flotilla.io/address` label the agent sets).
//! Only ready replicas are endpoints, so a rollout moves traffic as
//! readiness changes.
//!
//! Writes a Service's `status`, and nothing else.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use firmware_proto::Endpoint;

use crate::manifest::types::{IntOrString, PodSpec, ServicePort, ServiceSpec};
use crate::object::ApiObject;
use crate::status::PodStatus;
use crate::store::Op;

use super::Snapshot;

/// Node label holding the address other devices reach it at.
pub const ADDRESS_LABEL: &str = "flotilla.io/address";

pub use crate::status::ServiceStatus;

/// One Service with the endpoints of each of its ports.
pub struct Resolved<'a> {
    /// The Service.
    pub service: &'a Arc<ApiObject>,
    /// Its ports, each with its ready endpoints and, for a `NodePort` or
    /// `LoadBalancer` Service, the devices' port it is served on.
    pub ports: Vec<(ServicePort, Vec<Endpoint>, Option<u16>)>,
    /// A `LoadBalancer` Service.
    pub load_balancer: bool,
    /// Why a port it asked for on the devices is not its.
    pub conflict: Option<String>,
}

/// Every Service's ports and their ready endpoints.
pub fn resolve(snapshot: &Snapshot) -> Vec<Resolved<'_>> {
    let addresses: BTreeMap<&str, Ipv4Addr> = snapshot
        .nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_str(), n.metadata.labels.get(ADDRESS_LABEL)?.parse().ok()?)))
        .collect();
    let mut services: Vec<&Arc<ApiObject>> = snapshot.services.iter().collect();
    services.sort_by_key(|s| s.key());
    let specs: Vec<Option<ServiceSpec>> = services.iter().map(|s| s.spec::<ServiceSpec>()).collect();
    let exposed = node_ports(&services, &specs);
    let mut out = Vec::new();
    for (i, (service, spec)) in services.into_iter().zip(&specs).enumerate() {
        let Some(spec) = spec else { continue };
        let ports = spec
            .ports
            .iter()
            .enumerate()
            .map(|(p, port)| {
                let endpoints = endpoints(service, spec, port, &snapshot.pods, &addresses);
                (port.clone(), endpoints, exposed.ports.get(&(i, p)).copied())
            })
            .collect();
        out.push(Resolved {
            service,
            ports,
            load_balancer: spec.service_type.as_deref() == Some("LoadBalancer"),
            conflict: exposed.conflicts.get(&i).cloned(),
        });
    }
    out
}

/// The devices' port of each port of each exposed Service, by (Service,
/// port) position: a `LoadBalancer` Service's own port (as a cloud load
/// balancer would listen on it); a `NodePort` Service's `nodePort`, or one
/// chosen from 30000-32767, stable for the Service and port and unused by
/// the others.
fn node_ports(services: &[&Arc<ApiObject>], specs: &[Option<ServiceSpec>]) -> NodePorts {
    let mut out = NodePorts::default();
    // Devices' ports given to a Service so far, in Service order: a second
    // Service asking for one is not served there and says why.
    let mut taken: BTreeMap<u16, String> = BTreeMap::new();
    let mut used: std::collections::BTreeSet<u16> = specs
        .iter()
        .flatten()
        .flat_map(|s| s.ports.iter().filter_map(|p| p.node_port))
        .filter_map(|p| u16::try_from(p).ok())
        .collect();
    let range = crate::manifest::validate::NODE_PORTS;
    let span = (range.end() - range.start() + 1) as u64;
    for (i, spec) in specs.iter().enumerate() {
        let Some(spec) = spec.as_ref().filter(|s| s.exposed()) else { continue };
        let load_balancer = spec.service_type.as_deref() == Some("LoadBalancer");
        for (p, port) in spec.ports.iter().enumerate() {
            let chosen = match (load_balancer, port.node_port) {
                (true, _) => u16::try_from(port.port).ok(),
                (false, Some(given)) => u16::try_from(given).ok(),
                (false, None) => {
                    let key = format!("{}/{}/{p}", services[i].metadata.namespace, services[i].metadata.name);
                    // FNV-1a: stable across builds.
                    let hash = key
                        .bytes()
                        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
                    (0..span)
                        .map(|step| (*range.start() as u64 + (hash + step) % span) as u16)
                        .find(|candidate| !used.contains(candidate))
                }
            };
            let Some(chosen) = chosen else { continue };
            let name = format!("{}/{}", services[i].metadata.namespace, services[i].metadata.name);
            match taken.get(&chosen) {
                Some(owner) if *owner != name => {
                    out.conflicts.insert(
                        i,
                        format!("port {chosen} of the devices is already Service {owner}'s: not served there"),
                    );
                }
                _ => {
                    taken.insert(chosen, name);
                    used.insert(chosen);
                    out.ports.insert((i, p), chosen);
                }
            }
        }
    }
    out
}

/// The devices' ports of exposed Services, and why a Service did not get
/// one it asked for.
#[derive(Default)]
struct NodePorts {
    ports: BTreeMap<(usize, usize), u16>,
    conflicts: BTreeMap<usize, String>,
}

/// The status a resolved Service shows.
pub fn status_of(resolved: &Resolved<'_>) -> ServiceStatus {
    let mut status = ServiceStatus::default();
    let mut devices: Vec<Ipv4Addr> = Vec::new();
    for (port, endpoints, node_port) in &resolved.ports {
        let key = if port.name.is_empty() { port.port.to_string() } else { port.name.clone() };
        let shown = endpoints.iter().map(|e| format!("{}:{}", Ipv4Addr::from(e.address), e.port)).collect();
        status.endpoints.insert(key.clone(), shown);
        if let Some(node_port) = node_port {
            status.node_ports.insert(key, *node_port);
        }
        devices.extend(endpoints.iter().map(|e| Ipv4Addr::from(e.address)));
    }
    status.message = resolved.conflict.clone().unwrap_or_default();
    if resolved.load_balancer {
        devices.sort();
        devices.dedup();
        let ingress = devices.into_iter().map(|ip| crate::status::LoadBalancerIngress { ip: ip.to_string() }).collect();
        status.load_balancer = Some(crate::status::LoadBalancerStatus { ingress });
    }
    status
}

/// Writes the status of every Service whose endpoints changed (with the
/// resourceVersion read).
pub fn reconcile(snapshot: &Snapshot, ops: &mut Vec<Op>) {
    for resolved in resolve(snapshot) {
        let status = status_of(&resolved);
        if resolved.service.status::<ServiceStatus>() != status {
            let mut updated = ApiObject::clone(resolved.service);
            updated.set_status(&status);
            ops.push(Op::UpdateStatus(updated));
        }
    }
}

/// The ready endpoints of one Service port, ordered.
fn endpoints(
    service: &ApiObject,
    spec: &ServiceSpec,
    port: &ServicePort,
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
            let status = p.typed_status::<PodStatus>();
            status.is_ready() && !p.is_retired() && !status.is_finished()
        })
        .filter_map(|p| {
            let node = p.node_name()?;
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
fn target_port(pod: &ApiObject, port: &ServicePort) -> Option<u16> {
    let number = match &port.target_port {
        None => port.port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => {
            let spec = pod.typed_spec::<PodSpec>()?;
            let containers = spec.containers.iter().chain(&spec.init_containers);
            containers.flat_map(|c| &c.ports).find(|p| &p.name == name)?.container_port
        }
    };
    u16::try_from(number).ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;
    use crate::manifest::parse_str;
    use crate::status::{Condition, ConditionType};

    fn object(yaml: &str) -> ApiObject {
        ApiObject::from_manifest(&parse_str("t.yaml", yaml).unwrap().objects[0])
    }

    fn pod(name: &str, app: &str, node: &str, ready: bool, retired: bool) -> ApiObject {
        let mut pod = object(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {app}}}}}\nspec:\n  \
             containers:\n  - name: web\n    image: web:1\n    ports: [{{name: http, containerPort: 8080}}]\n"
        ));
        // Bound by the scheduler, not by manifests.
        pod.set_node_name(Some(node));
        let mut status = PodStatus { phase: crate::status::PodPhase::Running, ..PodStatus::default() };
        status.conditions.push(Condition::new(ConditionType::Ready, ready, "", ""));
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
    fn only_ready_unretired_replicas_on_addressed_nodes_are_endpoints() {
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
        reconcile(&snapshot, &mut ops);
        let resolved = resolve(&snapshot);
        assert_eq!(resolved[0].ports[0].1, [Endpoint { address: [10, 77, 0, 11], port: 8080 }]);
        let Op::UpdateStatus(written) = &ops[0] else { panic!("{ops:?}") };
        let status: ServiceStatus = written.status();
        assert_eq!(status.endpoints["http"], ["10.77.0.11:8080"]);
        // A second pass with that status stored writes nothing.
        let snapshot = Snapshot { services: vec![Arc::new(written.clone())], ..snapshot };
        let mut again = Vec::new();
        reconcile(&snapshot, &mut again);
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn exposed_services_get_devices_ports_and_a_load_balancer_lists_its_devices() {
        let service = |name: &str, spec: &str| {
            Arc::new(object(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: web}}\n{spec}"
            )))
        };
        let snapshot = Snapshot {
            services: vec![
                service("lb", "  type: LoadBalancer\n  ports: [{name: http, port: 80, targetPort: http}]\n"),
                service("np", "  type: NodePort\n  ports: [{name: http, port: 8000, targetPort: http}]\n"),
                service("fixed", "  type: NodePort\n  ports: [{port: 8001, targetPort: 8080, nodePort: 30080}]\n"),
                service("plain", "  ports: [{port: 8002, targetPort: 8080}]\n"),
            ],
            nodes: [node("edge-1", "10.77.0.11"), node("edge-2", "10.77.0.12")].map(Arc::new).into(),
            pods: [pod("web-1", "web", "edge-2", true, false), pod("web-2", "web", "edge-1", true, false)]
                .map(Arc::new)
                .into(),
            ..Snapshot::default()
        };
        let resolved = resolve(&snapshot);
        let by_name = |name: &str| resolved.iter().find(|r| r.service.metadata.name == name).unwrap();
        let lb = status_of(by_name("lb"));
        assert_eq!(lb.node_ports["http"], 80, "a load balancer listens on the Service's port");
        let ingress: Vec<&str> = lb.load_balancer.as_ref().unwrap().ingress.iter().map(|i| i.ip.as_str()).collect();
        assert_eq!(ingress, ["10.77.0.11", "10.77.0.12"]);
        let chosen = status_of(by_name("np")).node_ports["http"];
        assert!((30000..=32767).contains(&chosen) && chosen != 30080, "{chosen}");
        assert_eq!(
            status_of(&resolve(&snapshot).into_iter().find(|r| r.service.metadata.name == "np").unwrap()).node_ports["http"],
            chosen,
            "stable"
        );
        assert_eq!(status_of(by_name("fixed")).node_ports["8001"], 30080);
        let plain = status_of(by_name("plain"));
        assert!(plain.node_ports.is_empty() && plain.load_balancer.is_none());
        assert!(lb.message.is_empty());

        // A second LoadBalancer on port 80 is not served there, and says so.
        let mut services = snapshot.services.clone();
        services.push(service("lb2", "  type: LoadBalancer\n  ports: [{name: http, port: 80, targetPort: http}]\n"));
        let snapshot = Snapshot { services, ..snapshot };
        let resolved = resolve(&snapshot);
        let second = status_of(resolved.iter().find(|r| r.service.metadata.name == "lb2").unwrap());
        assert!(second.node_ports.is_empty());
        assert_eq!(second.message, "port 80 of the devices is already Service default/lb's: not served there");
    }
}
