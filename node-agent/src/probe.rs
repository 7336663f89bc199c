//! Probes: startup, readiness, liveness, with Kubernetes' semantics
//! (initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold,
//! failureThreshold). Exec probes run inside the container (through the
//! runtime); HTTP GET and TCP probes connect to the device's loopback, which
//! containers share (no network namespace).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use firmware_proto::{Probe, ProbeAction};

use crate::runtime::Runtime;

/// The running tally of one probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeTally {
    /// When the container started (probes count from here).
    pub started_ms: u64,
    /// When the probe last ran.
    pub last_run_ms: Option<u64>,
    /// Consecutive successes.
    pub successes: u32,
    /// Consecutive failures.
    pub failures: u32,
    /// The decided state: `None` until a threshold is reached.
    pub passing: Option<bool>,
}

impl ProbeTally {
    /// A tally for a container started at `started_ms`.
    pub fn new(started_ms: u64) -> Self {
        ProbeTally { started_ms, ..ProbeTally::default() }
    }

    /// Whether the probe is due at `now_ms`.
    pub fn due(&self, probe: &Probe, now_ms: u64) -> bool {
        let first = self.started_ms + u64::from(probe.initial_delay_s) * 1000;
        match self.last_run_ms {
            None => now_ms >= first,
            Some(last) => now_ms >= last + u64::from(probe.period_s.max(1)) * 1000,
        }
    }

    /// Records a result; returns the decided state after it.
    pub fn record(&mut self, probe: &Probe, now_ms: u64, success: bool) -> Option<bool> {
        self.last_run_ms = Some(now_ms);
        if success {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= u32::from(probe.success_threshold.max(1)) {
                self.passing = Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= u32::from(probe.failure_threshold.max(1)) {
                self.passing = Some(false);
            }
        }
        self.passing
    }
}

/// Runs one probe action now; `true` on success.
pub fn run(probe: &Probe, container_id: &str, runtime: &mut impl Runtime) -> bool {
    let timeout = Duration::from_secs(u64::from(probe.timeout_s.max(1)));
    match &probe.action {
        ProbeAction::Exec { command } => {
            let args: Vec<String> = command.iter().map(str::to_owned).collect();
            matches!(runtime.exec(container_id, &args, timeout.as_millis() as u64), Ok(Some(0)))
        }
        ProbeAction::Tcp { port } => {
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], *port)), timeout).is_ok()
        }
        ProbeAction::HttpGet { path, port, https: false } => http_get_ok(*port, path, timeout),
        // TLS would double the agent's size; an https probe fails visibly.
        ProbeAction::HttpGet { https: true, .. } => false,
        ProbeAction::Grpc { port, service } => match crate::grpc::check(*port, service, timeout) {
            Ok(()) => true,
            Err(why) => {
                tracing::debug!(container = container_id, port, %why, "gRPC probe");
                false
            }
        },
    }
}

/// A plain HTTP/1.0 GET; success is a 2xx or 3xx status, as in Kubernetes.
/// Hand-written on purpose: a status line is all a probe reads, and an HTTP
/// client crate would cost the agent hundreds of kilobytes.
fn http_get_ok(port: u16, path: &str, timeout: Duration) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: flotilla-probe\r\n\r\n")?;
        let mut head = [0u8; 32];
        let mut read = 0;
        while read < 12 {
            let n = stream.read(&mut head[read..])?;
            if n == 0 {
                break;
            }
            read += n;
        }
        let line = std::str::from_utf8(&head[..read]).unwrap_or("");
        let code: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((200..400).contains(&code))
    };
    attempt().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_proto::TextList;

    fn probe(action: ProbeAction, failure_threshold: u8) -> Probe {
        Probe { action, initial_delay_s: 2, period_s: 3, timeout_s: 1, success_threshold: 1, failure_threshold }
    }

    #[test]
    fn thresholds_and_periods_follow_kubernetes() {
        let p = probe(ProbeAction::Tcp { port: 1 }, 3);
        let mut tally = ProbeTally::new(1_000);
        assert!(!tally.due(&p, 2_999), "initial delay");
        assert!(tally.due(&p, 3_000));
        assert_eq!(tally.record(&p, 3_000, false), None);
        assert!(!tally.due(&p, 5_999), "period");
        assert_eq!(tally.record(&p, 6_000, false), None);
        assert_eq!(tally.record(&p, 9_000, false), Some(false), "third failure decides");
        assert_eq!(tally.record(&p, 12_000, true), Some(true), "one success recovers");
    }

    #[test]
    fn tcp_and_http_probes_talk_to_real_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for (i, stream) in listener.incoming().take(3).enumerate() {
                let mut stream = stream.unwrap();
                // Read the whole request (the TCP probe sends none) before answering.
                let mut request = Vec::new();
                let mut buf = [0u8; 256];
                while !request.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let status = if i == 1 { "503 Service Unavailable" } else { "200 OK" };
                let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let mut fake = crate::runtime::fake::FakeRuntime::default();
        let tcp = probe(ProbeAction::Tcp { port }, 1);
        assert!(run(&tcp, "c", &mut fake));
        let http = probe(ProbeAction::HttpGet { path: "/healthz".try_into().unwrap(), port, https: false }, 1);
        assert!(!run(&http, "c", &mut fake), "503 fails");
        assert!(run(&http, "c", &mut fake), "200 passes");
        server.join().unwrap();
        let closed = probe(ProbeAction::Tcp { port: 1 }, 1);
        assert!(!run(&closed, "c", &mut fake));
        let exec = probe(ProbeAction::Exec { command: TextList::from_strs(["cat", "/tmp/ok"]).unwrap() }, 1);
        assert!(run(&exec, "c", &mut fake));
        fake.exec_results.insert("c".into(), Some(1));
        assert!(!run(&exec, "c", &mut fake));
    }
}
