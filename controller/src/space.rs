//! Free space on the controller's data volume: what applies and image
//! uploads may not eat into. On a gateway with a small eMMC a full disk is
//! the normal way a controller gets into trouble; this keeps room for the
//! controllers' own writes (status, events) and answers the operator with a
//! 507 naming the numbers instead of failing half way.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;

use crate::store::Store;

/// The reserve unless one is configured: 5 % of the volume, at most 256 MiB.
pub fn default_reserve(total_bytes: u64) -> u64 {
    (total_bytes / 20).min(256 << 20)
}

/// Free and total bytes of the volume holding `dir`, as an unprivileged
/// writer sees them.
pub fn usage(dir: &Path) -> std::io::Result<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let block = stat.fragment_size().max(1) as u64;
    Ok((stat.blocks_available() as u64 * block, stat.blocks() as u64 * block))
}

/// Why a write would cross the reserve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the data volume ({dir}) has {free_mib} MiB free and keeps {reserve_mib} MiB in reserve: {incoming_mib} MiB more \
     would cross it (free space, or lower `flotilla server --disk-reserve-mib`)"
)]
pub struct NoSpace {
    /// The data directory.
    pub dir: String,
    /// Free MiB now.
    pub free_mib: u64,
    /// The reserve, MiB.
    pub reserve_mib: u64,
    /// What the write would add, MiB (rounded up).
    pub incoming_mib: u64,
}

/// The reserve on one data directory.
#[derive(Debug, Clone)]
pub struct SpaceGuard {
    dir: PathBuf,
    /// `None`: [`default_reserve`] of the volume.
    reserve: Option<u64>,
    /// Writes refused for the reserve since start (the metric
    /// `flotilla_writes_refused_for_space_total`).
    refused: Counter,
    /// Why the latest was refused.
    last_refusal: Arc<Mutex<Option<NoSpace>>>,
}

impl SpaceGuard {
    /// A guard on `dir` keeping `reserve` bytes free (`None`: the default).
    pub fn new(dir: &Path, reserve: Option<u64>) -> Self {
        SpaceGuard { dir: dir.to_owned(), reserve, refused: Counter::default(), last_refusal: Arc::default() }
    }

    /// Whether a write of `incoming` more bytes leaves the reserve free; a
    /// refusal is counted. A volume that cannot be measured is not refused
    /// on that account.
    pub fn check(&self, incoming: u64) -> Result<(), NoSpace> {
        self.measure(incoming).inspect_err(|no_space| {
            self.refused.inc();
            *self.last_refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(no_space.clone());
        })
    }

    /// Whether the reserve is free now (`/readyz`): counts nothing.
    pub fn measure(&self, incoming: u64) -> Result<(), NoSpace> {
        let Ok((free, total)) = usage(&self.dir) else { return Ok(()) };
        let reserve = self.reserve.unwrap_or_else(|| default_reserve(total));
        if free >= reserve.saturating_add(incoming) {
            return Ok(());
        }
        Err(NoSpace {
            dir: self.dir.display().to_string(),
            free_mib: free >> 20,
            reserve_mib: reserve >> 20,
            incoming_mib: incoming.div_ceil(1 << 20),
        })
    }

    /// Free bytes and the reserve in bytes, when the volume can be measured.
    pub fn figures(&self) -> Option<(u64, u64)> {
        let (free, total) = usage(&self.dir).ok()?;
        Some((free, self.reserve.unwrap_or_else(|| default_reserve(total))))
    }

    /// The counter of writes refused for the reserve, for the metrics.
    pub fn refused_counter(&self) -> Counter {
        self.refused.clone()
    }

