//! The API's limits and error bodies (issue 19), on a real server: a
//! 10 MiB apply goes through, one over the limit is answered 413 with the
//! limit in the JSON body and the CLI says so every time, and the
//! framework's own refusals (bad JSON, wrong content type, wrong shape)
//! answer the documented JSON body too. Over HTTPS, the default; the
//! framework's refusals over plain HTTP (`--plain`).

use std::path::Path;

use flotilla_e2e::ControllerProcess;
use serde_json::Value;

/// A manifest of `count` ConfigMaps of 500 KiB each.
fn config_maps(count: usize, prefix: &str) -> String {
    let value = "x".repeat(500 << 10);
    (0..count)
        .map(|i| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {prefix}-{i}}}\ndata: {{blob: {value}}}\n")
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn apply_file(controller: &ControllerProcess, path: &Path) -> std::process::Output {
    controller.cli().unwrap().arg("apply").arg("-f").arg(path).output().unwrap()
}

/// POST /api/v1/apply with `body` and `content_type`: status and JSON body.
fn post_apply(controller: &ControllerProcess, content_type: &str, body: &[u8]) -> (u16, Value) {
    let mut response = controller
        .http()
        .unwrap()
        .post(format!("{}/api/v1/apply", controller.url))
        .config()
        .http_status_as_error(false)
        .build()
        .header("Authorization", format!("Bearer {}", controller.token().unwrap()))
        .header("Content-Type", content_type)
        .send(body)
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not a JSON body: {text:?}")))
}

#[test]
fn a_large_apply_goes_through_and_one_over_the_limit_is_refused_with_the_limit_every_time() {
    let dir = tempfile::tempdir().unwrap();
    // Over HTTPS, as the server answers by default.
    let controller = ControllerProcess::start_tls(&dir.path().join("controller"), &[]).unwrap();

    let ten_mib = dir.path().join("ten-mib.yaml");
    std::fs::write(&ten_mib, config_maps(21, "big")).unwrap();
    assert!(std::fs::metadata(&ten_mib).unwrap().len() >= 10 << 20);
    let output = apply_file(&controller, &ten_mib);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed = controller.cli().unwrap().args(["get", "configmaps"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).matches("big-").count(), 21);

    let too_big = dir.path().join("too-big.yaml");
    std::fs::write(&too_big, config_maps(40, "huge")).unwrap();
    for attempt in 0..20 {
        let output = apply_file(&controller, &too_big);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "attempt {attempt}");
        assert!(
            stderr.contains("413") && stderr.contains("over the server's limit of 16777216 bytes"),
            "attempt {attempt}: {stderr}"
        );
    }
    let (status, body) = post_apply(&controller, "application/json", &vec![b' '; 17 << 20]);
    assert_eq!((status, body["reason"].as_str()), (413, Some("RequestEntityTooLarge")), "{body}");
}

#[test]
fn the_frameworks_own_refusals_answer_the_json_error_body() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller")).unwrap();
    for (content_type, body, status, reason) in [
        ("application/json", &b"{not json"[..], 400, "BadRequest"),
        ("text/plain", &b"{}"[..], 415, "UnsupportedMediaType"),
        ("application/json", &br#"{"documents": 5}"#[..], 422, "Invalid"),
    ] {
        let (got, answer) = post_apply(&controller, content_type, body);
        assert_eq!((got, answer["reason"].as_str()), (status, Some(reason)), "{answer}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "{answer}");
    }
}
