//! Group commit: concurrent ingest requests share one database transaction.
//!
//! Each request hands its messages to the committer and waits. The committer takes every
//! request waiting at that moment (up to [`MAX_GROUP_MESSAGES`]), stores them in one
//! transaction, commits once, and answers each. Under load, throughput approaches the
//! database's bulk-insert rate instead of its transactions-per-second; with one request at
//! a time it adds no delay, since nothing waits for a group to fill.
//!
//! A group that fails is retried request by request, so one bad request cannot fail the
//! others it was grouped with.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Store, WriteBatch, WriteReport};
use crate::error::{ApiError, Result};
use crate::metrics;

/// The most messages committed in one transaction.
pub const MAX_GROUP_MESSAGES: usize = 2_000;

/// Requests that may wait for the committer before senders wait too.
const QUEUE_DEPTH: usize = 1_024;

struct Job {
    batch: WriteBatch,
    reply: oneshot::Sender<Result<WriteReport>>,
}

/// The handle ingest uses to store a request's messages.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    transactions: Arc<AtomicU64>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("messages", &self.batch.messages.len())
            .finish()
    }
}

impl Writer {
    /// Starts the committer on `store`. It stops once every `Writer` clone is dropped and
    /// the requests already handed over are committed; await the handle to wait for that.
    pub fn start(store: Store) -> (Self, JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let transactions = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(commit_loop(store, queue, transactions.clone()));
        (Self { jobs, transactions }, task)
    }

    /// How many write transactions the committer has run so far.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Stores a request's messages; returns once they are committed.
    ///
    /// # Errors
    ///
    /// When the transaction failed, or the committer has stopped.
    pub async fn write(&self, batch: WriteBatch) -> Result<WriteReport> {
        let (reply, answer) = oneshot::channel();
        let stopped = || ApiError::Internal("the group committer has stopped".into());

        self.jobs
            .send(Job { batch, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn commit_loop(store: Store, mut queue: mpsc::Receiver<Job>, transactions: Arc<AtomicU64>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        let mut messages = group[0].batch.messages.len();
        while messages < MAX_GROUP_MESSAGES {
            match queue.try_recv() {
                Ok(job) => {
                    messages += job.batch.messages.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }

        let count = commit_group(&store, group, messages).await;
        transactions.fetch_add(count, Ordering::Relaxed);
    }
}

/// Commits a group; returns how many transactions that took.
async fn commit_group(store: &Store, group: Vec<Job>, messages: usize) -> u64 {
    let started = Instant::now();
    let batches: Vec<&WriteBatch> = group.iter().map(|job| &job.batch).collect();
    let outcome = store.store_batches(&batches).await;
    metrics::record_commit(started.elapsed(), group.len(), messages, outcome.is_ok());

    match outcome {
        Ok(reports) => {
            for (job, report) in group.into_iter().zip(reports) {
                // The requester may have gone (client disconnected); the data is stored.
                let _ = job.reply.send(Ok(report));
            }
            1
        }
        Err(error) if group.len() == 1 => {
            if let Some(job) = group.into_iter().next() {
                let _ = job.reply.send(Err(error));
            }
            1
        }
        Err(error) => {
            tracing::warn!(error = %error, group.requests = group.len(), "group commit failed; committing its requests one by one");
            let retries = 1 + group.len() as u64;
            for job in group {
                let started = Instant::now();
                let count = job.batch.messages.len();
                let outcome = store.store_batches(&[&job.batch]).await;
                metrics::record_commit(started.elapsed(), 1, count, outcome.is_ok());
                let outcome = outcome.map(|reports| reports.into_iter().next().unwrap_or_default());
                let _ = job.reply.send(outcome);
            }
            retries
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use ebb_protocol::{Message, MessageType, UserId};

    use super::*;
    use crate::store::{Accepted, EnvironmentId};

    fn batch(environment: &EnvironmentId, user: &str) -> WriteBatch {
        let mut message = Message::new(MessageType::Track);
        message.user_id = Some(UserId::new(user));
        message.event = Some("Grouped".into());
        WriteBatch {
            environment: environment.clone(),
            messages: vec![Accepted {
                message,
                time: Utc::now(),
            }],
            received_at: Utc::now(),
        }
    }

    // On a single-threaded runtime the requests below all reach the committer's queue
    // before it runs again, so they must share one transaction.
    #[tokio::test(flavor = "current_thread")]
    async fn requests_waiting_together_share_one_transaction() {
        let folder = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", folder.path().join("ebb.db").display());
        let store = Store::open(&url).await.unwrap();
        let environment = store
            .create_environment("test", "wk", None)
            .await
            .unwrap()
            .id;
        let (writer, committer) = Writer::start(store.clone());

        let requests: Vec<_> = (0..10)
            .map(|user| {
                let writer = writer.clone();
                let batch = batch(&environment, &format!("u{user}"));
                tokio::spawn(async move { writer.write(batch).await })
            })
            .collect();
        let mut reports = Vec::new();
        for request in requests {
            reports.push(request.await.unwrap().unwrap());
        }
        let transactions = writer.transactions();
        drop(writer);
        committer.await.unwrap();
        let stored = store.user_profile(&environment, "u9").await.unwrap();

        assert!(reports.iter().all(|report| report.stored == 1));
        assert_eq!(transactions, 1);
        assert_eq!(stored.unwrap().events.len(), 1);
    }
}
