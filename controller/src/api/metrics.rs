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

use super::Shared;

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
        }
    }
}

impl Metrics {
    /// The counter of refused node messages, for the fleet inbox.
    pub fn node_refusals(&self) -> crate::fleet::refusals::RefusalCounter {
        self.node_refusals.clone()
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

pub(super) async fn render(State(state): State<Shared>) -> Response {
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
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}
