//! The job runner: deletes segments in the background, in chunks, resumable anywhere.
//!
//! A job is claimed with a lease that each chunk renews. Each chunk deletes a bounded
//! number of users and records the progress in the same transaction, so ingest keeps
//! flowing between chunks and a job whose collector dies is picked up by another one (or by
//! the same one after a restart) once the lease runs out, exactly where it stopped.
//! Cancelling takes effect between chunks. A finished job writes one audit entry with its
//! totals and forgets its filter.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use crate::error::{ApiError, Result};
use crate::segment::Filter;
use crate::store::{Job, Store};

/// Users deleted per transaction.
const CHUNK_USERS: i64 = 200;

/// How often an idle runner looks for work.
const POLL: Duration = Duration::from_millis(500);

/// Runs segment-deletion jobs.
#[derive(Debug, Clone)]
pub struct JobRunner {
    store: Store,
    owner: String,
    suppression_days: u32,
    /// How long a claim lasts without a chunk renewing it.
    lease: Duration,
}

impl JobRunner {
    /// A runner on `store` whose claims last `lease` between chunks.
    pub fn new(store: Store, suppression_days: u32, lease: Duration) -> Self {
        let owner = format!("collector:{}", uuid::Uuid::new_v4().simple());
        Self {
            store,
            owner,
            suppression_days,
            lease,
        }
    }

    fn lease_until(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.lease).unwrap_or_default()
    }

    /// Looks for work in the background until the task is aborted.
    pub fn start(self) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match self.store.claim_job(&self.owner, self.lease_until()).await {
                    Ok(Some((job, filter))) => {
                        if let Err(error) = self.run(job, &filter, |_| {}).await {
                            tracing::warn!(error = %error, "segment deletion interrupted");
                        }
                    }
                    Ok(None) => tokio::time::sleep(POLL).await,
                    Err(error) => {
                        tracing::error!(error = %error, "could not look for jobs");
                        tokio::time::sleep(POLL).await;
                    }
                }
            }
        })
    }

    /// Claims and runs one job to its end here, reporting progress after each chunk; for
    /// the command line, which runs a job in the foreground.
    ///
    /// # Errors
    ///
    /// When the job is held by another collector, or the database fails.
    pub async fn run_claimed(&self, job: &Job, on_chunk: impl FnMut(&Job)) -> Result<Job> {
        loop {
            match self
                .store
                .claim_job(&self.owner, self.lease_until())
                .await?
            {
                Some((claimed, filter)) if claimed.id == job.id => {
                    return self.run(claimed, &filter, on_chunk).await;
                }
                // Another unfinished job came first; run it too, it is due anyway.
                Some((other, filter)) => {
                    self.run(other, &filter, |_| {}).await?;
                }
                None => {
                    return Err(ApiError::Conflict(
                        "another collector is running this job".into(),
                    ))
                }
            }
        }
    }

    async fn run(
        &self,
        mut job: Job,
        filter: &Filter,
        mut on_chunk: impl FnMut(&Job),
    ) -> Result<Job> {
        tracing::info!(env.id = %job.environment_id, job.id = %job.id, "segment deletion running");
        loop {
            let current = self.store.job(&job.environment_id, &job.id).await?;
            job = current.ok_or_else(|| ApiError::Internal("the job vanished".into()))?;
            if job.status == "cancelling" {
                return self
                    .store
                    .finish_job(&job, &self.owner, "cancelled", None)
                    .await;
            }

            let deleted = self
                .store
                .job_chunk(
                    &job,
                    filter,
                    &self.owner,
                    self.lease_until(),
                    CHUNK_USERS,
                    self.suppression_days,
                )
                .await?;
            job.done += deleted;
            on_chunk(&job);

            if deleted < CHUNK_USERS as u64 {
                let finished = self
                    .store
                    .finish_job(&job, &self.owner, "done", None)
                    .await?;
                tracing::info!(
                    env.id = %job.environment_id,
                    job.id = %job.id,
                    user.count = finished.done,
                    "segment deleted"
                );
                return Ok(finished);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::Actor;

    // A collector that stalls past its lease after its last chunk comes back to a job that
    // another one took over and finished; ending it again must neither change the job nor
    // add a second audit entry.
    #[tokio::test]
    async fn only_the_collector_holding_a_job_ends_it() {
        let folder = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", folder.path().join("ebb.db").display());
        let store = Store::open(&url).await.unwrap();
        let env = store
            .create_environment("test", "wk", None)
            .await
            .unwrap()
            .id;
        let filter = Filter::parse(&json!({})).unwrap();
        store
            .create_job(&env, &filter, 0, &Actor::system("test"))
            .await
            .unwrap();

        let lapsed = Utc::now() - chrono::Duration::seconds(1);
        let (stalled, _) = store.claim_job("stalled", lapsed).await.unwrap().unwrap();
        let (taken, _) = store
            .claim_job("taker", Utc::now() + chrono::Duration::minutes(1))
            .await
            .unwrap()
            .unwrap();
        let finished = store
            .finish_job(&taken, "taker", "done", None)
            .await
            .unwrap();
        let late = store
            .finish_job(&stalled, "stalled", "cancelled", None)
            .await;
        let again = store.finish_job(&taken, "taker", "done", None).await;
        let audited = store
            .audit_entries(Some(&env), None, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|entry| entry.action == "delete_segment")
            .count();
        let job = store.job(&env, &taken.id).await.unwrap().unwrap();

        assert_eq!(stalled.id, taken.id);
        assert_eq!(finished.status, "done");
        assert!(matches!(late, Err(ApiError::Conflict(_))), "{late:?}");
        assert!(matches!(again, Err(ApiError::Conflict(_))), "{again:?}");
        assert_eq!(job.status, "done");
        assert_eq!(audited, 1);
    }
}
