//! Bounded container logs: each replica's stdout and stderr go to one file;
//! past a size it is copied to `<file>.1` (older `.1` becomes `.2`, and so
//! on up to a count) and truncated in place. The container keeps writing
//! through its O_APPEND descriptor, so nothing is lost but the oldest
//! rotation, and a chatty workload cannot fill the device's storage.

use std::path::{Path, PathBuf};

/// Limits for one replica's logs.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Rotate when the live file is larger than this.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { max_bytes: 1 << 20, keep: 2 }
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Rotates `path` if it grew past the limit. Returns whether it rotated.
pub fn rotate_if_needed(path: &Path, limits: LogLimits) -> std::io::Result<bool> {
    let size = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if size <= limits.max_bytes {
        return Ok(false);
    }
    if limits.keep == 0 {
        std::fs::OpenOptions::new().write(true).open(path)?.set_len(0)?;
        return Ok(true);
    }
    for n in (1..limits.keep).rev() {
        let from = rotated(path, n);
        if from.exists() {
            std::fs::rename(&from, rotated(path, n + 1))?;
        }
    }
    std::fs::copy(path, rotated(path, 1))?;
    std::fs::OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_log_past_its_limit_is_rotated_and_the_writer_keeps_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.log");
        let mut writer = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let limits = LogLimits { max_bytes: 100, keep: 2 };
        for round in 0..3 {
            writer.write_all(&[b'a' + round; 150]).unwrap();
            assert!(rotate_if_needed(&path, limits).unwrap());
        }
        writer.write_all(b"after").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"after", "appends go to the start of the truncated file");
        assert_eq!(std::fs::read(rotated(&path, 1)).unwrap(), vec![b'c'; 150]);
        assert_eq!(std::fs::read(rotated(&path, 2)).unwrap(), vec![b'b'; 150]);
        assert!(!rotated(&path, 3).exists(), "only `keep` rotations are kept");
        assert!(!rotate_if_needed(&path, limits).unwrap());
    }
}
