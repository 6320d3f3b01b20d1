//! Tests that need something a machine may lack (PostgreSQL, FUSE, the ONNX
//! Runtime library) say so through [`skip`]: under `CI=true` a missing
//! requirement fails the test (CI runs everything); elsewhere the test
//! returns early, and the skip is printed and recorded in the file named by
//! `HMS_SKIPPED_LOG`, which `cargo xtask test` lists after the run.

use std::io::Write;

/// Whether this run is CI's (`CI=true`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Records that `test` cannot run here because of `why`; panics under
/// `CI=true`. The caller returns right after.
pub fn skip(test: &str, why: &str) {
    assert!(!ci(), "{test} must run under CI=true but cannot: {why}");
    let line = format!("{test}: {why}");
    // Straight to the process's stderr: the test harness may hide captured output.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {line}");
    if let Some(path) = std::env::var_os("HMS_SKIPPED_LOG") {
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"));
    }
}
