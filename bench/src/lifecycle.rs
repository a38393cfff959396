//! `ebb-bench lifecycle`: how fast the collector lets data go, against plain `DELETE`
//! statements of the same rows on the same schema, in one run.
//!
//! Each run starts the release collector on a fresh database and seeds three environments
//! in bulk ([`Population`]): `swept` (deleted through the collector), `raw` (deleted by
//! plain statements) and `default` (where ingest traffic goes). Then:
//!
//! 1. **Delete one user**: users with `--user-events` events each, deleted one at a time
//!    through `DELETE /admin/v1/users/{id}` in `swept`, and with plain statements in
//!    `raw`, alternately. The collector's call includes HTTP, the tombstones and the audit
//!    entry; the plain one only the deletes.
//! 2. **Retention sweep**: `--sweep-users` users last seen 400 days ago with
//!    `--sweep-events` events each, in each environment; the collector sweeps `swept`
//!    (`PUT …/retention` with 365 days, `POST …/retention/sweep`), plain set-based deletes
//!    in one transaction sweep `raw`. The order alternates between runs.
//! 3. **Ingest during a sweep**: paced ingest into `default` at `--load-fraction` of the
//!    collector's peak rate, for `--ingest-seconds` alone, then while the collector sweeps
//!    the same environment; latency counts from when each request was due.
//!
//! Between steps the rule is turned off again, so that the collector's scheduled sweeper
//! never touches the seed, and the database is let settle (see [`settle`]).

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use chrono::Utc;
use clap::Args;

use crate::admin::AdminApi;
use crate::collector::Collector;
use crate::cpu;
use crate::database::{Backend, Database};
use crate::load::{self, Load, Target};
use crate::population::{Population, RawDeletion};
use crate::sql::Sql;
use crate::traffic::Traffic;
use crate::{load_average, millis, progress, secs, Common, WRITE_KEY};

/// Days after which the swept users are due; they were last seen 400 days ago.
const RETENTION_DAYS: u32 = 365;

/// Options of `ebb-bench lifecycle`.
#[derive(Debug, Args)]
pub struct LifecycleArgs {
    #[command(flatten)]
    pub common: Common,

    /// Runs per backend, each on a fresh database.
    #[arg(long, default_value_t = 2)]
    runs: usize,

    /// Single users deleted per run, by each way.
    #[arg(long, default_value_t = 3)]
    deletes: usize,

    /// Events of each single user deleted.
    #[arg(long, default_value_t = 10_000)]
    user_events: i64,

    /// Inactive users per sweep.
    #[arg(long, default_value_t = 10_000)]
    sweep_users: i64,

    /// Events of each inactive user.
    #[arg(long, default_value_t = 100)]
    sweep_events: i64,

    /// Ingest rate during the sweep, as a fraction of the collector's peak.
    #[arg(long, default_value_t = 0.25)]
    load_fraction: f64,

    /// Seconds of ingest without a sweep that count (after 2 s of warm-up).
    #[arg(long, default_value_t = 20.0)]
    ingest_seconds: f64,

    /// Concurrent HTTP connections of the ingest traffic.
    #[arg(long, default_value_t = 64)]
    connections: usize,

    /// Messages per ingest request.
    #[arg(long, default_value_t = 20)]
    batch_size: usize,
}

/// What one run measured.
#[derive(Debug)]
struct Run {
    backend: Backend,
    index: usize,
    /// Single-user deletions through the collector and raw, in seconds.
    collector_deletes: Vec<Duration>,
    raw_deletes: Vec<Duration>,
    /// The quiet sweep through the collector, and the raw one.
    sweep: Duration,
    raw_sweep: RawDeletion,
    /// Ingest alone, and while the collector swept.
    rate: f64,
    alone: Load,
    during: Load,
    /// How long the sweep under ingest took.
    loaded_sweep: Duration,
    /// Cores busy with work that is not the benchmark's, over the whole run.
    others: f64,
}

