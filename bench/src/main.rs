//! `ebb-bench`: how close the collector's ingest comes to its database's bulk-insert rate.
//!
//! For each backend it measures, on fresh databases and in one run:
//!
//! - **(a) the ceiling** ([`ceiling`]): the store's own bulk write of the generated
//!   messages, without HTTP;
//! - **(b) the collector over HTTP** ([`load`]): the release binary driven by N
//!   connections posting batches, first as fast as it answers (peak), then at half of that
//!   rate on a fixed schedule;
//!
//! and prints one markdown table: messages/s, latency percentiles, peak RSS of the
//! collector, and b/a. Progress goes to stderr, the table to stdout.
//!
//! The load generator, the collector and PostgreSQL share the machine's cores; the
//! generator's runtime is kept to `--threads` threads so that most of the CPU is the
//! collector's. A second table shows how the CPU was shared during the peak window.

mod ceiling;
mod collector;
mod cpu;
mod database;
mod load;
mod traffic;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use crate::ceiling::Ceiling;
use crate::collector::Collector;
use crate::database::{Backend, Database};
use crate::load::{Load, Target};
use crate::traffic::Traffic;

const WRITE_KEY: &str = "wk_bench";

/// Measures the collector's ingest against the bulk-insert ceiling of its database.
#[derive(Debug, Parser)]
#[command(name = "ebb-bench")]
struct Args {
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

    /// PostgreSQL server on which a scratch database is created and dropped.
    #[arg(
        long,
        env = "EBB_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,

    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,

    /// Messages per request.
    #[arg(long, default_value_t = 20)]
    batch_size: usize,

    /// Distinct users sending.
    #[arg(long, default_value_t = 5_000)]
    users: u64,

    /// Seconds of peak HTTP load that count, after the warm-up.
    #[arg(long, default_value_t = 15.0)]
    seconds: f64,

    /// Seconds of warm-up before each counted phase.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,

    /// Seconds of the half-load phase that count.
    #[arg(long, default_value_t = 10.0)]
    half_load_seconds: f64,

    /// Seconds of database time the ceiling run counts.
    #[arg(long, default_value_t = 10.0)]
    ceiling_seconds: f64,

    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,

    /// Measure only the ceiling (a), without starting the collector.
    #[arg(long)]
    ceiling_only: bool,
}

/// Everything measured for one backend.
#[derive(Debug)]
struct Measured {
    backend: Backend,
    ceiling: Ceiling,
    http: Option<OverHttp>,
}

/// What the collector did over HTTP.
#[derive(Debug)]
struct OverHttp {
    peak: Load,
    half: Load,
    peak_rss: u64,
    /// CPU use during the counted peak window.
    cpu: cpu::Share,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(&args))
}

async fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.collector.is_file(),
        "no collector binary at {}; build it with `cargo build --release -p ebb-collector`",
        args.collector.display()
    );

    let mut results = Vec::new();
    for &backend in &args.backends {
        progress(&format!("{backend}: ceiling (store_batches without HTTP)"));
        let database = Database::create(backend, &args.postgres_url).await?;
        let traffic = Traffic::new(args.users);
        let ceiling = ceiling::measure(
            &database.url(),
            &traffic,
            args.batch_size,
            secs(args.warmup),
            secs(args.ceiling_seconds),
        )
        .await;
        database.remove().await?;
        let ceiling = ceiling?;
        progress(&format!("{backend}: ceiling {:.0} msg/s", ceiling.rate()));

        let http = if args.ceiling_only {
            None
        } else {
            let database = Database::create(backend, &args.postgres_url).await?;
            let measured = over_http(args, &database.url()).await;
            database.remove().await?;
            Some(measured?)
        };
        results.push(Measured {
            backend,
            ceiling,
            http,
        });
    }

    print_report(args, &results)
}

