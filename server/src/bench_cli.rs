//! The command line of `basalt bench`: every workload takes the same
//! common options (storage, folder, report file, repeats), and the engine
//! workloads the same baselines, so their reports compare.

use std::path::PathBuf;

use basalt_benches::group_commit::{Mode, RECORD_BYTES_DEFAULT, Store};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

/// The benchmark workloads.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The main job: checkouts, each reserving 2 items on `Stock` entities
    /// (fan-out, fan-in) and then running a receipt activity, all started
    /// at once; stock is read back and checked against the receipts.
    Checkout(CheckoutArgs),
    /// N orchestrations, each calling 5 trivial activities in sequence,
    /// started at once; every output is checked.
    Hello5(Hello5Args),
    /// One orchestration calling a trivial activity N times in sequence.
    Sequence(SequenceArgs),
    /// N orchestrations, each calling W activities at once and summing
    /// their results; every sum is checked.
    Fanout(FanoutArgs),
    /// Transfers between accounts on different partitions, each locking
    /// both accounts in a critical section; the total balance is checked.
    Bank(BankArgs),
    /// Orchestrations of 3 activities started at a fixed rate (an open
    /// loop): the latency of a lightly loaded engine, in process or, with
    /// --sidecar, through `basalt serve` and the Python SDK.
    Latency(LatencyArgs),
    /// Checkouts run out of process by the official Python SDK's worker
    /// through the gRPC sidecar: Basalt against the SDK's own in-memory
    /// sidecar, in the same run; finite stock, read back and checked.
    SidecarCheckout(SidecarCheckoutArgs),
    /// One orchestration calling a trivial activity N times in sequence
    /// through `basalt serve` (a child process) and a minimal gRPC worker:
    /// the server's CPU per step early and late in a long history.
    SidecarSequence(SidecarSequenceArgs),
    /// Producers appending small records to one partition log: group
    /// commit against serial and concurrent per-record durable writes.
    GroupCommit(GroupCommitArgs),
    /// A hub that fills up and is never purged: checkouts in waves on one
    /// engine under a memory budget (throughput, memory and checkpoints per
    /// wave), then a kill -9 mid-work and the time to recover.
    Steady(SteadyArgs),
}

/// Options of `basalt bench steady`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct SteadyArgs {
    /// Checkouts in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub instances: u64,
    /// Checkouts per wave.
    #[arg(long, default_value_t = 20_000)]
    pub wave: u64,
    /// Products in the pool.
    #[arg(long, default_value_t = 100)]
    pub pool: u64,
    /// Most checkouts of a wave running at once (a client with that many
    /// requests out); the default starts the whole wave at once.
    #[arg(long)]
    pub in_flight: Option<u64>,
    /// The engine's memory budget for partition state (as `basalt serve
    /// --memory-budget` takes it).
    #[arg(long, default_value = "128MiB")]
    pub memory_budget: String,
    /// Internal: fill the hub in this folder and print each wave as a JSON
    /// line (the child process the benchmark kills).
    #[arg(long, hide = true, value_name = "DIR")]
    #[serde(skip)]
    pub fill_into: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
}

/// Options every workload takes.
#[derive(Clone, Debug, Args, Serialize)]
pub struct CommonArgs {
    /// Where task hubs live: `local` (fresh folders under --dir, fsync on),
    /// `memory://`, `s3://bucket/prefix`, `az://container/prefix` or
    /// `file:///dir`, as `basalt serve --storage` takes them (credentials
    /// from AWS_* / AZURE_*). Default: local.
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// Parent folder of local task hubs (each run gets a fresh one, removed
    /// after). Its file system decides what fsync costs and is reported.
    /// Default: ./target/bench-hubs where ./target exists, else ./bench-hubs.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run even where fsync does nothing (tmpfs, ramfs); the runs are then
    /// labelled volatile instead of fsync.
    #[arg(long)]
    pub allow_volatile: bool,
    /// Also write the report as JSON to FILE (`-`: standard output, and no
    /// table). The schema is in docs/benchmarks.md.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Run each configuration K times (interleaved) and report the median,
    /// min and max.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub repeat: u32,
    /// Partitions of the task hub.
    #[arg(long, default_value_t = 12)]
    pub partitions: u32,
}

impl CommonArgs {
    /// The folder local hubs go in.
    pub fn bench_dir(&self) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.clone(),
            None if std::path::Path::new("target").is_dir() => PathBuf::from("target/bench-hubs"),
            None => PathBuf::from("bench-hubs"),
        }
    }
}

