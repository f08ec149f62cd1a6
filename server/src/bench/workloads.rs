//! `basalt bench checkout | hello5 | sequence | fanout | bank | latency`:
//! engine workloads in process, each as the measured configuration
//! (group commit, pipelining, the chosen store) and its baselines at the
//! same N, repeated and reported in the one schema.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use basalt_benches::environment::Environment;
use basalt_benches::store::BenchStore;
use basalt_benches::workloads::{self, Outcome as WorkloadOutcome, WorkloadConfig, WorkloadError};
use indicatif::ProgressBar;
use serde::Serialize;

use super::output::{Finished, Outcome, progress_bar};
use crate::bench_cli::{
    BankArgs, Baseline, CheckoutArgs, CommonArgs, FanoutArgs, Hello5Args, LatencyArgs, SequenceArgs,
};

/// The store the common options name, checked (a volatile "fsync" is
/// refused unless allowed).
pub fn store(common: &CommonArgs) -> anyhow::Result<BenchStore> {
    Ok(BenchStore::parse(
        common.storage.as_deref(),
        &common.bench_dir(),
        common.allow_volatile,
    )?)
}

/// The environment block for runs on `store`.
pub fn environment(store: &BenchStore) -> Environment {
    Environment::capture(store.location(), store.file_system(), store.durable())
}

/// One configuration to run, with its instance count.
struct Planned {
    config: WorkloadConfig,
    instances: u64,
}

/// The measured configuration and the selected baselines.
fn plan(
    common: &CommonArgs,
    store: &BenchStore,
    baselines: &[Baseline],
    instances: u64,
    baseline_instances: Option<u64>,
) -> Vec<Planned> {
    let measured = WorkloadConfig {
        name: "group-commit".into(),
        store: store.clone(),
        partitions: common.partitions,
        ..WorkloadConfig::default()
    };
    let mut plan = vec![Planned {
        config: measured.clone(),
        instances,
    }];
    let n = baseline_instances.unwrap_or(instances);
    for baseline in baselines {
        let config = match baseline {
            Baseline::PerEvent => WorkloadConfig {
                group_commit: false,
                ..measured.clone()
            },
            Baseline::NoPipelining => WorkloadConfig {
                pipelining: false,
                ..measured.clone()
            },
            // Already in memory: the measured run is this baseline.
            Baseline::Memory if *store == BenchStore::Memory => continue,
            Baseline::Memory => WorkloadConfig {
                store: BenchStore::Memory,
                ..measured.clone()
            },
            Baseline::None => continue,
        };
        plan.push(Planned {
            config: WorkloadConfig {
                name: baseline.name().into(),
                ..config
            },
            instances: n,
        });
    }
    plan
}

/// Instances of the untimed warm-up run.
const WARM_UP_INSTANCES: u64 = 200;

/// Runs every planned configuration `--repeat` times, interleaved (so a
/// slow phase of the machine does not hit one configuration only).
async fn execute<F, Fut>(
    common: &CommonArgs,
    plan: &[Planned],
    unit: &str,
    warm_up: u64,
    run_one: F,
) -> anyhow::Result<Vec<Finished>>
where
    F: Fn(WorkloadConfig, u64, ProgressBar) -> Fut,
    Fut: Future<Output = Result<WorkloadOutcome, WorkloadError>>,
{
    let repeat = common.repeat.max(1);
    // One small untimed run first, so the first measured run does not pay
    // for lazily started threads, cold caches and one-time allocations.
    if let Some(first) = plan.first() {
        let n = first.instances.min(warm_up);
        let bar = progress_bar(n, "warming up");
        run_one(first.config.clone(), n, bar.clone())
            .await
            .context("warm-up run")?;
        bar.finish_and_clear();
    }
    let mut finished = Vec::new();
    for round in 1..=repeat {
        for planned in plan {
            let label = if repeat > 1 {
                format!("{} ({round}/{repeat})", planned.config.name)
            } else {
                planned.config.name.clone()
            };
            let bar = progress_bar(planned.instances, &label);
            let outcome = run_one(planned.config.clone(), planned.instances, bar.clone())
                .await
                .with_context(|| format!("{label}, {} {unit}", planned.instances))?;
            bar.finish_and_clear();
            let mut run = outcome.run;
            run.repeat = round;
            finished.push(Finished {
                run,
                check: outcome.check,
            });
        }
    }
    Ok(finished)
}

