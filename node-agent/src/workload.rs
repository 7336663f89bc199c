//! From a desired replica (firmware-proto) to a container (runtime).
//!
//! Also prepares what the container runs on and mounts: its root filesystem
//! from the image store (pulling the image first), emptyDir directories, and
//! the files of ConfigMaps and Secrets carried in the desired document
//! (Secrets with mode 0400, never logged).
//!
//! The image's config fills what the replica leaves out, as in Kubernetes:
//! `command` replaces the entrypoint (and drops the image's cmd), `args`
//! replace the cmd, the image's env comes first with the replica's on top,
//! and the image's working directory and user apply unless the replica
//! sets its own.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use firmware_proto::{ConfigObject, ReplicaSpec, VolumeSource};

use crate::image::{Availability, Images, PreparedRootfs, RunConfig, Sha256};
use crate::runtime::{ContainerConfig, DeviceSpec, MountSpec};

/// Directories the agent owns, under its data directory.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The data directory.
    pub data_dir: PathBuf,
}

impl Paths {
    /// A preloaded image's root filesystem: `images/<sha256 hex>/rootfs`
    /// (see [`crate::image::store`]; pulled images live in the layer store).
    pub fn image_rootfs(&self, digest: &[u8; 32]) -> PathBuf {
        self.data_dir.join("images").join(Sha256(*digest).hex()).join("rootfs")
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

/// Why a replica cannot become a container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// The image is being pulled.
    #[error("pulling image {0}")]
    ImagePulling(String),
    /// No preloaded image where [`container_config`] looks.
    #[error("image {reference} (sha256:{digest}) is not preloaded")]
    NotPreloaded {
        /// As written in the manifest.
        reference: String,
        /// Hex digest.
        digest: String,
    },
    /// The image's last pull failed (retried later unless hopeless).
    #[error("pull failed: {0}")]
    ImagePullFailed(String),
    /// The container's root filesystem could not be made.
    #[error("{0}")]
    Rootfs(String),
    /// Neither the replica nor the image says what to run.
    #[error("no command given and the image has no entrypoint or cmd")]
    NoCommand,
    /// The image's user is a name the image's /etc/passwd (or /etc/group) lacks.
    #[error("image user {0:?} is not in the image's /etc/passwd or /etc/group")]
    UnknownUser(String),
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

/// The container for a replica, if its image is here: otherwise the pull
/// is started (or its failure reported) and the replica waits. Makes the
/// container's root filesystem, writes ConfigMap/Secret files and creates
/// emptyDir directories as side effects.
pub fn prepare(
    paths: &Paths,
    images: &mut Images,
    spec: &ReplicaSpec,
    config: &[ConfigObject],
    now_ms: u64,
) -> Result<ContainerConfig, WorkloadError> {
    let ready = match images.availability(&spec.image, now_ms) {
        Availability::Ready(ready) => ready,
        Availability::Pulling => return Err(WorkloadError::ImagePulling(spec.image.reference.to_string())),
        Availability::Failed(reason) => return Err(WorkloadError::ImagePullFailed(reason)),
    };
    let rootfs = images.prepare_rootfs(spec.id.as_str(), &spec.image, &ready).map_err(WorkloadError::Rootfs)?;
    container_config_on(paths, spec, config, &rootfs)
}

/// The container for a replica whose image is preloaded (see
/// [`crate::image::store`]), for tools that place a root filesystem
/// themselves (benchmarks). The agent uses [`prepare`].
pub fn container_config(
    paths: &Paths,
    spec: &ReplicaSpec,
    config: &[ConfigObject],
) -> Result<ContainerConfig, WorkloadError> {
    let rootfs = paths.image_rootfs(&spec.image.digest.0);
    if !rootfs.is_dir() {
        return Err(WorkloadError::NotPreloaded {
            reference: spec.image.reference.to_string(),
            digest: Sha256(spec.image.digest.0).hex(),
        });
    }
    container_config_on(paths, spec, config, &PreparedRootfs { path: rootfs, run: None })
}

/// The container for a replica on a prepared root filesystem. Writes
/// ConfigMap/Secret files and creates emptyDir directories as a side effect.
pub fn container_config_on(
    paths: &Paths,
    spec: &ReplicaSpec,
    config: &[ConfigObject],
    image: &PreparedRootfs,
) -> Result<ContainerConfig, WorkloadError> {
    let id = spec.id.as_str().to_owned();
    let run = image.run.clone().unwrap_or_default();
    let args = command_line(spec, &run);
    if args.is_empty() {
        return Err(WorkloadError::NoCommand);
    }
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
    let (uid, gid) = match spec.user {
        Some(user) => (user.uid, user.gid),
        None => image_user(&image.path, &run.user)?,
    };
    let cwd = [spec.working_dir.as_str(), run.working_dir.as_str()].into_iter().find(|d| !d.is_empty());
    Ok(ContainerConfig {
        id: id.clone(),
        hostname: id.clone(),
        rootfs: image.path.clone(),
        args,
        env: merged_env(&run.env, spec.env.iter()),
        cwd: cwd.unwrap_or("/").to_owned(),
        uid,
        gid,
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

/// Kubernetes' rule: `command` replaces the entrypoint and the image's
/// cmd; `args` alone replace the cmd.
fn command_line(spec: &ReplicaSpec, run: &RunConfig) -> Vec<String> {
    let owned = |items: &mut dyn Iterator<Item = &str>| items.map(str::to_owned).collect::<Vec<_>>();
    let (program, args) = match (spec.command.is_empty(), spec.args.is_empty()) {
        (false, _) => (owned(&mut spec.command.iter()), owned(&mut spec.args.iter())),
        (true, false) => (run.entrypoint.clone(), owned(&mut spec.args.iter())),
        (true, true) => (run.entrypoint.clone(), run.cmd.clone()),
    };
    program.into_iter().chain(args).collect()
}

/// The image's `NAME=value` entries with the replica's on top.
fn merged_env<'a>(image: &[String], replica: impl Iterator<Item = &'a str>) -> Vec<String> {
    let name = |entry: &str| entry.split_once('=').map_or(entry, |(name, _)| name).to_owned();
    let mut env = image.to_vec();
    for entry in replica {
        match env.iter_mut().find(|e| name(e) == name(entry)) {
            Some(existing) => entry.clone_into(existing),
            None => env.push(entry.to_owned()),
        }
    }
    env
}

/// The image's `User` (`uid[:gid]` or `name[:group]`, names from the
/// image's own /etc/passwd and /etc/group) as numeric ids; root if unset.
fn image_user(rootfs: &Path, user: &str) -> Result<(u32, u32), WorkloadError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let unknown = || WorkloadError::UnknownUser(user.to_owned());
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // name:x:uid:gid:... in both files (group has no 4th field we need).
    let lookup = |file: &str, key: &str| -> Option<(u32, Option<u32>)> {
        let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines().map(|line| line.split(':').collect::<Vec<_>>()).find_map(|fields| {
            let id: u32 = fields.get(2)?.parse().ok()?;
            (fields[0] == key || id.to_string() == key).then(|| (id, fields.get(3).and_then(|g| g.parse().ok())))
        })
    };
    let (uid, primary_gid) = match user_part.parse::<u32>() {
        Ok(uid) => (uid, lookup("etc/passwd", user_part).and_then(|(_, gid)| gid)),
        Err(_) => lookup("etc/passwd", user_part).ok_or_else(unknown)?,
    };
    let gid = match group_part {
        None => primary_gid.unwrap_or(0),
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup("etc/group", group).ok_or_else(unknown)?.0,
        },
    };
    Ok((uid, gid))
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

    fn preloaded(dir: &Path) -> PreparedRootfs {
        PreparedRootfs { path: dir.join("rootfs"), run: None }
    }

    #[test]
    fn a_replica_maps_to_a_container_with_its_limits_and_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths { data_dir: dir.path().to_owned() };
        let spec = replica([7; 32]);
        let config_objects = vec![firmware_proto::samples::config()];
        let container = container_config_on(&paths, &spec, &config_objects, &preloaded(dir.path())).unwrap();
        assert_eq!(container.id, spec.id.as_str());
        assert_eq!(container.rootfs, dir.path().join("rootfs"));
        assert_eq!(container.memory_limit_bytes, spec.resources.memory_limit_bytes);
        assert_eq!(container.args.first().map(String::as_str), spec.command.iter().next());
        assert_eq!(spec_hash(&spec, &config_objects), spec_hash(&spec.clone(), &config_objects));
        let mut changed = spec.clone();
        changed.resources.memory_limit_bytes = Some(1);
        assert_ne!(spec_hash(&spec, &config_objects), spec_hash(&changed, &config_objects));

        // A preloaded image, without the image store (benchmarks).
        assert!(matches!(container_config(&paths, &spec, &config_objects), Err(WorkloadError::NotPreloaded { .. })));
        std::fs::create_dir_all(paths.image_rootfs(&[7; 32])).unwrap();
        let container = container_config(&paths, &spec, &config_objects).unwrap();
        assert_eq!(container.rootfs, paths.image_rootfs(&[7; 32]));
    }

    #[test]
    fn the_image_config_fills_what_the_replica_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths { data_dir: dir.path().to_owned() };
        std::fs::create_dir_all(dir.path().join("rootfs/etc")).unwrap();
        std::fs::write(dir.path().join("rootfs/etc/passwd"), "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
            .unwrap();
        std::fs::write(dir.path().join("rootfs/etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let run = RunConfig {
            entrypoint: vec!["/bin/server".into()],
            cmd: vec!["--port".into(), "80".into()],
            env: vec!["PATH=/bin".into(), "MODE=image".into()],
            working_dir: "/srv".into(),
            user: "app".into(),
        };
        let image = PreparedRootfs { path: dir.path().join("rootfs"), run: Some(run) };
        let mut spec = replica([7; 32]);
        spec.command = firmware_proto::TextList::default();
        spec.args = firmware_proto::TextList::default();
        spec.env = firmware_proto::TextList::from_strs(["MODE=replica", "EXTRA=1"]).unwrap();
        spec.working_dir = heapless::String::new();
        spec.user = None;
        spec.volumes.clear();
        let c = container_config_on(&paths, &spec, &[], &image).unwrap();
        assert_eq!(c.args, ["/bin/server", "--port", "80"]);
        assert_eq!(c.env, ["PATH=/bin", "MODE=replica", "EXTRA=1"]);
        assert_eq!((c.cwd.as_str(), c.uid, c.gid), ("/srv", 1000, 1001));

        spec.args = firmware_proto::TextList::from_strs(["--port", "8080"]).unwrap();
        assert_eq!(container_config_on(&paths, &spec, &[], &image).unwrap().args, ["/bin/server", "--port", "8080"]);
        spec.command = firmware_proto::TextList::from_strs(["/bin/sh", "-c"]).unwrap();
        spec.args = firmware_proto::TextList::default();
        assert_eq!(container_config_on(&paths, &spec, &[], &image).unwrap().args, ["/bin/sh", "-c"], "no image cmd");

        assert_eq!(image_user(&image.path, "42").unwrap(), (42, 0));
        assert_eq!(image_user(&image.path, "app:staff").unwrap(), (1000, 50));
        assert_eq!(image_user(&image.path, "1000:7").unwrap(), (1000, 7));
        assert!(matches!(image_user(&image.path, "nobody"), Err(WorkloadError::UnknownUser(_))));

        spec.command = firmware_proto::TextList::default();
        assert!(matches!(
            container_config_on(&paths, &spec, &[], &preloaded(dir.path())),
            Err(WorkloadError::NoCommand)
        ));
    }
}
