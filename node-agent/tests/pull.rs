//! Image pulls against a real registry: the stock `docker-registry` on a
//! free port, images built with umoci and pushed with skopeo, and a TCP
//! proxy in the middle that cuts or tampers with a blob. Then real
//! containers (through the runtime helper) on overlay and on copied root
//! filesystems.
//!
//! Needs root (containers, overlay mounts, whiteout devices, tmpfs) and the
//! tools scripts/setup installs: umoci, skopeo, docker-registry and
//! busybox-static. A missing tool is a failure that says so.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firmware_proto::{Bytes, EventKind, ImageRef, Phase, RestartPolicy, TextList, samples};
use flotilla_agent::agent::{Agent, Backoff};
use flotilla_agent::image::{Availability, ImageSettings, Images, Platform, PullState, Ready, RootfsMode, Sha256};
use flotilla_agent::runtime::helper::HelperRuntime;
use flotilla_agent::runtime::{Runtime, Status};
use flotilla_agent::workload::Paths;
use sha2::Digest as _;

fn require_tools() {
    assert!(nix::unistd::geteuid().is_root(), "pull tests need root (containers, overlay mounts, whiteouts)");
    for tool in ["/usr/bin/umoci", "/usr/bin/skopeo", "/usr/bin/docker-registry", "/bin/busybox"] {
        assert!(Path::new(tool).is_file(), "{tool} missing: run scripts/setup");
    }
}

/// Runs a command and returns its stdout; fails the test with its stderr.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// --- the registry ----------------------------------------------------------

/// `docker-registry serve` on a free port with its own storage; killed
/// when dropped.
struct Registry {
    child: Child,
    addr: SocketAddr,
    storage: PathBuf,
}

