//! `basalt bench sidecar-checkout` and `basalt bench latency --sidecar`:
//! workloads run out of process by an official Durable Task SDK (client
//! and worker: the Python SDK in `benches/python/checkout_bench.py`, the
//! JavaScript SDK in `benches/js/checkout_bench.js`) through the gRPC
//! sidecar, against an in-process `basalt serve` and, for the Python
//! checkout, against the Python SDK's own in-memory sidecar in the same
//! run.
//!
//! The driver only reports raw results (each latency as its client saw
//! it, what every receipt reserved, the stock read back, its own CPU);
//! the figures and the consistency check are computed here, and a missing
//! key is an error, never a zero.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use basalt_benches::report::{Check, DurableWrites, Latency, Run};
use basalt_benches::resources::{self, CpuTime};
use basalt_benches::store::BenchStore;
use basalt_server::config::{ServeOptions, StorageChoice};
use basalt_server::server::{self, ServerHandle};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::output::{Finished, Outcome};
use super::workloads::{environment, store};
use crate::bench_cli::{Baseline, CommonArgs, LatencyArgs, Sdk, SidecarCheckoutArgs};

const PYTHON_DRIVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../benches/python/checkout_bench.py"
);
const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/requirements.txt");
const JS_DRIVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../benches/js/checkout_bench.js"
);
/// The JavaScript SDK's pinned package and lock file (shared with the
/// JS SDK tests).
const JS_PACKAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");

/// A workload driver: an interpreter, its script and its environment.
struct Driver {
    program: PathBuf,
    script: &'static str,
    env: Vec<(&'static str, PathBuf)>,
    /// Names the SDK in reports and errors.
    sdk: &'static str,
}

impl Driver {
    fn python(python: PathBuf) -> Self {
        Driver {
            program: python,
            script: PYTHON_DRIVER,
            env: Vec::new(),
            sdk: "Python SDK",
        }
    }

    fn js(node_modules: PathBuf) -> Self {
        Driver {
            program: PathBuf::from("node"),
            script: JS_DRIVER,
            env: vec![("NODE_PATH", node_modules)],
            sdk: "JavaScript SDK",
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.arg(self.script);
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }
}

/// The driver's result line. Every key is required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DriverResult {
    completed: u64,
    failed: u64,
    seconds: f64,
    latencies_ms: Vec<f64>,
    problems: Vec<String>,
    cpu_ms: DriverCpu,
    /// Checkout only.
    #[serde(default)]
    stock_initial: Option<i64>,
    #[serde(default)]
    reserved: Option<BTreeMap<String, i64>>,
    /// Per product, the smallest quantity refused for lack of stock.
    #[serde(default)]
    smallest_refused: Option<BTreeMap<String, i64>>,
    #[serde(default)]
    left: Option<BTreeMap<String, Option<i64>>>,
    #[serde(default)]
    refused_lines: Option<u64>,
    /// Outputs that completed but were wrong (the latency check needs it).
    #[serde(default)]
    wrong: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DriverCpu {
    user: f64,
    sys: f64,
}

/// The venv's python, created with the pinned SDK when missing.
async fn python(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(python) = given {
        return Ok(python.to_path_buf());
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-venv");
    let python = dir.join("bin/python");
    if !python.exists() {
        eprintln!(
            "creating {} with the pinned durabletask SDK ...",
            dir.display()
        );
        let status = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&dir)
            .status()
            .await?;
        if !status.success() {
            bail!("python3 -m venv {} failed", dir.display());
        }
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r", REQUIREMENTS])
            .status()
            .await?;
        if !status.success() {
            bail!("pip install -r {REQUIREMENTS} failed");
        }
    }
    Ok(python)
}

/// The `node_modules` folder with the pinned JavaScript SDK: under `given`,
/// or installed with `npm ci` under target/ when missing or stale.
async fn js_sdk(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(dir) => dir.to_path_buf(),
        None => {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-js");
            let package = Path::new(JS_PACKAGE);
            let lock = std::fs::read_to_string(package.join("package-lock.json"))
                .with_context(|| format!("reading {JS_PACKAGE}/package-lock.json"))?;
            let stamp = dir.join("installed-lock.json");
            if std::fs::read_to_string(&stamp).ok().as_deref() != Some(lock.as_str()) {
                eprintln!(
                    "installing the pinned durabletask-js SDK into {} ...",
                    dir.display()
                );
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                for file in ["package.json", "package-lock.json"] {
                    std::fs::copy(package.join(file), dir.join(file))
                        .with_context(|| format!("copying {file} into {}", dir.display()))?;
                }
                let status = Command::new("npm")
                    .args(["ci", "--silent", "--no-audit", "--no-fund"])
                    .current_dir(&dir)
                    .status()
                    .await
                    .context("running npm ci (is Node with npm installed?)")?;
                if !status.success() {
                    bail!("npm ci in {} failed", dir.display());
                }
                std::fs::write(&stamp, &lock)
                    .with_context(|| format!("writing {}", stamp.display()))?;
            }
            dir
        }
    };
    let modules = dir.join("node_modules");
    if !modules.join("@microsoft/durabletask-js").is_dir() {
        bail!(
            "{} has no @microsoft/durabletask-js: give a folder where `npm ci` installed server/tests/js/package.json",
            modules.display()
        );
    }
    Ok(modules)
}

/// Where the sidecar's work happens: Basalt in this process, or the SDK's
/// in-memory sidecar in another.
enum Sidecar<'a> {
    Basalt(&'a ServerHandle),
    External(u32),
}

/// What was sampled at MEASURE-START.
struct Marks {
    cpu: Option<CpuTime>,
    log: Option<basalt_storage::LogStats>,
    dispatched: [u64; 3],
    rss: Option<u64>,
}

impl Sidecar<'_> {
    async fn marks(&self) -> Marks {
        match self {
            Sidecar::Basalt(handle) => Marks {
                cpu: resources::own_cpu(),
                log: handle.engine().log_stats().await.ok(),
                dispatched: handle.dispatch_stats().dispatched,
                rss: resources::rss_bytes(),
            },
            Sidecar::External(pid) => Marks {
                cpu: resources::process_cpu(*pid),
                log: None,
                dispatched: [0; 3],
                rss: resources::process_rss_bytes(*pid),
            },
        }
    }

