//! `basalt`: the Basalt command-line binary: `serve` (the server), client
//! commands against a running server (`start`, `status`, `list`, ...),
//! `inspect` (a task hub on disk) and `bench` (workloads). This file only
//! parses the command line, dispatches, and reports errors: each command
//! lives in its own module.

mod bench;
mod bench_cli;
mod cli;
mod client;
mod inspect;
mod serve_cmd;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// jemalloc instead of the system allocator: with glibc's, a quarter of
/// the engine's CPU went to malloc/free and their arena locks, and
/// mimalloc (used before) let RSS grow with every instance a long-running
/// hub had ever held while the live heap stayed flat; see
/// docs/decisions/0005-jemalloc.md.
#[cfg(all(feature = "jemalloc", not(feature = "system-allocator")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts: a background thread returns
/// freed pages to the system a second after they are freed (by default
/// ten, and only when the process next allocates, so an idle server kept
/// its peak). `_RJEM_MALLOC_CONF` in the environment overrides them.
#[cfg(all(feature = "jemalloc", not(feature = "system-allocator")))]
#[unsafe(export_name = "_rjem_malloc_conf")]
#[allow(non_upper_case_globals)]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run())
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(bench) => bench::run(bench).await,
        Command::Inspect(args) => inspect::run(&args).await,
        Command::Serve(args) => serve_cmd::run(*args).await,
        other => client::run(other).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprint!("{}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, one a line, skipping a cause whose text the
/// line before already quotes (many errors print their source too).
fn describe(error: &anyhow::Error) -> String {
    let mut text = format!("error: {error}\n");
    let mut previous = error.to_string();
    for cause in error.chain().skip(1) {
        let message = cause.to_string();
        if !previous.contains(&message) {
            text.push_str(&format!("  caused by: {message}\n"));
        }
        previous = message;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_quoted_are_skipped() {
        let io = std::io::Error::other("disk on fire");
        let error = anyhow::Error::new(io)
            .context("writing /x: disk on fire")
            .context("warm-up run");
        assert_eq!(
            describe(&error),
            "error: warm-up run\n  caused by: writing /x: disk on fire\n"
        );
    }
}
