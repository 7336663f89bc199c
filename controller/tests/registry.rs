//! The built-in registry against real clients: skopeo copies images in and
//! out unchanged, `flotilla image push` uploads a layout, umoci builds the
//! layouts, and a stock `docker-registry` serves as a source. The registry
//! is served by the controller's own API router on a free loopback port.
//!
//! Needs umoci, skopeo and docker-registry (installed by `scripts/setup`).

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use flotilla_controller::api::{self, ApiState, Metrics};
use flotilla_controller::cli::ClientArgs;
use flotilla_controller::image_cmd::{self, PushArgs, RegistryClient};
use flotilla_controller::registry::names::Digest;
use flotilla_controller::registry::{GcReport, Registry};
use flotilla_controller::store::{RedbStore, SecretCipher};
use tempfile::TempDir;

const TOKEN: &str = "test-token-0123456789";

/// A controller API with the registry, served until dropped.
struct Server {
    addr: SocketAddr,
    dir: TempDir,
    registry: Arc<Registry>,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("store.redb"), SecretCipher::from_key([7; 32])).unwrap();
        let state = Arc::new(ApiState {
            store: Arc::new(store),
            token: TOKEN.to_owned(),
            metrics: Metrics::default(),
            ready: AtomicBool::new(true),
            tables: Default::default(),
            max_body: flotilla_controller::api::DEFAULT_MAX_BODY,
            space: flotilla_controller::space::SpaceGuard::new(dir.path(), Some(0)),
        });
        // No grace period, so that garbage collection in these tests acts at once.
        let registry = Arc::new(Registry::open(&dir.path().join("registry")).unwrap().with_gc_grace(Duration::ZERO));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = api::router_with_registry(state, registry.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Server { addr, dir, registry, _runtime: runtime }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn docker_ref(&self, name: &str) -> String {
        format!("docker://{}/{name}", self.addr)
    }

    fn blob_files(&self) -> Vec<String> {
        list(&self.dir.path().join("registry/blobs/sha256"))
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Runs a tool that `scripts/setup` installs; a missing tool fails the test.
fn run(tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} (scripts/setup installs it): {e}"))
}

fn run_ok(tool: &str, args: &[&str]) -> String {
    let output = run(tool, args);
    assert!(
        output.status.success(),
        "{tool} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An OCI layout at `dir` with image `tag`: umoci's empty image plus `files`.
fn make_layout(dir: &Path, tag: &str, files: &[(&str, &[u8])]) {
    let layout = dir.to_str().unwrap();
    let image = format!("{layout}:{tag}");
    if !dir.join("index.json").exists() {
        run_ok("umoci", &["init", "--layout", layout]);
    }
    run_ok("umoci", &["new", "--image", &image]);
    let bundle = tempfile::tempdir().unwrap();
    let bundle_path = bundle.path().join("bundle");
    let bundle_dir = bundle_path.to_str().unwrap();
    run_ok("umoci", &["unpack", "--image", &image, bundle_dir]);
    for (name, content) in files {
        std::fs::write(bundle_path.join("rootfs").join(name), content).unwrap();
    }
    run_ok("umoci", &["repack", "--image", &image, bundle_dir]);
    // Drop the blobs of the empty image that `repack` replaced.
    run_ok("umoci", &["gc", "--layout", layout]);
}

/// The digest `index.json` of a layout gives `tag`.
fn layout_digest(dir: &Path, tag: &str) -> String {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    let entry = manifests
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("{} has no tag {tag}", dir.display()));
    entry["digest"].as_str().unwrap().to_owned()
}

fn skopeo_copy_in(server: &Server, layout: &Path, tag: &str, name: &str) {
    let creds = format!("flotilla:{TOKEN}");
    let source = format!("oci:{}:{tag}", layout.display());
    run_ok(
        "skopeo",
        &[
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &source,
            &server.docker_ref(name),
        ],
    );
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// Uploads `bytes` in one request (`POST ?digest=`).
fn upload(server: &Server, name: &str, bytes: &[u8]) -> Digest {
    let digest = Digest::of(bytes);
    let response = agent()
        .post(server.url(&format!("/v2/{name}/blobs/uploads/?digest={digest}")))
        .header("Authorization", bearer())
        .send(bytes)
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["docker-content-digest"], digest.to_string().as_str());
    digest
}

fn error_code(mut response: ureq::http::Response<ureq::Body>) -> String {
    let body: serde_json::Value = response.body_mut().read_json().unwrap();
    body["errors"][0]["code"].as_str().unwrap().to_owned()
}

#[test]
fn skopeo_copies_into_and_out_of_the_registry_with_identical_digests() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    make_layout(&source, "t", &[("hello.txt", b"hello from flotilla\n")]);
    skopeo_copy_in(&server, &source, "t", "test/img:t");

    // Out again, anonymously: pulls need no credentials.
    let out = work.path().join("out");
    let destination = format!("oci:{}:t", out.display());
    run_ok(
        "skopeo",
        &["copy", "--preserve-digests", "--src-tls-verify=false", &server.docker_ref("test/img:t"), &destination],
    );
    assert_eq!(layout_digest(&out, "t"), layout_digest(&source, "t"));
    assert_eq!(list(&out.join("blobs/sha256")), list(&source.join("blobs/sha256")), "every blob came back");

    let raw = run_ok("skopeo", &["inspect", "--raw", "--tls-verify=false", &server.docker_ref("test/img:t")]);
    assert_eq!(Digest::of(raw.as_bytes()).to_string(), layout_digest(&source, "t"));
    let inspected = run_ok("skopeo", &["inspect", "--tls-verify=false", &server.docker_ref("test/img:t")]);
    let inspected: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["Digest"], layout_digest(&source, "t").as_str());

    // The manifest is served by digest too, with its media type and digest.
    let digest = layout_digest(&source, "t");
    let response = agent().head(server.url(&format!("/v2/test/img/manifests/{digest}"))).call().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(response.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(response.headers()["content-length"], raw.len().to_string().as_str());

    let resolved = server.registry.resolve("test/img", "t").unwrap().expect("the tag resolves");
    assert_eq!(Digest(resolved.digest).to_string(), digest);
    assert_eq!(resolved.platforms, vec![("linux".to_owned(), std::env::consts::ARCH.replace("x86_64", "amd64"))]);
    assert_eq!(server.registry.resolve("test/img", "missing").unwrap(), None);
}

#[test]
fn pushes_and_deletes_need_the_token() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    make_layout(&source, "t", &[]);
    let from = format!("oci:{}:t", source.display());
    let to = server.docker_ref("test/img:t");
    let anonymous = run("skopeo", &["copy", "--dest-tls-verify=false", &from, &to]);
    assert!(!anonymous.status.success(), "an anonymous push must be refused");
    let wrong = run("skopeo", &["copy", "--dest-tls-verify=false", "--dest-creds", "flotilla:wrong", &from, &to]);
    assert!(!wrong.status.success(), "a push with a wrong token must be refused");
    assert!(server.blob_files().is_empty(), "nothing was stored");

    let response = agent().post(server.url("/v2/test/img/blobs/uploads/")).send_empty().unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], r#"Basic realm="flotilla""#);
    assert_eq!(error_code(response), "UNAUTHORIZED");
    let response = agent().post(server.url("/v2/_flotilla/gc")).send_empty().unwrap();
    assert_eq!(response.status(), 401);

    // The version check challenges a client without credentials and
    // welcomes one with the token, as Bearer or as a Basic password.
    assert_eq!(agent().get(server.url("/v2/")).call().unwrap().status(), 401);
    let basic = "Basic ZmxvdGlsbGE6dGVzdC10b2tlbi0wMTIzNDU2Nzg5"; // flotilla:test-token-0123456789
    let response = agent().get(server.url("/v2/")).header("Authorization", basic).call().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["docker-distribution-api-version"], "registry/2.0");
    let response = agent().delete(server.url("/v2/test/img/manifests/t")).call().unwrap();
    assert_eq!(response.status(), 401);
}

