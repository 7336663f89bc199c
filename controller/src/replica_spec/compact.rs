//! The compact document profile: a pod lowered to the single-container
//! [`ReplicaSpec`] a microcontroller-sized decoder takes, or the limit it
//! exceeds, named for the operator ("args of 2048 bytes (the compact
//! profile holds 24 entries in 512 bytes)").

use firmware_proto::pod::{PodSpec as WirePod, PodVolumeSource};
use firmware_proto::{
    ARGS_BYTES, ARGS_ITEMS, COMMAND_BYTES, COMMAND_ITEMS, CONFIG_DATA_BYTES, CONFIG_FILES, CONFIG_NAMES_BYTES,
    ConfigObject, ENV_BYTES, ENV_ITEMS, MAX_CONFIG_OBJECTS, MAX_PORTS, MAX_VOLUMES, PATH_MAX, ReplicaSpec, TextList,
    VolumeMount, VolumeSource,
};

use super::{ConfigEntry, ConfigTable};

/// `pod` as a compact replica, or the first limit of the compact profile it
/// exceeds. `table` is its document's config objects (the compact document
/// carries them inline, so they count too).
pub fn lower(pod: &WirePod, table: &ConfigTable) -> Result<ReplicaSpec, String> {
    const ONE: &str = "(the compact profile runs one container per replica)";
    let total = pod.init_containers.len() + pod.containers.len();
    let container = match (pod.init_containers.len(), pod.containers.as_slice()) {
        (0, [one]) => one,
        (0, _) => return Err(format!("{total} containers {ONE}")),
        _ => return Err(format!("{total} containers with init containers {ONE}")),
    };
    let short = |what: &str, value: &str| -> Result<heapless::String<PATH_MAX>, String> {
        heapless::String::try_from(value)
            .map_err(|_| format!("{what} {value:?} of {} bytes (the compact profile holds {PATH_MAX})", value.len()))
    };
    // Sealing needs the Linux profile's agent; a compact device has none yet.
    const SEALED: &str = "Secrets are not supported on compact-profile devices yet (they are sealed for Linux agents)";
    if !container.sealed_env.is_empty() {
        return Err(format!("env from a Secret: {SEALED}"));
    }
    if container.mounts.len() > MAX_VOLUMES {
        return Err(format!("{} volume mounts (the compact profile holds {MAX_VOLUMES})", container.mounts.len()));
    }
    if container.ports.len() > MAX_PORTS {
        return Err(format!("{} ports (the compact profile holds {MAX_PORTS})", container.ports.len()));
    }
    let mut volumes = heapless::Vec::new();
    for mount in container.mounts.iter() {
        let volume = &pod.volumes[usize::from(mount.volume)];
        if !mount.sub_path.is_empty() {
            return Err("a subPath mount (the compact profile mounts whole volumes)".into());
        }
        let source = match &volume.source {
            PodVolumeSource::EmptyDir { in_memory, size_limit_bytes } => {
                VolumeSource::EmptyDir { in_memory: *in_memory, size_limit_bytes: *size_limit_bytes }
            }
            PodVolumeSource::HostPath { path } => VolumeSource::HostPath { path: short("hostPath", path)? },
            PodVolumeSource::Config { index } => {
                let entry = table.objects.get(usize::from(*index)).ok_or("a config volume outside its document")?;
                if entry.blob.secret {
                    return Err(format!("a Secret volume: {SEALED}"));
                }
                config_object(entry)?;
                if usize::from(*index) >= MAX_CONFIG_OBJECTS {
                    return Err(format!(
                        "more than {MAX_CONFIG_OBJECTS} ConfigMaps/Secrets on one node (the compact profile's limit)"
                    ));
                }
                VolumeSource::Config { index: *index as u8 }
            }
            PodVolumeSource::Claim { .. } => {
                return Err("a persistentVolumeClaim volume (the compact profile has no claims)".into());
            }
        };
        let mount = VolumeMount {
            // Names are at most VOLUME_NAME_MAX = OBJECT_NAME_MAX bytes.
            name: heapless::String::try_from(volume.name.as_str()).unwrap_or_default(),
            mount_path: short("mountPath", &mount.mount_path)?,
            read_only: mount.read_only,
            source,
        };
        // Cannot fail: counted above.
        let _ = volumes.push(mount);
    }
    Ok(ReplicaSpec {
        id: pod.id.clone(),
        image: container.image.clone(),
        command: list::<COMMAND_BYTES, COMMAND_ITEMS>("command", container.command.iter())?,
        args: list::<ARGS_BYTES, ARGS_ITEMS>("args", container.args.iter())?,
        env: list::<ENV_BYTES, ENV_ITEMS>("env", container.env.iter())?,
        working_dir: short("workingDir", &container.working_dir)?,
        user: container.user,
        resources: container.resources,
        extended: container.extended.iter().cloned().collect(),
        devices: container.devices.iter().cloned().collect(),
        ports: container.ports.iter().cloned().collect(),
        volumes,
        startup_probe: container.startup_probe.clone(),
        readiness_probe: container.readiness_probe.clone(),
        liveness_probe: container.liveness_probe.clone(),
        restart_policy: pod.restart_policy,
        read_only_rootfs: container.read_only_rootfs,
        seccomp: container.seccomp,
        termination_grace_s: pod.termination_grace_s,
    })
}

