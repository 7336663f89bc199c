//! Rules a parsed object must meet before it is stored: Kubernetes' own
//! (names, ports, selectors) and Flotilla's (the Linux document profile's
//! capacities, so that whatever is stored can reach a node; what the
//! compact profile cannot hold is placed only on Linux-profile nodes).

use std::collections::BTreeMap;

use firmware_proto as wire;
use firmware_proto::pod as linux;

use super::types::*;
use super::{Body, Kind, Object, Quantity};

/// A broken rule, with the path of the field that breaks it.
#[derive(Debug)]
pub(super) struct RuleError {
    pub(super) path: String,
    pub(super) reason: String,
}

type Result<T = ()> = std::result::Result<T, RuleError>;

fn fail(path: impl Into<String>, reason: impl Into<String>) -> Result {
    Err(RuleError { path: path.into(), reason: reason.into() })
}

/// Checks one object.
pub(super) fn object(object: &Object) -> Result {
    object_name(object)?;
    if object.kind.is_namespaced() {
        name("metadata.namespace", &object.metadata.namespace, 63)?;
    }
    for (key, value) in &object.metadata.labels {
        label("metadata.labels", key, value)?;
    }
    match &object.body {
        Body::Deployment(spec) => {
            non_negative("spec.replicas", spec.replicas)?;
            selector_matches("spec", &spec.selector, &spec.template)?;
            strategy("spec.strategy", spec.strategy.as_ref(), &["RollingUpdate", "Recreate"])?;
            non_negative("spec.minReadySeconds", spec.min_ready_seconds)?;
            non_negative("spec.revisionHistoryLimit", spec.revision_history_limit)?;
            non_negative("spec.progressDeadlineSeconds", spec.progress_deadline_seconds)?;
            pod("spec.template.spec", &spec.template.spec, &["Always"])
        }
        Body::DaemonSet(spec) => {
            selector_matches("spec", &spec.selector, &spec.template)?;
            if let Some(i) = spec.template.spec.volumes.iter().position(|v| v.persistent_volume_claim.is_some()) {
                return fail(
                    format!("spec.template.spec.volumes[{i}].persistentVolumeClaim"),
                    "a DaemonSet runs a replica on every matching device and a claim is on one device: \
                     use a StatefulSet's volumeClaimTemplates, or hostPath",
                );
            }
            strategy("spec.updateStrategy", spec.update_strategy.as_ref(), &["RollingUpdate", "OnDelete"])?;
            pod("spec.template.spec", &spec.template.spec, &["Always"])
        }
        Body::Job(spec) => {
            non_negative("spec.completions", spec.completions)?;
            non_negative("spec.parallelism", spec.parallelism)?;
            non_negative("spec.backoffLimit", spec.backoff_limit)?;
            if spec.template.spec.restart_policy.is_none() {
                return fail("spec.template.spec.restartPolicy", "a Job needs restartPolicy OnFailure or Never");
            }
            pod("spec.template.spec", &spec.template.spec, &["OnFailure", "Never"])
        }
        Body::Pod(spec) => pod("spec", spec, &["Always", "OnFailure", "Never"]),
        Body::Service(spec) => service(spec),
        Body::ConfigMap(data) => {
            for key in data.data.keys().chain(data.binary_data.keys()) {
                config_key("data", key)?;
            }
            Ok(())
        }
        Body::Secret(data) => data.data.keys().try_for_each(|key| config_key("data", key)),
        Body::Node(spec) => spec.taints.iter().enumerate().try_for_each(|(i, t)| {
            label(&format!("spec.taints[{i}]"), &t.key, &t.value)?;
            taint_effect(&format!("spec.taints[{i}].effect"), &t.effect, false)
        }),
        Body::PersistentVolumeClaim(spec) => claim("spec", spec, &object.metadata.annotations),
        Body::StatefulSet(spec) => stateful_set(spec, &object.metadata.name),
        Body::Namespace => Ok(()),
    }
}

/// The annotation on a claim that says what its replicas do when its device
/// is lost: `wait` (the default) or `reschedule` (start elsewhere, empty).
pub const ON_DEVICE_LOST_ANNOTATION: &str = "flotilla.io/on-device-lost";