    fn peak_rss(&self) -> Option<u64> {
        match self {
            Sidecar::Basalt(_) => resources::peak_rss_bytes(),
            Sidecar::External(pid) => resources::process_peak_rss_bytes(*pid),
        }
    }
}

/// Runs the driver with `driver_args` against `addr`, sampling the
/// sidecar at the measure marks, and turns its result into a run.
async fn drive(
    driver: &Driver,
    addr: &str,
    driver_args: &[String],
    sidecar: Sidecar<'_>,
    config: &str,
) -> anyhow::Result<(Run, DriverResult)> {
    // The SDK logs every refused reservation as an error: keep its stderr
    // for a failure's diagnosis instead of the terminal.
    let log = tempfile::NamedTempFile::new().context("a file for the driver's log")?;
    let mut child = driver
        .command()
        .args(["--addr", addr])
        .args(driver_args)
        .stdout(Stdio::piped())
        .stderr(log.reopen().context("the driver's log")?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the {} driver", driver.sdk))?;
    let stdout = child.stdout.take().context("driver stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut start, mut end, mut result) = (None, None, None);
    if let Sidecar::Basalt(_) = sidecar {
        resources::reset_peak_rss();
    }
    while let Some(line) = lines.next_line().await? {
        match line.as_str() {
            "MEASURE-START" => start = Some(sidecar.marks().await),
            "MEASURE-END" => end = Some(sidecar.marks().await),
            json if json.starts_with('{') => {
                result = Some(
                    serde_json::from_str::<DriverResult>(json)
                        .with_context(|| format!("the driver's result does not parse: {json}"))?,
                );
            }
            _ => {}
        }
    }
    let status = child.wait().await?;
    if !status.success() {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        bail!(
            "the {} driver failed against {config} ({status}); the end of its log:\n{}",
            driver.sdk,
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
    let result = result.context("the driver printed no result")?;
    let (Some(start), Some(end)) = (start, end) else {
        bail!("the driver did not print both measure marks");
    };
    let mut run = Run::new(
        config,
        result.completed,
        result.failed,
        Duration::from_secs_f64(result.seconds.max(0.0)),
    );
    run.latency_ms = Latency::from_ms_samples(&result.latencies_ms);
    let units = result.completed.max(1) as f64;
    let worker = CpuTime {
        user_ms: result.cpu_ms.user,
        sys_ms: result.cpu_ms.sys,
    };
    run.worker_cpu_ms_per_instance = Some(worker.total_ms() / units);
    if let (Some(a), Some(b)) = (start.cpu, end.cpu) {
        let server = b.since(&a);
        run.server_cpu_ms_per_instance = Some(server.total_ms() / units);
        // The machine's CPU per unit: server and worker together.
        run.set_cpu(CpuTime {
            user_ms: server.user_ms + worker.user_ms,
            sys_ms: server.sys_ms + worker.sys_ms,
        });
    }
    if let (Some(a), Some(b)) = (start.log, end.log) {
        run.set_writes(DurableWrites::from(b.since(&a)));
    }
    if let Sidecar::Basalt(_) = sidecar {
        let handed: Vec<f64> = (0..3)
            .map(|k| (end.dispatched[k] - start.dispatched[k]) as f64 / units)
            .collect();
        run.extra.insert(
            "work_items_per_instance".into(),
            serde_json::json!({"orchestration_steps": handed[0], "activities": handed[1], "entity_batches": handed[2]}),
        );
    }
    run.peak_rss_bytes = sidecar.peak_rss();
    if let (Some(a), Some(b)) = (start.rss, end.rss)
        && result.completed > 0
    {
        run.rss_bytes_per_1000_retained =
            Some(b.saturating_sub(a) as f64 * 1000.0 / result.completed as f64);
    }
    Ok((run, result))
}

/// The checkout check, from the driver's raw results: every checkout
/// completed with a receipt, and per product the stock read back equals
/// the initial stock minus the units the receipts reserved, never
/// negative.
fn check_checkout(result: &DriverResult) -> Check {
    let mut problems: Vec<String> = Vec::new();
    if result.failed > 0 || !result.problems.is_empty() {
        problems.push(format!(
            "{} checkouts failed; {}",
            result.failed,
            result.problems.join("; ")
        ));
    }
    let (Some(initial), Some(reserved), Some(smallest_refused), Some(left), Some(refused)) = (
        result.stock_initial,
        &result.reserved,
        &result.smallest_refused,
        &result.left,
        result.refused_lines,
    ) else {
        return Check {
            passed: false,
            detail: "the driver reported no stock figures".into(),
        };
    };
    let mut units = 0;
    for (product, taken) in reserved {
        units += taken;
        match left.get(product).copied().flatten() {
            None => problems.push(format!("{product}: stock could not be read back")),
            Some(l) if l < 0 => problems.push(format!("{product}: stock went negative ({l})")),
            Some(l) if initial - l != *taken => problems.push(format!(
                "{product}: {} units left the stock but the receipts reserved {taken}",
                initial - l
            )),
            // Stock only goes down: a refused quantity must exceed what is left.
            Some(l) if smallest_refused.get(product).is_some_and(|q| l >= *q) => {
                problems.push(format!(
                    "{product}: a line of {} was refused, but {l} units are left",
                    smallest_refused.get(product).copied().unwrap_or_default()
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(unknown) = smallest_refused.keys().find(|p| !reserved.contains_key(*p)) {
        problems.push(format!("a line of unknown product {unknown} was refused"));
    }
    if left.len() != reserved.len() {
        problems.push(format!(
            "{} products read back for {} stocked",
            left.len(),
            reserved.len()
        ));
    }
    if problems.is_empty() {
        Check {
            passed: true,
            detail: format!(
                "{} checkouts completed; stock of {} products read back through the client matches the receipts ({units} units reserved, {refused} lines refused for lack of stock{})",
                result.completed,
                reserved.len(),
                if refused == 0 {
                    "; stock never ran out, so refusals were not exercised"
                } else {
                    ""
                }
            ),
        }
    } else {
        problems.truncate(5);
        Check {
            passed: false,
            detail: problems.join("; "),
        }
    }
}

fn check_latency(result: &DriverResult) -> Check {
    let Some(wrong) = result.wrong else {
        return Check {
            passed: false,
            detail: "the driver reported no count of wrong outputs".into(),
        };
    };
    if result.failed == 0 && wrong == 0 && result.problems.is_empty() {
        Check {
            passed: true,
            detail: format!(
                "{} orchestrations completed with the expected 3 results",
                result.completed
            ),
        }
    } else {
        Check {
            passed: false,
            detail: format!(
                "{} failed, {wrong} wrong: {}",
                result.failed,
                result.problems.join("; ")
            ),
        }
    }
}

/// A fresh hub location on `store` for one server.
fn fresh_storage(store: &BenchStore) -> anyhow::Result<(StorageChoice, Option<tempfile::TempDir>)> {
    Ok(match store {
        BenchStore::Local { parent, .. } => {
            let dir = tempfile::Builder::new()
                .prefix("basalt-bench-")
                .tempdir_in(parent)
                .with_context(|| format!("a hub folder under {}", parent.display()))?;
            (StorageChoice::LocalDir(dir.path().join("hub")), Some(dir))
        }
        BenchStore::Memory => (StorageChoice::Memory, None),
        BenchStore::Url(url) => (
            StorageChoice::Url(basalt_benches::store::fresh_prefix(url)),
            None,
        ),
    })
}

/// Runs the driver against a fresh in-process Basalt server.
async fn against_basalt(
    common: &CommonArgs,
    store: &BenchStore,
    commit_linger_micros: u64,
    driver: &Driver,
    driver_args: &[String],
) -> anyhow::Result<(Run, DriverResult)> {
    let (storage, _dir) = fresh_storage(store)?;
    let handle = server::start(ServeOptions {
        storage,
        grpc_addr: "127.0.0.1:0".parse()?,
        http_addr: None,
        partitions: common.partitions,
        commit_linger_micros,
        ..ServeOptions::default()
    })
    .await?;
    let addr = format!("localhost:{}", handle.grpc_addr().port());
    let outcome = drive(
        driver,
        &addr,
        driver_args,
        Sidecar::Basalt(&handle),
        "basalt",
    )
    .await;
    handle.stop().await;
    outcome
}

/// Runs the Python driver against the Python SDK's in-memory sidecar in
/// its own process.
async fn against_in_memory_sidecar(
    python: &Path,
    driver_args: &[String],
) -> anyhow::Result<(Run, DriverResult)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child: Child = Command::new(python)
        .arg(PYTHON_DRIVER)
        .args(["--in-memory-sidecar", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the SDK's in-memory sidecar")?;
    let mut lines = BufReader::new(child.stdout.take().context("sidecar stdout")?).lines();
    let line = lines.next_line().await?.unwrap_or_default();
    if !line.starts_with("SIDECAR") {
        bail!("the in-memory sidecar did not start: {line:?}");
    }
    let pid = child.id().context("the sidecar's pid")?;
    let outcome = drive(
        &Driver::python(python.to_path_buf()),
        &format!("localhost:{port}"),
        driver_args,
        Sidecar::External(pid),
        "durabletask-in-memory-sidecar",
    )
    .await;
    let _ = child.kill().await;
    outcome
}

/// Runs `basalt bench sidecar-checkout`.
pub async fn checkout(args: &SidecarCheckoutArgs) -> anyhow::Result<()> {
    let store = store(&args.common)?;
    let environment = environment(&store);
    let (driver, python) = match args.sdk {
        Sdk::Python => {
            let python = python(args.python.as_deref()).await?;
            (Driver::python(python.clone()), Some(python))
        }
        Sdk::Js => (Driver::js(js_sdk(args.js_sdk.as_deref()).await?), None),
    };
    let mut driver_args: Vec<String> = vec![
        "--checkouts".into(),
        args.checkouts.to_string(),
        "--warmup".into(),
        args.warmup.to_string(),
        "--products".into(),
        args.products.to_string(),
        "--stock".into(),
        args.stock.to_string(),
    ];
    if let Some(fault) = &args.inject_fault {
        driver_args.extend(["--fault".into(), fault.clone()]);
    }
    let mut finished = Vec::new();
    for round in 1..=args.common.repeat.max(1) {
        let (mut run, result) = against_basalt(
            &args.common,
            &store,
            args.commit_linger_micros,
            &driver,
            &driver_args,
        )
        .await?;
        run.repeat = round;
        finished.push(Finished {
            check: check_checkout(&result),
            run,
        });
        if let (false, Some(python)) = (args.no_baseline, &python) {
            let (mut run, result) = against_in_memory_sidecar(python, &driver_args).await?;
            run.repeat = round;
            finished.push(Finished {
                check: check_checkout(&result),
                run,
            });
        }
    }
    let mut notes = ratio_note(&finished);
    if args.sdk == Sdk::Js {
        notes.push(
            "the JavaScript SDK has no gRPC sidecar of its own (its in-memory backend runs inside the worker), so no baseline ran".into(),
        );
    }
    Outcome {
        workload: "sidecar-checkout",
        title: format!(
            "sidecar checkout: {} checkouts at once (2 stock entity calls + 1 receipt activity each; {} products of {} units), {} client and worker out of process; basalt on {}; latency measured in the client; cpu = server + worker",
            args.checkouts,
            args.products,
            args.stock,
            driver.sdk,
            store.label()
        ),
        settings: args,
        common: &args.common,
        environment,
        finished,
        notes,
    }
    .report()
}

/// Where the CPU went per run, and Basalt's throughput over the
/// in-memory sidecar's, per round.
fn ratio_note(finished: &[Finished]) -> Vec<String> {
    let mut notes: Vec<String> = finished
        .iter()
        .map(|f| {
            let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
            format!(
                "{} (run {}): CPU per checkout: server {} ms + worker {} ms",
                f.run.config,
                f.run.repeat,
                ms(f.run.server_cpu_ms_per_instance),
                ms(f.run.worker_cpu_ms_per_instance)
            )
        })
        .collect();
    notes.extend(throughput_ratio(finished));
    notes
}

fn throughput_ratio(finished: &[Finished]) -> Vec<String> {
    let rates = |config: &str| -> Vec<f64> {
        finished
            .iter()
            .filter(|f| f.run.config == config)
            .map(|f| f.run.throughput_per_s)
            .collect()
    };
    let (basalt, sidecar) = (rates("basalt"), rates("durabletask-in-memory-sidecar"));
    if sidecar.is_empty() {
        return Vec::new();
    }
    let ratios: Vec<String> = basalt
        .iter()
        .zip(&sidecar)
        .map(|(b, s)| format!("{:.2}x", b / s.max(1e-9)))
        .collect();
    vec![format!(
        "basalt / in-memory sidecar throughput: {}",
        ratios.join(", ")
    )]
}

/// Runs `basalt bench latency --sidecar`.
pub async fn latency(args: &LatencyArgs) -> anyhow::Result<()> {
    super::workloads::check_rate(args)?;
    if args.baselines.iter().any(|b| *b != Baseline::None) {
        bail!(
            "--sidecar runs basalt serve alone: leave out --baselines (use --storage memory:// for the in-memory figure)"
        );
    }
    let store = store(&args.common)?;
    let environment = environment(&store);
    let driver = Driver::python(python(args.python.as_deref()).await?);
    let driver_args: Vec<String> = vec![
        "--workload".into(),
        "latency".into(),
        "--rate".into(),
        args.rate.to_string(),
        "--seconds".into(),
        args.seconds.to_string(),
        "--warmup".into(),
        "20".into(),
    ];
    let mut finished = Vec::new();
    for round in 1..=args.common.repeat.max(1) {
        let (mut run, result) =
            against_basalt(&args.common, &store, 0, &driver, &driver_args).await?;
        run.repeat = round;
        run.extra.insert("rate_per_s".into(), args.rate.into());
        finished.push(Finished {
            check: check_latency(&result),
            run,
        });
    }
    Outcome {
        workload: "latency",
        title: format!(
            "latency --sidecar: hello3 (3 activities in sequence) started at {}/s for {} s by the Python SDK through basalt serve on {}; latency from each scheduled arrival to the client seeing completion; cpu = server + worker",
            args.rate,
            args.seconds,
            store.label()
        ),
        settings: args,
        common: &args.common,
        environment,
        finished,
        notes: Vec::new(),
    }
    .report()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(left_p0: Option<i64>) -> DriverResult {
        DriverResult {
            completed: 3,
            failed: 0,
            seconds: 1.0,
            latencies_ms: vec![1.0, 2.0, 3.0],
            problems: Vec::new(),
            cpu_ms: DriverCpu {
                user: 1.0,
                sys: 1.0,
            },
            stock_initial: Some(10),
            reserved: Some(BTreeMap::from([("p0".into(), 4), ("p1".into(), 10)])),
            smallest_refused: Some(BTreeMap::from([("p1".into(), 2)])),
            left: Some(BTreeMap::from([
                ("p0".into(), left_p0),
                ("p1".into(), Some(0)),
            ])),
            refused_lines: Some(1),
            wrong: None,
        }
    }

    #[test]
    fn stock_that_matches_the_receipts_passes() {
        let check = check_checkout(&result(Some(6)));
        assert!(check.passed, "{}", check.detail);
    }

    #[test]
    fn stock_taken_twice_or_missing_fails() {
        let twice = check_checkout(&result(Some(2)));
        assert!(!twice.passed);
        assert!(
            twice.detail.contains("p0: 8 units left"),
            "{}",
            twice.detail
        );
        assert!(!check_checkout(&result(Some(-1))).passed);
        assert!(!check_checkout(&result(None)).passed);
    }

    #[test]
    fn a_refusal_with_stock_left_fails() {
        // p0 had 6 left at the end: a refused line of 3 was not for lack
        // of stock (a failing entity, not an empty one).
        let mut refused_wrongly = result(Some(6));
        refused_wrongly.smallest_refused = Some(BTreeMap::from([("p0".into(), 3)]));
        let check = check_checkout(&refused_wrongly);
        assert!(!check.passed);
        assert!(
            check.detail.contains("refused, but 6 units are left"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn a_result_missing_a_key_does_not_parse() {
        let missing = r#"{"completed": 1, "failed": 0, "latencies_ms": [], "problems": [], "cpu_ms": {"user": 1, "sys": 1}}"#;
        assert!(serde_json::from_str::<DriverResult>(missing).is_err());
    }
}
