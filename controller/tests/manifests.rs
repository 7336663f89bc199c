//! The manifests in `tests/manifests/` apply with exactly the expected
//! warnings, and every file in `tests/manifests/invalid/` is refused with an
//! error naming the field (each file's first line says which).

use std::path::{Path, PathBuf};

use flotilla_controller::manifest::{Body, Kind, ManifestError, load};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/manifests")
}

#[test]
fn realistic_manifests_apply_with_the_expected_warnings() {
    let parsed = load(&[corpus()]).unwrap();
    let kinds: Vec<(Kind, String)> =
        parsed.objects.iter().map(|o| (o.kind, format!("{}/{}", o.metadata.namespace, o.metadata.name))).collect();
    let expected = [
        (Kind::Job, "line-3/calibrate"),
        (Kind::Deployment, "default/checkout"),
        (Kind::Service, "default/checkout"),
        (Kind::DaemonSet, "default/collector"),
        (Kind::PersistentVolumeClaim, "default/line-3-history"),
        (Kind::Deployment, "default/history-recorder"),
        (Kind::Service, "default/timeseries"),
        (Kind::StatefulSet, "default/timeseries"),
        (Kind::ConfigMap, "default/vibration-calibration"),
        (Kind::Deployment, "default/vibration-sensor"),
        (Kind::DaemonSet, "default/node-exporter"),
        (Kind::Node, "/pi-line3-07"),
        (Kind::Deployment, "default/orders"),
        (Kind::Secret, "default/uplink"),
        (Kind::Pod, "default/uplink-probe"),
        (Kind::ConfigMap, "line-3/sensor-config"),
        (Kind::Deployment, "line-3/sensor"),
        (Kind::ConfigMap, "default/frontend-settings"),
        (Kind::Deployment, "default/shop-frontend"),
        (Kind::Deployment, "default/storefront"),
        (Kind::Service, "default/storefront"),
        (Kind::Namespace, "/shop"),
        (Kind::Deployment, "shop/web"),
        (Kind::Service, "shop/web"),
    ];
    assert_eq!(kinds, expected.map(|(k, n)| (k, n.to_owned())));
    let warnings: Vec<String> = parsed
        .warnings
        .iter()
        .map(|w| {
            let file = Path::new(&w.location.source).file_name().unwrap().to_string_lossy().into_owned();
            let path = if w.path.is_empty() { String::new() } else { format!("{}: ", w.path) };
            format!("{file}#{}: {path}{}", w.location.document, w.message)
        })
        .collect();
    assert_eq!(
        warnings,
        [
            "storefront-loadbalancer.yaml#2: spec.type: LoadBalancer: edge devices have no cloud load balancer; \
             the Service is served on port 80 of each device running a ready replica (status.loadBalancer.ingress \
             lists their addresses)",
            "web-app-from-kubernetes.yaml#2: kind ServiceAccount (v1) has no meaning in Flotilla, skipped",
            "web-app-from-kubernetes.yaml#3: spec.template.spec.serviceAccountName: not supported, ignored",
            "web-app-from-kubernetes.yaml#3: spec.template.spec.affinity: not supported, ignored",
            "web-app-from-kubernetes.yaml#3: spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation: not supported, ignored",
            "web-app-from-kubernetes.yaml#4: spec.sessionAffinity: not supported, ignored",
            "web-app-from-kubernetes.yaml#5: kind Ingress (networking.k8s.io/v1) has no meaning in Flotilla, skipped",
            "web-app-from-kubernetes.yaml#6: kind HorizontalPodAutoscaler (autoscaling/v2) has no meaning in Flotilla, skipped",
        ]
    );
}

#[test]
fn secrets_are_decoded_and_never_shown_by_debug() {
    let parsed = load(&[corpus().join("secret-and-pod.yaml")]).unwrap();
    let Body::Secret(secret) = &parsed.objects[0].body else { panic!("first object is the Secret") };
    assert_eq!(secret.data["password"], b"hunter2");
    assert_eq!(secret.data["user"], b"plc-gateway");
    assert!(!format!("{secret:?}").contains("hunter2"), "secrets never reach Debug output");
}

#[test]
fn strict_mode_turns_the_first_warning_into_an_error() {
    let parsed = load(&[corpus().join("web-app-from-kubernetes.yaml")]).unwrap();
    let err = parsed.strict().unwrap_err();
    assert!(matches!(err, ManifestError::Strict(_)));
    assert!(err.to_string().contains("ServiceAccount"), "{err}");
    assert!(load(&[corpus().join("sensor.yaml")]).unwrap().strict().is_ok());
}

#[test]
fn every_invalid_manifest_is_refused_naming_its_field() {
    let dir = corpus().join("invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 10);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} must start with '# expect: <field path or text>'", file.display()));
        let err = match load(std::slice::from_ref(&file)) {
            Ok(parsed) => panic!("{} was accepted: {parsed:?}", file.display()),
            Err(err) => err.to_string(),
        };
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(err.contains(&*name), "error does not name the file: {err}");
        assert!(err.contains(expected), "{name}: expected {expected:?} in: {err}");
        println!("{err}");
    }
}

#[test]
fn names_are_dns_subdomains_where_kubernetes_takes_them() {
    let parse = |text: &str| flotilla_controller::manifest::parse_str("names.yaml", text);
    let accepted = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: line-3.sensor-calibration}\ndata: {a: b}\n---\n\
                    apiVersion: v1\nkind: Secret\nmetadata: {name: db.credentials.v2}\nstringData: {p: q}\n";
    let parsed = parse(accepted).unwrap();
    assert_eq!(parsed.objects.len(), 2);
    // Workloads too, as Kubernetes takes them (at most 63: replica ids are made from them).
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: line-3.press}\nspec:\n  \
                      selector: {matchLabels: {app: press}}\n  template:\n    metadata: {labels: {app: press}}\n    \
                      spec: {containers: [{name: app, image: \"registry.local:7440/press:1\"}]}\n";
    assert_eq!(parse(deployment).unwrap().objects.len(), 1);
    for (name, expected) in [
        ("line-3..calibration", "DNS subdomain"),
        ("-line-3.calibration", "DNS subdomain"),
        (&"a".repeat(254), "at most 253"),
    ] {
        let text = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name:?}}}\ndata: {{a: b}}\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("metadata.name") && err.contains(expected), "{name}: {err}");
    }
    let claim = format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {}}}\n\
         spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n",
        "c".repeat(88)
    );
    assert!(parse(&claim).unwrap_err().to_string().contains("at most 87"));
}

#[test]
fn a_bad_document_anywhere_means_nothing_is_returned() {
    // Good files first, then a bad one: the whole load fails.
    let result = load(&[corpus().join("sensor.yaml"), corpus().join("invalid/bad-name.yaml")]);
    assert!(result.is_err());
}
