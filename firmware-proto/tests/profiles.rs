//! The two desired-document profiles: each decodes its golden document, and
//! each refuses a document over its limits with a typed error.

use firmware_proto::pod::{ConfigBlob, PodDocument, signed_body};
use firmware_proto::*;
use sha2::Digest as _;

const SIGNATURE: Signature = Bytes([0x22; 64]);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A signed frame around a body assembled by hand: how a peer that ignores
/// the limits would send one.
fn signed_frame(kind: MessageKind, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![PROTOCOL_VERSION, kind as u8];
    frame.extend_from_slice(body);
    frame.extend_from_slice(&SIGNATURE.0);
    frame
}

fn blob_digest() -> Digest {
    let frame = encode_signed_to_vec(&samples::config_blob(), |_| SIGNATURE).unwrap();
    Bytes(sha2::Sha256::digest(signed_body(&frame).unwrap()).into())
}

#[test]
fn config_blob_golden() {
    // 02 0a | 0d "sensor-config" | 00 ConfigMap | 01 one name: 0b "sensor.toml" |
    // 01 one content: 0f "threshold = 40\n" | signature
    let frame = encode_signed_to_vec(&samples::config_blob(), |_| SIGNATURE).unwrap();
    let golden = "020a0d73656e736f722d636f6e66696700010b73656e736f722e746f6d6c010f7468726573686f6c64203d2034300a";
    assert_eq!(hex(&frame[..frame.len() - SIGNATURE_LEN]), golden);
    let decoded = decode_signed::<ConfigBlob>(&frame).unwrap();
    assert_eq!(decoded.frame, (samples::config_blob(), SIGNATURE));
    // The same layout as the compact profile's inline config object.
    let compact = postcard::to_allocvec(&samples::config()).unwrap();
    assert_eq!(signed_body(&frame).unwrap(), &compact[..]);
}

#[test]
fn linux_pod_document_golden() {
    let document = samples::pod_document(1, blob_digest());
    let frame = encode_signed_to_vec(&document, |_| SIGNATURE).unwrap();
    let golden = include_str!("golden/pod-document.hex").trim();
    assert_eq!(hex(&frame), golden, "encoding of the pod document changed");
    let bytes: Vec<u8> =
        (0..golden.len()).step_by(2).map(|i| u8::from_str_radix(&golden[i..i + 2], 16).unwrap()).collect();
    let decoded = decode_signed::<PodDocument>(&bytes).unwrap();
    assert_eq!(decoded.frame, (document, SIGNATURE));
    let pod = &decoded.frame.0.pods[0];
    let names: Vec<&str> = pod.all_containers().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["wait-config", "exporter", "sensor"]);
    assert!(pod.init_containers[1].sidecar);
    // The claim the sensor keeps its history in, listed once by the document.
    let document = &decoded.frame.0;
    assert!(matches!(pod.volumes[2].source, firmware_proto::pod::PodVolumeSource::Claim { index: 0 }));
    assert_eq!(
        (document.claims[0].id.as_str(), document.claims[0].size_bytes),
        ("default.sensor-history.5f0c2a91", 1 << 30)
    );
    assert_eq!(document.validate(), Ok(()));
}

#[test]
fn heartbeat_with_container_entries_golden() {
    // ... 01 replica entry ... | 02 container entries: 00 replica 0, 00 container 0,
    // 01 Running, 01 ready, 00 restarts, 00 no exit, 01 cpu, 80 20 memory 4096 KiB | (the app: 80 60, 12288 KiB) | seq
    let frame =
        encode_node_frame_to_vec(&NodeMessage::Status(samples::pod_status()), 1000, |_| MacTag::default()).unwrap();
    let golden = "02032a78f0f512a82d0100000300000203806002000001010000018020000101010000018060e807";
    assert_eq!(hex(&frame[..frame.len() - MAC_LEN]), golden);
    assert_eq!(decode_node_frame(&frame).unwrap().frame.message, NodeMessage::Status(samples::pod_status()));
}

#[test]
fn compact_golden_document_decodes_with_no_allocation_in_the_decoder() {
    // The compact decoder is the no_std one CI also builds for
    // thumbv7em-none-eabihf: its lists are inline, decoded one replica at
    // a time from the frame.
    let frame = encode_signed_to_vec(&samples::desired(2).as_state(), |_| SIGNATURE).unwrap();
    let view = decode_desired_frame(&frame).unwrap().frame;
    assert_eq!(view.replica_count(), 2);
    assert_eq!(view.replicas().next().unwrap(), samples::replica(0));
}

