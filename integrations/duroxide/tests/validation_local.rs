//! duroxide's provider validation suite (0.1.32) against Basalt on a local directory (segment files, fsync):
//! every test the suite has for a long-polling provider (232).

mod common;

validation_suite!(crate::common::Store::Local);
