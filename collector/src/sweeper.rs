//! The retention sweeper: deletes users inactive past their environment's rule.
//!
//! Time is cut into slots of one sweep interval (`EBB_RETENTION_INTERVAL`). In each slot,
//! each environment with a rule is swept once: a collector takes the environment's lease
//! only if the lease is free and nobody has swept that slot yet, so several collectors on
//! one database never sweep the same environment at once nor twice in a slot. A sweep
//! deletes in chunks, one transaction each, with the same cascade and tombstones as
//! deleting one user, so ingest keeps flowing between chunks; each sweep ends with one
//! audit entry holding its totals, also a sweep that fails part-way: its entry records
//! the chunks that committed before the failure, and the failure's error code.
//!
//! Ingest into the environment waits while a chunk's transaction runs (on SQLite every
//! write does), so chunks are sized by time, not by a number of users: each is sized from
//! how long the one before took, to take about [`CHUNK_TIME`]. Users with many events make
//! small chunks, users with few make large ones.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::store::writer::Writer;
use crate::store::{Actor, Counts, Environment, Store};

/// How long one chunk's transaction should take: what a sweep may add to the latency of
/// ingest into the environment it sweeps. Shorter chunks cost sweep speed, as each commit
/// has a fixed cost (its fsync: a few milliseconds); this one leaves an ingest request that
/// waits for a chunk, and then commits itself, within the 25 ms Ebb aims for.
const CHUNK_TIME: Duration = Duration::from_millis(15);

/// Users deleted in the first chunk of a sweep, before there is a time to size by.
const FIRST_CHUNK_USERS: i64 = 20;

/// The most users deleted in one chunk.
const MAX_CHUNK_USERS: i64 = 1_000;

/// How long a lease lasts without renewal; a sweeper that dies frees it after this.
const LEASE: Duration = Duration::from_secs(60);

/// What one sweep of one environment did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SweepRun {
    /// The environment swept.
    pub environment: String,
    /// Users deleted.
    pub users: u64,
    /// Rows removed per table.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub removed: Counts,
    /// The audit entry recording the sweep.
    pub audit_entry: i64,
    /// How many times the sweep paused to let this collector's ingest through.
    pub pauses: u64,
}

/// Applies retention rules, on a schedule or on request.
#[derive(Debug, Clone)]
pub struct Sweeper {
    store: Store,
    owner: String,
    interval: Duration,
    suppression_days: u32,
    /// This collector's ingest, to which a sweep yields while it is busy.
    ingest: Option<Writer>,
}

impl Sweeper {
    /// A sweeper for `store` sweeping once per `interval`.
    pub fn new(store: Store, interval: Duration, suppression_days: u32) -> Self {
        let owner = format!("collector:{}", uuid::Uuid::new_v4().simple());
        Self {
            store,
            owner,
            interval,
            suppression_days,
            ingest: None,
        }
    }

    /// Makes sweeps yield to `ingest`: after a chunk during which ingest committed, the
    /// sweep pauses as long as the chunk took, so that ingest waiting for the environment
    /// meets a chunk at most every other turn. A sweep with no ingest to yield to runs
    /// at full speed.
    #[must_use]
    pub fn yielding_to(mut self, ingest: Writer) -> Self {
        self.ingest = Some(ingest);
        self
    }

