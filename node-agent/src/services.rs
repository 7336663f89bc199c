//! Services on the device: the controller's signed service table
//! (`nodes/{id}/services`) says where the ready replicas behind each
//! Service are. Workloads find them three ways:
//!
//! - environment variables at start, Kubernetes style: `WEB_SERVICE_HOST`,
//!   `WEB_SERVICE_PORT` (and `WEB_SERVICE_PORT_HTTP` for a named port);
//! - the file `/run/flotilla/services/endpoints` (bind-mounted read-only,
//!   rewritten atomically on every change), one line per Service port:
//!   `<service> <port name or -> <local address:port> <endpoint> ...`;
//! - a local port: each TCP Service port is forwarded from a loopback
//!   address of its own (`127.77.x.y`, stable per Service, like a cluster
//!   IP: containers share the device's network, so any port number is
//!   free there) to the endpoints in turn (round robin), skipping one that
//!   refuses the connection. The forwarders run on a thread of their own,
//!   so proxied traffic never competes with the MQTT connection's
//!   keep-alive.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firmware_proto::{NodeId, Protocol, ServicePort, ServiceTable, decode_signed};

use crate::runtime::MountSpec;
use crate::signed::Verifier;

/// Node label with the address the node's replicas are reached at (the
/// controller's Service endpoints use it).
pub const ADDRESS_LABEL: &str = "flotilla.io/address";
/// Where containers see the service directory.
pub const MOUNT_PATH: &str = "/run/flotilla/services";
/// How long a forwarded connection waits for an endpoint to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The node's services: the last table applied, the file, the forwarders.
pub struct ServiceDirectory {
    node_id: NodeId,
    verify: Verifier,
    dir: PathBuf,
    state: Mutex<State>,
    forwarders: Forwarders,
}

#[derive(Default)]
struct State {
    generation: u64,
    ports: Vec<ServicePort>,
}

impl ServiceDirectory {
    /// A directory for `node_id` writing under `dir`; tables must verify
    /// with `verify` (the controller's key).
    pub fn new(node_id: NodeId, verify: Verifier, dir: PathBuf) -> Self {
        ServiceDirectory { node_id, verify, dir, state: Mutex::default(), forwarders: Forwarders::default() }
    }

    /// Applies a service table frame: checked, then the file and the
    /// forwarders follow it. Returns whether it changed anything. The
    /// forwarders run on their own runtime, not the caller's.
    pub fn apply(&self, frame: &[u8]) -> Result<bool, String> {
        let (table, _) = crate::signed::check(frame, decode_signed::<ServiceTable>, &self.verify, &self.node_id)
            .map_err(|refusal| refusal.describe("service table"))?;
        self.apply_table(&table)
    }

    fn apply_table(&self, table: &ServiceTable) -> Result<bool, String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if table.generation <= state.generation {
            return Ok(false);
        }
        state.generation = table.generation;
        let ports: Vec<ServicePort> = table.services.iter().cloned().collect();
        if ports == state.ports {
            return Ok(false);
        }
        state.ports = ports;
        let file = self.dir.join("endpoints");
        if let Err(e) = std::fs::create_dir_all(&self.dir)
            .and_then(|()| crate::persist::write_atomic(&file, endpoints_file(&state.ports).as_bytes()))
        {
            tracing::warn!(file = %file.display(), error = %e, "cannot write the service endpoints file");
        }
        self.forwarders.follow(&state.ports);
        tracing::info!(generation = table.generation, services = state.ports.len(), "service table applied");
        Ok(true)
    }

    /// What a container starting now gets: the environment variables and
    /// the read-only mount of the directory.
    pub fn for_container(&self) -> (Vec<String>, MountSpec) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let _ = std::fs::create_dir_all(&self.dir);
        let mount =
            MountSpec { source: self.dir.clone(), destination: MOUNT_PATH.into(), read_only: true, tmpfs: false };
        (environment(&state.ports), mount)
    }
}

/// `web` -> `WEB`, `shop.cart-api` -> `SHOP_CART_API`.
fn env_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// The loopback address a Service is forwarded from: stable per name.
pub fn local_address(service: &str) -> Ipv4Addr {
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let hash = service.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let [a, b, ..] = hash.to_be_bytes();
    // .0 and .255 avoided in the last byte.
    Ipv4Addr::new(127, 77, a, b.clamp(1, 254))
}

fn environment(ports: &[ServicePort]) -> Vec<String> {
    let mut env = Vec::new();
    let mut seen = Vec::new();
    for port in ports {
        let name = env_name(port.service.as_str());
        if !seen.contains(&name) {
            env.push(format!("{name}_SERVICE_HOST={}", local_address(port.service.as_str())));
            env.push(format!("{name}_SERVICE_PORT={}", port.port));
            seen.push(name.clone());
        }
        if !port.port_name.is_empty() {
            env.push(format!("{name}_SERVICE_PORT_{}={}", env_name(&port.port_name), port.port));
        }
    }
    env
}