fn claim(path: &str, spec: &ClaimSpec, annotations: &BTreeMap<String, String>) -> Result {
    let size_path = format!("{path}.resources.requests.storage");
    let Some(size) = spec.resources.requests.get("storage") else {
        return fail(size_path, "missing: a claim needs a size (e.g. storage: 1Gi)");
    };
    if quantity(&size_path, size)?.as_units() == 0 {
        return fail(size_path, "must be more than 0");
    }
    if let Some(mode) = spec.volume_mode.as_deref().filter(|m| *m != "Filesystem") {
        return fail(format!("{path}.volumeMode"), format!("{mode}: not supported yet (only Filesystem)"));
    }
    let annotations_path = format!("{}metadata", path.strip_suffix("spec").unwrap_or(path));
    match annotations.get(ON_DEVICE_LOST_ANNOTATION).map(String::as_str) {
        None | Some("wait" | "reschedule") => Ok(()),
        Some(other) => fail(
            format!("{annotations_path}.annotations[{ON_DEVICE_LOST_ANNOTATION}]"),
            format!("{other:?} is not wait or reschedule"),
        ),
    }
}

fn stateful_set(spec: &StatefulSetSpec, name: &str) -> Result {
    non_negative("spec.replicas", spec.replicas)?;
    selector_matches("spec", &spec.selector, &spec.template)?;
    if let Some(strategy) = &spec.update_strategy {
        match strategy.strategy_type.as_deref() {
            None | Some("RollingUpdate" | "OnDelete") => {}
            Some(other) => {
                return fail("spec.updateStrategy.type", format!("{other:?} is not RollingUpdate or OnDelete"));
            }
        }
        non_negative(
            "spec.updateStrategy.rollingUpdate.partition",
            strategy.rolling_update.as_ref().and_then(|r| r.partition),
        )?;
    }
    match spec.pod_management_policy.as_deref() {
        None | Some("OrderedReady" | "Parallel") => {}
        Some(other) => return fail("spec.podManagementPolicy", format!("{other:?} is not OrderedReady or Parallel")),
    }
    non_negative("spec.minReadySeconds", spec.min_ready_seconds)?;
    if let Some(policy) = &spec.persistent_volume_claim_retention_policy {
        for (field, value) in [("whenDeleted", &policy.when_deleted), ("whenScaled", &policy.when_scaled)] {
            if let Some(value) = value.as_deref().filter(|v| !matches!(*v, "Retain" | "Delete")) {
                return fail(
                    format!("spec.persistentVolumeClaimRetentionPolicy.{field}"),
                    format!("{value:?} is not Retain or Delete"),
                );
            }
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, template) in spec.volume_claim_templates.iter().enumerate() {
        let at = format!("spec.volumeClaimTemplates[{i}]");
        self::name(&format!("{at}.metadata.name"), &template.metadata.name, linux::VOLUME_NAME_MAX)?;
        if names.contains(&template.metadata.name.as_str()) {
            return fail(
                format!("{at}.metadata.name"),
                format!("two claim templates are named {:?}", template.metadata.name),
            );
        }
        names.push(&template.metadata.name);
        // The claims' names must be names too.
        let claim_name = StatefulSetSpec::claim_name(template, name, 0);
        self::name(&format!("{at}.metadata.name"), &claim_name, 63).map_err(|_| RuleError {
            path: format!("{at}.metadata.name"),
            reason: format!("its claims ({claim_name}, ...) would be longer than 63 characters"),
        })?;
        claim(&format!("{at}.spec"), &template.spec, &template.metadata.annotations)?;
    }
    // The template as each replica gets it: its mounts may name a claim
    // template's volume.
    pod("spec.template.spec", &spec.pod_spec(name, 0), &["Always"])
}

/// `metadata.name` as Kubernetes checks it for the kind: a DNS subdomain
/// where it takes one and Flotilla can (ConfigMap, Secret, claim), a DNS
/// label where Kubernetes requires one (Namespace; Service, which must also
/// start with a letter) and where Flotilla names replicas, containers and
/// devices after it (a `.` would split a container id).
fn object_name(object: &Object) -> Result {
    let value = &object.metadata.name;
    const PATH: &str = "metadata.name";
    match object.kind {
        Kind::ConfigMap | Kind::Secret => subdomain(PATH, value, 253),
        // Its directory on the device is `{namespace}.{name}.{uid prefix}`,
        // at most 160 bytes.
        Kind::PersistentVolumeClaim => subdomain(PATH, value, 87),
        Kind::Service => {
            name(PATH, value, 63)?;
            if value.starts_with(|c: char| c.is_ascii_digit()) {
                return fail(PATH, format!("{value:?}: a Service's name must start with a letter (DNS-1035)"));
            }
            Ok(())
        }
        // DNS subdomains, as Kubernetes takes them, but of at most 63
        // characters: replica ids (and so container ids) are made from them.
        Kind::Deployment | Kind::DaemonSet | Kind::Job | Kind::StatefulSet | Kind::Pod => subdomain(PATH, value, 63)
            .map_err(|e| RuleError {
                reason: format!("{} (Flotilla names replicas and containers after it)", e.reason),
                ..e
            }),
        Kind::Node | Kind::Namespace | Kind::Event => name(PATH, value, 63),
    }
}

/// DNS-1123 subdomain: DNS labels joined by `.`, at most `max` in all.
fn subdomain(path: &str, value: &str, max: usize) -> Result {
    if value.is_empty() {
        return fail(path, "required");
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if value.len() <= max && value.split('.').all(label_ok) {
        return Ok(());
    }
    fail(
        path,
        format!(
            "{value:?} must be at most {max} lowercase letters, digits, '-' or '.', each part between dots \
             starting and ending with a letter or digit (a DNS subdomain)"
        ),
    )
}

/// DNS-1123 label: lowercase alphanumerics and `-`, alphanumeric at both ends.
fn name(path: &str, value: &str, max: usize) -> Result {
    if value.is_empty() {
        return fail(path, "required");
    }
    let ok = value.len() <= max
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        fail(
            path,
            format!(
                "{value:?} must be at most {max} lowercase letters, digits or '-', starting and ending with a letter or digit"
            ),
        )
    }
}

fn label(path: &str, key: &str, value: &str) -> Result {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let valid_part = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    if !valid_part(name, 63) || (!prefix.is_empty() && !valid_part(prefix, 253)) || key.len() > wire::LABEL_KEY_MAX {
        return fail(format!("{path}.{key}"), format!("invalid label key (at most {} bytes)", wire::LABEL_KEY_MAX));
    }
    if !value.is_empty() && !valid_part(value, wire::LABEL_VALUE_MAX) {
        return fail(format!("{path}.{key}"), format!("invalid label value {value:?}"));
    }
    Ok(())
}

fn non_negative(path: &str, value: Option<i64>) -> Result {
    match value {
        Some(v) if v < 0 => fail(path, format!("must not be negative, got {v}")),
        _ => Ok(()),
    }
}

fn selector_matches(path: &str, selector: &LabelSelector, template: &PodTemplate) -> Result {
    if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
        return fail(format!("{path}.selector"), "required: a selector matching spec.template.metadata.labels");
    }
    if !selector.match_expressions.is_empty() {
        return fail(format!("{path}.selector.matchExpressions"), "not supported yet; use matchLabels");
    }
    for (key, value) in &selector.match_labels {
        if template.metadata.labels.get(key) != Some(value) {
            return fail(
                format!("{path}.selector.matchLabels.{key}"),
                "does not match spec.template.metadata.labels (the replicas would not belong to their workload)",
            );
        }
    }
    Ok(())
}

