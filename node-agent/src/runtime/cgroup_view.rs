//! The container's read-only view of its own cgroups at `/sys/fs/cgroup`.
//!
//! Why the agent builds this view itself on cgroup v1 (legacy and hybrid
//! hosts) instead of leaving the runtime spec's `cgroup` mount to
//! libcontainer 0.7:
//! - libcontainer bind-mounts each v1 hierarchy **read-write**, whatever
//!   the mount's `ro` option says, so a container running as root could
//!   raise its own limits (writing `memory.limit_in_bytes` from inside
//!   moved a 32 MiB limit to 1 GiB on the host);
//! - it binds the named `systemd` hierarchy at the helper's own cgroup,
//!   the host's root here, not at the container's;
//! - it parses `/proc/self/mountinfo` and `/proc/self/cgroup` again in
//!   every container's init, where each read costs ~0.1 ms on a host
//!   with a few overlay mounts.
//!
//! So on v1 the spec gets a tmpfs at `/sys/fs/cgroup` (made read-only
//! once filled, through `readonlyPaths`) and one read-only bind mount per
//! hierarchy of the container's own cgroup directory, the one libcgroups
//! creates before the container's init runs. The host's hierarchies are
//! read once per process ([`host_v1`]). On cgroup v2 the spec keeps its
//! `cgroup` mount: libcontainer mounts cgroup2 read-only, as asked.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Value, json};

/// Where the view is mounted in the container.
pub const DESTINATION: &str = "/sys/fs/cgroup";

/// The v1 controllers libcgroups 0.7 manages, each with the hierarchy
/// directory names it accepts (its `v1::util::get_subsystem_mount_point`):
/// a container's cgroup directory exists in exactly these hierarchies, so
/// only they can be bound. Named hierarchies (`name=systemd`) and
/// controllers libcgroups does not know (`rdma`, `misc`) get no directory.
const CONTROLLERS: &[(&str, &[&str])] = &[
    ("cpu", &["cpu,cpuacct", "cpu"]),
    ("cpuacct", &["cpu,cpuacct", "cpuacct"]),
    ("cpuset", &["cpuset"]),
    ("devices", &["devices"]),
    ("hugetlb", &["hugetlb"]),
    ("memory", &["memory"]),
    ("pids", &["pids"]),
    ("perf_event", &["perf_event"]),
    ("blkio", &["blkio"]),
    ("net_prio", &["net_cls,net_prio", "net_prio,net_cls", "net_prio"]),
    ("net_cls", &["net_cls,net_prio", "net_prio,net_cls", "net_cls"]),
    ("freezer", &["freezer"]),
];

/// The host's cgroup v1 hierarchies that hold a container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchies {
    /// Mount points, e.g. `/sys/fs/cgroup/memory`, `/sys/fs/cgroup/cpu,cpuacct`.
    mount_points: Vec<PathBuf>,
}

/// This host's v1 hierarchies, read from `/proc/self/mountinfo` on first
/// use; `None` on a cgroup v2 host or one without v1 hierarchies, where the
/// spec's own `cgroup` mount is kept. Hierarchies are mounted at boot and
/// not moved while the agent runs, so one read per process is enough.
pub fn host_v1() -> Option<&'static V1Hierarchies> {
    static HOST: OnceLock<Option<V1Hierarchies>> = OnceLock::new();
    HOST.get_or_init(|| {
        if cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
            return None;
        }
        let mounts = cgroups_rs::fs::hierarchies::mountinfo_self();
        V1Hierarchies::from_mount_points(mounts.into_iter().map(|m| m.mount_point))
    })
    .as_ref()
}

impl V1Hierarchies {
    /// The hierarchies among `mount_points` (of `cgroup` file systems) in
    /// which libcgroups creates a container's cgroup; `None` if there are none.
    pub fn from_mount_points(mount_points: impl IntoIterator<Item = PathBuf>) -> Option<Self> {
        let all: Vec<PathBuf> = mount_points.into_iter().collect();
        let mut used: Vec<PathBuf> = Vec::new();
        for (_, names) in CONTROLLERS {
            // libcgroups takes the first mount whose last component matches.
            let found = all.iter().find(|m| m.file_name().and_then(|n| n.to_str()).is_some_and(|n| names.contains(&n)));
            if let Some(mount_point) = found
                && !used.contains(mount_point)
            {
                used.push(mount_point.clone());
            }
        }
        (!used.is_empty()).then_some(V1Hierarchies { mount_points: used })
    }

