//! A full data volume is a state, not a crash (issue 19): on a small tmpfs
//! data directory, an image upload that does not fit is refused with 507
//! and leaves nothing behind; with the volume full, applies are refused
//! with 507 and `/readyz` says 503 with why; once space is freed the next
//! apply goes through, with no restart, and `/readyz` is 200 again.
//!
//! Needs root (mounting a tmpfs; CI runs as root).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flotilla_e2e::ControllerProcess;
use flotilla_e2e::fleet::wait_until;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs (root needed)");
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

fn readyz(controller: &ControllerProcess) -> (u16, String) {
    let mut response = http().get(format!("{}/readyz", controller.url)).call().unwrap();
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap_or_default())
}

fn apply_config_map(controller: &ControllerProcess, name: &str) -> std::process::Output {
    let mut child = controller
        .cli()
        .unwrap()
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let manifest = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{line: '3'}}\n");
    child.stdin.take().unwrap().write_all(manifest.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Fills the volume with a file until it is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

#[test]
fn a_full_data_volume_refuses_with_507_keeps_nothing_half_written_and_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _tmpfs = Tmpfs::mount(&data, "64m");
    let controller = ControllerProcess::start(&data).unwrap();
    assert_eq!(readyz(&controller).0, 200);

    // An upload larger than the volume: 507, and its partial data gone.
    let token = controller.token().unwrap();
    let started = http()
        .post(format!("{}/v2/e2e/big/blobs/uploads/", controller.url))
        .header("Authorization", format!("Bearer {token}"))
        .send_empty()
        .unwrap();
    assert_eq!(started.status().as_u16(), 202);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let url = if location.starts_with("http") { location } else { format!("{}{location}", controller.url) };
    let mut refused = http()
        .patch(&url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/octet-stream")
        .send(&vec![7u8; 96 << 20][..])
        .unwrap();
    let body = refused.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(refused.status().as_u16(), 507, "{body}");
    assert!(body.contains("DENIED") && body.contains("discarded"), "{body}");
    let uploads = data.join("registry").join("uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads).unwrap().collect();
    assert!(left.is_empty(), "partial upload data left in {}: {left:?}", uploads.display());
    // The API still works: there was room once the upload was gone.
    let output = apply_config_map(&controller, "before");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // The volume full (something else filled it): applies refused with the
    // figures, readiness 503 with why.
    let filler = data.join("filler");
    fill(&filler);
    let output = apply_config_map(&controller, "while-full");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("507") && stderr.contains("MiB free"), "{stderr}");
    let (status, why) = readyz(&controller);
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("DiskFull") || why.contains("StoreWritesFailing"), "{why}");
    // A metric says so (the 96 MiB upload and this apply).
    assert!(controller.counter("flotilla_writes_refused_for_space").unwrap() >= 2.0);
    let metrics = controller.metrics().unwrap();
    assert!(metrics.contains("flotilla_data_volume_reserve_bytes"), "{metrics}");

    // Space freed: the next apply goes through, no restart.
    std::fs::remove_file(&filler).unwrap();
    let output = apply_config_map(&controller, "after");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    wait_until("/readyz 200 again", Duration::from_secs(10), || (readyz(&controller).0 == 200).then_some(()));
    // And an event, written as soon as the store could write it.
    wait_until("a DiskReserveReached event", Duration::from_secs(10), || {
        let events = controller.cli().unwrap().args(["get", "events"]).output().unwrap();
        let events = String::from_utf8_lossy(&events.stdout).into_owned();
        events.contains("DiskReserveReached").then_some(())
    });
    let listed = controller.cli().unwrap().args(["get", "configmaps"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("before") && listed.contains("after") && !listed.contains("while-full"), "{listed}");
}
