//! The wire contract beyond the frames: topic names, the node MAC, broker
//! URLs and image references. Controller and agent both use these, so a
//! change here changes what they say to each other.

use firmware_proto::image::{DEFAULT_TAG, ReferenceParts, is_registry, split_reference};
use firmware_proto::mac::{node_mac, verify_node_mac};
use firmware_proto::mqtt::{
    BrokerUrl, DEFAULT_MQTT_PORT, DEFAULT_MQTTS_PORT, DEFAULT_PREFIX, MqttUrlError, Topics, parse_broker_url,
    parse_mqtt_url,
};
use firmware_proto::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// Topics

#[test]
fn every_kind_has_its_topic_under_the_prefix() {
    let topics = Topics::new(DEFAULT_PREFIX);
    let expected = [
        (MessageKind::Hello, "flotilla/v1/nodes/edge-1/hello"),
        (MessageKind::Online, "flotilla/v1/nodes/edge-1/online"),
        (MessageKind::Status, "flotilla/v1/nodes/edge-1/status"),
        (MessageKind::Event, "flotilla/v1/nodes/edge-1/events"),
        (MessageKind::Desired, "flotilla/v1/nodes/edge-1/desired"),
        (MessageKind::LogRequest, "flotilla/v1/nodes/edge-1/logreq"),
        (MessageKind::Logs, "flotilla/v1/nodes/edge-1/logs"),
        (MessageKind::Services, "flotilla/v1/nodes/edge-1/services"),
    ];
    for (kind, topic) in expected {
        assert_eq!(topics.node("edge-1", kind), topic);
    }
}

#[test]
fn topics_round_trip_for_every_kind() {
    let topics = Topics::new("site/a/");
    assert_eq!(topics.prefix(), "site/a");
    for kind in MessageKind::FROM_NODE.into_iter().chain(MessageKind::TO_NODE) {
        let topic = topics.node("pi-07", kind);
        assert_eq!(topics.parse(&topic), Some(("pi-07", kind.topic_leaf())), "{topic}");
    }
}

#[test]
fn topics_parse_only_single_level_node_topics() {
    let topics = Topics::new("flotilla/v1/");
    assert_eq!(topics.node("edge-1", MessageKind::Desired), "flotilla/v1/nodes/edge-1/desired");
    assert_eq!(topics.parse("flotilla/v1/nodes/edge-1/status"), Some(("edge-1", "status")));
    assert_eq!(topics.parse("flotilla/v1/nodes/edge-1/status/x"), None);
    assert_eq!(topics.parse("other/v1/nodes/edge-1/status"), None);
    assert_eq!(topics.parse("flotilla/v1/nodes/edge-1"), None);
}

#[test]
fn the_controller_subscribes_to_what_nodes_send() {
    assert_eq!(
        Topics::new("flotilla/v1").controller_filters(),
        [
            "flotilla/v1/nodes/+/hello",
            "flotilla/v1/nodes/+/online",
            "flotilla/v1/nodes/+/status",
            "flotilla/v1/nodes/+/events",
            "flotilla/v1/nodes/+/logs",
            "flotilla/v1/nodes/+/credreq",
        ]
    );
}

// ---------------------------------------------------------------------------
// MAC

#[test]
fn the_mac_is_hmac_sha256_cut_to_16_bytes() {
    // HMAC-SHA256(key = 32 x 0x09, "frame") = 25081bcc...6367261b ffee52b4...
    let key = [9; 32];
    let tag = node_mac(&key, b"frame");
    assert_eq!(hex(&tag.0), "25081bccf61d2d9eb2936f6f6367261b");
    assert!(verify_node_mac(&key, b"frame", &tag));
    assert!(!verify_node_mac(&key, b"framf", &tag));
    assert!(!verify_node_mac(&[8; 32], b"frame", &tag));
}

#[test]
fn a_sealed_frame_carries_the_mac_of_everything_before_it() {
    let key: [u8; 32] = core::array::from_fn(|i| i as u8);
    let message = NodeMessage::Online(Presence::Online);
    let frame = encode_node_frame_to_vec(&message, 7, |bytes| node_mac(&key, bytes)).unwrap();
    // 02 version, 02 Online, 00 Presence::Online, 07 seq, then
    // HMAC-SHA256(key 00 01 .. 1f, 02 02 00 07) cut to 16 bytes.
    assert_eq!(hex(&frame), "0202000725dd2cb4b5f4f5cfc8c19cc5193e8e41");
    let decoded = decode_node_frame(&frame).unwrap();
    assert!(verify_node_mac(&key, decoded.authenticated, &decoded.frame.mac));
    assert!(!verify_node_mac(&[0; 32], decoded.authenticated, &decoded.frame.mac));
}

