//! A gateway's cost, read from /proc.

use std::time::Duration;

#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Resident set size in bytes.
    pub rss: u64,
    /// User + system CPU time.
    pub cpu: Duration,
}

fn ticks_per_second() -> u64 {
    // Linux reports CPU times in clock ticks; 100 per second everywhere we
    // run (USER_HZ).
    100
}

pub fn sample(pid: u32) -> Option<Sample> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Sample {
        rss: resident_pages * 4096,
        cpu: Duration::from_millis((utime + stime) * 1000 / ticks_per_second()),
    })
}

/// The sum over all PIDs (missing ones count zero).
pub fn total(pids: &[u32]) -> Sample {
    pids.iter()
        .filter_map(|p| sample(*p))
        .fold(Sample::default(), |a, s| Sample {
            rss: a.rss + s.rss,
            cpu: a.cpu + s.cpu,
        })
}
