//! `basalt bench`: runs the workloads of `basalt-benches` and reports them
//! for people (tables) or programs (`--json`).

mod group_commit;
mod sidecar_checkout;
mod workloads;

use crate::cli::BenchCommand;

/// Runs one `basalt bench` subcommand.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::GroupCommit(args) => group_commit::run(&args).await,
        BenchCommand::Hello5(args) => workloads::hello5(&args).await,
        BenchCommand::Sequence(args) => workloads::sequence(&args).await,
        BenchCommand::Checkout(args) => workloads::checkout(&args).await,
        BenchCommand::Bank(args) => workloads::bank(&args).await,
        BenchCommand::SidecarCheckout(args) => sidecar_checkout::run(&args).await,
    }
}