/// Starts the collector on `url`, finds its peak rate, then measures it at half that rate.
async fn over_http(args: &Args, url: &str) -> anyhow::Result<OverHttp> {
    let collector = Collector::start(&args.collector, url, WRITE_KEY)?;
    let target = Target::new(
        collector.address,
        WRITE_KEY,
        args.batch_size,
        args.connections,
    )?;
    let traffic = Arc::new(Traffic::new(args.users));

    progress(&format!(
        "  HTTP peak: {} connections, {} s after {} s warm-up",
        args.connections, args.seconds, args.warmup
    ));
    let cpu = tokio::spawn(cpu_during(
        collector.stat_path(),
        secs(args.warmup),
        secs(args.seconds),
    ));
    let peak = load::closed_loop(&target, &traffic, secs(args.warmup), secs(args.seconds))
        .await
        .with_context(|| format!("collector log:\n{}", collector.log_tail()))?;
    let cpu = cpu.await??;
    progress(&format!(
        "  HTTP peak {:.0} msg/s ({:.0} req/s), p99 {:.1} ms, {} failed",
        peak.message_rate(),
        peak.request_rate(),
        millis(peak.latency_at(0.99)),
        peak.failures
    ));

    let rate = peak.request_rate() / 2.0;
    progress(&format!("  HTTP half load: {rate:.0} req/s paced"));
    let half = load::open_loop(
        &target,
        &traffic,
        rate.max(1.0),
        secs(args.warmup.min(2.0)),
        secs(args.half_load_seconds),
    )
    .await
    .with_context(|| format!("collector log:\n{}", collector.log_tail()))?;

    let peak_rss = collector.peak_rss()?;
    Ok(OverHttp {
        peak,
        half,
        peak_rss,
        cpu,
    })
}

/// Samples CPU time at the start and end of the counted peak window.
async fn cpu_during(
    collector_stat: String,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<cpu::Share> {
    tokio::time::sleep(warmup).await;
    let before = cpu::Sample::take_with_collector(&collector_stat)?;
    tokio::time::sleep(window).await;
    Ok(cpu::Sample::take_with_collector(&collector_stat)?.since(&before))
}

fn print_report(args: &Args, results: &[Measured]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);

    writeln!(
        out,
        "\n| backend | (a) ceiling msg/s | (b) HTTP msg/s | b/a | p50 | p99 \
         | ½ load msg/s | p50 at ½ | p99 at ½ | peak RSS |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for m in results {
        write!(out, "| {} | {:.0} ", m.backend, m.ceiling.rate())?;
        match &m.http {
            Some(http) => writeln!(
                out,
                "| {:.0} | {:.0} % | {:.1} ms | {:.1} ms | {:.0} | {:.1} ms | {:.1} ms | {:.0} MB |",
                http.peak.message_rate(),
                100.0 * http.peak.message_rate() / m.ceiling.rate(),
                millis(http.peak.latency_at(0.5)),
                millis(http.peak.latency_at(0.99)),
                http.half.message_rate(),
                millis(http.half.latency_at(0.5)),
                millis(http.half.latency_at(0.99)),
                http.peak_rss as f64 / 1e6,
            )?,
            None => writeln!(out, "| | | | | | | | |")?,
        }
    }

    writeln!(
        out,
        "\nCPU in cores of {cores}; the load generator runs {} thread(s). \
         \"Other\" is load that is not the benchmark's.\n",
        args.threads
    )?;
    writeln!(
        out,
        "| backend | ceiling: other | peak: collector | peak: generator \
         | peak: PostgreSQL | peak: other | peak: machine |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
    for m in results {
        write!(out, "| {} | {:.2} ", m.backend, m.ceiling.others)?;
        match &m.http {
            Some(http) => {
                let c = http.cpu;
                writeln!(
                    out,
                    "| {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    c.collector,
                    c.generator,
                    c.postgres,
                    c.others(),
                    c.machine
                )?;
            }
            None => writeln!(out, "| | | | | |")?,
        }
    }

    let failures: u64 = results
        .iter()
        .filter_map(|m| m.http.as_ref())
        .map(|http| http.peak.failures + http.half.failures)
        .sum();
    writeln!(
        out,
        "\n{} connections × {} messages per request, {} users, {} s counted after {} s \
         warm-up; ½ load paced for {} s; ceiling: {} s of store time in transactions of {} \
         messages; failed requests: {failures}.",
        args.connections,
        args.batch_size,
        args.users,
        args.seconds,
        args.warmup,
        args.half_load_seconds,
        args.ceiling_seconds,
        ebb_collector::store::writer::MAX_GROUP_MESSAGES,
    )?;
    Ok(())
}

fn progress(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.max(0.0))
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
