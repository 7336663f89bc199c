//! The tables `flotilla get` prints, kubectl's columns per kind. The server
//! renders them (`GET /api/v1/pods?as=table`, as Kubernetes' server-side
//! printing): a table of 50,000 pods is a tenth of their JSON, and the
//! client only aligns the columns.

use super::*;
use crate::status::ConditionType;

/// Columns per kind, kubectl style.
pub struct Table {
    kind: Kind,
    wide: bool,
    namespaced: bool,
    pub(super) now: SystemTime,
}

/// One cell of a row: text, or an AGE, whose text depends on when it is
/// written out. Everything else of a row depends on the object's version
/// only, so the server keeps rows with the objects and writes ages per
/// answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// As shown.
    Text(String),
    /// The age since this RFC 3339 time.
    Age(String),
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell::Text(text)
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::Text(text.to_owned())
    }
}

/// A row of cells from values that are text or [`Cell`]s.
macro_rules! cells {
    ($($cell:expr),* $(,)?) => { vec![$(Cell::from($cell)),*] };
}

impl Table {
    /// The table of `kind`; `wide` adds kubectl's `-o wide` columns,
    /// `all_namespaces` the NAMESPACE column (for namespaced kinds).
    pub fn new(kind: Kind, wide: bool, all_namespaces: bool) -> Self {
        Table { kind, wide, namespaced: all_namespaces && kind.is_namespaced(), now: SystemTime::now() }
    }

