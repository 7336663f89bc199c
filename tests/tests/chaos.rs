//! The chaos suite (issue 20): two controllers on a three-member etcd,
//! Mosquitto, a real agent with real containers, and failures injected
//! one after the other while clients apply, delete and read through
//! whichever controller answers. Each case checks invariants, not timings:
//! every acknowledged write is there afterwards and nothing appears that
//! no client sent (the Jepsen-style checker, `flotilla_e2e::history`), no
//! replica is lost or restarted that the failure did not touch, and the
//! fleet converges. Bounded: each case runs well under two minutes.
//!
//! Needs root (CI runs as root), etcd-server, Mosquitto and skopeo
//! (scripts/setup).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_e2e::ControllerProcess;
use flotilla_e2e::etcd::EtcdCluster;
use flotilla_e2e::fleet::{
    AgentProcess, SLEEPER, apply, pods, push_busybox_pinned, running_count as running, shell_deployment, wait_until,
};
use flotilla_e2e::history::{self, Clients, Endpoint};
use flotilla_e2e::mosquitto::{Mosquitto, MosquittoBeside};

/// Two controllers on one etcd and one Mosquitto, and what restarts them.
struct Site {
    _dir: tempfile::TempDir,
    cluster: EtcdCluster,
    broker: Option<Mosquitto>,
    broker_dir: PathBuf,
    data: [PathBuf; 2],
    ports: [u16; 2],
    args: Vec<String>,
    controllers: [Option<ControllerProcess>; 2],
}

impl Site {
    fn start() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let cluster = EtcdCluster::start(3, dir.path()).unwrap();
        let MosquittoBeside { data, dir: broker_dir, url, broker, .. } = MosquittoBeside::start(dir.path());
        let args: Vec<String> = [
            "--store",
            &cluster.url(),
            "--mqtt-url",
            &url,
            "--mosquitto-dir",
            broker_dir.to_str().unwrap(),
            "--leader-lease",
            "3s",
        ]
        .map(String::from)
        .to_vec();
        let second = dir.path().join("controller-b");
        let ports = [flotilla_e2e::free_port().unwrap(), flotilla_e2e::free_port().unwrap()];
        let mut site = Site {
            _dir: dir,
            cluster,
            broker: Some(broker),
            broker_dir,
            data: [data, second],
            ports,
            args,
            controllers: [None, None],
        };
        site.start_controller(0);
        wait_until("a leads", Duration::from_secs(20), || site.leader());
        std::fs::create_dir_all(&site.data[1]).unwrap();
        for file in ["token", "secrets.key", "controller.key", "controller.pub"] {
            std::fs::copy(site.data[0].join(file), site.data[1].join(file)).unwrap();
        }
        site.start_controller(1);
        site
    }

    fn dir(&self) -> &Path {
        self._dir.path()
    }

    fn start_controller(&mut self, i: usize) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mqtt = flotilla_e2e::free_port().unwrap();
        self.controllers[i] = Some(ControllerProcess::start_on(&self.data[i], self.ports[i], mqtt, &args).unwrap());
    }

    fn controller(&self, i: usize) -> &ControllerProcess {
        self.controllers[i].as_ref().expect("running")
    }

    /// Which controller leads now, by `flotilla_controller_leading`.
    fn leader(&self) -> Option<usize> {
        (0..2).find(|&i| {
            self.controllers[i]
                .as_ref()
                .and_then(|c| c.metrics().ok())
                .is_some_and(|m| m.lines().any(|l| l.trim() == "flotilla_controller_leading 1"))
        })
    }

    fn wait_leader(&self, not: Option<usize>) -> usize {
        wait_until("a leader", Duration::from_secs(30), || self.leader().filter(|&i| Some(i) != not))
    }

    fn endpoints(&self) -> Vec<Endpoint> {
        (0..2)
            .map(|i| Endpoint {
                url: format!("http://127.0.0.1:{}", self.ports[i]),
                token: std::fs::read_to_string(self.data[0].join("token")).unwrap().trim().to_owned(),
            })
            .collect()
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.controller(i).pid().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success(), "kill {signal}");
    }
}

fn check_history(site: &Site, clients: Clients, leader: usize) -> history::Report {
    let operations = clients.stop();
    // Both controllers' mirrors have caught up by now.
    std::thread::sleep(Duration::from_millis(500));
    let stored = history::stored(&site.endpoints()[leader]).unwrap();
    let report = history::check(&operations, &stored);
    eprintln!(
        "history: {} operations, {} acknowledged, {} unanswered, {} reads, {} violations",
        report.operations,
        report.acknowledged,
        report.unknown,
        report.reads,
        report.violations.len()
    );
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert!(report.acknowledged > 50, "too few acknowledged operations to mean anything: {report:?}");
    report
}