#[test]
fn blob_range_requests_return_the_exact_bytes() {
    let server = Server::start();
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = upload(&server, "test/ranges", &bytes);
    let url = server.url(&format!("/v2/test/ranges/blobs/{digest}"));
    let get = |range: Option<&str>| {
        let request = agent().get(&url);
        let request = match range {
            Some(range) => request.header("Range", range),
            None => request,
        };
        let mut response = request.call().unwrap();
        let status = response.status().as_u16();
        let content_range = response.headers().get("content-range").map(|v| v.to_str().unwrap().to_owned());
        let body = response.body_mut().read_to_vec().unwrap();
        (status, content_range, body)
    };
    assert_eq!(get(None), (200, None, bytes.clone()));
    assert_eq!(get(Some("bytes=10-19")), (206, Some("bytes 10-19/1000".to_owned()), bytes[10..20].to_vec()));
    assert_eq!(get(Some("bytes=990-")), (206, Some("bytes 990-999/1000".to_owned()), bytes[990..].to_vec()));
    assert_eq!(get(Some("bytes=0-0")), (206, Some("bytes 0-0/1000".to_owned()), bytes[..1].to_vec()));
    assert_eq!(get(Some("bytes=1000-")), (416, Some("bytes */1000".to_owned()), Vec::new()));

    let head = agent().head(&url).call().unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "1000");
    assert_eq!(head.headers()["docker-content-digest"], digest.to_string().as_str());
    // Blobs belong to the repositories they were pushed to, or mounted into.
    let elsewhere = server.url(&format!("/v2/test/other/blobs/{digest}"));
    assert_eq!(agent().head(&elsewhere).call().unwrap().status(), 404);
    let mount = |from: &str| {
        let url = server.url(&format!("/v2/test/other/blobs/uploads/?mount={digest}&from={from}"));
        agent().post(url).header("Authorization", bearer()).send_empty().unwrap().status()
    };
    assert_eq!(mount("test/nothing-here"), 202, "an impossible mount starts an upload instead");
    assert_eq!(mount("test/ranges"), 201);
    assert_eq!(agent().head(&elsewhere).call().unwrap().status(), 200);
    assert_eq!(server.blob_files(), vec![digest.hex()], "mounting copies nothing");
}

