//! The builder's layouts, read by the standard tools: skopeo (both
//! platforms of an index) and umoci (unpacking to a runtime bundle).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{BINARY_PATH, SCRIPT_PATH, build_two_arch, inputs, require_root, run, run_json, s};
use flotilla_images::build::{ImageBuilder, LayerSource};
use flotilla_images::layout::OciLayout;
use flotilla_images::platform::Arch;
use serde_json::Value;

#[test]
fn skopeo_reads_the_index_and_each_platform_built_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs(dir.path());
    let layout_dir = dir.path().join("oci");
    let binary = |arch: &str, path: &Path| format!("{arch}={}", path.display());
    let script = format!("{SCRIPT_PATH}={}", inputs.script.display());
    let output = run(
        env!("CARGO_BIN_EXE_flotilla-image"),
        &[
            "--tag",
            "app:1",
            "--output",
            s(&layout_dir),
            "--binary",
            &binary("amd64", &inputs.amd64_binary),
            "--binary",
            &binary("arm64", &inputs.arm64_binary),
            "--path",
            BINARY_PATH,
            "--file",
            &script,
            "--env",
            "GREETING=hello",
            "--port",
            "8080",
            "--label",
            "org.example.purpose=test",
        ],
    );
    let printed = String::from_utf8(output.stdout).unwrap();

    // What the layout says, through the library.
    let layout = OciLayout::open(&layout_dir).unwrap();
    let index_digest = layout.tag("app:1").unwrap().digest().to_string();
    let amd64 = layout.resolve_platform("app:1", &Arch::Amd64.to_oci_platform()).unwrap();
    let arm64 = layout.resolve_platform("app:1", &Arch::Arm64.to_oci_platform()).unwrap();
    for digest in [&index_digest, &amd64.descriptor.digest().to_string(), &arm64.descriptor.digest().to_string()] {
        assert!(printed.contains(digest.as_str()), "the CLI did not print {digest}:\n{printed}");
    }

    let reference = format!("oci:{}:app:1", layout_dir.display());
    let raw = run_json("skopeo", &["inspect", "--raw", &reference]);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let listed: Vec<(String, String)> = raw["manifests"]
        .as_array()
        .expect("manifests array")
        .iter()
        .map(|m| (m["platform"]["architecture"].as_str().unwrap().to_owned(), m["digest"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        listed,
        [
            ("amd64".to_owned(), amd64.descriptor.digest().to_string()),
            ("arm64".to_owned(), arm64.descriptor.digest().to_string()),
        ]
    );

    for (arch, image) in [("amd64", &amd64), ("arm64", &arm64)] {
        let inspected = run_json("skopeo", &["inspect", "--override-arch", arch, &reference]);
        assert_eq!(inspected["Architecture"], arch);
        assert_eq!(inspected["Os"], "linux");
        assert_eq!(inspected["Layers"], serde_json::json!([image.manifest.layers()[0].digest().to_string()]));
        assert_eq!(inspected["Labels"]["org.example.purpose"], "test");
        let env = inspected["Env"].as_array().unwrap();
        assert!(env.contains(&Value::from("GREETING=hello")), "{env:?}");
    }
    // Without --override-arch skopeo picks the host's platform (amd64 here).
    let host = run_json("skopeo", &["inspect", &reference]);
    assert_eq!(host["Architecture"], "amd64");
}

#[test]
fn umoci_unpacks_each_platform_with_binary_and_entrypoint() {
    require_root("umoci unpack keeps file owners only as root");
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs(dir.path());
    let layout_dir = dir.path().join("oci");
    let built = build_two_arch(&inputs, &layout_dir, "app:1");

    // umoci cannot choose a platform from an index (a multi-arch tag is
    // "ambiguous" to it), so skopeo copies each platform's manifest out
    // unchanged and umoci unpacks that.
    for (arch, binary) in [(Arch::Amd64, &inputs.amd64_binary), (Arch::Arm64, &inputs.arm64_binary)] {
        let name = arch.oci_name();
        let single = dir.path().join(format!("single-{name}"));
        run(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--override-arch",
                name,
                &format!("oci:{}:app:1", layout_dir.display()),
                &format!("oci:{}:app", single.display()),
            ],
        );
        let copied = OciLayout::open(&single).unwrap().tag("app").unwrap();
        let ours = built.platforms.iter().find(|p| p.arch == arch).unwrap();
        assert_eq!(copied.digest(), ours.manifest.digest(), "skopeo changed the {name} manifest");

        let bundle = dir.path().join(format!("bundle-{name}"));
        run("umoci", &["unpack", "--image", &format!("{}:app", single.display()), s(&bundle)]);
        check_bundle(&bundle, binary);
    }
}

#[test]
fn umoci_unpacks_a_single_platform_tag_directly_and_it_runs() {
    require_root("umoci unpack and chroot need root");
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs(dir.path());
    let layout_dir = dir.path().join("oci");
    // Two tags in one layout: umoci must pick the right one.
    build_two_arch(&inputs, &layout_dir, "app:1");
    let layout = OciLayout::open(&layout_dir).unwrap();
    ImageBuilder::new("app:amd64")
        .with_platform(
            Arch::Amd64,
            LayerSource::Binary { source: inputs.amd64_binary.clone(), image_path: BINARY_PATH.into() },
        )
        .with_run_config(common::run_config())
        .build_into(&layout)
        .unwrap();

    let bundle = dir.path().join("bundle");
    run("umoci", &["unpack", "--image", &format!("{}:app:amd64", layout_dir.display()), s(&bundle)]);
    let config = read_json(&bundle.join("config.json"));
    assert_eq!(config["process"]["args"], serde_json::json!([BINARY_PATH, "sh", "-c", "echo hello"]));

    // The unpacked binary is busybox: run the image's own command in it.
    let rootfs = bundle.join("rootfs");
    let output = Command::new("chroot")
        .arg(&rootfs)
        .args([BINARY_PATH, "sh", "-c", "echo hello from the image"])
        .output()
        .expect("run chroot");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello from the image\n");
}

/// Checks an unpacked bundle: the binary byte for byte and executable, the
/// script with its mode, and the image config carried into config.json.
fn check_bundle(bundle: &Path, binary: &Path) {
    let rootfs = bundle.join("rootfs");
    let unpacked = rootfs.join(BINARY_PATH.trim_start_matches('/'));
    assert_eq!(fs::read(&unpacked).unwrap(), fs::read(binary).unwrap(), "{}", unpacked.display());
    assert_eq!(fs::metadata(&unpacked).unwrap().permissions().mode() & 0o7777, 0o755);
    let script = rootfs.join(SCRIPT_PATH.trim_start_matches('/'));
    assert_eq!(fs::metadata(&script).unwrap().permissions().mode() & 0o7777, 0o750);

    let config = read_json(&bundle.join("config.json"));
    let process = &config["process"];
    assert_eq!(process["args"], serde_json::json!([BINARY_PATH, "sh", "-c", "echo hello"]));
    assert_eq!(process["cwd"], "/tmp");
    let env = process["env"].as_array().unwrap();
    assert!(env.contains(&Value::from("GREETING=hello")), "{env:?}");
    assert!(env.iter().any(|v| v.as_str().is_some_and(|v| v.starts_with("PATH="))), "{env:?}");
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}
