//! The container runtime, behind one trait.
//!
//! [`Runtime`] is synchronous, like libcontainer. The real implementation
//! ([`libcontainer::LibcontainerRuntime`]) must not run inside the async
//! agent: libcontainer clones the calling process and runs Rust code before
//! exec, and from a multi-threaded tokio process a few starts in fifty
//! deadlocked on a futex the child inherited (youki #3011, #3027). So it
//! runs in a single-threaded helper process ([`helper`]), started by
//! exec'ing the agent binary itself, and the agent talks to it through
//! [`helper::HelperRuntime`], which implements the same trait over a pipe.
//! [`fake::FakeRuntime`] records calls for reconciler tests.

pub mod bundle;
pub mod cgroup_view;
pub mod fake;
pub mod helper;
#[cfg(target_pointer_width = "64")]
pub mod libcontainer;
pub mod simulated;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A bind mount or tmpfs in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Host path (bind) or empty (tmpfs).
    pub source: PathBuf,
    /// Path inside the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// A tmpfs (emptyDir with medium Memory) rather than a bind mount.
    pub tmpfs: bool,
}

/// A host device node made available in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// Path on the host, e.g. `/dev/ttyUSB0`.
    pub host_path: String,
    /// Path in the container.
    pub container_path: String,
}

/// Everything needed to create one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Container id (also the name of its cgroup leaf).
    pub id: String,
    /// Hostname inside the container (the replica name).
    pub hostname: String,
    /// The prepared root filesystem.
    pub rootfs: PathBuf,
    /// The full command line (entrypoint + args).
    pub args: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// User and group ids.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Hard memory limit in bytes (`limits.memory`).
    pub memory_limit_bytes: Option<u64>,
    /// CPU limit in millicores (`limits.cpu`) -> CFS quota.
    pub cpu_limit_millis: Option<u64>,
    /// CPU request in millicores (`requests.cpu`) -> shares / weight.
    pub cpu_request_millis: Option<u64>,
    /// Maximum number of processes.
    pub pids_limit: Option<i64>,
    /// Root filesystem mounted read-only.
    pub read_only_rootfs: bool,
    /// Volumes.
    pub mounts: Vec<MountSpec>,
    /// Device nodes.
    pub devices: Vec<DeviceSpec>,
    /// File receiving stdout and stderr (appended).
    pub log_path: PathBuf,
    /// Apply the default seccomp profile ([`bundle::default_seccomp`]).
    pub seccomp: bool,
}

/// Whether this build can apply seccomp profiles. When it cannot, workloads
/// asking for one are refused: libcontainer would silently ignore it.
pub const SECCOMP_AVAILABLE: bool = cfg!(all(feature = "seccomp", target_pointer_width = "64"));

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Created, not started.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended.
    Stopped,
}

/// How a container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, or 128 + signal number when killed by a signal (shell
    /// convention). `None` when the process ended while no helper was its
    /// parent (the agent was restarted), so its status could not be read.
    pub code: Option<i32>,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it (the cgroup's oom_kill count rose).
    pub oom_killed: bool,
}

/// What the runtime knows about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Container id.
    pub id: String,
    /// Status.
    pub status: Status,
    /// Host pid of its init process while it has one.
    pub pid: Option<i32>,
    /// How it ended, once stopped and known.
    pub exit: Option<ExitInfo>,
}

/// Why a runtime call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RuntimeError {
    /// No container with this id.
    #[error("container {0} not found")]
    NotFound(String),
    /// A container with this id exists.
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// Writing the bundle failed (disk full, permissions).
    #[error("preparing the bundle of {id}: {reason}")]
    Bundle {
        /// Container.
        id: String,
        /// Why.
        reason: String,
    },
    /// libcontainer refused or failed.
    #[error("{operation} {id}: {reason}")]
    Container {
        /// What was attempted.
        operation: String,
        /// Container.
        id: String,
        /// libcontainer's error.
        reason: String,
    },
    /// The helper process is gone and could not be restarted.
    #[error("runtime helper: {0}")]
    Helper(String),
}

/// A container runtime (youki's seams: one trait, real and fake).
pub trait Runtime {
    /// Writes the bundle and creates the container (not started).
    fn create(&mut self, config: &ContainerConfig) -> Result<(), RuntimeError>;
    /// Starts a created container; returns its host pid.
    fn start(&mut self, id: &str) -> Result<i32, RuntimeError>;
    /// Sends a signal to the container's init process.
    fn kill(&mut self, id: &str, signal: i32) -> Result<(), RuntimeError>;
    /// Deletes a stopped container (force: kill it first) and its bundle.
    fn delete(&mut self, id: &str, force: bool) -> Result<(), RuntimeError>;
    /// The state of one container, `None` if unknown.
    fn state(&mut self, id: &str) -> Result<Option<ContainerState>, RuntimeError>;
    /// Every container in the state directory (re-adoption after a restart).
    fn list(&mut self) -> Result<Vec<ContainerState>, RuntimeError>;
    /// Runs a command inside a running container's namespaces and cgroup
    /// (exec probes). Returns its exit code, or `None` if it was killed at
    /// the timeout.
    fn exec(&mut self, id: &str, args: &[String], timeout_ms: u64) -> Result<Option<i32>, RuntimeError>;
}

/// Where cgroups live by default: the agent's containers are grouped under
/// one parent.
pub const CGROUP_PARENT: &str = "flotilla";

/// Environment variable that hands the parent to the runtime helper.
pub const CGROUP_PARENT_ENV: &str = "FLOTILLA_CGROUP_PARENT";

static CGROUP_PARENT_IN_USE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets this process's cgroup parent (before any container is touched).
/// `flotilla-agent run` uses `flotilla/<node>`, so that agents sharing one
/// kernel (the demo's simulated devices, tests) never share a cgroup even
/// when the same replica briefly exists on two of them.
pub fn set_cgroup_parent(parent: &str) {
    let _ = CGROUP_PARENT_IN_USE.set(parent.trim_matches('/').to_owned());
}

/// The cgroup parent in use: set by [`set_cgroup_parent`], else inherited
/// from the agent through [`CGROUP_PARENT_ENV`], else [`CGROUP_PARENT`].
pub fn cgroup_parent() -> &'static str {
    CGROUP_PARENT_IN_USE.get_or_init(|| {
        std::env::var(CGROUP_PARENT_ENV)
            .ok()
            .filter(|p| !p.is_empty() && !p.contains(".."))
            .unwrap_or_else(|| CGROUP_PARENT.to_owned())
    })
}

/// A container's cgroup path relative to each hierarchy's root.
pub fn cgroup_path(id: &str) -> String {
    format!("/{}/{id}", cgroup_parent())
}
