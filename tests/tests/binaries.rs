//! The shipped binaries start, explain themselves and stop cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_e2e::binary;

#[test]
fn agent_reports_its_version_and_protocol() {
    let out = Command::new(binary("flotilla-agent").unwrap()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), format!("flotilla-agent {}", env!("CARGO_PKG_VERSION")));

    let out = Command::new(binary("flotilla-agent").unwrap()).arg("info").output().unwrap();
    assert!(out.status.success());
    let info = String::from_utf8(out.stdout).unwrap();
    assert!(info.contains("protocol v2 profile linux"), "{info}");
}

#[test]
fn an_agent_that_is_not_enrolled_says_how_to_enrol() {
    let tmp = tempfile::tempdir().unwrap();
    let out =
        Command::new(binary("flotilla-agent").unwrap()).args(["run", "--data-dir"]).arg(tmp.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("not enrolled") && stderr.contains("--join"), "{stderr}");
}

#[test]
fn an_agent_with_a_bad_join_token_is_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let controller = flotilla_e2e::ControllerProcess::start(&tmp.path().join("controller")).unwrap();
    let out = Command::new(binary("flotilla-agent").unwrap())
        .args(["run", "--node-id", "bad-token", "--join", &controller.url, "--token", "0123", "--data-dir"])
        .arg(tmp.path().join("agent"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("enrolment refused (403)") && stderr.contains("flotilla node token create"), "{stderr}");
    assert!(!tmp.path().join("agent/enrolment.json").exists());
}

#[test]
fn controller_help_explains_the_server() {
    let out = Command::new(binary("flotilla").unwrap()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("server"), "{help}");
    let out = Command::new(binary("flotilla").unwrap()).args(["server", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("--data-dir") && help.contains("--api-addr"), "{help}");
}

#[test]
fn controller_starts_creates_its_data_dir_and_stops_on_sigint() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mut child = Command::new(binary("flotilla").unwrap())
        .args(["server", "--api-addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let line = lines.next().expect("controller exited before it said it started").unwrap();
        let started = line.contains("flotilla controller ready");
        seen.push(line);
        if started {
            break;
        }
    }
    assert!(seen.iter().any(|l| l.contains("flotilla controller ready")), "{seen:#?}");
    assert!(data_dir.is_dir());
    // TLS by default: a CA of its own, and the API on https://.
    assert!(data_dir.join("tls/ca.pem").is_file() && data_dir.join("tls/ca.key").is_file());
    assert!(seen.iter().any(|l| l.contains("api=https://127.0.0.1:")), "{seen:#?}");

    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "controller should exit 0 on Ctrl-C, got {exit}");
}

fn manifests() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

#[test]
fn apply_dry_run_checks_manifests_and_lists_warnings() {
    let out = Command::new(binary("flotilla").unwrap())
        .args(["apply", "--dry-run=client", "-f"])
        .arg(manifests().join("web-app-from-kubernetes.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stdout.contains("deployment/web (namespace shop) checked (dry run)"), "{stdout}");
    assert!(stderr.contains("spec.template.spec.affinity: not supported, ignored"), "{stderr}");
    assert!(stderr.contains("kind ServiceAccount (v1) has no meaning in Flotilla, skipped"), "{stderr}");
}

#[test]
fn apply_refuses_invalid_input_from_stdin_naming_the_field() {
    use std::io::Write;
    let mut child = Command::new(binary("flotilla").unwrap())
        .args(["apply", "--dry-run=client", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let bad = std::fs::read(manifests().join("invalid/bad-quantity.yaml")).unwrap();
    child.stdin.take().unwrap().write_all(&bad).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("-, document 1: spec.template.spec.containers[0].resources.limits.memory"), "{stderr}");
}

#[test]
fn apply_strict_fails_clearly_on_warnings() {
    let out = Command::new(binary("flotilla").unwrap())
        .args(["apply", "--dry-run=client", "--strict", "-f"])
        .arg(manifests().join("web-app-from-kubernetes.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("--strict turns warnings into errors"));
}
