//! `ebb-bench ingest`: how close the collector's ingest comes to its database's bulk-insert
//! rate.
//!
//! For each backend it measures, on fresh databases and in one run:
//!
//! - **(a) the ceiling** ([`ceiling`](crate::ceiling)): the store's own bulk write of the
//!   generated messages, without HTTP;
//! - **(b) the collector over HTTP** ([`load`](crate::load)): the release binary driven by
//!   N connections posting batches, first as fast as it answers (peak), then at half of
//!   that rate on a fixed schedule;
//!
//! and prints one markdown table: messages/s, latency percentiles, peak RSS of the
//! collector, and b/a. With `--collectors 1,2` (PostgreSQL only) (b) is measured once per
//! count, each time on a fresh database shared by that many collector processes, with the
//! connections spread over them in turn. A second table shows how the CPU was shared
//! during the peak window.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::ceiling::{self, Ceiling};
use crate::collector::Collector;
use crate::cpu;
use crate::database::{Backend, Database};
use crate::load::{self, Load, Target};
use crate::raw_insert::{self, Form};
use crate::traffic::Traffic;
use crate::{load_average, millis, progress, secs, Common, WRITE_KEY};

/// Options of `ebb-bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub common: Common,

    /// Concurrent HTTP connections (spread over the collectors).
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

    /// Collector processes sharing the database, one measurement per count; counts above
    /// one apply to PostgreSQL only.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    collectors: Vec<usize>,

    /// Measure only the ceiling (a), without starting the collector.
    #[arg(long)]
    ceiling_only: bool,
}

/// Everything measured for one backend.
#[derive(Debug)]
struct Measured {
    backend: Backend,
    /// (a): the rows written with plain SQL, the fastest way measured.
    ceiling: Ceiling,
    /// That way.
    ceiling_form: Form,
    /// The collector's store writing the same messages, without HTTP.
    store: Ceiling,
    /// Per number of collectors.
    http: Vec<(usize, OverHttp)>,
}

/// What the collectors did over HTTP.
#[derive(Debug)]
struct OverHttp {
    peak: Load,
    half: Load,
    /// The largest peak RSS of any one collector.
    peak_rss: u64,
    /// CPU use during the counted peak window.
    cpu: cpu::Share,
}

/// Runs the ingest benchmark and prints its tables.
///
/// # Errors
///
/// When a database, a collector or a connection fails.
pub async fn run(args: &IngestArgs) -> anyhow::Result<()> {
    args.common.check_collector()?;
    let started_load = load_average();

    let mut results = Vec::new();
    for &backend in &args.common.backends {
        let mut ceiling: Option<(Form, Ceiling)> = None;
        for form in Form::all(backend == Backend::Postgres) {
            progress(&format!("{backend}: ceiling, rows as {}", form.name()));
            let database = Database::create(backend, &args.common.postgres_url).await?;
            let traffic = Traffic::new(args.users);
            let measured = raw_insert::measure(
                &database.url(),
                form,
                &traffic,
                args.batch_size,
                secs(args.warmup),
                secs(args.ceiling_seconds),
            )
            .await;
            database.remove().await?;
            let measured = measured?;
            progress(&format!(
                "{backend}: {} {:.0} msg/s",
                form.name(),
                measured.rate()
            ));
            if ceiling.is_none_or(|(_, best)| measured.rate() > best.rate()) {
                ceiling = Some((form, measured));
            }
        }
        let (ceiling_form, ceiling) = ceiling.context("no way to write rows was measured")?;

        progress(&format!(
            "{backend}: the store without HTTP (store_batches)"
        ));
        let database = Database::create(backend, &args.common.postgres_url).await?;
        let traffic = Traffic::new(args.users);
        let store = ceiling::measure(
            &database.url(),
            &traffic,
            args.batch_size,
            secs(args.warmup),
            secs(args.ceiling_seconds),
        )
        .await;
        database.remove().await?;
        let store = store?;
        progress(&format!("{backend}: store {:.0} msg/s", store.rate()));

        let mut http = Vec::new();
        for &count in args.collectors.iter().filter(|_| !args.ceiling_only) {
            if count != 1 && backend != Backend::Postgres {
                progress(&format!(
                    "{backend}: {count} collectors skipped (PostgreSQL only)"
                ));
                continue;
            }
            let database = Database::create(backend, &args.common.postgres_url).await?;
            let measured = over_http(args, &database.url(), count.max(1)).await;
            database.remove().await?;
            http.push((count.max(1), measured?));
        }
        results.push(Measured {
            backend,
            ceiling,
            ceiling_form,
            store,
            http,
        });
    }

    print_report(args, &results, &started_load)
}

