//! `flotilla-bench fleet`: thousands of simulated devices against a real
//! `flotilla server`, over a real broker (the embedded one or Mosquitto).
//!
//! Each device is the real agent with its own TCP connection, client id,
//! broker login and node credentials (enrolled through one reusable join
//! token) over the **simulated** runtime ([`device`]); the controller is the
//! release binary, measured from `/proc`. Each scenario prints one JSON
//! line; progress goes to stderr.
//!
//! # Layout
//! - [`device`]: one simulated device.
//! - [`workloads`]: the devices' sizes and labels and the manifest.
//! - [`mosquitto`]: an external Mosquitto for `--broker mosquitto`.
//! - this file: the fleet's set-up and the scenarios.

pub mod device;
mod leader_kill;
pub mod mosquitto;
pub mod workloads;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::fleet::controller::{Controller, ControllerOptions};
use crate::fleet::{Binaries, wait_until};
use device::{DeviceHandle, DeviceSettings, FleetView, Profile};
use workloads::Workload;

/// What `flotilla-bench fleet` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Apply the workloads; time until every replica runs.
    Converge,
    /// Idle: the controller's CPU, memory and store writes.
    Steady,
    /// Kill one device at a time; time until its replicas run elsewhere.
    NodeLoss,
    /// A whole site (one label value) vanishes at once.
    SiteLoss,
    /// kill -9 the controller and start it again.
    ControllerRestart,
    /// Restart the broker (Mosquitto) under a connected fleet.
    ReconnectStorm,
    /// Every scenario above in turn, on one fleet.
    All,
    /// kill -9 the leading controller again and again (`--controllers 2
    /// --store etcd --broker mosquitto`), with applies running and etcd
    /// members killed between; not part of `all`.
    LeaderKill,
    /// kill -9 one of three NATS servers (`--broker nats`; devices spread
    /// over them by name, the controller on the first): time until the
    /// devices that used it are connected to another and hold their
    /// document, and until a workload applied afterwards runs on every
    /// device and shows Running; not part of `all`.
    BrokerKill,
}

/// Where the controllers keep their objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The embedded store (redb) in the data directory.
    Redb,
    /// A three-member etcd cluster started for the run (Debian's etcd-server).
    Etcd,
}

/// Which broker carries the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerKind {
    /// The controller's embedded broker (rumqttd).
    Embedded,
    /// Mosquitto, with the files `flotilla mosquitto-config` writes.
    Mosquitto,
    /// Three NATS servers in one cluster (MQTT over JetStream, replicated
    /// three times); every device and the controller get the three URLs.
    /// No broker logins: NATS takes any (Flotilla's frames are still MAC'd
    /// and its documents signed).
    Nats,
}

/// Options of `flotilla-bench fleet`.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// What to measure (after the fleet has converged, except `converge` itself).
    pub scenario: Scenario,
    /// Simulated devices.
    #[arg(long, default_value_t = 10_000)]
    pub nodes: usize,
    /// Replicas in all [default: 5 per device: 50,000 on 10,000].
    #[arg(long)]
    pub replicas: Option<usize>,
    /// The broker.
    #[arg(long, value_enum, default_value = "embedded")]
    pub broker: BrokerKind,
    /// Where the objects are.
    #[arg(long, value_enum, default_value = "redb")]
    pub store: StoreKind,
    /// Controllers (more than one needs --store etcd and --broker mosquitto: one leads, the
    /// others stand by).
    #[arg(long, default_value_t = 1)]
    pub controllers: usize,
    /// How many times `leader-kill` kills the leader.
    #[arg(long, default_value_t = 10)]
    pub leader_kills: usize,
    /// etcd members `leader-kill` kills (one at a time, between leader kills).
    #[arg(long, default_value_t = 5)]
    pub etcd_member_kills: usize,
    /// How long a simulated container start takes.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub start_delay: Duration,
    /// How long `steady` stays idle.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub steady_for: Duration,
    /// How many devices `node-loss` kills, one after the other.
    #[arg(long, default_value_t = 20)]
    pub losses: usize,
    /// Devices per site (`site-loss` removes one site) [default: 1,000, at most a tenth of the fleet].
    #[arg(long)]
    pub site_size: Option<usize>,
    /// The devices' MQTT keep-alive (the agent's default).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub keep_alive: Duration,
    /// The devices' heartbeat period (the agent's default).
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
    /// The agents' tick (`--tick-ms`).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub tick: Duration,
    /// Devices connecting per second while the fleet starts.
    #[arg(long, default_value_t = 1000)]
    pub connect_rate: u32,
    /// Longest wait for any one phase (enrolment, connection, convergence, recovery).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Directory of the flotilla binaries [default: this benchmark's own].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Keep the controller's data and log (printed at the start) instead of removing them.
    #[arg(long)]
    pub keep: bool,
}