fn endpoints_file(ports: &[ServicePort]) -> String {
    let mut out = String::from("# service port local endpoints... (written by flotilla-agent; ready endpoints only)\n");
    for port in ports {
        let name = if port.port_name.is_empty() { "-" } else { port.port_name.as_str() };
        out.push_str(&format!("{} {name} {}:{}", port.service, local_address(port.service.as_str()), port.port));
        for endpoint in &port.endpoints {
            out.push_str(&format!(" {}:{}", Ipv4Addr::from(endpoint.address), endpoint.port));
        }
        out.push('\n');
    }
    out
}

/// One forwarder per TCP Service port, each a listener task that reads its
/// current endpoints from a shared list.
///
/// They run on a runtime of their own (one thread, started with the first
/// forwarder), never on the caller's: the channel applies service tables on
/// the MQTT thread, and every proxied byte copied there is time its event
/// loop, keep-alive pings included, waits for.
#[derive(Default)]
struct Forwarders {
    running: Mutex<HashMap<SocketAddrV4, Forwarder>>,
    thread: Mutex<Option<ForwarderThread>>,
}

struct Forwarder {
    endpoints: Arc<Mutex<Vec<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarders {
    /// Starts forwarders for new Service ports, updates the endpoints of
    /// the others and stops those that are gone.
    fn follow(&self, ports: &[ServicePort]) {
        let wanted: BTreeMap<SocketAddrV4, Vec<SocketAddr>> = ports
            .iter()
            .filter(|p| p.protocol == Protocol::Tcp)
            .flat_map(|p| {
                let endpoints: Vec<SocketAddr> =
                    p.endpoints.iter().map(|e| SocketAddr::from((Ipv4Addr::from(e.address), e.port))).collect();
                let local = SocketAddrV4::new(local_address(p.service.as_str()), p.port);
                // A NodePort or LoadBalancer Service on a device running
                // one of its replicas: served on every address too. On the
                // Service's own port, that listener is the local one as well
                // (Linux refuses a wildcard beside a listening address).
                match p.node_port {
                    Some(port) if port == p.port => vec![(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port), endpoints)],
                    Some(port) => {
                        vec![(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port), endpoints.clone()), (local, endpoints)]
                    }
                    None => vec![(local, endpoints)],
                }
            })
            .collect();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|local, forwarder| {
            let keep = wanted.contains_key(local);
            if !keep {
                forwarder.task.abort();
            }
            keep
        });
        for (local, endpoints) in wanted {
            match running.get(&local) {
                Some(forwarder) => *forwarder.endpoints.lock().unwrap_or_else(|p| p.into_inner()) = endpoints,
                None => {
                    let Some(runtime) = self.runtime() else { return };
                    let endpoints = Arc::new(Mutex::new(endpoints));
                    let task = runtime.spawn(forward(local, endpoints.clone()));
                    running.insert(local, Forwarder { endpoints, task });
                }
            }
        }
    }

    /// The forwarders' runtime, started on first use: a node without TCP
    /// Services runs no extra thread (nor do the fleet simulator's
    /// thousands of devices in one process).
    fn runtime(&self) -> Option<tokio::runtime::Handle> {
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if thread.is_none() {
            match ForwarderThread::start() {
                Ok(started) => *thread = Some(started),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the service forwarders' thread; not forwarding");
                    return None;
                }
            }
        }
        thread.as_ref().map(|thread| thread.handle.clone())
    }
}

/// A single-threaded runtime on a thread of its own. Dropping it stops the
/// thread and with it every forwarder and forwarded connection.
struct ForwarderThread {
    handle: tokio::runtime::Handle,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ForwarderThread {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        // The runtime is dropped on its own thread, when `stop` is notified:
        // dropping it where this is dropped could be inside another
        // runtime, which tokio refuses.
        let thread = std::thread::Builder::new()
            .name("forwarders".into())
            .spawn(move || runtime.block_on(stopped.notified()))?;
        Ok(ForwarderThread { handle, stop, thread: Some(thread) })
    }
}

