//! Measurement (a), the ceiling: the store's own bulk write, without HTTP.
//!
//! The same bodies the load generator sends are decoded the way ingest decodes them, grouped
//! into transactions of [`MAX_GROUP_MESSAGES`] (the largest group the committer forms) and
//! handed straight to [`Store::store_batches`], the call the group committer makes. So the
//! schema, the statements and the transaction size are the collector's; what is left out is
//! HTTP, JSON parsing, authentication and the committer's channel. Only the time spent inside
//! `store_batches` counts: decoding happens between transactions, off the clock.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use chrono::Utc;
use ebb_collector::store::writer::MAX_GROUP_MESSAGES;
use ebb_collector::store::{Accepted, EnvironmentId, Store, WriteBatch};
use ebb_protocol::decode::{decode_batch, event_time};

use crate::cpu;
use crate::traffic::Traffic;

/// What the ceiling run measured.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    /// Messages stored in the measured window.
    pub messages: u64,
    /// Time spent inside `store_batches` in that window.
    pub busy: Duration,
    /// Transactions committed in that window.
    pub transactions: u64,
    /// Cores busy with processes other than this one and PostgreSQL meanwhile: load
    /// that does not belong to the benchmark.
    pub others: f64,
}

impl Ceiling {
    /// Messages per second of database time.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.busy.as_secs_f64().max(f64::EPSILON)
    }
}

/// Stores traffic into the fresh database at `url` for `warmup` (not counted), then for
/// `duration` of database time, and reports the rate.
///
/// # Errors
///
/// When the database cannot be opened or a transaction fails.
pub async fn measure(
    url: &str,
    traffic: &Traffic,
    batch_size: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Ceiling> {
    let store = Store::open(url).await?;
    let environment = store
        .create_environment("bench", "wk_bench_ceiling", None)
        .await
        .context("while creating the benchmark environment")?;

    // The warm-up also lasts until the population's users exist, as they do in the
    // ceiling before its clock starts: four messages a user on average leaves few unseen.
    let (mut warm, mut sent) = (Duration::ZERO, 0);
    while warm < warmup || sent < 4 * traffic.users() {
        let (messages, busy) = store_group(&store, &environment.id, traffic, batch_size).await?;
        warm += busy;
        sent += messages;
    }
    let mut ceiling = Ceiling {
        messages: 0,
        busy: Duration::ZERO,
        transactions: 0,
        others: 0.0,
    };
    let before = cpu::Sample::take()?;
    while ceiling.busy < duration {
        let (messages, busy) = store_group(&store, &environment.id, traffic, batch_size).await?;
        ceiling.messages += messages;
        ceiling.busy += busy;
        ceiling.transactions += 1;
    }
    ceiling.others = cpu::Sample::take()?.since(&before).others();

    store.close().await;
    Ok(ceiling)
}

/// Decodes one full group of batches and stores it in one transaction; returns the number
/// of messages and the time the store took.
async fn store_group(
    store: &Store,
    environment: &EnvironmentId,
    traffic: &Traffic,
    batch_size: usize,
) -> anyhow::Result<(u64, Duration)> {
    let mut group = Vec::with_capacity(MAX_GROUP_MESSAGES / batch_size + 1);
    let mut messages = 0;
    while messages + batch_size <= MAX_GROUP_MESSAGES.max(batch_size) {
        group.push(decode(environment, &traffic.batch(batch_size))?);
        messages += batch_size;
    }
    let batches: Vec<&WriteBatch> = group.iter().collect();

    let started = Instant::now();
    let reports = store
        .store_batches(&batches)
        .await
        .context("while storing a group")?;
    let busy = started.elapsed();

    let stored: usize = reports.iter().map(|report| report.stored).sum();
    ensure!(stored == messages, "stored {stored} of {messages} messages");
    Ok((messages as u64, busy))
}

/// Turns a body into what ingest hands the committer. The generated context carries no
/// traits, user hash or IP address, so ingest's context shaping would change nothing.
fn decode(environment: &EnvironmentId, body: &str) -> anyhow::Result<WriteBatch> {
    let received_at = Utc::now();
    let envelope = decode_batch(body.as_bytes())?;
    let mut messages = Vec::with_capacity(envelope.items.len());
    for index in 0..envelope.items.len() {
        let message = envelope.message(index)?;
        let time = event_time(&message, received_at);
        messages.push(Accepted { message, time });
    }
    Ok(WriteBatch {
        environment: environment.clone(),
        messages,
        received_at,
    })
}
