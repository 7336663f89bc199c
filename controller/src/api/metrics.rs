//! Prometheus metrics of the API and the store.

use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::{ApiState, Shared};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// The controller's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histogram,
    apply_seconds: Histogram,
    objects: Family<KindLabels, Gauge>,
    resource_version: Gauge,
    store_write_failures: Gauge,
    data_free_bytes: Gauge,
    data_reserve_bytes: Gauge,
    node_refusals: crate::fleet::refusals::RefusalCounter,
    fleet_counters: crate::fleet::counters::FleetCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flotilla");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "API requests by method, route and status code", requests.clone());
        let request_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register("http_request_duration_seconds", "API request latency", request_seconds.clone());
        let apply_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "apply_duration_seconds",
            "Server-side apply latency, durable write included",
            apply_seconds.clone(),
        );
        let objects = Family::<KindLabels, Gauge>::default();
        registry.register("store_objects", "Objects in the store by kind", objects.clone());
        let resource_version = Gauge::default();
        registry.register("store_resource_version", "The store's latest resourceVersion", resource_version.clone());
        let store_write_failures = Gauge::default();
        registry.register(
            "store_write_failures",
            "Store commits that failed on the disk since start (a full disk, mostly); /readyz says why while they fail",
            store_write_failures.clone(),
        );
        let data_free_bytes = Gauge::default();
        registry.register("data_volume_free_bytes", "Free bytes on the data volume", data_free_bytes.clone());
        let data_reserve_bytes = Gauge::default();
        registry.register(
            "data_volume_reserve_bytes",
            "Free bytes applies and image uploads leave on the data volume (--disk-reserve-mib)",
            data_reserve_bytes.clone(),
        );
        let node_refusals = crate::fleet::refusals::RefusalCounter::default();
        registry.register(
            "node_messages_refused",
            "Messages from nodes refused, by enrolled node (or unknown) and reason",
            node_refusals.clone(),
        );
        let fleet_counters = crate::fleet::counters::FleetCounters::default();
        fleet_counters.register(&mut registry);
        Metrics {
            registry: Mutex::new(registry),
            requests,
            request_seconds,
            apply_seconds,
            objects,
            resource_version,
            store_write_failures,
            data_free_bytes,
            data_reserve_bytes,
            node_refusals,
            fleet_counters,
        }
    }
}

impl Metrics {
    /// The counter of refused node messages, for the fleet inbox.
    pub fn node_refusals(&self) -> crate::fleet::refusals::RefusalCounter {
        self.node_refusals.clone()
    }

    /// The fleet's counters, for the channel, the inbox and the reconciler.
    pub fn fleet_counters(&self) -> crate::fleet::counters::FleetCounters {
        self.fleet_counters.clone()
    }

    /// Registers the fleet's metrics, read from `store` at each scrape.
    pub fn register_fleet(&self, store: std::sync::Arc<dyn crate::store::Store>) {
        let collector = super::fleet_metrics::FleetCollector::new(store);
        self.registry.lock().unwrap_or_else(|p| p.into_inner()).register_collector(Box::new(collector));
    }

    /// Registers `leading`: 1 while this controller leads (runs the
    /// reconcilers and the fleet channel), 0 while it stands by.
    pub fn register_leading(&self) -> Gauge {
        let leading = Gauge::default();
        self.registry.lock().unwrap_or_else(|p| p.into_inner()).register(
            "controller_leading",
            "1 while this controller leads (runs the reconcilers, scheduler and fleet channel), 0 while it stands by",
            leading.clone(),
        );
        leading
    }

    /// Registers the count of writes `space` refused.
    pub fn register_space(&self, space: &crate::space::SpaceGuard) {
        self.registry.lock().unwrap_or_else(|p| p.into_inner()).register(
            "writes_refused_for_space",
            "Applies and image uploads refused (507) because they would cross the disk reserve",
            space.refused_counter(),
        );
    }

    pub(super) fn observe_request(&self, method: &str, route: &str, code: u16, elapsed: Duration) {
        let labels = RequestLabels { method: method.to_owned(), route: route.to_owned(), code };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds.observe(elapsed.as_secs_f64());
    }

    pub(super) fn observe_apply(&self, elapsed: Duration) {
        self.apply_seconds.observe(elapsed.as_secs_f64());
    }
}

/// `/metrics`: OpenMetrics for a scraper that asks for it (Prometheus
/// does), else the Prometheus text format 0.0.4 (what `promtool check
/// metrics`, curl and older scrapers read). The fleet's series are read from
/// the store, off the async threads.
pub(super) async fn render(State(state): State<Shared>, headers: axum::http::HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    match tokio::task::spawn_blocking(move || encode(&state)).await {
        Ok(Ok(text)) if openmetrics => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], prometheus_text(&text))
            .into_response(),
        Ok(Err(e)) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// OpenMetrics text of every metric.
fn encode(state: &ApiState) -> Result<String, std::fmt::Error> {
    for (kind, count) in state.store.counts() {
        state.metrics.objects.get_or_create(&KindLabels { kind: kind.to_string() }).set(count as i64);
    }
    state.metrics.resource_version.set(state.store.resource_version() as i64);
    state.metrics.store_write_failures.set(state.store.write_failures() as i64);
    if let Some((free, reserve)) = state.space.figures() {
        state.metrics.data_free_bytes.set(free.min(i64::MAX as u64) as i64);
        state.metrics.data_reserve_bytes.set(reserve.min(i64::MAX as u64) as i64);
    }
    let mut text = String::new();
    let registry = state.metrics.registry.lock().unwrap_or_else(|p| p.into_inner());
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter's
/// family is named with its `_total` there, and there is no `# EOF` or
/// `# UNIT`. The samples are the same.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len() + counters.len() * 12);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let family = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let name = rest.split(' ').next()?;
            counters.contains(name).then(|| (*tag, name, &rest[name.len()..]))
        });
        match family {
            Some((tag, name, rest)) if !name.ends_with("_total") => {
                out.push_str(tag);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(rest);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_total_in_the_prometheus_text_format() {
        let openmetrics = "# HELP flotilla_x Things.\n# TYPE flotilla_x counter\nflotilla_x_total 3\n\
                           # HELP flotilla_y Level.\n# TYPE flotilla_y gauge\n# UNIT flotilla_y bytes\nflotilla_y 1\n# EOF\n";
        assert_eq!(
            prometheus_text(openmetrics),
            "# HELP flotilla_x_total Things.\n# TYPE flotilla_x_total counter\nflotilla_x_total 3\n\
             # HELP flotilla_y Level.\n# TYPE flotilla_y gauge\nflotilla_y 1\n"
        );
    }
}
