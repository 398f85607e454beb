//! Where the workspace is, for test files that read the repository's files.

use std::path::PathBuf;

/// The workspace root. The manifest directory is read when the test runs (cargo and nextest
/// set it) rather than baked in when it was built: a test binary built in one checkout and
/// found fresh in another (one build directory for both) still reads the files it runs beside.
pub fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}
