//! What a node's broker login may publish and subscribe to: the same rules
//! as the Mosquitto ACL (`fleet::mosquitto::acl`). A node writes only its
//! own topics of the kinds nodes send, and reads only its own topics of the
//! kinds the controller sends; wildcards are refused except the one the
//! agent uses for its config objects (`config/+`).

use firmware_proto::frame::MessageKind;

use crate::fleet::Topics;

/// The topics of one node login.
#[derive(Debug, Clone)]
pub struct NodeRules {
    /// `{prefix}/nodes/{node}/{leaf}` for each kind a node sends.
    publish: Vec<String>,
    /// The same for each kind the controller sends.
    subscribe: Vec<String>,
    /// `{prefix}/nodes/{node}/config`: under it, `+` or one object's digest.
    config: String,
}

impl NodeRules {
    /// The rules of `node` under `topics`' prefix.
    pub fn new(topics: &Topics, node: &str) -> Self {
        NodeRules {
            publish: MessageKind::FROM_NODE.iter().map(|kind| topics.node(node, *kind)).collect(),
            subscribe: MessageKind::TO_NODE.iter().map(|kind| topics.node(node, *kind)).collect(),
            config: topics.node(node, MessageKind::Config),
        }
    }

    /// Whether the node may publish on `topic` (a topic name, never a
    /// filter: MQTT refuses wildcards there).
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|own| own == topic)
    }

    /// Whether the node may subscribe to `filter`.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        if self.subscribe.iter().any(|own| own == filter) {
            return true;
        }
        filter.strip_prefix(self.config.as_str()).and_then(|rest| rest.strip_prefix('/')).is_some_and(|object| {
            object == "+" || (object.len() == 64 && object.bytes().all(|b| b.is_ascii_hexdigit()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_reads_and_writes_only_its_own_topics_of_the_right_kinds() {
        let topics = Topics::new("flotilla/v1");
        let rules = NodeRules::new(&topics, "pi-1");
        assert!(rules.may_publish("flotilla/v1/nodes/pi-1/status"));
        assert!(rules.may_publish("flotilla/v1/nodes/pi-1/hello"));
        assert!(!rules.may_publish("flotilla/v1/nodes/pi-2/status"), "another node's");
        assert!(!rules.may_publish("flotilla/v1/nodes/pi-1/desired"), "a kind the controller sends");
        assert!(!rules.may_publish("flotilla/v1/nodes/pi-1/status/x"));

        assert!(rules.may_subscribe("flotilla/v1/nodes/pi-1/desired"));
        assert!(rules.may_subscribe("flotilla/v1/nodes/pi-1/config/+"));
        assert!(rules.may_subscribe(&format!("flotilla/v1/nodes/pi-1/config/{}", "ab".repeat(32))));
        for refused in [
            "#",
            "flotilla/#",
            "flotilla/v1/nodes/+/desired",
            "flotilla/v1/nodes/pi-2/desired",
            "flotilla/v1/nodes/pi-1/#",
            "flotilla/v1/nodes/pi-1/+",
            "flotilla/v1/nodes/pi-1/status",
            "flotilla/v1/nodes/pi-1/config/#",
            "flotilla/v1/nodes/pi-1/config/+/x",
            "flotilla/v1/nodes/pi-1/config/zz",
            "$SYS/#",
        ] {
            assert!(!rules.may_subscribe(refused), "{refused}");
        }
    }
}