    /// Runs the schedule in the background until the task is aborted.
    pub fn start(self) -> JoinHandle<()> {
        tokio::spawn(async move {
            // Check a few times per slot so that a sweep starts soon after its slot does.
            let tick =
                (self.interval / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
            let mut ticker = tokio::time::interval(tick);
            loop {
                ticker.tick().await;
                if let Err(error) = self.sweep_due().await {
                    tracing::error!(error = %error, "retention sweep failed");
                }
            }
        })
    }

    /// The start of the slot `now` falls in.
    fn slot(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let length = i64::try_from(self.interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let start = now.timestamp_millis() - now.timestamp_millis().rem_euclid(length);
        DateTime::from_timestamp_millis(start).unwrap_or(now)
    }

    /// Sweeps every environment whose rule is set and whose current slot is not swept.
    ///
    /// # Errors
    ///
    /// When the database fails; environments already swept stay swept.
    pub async fn sweep_due(&self) -> Result<Vec<SweepRun>> {
        let slot = self.slot(Utc::now());
        let mut runs = Vec::new();
        for environment in self.store.environments().await? {
            if environment.retention.is_set() {
                if let Some(run) = self
                    .sweep_with_lease(&environment, Some(slot), |_| {})
                    .await?
                {
                    runs.push(run);
                }
            }
        }
        Ok(runs)
    }

    /// Sweeps one environment now, outside the schedule; `None` when another collector
    /// is sweeping it at this moment.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn sweep_now(&self, environment: &Environment) -> Result<Option<SweepRun>> {
        self.sweep_with_lease(environment, None, |_| {}).await
    }

    /// Like [`Sweeper::sweep_now`], and tells `progress` how many users are deleted so far
    /// after each chunk commits.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn sweep_now_reporting(
        &self,
        environment: &Environment,
        progress: impl Fn(u64),
    ) -> Result<Option<SweepRun>> {
        self.sweep_with_lease(environment, None, progress).await
    }

    async fn sweep_with_lease(
        &self,
        environment: &Environment,
        slot: Option<DateTime<Utc>>,
        progress: impl Fn(u64),
    ) -> Result<Option<SweepRun>> {
        let lease = format!("retention:{}", environment.id);
        // A lease is renewed by the owner holding it, so each sweep owns it under a name
        // of its own: the schedule and a sweep on request in the same collector must
        // exclude each other as two collectors do.
        let owner = format!("{}:{}", self.owner, uuid::Uuid::new_v4().simple());
        let until = || Utc::now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
        if !self
            .store
            .acquire_lease(&lease, &owner, until(), slot)
            .await?
        {
            return Ok(None);
        }

        let outcome = self
            .sweep(environment, slot, &lease, &owner, until, progress)
            .await;
        let released = self.store.release_lease(&lease, &owner, slot).await;

        let run = outcome?;
        released?;
        Ok(Some(run))
    }

    /// Sweeps `environment` under the lease already taken, and audits the run, also when
    /// it fails part-way: its chunks commit one by one, so what they deleted is gone
    /// whatever happens after, and the audit entry must say so.
    async fn sweep(
        &self,
        environment: &Environment,
        slot: Option<DateTime<Utc>>,
        lease: &str,
        owner: &str,
        until: impl Fn() -> DateTime<Utc>,
        progress: impl Fn(u64),
    ) -> Result<SweepRun> {
        let rule = environment.retention;
        let mut tally = Tally::default();

        let outcome = self
            .delete_due(environment, &mut tally, lease, owner, until, progress)
            .await;

        // A failure is recorded by its error code alone: the message may quote the
        // database, and an audit entry names no one.
        let mut request = json!({ "rule": rule, "slot": slot, "status": "done" });
        if let Err(error) = &outcome {
            request["status"] = json!("failed");
            request["error"] = json!(error.code());
        }
        let mut counts = serde_json::to_value(&tally.removed).unwrap_or_default();
        if let Some(object) = counts.as_object_mut() {
            object.insert("users".into(), json!(tally.users));
        }
        let audited = self
            .store
            .audit(
                Some(&environment.id),
                &Actor::system("retention"),
                "retention_sweep",
                request,
                counts,
            )
            .await;

        match (outcome, audited) {
            (Ok(()), Ok(entry)) => {
                tracing::info!(
                    env.id = %environment.id,
                    user.count = tally.users,
                    "retention sweep done"
                );
                Ok(SweepRun {
                    environment: environment.name.clone(),
                    users: tally.users,
                    removed: tally.removed,
                    audit_entry: entry.seq,
                    pauses: tally.pauses,
                })
            }
            (Ok(()), Err(error)) => Err(error),
            (Err(error), audited) => {
                match audited {
                    Ok(entry) => tracing::warn!(
                        env.id = %environment.id,
                        user.count = tally.users,
                        audit.seq = entry.seq,
                        "retention sweep failed part-way; what it deleted is audited"
                    ),
                    Err(audit_error) => tracing::error!(
                        env.id = %environment.id,
                        user.count = tally.users,
                        error = %audit_error,
                        "retention sweep failed part-way and could not be audited"
                    ),
                }
                Err(error)
            }
        }
    }

