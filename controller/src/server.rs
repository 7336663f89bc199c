//! `flotilla server`: opens the store, starts the broker, the control
//! channel and the reconcilers, and serves the API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use firmware_proto::mqtt::{DEFAULT_MQTT_PORT, DEFAULT_MQTTS_PORT, parse_mqtt_url};

use crate::api::{self, ApiState, Metrics};
use crate::fleet::credentials::{ControllerKey, Enrolment};
use crate::fleet::enrol_api::EnrolState;
use crate::fleet::{self, FleetConfig, broker};
use crate::reconcile;
use crate::store::{EtcdStore, RedbStore, SecretCipher, Store};

/// File names inside the data directory.
pub const TOKEN_FILE: &str = "token";
/// The Secret encryption key.
pub const SECRETS_KEY_FILE: &str = "secrets.key";
/// The redb database.
pub const STORE_FILE: &str = "store.redb";

/// Where state lives unless `--data-dir` says otherwise: `$FLOTILLA_DATA_DIR`,
/// else `/var/lib/flotilla`
/// for root (a device or server install), else `$XDG_DATA_HOME/flotilla` or
/// `~/.local/share/flotilla`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLOTILLA_DATA_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    // /proc/self is owned by the process's effective uid.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if root {
        return PathBuf::from("/var/lib/flotilla");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("flotilla");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/flotilla"),
        None => PathBuf::from("flotilla-data"),
    }
}

/// Reads the API token, creating a random one (owner-only file) on first start.
pub fn load_or_create_token(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_owned();
            anyhow::ensure!(!token.is_empty(), "{} is empty; delete it to get a new token", path.display());
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = crate::store::random_bytes::<32>()?;
            let token = hex::encode(bytes);
            crate::store::write_private(path, format!("{token}\n").as_bytes())
                .with_context(|| format!("writing the API token to {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a new API token");
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("reading the API token {}", path.display())),
    }
}

/// Where the objects are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// The embedded store in the data directory.
    Redb,
    /// etcd v3.
    Etcd(crate::store::EtcdTarget),
}

/// Options of a running server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Durable state.
    pub data_dir: PathBuf,
    /// Where the objects are.
    pub store: StoreChoice,
    /// API listen address.
    pub api_addr: SocketAddr,
    /// Where the embedded broker listens; `None` with an external broker.
    pub mqtt_listen: Option<SocketAddr>,
    /// The control channel.
    pub fleet: FleetConfig,
    /// What one device login may send to the embedded broker.
    pub login_limits: crate::fleet::gate::LoginLimits,
    /// Largest API request body, bytes.
    pub max_body: usize,
    /// Free bytes applies and uploads leave on the data volume (`None`:
    /// 5 %, at most 256 MiB).
    pub disk_reserve: Option<u64>,
    /// The names of the TLS server certificate; `None`: no TLS (`--plain`).
    pub tls_names: Option<Vec<String>>,
    /// How long node credentials live.
    pub credential_lifetime: Duration,
    /// An external Mosquitto's files to keep in step (`--mosquitto-dir`).
    pub mosquitto_dir: Option<PathBuf>,
    /// How long the leader's lease lasts on etcd.
    pub leader_lease: Duration,
    /// Where the registry keeps its files (`None`: `<data dir>/registry`).
    pub registry_dir: Option<PathBuf>,
}

