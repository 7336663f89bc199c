//! `leader-kill`: several controllers on one etcd (issue 20). The leading
//! controller is killed (-9) again and again under a connected fleet while
//! a client keeps applying through whichever controller answers, and etcd
//! members are killed and restarted between leader kills. Measured per
//! kill: from the kill until the first device receives a document from the
//! new leader, and until every device holds its document again. Checked at
//! the end: every acknowledged apply is there, and no replica restarted.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::{FleetArgs, SimulatedFleet, round3};
use crate::fleet::controller::Controller;
use crate::fleet::{median_s, wait_until};

/// The namespace the writer's ConfigMaps go to.
const WRITES_NAMESPACE: &str = "ha-writes";

/// What the leader logs when its term starts.
const LEADS: &str = "this controller leads";

impl SimulatedFleet {
    fn nth_controller(&mut self, i: usize) -> &mut Controller {
        if i == 0 { &mut self.controller } else { &mut self.standbys[i - 1] }
    }

    fn leader_index(&self) -> Option<usize> {
        // The one whose latest run logged a term start last: with every
        // run appending to its log, compare the counts against the kills.
        let all: Vec<&Controller> = std::iter::once(&self.controller).chain(&self.standbys).collect();
        all.iter().position(|c| c.leading().unwrap_or(false))
    }

