//! OCI bundles: the `config.json` a container is created from.
//!
//! Starts from oci-spec's defaults (the runc spec: /proc, /dev, /sys and
//! cgroup mounts, masked and read-only kernel paths; see [`base_spec`]) and
//! sets what the replica asks for. Deliberate choices:
//! - namespaces: pid, mount, uts, ipc; no network namespace, so workloads
//!   share the device's network like Kubernetes `hostNetwork` (edge devices
//!   talk to field buses and local brokers; HTTP probes reach them);
//! - Docker's default capability set, `noNewPrivileges` on;
//! - the cgroup path `/flotilla/<id>` so the agent finds usage counters;
//! - on cgroup v1 hosts, the container's own cgroups mounted read-only at
//!   `/sys/fs/cgroup` by the spec itself ([`super::cgroup_view`]).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde_json::{Value, json};

use super::{ContainerConfig, RuntimeError, cgroup_path, cgroup_view};

/// Docker's default capabilities (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Syscalls the default profile refuses with EPERM: those Docker's default
/// profile leaves out of its allowlist (kernel modules, kexec, reboot,
/// clock setting, mount namespaces, tracing other processes, keyrings, BPF,
/// NUMA policy, swap...). Written as a denylist over a default of allow, so
/// it does not need per-kernel maintenance; names that exist on both x86_64
/// and aarch64 (libcontainer skips unknown names with a warning).
pub const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "get_mempolicy",
    "init_module",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "umount2",
    "unshare",
    "userfaultfd",
];

/// The default seccomp profile (OCI `linux.seccomp`).
pub fn default_seccomp() -> Value {
    let arch = if cfg!(target_arch = "aarch64") { "SCMP_ARCH_AARCH64" } else { "SCMP_ARCH_X86_64" };
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [arch],
        "syscalls": [{ "names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }],
    })
}

