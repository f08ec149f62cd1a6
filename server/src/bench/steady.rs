//! `basalt bench steady`: a child process (this binary again, with the
//! hidden `--fill-into DIR`) fills one hub with checkouts in waves under a
//! memory budget and prints each wave's figures as a JSON line; after the
//! last wave it goes on working, and this process kills it with SIGKILL.
//! Then this process opens the hub, times the recovery and checks that
//! every checkout of every reported wave is there, completed.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use basalt_benches::report::{Check, Run, Wave};
use basalt_benches::steady::{self, SteadySettings};
use basalt_benches::store::BenchStore;
use basalt_storage::Storage;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use super::output::{Finished, Outcome, progress_bar};
use super::workloads::{environment, store};
use crate::bench_cli::SteadyArgs;
use basalt_server::config::parse_bytes;

/// What the child prints, one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    /// A wave finished and passed its check.
    Wave(Wave),
    /// A wave's check failed.
    Problem(String),
    /// Every wave is done; the child goes on working until killed.
    Filled {
        /// The child's peak resident memory so far.
        peak_rss_bytes: Option<u64>,
    },
}

fn settings(args: &SteadyArgs) -> anyhow::Result<SteadySettings> {
    let memory_budget_bytes = parse_bytes(&args.memory_budget)?;
    if args.wave == 0 || args.instances == 0 || args.pool == 0 || args.in_flight == Some(0) {
        bail!("--instances, --wave, --pool and --in-flight must be at least 1");
    }
    Ok(SteadySettings {
        instances: args.instances,
        wave: args.wave,
        pool: args.pool,
        in_flight: args.in_flight.unwrap_or(args.wave).min(args.wave),
        memory_budget_bytes,
        partitions: args.common.partitions,
    })
}