/// Runs the benchmark.
pub fn run(args: FleetArgs) -> anyhow::Result<()> {
    crate::fleet::watch_interrupts()?;
    raise_open_files()?;
    let binaries = Binaries::locate(args.bin_dir.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1024)
        .thread_stack_size(256 << 10)
        .enable_all()
        .build()
        .context("starting the simulator's runtime")?;
    let mut fleet = SimulatedFleet::start(&args, &binaries, runtime.handle())?;
    let scenarios = match args.scenario {
        Scenario::All => vec![
            Scenario::Converge,
            Scenario::Steady,
            Scenario::NodeLoss,
            Scenario::SiteLoss,
            Scenario::ControllerRestart,
            Scenario::ReconnectStorm,
        ],
        one => vec![one],
    };
    let converged = fleet.converge(&args)?;
    for scenario in scenarios {
        let sampler = ApiSampler::start(&fleet.controller);
        let mut line = match scenario {
            Scenario::Converge => converged.clone(),
            Scenario::Steady => fleet.steady(&args)?,
            Scenario::NodeLoss => fleet.node_loss(&args)?,
            Scenario::SiteLoss => fleet.site_loss(&args)?,
            Scenario::ControllerRestart => fleet.controller_restart(&args)?,
            Scenario::ReconnectStorm => fleet.reconnect_storm(&args)?,
            Scenario::LeaderKill => fleet.leader_kill(&args)?,
            Scenario::BrokerKill => fleet.broker_kill(&args)?,
            Scenario::All => unreachable!("expanded above"),
        };
        let api = sampler.stop();
        let scenario_name = format!("{scenario:?}");
        line["scenario"] = json!(kebab(&scenario_name));
        line["broker"] = json!(format!("{:?}", args.broker).to_lowercase());
        line["store"] = json!(format!("{:?}", args.store).to_lowercase());
        line["controllers"] = json!(args.controllers);
        line["runtime"] = json!("simulated");
        line["api_p99_ms"] = if matches!(scenario, Scenario::Converge) { converged["api_p99_ms"].clone() } else { api };
        println!("{line}");
    }
    drop(fleet);
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// 10,000 devices need 10,000 sockets here and in the broker.
fn raise_open_files() -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading the open-file limit")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raising the open-file limit")?;
    Ok(())
}

/// The controller, the broker and the devices.
struct SimulatedFleet {
    // Fields drop in order: devices, then the controllers, then the
    // broker, then etcd.
    devices: BTreeMap<String, DeviceHandle>,
    controller: Controller,
    /// Controllers beside the first, on the same etcd (`--controllers`).
    standbys: Vec<Controller>,
    mosquitto: Option<mosquitto::Mosquitto>,
    nats: Option<flotilla_e2e::nats::NatsCluster>,
    etcd: Option<flotilla_e2e::etcd::EtcdCluster>,
    runtime: tokio::runtime::Handle,
    profiles: Vec<Profile>,
    workloads: Vec<Workload>,
    view: FleetView,
    /// Per device killed, seconds from the kill to its socket's close.
    close_delays: Vec<f64>,
    settings: DeviceSettings,
    devices_dir: tempfile::TempDir,
    image: String,
    site_size: usize,
    _work: tempfile::TempDir,
}