    /// Deletes the users the rule makes due, chunk by chunk, adding each committed chunk
    /// to `tally`, until none is left or something fails.
    async fn delete_due(
        &self,
        environment: &Environment,
        tally: &mut Tally,
        lease: &str,
        owner: &str,
        until: impl Fn() -> DateTime<Utc>,
        progress: impl Fn(u64),
    ) -> Result<()> {
        let now = Utc::now();
        let rule = environment.retention;
        let mut limit = FIRST_CHUNK_USERS;
        let mut renewed = Instant::now();
        loop {
            let started = Instant::now();
            let ingested = self.ingest.as_ref().map(Writer::transactions);
            let (deleted, counts) = self
                .store
                .retention_chunk(&environment.id, &rule, now, limit, self.suppression_days)
                .await?;
            tally.users += deleted;
            for (table, rows) in counts {
                *tally.removed.entry(table).or_default() += rows;
            }
            if deleted > 0 {
                progress(tally.users);
            }
            if deleted < limit as u64 {
                return Ok(());
            }
            let took = started.elapsed();
            limit = next_chunk(limit, took);
            let now_ingested = self.ingest.as_ref().map(Writer::transactions);
            if let Some(pause) = pause_after(took, ingested, now_ingested) {
                tokio::time::sleep(pause).await;
                tally.pauses += 1;
            }
            // Renewing is a write of its own; once per third of the lease is enough.
            if renewed.elapsed() > LEASE / 3 {
                self.store
                    .acquire_lease(lease, owner, until(), None)
                    .await?;
                renewed = Instant::now();
            }
        }
    }
}

/// What a sweep has deleted so far: committed chunks only.
#[derive(Debug, Default)]
struct Tally {
    users: u64,
    removed: Counts,
    pauses: u64,
}

/// How long a sweep pauses after a chunk that took `took`, given the count of ingest
/// transactions before and after it (`None` when the sweep yields to no ingest): as long
/// as the chunk took when ingest committed meanwhile, else not at all.
fn pause_after(took: Duration, before: Option<u64>, after: Option<u64>) -> Option<Duration> {
    match (before, after) {
        (Some(before), Some(after)) if after != before => Some(took),
        _ => None,
    }
}

/// The number of users for the next chunk, after one of `limit` users took `took`: scaled
/// towards [`CHUNK_TIME`], by at most a factor of two either way so that one slow commit
/// does not shrink the sweep to a crawl.
fn next_chunk(limit: i64, took: Duration) -> i64 {
    let scale = CHUNK_TIME.as_secs_f64() / took.as_secs_f64().max(1e-6);
    let next = (limit as f64 * scale.clamp(0.5, 2.0)).round() as i64;
    next.clamp(1, MAX_CHUNK_USERS)
}

#[cfg(test)]
mod tests {
    use ebb_protocol::{Message, MessageType, UserId};
    use rstest::rstest;

    use super::*;
    use crate::store::{Accepted, EnvironmentChanges, RetentionRule, WriteBatch};

