//! `flotilla get`: lists and single objects as tables, JSON, YAML or names, and `--watch`.

use super::*;

/// `flotilla get`.
pub fn get(args: GetArgs) -> anyhow::Result<()> {
    let kind = kind_arg(&args.resource)?;
    let client = client_for(&args.client)?;
    let namespace = (!args.all_namespaces).then_some(args.namespace.as_str());
    let wide = args.output == Some(OutputFormat::Wide);
    let mut out = std::io::stdout().lock();
    let resource_version = match (&args.name, args.output) {
        (None, None | Some(OutputFormat::Wide)) => {
            // A table of a whole kind: rendered by the server, aligned here.
            let table = client.table(kind, namespace, &args.selector, wide)?;
            if table.rows.is_empty() && !args.watch {
                match namespace {
                    Some(ns) if kind.is_namespaced() => eprintln!("No {} found in namespace {ns}.", resource_of(kind)),
                    _ => eprintln!("No {} found.", resource_of(kind)),
                }
                return Ok(());
            }
            let header = table.column_definitions.into_iter().map(|c| c.name).collect();
            table::print_rows(&mut out, Some(header), table.rows.into_iter().map(|r| r.cells).collect())?;
            table.resource_version
        }
        (Some(name), output) => {
            let object = client.get(&ObjectKey::new(kind, &args.namespace, name))?;
            match output {
                Some(format @ (OutputFormat::Json | OutputFormat::Yaml)) => write_as(&mut out, format, &object)?,
                Some(OutputFormat::Name) => {
                    writeln!(out, "{}/{}", kind.to_string().to_lowercase(), object.metadata.name)?
                }
                _ => {
                    Table::new(kind, wide, args.all_namespaces).print(&mut out, std::slice::from_ref(&object), true)?
                }
            }
            object.metadata.resource_version
        }
        (None, output) => {
            let list = client.list(kind, namespace, &args.selector)?;
            let resource_version = list.resource_version.clone();
            match output {
                Some(OutputFormat::Name) => {
                    for item in &list.items {
                        writeln!(out, "{}/{}", kind.to_string().to_lowercase(), item.metadata.name)?;
                    }
                }
                // JSON or YAML (a table was asked of the server above).
                format => write_as(&mut out, format.unwrap_or(OutputFormat::Json), &list_json(&list))?,
            }
            resource_version
        }
    };
    out.flush()?;
    drop(out);
    if args.watch {
        watch(&client, kind, namespace, &args, resource_version)?;
    }
    Ok(())
}

/// Writes `value` as `-o json` (pretty) or `-o yaml`.
fn write_as(out: &mut impl Write, format: OutputFormat, value: &impl serde::Serialize) -> anyhow::Result<()> {
    match format {
        OutputFormat::Yaml => write!(out, "{}", serde_yaml_ng::to_string(value)?)?,
        _ => writeln!(out, "{}", serde_json::to_string_pretty(value)?)?,
    }
    Ok(())
}

/// The JSON a script reads from `get -o json` (documented in docs/cli-json.md).
pub(super) fn list_json(list: &ObjectList) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": { "resourceVersion": list.resource_version },
        "items": list.items,
    })
}

pub(super) fn watch(
    client: &Client,
    kind: Kind,
    namespace: Option<&str>,
    args: &GetArgs,
    mut from: String,
) -> anyhow::Result<()> {
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
                        // Shown as kubectl shows a pod going away.
                        object.metadata.deletion_timestamp = crate::object::now_rfc3339();
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
