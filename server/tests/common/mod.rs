//! A `basalt serve` child process for the tests that talk to a real server
//! (Python SDK, CLI): started on free ports with a data directory, its
//! addresses read from the line it prints, stopped with SIGTERM or killed
//! with SIGKILL.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `basalt serve`.
pub struct ServerProcess {
    child: Child,
    /// The gRPC address, `127.0.0.1:port`.
    pub grpc: String,
    /// The HTTP address, if on.
    pub http: Option<String>,
    /// Where its logs go.
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `basalt serve` on `data_dir` with `extra` flags; `grpc_addr`
    /// may use port 0. Panics (failing the test) if it does not come up.
    pub fn start(data_dir: &Path, grpc_addr: &str, http_addr: &str, extra: &[&str]) -> Self {
        let data = data_dir.to_string_lossy().into_owned();
        Self::start_with(
            &["--data-dir", data.as_str()],
            &data_dir.with_extension("log"),
            &[],
            grpc_addr,
            http_addr,
            extra,
        )
    }

    /// Starts `basalt serve` with `storage` flags (`--data-dir DIR` or
    /// `--storage URL`) and `env` added to its environment, logging to
    /// `log`.
    pub fn start_with(
        storage: &[&str],
        log: &Path,
        env: &[(&str, &str)],
        grpc_addr: &str,
        http_addr: &str,
        extra: &[&str],
    ) -> Self {
        let log = log.to_path_buf();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the server log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_basalt"))
            .arg("serve")
            .args(storage)
            .envs(env.iter().copied())
            .args(["--grpc-addr", grpc_addr, "--http-addr", http_addr])
            .args(["--partitions", "4", "--health-ping-interval-ms", "2000"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn basalt serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the serving line");
        let Some(rest) = line.trim().strip_prefix("basalt serving ") else {
            let _ = child.kill();
            panic!(
                "basalt serve did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let mut grpc = String::new();
        let mut http = None;
        for part in rest.split_whitespace() {
            if let Some(addr) = part.strip_prefix("grpc=") {
                grpc = addr.to_owned();
            } else if let Some(addr) = part.strip_prefix("http=") {
                http = (addr != "off").then(|| addr.to_owned());
            }
        }
        ServerProcess {
            child,
            grpc,
            http,
            log,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port of the gRPC address.
    pub fn grpc_port(&self) -> u16 {
        self.grpc
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// SIGKILL: no chance to flush or checkpoint.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit; returns the exit code and how long
    /// the stop took.
    pub fn terminate(mut self) -> (Option<i32>, Duration) {
        let began = Instant::now();
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), began.elapsed());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("basalt serve did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pinned Python SDK's requirements and the scenario script.
pub const REQUIREMENTS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/requirements.txt");
pub const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/scenarios.py");

/// A virtual environment under the build directory with `requirements`
/// installed (pip), created once and reused while the file is unchanged.
/// Returns its python. Needs Python 3.9+ with `venv` and pip.
pub fn venv(name: &str, requirements: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = dir.join("bin").join("python");
    let pinned = std::fs::read_to_string(requirements).expect("read the requirements");
    let stamp = dir.join("installed-requirements.txt");
    let installed = std::fs::read_to_string(&stamp).ok();
    if !python.exists() || installed.as_deref() != Some(pinned.as_str()) {
        let host_python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        run(Command::new(&host_python).arg("-m").arg("venv").arg(&dir));
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(requirements));
        std::fs::write(&stamp, &pinned).expect("write the install stamp");
    }
    python
}

/// The venv python with the pinned Durable Task SDK.
pub fn python_sdk() -> PathBuf {
    venv("durabletask-venv", REQUIREMENTS)
}

/// The JavaScript SDK's test package: package.json pinning
/// `@microsoft/durabletask-js`, its lock file and the scenarios.
pub const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");

/// A folder under the build directory where `npm ci` installed the pinned
/// JavaScript SDK (its `node_modules`), installed once and reused while the
/// lock file is unchanged. Needs Node 20+ with npm.
pub fn js_sdk() -> PathBuf {
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
    dir
}

/// Runs a command to success, or fails the test with its output.
pub fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA, a server certificate for localhost and 127.0.0.1 and a client
/// certificate, as PEM files in `dir`: (ca, server cert, server key,
/// client cert, client key).
pub fn certificates(dir: &std::path::Path) -> [std::path::PathBuf; 5] {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL (the Python SDK's gRPC) takes a certificate
    // whose issuer name is its own subject name for a self-signed one.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Basalt test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let server_key = KeyPair::generate().expect("key");
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params");
    server_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let server = server_params
        .signed_by(&server_key, &issuer)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("key");
    let mut client_params = CertificateParams::new(vec!["a-worker".to_owned()]).expect("params");
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "a-worker");
    let client = client_params
        .signed_by(&client_key, &issuer)
        .expect("client cert");
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server.pem()),
        ("server.key", server_key.serialize_pem()),
        ("client.pem", client.pem()),
        ("client.key", client_key.serialize_pem()),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write pem");
        path
    })
}
