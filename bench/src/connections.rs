//! `flotilla-bench connections`: what one idle device connection costs the
//! broker. N enrolled logins connect (MQTT 3.1.1, keep-alive 10 min) and
//! subscribe to their own pod document; the broker process's resident
//! memory is read before and after. Side by side in one run: the embedded
//! broker (the gate in front of rumqttd) over plain MQTT and over TLS (as
//! `flotilla server` serves it by default; the clients use the agent's TLS
//! settings), optionally rumqttd alone (an older build without the gate,
//! `--baseline-bin-dir`), and Mosquitto with the files `flotilla
//! mosquitto-config` writes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::json;

use crate::fleet::Binaries;
use crate::fleet::controller::{Controller, ControllerOptions};
use crate::scale::mosquitto::{self, Mosquitto};

/// Options of `flotilla-bench connections`.
#[derive(Debug, clap::Args)]
pub struct ConnectionsArgs {
    /// Device connections opened on each broker (needs as many file descriptors: `ulimit -n`).
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Directory of the flotilla binaries [default: this benchmark's own directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Directory of an older build whose embedded broker has no gate (rumqttd alone), measured
    /// beside this one.
    #[arg(long)]
    baseline_bin_dir: Option<PathBuf>,
}

/// Runs the benchmark.
pub fn run(args: ConnectionsArgs) -> anyhow::Result<()> {
    let binaries = Binaries::locate(args.bin_dir.as_deref())?;
    let work = tempfile::tempdir().context("a work directory")?;
    let n = args.connections;
    measure("embedded (gate + rumqttd)", &binaries, &work.path().join("embedded"), n, Broker::Embedded)?;
    measure("embedded over TLS (gate + rumqttd)", &binaries, &work.path().join("tls"), n, Broker::EmbeddedTls)?;
    if let Some(dir) = &args.baseline_bin_dir {
        measure(
            "embedded (rumqttd alone, baseline build)",
            &Binaries::locate(Some(dir))?,
            &work.path().join("base"),
            n,
            Broker::Embedded,
        )?;
    }
    measure("mosquitto", &binaries, &work.path().join("mosquitto"), n, Broker::Mosquitto)?;
    Ok(())
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Which broker devices connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broker {
    Embedded,
    EmbeddedTls,
    Mosquitto,
}

/// A device's connection, plain or TLS.
trait Connection: Read + Write + Send {}
impl<T: Read + Write + Send> Connection for T {}

fn measure(broker: &str, binaries: &Binaries, dir: &Path, n: usize, kind: Broker) -> anyhow::Result<()> {
    let with_mosquitto = kind == Broker::Mosquitto;
    std::fs::create_dir_all(dir)?;
    let data = dir.join("controller");
    let mqtt = free_addr()?;
    let mut extra_args = Vec::new();
    if with_mosquitto {
        extra_args = vec!["--mqtt-url".to_owned(), format!("mqtt://{mqtt}")];
        // The controller's own login must exist before it connects.
        std::fs::create_dir_all(&data)?;
        let status = std::process::Command::new(&binaries.flotilla)
            .args(["mosquitto-config", "--port", &mqtt.port().to_string(), "--data-dir"])
            .arg(&data)
            .arg("--out")
            .arg(dir.join("mosquitto"))
            .output()?;
        ensure!(status.status.success(), "flotilla mosquitto-config failed");
    }
    let options = ControllerOptions {
        api_addr: free_addr()?,
        mqtt_listen: if with_mosquitto { free_addr()? } else { mqtt },
        advertise: "127.0.0.1".into(),
        extra_args,
        tls: kind == Broker::EmbeddedTls,
    };
    eprintln!("connections: {broker}: starting the controller");
    let controller = Controller::start(binaries, &data, &options)?;
    eprintln!("connections: {broker}: enrolling {n} devices");
    let token = controller.fleet_token(n)?;
    let ca_pem = match kind {
        Broker::EmbeddedTls => Some(std::fs::read_to_string(controller.ca_path())?),
        _ => None,
    };
    let http_tls = match &ca_pem {
        Some(pem) => flotilla_controller::tls::trusting(pem.as_bytes())?,
        None => Default::default(),
    };
    let http: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).tls_config(http_tls).build().into();
    // The agent's own TLS settings (its crypto provider, the fleet CA only).
    let device_tls = ca_pem.as_deref().map(flotilla_agent::tls::trusting).transpose()?;
    let mut logins = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("conn-{i:05}");
        let answer: serde_json::Value = http
            .post(format!("{}/api/v1/enrol", controller.url()))
            .send_json(json!({ "token": token, "nodeName": name }))
            .with_context(|| format!("enrolling {name}"))?
            .body_mut()
            .read_json()?;
        let password = answer["mqttPassword"].as_str().context("no mqttPassword in the enrolment answer")?.to_owned();
        logins.push((name, password));
    }
    let mut broker_process = None;
    let pid = if with_mosquitto {
        let files = dir.join("mosquitto");
        mosquitto::configure(&binaries.flotilla, &data, &files, mqtt.port())?;
        let started = Mosquitto::start(&files)?;
        let pid = started.pid();
        broker_process = Some(started);
        pid
    } else {
        controller.pid()
    };
    std::thread::sleep(Duration::from_secs(3));
    let idle = crate::scale::rss_of(pid)?;
    eprintln!("connections: {broker}: connecting {n} devices");
    let mut streams = Vec::with_capacity(n);
    for (name, password) in &logins {
        streams.push(connect(mqtt, name, password, device_tls.as_ref()).with_context(|| format!("connecting {name}"))?);
    }
    std::thread::sleep(Duration::from_secs(5));
    let connected = crate::scale::rss_of(pid)?;
    let per_connection = connected.saturating_sub(idle) / n as u64;
    println!(
        "{}",
        json!({
            "bench": "connections",
            "broker": broker,
            "connections": n,
            "broker_rss_idle_bytes": idle,
            "broker_rss_connected_bytes": connected,
            "bytes_per_connection": per_connection,
        })
    );
    drop(streams);
    drop(broker_process);
    Ok(())
}

fn string(text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        out.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// CONNECT (keep-alive 10 min), then SUBSCRIBE to the device's own pod
/// document; waits for CONNACK and SUBACK. Over TLS with `tls`.
fn connect(
    broker: SocketAddr,
    name: &str,
    password: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Box<dyn Connection>> {
    let tcp = TcpStream::connect(broker)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut stream: Box<dyn Connection> = match tls {
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(broker.ip().to_string())?;
            Box::new(rustls::StreamOwned::new(rustls::ClientConnection::new(config.clone(), name)?, tcp))
        }
        None => Box::new(tcp),
    };
    let mut body = Vec::new();
    string("MQTT", &mut body);
    body.extend_from_slice(&[4, 0xC2, 0x02, 0x58]);
    for field in [name, name, password] {
        string(field, &mut body);
    }
    stream.write_all(&packet(0x10, &body))?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    ensure!(connack[3] == 0, "CONNACK refused the login (code {})", connack[3]);
    let mut body = vec![0, 1];
    string(&format!("flotilla/v1/nodes/{name}/pods"), &mut body);
    body.push(1);
    stream.write_all(&packet(0x82, &body))?;
    let mut suback = [0u8; 5];
    stream.read_exact(&mut suback)?;
    ensure!(suback[0] == 0x90 && suback[4] != 0x80, "the subscription was refused");
    Ok(stream)
}