impl ServerConfig {
    /// The configuration `flotilla server` runs with.
    pub fn from_args(args: crate::cli::ServerArgs) -> anyhow::Result<Self> {
        let advertise = args.advertise.clone().unwrap_or_else(|| {
            if args.api_addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { args.api_addr.ip().to_string() }
        });
        let tls = !args.plain;
        let mut mqtt_more = Vec::new();
        let (mqtt_listen, mqtt_host, mqtt_port, advertised_mqtt_url) = match &args.mqtt_url {
            Some(urls) => {
                let mut brokers = Vec::new();
                for url in firmware_proto::mqtt::broker_list(urls) {
                    let (host, port) = parse_mqtt_url(url).map_err(|e| {
                        anyhow::anyhow!(
                            "{url}: {e} (the controller reaches an external broker over plain TCP only yet)"
                        )
                    })?;
                    brokers.push((host.to_owned(), port));
                }
                anyhow::ensure!(!brokers.is_empty(), "--mqtt-url {urls:?} names no broker");
                let (host, port) = brokers.remove(0);
                mqtt_more = brokers;
                (None, host, port, urls.clone())
            }
            None => {
                let listen = args.mqtt_listen.unwrap_or_else(|| {
                    let port = if tls { DEFAULT_MQTTS_PORT } else { DEFAULT_MQTT_PORT };
                    SocketAddr::from(([0, 0, 0, 0], port))
                });
                let port = listen.port();
                let host = if listen.ip().is_unspecified() { "127.0.0.1".to_owned() } else { listen.ip().to_string() };
                let scheme = if tls { "mqtts" } else { "mqtt" };
                (Some(listen), host, port, format!("{scheme}://{advertise}:{port}"))
            }
        };
        let tls_names = tls.then(|| {
            let listening: Vec<std::net::IpAddr> =
                [Some(args.api_addr), mqtt_listen].into_iter().flatten().map(|a| a.ip()).collect();
            crate::tls::server_names(&advertise, &listening, &args.tls_names)
        });
        Ok(ServerConfig {
            data_dir: args.data_dir.unwrap_or_else(default_data_dir),
            store: args.store,
            api_addr: args.api_addr,
            mqtt_listen,
            fleet: FleetConfig {
                prefix: args.mqtt_prefix,
                mqtt_host,
                mqtt_port,
                mqtt_more,
                advertised_mqtt_url,
                default_registry: format!("{advertise}:{}", args.api_addr.port()),
                keep_alive: Duration::from_secs(30),
                eviction_grace: args.eviction_grace,
                lease: args.lease,
            },
            login_limits: crate::fleet::gate::LoginLimits {
                messages_per_second: args.node_messages_per_sec,
                bytes_per_second: args.node_bytes_per_sec,
                cut_off_for: args.node_cut_off,
                ..Default::default()
            },
            max_body: (args.max_request_body_mib as usize).saturating_mul(1 << 20),
            disk_reserve: args.disk_reserve_mib.map(|mib| mib.saturating_mul(1 << 20)),
            tls_names,
            credential_lifetime: args.node_credential_lifetime,
            mosquitto_dir: args.mosquitto_dir,
            leader_lease: args.leader_lease,
            registry_dir: args.registry_dir,
        })
    }
}

/// The opened store: the embedded one, or etcd with its election.
enum Opened {
    Redb(Arc<RedbStore>),
    Etcd(Arc<EtcdStore>),
}

