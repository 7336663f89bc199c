//! Golden bytes: the exact encoding of representative messages. If one of
//! these tests fails, the wire format changed: that needs a new protocol
//! version (WIRE.md, "Versioning"), not a new constant here.

use firmware_proto::*;

const MAC: MacTag = Bytes([0x11; 16]);
const SIGNATURE: Signature = Bytes([0x22; 64]);
const SEQ: u64 = 1000;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

/// Encodes `message`, compares with `golden`, and decodes `golden` back.
fn check_node(message: NodeMessage, golden: &str) {
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let encoded = encode_node_frame(&message, SEQ, |_| MAC, &mut buf).unwrap();
    assert_eq!(hex(encoded), golden, "encoding of {:?} changed", message.kind());
    let bytes = unhex(golden);
    let decoded = decode_node_frame(&bytes).unwrap();
    assert_eq!(decoded.frame, NodeFrame { message, seq: SEQ, mac: MAC });
    assert_eq!(decoded.authenticated, &bytes[..bytes.len() - MAC_LEN]);
}

#[test]
fn online_frame_is_header_presence_seq_and_mac() {
    // 02 version, 02 kind Online, 00 Presence::Online, e8 07 = varint 1000, then the MAC.
    check_node(NodeMessage::Online(Presence::Online), "020200e80711111111111111111111111111111111");
}

#[test]
fn offline_last_will() {
    check_node(NodeMessage::Online(Presence::Offline), "020201e80711111111111111111111111111111111");
}

#[test]
fn empty_heartbeat_field_by_field() {
    // 02 03 | 2a generation 42 | 78 cpu 120 | f0 f5 12 memory 310000 KiB |
    // a8 2d disk 5800 MiB | 00 no replicas | 00 no container entries | e8 07 seq | MAC
    check_node(NodeMessage::Status(samples::status(0)), "02032a78f0f512a82d0000e80711111111111111111111111111111111");
}

#[test]
fn heartbeat_with_two_replicas() {
    // Each replica: 00 nn slot | 03 Running | 00 restarts | 00 no exit |
    // 02 Ready | cpu varint | memory KiB varint; then 00 no container entries
    check_node(
        NodeMessage::Status(samples::status(2)),
        "02032a78f0f512a82d0200000300000203806000010300000204806400e80711111111111111111111111111111111",
    );
}

#[test]
fn hello() {
    check_node(
        NodeMessage::Hello(samples::hello()),
        concat!(
            "02010b70692d6c696e65332d30370100a01f808080800410d81d808080c203100210666c6f74696c6c612e696f2f7a6f",
            "6e65066c696e652d330663616d6572610001047a6f6e6503646d7a000112666c6f74696c6c612e696f2f73657269616c",
            "01010c2f6465762f7474795553423005302e312e300201e80711111111111111111111111111111111",
        ),
    );
}

#[test]
fn oom_event() {
    check_node(
        NodeMessage::Event(samples::event()),
        "020480bcd9f29e34010d73656e736f722d316132622d30028080802000e80711111111111111111111111111111111",
    );
}

#[test]
fn log_chunk() {
    // 02 07 | 07 request | 00 index | 0e 14 data bytes | 01 end: 0e next_offset 14, 00 no error | seq | MAC
    check_node(
        NodeMessage::Logs(samples::log_chunk()),
        "020707000e743d32312e350a743d32312e360a010e00e80711111111111111111111111111111111",
    );
}

#[test]
fn service_table() {
    // 02 08 | node id | 2a generation | 01 one port: 03 "web", 04 "http", 50 port 80, 00 TCP,
    // 02 endpoints: 0a 4d 00 0b, 90 3f (8080) | 0a 4d 00 0c, 90 3f | 00 no node port | signature
    let golden = concat!(
        "02080b70692d6c696e65332d30372a010377656204687474705000020a4d000b903f0a4d000c903f00",
        "22222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222",
    );
    let table = samples::service_table();
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let encoded = encode_signed(&table, |_| SIGNATURE, &mut buf).unwrap();
    assert_eq!(hex(encoded), golden, "encoding of the service table changed");
    let bytes = unhex(golden);
    let decoded = decode_signed::<ServiceTable>(&bytes).unwrap();
    assert_eq!(decoded.frame, (table, SIGNATURE));
}

