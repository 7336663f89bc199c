//! `flotilla-bench start`: time from a desired-state document received to the
//! container's process running, image already on disk (issue #6), side by
//! side in the same run with `runc run` on an equivalent bundle and with a
//! floor (`unshare --fork --pid --mount --uts --ipc chroot`, no cgroups).
//!
//! What is timed, per run (the variants run interleaved, in a rotating
//! order, so noise spreads over all of them):
//! - flotilla: decoding a real desired-state frame (one replica; the
//!   signature check is a dummy that accepts), mapping the replica to a
//!   [`ContainerConfig`], then `create` + `start` through a warm
//!   [`HelperRuntime`] (its helper process already running, as in the agent);
//! - runc: spawning `runc run --bundle <dir> <id>` on a bundle whose
//!   config.json is the agent's own (`bundle::spec` of the same replica);
//! - floor: spawning `unshare --fork --pid --mount --uts --ipc chroot
//!   <rootfs> <command>`.
//!
//! The end point is the same for all: libcontainer's `start` returns before
//! the container's init has exec'd the user process (it only signals the
//! init through its notify socket), so the clock stops when the container's
//! command (`/bin/sh -c 'echo <token> > /tmp/ready'`, busybox) has written
//! its per-run token into a FIFO in the rootfs and the benchmark has read
//! it. That is "the process is running and did its first thing". Exit codes
//! are checked afterwards, outside the timed section, and every run must
//! have written its own token and exited 0 (the `check` key), or the
//! benchmark fails.
//!
//! Read the floor as a lower bound, not as an equivalent: it sets up no
//! cgroups and mounts no /proc, /dev or /sys and does no pivot_root, no
//! seccomp filter and no capability drop, all of which the OCI spec (runc's
//! and the agent's) asks for (`floor_note` in the output). Both runtimes
//! read the host's mount table several times per container (libcgroups 0.7
//! parses `/proc/self/mountinfo` once per v1 controller), so their times
//! grow with it: `host_mounts` is its size during the run. The helper is the
//! `flotilla-agent` binary next to this one and logs at its default level
//! (info) to stderr, as in the agent; `RUST_LOG=warn` quiets it.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use firmware_proto::bounded::TextList;
use firmware_proto::pod::PodDocument;
use firmware_proto::{Bytes, Name, ReplicaSpec, Resources, Signature, User, samples};
use flotilla_agent::runtime::helper::HelperRuntime;
use flotilla_agent::runtime::{ContainerConfig, Runtime, Status, bundle};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_json::json;

/// Options of `flotilla-bench start`.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Timed runs of each variant (the issue asks for at least 20).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Untimed runs of each variant first (page cache, binaries, cgroups).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// The `flotilla-agent` binary whose `runtime-helper` runs the
    /// containers [default: next to this benchmark].
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// The reference runtime.
    #[arg(long, default_value = "runc")]
    pub runc: String,
}

/// How long one run may take before the benchmark gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);
/// The node the documents are addressed to.
const NODE: &str = "bench-node";
/// The dummy controller signature: the frame's last 64 bytes.
const DUMMY_SIGNATURE: [u8; 64] = [0x5a; 64];

/// The variants, in the order of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Flotilla,
    Runc,
    Crun,
    Floor,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Flotilla => "flotilla",
            Variant::Runc => "runc",
            Variant::Crun => "crun",
            Variant::Floor => "floor",
        }
    }
}

/// Timings of one flotilla run, split by phase.
#[derive(Debug, Default, Clone, Copy)]
struct Phases {
    /// Frame decoded, signature checked, replica mapped to a config.
    decode: Duration,
    /// `create` returned (bundle written, container created).
    create: Duration,
    /// `start` returned its pid.
    start: Duration,
}

struct Bench {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    fifo: File,
    runtime: HelperRuntime,
    runc: String,
    crun: Option<String>,
    node: firmware_proto::NodeId,
    /// Times the agent reported a container stopped with an unknown exit
    /// before it reaped it (see `run_flotilla`).
    unknown_exit_races: usize,
}

