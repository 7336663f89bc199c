//! Fleet provisioning end to end: the real `flotilla` binary creates,
//! lists and revokes reusable join tokens and resets an enrolled name;
//! devices enrol over plain HTTP, as `flotilla-agent --join` does.

use std::process::Output;

use flotilla_e2e::ControllerProcess;
use serde_json::{Value, json};

fn cli(server: &ControllerProcess, args: &[&str]) -> Output {
    server.cli().unwrap().args(args).output().expect("running flotilla")
}

fn ok(server: &ControllerProcess, args: &[&str]) -> String {
    let output = cli(server, args);
    assert!(
        output.status.success(),
        "flotilla {args:?} failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log_text()
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `POST /api/v1/enrol` as a device does it: status and JSON body.
fn enrol(server: &ControllerProcess, token: &str, name: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent
        .post(format!("{}/api/v1/enrol", server.url))
        .send_json(json!({ "token": token, "nodeName": name }))
        .unwrap();
    (response.status().as_u16(), response.body_mut().read_json().unwrap())
}

/// The `node token ls` row of token `id`, split into its columns.
fn token_row(server: &ControllerProcess, id: &str) -> Vec<String> {
    let table = ok(server, &["node", "token", "ls"]);
    assert!(
        table.lines().next().unwrap().split_whitespace().eq(["ID", "USES", "EXPIRES", "LABELS", "STATE"]),
        "{table}"
    );
    let line = table.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("no token {id}: {table}"));
    line.split("   ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect()
}

/// Ids of every listed token.
fn token_ids(server: &ControllerProcess) -> Vec<String> {
    let listed: Value = serde_json::from_str(&ok(server, &["node", "token", "ls", "-o", "json"])).unwrap();
    listed["items"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
}

/// `node token create ARGS`: the secret and the new token's id.
fn create(server: &ControllerProcess, args: &[&str]) -> (String, String, String) {
    let before = token_ids(server);
    let output = cli(server, &[&["node", "token", "create"], args].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let id = token_ids(server).into_iter().find(|id| !before.contains(id)).unwrap();
    (String::from_utf8(output.stdout).unwrap().trim().to_owned(), id, String::from_utf8(output.stderr).unwrap())
}

#[test]
fn a_token_for_three_devices_enrols_three_then_tokens_are_listed_revoked_and_names_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ControllerProcess::start(&tmp.path().join("controller")).unwrap();

    let (token, id, how_to) = create(&server, &["--uses", "3", "--expires", "2h", "--labels", "site=berlin,line=3"]);
    assert!(how_to.contains("join token for 3 devices") && how_to.contains("--token"), "{how_to}");
    let listed = ok(&server, &["node", "token", "ls", "-o", "json"]);
    assert!(!listed.contains(&token), "the list never shows secrets: {listed}");

    let mut passwords = Vec::new();
    for name in ["edge-1", "edge-2", "edge-3"] {
        let (status, answer) = enrol(&server, &token, name);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["labels"], json!({"line": "3", "site": "berlin"}));
        passwords.push(answer["mqttPassword"].as_str().unwrap().to_owned());
    }
    let (status, answer) = enrol(&server, &token, "edge-4");
    assert_eq!(status, 403, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("has been used 3 of 3 times"), "{answer}");
    let row = token_row(&server, &id);
    assert_eq!(row[1], "3/3");
    assert_eq!(row[3], "line=3,site=berlin");
    assert_eq!(row[4], "used up");

    // An enrolled name is not taken over, and the attempt spends no use.
    let (fresh, fresh_id, how_to) = create(&server, &["--ttl", "10m"]);
    assert!(how_to.contains("one-time join token"), "{how_to}");
    let (status, answer) = enrol(&server, &fresh, "edge-1");
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("flotilla node revoke edge-1"), "{answer}");
    assert_eq!(token_row(&server, &fresh_id)[1], "0/1");

    // Reset frees the name; the fresh token enrols it with new credentials.
    let said = ok(&server, &["node", "reset", "edge-1"]);
    assert!(said.contains("edge-1"), "{said}");
    let (status, answer) = enrol(&server, &fresh, "edge-1");
    assert_eq!(status, 200, "{answer}");
    assert_ne!(answer["mqttPassword"].as_str().unwrap(), passwords[0]);
    let output = cli(&server, &["node", "reset", "nobody"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not enrolled"));

    // A revoked token enrols nobody.
    let (spare, spare_id, _) = create(&server, &["--uses", "5"]);
    let said = ok(&server, &["node", "token", "revoke", &spare_id]);
    assert!(said.contains("revoked"), "{said}");
    let (status, answer) = enrol(&server, &spare, "edge-5");
    assert_eq!(status, 403, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("revoked"), "{answer}");
    assert_eq!(token_row(&server, &spare_id)[4], "revoked");

    // The controller's names are reserved; unknown tokens say only "unknown".
    let (status, answer) = enrol(&server, "no-such-token", "edge-1");
    assert_eq!(status, 403, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("unknown"), "{answer}");
    let (status, answer) = enrol(&server, &token, "flotilla-controller");
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("reserved for the controller"), "{answer}");

    // Tokens and credentials survive a restart.
    server.stop().unwrap();
    let server = ControllerProcess::start(&tmp.path().join("controller")).unwrap();
    assert_eq!(token_row(&server, &id)[1], "3/3");
    let (status, _) = enrol(&server, &fresh, "edge-6");
    assert_eq!(status, 403, "the fresh token was spent on edge-1");
}
