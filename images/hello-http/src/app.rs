//! What the service answers: a greeting naming the replica, a liveness
//! endpoint and a readiness endpoint.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | `hello from <hostname> (hello-http <version>)`, and the request count |
//! | `GET /healthz` | `200 ok` while the process runs (liveness) |
//! | `GET /ready` | `503` until the start-up delay has passed, then `200 ready` (readiness) |
//!
//! The hostname is the replica's name inside a container, so the greeting
//! shows which replica a Service sent a request to.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::http::{Request, Response};

/// State shared by every connection.
#[derive(Debug)]
pub struct App {
    hostname: String,
    version: String,
    ready: AtomicBool,
    requests: AtomicU64,
}

impl App {
    /// A not-yet-ready app that greets as `hostname` running `version`.
    pub fn new(hostname: impl Into<String>, version: impl Into<String>) -> Self {
        App {
            hostname: hostname.into(),
            version: version.into(),
            ready: AtomicBool::new(false),
            requests: AtomicU64::new(0),
        }
    }

    /// Marks the app ready: `/ready` answers 200 from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The response to a request.
    pub fn respond(&self, request: &Request) -> Response {
        if request.method != "GET" && request.method != "HEAD" {
            return Response::text(405, "only GET and HEAD are served\n").with_header("Allow", "GET, HEAD");
        }
        match request.path.as_str() {
            "/" => {
                let count = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
                Response::text(
                    200,
                    format!(
                        "hello from {} (hello-http {})\nrequests served here: {count}\n",
                        self.hostname, self.version
                    ),
                )
            }
            "/healthz" => Response::text(200, "ok\n"),
            "/ready" if self.is_ready() => Response::text(200, "ready\n"),
            "/ready" => Response::text(503, "starting\n"),
            _ => Response::text(404, format!("no such page: {}\n", request.path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request {
        Request { method: "GET".into(), path: path.into() }
    }

    #[test]
    fn greeting_names_host_and_version_and_counts() {
        let app = App::new("web-7f3a-2", "0.1.0");
        let first = app.respond(&get("/"));
        assert_eq!(first.status, 200);
        assert!(first.body.starts_with("hello from web-7f3a-2 (hello-http 0.1.0)\n"), "{}", first.body);
        assert!(first.body.contains("requests served here: 1"));
        assert!(app.respond(&get("/")).body.contains("requests served here: 2"));
    }

    #[test]
    fn ready_only_after_set_ready_while_healthz_is_always_ok() {
        let app = App::new("h", "v");
        assert_eq!(app.respond(&get("/healthz")).status, 200);
        assert_eq!(app.respond(&get("/ready")).status, 503);
        app.set_ready();
        assert_eq!(app.respond(&get("/ready")).status, 200);
    }

    #[test]
    fn other_methods_and_paths_are_refused() {
        let app = App::new("h", "v");
        let post = Request { method: "POST".into(), path: "/".into() };
        assert_eq!(app.respond(&post).status, 405);
        assert_eq!(app.respond(&get("/nope")).status, 404);
    }
}
