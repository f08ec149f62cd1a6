//! `basalt serve --storage URL` on object stores, through their real wire
//! protocols: Amazon S3 (the `moto` server, pinned in
//! `tests/object_stores/requirements.txt`, pip-installed under the build
//! directory) and Azure Blob (Azurite, pinned in
//! `tests/object_stores/package.json`, npm-installed under the build
//! directory). The Python SDK runs scenarios against each; then the server
//! is killed with SIGKILL and a new one on the same URL still has every
//! instance, with its output.
//!
//! Needs Python 3.9+ with venv and pip, Node with npm, and the package
//! registries (or their caches).

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{SCENARIOS, ServerProcess, python_sdk, run, venv};

const MOTO_REQUIREMENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/object_stores/requirements.txt"
);
const AZURITE_PACKAGE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/object_stores/package.json"
);
const AZURITE_CONTAINER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/object_stores/azurite_container.py"
);

/// The scenarios run on each store: activities, fan-out, entities,
/// timers, continue-as-new.
const SCENARIO_SUBSET: &[&str] = &[
    "activity_sequence",
    "fan_out_fan_in",
    "entities",
    "timer",
    "continue_as_new",
];

/// An emulator process, killed when the test ends.
struct Emulator {
    child: Child,
    port: u16,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within 60 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// The S3 emulator, with `bucket` created.
fn moto(bucket: &str, log_dir: &Path) -> Emulator {
    let python = venv("moto-venv", MOTO_REQUIREMENTS);
    let server = python.with_file_name("moto_server");
    let port = free_port();
    let log = log_dir.join("moto.log");
    let child = Command::new(&server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("moto log"))
        .spawn()
        .expect("start moto_server");
    let emulator = Emulator { child, port };
    wait_for_port(port, "moto_server", &log);
    run(Command::new(&python).args([
        "-c",
        &format!(
            "import urllib.request; urllib.request.urlopen(urllib.request.Request(\
             'http://127.0.0.1:{port}/{bucket}', method='PUT'))"
        ),
    ]));
    emulator
}

/// The Azure Blob emulator, with `container` created.
fn azurite(container: &str, data: &Path, log_dir: &Path) -> Emulator {
    let dir = tmp().join("azurite");
    let package = std::fs::read_to_string(AZURITE_PACKAGE).expect("read package.json");
    let bin = dir.join("node_modules").join(".bin").join("azurite-blob");
    if !bin.exists()
        || std::fs::read_to_string(dir.join("package.json")).ok() != Some(package.clone())
    {
        std::fs::create_dir_all(&dir).expect("azurite dir");
        std::fs::write(dir.join("package.json"), &package).expect("write package.json");
        run(Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir));
    }
    let port = free_port();
    let log = log_dir.join("azurite.log");
    let child = Command::new(&bin)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(data)
        .args(["--silent", "--skipApiVersionCheck"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("azurite log"))
        .spawn()
        .expect("start azurite-blob");
    let emulator = Emulator { child, port };
    wait_for_port(port, "azurite-blob", &log);
    run(Command::new("python3")
        .arg(AZURITE_CONTAINER)
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(container));
    emulator
}

/// Completed instances and their outputs, as the CLI lists them.
fn completed(server: &ServerProcess) -> Vec<(String, String)> {
    let output = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["list", "--status", "completed", "--top", "1000", "--json"])
        .arg("--server")
        .arg(format!("http://{}", server.grpc))
        .output()
        .expect("basalt list");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let mut pairs: Vec<(String, String)> = list
        .as_array()
        .expect("an array")
        .iter()
        .map(|s| (s["instanceId"].to_string(), s["output"].to_string()))
        .collect();
    pairs.sort();
    pairs
}

