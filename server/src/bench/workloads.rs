//! `basalt bench hello5` and `basalt bench sequence`: whole workloads on
//! the engine, reported as a table (or JSON).

use basalt_benches::workloads::{self, HubStore, WorkloadConfig, WorkloadOutcome};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::{BankArgs, CheckoutArgs, Hello5Args, SequenceArgs};

#[derive(Serialize)]
struct Row {
    run: String,
    #[serde(flatten)]
    outcome: WorkloadOutcome,
}

fn progress_bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:30} [{bar:30}] {pos}/{len} ({elapsed})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_owned());
    bar
}

/// Runs `basalt bench hello5`.
pub async fn hello5(args: &Hello5Args) -> anyhow::Result<()> {
    let mut runs: Vec<(String, WorkloadConfig, u64)> = Vec::new();
    let base = WorkloadConfig {
        partitions: args.partitions,
        dir: args.dir.clone(),
        ..WorkloadConfig::default()
    };
    runs.push((
        "local fsync, group commit".into(),
        base.clone(),
        args.instances,
    ));
    if !args.no_baseline {
        runs.push((
            "local fsync, group commit off".into(),
            WorkloadConfig {
                group_commit: false,
                ..base.clone()
            },
            args.baseline_instances,
        ));
    }
    if args.memory {
        runs.push((
            "in-memory, group commit".into(),
            WorkloadConfig {
                store: HubStore::Memory,
                ..base.clone()
            },
            args.instances,
        ));
    }
    let mut rows = Vec::new();
    for (label, config, instances) in runs {
        let bar = progress_bar(instances, &label);
        let outcome = workloads::hello5(&config, instances, &|done| bar.set_position(done)).await?;
        bar.finish_and_clear();
        rows.push(Row {
            run: label,
            outcome,
        });
    }
    report(
        &format!(
            "hello5: orchestrations of 5 sequential trivial activities, started at once, {} partitions, in-process SDK worker",
            args.partitions
        ),
        &rows,
        args.json,
    )
}

/// Runs `basalt bench checkout`.
pub async fn checkout(args: &CheckoutArgs) -> anyhow::Result<()> {
    let base = WorkloadConfig {
        partitions: args.partitions,
        dir: args.dir.clone(),
        ..WorkloadConfig::default()
    };
    let mut runs: Vec<(String, WorkloadConfig, u64)> = vec![(
        "local fsync, group commit".into(),
        base.clone(),
        args.instances,
    )];
    if !args.no_baseline {
        runs.push((
            "local fsync, group commit off".into(),
            WorkloadConfig {
                group_commit: false,
                ..base.clone()
            },
            args.baseline_instances,
        ));
    }
    if args.memory {
        runs.push((
            "in-memory, group commit".into(),
            WorkloadConfig {
                store: HubStore::Memory,
                ..base.clone()
            },
            args.instances,
        ));
    }
    let mut rows = Vec::new();
    let mut checks = Vec::new();
    for (label, config, instances) in runs {
        let bar = progress_bar(instances, &label);
        let (outcome, check) =
            workloads::checkout(&config, instances, args.pool, args.stock, &|done| {
                bar.set_position(done)
            })
            .await?;
        bar.finish_and_clear();
        checks.push((label.clone(), check));
        rows.push(Row {
            run: label,
            outcome,
        });
    }
    report(
        &format!(
            "checkout: 2 items each from {} products (stock {} each), reserved on Stock entities, then a receipt activity; {} partitions",
            args.pool, args.stock, args.partitions
        ),
        &rows,
        args.json,
    )?;
    if !args.json {
        println!();
        for (label, check) in checks {
            println!(
                "{label}: stock consistent: {} units reserved = {} units taken from stock; {} checkouts fully reserved, {} lines refused",
                check.units_reserved,
                check.units_taken_from_stock,
                check.fully_reserved,
                check.refused_lines
            );
        }
    }
    Ok(())
}

/// Runs `basalt bench bank`.
pub async fn bank(args: &BankArgs) -> anyhow::Result<()> {
    let config = WorkloadConfig {
        partitions: args.partitions,
        dir: args.dir.clone(),
        ..WorkloadConfig::default()
    };
    let label = "local fsync, group commit";
    let bar = progress_bar(args.transfers, label);
    let (outcome, check) = workloads::bank(
        &config,
        args.transfers,
        args.accounts,
        args.balance,
        &|done| bar.set_position(done),
    )
    .await?;
    bar.finish_and_clear();
    let rows = vec![Row {
        run: label.into(),
        outcome,
    }];
    report(
        &format!(
            "bank: transfers between {} accounts on different partitions, each locking both (critical section); {} partitions",
            args.accounts, args.partitions
        ),
        &rows,
        args.json,
    )?;
    if !args.json {
        println!(
            "\ntotal balance conserved: {} before, {} after; {} transfers moved money",
            check.total_before, check.total_after, check.moved
        );
    }
    Ok(())
}

/// Runs `basalt bench sequence`.
pub async fn sequence(args: &SequenceArgs) -> anyhow::Result<()> {
    let config = WorkloadConfig {
        partitions: args.partitions,
        dir: args.dir.clone(),
        ..WorkloadConfig::default()
    };
    let bar = progress_bar(1, "local fsync, group commit");
    let outcome = workloads::sequence(&config, args.steps).await?;
    bar.finish_and_clear();
    let per_step_ms = outcome.elapsed.as_secs_f64() * 1000.0 / args.steps as f64;
    let rows = vec![Row {
        run: "local fsync, group commit".into(),
        outcome,
    }];
    report(
        &format!(
            "sequence: one orchestration calling a trivial activity {} times ({per_step_ms:.3} ms per step)",
            args.steps
        ),
        &rows,
        args.json,
    )
}

fn report(title: &str, rows: &[Row], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    println!("{title}\n");
    println!(
        "{:32} {:>8} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>11} {:>9}",
        "run",
        "orch.",
        "time",
        "orch./s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "writes",
        "writes/orch",
        "cpu ms/o"
    );
    for row in rows {
        let o = &row.outcome;
        println!(
            "{:32} {:>8} {:>8.2}s {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9} {:>11.3} {:>9}",
            row.run,
            o.orchestrations,
            o.elapsed.as_secs_f64(),
            o.orchestrations_per_sec,
            o.latency_ms[0],
            o.latency_ms[1],
            o.latency_ms[2],
            o.latency_ms[3],
            o.storage_writes,
            o.storage_writes as f64 / o.orchestrations as f64,
            o.cpu_ms_per_orchestration
                .map_or("-".into(), |c| format!("{c:.3}")),
        );
    }
    Ok(())
}
