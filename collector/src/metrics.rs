//! Prometheus metrics, served at `/metrics`.
//!
//! The names, all prefixed `ebb_`:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `ebb_http_requests_total` | counter | `route`, `status` |
//! | `ebb_messages_accepted_total` | counter | |
//! | `ebb_messages_duplicate_total` | counter | |
//! | `ebb_messages_suppressed_total` | counter | |
//! | `ebb_messages_rejected_total` | counter | `reason` |
//! | `ebb_batch_messages` | histogram | |
//! | `ebb_commit_seconds` | histogram | `outcome` |
//! | `ebb_commit_group_requests` | histogram | |
//! | `ebb_db_pool_connections` | gauge | `state` (`idle`, `busy`) |
//!
//! No label carries a write key, a user id or any other value a client chose, so the
//! number of series stays bounded.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::{PoolUse, WriteReport};

/// Installs the process-wide recorder; returns the handle that renders the text format.
///
/// # Errors
///
/// When a recorder is already installed in this process.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let commit_buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    ];
    let size_buckets = [
        1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("ebb_commit_seconds".into()), &commit_buckets)?
        .set_buckets_for_metric(Matcher::Full("ebb_batch_messages".into()), &size_buckets)?
        .set_buckets_for_metric(
            Matcher::Full("ebb_commit_group_requests".into()),
            &size_buckets,
        )?
        .install_recorder()?;
    Ok(handle)
}

/// One answered HTTP request.
pub fn record_request(route: &str, status: u16) {
    counter!("ebb_http_requests_total", "route" => route.to_owned(), "status" => status.to_string())
        .increment(1);
}

/// The outcome of one ingest request's messages.
pub fn record_ingest(size: usize, report: WriteReport, rejected: &[&str]) {
    histogram!("ebb_batch_messages").record(size as f64);
    counter!("ebb_messages_accepted_total").increment(report.stored as u64);
    counter!("ebb_messages_duplicate_total").increment(report.duplicates as u64);
    counter!("ebb_messages_suppressed_total").increment(report.suppressed as u64);
    for reason in rejected {
        counter!("ebb_messages_rejected_total", "reason" => (*reason).to_owned()).increment(1);
    }
}

/// One group commit.
pub fn record_commit(elapsed: Duration, requests: usize, messages: usize, ok: bool) {
    let outcome = if ok { "committed" } else { "failed" };
    histogram!("ebb_commit_seconds", "outcome" => outcome).record(elapsed.as_secs_f64());
    histogram!("ebb_commit_group_requests").record(requests as f64);
    tracing::debug!(
        group.requests = requests,
        group.messages = messages,
        ok,
        "group commit"
    );
}

/// The connection pools' use at the moment of a scrape.
pub fn record_pool(pool: PoolUse) {
    gauge!("ebb_db_pool_connections", "state" => "idle").set(f64::from(pool.idle));
    gauge!("ebb_db_pool_connections", "state" => "busy")
        .set(f64::from(pool.size.saturating_sub(pool.idle)));
}