/// A configuration of the engine compared with the measured one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Baseline {
    /// Group commit off: one durable write per logged event.
    PerEvent,
    /// Local work (steps, activities) handed out only once its event is
    /// durable.
    NoPipelining,
    /// The same engine on in-memory storage: the bound without I/O.
    Memory,
    /// No baseline.
    None,
}

impl Baseline {
    /// The configuration's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::PerEvent => "per-event",
            Baseline::NoPipelining => "no-pipelining",
            Baseline::Memory => "memory",
            Baseline::None => "none",
        }
    }
}

impl std::fmt::Display for Baseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which baselines to run next to the measured configuration.
#[derive(Clone, Debug, Args, Serialize)]
pub struct BaselineArgs {
    /// Baselines to run besides group commit, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [Baseline::PerEvent, Baseline::NoPipelining, Baseline::Memory])]
    pub baselines: Vec<Baseline>,
    /// Skip every baseline (same as --baselines none).
    #[arg(long)]
    pub no_baseline: bool,
    /// Instances for the baselines. Default: the same as the measured run
    /// (a smaller number is marked in the table).
    #[arg(long)]
    pub baseline_instances: Option<u64>,
}

impl BaselineArgs {
    /// The selected baselines, without repeats.
    pub fn selected(&self) -> Vec<Baseline> {
        if self.no_baseline || self.baselines.contains(&Baseline::None) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for b in &self.baselines {
            if !out.contains(b) {
                out.push(*b);
            }
        }
        out
    }
}

/// Options of `basalt bench checkout`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct CheckoutArgs {
    /// Checkouts to start at once.
    #[arg(long, default_value_t = 20_000)]
    pub instances: u64,
    /// Products in the pool.
    #[arg(long, default_value_t = 100)]
    pub pool: u64,
    /// Initial stock of every product: a little short of what the default
    /// 20,000 checkouts ask for (about 80,000 units), so some lines are
    /// refused and the refusal path is checked too.
    #[arg(long, default_value_t = 750)]
    pub stock: i64,
    #[command(flatten)]
    #[serde(flatten)]
    pub baselines: BaselineArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
}

/// Options of `basalt bench hello5`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct Hello5Args {
    /// Orchestrations to start at once.
    #[arg(long, default_value_t = 10_000)]
    pub instances: u64,
    #[command(flatten)]
    #[serde(flatten)]
    pub baselines: BaselineArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
}

/// Options of `basalt bench sequence`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct SequenceArgs {
    /// Activity calls in the sequence.
    #[arg(long, default_value_t = 1_000)]
    pub steps: u64,
    #[command(flatten)]
    #[serde(flatten)]
    pub baselines: BaselineArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
}

/// Options of `basalt bench fanout`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct FanoutArgs {
    /// Orchestrations to start at once.
    #[arg(long, default_value_t = 1_000)]
    pub instances: u64,
    /// Activities each orchestration calls at once.
    #[arg(long, default_value_t = 20)]
    pub width: u64,
    #[command(flatten)]
    #[serde(flatten)]
    pub baselines: BaselineArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
}

/// Options of `basalt bench bank`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct BankArgs {
    /// Transfers to start at once.
    #[arg(long, default_value_t = 10_000)]
    pub transfers: u64,
    /// Accounts.
    #[arg(long, default_value_t = 1_000)]
    pub accounts: u64,
    /// Initial balance of every account.
    #[arg(long, default_value_t = 1_000)]
    pub balance: i64,
    #[command(flatten)]
    #[serde(flatten)]
    pub baselines: BaselineArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
}

/// Options of `basalt bench latency`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct LatencyArgs {
    /// Orchestrations started per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds to keep starting them.
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// Through `basalt serve` (in this process, gRPC on loopback) with the
    /// official Python SDK as client and worker, instead of in process.
    #[arg(long)]
    pub sidecar: bool,
    /// With --sidecar: a Python with `durabletask`; default: a virtual
    /// environment under target/ with the pinned version.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Baselines to run besides group commit (default: none; each one
    /// takes --seconds again).
    #[arg(long, value_delimiter = ',', default_values_t = [Baseline::None])]
    pub baselines: Vec<Baseline>,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
}

