//! The official Durable Task JavaScript SDK (`@microsoft/durabletask-js`,
//! pinned in `tests/js/package.json` and its lock file), unchanged,
//! against `basalt serve`: `tests/js/scenarios.test.js` run by Node's own
//! test runner.
//!
//! The first test to need it installs the pinned SDK with `npm ci` under
//! the build directory (`target/tmp/durabletask-js`); later runs reuse it
//! while the lock file is unchanged. Needs Node 20+ with npm, and the
//! package registry (or an npm cache).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{ServerProcess, run};

const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");

/// The directory with the pinned SDK installed and the test file copied in.
fn installed_sdk() -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let source = Path::new(JS_DIR);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("durabletask-js");
    let lock = std::fs::read_to_string(source.join("package-lock.json")).expect("read the lock");
    let stamp = dir.join("installed-lock.json");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(lock.as_str()) {
        std::fs::create_dir_all(&dir).expect("create the SDK directory");
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(source.join(file), dir.join(file)).expect("copy the package files");
        }
        run(Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(&dir));
        std::fs::write(&stamp, &lock).expect("write the install stamp");
    }
    // The test file next to its node_modules, so `require` finds the SDK.
    std::fs::copy(
        source.join("scenarios.test.js"),
        dir.join("scenarios.test.js"),
    )
    .expect("copy the test file");
    dir
}

/// Runs the scenarios against `server`; fails with both sides' output.
fn run_scenarios(server: &ServerProcess, env: &[(&str, &str)]) {
    let dir = installed_sdk();
    let mut command = Command::new("node");
    command
        .args(["--test", "--test-reporter=spec", "scenarios.test.js"])
        .current_dir(&dir)
        .env("BASALT_GRPC", &server.grpc);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("run node --test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "JavaScript SDK scenarios failed:\n{stdout}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        tail(&server.log_text())
    );
    // Node's runner reports its counts; all ran and none failed.
    assert!(stdout.contains("fail 0"), "{stdout}");
    assert!(!stdout.contains("pass 0"), "{stdout}");
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[test]
fn js_sdk_scenarios() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(&dir.path().join("hub"), "127.0.0.1:0", "off", &[]);
    run_scenarios(&server, &[]);
    let (code, took) = server.terminate();
    assert_eq!(code, Some(0), "basalt serve exit code after SIGTERM");
    assert!(took < Duration::from_secs(15), "stopping took {took:?}");
}

/// The SDK's client and workers with a bearer token next to the task hub
/// metadata it sends for the Scheduler.
#[test]
fn js_sdk_with_a_bearer_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    let token = "js-sdk-token-0123456789";
    std::fs::write(&token_file, format!("{token}\n")).expect("write the token");
    let token_path = token_file.to_string_lossy().into_owned();
    let server = ServerProcess::start(
        &dir.path().join("hub"),
        "127.0.0.1:0",
        "off",
        &["--auth-token-file", &token_path],
    );
    run_scenarios(&server, &[("BASALT_TOKEN", token)]);
    server.terminate();
}
