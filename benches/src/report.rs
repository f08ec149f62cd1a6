//! The one report format of every `basalt bench` workload (`--json FILE`).
//!
//! Scripts depend on these names: add keys, never rename or drop one. The
//! schema is documented in `docs/benchmarks.md`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::environment::Environment;

/// A whole benchmark report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The workload's name (`checkout`, `hello5`, ...).
    pub workload: String,
    /// Every option of the command, as given or defaulted.
    pub settings: serde_json::Value,
    /// Where it ran.
    pub environment: Environment,
    /// The workload's consistency check over every run.
    pub check: Check,
    /// Every run, in the order they ran (repeats included).
    pub runs: Vec<Run>,
    /// Per configuration, the median, min and max over its repeats.
    pub summary: Vec<Summary>,
}

/// The result of a workload's consistency check.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Check {
    /// Every run's check held.
    pub passed: bool,
    /// What was checked and what was found, for people.
    pub detail: String,
}

/// Latency of one unit of work (an instance, a record), milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// The figures of latencies given in milliseconds (as an external
    /// client measured them), through the same histogram as in process.
    pub fn from_ms_samples(samples: &[f64]) -> Latency {
        let Ok(mut histogram) = hdrhistogram::Histogram::<u64>::new(3) else {
            return Latency::default();
        };
        for ms in samples {
            let _ = histogram.record((ms * 1000.0).max(0.0) as u64);
        }
        Latency::from_micros(&histogram)
    }

    /// The figures of a histogram of microseconds.
    pub fn from_micros(histogram: &hdrhistogram::Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// Durable writes of a run, by kind: all are real writes to the store.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DurableWrites {
    /// Group commits of the partition logs (or per-record writes).
    pub group_commits: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// New log segment files (file, header, fsync, directory fsync).
    pub segments_created: u64,
    /// Bytes of log records made durable.
    pub log_bytes: u64,
    /// Bytes of checkpoints written.
    pub checkpoint_bytes: u64,
}

impl DurableWrites {
    /// Every durable write.
    pub fn total(&self) -> u64 {
        self.group_commits + self.checkpoints + self.segments_created
    }

    /// Every durable byte.
    pub fn bytes(&self) -> u64 {
        self.log_bytes + self.checkpoint_bytes
    }
}

impl From<basalt_storage::LogStats> for DurableWrites {
    fn from(stats: basalt_storage::LogStats) -> DurableWrites {
        DurableWrites {
            group_commits: stats.writes,
            checkpoints: stats.checkpoints,
            segments_created: stats.segments_created,
            log_bytes: stats.bytes,
            checkpoint_bytes: stats.checkpoint_bytes,
        }
    }
}

/// One run of one configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Run {
    /// The configuration's name (`group-commit`, `per-event`, ...).
    pub config: String,
    /// Which repeat of the configuration this is, from 1.
    pub repeat: u32,
    /// Units of work completed and checked (instances, or records).
    pub completed: u64,
    /// Units that failed.
    pub failed: u64,
    /// First start to last completion, seconds.
    pub elapsed_s: f64,
    /// `completed / elapsed_s`.
    pub throughput_per_s: f64,
    /// Per unit, measured by the client from submit to seeing completion.
    pub latency_ms: Latency,
    /// Every durable write (group commits + checkpoints + new segments)
    /// per completed unit; `null` where the store is not Basalt's.
    pub storage_writes_per_instance: Option<f64>,
    /// Every durable byte (log + checkpoints) per completed unit.
    pub storage_bytes_per_instance: Option<f64>,
    /// The writes by kind, for the whole run.
    pub storage_writes: Option<DurableWrites>,
    /// CPU time (user + system) of the process doing the work, per unit.
    pub cpu_ms_per_instance: Option<f64>,
    /// User-mode part of `cpu_ms_per_instance`.
    pub cpu_user_ms_per_instance: Option<f64>,
    /// Kernel part of `cpu_ms_per_instance`.
    pub cpu_sys_ms_per_instance: Option<f64>,
    /// Highest resident memory during the run, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Resident memory added per 1,000 completed instances still held by
    /// the engine after the run (finished instances are retained until
    /// purged), bytes.
    pub rss_bytes_per_1000_retained: Option<f64>,
    /// Concurrent producers (`group-commit` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producers: Option<usize>,
    /// CPU of the server per unit (`sidecar-checkout`, `latency --sidecar`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_ms_per_instance: Option<f64>,
    /// CPU of the out-of-process SDK worker and client per unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_cpu_ms_per_instance: Option<f64>,
    /// Anything else the workload measured (steps per instance, ...).
    /// `steady`: the figures of each wave of the hub filling up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<Vec<Wave>>,
    /// `steady`: seconds from opening the hub after a kill -9 to serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_s: Option<f64>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One wave of the `steady` workload: a batch of checkouts on a hub that