#[test]
fn log_request() {
    // 02 06 | node id | 07 request | replica id | 00 no offset | 64 tail 100 | 80 80 04 max 65536 | 00 first container | signature
    let golden = concat!(
        "02060b70692d6c696e65332d3037070d73656e736f722d316132622d30006480800400",
        "22222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222",
    );
    let request = samples::log_request();
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let encoded = encode_signed(&request, |_| SIGNATURE, &mut buf).unwrap();
    assert_eq!(hex(encoded), golden, "encoding of the log request changed");
    let bytes = unhex(golden);
    let decoded = decode_signed::<LogRequest>(&bytes).unwrap();
    assert_eq!(decoded.frame, (request, SIGNATURE));
    assert_eq!(decoded.authenticated, &bytes[..bytes.len() - SIGNATURE_LEN]);
}

#[test]
fn credential_request_and_grant() {
    // 02 0b | 01 generation 1 | e8 07 sequence 1000 | MAC
    check_node(
        NodeMessage::CredentialRequest(samples::credential_request()),
        "020b01e80711111111111111111111111111111111",
    );
    // 02 0c | node id | 02 generation | 90 1c ask again in 3600 s | 01 Some | 84 sealed bytes | signature
    let golden = format!(
        "020c0b70692d6c696e65332d303702901c015a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a{}",
        "22".repeat(64)
    );
    let grant = samples::credential_grant();
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let encoded = encode_signed(&grant, |_| SIGNATURE, &mut buf).unwrap();
    assert_eq!(hex(encoded), golden, "encoding of the credential grant changed");
    let bytes = unhex(&golden);
    assert_eq!(decode_signed::<CredentialGrant>(&bytes).unwrap().frame, (grant, SIGNATURE));
}

#[test]
fn desired_document_with_one_replica() {
    // The same file the compact decoder reads on an emulated Cortex-M4
    // (`mcu-check/`).
    let golden = include_str!("golden/desired-document.hex").trim();
    let document = samples::desired(1);
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let encoded = encode_signed(&document.as_state(), |_| SIGNATURE, &mut buf).unwrap();
    assert_eq!(hex(encoded), golden, "encoding of the desired document changed");
    let bytes = unhex(golden);
    let decoded = decode_desired_frame(&bytes).unwrap();
    assert_eq!(DesiredDocument::from(&decoded.frame), document);
    assert_eq!(decoded.frame.signature, SIGNATURE);
    assert_eq!(decoded.authenticated, &bytes[..bytes.len() - SIGNATURE_LEN]);
}

#[test]
fn message_kind_bytes_never_change() {
    let kinds = [
        (MessageKind::Hello, 1),
        (MessageKind::Online, 2),
        (MessageKind::Status, 3),
        (MessageKind::Event, 4),
        (MessageKind::Desired, 5),
        (MessageKind::LogRequest, 6),
        (MessageKind::Logs, 7),
        (MessageKind::Services, 8),
        (MessageKind::Pods, 9),
        (MessageKind::Config, 10),
        (MessageKind::CredentialRequest, 11),
        (MessageKind::Credentials, 12),
    ];
    for (kind, byte) in kinds {
        assert_eq!(kind as u8, byte);
        assert_eq!(MessageKind::from_byte(byte), Some(kind));
    }
    assert_eq!(PROTOCOL_VERSION, 2);
    for kind in MessageKind::FROM_NODE {
        assert!(kind.is_from_node(), "{kind}");
    }
    for kind in MessageKind::TO_NODE {
        assert!(!kind.is_from_node(), "{kind}");
    }
}