#[test]
fn compact_profile_refuses_more_replicas_than_it_holds() {
    // node id, generation, 17 replicas, no config.
    let mut body = postcard::to_allocvec(&samples::node_id()).unwrap();
    body.push(42);
    let replicas: Vec<ReplicaSpec> = (0..=MAX_REPLICAS).map(samples::replica).collect();
    body.extend(postcard::to_allocvec(&replicas).unwrap());
    body.push(0);
    let err = decode_desired_frame(&signed_frame(MessageKind::Desired, &body)).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Malformed { kind: MessageKind::Desired, detail: "a list is longer than its capacity" }
    );
    // The encoder refuses it too.
    let document = DesiredDocument { node_id: samples::node_id(), generation: 42, replicas, config: vec![] };
    assert!(matches!(encode_signed_to_vec(&document.as_state(), |_| SIGNATURE), Err(EncodeError::Invalid { .. })));
}

#[test]
fn compact_profile_refuses_a_config_object_over_4_kib() {
    // A config object laid out as the compact one, with 5 KiB of content:
    // what a Linux-profile blob would carry.
    let mut body = postcard::to_allocvec(&samples::node_id()).unwrap();
    body.push(42);
    body.push(0);
    body.push(1);
    body.extend(postcard::to_allocvec(&("big", false, vec!["data.bin"], vec![vec![7u8; 5 * 1024]])).unwrap());
    let err = decode_desired_frame(&signed_frame(MessageKind::Desired, &body)).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed { kind: MessageKind::Desired, .. }), "{err}");
}

#[test]
fn linux_profile_holds_what_the_compact_one_cannot() {
    // 40 pods (compact: 16) with 20 KiB of args each (compact: 512 bytes).
    let mut document = samples::pod_document(40, blob_digest());
    let long_arg = "x".repeat(20 * 1024);
    for pod in document.pods.as_mut_slice() {
        pod.containers.as_mut_slice()[0].args = heap::Texts::from_strs([long_arg.as_str()]).unwrap();
    }
    let frame = encode_signed_to_vec(&document, |_| SIGNATURE).unwrap();
    assert!(frame.len() > MAX_FRAME_LEN, "{} bytes", frame.len());
    assert_eq!(decode_signed::<PodDocument>(&frame).unwrap().frame.0, document);
    // A 1 MiB ConfigMap travels as a blob of its own.
    let mut blob = samples::config_blob();
    blob.contents = heap::Blobs::new();
    blob.contents.push(&vec![b'a'; pod::LINUX_CONFIG_DATA_BYTES]).unwrap();
    let frame = encode_signed_to_vec(&blob, |_| SIGNATURE).unwrap();
    assert_eq!(decode_signed::<ConfigBlob>(&frame).unwrap().frame.0, blob);
}

#[test]
fn linux_profile_refuses_more_pods_than_it_holds() {
    let pods: Vec<pod::PodSpec> = (0..=LINUX_MAX_PODS).map(samples::pod).collect();
    // Unique ids are not what is checked here: the count fails first.
    let mut body = postcard::to_allocvec(&samples::node_id()).unwrap();
    body.push(42);
    body.extend(postcard::to_allocvec(&pods).unwrap());
    body.push(0);
    let err = decode_signed::<PodDocument>(&signed_frame(MessageKind::Pods, &body)).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed { kind: MessageKind::Pods, .. }), "{err}");
}

#[test]
fn linux_profile_refuses_a_config_object_over_1_mib() {
    let body =
        postcard::to_allocvec(&("big", false, vec!["data.bin"], vec![vec![7u8; pod::LINUX_CONFIG_DATA_BYTES + 1]]))
            .unwrap();
    let err = decode_signed::<ConfigBlob>(&signed_frame(MessageKind::Config, &body)).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed { kind: MessageKind::Config, .. }), "{err}");
    // Past the frame limit, refused before parsing.
    let huge = vec![0u8; MAX_CONFIG_FRAME_LEN + 1];
    let mut frame = huge.clone();
    frame[..2].copy_from_slice(&[PROTOCOL_VERSION, MessageKind::Config as u8]);
    assert_eq!(
        decode_signed::<ConfigBlob>(&frame).unwrap_err(),
        DecodeError::TooLarge { len: MAX_CONFIG_FRAME_LEN + 1, max: MAX_CONFIG_FRAME_LEN }
    );
}

#[test]
fn linux_pod_rules_are_checked_when_decoding() {
    let mut document = samples::pod_document(1, blob_digest());
    document.pods.as_mut_slice()[0].containers.as_mut_slice()[0].mounts.as_mut_slice()[0].sub_path =
        heap::Text::new("../../etc").unwrap();
    assert!(matches!(encode_signed_to_vec(&document, |_| SIGNATURE), Err(EncodeError::Invalid { .. })));
    let body = postcard::to_allocvec(&document).unwrap();
    let err = decode_signed::<PodDocument>(&signed_frame(MessageKind::Pods, &body)).unwrap_err();
    assert_eq!(err, DecodeError::Invalid { kind: MessageKind::Pods, reason: "a mount's sub path leaves its volume" });
}
