//! `flotilla server`: opens the store, starts the reconcilers and serves the API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use crate::api::{self, ApiState, Metrics};
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
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            crate::store::write_private(path, format!("{token}\n").as_bytes())
                .with_context(|| format!("writing the API token to {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a new API token");
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("reading the API token {}", path.display())),
    }
}

/// Options of a running server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Durable state.
    pub data_dir: PathBuf,
    /// API listen address.
    pub api_addr: SocketAddr,
}

/// Runs until `shutdown` completes.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    create_private_dir(&config.data_dir)?;
    let token = load_or_create_token(&config.data_dir.join(TOKEN_FILE))?;
    let cipher = SecretCipher::load_or_create(&config.data_dir.join(SECRETS_KEY_FILE))?;
    let store_path = config.data_dir.join(STORE_FILE);
    let store: Arc<dyn Store> = Arc::new(
        tokio::task::spawn_blocking(move || RedbStore::open(&store_path, cipher))
            .await
            .context("opening the store")??,
    );
    let state =
        Arc::new(ApiState { store: store.clone(), token, metrics: Metrics::default(), ready: AtomicBool::new(false) });
    let listener = tokio::net::TcpListener::bind(config.api_addr)
        .await
        .with_context(|| format!("listening on {} (is another server running?)", config.api_addr))?;
    let reconciler = tokio::spawn(reconcile::run(store.clone()));
    state.ready.store(true, std::sync::atomic::Ordering::Release);
    tracing::info!(
        api = %format!("http://{}", listener.local_addr()?),
        data_dir = %config.data_dir.display(),
        token_file = %config.data_dir.join(TOKEN_FILE).display(),
        "flotilla controller ready"
    );
    axum::serve(listener, api::router(state)).with_graceful_shutdown(shutdown).await.context("serving the API")?;
    reconciler.abort();
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
