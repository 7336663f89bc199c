//! `images/build-examples`, end to end: the three example images for both
//! platforms in one layout, reproducible, readable by skopeo, and working
//! when unpacked (amd64 run in a chroot, the arm64 service under qemu).
//!
//! Needs `hello-http` to be a workspace member (the script builds it with
//! cargo for both musl targets) and root (umoci unpack, chroot).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{require_root, run, run_json, s};
use flotilla_images::layout::OciLayout;
use flotilla_images::platform::Arch;

const TAGS: [&str; 4] = ["busybox:1.35", "hello-grpc:0.1", "hello-http:0.1", "sensor:0.1"];

/// Runs the script into `out` and returns its last stdout line.
fn build_examples(out: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build-examples");
    let output = Command::new(&script)
        .arg(out)
        .env("FLOTILLA_IMAGE", env!("CARGO_BIN_EXE_flotilla-image"))
        .output()
        .expect("run images/build-examples");
    assert!(output.status.success(), "build-examples failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout.lines().last().unwrap_or_default().to_owned()
}

#[test]
fn builds_all_examples_for_both_platforms_reproducibly_and_they_run() {
    require_root("unpacked images are run in a chroot");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("oci");

    let started = Instant::now();
    assert_eq!(build_examples(&out), out.display().to_string());
    let first_run = started.elapsed();
    let index = std::fs::read(out.join("index.json")).unwrap();
    let started = Instant::now();
    build_examples(&out);
    eprintln!("build-examples: {first_run:?}, again {:?}", started.elapsed());
    assert_eq!(std::fs::read(out.join("index.json")).unwrap(), index, "a second run changed the tags");

    let layout = OciLayout::open(&out).unwrap();
    assert_eq!(layout.tags().unwrap().keys().collect::<Vec<_>>(), TAGS);
    for tag in TAGS {
        let platforms: Vec<_> =
            layout.resolve(tag).unwrap().iter().map(|i| i.platform.architecture().clone()).collect();
        assert_eq!(platforms, [Arch::Amd64.to_oci(), Arch::Arm64.to_oci()], "{tag}");
        let arm64 =
            run_json("skopeo", &["inspect", "--override-arch", "arm64", &format!("oci:{}:{tag}", out.display())]);
        assert_eq!(arm64["Architecture"], "arm64", "{tag}");
    }

    let busybox = unpack(&out, "busybox:1.35", "amd64", dir.path());
    let echo = chroot(&busybox, &["/bin/sh", "-c", "echo $((6 * 7)) | wc -c"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&echo.stdout).trim(), "3", "{echo:?}");

    let sensor = unpack(&out, "sensor:0.1", "amd64", dir.path());
    let mut child =
        chroot(&sensor, &["/bin/sh", "/bin/sensor"]).env("INTERVAL", "1").stdout(Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    stop(&mut child);
    assert!(first.starts_with("{\"sensor\":") && first.contains("\"seq\":1"), "{first:?}");

    let hello = unpack(&out, "hello-http:0.1", "amd64", dir.path());
    let amd64 = chroot(&hello, &["/bin/hello-http"]);
    check_hello_http(amd64, "amd64");
    // The arm64 binary of the image, run by qemu-user (it is static).
    let hello_arm64 = unpack(&out, "hello-http:0.1", "arm64", dir.path());
    let mut arm64 = Command::new("qemu-aarch64-static");
    arm64.arg(hello_arm64.join("bin/hello-http"));
    check_hello_http(arm64, "arm64");

    // hello-grpc starts and says what it serves (the agent's gRPC probe is
    // checked against it in tests/tests/grpc_probe.rs).
    let grpc = unpack(&out, "hello-grpc:0.1", "amd64", dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child =
        chroot(&grpc, &["/bin/hello-grpc"]).env("PORT", port.to_string()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    stop(&mut child);
    assert_eq!(line.trim(), format!("hello-grpc 0.1.0 listening on 0.0.0.0:{port} health SERVING"));
}

/// Copies one platform of `tag` out with skopeo, unpacks it with umoci and
/// returns the rootfs.
fn unpack(layout: &Path, tag: &str, arch: &str, scratch: &Path) -> PathBuf {
    let name = format!("{}-{arch}", tag.replace(':', "-"));
    let single = scratch.join(format!("single-{name}"));
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--override-arch",
            arch,
            &format!("oci:{}:{tag}", layout.display()),
            &format!("oci:{}:image", single.display()),
        ],
    );
    let bundle = scratch.join(format!("bundle-{name}"));
    run("umoci", &["unpack", "--image", &format!("{}:image", single.display()), s(&bundle)]);
    bundle.join("rootfs")
}

fn chroot(rootfs: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("chroot");
    command.arg(rootfs).args(args);
    command
}

/// Starts hello-http on a free loopback port and checks `/healthz` and `/`.
fn check_hello_http(mut command: Command, arch: &str) {
    let mut child = command
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("HOSTNAME", "example-host")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address: Option<SocketAddr> = line.trim().rsplit_once(" listening on ").and_then(|(_, a)| a.parse().ok());
    let responses = address.map(|address| (get(address, "/healthz"), get(address, "/")));
    stop(&mut child);
    let (health, greeting) = responses.unwrap_or_else(|| panic!("{arch}: unexpected first line {line:?}"));
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"), "{arch}: {health}");
    assert!(greeting.contains("(hello-http 0.1.0)"), "{arch}: {greeting}");
}

fn get(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
