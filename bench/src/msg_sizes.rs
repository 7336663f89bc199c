//! `flotilla-bench msg-sizes`: encoded size of each wire message, whole
//! frames including header, sequence number and MAC or signature.
//!
//! These are the bytes a node pays for on a metered link before MQTT and
//! TCP/IP overhead; `flotilla-bench wire` (issue #8) measures the rest.

use firmware_proto::{MacTag, NodeMessage, Signature, samples};
use serde_json::json;

/// Runs the benchmark: one JSON line per message.
pub fn run() -> anyhow::Result<()> {
    let node = |message: NodeMessage| -> anyhow::Result<usize> {
        Ok(firmware_proto::encode_node_frame_to_vec(&message, 1_000, |_| MacTag::default())?.len())
    };
    for replicas in [0, 4, 16] {
        let bytes = node(NodeMessage::Status(samples::status(replicas)))?;
        println!("{}", json!({"message": "heartbeat", "replicas": replicas, "bytes": bytes}));
    }
    println!("{}", json!({"message": "hello", "bytes": node(NodeMessage::Hello(samples::hello()))?}));
    println!("{}", json!({"message": "event_oom", "bytes": node(NodeMessage::Event(samples::event()))?}));
    for replicas in [1, 4, 16] {
        let document = samples::desired(replicas);
        let bytes = firmware_proto::encode_signed_to_vec(&document.as_state(), |_| Signature::default())?.len();
        println!("{}", json!({"message": "desired", "replicas": replicas, "bytes": bytes}));
    }
    Ok(())
}