    /// Writes refused so far, and why the latest was.
    fn refusals(&self) -> (u64, Option<NoSpace>) {
        (self.refused.get(), self.last_refusal.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// How often [`report_disk_trouble`] looks.
const STORE_CHECK: Duration = Duration::from_secs(2);

/// At most one `DiskReserveReached` event this often, however many writes
/// are refused.
const REFUSAL_EVENT_EVERY: Duration = Duration::from_secs(60);

/// Says with Events (`flotilla get events`, on Namespace `default`) what
/// the disk does to the controller: `DiskReserveReached` when applies or
/// uploads were refused for the reserve (at most one a minute, with how
/// many and why), and `StoreWritesFailed` when store writes failed and
/// work again, with how long and the error. The metrics and `/readyz` say
/// so meanwhile. Runs until the runtime stops.
pub async fn report_disk_trouble(store: Arc<dyn Store>, space: SpaceGuard) {
    let mut tick = tokio::time::interval(STORE_CHECK);
    let mut failing: Option<(SystemTime, String)> = None;
    let (mut reported, mut last_event) = (space.refused.get(), None::<std::time::Instant>);
    loop {
        tick.tick().await;
        let (refused, why) = space.refusals();
        if refused > reported
            && last_event.is_none_or(|at| at.elapsed() >= REFUSAL_EVENT_EVERY)
            && let Some(why) = why
        {
            let event = reserve_event(refused - reported, &why);
            let store = store.clone();
            if let Ok(Ok(_)) = tokio::task::spawn_blocking(move || store.commit(vec![event])).await {
                (reported, last_event) = (refused, Some(std::time::Instant::now()));
            }
        }
        failing = match (store.write_failure(), failing) {
            (Some(error), None) => Some((SystemTime::now(), error)),
            (Some(error), Some((since, _))) => Some((since, error)),
            (None, Some((since, error))) => {
                let store = store.clone();
                let _ = tokio::task::spawn_blocking(move || store.commit(vec![recovered_event(since, &error)])).await;
                None
            }
            (None, None) => None,
        };
    }
}

/// The Event saying `count` writes were refused for the reserve, the
/// latest for `why`.
fn reserve_event(count: u64, why: &NoSpace) -> crate::store::Op {
    let message = format!("{count} apply or upload request(s) refused (507) for the disk reserve; the latest: {why}");
    crate::events::warning(&default_namespace(), "disk-reserve", "DiskReserveReached", &message, SystemTime::now())
}

/// What the controller's own events are about: it has no object of its own
/// to hang them on, so the namespace `default` (and listed there).
fn default_namespace() -> crate::object::ApiObject {
    let mut namespace = crate::object::ApiObject::new(crate::manifest::Kind::Namespace, "", "default");
    namespace.metadata.namespace = "default".into();
    namespace
}

/// The Event saying store writes failed from `since` with `error` and work
/// again now.
fn recovered_event(since: SystemTime, error: &str) -> crate::store::Op {
    let now = SystemTime::now();
    let seconds = now.duration_since(since).unwrap_or_default().as_secs();
    let message = format!("store writes failed for about {seconds} s and work again; the last error: {error}");
    crate::events::warning(&default_namespace(), "store-writes-failed", "StoreWritesFailed", &message, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_an_event_with_how_long_and_the_error() {
        let since = SystemTime::now() - Duration::from_secs(42);
        let crate::store::Op::Apply(event) = recovered_event(since, "No space left on device (os error 28)") else {
            panic!("an apply")
        };
        let fields = crate::events::fields(&event);
        assert_eq!((fields.reason.as_str(), fields.event_type.as_str()), ("StoreWritesFailed", "Warning"));
        assert!(fields.message.contains("about 42 s") && fields.message.contains("os error 28"), "{}", fields.message);
        assert_eq!(event.metadata.namespace, "default");
    }

    #[test]
    fn the_reserve_is_five_percent_at_most_256_mib_and_refuses_what_would_cross_it() {
        assert_eq!(default_reserve(1 << 30), (1 << 30) / 20);
        assert_eq!(default_reserve(64 << 30), 256 << 20);
        let dir = tempfile::tempdir().unwrap();
        let (free, _) = usage(dir.path()).unwrap();
        let guard = SpaceGuard::new(dir.path(), Some(0));
        assert!(guard.check(0).is_ok());
        let refused = guard.check(free + (1 << 20)).unwrap_err();
        assert!(refused.to_string().contains("--disk-reserve-mib"), "{refused}");
        let full = SpaceGuard::new(dir.path(), Some(free + (1 << 30)));
        assert!(full.measure(0).is_err(), "the reserve alone");
        assert_eq!(full.refusals().0, 0, "measuring refuses nothing");
        let why = full.check(0).unwrap_err();
        assert_eq!(full.refusals(), (1, Some(why.clone())));
        let crate::store::Op::Apply(event) = reserve_event(3, &why) else { panic!("an apply") };
        let fields = crate::events::fields(&event);
        assert_eq!(fields.reason, "DiskReserveReached");
        assert!(
            fields.message.starts_with("3 apply or upload") && fields.message.contains("MiB free"),
            "{}",
            fields.message
        );
    }
}