fn strategy(path: &str, strategy: Option<&UpdateStrategy>, allowed: &[&str]) -> Result {
    let Some(strategy) = strategy else { return Ok(()) };
    if let Some(t) = &strategy.strategy_type
        && !allowed.contains(&t.as_str())
    {
        return fail(format!("{path}.type"), format!("{t:?} is not one of {allowed:?}"));
    }
    if let Some(rolling) = &strategy.rolling_update {
        int_or_percent(&format!("{path}.rollingUpdate.maxSurge"), rolling.max_surge.as_ref())?;
        int_or_percent(&format!("{path}.rollingUpdate.maxUnavailable"), rolling.max_unavailable.as_ref())?;
    }
    Ok(())
}

fn int_or_percent(path: &str, value: Option<&IntOrString>) -> Result {
    match value {
        None => Ok(()),
        Some(IntOrString::Int(n)) if *n >= 0 => Ok(()),
        Some(IntOrString::String(s))
            if s.strip_suffix('%').and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n <= 100) =>
        {
            Ok(())
        }
        Some(other) => fail(path, format!("{other:?} must be a non-negative number or a percentage like 25%")),
    }
}

fn pod(path: &str, spec: &PodSpec, policies: &[&str]) -> Result {
    if spec.containers.is_empty() {
        return fail(format!("{path}.containers"), "at least one container is required");
    }
    if spec.containers.len() > linux::MAX_CONTAINERS {
        return fail(format!("{path}.containers"), format!("at most {} containers in a pod", linux::MAX_CONTAINERS));
    }
    if spec.init_containers.len() > linux::MAX_INIT_CONTAINERS {
        return fail(
            format!("{path}.initContainers"),
            format!("at most {} init containers in a pod", linux::MAX_INIT_CONTAINERS),
        );
    }
    if spec.volumes.len() > linux::LINUX_MAX_VOLUMES {
        return fail(format!("{path}.volumes"), format!("at most {} volumes in a pod", linux::LINUX_MAX_VOLUMES));
    }
    if let Some(policy) = &spec.restart_policy
        && !policies.contains(&policy.as_str())
    {
        return fail(
            format!("{path}.restartPolicy"),
            format!("{policy:?} is not allowed here; use one of {policies:?}"),
        );
    }
    for (key, value) in &spec.node_selector {
        label(&format!("{path}.nodeSelector"), key, value)?;
    }
    for (i, toleration) in spec.tolerations.iter().enumerate() {
        let at = format!("{path}.tolerations[{i}]");
        match toleration.operator.as_deref() {
            None | Some("Equal") => {}
            Some("Exists") if toleration.value.is_empty() => {}
            Some("Exists") => return fail(format!("{at}.value"), "must be empty with operator Exists"),
            Some(other) => return fail(format!("{at}.operator"), format!("{other:?} is not Equal or Exists")),
        }
        taint_effect(&format!("{at}.effect"), &toleration.effect, true)?;
    }
    for (i, c) in spec.topology_spread_constraints.iter().enumerate() {
        if c.max_skew == 0 {
            return fail(format!("{path}.topologySpreadConstraints[{i}].maxSkew"), "must be at least 1");
        }
    }
    let mut volume_names = Vec::new();
    for (i, volume) in spec.volumes.iter().enumerate() {
        let at = format!("{path}.volumes[{i}]");
        name(&format!("{at}.name"), &volume.name, linux::VOLUME_NAME_MAX)?;
        if volume_names.contains(&volume.name.as_str()) {
            return fail(format!("{at}.name"), format!("two volumes are named {:?}", volume.name));
        }
        let sources = [
            volume.empty_dir.is_some(),
            volume.host_path.is_some(),
            volume.config_map.is_some(),
            volume.secret.is_some(),
            volume.persistent_volume_claim.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return fail(
                at,
                "needs exactly one supported source: emptyDir, hostPath, configMap, secret or persistentVolumeClaim",
            );
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            name(&format!("{at}.persistentVolumeClaim.claimName"), &claim.claim_name, 63)?;
        }
        if let Some(limit) = volume.empty_dir.as_ref().and_then(|d| d.size_limit.as_ref()) {
            quantity(&format!("{at}.emptyDir.sizeLimit"), limit)?;
        }
        if let Some(host) = &volume.host_path {
            absolute_path(&format!("{at}.hostPath.path"), &host.path)?;
        }
        volume_names.push(volume.name.as_str());
    }
    let mut container_names: Vec<&str> = Vec::new();
    let all = spec
        .init_containers
        .iter()
        .map(|c| ("initContainers", c))
        .chain(spec.containers.iter().map(|c| ("containers", c)));
    let mut index = BTreeMap::<&str, usize>::new();
    for (list, c) in all {
        let i = index.entry(list).or_default();
        let at = format!("{path}.{list}[{i}]");
        *i += 1;
        if container_names.contains(&c.name.as_str()) {
            return fail(format!("{at}.name"), format!("two containers of the pod are named {:?}", c.name));
        }
        container_names.push(&c.name);
        match (list, c.restart_policy.as_deref()) {
            (_, None) | ("initContainers", Some("Always")) => {}
            ("initContainers", Some(other)) => {
                return fail(format!("{at}.restartPolicy"), format!("{other:?}: only Always (a sidecar) is allowed"));
            }
            (_, Some(_)) => {
                return fail(format!("{at}.restartPolicy"), "only init containers take a restartPolicy (sidecars)");
            }
        }
        container(&at, c, &volume_names, spec)?;
    }
    Ok(())
}

