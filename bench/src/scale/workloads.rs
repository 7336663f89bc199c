//! The simulated fleet's devices and the workloads applied to it: several
//! device sizes, site and line labels, cameras, and a few tainted
//! accelerator devices; DaemonSets and Deployments shaped like a factory's
//! (an exporter everywhere, a collector on camera devices, ingest, line
//! control, bridges, inference on accelerators, log shipping).

use super::device::Profile;

/// The devices: `nodes` of them, `site_size` to a site.
pub fn profiles(nodes: usize, site_size: usize) -> Vec<Profile> {
    (0..nodes)
        .map(|i| {
            let (class, cpu_millis, memory_bytes) = match i % 25 {
                0 => ("accelerator", 8000, 16u64 << 30),
                n if n % 10 < 3 => ("medium", 2000, 2 << 30),
                _ => ("small", 1000, 1 << 30),
            };
            let mut labels = vec![
                ("class".to_owned(), class.to_owned()),
                ("site".to_owned(), site_of(i, site_size)),
                ("line".to_owned(), format!("line-{}", i % 8)),
            ];
            if i % 5 == 4 {
                labels.push(("camera".into(), "yes".into()));
            }
            let mut taints = Vec::new();
            if class == "accelerator" {
                labels.push(("accelerator".into(), "yes".into()));
                taints.push(("dedicated".into(), "vision".into()));
            }
            Profile { name: format!("dev-{i:05}"), cpu_millis, memory_bytes, labels, taints }
        })
        .collect()
}

/// The site label value of device `i`.
pub fn site_of(i: usize, site_size: usize) -> String {
    format!("site-{}", i / site_size.max(1))
}

/// One workload of the manifest.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `metadata.name`; its replicas' names start with it and a dash.
    pub name: String,
    /// Replicas the fleet must run.
    pub replicas: usize,
    /// Whether it is a DaemonSet (its replicas do not move when a node is lost).
    pub daemon: bool,
}

/// The workloads totalling `total` replicas on `profiles`, and their
/// manifest. DaemonSets first (one per device, one per camera device); the
/// rest in Deployments. Fails when `total` is below what the DaemonSets
/// place.
pub fn manifest(profiles: &[Profile], total: usize, image: &str) -> anyhow::Result<(Vec<Workload>, String)> {
    let cameras = profiles.iter().filter(|p| p.labels.iter().any(|(k, v)| k == "camera" && v == "yes")).count();
    let accelerators = profiles.iter().filter(|p| !p.taints.is_empty()).count();
    let daemons = profiles.len() + cameras;
    anyhow::ensure!(
        total >= daemons,
        "--replicas {total} is below the {daemons} the DaemonSets place on {} devices",
        profiles.len()
    );
    let rest = total - daemons;
    // Shares of the Deployments' replicas; inference is bounded by the
    // accelerators' room (7 replicas each at 500m of 7.9 cores... leave slack).
    let vision = (rest / 10).min(accelerators * 6);
    let telemetry = rest * 35 / 100;
    let line = rest * 25 / 100;
    let bridge = rest * 15 / 100;
    let logs = rest - vision - telemetry - line - bridge;
    let mut workloads = vec![
        Workload { name: "fleet-exporter".into(), replicas: profiles.len(), daemon: true },
        Workload { name: "camera-collector".into(), replicas: cameras, daemon: true },
    ];
    let mut yaml = String::new();
    yaml += &daemon_set("fleet-exporter", image, "10m", "16Mi", "", "      tolerations: [{operator: Exists}]\n");
    yaml += &daemon_set("camera-collector", image, "50m", "48Mi", "      nodeSelector: {camera: \"yes\"}\n", "");
    let deployments = [
        ("telemetry-ingest", telemetry, "50m", "32Mi", "", true),
        ("line-controller", line, "100m", "64Mi", "", false),
        ("mqtt-bridge", bridge, "25m", "16Mi", "", false),
        (
            "vision-inference",
            vision,
            "500m",
            "256Mi",
            "      nodeSelector: {accelerator: \"yes\"}\n      tolerations: [{key: dedicated, operator: Equal, value: vision, effect: NoSchedule}]\n",
            false,
        ),
        ("log-shipper", logs, "20m", "24Mi", "", false),
    ];
    for (name, replicas, cpu, memory, placement, probe) in deployments {
        if replicas == 0 {
            continue;
        }
        yaml += &deployment(name, replicas, image, cpu, memory, placement, probe);
        workloads.push(Workload { name: name.into(), replicas, daemon: false });
    }
    workloads.retain(|w| w.replicas > 0);
    Ok((workloads, yaml))
}

fn container(image: &str, cpu: &str, memory: &str, probe: bool) -> String {
    let probe = if probe { "        readinessProbe: {exec: {command: [\"true\"]}, periodSeconds: 10}\n" } else { "" };
    format!(
        "      containers:\n      - name: main\n        image: {image}\n        command: [\"sleep\", \"infinity\"]\n\
         \x20       env: [{{name: SITE_MODE, value: production}}]\n\
         \x20       resources: {{requests: {{cpu: {cpu}, memory: {memory}}}, limits: {{memory: {memory}}}}}\n{probe}"
    )
}

pub(super) fn daemon_set(
    name: &str,
    image: &str,
    cpu: &str,
    memory: &str,
    selector: &str,
    tolerations: &str,
) -> String {
    format!(
        "---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\nspec:\n\
         \x20 selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n\
         \x20   spec:\n      terminationGracePeriodSeconds: 5\n{selector}{tolerations}{}",
        container(image, cpu, memory, false)
    )
}

fn deployment(
    name: &str,
    replicas: usize,
    image: &str,
    cpu: &str,
    memory: &str,
    placement: &str,
    probe: bool,
) -> String {
    format!(
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\nspec:\n\
         \x20 replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n\
         \x20   metadata: {{labels: {{app: {name}}}}}\n    spec:\n      terminationGracePeriodSeconds: 5\n{placement}{}",
        container(image, cpu, memory, probe)
    )
}

/// The workload a replica belongs to: the longest workload name that is a
/// prefix of its id followed by a dash.
pub fn owner<'w>(workloads: &'w [Workload], replica: &str) -> Option<&'w Workload> {
    workloads
        .iter()
        .filter(|w| replica.strip_prefix(w.name.as_str()).is_some_and(|rest| rest.starts_with('-')))
        .max_by_key(|w| w.name.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workloads_add_up_and_the_fleet_is_mixed() {
        let profiles = profiles(200, 20);
        let (workloads, yaml) = manifest(&profiles, 1000, "reg/busybox:1").unwrap();
        assert_eq!(workloads.iter().map(|w| w.replicas).sum::<usize>(), 1000);
        assert_eq!(yaml.matches("kind: DaemonSet").count(), 2);
        assert!(yaml.matches("kind: Deployment").count() >= 4);
        assert!(profiles.iter().any(|p| !p.taints.is_empty()));
        assert_eq!(profiles.iter().filter(|p| p.labels.contains(&("site".into(), "site-3".into()))).count(), 20);
        assert!(manifest(&profiles, 100, "x").is_err());
        assert_eq!(owner(&workloads, "mqtt-bridge-1a2b-7").unwrap().name, "mqtt-bridge");
        assert!(owner(&workloads, "other-1").is_none());
    }
}