#[test]
fn manifests_are_checked_before_they_are_stored() {
    let server = Server::start();
    let config = upload(&server, "test/checks", br#"{"os":"linux","architecture":"arm64"}"#);
    let missing = Digest::of(b"never pushed");
    let image = |layer: Digest| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 37},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 1}]
        }))
        .unwrap()
    };
    let put = |reference: &str, body: &[u8]| {
        agent()
            .put(server.url(&format!("/v2/test/checks/manifests/{reference}")))
            .header("Authorization", bearer())
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .send(body)
            .unwrap()
    };
    assert_eq!(error_code(put("v1", &image(missing))), "MANIFEST_BLOB_UNKNOWN");
    let layer = upload(&server, "test/checks", b"x");
    // Descriptors are checked against what is stored: a wrong size, a
    // layer said to be gzip that is not.
    let lying = String::from_utf8(image(layer)).unwrap().replace(r#""size":1"#, r#""size":999"#);
    assert!(lying.contains("999"));
    assert_eq!(error_code(put("v1", lying.as_bytes())), "MANIFEST_INVALID");
    let not_gzip = String::from_utf8(image(layer)).unwrap().replace("layer.v1.tar\"", "layer.v1.tar+gzip\"");
    assert!(not_gzip.contains("+gzip"));
    assert_eq!(error_code(put("v1", not_gzip.as_bytes())), "MANIFEST_INVALID");
    // A config that is not JSON.
    let not_json = upload(&server, "test/checks", b"not json");
    let bad_config = String::from_utf8(image(layer)).unwrap().replace(&config.to_string(), &not_json.to_string());
    let bad_config = bad_config.replace(r#""size":37"#, r#""size":8"#);
    assert_eq!(error_code(put("v1", bad_config.as_bytes())), "MANIFEST_INVALID");
    let good = image(layer);
    assert_eq!(error_code(put(&missing.to_string(), &good)), "DIGEST_INVALID");
    assert_eq!(error_code(put("v1", b"{\"schemaVersion\": 2")), "MANIFEST_INVALID");
    assert_too_large_is_refused_before_the_body(&server);
    let stored = put(&Digest::of(&good).to_string(), &good);
    assert_eq!(stored.status(), 201);
    assert_eq!(stored.headers()["docker-content-digest"], Digest::of(&good).to_string().as_str());
    assert_eq!(put("v1", &good).status(), 201);

    let resolved = server.registry.resolve("test/checks", "v1").unwrap().unwrap();
    assert_eq!(resolved.platforms, vec![("linux".to_owned(), "arm64".to_owned())]);
    // An index entry must say what its image is: platform, size, type.
    let index = |architecture: &str, size: usize| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": Digest::of(&good).to_string(),
                "size": size,
                "platform": {"os": "linux", "architecture": architecture}
            }]
        }))
        .unwrap()
    };
    let put_index = |body: &[u8]| {
        agent()
            .put(server.url("/v2/test/checks/manifests/multi"))
            .header("Authorization", bearer())
            .header("Content-Type", "application/vnd.oci.image.index.v1+json")
            .send(body)
            .unwrap()
    };
    assert_eq!(error_code(put_index(&index("amd64", good.len()))), "MANIFEST_INVALID");
    assert_eq!(error_code(put_index(&index("arm64", good.len() + 1))), "MANIFEST_INVALID");
    assert_eq!(put_index(&index("arm64", good.len())).status(), 201);
    let mut response = agent().get(server.url("/v2/test/checks/manifests/v1")).call().unwrap();
    assert_eq!(response.body_mut().read_to_vec().unwrap(), good);
    let unknown = agent().get(server.url("/v2/test/checks/manifests/v2")).call().unwrap();
    assert_eq!(error_code(unknown), "MANIFEST_UNKNOWN");
    let unknown = agent().get(server.url("/v2/test/nothing/tags/list")).call().unwrap();
    assert_eq!(error_code(unknown), "NAME_UNKNOWN");
}

