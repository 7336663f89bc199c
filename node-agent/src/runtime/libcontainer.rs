//! [`Runtime`] on youki's libcontainer. Runs only inside the helper process
//! (see the module docs of [`super`]): it is the parent of every container
//! init it starts and reaps them, so it knows their exit statuses.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::{ContainerConfig, ContainerState, ExitInfo, Runtime, RuntimeError, Status, bundle};

/// The real runtime.
pub struct LibcontainerRuntime {
    /// libcontainer's state directory (one subdirectory per container).
    state_dir: PathBuf,
    /// Generated bundles (config.json per container).
    bundles_dir: PathBuf,
    /// Exits reaped, by container id, until the container is deleted.
    exits: HashMap<String, ExitInfo>,
    /// Container id of each init pid this process started.
    children: HashMap<i32, String>,
}

fn container_err(operation: &str, id: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Container { operation: operation.to_owned(), id: id.to_owned(), reason: e.to_string() }
}

/// The kernel's OOM-kill count of a container's cgroup (v1 `memory.oom_control`
/// or v2 `memory.events`), 0 when unreadable.
pub fn oom_kills(id: &str) -> u64 {
    let path = super::cgroup_path(id);
    let candidates = [
        format!("/sys/fs/cgroup/memory{path}/memory.oom_control"),
        format!("/sys/fs/cgroup{path}/memory.events"),
        format!("/sys/fs/cgroup/unified{path}/memory.events"),
    ];
    for file in candidates {
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Some(count) =
                text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok())
        {
            return count;
        }
    }
    0
}

impl LibcontainerRuntime {
    /// A runtime keeping its state under `state_dir` and bundles under `bundles_dir`.
    pub fn new(state_dir: &Path, bundles_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(state_dir)?;
        std::fs::create_dir_all(bundles_dir)?;
        Ok(LibcontainerRuntime {
            state_dir: state_dir.to_owned(),
            bundles_dir: bundles_dir.to_owned(),
            exits: HashMap::new(),
            children: HashMap::new(),
        })
    }

