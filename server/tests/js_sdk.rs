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

use common::{JS_DIR, ServerProcess, js_sdk};

/// The directory with the pinned SDK installed and the test file copied in.
fn installed_sdk() -> PathBuf {
    let dir = js_sdk();
    // The test file next to its node_modules, so `require` finds the SDK.
    std::fs::copy(
        Path::new(JS_DIR).join("scenarios.test.js"),
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