/// Fields of the pod a `fieldRef` may name (the downward API), besides
/// `metadata.labels['k']` and `metadata.annotations['k']`.
pub(crate) const FIELD_PATHS: [&str; 10] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
    "metadata.generateName",
];

/// Whether a `fieldRef` path names a field the controller resolves.
pub(crate) fn known_field_path(path: &str) -> bool {
    FIELD_PATHS.contains(&path)
        || ["metadata.labels['", "metadata.annotations['"].iter().any(|prefix| {
            path.strip_prefix(prefix).and_then(|rest| rest.strip_suffix("']")).is_some_and(|k| !k.is_empty())
        })
}

fn container(path: &str, c: &Container, volumes: &[&str], pod: &PodSpec) -> Result {
    name(&format!("{path}.name"), &c.name, wire::CONTAINER_NAME_MAX)?;
    if c.image.trim().is_empty() {
        return fail(format!("{path}.image"), "required");
    }
    if c.image.len() > wire::IMAGE_REF_MAX {
        return fail(format!("{path}.image"), format!("longer than {} bytes", wire::IMAGE_REF_MAX));
    }
    let (argv_items, argv_bytes) = (linux::LINUX_ARGV_ITEMS, linux::LINUX_ARGV_BYTES);
    wire_list(&format!("{path}.command"), c.command.iter().map(String::len), argv_items, argv_bytes)?;
    wire_list(&format!("{path}.args"), c.args.iter().map(String::len), argv_items, argv_bytes)?;
    for (i, env) in c.env.iter().enumerate() {
        let at = format!("{path}.env[{i}]");
        if env.name.is_empty() || env.name.contains('=') {
            return fail(format!("{at}.name"), "must be non-empty and contain no '='");
        }
        match (&env.value, &env.value_from) {
            (Some(_), Some(_)) => return fail(at, "set value or valueFrom, not both"),
            (_, Some(from)) => env_source(&format!("{at}.valueFrom"), from, pod)?,
            _ => {}
        }
    }
    if c.env.len() > linux::LINUX_ENV_ITEMS {
        return fail(
            format!("{path}.env"),
            format!("at most {} variables fit a device's desired state", linux::LINUX_ENV_ITEMS),
        );
    }
    for (i, from) in c.env_from.iter().enumerate() {
        if from.config_map_ref.is_some() == from.secret_ref.is_some() {
            return fail(format!("{path}.envFrom[{i}]"), "needs exactly one of configMapRef or secretRef");
        }
    }
    if c.ports.len() > linux::LINUX_MAX_PORTS {
        return fail(format!("{path}.ports"), format!("at most {} ports", linux::LINUX_MAX_PORTS));
    }
    for (i, port) in c.ports.iter().enumerate() {
        let at = format!("{path}.ports[{i}]");
        port_number(&format!("{at}.containerPort"), port.container_port)?;
        if let Some(host) = port.host_port {
            port_number(&format!("{at}.hostPort"), host)?;
        }
        protocol(&format!("{at}.protocol"), port.protocol.as_deref())?;
        if port.name.len() > wire::PORT_NAME_MAX {
            return fail(format!("{at}.name"), format!("longer than {} bytes", wire::PORT_NAME_MAX));
        }
    }
    resources(&format!("{path}.resources"), &c.resources)?;
    if c.volume_mounts.len() > linux::LINUX_MAX_MOUNTS {
        return fail(format!("{path}.volumeMounts"), format!("at most {} volume mounts", linux::LINUX_MAX_MOUNTS));
    }
    for (i, mount) in c.volume_mounts.iter().enumerate() {
        let at = format!("{path}.volumeMounts[{i}]");
        if !volumes.contains(&mount.name.as_str()) {
            return fail(format!("{at}.name"), format!("no volume named {:?} in the pod's volumes", mount.name));
        }
        absolute_path(&format!("{at}.mountPath"), &mount.mount_path)?;
        if let Some(sub) = &mount.sub_path
            && (sub.starts_with('/') || sub.split('/').any(|part| part == "..") || sub.len() > linux::LINUX_PATH_MAX)
        {
            return fail(
                format!("{at}.subPath"),
                format!("{sub:?} must be a relative path inside the volume, without '..'"),
            );
        }
    }
    for (field, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(probe) = probe {
            self::probe(&format!("{path}.{field}"), probe)?;
        }
    }
    if let Some(security) = &c.security_context {
        if let Some(profile) = &security.seccomp_profile
            && !matches!(profile.profile_type.as_str(), "RuntimeDefault" | "Unconfined")
        {
            return fail(
                format!("{path}.securityContext.seccompProfile.type"),
                format!("{:?} is not supported; use RuntimeDefault or Unconfined", profile.profile_type),
            );
        }
        for (field, id) in [("runAsUser", security.run_as_user), ("runAsGroup", security.run_as_group)] {
            if id.is_some_and(|id| !(0..=i64::from(u32::MAX)).contains(&id)) {
                return fail(format!("{path}.securityContext.{field}"), "must be a uid/gid between 0 and 4294967295");
            }
        }
    }
    Ok(())
}

