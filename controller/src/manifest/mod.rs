//! Kubernetes-style manifests: parsing, warnings and validation.
//!
//! `load` reads files, directories or stdin; each YAML (or JSON) document
//! becomes an [`Object`] or a [`Warning`] that it was skipped. The whole
//! input is refused with one [`ManifestError`] naming file, document, field
//! path and reason if any document is invalid, so an apply is all or
//! nothing.
//!
//! Unsupported fields are never dropped silently: `serde_ignored` reports
//! every field the typed model did not take, and each becomes a warning
//! with its path. `status` is the one exception: it is written by the
//! server, and manifests exported from a cluster carry it.

mod quantity;
pub mod types;
pub(crate) mod validate;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::{Serialize, de::DeserializeOwned};

pub use quantity::{Quantity, QuantityError};
use types::*;

/// The kinds Flotilla stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// N replicas of a pod template (apps/v1).
    Deployment,
    /// One replica per matching node (apps/v1).
    DaemonSet,
    /// Run to completion (batch/v1).
    Job,
    /// A single replica (v1).
    Pod,
    /// Discovery of ready replicas (v1).
    Service,
    /// Configuration files and values (v1).
    ConfigMap,
    /// Secret files and values (v1).
    Secret,
    /// A device (v1).
    Node,
    /// A name scope (v1).
    Namespace,
    /// Something that happened to an object, written by the controller (v1).
    Event,
    /// Storage a replica keeps across rollouts: a directory on one device (v1).
    PersistentVolumeClaim,
    /// Replicas with stable names and a claim each (apps/v1).
    StatefulSet,
}

impl Kind {
    /// The apiVersion Kubernetes uses for this kind.
    pub const fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::DaemonSet | Kind::StatefulSet => "apps/v1",
            Kind::Job => "batch/v1",
            _ => "v1",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub const fn is_namespaced(self) -> bool {
        !matches!(self, Kind::Node | Kind::Namespace)
    }

    fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "Deployment" => Kind::Deployment,
            "DaemonSet" => Kind::DaemonSet,
            "Job" => Kind::Job,
            "Pod" => Kind::Pod,
            "Service" => Kind::Service,
            "ConfigMap" => Kind::ConfigMap,
            "Secret" => Kind::Secret,
            "Node" => Kind::Node,
            "Namespace" => Kind::Namespace,
            "PersistentVolumeClaim" => Kind::PersistentVolumeClaim,
            "StatefulSet" => Kind::StatefulSet,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Kubernetes kinds that have no meaning on an edge fleet: skipped with a
/// warning so that a real application's manifest file still applies.
const SKIPPED_KINDS: &[&str] = &[
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "Ingress",
    "IngressClass",
    "PersistentVolume",
    "StorageClass",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "CustomResourceDefinition",
    "PriorityClass",
    "LimitRange",
    "ResourceQuota",
    "ReplicaSet",
    "CronJob",
    "Endpoints",
    "EndpointSlice",
];

/// The content of an object, by kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Body {
    /// A Deployment's spec.
    Deployment(DeploymentSpec),
    /// A DaemonSet's spec.
    DaemonSet(DaemonSetSpec),
    /// A Job's spec.
    Job(JobSpec),
    /// A bare Pod's spec.
    Pod(PodSpec),
    /// A Service's spec.
    Service(ServiceSpec),
    /// A ConfigMap's data.
    ConfigMap(ConfigMapData),
    /// A Secret's data, decoded from base64.
    Secret(SecretData),
    /// A Node's operator-set spec.
    Node(NodeSpec),
    /// A PersistentVolumeClaim's spec.
    PersistentVolumeClaim(ClaimSpec),
    /// A StatefulSet's spec.
    StatefulSet(StatefulSetSpec),
    /// A Namespace has no content.
    Namespace,
}

/// `data` and `binaryData` of a ConfigMap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapData {
    /// Text values.
    #[serde(default)]
    pub data: std::collections::BTreeMap<String, String>,
    /// Binary values, decoded.
    #[serde(default)]
    pub binary_data: std::collections::BTreeMap<String, Vec<u8>>,
}

/// A Secret's values, decoded (`data` is base64, `stringData` plain).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretData {
    /// Secret type, e.g. `Opaque`.
    #[serde(default)]
    pub secret_type: String,
    /// Values.
    #[serde(default)]
    pub data: std::collections::BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for SecretData {
    // Secrets never reach logs, even by `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretData")
            .field("secret_type", &self.secret_type)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One object from a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    /// The kind.
    pub kind: Kind,
    /// Name, namespace (filled with `default` for namespaced kinds), labels,
    /// annotations.
    pub metadata: ObjectMeta,
    /// The content.
    pub body: Body,
}