/// Runs the benchmark (or, with `--fill-into`, the child's part of it).
pub async fn run(args: &SteadyArgs) -> anyhow::Result<()> {
    let settings = settings(args)?;
    if let Some(dir) = &args.fill_into {
        return fill_child(dir, &settings).await;
    }
    let store = store(&args.common)?;
    if !matches!(store, BenchStore::Local { .. }) {
        bail!("steady kills a process that owns the hub: it runs on local storage only");
    }
    let (storage, hub) = store.fresh()?;
    // The child takes the hub's lock: let go of it.
    drop(storage);
    let dir = hub
        .path()
        .context("a local hub has a folder")?
        .to_path_buf();

    let exe = std::env::current_exe().context("finding this program to run the child")?;
    let mut child = tokio::process::Command::new(exe)
        .args(["bench", "steady", "--fill-into"])
        .arg(&dir)
        .args(["--instances", &settings.instances.to_string()])
        .args(["--wave", &settings.wave.to_string()])
        .args(["--pool", &settings.pool.to_string()])
        .args(["--in-flight", &settings.in_flight.to_string()])
        .args(["--memory-budget", &settings.memory_budget_bytes.to_string()])
        .args(["--partitions", &settings.partitions.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the child that fills the hub")?;
    let stdout = child.stdout.take().context("the child's output")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let bar = progress_bar(settings.instances, "steady: filling");
    let started = Instant::now();
    let mut waves = Vec::new();
    let mut peak_rss = None;
    let mut problem = None;
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Line>(&line) {
            Ok(Line::Wave(wave)) => {
                bar.inc(wave.completed);
                waves.push(wave);
            }
            Ok(Line::Problem(p)) => {
                problem = Some(p);
                break;
            }
            Ok(Line::Filled { peak_rss_bytes }) => {
                peak_rss = peak_rss_bytes;
                break;
            }
            Err(_) => {} // not ours (a log line): ignore
        }
    }
    let fill_elapsed = started.elapsed();
    bar.finish_and_clear();
    // Let the next (unreported) wave get going, then kill mid-work.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.start_kill().context("killing the child")?;
    let status = child.wait().await?;
    if let Some(problem) = problem {
        bail!("the steady check FAILED during the fill: {problem}");
    }
    if waves.len() as u64 != settings.waves() {
        bail!(
            "the child stopped after {} of {} waves ({status})",
            waves.len(),
            settings.waves()
        );
    }

    let storage = Storage::local(&dir)?;
    let recovered = steady::recover(storage, &settings, waves.len() as u64).await?;
    let finished = vec![finish(&settings, waves, fill_elapsed, peak_rss, &recovered)];
    let notes = notes(&finished[0].run, &settings);
    let env = environment(&store);
    Outcome {
        workload: "steady",
        title: format!(
            "steady: {} checkouts in waves of {} on one hub (nothing purged), memory budget {} MiB; then kill -9 mid-work and recovery; hub in {} ({})",
            settings.instances,
            settings.wave,
            settings.memory_budget_bytes >> 20,
            store.location(),
            store.file_system()
        ),
        settings: args,
        common: &args.common,
        environment: env,
        finished,
        notes,
    }
    .report()?;
    drop(hub);
    Ok(())
}

/// The run's figures: the fill as a whole, every wave, and the recovery.
fn finish(
    settings: &SteadySettings,
    waves: Vec<Wave>,
    elapsed: Duration,
    peak_rss: Option<u64>,
    recovered: &steady::Recovered,
) -> Finished {
    let completed = waves.iter().map(|w| w.completed).sum();
    let mut run = Run::new("two-tier", completed, 0, elapsed);
    run.peak_rss_bytes = peak_rss;
    run.recovery_s = Some(recovered.recovery_s);
    let first = waves.first().map_or(0.0, |w| w.throughput_per_s);
    let last = waves.last().map_or(0.0, |w| w.throughput_per_s);
    let budget_plus = settings.memory_budget_bytes + (100 << 20);
    let targets = serde_json::json!({
        "last_wave_throughput_vs_first": if first > 0.0 { last / first } else { 0.0 },
        "last_wave_at_least_90_percent_of_first": last >= 0.9 * first,
        "peak_rss_within_budget_plus_100_mib": peak_rss.map(|p| p <= budget_plus),
        "recovery_under_5_s": recovered.recovery_s < 5.0,
    });
    run.extra.insert("targets".into(), targets);
    run.extra.insert(
        "instances_after_recovery".into(),
        serde_json::to_value(&recovered.by_status).unwrap_or_default(),
    );
    run.waves = Some(waves);
    Finished {
        run,
        check: Check {
            passed: recovered.check.passed,
            detail: format!(
                "every wave's receipts and stock checked; {}",
                recovered.check.detail
            ),
        },
    }
}

/// The waves, for people: the first, every tenth and the last.
fn notes(run: &Run, settings: &SteadySettings) -> Vec<String> {
    let mut notes = vec![
        "wave  checkouts/s  RSS MiB  records in memory (MiB)  checkpoints  longest ms  on-task ms  most bytes  held back  store reads".to_owned(),
    ];
    let waves = run.waves.as_deref().unwrap_or(&[]);
    let step = (waves.len() / 10).max(1);
    for (i, wave) in waves.iter().enumerate() {
        if i % step != 0 && i + 1 != waves.len() {
            continue;
        }
        notes.push(format!(
            "{:>4}  {:>11.0}  {:>7}  {:>23}  {:>11}  {:>10.1}  {:>10.1}  {:>10}  {:>9}  {:>11}",
            wave.index,
            wave.throughput_per_s,
            wave.rss_bytes.map_or("-".into(), |b| (b >> 20).to_string()),
            format!(
                "{} ({})",
                wave.records_resident,
                wave.records_resident_bytes >> 20
            ),
            wave.checkpoints,
            wave.checkpoint_ms_max,
            wave.checkpoint_stall_ms_max,
            wave.checkpoint_bytes_max,
            wave.held_back,
            wave.store_reads
        ));
    }
    if let Some(recovery) = run.recovery_s {
        notes.push(format!(
            "recovery after kill -9 with {} checkouts in the hub: {recovery:.2} s; peak RSS {} MiB with a budget of {} MiB",
            run.completed,
            run.peak_rss_bytes.map_or("-".into(), |b| (b >> 20).to_string()),
            settings.memory_budget_bytes >> 20
        ));
    }
    notes
}

/// The child: fills the hub, one JSON line per wave, then goes on until
/// killed.
async fn fill_child(dir: &std::path::Path, settings: &SteadySettings) -> anyhow::Result<()> {
    let storage = Storage::local(dir)?;
    let waves = settings.waves();
    let print = |line: &Line| {
        if let Ok(json) = serde_json::to_string(line) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{json}");
            let _ = out.flush();
        }
    };
    steady::fill(storage, settings, true, |wave| match wave {
        Ok(wave) => {
            print(&Line::Wave(wave.clone()));
            if wave.index + 1 == waves {
                print(&Line::Filled {
                    peak_rss_bytes: basalt_benches::resources::peak_rss_bytes(),
                });
            }
        }
        Err(problem) => print(&Line::Problem(problem.to_owned())),
    })
    .await?;
    Ok(())
}
