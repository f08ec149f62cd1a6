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
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the server log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_basalt"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
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