/// The parts of oci-spec's `Spec::default()` (runc's default spec) that
/// [`spec`] keeps; it replaces the rest (process, root, hostname, the linux
/// resources and namespaces).
///
/// Written out rather than serialized from `Spec::default()`: that
/// serializer for the whole spec tree cost 36 KB of the agent binary, which
/// has a size budget (issue #6). A test holds this equal to oci-spec's
/// defaults.
pub fn base_spec() -> Value {
    json!({
        "ociVersion": "1.0.2-dev",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            {
                "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            },
            {
                "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/sys", "type": "sysfs", "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
            },
        ],
        "annotations": {},
        "linux": {
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    })
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// CFS period used for cpu limits (the kernel's and Kubernetes' default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Kubernetes' conversion of a cpu request to cgroup v1 shares.
pub fn cpu_shares(request_millis: u64) -> u64 {
    (request_millis * 1024 / 1000).max(2)
}

fn device_numbers(rdev: u64) -> (i64, i64) {
    // glibc's gnu_dev_major / gnu_dev_minor.
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as i64, minor as i64)
}

/// On cgroup v1 hosts, replaces the default `cgroup` mount by the read-only
/// view of the container's own cgroups ([`cgroup_view`]).
fn use_read_only_cgroup_view(spec: &mut Value, cgroups: &cgroup_view::V1Hierarchies, id: &str) -> Result<(), String> {
    let mounts = spec["mounts"].as_array_mut().ok_or("default spec has no mounts")?;
    let at = mounts
        .iter()
        .position(|m| m["destination"] == cgroup_view::DESTINATION)
        .ok_or("default spec has no cgroup mount")?;
    mounts.splice(at..=at, cgroups.mounts(&cgroup_path(id)));
    // Remounts the tmpfs read-only after the binds were made in it.
    spec["linux"]["readonlyPaths"]
        .as_array_mut()
        .ok_or("default spec has no readonlyPaths")?
        .push(json!(cgroup_view::DESTINATION));
    Ok(())
}

/// The OCI runtime spec for a container, as JSON.
pub fn spec(config: &ContainerConfig) -> Result<Value, RuntimeError> {
    let bundle_err = |reason: String| RuntimeError::Bundle { id: config.id.clone(), reason };
    let mut spec = base_spec();
    let mut env = config.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    env.push(format!("HOSTNAME={}", config.hostname));
    let caps: Vec<&str> = DEFAULT_CAPABILITIES.to_vec();
    spec["process"] = json!({
        "terminal": false,
        "user": { "uid": config.uid, "gid": config.gid },
        "args": config.args,
        "env": env,
        "cwd": if config.cwd.is_empty() { "/" } else { &config.cwd },
        "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
        "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
        "noNewPrivileges": true,
    });
    let rootfs = std::path::absolute(&config.rootfs).map_err(|e| bundle_err(e.to_string()))?;
    spec["root"] = json!({ "path": rootfs, "readonly": config.read_only_rootfs });
    spec["hostname"] = json!(config.hostname);
    if let Some(cgroups) = cgroup_view::host_v1() {
        use_read_only_cgroup_view(&mut spec, cgroups, &config.id).map_err(bundle_err)?;
    }

    let mounts = spec["mounts"].as_array_mut().ok_or_else(|| bundle_err("default spec has no mounts".into()))?;
    for mount in &config.mounts {
        let mut options = vec!["rbind", "nosuid", "nodev"];
        options.push(if mount.read_only { "ro" } else { "rw" });
        if mount.tmpfs {
            mounts.push(json!({
                "destination": mount.destination, "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"],
            }));
        } else {
            mounts.push(json!({
                "destination": mount.destination, "type": "bind", "source": mount.source, "options": options,
            }));
        }
    }

    let mut resources = json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    let mut devices = Vec::new();
    for device in &config.devices {
        let meta = std::fs::metadata(&device.host_path)
            .map_err(|e| bundle_err(format!("device {}: {e}", device.host_path)))?;
        let kind = if meta.file_type().is_char_device() {
            "c"
        } else if meta.file_type().is_block_device() {
            "b"
        } else {
            return Err(bundle_err(format!("{} is not a device node", device.host_path)));
        };
        let (major, minor) = device_numbers(meta.rdev());
        devices.push(json!({
            "path": device.container_path, "type": kind, "major": major, "minor": minor,
            "fileMode": meta.mode() & 0o777, "uid": 0, "gid": 0,
        }));
        resources["devices"]
            .as_array_mut()
            .expect("built above")
            .push(json!({ "allow": true, "type": kind, "major": major, "minor": minor, "access": "rwm" }));
    }
    if let Some(limit) = config.memory_limit_bytes {
        resources["memory"] = json!({ "limit": limit });
    }
    let mut cpu = serde_json::Map::new();
    if let Some(limit) = config.cpu_limit_millis {
        cpu.insert("quota".into(), json!((limit * CPU_PERIOD_US / 1000).max(1000)));
        cpu.insert("period".into(), json!(CPU_PERIOD_US));
    }
    if let Some(request) = config.cpu_request_millis {
        cpu.insert("shares".into(), json!(cpu_shares(request)));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(limit) = config.pids_limit {
        resources["pids"] = json!({ "limit": limit });
    }
    let linux = spec["linux"].as_object_mut().ok_or_else(|| bundle_err("default spec has no linux".into()))?;
    linux.insert("resources".into(), resources);
    linux.insert("devices".into(), Value::Array(devices));
    linux.insert("cgroupsPath".into(), json!(cgroup_path(&config.id)));
    if config.seccomp {
        if !super::SECCOMP_AVAILABLE {
            return Err(bundle_err("a seccomp profile is required but this agent was built without seccomp".into()));
        }
        linux.insert("seccomp".into(), default_seccomp());
    }
    linux.insert(
        "namespaces".into(),
        json!([{ "type": "pid" }, { "type": "mount" }, { "type": "uts" }, { "type": "ipc" }]),
    );
    Ok(spec)
}

/// Writes `config.json` into `bundle` (temp file, rename) and checks it
/// against the typed spec first. No fsync: a bundle is derived data, rebuilt
/// from the agent's own (fsynced) state after a crash, and the fsync was
/// 0.7 ms of a ~10 ms container start. Compact JSON: libcontainer parses it
/// on every create (`jq .` reads it).
pub fn write(bundle: &Path, config: &ContainerConfig) -> Result<(), RuntimeError> {
    let bundle_err = |reason: String| RuntimeError::Bundle { id: config.id.clone(), reason };
    let spec = spec(config)?;
    // The spec holds the container's env, Secret values included: the
    // bundle is root's alone (0700, config.json 0600).
    crate::persist::create_private_dir(bundle)
        .map_err(|e| bundle_err(format!("creating {}: {e}", bundle.display())))?;
    let bytes = serde_json::to_vec(&spec).map_err(|e| bundle_err(e.to_string()))?;
    let temp = bundle.join(".config.json.tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut file| file.write_all(&bytes))
            .map_err(|e| bundle_err(format!("writing {}: {e}", temp.display())))?;
    }
    // Read back with the loader libcontainer itself uses, so that a field of
    // the wrong shape fails here, not inside the container's init. Reusing
    // that loader (rather than `serde_json::from_value`) also keeps a second
    // copy of the whole `Spec` deserializer (155 KB) out of the agent binary.
    // A refused temp file stays until the next write replaces it: the bundle
    // is derived data, like one left by a failed create.
    oci_spec::runtime::Spec::load(&temp).map_err(|e| bundle_err(format!("invalid runtime spec: {e}")))?;
    std::fs::rename(&temp, bundle.join("config.json")).map_err(|e| bundle_err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::MountSpec;

    pub(crate) fn config() -> ContainerConfig {
        ContainerConfig {
            id: "default_web-7f3a-0".into(),
            hostname: "web-7f3a-0".into(),
            rootfs: "/var/lib/flotilla/rootfs/web".into(),
            args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["MODE=fast".into()],
            cwd: String::new(),
            uid: 1000,
            gid: 1000,
            memory_limit_bytes: Some(64 << 20),
            cpu_limit_millis: Some(500),
            cpu_request_millis: Some(250),
            pids_limit: Some(64),
            read_only_rootfs: true,
            mounts: vec![MountSpec {
                source: "/var/lib/flotilla/volumes/cfg".into(),
                destination: "/etc/app".into(),
                read_only: true,
                tmpfs: false,
            }],
            devices: vec![],
            log_path: "/tmp/x.log".into(),
            seccomp: true,
        }
    }

    #[test]
    fn limits_namespaces_and_privileges_are_in_the_spec() {
        let spec = spec(&config()).unwrap();
        let r = &spec["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 64 << 20);
        assert_eq!(r["cpu"]["quota"], 50_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["cpu"]["shares"], 256);
        assert_eq!(r["pids"]["limit"], 64);
        assert_eq!(spec["linux"]["cgroupsPath"], "/flotilla/default_web-7f3a-0");
        let namespaces: Vec<&str> =
            spec["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert_eq!(namespaces, ["pid", "mount", "uts", "ipc"]);
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        assert_eq!(spec["process"]["capabilities"]["bounding"].as_array().unwrap().len(), 14);
        assert_eq!(spec["process"]["user"]["uid"], 1000);
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(spec["hostname"], "web-7f3a-0");
        assert_eq!(spec["linux"]["seccomp"]["syscalls"][0]["names"].as_array().unwrap().len(), DENIED_SYSCALLS.len());
        assert!(spec["process"]["env"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().starts_with("PATH=")));
        let volume = spec["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/etc/app").unwrap();
        assert!(volume["options"].as_array().unwrap().contains(&json!("ro")));
    }

    #[test]
    fn requested_devices_are_created_and_allowed() {
        let mut config = config();
        config
            .devices
            .push(crate::runtime::DeviceSpec { host_path: "/dev/null".into(), container_path: "/dev/sensor".into() });
        let spec = spec(&config).unwrap();
        let device = &spec["linux"]["devices"][0];
        assert_eq!((device["path"].as_str(), device["type"].as_str()), (Some("/dev/sensor"), Some("c")));
        assert_eq!((device["major"].as_i64(), device["minor"].as_i64()), (Some(1), Some(3)));
        config.devices[0].host_path = "/etc/hostname".into();
        assert!(matches!(super::spec(&config), Err(RuntimeError::Bundle { .. })));
    }

    #[test]
    fn on_cgroup_v1_the_cgroup_mount_becomes_a_read_only_view_of_the_containers_own_cgroups() {
        let mut spec = base_spec();
        let before: Vec<Value> = spec["mounts"].as_array().unwrap().clone();
        let host = ["memory", "pids"].map(|c| std::path::PathBuf::from("/sys/fs/cgroup").join(c));
        let cgroups = cgroup_view::V1Hierarchies::from_mount_points(host).unwrap();
        use_read_only_cgroup_view(&mut spec, &cgroups, "web-0").unwrap();

        let mounts = spec["mounts"].as_array().unwrap();
        let at = before.iter().position(|m| m["destination"] == "/sys/fs/cgroup").unwrap();
        assert_eq!(mounts[..at], before[..at], "mounts before it unchanged (/sys comes first)");
        assert_eq!(mounts[at + 3..], before[at + 1..], "mounts after it unchanged");
        assert_eq!(mounts[at]["type"], "tmpfs");
        assert_eq!(mounts[at + 1]["source"], format!("/sys/fs/cgroup/memory{}", cgroup_path("web-0")));
        assert!(mounts.iter().all(|m| m["type"] != "cgroup"), "libcontainer's read-write v1 mount is gone");
        assert!(spec["linux"]["readonlyPaths"].as_array().unwrap().contains(&json!("/sys/fs/cgroup")));
        <oci_spec::runtime::Spec as serde::Deserialize>::deserialize(&spec).expect("still a valid spec");
    }

    #[test]
    fn base_spec_is_oci_specs_default_for_what_the_agent_keeps() {
        let defaults = serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap();
        let base = base_spec();
        for key in ["ociVersion", "mounts", "annotations"] {
            assert_eq!(base[key], defaults[key], "{key}");
        }
        for key in ["maskedPaths", "readonlyPaths"] {
            assert_eq!(base["linux"][key], defaults["linux"][key], "linux.{key}");
        }
        // Every other default is replaced by `spec`: none is dropped.
        let spec = spec(&config()).unwrap();
        for key in defaults.as_object().unwrap().keys() {
            assert!(!spec[key].is_null(), "{key} dropped");
        }
        for key in defaults["linux"].as_object().unwrap().keys() {
            assert!(!spec["linux"][key].is_null(), "linux.{key} dropped");
        }
    }

    #[test]
    fn written_config_loads_as_a_typed_spec() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &config()).unwrap();
        let loaded = oci_spec::runtime::Spec::load(dir.path().join("config.json")).unwrap();
        assert_eq!(loaded.hostname().as_deref(), Some("web-7f3a-0"));
        assert!(!dir.path().join(".config.json.tmp").exists());
        // It holds the container's env, Secret values included: root's alone.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(dir.path()), mode(&dir.path().join("config.json"))), (0o700, 0o600));
    }

    #[test]
    fn a_spec_libcontainer_cannot_read_is_refused_before_it_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config();
        // oci-spec's memory limit is an i64.
        config.memory_limit_bytes = Some(u64::MAX);
        let error = write(dir.path(), &config).unwrap_err();
        assert!(error.to_string().contains("invalid runtime spec"), "{error}");
        assert!(!dir.path().join("config.json").exists(), "libcontainer never sees it");
    }

    #[test]
    fn cpu_shares_follow_kubernetes() {
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_shares(1), 2);
    }
}
