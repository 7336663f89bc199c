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
use crate::store::{RedbStore, SecretCipher, Store};

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
}

impl ServerConfig {
    /// The configuration `flotilla server` runs with.
    pub fn from_args(args: crate::cli::ServerArgs) -> anyhow::Result<Self> {
        let advertise = args.advertise.clone().unwrap_or_else(|| {
            if args.api_addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { args.api_addr.ip().to_string() }
        });
        let tls = !args.plain;
        let (mqtt_listen, mqtt_host, mqtt_port, advertised_mqtt_url) = match &args.mqtt_url {
            Some(url) => {
                let (host, port) = parse_mqtt_url(url).map_err(|e| {
                    anyhow::anyhow!("{url}: {e} (the controller reaches an external broker over plain TCP only yet)")
                })?;
                (None, host.to_owned(), port, url.clone())
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
        })
    }
}

/// Runs until `shutdown` completes.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    create_private_dir(&config.data_dir)?;
    let token = load_or_create_token(&config.data_dir.join(TOKEN_FILE))?;
    let cipher = SecretCipher::load_or_create(&config.data_dir.join(SECRETS_KEY_FILE))?;
    let store_path = config.data_dir.join(STORE_FILE);
    let choice = config.store.clone();
    let api_addr = config.api_addr;
    let store: Arc<dyn Store> = tokio::task::spawn_blocking(move || -> anyhow::Result<Arc<dyn Store>> {
        Ok(match choice {
            StoreChoice::Redb => Arc::new(RedbStore::open(&store_path, cipher)?),
            StoreChoice::Etcd(target) => {
                let store = crate::store::EtcdStore::open(target, cipher)?;
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                let identity = format!("{} pid {} api {}", host.trim(), std::process::id(), api_addr);
                store.hold_controller_lease(&identity)?;
                Arc::new(store)
            }
        })
    })
    .await
    .context("opening the store")??;
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
    let enrolment = Enrolment::load_or_create(&config.data_dir)?;
    enrolment.set_credential_lifetime(config.credential_lifetime);
    // An external broker's password file holds one password per user, so
    // a rotation there keeps the password (the MAC key still rotates).
    enrolment.set_rotate_password(config.mqtt_listen.is_some());
    let mosquitto_sync = config
        .mosquitto_dir
        .clone()
        .map(|dir| fleet::mosquitto::spawn_sync(dir, config.fleet.prefix.clone(), enrolment.clone()));
    let controller_key = Arc::new(ControllerKey::load_or_create(&config.data_dir)?);
    crate::replica_spec::set_data_key_root(controller_key.derive_secret("flotilla/v1 secret data keys"));
    let mut fleet_config = config.fleet.clone();
    if let Some(listen) = config.mqtt_listen {
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
    let fleet = fleet::spawn(
        store.clone(),
        fleet_config,
        enrolment,
        controller_key,
        state.metrics.node_refusals(),
        state.metrics.fleet_counters(),
    )?;
    let logs_api = fleet::logs::LogsApi {
        store: store.clone(),
        requests: fleet.log_requests.clone(),
        last_heard: fleet.last_heard.clone(),
    };
    let eviction = fleet.eviction.clone();
    let reconciler = tokio::spawn(reconcile::run(
        store.clone(),
        move || eviction.policy(),
        config.fleet.default_registry.clone(),
        state.metrics.fleet_counters(),
    ));
    let registry_tls = match &tls {
        Some(tls) => Some(crate::tls::trusting(tls.ca.cert_pem().as_bytes())?),
        None => None,
    };
    let pinning = tokio::spawn(crate::pinning::run(store.clone(), config.fleet.default_registry.clone(), registry_tls));
    let store_failures = tokio::spawn(crate::space::report_disk_trouble(store.clone(), state.space.clone()));
    state.ready.store(true, std::sync::atomic::Ordering::Release);
    tracing::info!(
        api = %format!("{}://{}", if tls.is_some() { "https" } else { "http" }, listener.local_addr()?),
        ca = %match &tls {
            Some(tls) => format!("{} ({})", crate::tls::FleetCa::cert_path(&config.data_dir).display(), tls.ca.fingerprint()),
            None => "none: plain HTTP and MQTT (--plain)".to_owned(),
        },
        data_dir = %config.data_dir.display(),
        token_file = %config.data_dir.join(TOKEN_FILE).display(),
        dashboard = %format!(
            "{}://{}/ui/{}",
            if tls.is_some() { "https" } else { "http" },
            listener.local_addr()?,
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
    let registry_dir = config.data_dir.join("registry");
    let registry = Arc::new(
        crate::registry::Registry::open(&registry_dir)
            .with_context(|| format!("opening the image registry in {}", registry_dir.display()))?
            .with_space_guard(state.space.clone()),
    );
    let gc = tokio::spawn(registry.clone().run_gc(Duration::from_secs(3600), std::future::pending()));
    let app = api::routes::router(api::routes::Parts {
        api: state,
        enrol: Some(enrol_state),
        logs: Some(logs_api),
        registry: Some(registry),
    });
    match &tls {
        Some(tls) => {
            let listener = crate::tls::TlsListener::new(listener, tls.acceptor.clone())?;
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("serving the API")?;
        }
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("serving the API")?,
    }
    // Drain: the API answered what it had; the loops stop between passes
    // (a pass already running in the blocking pool ends with its commit
    // before the runtime is gone), and the inbox commits what it received.
    tracing::info!("API closed; stopping the reconcilers and the fleet channel");
    for task in [&reconciler, &pinning, &gc, &store_failures] {
        task.abort();
    }
    for task in [reconciler, pinning, gc, store_failures] {
        let _ = task.await;
    }
    if let Some(task) = mosquitto_sync {
        task.abort();
    }
    fleet.stop().await;
    tracing::info!("stopped");
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))
}
