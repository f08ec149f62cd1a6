//! The command line of `basalt`, declared with clap's derive API.
//!
//! Only the shape of the arguments lives here; what a command does lives in
//! the command's own module.

use std::path::PathBuf;

use basalt_benches::group_commit::{Mode, RECORD_BYTES_DEFAULT, Store};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Basalt, a durable execution engine.
#[derive(Debug, Parser)]
#[command(name = "basalt", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a benchmark workload and print a report.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Explain a task hub on disk (read-only; works while it is running):
    /// parameters, per-partition log and checkpoint, instances by status,
    /// and with --verify every checksum.
    Inspect(InspectArgs),
    /// Run the server: the engine on a data directory, the Durable Task
    /// sidecar gRPC service and the HTTP management API. Stops cleanly on
    /// SIGTERM or SIGINT.
    Serve(ServeArgs),
    /// Start an orchestration on a running server.
    Start(StartArgs),
    /// Show an orchestration instance.
    Status(StatusArgs),
    /// List orchestration instances.
    List(ListArgs),
    /// Raise an external event on an instance.
    Raise(RaiseArgs),
    /// Terminate an instance.
    Terminate(ReasonArgs),
    /// Suspend an instance.
    Suspend(ReasonArgs),
    /// Resume a suspended instance.
    Resume(ReasonArgs),
    /// Run a failed instance again from where it failed.
    Rewind(ReasonArgs),
    /// Delete finished instances and their history: one by id, or all
    /// matching a filter.
    Purge(PurgeArgs),
    /// Send a one-way operation to an entity.
    Signal(SignalArgs),
    /// Show one entity, or list entities.
    Entity(EntityArgs),
}

/// Options of `basalt serve`. Each may also come from the environment
/// (`BASALT_...`) or the TOML file given with `--config`; flags win over
/// the environment, which wins over the file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (keys use `_`).
    #[arg(long, env = "BASALT_CONFIG")]
    pub config: Option<PathBuf>,
    /// The task hub's data directory (local disk with fsync, the embedded
    /// default). Default: ./basalt-data.
    #[arg(long, env = "BASALT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `memory` keeps the hub in memory (lost on exit; for tests and
    /// demos); `s3://bucket/prefix` or `az://container/prefix` puts it in
    /// an object store (credentials, region and endpoint from the usual
    /// AWS_* / AZURE_* environment variables).
    #[arg(long, env = "BASALT_STORAGE")]
    pub storage: Option<String>,
    /// The Durable Task sidecar gRPC address. Default: 127.0.0.1:4001.
    #[arg(long, env = "BASALT_GRPC_ADDR")]
    pub grpc_addr: Option<std::net::SocketAddr>,
    /// The HTTP API address, or `off`. Default: 127.0.0.1:8080.
    #[arg(long, env = "BASALT_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Task hub name. Default: basalt.
    #[arg(long, env = "BASALT_HUB_NAME")]
    pub hub_name: Option<String>,
    /// Partitions (fixed when the hub is created). Default: 12.
    #[arg(long, env = "BASALT_PARTITIONS")]
    pub partitions: Option<u32>,
    /// Largest input, output or event payload in bytes. Default: 16 MiB.
    #[arg(long, env = "BASALT_PAYLOAD_BYTES_MAX")]
    pub payload_bytes_max: Option<usize>,
    /// Most orchestration steps one worker stream holds at once. Default: 100.
    #[arg(long, env = "BASALT_ORCHESTRATIONS_PER_STREAM_MAX")]
    pub orchestrations_per_stream_max: Option<usize>,
    /// Most activities one worker stream holds at once. Default: 100.
    #[arg(long, env = "BASALT_ACTIVITIES_PER_STREAM_MAX")]
    pub activities_per_stream_max: Option<usize>,
    /// Most entity batches one worker stream holds at once. Default: 100.
    #[arg(long, env = "BASALT_ENTITIES_PER_STREAM_MAX")]
    pub entities_per_stream_max: Option<usize>,
    /// Health ping interval on idle worker streams, ms. Default: 15000.
    #[arg(long, env = "BASALT_HEALTH_PING_INTERVAL_MS")]
    pub health_ping_interval_ms: Option<u64>,
    /// Entity work item format sent to workers: v1 or v2. Default: v1.
    #[arg(long, env = "BASALT_ENTITY_FORMAT")]
    pub entity_format: Option<String>,
    /// How long a small group commit waits for more records, in
    /// microseconds (0 = write at once). Default: 0.
    #[arg(long, env = "BASALT_COMMIT_LINGER_MICROS")]
    pub commit_linger_micros: Option<u64>,
    /// Log filter (tracing's env-filter syntax). Default: info.
    #[arg(long, env = "BASALT_LOG")]
    pub log: Option<String>,
    /// Logs as JSON lines instead of text.
    #[arg(long, env = "BASALT_LOG_JSON")]
    pub log_json: bool,
}