/// Runs the benchmark and prints one JSON line.
pub fn run(args: StartArgs) -> anyhow::Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "flotilla-bench start must run as root (namespaces, cgroups, runc); try sudo"
    );
    ensure!(args.runs >= 1, "--runs must be at least 1");
    ensure!(Path::new("/bin/busybox").is_file(), "/bin/busybox missing: run scripts/setup (apt busybox-static)");
    let runc = which(&args.runc).with_context(|| format!("{} not found: run scripts/setup (apt runc)", args.runc))?;
    let unshare = which("unshare").context("unshare (util-linux) not found")?;
    which("chroot").context("chroot (coreutils) not found")?;
    let agent = match args.agent_bin {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("flotilla-agent"),
    };
    ensure!(
        agent.is_file(),
        "{} missing: build it with `cargo build --release -p flotilla-agent` (same target dir) or pass --agent-bin",
        agent.display()
    );

    let dir = tempfile::Builder::new().prefix("flotilla-bench-start-").tempdir()?;
    let rootfs = busybox_rootfs(dir.path())?;
    let fifo_path = rootfs.join("tmp/ready");
    nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o666))
        .with_context(|| format!("mkfifo {}", fifo_path.display()))?;
    // Read and write: opening does not block, and reads never see EOF
    // between two containers (this process is a writer too).
    let fifo = File::options().read(true).write(true).open(&fifo_path)?;
    let mut runtime = HelperRuntime::new(&agent, &dir.path().join("state"), &dir.path().join("bundles"));
    // Start the helper before timing, as the running agent has it.
    runtime.state("warm-up").context("starting the runtime helper")?;
    let mut bench = Bench {
        dir,
        rootfs,
        fifo,
        runtime,
        runc: runc.display().to_string(),
        crun: None,
        node: Name::new(NODE)?,
        unknown_exit_races: 0,
    };
    eprintln!(
        "start: {} runs (+{} warm-up) of flotilla ({}), {}, floor ({}); rootfs {}",
        args.runs,
        args.warmup,
        agent.display(),
        bench.runc,
        unshare.display(),
        bench.rootfs.display()
    );

    // crun: included only if installed and it can run the bundle here.
    let crun_note = match which("crun") {
        None => "crun is not installed; Debian 12's crun 1.8 refuses this host's hybrid cgroup v1/v2 layout".to_owned(),
        Some(crun) => {
            bench.crun = Some(crun.display().to_string());
            match bench.run_once(Variant::Crun, "crun-probe") {
                Ok(_) => format!("{} ran the bundle and is measured", crun.display()),
                Err(e) => {
                    bench.crun = None;
                    format!("{} failed on this host, not measured: {e:#}", crun.display())
                }
            }
        }
    };
    eprintln!("start: {crun_note}");

    let mut variants = vec![Variant::Flotilla, Variant::Runc, Variant::Floor];
    if bench.crun.is_some() {
        variants.insert(2, Variant::Crun);
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut phases: Vec<Phases> = Vec::new();
    for i in 0..args.warmup + args.runs {
        let timed = i >= args.warmup;
        for k in 0..variants.len() {
            // Rotate the order so no variant always runs right after another.
            let index = (k + i) % variants.len();
            let variant = variants[index];
            let (elapsed, split) = bench
                .run_once(variant, &format!("{}-{}-{i}", variant.name(), std::process::id()))
                .with_context(|| format!("{} run {i}", variant.name()))?;
            if timed {
                times[index].push(ms(elapsed));
                if let Some(split) = split {
                    phases.push(split);
                }
            }
        }
        if timed {
            let last: Vec<String> =
                variants.iter().zip(&times).map(|(v, t)| format!("{} {:.2}", v.name(), t[t.len() - 1])).collect();
            eprintln!("start: run {}/{}: {} ms", i + 1 - args.warmup, args.runs, last.join(", "));
        }
    }

    // Diagnostic, untimed above: what writing one bundle (config.json, not
    // fsynced) costs on this disk; it is part of flotilla's `create`.
    let bundle_write = bench.bundle_write_ms(args.runs)?;

    let stat = |variant: Variant, p: f64| -> Option<f64> {
        let index = variants.iter().position(|v| *v == variant)?;
        Some(round3(percentile(&times[index], p)))
    };
    let phase = |f: fn(&Phases) -> Duration| {
        let values: Vec<f64> = phases.iter().map(|p| ms(f(p))).collect();
        round3(percentile(&values, 0.5))
    };
    let flotilla = stat(Variant::Flotilla, 0.5).expect("measured");
    let runc = stat(Variant::Runc, 0.5).expect("measured");
    let floor = stat(Variant::Floor, 0.5).expect("measured");
    println!(
        "{}",
        json!({
            "runs": args.runs,
            "flotilla_ms_median": flotilla,
            "runc_ms_median": runc,
            "floor_ms_median": floor,
            "crun_ms_median": stat(Variant::Crun, 0.5),
            "flotilla_ms_p90": stat(Variant::Flotilla, 0.9),
            "runc_ms_p90": stat(Variant::Runc, 0.9),
            "floor_ms_p90": stat(Variant::Floor, 0.9),
            "crun_ms_p90": stat(Variant::Crun, 0.9),
            "flotilla_ms_min": stat(Variant::Flotilla, 0.0),
            "runc_ms_min": stat(Variant::Runc, 0.0),
            "floor_ms_min": stat(Variant::Floor, 0.0),
            "flotilla_decode_ms_median": phase(|p| p.decode),
            "flotilla_create_ms_median": phase(|p| p.create),
            "flotilla_start_ms_median": phase(|p| p.start),
            "bundle_write_ms_median": round3(bundle_write),
            "flotilla_vs_runc": round3(flotilla / runc),
            "flotilla_vs_floor": round3(flotilla / floor),
            "faster_than_runc": flotilla < runc,
            "within_2x_floor": flotilla <= 2.0 * floor,
            "agent_unknown_exit_races": bench.unknown_exit_races,
            "crun_note": crun_note,
            "floor_note": "the floor is unshare --fork --pid --mount --uts --ipc + chroot: no cgroups (flotilla and runc \
                           create, join and limit one per v1 hierarchy), no /proc, /dev, /dev/pts, /dev/shm, \
                           /dev/mqueue, /sys or /sys/fs/cgroup mounts, no device nodes, no pivot_root, no masked or \
                           read-only paths, no seccomp filter, no capability drop",
            "host_mounts": host_mounts(),
            "measures": "ms from the desired frame received (flotilla: decode + dummy signature check + mapping + \
                         helper create + start; runc/crun/floor: spawning their command) until the container's \
                         command, /bin/sh -c 'echo <token> > /tmp/ready' in a busybox rootfs, wrote its per-run token \
                         into a FIFO the benchmark reads; libcontainer's start returns before the exec, so the FIFO is \
                         the common end point. flotilla_{decode,create,start}_ms are the medians of its phases, each \
                         from the same origin; bundle_write_ms is writing one agent config.json (not fsynced, part \
                         of create), measured separately",
            "check": format!(
                "passed: every run of every variant ({} each incl. {} warm-up) wrote its own token and exited 0",
                args.runs + args.warmup,
                args.warmup
            ),
        })
    );
    Ok(())
}