/// Options of `basalt bench sidecar-checkout`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct SidecarCheckoutArgs {
    /// Checkouts to start at once in the measured batch.
    #[arg(long, default_value_t = 600)]
    pub checkouts: u64,
    /// Checkouts of the warm-up batch (on products of their own).
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    /// Products in the pool.
    #[arg(long, default_value_t = 50)]
    pub products: u64,
    /// Initial stock of every product: small enough that some lines are
    /// refused (600 checkouts ask for about 2,400 units of 2,000).
    #[arg(long, default_value_t = 40)]
    pub stock: i64,
    /// The SDK whose client and worker drive the checkouts. The Python
    /// SDK also runs its in-memory sidecar as the baseline; the JavaScript
    /// SDK has no sidecar of its own, so it runs against Basalt alone.
    #[arg(long, default_value_t = Sdk::Python)]
    pub sdk: Sdk,
    /// A Python with `durabletask` installed; by default a virtual
    /// environment under target/ is created with the pinned version.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// A folder whose `node_modules` holds `@microsoft/durabletask-js`; by
    /// default the pinned version (server/tests/js/package-lock.json) is
    /// installed under target/ with `npm ci`.
    #[arg(long, value_name = "DIR")]
    pub js_sdk: Option<PathBuf>,
    /// Skip the run against the SDK's in-memory sidecar.
    #[arg(long)]
    pub no_baseline: bool,
    /// Group-commit linger of the Basalt server, microseconds.
    #[arg(long, default_value_t = 0)]
    pub commit_linger_micros: u64,
    /// Break the worker on purpose, to show the check catches it
    /// (`double-reserve`: the stock entity takes every reservation twice).
    #[arg(long, hide = true)]
    pub inject_fault: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
}

/// Options of `basalt bench sidecar-sequence`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct SidecarSequenceArgs {
    /// Activity calls in the sequence.
    #[arg(long, default_value_t = 5_000)]
    pub steps: u64,
    /// Steps in each of the two windows compared: the first W and the
    /// last W.
    #[arg(long, default_value_t = 200)]
    pub window: u64,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
}

/// Options of `basalt bench group-commit`.
#[derive(Clone, Debug, Args, Serialize)]
pub struct GroupCommitArgs {
    /// Producer counts to run, comma-separated. Each producer waits for its
    /// record to be durable before it submits the next.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 64, 256])]
    pub producers: Vec<usize>,

    /// Records per run, except the runs `--serial-records` covers.
    #[arg(long, default_value_t = 50_000)]
    pub records: u64,

    /// Records per run where every record is its own durable write (local
    /// disk or an object store): both per-record baselines, and group
    /// commit with 1 producer.
    #[arg(long, default_value_t = 2_000)]
    pub serial_records: u64,

    /// Stores to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [StoreArg::All])]
    pub store: Vec<StoreArg>,

    /// Durability modes to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [ModeArg::All])]
    pub mode: Vec<ModeArg>,

    /// Payload bytes of every record.
    #[arg(long, default_value_t = RECORD_BYTES_DEFAULT)]
    pub record_bytes: usize,

    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
}

/// A `--sdk` value: the official Durable Task SDK that drives a sidecar
/// workload out of process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sdk {
    /// `durabletask` from PyPI (server/tests/python/requirements.txt).
    Python,
    /// `@microsoft/durabletask-js` from npm (server/tests/js/package.json).
    Js,
}

impl std::fmt::Display for Sdk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        value_name(self, f)
    }
}

/// A `--store` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreArg {
    /// Local directory with fsync, log in segment files (the default layout).
    LocalFile,
    /// Local directory with fsync, log as one object per group commit.
    LocalObject,
    /// In-memory object store: no I/O, the CPU cost alone.
    Memory,
    /// Every store above.
    All,
}

impl std::fmt::Display for StoreArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        value_name(self, f)
    }
}

/// A `--mode` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeArg {
    /// The partition log with group commit.
    GroupCommit,
    /// The partition log writing one record per durable write, in order.
    SerialPerRecord,
    /// One object put per record, issued concurrently (table-per-event).
    ConcurrentPerRecord,
    /// Every mode above.
    All,
}

impl std::fmt::Display for ModeArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        value_name(self, f)
    }
}

fn value_name(value: &impl ValueEnum, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    match value.to_possible_value() {
        Some(v) => f.write_str(v.get_name()),
        None => Ok(()),
    }
}

impl GroupCommitArgs {
    /// The selected stores, without repeats, in report order.
    pub fn stores(&self) -> Vec<Store> {
        let wanted = |store: Store| {
            self.store.iter().any(|arg| {
                *arg == StoreArg::All
                    || matches!(
                        (arg, store),
                        (StoreArg::LocalFile, Store::LocalSegmentFile)
                            | (StoreArg::LocalObject, Store::LocalObjectPerCommit)
                            | (StoreArg::Memory, Store::Memory)
                    )
            })
        };
        Store::ALL.into_iter().filter(|s| wanted(*s)).collect()
    }