/// A leader stalled past its lease (SIGSTOP: a VM frozen, a long GC) is
/// replaced and, woken, writes nothing and stands by; an etcd member is
/// lost and comes back; the leader is killed; another member is lost. The
/// clients' history holds, the device's replicas never restart.
#[test]
fn stalled_and_killed_leaders_and_lost_etcd_members_lose_no_acknowledged_write() {
    let mut site = Site::start();
    let image = push_busybox_pinned(site.controller(0), site.dir());
    let agent = AgentProcess::start(site.controller(0), "chaos-a", &site.dir().join("agent-a"));
    flotilla_e2e::fleet::wait_for_ready_nodes(site.controller(0), 1, Duration::from_secs(60));
    apply(site.controller(0), &shell_deployment("steady", &image, 2, SLEEPER));
    wait_until("two replicas", Duration::from_secs(90), || (running(site.controller(0), "steady") == 2).then_some(()));
    let containers = agent.running();
    assert_eq!(containers.len(), 2, "{containers:?}");
    let clients = Clients::start(site.endpoints(), 3, 6);
    std::thread::sleep(Duration::from_secs(2));

    // 1. The leader stalls past its lease: the other leads; woken, the old
    // one finds its term over and stands by.
    let stalled = site.wait_leader(None);
    let stood_by = site.controller(stalled).log_text().matches("standing by").count();
    site.signal(stalled, "-STOP");
    let other = 1 - stalled;
    wait_until("the other controller leads", Duration::from_secs(20), || {
        site.controller(other).log_text().contains("this controller leads").then_some(())
    });
    site.signal(stalled, "-CONT");
    wait_until("the woken leader stands by", Duration::from_secs(20), || {
        let log = site.controller(stalled).log_text();
        (log.contains("term as leader ended") && log.matches("standing by").count() > stood_by).then_some(())
    });
    assert_eq!(site.leader(), Some(other), "two leaders, or none");

    // 2. An etcd member is lost and comes back.
    site.cluster.kill(0);
    std::thread::sleep(Duration::from_secs(3));
    site.cluster.restart(0).unwrap();

    // 3. The leader is killed; the other takes over; the killed one comes
    // back as a standby.
    let killed = site.wait_leader(None);
    site.controllers[killed].take().unwrap().kill().unwrap();
    let leader = site.wait_leader(Some(killed));
    site.start_controller(killed);

    // 4. Another member, while the clients go on.
    site.cluster.kill(2);
    std::thread::sleep(Duration::from_secs(3));
    site.cluster.restart(2).unwrap();
    std::thread::sleep(Duration::from_secs(2));

    let leader = site.leader().unwrap_or(leader);
    check_history(&site, clients, leader);
    // The fleet: the replicas never restarted, the node stayed Ready, and
    // a change still converges.
    assert_eq!(agent.running(), containers, "a replica restarted");
    apply(site.controller(leader), &shell_deployment("steady", &image, 3, SLEEPER));
    wait_until("three replicas", Duration::from_secs(60), || {
        (running(site.controller(leader), "steady") == 3).then_some(())
    });
    for container in &containers {
        assert!(agent.running().contains(container), "{container:?} restarted");
    }
}

/// A power cut of the whole site: etcd, the broker, both controllers and
/// the device (its containers too) die at once and start again. The fleet
/// comes back with the same workloads, and acknowledged writes are there.
#[test]
fn a_power_cut_of_the_whole_site_brings_back_the_same_workloads() {
    let mut site = Site::start();
    let image = push_busybox_pinned(site.controller(0), site.dir());
    let agent_dir = site.dir().join("agent-a");
    let mut agent = AgentProcess::start(site.controller(0), "cut-a", &agent_dir);
    flotilla_e2e::fleet::wait_for_ready_nodes(site.controller(0), 1, Duration::from_secs(60));
    apply(site.controller(0), &shell_deployment("web", &image, 2, SLEEPER));
    apply(site.controller(0), &shell_deployment("worker", &image, 1, SLEEPER));
    wait_until("three replicas", Duration::from_secs(90), || {
        (running(site.controller(0), "web") == 2 && running(site.controller(0), "worker") == 1).then_some(())
    });
    let clients = Clients::start(site.endpoints(), 2, 4);
    std::thread::sleep(Duration::from_secs(3));
    let operations_before_cut = clients.stop();
    let replicas_before: Vec<String> = pods(site.controller(0)).into_iter().map(|(name, _, _)| name).collect();

    // Everything at once.
    let cut = Instant::now();
    agent.kill9();
    stop_containers(&agent_dir);
    for i in 0..2 {
        site.controllers[i].take().unwrap().kill().unwrap();
    }
    site.broker.take();
    for member in 0..3 {
        site.cluster.kill(member);
    }

    // And back.
    for member in 0..3 {
        site.cluster.restart(member).unwrap();
    }
    site.broker = Some(Mosquitto::start(&site.broker_dir));
    site.start_controller(0);
    site.start_controller(1);
    let leader = site.wait_leader(None);
    let agent = AgentProcess::start(site.controller(leader), "cut-a", &agent_dir);
    // The containers on the device are the replicas of before (the pods'
    // status in the store says Running from before the cut: not evidence).
    let expected: Vec<String> = replicas_before.iter().map(|name| format!("{name}.main")).collect();
    wait_until("the same replicas running on the device again", Duration::from_secs(120), || {
        let running: Vec<String> = agent.running().into_iter().map(|(id, _)| id).collect();
        (running == expected).then_some(())
    });
    wait_until("the same replicas Running in the API", Duration::from_secs(60), || {
        let now = pods(site.controller(leader));
        let names: Vec<String> = now.iter().map(|(name, _, _)| name.clone()).collect();
        (names == replicas_before && now.iter().all(|(_, phase, _)| phase == "Running")).then_some(())
    });
    eprintln!("site back, same workloads running, {:?} after the cut", cut.elapsed());
    let stored = history::stored(&site.endpoints()[leader]).unwrap();
    let report = history::check(&operations_before_cut, &stored);
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}

/// What a power cut does to a device's containers: they are gone.
fn stop_containers(agent_dir: &Path) {
    let status = Command::new(flotilla_e2e::binary("flotilla-agent").unwrap())
        .args(["stop-all", "--data-dir"])
        .arg(agent_dir)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "stop-all");
}
