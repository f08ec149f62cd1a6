//! Basalt's benchmark workloads.
//!
//! Each workload is a plain async driver that both the criterion benches
//! (`cargo bench -p basalt-benches`) and the `basalt bench` command run, so
//! the numbers of the two agree by construction.
//!
//! - [`group_commit`]: many producers appending small records to one
//!   partition log, with group commit against the per-record baselines.
//! - [`bank`]: transfers between accounts on different partitions inside
//!   critical sections.
//! - [`checkout`]: the checkout workload's registry and request generator
//!   (orchestrations calling `Stock` entities, then a receipt activity).
//! - [`workloads`]: whole orchestration workloads (`checkout`, `hello5`,
//!   `sequence`, `fanout`, `bank`, `latency`) on the real engine with the
//!   in-process SDK worker, each checking every output.
//! - [`report`]: the one report format of every workload; [`environment`]
//!   and [`resources`]: where it ran and what it cost (CPU, memory);
//!   [`store`]: which storage it ran on, refusing a volatile "fsync".

pub mod bank;
pub mod checkout;
pub mod environment;
pub mod group_commit;
pub mod report;
pub mod resources;
pub mod steady;
pub mod store;
pub mod workloads;