    /// The selected modes, without repeats, in report order.
    pub fn modes(&self) -> Vec<Mode> {
        let wanted = |mode: Mode| {
            self.mode.iter().any(|arg| {
                *arg == ModeArg::All
                    || matches!(
                        (arg, mode),
                        (ModeArg::GroupCommit, Mode::GroupCommit)
                            | (ModeArg::SerialPerRecord, Mode::SerialPerRecord)
                            | (ModeArg::ConcurrentPerRecord, Mode::ConcurrentPerRecord)
                    )
            })
        };
        Mode::ALL.into_iter().filter(|m| wanted(*m)).collect()
    }

    /// The producer counts, without repeats, in the order given.
    pub fn producer_counts(&self) -> Vec<usize> {
        let mut counts = Vec::with_capacity(self.producers.len());
        for &n in &self.producers {
            if !counts.contains(&n) {
                counts.push(n);
            }
        }
        counts
    }

    /// Records of one run: `--serial-records` where each record is its own
    /// fsynced write, `--records` elsewhere.
    pub fn records_for(&self, mode: Mode, store: Store, producers: usize) -> u64 {
        let write_per_record = mode != Mode::GroupCommit || producers == 1;
        if write_per_record && store != Store::Memory {
            self.serial_records
        } else {
            self.records
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> GroupCommitArgs {
        let mut argv = vec!["basalt", "bench", "group-commit"];
        argv.extend_from_slice(args);
        match Cli::parse_from(argv).command {
            Command::Bench(BenchCommand::GroupCommit(args)) => args,
            other => panic!("parsed as another command: {other:?}"),
        }
    }

    #[test]
    fn workload_commands_parse() {
        let cli = Cli::parse_from([
            "basalt",
            "bench",
            "hello5",
            "--instances",
            "7",
            "--baselines",
            "memory,per-event,memory",
        ]);
        match cli.command {
            Command::Bench(BenchCommand::Hello5(args)) => {
                assert_eq!(args.instances, 7);
                assert_eq!(
                    args.baselines.selected(),
                    [Baseline::Memory, Baseline::PerEvent]
                );
                assert_eq!(args.common.repeat, 1);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::parse_from(["basalt", "bench", "checkout", "--no-baseline"]);
        match cli.command {
            Command::Bench(BenchCommand::Checkout(args)) => {
                assert!(args.baselines.selected().is_empty());
                assert_eq!(args.instances, 20_000);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::parse_from(["basalt", "bench", "sequence", "--steps", "3"]);
        assert!(matches!(
            cli.command,
            Command::Bench(BenchCommand::Sequence(SequenceArgs { steps: 3, .. }))
        ));
    }

    #[test]
    fn settings_serialize_flat() {
        let cli = Cli::parse_from(["basalt", "bench", "checkout", "--repeat", "3"]);
        let Command::Bench(BenchCommand::Checkout(args)) = cli.command else {
            panic!("not checkout");
        };
        let json = serde_json::to_value(&args).expect("encodes");
        assert_eq!(json["repeat"], 3);
        assert_eq!(json["instances"], 20_000);
        assert_eq!(json["baselines"][0], "per-event");
    }

    #[test]
    fn defaults() {
        let args = parse(&[]);
        assert_eq!(args.producers, [1, 8, 64, 256]);
        assert_eq!(args.stores(), Store::ALL);
        assert_eq!(args.modes(), Mode::ALL);
        assert!(args.common.json.is_none());
    }

    #[test]
    fn lists_and_all() {
        let args = parse(&[
            "--producers",
            "1,64,1",
            "--store",
            "memory,local-file",
            "--mode",
            "serial-per-record,group-commit",
        ]);
        assert_eq!(args.producer_counts(), [1, 64]);
        assert_eq!(args.stores(), [Store::LocalSegmentFile, Store::Memory]);
        assert_eq!(args.modes(), [Mode::GroupCommit, Mode::SerialPerRecord]);
    }

    #[test]
    fn per_record_baselines_on_disk_are_capped() {
        let args = parse(&["--records", "500", "--serial-records", "50"]);
        let records = |mode, store, producers| args.records_for(mode, store, producers);
        assert_eq!(records(Mode::GroupCommit, Store::LocalSegmentFile, 8), 500);
        assert_eq!(records(Mode::GroupCommit, Store::LocalSegmentFile, 1), 50);
        assert_eq!(
            records(Mode::SerialPerRecord, Store::LocalSegmentFile, 8),
            50
        );
        assert_eq!(
            records(Mode::ConcurrentPerRecord, Store::LocalObjectPerCommit, 64),
            50
        );
        assert_eq!(records(Mode::SerialPerRecord, Store::Memory, 1), 500);
    }
}
