//! Encoded sizes of the messages that cross paid links, printed so a change
//! in size is seen, and held to the heartbeat budget.

use firmware_proto::{MAX_FRAME_LEN, MacTag, NodeMessage, Signature, encode_node_frame, encode_signed, samples};

fn node_frame_len(message: NodeMessage) -> usize {
    let mut buf = [0u8; MAX_FRAME_LEN];
    encode_node_frame(&message, 1_000, |_| MacTag::default(), &mut buf).unwrap().len()
}

#[test]
fn heartbeat_sizes_fit_the_idle_budget() {
    let mut sizes = Vec::new();
    for replicas in [0, 4, 16] {
        let len = node_frame_len(NodeMessage::Status(samples::status(replicas)));
        println!("heartbeat with {replicas:>2} replicas: {len} bytes (frame: header, body, seq, 16-byte MAC)");
        sizes.push(len);
    }
    // DESIGN.md budgets 20 KB per idle node per hour for everything; a
    // heartbeat of a 4-replica node must stay well under 100 bytes of
    // payload so that one a minute costs < 6 KB/hour with MQTT overhead.
    assert!(sizes[0] < 40, "empty heartbeat is {} bytes", sizes[0]);
    assert!(sizes[1] < 100, "4-replica heartbeat is {} bytes", sizes[1]);
    assert!(sizes[2] < 250, "16-replica heartbeat is {} bytes", sizes[2]);
}

#[test]
fn other_message_sizes_are_printed() {
    println!("hello: {} bytes", node_frame_len(NodeMessage::Hello(samples::hello())));
    println!("event (OOM): {} bytes", node_frame_len(NodeMessage::Event(samples::event())));
    for replicas in [1, 4, 16] {
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let len =
            encode_signed(&samples::desired(replicas).as_state(), |_| Signature::default(), &mut buf).unwrap().len();
        println!("desired document with {replicas:>2} replicas: {len} bytes");
    }
    println!(
        "in memory: Hello {} B, Status {} B, DesiredView {} B, ReplicaSpec {} B",
        size_of::<firmware_proto::Hello>(),
        size_of::<firmware_proto::Status>(),
        size_of::<firmware_proto::DesiredView>(),
        size_of::<firmware_proto::ReplicaSpec>()
    );
}

#[test]
fn an_encoded_frame_holds_no_more_memory_than_its_bytes() {
    // The controller keeps one frame per node: a frame that kept the
    // encoder's 64 KiB buffer held 655 MB at 10,000 nodes.
    let frame =
        firmware_proto::encode_signed_to_vec(&samples::desired(1).as_state(), |_| Signature::default()).unwrap();
    assert!(frame.len() < 4096, "{} bytes", frame.len());
    assert!(frame.capacity() < 2 * frame.len(), "capacity {} for {} bytes", frame.capacity(), frame.len());
}