/// keeps everything the earlier waves left.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    /// 0 for the first wave.
    pub index: u64,
    /// Checkouts completed (and checked) in this wave.
    pub completed: u64,
    /// Checkouts per second in this wave.
    pub throughput_per_s: f64,
    /// Resident memory at the end of the wave.
    pub rss_bytes: Option<u64>,
    /// Checkpoints written during the wave, across partitions.
    pub checkpoints: u64,
    /// Longest of them, in milliseconds (taking the changes to the store's
    /// flush).
    pub checkpoint_ms_max: f64,
    /// Most bytes one of them wrote.
    pub checkpoint_bytes_max: u64,
    /// Longest a partition spent encoding a checkpoint's changes, in
    /// milliseconds (the part on the partition task).
    pub checkpoint_stall_ms_max: f64,
    /// Records in memory at the end of the wave, across partitions.
    #[serde(default)]
    pub records_resident: u64,
    /// Their estimated bytes (what the memory budget limits).
    #[serde(default)]
    pub records_resident_bytes: u64,
    /// Times a partition stopped taking work until a checkpoint landed,
    /// because its changed records had filled its budget (back-pressure).
    #[serde(default)]
    pub held_back: u64,
    /// Point reads of the partitions' stores during the wave (records
    /// loaded into memory, or looked up and found absent).
    #[serde(default)]
    pub store_reads: u64,
}

