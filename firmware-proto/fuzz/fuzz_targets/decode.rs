//! Every decoder on arbitrary bytes: none may panic, and whatever decodes
//! must survive a re-encode unchanged.
#![no_main]

use firmware_proto::{
    LogRequest, ServiceTable, decode_desired_frame, decode_node_frame, decode_signed, encode_node_frame_to_vec,
    encode_signed_to_vec, peek_kind,
};
use firmware_proto::pod::{ConfigBlob, PodDocument};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = peek_kind(data);
    if let Ok(node) = decode_node_frame(data) {
        let again = encode_node_frame_to_vec(&node.frame.message, node.frame.seq, |_| node.frame.mac)
            .expect("a decoded message encodes");
        assert_eq!(decode_node_frame(&again).expect("re-encoded frame decodes").frame, node.frame);
    }
    if let Ok(desired) = decode_desired_frame(data) {
        assert_eq!(desired.frame.replicas().count(), desired.frame.replica_count());
        let _ = desired.frame.config().count();
    }
    if let Ok(table) = decode_signed::<ServiceTable>(data) {
        let again = encode_signed_to_vec(&table.frame.0, |_| table.frame.1).expect("a decoded table encodes");
        assert_eq!(decode_signed::<ServiceTable>(&again).expect("re-encoded table decodes").frame, table.frame);
    }
    if let Ok(request) = decode_signed::<LogRequest>(data) {
        let again = encode_signed_to_vec(&request.frame.0, |_| request.frame.1).expect("a decoded request encodes");
        assert_eq!(decode_signed::<LogRequest>(&again).expect("re-encoded request decodes").frame, request.frame);
    }
    // The Linux profile's documents and config objects.
    if let Ok(document) = decode_signed::<PodDocument>(data) {
        let again = encode_signed_to_vec(&document.frame.0, |_| document.frame.1).expect("a decoded document encodes");
        assert_eq!(decode_signed::<PodDocument>(&again).expect("re-encoded document decodes").frame, document.frame);
    }
    if let Ok(blob) = decode_signed::<ConfigBlob>(data) {
        let again = encode_signed_to_vec(&blob.frame.0, |_| blob.frame.1).expect("a decoded blob encodes");
        assert_eq!(decode_signed::<ConfigBlob>(&again).expect("re-encoded blob decodes").frame, blob.frame);
    }
});