/// A manifest PUT announcing more than 4 MiB is refused from its headers
/// alone (so the body is never sent: raw TCP, since HTTP clients insist on
/// sending it).
fn assert_too_large_is_refused_before_the_body(server: &Server) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    let request = format!(
        "PUT /v2/test/checks/manifests/big HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
         Content-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n",
        bearer(),
        (4 << 20) + 1
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
}

#[test]
fn chunked_uploads_store_the_concatenation_and_a_wrong_digest_stores_nothing() {
    let server = Server::start();
    let start = || {
        let response = agent()
            .post(server.url("/v2/test/chunks/blobs/uploads/"))
            .header("Authorization", bearer())
            .send_empty()
            .unwrap();
        assert_eq!(response.status(), 202);
        server.url(response.headers()["location"].to_str().unwrap())
    };
    let patch = |location: &str, range: &str, chunk: &[u8]| {
        agent().patch(location).header("Authorization", bearer()).header("Content-Range", range).send(chunk).unwrap()
    };

    let location = start();
    let first = patch(&location, "0-5", b"chunk-");
    assert_eq!((first.status().as_u16(), first.headers()["range"].to_str().unwrap()), (202, "0-5"));
    let out_of_order = patch(&location, "3-8", b"again");
    assert_eq!(out_of_order.status(), 416);
    assert_eq!(patch(&location, "6-10", b"two, ").status(), 202);
    let status = agent().get(&location).header("Authorization", bearer()).call().unwrap();
    assert_eq!((status.status().as_u16(), status.headers()["range"].to_str().unwrap()), (204, "0-10"));
    let whole = b"chunk-two, three";
    let digest = Digest::of(whole);
    let finish = agent()
        .put(format!("{location}?digest={digest}"))
        .header("Authorization", bearer())
        .send(&b"three"[..])
        .unwrap();
    assert_eq!(finish.status(), 201);
    let mut blob = agent().get(server.url(&format!("/v2/test/chunks/blobs/{digest}"))).call().unwrap();
    assert_eq!(blob.body_mut().read_to_vec().unwrap(), whole);

    let location = start();
    assert_eq!(patch(&location, "0-8", b"tampered!").status(), 202);
    let claimed = Digest::of(b"what the client claims");
    let refused =
        agent().put(format!("{location}?digest={claimed}")).header("Authorization", bearer()).send_empty().unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(error_code(refused), "DIGEST_INVALID");
    for stored_as in [claimed, Digest::of(b"tampered!")] {
        let url = server.url(&format!("/v2/test/chunks/blobs/{stored_as}"));
        assert_eq!(agent().head(url).call().unwrap().status(), 404);
    }
    assert_eq!(server.blob_files(), vec![digest.hex()], "only the good blob is stored");
    assert!(list(&server.dir.path().join("registry/uploads")).is_empty(), "no session is left");
    let resumed = agent().get(&location).header("Authorization", bearer()).call().unwrap();
    assert_eq!(error_code(resumed), "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn garbage_collection_removes_unreferenced_blobs_and_keeps_referenced_ones() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    make_layout(&source, "t", &[("data", b"kept")]);
    skopeo_copy_in(&server, &source, "t", "test/gc:t");
    let referenced = server.blob_files();
    let orphan = upload(&server, "test/gc", b"nobody references me");
    assert_eq!(server.blob_files().len(), referenced.len() + 1);

    let collect = || -> GcReport {
        let mut response =
            agent().post(server.url("/v2/_flotilla/gc")).header("Authorization", bearer()).send_empty().unwrap();
        assert_eq!(response.status(), 200);
        response.body_mut().read_json().unwrap()
    };
    let report = collect();
    assert_eq!((report.blobs_deleted, report.blobs_kept), (1, referenced.len()));
    assert_eq!(report.bytes_freed, 20);
    assert_eq!(server.blob_files(), referenced);
    let orphan_url = server.url(&format!("/v2/test/gc/blobs/{orphan}"));
    assert_eq!(agent().head(orphan_url).call().unwrap().status(), 404);
    let out = format!("oci:{}:t", work.path().join("out").display());
    run_ok("skopeo", &["copy", "--src-tls-verify=false", &server.docker_ref("test/gc:t"), &out]);

    // Deleting the manifest (by digest, which also drops its tag) leaves
    // nothing referenced.
    let digest = layout_digest(&source, "t");
    let deleted = agent()
        .delete(server.url(&format!("/v2/test/gc/manifests/{digest}")))
        .header("Authorization", bearer())
        .call()
        .unwrap();
    assert_eq!(deleted.status(), 202);
    let tags: serde_json::Value =
        agent().get(server.url("/v2/test/gc/tags/list")).call().unwrap().body_mut().read_json().unwrap();
    assert_eq!(tags["tags"], serde_json::json!([]));
    assert_eq!(collect().blobs_deleted, referenced.len());
    assert!(server.blob_files().is_empty());
}

#[test]
fn flotilla_image_push_uploads_a_multi_platform_layout() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    make_layout(&layout, "single", &[("app", b"#!/bin/sh\necho hi\n")]);
    let index_digest = add_index(&layout, "single", "multi");
    let token_file = work.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let push = |source: String, destination: &str| {
        image_cmd::run_push(PushArgs {
            source,
            destination: destination.to_owned(),
            client: ClientArgs { server: server.url(""), token_file: Some(token_file.clone()), ca_file: None },
        })
    };
    push(format!("{}:multi", layout.display()), "test/multi:v1").unwrap();
    // Again: every blob is already there, and the push still succeeds.
    push(format!("{}:multi", layout.display()), &format!("{}/test/multi:v2", server.addr)).unwrap();

    let raw = run_ok("skopeo", &["inspect", "--raw", "--tls-verify=false", &server.docker_ref("test/multi:v1")]);
    assert_eq!(Digest::of(raw.as_bytes()), index_digest);
    let inspected = run_ok("skopeo", &["inspect", "--tls-verify=false", &server.docker_ref("test/multi:v2")]);
    let inspected: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["Digest"], index_digest.to_string().as_str());
    assert_eq!((inspected["Os"].as_str(), inspected["Architecture"].as_str()), (Some("linux"), Some("amd64")));
    // `umoci repack` added one layer to the empty image.
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(1), "skopeo found the platform's image");

    let resolved = server.registry.resolve("test/multi", "v1").unwrap().unwrap();
    assert_eq!(resolved.digest, index_digest.0);
    assert_eq!(resolved.media_type, "application/vnd.oci.image.index.v1+json");
    assert_eq!(resolved.platforms, vec![("linux".to_owned(), "amd64".to_owned())]);

    let client = RegistryClient::new(&server.url(""), None, Default::default());
    let repo = "test/multi".parse().unwrap();
    assert_eq!(client.catalog().unwrap(), vec![repo]);
    let repo = "test/multi".parse().unwrap();
    assert_eq!(client.tags(&repo).unwrap(), ["v1", "v2"]);
    assert_eq!(client.manifest_digest(&repo, "v2").unwrap(), Some(index_digest.to_string()));

    let no_token = image_cmd::run_push(PushArgs {
        source: format!("{}:multi", layout.display()),
        destination: "test/other:v1".to_owned(),
        client: ClientArgs { server: server.url(""), token_file: Some(work.path().join("missing")), ca_file: None },
    });
    let message = format!("{:#}", no_token.unwrap_err());
    assert!(message.contains("401") && message.contains("token"), "{message}");
}