/// Runs the lifecycle benchmark and prints its tables.
///
/// # Errors
///
/// When a database, the collector or a call to it fails.
pub async fn run(args: &LifecycleArgs) -> anyhow::Result<()> {
    args.common.check_collector()?;
    let started_load = load_average();

    let mut runs = Vec::new();
    for &backend in &args.common.backends {
        for index in 0..args.runs {
            progress(&format!("{backend}: run {} of {}", index + 1, args.runs));
            let database = Database::create(backend, &args.common.postgres_url).await?;
            let measured = one_run(args, backend, index, &database.url()).await;
            database.remove().await?;
            runs.push(measured?);
        }
    }

    print_report(args, &runs, &started_load)
}

async fn one_run(
    args: &LifecycleArgs,
    backend: Backend,
    index: usize,
    url: &str,
) -> anyhow::Result<Run> {
    let collector = Collector::start(&args.common.collector, url, &[])?;
    let admin = AdminApi::new(collector.address);
    let sql = Sql::open(url).await?;
    let before = cpu::Sample::take_with_collectors(&[collector.stat_path()])?;
    let outcome = measure(args, backend, index, &collector, admin, &sql).await;
    let others = cpu::Sample::take_with_collectors(&[collector.stat_path()])?
        .since(&before)
        .others();
    sql.close().await;
    let mut run = outcome.with_context(|| format!("collector log:\n{}", collector.log_tail()))?;
    run.others = others;
    Ok(run)
}

async fn measure(
    args: &LifecycleArgs,
    backend: Backend,
    index: usize,
    collector: &Collector,
    admin: AdminApi,
    sql: &Sql,
) -> anyhow::Result<Run> {
    let swept = admin.create_environment("swept").await?;
    let raw = admin.create_environment("raw").await?;
    let default = sql
        .text("SELECT id FROM environments WHERE name = 'default'", vec![])
        .await?
        .context("the collector made no default environment")?;

    let now = Utc::now();
    let long_ago = now - chrono::Duration::days(400);
    let big = |environment: &str, tag: &str| Population {
        environment: environment.to_owned(),
        tag: tag.to_owned(),
        // Enough users that `deletes` of them have a user id (see `identified`).
        users: args.deletes as i64 * 4 / 3 + 1,
        events_per_user: args.user_events,
        last_seen: now,
    };
    let old = |environment: &str, tag: &str| Population {
        environment: environment.to_owned(),
        tag: tag.to_owned(),
        users: args.sweep_users,
        events_per_user: args.sweep_events,
        last_seen: long_ago,
    };
    let seeds = [
        big(&swept, "swept-big"),
        big(&raw, "raw-big"),
        old(&swept, "swept-old"),
        old(&raw, "raw-old"),
        old(&default, "default-old"),
    ];
    let started = Instant::now();
    for population in &seeds {
        population.seed(sql).await?;
    }
    settle(sql).await?;
    progress(&format!(
        "  seeded {} events in {:.0} s",
        seeds
            .iter()
            .map(|p| p.users * p.events_per_user)
            .sum::<i64>(),
        started.elapsed().as_secs_f64()
    ));

    let (collector_deletes, raw_deletes) =
        delete_users(args, admin, sql, &seeds[0], &seeds[1]).await?;

    let cutoff = Utc::now() - chrono::Duration::days(i64::from(RETENTION_DAYS));
    let expected = u64::try_from(args.sweep_users * args.sweep_events)?;
    let mut sweep = Duration::ZERO;
    let mut raw_sweep = None;
    for step in [index % 2, 1 - index % 2] {
        settle(sql).await?;
        if step == 0 {
            let (took, events) = sweep_through(admin, &swept).await?;
            ensure!(
                events == expected,
                "the sweep removed {events} events, not {expected}"
            );
            progress(&format!("  collector sweep {:.1} s", took.as_secs_f64()));
            sweep = took;
        } else {
            let deleted = Population::raw_sweep(sql, &raw, cutoff).await?;
            ensure!(
                deleted.events == expected && deleted.users == u64::try_from(args.sweep_users)?,
                "the raw sweep removed {} users and {} events",
                deleted.users,
                deleted.events
            );
            progress(&format!("  raw sweep {:.1} s", deleted.took.as_secs_f64()));
            raw_sweep = Some(deleted);
        }
    }
    let raw_sweep = raw_sweep.context("no raw sweep ran")?;
    settle(sql).await?;

    let (rate, alone, during, loaded_sweep) = ingest_during_sweep(args, collector, admin).await?;

    Ok(Run {
        backend,
        index,
        collector_deletes,
        raw_deletes,
        sweep,
        raw_sweep,
        rate,
        alone,
        during,
        loaded_sweep,
        others: 0.0,
    })
}