/// Notes for a table whose baselines ran fewer instances.
fn notes(baseline_instances: Option<u64>, baselines: &[Baseline], instances: u64) -> Vec<String> {
    match baseline_instances {
        Some(n) if n != instances && !baselines.is_empty() => vec![format!(
            "note: the baselines ran {n} instances, not the measured {instances} (--baseline-instances): compare per-instance figures, not totals"
        )],
        _ => Vec::new(),
    }
}

/// One engine workload command: what it runs and how it is reported.
struct Job<'a, S: Serialize> {
    workload: &'static str,
    /// The command's options, for the report's `settings`.
    settings: &'a S,
    common: &'a CommonArgs,
    baselines: Vec<Baseline>,
    baseline_instances: Option<u64>,
    /// Instances of the measured configuration.
    instances: u64,
    /// What an instance is, for error messages.
    unit: &'static str,
    /// Instances of the untimed warm-up run.
    warm_up: u64,
}

impl<S: Serialize> Job<'_, S> {
    /// Plans, runs (with `run_one`) and reports the job; `title` describes
    /// it for the table, given the store.
    async fn run<F, Fut>(
        self,
        title: impl Fn(&BenchStore) -> String,
        run_one: F,
    ) -> anyhow::Result<()>
    where
        F: Fn(WorkloadConfig, u64, ProgressBar) -> Fut,
        Fut: Future<Output = Result<WorkloadOutcome, WorkloadError>>,
    {
        let store = store(self.common)?;
        let environment = environment(&store);
        let plan = plan(
            self.common,
            &store,
            &self.baselines,
            self.instances,
            self.baseline_instances,
        );
        let finished = execute(self.common, &plan, self.unit, self.warm_up, run_one).await?;
        Outcome {
            workload: self.workload,
            title: title(&store),
            settings: self.settings,
            common: self.common,
            environment,
            finished,
            notes: notes(self.baseline_instances, &self.baselines, self.instances),
        }
        .report()
    }
}

/// Runs `basalt bench checkout`, the README's main job.
pub async fn checkout(args: &CheckoutArgs) -> anyhow::Result<()> {
    let (pool, stock) = (args.pool, args.stock);
    Job {
        workload: "checkout",
        settings: args,
        common: &args.common,
        baselines: args.baselines.selected(),
        baseline_instances: args.baselines.baseline_instances,
        instances: args.instances,
        unit: "checkouts",
        warm_up: WARM_UP_INSTANCES,
    }
    .run(
        |store| format!(
            "checkout: {} checkouts started at once, each reserving 2 items (of {pool} products, {stock} units each) on Stock entities, then a receipt activity; {} partitions, {}, Rust SDK worker in process",
            args.instances,
            args.common.partitions,
            store.label()
        ),
        |config, n, bar| async move {
            workloads::checkout(&config, n, pool, stock, &|done| bar.set_position(done)).await
        },
    )
    .await
}

/// Runs `basalt bench hello5`.
pub async fn hello5(args: &Hello5Args) -> anyhow::Result<()> {
    Job {
        workload: "hello5",
        settings: args,
        common: &args.common,
        baselines: args.baselines.selected(),
        baseline_instances: args.baselines.baseline_instances,
        instances: args.instances,
        unit: "orchestrations",
        warm_up: WARM_UP_INSTANCES,
    }
    .run(
        |store| format!(
            "hello5: {} orchestrations of 5 sequential trivial activities, started at once; {} partitions, {}",
            args.instances,
            args.common.partitions,
            store.label()
        ),
        |config, n, bar| async move {
            workloads::hello5(&config, n, &|done| bar.set_position(done)).await
        },
    )
    .await
}

