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

/// mimalloc instead of the system allocator: with glibc's, a quarter of
/// the engine's CPU went to malloc/free and their arena locks (threads
/// waking each other on futexes); see docs/benchmarks.md.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's default keeps freed memory in transparent huge pages and
/// eagerly committed arenas: with records moving in and out of memory,
/// RSS then grew by ~10 KB per instance that had ever been resident
/// (`basalt bench steady`: 700 MiB at 60,000 checkouts with a 16 MiB
/// budget, against 250 MiB with these settings; see docs/benchmarks.md).
/// Returning pages at once keeps RSS near what is live. (mimalloc v2
/// with the same settings kept RSS lower still on a large hub, but cost
/// the fresh-hub checkout a fifth of its throughput; see
/// docs/benchmarks.md, "The allocator".)
#[cfg(not(feature = "system-allocator"))]
fn tune_allocator() {
    // Option numbers of `mi_option_t` in mimalloc v3's `mimalloc.h`
    // (libmimalloc-sys 0.1.49, pinned by Cargo.lock).
    const ARENA_EAGER_COMMIT: i32 = 4;
    const PURGE_DELAY: i32 = 15;
    const ALLOW_THP: i32 = 43;
    unsafe extern "C" {
        fn mi_option_set_default(option: i32, value: std::os::raw::c_long);
    }
    // SAFETY: mi_option_set_default only stores an option value (unless
    // the option came from a MIMALLOC_* environment variable, which wins,
    // so these can be varied without a rebuild); mimalloc reads them when
    // it next reserves, commits or purges memory.
    unsafe {
        mi_option_set_default(ARENA_EAGER_COMMIT, 0);
        mi_option_set_default(PURGE_DELAY, 0);
        mi_option_set_default(ALLOW_THP, 0);
    }
}

#[cfg(feature = "system-allocator")]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
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
        Command::Serve(args) => serve_cmd::run(args).await,
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
