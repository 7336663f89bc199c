//! A Mosquitto broker for the interop tests, configured with the files
//! `flotilla mosquitto-config` writes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::binary;

/// A Mosquitto broker on a free port, with the files `flotilla
/// mosquitto-config` wrote; killed when dropped.
pub struct Mosquitto {
    child: Child,
    log: PathBuf,
}

impl Mosquitto {
    /// Starts `mosquitto -c config_dir/mosquitto.conf`, logging to
    /// `config_dir/mosquitto.log`.
    pub fn start(config_dir: &Path) -> Mosquitto {
        let log = config_dir.join("mosquitto.log");
        let conf = config_dir.join("mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("mosquitto is installed by scripts/setup");
        Mosquitto { child, log }
    }

    /// SIGHUP: Mosquitto reads its password and ACL files again.
    pub fn reload(&self) {
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -HUP mosquitto");
    }

    /// What Mosquitto logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `flotilla mosquitto-config` for the controller data in
/// `controller_data`, writing into `out` for a listener on `port`.
pub fn mosquitto_config(controller_data: &Path, out: &Path, port: u16) {
    let status = Command::new(binary("flotilla").unwrap())
        .args(["mosquitto-config", "--port", &port.to_string(), "--data-dir"])
        .arg(controller_data)
        .arg("--out")
        .arg(out)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "mosquitto-config failed");
    // Log denied publishes too (the test checks that the broker refused
    // one); root keeps root (the files live in a private temporary dir).
    let conf = out.join("mosquitto.conf");
    let text = std::fs::read_to_string(&conf).unwrap() + "log_type all\nlog_dest stderr\nuser root\n";
    std::fs::write(&conf, text).unwrap();
}

/// A Mosquitto for a controller whose data will be in `dir/controller`:
/// its files written (the controller's own login exists before the
/// controller runs) into `dir/mosquitto`, started on a free port.
pub struct MosquittoBeside {
    /// The controller's data directory (created, empty).
    pub data: PathBuf,
    /// Where `flotilla mosquitto-config` wrote.
    pub dir: PathBuf,
    /// Its port.
    pub port: u16,
    /// `mqtt://127.0.0.1:{port}`.
    pub url: String,
    /// The broker.
    pub broker: Mosquitto,
}

impl MosquittoBeside {
    /// Writes the files and starts Mosquitto.
    pub fn start(dir: &Path) -> MosquittoBeside {
        let data = dir.join("controller");
        std::fs::create_dir_all(&data).unwrap();
        let config = dir.join("mosquitto");
        let port = crate::free_port().unwrap();
        mosquitto_config(&data, &config, port);
        let broker = Mosquitto::start(&config);
        MosquittoBeside { data, dir: config, port, url: format!("mqtt://127.0.0.1:{port}"), broker }
    }
}