/// One `valueFrom`: exactly one source, and a downward-API field or
/// resource the controller resolves.
fn env_source(path: &str, from: &EnvVarSource, pod: &PodSpec) -> Result {
    let sources = [
        from.config_map_key_ref.is_some(),
        from.secret_key_ref.is_some(),
        from.field_ref.is_some(),
        from.resource_field_ref.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return fail(path, "needs exactly one of configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef");
    }
    if let Some(field) = &from.field_ref
        && !known_field_path(&field.field_path)
    {
        return fail(
            format!("{path}.fieldRef.fieldPath"),
            format!(
                "{:?} is not supported; use one of {}, metadata.labels['KEY'] or metadata.annotations['KEY']",
                field.field_path,
                FIELD_PATHS.join(", ")
            ),
        );
    }
    if let Some(resource) = &from.resource_field_ref {
        const RESOURCES: [&str; 6] = [
            "limits.cpu",
            "limits.memory",
            "limits.ephemeral-storage",
            "requests.cpu",
            "requests.memory",
            "requests.ephemeral-storage",
        ];
        if !RESOURCES.contains(&resource.resource.as_str()) {
            return fail(
                format!("{path}.resourceFieldRef.resource"),
                format!("{:?} is not one of {}", resource.resource, RESOURCES.join(", ")),
            );
        }
        if let Some(name) = &resource.container_name
            && !pod.containers.iter().chain(&pod.init_containers).any(|c| c.name == *name)
        {
            return fail(format!("{path}.resourceFieldRef.containerName"), format!("no container named {name:?}"));
        }
        if let Some(divisor) = &resource.divisor {
            quantity(&format!("{path}.resourceFieldRef.divisor"), divisor)?;
        }
    }
    Ok(())
}

