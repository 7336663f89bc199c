//! Small synthetic inputs and tool runners shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flotilla_images::build::{BuiltImage, ExtraFile, ImageBuilder, LayerSource, RunConfig};
use flotilla_images::layout::OciLayout;
use flotilla_images::platform::Arch;

/// The inputs of a two-architecture test image.
pub struct Inputs {
    /// An x86_64 static binary: busybox-static (installed by scripts/setup).
    pub amd64_binary: PathBuf,
    /// A synthetic aarch64 ELF (a valid header and a payload; never run).
    pub arm64_binary: PathBuf,
    /// A script added to both architectures.
    pub script: PathBuf,
}

/// Where the binary goes in the test image (busybox finds its applets by
/// the name it runs as, so it keeps its own).
pub const BINARY_PATH: &str = "/bin/busybox";
/// Where the script goes in the test image.
pub const SCRIPT_PATH: &str = "/etc/app/start.sh";

/// Writes the inputs into `dir`.
pub fn inputs(dir: &Path) -> Inputs {
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.is_file(), "/bin/busybox is missing: install busybox-static (scripts/setup does)");
    let amd64_binary = dir.join("app-amd64");
    fs::copy(busybox, &amd64_binary).unwrap();

    let arm64_binary = dir.join("app-arm64");
    fs::write(&arm64_binary, synthetic_elf(183, b"arm64 payload")).unwrap();

    let script = dir.join("start.sh");
    fs::write(&script, "#!/bin/busybox sh\necho started\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o750)).unwrap();
    Inputs { amd64_binary, arm64_binary, script }
}

/// A 64-bit little-endian ELF header for `machine` (no program headers:
/// static), followed by `payload`.
pub fn synthetic_elf(machine: u16, payload: &[u8]) -> Vec<u8> {
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[6] = 1; // ELF version
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&machine.to_le_bytes());
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // header size
    elf.extend_from_slice(payload);
    elf
}

/// The run configuration of the test image.
pub fn run_config() -> RunConfig {
    RunConfig {
        entrypoint: vec![BINARY_PATH.into(), "sh".into()],
        cmd: vec!["-c".into(), "echo hello".into()],
        env: vec!["GREETING=hello".into()],
        working_dir: Some("/tmp".into()),
        exposed_ports: vec!["8080/tcp".into()],
        labels: [("org.example.purpose".to_owned(), "test".to_owned())].into(),
        user: None,
        stop_signal: None,
    }
}

/// A builder for the two-architecture test image under `tag`.
pub fn two_arch_builder(inputs: &Inputs, tag: &str) -> ImageBuilder {
    let binary = |source: &PathBuf| LayerSource::Binary { source: source.clone(), image_path: BINARY_PATH.into() };
    ImageBuilder::new(tag)
        .with_platform(Arch::Amd64, binary(&inputs.amd64_binary))
        .with_platform(Arch::Arm64, binary(&inputs.arm64_binary))
        .with_file(ExtraFile { image_path: SCRIPT_PATH.into(), source: inputs.script.clone(), mode: None })
        .with_run_config(run_config())
}

/// Builds the two-architecture test image into the layout at `layout_dir`.
pub fn build_two_arch(inputs: &Inputs, layout_dir: &Path, tag: &str) -> BuiltImage {
    let layout = OciLayout::open_or_create(layout_dir).unwrap();
    two_arch_builder(inputs, tag).build_into(&layout).unwrap()
}

/// Runs an external tool; a missing tool or a failure fails the test with
/// the command, its status and its output.
pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error} (scripts/setup installs the tools tests need)"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed with {}:\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a tool and parses its stdout as JSON.
pub fn run_json(program: &str, args: &[&str]) -> serde_json::Value {
    let output = run(program, args);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!("{program} {args:?} printed no JSON ({error}): {}", String::from_utf8_lossy(&output.stdout))
    })
}

/// Fails unless the test runs as root (umoci unpack and chroot need it;
/// CI runs as root).
pub fn require_root(why: &str) {
    let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    assert_eq!(uid, 0, "this test must run as root: {why}");
}

/// A path as &str (test paths are UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 test path")
}
