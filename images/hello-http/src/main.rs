//! `hello-http`: serves `/`, `/healthz` and `/ready` on `$HOST:$PORT`.
//!
//! Environment: `PORT` (default 8080; 0 picks a free port), `HOST` (default
//! 0.0.0.0), `READY_DELAY` (seconds until `/ready` answers 200, default 0:
//! a way to watch readiness gates in a rollout). The first line on stdout
//! is `hello-http <version> listening on <address>`.
//!
//! SIGTERM ends the process at once (the default action): there is no
//! state to save. As PID 1 of a container without an init the kernel
//! ignores SIGTERM, so the runtime's stop falls back to SIGKILL after its
//! grace period; the standard library alone cannot install a handler.

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use hello_http::app::App;
use hello_http::log_line;
use hello_http::server::serve;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hello-http: {message}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let port: u16 = env_or("PORT", 8080)?;
    let host = std::env::var("HOST").unwrap_or_else(|_| "0.0.0.0".to_owned());
    let ready_delay = Duration::from_secs(env_or("READY_DELAY", 0)?);

    let listener =
        TcpListener::bind((host.as_str(), port)).map_err(|error| format!("cannot listen on {host}:{port}: {error}"))?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    let version = env!("CARGO_PKG_VERSION");
    // Tests and log readers wait for this line; log_line flushes it.
    log_line(format_args!("hello-http {version} listening on {address}"));

    let app = Arc::new(App::new(hostname(), version));
    if ready_delay.is_zero() {
        app.set_ready();
    } else {
        let app = Arc::clone(&app);
        thread::spawn(move || {
            thread::sleep(ready_delay);
            app.set_ready();
            log_line(format_args!("ready after {}s", ready_delay.as_secs()));
        });
    }
    serve(&listener, &app);
    Ok(())
}

/// An environment variable parsed as `T`, or `default` when unset.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(value) => value.trim().parse().map_err(|_| format!("{name}={value:?} is not a valid number")),
        Err(_) => Ok(default),
    }
}

/// The host name (in a container: the replica's name).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}
