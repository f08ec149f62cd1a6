//! `basalt-partitions`: the partition state machine.
//!
//! It will own `apply(event) -> effects` over a partition's instances,
//! timers, activity queue, outbox and per-origin dedup positions, plus
//! snapshot and restore. It must never do I/O, read a clock, spawn threads
//! or draw random numbers: state is a pure function of the log (I2).
//!
//! Status: empty. It is filled by the issue that builds the partitioned
//! engine; nothing here pretends to work yet.
