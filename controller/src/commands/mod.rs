//! The client commands, one module per verb: [`apply`], [`get`] (with the
//! tables of [`table`]), [`describe`], [`delete`], [`logs`].

use std::io::Write;
use std::time::SystemTime;

use anyhow::Context;
use serde_json::Value;

use crate::api::{ApplyRequest, ApplyResponse, ApplyResult, ObjectList, SourceText};
use crate::cli::{ApplyArgs, ApplyOutput, DeleteArgs, DescribeArgs, DryRun, GetArgs, LogsArgs, OutputFormat};
use crate::client::Client;
use crate::manifest::{self, Kind};
use crate::object::{ApiObject, ObjectKey, age, kind_from_resource, resource_of};
use crate::status::{DaemonSetStatus, DeploymentStatus, JobStatus, NodeStatus, PodStatus, condition};
use crate::store::EventType;

fn kind_arg(resource: &str) -> anyhow::Result<Kind> {
    kind_from_resource(resource).with_context(|| {
        format!(
            "unknown resource {resource:?}; one of: {}",
            crate::object::RESOURCES.iter().map(|(r, _)| *r).collect::<Vec<_>>().join(", ")
        )
    })
}

fn client_for(args: &crate::cli::ClientArgs) -> anyhow::Result<Client> {
    Client::from_args(args)
}

mod apply;
mod delete;
mod describe;
mod get;
mod logs;
pub mod table;
pub mod wait;

pub use apply::apply;
pub use delete::delete;
pub use describe::{describe, describe_text};
pub use get::get;
pub use logs::logs;
use table::Table;

/// `deployment/web` or `deployment/web (namespace factory)` like kubectl.
fn display_key(key: &ObjectKey) -> String {
    let kind = key.kind.to_string().to_lowercase();
    match key.namespace.as_str() {
        "" | "default" => format!("{kind}/{}", key.name),
        ns => format!("{kind}/{} (namespace {ns})", key.name),
    }
}

fn or_dash(text: &str) -> String {
    if text.is_empty() { "-".into() } else { text.to_owned() }
}

fn or_unknown(text: String) -> String {
    if text.is_empty() { "Unknown".into() } else { text }
}

fn labels_text(value: Option<&Value>) -> String {
    let Some(Value::Object(map)) = value else { return "<none>".into() };
    if map.is_empty() {
        return "<none>".into();
    }
    map.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")
}

/// `512Mi`-style binary size.
fn bytes_text(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            // One decimal while it says something: 23.5Gi, 512Mi, 128Gi.
            let tenths = (bytes as u128 * 10 + size as u128 / 2) / size as u128;
            return match tenths {
                t if t % 10 == 0 || t >= 1000 => format!("{}{unit}", (t + 5) / 10),
                t => format!("{}.{}{unit}", t / 10, t % 10),
            };
        }
    }
    bytes.to_string()
}

/// A memory quantity as it is stored (`25276502016`, `16Gi`) in binary
/// units (`23.5Gi`); the text itself when it does not parse.
fn memory_text(quantity: &str) -> String {
    match crate::manifest::Quantity::parse(quantity) {
        Ok(q) => bytes_text(u64::try_from(q.as_units()).unwrap_or(u64::MAX)),
        Err(_) => quantity.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use serde_json::json;

    #[test]
    fn pod_rows_show_reason_node_and_restarts() {
        let mut pod = ApiObject::new(Kind::Pod, "default", "web-7f3a-0");
        pod.set_field("spec", json!({"nodeName": "pi-1", "containers": []}));
        pod.set_field(
            "status",
            json!({"phase": "Running", "restartCount": 2, "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        let table = Table::new(Kind::Pod, false, true);
        let mut out = Vec::new();
        table.print(&mut out, &[pod], true).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE   NAME"), "{text}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells[..6], ["default", "web-7f3a-0", "1/1", "Running", "2", "pi-1"]);
    }

    #[test]
    fn the_servers_table_has_the_rows_the_cli_makes_and_kept_rows_age() {
        let mut pod = ApiObject::new(Kind::Pod, "default", "web-7f3a-0");
        pod.set_field("spec", json!({"nodeName": "pi-1", "containers": []}));
        pod.set_field("status", json!({"phase": "Running"}));
        pod.metadata.creation_timestamp = "2026-01-01T00:00:00Z".into();
        let pods = [pod];
        let rows = |table: &Table| -> Vec<Vec<String>> {
            let list: table::TableList = serde_json::from_slice(&table.json(&pods, 7)).unwrap();
            assert_eq!(list.resource_version, "7");
            list.rows.into_iter().map(|r| r.cells).collect()
        };
        let table = Table::new(Kind::Pod, false, true);
        assert_eq!(rows(&table), vec![table.row(&pods[0])]);
        // Asked again later, from the row kept with the object: a new age.
        let mut later = Table::new(Kind::Pod, false, true);
        later.now = table.now + Duration::from_secs(3 * 86400);
        let again = rows(&later);
        assert_eq!(again, vec![later.row(&pods[0])]);
        assert_ne!(again[0].last(), rows(&table)[0].last());
        // Another table of the same object is not served from that row.
        let wide = Table::new(Kind::Pod, true, false);
        assert_eq!(rows(&wide), vec![wide.row(&pods[0])]);
    }

    #[test]
    fn describe_never_prints_secret_values() {
        let mut secret = ApiObject::new(Kind::Secret, "default", "db");
        secret.set_field("data", json!({"password": "aHVudGVyMg=="}));
        let text = describe_text(&secret);
        assert!(text.contains("password"), "{text}");
        assert!(!text.contains("aHVudGVyMg=="), "{text}");
    }

    #[test]
    fn sizes_read_like_kubectl() {
        assert_eq!(bytes_text(512 << 20), "512Mi");
        assert_eq!(bytes_text(3 << 30), "3Gi");
        assert_eq!(bytes_text(100), "100");
        assert_eq!(bytes_text(25_276_502_016), "23.5Gi");
        assert_eq!(bytes_text(128 << 30), "128Gi");
        assert_eq!(bytes_text((1 << 30) + (1 << 20)), "1Gi", "rounded to a tenth");
        assert_eq!(memory_text("25276502016"), "23.5Gi");
        assert_eq!(memory_text("16Gi"), "16Gi");
        assert_eq!(memory_text("n/a"), "n/a");
    }
}
