//! CPU time from `/proc`: of one process, and of the whole machine, to show how the two
//! cores were shared between the load generator, the collector and the database.

use std::fs;
use std::time::Duration;

use anyhow::Context as _;

/// Linux's clock ticks per second (`USER_HZ`) in `/proc`, on every common architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time (user and system) of the process whose `stat` file is at `path`.
///
/// # Errors
///
/// When the file cannot be read or parsed.
pub fn process_time(path: &str) -> anyhow::Result<Duration> {
    let stat = fs::read_to_string(path)?;
    // The command name may hold spaces; the fields after it start with `state` (field 3),
    // so utime and stime (fields 14 and 15) are the 12th and 13th after it.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<f64> {
        let field = fields.get(index).context("short /proc stat line")?;
        Ok(field.parse::<f64>()?)
    };
    Ok(Duration::from_secs_f64(
        (ticks(11)? + ticks(12)?) / TICKS_PER_SECOND,
    ))
}

/// CPU time of this process.
///
/// # Errors
///
/// When `/proc` cannot be read.
pub fn own_time() -> anyhow::Result<Duration> {
    process_time("/proc/self/stat")
}

/// CPU time every core of the machine spent busy (not idle, not waiting for I/O).
///
/// # Errors
///
/// When `/proc/stat` cannot be read.
pub fn machine_busy() -> anyhow::Result<Duration> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal …
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    Ok(Duration::from_secs_f64((total - idle) / TICKS_PER_SECOND))
}

/// CPU time of every process whose command name is `name` (PostgreSQL's server and its
/// backends are all `postgres`). Processes that ended in between are not counted.
///
/// # Errors
///
/// When `/proc` cannot be listed.
pub fn processes_named(name: &str) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    for entry in fs::read_dir("/proc")? {
        let path = entry?.path();
        let is_pid = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        let stat_path = path.join("stat");
        let Ok(stat) = fs::read_to_string(&stat_path) else {
            continue;
        };
        let command = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map(|(command, _)| command);
        if command == Some(name) {
            // The process may end between the two reads.
            total += process_time(&stat_path.to_string_lossy()).unwrap_or_default();
        }
    }
    Ok(total)
}

/// CPU counters at one moment: this process, PostgreSQL, the machine, and optionally the
/// collectors.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: std::time::Instant,
    own: Duration,
    postgres: Duration,
    machine: Duration,
    collector: Duration,
}

impl Sample {
    /// Reads the counters now (the collector's as zero).
    ///
    /// # Errors
    ///
    /// When `/proc` cannot be read.
    pub fn take() -> anyhow::Result<Self> {
        Ok(Self {
            at: std::time::Instant::now(),
            own: own_time()?,
            postgres: processes_named("postgres")?,
            machine: machine_busy()?,
            collector: Duration::ZERO,
        })
    }

    /// Reads the counters now, with the collectors' from their `stat` files, summed.
    ///
    /// # Errors
    ///
    /// When `/proc` cannot be read.
    pub fn take_with_collectors(collector_stats: &[String]) -> anyhow::Result<Self> {
        let mut collector = Duration::ZERO;
        for path in collector_stats {
            collector += process_time(path)?;
        }
        Ok(Self {
            collector,
            ..Self::take()?
        })
    }

    /// The use between `earlier` and this sample, in cores.
    pub fn since(&self, earlier: &Self) -> Share {
        let wall = self
            .at
            .duration_since(earlier.at)
            .as_secs_f64()
            .max(f64::EPSILON);
        let cores = |now: Duration, then: Duration| now.saturating_sub(then).as_secs_f64() / wall;
        Share {
            collector: cores(self.collector, earlier.collector),
            generator: cores(self.own, earlier.own),
            postgres: cores(self.postgres, earlier.postgres),
            machine: cores(self.machine, earlier.machine),
        }
    }
}

/// CPU used over a span of time, in cores (1.0 = one core all the time).
#[derive(Debug, Default, Clone, Copy)]
pub struct Share {
    /// The collector processes.
    pub collector: f64,
    /// This process: the load generator, or the ceiling's store.
    pub generator: f64,
    /// Every `postgres` process.
    pub postgres: f64,
    /// The whole machine.
    pub machine: f64,
}

impl Share {
    /// What the machine spent on anything else.
    pub fn others(&self) -> f64 {
        (self.machine - self.collector - self.generator - self.postgres).max(0.0)
    }
}