/// A list of argv or env entries, or the compact limit it exceeds.
fn list<'a, const B: usize, const I: usize>(
    what: &str,
    items: impl Iterator<Item = &'a str>,
) -> Result<TextList<B, I>, String> {
    let items: Vec<&str> = items.collect();
    let bytes: usize = items.iter().map(|i| i.len()).sum();
    TextList::from_strs(items.iter().copied()).map_err(|_| {
        format!("{what} of {} entries in {bytes} bytes (the compact profile holds {I} in {B} bytes)", items.len())
    })
}

/// A config object as the compact document carries it inline, or the
/// limit it exceeds.
pub fn config_object(entry: &ConfigEntry) -> Result<ConfigObject, String> {
    let blob = &entry.blob;
    let kind = if blob.secret { "Secret" } else { "ConfigMap" };
    let too_big = || {
        format!(
            "{kind} {} of {} files in {} bytes (the compact profile holds {CONFIG_FILES} files in {CONFIG_DATA_BYTES} bytes)",
            blob.name,
            blob.contents.len(),
            blob.contents.bytes()
        )
    };
    let mut object = ConfigObject {
        name: heapless::String::try_from(blob.name.as_str())
            .map_err(|_| format!("{kind} name {} is too long", blob.name))?,
        secret: blob.secret,
        file_names: TextList::<CONFIG_NAMES_BYTES, CONFIG_FILES>::from_strs(blob.file_names.iter())
            .map_err(|_| too_big())?,
        contents: Default::default(),
    };
    for content in blob.contents.iter() {
        object.contents.push(content).map_err(|_| too_big())?;
    }
    Ok(object)
}

/// The compact document's replicas and inline config objects for pods that
/// all lowered (as [`super::document`] with the compact profile made
/// sure).
pub fn document(pods: &[WirePod], table: &ConfigTable) -> Result<(Vec<ReplicaSpec>, Vec<ConfigObject>), String> {
    let replicas = pods.iter().map(|pod| lower(pod, table)).collect::<Result<Vec<_>, _>>()?;
    let config = table.objects.iter().map(|e| config_object(e)).collect::<Result<Vec<_>, _>>()?;
    Ok((replicas, config))
}

#[cfg(test)]
mod tests {
    use super::super::{References, check, sample_pod};
    use super::*;

    #[test]
    fn a_pod_within_the_compact_limits_lowers_and_one_past_them_names_the_limit() {
        let refs = References {
            config_maps: &[],
            secrets: &[],
            node: None,
            claims: &[],
            sealing: crate::replica_spec::Sealing::Sizing,
        };
        let pod = sample_pod(serde_json::json!({
            "containers": [{ "name": "app", "image": "sensor:1", "args": ["--period", "5s"],
                             "volumeMounts": [{ "name": "spool", "mountPath": "/spool" }] }],
            "volumes": [{ "name": "spool", "emptyDir": {} }],
            "restartPolicy": "OnFailure",
        }));
        let (wire, table) = check(&pod, &refs, "r").unwrap();
        let replica = lower(&wire, &table).unwrap();
        assert_eq!(replica.args.iter().collect::<Vec<_>>(), ["--period", "5s"]);
        assert_eq!(replica.volumes[0].mount_path.as_str(), "/spool");
        assert_eq!(replica.restart_policy, firmware_proto::RestartPolicy::OnFailure);

        let long: Vec<String> = (0..30).map(|i| format!("--flag-{i}")).collect();
        let pod =
            sample_pod(serde_json::json!({ "containers": [{ "name": "app", "image": "sensor:1", "args": long }] }));
        let (wire, table) = check(&pod, &refs, "r").unwrap();
        assert_eq!(
            lower(&wire, &table).unwrap_err(),
            "args of 30 entries in 260 bytes (the compact profile holds 24 in 512 bytes)"
        );
    }
}