/// Where a client command finds the server.
#[derive(Debug, Args)]
pub struct ServerAddr {
    /// The server's gRPC address.
    #[arg(
        long,
        env = "BASALT_SERVER",
        default_value = "http://127.0.0.1:4001",
        global = true
    )]
    pub server: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Options of `basalt start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The orchestration name.
    pub name: String,
    /// The instance id (generated when left out).
    #[arg(long)]
    pub id: Option<String>,
    /// Input, as JSON.
    #[arg(long)]
    pub input: Option<String>,
    /// Do not start before this time (RFC 3339, UTC).
    #[arg(long)]
    pub at: Option<String>,
    /// Wait for the instance to finish and print its result.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The instance id.
    pub id: String,
    /// Also print the history.
    #[arg(long)]
    pub history: bool,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these statuses, comma-separated (running, completed, failed,
    /// terminated, suspended, pending).
    #[arg(long)]
    pub status: Option<String>,
    /// Only ids starting with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only instances created at or after this time (RFC 3339).
    #[arg(long)]
    pub created_from: Option<String>,
    /// Only instances created before this time (RFC 3339).
    #[arg(long)]
    pub created_to: Option<String>,
    /// Most instances to print.
    #[arg(long, default_value_t = 100)]
    pub top: usize,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt raise`.
