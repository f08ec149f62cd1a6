//! Benchmark workloads (being written).
