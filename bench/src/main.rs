//! `ebb-bench`: how close the collector comes to what its database can do without it.
//!
//! Two benchmarks, each against a ceiling measured in the same run on the same schema:
//!
//! - **`ingest`** ([`ingest`]): the collector over HTTP, driven by N connections posting
//!   batches, against the store's own bulk write without HTTP ([`ceiling`]); at peak, at
//!   half of peak, and optionally with several collectors on one PostgreSQL database.
//! - **`lifecycle`** ([`lifecycle`]): deleting one large user and sweeping a retention rule
//!   through the collector's admin API, against plain `DELETE` statements of the same rows;
//!   and the ingest latency while that sweep runs.
//!
//! Each prints markdown tables on stdout and its progress on stderr. The load generator,
//! the collector and PostgreSQL share the machine's cores; the generator's runtime is kept
//! to `--threads` threads so that most of the CPU is the collector's.

mod admin;
mod ceiling;
mod collector;
mod cpu;
mod database;
mod ingest;
mod lifecycle;
mod load;
mod population;
mod raw_insert;
mod sql;
mod traffic;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::database::Backend;

/// The write key of the default environment of every collector the benchmarks start.
const WRITE_KEY: &str = "wk_bench";

/// The admin token of every collector the benchmarks start.
const ADMIN_TOKEN: &str = "ebb_admin_bench";

/// Measures the collector against the ceilings of its database.
#[derive(Debug, Parser)]
#[command(name = "ebb-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ingest over HTTP against the store's bulk-insert ceiling.
    Ingest(ingest::IngestArgs),
    /// Deleting a user and sweeping retention against raw DELETE statements.
    Lifecycle(lifecycle::LifecycleArgs),
}

/// Options every benchmark takes.
#[derive(Debug, Args)]
struct Common {
    /// Backends to measure, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sqlite,postgres"
    )]
    backends: Vec<Backend>,

    /// The collector binary (build it with `--release`).
    #[arg(long, default_value = "target/release/ebb-collector")]
    collector: PathBuf,

    /// PostgreSQL server on which scratch databases are created and dropped.
    #[arg(
        long,
        env = "EBB_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,

    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

impl Common {
    fn check_collector(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.collector.is_file(),
            "no collector binary at {}; build it with `cargo build --release -p ebb-collector`",
            self.collector.display()
        );
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Ingest(args) => args.common.threads,
        Command::Lifecycle(args) => args.common.threads,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;

    runtime.block_on(async {
        match &cli.command {
            Command::Ingest(args) => ingest::run(args).await,
            Command::Lifecycle(args) => lifecycle::run(args).await,
        }
    })
}

/// One line of progress on stderr.
fn progress(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The machine's load averages, for the report: other people's work skews the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.max(0.0))
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
