//! Child process of the log crash test: opens a local task hub, appends
//! records from many producers as fast as it can, and prints
//! `<lsn> <producer> <n>` for each record once it is durable. With a
//! checkpoint interval it also checkpoints the whole log so far. It never
//! stops by itself: the test kills it with SIGKILL.
//!
//! Usage: crash_log_writer <dir> <run> <segment-file|object-per-commit> <checkpoint-every>

use std::io::Write;
use std::time::Duration;

use basalt_storage::{HubOptions, LogLayout, LogOptions, Lsn, PartitionId, Storage, TaskHub};
use basalt_tests::crash_log::{decode_snapshot, encode_snapshot, payload};

const PRODUCERS: u64 = 16;

fn main() {
    if let Err(e) = run() {
        eprintln!("crash_log_writer: {e}");
        std::process::exit(1);
    }
}

fn arg(n: usize) -> Result<String, String> {
    std::env::args()
        .nth(n)
        .ok_or_else(|| "usage: crash_log_writer <dir> <run> <layout> <checkpoint-every>".into())
}

fn run() -> Result<(), String> {
    let dir = arg(1)?;
    let run: u64 = arg(2)?.parse().map_err(|e| format!("run: {e}"))?;
    let layout = match arg(3)?.as_str() {
        "segment-file" => LogLayout::SegmentFile,
        "object-per-commit" => LogLayout::ObjectPerCommit,
        other => return Err(format!("unknown layout {other}")),
    };
    let checkpoint_every: u64 = arg(4)?.parse().map_err(|e| format!("interval: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(write_forever(dir, run, layout, checkpoint_every))
}

async fn write_forever(
    dir: String,
    run: u64,
    layout: LogLayout,
    checkpoint_every: u64,
) -> Result<(), String> {
    let storage = Storage::local_with_layout(&dir, layout).map_err(|e| e.to_string())?;
    let hub = TaskHub::open_or_create(storage, &HubOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let (log, recovered) = hub
        .open_partition(PartitionId(0), LogOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    // The child's "state": every record so far, rebuilt from the snapshot
    // and the log suffix exactly as an engine would.
    let mut state: Vec<(u64, Vec<u8>)> = match &recovered.checkpoint {
        Some(c) => decode_snapshot(&c.payload).ok_or("undecodable snapshot")?,
        None => Vec::new(),
    };
    state.extend(
        recovered
            .records
            .iter()
            .map(|r| (r.lsn.0, r.payload.to_vec())),
    );
    if let Some(torn) = &recovered.torn_tail {
        eprintln!("run {run}: trimmed torn tail {torn:?}");
    }
    println!("ready {}", recovered.next_lsn);

    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let log = log.clone();
        producers.push(tokio::spawn(async move {
            for n in 0.. {
                let appended = log
                    .append(&payload(run, producer, n))
                    .await
                    .map_err(|e| e.to_string())?;
                let lsn = appended.durable().await.map_err(|e| e.to_string())?;
                let mut out = std::io::stdout().lock();
                if writeln!(out, "{lsn} {producer} {n}").is_err() {
                    break;
                }
            }
            Ok::<(), String>(())
        }));
    }
    if checkpoint_every == 0 {
        for p in producers {
            p.await.map_err(|e| e.to_string())??;
        }
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let last = state.last().map_or(0, |(lsn, _)| *lsn);
        if log.durable_lsn().0 < last + checkpoint_every {
            continue;
        }
        let suffix = log
            .read_from(Lsn(last + 1))
            .await
            .map_err(|e| e.to_string())?;
        state.extend(suffix.iter().map(|r| (r.lsn.0, r.payload.to_vec())));
        let at = state.last().map_or(0, |(lsn, _)| *lsn);
        log.checkpoint(Lsn(at), &encode_snapshot(&state))
            .await
            .map_err(|e| e.to_string())?;
    }
}
