//! Shared helpers of the benchmark programs in `src/bin/`.

pub mod paper;
pub mod search;
pub mod svg;

use std::time::{Duration, Instant};

/// Resident set size of this process in bytes (Linux `/proc/self/status`), 0 if unknown.
pub fn rss_bytes() -> u64 {
    proc_status(std::process::id())
        .and_then(|s| status_kb(&s, "VmRSS:"))
        .map_or(0, |kb| kb * 1024)
}

/// User + system CPU clock ticks of `pid` so far (`/proc/{pid}/stat`).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime and stime are fields 14 and
    // 15, the 12th and 13th after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time (user + system, all threads) of this process so far; zero where `/proc` is
/// missing. Clock ticks are 10 ms (`CLK_TCK` 100, as on every Linux platform we run on).
pub fn process_cpu() -> Duration {
    Duration::from_millis(cpu_ticks(std::process::id()).unwrap_or(0) * 10)
}

/// `/proc/{pid}/status`.
pub fn proc_status(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

/// A `kB` field of a `/proc/{pid}/status` text, e.g. `VmRSS:`.
pub fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Operations per second of `ops` operations that took `elapsed`.
pub fn per_second(ops: u64, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Runs `f` and returns its result with the time it took.
pub async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}
