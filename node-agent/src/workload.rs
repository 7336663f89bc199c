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

use firmware_proto::pod::{Container, PodDocument, PodVolumeSource};

use crate::image::{Availability, Images, PreparedRootfs, RunConfig, Sha256};
use crate::pod::{ConfigObjects, Unit};
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
    /// A pod's volumes, shared by its containers.
    pub fn volumes(&self, pod: &str) -> PathBuf {
        self.data_dir.join("volumes").join(pod)
    }
    /// A container's log (`id` as [`crate::pod::unit_id`] makes it).
    pub fn log(&self, id: &str) -> PathBuf {
        self.data_dir.join("logs").join(format!("{id}.log"))
    }
    /// Config objects the applied document names, as their signed frames.
    pub fn config_dir(&self) -> PathBuf {
        self.data_dir.join("config")
    }
    /// One config object's frame.
    pub fn config_object(&self, digest: &[u8; 32]) -> PathBuf {
        self.config_dir().join(format!("{}.frame", Sha256(*digest).hex()))
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
    /// A volume's config object has not arrived yet.
    #[error("{0}")]
    ConfigPending(crate::pod::Missing),
    /// A Secret's sealed values do not open with this node's key.
    #[error("{0}")]
    Sealed(crate::pod::SealError),
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
/// container must be replaced; equal means leave it running. The pod's
/// volumes it mounts and the digests of their config objects count.
pub fn unit_hash(unit: &Unit<'_>, document: &PodDocument) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    unit.container.hash(&mut hasher);
    unit.pod.restart_policy.hash(&mut hasher);
    unit.pod.termination_grace_s.hash(&mut hasher);
    for mount in unit.container.mounts.iter() {
        if let Some(volume) = unit.pod.volumes.get(usize::from(mount.volume)) {
            volume.hash(&mut hasher);
            if let PodVolumeSource::Config { index } = volume.source
                && let Some(reference) = document.config.get(usize::from(index))
            {
                reference.hash(&mut hasher);
            }
            // The claim's id, not its size: a resized claim is the same
            // directory, and its containers keep running.
            if let PodVolumeSource::Claim { index } = volume.source
                && let Some(claim) = document.claims.get(usize::from(index))
            {
                claim.id.hash(&mut hasher);
            }
        }
    }
    hasher.finish()
}

/// The container for one container of a pod, if its image is here:
/// otherwise the pull is started (or its failure reported) and it waits.
/// Makes the container's root filesystem, writes ConfigMap/Secret files and
/// creates emptyDir directories as side effects.
pub fn prepare(
    paths: &Paths,
    images: &mut Images,
    unit: &Unit<'_>,
    document: &PodDocument,
    config: &ConfigObjects,
    now_ms: u64,
) -> Result<ContainerConfig, WorkloadError> {
    let image = &unit.container.image;
    let ready = match images.availability(image, now_ms) {
        Availability::Ready(ready) => ready,
        Availability::Pulling => return Err(WorkloadError::ImagePulling(image.reference.to_string())),
        Availability::Failed(reason) => return Err(WorkloadError::ImagePullFailed(reason)),
    };
    let rootfs = images.prepare_rootfs(&unit.id, image, &ready).map_err(WorkloadError::Rootfs)?;
    container_config_on(paths, unit, document, config, &rootfs)
}

/// The container for one container of a pod whose image is preloaded (see
/// [`crate::image::store`]), for tools that place a root filesystem
/// themselves (benchmarks). The agent uses [`prepare`].
pub fn container_config(
    paths: &Paths,
    unit: &Unit<'_>,
    document: &PodDocument,
    config: &ConfigObjects,
) -> Result<ContainerConfig, WorkloadError> {
    let image = &unit.container.image;
    let rootfs = paths.image_rootfs(&image.digest.0);
    if !rootfs.is_dir() {
        return Err(WorkloadError::NotPreloaded {
            reference: image.reference.to_string(),
            digest: Sha256(image.digest.0).hex(),
        });
    }
    container_config_on(paths, unit, document, config, &PreparedRootfs { path: rootfs, run: None })
}

/// The container for one container of a pod on a prepared root
/// filesystem. Writes ConfigMap/Secret files and creates emptyDir
/// directories (shared by the pod's containers) as a side effect.
pub fn container_config_on(
    paths: &Paths,
    unit: &Unit<'_>,
    document: &PodDocument,
    config: &ConfigObjects,
    image: &PreparedRootfs,
) -> Result<ContainerConfig, WorkloadError> {
    let spec = unit.container;
    let pod_id = unit.pod.id.as_str();
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
    for mount in spec.mounts.iter() {
        // The decoder checked the index is inside the pod.
        let volume = &unit.pod.volumes[usize::from(mount.volume)];
        let name = volume.name.to_string();
        let dir = paths.volumes(pod_id).join(&name);
        let volume_err = |e: std::io::Error| WorkloadError::Volume { volume: name.clone(), reason: e.to_string() };
        let destination = mount.mount_path.to_string();
        let (source, read_only) = match &volume.source {
            PodVolumeSource::EmptyDir { in_memory: true, size_limit_bytes } => {
                if !shared_by_several(unit, mount.volume) && mount.sub_path.is_empty() {
                    // One container: a tmpfs of its own, as before.
                    mounts.push(MountSpec { source: PathBuf::new(), destination, read_only: false, tmpfs: true });
                    continue;
                }
                crate::volumes::ensure_tmpfs(&dir, *size_limit_bytes).map_err(volume_err)?;
                (dir, mount.read_only)
            }
            PodVolumeSource::EmptyDir { .. } => {
                std::fs::create_dir_all(&dir).map_err(volume_err)?;
                (dir, mount.read_only)
            }
            PodVolumeSource::HostPath { path } => (PathBuf::from(path.as_str()), mount.read_only),
            PodVolumeSource::Config { index } => {
                let object = config.get(document, *index).map_err(WorkloadError::ConfigPending)?;
                // The decoder checked the index is inside the document.
                let reference = &document.config[usize::from(*index)];
                let files = config.files(reference, &object).map_err(WorkloadError::Sealed)?;
                if reference.secret {
                    // A Secret's files in clear live in memory only. Room
                    // for two copies: each file is rewritten beside itself.
                    let bytes: u64 = files.iter().map(|(_, content)| content.len() as u64 + 4096).sum();
                    crate::volumes::ensure_tmpfs_with_mode(&dir, Some(2 * bytes + (1 << 20)), 0o755)
                        .map_err(volume_err)?;
                }
                write_config_files(&dir, &files, reference.secret).map_err(|e| match e {
                    ConfigWriteError::Io(e) => volume_err(e),
                    ConfigWriteError::BadName(n) => WorkloadError::BadFileName(n),
                })?;
                (dir, true)
            }
            PodVolumeSource::Claim { index } => {
                // The decoder checked the index is inside the document.
                let claim = &document.claims[usize::from(*index)];
                let dir = crate::claims::ensure(&paths.data_dir, claim)
                    .map_err(|e| WorkloadError::Volume { volume: name.clone(), reason: e.to_string() })?;
                (dir, mount.read_only)
            }
        };
        let source = if mount.sub_path.is_empty() {
            source
        } else {
            let create = matches!(volume.source, PodVolumeSource::EmptyDir { .. } | PodVolumeSource::Claim { .. });
            beneath(&source, mount.sub_path.as_str(), create).map_err(volume_err)?
        };
        mounts.push(MountSpec { source, destination, read_only, tmpfs: false });
    }
    let secret_env = config.secret_env(pod_id, spec).map_err(WorkloadError::Sealed)?;
    let (uid, gid) = match spec.user {
        Some(user) => (user.uid, user.gid),
        None => image_user(&image.path, &run.user)?,
    };
    let cwd = [spec.working_dir.as_str(), run.working_dir.as_str()].into_iter().find(|d| !d.is_empty());
    Ok(ContainerConfig {
        id: unit.id.clone(),
        hostname: pod_id.to_owned(),
        rootfs: image.path.clone(),
        args,
        env: merged_env(&run.env, spec.env.iter().chain(secret_env.iter().map(String::as_str))),
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
        log_path: paths.log(&unit.id),
        seccomp,
    })
}

/// `sub` inside the volume at `root`, creating missing directories when
/// `create`. A component that is a symlink is refused: a container could
/// otherwise plant one in a shared volume and have the device's own files
/// mounted into a sibling (Kubernetes' subPath CVE-2017-1002101). The path
/// was checked to be relative and free of `..` when it was decoded.
fn beneath(root: &Path, sub: &str, create: bool) -> std::io::Result<PathBuf> {
    let mut path = root.to_owned();
    for part in sub.split('/').filter(|p| !p.is_empty() && *p != ".") {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(std::io::Error::other(format!("subPath {sub:?}: {part} is a symlink")));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => std::fs::create_dir(&path)?,
            Err(e) => return Err(e),
        }
    }
    Ok(path)
}

