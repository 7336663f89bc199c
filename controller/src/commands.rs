//! The client commands: apply, get, describe, delete.

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
    Client::new(&args.server, &args.token_file())
}

/// `flotilla apply`.
pub fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    // Read once (stdin cannot be read twice), parse locally first: file
    // errors and warnings appear without a round trip, or without a server.
    let sources = manifest::read_all(&args.files)?;
    let mut parsed = manifest::Parsed::default();
    for (source, text) in &sources {
        let one = manifest::parse_str(source, text)?;
        parsed.objects.extend(one.objects);
        parsed.warnings.extend(one.warnings);
    }
    if args.strict {
        parsed = parsed.strict()?;
    }
    let response = if args.dry_run == Some(DryRun::Client) {
        let warnings = parsed.warnings.iter().map(ToString::to_string).collect();
        let results = parsed
            .objects
            .iter()
            .map(|o| ApplyResult {
                kind: o.kind,
                namespace: o.metadata.namespace.clone(),
                name: o.metadata.name.clone(),
                action: "checked".to_owned(),
            })
            .collect();
        ApplyResponse { warnings, results }
    } else {
        // The server checks again (it may be another version) and, for a
        // dry run, answers from the objects it stores without storing any.
        let dry_run = args.dry_run == Some(DryRun::Server);
        let documents = sources.into_iter().map(|(source, text)| SourceText { source, text }).collect();
        let request = ApplyRequest { documents, strict: args.strict, dry_run };
        let answer: anyhow::Result<ApplyResponse> = client_for(&args.client)
            .and_then(|client| client.send_json("POST", "/api/v1/apply", &request, "apply refused"));
        if dry_run {
            answer.context("the server dry run failed (`--dry-run=client` checks the files without a server)")?
        } else {
            answer?
        }
    };
    if args.output == Some(ApplyOutput::Json) {
        println!("{}", serde_json::to_string_pretty(&response)?);
        return Ok(());
    }
    let note = match args.dry_run {
        Some(DryRun::Server) => " (server dry run)",
        Some(DryRun::Client) => " (dry run)",
        None => "",
    };
    for warning in &response.warnings {
        eprintln!("warning: {warning}");
    }
    for result in &response.results {
        let key = ObjectKey::new(result.kind, &result.namespace, &result.name);
        println!("{} {}{note}", display_key(&key), result.action);
    }
    Ok(())
}

/// `deployment/web` or `deployment/web (namespace factory)` like kubectl.
fn display_key(key: &ObjectKey) -> String {
    let kind = key.kind.to_string().to_lowercase();
    match key.namespace.as_str() {
        "" | "default" => format!("{kind}/{}", key.name),
        ns => format!("{kind}/{} (namespace {ns})", key.name),
    }
}