/// Lets the database finish the upkeep the step before left it, so that the next step is
/// not charged for it: on PostgreSQL `VACUUM ANALYZE` (what autovacuum would have done by
/// the time a real database held these rows) and a checkpoint; on SQLite a checkpoint that
/// empties the WAL.
async fn settle(sql: &Sql) -> anyhow::Result<()> {
    if sql.is_postgres() {
        sql.maintain("VACUUM ANALYZE").await?;
        sql.maintain("CHECKPOINT").await
    } else {
        sql.maintain("PRAGMA wal_checkpoint(TRUNCATE)").await
    }
}

/// Deletes `args.deletes` users of `through` with the collector and as many of `raw` with
/// plain statements, alternately.
async fn delete_users(
    args: &LifecycleArgs,
    admin: AdminApi,
    sql: &Sql,
    through: &Population,
    raw: &Population,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let mut collector_times = Vec::new();
    let mut raw_times = Vec::new();
    let expected = u64::try_from(args.user_events)?;
    for (turn, user) in through.identified(args.deletes).into_iter().enumerate() {
        for way in [turn % 2, 1 - turn % 2] {
            if way == 0 {
                let (took, receipt) = admin
                    .delete_user(&through.environment, &through.user_id(user))
                    .await?;
                let events = receipt["removed"]["events"].as_u64().unwrap_or_default();
                ensure!(events == expected, "the collector deleted {events} events");
                collector_times.push(took);
            } else {
                let deleted = raw.raw_delete_user(sql, &raw.user_id(user)).await?;
                ensure!(
                    deleted.events == expected && deleted.users == 1,
                    "raw deleted {} users and {} events",
                    deleted.users,
                    deleted.events
                );
                raw_times.push(deleted.took);
            }
        }
    }
    progress(&format!(
        "  one user: collector {:.1} ms, raw {:.1} ms (medians)",
        millis(median(&collector_times)),
        millis(median(&raw_times))
    ));
    Ok((collector_times, raw_times))
}

/// Sweeps `environment` through the admin API; returns how long it took and the events it
/// removed.
async fn sweep_through(admin: AdminApi, environment: &str) -> anyhow::Result<(Duration, u64)> {
    admin
        .set_retention(environment, Some(RETENTION_DAYS))
        .await?;
    let swept = admin.sweep(environment).await;
    admin.set_retention(environment, None).await?;

    let (took, run) = swept?;
    let events = run["removed"]["events"].as_u64().unwrap_or_default();
    Ok((took, events))
}