/// Starts `count` collectors on `url`, finds their peak rate, then measures them at half
/// that rate.
async fn over_http(args: &IngestArgs, url: &str, count: usize) -> anyhow::Result<OverHttp> {
    let mut collectors = Vec::with_capacity(count);
    for _ in 0..count {
        collectors.push(Collector::start(&args.common.collector, url, &[])?);
    }
    let addresses = collectors.iter().map(|c| c.address).collect();
    let target = Target::new(addresses, WRITE_KEY, args.batch_size, args.connections)?;
    let traffic = Arc::new(Traffic::new(args.users));
    let logs = || {
        collectors
            .iter()
            .map(Collector::log_tail)
            .collect::<Vec<_>>()
            .join("\n--\n")
    };

    progress(&format!(
        "  HTTP peak: {count} collector(s), {} connections, {} s after {} s warm-up",
        args.connections, args.seconds, args.warmup
    ));
    let stats = collectors.iter().map(Collector::stat_path).collect();
    let cpu = tokio::spawn(cpu_during(stats, secs(args.warmup), secs(args.seconds)));
    let peak = load::closed_loop(&target, &traffic, secs(args.warmup), secs(args.seconds))
        .await
        .with_context(|| format!("collector log:\n{}", logs()))?;
    let cpu = cpu.await??;
    progress(&format!(
        "  HTTP peak {:.0} msg/s ({:.0} req/s), p99 {:.1} ms, failed: {}",
        peak.message_rate(),
        peak.request_rate(),
        millis(peak.latency_at(0.99)),
        peak.failure_summary()
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
    .with_context(|| format!("collector log:\n{}", logs()))?;
    progress(&format!(
        "  HTTP half load p99 {:.1} ms, failed: {}",
        millis(half.latency_at(0.99)),
        half.failure_summary()
    ));

    let mut peak_rss = 0;
    for collector in &collectors {
        peak_rss = peak_rss.max(collector.peak_rss()?);
    }
    Ok(OverHttp {
        peak,
        half,
        peak_rss,
        cpu,
    })
}

/// Samples CPU time at the start and end of the counted peak window.
async fn cpu_during(
    collector_stats: Vec<String>,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<cpu::Share> {
    tokio::time::sleep(warmup).await;
    let before = cpu::Sample::take_with_collectors(&collector_stats)?;
    tokio::time::sleep(window).await;
    Ok(cpu::Sample::take_with_collectors(&collector_stats)?.since(&before))
}

fn print_report(args: &IngestArgs, results: &[Measured], started_load: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);

    writeln!(
        out,
        "\n| backend | collectors | (a) ceiling msg/s | store alone msg/s | (b) HTTP msg/s \
         | b/a | p50 | p99 | ½ load msg/s | p50 at ½ | p99 at ½ | peak RSS |"
    )?;
    writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for m in results {
        if m.http.is_empty() {
            writeln!(
                out,
                "| {} | | {:.0} | {:.0} | | | | | | | | |",
                m.backend,
                m.ceiling.rate(),
                m.store.rate()
            )?;
        }
        for (count, http) in &m.http {
            writeln!(
                out,
                "| {} | {count} | {:.0} | {:.0} | {:.0} | {:.0} % | {:.1} ms | {:.1} ms \
                 | {:.0} | {:.1} ms | {:.1} ms | {:.0} MB |",
                m.backend,
                m.ceiling.rate(),
                m.store.rate(),
                http.peak.message_rate(),
                100.0 * http.peak.message_rate() / m.ceiling.rate(),
                millis(http.peak.latency_at(0.5)),
                millis(http.peak.latency_at(0.99)),
                http.half.message_rate(),
                millis(http.half.latency_at(0.5)),
                millis(http.half.latency_at(0.99)),
                http.peak_rss as f64 / 1e6,
            )?;
        }
    }

    writeln!(
        out,
        "\nCPU in cores of {cores}; the load generator runs {} thread(s). \
         \"Other\" is load that is not the benchmark's.\n",
        args.common.threads
    )?;
    writeln!(
        out,
        "| backend | collectors | ceiling: other | peak: collectors | peak: generator \
         | peak: PostgreSQL | peak: other | peak: machine |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for m in results {
        for (count, http) in &m.http {
            let c = http.cpu;
            writeln!(
                out,
                "| {} | {count} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                m.backend,
                m.ceiling.others,
                c.collector,
                c.generator,
                c.postgres,
                c.others(),
                c.machine
            )?;
        }
    }

    for m in results {
        writeln!(
            out,
            "\n{}: the ceiling wrote its rows as {}.",
            m.backend,
            m.ceiling_form.name()
        )?;
    }

    let failures: u64 = results
        .iter()
        .flat_map(|m| &m.http)
        .map(|(_, http)| http.peak.failures + http.half.failures)
        .sum();
    writeln!(
        out,
        "\n{} connections × {} messages per request, {} users, {} s counted after {} s \
         warm-up; ½ load paced for {} s; ceiling and store alone: {} s of database time each, \
         in transactions of {} messages; failed requests: {failures}; load average {started_load} at the start, \
         {} at the end.",
        args.connections,
        args.batch_size,
        args.users,
        args.seconds,
        args.warmup,
        args.half_load_seconds,
        args.ceiling_seconds,
        ebb_collector::store::writer::MAX_GROUP_MESSAGES,
        load_average(),
    )?;
    Ok(())
}
