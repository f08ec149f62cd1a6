//! `basalt bench group-commit`: every selected (store, mode, producers)
//! run of the group-commit workload, one after the other, reported in the
//! one schema (configs `group-commit`, `serial-per-record`,
//! `concurrent-per-record`, each run with its `producers` and store), then
//! the speed-ups of group commit over both baselines. Every run reads its
//! records back from the store: a count that differs fails the check.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use basalt_benches::environment::{Environment, file_system};
use basalt_benches::group_commit::{self, Config, Mode, Progress, Store};
use basalt_benches::report::{Check, DurableWrites, Latency, Run};
use basalt_benches::resources;
use indicatif::{ProgressBar, ProgressStyle};

use super::output::{Finished, Outcome};
use crate::bench_cli::GroupCommitArgs;

/// Runs the benchmark and reports it.
pub async fn run(args: &GroupCommitArgs) -> anyhow::Result<()> {
    let url = storage_url(args)?;
    let dir = args.common.bench_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let fs = file_system(&dir).with_context(|| format!("the file system of {}", dir.display()))?;
    let plan = plan(args, &dir, url.as_deref())?;
    if fs.volatile && plan.iter().any(|c| c.store.is_local()) && !args.common.allow_volatile {
        bail!(
            "{} is on {}, where fsync does not reach stable storage: a \"local fsync\" figure from there would be a lie. Use --dir on a disk, or --allow-volatile",
            dir.display(),
            fs.name
        );
    }
    let finished = execute(&plan, args.common.repeat.max(1)).await?;
    let notes = ratios(&finished, args);
    let (where_, fs_name, durable) = match &url {
        Some(url) => (
            url.clone(),
            format!(
                "object store ({})",
                url.split("://").next().unwrap_or("url")
            ),
            true,
        ),
        None => (dir.display().to_string(), fs.name.clone(), !fs.volatile),
    };
    Outcome {
        workload: "group-commit",
        title: format!(
            "group commit: {}-byte records, each producer waits for its record to be durable; hubs in {where_} ({fs_name}); one untimed warm-up run per store",
            args.record_bytes,
        ),
        settings: args,
        common: &args.common,
        environment: Environment::capture(where_, fs_name, durable),
        finished,
        notes,
    }
    .report()
}

/// The object-store URL `--storage` names, if any (`None`: this machine's
/// stores, as `--store` selects them).
fn storage_url(args: &GroupCommitArgs) -> anyhow::Result<Option<String>> {
    match args.common.storage.as_deref() {
        None | Some("local" | "memory") => Ok(None),
        Some(memory) if memory.starts_with("memory:") => Ok(None),
        Some(url) if url.contains("://") && !url.starts_with("file://") => {
            // Checked now, so a typo fails before any run.
            basalt_storage::Storage::from_url(url)?;
            Ok(Some(url.trim_end_matches('/').to_owned()))
        }
        Some(other) => bail!(
            "--storage {other:?}: group-commit takes memory://, s3://... or az://... (local folders: --dir and --store)"
        ),
    }
}

/// The runs to make, in order.
fn plan(
    args: &GroupCommitArgs,
    dir: &std::path::Path,
    url: Option<&str>,
) -> anyhow::Result<Vec<Config>> {
    if args.producers.contains(&0) {
        bail!("--producers: every producer count must be at least 1");
    }
    let memory_only = args
        .common
        .storage
        .as_deref()
        .is_some_and(|s| s.starts_with("memory"));
    let stores = match url {
        Some(_) => vec![Store::Url],
        None if memory_only => vec![Store::Memory],
        None => args.stores(),
    };
    let modes = args.modes();
    let mut plan = Vec::new();
    for &store in &stores {
        for &mode in &modes {
            for producers in args.producer_counts() {
                plan.push(Config {
                    record_bytes: args.record_bytes,
                    dir: Some(dir.to_path_buf()),
                    url: url.map(str::to_owned),
                    ..Config::new(
                        mode,
                        store,
                        producers,
                        args.records_for(mode, store, producers),
                    )
                });
            }
        }
    }
    if plan.is_empty() {
        bail!("nothing to run: select at least one store, mode and producer count");
    }
    Ok(plan)
}

/// Runs the plan `repeat` times under a progress bar on stderr.
async fn execute(plan: &[Config], repeat: u32) -> anyhow::Result<Vec<Finished>> {
    let total: u64 = plan.iter().map(|cfg| cfg.records).sum::<u64>() * u64::from(repeat);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {human_pos}/{human_len} records  {wide_msg}",
        )
        .context("progress bar template")?,
    );
    let progress = Progress::new();
    let ticker = tokio::spawn({
        let (bar, progress) = (bar.clone(), progress.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                bar.set_position(progress.records_done());
            }
        }
    });
    let mut finished = Vec::new();
    let outcome = measure(plan, repeat, &bar, &progress, &mut finished).await;
    ticker.abort();
    bar.finish_and_clear();
    outcome.map(|()| finished)
}