impl SimulatedFleet {
    fn start(args: &FleetArgs, binaries: &Binaries, runtime: &tokio::runtime::Handle) -> anyhow::Result<Self> {
        ensure!(args.nodes > 0, "--nodes must be at least 1");
        let mut work =
            tempfile::Builder::new().prefix("flotilla-fleet-").tempdir().context("creating a work directory")?;
        if args.keep {
            work.disable_cleanup(true);
            eprintln!("fleet: work directory {} (kept)", work.path().display());
        }
        // Device state on tmpfs: 10,000 devices' small atomic writes would
        // otherwise be this one disk's fsyncs, not the controller's.
        let devices_dir = tempfile::Builder::new()
            .prefix("flotilla-fleet-devices-")
            .tempdir_in("/dev/shm")
            .context("creating the devices' directory in /dev/shm")?;
        let data_dir = work.path().join("controller");
        std::fs::create_dir_all(&data_dir)?;
        let api_addr: SocketAddr = format!("127.0.0.1:{}", flotilla_e2e::free_port()?).parse()?;
        let mqtt_port = flotilla_e2e::free_port()?;
        ensure!(
            args.controllers == 1 || (args.store == StoreKind::Etcd && args.broker == BrokerKind::Mosquitto),
            "--controllers {} needs --store etcd and --broker mosquitto (standbys share the store and the broker)",
            args.controllers
        );
        let mut extra_args = Vec::new();
        let etcd = match args.store {
            StoreKind::Redb => None,
            StoreKind::Etcd => {
                eprintln!("fleet: starting a three-member etcd cluster");
                let etcd_dir = work.path().join("etcd");
                std::fs::create_dir_all(&etcd_dir)?;
                let cluster = flotilla_e2e::etcd::EtcdCluster::start(3, &etcd_dir)?;
                extra_args.extend(["--store".to_owned(), cluster.url(), "--leader-lease".to_owned(), "3s".to_owned()]);
                Some(cluster)
            }
        };
        let nats = match args.broker {
            BrokerKind::Nats => {
                eprintln!("fleet: starting a three-server NATS cluster");
                let nats_dir = work.path().join("nats");
                std::fs::create_dir_all(&nats_dir)?;
                let cluster = flotilla_e2e::nats::NatsCluster::start(&nats_dir)?;
                extra_args.extend(["--mqtt-url".to_owned(), cluster.mqtt_urls()]);
                Some(cluster)
            }
            _ => None,
        };
        let mosquitto = match args.broker {
            BrokerKind::Embedded | BrokerKind::Nats => None,
            BrokerKind::Mosquitto => {
                let dir = work.path().join("mosquitto");
                mosquitto::configure(&binaries.flotilla, &data_dir, &dir, mqtt_port)?;
                let broker = mosquitto::Mosquitto::start(&dir)?;
                extra_args.extend(["--mqtt-url".to_owned(), format!("mqtt://127.0.0.1:{mqtt_port}")]);
                if etcd.is_some() {
                    // The enrolment lives on etcd: the leader keeps
                    // Mosquitto's files in step itself.
                    extra_args.extend(["--mosquitto-dir".to_owned(), dir.display().to_string()]);
                }
                Some(broker)
            }
        };
        let options = ControllerOptions {
            api_addr,
            mqtt_listen: format!("127.0.0.1:{mqtt_port}").parse()?,
            advertise: "127.0.0.1".into(),
            extra_args,
            tls: false,
        };
        eprintln!("fleet: starting flotilla server ({:?} broker)", args.broker);
        let controller = Controller::start(binaries, &data_dir, &options)?;
        let mut standbys = Vec::new();
        for i in 1..args.controllers {
            let data = work.path().join(format!("controller-{i}"));
            std::fs::create_dir_all(&data)?;
            for file in ["token", "secrets.key", "controller.key", "controller.pub"] {
                std::fs::copy(data_dir.join(file), data.join(file)).with_context(|| format!("copying {file}"))?;
            }
            let options = ControllerOptions {
                api_addr: format!("127.0.0.1:{}", flotilla_e2e::free_port()?).parse()?,
                mqtt_listen: format!("127.0.0.1:{}", flotilla_e2e::free_port()?).parse()?,
                ..options.clone()
            };
            eprintln!("fleet: starting standby controller {i}");
            standbys.push(Controller::start(binaries, &data, &options)?);
        }
        let image = controller.push_busybox(binaries, work.path(), "127.0.0.1")?;
        let site_size = args.site_size.unwrap_or_else(|| (args.nodes / 10).clamp(1, 1000));
        let profiles = workloads::profiles(args.nodes, site_size);
        let settings = DeviceSettings {
            start_delay: args.start_delay,
            tick: args.tick,
            keep_alive: args.keep_alive,
            heartbeat: args.heartbeat,
        };
        let mut fleet = SimulatedFleet {
            devices: BTreeMap::new(),
            controller,
            standbys,
            mosquitto,
            nats,
            etcd,
            runtime: runtime.clone(),
            profiles,
            workloads: Vec::new(),
            view: FleetView::default(),
            close_delays: Vec::new(),
            settings,
            devices_dir,
            image,
            site_size,
            _work: work,
        };
        fleet.enrol_and_connect(args, binaries, &data_dir)?;
        Ok(fleet)
    }