    /// Collects the exit status of every container init that ended.
    pub fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.record_exit(pid.as_raw(), Some(code), None),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    self.record_exit(pid.as_raw(), Some(128 + signal as i32), Some(signal as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    }

    fn record_exit(&mut self, pid: i32, code: Option<i32>, signal: Option<i32>) {
        let Some(id) = self.children.remove(&pid) else { return };
        // Read the OOM count now: the cgroup goes with the container.
        let oom_killed = signal == Some(nix::sys::signal::Signal::SIGKILL as i32) && oom_kills(&id) > 0;
        tracing::info!(container = %id, pid, ?code, ?signal, oom_killed, "container exited");
        self.exits.insert(id, ExitInfo { code, signal, oom_killed });
    }

    fn load(&self, id: &str) -> Result<Container, RuntimeError> {
        let root = self.state_dir.join(id);
        if !root.join("state.json").exists() {
            return Err(RuntimeError::NotFound(id.to_owned()));
        }
        Container::load(root).map_err(|e| container_err("loading", id, e))
    }

    fn state_of(&self, container: &Container) -> ContainerState {
        let id = container.id().to_owned();
        let status = match container.status() {
            ContainerStatus::Creating | ContainerStatus::Created => Status::Created,
            ContainerStatus::Running | ContainerStatus::Paused => Status::Running,
            ContainerStatus::Stopped => Status::Stopped,
        };
        let exit = match status {
            Status::Stopped => Some(self.exits.get(&id).copied().unwrap_or(ExitInfo {
                code: None,
                signal: None,
                oom_killed: oom_kills(&id) > 0,
            })),
            _ => None,
        };
        let pid = if status == Status::Stopped { None } else { container.pid().map(|p| p.as_raw()) };
        ContainerState { id, status, pid, exit }
    }
}

impl Runtime for LibcontainerRuntime {
    fn create(&mut self, config: &ContainerConfig) -> Result<(), RuntimeError> {
        self.reap();
        let id = &config.id;
        if self.state_dir.join(id).exists() {
            return Err(RuntimeError::AlreadyExists(id.clone()));
        }
        let bundle_dir = self.bundles_dir.join(id);
        bundle::write(&bundle_dir, config)?;
        if let Some(dir) = config.log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| container_err("creating the log directory for", id, e))?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.log_path)
            .map_err(|e| container_err("opening the log of", id, e))?;
        let log2 = log.try_clone().map_err(|e| container_err("opening the log of", id, e))?;
        let null = std::fs::File::open("/dev/null").map_err(|e| container_err("opening /dev/null for", id, e))?;
        ContainerBuilder::new(id.clone(), SyscallType::default())
            .with_root_path(&self.state_dir)
            .and_then(|b| b.validate_id())
            .map_err(|e| container_err("creating", id, e))?
            .with_stdin(null)
            .with_stdout(log)
            .with_stderr(log2)
            .as_init(&bundle_dir)
            .with_systemd(false)
            .with_detach(false)
            .build()
            .map_err(|e| container_err("creating", id, e))?;
        Ok(())
    }

    fn start(&mut self, id: &str) -> Result<i32, RuntimeError> {
        self.reap();
        let mut container = self.load(id)?;
        container.start().map_err(|e| container_err("starting", id, e))?;
        let pid = container.pid().map(|p| p.as_raw()).ok_or_else(|| container_err("starting", id, "no pid"))?;
        self.children.insert(pid, id.to_owned());
        self.exits.remove(id);
        Ok(pid)
    }

    fn kill(&mut self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        self.reap();
        let mut container = self.load(id)?;
        let signal = nix::sys::signal::Signal::try_from(signal).map_err(|e| container_err("signalling", id, e))?;
        container.kill(signal, false).map_err(|e| container_err("signalling", id, e))
    }

    fn delete(&mut self, id: &str, force: bool) -> Result<(), RuntimeError> {
        self.reap();
        let mut container = self.load(id)?;
        if force && container.status() == ContainerStatus::Running {
            let _ = container.kill(nix::sys::signal::Signal::SIGKILL, true);
            // Give the kernel a moment to end it so delete sees it stopped.
            for _ in 0..100 {
                self.reap();
                if container.refresh_status().is_ok() && container.status() == ContainerStatus::Stopped {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        container.delete(force).map_err(|e| container_err("deleting", id, e))?;
        self.exits.remove(id);
        let _ = std::fs::remove_dir_all(self.bundles_dir.join(id));
        Ok(())
    }

    fn state(&mut self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        // Load, then reap: a process that ends in between is then both seen
        // stopped and has its exit status recorded.
        match self.load(id) {
            Ok(container) => {
                self.reap();
                Ok(Some(self.state_of(&container)))
            }
            Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn exec(&mut self, id: &str, args: &[String], timeout_ms: u64) -> Result<Option<i32>, RuntimeError> {
        let container = self.load(id)?;
        if container.status() != ContainerStatus::Running {
            return Err(container_err("exec in", id, "the container is not running"));
        }
        let null = || std::fs::File::open("/dev/null").map_err(|e| container_err("exec in", id, e));
        let pid = ContainerBuilder::new(id.to_owned(), SyscallType::default())
            .with_root_path(&self.state_dir)
            .map_err(|e| container_err("exec in", id, e))?
            .with_stdin(null()?)
            .with_stdout(null()?)
            .with_stderr(null()?)
            .as_tenant()
            .with_container_args(args.to_vec())
            .with_detach(false)
            .build()
            .map_err(|e| container_err("exec in", id, e))?;
        // Wait for it ourselves, with the probe's timeout.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
        loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(Some(code)),
                Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(Some(128 + signal as i32)),
                Ok(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Ok(_) => {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = waitpid(pid, None);
                    return Ok(None);
                }
                Err(e) => return Err(container_err("waiting for exec in", id, e)),
            }
        }
    }

    fn list(&mut self) -> Result<Vec<ContainerState>, RuntimeError> {
        let entries = std::fs::read_dir(&self.state_dir).map_err(|e| RuntimeError::Helper(e.to_string()))?;
        let containers: Vec<Container> = entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
            .filter_map(|id| self.load(&id).ok())
            .collect();
        self.reap(); // after loading, as in `state`
        let mut states: Vec<ContainerState> = containers.iter().map(|c| self.state_of(c)).collect();
        states.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(states)
    }
}
