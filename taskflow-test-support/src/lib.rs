//! What the test suites of every crate share (a dev-dependency only): databases cloned from a
//! migrated template, the test broker's topics, reading topics back, producing events, the
//! services as child processes, and a test Dapr sidecar.

pub mod dapr;
pub mod db;
pub mod kafka;
pub mod process;
pub mod proxy;

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

/// The checkout's root, from the running test's `CARGO_MANIFEST_DIR` (cargo sets it for every
/// test binary it runs; every crate sits directly under the root). Read at run time, not with
/// `env!`: test binaries in a target directory shared by several checkouts may have been built
/// in another one, and would then read and write that checkout's files.
pub fn workspace_root() -> PathBuf {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test");
    PathBuf::from(crate_dir).join("..")
}

/// For anything to happen (a group join, consuming a few hundred events).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Poll `check` until it passes; on timeout, fail with its last complaint and `context()`.
pub async fn eventually(
    what: &str,
    context: impl Fn() -> String,
    mut check: impl AsyncFnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(()) => return,
            Err(last) if Instant::now() >= deadline => panic!(
                "timed out after {PATIENCE:?} waiting for {what}; last: {last}\n{}",
                context()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}