impl Registry {
    fn start(dir: &Path) -> Self {
        let storage = dir.join("registry");
        std::fs::create_dir_all(&storage).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry (apt docker-registry)");
        let registry = Registry { child, addr, storage };
        let deadline = Instant::now() + Duration::from_secs(15);
        while ureq::get(format!("http://{addr}/v2/")).call().is_err() {
            assert!(Instant::now() < deadline, "the registry did not answer on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// The bytes of a manifest as the registry serves it, and their digest.
    fn manifest(&self, name: &str, tag: &str) -> (Vec<u8>, Sha256) {
        let mut response = ureq::get(format!("http://{}/v2/{name}/manifests/{tag}", self.addr))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")
            .call()
            .unwrap();
        let bytes = response.body_mut().read_to_vec().unwrap();
        let digest = Sha256(sha2::Sha256::digest(&bytes).into());
        (bytes, digest)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- images ------------------------------------------------------------------

/// An OCI layout built with umoci.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// A layout with an empty image `empty`.
    fn new(dir: &Path) -> Self {
        let layout = Layout { dir: dir.join("layout") };
        run(Command::new("umoci").arg("init").arg("--layout").arg(&layout.dir));
        run(Command::new("umoci").arg("new").arg("--image").arg(layout.image("empty")));
        layout
    }

    fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.display())
    }

    /// Tag `tag`: `from` plus one layer with what `add` puts in the rootfs.
    fn derive(&self, from: &str, tag: &str, add: impl FnOnce(&Path)) {
        let bundle = self.dir.with_file_name(format!("bundle-{tag}"));
        run(Command::new("umoci").args(["unpack", "--image", &self.image(from)]).arg(&bundle));
        add(&bundle.join("rootfs"));
        run(Command::new("umoci").args(["repack", "--image", &self.image(tag)]).arg(&bundle));
        std::fs::remove_dir_all(&bundle).unwrap();
    }

    /// `umoci config` on `tag`.
    fn config(&self, tag: &str, args: &[&str]) {
        run(Command::new("umoci").args(["config", "--image", &self.image(tag)]).args(args));
    }

    /// Pushes `tag` as `name:tag` and returns the reference and the digest
    /// the controller would pin.
    fn push(&self, registry: &Registry, tag: &str, name: &str) -> ImageRef {
        let destination = format!("docker://{}/{name}:{tag}", registry.addr);
        run(Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}", self.image(tag)))
            .arg(destination));
        let (_, digest) = registry.manifest(name, tag);
        image_ref(&format!("{}/{name}:{tag}", registry.addr), digest)
    }
}

fn image_ref(reference: &str, digest: Sha256) -> ImageRef {
    ImageRef { reference: reference.try_into().unwrap(), digest: Bytes(digest.0) }
}

/// A busybox with the applets the workloads use.
fn add_busybox(rootfs: &Path) {
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "sleep", "touch", "pwd"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
}

/// `size` bytes that gzip cannot shrink (so the blob is as big as the file).
fn noise(size: usize, mut seed: u64) -> Vec<u8> {
    (0..size)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Tags `base` (busybox), `a` and `b` (base + one small layer each, with a
/// run configuration) and `big` (base + 4 MiB of noise).
fn build_images(dir: &Path) -> Layout {
    let layout = Layout::new(dir);
    layout.derive("empty", "base", add_busybox);
    for name in ["a", "b"] {
        layout.derive("base", name, |rootfs| {
            std::fs::create_dir_all(rootfs.join("app")).unwrap();
            std::fs::write(rootfs.join("app/hello.txt"), format!("hello from image {name}\n")).unwrap();
        });
        layout.config(
            name,
            &[
                "--config.entrypoint=/bin/sh",
                "--config.cmd=-c",
                "--config.cmd=touch /written; cat hello.txt; echo GREETING=$GREETING ORIGIN=$ORIGIN; pwd; exec sleep 1000",
                "--config.env=GREETING=from-image",
                "--config.env=ORIGIN=image",
                "--config.workingdir=/app",
            ],
        );
    }
    layout.derive("base", "big", |rootfs| std::fs::write(rootfs.join("noise.bin"), noise(4 << 20, 7)).unwrap());
    layout
}

/// The digest and size of layer `index` of a pushed image.
fn layer(registry: &Registry, name: &str, tag: &str, index: usize) -> (Sha256, u64) {
    let (bytes, _) = registry.manifest(name, tag);
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let layer = &manifest["layers"][index];
    (Sha256::parse(layer["digest"].as_str().unwrap()).unwrap(), layer["size"].as_u64().unwrap())
}

// --- a proxy that misbehaves ---------------------------------------------------

/// What the proxy does to the response for the target blob.
#[derive(Debug, Clone, Copy)]
enum Mischief {
    /// Closes the connection after this many body bytes, the first time.
    CutOnce { after: u64 },
    /// Flips one byte of the body, every time.
    FlipByte,
}

#[derive(Default)]
struct ProxyStats {
    /// Bytes sent from the registry to the agent.
    to_client: AtomicU64,
    cut: AtomicBool,
    flips: AtomicU64,
    /// `Range` headers of requests for the target blob.
    ranges: Mutex<Vec<String>>,
}

/// A TCP proxy in front of the registry that misbehaves on one blob. Its
/// threads end with the test process.
struct Proxy {
    addr: SocketAddr,
    stats: Arc<ProxyStats>,
}

impl Proxy {
    fn start(upstream: SocketAddr, target: Sha256, mischief: Mischief) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ProxyStats::default());
        let shared = Arc::clone(&stats);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let stats = Arc::clone(&shared);
                let target = target.to_string();
                std::thread::spawn(move || proxy_connection(client, upstream, &target, mischief, stats));
            }
        });
        Proxy { addr, stats }
    }
}

