//! Every HTTP route of `flotilla server`, registered here and only here:
//! the API, join tokens and enrolment, pod logs, and the built-in OCI
//! registry under `/v2/`. `GET /api/v1` serves `routes.txt`, and tests hold
//! this file, that table and `docs/api.md` to the same routes.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{delete, get, post, put};

use super::{ApiError, Shared, count_requests, metrics, require_token};
use crate::fleet::enrol_api::{self, EnrolState};
use crate::fleet::logs::{self, LogsApi};
use crate::registry::Registry;

/// What the routes serve; the parts left `None` are not routed (tests that
/// need only the API).
pub struct Parts {
    /// The API's state (store, token, metrics).
    pub api: Shared,
    /// Join tokens and enrolment.
    pub enrol: Option<Arc<EnrolState>>,
    /// Pod logs, asked of the devices.
    pub logs: Option<LogsApi>,
    /// The built-in registry.
    pub registry: Option<Arc<Registry>>,
}

/// The router with every route of `parts`.
pub fn router(parts: Parts) -> Router {
    let state = parts.api;
    let mut with_token = Router::new()
        .route("/api/v1", get(super::route_table))
        .route("/api/v1/apply", post(super::apply))
        .route("/api/v1/watch", get(super::watch_kinds))
        .route("/api/v1/namespaces/{ns}/{resource}", get(super::list_namespaced))
        .route(
            "/api/v1/namespaces/{ns}/{resource}/{name}",
            get(super::get_namespaced).put(super::put_namespaced).delete(super::delete_namespaced),
        )
        .route("/api/v1/namespaces/{ns}/{resource}/{name}/status", put(super::put_status_namespaced))
        .route("/api/v1/{resource}", get(super::list_all))
        .route(
            "/api/v1/{resource}/{name}",
            get(super::get_cluster).put(super::put_cluster).delete(super::delete_cluster),
        )
        .route("/api/v1/{resource}/{name}/status", put(super::put_status_cluster))
        // Gzip for a scraper that takes it (Prometheus does): the fleet's
        // series run to megabytes at 10,000 devices.
        .route("/metrics", get(metrics::render).layer(tower_http::compression::CompressionLayer::new().gzip(true)))
        .with_state(state.clone());
    if let Some(logs) = parts.logs {
        with_token = with_token.merge(
            Router::new()
                .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(logs::pod_log))
                .route("/api/v1/node-heartbeats", get(logs::heartbeats))
                .with_state(logs),
        );
    }
    let with_token = with_token.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let max_body = state.max_body;
    let mut routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(super::readyz))
        .route("/openapi.json", get(super::openapi))
        .with_state(state.clone())
        .merge(with_token);
    // Enrolment checks the API token itself: `POST /api/v1/enrol` is
    // answered without it (a join token is the credential there).
    if let Some(enrol) = parts.enrol {
        routes = routes.merge(
            Router::new()
                .route("/api/v1/node-tokens", post(enrol_api::create_token).get(enrol_api::list_tokens))
                .route("/api/v1/node-tokens/{id}", delete(enrol_api::revoke_token))
                .route(firmware_proto::enrol::ENROL_PATH, post(enrol_api::enrol))
                .route("/api/v1/node-credentials/{name}", delete(enrol_api::reset_node))
                .with_state(enrol),
        );
    }
    // The API's body limit and error bodies; the registry (merged below)
    // streams its blobs and answers in the OCI error format.
    let routes = routes
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), super::json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), super::limit_body));
    let mut routes = routes;
    if let Some(registry) = parts.registry {
        // `/v2/` and the distribution API's paths, dispatched by the registry.
        routes = routes.merge(crate::registry::router(registry, state.token.clone()));
    }
    // The dashboard: its files need no token (the page asks for one).
    let ui = Router::new()
        .route("/ui", get(super::ui::to_index))
        .route("/ui/", get(super::ui::index))
        .route("/ui/{*path}", get(super::ui::file))
        .layer(tower_http::compression::CompressionLayer::new().gzip(true));
    routes
        .merge(ui)
        .route_layer(middleware::from_fn_with_state(state, count_requests))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NotFound", "no such route; see GET /api/v1") })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// `(path, methods)` of every `.route(...)` registered in this file.
    fn registered() -> BTreeMap<String, BTreeSet<String>> {
        let source = include_str!("routes.rs");
        // Without whitespace: a call rustfmt wrapped reads like one that fits.
        let code: String = source.split("#[cfg(test)]").next().unwrap().split_whitespace().collect();
        // A path named by the wire crate's constant reads as that path.
        let code =
            code.replace("firmware_proto::enrol::ENROL_PATH", &format!("\"{}\"", firmware_proto::enrol::ENROL_PATH));
        let mut out = BTreeMap::new();
        for call in code.split(".route(\"").skip(1) {
            let (path, rest) = call.split_once('"').unwrap();
            // The handlers up to the next registration.
            let handlers = rest.split(".route(").next().unwrap();
            let methods = ["get", "post", "put", "delete"]
                .into_iter()
                .filter(|m| handlers.contains(&format!("{m}(")) || handlers.contains(&format!(".{m}(")))
                .map(str::to_uppercase)
                .collect();
            out.insert(path.to_owned(), methods);
        }
        out
    }

    /// `(path, methods)` of the table `GET /api/v1` serves.
    fn table() -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in include_str!("routes.txt").lines().filter(|l| !l.trim().is_empty()) {
            let mut words = line.split_whitespace();
            let (method, path) = (words.next().unwrap(), words.next().unwrap());
            out.entry(path.to_owned()).or_default().insert(method.to_owned());
        }
        out
    }

    #[test]
    fn every_registered_route_is_in_the_served_table_with_its_methods() {
        let table = table();
        let registered = registered();
        assert!(registered.len() >= 15, "{registered:?}");
        for (path, methods) in &registered {
            assert_eq!(table.get(path), Some(methods), "{path} in routes.txt");
        }
        // And nothing in the table that is not routed (the registry's
        // paths are its own dispatch's).
        for path in table.keys().filter(|p| !p.starts_with("/v2")) {
            assert!(registered.contains_key(path), "{path} is in routes.txt but not routed");
        }
    }

    #[test]
    fn docs_api_md_lists_every_route() {
        let docs = include_str!("../../../docs/api.md");
        for path in table().keys().filter(|p| !p.starts_with("/v2")) {
            assert!(docs.contains(&format!("`{path}`")), "docs/api.md does not list {path}");
        }
    }

    #[test]
    fn the_openapi_document_describes_every_api_route_and_no_other() {
        let document: serde_json::Value = serde_json::from_str(include_str!("openapi.json")).unwrap();
        let described: BTreeMap<String, BTreeSet<String>> = document["paths"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(path, operations)| {
                (path.clone(), operations.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect())
            })
            .collect();
        let api: BTreeMap<String, BTreeSet<String>> =
            table().into_iter().filter(|(p, _)| !p.starts_with("/v2") && !p.starts_with("/ui")).collect();
        assert_eq!(described, api, "openapi.json and routes.txt");
    }
}