impl Bench {
    /// Median time of `bundle::write` (the agent's config.json, written
    /// atomically, not fsynced) in the benchmark's directory.
    fn bundle_write_ms(&self, runs: usize) -> anyhow::Result<f64> {
        let document = desired_document(&self.node, "bundle-write", &["/bin/true".to_owned()])?;
        let config = container_config(&document, &self.rootfs, self.dir.path())?;
        let target = self.dir.path().join("bundle-write");
        let mut times = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            bundle::write(&target, &config)?;
            times.push(ms(t0.elapsed()));
            std::fs::remove_dir_all(&target)?;
        }
        Ok(percentile(&times, 0.5))
    }

    /// One run of `variant`; returns the time to the marker (and flotilla's
    /// phases). Cleans up after itself; fails unless the container wrote
    /// `token` and exited 0.
    fn run_once(&mut self, variant: Variant, token: &str) -> anyhow::Result<(Duration, Option<Phases>)> {
        let command = vec!["/bin/sh".to_owned(), "-c".to_owned(), format!("echo {token} > /tmp/ready")];
        match variant {
            Variant::Flotilla => self.run_flotilla(token, &command).map(|(t, p)| (t, Some(p))),
            Variant::Runc => {
                let runtime = self.runc.clone();
                self.run_oci_cli(variant, &runtime, token, &command).map(|t| (t, None))
            }
            Variant::Crun => {
                let runtime = self.crun.clone().context("crun not found")?;
                self.run_oci_cli(variant, &runtime, token, &command).map(|t| (t, None))
            }
            Variant::Floor => self.run_floor(token, &command).map(|t| (t, None)),
        }
    }

    fn run_flotilla(&mut self, token: &str, command: &[String]) -> anyhow::Result<(Duration, Phases)> {
        // What the controller sends, encoded before the clock starts.
        let frame = firmware_proto::encode_signed_to_vec(&desired_document(&self.node, token, command)?, |_| {
            Bytes(DUMMY_SIGNATURE)
        })?;

        let t0 = Instant::now();
        let decoded = firmware_proto::decode_signed::<PodDocument>(&frame).map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(verify(decoded.authenticated, &decoded.frame.1), "signature refused");
        let document = decoded.frame.0;
        ensure!(document.node_id == self.node, "document for another node");
        let config = container_config(&document, &self.rootfs, self.dir.path())?;
        let decode = t0.elapsed();
        self.runtime.create(&config)?;
        let create = t0.elapsed();
        let pid = self.runtime.start(&config.id)?;
        let start = t0.elapsed();
        let id = config.id.clone();
        let runtime = &mut self.runtime;
        let result =
            wait_marker(&self.fifo, token, t0, || Ok(runtime.state(&id)?.is_some_and(|s| s.status == Status::Stopped)));

        // Outside the timed section: its exit, then delete.
        let deadline = Instant::now() + RUN_TIMEOUT;
        let mut unknown_exit_seen = false;
        let exit = loop {
            let state = self.runtime.state(&id)?.context("container vanished")?;
            if state.status == Status::Stopped {
                match state.exit {
                    Some(exit) if exit.code.is_some() => break exit,
                    // The agent's `state` reaps before it loads the
                    // container, so a process that turns zombie in between
                    // is reported stopped with an unknown exit; the next
                    // call reaps it. Counted (`agent_unknown_exit_races`).
                    _ if !unknown_exit_seen => {
                        unknown_exit_seen = true;
                        self.unknown_exit_races += 1;
                    }
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                let _ = self.runtime.delete(&id, true);
                bail!("container {id} (pid {pid}): no known exit after {RUN_TIMEOUT:?}, last state {state:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        self.runtime.delete(&id, false)?;
        let log = std::fs::read_to_string(&config.log_path).unwrap_or_default();
        let elapsed = result.with_context(|| format!("container log: {log:?}"))?;
        ensure!(exit.code == Some(0), "container {id} exited {exit:?}; log: {log:?}");
        Ok((elapsed, Phases { decode, create, start }))
    }

    fn run_oci_cli(
        &mut self,
        variant: Variant,
        runtime: &str,
        token: &str,
        command: &[String],
    ) -> anyhow::Result<Duration> {
        // The agent's own config.json for the same replica (bundle prepared
        // before the clock: `runc run` gets it ready-made).
        let frame_doc = desired_document(&self.node, token, command)?;
        let config = container_config(&frame_doc, &self.rootfs, self.dir.path())?;
        let bundle_dir = self.dir.path().join("oci-bundles").join(&config.id);
        std::fs::create_dir_all(&bundle_dir)?;
        let mut spec = bundle::spec(&config)?;
        // runc refuses a symlinked root ("invalid rootfs: not an absolute
        // path, or a symlink"), and the agent's image store path is one here;
        // libcontainer resolves it itself. Same directory either way.
        spec["root"]["path"] = json!(std::fs::canonicalize(&config.rootfs)?);
        std::fs::write(bundle_dir.join("config.json"), serde_json::to_vec_pretty(&spec)?)?;
        let state_root = self.dir.path().join(format!("{}-state", variant.name()));
        let log_path = bundle_dir.join("stderr.log");
        let stderr = File::create(&log_path)?;

        let t0 = Instant::now();
        let mut child = Command::new(runtime)
            .arg("--root")
            .arg(&state_root)
            .args(["run", "--bundle"])
            .arg(&bundle_dir)
            .arg(&config.id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {runtime}"))?;
        let result = wait_marker(&self.fifo, token, t0, || Ok(child.try_wait()?.is_some()));
        let status = wait_child(&mut child)?;
        let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&bundle_dir);
        let elapsed = result.with_context(|| format!("{runtime} stderr: {stderr:?}"))?;
        ensure!(status.success(), "{runtime} run exited {status}; stderr: {stderr:?}");
        Ok(elapsed)
    }

    fn run_floor(&mut self, token: &str, command: &[String]) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let mut child = Command::new("unshare")
            .args(["--fork", "--pid", "--mount", "--uts", "--ipc", "chroot"])
            .arg(&self.rootfs)
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting unshare")?;
        let result = wait_marker(&self.fifo, token, t0, || Ok(child.try_wait()?.is_some()));
        let status = wait_child(&mut child)?;
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let elapsed = result.with_context(|| format!("unshare stderr: {stderr:?}"))?;
        ensure!(status.success(), "unshare exited {status}; stderr: {stderr:?}");
        Ok(elapsed)
    }
}

/// The dummy signature check: accepts the dummy signer's signature.
fn verify(_authenticated: &[u8], signature: &Signature) -> bool {
    signature.0 == DUMMY_SIGNATURE
}

/// A desired document for one pod of one container running `command`, with
/// the sample replica's limits (memory, cpu, pids) and no volume, device or
/// probe.
fn desired_document(node: &firmware_proto::NodeId, id: &str, command: &[String]) -> anyhow::Result<PodDocument> {
    let sample = samples::replica(0);
    let replica = ReplicaSpec {
        id: Name::new(id)?,
        command: TextList::from_strs(command.iter().map(String::as_str))?,
        args: TextList::new(),
        env: TextList::from_strs(["LINE=3", "RUST_LOG=info"])?,
        user: Some(User { uid: 0, gid: 0 }),
        resources: Resources {
            cpu_request_millis: 100,
            memory_request_bytes: 32 << 20,
            cpu_limit_millis: Some(500),
            memory_limit_bytes: Some(64 << 20),
            pids_limit: Some(64),
        },
        extended: Default::default(),
        devices: Default::default(),
        ports: Default::default(),
        volumes: Default::default(),
        readiness_probe: None,
        read_only_rootfs: false,
        ..sample
    };
    let pods = vec![firmware_proto::pod::PodSpec::from(&replica)];
    Ok(PodDocument {
        node_id: node.clone(),
        generation: 1,
        pods: pods.try_into()?,
        config: Default::default(),
        claims: Default::default(),
    })
}

/// The document's one container -> container config with the agent's own
/// mapping (`flotilla_agent::workload`); `rootfs` is the image, already
/// unpacked on disk, linked where the agent's image store keeps it.
fn container_config(document: &PodDocument, rootfs: &Path, dir: &Path) -> anyhow::Result<ContainerConfig> {
    let pod = document.pods.first().context("no pod in the document")?;
    let unit = flotilla_agent::pod::Unit::all(pod).pop().context("no container in the pod")?;
    let paths = flotilla_agent::workload::Paths { data_dir: dir.to_owned() };
    let store = paths.image_rootfs(&unit.container.image.digest.0);
    if !store.exists() {
        std::fs::create_dir_all(store.parent().expect("rootfs has a parent"))?;
        std::os::unix::fs::symlink(rootfs, &store)?;
    }
    flotilla_agent::workload::container_config(&paths, &unit, document, &Default::default())
        .map_err(|e| anyhow::anyhow!("container {}: {e}", unit.id))
}

/// Waits until the container writes `token` into the FIFO; returns the time
/// since `t0`. `exited` says whether the container ended (checked only when
/// nothing arrived for a while), so a failed start is reported, not waited on.
fn wait_marker(
    fifo: &File,
    token: &str,
    t0: Instant,
    mut exited: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let expected = format!("{token}\n");
    let mut got = Vec::new();
    let mut ended = false;
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(if ended { 0u16 } else { 50u16 }))?;
        if ready > 0 {
            let mut buf = [0u8; 256];
            let n = (&*fifo).read(&mut buf)?;
            got.extend_from_slice(&buf[..n]);
            if got.ends_with(b"\n") {
                let elapsed = t0.elapsed();
                ensure!(
                    got == expected.as_bytes(),
                    "marker {:?}, expected {expected:?}",
                    String::from_utf8_lossy(&got)
                );
                return Ok(elapsed);
            }
            continue;
        }
        if ended {
            bail!("the container ended without writing its marker");
        }
        ended = exited()?;
        ensure!(t0.elapsed() < RUN_TIMEOUT, "no marker after {RUN_TIMEOUT:?}");
    }
}

fn wait_child(child: &mut Child) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("still running after {RUN_TIMEOUT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A busybox rootfs (the image, already on disk): the static binary and the
/// applets the command uses, as in the agent's container tests.
fn busybox_rootfs(dir: &Path) -> anyhow::Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
    for applet in ["sh", "echo", "true", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    Ok(rootfs)
}

/// Entries in this process's mount table (`/proc/self/mountinfo`), which
/// the runtimes parse several times per container start.
fn host_mounts() -> Option<usize> {
    std::fs::read_to_string("/proc/self/mountinfo").ok().map(|text| text.lines().count())
}

fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| program.into());
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

/// Median (interpolated for an even count) or nearest-rank percentile.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    if p == 0.5 {
        let mid = sorted.len() / 2;
        return if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] };
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}