fn proxy_connection(client: TcpStream, upstream: SocketAddr, target: &str, mischief: Mischief, stats: Arc<ProxyStats>) {
    let Ok(server) = TcpStream::connect(upstream) else { return };
    // Requests: forwarded as they are, watched for the target blob. HTTP/1.1
    // without pipelining: what the server sends after a request is its answer.
    let on_target = Arc::new(AtomicBool::new(false));
    let new_response = Arc::new(AtomicBool::new(false));
    {
        let (mut from, mut to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let (on_target, new_response) = (Arc::clone(&on_target), Arc::clone(&new_response));
        let target = target.to_owned();
        let stats = Arc::clone(&stats);
        std::thread::spawn(move || {
            let mut head = Vec::new();
            let mut buffer = [0; 16 * 1024];
            while let Ok(n) = from.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buffer[..n]);
                while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    let text = String::from_utf8_lossy(&head[..end]).to_lowercase();
                    let is_target = text.lines().next().is_some_and(|l| l.contains(&format!("/blobs/{target}")));
                    if is_target && let Some(range) = text.lines().find(|l| l.starts_with("range:")) {
                        stats.ranges.lock().unwrap().push(range.trim_start_matches("range:").trim().to_owned());
                    }
                    on_target.store(is_target, Ordering::SeqCst);
                    new_response.store(true, Ordering::SeqCst);
                    head.drain(..end + 4);
                }
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    }
    let (mut from, mut to) = (server, client);
    let mut buffer = [0; 16 * 1024];
    let mut header = Vec::new();
    let mut body_seen: Option<u64> = None;
    while let Ok(n) = from.read(&mut buffer) {
        if n == 0 {
            break;
        }
        if new_response.swap(false, Ordering::SeqCst) {
            header.clear();
            body_seen = None;
        }
        let chunk = &mut buffer[..n];
        let mut forward = n;
        if on_target.load(Ordering::SeqCst) {
            // Where the body starts in this chunk, once the header has passed.
            let body_start = match body_seen {
                Some(_) => 0,
                None => {
                    let before = header.len();
                    header.extend_from_slice(chunk);
                    match header.windows(4).position(|w| w == b"\r\n\r\n") {
                        Some(end) => {
                            body_seen = Some(0);
                            end + 4 - before
                        }
                        None => n,
                    }
                }
            };
            if let Some(seen) = body_seen {
                let body_len = (n - body_start) as u64;
                match mischief {
                    Mischief::FlipByte => {
                        if seen == 0 && body_len > 0 {
                            chunk[body_start] ^= 0xff;
                            stats.flips.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Mischief::CutOnce { after } => {
                        if !stats.cut.load(Ordering::SeqCst) && seen + body_len >= after {
                            forward = body_start + (after - seen) as usize;
                            stats.cut.store(true, Ordering::SeqCst);
                        }
                    }
                }
                body_seen = Some(seen + body_len);
            }
        }
        if to.write_all(&chunk[..forward]).is_err() {
            break;
        }
        stats.to_client.fetch_add(forward as u64, Ordering::SeqCst);
        if forward < n {
            // The cut: both directions, mid-body.
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

// --- helpers ---------------------------------------------------------------------

fn amd64() -> Platform {
    Platform { os: "linux".into(), architecture: "amd64".into(), variant: None }
}

fn settings(rootfs: RootfsMode) -> ImageSettings {
    // The tests' arch expectations hold on any build machine.
    ImageSettings { rootfs, platform: amd64(), ..ImageSettings::default() }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Polls until the pull ends: the image, or the failure's reason.
fn wait_pulled(images: &mut Images, image: &ImageRef) -> Result<Ready, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match images.availability(image, now_ms()) {
            Availability::Ready(ready) => return Ok(ready),
            Availability::Failed(reason) => return Err(reason),
            Availability::Pulling => {}
        }
        assert!(Instant::now() < deadline, "pull of {} still running after 60 s", image.reference);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The counters of a finished pull (the record is on disk a moment before
/// the worker marks the pull ready).
fn counters_when_ready(images: &Images, image: &ImageRef) -> flotilla_agent::image::Counters {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match images.pull_state(image) {
            Some(PullState::Ready(counters)) => return counters,
            state => assert!(Instant::now() < deadline, "pull of {} not marked ready: {state:?}", image.reference),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pulled(ready: Ready) -> flotilla_agent::image::ImageRecord {
    match ready {
        Ready::Pulled(record) => record,
        Ready::Preloaded(path) => panic!("expected a pulled image, got preloaded {}", path.display()),
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

// --- pulls -------------------------------------------------------------------------

#[test]
fn a_pull_cut_at_half_resumes_and_transfers_only_the_rest() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    let layout = build_images(dir.path());
    let image = layout.push(&registry, "big", "web");
    let (big, size) = layer(&registry, "web", "big", 1);
    let proxy = Proxy::start(registry.addr, big, Mischief::CutOnce { after: size / 2 });
    let through_proxy = image_ref(
        &image.reference.replace(&registry.addr.to_string(), &proxy.addr.to_string()),
        Sha256(image.digest.0),
    );

    let mut images = Images::new(&dir.path().join("agent"), settings(RootfsMode::Auto));
    let record = pulled(wait_pulled(&mut images, &through_proxy).expect("the pull completes after the cut"));
    let counters = counters_when_ready(&images, &through_proxy);

    assert!(proxy.stats.cut.load(Ordering::SeqCst), "the proxy cut the transfer");
    let ranges = proxy.stats.ranges.lock().unwrap().clone();
    let resumed_from: u64 = ranges
        .iter()
        .find_map(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
        .unwrap_or_else(|| panic!("no Range request after the cut: {ranges:?}"));
    assert!(resumed_from > 0 && resumed_from <= size / 2, "resumed from byte {resumed_from} of {size}");
    let blobs: u64 = record.layers.iter().map(|l| l.digest).map(|d| layer_size(&registry, &d)).sum();
    let to_agent = proxy.stats.to_client.load(Ordering::SeqCst);
    eprintln!(
        "resume figures: layer {size} bytes, cut after {} bytes, resumed from byte {resumed_from}; \
         layer bytes received by the agent {} (all layers {blobs}); bytes through the proxy {to_agent}",
        size / 2,
        counters.received_bytes,
    );
    // Restarting from zero would be ~1.5 x the layer.
    assert!(counters.received_bytes >= blobs && counters.received_bytes <= blobs + 64 * 1024, "{counters:?}");
    assert!(to_agent <= blobs + 64 * 1024, "{to_agent} bytes through the proxy for {blobs} bytes of layers");
    assert_eq!(counters.done_bytes, counters.total_bytes);
    let layers = images.store().layers();
    assert!(layers.join(big.hex()).join("noise.bin").is_file());
    assert_eq!(std::fs::read(layers.join(big.hex()).join("noise.bin")).unwrap(), noise(4 << 20, 7));
    assert!(entries(&images.store().partial_dir()).is_empty(), "no partial download left");
}

fn layer_size(registry: &Registry, digest: &Sha256) -> u64 {
    let path =
        registry.storage.join(format!("docker/registry/v2/blobs/sha256/{}/{}/data", &digest.hex()[..2], digest.hex()));
    std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len()
}

#[test]
fn two_images_sharing_a_base_layer_store_it_once() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    let layout = build_images(dir.path());
    let a = layout.push(&registry, "a", "shop/web");
    let b = layout.push(&registry, "b", "shop/web");
    let mut images = Images::new(&dir.path().join("agent"), settings(RootfsMode::Auto));
    let first = pulled(wait_pulled(&mut images, &a).unwrap());
    let second = pulled(wait_pulled(&mut images, &b).unwrap());
    let counters = counters_when_ready(&images, &b);

    assert_eq!(first.layers[0], second.layers[0], "the same base layer");
    assert_ne!(first.layers[1].digest, second.layers[1].digest);
    let stored = entries(&images.store().layers());
    assert_eq!(stored.len(), 3, "base once, plus one layer each: {stored:?}");
    let own = layer(&registry, "shop/web", "b", 1).1;
    assert_eq!(counters.total_bytes, own, "the second pull downloads only its own layer");
    assert_eq!(first.run.entrypoint, ["/bin/sh"]);
    assert_eq!(first.run.working_dir, "/app");
    assert!(first.run.env.contains(&"ORIGIN=image".to_owned()), "{:?}", first.run.env);
    // Every blob was verified: the manifest bytes hash to the pinned digest.
    let manifest = std::fs::read(images.store().blob(&Sha256(a.digest.0))).unwrap();
    assert_eq!(Sha256(sha2::Sha256::digest(&manifest).into()), Sha256(a.digest.0));
}

#[test]
fn an_arm64_image_is_refused_on_an_amd64_node_with_a_clear_reason() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    let layout = build_images(dir.path());
    layout.config("a", &["--architecture=arm64", "--tag=arm"]);
    let arm = layout.push(&registry, "arm", "multi");
    let amd = layout.push(&registry, "a", "multi");
    let mut images = Images::new(&dir.path().join("agent"), settings(RootfsMode::Auto));

    let reason = wait_pulled(&mut images, &arm).expect_err("refused");
    assert_eq!(reason, format!("image {} is linux/arm64, this node is linux/amd64", arm.reference));
    let events = images.take_events(now_ms());
    assert!(
        events.iter().any(|e| matches!(e, EventKind::PullFailed { reason: r, .. } if r.as_str() == reason)),
        "{events:?}"
    );

    // An index: without an amd64 entry it is refused naming what it has...
    let entry = |image: &ImageRef, arch: &str| {
        let digest = Sha256(image.digest.0);
        let tag = image.reference.rsplit(':').next().unwrap();
        let size = registry.manifest("multi", tag).0.len();
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest.to_string(), "size": size,
            "platform": { "architecture": arch, "os": "linux" },
        })
    };
    let index_of = |tag: &str, manifests: Vec<serde_json::Value>| -> ImageRef {
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap();
        ureq::put(format!("http://{}/v2/multi/manifests/{tag}", registry.addr))
            .header("Content-Type", "application/vnd.oci.image.index.v1+json")
            .send(&body[..])
            .unwrap();
        image_ref(&format!("{}/multi:{tag}", registry.addr), Sha256(sha2::Sha256::digest(&body).into()))
    };
    let arm_only = index_of("arm-only", vec![entry(&arm, "arm64")]);
    let reason = wait_pulled(&mut images, &arm_only).expect_err("refused");
    assert_eq!(reason, format!("image {} has no linux/amd64 variant (has linux/arm64)", arm_only.reference));
    // ...and with one, that one is pulled.
    let both = index_of("both", vec![entry(&arm, "arm64"), entry(&amd, "amd64")]);
    let record = pulled(wait_pulled(&mut images, &both).unwrap());
    assert_eq!(record.platform, "linux/amd64");
    assert!(record.metadata_blobs.contains(&Sha256(amd.digest.0)), "the amd64 manifest was chosen");
}

#[test]
fn a_full_disk_fails_the_pull_with_a_reason_and_the_pull_succeeds_once_space_is_freed() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    let layout = build_images(dir.path());
    let image = layout.push(&registry, "big", "web");
    let data = dir.path().join("small-disk");
    std::fs::create_dir_all(&data).unwrap();
    nix::mount::mount(Some("tmpfs"), &data, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=2m")).unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(data.clone());

    let mut images = Images::new(&data, settings(RootfsMode::Auto));
    let reason = wait_pulled(&mut images, &image).expect_err("the disk is too small");
    assert!(reason.starts_with("disk full writing "), "{reason}");
    // Still answering, still refusing, no panic on the puller thread.
    assert!(matches!(images.availability(&image, now_ms()), Availability::Failed(_)));
    let events = images.take_events(now_ms());
    assert!(
        events.iter().any(|e| matches!(e, EventKind::PullFailed { reason, .. } if reason.starts_with("disk full")))
    );

    // Space freed (the volume grown): the pull is retried after its back-off
    // and succeeds, with no restart.
    nix::mount::mount(Some("tmpfs"), &data, Some("tmpfs"), nix::mount::MsFlags::MS_REMOUNT, Some("size=256m")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match images.availability(&image, now_ms()) {
            Availability::Ready(ready) => {
                assert!(matches!(ready, Ready::Pulled(_)));
                break;
            }
            Availability::Failed(_) | Availability::Pulling => {}
        }
        images.take_events(now_ms());
        assert!(Instant::now() < deadline, "the pull did not recover once space was freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// --- the agent, with real containers ------------------------------------------------

const NODE: &str = "pull-node";

/// Removes test containers and their root filesystems, even when a test fails.
struct Containers {
    data: PathBuf,
    ids: Vec<String>,
}

impl Drop for Containers {
    fn drop(&mut self) {
        let paths = Paths { data_dir: self.data.clone() };
        let mut runtime = HelperRuntime::new(
            Path::new(env!("CARGO_BIN_EXE_flotilla-agent")),
            &paths.runtime_state(),
            &paths.bundles(),
        );
        let store = flotilla_agent::image::Store::new(&self.data);
        for id in &self.ids {
            let _ = runtime.delete(id, true);
            let _ = flotilla_agent::image::rootfs::release(&store, id);
        }
    }
}

fn agent(data: &Path, rootfs: RootfsMode) -> Agent<HelperRuntime> {
    let paths = Paths { data_dir: data.to_owned() };
    let runtime =
        HelperRuntime::new(Path::new(env!("CARGO_BIN_EXE_flotilla-agent")), &paths.runtime_state(), &paths.bundles());
    let node = firmware_proto::Name::new(NODE).unwrap();
    // Signatures are the agent tests' business; these accept any document.
    Agent::new(runtime, paths, node, Box::new(|_, _| true), Backoff::default()).with_image_settings(settings(rootfs))
}

/// A document running `image` as replica `id`, with the image's command.
fn document(generation: u64, id: &str, image: Option<&ImageRef>) -> Vec<u8> {
    let mut document = samples::desired(usize::from(image.is_some()));
    document.node_id = firmware_proto::Name::new(NODE).unwrap();
    document.generation = generation;
    for replica in &mut document.replicas {
        replica.id = firmware_proto::Name::new(id).unwrap();
        replica.image = image.unwrap().clone();
        replica.command = TextList::default();
        replica.args = TextList::default();
        replica.env = TextList::from_strs(["GREETING=from-replica"]).unwrap();
        replica.working_dir = heapless::String::new();
        replica.user = None;
        replica.volumes.clear();
        replica.devices.clear();
        replica.read_only_rootfs = false;
        replica.readiness_probe = None;
        replica.liveness_probe = None;
        replica.restart_policy = RestartPolicy::Always;
    }
    // The Linux profile's document: each replica a pod of one container, `main`.
    let pods: Vec<firmware_proto::pod::PodSpec> = document.replicas.iter().map(Into::into).collect();
    let document = firmware_proto::pod::PodDocument {
        node_id: document.node_id,
        generation,
        pods: pods.try_into().unwrap(),
        config: Default::default(),
        claims: Default::default(),
    };
    firmware_proto::encode_signed_to_vec(&document, |_| Bytes([0; 64])).unwrap()
}

/// Reconciles until `done` says so; returns the events seen on the way.
fn reconcile_until(
    agent: &mut Agent<HelperRuntime>,
    what: &str,
    mut done: impl FnMut(&mut Agent<HelperRuntime>, &[EventKind]) -> bool,
) -> Vec<EventKind> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut events = Vec::new();
    loop {
        agent.reconcile(now_ms()).unwrap();
        events.extend(agent.take_events().into_iter().map(|e| e.kind));
        if done(agent, &events) {
            return events;
        }
        assert!(Instant::now() < deadline, "{what}: not after 60 s; events {events:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn running_pid(agent: &mut Agent<HelperRuntime>, id: &str) -> Option<i32> {
    agent.runtime().state(id).ok().flatten().filter(|s| s.status == Status::Running).and_then(|s| s.pid)
}

fn is_mounted(path: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.display().to_string();
    mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(&path))
        .map(|l| l.split(" - ").nth(1).unwrap_or("").to_owned())
}

fn containers_run_the_pulled_image(rootfs: RootfsMode, id: &str) {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    let layout = build_images(dir.path());
    let image = layout.push(&registry, "a", "web");
    let data = dir.path().join("agent");
    let pod = format!("{id}-{}", std::process::id());
    let id = format!("{pod}.main");
    let _cleanup = Containers { data: data.clone(), ids: vec![id.clone()] };
    let mut agent = agent(&data, rootfs);

    agent.offer_desired(&document(1, &pod, Some(&image))).unwrap();
    agent.reconcile(now_ms()).unwrap();
    assert_eq!(agent.replica_statuses(now_ms())[0].phase, Phase::Pulling);
    let events = reconcile_until(&mut agent, "container running", |agent, _| running_pid(agent, &id).is_some());
    let progress: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            EventKind::PullProgress { done_bytes, total_bytes, .. } => Some((*done_bytes, *total_bytes)),
            _ => None,
        })
        .collect();
    // The whole image reported done (a check that finds the pull finished
    // a moment before its record may start a second, cached one, whose
    // progress can come last).
    assert!(progress.iter().any(|(done, total)| done == total && *total > 0), "{progress:?}");

    let log_path = Paths { data_dir: data.clone() }.log(&id);
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.lines().count() >= 3 {
            break log;
        }
        assert!(Instant::now() < deadline, "container output: {log:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(log.contains("hello from image a"), "the image's files, its workdir: {log}");
    assert!(log.contains("GREETING=from-replica ORIGIN=image"), "image env under the replica's: {log}");
    assert!(log.contains("/app"), "{log}");

    let container = data.join("containers").join(&id);
    match rootfs {
        RootfsMode::Auto => {
            assert_eq!(is_mounted(&container.join("rootfs")).as_deref().map(|m| m.starts_with("overlay")), Some(true));
            assert!(container.join("upper/written").is_file(), "writes land in the container's own upper dir");
        }
        RootfsMode::Copy => {
            assert_eq!(is_mounted(&container.join("rootfs")), None);
            assert!(container.join("rootfs/written").is_file());
        }
    }
    let layers = agent.images().store().layers();
    for layer in entries(&layers) {
        assert!(!layers.join(layer).join("written").exists(), "the shared layers stay untouched");
    }

    // Removed from the document: the container goes, and its root filesystem with it.
    agent.offer_desired(&document(2, &pod, None)).unwrap();
    reconcile_until(&mut agent, "container removed", |agent, _| agent.runtime().state(&id).unwrap().is_none());
    assert_eq!(is_mounted(&container.join("rootfs")), None);
    assert!(!container.exists(), "{} left behind", container.display());
}

#[test]
fn overlay_root_filesystems_run_the_pulled_image_with_its_config() {
    containers_run_the_pulled_image(RootfsMode::Auto, "pull-overlay");
}

#[test]
fn copied_root_filesystems_run_the_pulled_image_with_its_config() {
    containers_run_the_pulled_image(RootfsMode::Copy, "pull-copy");
}

#[test]
fn a_tampered_blob_is_rejected_and_the_replica_keeps_its_old_version() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    let layout = build_images(dir.path());
    let good = layout.push(&registry, "a", "web");
    let next = layout.push(&registry, "b", "web");
    let (tampered_layer, _) = layer(&registry, "web", "b", 1);
    let proxy = Proxy::start(registry.addr, tampered_layer, Mischief::FlipByte);
    let next =
        image_ref(&next.reference.replace(&registry.addr.to_string(), &proxy.addr.to_string()), Sha256(next.digest.0));
    let data = dir.path().join("agent");
    let pod = format!("pull-tamper-{}", std::process::id());
    let id = format!("{pod}.main");
    let _cleanup = Containers { data: data.clone(), ids: vec![id.clone()] };
    let mut agent = agent(&data, RootfsMode::Auto);

    agent.offer_desired(&document(1, &pod, Some(&good))).unwrap();
    reconcile_until(&mut agent, "first version running", |agent, _| running_pid(agent, &id).is_some());
    let pid = running_pid(&mut agent, &id);

    agent.offer_desired(&document(2, &pod, Some(&next))).unwrap();
    let events = reconcile_until(&mut agent, "PullFailed", |_, events| {
        events.iter().any(|e| matches!(e, EventKind::PullFailed { .. }))
    });
    let reason = events
        .iter()
        .find_map(|e| match e {
            EventKind::PullFailed { image, reason } if image.0 == next.digest.0 => Some(reason.to_string()),
            _ => None,
        })
        .unwrap();
    assert!(reason.starts_with(&format!("layer {}: digest mismatch, got sha256:", tampered_layer.short())), "{reason}");
    assert!(proxy.stats.flips.load(Ordering::SeqCst) >= 1);

    assert_eq!(running_pid(&mut agent, &id), pid, "the old version keeps running");
    assert_eq!(agent.replica_statuses(now_ms())[0].phase, Phase::Running);
    let store = agent.images().store().clone();
    assert!(!store.blob(&tampered_layer).exists() && !store.partial(&tampered_layer).exists(), "nothing kept");
    assert!(!store.layer(&tampered_layer).exists(), "nothing unpacked");
    assert!(store.record(&Sha256(next.digest.0)).is_none(), "the image is not usable");
}