/// Finds the collector's peak, then paces ingest at a fraction of it: alone, then while
/// the collector sweeps the environment the traffic goes to.
async fn ingest_during_sweep(
    args: &LifecycleArgs,
    collector: &Collector,
    admin: AdminApi,
) -> anyhow::Result<(f64, Load, Load, Duration)> {
    let target = Target::new(
        vec![collector.address],
        WRITE_KEY,
        args.batch_size,
        args.connections,
    )?;
    let traffic = Arc::new(Traffic::new(5_000));

    let peak = load::closed_loop(&target, &traffic, secs(2.0), secs(5.0)).await?;
    let rate = (peak.request_rate() * args.load_fraction).max(1.0);
    progress(&format!(
        "  ingest peak {:.0} req/s (failed: {}); pacing {rate:.0} req/s",
        peak.request_rate(),
        peak.failure_summary()
    ));
    let alone = load::open_loop(
        &target,
        &traffic,
        rate,
        secs(2.0),
        secs(args.ingest_seconds),
    )
    .await?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let paced = {
        let (target, traffic) = (target.clone(), Arc::clone(&traffic));
        tokio::spawn(async move { load::paced_until(&target, &traffic, rate, stopped).await })
    };
    tokio::time::sleep(secs(2.0)).await;
    let from = tokio::time::Instant::now();
    let swept = sweep_through(admin, "default").await;
    let until = tokio::time::Instant::now();
    let _ = stop.send(true);
    let sent = paced.await??;
    let (loaded_sweep, _) = swept?;
    let during = Load::of_window(&sent, from, until, args.batch_size)?;
    progress(&format!(
        "  ingest p99 alone {:.1} ms, during a {:.1} s sweep {:.1} ms; failed: {} / {}",
        millis(alone.latency_at(0.99)),
        loaded_sweep.as_secs_f64(),
        millis(during.latency_at(0.99)),
        alone.failure_summary(),
        during.failure_summary()
    ));

    Ok((rate * args.batch_size as f64, alone, during, loaded_sweep))
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn print_report(args: &LifecycleArgs, runs: &[Run], started_load: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();

    writeln!(
        out,
        "\n| backend | run | delete one user ({} events): collector | raw DELETE | ratio |",
        args.user_events
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|")?;
    for run in runs {
        let (collector, raw) = (median(&run.collector_deletes), median(&run.raw_deletes));
        writeln!(
            out,
            "| {} | {} | {:.1} ms | {:.1} ms | {:.2} × |",
            run.backend,
            run.index + 1,
            millis(collector),
            millis(raw),
            collector.as_secs_f64() / raw.as_secs_f64().max(f64::EPSILON),
        )?;
    }

    let users = args.sweep_users as f64;
    writeln!(
        out,
        "\n| backend | run | sweep {} users / {} events: collector | raw DELETE | collector \
         users/s | raw users/s | collector/raw rate |",
        args.sweep_users,
        args.sweep_users * args.sweep_events
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
    for run in runs {
        let (collector, raw) = (run.sweep.as_secs_f64(), run.raw_sweep.took.as_secs_f64());
        writeln!(
            out,
            "| {} | {} | {collector:.1} s | {raw:.1} s | {:.0} | {:.0} | {:.0} % |",
            run.backend,
            run.index + 1,
            users / collector.max(f64::EPSILON),
            users / raw.max(f64::EPSILON),
            100.0 * raw / collector.max(f64::EPSILON),
        )?;
    }

    writeln!(
        out,
        "\n| backend | run | ingest msg/s | requests alone / during | p50 alone | p99 alone \
         | p50 during sweep | p99 during sweep | ratio p99 | sweep under ingest | other load |"
    )?;
    writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for run in runs {
        let (alone, during) = (run.alone.latency_at(0.99), run.during.latency_at(0.99));
        writeln!(
            out,
            "| {} | {} | {:.0} | {} / {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} × \
             | {:.1} s | {:.2} cores |",
            run.backend,
            run.index + 1,
            run.rate,
            run.alone.requests,
            run.during.requests,
            millis(run.alone.latency_at(0.5)),
            millis(alone),
            millis(run.during.latency_at(0.5)),
            millis(during),
            during.as_secs_f64() / alone.as_secs_f64().max(f64::EPSILON),
            run.loaded_sweep.as_secs_f64(),
            run.others,
        )?;
    }

    let failures: u64 = runs
        .iter()
        .map(|run| run.alone.failures + run.during.failures)
        .sum();
    writeln!(
        out,
        "\nOne-user times are medians of {} deletions each way; ingest paced at {:.0} % of \
         the collector's peak with {} connections × {} messages; failed requests: {failures}; \
         load average {started_load} at the start, {} at the end.",
        args.deletes,
        100.0 * args.load_fraction,
        args.connections,
        args.batch_size,
        load_average(),
    )?;
    Ok(())
}
