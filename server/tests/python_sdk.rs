//! The official Durable Task Python SDK (`durabletask`, pinned in
//! `tests/python/requirements.txt`), unchanged, against `basalt serve`.
//!
//! The first test to need it creates a virtual environment under the
//! build directory (`target/tmp/durabletask-venv`) and installs the pinned
//! SDK with pip; later runs reuse it. Needs Python 3.9+ with `venv` and
//! pip, and the package index (or a pip cache).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{SCENARIOS, ServerProcess, python_sdk as python};

/// Runs the scenarios against a fresh server; fails with both sides' output.
fn run_scenarios(extra_server_flags: &[&str], only: &[&str]) {
    run_scenarios_with(extra_server_flags, &[], only);
}

/// As [`run_scenarios`], with `extra_sdk_args` for scenarios.py.
fn run_scenarios_with(extra_server_flags: &[&str], extra_sdk_args: &[&str], only: &[&str]) {
    run_scenarios_on(extra_server_flags, extra_sdk_args, &[], false, only);
}

/// As [`run_scenarios_with`], with `sdk_env` for scenarios.py, and the
/// server's address as `localhost:port` if `by_name`.
fn run_scenarios_on(
    extra_server_flags: &[&str],
    extra_sdk_args: &[&str],
    sdk_env: &[(&str, &std::path::Path)],
    by_name: bool,
    only: &[&str],
) {
    let python = python();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    let server = ServerProcess::start(&data, "127.0.0.1:0", "off", extra_server_flags);
    let addr = if by_name {
        server.grpc.replace("127.0.0.1", "localhost")
    } else {
        server.grpc.clone()
    };
    let mut command = Command::new(&python);
    command.arg(SCENARIOS).arg("--addr").arg(&addr);
    command.args(extra_sdk_args);
    for (name, value) in sdk_env {
        command.env(name, value);
    }
    if !only.is_empty() {
        command.arg("--only").args(only);
    }
    let output = command.output().expect("run scenarios.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Python SDK scenarios failed:\n{stdout}\n--- SDK log ---\n{}\n--- server log ---\n{}",
        tail(&String::from_utf8_lossy(&output.stderr)),
        tail(&server.log_text())
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    let (code, took) = server.terminate();
    assert_eq!(code, Some(0), "basalt serve exit code after SIGTERM");
    assert!(took < Duration::from_secs(15), "stopping took {took:?}");
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[test]
fn python_sdk_scenarios() {
    run_scenarios(&[], &[]);
}

/// Every scenario again with no memory for records: the server checkpoints
/// after every batch of commands and evicts every record that is not
/// changing, so nearly every event reads its records from the state store.
#[test]
fn python_sdk_scenarios_with_no_memory_for_records() {
    run_scenarios(&["--memory-budget", "0"], &[]);
}

#[test]
fn python_sdk_entities_with_the_newer_work_item_format() {
    run_scenarios(
        &["--entity-format", "v2"],
        &[
            "entities",
            "entity_locks",
            "entity_starts_an_orchestration_and_signals_itself_later",
        ],
    );
}

/// A server that wants a bearer token: the SDK's client and worker pass
/// it as gRPC metadata, unchanged (the refusal without it is checked in
/// `tests/security.rs`).
#[test]
fn python_sdk_with_a_bearer_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "python-sdk-token-0123456789\n").expect("write the token");
    let token = token.to_string_lossy().into_owned();
    run_scenarios_with(
        &["--auth-token-file", &token],
        &["--token-file", &token],
        &[
            "activity_sequence",
            "fan_out_fan_in",
            "timer",
            "external_event_after_wait",
            "sub_orchestrations",
            "query",
            "entities",
            "entity_locks",
        ],
    );
}

/// A server with TLS (and a token): the SDK's client and worker connect
/// with `secure_channel=True`, trusting the test CA through gRPC's
/// `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`.
#[test]
fn python_sdk_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [ca, cert, key, _, _] = common::certificates(dir.path());
    let token = dir.path().join("token");
    std::fs::write(&token, "python-sdk-token-0123456789\n").expect("write the token");
    let (cert, key, token) = (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
        token.to_string_lossy().into_owned(),
    );
    run_scenarios_on(
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--auth-token-file",
            &token,
        ],
        &["--tls", "--token-file", &token],
        &[("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", ca.as_path())],
        true,
        &["activity_sequence", "fan_out_fan_in", "timer", "entities"],
    );
}

/// SIGKILL of the server while orchestrations are mid-run; a new server on
/// the same directory and port; the SDK's worker and client reconnect and
/// every orchestration completes with the right result.
#[test]
fn python_sdk_orchestrations_survive_a_server_kill9() {
    let python = python();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    let server = ServerProcess::start(&data, "127.0.0.1:0", "off", &[]);
    let addr = server.grpc.clone();
    // The SDK logs a lot once the server is gone: to a file, never to a
    // pipe nobody drains (a full pipe would block the SDK).
    let sdk_log = dir.path().join("sdk.log");
    let mut sdk = Command::new(&python)
        .arg(SCENARIOS)
        .args(["--addr", &addr, "--kill-phase"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&sdk_log).expect("create the SDK log"))
        .spawn()
        .expect("run scenarios.py --kill-phase");
    let mut lines = BufReader::new(sdk.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        first.starts_with("KILL-NOW"),
        "expected KILL-NOW, got {first:?}\n{}",
        tail(&server.log_text())
    );
    // The kill must land while work is still going, or it proves nothing.
    let completed: usize = first
        .trim_start_matches("KILL-NOW completed=")
        .parse()
        .expect("completed count");
    assert!(
        completed < 30,
        "all orchestrations finished before the kill"
    );
    let log = server.log.clone();
    server.kill9();
    let restarted = ServerProcess::start(&data, &addr, "off", &[]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = sdk.try_wait().expect("wait for the SDK") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = sdk.kill();
            let _ = sdk.wait();
            panic!(
                "the SDK did not finish after the restart\n--- SDK log ---\n{}\n--- server log ---\n{}",
                tail(&std::fs::read_to_string(&sdk_log).unwrap_or_default()),
                tail(&restarted.log_text())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let stderr = std::fs::read_to_string(&sdk_log).unwrap_or_default();
    assert!(
        status.success(),
        "after the kill: {rest:?}\n--- SDK log ---\n{}\n--- server log ---\n{}",
        tail(&stderr),
        tail(&std::fs::read_to_string(log).unwrap_or_default())
    );
    assert!(
        rest.iter()
            .any(|l| l.contains("completed with the right results")),
        "{rest:?}"
    );
}
