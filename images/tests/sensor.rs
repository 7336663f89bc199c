//! The sensor workload (images/sensor/sensor.sh), run by the host's
//! busybox-static: the same shell it gets in its image.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sensor/sensor.sh")
}

/// Starts the sensor with `envs` under busybox's shell.
fn start(envs: &[(&str, &str)]) -> Child {
    Command::new("/bin/busybox")
        .arg("sh")
        .arg(script())
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run /bin/busybox (install busybox-static; scripts/setup does)")
}

/// Waits for the child to exit, killing it if it takes longer than `limit`.
fn wait_at_most(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the sensor did not exit within {limit:?}");
        }
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn writes_readings_to_stdout_and_data_dir_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let readings = data.path().join("readings.jsonl");
    let mut child = start(&[("INTERVAL", "1"), ("DATA_DIR", data.path().to_str().unwrap()), ("SENSOR_ID", "line-3")]);

    // Two readings, one second apart.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&readings).map_or(0, |text| text.lines().count()) < 2 {
        assert!(Instant::now() < deadline, "no two readings within 10 s");
        sleep(Duration::from_millis(50));
    }
    let kill = Command::new("/bin/busybox").args(["kill", "-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    // INTERVAL is 1 s; stopping must not wait for a reading to finish.
    let stop_started = Instant::now();
    let status = wait_at_most(&mut child, Duration::from_secs(5));
    assert!(stop_started.elapsed() < Duration::from_millis(900), "slow stop");
    assert_eq!(status.code(), Some(0));

    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let mut lines: Vec<&str> = stdout.lines().collect();
    let last = lines.pop().unwrap();
    assert_eq!(last, format!("sensor: stopped after {} readings", lines.len()));
    let saved = std::fs::read_to_string(&readings).unwrap();
    assert_eq!(saved.lines().collect::<Vec<_>>(), lines, "the file holds what stdout shows");

    for (at, line) in lines.iter().enumerate() {
        let reading: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert_eq!(reading["sensor"], "line-3");
        assert_eq!(reading["seq"], at as u64 + 1);
        assert!(reading["load1"].is_f64(), "{line}");
        let time = reading["time"].as_str().unwrap();
        assert!(time.len() == 20 && time.ends_with('Z'), "{time}");
    }
}

#[test]
fn without_a_data_dir_it_only_prints() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-mounted");
    let mut child = start(&[("INTERVAL", "1"), ("DATA_DIR", missing.to_str().unwrap())]);
    sleep(Duration::from_millis(300));
    let _ = Command::new("/bin/busybox").args(["kill", "-TERM", &child.id().to_string()]).status();
    assert_eq!(wait_at_most(&mut child, Duration::from_secs(5)).code(), Some(0));
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert!(stdout.starts_with("{\"sensor\":"), "{stdout}");
    assert!(!missing.exists());
}

#[test]
fn rejects_a_bad_interval() {
    for interval in ["0", "fast", "1.5"] {
        let output = Command::new("/bin/busybox").arg("sh").arg(script()).env("INTERVAL", interval).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "INTERVAL={interval}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("INTERVAL must be a whole number"), "{stderr}");
    }
}
