//! Controllers: pure steps from a [`Snapshot`](crate::reconcile::Snapshot)
//! to the writes that move it towards what was declared.
//!
//! A controller reads a snapshot and what it is told (answers it asked
//! for, the time) and returns writes; it does no I/O. Whatever must ask
//! the world (a registry, the network) lives outside this module and feeds
//! it answers, so every decision here is testable without a server. Nothing
//! here imports the fleet transport, the API, the registry, `rumqttc`,
//! `axum` or an HTTP client.
//!
//! Fields and their one writer (the others only read):
//!
//! | field | writer |
//! |---|---|
//! | Pod `metadata.annotations[flotilla.io/image-digest, image-archs, image-error]` | [`image_pinning`] |
//! | Pod `metadata.deletionTimestamp` | the rollouts (`Op::Retire`, set once by the store) |
//! | Pod `spec.nodeName`, status `PodScheduled` and Pending reasons | scheduling (`reconcile::schedule_pending`) |
//! | Pod status reported by the node (phase once running, restarts, usage, Ready) | the fleet inbox |

pub mod image_pinning;

#[cfg(test)]
mod tests {
    /// The rule of this module, held by reading its sources: a controller
    /// that reached for the transport, the API or the network could no
    /// longer be tested from a snapshot alone.
    #[test]
    fn controllers_import_no_transport_api_registry_or_network() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controllers");
        let forbidden =
            ["crate::fleet", "crate::api", "crate::registry", "crate::pinning", "rumqttc", "axum", "ureq", "tokio"];
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let source = std::fs::read_to_string(&path).unwrap();
            // Code only: docs may name what is not used, and the rule's own
            // list in this test is not an import.
            let code = source.split("#[cfg(test)]").next().unwrap_or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for word in forbidden {
                    assert!(!line.contains(word), "{} uses {word}: {line}", path.display());
                }
            }
            checked += 1;
        }
        assert!(checked >= 2, "no sources found in {}", dir.display());
    }
}