/// The warm-up, then every run of the plan.
async fn measure(
    plan: &[Config],
    repeat: u32,
    bar: &ProgressBar,
    progress: &Progress,
    finished: &mut Vec<Finished>,
) -> anyhow::Result<()> {
    warm_up(plan, bar).await?;
    for round in 1..=repeat {
        for cfg in plan {
            bar.set_message(label(cfg));
            resources::reset_peak_rss();
            let outcome = group_commit::run_with_progress(cfg, progress)
                .await
                .with_context(|| format!("{}, {} records", label(cfg), cfg.records))?;
            let mut run = Run::new(cfg.mode.slug(), outcome.records, 0, outcome.elapsed);
            run.repeat = round;
            run.producers = Some(cfg.producers);
            run.extra.insert("store".into(), cfg.store.slug().into());
            run.extra.insert(
                "records_per_write".into(),
                outcome.records_per_write().into(),
            );
            run.latency_ms = Latency::from_micros(&outcome.latency_us);
            run.set_writes(match outcome.log_stats {
                Some(stats) => DurableWrites::from(stats),
                // One object put per record: no log, no checkpoints.
                None => DurableWrites {
                    group_commits: outcome.storage_writes,
                    log_bytes: outcome.records * cfg.record_bytes as u64,
                    ..DurableWrites::default()
                },
            });
            if let Some(cpu) = outcome.cpu {
                run.set_cpu(cpu);
            }
            run.peak_rss_bytes = outcome.peak_rss_bytes;
            let check = if outcome.read_back == outcome.records {
                Check {
                    passed: true,
                    detail: format!(
                        "{} distinct records read back from the store",
                        outcome.read_back
                    ),
                }
            } else {
                Check {
                    passed: false,
                    detail: format!(
                        "{} records acknowledged durable but {} distinct ones read back",
                        outcome.records, outcome.read_back
                    ),
                }
            };
            finished.push(Finished { run, check });
        }
    }
    Ok(())
}

/// "store, mode, N producers" of one run.
fn label(cfg: &Config) -> String {
    let plural = if cfg.producers == 1 { "" } else { "s" };
    format!(
        "{}, {}, {} producer{plural}",
        cfg.store, cfg.mode, cfg.producers
    )
}

/// Records of the untimed warm-up run of each store.
const WARM_UP_RECORDS: u64 = 100;

/// One short untimed group-commit run per store in the plan, so the first
/// measured run does not pay for cold caches, lazily started threads and
/// the first files of the directory.
async fn warm_up(plan: &[Config], bar: &ProgressBar) -> anyhow::Result<()> {
    let mut warmed: Vec<Store> = Vec::new();
    for cfg in plan {
        if warmed.contains(&cfg.store) {
            continue;
        }
        warmed.push(cfg.store);
        bar.set_message(format!("{}, warming up", cfg.store));
        let warm = Config {
            mode: Mode::GroupCommit,
            producers: 1,
            records: WARM_UP_RECORDS.min(cfg.records),
            ..cfg.clone()
        };
        group_commit::run(&warm)
            .await
            .with_context(|| format!("{}, warm-up run", cfg.store))?;
    }
    Ok(())
}

/// Group commit's median throughput over each baseline's, per store and
/// producer count, as lines under the table.
fn ratios(finished: &[Finished], args: &GroupCommitArgs) -> Vec<String> {
    let median = |store: Store, mode: Mode, producers: usize| {
        basalt_benches::report::Spread::of(
            finished
                .iter()
                .map(|f| &f.run)
                .filter(|r| {
                    r.config == mode.slug()
                        && r.producers == Some(producers)
                        && r.extra.get("store").and_then(|s| s.as_str()) == Some(store.slug())
                })
                .map(|r| r.throughput_per_s),
        )
        .map(|s| s.median)
    };
    let mut lines = Vec::new();
    for store in Store::ALL.into_iter().chain([Store::Url]) {
        for producers in args.producer_counts() {
            let Some(group) = median(store, Mode::GroupCommit, producers) else {
                continue;
            };
            let mut line = String::new();
            for mode in [Mode::SerialPerRecord, Mode::ConcurrentPerRecord] {
                if let Some(base) = median(store, mode, producers) {
                    let _ = write!(line, "  {:.1}x over {}", group / base.max(1e-9), mode);
                }
            }
            if !line.is_empty() {
                lines.push(format!(
                    "group commit, {store}, {producers} producers:{line}"
                ));
            }
        }
    }
    if !lines.is_empty() {
        lines.insert(
            0,
            "\ngroup commit speed-up (records/s ÷ the baseline's records/s, medians)".into(),
        );
    }
    lines
}