// ---------------------------------------------------------------------------
// Broker URLs

#[test]
fn broker_urls_give_host_and_port() {
    assert_eq!(parse_mqtt_url("mqtt://10.0.0.1:1884"), Ok(("10.0.0.1", 1884)));
    assert_eq!(parse_mqtt_url("tcp://broker:1"), Ok(("broker", 1)));
    assert_eq!(parse_mqtt_url("broker"), Ok(("broker", DEFAULT_MQTT_PORT)));
    assert_eq!(parse_mqtt_url("mqtt://broker/"), Ok(("broker", 1883)));
    assert_eq!(parse_mqtt_url("broker.local:8883"), Ok(("broker.local", 8883)));
    assert_eq!(parse_mqtt_url("mqtt://[::1]:1883"), Ok(("[::1]", 1883)));
}

#[test]
fn unsupported_or_broken_broker_urls_are_refused() {
    assert_eq!(parse_mqtt_url("mqtts://broker:8883"), Err(MqttUrlError::UnsupportedScheme));
    let tls = |host, port| Ok(BrokerUrl { host, port, tls: true });
    assert_eq!(parse_broker_url("mqtts://broker:8884"), tls("broker", 8884));
    assert_eq!(parse_broker_url("mqtts://broker"), tls("broker", DEFAULT_MQTTS_PORT));
    assert_eq!(parse_broker_url("mqtts://[::1]:8883/"), tls("[::1]", 8883));
    assert_eq!(parse_broker_url("mqtt://broker"), Ok(BrokerUrl { host: "broker", port: 1883, tls: false }));
    assert_eq!(parse_broker_url("mqtts://:8883"), Err(MqttUrlError::NoHost));
    assert_eq!(parse_mqtt_url("ws://broker"), Err(MqttUrlError::UnsupportedScheme));
    assert_eq!(parse_mqtt_url("mqtt://broker:port"), Err(MqttUrlError::BadPort));
    assert_eq!(parse_mqtt_url("mqtt://broker:70000"), Err(MqttUrlError::BadPort));
    assert_eq!(parse_mqtt_url("mqtt://:1883"), Err(MqttUrlError::NoHost));
    assert_eq!(parse_mqtt_url(""), Err(MqttUrlError::NoHost));
    assert_eq!(
        MqttUrlError::UnsupportedScheme.to_string(),
        "not an mqtt:// or mqtts:// URL (or mqtts:// where only plain TCP is supported)"
    );
}

// ---------------------------------------------------------------------------
// Image references

fn parts<'a>(
    registry: Option<&'a str>,
    repository: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
) -> ReferenceParts<'a> {
    ReferenceParts { registry, repository, tag, digest }
}

#[test]
fn references_split_into_registry_repository_tag_and_digest() {
    assert_eq!(split_reference("busybox:1.35"), parts(None, "busybox", Some("1.35"), None));
    assert_eq!(split_reference("library/busybox"), parts(None, "library/busybox", None, None));
    assert_eq!(split_reference("10.0.0.1:5000/a/b:2"), parts(Some("10.0.0.1:5000"), "a/b", Some("2"), None));
    assert_eq!(split_reference("localhost/web"), parts(Some("localhost"), "web", None, None));
    assert_eq!(
        split_reference("reg.local:7441/shop/web:1.2"),
        parts(Some("reg.local:7441"), "shop/web", Some("1.2"), None)
    );
    assert_eq!(
        split_reference("localhost:5000/web:1@sha256:abcd"),
        parts(Some("localhost:5000"), "web", Some("1"), Some("sha256:abcd"))
    );
    assert_eq!(split_reference("web@sha256:abcd"), parts(None, "web", None, Some("sha256:abcd")));
    // A ':' before the last component is not a tag.
    assert_eq!(split_reference("a/b:c/d"), parts(None, "a/b:c/d", None, None));
    // Odd parts are kept for the caller to refuse.
    assert_eq!(split_reference("reg:5000/"), parts(Some("reg:5000"), "", None, None));
    assert_eq!(split_reference("reg:5000//web"), parts(Some("reg:5000"), "/web", None, None));
    assert_eq!(DEFAULT_TAG, "latest");
}

#[test]
fn registries_look_like_hosts() {
    for registry in ["reg.local", "reg:5000", "localhost", "10.0.0.1"] {
        assert!(is_registry(registry), "{registry}");
    }
    for repository in ["library", "shop", "local-host"] {
        assert!(!is_registry(repository), "{repository}");
    }
}
