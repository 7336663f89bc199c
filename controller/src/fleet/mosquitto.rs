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

/// Writes `passwd`, `acl` and `mosquitto.conf` into `out_dir`
/// (`flotilla mosquitto-config`).
pub fn write(data_dir: &Path, out_dir: &Path, prefix: &str, listener: u16) -> anyhow::Result<usize> {
    let enrolment = Enrolment::load_or_create(data_dir)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    // Mosquitto resolves relative paths from its own working directory.
    let out_dir = &out_dir.canonicalize().with_context(|| format!("resolving {}", out_dir.display()))?;
    let nodes = MosquittoFiles::new(out_dir, prefix).write(&enrolment)?;
    let conf = format!(
        "# Written by `flotilla mosquitto-config`; run mosquitto -c {dir}/mosquitto.conf\n\
         listener {listener}\nallow_anonymous false\npassword_file {dir}/passwd\nacl_file {dir}/acl\n\
         max_packet_size {max}\npersistence false\n\
         # `flotilla server --mosquitto-dir {dir}` signals this pid after each enrolment,\n\
         # revocation and rotation.\npid_file {dir}/{PID_FILE}\n",
        dir = out_dir.display(),
        max = super::broker::MAX_PAYLOAD,
    );
    private(&out_dir.join("mosquitto.conf"), &conf)?;
    Ok(nodes)
}

/// The pid file Mosquitto writes (`pid_file` in the `mosquitto.conf` above).
pub const PID_FILE: &str = "mosquitto.pid";

/// A file readable by the owner and group only: started as root, Mosquitto
/// drops to its own user, so give the files (and their directory) to group
/// `mosquitto`, or run it as that user.
fn private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o640))
        .with_context(|| format!("restricting {}", temporary.display()))?;
    // Renamed into place: Mosquitto never reads half a file.
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
}

/// An external Mosquitto's password and ACL files, kept in step with the
/// enrolled nodes by `flotilla server --mosquitto-dir` (or written once by
/// `flotilla mosquitto-config`).
pub struct MosquittoFiles {
    dir: std::path::PathBuf,
    prefix: String,
    /// User -> (password, its `passwd` line): a line is hashed once per
    /// password, not on every rewrite.
    lines: std::collections::HashMap<String, (String, String)>,
}

impl MosquittoFiles {
    /// The files in `dir`, for topics under `prefix`.
    pub fn new(dir: &Path, prefix: &str) -> Self {
        MosquittoFiles { dir: dir.to_owned(), prefix: prefix.to_owned(), lines: Default::default() }
    }

    /// Writes `passwd` and `acl` for the controller and every enrolled
    /// node; returns the number of nodes.
    pub fn write(&mut self, enrolment: &Enrolment) -> anyhow::Result<usize> {
        let mut users = vec![(CONTROLLER_USER.to_owned(), enrolment.controller_password())];
        let nodes = enrolment.nodes();
        users.extend(nodes.into_iter().map(|(name, credential)| (name, credential.password)));
        let mut passwd = String::new();
        let mut lines = std::collections::HashMap::with_capacity(users.len());
        for (user, password) in users {
            let line = match self.lines.remove(&user) {
                Some((kept, line)) if kept == password => line,
                _ => password_line(&user, &password)?,
            };
            passwd += &line;
            passwd.push('\n');
            lines.insert(user, (password, line));
        }
        self.lines = lines;
        private(&self.dir.join("passwd"), &passwd)?;
        private(&self.dir.join("acl"), &acl(&self.prefix))?;
        Ok(self.lines.len() - 1)
    }

    /// Writes the files and tells Mosquitto to read them again (SIGHUP to
    /// the pid in its pid file); a Mosquitto not running yet reads them at
    /// its start.
    pub fn sync(&mut self, enrolment: &Enrolment) -> anyhow::Result<usize> {
        let nodes = self.write(enrolment)?;
        let pid_path = self.dir.join(PID_FILE);
        match std::fs::read_to_string(&pid_path) {
            Ok(text) => {
                let pid: i32 = text.trim().parse().with_context(|| format!("{}: not a pid", pid_path.display()))?;
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP)
                    .with_context(|| format!("signalling Mosquitto (pid {pid} from {})", pid_path.display()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %pid_path.display(), "no Mosquitto pid file: Mosquitto reads the new files when it starts (is `pid_file` in its configuration?)");
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", pid_path.display())),
        }
        Ok(nodes)
    }
}

/// Keeps the files in `dir` in step with `enrolment` for as long as the
/// controller runs: once now, then after every change to node credentials
/// (enrolment, revocation, rotation), coalesced.
pub fn spawn_sync(dir: std::path::PathBuf, prefix: String, enrolment: Enrolment) -> tokio::task::JoinHandle<()> {
    let mut changes = enrolment.watch_changes();
    tokio::spawn(async move {
        let files = std::sync::Arc::new(std::sync::Mutex::new(MosquittoFiles::new(&dir, &prefix)));
        loop {
            let (files, enrolment) = (files.clone(), enrolment.clone());
            let synced =
                tokio::task::spawn_blocking(move || files.lock().unwrap_or_else(|p| p.into_inner()).sync(&enrolment))
                    .await;
            match synced {
                Ok(Ok(nodes)) => {
                    tracing::info!(dir = %dir.display(), nodes, "Mosquitto's password and ACL files updated")
                }
                Ok(Err(e)) => {
                    tracing::error!(dir = %dir.display(), error = %format!("{e:#}"), "cannot update Mosquitto's files; retried at the next change")
                }
                Err(e) => tracing::error!(error = %e, "the Mosquitto file writer failed"),
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    })
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
