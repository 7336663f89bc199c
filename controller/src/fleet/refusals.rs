//! Refused node messages: counted per node and reason
//! (`flotilla_node_messages_refused_total`), and logged at most once per
//! node and reason per interval, with how many were refused since the last
//! line. One enrolled login flooding bad frames once wrote a WARN line
//! each: the log reached 173 MB.
//!
//! The node label is a node the controller enrolled, or `unknown`: a topic
//! names whatever its sender likes, and labels must not grow with it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// How often one node's refusals of one reason are logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Labels of the refusal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// An enrolled node, or `unknown`.
    pub node: String,
    /// One of the reasons of [`Refusal::reason`].
    pub reason: String,
}

/// The refusal counter, shared with the metrics registry.
pub type RefusalCounter = Family<RefusalLabels, Counter>;

/// Why a message from a node was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The enrolled node it claims to come from, if the topic names one.
    pub node: Option<String>,
    /// A stable word: `topic`, `empty`, `malformed`, `wrong-topic`,
    /// `not-enrolled`, `key`, `mac`, `hello`, `replay`.
    pub reason: &'static str,
    /// For people.
    pub detail: String,
}

impl Refusal {
    /// A refusal before the sender is known to be enrolled.
    pub fn anonymous(reason: &'static str, detail: impl Into<String>) -> Self {
        Refusal { node: None, reason, detail: detail.into() }
    }

    /// A refusal of a message from enrolled `node`.
    pub fn of(node: &str, reason: &'static str, detail: impl Into<String>) -> Self {
        Refusal { node: Some(node.to_owned()), reason, detail: detail.into() }
    }
}

/// When each (node, reason) was last logged, and what was refused since.
#[derive(Debug, Default)]
pub struct Refusals {
    lines: HashMap<(String, &'static str), Line>,
    counter: Option<RefusalCounter>,
}

#[derive(Debug)]
struct Line {
    logged_at: Instant,
    since: u64,
}

impl Refusals {
    /// Counts into `counter` too.
    pub fn with_counter(counter: RefusalCounter) -> Self {
        Refusals { lines: HashMap::new(), counter: Some(counter) }
    }

    /// Counts one refusal and logs it unless its (node, reason) was logged
    /// within [`LOG_INTERVAL`]. Returns whether it logged.
    pub fn record(&mut self, refusal: &Refusal, topic: &str, bytes: usize, now: Instant) -> bool {
        let node = refusal.node.as_deref().unwrap_or("unknown");
        if let Some(counter) = &self.counter {
            let labels = RefusalLabels { node: node.to_owned(), reason: refusal.reason.to_owned() };
            counter.get_or_create(&labels).inc();
        }
        let key = (node.to_owned(), refusal.reason);
        let (log, suppressed) = match self.lines.get_mut(&key) {
            Some(line) if now.duration_since(line.logged_at) < LOG_INTERVAL => {
                line.since += 1;
                (false, 0)
            }
            Some(line) => {
                let suppressed = std::mem::take(&mut line.since);
                line.logged_at = now;
                (true, suppressed)
            }
            None => {
                self.lines.insert(key, Line { logged_at: now, since: 0 });
                (true, 0)
            }
        };
        if log {
            tracing::warn!(
                node,
                reason = refusal.reason,
                topic,
                bytes,
                refused_since_last_line = suppressed,
                "node message refused: {}",
                refusal.detail
            );
        }
        log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_once_per_node_and_reason_per_interval_and_counted_whole() {
        let counter = RefusalCounter::default();
        let mut refusals = Refusals::with_counter(counter.clone());
        let start = Instant::now();
        let bad_mac = Refusal::of("pi-1", "mac", "bad MAC");
        let logged =
            (0..10_000).filter(|i| refusals.record(&bad_mac, "t", 10, start + Duration::from_millis(*i))).count();
        assert_eq!(logged, 1, "10,000 in 10 s: one line");
        // Another reason, another node, an unknown sender: a line each.
        assert!(refusals.record(&Refusal::of("pi-1", "replay", "replayed"), "t", 10, start));
        assert!(refusals.record(&Refusal::of("pi-2", "mac", "bad MAC"), "t", 10, start));
        assert!(refusals.record(&Refusal::anonymous("malformed", "not a frame"), "t", 10, start));
        // Past the interval: a line again, saying how many it stood for.
        assert!(refusals.record(&bad_mac, "t", 10, start + LOG_INTERVAL + Duration::from_secs(1)));
        assert_eq!(refusals.lines[&("pi-1".to_owned(), "mac")].since, 0);
        let count = |node: &str, reason: &str| {
            counter.get_or_create(&RefusalLabels { node: node.into(), reason: reason.into() }).get()
        };
        assert_eq!((count("pi-1", "mac"), count("unknown", "malformed")), (10_001, 1));
    }
}