    /// The OCI mounts of the view for the container whose cgroup path
    /// (relative to each hierarchy's root) is `cgroup_path`, in mount order.
    /// A co-mounted hierarchy (`cpu,cpuacct`) is bound under its own name
    /// and again under each controller's, where libcontainer would put a
    /// symlink (a spec cannot create one), so `/sys/fs/cgroup/cpu` works
    /// on every host.
    pub fn mounts(&self, cgroup_path: &str) -> Vec<Value> {
        let mut mounts = vec![json!({
            "destination": DESTINATION,
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "noexec", "nodev", "mode=755"],
        })];
        let relative = cgroup_path.trim_start_matches('/');
        for mount_point in &self.mount_points {
            let Some(name) = mount_point.file_name().and_then(|n| n.to_str()) else { continue };
            let source = mount_point.join(relative);
            let aliases = if name.contains(',') { name.split(',').collect() } else { Vec::new() };
            for destination in std::iter::once(name).chain(aliases) {
                mounts.push(json!({
                    "destination": Path::new(DESTINATION).join(destination),
                    "type": "bind",
                    "source": source,
                    "options": ["bind", "ro", "nosuid", "noexec", "nodev"],
                }));
            }
        }
        mounts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destinations_and_sources(mounts: &[Value]) -> Vec<(String, String)> {
        mounts[1..]
            .iter()
            .map(|m| (m["destination"].as_str().unwrap().to_owned(), m["source"].as_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn each_hierarchy_with_a_container_cgroup_is_bound_read_only_over_a_tmpfs() {
        // This project's hybrid host: one directory per controller, plus
        // the named systemd hierarchy that holds no container cgroup.
        let host = ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd"]
            .map(|c| PathBuf::from("/sys/fs/cgroup").join(c));
        let view = V1Hierarchies::from_mount_points(host).unwrap();
        let mounts = view.mounts("/flotilla/web-0");
        assert_eq!(mounts[0]["type"], "tmpfs");
        assert_eq!(mounts[0]["destination"], DESTINATION);
        let binds = destinations_and_sources(&mounts);
        assert_eq!(binds.len(), 8, "every controller hierarchy, not systemd: {binds:?}");
        assert!(binds.contains(&("/sys/fs/cgroup/memory".into(), "/sys/fs/cgroup/memory/flotilla/web-0".into())));
        assert!(binds.iter().all(|(d, _)| d != "/sys/fs/cgroup/systemd"));
        for mount in &mounts[1..] {
            assert_eq!(mount["type"], "bind");
            assert!(mount["options"].as_array().unwrap().contains(&json!("ro")), "{mount}");
        }
    }

    #[test]
    fn co_mounted_controllers_are_reachable_under_each_name() {
        // systemd's usual layout: cpu and cpuacct share one hierarchy.
        let host =
            ["cpu,cpuacct", "memory", "net_cls,net_prio", "rdma"].map(|c| PathBuf::from("/sys/fs/cgroup").join(c));
        let binds = destinations_and_sources(&V1Hierarchies::from_mount_points(host).unwrap().mounts("/f/x"));
        let source = "/sys/fs/cgroup/cpu,cpuacct/f/x".to_owned();
        for name in ["cpu,cpuacct", "cpu", "cpuacct"] {
            assert!(binds.contains(&(format!("/sys/fs/cgroup/{name}"), source.clone())), "{name}: {binds:?}");
        }
        assert!(binds.iter().any(|(d, _)| d == "/sys/fs/cgroup/net_prio"));
        assert!(binds.iter().all(|(d, _)| !d.ends_with("rdma")), "libcgroups makes no cgroup there: {binds:?}");
        assert_eq!(binds.len(), 7);
    }

    #[test]
    fn without_controller_hierarchies_there_is_no_v1_view() {
        assert_eq!(V1Hierarchies::from_mount_points([PathBuf::from("/sys/fs/cgroup/systemd")]), None);
        assert_eq!(V1Hierarchies::from_mount_points([]), None);
    }
}