/// Where in the input something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File name, or `-` for stdin.
    pub source: String,
    /// 1-based document index in that file.
    pub document: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.source, self.document)
    }
}

/// Something in the input that Flotilla ignores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub location: Location,
    /// Field path, e.g. `spec.template.spec.affinity`; empty for a whole document.
    pub path: String,
    /// What happens to it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.location, self.message)
        } else {
            write!(f, "{}: {}: {}", self.location, self.path, self.message)
        }
    }
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// A document is invalid.
    #[error("{location}: {}{reason}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Invalid {
        /// Where.
        location: Location,
        /// Field path; empty when the document as a whole is wrong.
        path: String,
        /// Why.
        reason: String,
    },
    /// A file or directory could not be read.
    #[error("reading {path}: {reason}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// `--strict`: a warning counts as an error.
    #[error("{0} (--strict turns warnings into errors)")]
    Strict(Warning),
}

/// The objects and warnings of one apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Objects, in input order.
    pub objects: Vec<Object>,
    /// Everything ignored or skipped.
    pub warnings: Vec<Warning>,
}

impl Parsed {
    /// Refuses the input if anything was ignored.
    pub fn strict(self) -> Result<Parsed, ManifestError> {
        match self.warnings.into_iter().next() {
            Some(warning) => Err(ManifestError::Strict(warning)),
            None => Ok(Parsed { objects: self.objects, warnings: Vec::new() }),
        }
    }
}

/// Reads manifests from files, directories (their `.yaml`, `.yml` and
/// `.json` files in name order, not recursive) and `-` for stdin.
pub fn load(paths: &[PathBuf]) -> Result<Parsed, ManifestError> {
    let mut parsed = Parsed::default();
    for path in paths {
        for (source, text) in read_sources(path)? {
            let one = parse_str(&source, &text)?;
            parsed.objects.extend(one.objects);
            parsed.warnings.extend(one.warnings);
        }
    }
    Ok(parsed)
}

/// The text of every source `load` would read, with its name.
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<(String, String)>, ManifestError> {
    let mut all = Vec::new();
    for path in paths {
        all.extend(read_sources(path)?);
    }
    Ok(all)
}

fn read_sources(path: &Path) -> Result<Vec<(String, String)>, ManifestError> {
    let read_err = |e: std::io::Error| ManifestError::Read { path: path.display().to_string(), reason: e.to_string() };
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(read_err)?;
        return Ok(vec![("-".to_owned(), text)]);
    }
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(read_err)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")))
            .collect();
        files.sort();
        return files
            .into_iter()
            .map(|file| {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| ManifestError::Read { path: file.display().to_string(), reason: e.to_string() })?;
                Ok((file.display().to_string(), text))
            })
            .collect();
    }
    Ok(vec![(path.display().to_string(), std::fs::read_to_string(path).map_err(read_err)?)])
}

/// Parses every document of one source (YAML, multi-document, or JSON).
pub fn parse_str(source: &str, text: &str) -> Result<Parsed, ManifestError> {
    let mut parsed = Parsed::default();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let location = Location { source: source.to_owned(), document: index + 1 };
        let value = serde_yaml_ng::Value::deserialize(document).map_err(|e| ManifestError::Invalid {
            location: location.clone(),
            path: String::new(),
            reason: format!("not valid YAML or JSON: {e}"),
        })?;
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        parse_document(location, value, &mut parsed)?;
    }
    Ok(parsed)
}

