//! # End-to-end test support
//!
//! The tests in `tests/tests/` start Flotilla's real binaries. Cargo does not
//! build another package's binaries for a test, so the test command
//! (`scripts/test`) runs `cargo build --workspace --bins` first; the helpers
//! here find those binaries next to the test executable and say so loudly
//! when they are missing.

use std::path::PathBuf;

pub mod etcd;
pub mod fleet;
pub mod history;
pub mod mosquitto;
pub mod nats;
pub mod netns;
pub mod partition;

/// Path of a workspace binary (`flotilla`, `flotilla-agent`, `flotilla-bench`)
/// built into the same target directory and profile as the running test.
///
/// `FLOTILLA_BIN_DIR` overrides the directory, e.g. to test release builds.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("FLOTILLA_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            // target/<profile>/deps/<test-exe> -> target/<profile>
            let exe = std::env::current_exe()?;
            exe.parent()
                .and_then(|deps| deps.parent())
                .map(PathBuf::from)
                .ok_or_else(|| anyhow::anyhow!("cannot locate the target directory from {}", exe.display()))?
        }
    };
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build the binaries first with `cargo build --workspace --bins` (scripts/test does)",
        path.display()
    );
    Ok(path)
}

/// A free loopback TCP port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `flotilla server` process on a free loopback port with its own data
/// directory; stopped (SIGTERM, then waited for) when dropped.
///
/// It serves plain HTTP and MQTT (`--plain`) unless started with
/// [`ControllerProcess::start_tls`]: TLS has its own tests
/// (`tests/tests/tls.rs`), the others test what runs over it.
pub struct ControllerProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`, or `https://` with TLS.
    pub url: String,
    /// Port of its embedded MQTT broker (loopback).
    pub mqtt_port: u16,
    /// The data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// The server's stderr log.
    pub log: PathBuf,
}

impl ControllerProcess {
    /// Starts a server on `data_dir` and waits until `/readyz` answers.
    pub fn start(data_dir: &std::path::Path) -> anyhow::Result<Self> {
        Self::start_with(data_dir, &[])
    }

    /// Starts a server serving TLS, as `flotilla server` does by default
    /// (HTTPS and MQTT over TLS, with a CA of its own).
    pub fn start_tls(data_dir: &std::path::Path, extra: &[&str]) -> anyhow::Result<Self> {
        let (port, mqtt_port) = (free_port()?, free_port()?);
        Self::start_at(data_dir, std::net::Ipv4Addr::LOCALHOST, port, mqtt_port, extra, true)
    }

    /// Starts a server with extra `flotilla server` arguments.
    pub fn start_with(data_dir: &std::path::Path, extra: &[&str]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mqtt_port = free_port()?;
        Self::start_on(data_dir, port, mqtt_port, extra)
    }

    /// Starts a server on given ports (a restart keeps its ports).
    pub fn start_on(data_dir: &std::path::Path, port: u16, mqtt_port: u16, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_at(data_dir, std::net::Ipv4Addr::LOCALHOST, port, mqtt_port, extra, false)
    }

    /// Starts a server listening on `host` (e.g. a bridge that devices in
    /// network namespaces reach), free ports, telling agents that address.
    pub fn start_on_host(data_dir: &std::path::Path, host: std::net::Ipv4Addr) -> anyhow::Result<Self> {
        Self::start_on_host_with(data_dir, host, &[])
    }

    /// [`ControllerProcess::start_on_host`] with extra `flotilla server` arguments.
    pub fn start_on_host_with(
        data_dir: &std::path::Path,
        host: std::net::Ipv4Addr,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let free = || -> anyhow::Result<u16> { Ok(std::net::TcpListener::bind((host, 0))?.local_addr()?.port()) };
        let (port, mqtt_port) = (free()?, free()?);
        let host_name = host.to_string();
        let args: Vec<&str> = ["--advertise", host_name.as_str()].into_iter().chain(extra.iter().copied()).collect();
        Self::start_at(data_dir, host, port, mqtt_port, &args, false)
    }

