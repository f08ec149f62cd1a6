//! `basalt bench` as a user runs it: each workload, small, writes the one
//! report schema with a passed check; a broken worker makes the sidecar
//! check fail the command; a folder where fsync does nothing is refused.
//! (Speed is never asserted here: the figures are the benchmark's, not a
//! test's.)

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn basalt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(args)
        .output()
        .expect("run basalt")
}

fn read_report(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("the report was written");
    serde_json::from_str(&text).expect("the report is JSON")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every key the schema promises, in `report`.
fn assert_schema(report: &serde_json::Value, workload: &str) {
    assert_eq!(report["workload"], workload);
    assert!(report["settings"].is_object());
    for key in [
        "git_rev",
        "dirty",
        "rustc",
        "cores",
        "kernel",
        "bench_dir",
        "bench_dir_fs",
    ] {
        assert!(
            report["environment"].get(key).is_some(),
            "environment.{key} missing"
        );
    }
    assert!(report["check"]["passed"].is_boolean());
    assert!(report["check"]["detail"].is_string());
    let runs = report["runs"].as_array().expect("runs");
    assert!(!runs.is_empty());
    for run in runs {
        for key in [
            "config",
            "completed",
            "failed",
            "elapsed_s",
            "throughput_per_s",
            "storage_writes_per_instance",
            "storage_bytes_per_instance",
            "cpu_ms_per_instance",
            "cpu_user_ms_per_instance",
            "cpu_sys_ms_per_instance",
            "peak_rss_bytes",
            "rss_bytes_per_1000_retained",
        ] {
            assert!(run.get(key).is_some(), "runs[].{key} missing in {run}");
        }
        for key in ["mean", "p50", "p90", "p99", "max"] {
            assert!(run["latency_ms"][key].is_number(), "latency_ms.{key}");
        }
    }
}

#[test]
fn checkout_writes_the_report_with_every_baseline_at_the_same_n() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("r.json");
    let hubs = dir.path().join("hubs");
    let output = basalt(&[
        "bench",
        "checkout",
        "--instances",
        "300",
        "--pool",
        "10",
        "--stock",
        "40",
        "--dir",
        hubs.to_str().expect("utf-8"),
        "--allow-volatile",
        "--json",
        json.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("check: passed"), "{stdout}");
    let report = read_report(&json);
    assert_schema(&report, "checkout");
    assert_eq!(report["check"]["passed"], true);
    let configs: Vec<&str> = report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["config"].as_str().expect("config"))
        .collect();
    assert_eq!(
        configs,
        ["group-commit", "per-event", "no-pipelining", "memory"]
    );
    for run in report["runs"].as_array().expect("runs") {
        assert_eq!(run["completed"], 300, "{run}");
        assert!(run["storage_writes"]["group_commits"].as_u64() > Some(0));
        // 300 checkouts ask for about 1,200 units of 400: lines refused.
        assert!(run["extra"]["refused_lines"].as_u64() > Some(0), "{run}");
    }
    assert_eq!(report["settings"]["instances"], 300);
    // Every hub folder was removed after its run.
    let left = std::fs::read_dir(&hubs).expect("hubs folder").count();
    assert_eq!(left, 0);
}

#[test]
fn every_in_process_workload_checks_its_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs: &[(&str, &[&str])] = &[
        ("hello5", &["--instances", "100"]),
        ("sequence", &["--steps", "50"]),
        ("fanout", &["--instances", "40", "--width", "5"]),
        ("bank", &["--transfers", "100", "--accounts", "10"]),
        ("latency", &["--rate", "50", "--seconds", "0.4"]),
    ];
    for (workload, extra) in runs {
        let json = dir.path().join(format!("{workload}.json"));
        let mut args = vec![
            "bench",
            workload,
            "--storage",
            "memory://",
            "--repeat",
            "2",
            "--json",
            json.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        if *workload != "latency" {
            args.extend(["--baselines", "no-pipelining"]);
        }
        let output = basalt(&args);
        assert!(output.status.success(), "{workload}: {}", text(&output));
        let report = read_report(&json);
        assert_schema(&report, workload);
        assert_eq!(report["check"]["passed"], true, "{workload}");
        assert_eq!(report["environment"]["bench_dir_fs"], "memory");
        let summary = report["summary"].as_array().expect("summary");
        assert!(
            summary.iter().all(|s| s["repeats"] == 2),
            "{workload}: {summary:?}"
        );
    }
}

