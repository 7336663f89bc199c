//! `flotilla describe`: one object in words, with its events.

use super::*;

/// `flotilla describe`.
pub fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let kind = kind_arg(&args.resource)?;
    let client = client_for(&args.client)?;
    let o = client.get(&ObjectKey::new(kind, &args.namespace, &args.name))?;
    print!("{}", describe_text(&o));
    // Its events, oldest first (a listing failure only loses this part).
    if o.kind != Kind::Event && o.kind.is_namespaced() {
        let events = client.list(Kind::Event, Some(&o.metadata.namespace), "").map(|l| l.items).unwrap_or_default();
        let mut mine: Vec<_> = events
            .iter()
            .map(crate::events::fields)
            .filter(|e| e.involved_object.kind == o.kind.to_string() && e.involved_object.name == o.metadata.name)
            .collect();
        mine.sort_by(|a, b| a.last_timestamp.cmp(&b.last_timestamp));
        if !mine.is_empty() {
            println!("Events:");
            for e in mine {
                println!("  {}  {}  {}  {}", e.last_timestamp, e.event_type, e.reason, e.message);
            }
        }
    }
    Ok(())
}

/// The text of `describe`: metadata, the kind's essentials, spec and status.
/// Secret values are never shown (keys and sizes only).
pub fn describe_text(o: &ApiObject) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let m = &o.metadata;
    let map_text = |map: &std::collections::BTreeMap<String, String>| {
        if map.is_empty() {
            "<none>".to_owned()
        } else {
            map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n                   ")
        }
    };
    let _ = writeln!(s, "Name:              {}", m.name);
    if !m.namespace.is_empty() {
        let _ = writeln!(s, "Namespace:         {}", m.namespace);
    }
    let _ = writeln!(s, "Kind:              {}", o.kind);
    let _ = writeln!(s, "Labels:            {}", map_text(&m.labels));
    let _ = writeln!(s, "Annotations:       {}", map_text(&m.annotations));
    let _ = writeln!(s, "Created:           {}", m.creation_timestamp);
    let _ = writeln!(s, "UID:               {}", m.uid);
    let _ = writeln!(s, "Resource version:  {}", m.resource_version);
    let _ = writeln!(s, "Generation:        {}", m.generation);
    for owner in &m.owner_references {
        let _ = writeln!(s, "Controlled by:     {}/{}", owner.kind, owner.name);
    }
    match o.kind {
        Kind::Pod => {
            let status: PodStatus = o.status();
            let node = o.node_name();
            let _ = writeln!(s, "Node:              {}", node.unwrap_or("<none>"));
            let _ = writeln!(s, "Status:            {}", status.phase);
            if !status.reason.is_empty() {
                let _ = writeln!(s, "Reason:            {}", status.reason);
            }
            if !status.message.is_empty() {
                let _ = writeln!(s, "Message:           {}", status.message);
            }
            let _ = writeln!(s, "Restarts:          {}", status.restart_count);
            if let Some(code) = status.exit_code {
                let _ = writeln!(s, "Last exit code:    {code}");
            }
            if !status.conditions.is_empty() {
                let _ = writeln!(s, "Conditions:\n  Type             Status  Reason");
                for c in &status.conditions {
                    let _ = writeln!(s, "  {:<16} {:<7} {}", c.condition_type, c.status, c.reason);
                }
            }
        }
        Kind::Secret => {
            let _ = writeln!(
                s,
                "Type:              {}",
                o.content::<crate::object::SecretData>()
                    .map(|s| s.secret_type.clone())
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "Opaque".to_owned())
            );
            let _ = writeln!(s, "Data (values hidden; `get secret {} -o yaml` shows them base64):", m.name);
            for (key, value) in o.config_entries() {
                let _ = writeln!(s, "  {key}: {} bytes", value.len());
            }
            return s;
        }
        _ => {}
    }
    for field in ["spec", "data", "binaryData"] {
        if let Some(value) = o.field(field) {
            let _ = writeln!(s, "{}:", capitalize(field));
            let yaml = serde_yaml_ng::to_string(&value).unwrap_or_default();
            for line in yaml.lines() {
                let _ = writeln!(s, "  {line}");
            }
        }
    }
    if let Some(value) = o.field("status")
        && o.kind != Kind::Pod
    {
        let _ = writeln!(s, "Status:");
        for line in serde_yaml_ng::to_string(&value).unwrap_or_default().lines() {
            let _ = writeln!(s, "  {line}");
        }
    }
    s
}

pub(super) fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}
