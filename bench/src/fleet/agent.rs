//! `flotilla-agent` processes for a benchmark, each with its own data
//! directory, optionally inside a device network namespace.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use flotilla_agent::runtime::helper::HelperRuntime;
use flotilla_agent::runtime::{Runtime, Status};

use super::controller::tail;

/// How an agent is started (beyond its name and data directory).
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// The agent binary.
    pub binary: PathBuf,
    /// `--keep-alive`.
    pub keep_alive: Duration,
    /// `--heartbeat`.
    pub heartbeat: Duration,
    /// `--tick-ms`, or the agent's default.
    pub tick_ms: Option<u64>,
    /// The network namespace it runs in (a name under /run/netns), or the host's.
    pub netns: Option<String>,
}

/// An agent process. Dropping it kills the agent and deletes every
/// container it left (containers outlive a killed agent by design).
pub struct AgentProcess {
    name: String,
    data_dir: PathBuf,
    settings: AgentSettings,
    child: Option<Child>,
    /// Talks to the agent's container state directly, for checks and
    /// cleanup; its helper process starts on first use.
    runtime: HelperRuntime,
}

impl AgentProcess {
    /// Starts an agent; `join` (controller URL, join token) enrols it first.
    pub fn start(
        name: &str,
        data_dir: &Path,
        settings: AgentSettings,
        join: Option<(&str, &str)>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let runtime = HelperRuntime::new(&settings.binary, &data_dir.join("runtime"), &data_dir.join("bundles"));
        let mut agent =
            AgentProcess { name: name.to_owned(), data_dir: data_dir.to_owned(), settings, child: None, runtime };
        agent.spawn(join)?;
        Ok(agent)
    }

    fn spawn(&mut self, join: Option<(&str, &str)>) -> anyhow::Result<()> {
        let settings = &self.settings;
        let mut command = match &settings.netns {
            Some(netns) => {
                // Enter only the network namespace. `ip netns exec` would also
                // mount a fresh /sys, which hides /sys/fs/cgroup: libcontainer
                // then fails with "failed to detect cgroup setup". nsenter
                // execs the agent, so the child's pid is the agent's.
                let mut command = Command::new("nsenter");
                command.arg(format!("--net=/run/netns/{netns}")).arg("--").arg(&settings.binary);
                command
            }
            None => Command::new(&settings.binary),
        };
        command
            .args(["run", "--node-id", &self.name])
            .args(["--keep-alive", &humantime::format_duration(settings.keep_alive).to_string()])
            .args(["--heartbeat", &humantime::format_duration(settings.heartbeat).to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--status-file")
            .arg(self.data_dir.join("status.json"));
        if let Some(tick_ms) = settings.tick_ms {
            command.args(["--tick-ms", &tick_ms.to_string()]);
        }
        if let Some((url, token)) = join {
            command.args(["--join", url, "--token", token]);
        }
        let log = self.log_path();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            // Its own process group: a Ctrl-C in the terminal is the
            // benchmark's to handle (see `watch_interrupts`).
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting the agent {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    /// The last `lines` lines of its log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines)
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Kills the agent with SIGKILL, like a power cut of the agent alone: its
    /// containers keep running.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().with_context(|| format!("killing the agent {}", self.name))?;
            child.wait().with_context(|| format!("reaping the agent {}", self.name))?;
        }
        Ok(())
    }

    /// Starts the agent again on its data directory (already enrolled).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9()?;
        self.spawn(None)
    }

    /// Ids of its running containers (container id = replica name).
    pub fn running_containers(&mut self) -> anyhow::Result<Vec<String>> {
        let states =
            self.runtime.list().map_err(|e| anyhow::anyhow!("listing the containers of {}: {e}", self.name))?;
        Ok(states.into_iter().filter(|s| s.status == Status::Running).map(|s| s.id).collect())
    }

    /// Force-deletes every container in its state directory.
    fn delete_containers(&mut self) {
        for state in self.runtime.list().unwrap_or_default() {
            if let Err(e) = self.runtime.delete(&state.id, true) {
                eprintln!("cleanup: deleting container {} of {}: {e}", state.id, self.name);
            }
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Err(e) = self.kill9() {
            eprintln!("cleanup: {e:#}");
        }
        self.delete_containers();
        // The agent mounts each container's root filesystem (an overlay)
        // under its data directory and unmounts it when it deletes the
        // container itself; a killed agent leaves them mounted.
        for mount_point in mounts_under(&self.data_dir) {
            if let Err(e) = nix::mount::umount2(&mount_point, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("cleanup: unmounting {}: {e}", mount_point.display());
            }
        }
    }
}

/// Mount points at or below `dir`, deepest first, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|point| point.starts_with(dir))
        .collect();
    // Later mounts may sit on top of earlier ones.
    points.reverse();
    points
}

/// mountinfo writes space, tab, newline and backslash in paths as `\NNN`
/// (octal).
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4).and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b/rootfs"), "/tmp/a b/rootfs");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/odd\\x"), "/odd\\x");
    }

    #[test]
    fn a_mount_under_a_directory_is_found() {
        // /proc is mounted on every Linux system this runs on.
        assert!(mounts_under(Path::new("/proc")).contains(&PathBuf::from("/proc")));
        assert!(mounts_under(Path::new("/nonexistent-flotilla-dir")).is_empty());
    }
}
