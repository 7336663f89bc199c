//! `docs/manifests.md` against the parser: each row's example, set at its
//! path in a small valid object of its kind, must apply as the row says
//! (supported: no word about the field; noted: applied with a warning at
//! the field; warned: a warning naming the field; refused: an error naming
//! it).

use std::path::Path;

use flotilla_controller::manifest::parse_str;
use serde_yaml_ng::Value;

const BASES: [(&str, &str); 7] = [
    (
        "Pod",
        "{apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: [{name: app, image: 'busybox:1.36', \
         env: [{name: X, value: '1'}], volumeMounts: [{name: data, mountPath: /data}], ports: [{containerPort: 8080}]}], \
         initContainers: [{name: init, image: 'busybox:1.36'}], volumes: [{name: data, emptyDir: {}}]}}",
    ),
    (
        "Deployment",
        "{apiVersion: apps/v1, kind: Deployment, metadata: {name: d}, spec: {selector: {matchLabels: {app: d}}, \
         template: {metadata: {labels: {app: d}}, spec: {containers: [{name: app, image: 'busybox:1.36'}]}}}}",
    ),
    (
        "DaemonSet",
        "{apiVersion: apps/v1, kind: DaemonSet, metadata: {name: d}, spec: {selector: {matchLabels: {app: d}}, \
         template: {metadata: {labels: {app: d}}, spec: {containers: [{name: app, image: 'busybox:1.36'}]}}}}",
    ),
    (
        "StatefulSet",
        "{apiVersion: apps/v1, kind: StatefulSet, metadata: {name: s}, spec: {selector: {matchLabels: {app: s}}, \
         template: {metadata: {labels: {app: s}}, spec: {containers: [{name: app, image: 'busybox:1.36'}]}}}}",
    ),
    (
        "Job",
        "{apiVersion: batch/v1, kind: Job, metadata: {name: j}, spec: {template: {spec: {restartPolicy: Never, \
         containers: [{name: app, image: 'busybox:1.36'}]}}}}",
    ),
    (
        "Service",
        "{apiVersion: v1, kind: Service, metadata: {name: s}, spec: {type: NodePort, selector: {app: web}, \
         ports: [{port: 80, targetPort: 8080}]}}",
    ),
    (
        "PersistentVolumeClaim",
        "{apiVersion: v1, kind: PersistentVolumeClaim, metadata: {name: data}, spec: {accessModes: [ReadWriteOnce], \
         resources: {requests: {storage: 1Gi}}}}",
    ),
];

/// One step of a path: a key, or a key and an index (`volumes[0]`).
fn steps(path: &str) -> Vec<(String, Option<usize>)> {
    path.split('.')
        .map(|part| match part.split_once('[') {
            Some((key, index)) => (key.to_owned(), Some(index.trim_end_matches(']').parse().unwrap())),
            None => (part.to_owned(), None),
        })
        .collect()
}

/// Sets `value` at `path`, making mappings and a first list element where
/// there are none. A volume source or an env `valueFrom` replaces the
/// base's (one source each).
fn set(document: &mut Value, path: &str, value: Value) {
    let steps = steps(path);
    let mut here = document;
    for (i, (key, index)) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        let map = here.as_mapping_mut().unwrap_or_else(|| panic!("{path}: {key} is not in a mapping"));
        if last && index.is_none() {
            if ["emptyDir", "hostPath", "configMap", "secret", "persistentVolumeClaim"].contains(&key.as_str()) {
                map.remove("emptyDir");
            }
            if key == "valueFrom" {
                map.remove("value");
            }
            map.insert(Value::from(key.as_str()), value);
            return;
        }
        let entry = map.entry(Value::from(key.as_str())).or_insert_with(|| match index {
            Some(_) => Value::Sequence(vec![Value::Mapping(Default::default())]),
            None => Value::Mapping(Default::default()),
        });
        here = match index {
            Some(n) => &mut entry.as_sequence_mut().unwrap()[*n],
            None => entry,
        };
        if steps.get(i + 1).is_some_and(|(next, _)| next == "valueFrom") {
            here.as_mapping_mut().unwrap().remove("value");
        }
    }
}

#[test]
fn every_row_of_the_supported_fields_table_holds() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/manifests.md")).unwrap();
    let rows: Vec<Vec<String>> = doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| kind"))
        .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_owned()).collect())
        .collect();
    assert!(rows.len() >= 40, "the table has {} rows", rows.len());
    let mut failures = Vec::new();
    for row in &rows {
        let [kind, path, support, example, ..] = row.as_slice() else { panic!("row {row:?}") };
        let base = BASES.iter().find(|(k, _)| k == kind).unwrap_or_else(|| panic!("no base for {kind}")).1;
        let mut document: Value = serde_yaml_ng::from_str(base).unwrap();
        let example: Value = serde_yaml_ng::from_str(example.trim_matches('`')).unwrap();
        set(&mut document, path, example);
        let text = serde_yaml_ng::to_string(&document).unwrap();
        let outcome = parse_str("row.yaml", &text);
        let about = |p: &str| p == path || p.starts_with(&format!("{path}.")) || p.starts_with(&format!("{path}["));
        let ok = match (support.as_str(), &outcome) {
            ("supported", Ok(parsed)) => !parsed.warnings.iter().any(|w| about(&w.path)),
            ("noted" | "warned", Ok(parsed)) => parsed.warnings.iter().any(|w| about(&w.path)),
            ("refused", Err(e)) => e.to_string().contains(path.split('[').next().unwrap_or(path)),
            _ => false,
        };
        if !ok {
            failures.push(format!("{kind} {path} ({support}): {outcome:?}\n{text}"));
        }
    }
    assert!(failures.is_empty(), "rows that do not hold:\n{}", failures.join("\n\n"));
}