impl Drop for ForwarderThread {
    fn drop(&mut self) {
        // Stored as a permit if the thread is not waiting yet.
        self.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts on `local` and hands each connection to the next endpoint.
async fn forward(local: SocketAddrV4, endpoints: Arc<Mutex<Vec<SocketAddr>>>) {
    let listener = match tokio::net::TcpListener::bind(local).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(%local, error = %e, "cannot forward this Service port (the address is taken?)");
            return;
        }
    };
    tracing::info!(%local, "forwarding a Service port");
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((inbound, _)) = listener.accept().await else { continue };
        let (endpoints, next) = (endpoints.clone(), next.clone());
        tokio::spawn(async move {
            let candidates = endpoints.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(mut outbound) = connect_round_robin(&candidates, &next).await {
                let mut inbound = inbound;
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// Connects to the endpoints in turn from the next one, skipping those
/// that refuse or time out; `None` when none accepts.
async fn connect_round_robin(endpoints: &[SocketAddr], next: &AtomicUsize) -> Option<tokio::net::TcpStream> {
    if endpoints.is_empty() {
        return None;
    }
    let start = next.fetch_add(1, Ordering::Relaxed);
    for i in 0..endpoints.len() {
        let endpoint = endpoints[(start + i) % endpoints.len()];
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(e)) => tracing::debug!(%endpoint, error = %e, "endpoint refused; trying the next"),
            Err(_) => tracing::debug!(%endpoint, "endpoint timed out; trying the next"),
        }
    }
    None
}

/// The address this device is reached at from `broker` (the local end of
/// a route to it; nothing is sent).
pub fn detect_address(broker_host: &str, broker_port: u16) -> Option<Ipv4Addr> {
    use std::net::ToSocketAddrs;
    let target = (broker_host, broker_port).to_socket_addrs().ok()?.find(SocketAddr::is_ipv4)?;
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect(target).ok()?;
    match socket.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// The directory for `data_dir`.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join("services")
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_proto::{Endpoint, Name, samples};
    use std::io::{Read, Write};

    fn directory(dir: &Path) -> ServiceDirectory {
        let verify: Verifier = Box::new(|_, signature| signature.0 == [5; 64]);
        ServiceDirectory::new(samples::node_id(), verify, dir.to_owned())
    }

    fn frame(table: &ServiceTable, signature: [u8; 64]) -> Vec<u8> {
        firmware_proto::encode_signed_to_vec(table, |_| firmware_proto::Bytes(signature)).unwrap()
    }

    #[test]
    fn a_table_becomes_environment_and_a_file_and_stale_or_forged_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _inside = runtime.enter();
        let services = directory(dir.path());
        let table = samples::service_table();
        assert!(services.apply(&frame(&table, [5; 64])).unwrap());
        let (env, mount) = services.for_container();
        let host = local_address("web");
        assert_eq!(
            env,
            [format!("WEB_SERVICE_HOST={host}"), "WEB_SERVICE_PORT=80".into(), "WEB_SERVICE_PORT_HTTP=80".into()]
        );
        assert_eq!((mount.destination.as_str(), mount.read_only), (MOUNT_PATH, true));
        let file = std::fs::read_to_string(dir.path().join("endpoints")).unwrap();
        assert!(file.ends_with(&format!("web http {host}:80 10.77.0.11:8080 10.77.0.12:8080\n")), "{file}");
        // The same generation again, a forged one, another node's: nothing changes.
        assert!(!services.apply(&frame(&table, [5; 64])).unwrap());
        let mut newer = table.clone();
        newer.generation += 1;
        newer.services[0].endpoints.clear();
        assert!(services.apply(&frame(&newer, [6; 64])).unwrap_err().contains("signature"));
        let mut elsewhere = newer.clone();
        elsewhere.node_id = Name::new("other").unwrap();
        assert!(services.apply(&frame(&elsewhere, [5; 64])).unwrap_err().contains("other"));
        assert!(services.apply(b"\x01\x08junk").unwrap_err().contains("malformed"));
        assert!(std::fs::read_to_string(dir.path().join("endpoints")).unwrap().contains("10.77.0.12:8080"));
    }

    #[test]
    fn local_addresses_are_stable_loopback_addresses() {
        assert_eq!(local_address("web"), local_address("web"));
        assert_ne!(local_address("web"), local_address("db"));
        assert!(local_address("web").is_loopback());
    }

    /// A real forwarder on a loopback address: connections alternate
    /// between two echo servers, and a dead endpoint is skipped.
    #[test]
    fn the_forwarder_balances_connections_and_skips_a_dead_endpoint() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let server = |tag: u8| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            std::thread::spawn(move || {
                for mut stream in listener.incoming().map_while(Result::ok) {
                    let _ = stream.write_all(&[tag]);
                }
            });
            port
        };
        let (one, two) = (server(1), server(2));
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let _inside = runtime.enter();
        let services = directory(dir.path());
        let mut table = samples::service_table();
        table.services[0].service = Name::new(&format!("fwd-test-{}", std::process::id())).unwrap();
        table.services[0].port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        table.services[0].endpoints.clear();
        for port in [one, dead, two] {
            table.services[0].endpoints.push(Endpoint { address: [127, 0, 0, 1], port }).unwrap();
        }
        services.apply(&frame(&table, [5; 64])).unwrap();
        let local = SocketAddr::from((local_address(table.services[0].service.as_str()), table.services[0].port));
        let read_one = || -> Option<u8> {
            let mut stream = std::net::TcpStream::connect(local).ok()?;
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).ok()?;
            Some(byte[0])
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let first = loop {
            if let Some(tag) = read_one() {
                break tag;
            }
            assert!(std::time::Instant::now() < deadline, "the forwarder never accepted");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut tags = vec![first];
        for _ in 0..5 {
            tags.push(read_one().expect("forwarded"));
        }
        assert!(tags.contains(&1) && tags.contains(&2), "{tags:?}");
    }