/// Whether more than one container of the unit's pod mounts this volume.
fn shared_by_several(unit: &Unit<'_>, volume: u16) -> bool {
    unit.pod.all_containers().filter(|c| c.mounts.iter().any(|m| m.volume == volume)).count() > 1
}

/// Removes a pod's volume directory (`volumes/{pod}`), unmounting any
/// shared in-memory emptyDir in it first.
pub fn remove_volumes(dir: &Path) {
    crate::volumes::release(dir);
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "removing a pod's volumes failed");
    }
}

/// Kubernetes' rule: `command` replaces the entrypoint and the image's
/// cmd; `args` alone replace the cmd.
fn command_line(spec: &Container, run: &RunConfig) -> Vec<String> {
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

fn write_config_files(dir: &Path, files: &[(String, Vec<u8>)], secret: bool) -> Result<(), ConfigWriteError> {
    std::fs::create_dir_all(dir).map_err(ConfigWriteError::Io)?;
    for (name, content) in files {
        let name = name.as_str();
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(ConfigWriteError::BadName(name.to_owned()));
        }
        let path = dir.join(name);
        crate::persist::write_atomic(&path, content).map_err(ConfigWriteError::Io)?;
        let mode = if secret { 0o400 } else { 0o444 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(ConfigWriteError::Io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_proto::heap::Texts;
    use firmware_proto::pod::PodSpec;

    fn document(image_digest: [u8; 32]) -> (PodDocument, ConfigObjects) {
        let blob = firmware_proto::samples::config_blob();
        let digest = firmware_proto::Bytes([5; 32]);
        let mut document = firmware_proto::samples::pod_document(1, digest);
        for c in document.pods.as_mut_slice()[0].init_containers.as_mut_slice() {
            c.image.digest = firmware_proto::Bytes(image_digest);
        }
        document.pods.as_mut_slice()[0].containers.as_mut_slice()[0].image.digest = firmware_proto::Bytes(image_digest);
        let mut config = ConfigObjects::default();
        config.insert(digest, blob);
        (document, config)
    }

    fn preloaded(dir: &Path) -> PreparedRootfs {
        PreparedRootfs { path: dir.join("rootfs"), run: None }
    }

    fn app(pod: &PodSpec) -> Unit<'_> {
        Unit::all(pod).pop().unwrap()
    }

    #[test]
    fn a_container_of_a_pod_maps_to_a_runtime_container_with_its_limits_and_the_pods_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths { data_dir: dir.path().to_owned() };
        let (document, config) = document([7; 32]);
        let pod = &document.pods[0];
        let unit = app(pod);
        let container = container_config_on(&paths, &unit, &document, &config, &preloaded(dir.path())).unwrap();
        assert_eq!(container.id, "sensor-1a2b-0.sensor");
        assert_eq!(container.hostname, "sensor-1a2b-0");
        assert_eq!(container.rootfs, dir.path().join("rootfs"));
        assert_eq!(container.memory_limit_bytes, unit.container.resources.memory_limit_bytes);
        assert_eq!(container.args.first().map(String::as_str), unit.container.command.iter().next());
        // The config volume's files and the shared emptyDir, in the pod's directory.
        let volumes = paths.volumes("sensor-1a2b-0");
        assert_eq!(container.mounts[0].source, volumes.join("config"));
        assert_eq!(std::fs::read_to_string(volumes.join("config/sensor.toml")).unwrap(), "threshold = 40\n");
        assert_eq!(container.mounts[1].source, volumes.join("spool"));
        let sidecar = &Unit::all(pod)[1];
        let exporter = container_config_on(&paths, sidecar, &document, &config, &preloaded(dir.path())).unwrap();
        assert_eq!(exporter.mounts[0].source, volumes.join("spool"), "the same directory");
        assert!(exporter.mounts[0].read_only);

        assert_eq!(unit_hash(&unit, &document), unit_hash(&app(&pod.clone()), &document.clone()));
        let mut changed = document.clone();
        changed.pods.as_mut_slice()[0].containers.as_mut_slice()[0].resources.memory_limit_bytes = Some(1);
        assert_ne!(unit_hash(&unit, &document), unit_hash(&app(&changed.pods[0]), &changed));
        let mut new_config = document.clone();
        new_config.config.as_mut_slice()[0].digest = firmware_proto::Bytes([6; 32]);
        assert_ne!(unit_hash(&unit, &document), unit_hash(&app(&new_config.pods[0]), &new_config), "config changed");
        let missing =
            container_config_on(&paths, &app(&new_config.pods[0]), &new_config, &config, &preloaded(dir.path()));
        let Err(WorkloadError::ConfigPending(missing)) = missing else { panic!("{missing:?}") };
        assert!(
            missing.to_string().starts_with("waiting for ConfigMap sensor-config (sha256:060606060606"),
            "{missing}"
        );

        // A preloaded image, without the image store (benchmarks).
        assert!(matches!(container_config(&paths, &unit, &document, &config), Err(WorkloadError::NotPreloaded { .. })));
        std::fs::create_dir_all(paths.image_rootfs(&[7; 32])).unwrap();
        let container = container_config(&paths, &unit, &document, &config).unwrap();
        assert_eq!(container.rootfs, paths.image_rootfs(&[7; 32]));

        remove_volumes(&volumes);
        assert!(!volumes.exists());
    }

    #[test]
    fn a_sub_path_mounts_a_directory_inside_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths { data_dir: dir.path().to_owned() };
        let (mut document, config) = document([7; 32]);
        document.pods.as_mut_slice()[0].containers.as_mut_slice()[0].mounts.as_mut_slice()[1].sub_path =
            firmware_proto::heap::Text::new("app/data").unwrap();
        let pod = &document.pods[0];
        let container = container_config_on(&paths, &app(pod), &document, &config, &preloaded(dir.path())).unwrap();
        let inside = paths.volumes("sensor-1a2b-0").join("spool/app/data");
        assert_eq!(container.mounts[1].source, inside);
        assert!(inside.is_dir());
        // A symlink planted in the volume does not lead out of it.
        let spool = paths.volumes("sensor-1a2b-0").join("spool");
        std::os::unix::fs::symlink("/", spool.join("escape")).unwrap();
        document.pods.as_mut_slice()[0].containers.as_mut_slice()[0].mounts.as_mut_slice()[1].sub_path =
            firmware_proto::heap::Text::new("escape/etc").unwrap();
        let pod = &document.pods[0];
        let refused = container_config_on(&paths, &app(pod), &document, &config, &preloaded(dir.path()));
        assert!(
            matches!(&refused, Err(WorkloadError::Volume { reason, .. }) if reason.contains("symlink")),
            "{refused:?}"
        );
    }

    #[test]
    fn the_image_config_fills_what_the_container_leaves_out() {
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
        let (mut document, config) = document([7; 32]);
        let set = |document: &mut PodDocument, f: &dyn Fn(&mut Container)| {
            f(&mut document.pods.as_mut_slice()[0].containers.as_mut_slice()[0])
        };
        set(&mut document, &|c| {
            c.command = Texts::new();
            c.args = Texts::new();
            c.env = Texts::from_strs(["MODE=replica", "EXTRA=1"]).unwrap();
            c.working_dir = Default::default();
            c.user = None;
            c.mounts = Default::default();
        });
        let c = container_config_on(&paths, &app(&document.pods[0]), &document, &config, &image).unwrap();
        assert_eq!(c.args, ["/bin/server", "--port", "80"]);
        assert_eq!(c.env, ["PATH=/bin", "MODE=replica", "EXTRA=1"]);
        assert_eq!((c.cwd.as_str(), c.uid, c.gid), ("/srv", 1000, 1001));

        set(&mut document, &|c| c.args = Texts::from_strs(["--port", "8080"]).unwrap());
        let c = container_config_on(&paths, &app(&document.pods[0]), &document, &config, &image).unwrap();
        assert_eq!(c.args, ["/bin/server", "--port", "8080"]);
        set(&mut document, &|c| {
            c.command = Texts::from_strs(["/bin/sh", "-c"]).unwrap();
            c.args = Texts::new();
        });
        let c = container_config_on(&paths, &app(&document.pods[0]), &document, &config, &image).unwrap();
        assert_eq!(c.args, ["/bin/sh", "-c"], "no image cmd");

        assert_eq!(image_user(&image.path, "42").unwrap(), (42, 0));
        assert_eq!(image_user(&image.path, "app:staff").unwrap(), (1000, 50));
        assert_eq!(image_user(&image.path, "1000:7").unwrap(), (1000, 7));
        assert!(matches!(image_user(&image.path, "nobody"), Err(WorkloadError::UnknownUser(_))));

        set(&mut document, &|c| c.command = Texts::new());
        let none = container_config_on(&paths, &app(&document.pods[0]), &document, &config, &preloaded(dir.path()));
        assert!(matches!(none, Err(WorkloadError::NoCommand)));
    }
}
