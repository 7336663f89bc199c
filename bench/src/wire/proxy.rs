//! A TCP proxy that counts what crosses it, in both directions: bytes, and
//! reads as a stand-in for TCP segments. Plain std threads: two per
//! connection, one per direction.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Counters of one direction.
#[derive(Debug, Default)]
struct DirectionCounters {
    bytes: AtomicU64,
    reads: AtomicU64,
}

#[derive(Debug, Default)]
struct Counters {
    /// Client (the agent) to upstream (the broker).
    up: DirectionCounters,
    /// Upstream to client.
    down: DirectionCounters,
    connections: AtomicU64,
}

/// What crossed the proxy so far (or between two snapshots, see
/// [`Traffic::since`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Payload bytes from the client to upstream.
    pub bytes_up: u64,
    /// Payload bytes from upstream to the client.
    pub bytes_down: u64,
    /// Non-empty reads from the client: one per TCP segment while messages
    /// are small and sparse, as on an idle node (TCP_NODELAY on both sides).
    pub segments_up: u64,
    /// Non-empty reads from upstream.
    pub segments_down: u64,
    /// Client connections accepted.
    pub connections: u64,
}

/// Per-segment overhead of IPv4 (20 bytes) + TCP (20) + the timestamp
/// option Linux sends by default (12).
pub const HEADER_BYTES: u64 = 52;

impl Traffic {
    /// What crossed after `earlier`.
    pub fn since(self, earlier: Traffic) -> Traffic {
        Traffic {
            bytes_up: self.bytes_up.saturating_sub(earlier.bytes_up),
            bytes_down: self.bytes_down.saturating_sub(earlier.bytes_down),
            segments_up: self.segments_up.saturating_sub(earlier.segments_up),
            segments_down: self.segments_down.saturating_sub(earlier.segments_down),
            connections: self.connections.saturating_sub(earlier.connections),
        }
    }

    /// MQTT bytes, both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes_up + self.bytes_down
    }

    /// Estimate of the bytes on the wire at the IP level: every data segment
    /// carries [`HEADER_BYTES`] of headers and is answered by one pure ACK
    /// of [`HEADER_BYTES`] in the other direction. Link-layer framing is not
    /// counted. An upper bound for request/response traffic: a delayed ACK
    /// often rides on the reply (a PINGRESP acknowledges its PINGREQ), so
    /// real captures can be lower.
    pub fn bytes_with_tcpip(&self) -> u64 {
        self.bytes() + (self.segments_up + self.segments_down) * 2 * HEADER_BYTES
    }
}

/// The proxy: listens on one address and forwards each connection to
/// `upstream`. Dropping it closes the listener and every connection.
pub struct CountingProxy {
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    stopping: Arc<AtomicBool>,
    /// Both ends of every connection, to shut them down on drop.
    open: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl CountingProxy {
    /// Listens on `listen` (port 0 picks one) and forwards to `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let local_addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (counters, stopping, open) = (counters.clone(), stopping.clone(), open.clone());
            std::thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || accept_loop(listener, upstream, &counters, &stopping, &open))?
        };
        Ok(CountingProxy { local_addr, counters, stopping, open, acceptor: Some(acceptor) })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The totals so far.
    pub fn traffic(&self) -> Traffic {
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        Traffic {
            bytes_up: load(&self.counters.up.bytes),
            bytes_down: load(&self.counters.down.bytes),
            segments_up: load(&self.counters.up.reads),
            segments_down: load(&self.counters.down.reads),
            connections: load(&self.counters.connections),
        }
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept so that it sees the flag.
        let _ = TcpStream::connect(self.local_addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // The pumps end when their sockets shut down.
        for stream in self.open.lock().map(|mut open| std::mem::take(&mut *open)).unwrap_or_default() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    counters: &Arc<Counters>,
    stopping: &AtomicBool,
    open: &Mutex<Vec<TcpStream>>,
) {
    for client in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if let Err(e) = connect(client, upstream, counters, open) {
            eprintln!("proxy: connecting to {upstream}: {e}");
        }
    }
}

/// Connects a new client to upstream and starts the two pumps.
fn connect(
    client: TcpStream,
    upstream: SocketAddr,
    counters: &Arc<Counters>,
    open: &Mutex<Vec<TcpStream>>,
) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    // Forward each read at once: Nagle would merge small messages and
    // change what is counted as a segment.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    counters.connections.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut open) = open.lock() {
        open.push(client.try_clone()?);
        open.push(server.try_clone()?);
    }
    let up = (client.try_clone()?, server.try_clone()?, counters.clone());
    std::thread::Builder::new().name("proxy-up".into()).spawn(move || pump(up.0, up.1, &up.2.up))?;
    let counters = counters.clone();
    std::thread::Builder::new().name("proxy-down".into()).spawn(move || pump(server, client, &counters.down))?;
    Ok(())
}

/// Copies `from` to `to` until either side closes, counting each read
/// before it is forwarded (so a peer that saw the bytes also sees them
/// counted). Then both sockets are shut down, which ends the other pump.
fn pump(mut from: TcpStream, mut to: TcpStream, counters: &DirectionCounters) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        counters.bytes.fetch_add(n as u64, Ordering::SeqCst);
        counters.reads.fetch_add(1, Ordering::SeqCst);
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An echo server on a free loopback port.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                std::thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let _ = std::io::copy(&mut reader, &mut stream);
                });
            }
        });
        addr
    }

    fn exchange(stream: &mut TcpStream, message: &[u8]) {
        stream.write_all(message).unwrap();
        let mut echoed = vec![0; message.len()];
        stream.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message);
    }

    #[test]
    fn counts_bytes_and_reads_both_ways() {
        let proxy = CountingProxy::start("127.0.0.1:0".parse().unwrap(), echo_server()).unwrap();
        let mut client = TcpStream::connect(proxy.local_addr()).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        client.set_nodelay(true).unwrap();
        exchange(&mut client, b"ping");
        let first = proxy.traffic();
        assert_eq!(first, Traffic { bytes_up: 4, bytes_down: 4, segments_up: 1, segments_down: 1, connections: 1 });

        // Each exchange waits for its echo, so each is one read per direction.
        for _ in 0..3 {
            exchange(&mut client, &[7; 100]);
        }
        let later = proxy.traffic().since(first);
        assert_eq!(later, Traffic { bytes_up: 300, bytes_down: 300, segments_up: 3, segments_down: 3, connections: 0 });
        assert_eq!(later.bytes_with_tcpip(), 600 + 6 * 104);
    }

    #[test]
    fn dropping_the_proxy_closes_its_connections() {
        let proxy = CountingProxy::start("127.0.0.1:0".parse().unwrap(), echo_server()).unwrap();
        let mut client = TcpStream::connect(proxy.local_addr()).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        exchange(&mut client, b"x");
        drop(proxy);
        let mut rest = Vec::new();
        match client.read_to_end(&mut rest) {
            Ok(n) => assert_eq!(n, 0, "nothing after the close"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "not closed: {e}"),
        }
    }
}
