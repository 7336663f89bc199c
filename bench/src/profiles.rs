//! `flotilla-bench profiles`: the largest desired document of each profile
//! and what it costs a device: bytes, decode time, and (Linux profile) the
//! agent's whole apply (verify, decode, persist, config objects, the first
//! reconcile on the fake runtime) in time and heap held.
//!
//! Memory is the growth of the process's resident anonymous memory
//! (`RssAnon`) from before to after, with what was decoded still alive: what
//! the document costs to hold, rounded to pages, not the allocator's peak.

use std::time::Instant;

use firmware_proto::heap::{List, Text, Texts};
use firmware_proto::pod::{self, ConfigBlob, ConfigRef, PodDocument, PodSpec};
use firmware_proto::{Bytes, ConfigObject, DesiredDocument, Name, samples};
use flotilla_agent::agent::{Agent, Backoff};
use flotilla_agent::runtime::fake::FakeRuntime;
use serde_json::json;
use sha2::Digest as _;

const SIGNATURE: [u8; 64] = [7; 64];
const RUNS: usize = 20;

fn heap_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn median_ms(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The compact document at its limits: 16 replicas with full argv, env,
/// volumes, ports and probes, and as much config as the 64 KiB frame
/// leaves room for.
fn largest_compact() -> Vec<u8> {
    let mut document = samples::desired(firmware_proto::MAX_REPLICAS);
    let fill = |n: usize, bytes: usize, prefix: &str| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:02}={}", "x".repeat(bytes / n - prefix.len() - 3))).collect()
    };
    for replica in &mut document.replicas {
        let args = fill(firmware_proto::ARGS_ITEMS, firmware_proto::ARGS_BYTES, "--a");
        replica.args = firmware_proto::TextList::from_strs(args.iter().map(String::as_str)).unwrap();
        let env = fill(firmware_proto::ENV_ITEMS, firmware_proto::ENV_BYTES, "E");
        replica.env = firmware_proto::TextList::from_strs(env.iter().map(String::as_str)).unwrap();
    }
    // Config objects, shrunk until the frame fits.
    let mut each = firmware_proto::CONFIG_DATA_BYTES;
    loop {
        document.config = (0..firmware_proto::MAX_CONFIG_OBJECTS)
            .map(|i| {
                let mut object = ConfigObject {
                    name: heapless::String::try_from(format!("config-{i}").as_str()).unwrap(),
                    ..samples::config()
                };
                object.contents = Default::default();
                object.contents.push(&vec![b'c'; each]).unwrap();
                object
            })
            .collect();
        match firmware_proto::encode_signed_to_vec(&document.as_state(), |_| Bytes(SIGNATURE)) {
            Ok(frame) => return frame,
            Err(_) => each -= 256,
        }
    }
}

/// The Linux document near its 4 MiB frame: 64 pods of an init container
/// and two app containers, each app container with about 15 KiB of args
/// and 15 KiB of env, naming 64 config objects; and one 1 MiB object.
fn largest_linux() -> (Vec<u8>, Vec<u8>, PodDocument) {
    let mut blob = samples::config_blob();
    blob.file_names = Texts::from_strs(["model.bin"]).unwrap();
    blob.contents = Default::default();
    blob.contents.push(&vec![b'm'; pod::LINUX_CONFIG_DATA_BYTES]).unwrap();
    let blob_frame = firmware_proto::encode_signed_to_vec(&blob, |_| Bytes(SIGNATURE)).unwrap();
    let digest: [u8; 32] = sha2::Sha256::digest(pod::signed_body(&blob_frame).unwrap()).into();
    let mut document = samples::pod_document(1, Bytes(digest));
    let base = document.pods[0].clone();
    let mut per_container = 15 * 1024;
    loop {
        let pods: Vec<PodSpec> = (0..firmware_proto::LINUX_MAX_PODS)
            .map(|i| {
                let mut pod = base.clone();
                pod.id = Name::new(&format!("sensor-1a2b-{i}")).unwrap();
                for container in pod.containers.as_mut_slice().iter_mut().chain(pod.init_containers.as_mut_slice()) {
                    if container.sidecar || container.name.as_str() == "sensor" {
                        let args: Vec<String> =
                            (0..per_container / 64).map(|a| format!("--f{a:04}={}", "y".repeat(56))).collect();
                        container.args = Texts::from_strs(args.iter().map(String::as_str)).unwrap();
                        let env: Vec<String> =
                            (0..per_container / 64).map(|e| format!("V{e:04}={}", "z".repeat(58))).collect();
                        container.env = Texts::from_strs(env.iter().map(String::as_str)).unwrap();
                    }
                }
                pod
            })
            .collect();
        document.pods = List::try_from(pods).unwrap();
        let refs: Vec<ConfigRef> = (0..pod::LINUX_MAX_CONFIG_OBJECTS)
            .map(|i| ConfigRef {
                name: Text::new(&format!("model-{i}")).unwrap(),
                secret: false,
                digest: Bytes(digest),
                size: blob_frame.len() as u32,
                sealed_key: None,
            })
            .collect();
        document.config = List::try_from(refs).unwrap();
        match firmware_proto::encode_signed_to_vec(&document, |_| Bytes(SIGNATURE)) {
            Ok(frame) => return (frame, blob_frame, document),
            Err(_) => per_container -= 512,
        }
    }
}