/// `flotilla get`.
pub fn get(args: GetArgs) -> anyhow::Result<()> {
    let kind = kind_arg(&args.resource)?;
    let client = client_for(&args.client)?;
    let namespace = (!args.all_namespaces).then_some(args.namespace.as_str());
    let (items, resource_version) = match &args.name {
        Some(name) => {
            let object = client.get(&ObjectKey::new(kind, &args.namespace, name))?;
            let rv = object.metadata.resource_version.clone();
            (vec![object], rv)
        }
        None => {
            let list = client.list(kind, namespace, &args.selector)?;
            (list.items, list.resource_version)
        }
    };
    let mut out = std::io::stdout().lock();
    match args.output {
        Some(OutputFormat::Json) => {
            if args.name.is_some() {
                writeln!(out, "{}", serde_json::to_string_pretty(&items[0])?)?;
            } else {
                let list = ObjectList { kind: "List".to_owned(), resource_version: resource_version.clone(), items };
                writeln!(out, "{}", serde_json::to_string_pretty(&list_json(&list))?)?;
            }
        }
        Some(OutputFormat::Yaml) => {
            if args.name.is_some() {
                write!(out, "{}", serde_yaml_ng::to_string(&items[0])?)?;
            } else {
                let list = ObjectList { kind: "List".to_owned(), resource_version: resource_version.clone(), items };
                write!(out, "{}", serde_yaml_ng::to_string(&list_json(&list))?)?;
            }
        }
        Some(OutputFormat::Name) => {
            for item in &items {
                writeln!(out, "{}/{}", kind.to_string().to_lowercase(), item.metadata.name)?;
            }
        }
        format => {
            let wide = format == Some(OutputFormat::Wide);
            let table = Table::new(kind, wide, args.all_namespaces);
            if items.is_empty() && !args.watch {
                match namespace {
                    Some(ns) if kind.is_namespaced() => eprintln!("No {} found in namespace {ns}.", resource_of(kind)),
                    _ => eprintln!("No {} found.", resource_of(kind)),
                }
                return Ok(());
            }
            table.print(&mut out, &items, true)?;
        }
    }
    out.flush()?;
    drop(out);
    if args.watch {
        watch(&client, kind, namespace, &args, resource_version)?;
    }
    Ok(())
}

/// The JSON a script reads from `get -o json` (documented in docs/cli-json.md).
fn list_json(list: &ObjectList) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": { "resourceVersion": list.resource_version },
        "items": list.items,
    })
}