fn parse_document(location: Location, value: serde_yaml_ng::Value, parsed: &mut Parsed) -> Result<(), ManifestError> {
    let invalid = |path: &str, reason: String| ManifestError::Invalid {
        location: location.clone(),
        path: path.to_owned(),
        reason,
    };
    let serde_yaml_ng::Value::Mapping(map) = &value else {
        return Err(invalid("", "a manifest document must be a mapping with apiVersion, kind and metadata".into()));
    };
    let field = |name: &str| map.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let kind_name = field("kind").ok_or_else(|| invalid("kind", "missing (e.g. kind: Deployment)".into()))?;
    let api_version =
        field("apiVersion").ok_or_else(|| invalid("apiVersion", "missing (e.g. apiVersion: apps/v1)".into()))?;

    let Some(kind) = Kind::from_name(&kind_name) else {
        let message = if SKIPPED_KINDS.contains(&kind_name.as_str()) {
            format!("kind {kind_name} ({api_version}) has no meaning in Flotilla, skipped")
        } else {
            format!("unknown kind {kind_name} ({api_version}), skipped")
        };
        parsed.warnings.push(Warning { location, path: String::new(), message });
        return Ok(());
    };
    if api_version != kind.api_version() {
        return Err(invalid("apiVersion", format!("{kind} is {}, not {api_version}", kind.api_version())));
    }

    let mut ignored = Vec::new();
    let (mut metadata, body) = match kind {
        Kind::Deployment => typed::<SpecDoc<DeploymentSpec>>(&location, value, &mut ignored)
            .map(|d| (d.metadata, Body::Deployment(d.spec)))?,
        Kind::DaemonSet => typed::<SpecDoc<DaemonSetSpec>>(&location, value, &mut ignored)
            .map(|d| (d.metadata, Body::DaemonSet(d.spec)))?,
        Kind::Job => {
            typed::<SpecDoc<JobSpec>>(&location, value, &mut ignored).map(|d| (d.metadata, Body::Job(d.spec)))?
        }
        Kind::Pod => {
            typed::<SpecDoc<PodSpec>>(&location, value, &mut ignored).map(|d| (d.metadata, Body::Pod(d.spec)))?
        }
        Kind::Service => typed::<SpecDoc<ServiceSpec>>(&location, value, &mut ignored)
            .map(|d| (d.metadata, Body::Service(d.spec)))?,
        Kind::Node => {
            typed::<SpecDoc<NodeSpec>>(&location, value, &mut ignored).map(|d| (d.metadata, Body::Node(d.spec)))?
        }
        Kind::PersistentVolumeClaim => typed::<SpecDoc<ClaimSpec>>(&location, value, &mut ignored)
            .map(|d| (d.metadata, Body::PersistentVolumeClaim(d.spec)))?,
        Kind::StatefulSet => typed::<SpecDoc<StatefulSetSpec>>(&location, value, &mut ignored)
            .map(|d| (d.metadata, Body::StatefulSet(d.spec)))?,
        Kind::Namespace => {
            typed::<SpecDoc<IgnoredSpec>>(&location, value, &mut ignored).map(|d| (d.metadata, Body::Namespace))?
        }
        // Not in `from_name`: events are written by the controller.
        Kind::Event => return Err(invalid("kind", "Events are written by the controller, not applied".into())),
        Kind::ConfigMap => {
            let doc = typed::<ConfigMapDoc>(&location, value, &mut ignored)?;
            let mut binary_data = std::collections::BTreeMap::new();
            for (key, text) in doc.binary_data {
                let bytes = decode_base64(&text).map_err(|reason| invalid(&format!("binaryData.{key}"), reason))?;
                binary_data.insert(key, bytes);
            }
            (doc.metadata, Body::ConfigMap(ConfigMapData { data: doc.data, binary_data }))
        }
        Kind::Secret => {
            let doc = typed::<SecretDoc>(&location, value, &mut ignored)?;
            let mut data = std::collections::BTreeMap::new();
            for (key, text) in doc.data {
                let bytes = decode_base64(&text).map_err(|reason| invalid(&format!("data.{key}"), reason))?;
                data.insert(key, bytes);
            }
            // Kubernetes merges stringData over data.
            for (key, text) in doc.string_data {
                data.insert(key, text.into_bytes());
            }
            let secret_type = doc.secret_type.unwrap_or_else(|| "Opaque".to_owned());
            (doc.metadata, Body::Secret(SecretData { secret_type, data }))
        }
    };
    for path in ignored {
        parsed.warnings.push(Warning { location: location.clone(), path, message: "not supported, ignored".into() });
    }
    if kind.is_namespaced() && metadata.namespace.is_empty() {
        metadata.namespace = "default".to_owned();
    }
    if let Body::Service(spec) = &body
        && spec.service_type.as_deref() == Some("LoadBalancer")
    {
        let ports: Vec<String> = spec.ports.iter().map(|p| p.port.to_string()).collect();
        let message = format!(
            "LoadBalancer: edge devices have no cloud load balancer; the Service is served on port {} of \
             each device running a ready replica (status.loadBalancer.ingress lists their addresses)",
            ports.join(", ")
        );
        parsed.warnings.push(Warning { location: location.clone(), path: "spec.type".into(), message });
    }
    if let Body::Service(spec) = &body
        && let Some(address) = spec.cluster_ip.as_deref().filter(|a| !a.is_empty() && *a != "None")
    {
        let message = format!(
            "{address} is not used: a Service is reached at a local address of its own (127.77.x.y) on each device"
        );
        parsed.warnings.push(Warning { location: location.clone(), path: "spec.clusterIP".into(), message });
    }
    if let Body::PersistentVolumeClaim(spec) = &body {
        claim_warnings(spec, "spec", &location, parsed);
    }
    if let Body::StatefulSet(spec) = &body {
        for (i, template) in spec.volume_claim_templates.iter().enumerate() {
            claim_warnings(&template.spec, &format!("spec.volumeClaimTemplates[{i}].spec"), &location, parsed);
        }
    }
    let object = Object { kind, metadata, body };
    validate::object(&object).map_err(|e| invalid(&e.path, e.reason))?;
    parsed.objects.push(object);
    Ok(())
}

