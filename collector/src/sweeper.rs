//! The retention sweeper: deletes users inactive past their environment's rule.
//!
//! Time is cut into slots of one sweep interval (`EBB_RETENTION_INTERVAL`). In each slot,
//! each environment with a rule is swept once: a collector takes the environment's lease
//! only if the lease is free and nobody has swept that slot yet, so several collectors on
//! one database never sweep the same environment at once nor twice in a slot. A sweep
//! deletes in chunks, one transaction each, with the same cascade and tombstones as
//! deleting one user, so ingest keeps flowing between chunks; each sweep ends with one
//! audit entry holding its totals.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::store::{Actor, Counts, Environment, Store};

/// Users deleted per transaction.
const CHUNK_USERS: i64 = 500;

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
}

/// Applies retention rules, on a schedule or on request.
#[derive(Debug, Clone)]
pub struct Sweeper {
    store: Store,
    owner: String,
    interval: Duration,
    suppression_days: u32,
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
        }
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
                if let Some(run) = self.sweep_with_lease(&environment, Some(slot)).await? {
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
        self.sweep_with_lease(environment, None).await
    }

    async fn sweep_with_lease(
        &self,
        environment: &Environment,
        slot: Option<DateTime<Utc>>,
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

        let outcome = self.sweep(environment, slot, &lease, &owner, until).await;
        let released = self.store.release_lease(&lease, &owner, slot).await;

        let run = outcome?;
        released?;
        Ok(Some(run))
    }

    async fn sweep(
        &self,
        environment: &Environment,
        slot: Option<DateTime<Utc>>,
        lease: &str,
        owner: &str,
        until: impl Fn() -> DateTime<Utc>,
    ) -> Result<SweepRun> {
        let now = Utc::now();
        let rule = environment.retention;
        let mut users = 0;
        let mut removed = Counts::new();
        loop {
            let (deleted, counts) = self
                .store
                .retention_chunk(
                    &environment.id,
                    &rule,
                    now,
                    CHUNK_USERS,
                    self.suppression_days,
                )
                .await?;
            users += deleted;
            for (table, rows) in counts {
                *removed.entry(table).or_default() += rows;
            }
            if deleted < CHUNK_USERS as u64 {
                break;
            }
            self.store
                .acquire_lease(lease, owner, until(), None)
                .await?;
        }

        let request = json!({ "rule": rule, "slot": slot });
        let mut counts = serde_json::to_value(&removed).unwrap_or_default();
        if let Some(object) = counts.as_object_mut() {
            object.insert("users".into(), json!(users));
        }
        let entry = self
            .store
            .audit(
                Some(&environment.id),
                &Actor::system("retention"),
                "retention_sweep",
                request,
                counts,
            )
            .await?;

        tracing::info!(env.id = %environment.id, user.count = users, "retention sweep done");
        Ok(SweepRun {
            environment: environment.name.clone(),
            users,
            removed,
            audit_entry: entry.seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use ebb_protocol::{Message, MessageType, UserId};

    use super::*;
    use crate::store::{Accepted, EnvironmentChanges, RetentionRule, WriteBatch};

    #[tokio::test(flavor = "current_thread")]
    async fn a_scheduled_sweep_and_one_on_request_in_one_collector_exclude_each_other() {
        let folder = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", folder.path().join("ebb.db").display());
        let store = Store::open(&url).await.unwrap();
        let environment = store.create_environment("test", "wk", None).await.unwrap();
        let long_ago = Utc::now() - chrono::Duration::days(400);
        let messages = (0..3)
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
}