    pub(super) fn leader_kill(&mut self, args: &FleetArgs) -> anyhow::Result<Value> {
        if self.standbys.is_empty() || self.etcd.is_none() {
            return Ok(json!({
                "nodes": self.profiles.len(),
                "skipped": "needs --controllers 2 (or more) with --store etcd --broker mosquitto",
            }));
        }
        let starts_before = self.total_starts();
        let endpoints: Vec<(String, String)> =
            std::iter::once(&self.controller).chain(&self.standbys).map(|c| (c.url(), c.token().to_owned())).collect();
        let writer = Writer::start(endpoints);
        let member_kill_every = match args.etcd_member_kills {
            0 => usize::MAX,
            n => (args.leader_kills / n).max(1),
        };
        let (mut first, mut all, mut member_kills) = (Vec::new(), Vec::new(), 0);
        for kill in 0..args.leader_kills {
            let leader =
                wait_until(
                    "a leader",
                    Duration::from_secs(30),
                    Duration::from_millis(100),
                    || Ok(self.leader_index()),
                )?;
            let terms_before: Vec<usize> =
                std::iter::once(&self.controller).chain(&self.standbys).map(|c| c.log_lines_with(LEADS)).collect();
            eprintln!("fleet: kill -9 the leader (controller {leader}), {}/{}", kill + 1, args.leader_kills);
            let at = Instant::now();
            self.nth_controller(leader).kill();
            wait_until(
                "a device to get a document from the new leader",
                args.timeout,
                Duration::from_millis(10),
                || {
                    let view = self.view.observed.lock().unwrap_or_else(|p| p.into_inner());
                    Ok(view.values().any(|o| o.last_frame.is_some_and(|t| t >= at)).then_some(()))
                },
            )?;
            first.push(at.elapsed());
            self.wait_every_device("to hold its document from the new leader", at, args.timeout, |o| o.last_frame)?;
            all.push(at.elapsed());
            let new_leader = std::iter::once(&self.controller)
                .chain(&self.standbys)
                .enumerate()
                .position(|(i, c)| i != leader && c.log_lines_with(LEADS) > terms_before[i]);
            anyhow::ensure!(new_leader.is_some(), "documents arrived but no other controller logged {LEADS:?}");
            self.nth_controller(leader).restart().context("starting the killed controller again")?;
            if (kill + 1) % member_kill_every == 0 && member_kills < args.etcd_member_kills {
                let etcd = self.etcd.as_mut().expect("checked above");
                let member = member_kills % 3;
                eprintln!("fleet: kill -9 etcd member {member}");
                etcd.kill(member);
                crate::fleet::pause(Duration::from_secs(3))?;
                etcd.restart(member)?;
                member_kills += 1;
            }
        }
        // Anything that was going to restart has by now.
        crate::fleet::pause(Duration::from_secs(3))?;
        let (acknowledged, attempted) = writer.stop();
        let leader = self.leader_index().context("no controller leads at the end")?;
        let listed = self.nth_controller(leader).get(&format!("/api/v1/namespaces/{WRITES_NAMESPACE}/configmaps"))?;
        let present: HashSet<String> = listed["items"]
            .as_array()
            .map(|items| items.iter().filter_map(|i| i["metadata"]["name"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        let lost = acknowledged.iter().filter(|name| !present.contains(*name)).count();
        let attempted: HashSet<&String> = attempted.iter().collect();
        let never_sent = present.iter().filter(|name| !attempted.contains(name)).count();
        let version = std::process::Command::new("etcd").arg("--version").output()?;
        let version = String::from_utf8_lossy(&version.stdout).lines().next().unwrap_or_default().to_owned();
        let max = |samples: &[Duration]| samples.iter().max().map_or(0.0, |d| round3(d.as_secs_f64()));
        Ok(json!({
            "nodes": self.profiles.len(),
            "leader_kills": args.leader_kills,
            "etcd_member_kills": member_kills,
            "etcd": version,
            "leader_lease_s": 3,
            "first_document_median_s": median_s(&first).map(round3),
            "first_document_max_s": max(&first),
            "all_documents_median_s": median_s(&all).map(round3),
            "all_documents_max_s": max(&all),
            "writes_acknowledged": acknowledged.len(),
            "writes_attempted": attempted.len(),
            "acknowledged_writes_lost": lost,
            "writes_present_never_sent": never_sent,
            "replicas_restarted": self.total_starts() - starts_before,
        }))
    }
}

impl SimulatedFleet {
    /// kill -9 of one NATS server of three under the fleet: devices spread
    /// over the servers by name, so a third move (and the controller, which
    /// uses the first server). Until every moved device is connected to
    /// another server and holds its document again, until a workload
    /// applied after the loss runs on every device and the controller sees
    /// it Running everywhere, and how many replicas restarted.
    pub(super) fn broker_kill(&mut self, args: &FleetArgs) -> anyhow::Result<Value> {
        let Some(servers) = self.nats.as_ref().map(|nats| nats.len()) else {
            return Ok(json!({ "nodes": self.profiles.len(), "skipped": "needs --broker nats" }));
        };
        let killed = 0;
        let moved: Vec<String> = self
            .devices
            .keys()
            .filter(|name| flotilla_agent::channel::first_broker(name, servers) == killed)
            .cloned()
            .collect();
        // The same round trip before the loss, to compare.
        let before_s = self.new_workload_everywhere("before-broker-kill", Instant::now(), args.timeout)?;
        let starts_before = self.total_starts();
        eprintln!("fleet: kill -9 NATS server {killed} under {} devices ({} on it)", self.profiles.len(), moved.len());
        let at = Instant::now();
        self.nats.as_mut().expect("checked above").kill(killed);
        self.wait_devices(&moved, "to reconnect to another server", at, args.timeout, |o| o.last_connect)?;
        let reconnected_s = at.elapsed().as_secs_f64();
        self.wait_devices(&moved, "to hold its document again", at, args.timeout, |o| o.last_frame)?;
        let documents_s = at.elapsed().as_secs_f64();
        // Both ways through the cluster after the loss (the controller moved
        // too): a new DaemonSet reaches every device, and every device's
        // report of it reaches the controller.
        let round_trip_s = self.new_workload_everywhere("after-broker-kill", at, args.timeout)?;
        crate::fleet::pause(Duration::from_secs(5))?;
        let version = std::process::Command::new("nats-server").arg("--version").output()?;
        Ok(json!({
            "nodes": self.profiles.len(),
            "nats": String::from_utf8_lossy(&version.stdout).trim(),
            "servers": servers,
            "devices_moved": moved.len(),
            "reconnected_s": round3(reconnected_s),
            "documents_s": round3(documents_s),
            "new_workload_everywhere_before_kill_s": round3(before_s),
            "new_workload_everywhere_s": round3(round_trip_s),
            // Each device started the one replica applied after the loss.
            "replicas_restarted": (self.total_starts() - starts_before).saturating_sub(self.devices.len() as u64),
        }))
    }

    /// Applies a DaemonSet named `name` (one tiny replica on every device)
    /// and waits until every device runs it and the controller shows each
    /// Running: seconds from `since`.
    fn new_workload_everywhere(&self, name: &str, since: Instant, timeout: Duration) -> anyhow::Result<f64> {
        let tolerate = "      tolerations: [{operator: Exists}]\n";
        self.controller.apply(&super::workloads::daemon_set(name, &self.image, "1m", "1Mi", "", tolerate))?;
        self.wait_every_device(&format!("to run {name}"), since, timeout, |o| {
            o.running.iter().any(|r| r.starts_with(name)).then(Instant::now)
        })?;
        let total = self.devices.len();
        wait_until(
            &format!("the controller to see {name} Running everywhere"),
            timeout,
            Duration::from_millis(500),
            || {
                let pods = self.controller.get(&format!("/api/v1/pods?labelSelector=app={name}"))?;
                let running = pods["items"]
                    .as_array()
                    .map_or(0, |items| items.iter().filter(|p| p["status"]["phase"] == "Running").count());
                Ok((running >= total).then_some(()))
            },
        )?;
        Ok(since.elapsed().as_secs_f64())
    }
}

/// Applies one new ConfigMap after another through whichever controller
/// answers, remembering which were acknowledged (HTTP 200).
struct Writer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<String>>>,
    attempted: Arc<Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(endpoints: Vec<(String, String)>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (acknowledged, attempted) = (Arc::<Mutex<Vec<String>>>::default(), Arc::<Mutex<Vec<String>>>::default());
        let (flag, acked, tried) = (stop.clone(), acknowledged.clone(), attempted.clone());
        let thread = std::thread::spawn(move || {
            let http: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(15)))
                .build()
                .into();
            let mut n = 0usize;
            let mut at = 0usize;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let name = format!("write-{n:06}");
                let text = format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {WRITES_NAMESPACE}}}\ndata: {{n: \"{n}\"}}\n"
                );
                let body = json!({ "documents": [{ "source": "writer.yaml", "text": text }] });
                tried.lock().unwrap().push(name.clone());
                let (url, token) = &endpoints[at % endpoints.len()];
                let answer = http
                    .post(format!("{url}/api/v1/apply"))
                    .header("Authorization", format!("Bearer {token}"))
                    .send_json(&body);
                match answer {
                    Ok(response) if response.status() == 200 => acked.lock().unwrap().push(name),
                    // Refused or unreachable: the next controller, after a breath.
                    _ => {
                        at += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Writer { stop, acknowledged, attempted, thread }
    }

    fn stop(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let acknowledged = std::mem::take(&mut *self.acknowledged.lock().unwrap());
        let attempted = std::mem::take(&mut *self.attempted.lock().unwrap());
        (acknowledged, attempted)
    }
}
