//! `basalt bench sidecar-checkout`: the checkout workload run out of
//! process by the official Python SDK's worker through the gRPC sidecar
//! (`benches/python/checkout_bench.py`), against an in-process Basalt
//! server on local fsync storage and, in the same run, against the SDK's
//! own in-memory sidecar. Server CPU is this process's CPU time (or the
//! in-memory sidecar process's) between the driver's MEASURE-START and
//! MEASURE-END lines, divided by the measured checkouts.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use basalt_benches::workloads::process_cpu_ms;
use basalt_server::config::{ServeOptions, StorageChoice};
use basalt_server::server;
use serde::Serialize;

use crate::cli::SidecarCheckoutArgs;

const DRIVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../benches/python/checkout_bench.py"
);
const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/requirements.txt");

/// The figures of one sidecar.
#[derive(Debug, Serialize)]
struct Figures {
    sidecar: String,
    checkouts: u64,
    checkouts_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    sidecar_cpu_ms_per_checkout: Option<f64>,
    /// CPU of the Python process (SDK worker and client) per checkout.
    worker_cpu_ms_per_checkout: Option<f64>,
    /// Work items handed to the worker per checkout (orchestration steps,
    /// activities, entity batches), warm-up included; Basalt only.
    work_items_per_checkout: Option<[f64; 3]>,
    /// Storage writes (group commits) per checkout, warm-up included;
    /// Basalt only.
    storage_writes_per_checkout: Option<f64>,
}

/// The venv's python, created with the pinned SDK when missing.
fn python(args: &SidecarCheckoutArgs) -> anyhow::Result<PathBuf> {
    if let Some(python) = &args.python {
        return Ok(python.clone());
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
            .status()?;
        if !status.success() {
            bail!("python3 -m venv {} failed", dir.display());
        }
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r", REQUIREMENTS])
            .status()?;
        if !status.success() {
            bail!("pip install -r {REQUIREMENTS} failed");
        }
    }
    Ok(python)
}

/// Runs the driver against `addr`; samples `cpu_of` at the measure marks.
/// How many checkouts to measure and to warm up with.
#[derive(Clone, Copy)]
struct Batch {
    checkouts: u64,
    warmup: u64,
}