    /// The table as the API answers `?as=table` ([`TableList`] as JSON).
    /// Rows are kept with the stored objects (`ApiObject::memo`) and only
    /// their AGE is made per answer: listing a fleet's 50,000 pods every
    /// second renders each pod once per version.
    pub fn json<'o>(&self, items: impl IntoIterator<Item = &'o ApiObject>, resource_version: u64) -> Vec<u8> {
        self.write(&self.render(items), resource_version)
    }

    /// The rows of `items`, as JSON but for their ages: what an answer
    /// copies. The API keeps the last one per list while the store has
    /// not changed.
    pub fn render<'o>(&self, items: impl IntoIterator<Item = &'o ApiObject>) -> RenderedRows {
        /// A row kept with its object.
        #[derive(Clone)]
        struct KeptRow {
            kind: Kind,
            wide: bool,
            namespaced: bool,
            pieces: Vec<Piece>,
        }
        let make = |o: &ApiObject| {
            let mut row = RenderedRows::default();
            for (c, cell) in self.cells(o).iter().enumerate() {
                if c > 0 {
                    row.json(b",");
                }
                match cell {
                    Cell::Age(timestamp) => row.pieces.push(Piece::Age(humantime::parse_rfc3339_weak(timestamp).ok())),
                    Cell::Text(text) => row.json(&serde_json::to_vec(text).unwrap_or_default()),
                }
            }
            KeptRow { kind: self.kind, wide: self.wide, namespaced: self.namespaced, pieces: row.pieces }
        };
        let mut rows = RenderedRows::default();
        for (i, object) in items.into_iter().enumerate() {
            let mut kept = object.memo(make);
            if (kept.kind, kept.wide, kept.namespaced) != (self.kind, self.wide, self.namespaced) {
                kept = std::borrow::Cow::Owned(make(object));
            }
            rows.json(if i > 0 { br#",{"cells":["# } else { br#"{"cells":["# });
            for piece in &kept.pieces {
                match piece {
                    Piece::Json(json) => rows.json(json),
                    Piece::Age(since) => rows.pieces.push(Piece::Age(*since)),
                }
            }
            rows.json(b"]}");
        }
        rows
    }

    /// The answer: `rows` with their ages as of this table's time.
    pub fn write(&self, rows: &RenderedRows, resource_version: u64) -> Vec<u8> {
        let columns: Vec<ColumnDefinition> =
            self.headers().into_iter().map(|n| ColumnDefinition { name: n.to_owned() }).collect();
        let mut out = Vec::with_capacity(rows.bytes + rows.pieces.len() * 4 + 256);
        out.extend_from_slice(format!(r#"{{"kind":"Table","resourceVersion":"{resource_version}","#).as_bytes());
        out.extend_from_slice(br#""columnDefinitions":"#);
        let _ = serde_json::to_writer(&mut out, &columns);
        out.extend_from_slice(br#","rows":["#);
        for piece in &rows.pieces {
            match piece {
                Piece::Json(json) => out.extend_from_slice(json),
                Piece::Age(Some(since)) => {
                    out.push(b'"');
                    let _ = write!(out, "{}", crate::object::Age::since(*since, self.now));
                    out.push(b'"');
                }
                Piece::Age(None) => out.extend_from_slice(br#""<unknown>""#),
            }
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// The column names.
    pub fn headers(&self) -> Vec<&'static str> {
        let mut h: Vec<&str> = match self.kind {
            Kind::Pod => vec!["NAME", "READY", "STATUS", "RESTARTS", "NODE", "AGE"],
            Kind::Node => vec!["NAME", "STATUS", "ARCH", "CPU", "MEMORY", "PODS", "AGE"],
            Kind::Deployment => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "REVISION", "AGE"],
            Kind::DaemonSet => vec!["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            Kind::StatefulSet => vec!["NAME", "READY", "UP-TO-DATE", "AGE"],
            Kind::Job => vec!["NAME", "COMPLETIONS", "STATUS", "AGE"],
            Kind::Service => vec!["NAME", "TYPE", "PORTS", "SELECTOR", "AGE"],
            Kind::ConfigMap => vec!["NAME", "DATA", "AGE"],
            Kind::Secret => vec!["NAME", "TYPE", "DATA", "AGE"],
            Kind::Namespace => vec!["NAME", "AGE"],
            Kind::PersistentVolumeClaim => {
                vec!["NAME", "STATUS", "NODE", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "AGE"]
            }
            Kind::Event => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"],
        };
        if self.wide {
            match self.kind {
                Kind::Pod => h.extend(["CPU(m)", "MEMORY", "MESSAGE"]),
                Kind::Node => h.extend(["CPU-USED(m)", "MEMORY-USED", "VERSION", "LABELS"]),
                Kind::Deployment | Kind::DaemonSet | Kind::Job | Kind::StatefulSet => h.extend(["IMAGES", "SELECTOR"]),
                Kind::Service => h.push("ENDPOINTS"),
                _ => {}
            }
        }
        if self.namespaced {
            h.insert(0, "NAMESPACE");
        }
        h
    }

    /// One object's cells as shown now.
    pub fn row(&self, o: &ApiObject) -> Vec<String> {
        let cells = self.cells(o).into_iter();
        cells
            .map(|cell| match cell {
                Cell::Text(text) => text,
                Cell::Age(since) => age(&since, self.now),
            })
            .collect()
    }

    /// One object's cells, ages unwritten.
    pub fn cells(&self, o: &ApiObject) -> Vec<Cell> {
        let age = Cell::Age(o.metadata.creation_timestamp.clone());
        let name = o.metadata.name.clone();
        // As JSON only for the kinds read that way (not the fleet's pods).
        let spec_json = || o.field("spec").unwrap_or(Value::Null);
        let mut row = match self.kind {
            Kind::Pod => {
                let s = o.typed_status::<PodStatus>();
                let ready = s.ready_of(&o.typed_spec::<crate::manifest::types::PodSpec>().unwrap_or_default());
                let shown = if o.is_retired() {
                    "Terminating".to_owned()
                } else if s.phase == crate::status::PodPhase::Pending && !s.reason.is_empty() {
                    s.reason.clone()
                } else {
                    s.phase.to_string()
                };
                let node = o.node_name().unwrap_or("<none>").to_owned();
                cells![name, ready, or_unknown(shown), s.restart_count.to_string(), node, age]
            }
            Kind::Node => {
                let s = o.typed_status::<NodeStatus>();
                let cordoned = o.typed_spec::<crate::manifest::types::NodeSpec>().is_some_and(|s| s.unschedulable);
                let mut state = if s.conditions.is_empty() {
                    "Unknown".to_owned()
                } else if s.is_ready() {
                    "Ready".to_owned()
                } else {
                    condition(&s.conditions, ConditionType::Ready).map_or("NotReady".into(), |c| {
                        if c.reason.is_empty() { "NotReady".into() } else { c.reason.clone() }
                    })
                };
                if cordoned {
                    state.push_str(",SchedulingDisabled");
                }
                let cap = |k: &str| s.capacity.get(k).cloned().unwrap_or_else(|| "-".into());
                let memory = s.capacity.get("memory").map_or_else(|| "-".into(), |m| super::memory_text(m));
                cells![name, state, or_dash(&s.node_info.architecture), cap("cpu"), memory, cap("pods"), age]
            }
            Kind::Deployment => {
                let spec = spec_json();
                let s: DeploymentStatus = o.status();
                let want = spec.get("replicas").and_then(|v| v.as_u64()).unwrap_or(1);
                cells![
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
                cells![
                    name,
                    s.desired_number_scheduled.to_string(),
                    s.current_number_scheduled.to_string(),
                    s.number_ready.to_string(),
                    s.updated_number_scheduled.to_string(),
                    s.number_available.to_string(),
                    age,
                ]
            }
            Kind::StatefulSet => {
                let spec = spec_json();
                let s: crate::status::StatefulSetStatus = o.status();
                let want = spec.get("replicas").and_then(|v| v.as_u64()).unwrap_or(1);
                cells![name, format!("{}/{want}", s.ready_replicas), s.updated_replicas.to_string(), age]
            }
            Kind::Job => {
                let spec = spec_json();
                let s: JobStatus = o.status();
                let want = spec.get("completions").and_then(|v| v.as_u64()).unwrap_or(1);
                let state = if s.conditions.iter().any(|c| {
                    c.condition_type == ConditionType::Failed && c.status == crate::status::ConditionStatus::True
                }) {
                    "Failed"
                } else if s.conditions.iter().any(|c| {
                    c.condition_type == ConditionType::Complete && c.status == crate::status::ConditionStatus::True
                }) {
                    "Complete"
                } else {
                    "Running"
                };
                cells![name, format!("{}/{want}", s.succeeded), state, age]
            }
            Kind::Service => {
                let spec = spec_json();
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
                cells![name, service_type, or_dash(&ports), labels_text(spec.get("selector")), age]
            }
            Kind::ConfigMap => cells![name, o.data_keys().len().to_string(), age],
            Kind::Secret => {
                let t = o
                    .content::<crate::object::SecretData>()
                    .map(|s| s.secret_type.clone())
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "Opaque".to_owned());
                cells![name, t, o.data_keys().len().to_string(), age]
            }
            Kind::Namespace => cells![name, age],
            Kind::PersistentVolumeClaim => {
                let spec = o.typed_spec::<crate::manifest::types::ClaimSpec>().unwrap_or_default();
                let s: crate::status::ClaimStatus = o.status();
                let phase = if o.is_retired() { "Terminating".to_owned() } else { s.phase.clone() };
                let size = spec.resources.requests.get("storage").map(|q| q.text()).unwrap_or_default();
                let modes =
                    if spec.access_modes.is_empty() { "RWO".to_owned() } else { access_modes(&spec.access_modes) };
                let class = spec
                    .storage_class_name
                    .clone()
                    .unwrap_or_else(|| crate::manifest::types::LOCAL_STORAGE_CLASS.to_owned());
                let node = s.node_name.clone().unwrap_or_default();
                cells![name, or_dash(&phase), or_dash(&node), or_dash(&size), modes, class, age]
            }
            Kind::Event => {
                let f = crate::events::fields(o);
                let object = format!("{}/{}", f.involved_object.kind.to_lowercase(), f.involved_object.name);
                cells![Cell::Age(f.last_timestamp), f.event_type, f.reason, object, f.count.to_string(), f.message]
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
                    row.extend([cpu, mem, or_dash(&s.message)].map(Cell::Text));
                }
                Kind::Node => {
                    let s: NodeStatus = o.status();
                    let (cpu, mem) = match &s.usage {
                        Some(u) => (u.cpu_millis.to_string(), bytes_text(u.memory_bytes)),
                        None => ("-".into(), "-".into()),
                    };
                    let labels: Vec<String> = o.metadata.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    row.extend(
                        [cpu, mem, or_dash(&s.node_info.agent_version), or_dash(&labels.join(","))].map(Cell::Text),
                    );
                }
                Kind::Deployment | Kind::DaemonSet | Kind::Job | Kind::StatefulSet => {
                    let spec = spec_json();
                    let images = spec
                        .pointer("/template/spec/containers")
                        .and_then(|v| v.as_array())
                        .map(|cs| cs.iter().filter_map(|c| c.get("image")?.as_str()).collect::<Vec<_>>().join(","))
                        .unwrap_or_default();
                    row.extend([or_dash(&images), labels_text(spec.pointer("/selector/matchLabels"))].map(Cell::Text));
                }
                Kind::Service => {
                    let status: crate::fleet::services::ServiceStatus = o.status();
                    let endpoints: Vec<String> = status.endpoints.values().flatten().cloned().collect();
                    row.push(Cell::Text(if endpoints.is_empty() { "<none>".into() } else { endpoints.join(",") }));
                }
                _ => {}
            }
        }
        if self.namespaced {
            row.insert(0, Cell::Text(o.metadata.namespace.clone()));
        }
        row
    }

    pub(super) fn print(&self, out: &mut impl Write, items: &[ApiObject], header: bool) -> std::io::Result<()> {
        let headers = header.then(|| self.headers().into_iter().map(str::to_owned).collect());
        print_rows(out, headers, items.iter().map(|o| self.row(o)).collect())
    }
}

/// Prints rows in aligned columns, kubectl style, the header first.
pub(super) fn print_rows(
    out: &mut impl Write,
    header: Option<Vec<String>>,
    body: Vec<Vec<String>>,
) -> std::io::Result<()> {
    let mut rows: Vec<Vec<String>> = header.into_iter().collect();
    rows.extend(body);
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

/// A table as the API answers `?as=table`: Kubernetes' `meta.k8s.io/v1`
/// Table, cells as text.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableList {
    /// `Table`.
    pub kind: String,
    /// Watch from here to see every later change.
    pub resource_version: String,
    /// The columns.
    pub column_definitions: Vec<ColumnDefinition>,
    /// One row per object.
    pub rows: Vec<TableRow>,
}

/// Rendered rows: JSON with a slot for each AGE.
#[derive(Debug, Clone, Default)]
pub struct RenderedRows {
    pieces: Vec<Piece>,
    bytes: usize,
}

#[derive(Debug, Clone)]
enum Piece {
    Json(Vec<u8>),
    /// The time AGE counts from (`None`: unreadable).
    Age(Option<SystemTime>),
}

impl RenderedRows {
    /// Appends JSON bytes (to the last piece when that is JSON too).
    fn json(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len();
        match self.pieces.last_mut() {
            Some(Piece::Json(last)) => last.extend_from_slice(bytes),
            _ => self.pieces.push(Piece::Json(bytes.to_vec())),
        }
    }
}

/// A column of a [`TableList`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ColumnDefinition {
    /// `NAME`, `STATUS`, ...
    pub name: String,
}

/// A row of a [`TableList`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TableRow {
    /// The cells, in column order.
    pub cells: Vec<String>,
}

/// kubectl's short forms of access modes (`RWO,ROX`).
fn access_modes(modes: &[String]) -> String {
    let short = |m: &String| match m.as_str() {
        "ReadWriteOnce" => "RWO".to_owned(),
        "ReadOnlyMany" => "ROX".to_owned(),
        "ReadWriteMany" => "RWX".to_owned(),
        "ReadWriteOncePod" => "RWOP".to_owned(),
        other => other.to_owned(),
    };
    modes.iter().map(short).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's rows (kept as JSON pieces with the objects) are what the
    /// table would print of each object now, AGE included, whichever column
    /// AGE is in and whatever a cell holds.
    #[test]
    fn server_rows_are_the_rows_with_their_age_made_per_answer() {
        let created = SystemTime::now() - std::time::Duration::from_secs(300);
        let stamp = humantime::format_rfc3339_seconds(created).to_string();
        let mut pod = ApiObject::new(Kind::Pod, "line-3", "web-\"quoted\"-0");
        pod.metadata.creation_timestamp = stamp.clone();
        let mut event = ApiObject::new(Kind::Event, "line-3", "web.1");
        event.set_field("lastTimestamp", serde_json::json!(stamp));
        event.set_field("message", serde_json::json!("line one\nline \\ two"));
        for (object, wide) in [(pod, false), (pod_wide(), true), (event, false)] {
            let kind = object.kind;
            let table = Table::new(kind, wide, true);
            let objects = [object];
            for _ in 0..2 {
                // The second answer comes from the rows kept with the object.
                let answer: TableList = serde_json::from_slice(&table.json(&objects, 7)).unwrap();
                assert_eq!(answer.resource_version, "7");
                assert_eq!(answer.rows[0].cells, table.row(&objects[0]), "{kind}");
            }
        }
        assert_eq!(crate::object::Age::since(created, SystemTime::now()).to_string(), "5m");
    }

    fn pod_wide() -> ApiObject {
        let mut pod = ApiObject::new(Kind::Pod, "line-3", "web-1");
        pod.metadata.creation_timestamp = "not a time".into();
        pod
    }
}
