//! The dashboard (`/ui`) in a real browser: `tests/js/dashboard.test.js`,
//! run by Node's test runner, drives Debian's chromium with
//! playwright-core against `basalt serve` (with a bearer token), after the
//! official JavaScript SDK made real instances. Both packages are pinned
//! in `tests/js/package.json` and installed with `npm ci` under
//! `target/tmp`, as for the SDK tests.
//!
//! The browser: `$CHROMIUM`, else `/usr/bin/chromium`. When neither is
//! there and the test runs as root on Debian, it installs the `chromium`
//! package with apt-get (as `.ci/run` does beforehand); otherwise it fails
//! saying how to install it.
//!
//! Screenshots of each page go to `$BASALT_UI_SCREENSHOTS` (the ones in
//! `docs/ui/` were written with it set to that folder), else under
//! `target/tmp/dashboard-screenshots`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{JS_DIR, ServerProcess, js_sdk, run};

/// The chromium to drive, installing Debian's package if that is allowed.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let debian = PathBuf::from("/usr/bin/chromium");
    if !debian.exists() {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let apt = Path::new("/usr/bin/apt-get").exists();
        assert!(
            root && apt,
            "the dashboard tests need Chromium: install Debian's `chromium` package \
             (apt-get install chromium) or set CHROMIUM to a Chrome or Chromium binary"
        );
        eprintln!("installing Debian's chromium for the dashboard tests (apt-get)");
        let installed = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            run(Command::new("apt-get")
                .args(["update", "-q"])
                .env("DEBIAN_FRONTEND", "noninteractive"));
            run(Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "chromium"])
                .env("DEBIAN_FRONTEND", "noninteractive"));
        }
    }
    debian
}

#[test]
fn dashboard_in_a_browser() {
    let browser = chromium();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "dashboard-token-0123456789";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).expect("write the token");
    let token_path = token_file.to_string_lossy().into_owned();
    let server = ServerProcess::start(
        &dir.path().join("hub"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--auth-token-file", &token_path],
    );
    let http = format!(
        "http://{}",
        server.http.as_deref().expect("the HTTP listener")
    );

    let installed = js_sdk();
    std::fs::copy(
        Path::new(JS_DIR).join("dashboard.test.js"),
        installed.join("dashboard.test.js"),
    )
    .expect("copy the test file");
    let shots = std::env::var_os("BASALT_UI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots"));
    std::fs::create_dir_all(&shots).expect("create the screenshot folder");

    let output = Command::new("node")
        .args(["--test", "--test-reporter=spec", "dashboard.test.js"])
        .current_dir(&installed)
        .env("BASALT_GRPC", &server.grpc)
        .env("BASALT_HTTP", &http)
        .env("BASALT_TOKEN", token)
        .env("CHROMIUM", &browser)
        .env("BASALT_UI_SCREENSHOTS", &shots)
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let log = server.log_text();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        output.status.success(),
        "dashboard browser tests failed:\n{stdout}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        lines[lines.len().saturating_sub(60)..].join("\n")
    );
    assert!(stdout.contains("fail 0"), "{stdout}");
    assert!(!stdout.contains("pass 0"), "{stdout}");
    // The large timeline's drawing time, for docs/benchmarks.md.
    for line in stdout.lines().filter(|l| l.contains("BASALT_TIMELINE")) {
        eprintln!("{}", line.trim());
    }
    for page in ["instances", "instance-failed", "entities", "partitions"] {
        assert!(shots.join(format!("{page}.png")).exists(), "{page}.png");
    }
    server.terminate();
}