fn watch(client: &Client, kind: Kind, namespace: Option<&str>, args: &GetArgs, mut from: String) -> anyhow::Result<()> {
    let table = Table::new(kind, args.output == Some(OutputFormat::Wide), args.all_namespaces);
    loop {
        let start = from.clone();
        let result = client.watch(kind, namespace, &args.selector, &start, |event| {
            if let Some(name) = &args.name
                && &event.object.metadata.name != name
            {
                return Ok(true);
            }
            from = event.object.metadata.resource_version.clone();
            let mut out = std::io::stdout().lock();
            match args.output {
                Some(OutputFormat::Json) => writeln!(out, "{}", serde_json::to_string(&event)?)?,
                Some(OutputFormat::Yaml) => write!(out, "---\n{}", serde_yaml_ng::to_string(&event)?)?,
                Some(OutputFormat::Name) => {
                    writeln!(out, "{}/{}", kind.to_string().to_lowercase(), event.object.metadata.name)?
                }
                _ => {
                    let mut object = ApiObject::clone(&event.object);
                    if event.event_type == EventType::Deleted && kind == Kind::Pod {
                        let mut status: PodStatus = object.status();
                        status.phase = "Terminating".into();
                        status.reason.clear();
                        object.set_status(&status);
                    }
                    table.print(&mut out, &[object], false)?;
                }
            }
            out.flush()?;
            Ok(true)
        });
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.to_string().contains("list again") || e.to_string().contains("too old") => {
                // Fell behind: list again and go on from there, like kubectl.
                let list = client.list(kind, namespace, &args.selector)?;
                from = list.resource_version;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Columns per kind, kubectl style.
struct Table {
    kind: Kind,
    wide: bool,
    namespaced: bool,
    now: SystemTime,
}

impl Table {
    fn new(kind: Kind, wide: bool, all_namespaces: bool) -> Self {
        Table { kind, wide, namespaced: all_namespaces && kind.is_namespaced(), now: SystemTime::now() }
    }

    fn headers(&self) -> Vec<&'static str> {
        let mut h: Vec<&str> = match self.kind {
            Kind::Pod => vec!["NAME", "READY", "STATUS", "RESTARTS", "NODE", "AGE"],
            Kind::Node => vec!["NAME", "STATUS", "ARCH", "CPU", "MEMORY", "PODS", "AGE"],
            Kind::Deployment => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "REVISION", "AGE"],
            Kind::DaemonSet => vec!["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            Kind::Job => vec!["NAME", "COMPLETIONS", "STATUS", "AGE"],
            Kind::Service => vec!["NAME", "TYPE", "PORTS", "SELECTOR", "AGE"],
            Kind::ConfigMap => vec!["NAME", "DATA", "AGE"],
            Kind::Secret => vec!["NAME", "TYPE", "DATA", "AGE"],
            Kind::Namespace => vec!["NAME", "AGE"],
            Kind::Event => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"],
        };
        if self.wide {
            match self.kind {
                Kind::Pod => h.extend(["CPU(m)", "MEMORY", "MESSAGE"]),
                Kind::Node => h.extend(["CPU-USED(m)", "MEMORY-USED", "VERSION", "LABELS"]),
                Kind::Deployment | Kind::DaemonSet | Kind::Job => h.extend(["IMAGES", "SELECTOR"]),
                Kind::Service => h.push("ENDPOINTS"),
                _ => {}
            }
        }
        if self.namespaced {
            h.insert(0, "NAMESPACE");
        }
        h
    }

    fn row(&self, o: &ApiObject) -> Vec<String> {
        let age = age(&o.metadata.creation_timestamp, self.now);
        let name = o.metadata.name.clone();
        let spec = o.content.get("spec").cloned().unwrap_or(Value::Null);
        let mut row = match self.kind {
            Kind::Pod => {
                let s: PodStatus = o.status();
                let ready = if s.is_ready() { "1/1" } else { "0/1" };
                let shown = if o.is_retired() {
                    "Terminating".to_owned()
                } else if s.phase == "Pending" && !s.reason.is_empty() {
                    s.reason.clone()
                } else {
                    s.phase.clone()
                };
                let node = spec.get("nodeName").and_then(|v| v.as_str()).unwrap_or("<none>").to_owned();
                vec![name, ready.into(), or_unknown(shown), s.restart_count.to_string(), node, age]
            }
            Kind::Node => {
                let s: NodeStatus = o.status();
                let cordoned = spec.get("unschedulable").and_then(|v| v.as_bool()).unwrap_or(false);
                let mut state = if s.conditions.is_empty() {
                    "Unknown".to_owned()
                } else if s.is_ready() {
                    "Ready".to_owned()
                } else {
                    condition(&s.conditions, "Ready").map_or("NotReady".into(), |c| {
                        if c.reason.is_empty() { "NotReady".into() } else { c.reason.clone() }
                    })
                };
                if cordoned {
                    state.push_str(",SchedulingDisabled");
                }
                let cap = |k: &str| s.capacity.get(k).cloned().unwrap_or_else(|| "-".into());
                vec![name, state, or_dash(&s.node_info.architecture), cap("cpu"), cap("memory"), cap("pods"), age]
            }
            Kind::Deployment => {
                let s: DeploymentStatus = o.status();
                let want = spec.get("replicas").and_then(|v| v.as_u64()).unwrap_or(1);
                vec![
                    name,
                    format!("{}/{want}", s.ready_replicas),
                    s.updated_replicas.to_string(),
                    s.available_replicas.to_string(),
                    s.revision.to_string(),
                    age,
                ]
            }
            Kind::DaemonSet => {
                let s: DaemonSetStatus = o.status();
                vec![
                    name,
                    s.desired_number_scheduled.to_string(),
                    s.current_number_scheduled.to_string(),
                    s.number_ready.to_string(),
                    s.updated_number_scheduled.to_string(),
                    s.number_available.to_string(),
                    age,
                ]
            }
            Kind::Job => {
                let s: JobStatus = o.status();
                let want = spec.get("completions").and_then(|v| v.as_u64()).unwrap_or(1);
                let state = if s.conditions.iter().any(|c| c.condition_type == "Failed" && c.status == "True") {
                    "Failed"
                } else if s.conditions.iter().any(|c| c.condition_type == "Complete" && c.status == "True") {
                    "Complete"
                } else {
                    "Running"
                };
                vec![name, format!("{}/{want}", s.succeeded), state.into(), age]
            }
            Kind::Service => {
                let service_type = spec.get("type").and_then(|v| v.as_str()).unwrap_or("ClusterIP").to_owned();
                let ports = spec.get("ports").and_then(|v| v.as_array()).map_or(String::new(), |ports| {
                    ports
                        .iter()
                        .map(|p| {
                            let proto = p.get("protocol").and_then(|v| v.as_str()).unwrap_or("TCP");
                            format!("{}/{proto}", p.get("port").and_then(|v| v.as_i64()).unwrap_or(0))
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                });
                vec![name, service_type, or_dash(&ports), labels_text(spec.get("selector")), age]
            }
            Kind::ConfigMap => vec![name, o.data_keys().len().to_string(), age],
            Kind::Secret => {
                let t = o.content.get("type").and_then(|v| v.as_str()).unwrap_or("Opaque").to_owned();
                vec![name, t, o.data_keys().len().to_string(), age]
            }
            Kind::Namespace => vec![name, age],
            Kind::Event => {
                let f = crate::events::fields(o);
                let object = format!("{}/{}", f.involved_object.kind.to_lowercase(), f.involved_object.name);
                vec![
                    crate::object::age(&f.last_timestamp, self.now),
                    f.event_type,
                    f.reason,
                    object,
                    f.count.to_string(),
                    f.message,
                ]
            }
        };
        if self.wide {
            match self.kind {
                Kind::Pod => {
                    let s: PodStatus = o.status();
                    let usage = s.usage.clone().unwrap_or_default();
                    let (cpu, mem) = if s.usage.is_some() {
                        (usage.cpu_millis.to_string(), bytes_text(usage.memory_bytes))
                    } else {
                        ("-".into(), "-".into())
                    };
                    row.extend([cpu, mem, or_dash(&s.message)]);
                }
                Kind::Node => {
                    let s: NodeStatus = o.status();
                    let (cpu, mem) = match &s.usage {
                        Some(u) => (u.cpu_millis.to_string(), bytes_text(u.memory_bytes)),
                        None => ("-".into(), "-".into()),
                    };
                    let labels: Vec<String> = o.metadata.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    row.extend([cpu, mem, or_dash(&s.node_info.agent_version), or_dash(&labels.join(","))]);
                }
                Kind::Deployment | Kind::DaemonSet | Kind::Job => {
                    let images = spec
                        .pointer("/template/spec/containers")
                        .and_then(|v| v.as_array())
                        .map(|cs| cs.iter().filter_map(|c| c.get("image")?.as_str()).collect::<Vec<_>>().join(","))
                        .unwrap_or_default();
                    row.extend([or_dash(&images), labels_text(spec.pointer("/selector/matchLabels"))]);
                }
                Kind::Service => {
                    let status: crate::fleet::services::ServiceStatus = o.status();
                    let endpoints: Vec<String> = status.endpoints.values().flatten().cloned().collect();
                    row.push(if endpoints.is_empty() { "<none>".into() } else { endpoints.join(",") });
                }
                _ => {}
            }
        }
        if self.namespaced {
            row.insert(0, o.metadata.namespace.clone());
        }
        row
    }

    fn print(&self, out: &mut impl Write, items: &[ApiObject], header: bool) -> std::io::Result<()> {
        let mut rows: Vec<Vec<String>> = Vec::new();
        if header {
            rows.push(self.headers().into_iter().map(str::to_owned).collect());
        }
        rows.extend(items.iter().map(|o| self.row(o)));
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        for row in rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
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
    const UNITS: [(&str, u64); 3] = [("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// `flotilla logs`: prints what the pod's device answers, then (with
/// `-f`) what was written since, every second.
pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let client = Client::new(&args.client.server, &args.client.token_file())?;
    let mut query = format!("limitBytes={}", args.limit_bytes);
    if let Some(tail) = args.tail {
        query.push_str(&format!("&tailLines={tail}"));
    }
    let (data, mut offset) = client.pod_log(&args.namespace, &args.name, &query)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&data)?;
    out.flush()?;
    if !args.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let Some(from) = offset else {
            anyhow::bail!("the server gave no offset to follow from");
        };
        let (data, next) =
            client.pod_log(&args.namespace, &args.name, &format!("limitBytes={}&offset={from}", args.limit_bytes))?;
        out.write_all(&data)?;
        out.flush()?;
        offset = next;
    }
}

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
            let node = o.content.get("spec").and_then(|v| v.get("nodeName")).and_then(|v| v.as_str());
            let _ = writeln!(s, "Node:              {}", node.unwrap_or("<none>"));
            let _ = writeln!(s, "Status:            {}", or_unknown(status.phase.clone()));
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
                o.content.get("type").and_then(|v| v.as_str()).unwrap_or("Opaque")
            );
            let _ = writeln!(s, "Data (values hidden; `get secret {} -o yaml` shows them base64):", m.name);
            if let Some(Value::Object(data)) = o.content.get("data") {
                for (key, value) in data {
                    let len = value.as_str().map_or(0, |b| b.len() / 4 * 3);
                    let _ = writeln!(s, "  {key}: about {len} bytes");
                }
            }
            return s;
        }
        _ => {}
    }
    for field in ["spec", "data", "binaryData"] {
        if let Some(value) = o.content.get(field) {
            let _ = writeln!(s, "{}:", capitalize(field));
            let yaml = serde_yaml_ng::to_string(value).unwrap_or_default();
            for line in yaml.lines() {
                let _ = writeln!(s, "  {line}");
            }
        }
    }
    if let Some(value) = o.content.get("status")
        && o.kind != Kind::Pod
    {
        let _ = writeln!(s, "Status:");
        for line in serde_yaml_ng::to_string(value).unwrap_or_default().lines() {
            let _ = writeln!(s, "  {line}");
        }
    }
    s
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// `flotilla delete`.
pub fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let client = client_for(&args.client)?;
    let keys: Vec<ObjectKey> = if !args.files.is_empty() {
        let parsed = manifest::load(&args.files)?;
        parsed.objects.iter().map(|o| ObjectKey::new(o.kind, &o.metadata.namespace, &o.metadata.name)).collect()
    } else {
        let resource = args.resource.as_deref().unwrap_or_default();
        let kind = kind_arg(resource)?;
        anyhow::ensure!(!args.names.is_empty(), "name the {} to delete", resource_of(kind));
        args.names.iter().map(|n| ObjectKey::new(kind, &args.namespace, n)).collect()
    };
    let mut failed = 0;
    for key in keys {
        match client.delete(&key) {
            Ok(_) => println!("{} deleted", display_key(&key)),
            Err(e) => {
                eprintln!("error: {e:#}");
                failed += 1;
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} object(s) not deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_rows_show_reason_node_and_restarts() {
        let mut pod = ApiObject::new(Kind::Pod, "default", "web-7f3a-0");
        pod.content.insert("spec".into(), json!({"nodeName": "pi-1", "containers": []}));
        pod.content.insert(
            "status".into(),
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
    fn describe_never_prints_secret_values() {
        let mut secret = ApiObject::new(Kind::Secret, "default", "db");
        secret.content.insert("data".into(), json!({"password": "aHVudGVyMg=="}));
        let text = describe_text(&secret);
        assert!(text.contains("password"), "{text}");
        assert!(!text.contains("aHVudGVyMg=="), "{text}");
    }

    #[test]
    fn sizes_read_like_kubectl() {
        assert_eq!(bytes_text(512 << 20), "512Mi");
        assert_eq!(bytes_text(3 << 30), "3Gi");
        assert_eq!(bytes_text(100), "100");
    }
}
