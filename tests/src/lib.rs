//! `basalt-tests`: tests that cross crate or process boundaries.
//!
//! The library holds what both a test and its child processes need; the
//! binaries in `src/bin` are the children that tests kill with SIGKILL.

pub mod crash_log;
pub mod hello5;

/// The seed of a randomized crash test: `BASALT_CRASH_SEED` when set (to
/// replay a failure), else the clock. Tests print it.
pub fn crash_seed() -> u64 {
    std::env::var("BASALT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        })
}
