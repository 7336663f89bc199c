//! The accept loop: one thread per connection, a bounded number of them.
//!
//! A device has little memory, so connections beyond [`MAX_CONNECTIONS`]
//! get an immediate 503 instead of a thread; every connection has read and
//! write timeouts so a silent client cannot hold its thread for ever.

use std::io::{self, BufReader};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::app::App;
use crate::http::{RequestError, Response, read_request};
use crate::log_line;

/// Connections served at once; more are refused with 503.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a read or write may stall before the connection is dropped.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors, say), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves connections from `listener` until the process ends.
pub fn serve(listener: &TcpListener, app: &Arc<App>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                log_line(format_args!("accept failed: {error}"));
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        let slot = Slot::take(&active);
        if slot.over_limit {
            let _ = Response::text(503, "too many connections\n").write_to(&mut &stream, true);
            continue;
        }
        let app = Arc::clone(app);
        let spawned = thread::Builder::new().name("connection".to_owned()).spawn(move || {
            let _slot = slot;
            handle(&stream, &app);
        });
        if let Err(error) = spawned {
            log_line(format_args!("cannot start a connection thread: {error}"));
        }
    }
}

/// One counted connection; gives its place back when dropped.
struct Slot {
    active: Arc<AtomicUsize>,
    over_limit: bool,
}

impl Slot {
    fn take(active: &Arc<AtomicUsize>) -> Self {
        let before = active.fetch_add(1, Ordering::AcqRel);
        Slot { active: Arc::clone(active), over_limit: before >= MAX_CONNECTIONS }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads one request and answers it.
fn handle(stream: &TcpStream, app: &App) {
    if let Err(error) = serve_one(stream, app) {
        log_line(format_args!("connection error: {error}"));
    }
}

fn serve_one(stream: &TcpStream, app: &App) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    match read_request(&mut reader) {
        Ok(request) => {
            let response = app.respond(&request);
            // Probes come every few seconds; logging them would fill the
            // device's log with noise.
            if !matches!(request.path.as_str(), "/healthz" | "/ready") {
                log_line(format_args!("{} {} {}", request.method, request.path, response.status));
            }
            response.write_to(&mut writer, request.method != "HEAD")
        }
        Err(RequestError::Closed) => Ok(()),
        Err(error @ RequestError::TooLarge) => Response::text(431, format!("{error}\n")).write_to(&mut writer, true),
        Err(error @ RequestError::Malformed(_)) => {
            Response::text(400, format!("{error}\n")).write_to(&mut writer, true)
        }
        Err(RequestError::Io(error)) => Err(error),
    }
}