fn wire_list(path: &str, lengths: impl Iterator<Item = usize>, max_items: usize, max_bytes: usize) -> Result {
    let (count, bytes) = lengths.fold((0, 0), |(n, b), len| (n + 1, b + len));
    if count > max_items || bytes > max_bytes {
        return fail(path, format!("at most {max_items} entries and {max_bytes} bytes fit a device's desired state"));
    }
    Ok(())
}

fn resources(path: &str, resources: &ResourceRequirements) -> Result {
    let mut parsed = BTreeMap::new();
    for (section, map) in [("requests", &resources.requests), ("limits", &resources.limits)] {
        for (name, text) in map {
            let at = format!("{path}.{section}.{name}");
            let known = matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage") || name.contains('/');
            if !known {
                return fail(
                    at,
                    "unknown resource (cpu, memory, ephemeral-storage or an extended resource like flotilla.io/serial)",
                );
            }
            let q = quantity(&at, text)?;
            parsed.insert((section, name.as_str()), q);
        }
    }
    for ((section, name), request) in &parsed {
        if *section == "requests"
            && let Some(limit) = parsed.get(&("limits", name))
            && request > limit
        {
            return fail(format!("{path}.requests.{name}"), format!("request {request} is above the limit {limit}"));
        }
    }
    Ok(())
}

fn quantity(path: &str, text: &QuantityText) -> Result<Quantity> {
    Quantity::parse(&text.text()).map_err(|e| RuleError { path: path.to_owned(), reason: e.to_string() })
}

