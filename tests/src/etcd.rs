//! A real etcd cluster on loopback (Debian's `etcd-server`, installed by
//! scripts/setup): members on ports of their own, data in a directory of
//! the test's, killed when dropped. For the etcd store and the HA tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// One member.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data: PathBuf,
    child: Option<Child>,
}

/// A cluster of `etcd` processes.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    log_dir: PathBuf,
}

impl EtcdCluster {
    /// Starts `size` members under `dir` and waits until the cluster
    /// answers. Large transactions are allowed, as Flotilla's store needs
    /// (`--max-txn-ops 4096 --max-request-bytes 33554432`).
    pub fn start(size: usize, dir: &Path) -> anyhow::Result<EtcdCluster> {
        let mut members = Vec::new();
        for i in 0..size {
            members.push(Member {
                name: format!("m{i}"),
                client_port: crate::free_port()?,
                peer_port: crate::free_port()?,
                data: dir.join(format!("etcd-m{i}")),
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster { members, initial_cluster, log_dir: dir.to_owned() };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let member = &self.members[i];
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("etcd-{}.log", member.name)))?;
        let child = Command::new("etcd")
            .args(["--name", &member.name, "--data-dir"])
            .arg(&member.data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "flotilla-test"])
            .args(["--max-txn-ops", "4096", "--max-request-bytes", "33554432"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting etcd (Debian's etcd-server, installed by scripts/setup)")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// `host:port` of every member's client port.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("127.0.0.1:{}", m.client_port)).collect()
    }

    /// `etcd://...` for `flotilla server --store`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// Runs `etcdctl ARGS` against the cluster; its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints().join(",")))
            .args(args)
            .output()
            .context("running etcdctl (Debian's etcd-client)")?;
        if !output.status.success() {
            bail!("etcdctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Waits until a quorum answers a write.
    pub fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            match self.etcdctl(&["put", "/flotilla-test/health", "ok"]) {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > timeout => bail!("etcd not healthy in {timeout:?}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// kill -9 member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data (after [`EtcdCluster::kill`]).
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
