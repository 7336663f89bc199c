//! A **simulated** runtime, for the fleet simulator only
//! (`flotilla-bench fleet`): it runs no process. Everything else a
//! simulated device does is the real agent's ([`crate::agent::Agent`],
//! [`crate::run::Cycle`], [`crate::channel::Channel`]); this module stands
//! in for libcontainer and the cgroups so that thousands of devices fit in
//! one process. Never used by `flotilla-agent run`.
//!
//! A start blocks for the configured delay, as a real start blocks while
//! libcontainer sets the container up; the container then counts as
//! running until it is killed. Usage is plausible and stable per replica
//! (derived from its id) with a little noise.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{ContainerConfig, ContainerState, ExitInfo, Runtime, RuntimeError, Status};
use crate::telemetry::{Usage, UsageSource};

/// The simulated runtime of one device.
#[derive(Debug)]
pub struct SimulatedRuntime {
    containers: BTreeMap<String, ContainerState>,
    start_delay: Duration,
    next_pid: i32,
    starts: u64,
}

impl SimulatedRuntime {
    /// A runtime whose starts take `start_delay`.
    pub fn new(start_delay: Duration) -> Self {
        SimulatedRuntime { containers: BTreeMap::new(), start_delay, next_pid: 1, starts: 0 }
    }

    /// How many containers were started so far (restarts included).
    pub fn starts(&self) -> u64 {
        self.starts
    }

    /// The ids of the running containers.
    pub fn running(&self) -> impl Iterator<Item = &str> {
        self.containers.values().filter(|s| s.status == Status::Running).map(|s| s.id.as_str())
    }
}

impl Runtime for SimulatedRuntime {
    fn create(&mut self, config: &ContainerConfig) -> Result<(), RuntimeError> {
        if self.containers.contains_key(&config.id) {
            return Err(RuntimeError::AlreadyExists(config.id.clone()));
        }
        let state = ContainerState { id: config.id.clone(), status: Status::Created, pid: None, exit: None };
        self.containers.insert(config.id.clone(), state);
        Ok(())
    }

    fn start(&mut self, id: &str) -> Result<i32, RuntimeError> {
        let state = self.containers.get_mut(id).ok_or_else(|| RuntimeError::NotFound(id.to_owned()))?;
        if state.status != Status::Created {
            return Err(RuntimeError::Container {
                operation: "start".into(),
                id: id.to_owned(),
                reason: "not in the created state".into(),
            });
        }
        std::thread::sleep(self.start_delay);
        self.next_pid += 1;
        self.starts += 1;
        state.status = Status::Running;
        state.pid = Some(self.next_pid);
        Ok(self.next_pid)
    }

    fn kill(&mut self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let state = self.containers.get_mut(id).ok_or_else(|| RuntimeError::NotFound(id.to_owned()))?;
        if state.status == Status::Running {
            state.status = Status::Stopped;
            state.pid = None;
            state.exit = Some(ExitInfo { code: Some(128 + signal), signal: Some(signal), oom_killed: false });
        }
        Ok(())
    }

    fn delete(&mut self, id: &str, _force: bool) -> Result<(), RuntimeError> {
        self.containers.remove(id).map(drop).ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }

    fn state(&mut self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        Ok(self.containers.get(id).cloned())
    }

    fn list(&mut self) -> Result<Vec<ContainerState>, RuntimeError> {
        Ok(self.containers.values().cloned().collect())
    }

    fn exec(&mut self, id: &str, _args: &[String], _timeout_ms: u64) -> Result<Option<i32>, RuntimeError> {
        // Exec probes pass while the container runs.
        match self.containers.get(id).map(|s| s.status) {
            Some(Status::Running) => Ok(Some(0)),
            Some(_) => Ok(Some(1)),
            None => Err(RuntimeError::NotFound(id.to_owned())),
        }
    }
}

/// Simulated usage: each replica keeps a stable share of CPU (5-60
/// millicores) and memory (4-48 MiB) derived from its id, varied by up to
/// a tenth per sample; the device adds a base for its system and agent.
#[derive(Debug, Default)]
pub struct SimulatedUsage {
    sampled: BTreeMap<String, Usage>,
    samples: u64,
}

fn id_hash(id: &str) -> u64 {
    // FNV-1a: stable across runs and builds, unlike the std hasher.
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl UsageSource for SimulatedUsage {
    fn sample(&mut self, container_id: &str) -> Option<Usage> {
        self.samples += 1;
        let h = id_hash(container_id);
        let noise = id_hash(&format!("{container_id}/{}", self.samples)) % 21; // 0..=20 -> -10%..+10%
        let scale = |base: u64| base * (90 + noise) / 100;
        let usage = Usage { cpu_millis: scale(5 + h % 56) as u32, memory_bytes: scale((4 + (h >> 8) % 45) << 20) };
        self.sampled.insert(container_id.to_owned(), usage);
        Some(usage)
    }

    fn forget(&mut self, container_id: &str) {
        self.sampled.remove(container_id);
    }

    fn node(&mut self) -> Usage {
        let (cpu, memory) =
            self.sampled.values().fold((30u32, 96u64 << 20), |(c, m), u| (c + u.cpu_millis, m + u.memory_bytes));
        Usage { cpu_millis: cpu, memory_bytes: memory }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: &str) -> ContainerConfig {
        ContainerConfig {
            id: id.into(),
            hostname: id.into(),
            rootfs: "/".into(),
            args: vec!["sleep".into()],
            env: Vec::new(),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            memory_limit_bytes: None,
            cpu_limit_millis: None,
            cpu_request_millis: None,
            pids_limit: None,
            read_only_rootfs: false,
            mounts: Vec::new(),
            devices: Vec::new(),
            log_path: "/dev/null".into(),
            seccomp: false,
        }
    }

    #[test]
    fn a_start_takes_the_delay_and_the_container_runs_until_killed() {
        let mut runtime = SimulatedRuntime::new(Duration::from_millis(20));
        runtime.create(&config("a")).unwrap();
        assert_eq!(runtime.create(&config("a")), Err(RuntimeError::AlreadyExists("a".into())));
        let before = std::time::Instant::now();
        runtime.start("a").unwrap();
        assert!(before.elapsed() >= Duration::from_millis(20));
        assert!(runtime.start("a").is_err(), "a running container is not started twice");
        assert_eq!(runtime.running().collect::<Vec<_>>(), ["a"]);
        assert_eq!(runtime.exec("a", &[], 0), Ok(Some(0)));
        runtime.kill("a", 15).unwrap();
        assert_eq!(runtime.state("a").unwrap().unwrap().status, Status::Stopped);
        runtime.delete("a", true).unwrap();
        assert!(runtime.list().unwrap().is_empty());
        assert_eq!(runtime.starts(), 1);
    }

    #[test]
    fn usage_is_stable_per_replica_within_a_tenth() {
        let mut usage = SimulatedUsage::default();
        let first = usage.sample("web-1").unwrap();
        for _ in 0..50 {
            let next = usage.sample("web-1").unwrap();
            let ratio = next.memory_bytes as f64 / first.memory_bytes as f64;
            assert!((0.8..1.25).contains(&ratio), "{ratio}");
        }
        assert!(usage.node().memory_bytes > first.memory_bytes);
        usage.forget("web-1");
        assert_eq!(usage.node().memory_bytes, 96 << 20);
    }
}