/// Runs until `shutdown` completes.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    create_private_dir(&config.data_dir)?;
    let token = load_or_create_token(&config.data_dir.join(TOKEN_FILE))?;
    let cipher = SecretCipher::load_or_create(&config.data_dir.join(SECRETS_KEY_FILE))?;
    let store_path = config.data_dir.join(STORE_FILE);
    let choice = config.store.clone();
    let opened = tokio::task::spawn_blocking(move || -> anyhow::Result<Opened> {
        Ok(match choice {
            StoreChoice::Redb => Opened::Redb(Arc::new(RedbStore::open(&store_path, cipher)?)),
            StoreChoice::Etcd(target) => Opened::Etcd(Arc::new(EtcdStore::open(target, cipher)?)),
        })
    })
    .await
    .context("opening the store")??;
    let (store, etcd): (Arc<dyn Store>, Option<Arc<EtcdStore>>) = match &opened {
        Opened::Redb(redb) => (redb.clone(), None),
        Opened::Etcd(etcd) => (etcd.clone(), Some(etcd.clone())),
    };
    let state = Arc::new(ApiState {
        store: store.clone(),
        token,
        metrics: Metrics::default(),
        ready: AtomicBool::new(false),
        tables: Default::default(),
        max_body: config.max_body,
        space: crate::space::SpaceGuard::new(&config.data_dir, config.disk_reserve),
    });
    state.metrics.register_space(&state.space);
    state.metrics.register_fleet(store.clone());
    let listener = tokio::net::TcpListener::bind(config.api_addr)
        .await
        .with_context(|| format!("listening on {} (is another server running?)", config.api_addr))?;
    let tls = match &config.tls_names {
        Some(names) => {
            let fleet_ca = crate::tls::FleetCa::load_or_create(&config.data_dir)?;
            let browser_ca = crate::tls::FleetCa::load_or_create_kind(&config.data_dir, crate::tls::BROWSER)?;
            Some(crate::tls::ServerTls::start(fleet_ca, browser_ca, names.clone())?)
        }
        None => None,
    };
    let controller_key = Arc::new(ControllerKey::load_or_create(&config.data_dir)?);
    crate::replica_spec::set_data_key_root(controller_key.derive_secret("flotilla/v1 secret data keys"));
    let enrolment = match &etcd {
        None => Enrolment::load_or_create(&config.data_dir)?,
        Some(etcd) => {
            let (etcd, data_dir) = (etcd.clone(), config.data_dir.clone());
            tokio::task::spawn_blocking(move || -> anyhow::Result<Enrolment> {
                check_shared_keys(&etcd, &data_dir)?;
                Enrolment::load_or_create_shared(etcd.enrolment_document(), &data_dir)
            })
            .await
            .context("reading the shared enrolment")??
        }
    };
    enrolment.set_credential_lifetime(config.credential_lifetime);
    // An external broker's password file holds one password per user, so
    // a rotation there keeps the password (the MAC key still rotates).
    enrolment.set_rotate_password(config.mqtt_listen.is_some());
    let mut fleet_config = config.fleet.clone();
    if let Some(listen) = config.mqtt_listen {
        if etcd.is_some() {
            tracing::warn!(
                "the embedded broker serves only the devices connected to this controller: several controllers \
                 on one etcd need an external broker (--mqtt-url) to take over each other's devices"
            );
        }
        let refusals = state.metrics.node_refusals();
        let broker = broker::start(
            listen,
            enrolment.clone(),
            20_000,
            &fleet_config.prefix,
            config.login_limits,
            refusals,
            tls.as_ref().map(|tls| tls.acceptor.clone()),
        )
        .await?;
        // The controller's own connection skips the gate.
        fleet_config.mqtt_host = broker.internal.ip().to_string();
        fleet_config.mqtt_port = broker.internal.port();
    }
    let enrol_state = Arc::new(EnrolState {
        enrolment: enrolment.clone(),
        api_token: state.token.clone(),
        controller_key: controller_key.public_key(),
        mqtt_url: config.fleet.advertised_mqtt_url.clone(),
        prefix: config.fleet.prefix.clone(),
        ca_pem: tls.as_ref().map(|tls| tls.ca.cert_pem().to_owned()),
        tls_registry: tls.as_ref().map(|_| config.fleet.default_registry.clone()),
        ca_sha256: tls.as_ref().map(|tls| tls.ca.fingerprint()),
    });
    let link = fleet::logs::FleetLink::absent(|| "this controller is starting".to_owned());
    let logs_api = fleet::logs::LogsApi { store: store.clone(), link: link.clone() };
    let registry_dir = config.registry_dir.clone().unwrap_or_else(|| config.data_dir.join("registry"));
    let registry = Arc::new(
        crate::registry::Registry::open(&registry_dir)
            .with_context(|| format!("opening the image registry in {}", registry_dir.display()))?
            .with_space_guard(state.space.clone()),
    );
    let registry_tls = match &tls {
        Some(tls) => Some(crate::tls::trusting(tls.ca.cert_pem().as_bytes())?),
        None => None,
    };
    let store_failures = tokio::spawn(crate::space::report_disk_trouble(store.clone(), state.space.clone()));
    state.ready.store(true, std::sync::atomic::Ordering::Release);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let api_url = format!("{scheme}://{}", listener.local_addr()?);
    tracing::info!(
        api = %api_url,
        ca = %match &tls {
            Some(tls) => format!("{} ({})", crate::tls::FleetCa::cert_path(&config.data_dir).display(), tls.ca.fingerprint()),
            None => "none: plain HTTP and MQTT (--plain)".to_owned(),
        },
        data_dir = %config.data_dir.display(),
        token_file = %config.data_dir.join(TOKEN_FILE).display(),
        dashboard = %format!(
            "{api_url}/ui/{}",
            match &tls {
                Some(tls) => format!(
                    " (import {} ({}) into the browser to trust it)",
                    config.data_dir.join(crate::tls::TLS_DIR).join(crate::tls::BROWSER_CA_CERT_FILE).display(),
                    tls.browser_ca.fingerprint()
                ),
                None => String::new(),
            }
        ),
        mqtt = %match config.mqtt_listen {
            Some(listen) => format!("embedded broker on {listen}"),
            None => config.fleet.advertised_mqtt_url.clone(),
        },
        "flotilla controller ready"
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let leading = LeaderWork {
        store: store.clone(),
        etcd,
        identity: format!("{} pid {} api {api_url}", host.trim(), std::process::id()),
        leader_lease: config.leader_lease,
        fleet: fleet_config,
        default_registry: config.fleet.default_registry.clone(),
        enrolment,
        controller_key,
        metrics_refusals: state.metrics.node_refusals(),
        counters: state.metrics.fleet_counters(),
        link,
        registry: registry.clone(),
        registry_tls,
        mosquitto_dir: config.mosquitto_dir.clone(),
        leading: state.metrics.register_leading(),
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let leader = tokio::spawn(leading.run(stopping));
    let app = api::routes::router(api::routes::Parts {
        api: state,
        enrol: Some(enrol_state),
        logs: Some(logs_api),
        registry: Some(registry),
    });
    let stop_on_shutdown = stop.clone();
    let shutdown = async move {
        shutdown.await;
        stop_on_shutdown.send_replace(true);
    };
    let served = match &tls {
        Some(tls) => {
            let listener = crate::tls::TlsListener::new(listener, tls.acceptor.clone())?;
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await
        }
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
    };
    // Drain: the API answered what it had; the loops stop between passes
    // (a pass already running in the blocking pool ends with its commit
    // before the runtime is gone), and the inbox commits what it received.
    tracing::info!("API closed; stopping the reconcilers and the fleet channel");
    stop.send_replace(true);
    let _ = leader.await;
    store_failures.abort();
    let _ = store_failures.await;
    tracing::info!("stopped");
    served.context("serving the API")
}

/// The fingerprints of what every controller on one etcd must share: the
/// API token, the Secrets key (objects and the enrolment are sealed with
/// it), the signing key (agents pin it) and the CAs (agents and browsers
/// trust them).
fn check_shared_keys(etcd: &EtcdStore, data_dir: &Path) -> anyhow::Result<()> {
    use sha2::Digest;
    let files = [
        TOKEN_FILE.to_owned(),
        SECRETS_KEY_FILE.to_owned(),
        crate::fleet::credentials::CONTROLLER_KEY_FILE.to_owned(),
        format!("{}/{}", crate::tls::TLS_DIR, crate::tls::CA_CERT_FILE),
        format!("{}/{}", crate::tls::TLS_DIR, crate::tls::BROWSER_CA_CERT_FILE),
    ];
    let mut ours = std::collections::BTreeMap::new();
    for file in files {
        // The CAs exist only with TLS; a missing file is "none" on both sides.
        let digest = match std::fs::read(data_dir.join(&file)) {
            Ok(bytes) => hex::encode(sha2::Sha256::digest(&bytes)),
            Err(_) => "none".to_owned(),
        };
        ours.insert(file, digest);
    }
    let text = serde_json::to_string(&ours)?;
    let recorded = etcd.agree_on_keys(&text)?;
    let theirs: std::collections::BTreeMap<String, String> = serde_json::from_str(&recorded).unwrap_or_default();
    let differing: Vec<&str> =
        ours.iter().filter(|(file, digest)| theirs.get(*file) != Some(digest)).map(|(file, _)| file.as_str()).collect();
    anyhow::ensure!(
        differing.is_empty(),
        "this controller's {} differ from the other controllers' on this etcd: stop it, copy token, secrets.key, \
         controller.key, controller.pub and tls/ from the data directory of the first controller into {}, and \
         start it again",
        differing.join(", "),
        data_dir.display()
    );
    Ok(())
}

/// What only the leader runs: the fleet channel (inbox, publisher), the
/// reconcilers and scheduler, image pinning, the registry's garbage
/// collection and an external Mosquitto's files. With the embedded store
/// this controller always leads; on etcd it campaigns, runs them for its
/// term, stops them when the term ends and stands by again.
struct LeaderWork {
    store: Arc<dyn Store>,
    etcd: Option<Arc<EtcdStore>>,
    identity: String,
    leader_lease: Duration,
    fleet: FleetConfig,
    default_registry: String,
    enrolment: Enrolment,
    controller_key: Arc<ControllerKey>,
    metrics_refusals: fleet::refusals::RefusalCounter,
    counters: fleet::counters::FleetCounters,
    link: fleet::logs::FleetLink,
    registry: Arc<crate::registry::Registry>,
    registry_tls: Option<ureq::tls::TlsConfig>,
    mosquitto_dir: Option<PathBuf>,
    /// The `flotilla_controller_leading` gauge.
    leading: prometheus_client::metrics::gauge::Gauge,
}

/// Resolves once `stopping` says stop.
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// The leader's loops of one term.
struct Running {
    fleet: fleet::Fleet,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        self.fleet.stop().await;
    }
}

