//! # End-to-end test support
//!
//! The tests in `tests/tests/` start Flotilla's real binaries. Cargo does not
//! build another package's binaries for a test, so the test command
//! (`scripts/test`) runs `cargo build --workspace --bins` first; the helpers
//! here find those binaries next to the test executable and say so loudly
//! when they are missing.

use std::path::PathBuf;

/// Path of a workspace binary (`flotilla`, `flotilla-agent`, `flotilla-bench`)
/// built into the same target directory and profile as the running test.
///
/// `FLOTILLA_BIN_DIR` overrides the directory, e.g. to test release builds.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("FLOTILLA_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            // target/<profile>/deps/<test-exe> -> target/<profile>
            let exe = std::env::current_exe()?;
            exe.parent()
                .and_then(|deps| deps.parent())
                .map(PathBuf::from)
                .ok_or_else(|| anyhow::anyhow!("cannot locate the target directory from {}", exe.display()))?
        }
    };
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build the binaries first with `cargo build --workspace --bins` (scripts/test does)",
        path.display()
    );
    Ok(path)
}
