//! `basalt bench`: runs the workloads of `basalt-benches` and reports them
//! for people (tables) or programs (`--json`).

mod group_commit;

use crate::cli::BenchCommand;

/// Runs one `basalt bench` subcommand.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::GroupCommit(args) => group_commit::run(&args).await,
    }
}
