//! `basalt-tests`: tests that cross crate or process boundaries.
//!
//! The library holds what both a test and its child processes need; the
//! binaries in `src/bin` are the children that tests kill with SIGKILL.

pub mod crash_log;
pub mod hello5;
