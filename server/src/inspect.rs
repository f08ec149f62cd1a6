//! `basalt inspect <dir>`: explains a task hub from its storage alone,
//! read-only and without the directory lock, so it works on a stopped hub
//! and on one a server is running. With `--verify` it checks every
//! checkpoint and segment and exits with status 1 on damage, naming the
//! object and the byte offset.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use basalt_engine::summarize_partition;
use basalt_storage::{
    Finding, PartitionId, Storage, TaskHub, list_checkpoints, list_segments, verify_partition,
};
use serde::Serialize;

use crate::cli::InspectArgs;

#[derive(Serialize)]
struct PartitionReport {
    partition: u32,
    segments: usize,
    segment_bytes: u64,
    first_lsn: Option<u64>,
    last_lsn: u64,
    checkpoint_lsn: Option<u64>,
    instances_by_status: BTreeMap<String, u64>,
    entities: u64,
    oldest_running: Option<(String, u64)>,
    findings: Vec<Finding>,
}

#[derive(Serialize)]
struct HubReport {
    location: String,
    name: String,
    id: String,
    partition_count: u32,
    format_version: u16,
    created_unix_ms: u64,
    partitions: Vec<PartitionReport>,
    verified: bool,
}

/// Runs `basalt inspect`.
pub async fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let storage = Storage::local_read_only(&args.dir)
        .with_context(|| format!("cannot read {}", args.dir.display()))?;
    let hub = TaskHub::open_existing(storage.clone()).await?;
    let meta = hub.meta().clone();
    let mut partitions = Vec::new();
    for p in 0..meta.partition_count {
        let partition = PartitionId(p);
        let segments = list_segments(&storage, partition).await?;
        let checkpoints = list_checkpoints(&storage, partition).await?;
        // A partition that cannot be read is reported, not fatal: the
        // point of inspecting is to see what is wrong. Its store is read a
        // page at a time, so a hub of any size is inspected in bounded
        // memory.
        let (summary, unreadable) =
            match summarize_partition(&storage, p, meta.partition_count).await {
                Ok(summary) => (Some(summary), None),
                Err(e) => (None, Some(e.to_string())),
            };
        let mut findings = if args.verify {
            verify_partition(&storage, partition).await?
        } else {
            Vec::new()
        };
        if let Some(problem) = unreadable {
            findings.push(Finding {
                object: format!("partition {p}"),
                offset: 0,
                problem: format!("cannot be replayed: {problem}"),
                torn_tail: false,
            });
        }
        partitions.push(PartitionReport {
            partition: p,
            segments: segments.len(),
            segment_bytes: segments.iter().map(|s| s.size_bytes).sum(),
            first_lsn: segments.first().map(|s| s.first_lsn.0),
            last_lsn: summary.as_ref().map_or(0, |s| s.last_lsn),
            checkpoint_lsn: summary
                .as_ref()
                .and_then(|s| s.store_checkpoint_lsn)
                .or_else(|| checkpoints.last().map(|c| c.lsn.0)),
            instances_by_status: summary
                .as_ref()
                .map(|s| s.instances_by_status.clone())
                .unwrap_or_default(),
            entities: summary.as_ref().map_or(0, |s| s.entities),
            oldest_running: summary.and_then(|s| s.oldest_unfinished),
            findings,
        });
    }
    let report = HubReport {
        location: storage.location().to_owned(),
        name: meta.name,
        id: meta.id,
        partition_count: meta.partition_count,
        format_version: meta.format_version,
        created_unix_ms: meta.created_unix_ms,
        partitions,
        verified: args.verify,
    };
    let damage: Vec<&Finding> = report
        .partitions
        .iter()
        .flat_map(|p| p.findings.iter())
        .filter(|f| !f.torn_tail)
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if !damage.is_empty() {
        bail!("{} damaged object(s) found", damage.len());
    }
    Ok(())
}

fn print_report(report: &HubReport) {
    println!("task hub {} (id {})", report.name, report.id);
    println!("  location        {}", report.location);
    println!("  partitions      {}", report.partition_count);
    println!("  format version  {}", report.format_version);
    println!(
        "  created         {} ms since the Unix epoch",
        report.created_unix_ms
    );
    println!();
    println!(
        "{:>4} {:>9} {:>12} {:>10} {:>10} {:>11} {:>8}  instances by status",
        "part", "segments", "bytes", "first LSN", "last LSN", "checkpoint", "entities"
    );
    for p in &report.partitions {
        let statuses: Vec<String> = p
            .instances_by_status
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        println!(
            "{:>4} {:>9} {:>12} {:>10} {:>10} {:>11} {:>8}  {}",
            p.partition,
            p.segments,
            p.segment_bytes,
            p.first_lsn.map_or("-".into(), |l| l.to_string()),
            p.last_lsn,
            p.checkpoint_lsn.map_or("-".into(), |l| l.to_string()),
            p.entities,
            if statuses.is_empty() {
                "-".into()
            } else {
                statuses.join(", ")
            }
        );
    }
    let oldest = report
        .partitions
        .iter()
        .filter_map(|p| p.oldest_running.as_ref())
        .min_by_key(|(_, t)| *t);
    if let Some((id, created)) = oldest {
        println!("\noldest unfinished instance: {id} (created {created} ms since the Unix epoch)");
    }
    let findings: Vec<&Finding> = report
        .partitions
        .iter()
        .flat_map(|p| p.findings.iter())
        .collect();
    if report.verified || !findings.is_empty() {
        if findings.is_empty() {
            println!("\nverify: every checkpoint and segment checked, no damage");
        } else {
            println!();
            for f in findings {
                let kind = if f.torn_tail {
                    "torn tail (never acknowledged; recovery trims it)"
                } else {
                    "DAMAGE"
                };
                println!(
                    "verify: {kind}: {} at offset {}: {}",
                    f.object, f.offset, f.problem
                );
            }
        }
    }
}
