//! `flotilla mosquitto-config`: Mosquitto password and ACL files for the
//! controller and every enrolled node, so that an external Mosquitto
//! refuses a node that publishes under another node's topics or reads
//! another node's desired state (the MACs and signatures refuse them
//! anyway; this stops them at the broker too).
//!
//! Mosquitto still PUBACKs a denied publish under MQTT 3.1.1, so a refused
//! node cannot tell; the message just goes nowhere.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use firmware_proto::MessageKind;
use firmware_proto::mqtt::Topics;

use super::credentials::{CONTROLLER_USER, Enrolment};

/// Mosquitto's PBKDF2 iteration count for `$7$` hashes (its default).
const ITERATIONS: u32 = 101;

/// A `user:$7$...` password line, as `mosquitto_passwd` writes them.
pub fn password_line(user: &str, password: &str) -> anyhow::Result<String> {
    let salt = crate::store::random_bytes::<12>()?;
    let mut hash = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.as_bytes(), &salt, ITERATIONS, &mut hash);
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(format!("{user}:$7${ITERATIONS}${}${}", b64.encode(salt), b64.encode(hash)))
}

/// The ACL file: the controller reads and writes the whole prefix, a node
/// writes only its own message topics and reads only its own desired topic.
pub fn acl(prefix: &str) -> String {
    let topics = Topics::new(prefix);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by `flotilla mosquitto-config`.\nuser {CONTROLLER_USER}\ntopic readwrite {}/#\n",
        topics.prefix()
    );
    // `%u`: Mosquitto's placeholder for the client's user name, which is
    // the node's name.
    for kind in MessageKind::FROM_NODE {
        let _ = writeln!(out, "pattern write {}", topics.node("%u", kind));
    }
    for kind in MessageKind::TO_NODE {
        // Config objects: one topic each under `config/`.
        let suffix = if kind == MessageKind::Config { "/+" } else { "" };
        let _ = writeln!(out, "pattern read {}{suffix}", topics.node("%u", kind));
    }
    out
}

/// Writes `passwd`, `acl` and `mosquitto.conf` into `out_dir`.
pub fn write(data_dir: &Path, out_dir: &Path, prefix: &str, listener: u16) -> anyhow::Result<usize> {
    let enrolment = Enrolment::load_or_create(data_dir)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    // Mosquitto resolves relative paths from its own working directory.
    let out_dir = &out_dir.canonicalize().with_context(|| format!("resolving {}", out_dir.display()))?;
    let mut passwd = password_line(CONTROLLER_USER, &enrolment.controller_password())? + "\n";
    let nodes = enrolment.nodes();
    for (name, credential) in &nodes {
        passwd += &(password_line(name, &credential.password)? + "\n");
    }
    let private = |name: &str, text: &str| -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = out_dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        // Readable by the owner and group only: started as root, Mosquitto
        // drops to its own user, so give the files (and their directory) to
        // group `mosquitto`, or run it as that user.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))
            .with_context(|| format!("restricting {}", path.display()))
    };
    private("passwd", &passwd)?;
    private("acl", &acl(prefix))?;
    let conf = format!(
        "# Written by `flotilla mosquitto-config`; run mosquitto -c {dir}/mosquitto.conf\n\
         listener {listener}\nallow_anonymous false\npassword_file {dir}/passwd\nacl_file {dir}/acl\n\
         max_packet_size {max}\npersistence false\n",
        dir = out_dir.display(),
        max = super::broker::MAX_PAYLOAD,
    );
    private("mosquitto.conf", &conf)?;
    Ok(nodes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_lines_verify_like_mosquitto_passwd() {
        let line = password_line("edge-1", "secret").unwrap();
        let parts: Vec<&str> = line.split('$').collect();
        assert_eq!(parts[0], "edge-1:");
        assert_eq!(parts[1], "7");
        assert_eq!(parts[2], "101");
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode(parts[3]).unwrap();
        let mut hash = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<sha2::Sha512>(b"secret", &salt, 101, &mut hash);
        assert_eq!(b64.decode(parts[4]).unwrap(), hash);
    }

    #[test]
    fn nodes_may_write_only_their_own_topics() {
        let acl = acl("flotilla/v1/");
        assert!(acl.contains("pattern write flotilla/v1/nodes/%u/status"));
        assert!(acl.contains("pattern read flotilla/v1/nodes/%u/desired"));
        assert!(acl.contains("pattern read flotilla/v1/nodes/%u/logreq"));
        assert!(acl.contains("pattern read flotilla/v1/nodes/%u/pods"));
        assert!(acl.contains("pattern read flotilla/v1/nodes/%u/config/+"));
        assert!(acl.contains("pattern write flotilla/v1/nodes/%u/logs"));
        assert!(!acl.contains("pattern write flotilla/v1/nodes/%u/logreq"));
        assert!(!acl.contains("pattern write flotilla/v1/nodes/%u/desired"));
        assert!(!acl.contains("pattern write flotilla/v1/nodes/%u/#"));
    }
}