impl Run {
    /// A run with the throughput derived from `completed` and `elapsed`;
    /// every optional figure empty.
    pub fn new(config: &str, completed: u64, failed: u64, elapsed: Duration) -> Run {
        let elapsed_s = elapsed.as_secs_f64();
        Run {
            config: config.to_owned(),
            repeat: 1,
            completed,
            failed,
            elapsed_s,
            throughput_per_s: if elapsed_s > 0.0 {
                completed as f64 / elapsed_s
            } else {
                0.0
            },
            latency_ms: Latency::default(),
            storage_writes_per_instance: None,
            storage_bytes_per_instance: None,
            storage_writes: None,
            cpu_ms_per_instance: None,
            cpu_user_ms_per_instance: None,
            cpu_sys_ms_per_instance: None,
            peak_rss_bytes: None,
            rss_bytes_per_1000_retained: None,
            producers: None,
            server_cpu_ms_per_instance: None,
            worker_cpu_ms_per_instance: None,
            waves: None,
            recovery_s: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Fills the storage figures from the writes of the run.
    pub fn set_writes(&mut self, writes: DurableWrites) {
        let per = self.completed.max(1) as f64;
        self.storage_writes_per_instance = Some(writes.total() as f64 / per);
        self.storage_bytes_per_instance = Some(writes.bytes() as f64 / per);
        self.storage_writes = Some(writes);
    }

    /// Fills the CPU figures from the CPU time the run took.
    pub fn set_cpu(&mut self, cpu: crate::resources::CpuTime) {
        let per = self.completed.max(1) as f64;
        self.cpu_ms_per_instance = Some(cpu.total_ms() / per);
        self.cpu_user_ms_per_instance = Some(cpu.user_ms / per);
        self.cpu_sys_ms_per_instance = Some(cpu.sys_ms / per);
    }
}

/// Median, min and max of one figure over a configuration's repeats.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    /// Median (the mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` if there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// One configuration over its repeats.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// The configuration.
    pub config: String,
    /// Concurrent producers (`group-commit` only: a configuration is
    /// summarized per producer count and store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producers: Option<usize>,
    /// The store (`group-commit` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Runs of it.
    pub repeats: u32,
    /// Throughput per second.
    pub throughput_per_s: Option<Spread>,
    /// Median latency, ms.
    pub latency_p50_ms: Option<Spread>,
    /// 99th-percentile latency, ms.
    pub latency_p99_ms: Option<Spread>,
    /// CPU per unit, ms.
    pub cpu_ms_per_instance: Option<Spread>,
    /// Durable writes per unit.
    pub storage_writes_per_instance: Option<Spread>,
    /// Peak RSS, bytes.
    pub peak_rss_bytes: Option<Spread>,
}

/// The store a run names in its extra figures (`group-commit`).
fn store_of(run: &Run) -> Option<String> {
    run.extra
        .get("store")
        .and_then(|s| s.as_str())
        .map(str::to_owned)
}

/// The summaries of `runs`, one per configuration (and producer count and
/// store, where runs name them) in order of first run.
pub fn summarize(runs: &[Run]) -> Vec<Summary> {
    type Key = (String, Option<usize>, Option<String>);
    let key = |r: &Run| -> Key { (r.config.clone(), r.producers, store_of(r)) };
    let mut keys: Vec<Key> = Vec::new();
    for run in runs {
        let k = key(run);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|k| {
            let same = |r: &&Run| key(r) == k;
            let of = |f: &dyn Fn(&Run) -> Option<f64>| {
                Spread::of(runs.iter().filter(same).filter_map(f))
            };
            let (config, producers, store) = k.clone();
            Summary {
                config,
                producers,
                store,
                repeats: runs.iter().filter(same).count() as u32,
                throughput_per_s: of(&|r| Some(r.throughput_per_s)),
                latency_p50_ms: of(&|r| Some(r.latency_ms.p50)),
                latency_p99_ms: of(&|r| Some(r.latency_ms.p99)),
                cpu_ms_per_instance: of(&|r| r.cpu_ms_per_instance),
                storage_writes_per_instance: of(&|r| r.storage_writes_per_instance),
                peak_rss_bytes: of(&|r| r.peak_rss_bytes.map(|b| b as f64)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_middle() {
        let s = Spread::of([3.0, 1.0, 2.0]).expect("values");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of([4.0, 1.0, 2.0, 3.0]).expect("values");
        assert_eq!(s.median, 2.5);
        assert!(Spread::of([]).is_none());
    }

    #[test]
    fn run_serializes_the_stable_names() {
        let mut run = Run::new("group-commit", 10, 0, Duration::from_secs(2));
        run.set_writes(DurableWrites {
            group_commits: 4,
            checkpoints: 1,
            ..DurableWrites::default()
        });
        let json = serde_json::to_value(&run).expect("encodes");
        for key in [
            "config",
            "completed",
            "failed",
            "elapsed_s",
            "throughput_per_s",
            "latency_ms",
            "storage_writes_per_instance",
            "storage_bytes_per_instance",
            "cpu_ms_per_instance",
            "cpu_user_ms_per_instance",
            "cpu_sys_ms_per_instance",
            "peak_rss_bytes",
            "rss_bytes_per_1000_retained",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert_eq!(json["throughput_per_s"], 5.0);
        assert_eq!(json["storage_writes_per_instance"], 0.5);
        for key in ["mean", "p50", "p90", "p99", "max"] {
            assert!(json["latency_ms"].get(key).is_some(), "latency_ms.{key}");
        }
        assert!(json.get("producers").is_none());
    }
}
