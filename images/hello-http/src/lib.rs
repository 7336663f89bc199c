//! `hello-http`: a tiny static HTTP/1.1 service, Flotilla's example
//! workload for probes, Services and rolling updates. Standard library
//! only, so that it builds as a static musl binary that is the whole image.
//!
//! # Layout
//!
//! - [`http`]: reading a request head, writing a response.
//! - [`app`]: the routes (`/`, `/healthz`, `/ready`) and their state.
//! - [`server`]: the accept loop, one thread per connection, bounded.
//!
//! Configuration is by environment (see `main.rs`): `PORT` (8080), `HOST`
//! (0.0.0.0), `READY_DELAY` (seconds before `/ready` answers 200, default 0).

pub mod app;
pub mod http;
pub mod server;

use std::io::Write;

/// Writes one line to stdout (the container log). Unlike `println!` it
/// does not panic when stdout is gone: a closed log must not kill a
/// connection thread, or the service.
pub fn log_line(line: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_fmt(line);
    let _ = stdout.write_all(b"\n");
    let _ = stdout.flush();
}
