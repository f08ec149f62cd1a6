//! `basalt serve` as a process: a second server on the same directory is
//! refused, SIGTERM stops it promptly with exit 0 and the ports can be
//! bound again at once, and settings come from a TOML file and the
//! environment, with flags winning.

mod common;

use std::process::Command;
use std::time::Duration;

use common::ServerProcess;

#[test]
fn a_second_server_on_the_same_directory_is_refused_with_the_owner_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    let first = ServerProcess::start(&data, "127.0.0.1:0", "off", &[]);
    let second = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "off"])
        .output()
        .expect("run a second server");
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("pid"),
        "the refusal should name the owner: {stderr}"
    );
    drop(first);
}

#[test]
fn sigterm_stops_cleanly_and_the_same_ports_bind_again_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    let server = ServerProcess::start(&data, "127.0.0.1:0", "127.0.0.1:0", &[]);
    let grpc = server.grpc.clone();
    let http = server.http.clone().expect("http on");
    let (code, took) = server.terminate();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    let again = ServerProcess::start(&data, &grpc, &http, &[]);
    assert_eq!(again.grpc, grpc);
    let (code, _) = again.terminate();
    assert_eq!(code, Some(0));
    // The stop checkpointed: inspect sees checkpoints and a sound log.
    let inspect = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .arg("inspect")
        .arg(&data)
        .arg("--verify")
        .output()
        .expect("inspect");
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stdout)
    );
}

#[test]
fn settings_come_from_the_file_and_environment_and_flags_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("basalt.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\npartitions = 3\nhub_name = \"from-file\"\nhttp_addr = \"off\"\n",
            dir.path().join("hub")
        ),
    )
    .expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("BASALT_PARTITIONS", "0")
        .args(["--grpc-addr", "127.0.0.1:0"])
        .output()
        .expect("run with a bad environment value");
    assert_eq!(
        output.status.code(),
        Some(1),
        "partitions 0 from the environment must be refused"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("partitions"));

    let mut child = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--grpc-addr", "127.0.0.1:0", "--partitions", "5"])
        .env("BASALT_PARTITIONS", "4")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve with a config file");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("serving line");
    assert!(line.contains("http=off"), "{line}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().expect("wait").success());
    let inspect = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .arg("inspect")
        .arg(dir.path().join("hub"))
        .arg("--json")
        .output()
        .expect("inspect");
    let report: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("json");
    let text = report.to_string();
    assert!(text.contains("from-file"), "hub name from the file: {text}");
    assert!(
        text.contains("\"partition_count\":5"),
        "the flag wins: {text}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "partitons = 4\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .expect("run with a bad file");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("partitons"));
}