pub fn run() -> anyhow::Result<()> {
    // Compact: what a microcontroller decodes, one replica at a time.
    let frame = largest_compact();
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let view = firmware_proto::decode_desired_frame(&frame).map_err(|e| anyhow::anyhow!("{e}"))?.frame;
        let mut count = 0;
        for replica in view.replicas() {
            count += replica.args.len();
        }
        std::hint::black_box(count);
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let owned = DesiredDocument::from(&firmware_proto::decode_desired_frame(&frame).unwrap().frame);
    println!(
        "{}",
        json!({
            "bench": "profiles",
            "profile": "compact",
            "document_bytes": frame.len(),
            "replicas": owned.replicas.len(),
            "config_objects": owned.config.len(),
            "decode_ms_median": median_ms(times),
            "decoder_working_bytes": std::mem::size_of::<firmware_proto::DesiredView>() + std::mem::size_of::<firmware_proto::ReplicaSpec>(),
            "measures": "decode of the frame and one pass over its replicas, each decoded in turn into a stack value (no allocator); decoder_working_bytes = the view plus one replica",
        })
    );
    drop(owned);

    // Linux: the agent's whole apply.
    let (frame, blob_frame, document) = largest_linux();
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let decoded = firmware_proto::decode_signed::<PodDocument>(&frame).map_err(|e| anyhow::anyhow!("{e}"))?;
        std::hint::black_box(&decoded);
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let decode_ms = median_ms(times);
    let mut blob_times = Vec::new();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let decoded = firmware_proto::decode_signed::<ConfigBlob>(&blob_frame).map_err(|e| anyhow::anyhow!("{e}"))?;
        let digest: [u8; 32] = sha2::Sha256::digest(pod::signed_body(&blob_frame).unwrap()).into();
        std::hint::black_box((&decoded, digest));
        blob_times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let mut apply_times = Vec::new();
    let mut held = 0;
    for run in 0..5 {
        let dir = tempfile::tempdir()?;
        let paths = flotilla_agent::workload::Paths { data_dir: dir.path().to_owned() };
        for container in document.pods.iter().flat_map(|p| p.all_containers()) {
            std::fs::create_dir_all(paths.image_rootfs(&container.image.digest.0))?;
        }
        let before = heap_bytes();
        let t0 = Instant::now();
        let mut agent = Agent::new(
            FakeRuntime::default(),
            paths,
            document.node_id.clone(),
            Box::new(|_, s| s.0 == SIGNATURE),
            Backoff::default(),
        );
        agent.offer_frame(&blob_frame).map_err(|e| anyhow::anyhow!("{e}"))?;
        agent.offer_frame(&frame).map_err(|e| anyhow::anyhow!("{e}"))?;
        agent.reconcile(0)?;
        apply_times.push(t0.elapsed().as_secs_f64() * 1e3);
        if run == 0 {
            held = heap_bytes().saturating_sub(before);
        }
        drop(agent);
    }
    let containers: usize = document.pods.iter().map(|p| p.init_containers.len() + p.containers.len()).sum();
    println!(
        "{}",
        json!({
            "bench": "profiles",
            "profile": "linux",
            "document_bytes": frame.len(),
            "pods": document.pods.len(),
            "containers": containers,
            "config_objects_named": document.config.len(),
            "config_object_bytes": blob_frame.len(),
            "decode_ms_median": decode_ms,
            "config_object_decode_and_hash_ms_median": median_ms(blob_times),
            "agent_apply_ms_median": median_ms(apply_times),
            "agent_memory_held_bytes": held,
            "measures": "agent apply = verify + decode + persist the document and one 1 MiB config object, write its files, create and start each pod's first init container (fake runtime); memory = growth of RssAnon while the agent holds it",
        })
    );
    Ok(())
}
