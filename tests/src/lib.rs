//! `basalt-tests`: tests that cross crate or process boundaries.
//!
//! The library holds what both a test and its child processes need; the
//! binaries in `src/bin` are the children that tests kill with SIGKILL.

pub mod bank_crash;
pub mod checkout_crash;
pub mod crash_log;
pub mod hello5;

/// The seed of a randomized crash test: `BASALT_CRASH_SEED` when set (to
/// replay a failure), else the clock. Tests print it.
pub fn crash_seed() -> u64 {
    std::env::var("BASALT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        })
}

/// Runs a child process with `args` and returns its stdout lines. With
/// `kill_after`, kills it with SIGKILL that long after it printed `ready`;
/// without, waits for it and fails the test unless it exits successfully.
pub fn run_child(
    program: &str,
    args: &[String],
    kill_after: Option<std::time::Duration>,
) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "ready" {
                let _ = ready_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    match kill_after {
        Some(after) => {
            let _ = ready_rx.recv_timeout(std::time::Duration::from_secs(60));
            std::thread::sleep(after);
            child.kill().expect("SIGKILL");
            child.wait().expect("wait");
        }
        None => {
            // A child that never finishes (e.g. work stuck behind a lost
            // lock) fails the test instead of hanging it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            let status = loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    break status;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{program} {args:?} did not finish within 120 s");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            assert!(status.success(), "{program} {args:?} failed: {status}");
        }
    }
    reader.join().expect("reader")
}
