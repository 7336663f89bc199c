//! Mosquitto for `flotilla-bench fleet --broker mosquitto`, configured by
//! `flotilla mosquitto-config` (password file, ACL) plus what 10,000
//! devices need, written down here:
//!
//! - `ulimit -n` at the hard limit (20,000 here): one descriptor per device;
//! - `max_connections -1` (no limit; Mosquitto's default, set explicitly);
//! - `max_queued_messages 1000`, so a controller catching up after a
//!   restart is not cut off (the default is 1000 too);
//! - `persistence false`, as `mosquitto-config` writes: a broker restart
//!   loses the retained documents and the controller republishes them.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};

/// Writes the files with `flotilla mosquitto-config` (again after new
/// enrolments) and the settings above.
pub fn configure(flotilla: &Path, controller_data: &Path, dir: &Path, port: u16) -> anyhow::Result<()> {
    let output = Command::new(flotilla)
        .args(["mosquitto-config", "--port", &port.to_string(), "--data-dir"])
        .arg(controller_data)
        .arg("--out")
        .arg(dir)
        .output()
        .context("running flotilla mosquitto-config")?;
    ensure!(output.status.success(), "flotilla mosquitto-config: {}", String::from_utf8_lossy(&output.stderr));
    let conf = dir.join("mosquitto.conf");
    let text = std::fs::read_to_string(&conf)?;
    let text = text
        + "max_connections -1\nmax_queued_messages 1000\nlog_type error\nlog_type warning\nlog_dest stderr\nuser root\n";
    std::fs::write(&conf, text)?;
    Ok(())
}

/// A running Mosquitto, killed when dropped.
pub struct Mosquitto {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Mosquitto {
    /// Starts Mosquitto on the files in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let conf = std::fs::read_to_string(dir.join("mosquitto.conf"))?;
        let port = conf
            .lines()
            .find_map(|l| l.strip_prefix("listener "))
            .and_then(|p| p.trim().parse().ok())
            .context("no listener in mosquitto.conf")?;
        let child = spawn(dir)?;
        let mosquitto = Mosquitto { child, dir: dir.to_owned(), port };
        mosquitto.wait_listening()?;
        Ok(mosquitto)
    }

    fn wait_listening(&self) -> anyhow::Result<()> {
        let address = format!("127.0.0.1:{}", self.port);
        crate::fleet::wait_until("Mosquitto to listen", Duration::from_secs(10), Duration::from_millis(20), || {
            Ok(std::net::TcpStream::connect(&address).is_ok().then_some(()))
        })
    }

    /// Its files' directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Re-reads the password and ACL files (SIGHUP).
    pub fn reload(&self) -> anyhow::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGHUP)
            .context("signalling Mosquitto")
    }

    /// Stops it (SIGTERM, as a service manager restarts it) and starts it again.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        self.child = spawn(&self.dir)?;
        self.wait_listening()
    }
}

fn spawn(dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("mosquitto.log"))?;
    Command::new("mosquitto")
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting mosquitto (installed by scripts/setup)")
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
