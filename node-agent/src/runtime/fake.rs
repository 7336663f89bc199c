//! A recording runtime for reconciler tests (youki's `syscall/test.rs` idea):
//! containers are entries in a map, processes "run" until told to exit.

use std::collections::BTreeMap;

use super::{ContainerConfig, ContainerState, ExitInfo, Runtime, RuntimeError, Status};

/// The fake.
#[derive(Debug, Default)]
pub struct FakeRuntime {
    /// Containers by id.
    pub containers: BTreeMap<String, (ContainerConfig, ContainerState)>,
    /// Every call, as `op id`.
    pub calls: Vec<String>,
    /// Exit code exec returns per container (default 0).
    pub exec_results: BTreeMap<String, Option<i32>>,
    /// Containers that ignore SIGTERM (like a PID 1 without a handler).
    pub ignore_sigterm: std::collections::BTreeSet<String>,
    /// Containers whose create fails, with libcontainer's reason.
    pub fail_create: BTreeMap<String, String>,
    next_pid: i32,
}

impl FakeRuntime {
    /// Makes a running container exit.
    pub fn exit(&mut self, id: &str, exit: ExitInfo) {
        if let Some((_, state)) = self.containers.get_mut(id) {
            state.status = Status::Stopped;
            state.pid = None;
            state.exit = Some(exit);
        }
    }
}

impl Runtime for FakeRuntime {
    fn create(&mut self, config: &ContainerConfig) -> Result<(), RuntimeError> {
        self.calls.push(format!("create {}", config.id));
        if let Some(reason) = self.fail_create.get(&config.id) {
            let (operation, id, reason) = ("create".into(), config.id.clone(), reason.clone());
            return Err(RuntimeError::Container { operation, id, reason });
        }
        if self.containers.contains_key(&config.id) {
            return Err(RuntimeError::AlreadyExists(config.id.clone()));
        }
        let state = ContainerState { id: config.id.clone(), status: Status::Created, pid: None, exit: None };
        self.containers.insert(config.id.clone(), (config.clone(), state));
        Ok(())
    }

    fn start(&mut self, id: &str) -> Result<i32, RuntimeError> {
        self.calls.push(format!("start {id}"));
        self.next_pid += 1;
        let pid = 1000 + self.next_pid;
        let (_, state) = self.containers.get_mut(id).ok_or_else(|| RuntimeError::NotFound(id.to_owned()))?;
        state.status = Status::Running;
        state.pid = Some(pid);
        Ok(pid)
    }

    fn kill(&mut self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        self.calls.push(format!("kill {id} {signal}"));
        let (_, state) = self.containers.get_mut(id).ok_or_else(|| RuntimeError::NotFound(id.to_owned()))?;
        if state.status == Status::Running && !(signal == 15 && self.ignore_sigterm.contains(id)) {
            state.status = Status::Stopped;
            state.pid = None;
            state.exit = Some(ExitInfo { code: Some(128 + signal), signal: Some(signal), oom_killed: false });
        }
        Ok(())
    }

    fn delete(&mut self, id: &str, _force: bool) -> Result<(), RuntimeError> {
        self.calls.push(format!("delete {id}"));
        self.containers.remove(id).map(|_| ()).ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }

    fn state(&mut self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        Ok(self.containers.get(id).map(|(_, s)| s.clone()))
    }

    fn list(&mut self) -> Result<Vec<ContainerState>, RuntimeError> {
        Ok(self.containers.values().map(|(_, s)| s.clone()).collect())
    }

    fn exec(&mut self, id: &str, args: &[String], _timeout_ms: u64) -> Result<Option<i32>, RuntimeError> {
        self.calls.push(format!("exec {id} {}", args.join(" ")));
        Ok(self.exec_results.get(id).copied().unwrap_or(Some(0)))
    }
}