/// Runs `basalt bench sequence`.
pub async fn sequence(args: &SequenceArgs) -> anyhow::Result<()> {
    let steps = args.steps;
    Job {
        workload: "sequence",
        settings: args,
        common: &args.common,
        baselines: args.baselines.selected(),
        baseline_instances: None,
        instances: 1,
        unit: "orchestration",
        warm_up: 1,
    }
    .run(
        |store| format!(
            "sequence: one orchestration calling a trivial activity {steps} times in sequence (time = the whole sequence; ms per step in the report's extra); {}",
            store.label()
        ),
        |config, _, bar| async move {
            let outcome = workloads::sequence(&config, steps).await;
            bar.set_position(1);
            outcome
        },
    )
    .await
}

/// Runs `basalt bench fanout`.
pub async fn fanout(args: &FanoutArgs) -> anyhow::Result<()> {
    let width = args.width;
    Job {
        workload: "fanout",
        settings: args,
        common: &args.common,
        baselines: args.baselines.selected(),
        baseline_instances: args.baselines.baseline_instances,
        instances: args.instances,
        unit: "orchestrations",
        warm_up: WARM_UP_INSTANCES,
    }
    .run(
        |store| format!(
            "fanout: {} orchestrations, each calling {width} activities at once and summing them, started at once; {} partitions, {}",
            args.instances,
            args.common.partitions,
            store.label()
        ),
        |config, n, bar| async move {
            workloads::fanout(&config, n, width, &|done| bar.set_position(done)).await
        },
    )
    .await
}

/// Runs `basalt bench bank`.
pub async fn bank(args: &BankArgs) -> anyhow::Result<()> {
    let (accounts, balance) = (args.accounts, args.balance);
    Job {
        workload: "bank",
        settings: args,
        common: &args.common,
        baselines: args.baselines.selected(),
        baseline_instances: args.baselines.baseline_instances,
        instances: args.transfers,
        unit: "transfers",
        warm_up: WARM_UP_INSTANCES,
    }
    .run(
        |store| format!(
            "bank: {} transfers between {accounts} accounts on different partitions, each locking both (critical section), started at once; {} partitions, {}",
            args.transfers,
            args.common.partitions,
            store.label()
        ),
        |config, n, bar| async move {
            workloads::bank(&config, n, accounts, balance, &|done| bar.set_position(done)).await
        },
    )
    .await
}

/// Refuses a rate or duration `latency` cannot run.
pub fn check_rate(args: &LatencyArgs) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate <= 100_000.0) {
        anyhow::bail!(
            "--rate must be in (0, 100000] per second, got {}",
            args.rate
        );
    }
    if !(args.seconds > 0.0 && args.seconds <= 86_400.0) {
        anyhow::bail!("--seconds must be in (0, 86400], got {}", args.seconds);
    }
    Ok(())
}

/// Runs `basalt bench latency` in process (`--sidecar` goes elsewhere).
pub async fn latency(args: &LatencyArgs) -> anyhow::Result<()> {
    if args.sidecar {
        return super::sidecar::latency(args).await;
    }
    check_rate(args)?;
    let (rate, duration) = (args.rate, Duration::from_secs_f64(args.seconds));
    let baselines: Vec<Baseline> = args
        .baselines
        .iter()
        .copied()
        .filter(|b| *b != Baseline::None)
        .collect();
    Job {
        workload: "latency",
        settings: args,
        common: &args.common,
        baselines,
        baseline_instances: None,
        instances: (args.rate * args.seconds).round().max(1.0) as u64,
        unit: "orchestrations",
        // One second's worth.
        warm_up: rate.ceil().max(1.0) as u64,
    }
    .run(
        |store| format!(
            "latency: hello3 (3 activities in sequence) started at {rate}/s for {} s, in process; latency from each scheduled arrival to the client seeing completion; {}",
            args.seconds,
            store.label()
        ),
        |config, n, bar| async move {
            // The warm-up asks for fewer instances: a shorter duration.
            let duration = duration.min(Duration::from_secs_f64(n as f64 / rate));
            workloads::latency(&config, rate, duration, &|done| bar.set_position(done)).await
        },
    )
    .await
}
