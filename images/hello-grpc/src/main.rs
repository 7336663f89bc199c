//! `hello-grpc`: the standard gRPC health service (`grpc.health.v1.Health`)
//! on `0.0.0.0:$PORT`, for the `grpc` probes of Kubernetes manifests.
//!
//! Environment: `PORT` (default 50051), `HEALTH` (`serving`, the default,
//! or `not-serving`: a version that never becomes healthy, for a rollout
//! that must stop), `SERVING_AFTER` (seconds to answer NOT_SERVING first,
//! default 0), `SERVICE` (a service name reported with the server's status,
//! default `hello.v1.Greeter`). The first line on stdout is
//! `hello-grpc <version> listening on <address> health <status>`.
//!
//! SIGTERM stops serving and exits 0.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tonic_health::ServingStatus;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(text) => text.parse().map_err(|_| format!("{name}={text:?} is not valid")),
        Err(_) => Ok(default),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hello-grpc: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<(), String> {
    let port: u16 = env_or("PORT", 50051)?;
    let health = std::env::var("HEALTH").unwrap_or_else(|_| "serving".into());
    let serving = match health.as_str() {
        "serving" => true,
        "not-serving" => false,
        other => return Err(format!("HEALTH={other:?}: use serving or not-serving")),
    };
    let serving_after = Duration::from_secs(env_or("SERVING_AFTER", 0)?);
    let service = std::env::var("SERVICE").unwrap_or_else(|_| "hello.v1.Greeter".into());
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let status = |up: bool| if up { ServingStatus::Serving } else { ServingStatus::NotServing };
    let initially = serving && serving_after.is_zero();
    reporter.set_service_status("", status(initially)).await;
    reporter.set_service_status(&service, status(initially)).await;
    if serving && !initially {
        let reporter = reporter.clone();
        let service = service.clone();
        tokio::spawn(async move {
            tokio::time::sleep(serving_after).await;
            reporter.set_service_status("", ServingStatus::Serving).await;
            reporter.set_service_status(&service, ServingStatus::Serving).await;
            println!("hello-grpc: now SERVING");
        });
    }
    let address = SocketAddr::from(([0, 0, 0, 0], port));
    println!(
        "hello-grpc {} listening on {address} health {}",
        env!("CARGO_PKG_VERSION"),
        if initially { "SERVING" } else { "NOT_SERVING" }
    );
    let stop = async {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            term.recv().await;
        }
    };
    tonic::transport::Server::builder()
        .add_service(health_service)
        .serve_with_shutdown(address, stop)
        .await
        .map_err(|e| format!("serving on {address}: {e}"))
}