fn probe(path: &str, probe: &Probe) -> Result {
    let actions = [probe.exec.is_some(), probe.http_get.is_some(), probe.tcp_socket.is_some(), probe.grpc.is_some()];
    if actions.iter().filter(|a| **a).count() != 1 {
        return fail(path, "needs exactly one of exec, httpGet, tcpSocket or grpc");
    }
    if let Some(grpc) = &probe.grpc {
        port_number(&format!("{path}.grpc.port"), grpc.port)?;
        if grpc.service.as_deref().is_some_and(|s| s.len() > wire::GRPC_SERVICE_MAX) {
            return fail(format!("{path}.grpc.service"), format!("longer than {} bytes", wire::GRPC_SERVICE_MAX));
        }
    }
    if let Some(exec) = &probe.exec
        && exec.command.is_empty()
    {
        return fail(format!("{path}.exec.command"), "required");
    }
    if let Some(http) = &probe.http_get {
        probe_port(&format!("{path}.httpGet.port"), &http.port)?;
        if let Some(scheme) = &http.scheme
            && scheme != "HTTP"
            && scheme != "HTTPS"
        {
            return fail(format!("{path}.httpGet.scheme"), format!("{scheme:?} is not HTTP or HTTPS"));
        }
    }
    if let Some(tcp) = &probe.tcp_socket {
        probe_port(&format!("{path}.tcpSocket.port"), &tcp.port)?;
    }
    for (field, value, min) in [
        ("initialDelaySeconds", probe.initial_delay_seconds, 0),
        ("periodSeconds", probe.period_seconds, 1),
        ("timeoutSeconds", probe.timeout_seconds, 1),
        ("successThreshold", probe.success_threshold, 1),
        ("failureThreshold", probe.failure_threshold, 1),
    ] {
        if let Some(v) = value {
            let max = if field.ends_with("Threshold") { i64::from(u8::MAX) } else { i64::from(u16::MAX) };
            if v < min || v > max {
                return fail(format!("{path}.{field}"), format!("must be between {min} and {max}, got {v}"));
            }
        }
    }
    Ok(())
}

fn probe_port(path: &str, port: &IntOrString) -> Result {
    match port {
        IntOrString::Int(n) => port_number(path, *n),
        IntOrString::String(s) if !s.is_empty() => Ok(()),
        IntOrString::String(_) => fail(path, "required"),
    }
}

fn port_number(path: &str, port: i64) -> Result {
    if (1..=65535).contains(&port) { Ok(()) } else { fail(path, format!("{port} is not a port between 1 and 65535")) }
}

fn protocol(path: &str, protocol: Option<&str>) -> Result {
    match protocol {
        None | Some("TCP" | "UDP") => Ok(()),
        Some(other) => fail(path, format!("{other:?} is not TCP or UDP")),
    }
}

fn absolute_path(path: &str, value: &str) -> Result {
    if !value.starts_with('/') || value.split('/').any(|part| part == "..") {
        return fail(path, format!("{value:?} must be an absolute path without '..'"));
    }
    if value.len() > linux::LINUX_PATH_MAX {
        return fail(path, format!("longer than {} bytes", linux::LINUX_PATH_MAX));
    }
    Ok(())
}

fn taint_effect(path: &str, effect: &str, may_be_empty: bool) -> Result {
    match effect {
        "NoSchedule" | "PreferNoSchedule" | "NoExecute" => Ok(()),
        "" if may_be_empty => Ok(()),
        other => fail(path, format!("{other:?} is not NoSchedule, PreferNoSchedule or NoExecute")),
    }
}

fn config_key(path: &str, key: &str) -> Result {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && key != "."
        && key != "..";
    if ok { Ok(()) } else { fail(format!("{path}.{key}"), "keys are letters, digits, '-', '_' or '.'") }
}

/// The ports Kubernetes gives `NodePort` Services.
pub(crate) const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

fn service(spec: &ServiceSpec) -> Result {
    match spec.service_type.as_deref() {
        None | Some("ClusterIP" | "NodePort" | "LoadBalancer") => {}
        Some(other) => {
            return fail(
                "spec.type",
                format!("{other:?} is not supported yet; use ClusterIP, NodePort or LoadBalancer"),
            );
        }
    }
    for (i, port) in spec.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        port_number(&format!("{at}.port"), port.port)?;
        if let Some(node_port) = port.node_port {
            if !spec.exposed() {
                return fail(format!("{at}.nodePort"), "only a NodePort or LoadBalancer Service has one");
            }
            if !NODE_PORTS.contains(&node_port) {
                return fail(format!("{at}.nodePort"), format!("{node_port} is not between 30000 and 32767"));
            }
        }
        if let Some(target) = &port.target_port {
            probe_port(&format!("{at}.targetPort"), target)?;
        }
        protocol(&format!("{at}.protocol"), port.protocol.as_deref())?;
    }
    Ok(())
}