    /// CPU time the calling thread has used: the scheduler's count, or the
    /// tick-sampled one (USER_HZ is 100 on Linux) where schedstats are off.
    fn thread_cpu() -> Duration {
        let precise = std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
            .filter(|&ns| ns > 0);
        if let Some(ns) = precise {
            return Duration::from_nanos(ns);
        }
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        // utime and stime: fields 14 and 15, the 12th and 13th after the name.
        Duration::from_millis(10 * (fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()))
    }

    /// Heavy traffic through a forwarder does not hold back the MQTT
    /// thread. The table is applied from a single-threaded runtime, as the
    /// channel's event loop applies it; that runtime then runs only a 10 ms
    /// timer (standing in for the keep-alive's) while 128 MiB go through
    /// the forwarder into a sink. None of the copying may happen on that
    /// thread: every moment of it would be a moment the event loop, and a
    /// keep-alive ping due then, waits.
    #[test]
    fn heavy_forwarded_traffic_stays_off_the_mqtt_thread() {
        const TOTAL: usize = 128 << 20;
        let mqtt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let services = directory(dir.path());
        let mut table = samples::service_table();
        table.services[0].service = Name::new(&format!("fwd-load-{}", std::process::id())).unwrap();
        table.services[0].port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        table.services[0].endpoints.clear();
        let endpoint = Endpoint { address: [127, 0, 0, 1], port: sink.local_addr().unwrap().port() };
        table.services[0].endpoints.push(endpoint).unwrap();
        let local = SocketAddr::from((local_address(table.services[0].service.as_str()), table.services[0].port));
        mqtt.block_on(async { services.apply(&frame(&table, [5; 64])) }).unwrap();

        // Every wait below ends by this deadline: the test cannot hang.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let sink = std::thread::spawn(move || -> std::io::Result<usize> {
            sink.set_nonblocking(true)?;
            let mut stream = loop {
                match sink.accept() {
                    Ok((stream, _)) => break stream,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => return Err(e),
                }
            };
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let (mut buffer, mut received) = (vec![0u8; 64 << 10], 0);
            loop {
                match stream.read(&mut buffer)? {
                    0 => return Ok(received),
                    n => received += n,
                }
            }
        });
        let client = std::thread::spawn(move || -> std::io::Result<usize> {
            let mut stream = loop {
                match std::net::TcpStream::connect(local) {
                    Ok(stream) => break stream,
                    Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                    Err(e) => return Err(e),
                }
            };
            stream.set_write_timeout(Some(Duration::from_secs(10)))?;
            let (chunk, mut sent) = (vec![7u8; 64 << 10], 0);
            while sent < TOTAL {
                stream.write_all(&chunk)?;
                sent += chunk.len();
            }
            stream.shutdown(std::net::Shutdown::Write)?;
            Ok(sent)
        });

        // The MQTT thread meanwhile: the timer, until the sink has it all.
        let (started, cpu_before) = (std::time::Instant::now(), thread_cpu());
        let max_lag = mqtt.block_on(async {
            let mut max_lag = Duration::ZERO;
            while !sink.is_finished() && std::time::Instant::now() < deadline {
                let due = tokio::time::Instant::now() + Duration::from_millis(10);
                tokio::time::sleep_until(due).await;
                max_lag = max_lag.max(due.elapsed());
            }
            max_lag
        });
        let (wall, mqtt_cpu) = (started.elapsed(), thread_cpu() - cpu_before);

        let sent = client.join().unwrap().expect("the client's side");
        let received = sink.join().unwrap().expect("the sink's side");
        assert_eq!((sent, received), (TOTAL, TOTAL), "not everything went through the forwarder");
        assert!(
            mqtt_cpu * 10 < wall,
            "the MQTT thread was on the CPU for {mqtt_cpu:?} of the {wall:?} the traffic took: the forwarder copies there"
        );
        assert_eq!(mqtt.metrics().num_alive_tasks(), 0, "forwarder tasks live on the MQTT runtime");
        assert!(max_lag < Duration::from_secs(1), "the MQTT thread's 10 ms timer was {max_lag:?} late");
    }
}
