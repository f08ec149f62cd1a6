//! `basalt-tests`: tests that cross crate or process boundaries.
//!
//! The library holds what both a test and its child processes need (the
//! deterministic payloads the crash tests write and check); the binaries in
//! `src/bin` are the children that tests kill with SIGKILL.
