//! Usage for heartbeats: per replica from its cgroup (cgroups-rs; v1, v2
//! and hybrid hosts), per node from sysinfo. Library types stay here; the
//! rest of the agent sees plain numbers.

use std::collections::HashMap;
use std::time::Instant;

use cgroups_rs::fs::Cgroup;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::memory::MemController;

/// One replica's usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU over the last sampling interval, in millicores.
    pub cpu_millis: u32,
    /// Memory working set (usage minus inactive file cache), in bytes.
    pub memory_bytes: u64,
}

/// Where heartbeats take usage from: the cgroups and the system
/// ([`UsageSampler`]), or the fleet simulator's simulated devices.
pub trait UsageSource: Send {
    /// The usage of a running container; CPU may be 0 on the first sample.
    fn sample(&mut self, container_id: &str) -> Option<Usage>;
    /// Forgets a container that no longer runs.
    fn forget(&mut self, container_id: &str);
    /// The whole device: CPU in millicores since the last call, memory used.
    fn node(&mut self) -> Usage;
}

/// Samples cgroup counters and turns CPU time deltas into millicores.
pub struct UsageSampler {
    last_cpu: HashMap<String, (u64, Instant)>,
    /// `None` where sysinfo cannot read the system (then node usage is 0).
    system: Option<sysinfo::System>,
}

impl Default for UsageSampler {
    fn default() -> Self {
        UsageSampler { last_cpu: HashMap::new(), system: sysinfo::System::new().ok() }
    }
}

/// Total CPU time of a cgroup in nanoseconds (v1 cpuacct.usage, v2 cpu.stat usage_usec).
fn cpu_time_ns(cgroup: &Cgroup) -> Option<u64> {
    if cgroup.v2() {
        let stat = cgroup.controller_of::<CpuController>()?.cpu().stat;
        let usec: u64 = stat.lines().find_map(|l| l.strip_prefix("usage_usec "))?.trim().parse().ok()?;
        return Some(usec * 1000);
    }
    Some(cgroup.controller_of::<CpuAcctController>()?.cpuacct().usage)
}

fn working_set(cgroup: &Cgroup) -> Option<u64> {
    let memory = cgroup.controller_of::<MemController>()?.memory_stat();
    let inactive = if cgroup.v2() { memory.stat.inactive_file } else { memory.stat.total_inactive_file };
    Some(memory.usage_in_bytes.saturating_sub(inactive))
}

impl UsageSource for UsageSampler {
    fn sample(&mut self, container_id: &str) -> Option<Usage> {
        UsageSampler::sample(self, container_id)
    }

    fn forget(&mut self, container_id: &str) {
        UsageSampler::forget(self, container_id)
    }

    fn node(&mut self) -> Usage {
        UsageSampler::node(self)
    }
}

impl UsageSampler {
    /// The usage of a container's cgroup; CPU is 0 on the first sample.
    pub fn sample(&mut self, container_id: &str) -> Option<Usage> {
        let path = crate::runtime::cgroup_path(container_id);
        let cgroup = Cgroup::load(cgroups_rs::fs::hierarchies::auto(), path.trim_start_matches('/'));
        let memory_bytes = working_set(&cgroup)?;
        let now = Instant::now();
        let cpu_millis = match cpu_time_ns(&cgroup) {
            Some(total) => {
                let previous = self.last_cpu.insert(container_id.to_owned(), (total, now));
                match previous {
                    Some((before, at)) if total >= before => {
                        let wall_ns = now.duration_since(at).as_nanos().max(1) as u64;
                        ((total - before) as u128 * 1000 / wall_ns as u128) as u32
                    }
                    _ => 0,
                }
            }
            None => 0,
        };
        Some(Usage { cpu_millis, memory_bytes })
    }

    /// Forgets a removed container.
    pub fn forget(&mut self, container_id: &str) {
        self.last_cpu.remove(container_id);
    }

    /// The whole device: CPU in millicores since the last call, memory used.
    pub fn node(&mut self) -> Usage {
        let Some(system) = &mut self.system else { return Usage::default() };
        system.refresh_cpu_usage();
        system.refresh_memory();
        let cpus = system.cpus().len().max(1) as f32;
        let cpu_millis = (system.global_cpu_usage() / 100.0 * cpus * 1000.0) as u32;
        Usage { cpu_millis, memory_bytes: system.used_memory() }
    }
}