fn drive(
    python: &Path,
    addr: &str,
    args: Batch,
    cpu_of: &str,
    sidecar: &str,
) -> anyhow::Result<Figures> {
    let mut child = Command::new(python)
        .arg(DRIVER)
        .args(["--addr", addr])
        .args(["--checkouts", &args.checkouts.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the Python driver")?;
    let stdout = child.stdout.take().context("driver stdout")?;
    let worker_pid = child.id().to_string();
    let mut cpu_start = None;
    let mut cpu_end = None;
    let mut worker_start = None;
    let mut worker_end = None;
    let mut result = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match line.as_str() {
            "MEASURE-START" => {
                cpu_start = process_cpu_ms(cpu_of);
                worker_start = process_cpu_ms(&worker_pid);
            }
            "MEASURE-END" => {
                cpu_end = process_cpu_ms(cpu_of);
                worker_end = process_cpu_ms(&worker_pid);
            }
            json if json.starts_with('{') => {
                result = Some(serde_json::from_str::<serde_json::Value>(json)?)
            }
            _ => {}
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("the Python driver failed against {sidecar} ({status})");
    }
    let result = result.context("the driver printed no result")?;
    let number = |key: &str| result[key].as_f64().unwrap_or(0.0);
    Ok(Figures {
        sidecar: sidecar.to_owned(),
        checkouts: args.checkouts,
        checkouts_per_second: number("checkouts_per_second"),
        p50_ms: number("p50_ms"),
        p99_ms: number("p99_ms"),
        sidecar_cpu_ms_per_checkout: cpu_start
            .zip(cpu_end)
            .map(|(a, b)| (b - a) / args.checkouts as f64),
        worker_cpu_ms_per_checkout: worker_start
            .zip(worker_end)
            .map(|(a, b)| (b - a) / args.checkouts as f64),
        work_items_per_checkout: None,
        storage_writes_per_checkout: None,
    })
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_memory_sidecar(python: &Path, args: Batch) -> anyhow::Result<Figures> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = Command::new(python)
        .arg(DRIVER)
        .args(["--in-memory-sidecar", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the SDK's in-memory sidecar")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("sidecar stdout")?).read_line(&mut line)?;
    let sidecar = KillOnDrop(child);
    if !line.starts_with("SIDECAR") {
        bail!("the in-memory sidecar did not start: {line:?}");
    }
    let pid = sidecar.0.id().to_string();
    drive(
        python,
        &format!("localhost:{port}"),
        args,
        &pid,
        "durabletask in-memory sidecar",
    )
}

pub async fn run(args: &SidecarCheckoutArgs) -> anyhow::Result<()> {
    let python = python(args)?;
    let parent = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir(),
    };
    let dir = tempfile::tempdir_in(&parent)?;
    let handle = server::start(ServeOptions {
        storage: if args.memory {
            StorageChoice::Memory
        } else {
            StorageChoice::LocalDir(dir.path().join("hub"))
        },
        grpc_addr: "127.0.0.1:0".parse()?,
        http_addr: None,
        partitions: args.partitions,
        commit_linger_micros: args.commit_linger_micros,
        ..ServeOptions::default()
    })
    .await?;
    let addr = format!("localhost:{}", handle.grpc_addr().port());
    let python_for_basalt = python.clone();
    let batch = Batch {
        checkouts: args.checkouts,
        warmup: args.warmup,
    };
    let label = if args.memory {
        "basalt (memory, no durability)"
    } else {
        "basalt (local fsync)"
    };
    let mut basalt =
        tokio::task::spawn_blocking(move || drive(&python_for_basalt, &addr, batch, "self", label))
            .await??;
    let dispatched = handle.dispatch_stats().dispatched;
    let total = (args.checkouts + args.warmup) as f64;
    basalt.work_items_per_checkout = Some(dispatched.map(|n| n as f64 / total));
    basalt.storage_writes_per_checkout = handle
        .engine()
        .log_stats()
        .await
        .ok()
        .map(|stats| stats.writes as f64 / total);
    handle.stop().await;
    let mut all = vec![basalt];
    if !args.no_baseline {
        all.push(tokio::task::spawn_blocking(move || in_memory_sidecar(&python, batch)).await??);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "sidecar checkout: {} checkouts at once (2 stock entity calls + 1 receipt activity each), Python SDK worker out of process",
        args.checkouts
    );
    println!(
        "{:<32} {:>12} {:>9} {:>9} {:>22} {:>22}",
        "sidecar", "checkouts/s", "p50 ms", "p99 ms", "sidecar CPU/checkout", "worker CPU/checkout"
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |c| format!("{c:.3} ms"));
    for f in &all {
        println!(
            "{:<32} {:>12.1} {:>9.1} {:>9.1} {:>22} {:>22}",
            f.sidecar,
            f.checkouts_per_second,
            f.p50_ms,
            f.p99_ms,
            ms(f.sidecar_cpu_ms_per_checkout),
            ms(f.worker_cpu_ms_per_checkout),
        );
    }
    if let Some([steps, activities, batches]) = all[0].work_items_per_checkout {
        println!(
            "basalt handed the worker {steps:.2} orchestration steps, {activities:.2} activities and {batches:.2} entity batches per checkout"
        );
    }
    if let Some(writes) = all[0].storage_writes_per_checkout {
        println!("basalt storage writes (group commits) per checkout: {writes:.2}");
    }
    if let [basalt, baseline] = all.as_slice() {
        println!(
            "basalt / in-memory sidecar throughput: {:.2}x",
            basalt.checkouts_per_second / baseline.checkouts_per_second
        );
    }
    Ok(())
}
