//! The agent's gRPC probe against tonic's own health service (the
//! `hello-grpc` example, run here as a plain process): SERVING passes,
//! NOT_SERVING and an unknown service fail with what the server said, a
//! server that becomes healthy later passes then.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_agent::grpc::{Unhealthy, check};
use flotilla_e2e::{binary, free_port};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(port: u16, env: &[(&str, &str)]) -> Server {
    let mut command = Command::new(binary("hello-grpc").unwrap());
    command.env("PORT", port.to_string()).stdout(Stdio::null()).stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let server = Server(command.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "hello-grpc not listening on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

const TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn the_probe_reads_the_standard_health_service() {
    let port = free_port().unwrap();
    let _server = serve(port, &[]);
    assert_eq!(check(port, "", TIMEOUT), Ok(()));
    assert_eq!(check(port, "hello.v1.Greeter", TIMEOUT), Ok(()));
    assert_eq!(check(port, "no.such.Service", TIMEOUT), Err(Unhealthy::NoAnswer), "grpc-status NOT_FOUND");
    // Many checks on fresh connections, as a probe makes them.
    for _ in 0..50 {
        assert_eq!(check(port, "", TIMEOUT), Ok(()));
    }
}

#[test]
fn not_serving_fails_and_a_server_that_becomes_healthy_passes_then() {
    let port = free_port().unwrap();
    let _server = serve(port, &[("HEALTH", "not-serving")]);
    assert_eq!(check(port, "", TIMEOUT), Err(Unhealthy::Status(2)));
    assert_eq!(check(port, "", TIMEOUT).unwrap_err().to_string(), "gRPC health status NOT_SERVING");

    let port = free_port().unwrap();
    let _server = serve(port, &[("SERVING_AFTER", "1")]);
    assert_eq!(check(port, "", TIMEOUT), Err(Unhealthy::Status(2)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while check(port, "", TIMEOUT).is_err() {
        assert!(Instant::now() < deadline, "never became SERVING");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_server_that_is_not_grpc_fails_the_probe_without_hanging() {
    // An HTTP/1 server answers the preface with an error and closes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            use std::io::Write;
            let mut stream = stream.unwrap();
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let started = Instant::now();
    assert!(matches!(check(port, "", TIMEOUT), Err(Unhealthy::Transport(_))));
    assert!(started.elapsed() < TIMEOUT + Duration::from_millis(500));
}