/// What a claim asks for that a directory on one device serves otherwise.
fn claim_warnings(spec: &ClaimSpec, at: &str, location: &Location, parsed: &mut Parsed) {
    let mut warn = |path: &str, message: String| {
        parsed.warnings.push(Warning { location: location.clone(), path: path.to_owned(), message })
    };
    if let Some(class) = spec.storage_class_name.as_deref().filter(|c| *c != LOCAL_STORAGE_CLASS && !c.is_empty()) {
        warn(
            &format!("{at}.storageClassName"),
            format!("storage class {class:?} is served by {LOCAL_STORAGE_CLASS}: a directory on the replica's device"),
        );
    }
    for (i, mode) in spec.access_modes.iter().enumerate() {
        let message = match mode.as_str() {
            "ReadWriteOnce" => continue,
            // Not enforced per replica: a rolling update's new replica
            // mounts it beside the old one on their device.
            "ReadWriteOncePod" => "ReadWriteOncePod is served as ReadWriteOnce: during a rolling update the \
                                   new replica shares the claim with the old one on its device (strategy \
                                   Recreate keeps one writer)"
                .to_owned(),
            _ => format!("{mode}: a local claim is on one device; it is served as ReadWriteOnce"),
        };
        warn(&format!("{at}.accessModes[{i}]"), message);
    }
}

/// Deserializes `value` as `T`, collecting the paths of ignored fields and
/// reporting the path of the first invalid one.
fn typed<T: DeserializeOwned>(
    location: &Location,
    value: serde_yaml_ng::Value,
    ignored: &mut Vec<String>,
) -> Result<T, ManifestError> {
    let mut on_ignored = |path: serde_ignored::Path<'_>| ignored.push(format_ignored(&path));
    let deserializer = serde_ignored::Deserializer::new(value, &mut on_ignored);
    serde_path_to_error::deserialize(deserializer).map_err(|e| ManifestError::Invalid {
        location: location.clone(),
        path: e.path().to_string(),
        reason: e.into_inner().to_string(),
    })
}

/// `a.b[0].c`, the way kubectl and serde_path_to_error write paths.
fn format_ignored(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", format_ignored(parent)),
        P::Map { parent, key } => {
            let parent = format_ignored(parent);
            if parent.is_empty() { key.clone() } else { format!("{parent}.{key}") }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => format_ignored(parent),
    }
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact).map_err(|e| format!("not valid base64: {e}"))
}

// Why `Value` and not `IgnoredAny` for fields read elsewhere: serde_ignored
// reports every `deserialize_ignored_any` call as an ignored field.

/// A document of a kind with a `spec`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "S: Deserialize<'de> + Default"))]
struct SpecDoc<S> {
    #[serde(rename = "apiVersion")]
    _api_version: serde_yaml_ng::Value,
    #[serde(rename = "kind")]
    _kind: serde_yaml_ng::Value,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: S,
    /// Server-written; exported manifests carry it, applying ignores it.
    #[serde(default, rename = "status")]
    _status: Option<serde_yaml_ng::Value>,
}

/// Namespace `spec` (finalizers) has no meaning here.
#[derive(Default, Deserialize)]
struct IgnoredSpec {}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigMapDoc {
    #[serde(rename = "apiVersion")]
    _api_version: serde_yaml_ng::Value,
    #[serde(rename = "kind")]
    _kind: serde_yaml_ng::Value,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    data: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    binary_data: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretDoc {
    #[serde(rename = "apiVersion")]
    _api_version: serde_yaml_ng::Value,
    #[serde(rename = "kind")]
    _kind: serde_yaml_ng::Value,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    data: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    string_data: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "type")]
    secret_type: Option<String>,
}