    /// A SQLite store in `folder` with `users` users last seen 400 days ago, in an
    /// environment whose rule deletes users inactive for 30 days.
    async fn old_users_under_a_rule(
        folder: &std::path::Path,
        users: usize,
    ) -> (Store, Environment) {
        let url = format!("sqlite://{}", folder.join("ebb.db").display());
        let store = Store::open(&url).await.unwrap();
        let environment = store.create_environment("test", "wk", None).await.unwrap();
        let long_ago = Utc::now() - chrono::Duration::days(400);
        let messages = (0..users)
            .map(|user| {
                let mut message = Message::new(MessageType::Track);
                message.user_id = Some(UserId::new(format!("old-{user}")));
                message.event = Some("Signed Up".into());
                Accepted {
                    message,
                    time: long_ago,
                }
            })
            .collect();
        let batch = WriteBatch {
            environment: environment.id.clone(),
            messages,
            received_at: long_ago,
        };
        store.store_batches(&[&batch]).await.unwrap();
        let rule = RetentionRule {
            days: Some(30),
            days_without_response: None,
        };
        let changes = EnvironmentChanges {
            retention: Some(rule),
            ..Default::default()
        };
        let environment = store
            .update_environment(&environment.id, &changes)
            .await
            .unwrap()
            .unwrap();
        (store, environment)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_scheduled_sweep_and_one_on_request_in_one_collector_exclude_each_other() {
        let folder = tempfile::tempdir().unwrap();
        let (store, environment) = old_users_under_a_rule(folder.path(), 3).await;
        let sweeper = Sweeper::new(store, Duration::from_secs(3_600), 30);

        let (scheduled, on_request) =
            tokio::join!(sweeper.sweep_due(), sweeper.sweep_now(&environment));

        let runs: Vec<SweepRun> = scheduled
            .unwrap()
            .into_iter()
            .chain(on_request.unwrap())
            .collect();
        assert_eq!(runs.len(), 1, "both sweeps ran at once");
        assert_eq!(runs[0].users, 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_sweep_on_request_reports_the_users_deleted_after_each_chunk() {
        let folder = tempfile::tempdir().unwrap();
        let (store, environment) = old_users_under_a_rule(folder.path(), 50).await;
        let sweeper = Sweeper::new(store, Duration::from_secs(3_600), 30);
        let reports = std::cell::RefCell::new(Vec::new());

        let run = sweeper
            .sweep_now_reporting(&environment, |users| reports.borrow_mut().push(users))
            .await
            .unwrap()
            .unwrap();

        let reports = reports.into_inner();
        assert_eq!(run.users, 50);
        assert_eq!(reports.first(), Some(&(FIRST_CHUNK_USERS as u64)));
        assert_eq!(reports.last(), Some(&50));
        assert!(
            reports.windows(2).all(|pair| pair[0] < pair[1]),
            "{reports:?}"
        );
    }

    #[test]
    fn a_sweep_pauses_for_its_chunk_only_when_ingest_committed_during_it() {
        let took = Duration::from_millis(12);
        assert_eq!(pause_after(took, Some(4), Some(5)), Some(took));
        assert_eq!(pause_after(took, Some(4), Some(9)), Some(took));
        assert_eq!(pause_after(took, Some(4), Some(4)), None, "ingest was idle");
        assert_eq!(pause_after(took, None, None), None, "no ingest to yield to");
    }

    #[rstest]
    #[case::on_time(100, 15, 100)]
    #[case::twice_as_slow(100, 30, 50)]
    #[case::much_slower_halves_only(100, 400, 50)]
    #[case::faster_doubles_only(100, 1, 200)]
    #[case::never_below_one_user(1, 1_000, 1)]
    #[case::never_above_the_most(800, 1, MAX_CHUNK_USERS)]
    fn chunks_are_sized_towards_the_chunk_time(
        #[case] limit: i64,
        #[case] took_ms: u64,
        #[case] expected: i64,
    ) {
        assert_eq!(next_chunk(limit, Duration::from_millis(took_ms)), expected);
    }
}