impl LeaderWork {
    async fn run(self, mut stopping: tokio::sync::watch::Receiver<bool>) {
        loop {
            let (store, term) = match &self.etcd {
                None => (self.store.clone(), None),
                Some(etcd) => {
                    let who = etcd.clone();
                    self.link.clear(move || match who.leader() {
                        Some(leader) => format!("this controller stands by; the leader is {leader}: ask it"),
                        None => "this controller stands by and no controller leads yet".to_owned(),
                    });
                    let mut campaign = etcd.campaign(self.identity.clone(), self.leader_lease);
                    tokio::select! {
                        elected = &mut campaign => match elected {
                            Ok(Ok(term)) => (term.clone() as Arc<dyn Store>, Some(term)),
                            Ok(Err(e)) => {
                                tracing::error!(error = %e, "campaigning to lead failed; trying again");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                continue;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "campaigning to lead stopped");
                                return;
                            }
                        },
                        _ = stopped(&mut stopping) => {
                            campaign.abort();
                            return;
                        }
                    }
                }
            };
            let running = match self.start(store) {
                Ok(running) => running,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot start the controller's loops");
                    if let Some(term) = term {
                        let _ = tokio::task::spawn_blocking(move || term.resign()).await;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.leading.set(1);
            let ended = async {
                match &term {
                    Some(term) => term.ended().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stopped(&mut stopping) => {
                    running.stop().await;
                    if let Some(term) = term {
                        let _ = tokio::task::spawn_blocking(move || term.resign()).await;
                    }
                    return;
                }
                _ = ended => {
                    self.leading.set(0);
                    self.link.clear(|| "this controller's term as leader just ended".to_owned());
                    running.stop().await;
                    tracing::warn!("the controller's loops stopped at the end of its term; standing by");
                }
            }
        }
    }

    fn start(&self, store: Arc<dyn Store>) -> anyhow::Result<Running> {
        let fleet = fleet::spawn(
            store.clone(),
            self.fleet.clone(),
            self.enrolment.clone(),
            self.controller_key.clone(),
            self.metrics_refusals.clone(),
            self.counters.clone(),
        )?;
        self.link.set(fleet.log_requests.clone(), fleet.last_heard.clone());
        let eviction = fleet.eviction.clone();
        let mut tasks = vec![
            tokio::spawn(reconcile::run(
                store.clone(),
                move || eviction.policy(),
                self.default_registry.clone(),
                self.counters.clone(),
            )),
            tokio::spawn(crate::pinning::run(store, self.default_registry.clone(), self.registry_tls.clone())),
            tokio::spawn(self.registry.clone().run_gc(Duration::from_secs(3600), std::future::pending())),
        ];
        if let Some(dir) = self.mosquitto_dir.clone() {
            tasks.push(fleet::mosquitto::spawn_sync(dir, self.fleet.prefix.clone(), self.enrolment.clone()));
        }
        Ok(Running { fleet, tasks })
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))
}
