//! Starts the real `hello-http` binary on a free port and talks HTTP to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server, killed when dropped.
struct Server {
    child: Child,
    address: SocketAddr,
    _stdout: BufReader<ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `PORT=0` (the kernel picks a free port) and
/// reads the address from its first line.
fn start(envs: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hello-http"))
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hello-http");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the first line");
    let address = line
        .trim()
        .rsplit_once(" listening on ")
        .and_then(|(_, address)| address.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    Server { child, address, _stdout: stdout }
}

/// Sends raw bytes and returns (status, whole response).
fn send(address: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(request).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    (status, response)
}

fn get(address: SocketAddr, path: &str) -> (u16, String) {
    send(address, format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
}

#[test]
fn serves_greeting_health_and_errors() {
    let server = start(&[]);
    let (status, response) = get(server.address, "/");
    assert_eq!(status, 200, "{response}");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let greeting = format!("hello from {} (hello-http {})", hostname.trim(), env!("CARGO_PKG_VERSION"));
    assert!(response.contains(&greeting), "{response}");

    let (status, response) = get(server.address, "/healthz");
    assert_eq!(status, 200);
    assert!(response.ends_with("\r\n\r\nok\n"), "{response}");
    assert_eq!(get(server.address, "/ready").0, 200);
    assert_eq!(get(server.address, "/missing").0, 404);
    assert_eq!(send(server.address, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0, 405);
    assert_eq!(send(server.address, b"nonsense\r\n\r\n").0, 400);

    let (status, response) = send(server.address, b"HEAD /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200);
    assert!(response.ends_with("\r\n\r\n"), "HEAD has no body: {response}");
}

#[test]
fn ready_waits_for_the_delay_while_healthz_answers_at_once() {
    let started = Instant::now();
    let server = start(&[("READY_DELAY", "1")]);
    assert_eq!(get(server.address, "/healthz").0, 200);
    assert_eq!(get(server.address, "/ready").0, 503);
    let deadline = started + Duration::from_secs(10);
    while get(server.address, "/ready").0 != 200 {
        assert!(Instant::now() < deadline, "/ready never became 200");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(started.elapsed() >= Duration::from_secs(1), "ready before its delay");
}

#[test]
fn invalid_port_is_refused_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_hello-http")).env("PORT", "http").output().expect("run hello-http");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PORT=\"http\""), "{stderr}");
}