/// Adds an image index over image `tag` (as linux/amd64) to the layout,
/// tagged `index_tag`; returns its digest.
fn add_index(layout: &Path, tag: &str, index_tag: &str) -> Digest {
    let path = layout.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let digest = layout_digest(layout, tag);
    let manifest_size = std::fs::metadata(layout.join("blobs/sha256").join(&digest[7..])).unwrap().len();
    let image_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": manifest_size,
            "platform": {"os": "linux", "architecture": "amd64"}
        }]
    });
    let bytes = serde_json::to_vec(&image_index).unwrap();
    let index_digest = Digest::of(&bytes);
    std::fs::write(layout.join("blobs/sha256").join(index_digest.hex()), &bytes).unwrap();
    index["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": index_digest.to_string(),
        "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": index_tag}
    }));
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    index_digest
}

/// A stock `docker-registry` on a free port, stopped when dropped.
struct DockerRegistry {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl DockerRegistry {
    fn start() -> DockerRegistry {
        let dir = tempfile::tempdir().unwrap();
        // The port is free when we let it go; docker-registry takes it right after.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("storage");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start docker-registry (scripts/setup installs it): {e}"));
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "docker-registry did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        DockerRegistry { child, addr, _dir: dir }
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_stock_docker_registry_works_as_a_source() {
    let server = Server::start();
    let stock = DockerRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    make_layout(&source, "t", &[("from-stock", b"stock registry")]);
    let stock_ref = format!("docker://{}/stock/img:t", stock.addr);
    let from = format!("oci:{}:t", source.display());
    run_ok("skopeo", &["copy", "--preserve-digests", "--dest-tls-verify=false", &from, &stock_ref]);

    let creds = format!("flotilla:{TOKEN}");
    run_ok(
        "skopeo",
        &[
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &stock_ref,
            &server.docker_ref("from/stock:t"),
        ],
    );
    let raw = run_ok("skopeo", &["inspect", "--raw", "--tls-verify=false", &server.docker_ref("from/stock:t")]);
    assert_eq!(Digest::of(raw.as_bytes()).to_string(), layout_digest(&source, "t"));

    // `flotilla image ls`'s client reads a foreign registry as well.
    let client = RegistryClient::new(&format!("http://{}", stock.addr), None, Default::default());
    let repo = "stock/img".parse().unwrap();
    assert_eq!(client.manifest_digest(&repo, "t").unwrap(), Some(layout_digest(&source, "t")));
}

/// Pull throughput over loopback: one 100 MiB blob. Run with
/// `cargo test --release -p flotilla-controller --test registry -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check; run by hand in release mode"]
fn pull_throughput_on_loopback() {
    let server = Server::start();
    let size = 100usize << 20;
    let mut bytes = vec![0u8; size];
    // Incompressible content: an xorshift stream.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in bytes.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let started = Instant::now();
    let digest = upload(&server, "bench/blob", &bytes);
    let push_seconds = started.elapsed().as_secs_f64();
    drop(bytes);
    let url = server.url(&format!("/v2/bench/blob/blobs/{digest}"));
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let mut response = agent().get(&url).call().unwrap();
        let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut buffer = vec![0u8; 1 << 20];
        let mut received = 0;
        loop {
            let n = reader.read(&mut buffer).unwrap();
            if n == 0 {
                break;
            }
            received += n;
        }
        assert_eq!(received, size);
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!("pull throughput on loopback: {:.0} MiB/s (100 MiB blob, best of 5)", 100.0 / best);
    println!("push throughput on loopback: {:.0} MiB/s (one upload, hashed and fsynced)", 100.0 / push_seconds);
}