#[derive(Debug, Args)]
pub struct RaiseArgs {
    /// The instance id.
    pub id: String,
    /// The event name.
    pub event: String,
    /// Event data, as JSON.
    #[arg(long)]
    pub data: Option<String>,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt terminate`, `suspend` and `resume`.
#[derive(Debug, Args)]
pub struct ReasonArgs {
    /// The instance id.
    pub id: String,
    /// Why (recorded in the history).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The instance id; leave out to purge by filter.
    pub id: Option<String>,
    /// With no id: only these statuses (completed, failed, terminated).
    #[arg(long)]
    pub status: Option<String>,
    /// With no id: only instances created before this time (RFC 3339).
    #[arg(long)]
    pub created_to: Option<String>,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt signal`.
#[derive(Debug, Args)]
pub struct SignalArgs {
    /// The entity name.
    pub name: String,
    /// The entity key.
    pub key: String,
    /// The operation.
    pub operation: String,
    /// Input, as JSON.
    #[arg(long)]
    pub input: Option<String>,
    /// Deliver at this time (RFC 3339, UTC) instead of now.
    #[arg(long)]
    pub at: Option<String>,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt entity`.
#[derive(Debug, Args)]
pub struct EntityArgs {
    /// The entity name; with no key, lists entities of this name.
    pub name: Option<String>,
    /// The entity key.
    pub key: Option<String>,
    /// Most entities to list.
    #[arg(long, default_value_t = 100)]
    pub top: usize,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The task hub's data directory.
    pub dir: PathBuf,
    /// Check every checkpoint and segment byte by byte; exit with status 1
    /// if any damage is found.
    #[arg(long)]
    pub verify: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The benchmark workloads.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Producers appending small records to one partition log: group
    /// commit against serial and concurrent per-record durable writes.
    GroupCommit(GroupCommitArgs),
    /// N orchestrations, each calling 5 trivial activities in sequence,
    /// started at once, on the engine with the in-process SDK worker; with
    /// group commit and, for comparison, without (one write per event).
    Hello5(Hello5Args),
    /// One orchestration calling a trivial activity N times in sequence.
    Sequence(SequenceArgs),
    /// Checkouts: each reserves 2 items on `Stock` entities (fan-out,
    /// fan-in) and then runs a receipt activity; stock is checked after.
    Checkout(CheckoutArgs),
    /// Transfers between accounts on different partitions, each locking
    /// both accounts in a critical section; the total balance is checked.
    Bank(BankArgs),
    /// Checkouts run out of process by the official Python SDK's worker
    /// through the gRPC sidecar: Basalt (local fsync) against the SDK's own
    /// in-memory sidecar, in the same run; reports throughput, latency and
    /// the server's CPU per checkout.
    SidecarCheckout(SidecarCheckoutArgs),
}

/// Options of `basalt bench sidecar-checkout`.
#[derive(Debug, Args)]
pub struct SidecarCheckoutArgs {
    /// Checkouts to start at once in the measured batch.
    #[arg(long, default_value_t = 600)]
    pub checkouts: u64,
    /// Checkouts of the warm-up batch.
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    /// A Python with `durabletask` installed; by default a virtual
    /// environment under target/ is created with the pinned version.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Skip the run against the SDK's in-memory sidecar.
    #[arg(long)]
    pub no_baseline: bool,
    /// Group-commit linger of the Basalt server, microseconds.
    #[arg(long, default_value_t = 0)]
    pub commit_linger_micros: u64,
    /// Partitions of the task hub.
    #[arg(long, default_value_t = 12)]
    pub partitions: u32,
    /// Keep the task hub in memory instead of on local disk: shows what
    /// the server costs without the durable log (a diagnostic, not a
    /// supported way to run).
    #[arg(long)]
    pub memory: bool,
    /// Parent folder of the temporary task hub.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `basalt bench bank`.
#[derive(Debug, Args)]
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
    /// Partitions of the task hub.
    #[arg(long, default_value_t = 12)]
    pub partitions: u32,
    /// Parent folder of the temporary task hub.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `basalt bench checkout`.
#[derive(Debug, Args)]
pub struct CheckoutArgs {
    /// Checkouts to start at once.
    #[arg(long, default_value_t = 20_000)]
    pub instances: u64,
    /// Checkouts for the run with group commit off.
    #[arg(long, default_value_t = 1_000)]
    pub baseline_instances: u64,
    /// Skip the group-commit-off baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// Also run on in-memory storage.
    #[arg(long)]
    pub memory: bool,
    /// Products in the pool.
    #[arg(long, default_value_t = 100)]
    pub pool: u64,
    /// Initial stock of every product.
    #[arg(long, default_value_t = 1_000)]
    pub stock: i64,
    /// Partitions of the task hub.
    #[arg(long, default_value_t = 12)]
    pub partitions: u32,
    /// Parent folder of the temporary task hubs.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `basalt bench hello5`.
#[derive(Debug, Args)]
pub struct Hello5Args {
    /// Orchestrations to start at once.
    #[arg(long, default_value_t = 10_000)]
    pub instances: u64,
    /// Orchestrations for the run with group commit off (it is slow).
    #[arg(long, default_value_t = 500)]
    pub baseline_instances: u64,
    /// Skip the group-commit-off baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// Also run on in-memory storage (the bound without storage costs).
    #[arg(long)]
    pub memory: bool,
    /// Partitions of the task hub.
    #[arg(long, default_value_t = 12)]
    pub partitions: u32,
    /// Parent folder of the temporary task hubs. Its file system decides
    /// what fsync costs. Default: the system temporary folder.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `basalt bench sequence`.
#[derive(Debug, Args)]
pub struct SequenceArgs {
    /// Activity calls in the sequence.
    #[arg(long, default_value_t = 1_000)]
    pub steps: u64,
    /// Partitions of the task hub.
    #[arg(long, default_value_t = 12)]
    pub partitions: u32,
    /// Parent folder of the temporary task hub.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `basalt bench group-commit`.
#[derive(Debug, Args)]
pub struct GroupCommitArgs {
    /// Producer counts to run, comma-separated. Each producer waits for its
    /// record to be durable before it submits the next.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 64, 256])]
    pub producers: Vec<usize>,

    /// Records per run, except the runs `--serial-records` covers.
    #[arg(long, default_value_t = 50_000)]
    pub records: u64,

    /// Records per run on local disk where every record is its own fsynced
    /// write: both per-record baselines, and group commit with 1 producer.
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

    /// Directory in which each local run gets a fresh temporary task hub
    /// (removed after the run). Default: the system temporary directory.
    /// Its file system decides what fsync costs.
    #[arg(long)]
    pub dir: Option<PathBuf>,

    /// Print the results as JSON on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// A `--store` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
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
        if write_per_record && store.is_local() {
            self.serial_records
        } else {
            self.records
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let cli = Cli::parse_from(["basalt", "bench", "hello5", "--instances", "7", "--memory"]);
        match cli.command {
            Command::Bench(BenchCommand::Hello5(args)) => {
                assert_eq!(args.instances, 7);
                assert!(args.memory);
                assert!(!args.no_baseline);
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
    fn defaults() {
        let args = parse(&[]);
        assert_eq!(args.producers, [1, 8, 64, 256]);
        assert_eq!(args.stores(), Store::ALL);
        assert_eq!(args.modes(), Mode::ALL);
        assert!(!args.json);
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

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