#[test]
fn a_folder_where_fsync_does_nothing_is_refused_unless_allowed() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return;
    }
    let dir = tempfile::tempdir_in(shm).expect("tempdir in /dev/shm");
    let path = dir.path().to_str().expect("utf-8");
    let output = basalt(&["bench", "sequence", "--steps", "5", "--dir", path]);
    assert!(!output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tmpfs") && stderr.contains("--allow-volatile"),
        "{stderr}"
    );
    let output = basalt(&[
        "bench",
        "sequence",
        "--steps",
        "5",
        "--no-baseline",
        "--dir",
        path,
        "--allow-volatile",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("volatile") && stdout.contains("NOT durable"),
        "{stdout}"
    );
}

#[test]
fn group_commit_reads_every_record_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("gc.json");
    let output = basalt(&[
        "bench",
        "group-commit",
        "--producers",
        "1,8",
        "--records",
        "200",
        "--serial-records",
        "20",
        "--dir",
        dir.path().to_str().expect("utf-8"),
        "--allow-volatile",
        "--json",
        json.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let report = read_report(&json);
    assert_schema(&report, "group-commit");
    assert_eq!(report["check"]["passed"], true);
    let runs = report["runs"].as_array().expect("runs");
    let configs: std::collections::BTreeSet<&str> = runs
        .iter()
        .map(|r| r["config"].as_str().expect("config"))
        .collect();
    assert_eq!(
        configs,
        ["concurrent-per-record", "group-commit", "serial-per-record"].into()
    );
    assert!(runs.iter().all(|r| r["producers"].is_u64()));
}

/// The sidecar checkout through the Python SDK passes with a correct
/// worker and FAILS the command when the stock entity takes every
/// reservation twice: the check reads stock back and compares it with the
/// receipts.
#[test]
fn sidecar_checkout_check_catches_a_broken_stock_entity() {
    let python = common::python_sdk();
    sidecar_checkout_catches_a_broken_stock_entity(&["--python", python.to_str().expect("utf-8")]);
}

/// The same checkout and check driven by the JavaScript SDK's client and
/// worker (`--sdk js`).
#[test]
fn sidecar_checkout_through_the_js_sdk_catches_a_broken_stock_entity() {
    let js = common::js_sdk();
    sidecar_checkout_catches_a_broken_stock_entity(&[
        "--sdk",
        "js",
        "--js-sdk",
        js.to_str().expect("utf-8"),
    ]);
}

fn sidecar_checkout_catches_a_broken_stock_entity(sdk: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sidecar = |json: &Path, fault: Option<&str>| {
        let mut args = vec![
            "bench",
            "sidecar-checkout",
            "--checkouts",
            "40",
            "--warmup",
            "5",
            "--products",
            "5",
            "--stock",
            "20",
            "--no-baseline",
            "--dir",
            dir.path().to_str().expect("utf-8"),
            "--allow-volatile",
            "--json",
            json.to_str().expect("utf-8"),
        ];
        args.extend(sdk);
        if let Some(fault) = fault {
            args.extend(["--inject-fault", fault]);
        }
        basalt(&args)
    };

    let good = dir.path().join("good.json");
    let output = sidecar(&good, None);
    assert!(output.status.success(), "{}", text(&output));
    let report = read_report(&good);
    assert_schema(&report, "sidecar-checkout");
    assert_eq!(report["check"]["passed"], true);
    let run = &report["runs"][0];
    assert_eq!(run["completed"], 40);
    assert!(run["server_cpu_ms_per_instance"].is_number(), "{run}");
    assert!(run["worker_cpu_ms_per_instance"].is_number(), "{run}");
    // 40 checkouts ask for about 160 units of 100: some lines refused.
    let detail = report["check"]["detail"].as_str().expect("detail");
    assert!(!detail.contains(" 0 lines refused"), "{detail}");

    let broken = dir.path().join("broken.json");
    let output = sidecar(&broken, Some("double-reserve"));
    assert!(!output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("check FAILED"), "{stderr}");
    let report = read_report(&broken);
    assert_eq!(report["check"]["passed"], false);
    let detail = report["check"]["detail"].as_str().expect("detail");
    assert!(
        detail.contains("left the stock but the receipts reserved")
            || detail.contains("went negative"),
        "{detail}"
    );
}

/// `sidecar-sequence` drives `basalt serve` (a child process) through a
/// history long enough for the encoded-history cache: every step's history
/// is checked by the worker, the final one is read back, and the report
/// has the server's CPU per step early and late.
#[test]
fn sidecar_sequence_reports_cpu_per_step_early_and_late() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("sequence.json");
    let output = basalt(&[
        "bench",
        "sidecar-sequence",
        "--steps",
        "150",
        "--window",
        "20",
        "--partitions",
        "2",
        "--dir",
        dir.path().to_str().expect("utf-8"),
        "--allow-volatile",
        "--json",
        json.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let report = read_report(&json);
    assert_schema(&report, "sidecar-sequence");
    assert_eq!(report["check"]["passed"], true, "{report}");
    let run = &report["runs"][0];
    assert_eq!(run["completed"], 150);
    assert_eq!(run["extra"]["history_events"], 453);
    for window in [
        "server_cpu_ms_per_step_early",
        "server_cpu_ms_per_step_late",
    ] {
        assert!(
            run["extra"][window]["ms"]
                .as_f64()
                .is_some_and(|ms| ms > 0.0),
            "{run}"
        );
    }
    assert_eq!(
        run["extra"]["server_cpu_ms_per_step_late"]["steps"],
        serde_json::json!([131, 150])
    );
}

/// `steady` with almost no memory for records: the child fills the hub in
/// waves (every wave checked), is killed with SIGKILL mid-work, and the
/// reopened hub holds every acknowledged checkout.
#[test]
fn steady_fills_in_waves_survives_a_kill_and_reports_every_wave() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("r.json");
    let hubs = dir.path().join("hubs");
    let output = basalt(&[
        "bench",
        "steady",
        "--instances",
        "600",
        "--wave",
        "200",
        "--pool",
        "10",
        "--memory-budget",
        "64KiB",
        "--partitions",
        "4",
        "--dir",
        hubs.to_str().expect("utf-8"),
        "--allow-volatile",
        "--json",
        json.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let report = read_report(&json);
    assert_schema(&report, "steady");
    assert_eq!(report["check"]["passed"], true);
    let run = &report["runs"][0];
    assert_eq!(run["completed"], 600);
    assert!(run["recovery_s"].is_number(), "{run}");
    let waves = run["waves"].as_array().expect("waves");
    assert_eq!(waves.len(), 3);
    for (i, wave) in waves.iter().enumerate() {
        assert_eq!(wave["index"], i);
        assert_eq!(wave["completed"], 200);
        for key in [
            "throughput_per_s",
            "rss_bytes",
            "checkpoints",
            "checkpoint_ms_max",
            "checkpoint_bytes_max",
        ] {
            assert!(wave.get(key).is_some(), "waves[].{key} missing in {wave}");
        }
    }
    // With 64 KiB for records, checkpoints ran during the fill.
    assert!(
        waves.iter().any(|w| w["checkpoints"].as_u64() > Some(0)),
        "{waves:?}"
    );
}
