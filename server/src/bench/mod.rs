//! `basalt bench`: runs the workloads of `basalt-benches` and reports them
//! in one schema, for people (tables) and programs (`--json FILE`).

mod group_commit;
mod output;
mod sidecar;
mod sidecar_sequence;
mod steady;
mod workloads;

use crate::bench_cli::BenchCommand;

/// Runs one `basalt bench` subcommand.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Checkout(args) => workloads::checkout(&args).await,
        BenchCommand::Hello5(args) => workloads::hello5(&args).await,
        BenchCommand::Sequence(args) => workloads::sequence(&args).await,
        BenchCommand::Fanout(args) => workloads::fanout(&args).await,
        BenchCommand::Bank(args) => workloads::bank(&args).await,
        BenchCommand::Latency(args) => workloads::latency(&args).await,
        BenchCommand::SidecarCheckout(args) => sidecar::checkout(&args).await,
        BenchCommand::SidecarSequence(args) => sidecar_sequence::run(&args).await,
        BenchCommand::GroupCommit(args) => group_commit::run(&args).await,
        BenchCommand::Steady(args) => steady::run(&args).await,
    }
}