    /// [`ControllerProcess::start_on_host`], serving TLS as by default.
    pub fn start_tls_on_host(data_dir: &std::path::Path, host: std::net::Ipv4Addr) -> anyhow::Result<Self> {
        let free = || -> anyhow::Result<u16> { Ok(std::net::TcpListener::bind((host, 0))?.local_addr()?.port()) };
        let (port, mqtt_port) = (free()?, free()?);
        Self::start_at(data_dir, host, port, mqtt_port, &["--advertise", &host.to_string()], true)
    }

    fn start_at(
        data_dir: &std::path::Path,
        host: std::net::Ipv4Addr,
        port: u16,
        mqtt_port: u16,
        extra: &[&str],
        tls: bool,
    ) -> anyhow::Result<Self> {
        let log = data_dir.with_extension(format!("{port}.log"));
        let child = std::process::Command::new(binary("flotilla")?)
            .args(["server", "--api-addr", &format!("{host}:{port}")])
            .args(["--mqtt-listen", &format!("{host}:{mqtt_port}"), "--data-dir"])
            .arg(data_dir)
            .args(if tls { None } else { Some("--plain") })
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut process = ControllerProcess {
            child,
            url: format!("{}://{host}:{port}", if tls { "https" } else { "http" }),
            mqtt_port,
            data_dir: data_dir.to_owned(),
            log,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if tls {
                let ready = process
                    .http()
                    .ok()
                    .and_then(|agent| agent.get(format!("{}/readyz", process.url)).call().ok())
                    .is_some_and(|response| response.status() == 200);
                if ready {
                    return Ok(process);
                }
            } else if let Ok(mut stream) = std::net::TcpStream::connect((host, port)) {
                use std::io::{Read, Write};
                stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n")?;
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
                    return Ok(process);
                }
            }
            if let Some(status) = process.child.try_wait()? {
                anyhow::bail!("flotilla server exited with {status}: {}", process.log_text());
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "server not ready in 30 s: {}", process.log_text());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The fleet CA's certificate (PEM) of a server serving TLS.
    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("ca.pem")
    }

    /// `sha256:<hex>` of the fleet CA's certificate: what devices pin.
    pub fn ca_sha256(&self) -> anyhow::Result<String> {
        let pin = flotilla_agent::tls::pem_pin(&std::fs::read_to_string(self.ca_path())?)?;
        Ok(flotilla_agent::tls::pin_text(&pin))
    }

    /// An HTTP client for the API: trusting the fleet CA when the server
    /// serves TLS.
    pub fn http(&self) -> anyhow::Result<ureq::Agent> {
        let mut config = ureq::Agent::config_builder();
        if self.url.starts_with("https://") {
            use rustls_pki_types::pem::PemObject as _;
            let pem = std::fs::read(self.ca_path())?;
            let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
                .map(|c| c.map(|c| ureq::tls::Certificate::from_der(&c).to_owned()))
                .collect::<Result<Vec<_>, _>>()?;
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .provider(ureq::tls::TlsProvider::Rustls)
                    .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
                    .build(),
            );
        }
        Ok(config.build().into())
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The API token the server generated.
    pub fn token(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.data_dir.join("token"))?.trim().to_owned())
    }

    /// `/metrics` as it is now.
    pub fn metrics(&self) -> anyhow::Result<String> {
        Ok(self
            .http()?
            .get(format!("{}/metrics", self.url))
            .header("Authorization", format!("Bearer {}", self.token()?))
            .call()?
            .body_mut()
            .read_to_string()?)
    }

    /// The sum of a Prometheus counter over its labels, as `/metrics`
    /// serves it now (0 when it has no series yet).
    pub fn counter(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.metrics()?;
        let series = format!("{name}_total");
        Ok(text
            .lines()
            .filter(|l| l.starts_with(&series) && l[series.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// A `flotilla` client command pointed at this server.
    pub fn cli(&self) -> anyhow::Result<std::process::Command> {
        let mut command = std::process::Command::new(binary("flotilla")?);
        command
            .env("FLOTILLA_SERVER", &self.url)
            .env("FLOTILLA_TOKEN_FILE", self.data_dir.join("token"))
            .env("FLOTILLA_CA_FILE", self.ca_path())
            .env_remove("FLOTILLA_TOKEN");
        Ok(command)
    }

    /// Stops the server with SIGTERM and waits for it (a clean shutdown).
    pub fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.terminate()
    }

    fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    /// Kills the server with SIGKILL: no clean shutdown, like a power cut.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate();
        }
    }
}