    /// Enrols every device with one reusable token, then connects them.
    fn enrol_and_connect(&mut self, args: &FleetArgs, binaries: &Binaries, data_dir: &Path) -> anyhow::Result<()> {
        let token = self.controller.fleet_token(self.profiles.len())?;
        let started = Instant::now();
        let server = self.controller.url();
        let enrolments = Arc::new(Mutex::new(BTreeMap::new()));
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed: Arc<Mutex<Option<anyhow::Error>>> = Arc::default();
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (profiles, next, enrolments, failed) =
                    (self.profiles.clone(), next.clone(), enrolments.clone(), failed.clone());
                let (server, token, dir) = (server.clone(), token.clone(), self.devices_dir.path().to_owned());
                std::thread::spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(profile) = profiles.get(i) else { return };
                        if failed.lock().unwrap().is_some() {
                            return;
                        }
                        match device::enrol(&server, &token, &profile.name, &dir.join(&profile.name)) {
                            Ok(enrolment) => {
                                enrolments.lock().unwrap().insert(profile.name.clone(), enrolment);
                            }
                            Err(e) => {
                                *failed.lock().unwrap() = Some(e.context(format!("enrolling {}", profile.name)));
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        let total = self.profiles.len();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let done = enrolments.lock().unwrap().len();
            if done == total || failed.lock().unwrap().is_some() || threads.iter().all(|t| t.is_finished()) {
                break;
            }
            eprint!("\rfleet: enrolled {done}/{total} ({:.0}/s)   ", done as f64 / started.elapsed().as_secs_f64());
        }
        for thread in threads {
            let _ = thread.join();
        }
        if let Some(e) = failed.lock().unwrap().take() {
            return Err(e);
        }
        let enrolments = std::mem::take(&mut *enrolments.lock().unwrap());
        eprintln!("\rfleet: enrolled {total} devices in {:.1} s with one token", started.elapsed().as_secs_f64());
        match (&self.mosquitto, &self.etcd) {
            (Some(broker), None) => {
                // New logins: write the password file again and reload.
                mosquitto::configure(&binaries.flotilla, data_dir, broker.dir(), broker.port())?;
                broker.reload()?;
            }
            (Some(broker), Some(_)) => {
                // The leader rewrites the files and reloads Mosquitto.
                let passwd = broker.dir().join("passwd");
                wait_until(
                    "the leader to write every login to Mosquitto",
                    args.timeout,
                    Duration::from_millis(200),
                    || {
                        let text = std::fs::read_to_string(&passwd).unwrap_or_default();
                        let users: HashSet<&str> = text.lines().filter_map(|l| l.split(':').next()).collect();
                        Ok(self.profiles.iter().all(|p| users.contains(p.name.as_str())).then_some(()))
                    },
                )?;
                crate::fleet::pause(Duration::from_secs(1))?;
            }
            (None, _) => {}
        }
        let started = Instant::now();
        let pause = Duration::from_secs_f64(1.0 / f64::from(args.connect_rate.max(1)));
        for profile in &self.profiles {
            let enrolment = &enrolments[&profile.name];
            let handle = device::start(
                &self.runtime,
                profile,
                enrolment,
                self.devices_dir.path().join(&profile.name),
                &self.settings,
                self.view.clone(),
            )?;
            self.devices.insert(profile.name.clone(), handle);
            std::thread::sleep(pause);
        }
        eprintln!("fleet: {total} devices connecting");
        wait_until("every device to be Ready", args.timeout, Duration::from_secs(1), || {
            let ready = self.controller.ready_nodes()?.len();
            eprint!("\rfleet: {ready}/{total} nodes Ready   ");
            Ok((ready >= total).then_some(()))
        })
        .map_err(|e| {
            let ready: HashSet<String> = self.controller.ready_nodes().unwrap_or_default().into_iter().collect();
            let missing: Vec<&String> = self.devices.keys().filter(|n| !ready.contains(*n)).take(5).collect();
            let log = crate::fleet::controller::tail(&self.controller.log_path(), 4000);
            let mentions: Vec<&str> =
                log.lines().filter(|l| missing.iter().any(|n| l.contains(n.as_str()))).take(20).collect();
            e.context(format!("not Ready: {missing:?}; the controller's log about them:\n{}", mentions.join("\n")))
        })?;
        eprintln!("\rfleet: {total} nodes Ready {:.1} s after the first connected", started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Running replicas per device, from the devices' own reports.
    fn running(&self) -> BTreeMap<String, Vec<String>> {
        let view = self.view.observed.lock().unwrap_or_else(|p| p.into_inner());
        self.devices.keys().filter_map(|name| Some((name.clone(), view.get(name)?.running.clone()))).collect()
    }

    /// Running replicas per workload over the live devices.
    fn running_per_workload(&self) -> BTreeMap<String, usize> {
        // Copied out first: the devices' steps wait for this lock.
        let mut counts = BTreeMap::new();
        for replicas in self.running().values() {
            for replica in replicas {
                if let Some(owner) = workloads::owner(&self.workloads, replica) {
                    *counts.entry(owner.name.clone()).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    /// Waits until `when` of every live device is at or after `since`.
    fn wait_every_device(
        &self,
        what: &str,
        since: Instant,
        timeout: Duration,
        when: impl Fn(&device::Observed) -> Option<Instant>,
    ) -> anyhow::Result<()> {
        let all: Vec<String> = self.devices.keys().cloned().collect();
        self.wait_devices(&all, what, since, timeout, when)
    }

    /// Waits until `when` of each of `names` is at or after `since`.
    fn wait_devices(
        &self,
        names: &[String],
        what: &str,
        since: Instant,
        timeout: Duration,
        when: impl Fn(&device::Observed) -> Option<Instant>,
    ) -> anyhow::Result<()> {
        let waiting = || {
            let view = self.view.observed.lock().unwrap_or_else(|p| p.into_inner());
            names.iter().filter(|n| view.get(*n).and_then(&when).is_none_or(|t| t < since)).count()
        };
        wait_until(&format!("every device {what}"), timeout, Duration::from_millis(100), || {
            Ok((waiting() == 0).then_some(()))
        })
        .map_err(|e| e.context(format!("{} of {} devices still waiting", waiting(), names.len())))
    }

    fn total_starts(&self) -> u64 {
        let view = self.view.observed.lock().unwrap_or_else(|p| p.into_inner());
        self.devices.keys().filter_map(|n| view.get(n)).map(|o| o.starts).sum()
    }

    /// Applies the workloads and waits until every replica runs.
    fn converge(&mut self, args: &FleetArgs) -> anyhow::Result<Value> {
        let total = args.replicas.unwrap_or(args.nodes * 5);
        let (workloads, manifest) = workloads::manifest(&self.profiles, total, &self.image)?;
        self.workloads = workloads;
        let sampler = ApiSampler::start(&self.controller);
        let cpu_before = self.controller.cpu_seconds()?;
        let started = Instant::now();
        self.controller.apply(&manifest)?;
        eprintln!("fleet: applied {} workloads, {total} replicas", self.workloads.len());
        wait_until("every replica to run", args.timeout, Duration::from_millis(100), || {
            let running: usize = {
                let view = self.view.observed.lock().unwrap_or_else(|p| p.into_inner());
                self.devices.keys().filter_map(|n| view.get(n)).map(|o| o.running.len()).sum()
            };
            if started.elapsed().as_millis() % 2000 < 100 {
                eprint!("\rfleet: {running}/{total} replicas running   ");
            }
            Ok((running >= total).then_some(()))
        })
        .map_err(|e| e.context(self.unplaced_summary()))?;
        let converge_s = started.elapsed().as_secs_f64();
        eprintln!("\rfleet: {total} replicas running after {converge_s:.1} s");
        Ok(json!({
            "nodes": self.profiles.len(),
            "replicas": total,
            "converge_s": round3(converge_s),
            "controller_rss_bytes": self.controller.rss_bytes()?,
            "controller_cpu_s": round3(self.controller.cpu_seconds()? - cpu_before),
            "broker_rss_bytes": self.broker_rss()?,
            "simulator_rss_bytes": rss_of(std::process::id())?,
            "api_p99_ms": sampler.stop(),
        }))
    }

    /// The embedded broker lives in the controller's process (its memory is
    /// in `controller_rss_bytes`); Mosquitto's is its own.
    fn broker_rss(&self) -> anyhow::Result<Value> {
        Ok(match &self.mosquitto {
            Some(broker) => json!(rss_of(broker.pid())?),
            None => json!("in controller_rss_bytes (embedded)"),
        })
    }

    fn unplaced_summary(&self) -> String {
        let counts = self.running_per_workload();
        let short: Vec<String> = self
            .workloads
            .iter()
            .filter(|w| counts.get(&w.name).copied().unwrap_or(0) < w.replicas)
            .map(|w| format!("{} {}/{}", w.name, counts.get(&w.name).copied().unwrap_or(0), w.replicas))
            .collect();
        format!("running per workload short of desired: {}", short.join(", "))
    }

    fn steady(&mut self, args: &FleetArgs) -> anyhow::Result<Value> {
        // The devices report Running before the controller has recorded
        // every report: idle starts when its store has been quiet for 2 s (or
        // after a minute, if it never is).
        let settle = Instant::now();
        let (mut rv, mut quiet_since) = (self.controller.resource_version()?, Instant::now());
        while quiet_since.elapsed() < Duration::from_secs(2) && settle.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.controller.resource_version()?;
            if now != rv {
                (rv, quiet_since) = (now, Instant::now());
            }
        }
        let settled_s = quiet_since.duration_since(settle).as_secs_f64();
        eprintln!(
            "fleet: the controller recorded the last reports {settled_s:.1} s later; idle for {}",
            humantime::format_duration(args.steady_for)
        );
        let (cpu_before, rv_before, at) =
            (self.controller.cpu_seconds()?, self.controller.resource_version()?, Instant::now());
        crate::fleet::pause(args.steady_for)?;
        let elapsed = at.elapsed().as_secs_f64();
        let cpu = self.controller.cpu_seconds()? - cpu_before;
        let writes = self.controller.resource_version()?.saturating_sub(rv_before);
        let (metrics_scrape_ms, metrics_bytes, metrics_gzip_bytes) = self.scrape_metrics()?;
        let (dashboard_snapshot_ms, dashboard_snapshot_gzip_bytes, dashboard_snapshot_bytes) =
            self.dashboard_snapshot()?;
        Ok(json!({
            "nodes": self.profiles.len(),
            "seconds": round3(elapsed),
            "dashboard_snapshot_ms": dashboard_snapshot_ms,
            "dashboard_snapshot_bytes": dashboard_snapshot_bytes,
            "dashboard_snapshot_gzip_bytes": dashboard_snapshot_gzip_bytes,
            "metrics_scrape_ms": metrics_scrape_ms,
            "metrics_bytes": metrics_bytes,
            "metrics_gzip_bytes": metrics_gzip_bytes,
            "controller_cpu_pct": round3(cpu / elapsed * 100.0),
            "controller_rss_bytes": self.controller.rss_bytes()?,
            "broker_rss_bytes": self.broker_rss()?,
            "store_writes_per_s": round3(writes as f64 / elapsed),
            "settled_s": round3(settled_s),
        }))
    }

    /// `GET /metrics` (the fleet's series read from the store) three times,
    /// as Prometheus asks (gzip): the median time in milliseconds, the size
    /// of the answer, and its size on the wire.
    fn scrape_metrics(&self) -> anyhow::Result<(f64, usize, usize)> {
        let http: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(60))).build().into();
        let scrape = |encoding: &str| -> anyhow::Result<Vec<u8>> {
            Ok(http
                .get(format!("{}/metrics", self.controller.url()))
                .header("Authorization", format!("Bearer {}", self.controller.token()))
                .header("Accept-Encoding", encoding)
                .call()?
                .body_mut()
                .with_config()
                .limit(1 << 30)
                .read_to_vec()?)
        };
        let mut times = Vec::new();
        let mut zipped = 0;
        for _ in 0..3 {
            let at = Instant::now();
            zipped = scrape("gzip")?.len();
            times.push(at.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        Ok((round3(times[1]), scrape("identity")?.len(), zipped))
    }

    /// What the dashboard loads when it opens: its watch of the fleet
    /// (`GET /api/v1/watch`, the kinds its pages show, gzip as a browser
    /// asks) up to the BOOKMARK that ends the snapshot: milliseconds, bytes
    /// on the wire and bytes of JSON.
    fn dashboard_snapshot(&self) -> anyhow::Result<(f64, usize, usize)> {
        let http: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(120))).build().into();
        let at = Instant::now();
        let response = http
            .get(format!(
                "{}/api/v1/watch?resources=nodes,pods,deployments,daemonsets,jobs,events&summary=true",
                self.controller.url()
            ))
            .header("Authorization", format!("Bearer {}", self.controller.token()))
            .header("Accept-Encoding", "gzip")
            .call()?;
        let gzipped = response.headers().get("content-encoding").is_some_and(|v| v == "gzip");
        anyhow::ensure!(gzipped, "the dashboard's watch came without gzip");
        // Fed as the bytes arrive, as a browser decodes: a reading decoder
        // would wait for more input than a live stream has.
        let mut body = response.into_body().into_reader();
        let mut decoder = flate2::write::GzDecoder::new(Vec::new());
        let (mut wire, mut buffer) = (0, vec![0u8; 64 << 10]);
        let bookmark = "{\"object\":{\"metadata\":{\"resourceVersion\"";
        loop {
            let n = std::io::Read::read(&mut body, &mut buffer)?;
            anyhow::ensure!(n > 0, "the watch ended before its BOOKMARK");
            wire += n;
            std::io::Write::write_all(&mut decoder, &buffer[..n])?;
            std::io::Write::flush(&mut decoder)?;
            let text = decoder.get_ref();
            let last_line = text.strip_suffix(b"\n").and_then(|t| t.rsplit(|b| *b == b'\n').next());
            if last_line.is_some_and(|l| l.starts_with(bookmark.as_bytes()) && l.ends_with(b"\"BOOKMARK\"}")) {
                break;
            }
        }
        let bytes = decoder.get_ref().len();
        Ok((round3(at.elapsed().as_secs_f64() * 1000.0), wire, bytes))
    }

    /// Kills `victims` at once; returns the seconds until every Deployment
    /// is back to its replicas on the remaining devices, or `None` when it
    /// is not within `timeout` (capacity short).
    fn lose(
        &mut self,
        victims: &[String],
        timeout: Duration,
    ) -> anyhow::Result<(Option<f64>, BTreeMap<String, usize>)> {
        let asked = Instant::now();
        let mut killed = Vec::new();
        for name in victims {
            if let Some(device) = self.devices.remove(name) {
                device.kill();
                killed.push(device);
            }
        }
        // The clock starts at the close (the "from the close"): the
        // simulator's runtime takes a while to run the aborts of busy
        // devices, and that is not the controller's failover.
        while killed.iter().any(|d| !d.closed()) && asked.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let at = Instant::now();
        self.close_delays.push((at - asked).as_secs_f64());
        if victims.len() == 1 {
            // To read beside the controller's log (`--keep`).
            eprintln!(
                "fleet: {} closed at {} ({} ms after the kill)",
                victims[0],
                humantime::format_rfc3339_millis(std::time::SystemTime::now()),
                (at - asked).as_millis()
            );
        }
        let wanted: BTreeMap<String, usize> =
            self.workloads.iter().filter(|w| !w.daemon).map(|w| (w.name.clone(), w.replicas)).collect();
        let deadline = at + timeout;
        let mut seen = None;
        let mut short = wanted.clone();
        loop {
            // Counted again only when some device's replicas changed: a
            // count of 50,000 replicas every 20 ms took most of a core.
            let changes = self.view.running_changes.load(std::sync::atomic::Ordering::Acquire);
            if seen != Some(changes) {
                seen = Some(changes);
                let counts = self.running_per_workload();
                short = wanted
                    .iter()
                    .filter_map(|(name, want)| {
                        let have = counts.get(name).copied().unwrap_or(0);
                        (have < *want).then(|| (name.clone(), want - have))
                    })
                    .collect();
                if short.is_empty() {
                    return Ok((Some(at.elapsed().as_secs_f64()), short));
                }
            }
            if Instant::now() >= deadline {
                return Ok((None, short));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn node_loss(&mut self, args: &FleetArgs) -> anyhow::Result<Value> {
        let mut times = Vec::new();
        for round in 0..args.losses {
            // A device that runs Deployment replicas (a DaemonSet's stay).
            let running = self.running();
            let victim = running
                .iter()
                .filter(|(_, replicas)| {
                    replicas.iter().any(|r| workloads::owner(&self.workloads, r).is_some_and(|w| !w.daemon))
                })
                .map(|(name, _)| name.clone())
                .nth(round * 7 % running.len().max(1))
                .or_else(|| running.keys().next().cloned())
                .context("no device left to kill")?;
            let (seconds, short) = self.lose(std::slice::from_ref(&victim), args.timeout)?;
            let seconds = seconds.with_context(|| format!("the replicas of {victim} did not come back: {short:?}"))?;
            eprintln!(
                "fleet: node-loss {}/{}: {victim}'s replicas running elsewhere after {seconds:.3} s",
                round + 1,
                args.losses
            );
            times.push(seconds);
            // Let the fleet settle (the lost node's record, documents).
            crate::fleet::pause(Duration::from_millis(500))?;
        }
        times.sort_by(f64::total_cmp);
        Ok(json!({
            "nodes": self.profiles.len(),
            "losses": times.len(),
            "failover_s_median": crate::fleet::median_s(&times.iter().map(|s| Duration::from_secs_f64(*s)).collect::<Vec<_>>()).map(round3),
            "failover_s_max": times.last().copied().map(round3),
            "failover_s_each": times.iter().copied().map(round3).collect::<Vec<_>>(),
            // How long the simulator took to close the socket after the
            // kill (not counted: the failover runs from the close).
            "kill_to_close_s_max": round3(self.close_delays.iter().copied().fold(0.0, f64::max)),
        }))
    }

    fn site_loss(&mut self, args: &FleetArgs) -> anyhow::Result<Value> {
        let site = workloads::site_of(0, self.site_size);
        let victims: Vec<String> = self
            .profiles
            .iter()
            .filter(|p| p.labels.iter().any(|(k, v)| k == "site" && *v == site))
            .map(|p| p.name.clone())
            .filter(|name| self.devices.contains_key(name))
            .collect();
        eprintln!("fleet: site-loss: {} devices of {site} vanish", victims.len());
        // Placeable or not is the controller's call: wait a bounded time,
        // then count what is still short and read the reasons it gives.
        let (seconds, short) = self.lose(&victims, Duration::from_secs(60).min(args.timeout))?;
        let unplaceable: usize = short.values().sum();
        let reasons = if unplaceable > 0 { self.controller.pending_reasons(5)? } else { Vec::new() };
        Ok(json!({
            "nodes": self.profiles.len(),
            "site_devices": victims.len(),
            "rescheduled_s": seconds.map(round3),
            "unplaceable": unplaceable,
            "unplaceable_reasons": reasons,
        }))
    }

    fn controller_restart(&mut self, args: &FleetArgs) -> anyhow::Result<Value> {
        let starts_before = self.total_starts();
        eprintln!("fleet: kill -9 the controller");
        let at = Instant::now();
        self.controller.kill_and_restart()?;
        let restarted_after = at.elapsed().as_secs_f64();
        self.wait_every_device("to hold its document again", at, args.timeout, |o| o.last_frame)?;
        let redelivered_s = at.elapsed().as_secs_f64();
        // Anything that was going to restart has by now.
        crate::fleet::pause(Duration::from_secs(3))?;
        Ok(json!({
            "nodes": self.profiles.len(),
            "controller_up_s": round3(restarted_after),
            "redelivered_s": round3(redelivered_s),
            "replicas_restarted": self.total_starts() - starts_before,
        }))
    }

    fn reconnect_storm(&mut self, args: &FleetArgs) -> anyhow::Result<Value> {
        let before = self.running();
        let starts_before = self.total_starts();
        let Some(broker) = &mut self.mosquitto else {
            return Ok(json!({
                "nodes": self.profiles.len(),
                "skipped": "the embedded broker restarts only with the controller: see controller-restart; run with --broker mosquitto",
            }));
        };
        eprintln!("fleet: restarting Mosquitto under {} devices", before.len());
        let at = Instant::now();
        broker.restart()?;
        self.wait_every_device("to reconnect", at, args.timeout, |o| o.last_connect)?;
        let reconnected_s = at.elapsed().as_secs_f64();
        // Eviction would follow the grace period: wait past it before counting.
        crate::fleet::pause(Duration::from_secs(5))?;
        let after = self.running();
        let nodes_evicted = before
            .iter()
            .filter(|(name, replicas)| {
                let now: HashSet<&String> = after.get(*name).into_iter().flatten().collect();
                replicas.iter().any(|r| !now.contains(r))
            })
            .count();
        Ok(json!({
            "nodes": self.profiles.len(),
            "reconnected_s": round3(reconnected_s),
            "nodes_evicted": nodes_evicted,
            "replicas_moved": self.total_starts() - starts_before,
        }))
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// VmRSS of a process, in bytes.
pub fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// User plus system CPU time of a process, in seconds.
pub fn cpu_seconds_of(pid: u32) -> anyhow::Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> { Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?) };
    // utime and stime are fields 14 and 15 of stat: 11 and 12 after state.
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// Samples `GET /api/v1/nodes?as=table` and `GET /api/v1/pods?as=table`
/// (what `flotilla get nodes` and `get pods -A` ask: the server renders
/// their tables) once a second until stopped.
struct ApiSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<f64>>,
}

impl ApiSampler {
    fn start(controller: &Controller) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, token) = (controller.url(), controller.token().to_owned());
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let http: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .into();
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for path in ["/api/v1/nodes?as=table", "/api/v1/pods?as=table"] {
                    let at = Instant::now();
                    let ok = http
                        .get(format!("{url}{path}"))
                        .header("Authorization", format!("Bearer {token}"))
                        .call()
                        .ok()
                        .and_then(|mut r| {
                            (r.status() == 200)
                                .then(|| r.body_mut().with_config().limit(1 << 30).read_to_vec().ok())
                                .flatten()
                        })
                        .is_some();
                    // A refused or failed call counts as slow as it took
                    // (the controller restarting); it is still a sample.
                    let _ = ok;
                    samples.push(at.elapsed().as_secs_f64() * 1000.0);
                }
                let pause = Instant::now() + Duration::from_secs(1);
                while Instant::now() < pause && !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            samples
        });
        ApiSampler { stop, thread }
    }

    /// The 99th percentile in milliseconds, `null` without samples.
    fn stop(self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples = self.thread.join().unwrap_or_default();
        if samples.is_empty() {
            return Value::Null;
        }
        samples.sort_by(f64::total_cmp);
        let index = ((samples.len() as f64 * 0.99).ceil() as usize).clamp(1, samples.len()) - 1;
        json!(round3(samples[index]))
    }
}
