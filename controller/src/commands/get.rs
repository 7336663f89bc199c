//! `flotilla get`: lists and single objects as tables, JSON, YAML or names, and `--watch`.

use super::*;

/// `flotilla get`.
pub fn get(args: GetArgs) -> anyhow::Result<()> {
    let kind = kind_arg(&args.resource)?;
    let client = client_for(&args.client)?;
    let namespace = (!args.all_namespaces).then_some(args.namespace.as_str());
    let wide = args.output == Some(OutputFormat::Wide);
    if args.name.is_none() && matches!(args.output, None | Some(OutputFormat::Wide)) {
        // A table of a whole kind: rendered by the server, aligned here.
        let table = client.table(kind, namespace, &args.selector, wide)?;
        if table.rows.is_empty() && !args.watch {
            match namespace {
                Some(ns) if kind.is_namespaced() => eprintln!("No {} found in namespace {ns}.", resource_of(kind)),
                _ => eprintln!("No {} found.", resource_of(kind)),
            }
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        let header = table.column_definitions.into_iter().map(|c| c.name).collect();
        table::print_rows(&mut out, Some(header), table.rows.into_iter().map(|r| r.cells).collect())?;
        out.flush()?;
        drop(out);
        if args.watch {
            watch(&client, kind, namespace, &args, table.resource_version)?;
        }
        return Ok(());
    }
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
        _ => {
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