/// Runs the scenarios on `url`, kills the server, and checks a new one
/// on the same URL has every completed instance.
fn serve_on(url: &str, env: &[(&str, &str)], logs: &Path) {
    let python = python_sdk();
    let start = |name: &str| {
        ServerProcess::start_with(
            &["--storage", url],
            &logs.join(name),
            env,
            "127.0.0.1:0",
            "off",
            &[],
        )
    };
    let server = start("first.log");
    let output = Command::new(&python)
        .arg(SCENARIOS)
        .arg("--addr")
        .arg(&server.grpc)
        .arg("--only")
        .args(SCENARIO_SUBSET)
        .output()
        .expect("run scenarios.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(" passed, 0 failed"),
        "scenarios on {url} failed:\n{stdout}\n--- server log ---\n{}",
        server.log_text()
    );
    let before = completed(&server);
    assert!(before.len() >= SCENARIO_SUBSET.len(), "{before:?}");
    server.kill9();
    let server = start("second.log");
    assert_eq!(
        completed(&server),
        before,
        "every completed instance and its output survive a SIGKILL"
    );
    let (code, _) = server.terminate();
    assert_eq!(code, Some(0));
}

/// Runs `basalt bench ARGS --json FILE` with `env`; fails the test unless
/// it succeeds, and returns its report.
fn bench_report(args: &[&str], env: &[(&str, &str)], json: &Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(json)
        .envs(env.iter().copied())
        .output()
        .expect("run basalt bench");
    assert!(
        output.status.success(),
        "basalt bench {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).expect("report")).expect("json");
    assert_eq!(report["check"]["passed"], true, "{report}");
    report
}

/// `basalt bench checkout --storage URL` and `group-commit --storage URL`:
/// the benchmarks run on the same store `basalt serve` takes, check their
/// results, and say where they ran.
fn bench_on(url: &str, env: &[(&str, &str)], dir: &Path) {
    let hub = format!("{url}/bench");
    let report = bench_report(
        &[
            "checkout",
            "--storage",
            &hub,
            "--instances",
            "100",
            "--pool",
            "10",
            "--stock",
            "20",
            "--baselines",
            "none",
        ],
        env,
        &dir.join("bench.json"),
    );
    assert_eq!(report["environment"]["bench_dir"], hub);
    let fs = report["environment"]["bench_dir_fs"].as_str().expect("fs");
    assert!(fs.starts_with("object store"), "{fs}");
    assert!(report["runs"][0]["storage_writes"]["group_commits"].as_u64() > Some(0));

    // The storage log alone, every mode, every record read back.
    let log = format!("{url}/log");
    let report = bench_report(
        &[
            "group-commit",
            "--storage",
            &log,
            "--producers",
            "1,8",
            "--records",
            "80",
            "--serial-records",
            "10",
        ],
        env,
        &dir.join("group-commit.json"),
    );
    assert_eq!(report["runs"].as_array().map(Vec::len), Some(6));
}

#[test]
fn serve_on_s3_through_the_s3_protocol() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = moto("basalt", dir.path());
    let endpoint = format!("http://127.0.0.1:{}", emulator.port);
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    serve_on("s3://basalt/hub", &env, dir.path());
    bench_on("s3://basalt", &env, dir.path());
}

#[test]
fn serve_on_azure_blob_through_the_blob_protocol() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("azurite-data");
    std::fs::create_dir_all(&data).expect("azurite data dir");
    let emulator = azurite("basalt", &data, dir.path());
    let endpoint = format!("http://127.0.0.1:{}", emulator.port);
    let env = [
        ("AZURE_STORAGE_USE_EMULATOR", "true"),
        ("AZURITE_BLOB_STORAGE_URL", endpoint.as_str()),
    ];
    serve_on("az://basalt/hub", &env, dir.path());
    bench_on("az://basalt", &env, dir.path());
}

#[test]
fn a_bad_storage_url_is_refused_by_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args([
            "serve",
            "--storage",
            "gs://bucket/hub",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .args(["--http-addr", "off"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("gs://bucket/hub"), "{stderr}");
}
