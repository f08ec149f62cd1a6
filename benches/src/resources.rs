//! What a run costs the machine: CPU time (user and system, separately)
//! and resident memory, read from the kernel rather than estimated.
//!
//! CPU of this process comes from `getrusage(RUSAGE_SELF)` (microsecond
//! resolution); CPU of another process (the sidecar benchmark's Python
//! worker) from `/proc/<pid>/stat` in clock ticks, converted with the
//! machine's own `sysconf(_SC_CLK_TCK)` instead of an assumed 100 Hz.
//! Peak RSS is per run: the kernel's high-water mark (`VmHWM`) is reset
//! through `/proc/self/clear_refs` before each run.

/// CPU time of a process, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTime {
    /// Time in user mode.
    pub user_ms: f64,
    /// Time in the kernel on the process's behalf.
    pub sys_ms: f64,
}

impl CpuTime {
    /// User + system.
    pub fn total_ms(&self) -> f64 {
        self.user_ms + self.sys_ms
    }

    /// The CPU time spent since `earlier`.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user_ms: self.user_ms - earlier.user_ms,
            sys_ms: self.sys_ms - earlier.sys_ms,
        }
    }
}

/// CPU time of this process so far (every thread), or `None` where the
/// kernel does not tell.
pub fn own_cpu() -> Option<CpuTime> {
    // SAFETY: `getrusage` only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a zeroed `rusage`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return None;
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    Some(CpuTime {
        user_ms: ms(usage.ru_utime),
        sys_ms: ms(usage.ru_stime),
    })
}

/// CPU time of process `pid` so far, from `/proc/<pid>/stat` (Linux), in
/// the machine's clock ticks; `None` where that is not available.
pub fn process_cpu(pid: u32) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&stat, clock_ticks_per_second()?)
}

fn clock_ticks_per_second() -> Option<f64> {
    // SAFETY: `sysconf` has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then_some(ticks as f64)
}

/// `utime` and `stime` (fields 14 and 15) of a `/proc/<pid>/stat` line.
fn parse_proc_stat(stat: &str, ticks_per_second: f64) -> Option<CpuTime> {
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(CpuTime {
        user_ms: utime * 1e3 / ticks_per_second,
        sys_ms: stime * 1e3 / ticks_per_second,
    })
}

/// Resident memory of this process now, in bytes (`VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    status_kib("self", "VmRSS:").map(|kib| kib * 1024)
}

/// The highest resident memory of this process since the last
/// [`reset_peak_rss`] (or its start), in bytes (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("self", "VmHWM:").map(|kib| kib * 1024)
}

/// Resident memory of process `pid` now, in bytes.
pub fn process_rss_bytes(pid: u32) -> Option<u64> {
    status_kib(&pid.to_string(), "VmRSS:").map(|kib| kib * 1024)
}

/// The highest resident memory of process `pid` so far, in bytes.
pub fn process_peak_rss_bytes(pid: u32) -> Option<u64> {
    status_kib(&pid.to_string(), "VmHWM:").map(|kib| kib * 1024)
}

/// Gives memory freed by earlier runs back to the system and restarts
/// the peak-RSS mark at the current RSS, so the next run's figures are its
/// own. Returns whether the peak could be reset (Linux 4.0 and later).
pub fn reset_peak_rss() -> bool {
    trim_heap();
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Returns free heap pages to the system where the allocator is glibc's
/// (tests, criterion), so RSS reflects what is in use rather than what an
/// earlier run left in the allocator's caches. The `basalt` binary's
/// jemalloc returns freed pages about a second after they are freed (its
/// background thread), so a later run there may start with up to a
/// second's worth of an earlier run's pages (docs/benchmarks.md).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn status_kib(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_uses_the_tick_rate_given() {
        // A command name with spaces and a parenthesis, then fields 3..15.
        let line = "42 (my (odd) cmd) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        let at_100 = parse_proc_stat(line, 100.0).expect("parses");
        assert_eq!(at_100.user_ms, 2500.0);
        assert_eq!(at_100.sys_ms, 500.0);
        let at_250 = parse_proc_stat(line, 250.0).expect("parses");
        assert_eq!(at_250.user_ms, 1000.0);
        assert!(parse_proc_stat("garbage", 100.0).is_none());
    }

    #[test]
    fn own_cpu_grows_with_work() {
        let before = own_cpu().expect("getrusage");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = own_cpu().expect("getrusage");
        assert!(after.since(&before).total_ms() > 0.0);
    }

    #[test]
    fn memory_figures_are_read() {
        let rss = rss_bytes().expect("VmRSS");
        assert!(rss > 0);
        reset_peak_rss();
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let peak = peak_rss_bytes().expect("VmHWM");
        assert!(
            peak >= 64 << 20,
            "peak {peak} must include the 64 MiB buffer"
        );
    }
}
