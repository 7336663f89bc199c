//! `flotilla-bench footprint`: the agent's size on a device (issue #6).
//!
//! - `agent_binary_bytes`: the stripped static aarch64 agent, as shipped
//!   (build it first with `scripts/build-agent`; see `--aarch64-binary`).
//! - `agent_rss_bytes`: resident memory of the running agent on this
//!   machine (x86_64 build next to this benchmark) while it keeps 5 real
//!   busybox containers running from a signed desired document, measured
//!   after they all run and the agent has idled for `--idle-s` seconds.
//!   It is the sum of the agent process and its runtime helper (both are
//!   the agent's cost), read from /proc/<pid>/status VmRSS; each part is
//!   also printed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use ed25519_dalek::{Signer, SigningKey};
use firmware_proto::{Bytes, Name, RestartPolicy, TextList, samples};
use serde_json::json;

/// Options of `flotilla-bench footprint`.
#[derive(Debug, clap::Args)]
pub struct FootprintArgs {
    /// The shipped aarch64 agent [default: the `agent` profile build,
    /// $CARGO_TARGET_DIR (or target)/aarch64-unknown-linux-musl/agent/flotilla-agent].
    #[arg(long)]
    pub aarch64_binary: Option<PathBuf>,
    /// The x86_64 agent whose memory is measured [default: the one next to
    /// this benchmark]. `target/agent/flotilla-agent` (`cargo build --profile
    /// agent -p flotilla-agent`) is the shipped build for this machine.
    #[arg(long)]
    pub agent_binary: Option<PathBuf>,
    /// Containers the agent keeps running while measured.
    #[arg(long, default_value_t = 5)]
    pub replicas: usize,
    /// Seconds of idling before reading RSS.
    #[arg(long, default_value_t = 5)]
    pub idle_s: u64,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
    Some(kib * 1024)
}

/// Proportional set size: shared pages (the binary both processes map)
/// counted once across them.
fn pss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kib: u64 =
        text.lines().find_map(|l| l.strip_prefix("Pss:")).and_then(|v| v.split_whitespace().next()?.parse().ok())?;
    Some(kib * 1024)
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Where `cargo build --profile agent --target aarch64-unknown-linux-musl`
/// puts the agent, from the workspace root.
fn shipped_agent_path() -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target_dir.join("aarch64-unknown-linux-musl/agent/flotilla-agent")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the benchmark.
pub fn run(args: FootprintArgs) -> anyhow::Result<()> {
    ensure!(nix::unistd::geteuid().is_root(), "footprint runs real containers: run it as root");
    ensure!(Path::new("/bin/busybox").is_file(), "/bin/busybox missing: run scripts/setup (apt busybox-static)");
    // Only the `agent` profile is what ships (fat LTO, abort on panic); a
    // release build (no LTO, unwind tables) is about twice as big and would
    // misreport issue #6's figure.
    let aarch64 = args.aarch64_binary.clone().unwrap_or_else(shipped_agent_path);
    let agent_binary_bytes = std::fs::metadata(&aarch64).ok().map(|m| m.len());
    if agent_binary_bytes.is_none() {
        eprintln!(
            "footprint: no aarch64 agent at {}; build it with `cargo build --profile agent -p flotilla-agent \
             --target aarch64-unknown-linux-musl` (with LIBSECCOMP_* from scripts/build-libseccomp)",
            aarch64.display()
        );
    }

    let agent = match &args.agent_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("flotilla-agent"),
    };
    ensure!(agent.is_file(), "{} not found: build the agent next to this benchmark", agent.display());
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("agent");
    let digest = [0x77u8; 32];
    let rootfs = data.join("images").join(hex(&digest)).join("rootfs");
    for sub in ["bin", "proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    let signing = SigningKey::from_bytes(&[11; 32]);
    let key_file = dir.path().join("controller.pub");
    std::fs::write(&key_file, hex(signing.verifying_key().as_bytes()))?;
    let mut document = samples::desired(args.replicas);
    document.node_id = Name::new("footprint").expect("valid");
    document.generation = 1;
    for (i, replica) in document.replicas.iter_mut().enumerate() {
        replica.id = Name::new(&format!("footprint-{}-{i}", std::process::id())).expect("valid");
        replica.image.digest = Bytes(digest);
        replica.command = TextList::from_strs(["/bin/sleep"]).expect("fits");
        replica.args = TextList::from_strs(["100000"]).expect("fits");
        replica.user = None;
        replica.devices.clear();
        replica.volumes.clear();
        replica.readiness_probe = None;
        replica.read_only_rootfs = false;
        replica.restart_policy = RestartPolicy::Always;
    }
    let frame =
        firmware_proto::encode_signed_to_vec(&document.as_state(), |bytes| Bytes(signing.sign(bytes).to_bytes()))
            .map_err(|e| anyhow::anyhow!("encoding the desired document: {e:?}"))?;
    let desired_file = dir.path().join("desired.bin");
    std::fs::write(&desired_file, frame)?;

    let child = Command::new(&agent)
        .args(["run", "--node-id", "footprint", "--data-dir"])
        .arg(&data)
        .arg("--controller-key")
        .arg(&key_file)
        .arg("--desired-file")
        .arg(&desired_file)
        .arg("--status-file")
        .arg(dir.path().join("status.json"))
        .env("RUST_LOG", "warn,libcgroups=error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", agent.display()))?;
    let child = Killed(child);
    let pid = child.0.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(dir.path().join("status.json")).unwrap_or_default();
        let running = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|s| s["replicas"].as_array().map(|r| r.iter().filter(|r| r["phase"] == "Running").count()))
            .unwrap_or(0);
        if running == args.replicas {
            break;
        }
        ensure!(Instant::now() < deadline, "replicas not running after 60 s: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(args.idle_s));
    let agent_rss = rss_bytes(pid).context("reading the agent's RSS")?;
    let helpers: Vec<u32> = children_of(pid);
    let helper_rss: u64 = helpers.iter().filter_map(|p| rss_bytes(*p)).sum();
    let pss: u64 = std::iter::once(pid).chain(helpers.iter().copied()).filter_map(pss_bytes).sum();
    let runc_binary_bytes = std::fs::metadata("/usr/sbin/runc").ok().map(|m| m.len());
    println!(
        "{}",
        json!({
            "agent_binary_bytes": agent_binary_bytes,
            "agent_binary": agent_binary_bytes.map(|_| aarch64.display().to_string()),
            "agent_rss_bytes": agent_rss + helper_rss,
            "agent_process_rss_bytes": agent_rss,
            "runtime_helper_rss_bytes": helper_rss,
            "agent_pss_bytes": pss,
            "replicas": args.replicas,
            "rss_agent": agent.display().to_string(),
            "rss_measured": "agent_rss_bytes = VmRSS of the agent + its runtime helper after idling (shared binary pages counted twice); agent_pss_bytes counts them once",
            "reference_runc_binary_bytes": runc_binary_bytes,
        })
    );
    // Stop the containers this run started.
    drop(child);
    let mut runtime =
        flotilla_agent::runtime::helper::HelperRuntime::new(&agent, &data.join("runtime"), &data.join("bundles"));
    for replica in &document.replicas {
        use flotilla_agent::runtime::Runtime;
        let _ = runtime.delete(replica.id.as_str(), true);
    }
    Ok(())
}
