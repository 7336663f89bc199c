//! Each kind of bad input gets its own, named error.

use firmware_proto::*;

fn online_frame() -> Vec<u8> {
    encode_node_frame_to_vec(&NodeMessage::Online(Presence::Online), 1, |_| MacTag::default()).unwrap()
}

#[test]
fn empty_and_one_byte_inputs_are_too_short() {
    assert_eq!(decode_node_frame(&[]), Err(DecodeError::TooShort { len: 0 }));
    assert_eq!(decode_desired_frame(&[1]), Err(DecodeError::TooShort { len: 1 }));
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let mut bytes = online_frame();
    bytes.resize(MAX_FRAME_LEN + 1, 0);
    assert_eq!(decode_node_frame(&bytes), Err(DecodeError::TooLarge { len: MAX_FRAME_LEN + 1, max: MAX_FRAME_LEN }));
}

#[test]
fn unknown_version_and_kind_are_named() {
    let mut bytes = online_frame();
    bytes[0] = 1;
    assert_eq!(decode_node_frame(&bytes), Err(DecodeError::UnsupportedVersion { found: 1, supported: 2 }));
    let mut bytes = online_frame();
    bytes[1] = 0;
    assert_eq!(decode_node_frame(&bytes), Err(DecodeError::UnknownKind { found: 0 }));
}

#[test]
fn a_frame_in_the_wrong_direction_is_refused() {
    let desired = encode_signed_to_vec(&samples::desired(1).as_state(), |_| Signature::default()).unwrap();
    assert_eq!(decode_node_frame(&desired), Err(DecodeError::UnexpectedKind { found: MessageKind::Desired }));
    assert_eq!(decode_desired_frame(&online_frame()), Err(DecodeError::UnexpectedKind { found: MessageKind::Online }));
}

#[test]
fn every_truncation_of_a_status_frame_is_an_error() {
    let bytes = encode_node_frame_to_vec(&NodeMessage::Status(samples::status(4)), 77, |_| MacTag::default()).unwrap();
    for len in 2..bytes.len() {
        let err = decode_node_frame(&bytes[..len]).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Truncated { .. } | DecodeError::Malformed { .. } | DecodeError::TrailingBytes { .. }
            ),
            "cut at {len}: {err}"
        );
    }
    // Cutting only into the MAC leaves a body that parses but a frame that
    // is short, so the seq varint swallows MAC bytes or bytes are missing.
    assert!(decode_node_frame(&bytes[..3]).is_err());
}

#[test]
fn trailing_bytes_after_the_body_are_refused() {
    let mut bytes = online_frame();
    // 01 02 00 | 01 seq | MAC: a stray 00 after the body becomes the seq,
    // and the real seq byte is left over.
    bytes.insert(3, 0);
    let err = decode_node_frame(&bytes).unwrap_err();
    assert_eq!(err, DecodeError::TrailingBytes { kind: MessageKind::Online, count: 1 });
}

#[test]
fn an_unknown_enum_value_is_malformed() {
    let mut bytes = online_frame();
    bytes[2] = 9; // Presence has three variants.
    let err = decode_node_frame(&bytes).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed { kind: MessageKind::Online, .. }), "{err}");
    assert!(err.to_string().contains("unknown variant"), "{err}");
}

#[test]
fn a_string_over_its_capacity_is_malformed() {
    // Hand-build a hello whose node id claims 49 bytes (capacity 48).
    let mut bytes = vec![PROTOCOL_VERSION, MessageKind::Hello as u8, 49];
    bytes.extend([b'a'; 49]);
    bytes.extend([0u8; 40]);
    let err = decode_node_frame(&bytes).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed { kind: MessageKind::Hello, .. }), "{err}");
}

#[test]
fn a_node_id_with_topic_syntax_is_malformed() {
    let encoded = encode_node_frame_to_vec(&NodeMessage::Hello(samples::hello()), 1, |_| MacTag::default()).unwrap();
    // Patch "pi-line3-07" into "pi-line3/07" in place: same length, bad char.
    let mut bytes = encoded.clone();
    let at = bytes.windows(3).position(|w| w == b"3-0").unwrap() + 1;
    bytes[at] = b'/';
    let err = decode_node_frame(&bytes).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed { kind: MessageKind::Hello, .. }), "{err}");
    assert!(decode_node_frame(&encoded).is_ok());
}

#[test]
fn duplicate_replicas_in_a_desired_document_are_invalid() {
    let mut document = samples::desired(2);
    document.replicas[1].id = document.replicas[0].id.clone();
    assert_eq!(
        encode_signed_to_vec(&document.as_state(), |_| Signature::default()),
        Err(EncodeError::Invalid { reason: "two replicas share an id" })
    );
}

#[test]
fn a_volume_pointing_past_the_config_list_is_invalid_on_both_sides() {
    let mut document = samples::desired(1);
    document.config.clear();
    assert!(matches!(
        encode_signed_to_vec(&document.as_state(), |_| Signature::default()),
        Err(EncodeError::Invalid { .. })
    ));
    // Forge the same document past the encoder's checks: postcard
    // serializes it as is, and the decoder must refuse it by itself.
    let mut forged = vec![PROTOCOL_VERSION, MessageKind::Desired as u8];
    forged.extend(postcard::to_allocvec(&document.as_state()).unwrap());
    forged.extend([0u8; SIGNATURE_LEN]);
    assert_eq!(
        decode_desired_frame(&forged),
        Err(DecodeError::Invalid {
            kind: MessageKind::Desired,
            reason: "a volume refers to a config object that is not in the document"
        })
    );
}

#[test]
fn duplicate_status_entries_are_invalid() {
    let mut status = samples::status(2);
    status.replicas[1].replica = status.replicas[0].replica.clone();
    assert_eq!(
        encode_node_frame_to_vec(&NodeMessage::Status(status), 1, |_| MacTag::default()),
        Err(EncodeError::Invalid { reason: "two status entries are about the same replica" })
    );
}

#[test]
fn a_buffer_too_small_is_an_error_not_a_panic() {
    let mut buf = [0u8; 10];
    assert_eq!(
        encode_node_frame(&NodeMessage::Status(samples::status(4)), 1, |_| MacTag::default(), &mut buf),
        Err(EncodeError::BufferFull)
    );
}

#[test]
fn errors_read_well() {
    let err = DecodeError::UnsupportedVersion { found: 7, supported: 1 };
    assert_eq!(err.to_string(), "protocol version 7 is not supported (this build speaks 1)");
    let err = DecodeError::Invalid { kind: MessageKind::Desired, reason: "two replicas share an id" };
    assert_eq!(err.to_string(), "invalid desired message: two replicas share an id");
}
