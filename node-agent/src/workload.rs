//! From a desired replica (firmware-proto) to a container (runtime).
//!
//! Also prepares what the container mounts: emptyDir directories, and the
//! files of ConfigMaps and Secrets carried in the desired document (Secrets
//! with mode 0400, never logged).

use std::hash::{Hash, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use firmware_proto::{ConfigObject, ReplicaSpec, VolumeSource};

use crate::runtime::{ContainerConfig, DeviceSpec, MountSpec};

/// Directories the agent owns, under its data directory.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The data directory.
    pub data_dir: PathBuf,
}

impl Paths {
    /// Unpacked images: `images/<sha256 hex>/rootfs`.
    pub fn image_rootfs(&self, digest: &[u8; 32]) -> PathBuf {
        self.data_dir.join("images").join(hex(digest)).join("rootfs")
    }
    /// Per-replica volumes.
    pub fn volumes(&self, replica: &str) -> PathBuf {
        self.data_dir.join("volumes").join(replica)
    }
    /// Per-replica logs.
    pub fn log(&self, replica: &str) -> PathBuf {
        self.data_dir.join("logs").join(format!("{replica}.log"))
    }
    /// libcontainer's state.
    pub fn runtime_state(&self) -> PathBuf {
        self.data_dir.join("runtime")
    }
    /// Generated bundles.
    pub fn bundles(&self) -> PathBuf {
        self.data_dir.join("bundles")
    }
    /// The agent's own state file.
    pub fn state_file(&self) -> PathBuf {
        self.data_dir.join("agent-state.bin")
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a replica cannot become a container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// The image is not on this device.
    #[error("image {reference} (sha256:{digest}) is not on this node (image pulls arrive with issue #7)")]
    ImageMissing {
        /// As written in the manifest.
        reference: String,
        /// Hex digest.
        digest: String,
    },
    /// No command: the image's entrypoint is not known without its config.
    #[error("no command given and the image's entrypoint is unknown (image metadata arrives with issue #7)")]
    NoCommand,
    /// A volume refers to a config object the document does not carry.
    #[error("volume {0} refers to a ConfigMap/Secret missing from the desired document")]
    MissingConfig(String),
    /// The replica asks for a seccomp profile and this build cannot apply one.
    #[error("the replica asks for the default seccomp profile but this agent was built without seccomp")]
    SeccompUnavailable,
    /// A config file name tries to leave its directory.
    #[error("config file name {0:?} is not a plain file name")]
    BadFileName(String),
    /// Writing volume files failed (disk full...).
    #[error("preparing volume {volume}: {reason}")]
    Volume {
        /// Volume.
        volume: String,
        /// Why.
        reason: String,
    },
}

/// A stable hash of everything that makes a container: a change means the
/// container must be replaced; equal means leave it running.
pub fn spec_hash(spec: &ReplicaSpec, config: &[ConfigObject]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    spec.hash(&mut hasher);
    for volume in &spec.volumes {
        if let VolumeSource::Config { index } = volume.source
            && let Some(object) = config.get(usize::from(index))
        {
            object.hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// The container for a replica. Writes ConfigMap/Secret files and creates
/// emptyDir directories as a side effect.
pub fn container_config(
    paths: &Paths,
    spec: &ReplicaSpec,
    config: &[ConfigObject],
) -> Result<ContainerConfig, WorkloadError> {
    let id = spec.id.as_str().to_owned();
    let rootfs = paths.image_rootfs(&spec.image.digest.0);
    if !rootfs.is_dir() {
        return Err(WorkloadError::ImageMissing {
            reference: spec.image.reference.to_string(),
            digest: hex(&spec.image.digest.0),
        });
    }
    if spec.command.is_empty() {
        return Err(WorkloadError::NoCommand);
    }
    let args: Vec<String> = spec.command.iter().chain(spec.args.iter()).map(str::to_owned).collect();
    let seccomp = spec.seccomp == firmware_proto::Seccomp::RuntimeDefault;
    if seccomp && !crate::runtime::SECCOMP_AVAILABLE {
        return Err(WorkloadError::SeccompUnavailable);
    }
    let mut mounts = Vec::new();
    for volume in &spec.volumes {
        let name = volume.name.to_string();
        let dir = paths.volumes(&id).join(&name);
        let volume_err = |e: std::io::Error| WorkloadError::Volume { volume: name.clone(), reason: e.to_string() };
        let mount = match &volume.source {
            VolumeSource::EmptyDir { in_memory: true, .. } => MountSpec {
                source: PathBuf::new(),
                destination: volume.mount_path.to_string(),
                read_only: false,
                tmpfs: true,
            },
            VolumeSource::EmptyDir { .. } => {
                std::fs::create_dir_all(&dir).map_err(volume_err)?;
                MountSpec {
                    source: dir,
                    destination: volume.mount_path.to_string(),
                    read_only: volume.read_only,
                    tmpfs: false,
                }
            }
            VolumeSource::HostPath { path } => MountSpec {
                source: PathBuf::from(path.as_str()),
                destination: volume.mount_path.to_string(),
                read_only: volume.read_only,
                tmpfs: false,
            },
            VolumeSource::Config { index } => {
                let object =
                    config.get(usize::from(*index)).ok_or_else(|| WorkloadError::MissingConfig(name.clone()))?;
                write_config_files(&dir, object).map_err(|e| match e {
                    ConfigWriteError::Io(e) => volume_err(e),
                    ConfigWriteError::BadName(n) => WorkloadError::BadFileName(n),
                })?;
                MountSpec { source: dir, destination: volume.mount_path.to_string(), read_only: true, tmpfs: false }
            }
        };
        mounts.push(mount);
    }
    let user = spec.user.unwrap_or(firmware_proto::User { uid: 0, gid: 0 });
    Ok(ContainerConfig {
        id: id.clone(),
        hostname: id.clone(),
        rootfs,
        args,
        env: spec.env.iter().map(str::to_owned).collect(),
        cwd: if spec.working_dir.is_empty() { "/".to_owned() } else { spec.working_dir.to_string() },
        uid: user.uid,
        gid: user.gid,
        memory_limit_bytes: spec.resources.memory_limit_bytes,
        cpu_limit_millis: spec.resources.cpu_limit_millis.map(u64::from),
        cpu_request_millis: Some(u64::from(spec.resources.cpu_request_millis)).filter(|m| *m > 0),
        pids_limit: Some(spec.resources.pids_limit.map_or(1024, i64::from)),
        read_only_rootfs: spec.read_only_rootfs,
        mounts,
        devices: spec
            .devices
            .iter()
            .map(|d| DeviceSpec { host_path: d.host_path.to_string(), container_path: d.container_path.to_string() })
            .collect(),
        log_path: paths.log(&id),
        seccomp,
    })
}

enum ConfigWriteError {
    Io(std::io::Error),
    BadName(String),
}

fn write_config_files(dir: &Path, object: &ConfigObject) -> Result<(), ConfigWriteError> {
    std::fs::create_dir_all(dir).map_err(ConfigWriteError::Io)?;
    for (name, content) in object.file_names.iter().zip(object.contents.iter()) {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(ConfigWriteError::BadName(name.to_owned()));
        }
        let path = dir.join(name);
        crate::persist::write_atomic(&path, content).map_err(ConfigWriteError::Io)?;
        let mode = if object.secret { 0o400 } else { 0o444 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(ConfigWriteError::Io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(image_digest: [u8; 32]) -> ReplicaSpec {
        let mut spec = firmware_proto::samples::replica(0);
        spec.image.digest = firmware_proto::Bytes(image_digest);
        spec
    }

    #[test]
    fn a_replica_maps_to_a_container_with_its_limits_and_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths { data_dir: dir.path().to_owned() };
        let spec = replica([7; 32]);
        assert!(matches!(container_config(&paths, &spec, &[]), Err(WorkloadError::ImageMissing { .. })));
        std::fs::create_dir_all(paths.image_rootfs(&[7; 32])).unwrap();
        let config_objects = vec![firmware_proto::samples::config()];
        let container = container_config(&paths, &spec, &config_objects).unwrap();
        assert_eq!(container.id, spec.id.as_str());
        assert_eq!(container.memory_limit_bytes, spec.resources.memory_limit_bytes);
        assert_eq!(container.args.first().map(String::as_str), spec.command.iter().next());
        assert_eq!(spec_hash(&spec, &config_objects), spec_hash(&spec.clone(), &config_objects));
        let mut changed = spec.clone();
        changed.resources.memory_limit_bytes = Some(1);
        assert_ne!(spec_hash(&spec, &config_objects), spec_hash(&changed, &config_objects));
    }
}
