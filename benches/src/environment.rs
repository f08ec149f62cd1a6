//! Where a benchmark ran: the source revision, compiler, machine and —
//! because it decides what "fsync" means — the file system of the
//! benchmark folder. A report without these cannot be compared with
//! another one.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The environment block of every report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Environment {
    /// `git rev-parse HEAD` of the source tree, if it is a git checkout.
    pub git_rev: Option<String>,
    /// Tracked files differ from `git_rev`.
    pub dirty: Option<bool>,
    /// The compiler that built this binary (`rustc --version`).
    pub rustc: String,
    /// Cores this process may use.
    pub cores: usize,
    /// The kernel release (`uname -r`).
    pub kernel: Option<String>,
    /// The processor model, from `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// Physical memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Where the task hubs lived: a local folder, `memory://` or a URL.
    pub bench_dir: String,
    /// The file system type of `bench_dir` (`ext4`, `tmpfs`, ...), or the
    /// store kind for non-local storage.
    pub bench_dir_fs: String,
    /// Whether a durable write there really reaches stable storage.
    pub durable: bool,
}

impl Environment {
    /// Reads the environment; `bench_dir` and its file system come from
    /// the caller, which knows where the hubs go.
    pub fn capture(bench_dir: String, bench_dir_fs: String, durable: bool) -> Environment {
        let source = Path::new(env!("CARGO_MANIFEST_DIR"));
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(source)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let git_rev = git(&["rev-parse", "HEAD"]);
        let dirty = git_rev
            .as_ref()
            .and_then(|_| git(&["status", "--porcelain", "--untracked-files=no"]))
            .map(|s| !s.is_empty());
        Environment {
            git_rev,
            dirty,
            rustc: env!("BASALT_RUSTC_VERSION").to_owned(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
            cpu_model: std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            }),
            memory_bytes: std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kib| kib.parse::<u64>().ok())
                    .map(|kib| kib * 1024)
            }),
            bench_dir,
            bench_dir_fs,
            durable,
        }
    }
}

/// The file system a folder is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSystem {
    /// Its type's name (`ext4`, `xfs`, `tmpfs`, ...) or its magic number
    /// in hex when not one this table knows.
    pub name: String,
    /// `fsync` there does not reach stable storage (tmpfs, ramfs): its
    /// contents go with a power loss or reboot.
    pub volatile: bool,
}

/// Known file systems by `statfs` magic number: (magic, name, volatile).
const FILE_SYSTEMS: &[(i64, &str, bool)] = &[
    (0xEF53, "ext4", false),
    (0x5846_5342, "xfs", false),
    (0x9123_683E, "btrfs", false),
    (0x2FC1_2FC1, "zfs", false),
    (0xF2F5_2010, "f2fs", false),
    (0x794C_7630, "overlayfs", false),
    (0x6969, "nfs", false),
    (0xFF53_4D42, "cifs", false),
    (0x0102_1997, "9p", false),
    (0x6573_5546, "fuse", false),
    (0x0102_1994, "tmpfs", true),
    (0x8584_58F6, "ramfs", true),
];

/// The file system of `dir` (which must exist).
pub fn file_system(dir: &Path) -> std::io::Result<FileSystem> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `statfs` writes only the struct it is given.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid pointer.
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The field's integer type differs between targets; the magic numbers
    // fit in 32 bits, so compare them unsigned.
    #[allow(clippy::unnecessary_cast)]
    let magic = (stat.f_type as i64) & 0xFFFF_FFFF;
    Ok(match FILE_SYSTEMS.iter().find(|(m, _, _)| *m == magic) {
        Some((_, name, volatile)) => FileSystem {
            name: (*name).to_owned(),
            volatile: *volatile,
        },
        None => FileSystem {
            name: format!("unknown (0x{magic:x})"),
            volatile: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_shm_is_volatile_where_it_is_tmpfs() {
        // /dev/shm is tmpfs on every Linux this project runs on.
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            let fs = file_system(shm).expect("statfs /dev/shm");
            assert_eq!(fs.name, "tmpfs");
            assert!(fs.volatile);
        }
    }

    #[test]
    fn a_missing_folder_is_an_error() {
        assert!(file_system(Path::new("/no/such/folder/here")).is_err());
    }

    #[test]
    fn capture_names_the_compiler_and_cores() {
        let env = Environment::capture("x".into(), "ext4".into(), true);
        assert!(env.rustc.starts_with("rustc "), "{}", env.rustc);
        assert!(env.cores >= 1);
    }
}
