//! Real containers through the runtime helper and libcontainer: namespaces,
//! cgroups, exit codes, OOM kills, helper restarts and re-adoption.
//!
//! These need root and cgroups. CI runs as root, so they always run there;
//! on a developer machine without root they fail with a message saying so
//! (set FLOTILLA_SKIP_CONTAINER_TESTS=1 to skip them loudly instead).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_agent::runtime::helper::HelperRuntime;
use flotilla_agent::runtime::{ContainerConfig, ContainerState, Runtime, Status};

fn can_run_containers() -> bool {
    if std::env::var_os("FLOTILLA_SKIP_CONTAINER_TESTS").is_some() {
        eprintln!("SKIPPING real-container tests: FLOTILLA_SKIP_CONTAINER_TESTS is set");
        return false;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "real-container tests need root (namespaces, cgroups); run them as root or set FLOTILLA_SKIP_CONTAINER_TESTS=1"
    );
    assert!(Path::new("/bin/busybox").is_file(), "/bin/busybox missing: run scripts/setup (apt busybox-static)");
    true
}

/// A busybox rootfs: the static binary and the applets the tests use.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "echo", "cat", "dd", "hostname", "ls", "true", "grep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    rootfs
}

struct Fixture {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    runtime: HelperRuntime,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = busybox_rootfs(dir.path());
        let runtime = Self::runtime(dir.path());
        Fixture { dir, rootfs, runtime }
    }

    fn runtime(dir: &Path) -> HelperRuntime {
        HelperRuntime::new(Path::new(env!("CARGO_BIN_EXE_flotilla-agent")), &dir.join("state"), &dir.join("bundles"))
    }

    fn config(&self, name: &str, script: &str) -> ContainerConfig {
        // Unique ids: tests run in parallel and share the cgroup parent.
        let id = format!("test-{name}-{}", std::process::id());
        ContainerConfig {
            id: id.clone(),
            hostname: name.into(),
            rootfs: self.rootfs.clone(),
            args: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec!["GREETING=hello".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            memory_limit_bytes: None,
            cpu_limit_millis: None,
            cpu_request_millis: None,
            pids_limit: Some(32),
            read_only_rootfs: false,
            mounts: vec![],
            devices: vec![],
            log_path: self.dir.path().join("logs").join(format!("{id}.log")),
            seccomp: true,
        }
    }

    fn run(&mut self, config: &ContainerConfig) -> i32 {
        self.runtime.create(config).unwrap();
        self.runtime.start(&config.id).unwrap()
    }

    fn wait_stopped(&mut self, id: &str) -> ContainerState {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.runtime.state(id).unwrap().expect("container exists");
            if state.status == Status::Stopped {
                return state;
            }
            assert!(Instant::now() < deadline, "container {id} still {:?} after 20 s", state.status);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_command_runs_in_its_own_namespaces_and_its_exit_code_and_output_are_kept() {
    if !can_run_containers() {
        return;
    }
    let mut f = Fixture::new();
    let config = f.config("exit", "echo $GREETING from $(hostname); echo pid $$; exit 7");
    f.run(&config);
    let state = f.wait_stopped(&config.id);
    let exit = state.exit.expect("exit known");
    assert_eq!((exit.code, exit.signal, exit.oom_killed), (Some(7), None, false));
    let log = std::fs::read_to_string(&config.log_path).unwrap();
    assert!(log.contains("hello from exit"), "hostname is the replica name: {log}");
    assert!(log.contains("pid 1"), "own pid namespace: {log}");
    f.runtime.delete(&config.id, false).unwrap();
    assert_eq!(f.runtime.state(&config.id).unwrap(), None);
}

fn memory_cgroup_file(id: &str, v1_name: &str, v2_name: &str) -> Option<String> {
    let v1 = format!("/sys/fs/cgroup/memory/flotilla/{id}/{v1_name}");
    let v2 = format!("/sys/fs/cgroup/flotilla/{id}/{v2_name}");
    std::fs::read_to_string(v1).or_else(|_| std::fs::read_to_string(v2)).ok()
}

#[test]
fn the_memory_limit_is_in_the_cgroup_and_an_allocation_past_it_is_an_oom_kill() {
    if !can_run_containers() {
        return;
    }
    let mut f = Fixture::new();
    let mut config = f.config("limit", "sleep 30");
    config.memory_limit_bytes = Some(32 << 20);
    f.run(&config);
    let limit = memory_cgroup_file(&config.id, "memory.limit_in_bytes", "memory.max").expect("memory cgroup file");
    assert_eq!(limit.trim(), (32u64 << 20).to_string());
    f.runtime.delete(&config.id, true).unwrap();

    // dd's 128 MiB block buffer is touched as it reads: past 32 MiB the
    // kernel's OOM killer ends it.
    let mut hog = f.config("oom", "dd if=/dev/zero of=/dev/null bs=128M count=4");
    hog.memory_limit_bytes = Some(32 << 20);
    f.run(&hog);
    let state = f.wait_stopped(&hog.id);
    let exit = state.exit.expect("exit known");
    assert!(exit.oom_killed, "expected an OOM kill, got {exit:?}");
    assert_eq!(exit.signal, Some(9));
    f.runtime.delete(&hog.id, false).unwrap();
}

#[test]
fn a_killed_helper_is_replaced_and_running_containers_are_re_adopted_untouched() {
    if !can_run_containers() {
        return;
    }
    let mut f = Fixture::new();
    let config = f.config("adopt", "sleep 60");
    let pid = f.run(&config);
    let helper = f.runtime.helper_pid().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(helper as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let state = f.runtime.state(&config.id).unwrap().unwrap();
    assert_eq!(state.status, Status::Running);
    assert_eq!(state.pid, Some(pid), "the same process, not a restart");
    assert_eq!(f.runtime.starts, 2, "a new helper was started");

    // A whole new agent (new runtime object, new helper) finds it too.
    let mut again = Fixture::runtime(f.dir.path());
    let listed = again.list().unwrap();
    let found = listed.iter().find(|s| s.id == config.id).expect("listed after restart");
    assert_eq!((found.status, found.pid), (Status::Running, Some(pid)));
    again.delete(&config.id, true).unwrap();
    assert!(again.state(&config.id).unwrap().is_none());
}

#[test]
fn kill_delivers_signals_and_the_way_it_ended_is_reported() {
    if !can_run_containers() {
        return;
    }
    let mut f = Fixture::new();
    // PID 1 of a namespace only gets signals it handles: a workload that
    // traps SIGTERM exits with its own code...
    let polite = f.config("term", "trap 'exit 143' TERM; sleep 60 & wait");
    f.run(&polite);
    std::thread::sleep(Duration::from_millis(200));
    f.runtime.kill(&polite.id, 15).unwrap();
    let exit = f.wait_stopped(&polite.id).exit.unwrap();
    assert_eq!((exit.code, exit.signal, exit.oom_killed), (Some(143), None, false));
    f.runtime.delete(&polite.id, false).unwrap();
    // ...and SIGKILL ends anything, reported as the signal.
    let stubborn = f.config("kill", "sleep 60");
    f.run(&stubborn);
    f.runtime.kill(&stubborn.id, 9).unwrap();
    let exit = f.wait_stopped(&stubborn.id).exit.unwrap();
    assert_eq!((exit.code, exit.signal, exit.oom_killed), (Some(128 + 9), Some(9), false));
    f.runtime.delete(&stubborn.id, false).unwrap();
}

#[test]
fn the_default_seccomp_profile_is_applied_unless_the_replica_opts_out() {
    if !can_run_containers() {
        return;
    }
    let mut f = Fixture::new();
    for (name, seccomp, expected) in [("seccomp", true, "Seccomp:\t2"), ("unconfined", false, "Seccomp:\t0")] {
        let mut config = f.config(name, "grep Seccomp: /proc/self/status");
        config.seccomp = seccomp;
        f.run(&config);
        let exit = f.wait_stopped(&config.id).exit.unwrap();
        assert_eq!(exit.code, Some(0));
        let log = std::fs::read_to_string(&config.log_path).unwrap();
        assert!(log.contains(expected), "{name}: {log}");
        f.runtime.delete(&config.id, false).unwrap();
    }
}

#[test]
fn cgroup_usage_shows_a_busy_container_in_millicores_and_its_memory() {
    if !can_run_containers() {
        return;
    }
    let mut f = Fixture::new();
    // One busy loop, capped at half a core by the cpu limit.
    let mut config = f.config("busy", "while :; do :; done");
    config.cpu_limit_millis = Some(500);
    config.memory_limit_bytes = Some(64 << 20);
    f.run(&config);
    let mut sampler = flotilla_agent::telemetry::UsageSampler::default();
    sampler.sample(&config.id).expect("cgroup readable");
    std::thread::sleep(Duration::from_millis(1_000));
    let usage = sampler.sample(&config.id).expect("cgroup readable");
    assert!((300..=600).contains(&usage.cpu_millis), "expected ~500m under a 500m limit, got {usage:?}");
    assert!(usage.memory_bytes > 0 && usage.memory_bytes < 64 << 20, "{usage:?}");
    let node = sampler.node();
    assert!(node.memory_bytes > 0, "{node:?}");
    f.runtime.delete(&config.id, true).unwrap();
}

/// A root container sees its own cgroups read-only and cannot lift its
/// limits. libcontainer 0.7 binds the v1 hierarchies read-write on a hybrid
/// host; the agent writes a read-only view into the spec instead.
#[test]
fn a_container_sees_its_own_cgroups_read_only_and_cannot_raise_its_limits() {
    if !can_run_containers() {
        return;
    }
    let mut f = Fixture::new();
    let v1 = Path::new("/sys/fs/cgroup/memory").is_dir();
    let file = if v1 { "/sys/fs/cgroup/memory/memory.limit_in_bytes" } else { "/sys/fs/cgroup/memory.max" };
    let mut config = f.config("rocg", &format!("cat {file}; echo 1073741824 > {file}; touch /sys/fs/cgroup/x"));
    config.memory_limit_bytes = Some(32 << 20);
    f.run(&config);
    f.wait_stopped(&config.id);
    let log = std::fs::read_to_string(&config.log_path).unwrap();
    if v1 {
        assert!(log.starts_with(&(32u64 << 20).to_string()), "its own limit, not the host's: {log}");
    }
    assert!(log.contains("Read-only file system"), "{log}");
    let limit = memory_cgroup_file(&config.id, "memory.limit_in_bytes", "memory.max").expect("memory cgroup file");
    assert_eq!(limit.trim(), (32u64 << 20).to_string(), "the limit is unchanged on the host");
    f.runtime.delete(&config.id, false).unwrap();
}
