//! A NATS cluster on loopback (Debian's `nats-server`, installed by
//! scripts/setup) serving MQTT: three servers routed to each other, with
//! JetStream (where NATS keeps MQTT sessions and retained messages,
//! replicated three times). For the broker-failover tests (issue 20).
//!
//! Each MQTT subscription is a JetStream consumer: replicated three times
//! (NATS's default), a fleet reconnecting after a server loss made the
//! cluster time out creating and deleting hundreds of them, and devices
//! never got back. Consumers are kept on one server, in memory
//! (`consumer_replicas: 1`, `consumer_memory_storage`): a device whose
//! server dies subscribes again on another (Flotilla's sessions are clean
//! anyway); retained documents stay replicated.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

struct Server {
    conf: PathBuf,
    log: PathBuf,
    mqtt_port: u16,
    child: Option<Child>,
}

/// Three `nats-server`s in one cluster, killed when dropped.
pub struct NatsCluster {
    servers: Vec<Server>,
}

impl NatsCluster {
    /// Starts three servers under `dir` and waits until each takes MQTT
    /// connections and JetStream has a leader.
    pub fn start(dir: &Path) -> anyhow::Result<NatsCluster> {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| Ok((crate::free_port()?, crate::free_port()?, crate::free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let routes: Vec<String> = ports.iter().map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}")).collect();
        let mut servers = Vec::new();
        for (i, (client, route, mqtt)) in ports.iter().enumerate() {
            let data = dir.join(format!("nats-{i}"));
            std::fs::create_dir_all(&data)?;
            let conf = dir.join(format!("nats-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{client}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: flotilla, listen: 127.0.0.1:{route}, routes: [{}] }}\n\
                     mqtt {{ listen: 127.0.0.1:{mqtt}, stream_replicas: 3, consumer_replicas: 1, consumer_memory_storage: true }}\n",
                    data.display(),
                    routes.join(", ")
                ),
            )?;
            let log = dir.join(format!("nats-{i}.log"));
            servers.push(Server { conf, log, mqtt_port: *mqtt, child: None });
        }
        let mut cluster = NatsCluster { servers };
        for i in 0..3 {
            cluster.restart(i)?;
        }
        cluster.wait_ready(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// `mqtt://127.0.0.1:port` of server `i`.
    pub fn mqtt_url(&self, i: usize) -> String {
        format!("mqtt://127.0.0.1:{}", self.servers[i].mqtt_port)
    }

    /// Every server's MQTT URL, comma-separated: what devices and the
    /// controller are given.
    pub fn mqtt_urls(&self) -> String {
        (0..self.servers.len()).map(|i| self.mqtt_url(i)).collect::<Vec<_>>().join(",")
    }

    /// MQTT port of server `i`.
    pub fn mqtt_port(&self, i: usize) -> u16 {
        self.servers[i].mqtt_port
    }

    /// How many servers the cluster has.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether the cluster has no server (never: it starts three).
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// kill -9 of server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` (again).
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let server = &mut self.servers[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&server.log)?;
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&server.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting nats-server (scripts/setup installs it)")?;
        server.child = Some(child);
        Ok(())
    }

    /// Waits until every running server logs that it takes MQTT clients and
    /// a retained message published on one is read on each.
    pub fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let probe = format!("probe-{}", std::process::id());
            let published = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &self.servers[0].mqtt_port.to_string(), "-q", "1", "-r"])
                .args(["-i", &probe, "-t", "flotilla-probe/ready", "-m", "1"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let read_everywhere = published
                && self.servers.iter().filter(|s| s.child.is_some()).all(|server| {
                    Command::new("timeout")
                        .args(["3", "mosquitto_sub", "-h", "127.0.0.1", "-p", &server.mqtt_port.to_string()])
                        .args(["-q", "1", "-C", "1", "-t", "flotilla-probe/ready"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                });
            if read_everywhere {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the NATS cluster is not ready: {}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The ends of the servers' logs.
    pub fn log_tail(&self) -> String {
        self.servers
            .iter()
            .map(|s| {
                let text = std::fs::read_to_string(&s.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().rev().take(8).collect();
                format!("{}:\n{}", s.log.display(), lines.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}
