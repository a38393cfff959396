//! Storage: the database behind the collector, and every query it runs.
//!
//! Two backends sit behind one [`Store`]: embedded SQLite (the default) and PostgreSQL
//! (`postgres://…`). Their queries are the same text, so they live once, in
//! `backend.rs`, which is compiled into each backend module with that backend's sqlx types
//! (`sqlite.rs`, `postgres.rs`). That keeps one copy of every query without the
//! thicket of trait bounds generic sqlx code needs; what truly differs (connecting,
//! migrations, column types) stays in the per-backend files and migration folders.
//! The shared SQL therefore keeps to what both dialects accept: `$n` parameters,
//! `ON CONFLICT … DO NOTHING`, `CASE` instead of `MAX(a, b)`/`GREATEST`.
//!
//! Every write of more than one statement runs in one transaction, and every value is a
//! bound parameter. Ingest writes go through the group committer in [`writer`].

pub mod chain;
mod postgres;
mod sqlite;
pub mod writer;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use ebb_protocol::Message;
use serde::Serialize;
use serde_json::Value;

pub use chain::{AuditEntry, ChainCheck};

use crate::segment::Filter;

use crate::error::Result;

/// Ebb's id of an environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct EnvironmentId(String);

impl EnvironmentId {
    /// A fresh random id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// An id read back from storage or a request.
    pub fn from_stored(id: String) -> Self {
        Self(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvironmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An environment: a separate space of users with its own write keys and settings.
#[derive(Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// Its id.
    pub id: EnvironmentId,
    /// Its unique, human-chosen name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The identity-verification secret; never serialised.
    #[serde(skip)]
    pub identity_secret: Option<String>,
    /// Origins allowed to send from a browser; empty means any.
    pub allowed_origins: Vec<String>,
    /// Whether client IP addresses are kept.
    pub store_ip: bool,
    /// When inactive users are deleted.
    pub retention: RetentionRule,
}

/// An environment's retention rule: users inactive for `days` are deleted, and users who
/// never answered a survey already after `days_without_response`. `None` turns a part off.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionRule {
    /// Days of inactivity after which any user is deleted.
    #[schema(minimum = 1, maximum = 36_500)]
    pub days: Option<u32>,
    /// Days of inactivity after which a user who never responded is deleted.
    #[schema(minimum = 1, maximum = 36_500)]
    pub days_without_response: Option<u32>,
}

impl RetentionRule {
    /// Whether the rule deletes anyone at all.
    pub fn is_set(&self) -> bool {
        self.days.is_some() || self.days_without_response.is_some()
    }

    /// The last-seen cut-offs at `now`: users last seen before them are due.
    pub fn cutoffs(&self, now: DateTime<Utc>) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        let cutoff = |days: Option<u32>| days.map(|d| now - chrono::Duration::days(i64::from(d)));
        (cutoff(self.days), cutoff(self.days_without_response))
    }
}

/// What a retention rule would do now, and how the users are spread by inactivity.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPreview {
    /// Users the rule would delete now.
    pub would_delete: u64,
    /// All users of the environment.
    pub users: u64,
    /// Users by days since last seen.
    pub histogram: Vec<InactivityBucket>,
}

/// Users last seen between `from_days` and `to_days` days ago.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InactivityBucket {
    /// Inclusive lower bound, in days.
    pub from_days: u32,
    /// Exclusive upper bound, in days; none for the last bucket.
    pub to_days: Option<u32>,
    /// How many users.
    pub users: u64,
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Environment")
            .field("id", &self.id)
            .field("name", &self.name)
            .field(
                "identity_secret",
                &self.identity_secret.as_ref().map(|_| "<set>"),
            )
            .field("allowed_origins", &self.allowed_origins)
            .field("store_ip", &self.store_ip)
            .finish_non_exhaustive()
    }
}

/// Changes to an environment's settings; `None` leaves a setting as it is.
#[derive(Debug, Default, Clone)]
pub struct EnvironmentChanges {
    /// A new name.
    pub name: Option<String>,
    /// A new allow-list of browser origins.
    pub allowed_origins: Option<Vec<String>>,
    /// Whether to keep IP addresses.
    pub store_ip: Option<bool>,
    /// `Some(Some(secret))` sets the identity secret, `Some(None)` turns verification off.
    pub identity_secret: Option<Option<String>>,
    /// A new retention rule.
    pub retention: Option<RetentionRule>,
}

/// Which environments an admin token may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// Every environment.
    All,
    /// Only this one.
    Environment(EnvironmentId),
}

/// An admin token as stored: its id, label and scope, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminToken {
    /// Its id, which the audit log names.
    pub id: String,
    /// A name the operator gave it.
    pub label: String,
    /// The one environment it is for; none means every environment.
    pub environment_id: Option<EnvironmentId>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

impl AdminToken {
    /// What the token may act on.
    pub fn scope(&self) -> TokenScope {
        match &self.environment_id {
            Some(id) => TokenScope::Environment(id.clone()),
            None => TokenScope::All,
        }
    }
}

/// A validated message, ready to store.
#[derive(Debug)]
pub struct Accepted {
    /// The message as sent, batch defaults merged in, context as it is to be stored.
    pub message: Message,
    /// When it happened, corrected for client clock skew.
    pub time: DateTime<Utc>,
}

/// The messages of one ingest request.
#[derive(Debug)]
pub struct WriteBatch {
    /// The environment they go to.
    pub environment: EnvironmentId,
    /// The messages.
    pub messages: Vec<Accepted>,
    /// When the collector received them.
    pub received_at: DateTime<Utc>,
}

/// What storing one request did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteReport {
    /// Messages stored.
    pub stored: usize,
    /// Messages skipped because their message id was already stored.
    pub duplicates: usize,
    /// Messages dropped because they name a deleted (suppressed) identity.
    pub suppressed: usize,
}

/// Who asked for an action, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    /// The collector's own background work (retention, jobs).
    pub fn system(what: &str) -> Self {
        Self(format!("system:{what}"))
    }
}

/// Rows removed per table, in the order the tables are named.
pub type Counts = BTreeMap<String, u64>;

/// Proof of a deletion: what went, and the audit entry that records it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// The sequence number of the audit entry recording the deletion.
    pub audit_entry: i64,
    /// The environment it happened in.
    pub environment_id: EnvironmentId,
    /// The keyed hashes of the deleted ids, as kept in the tombstones.
    pub id_hashes: Vec<String>,
    /// Rows removed per table.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub removed: Counts,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// The keyed hash by which a deleted id is remembered: hex HMAC-SHA256 under the
/// instance's suppression key, so the tombstone cannot be reversed or checked against a
/// guessed id without that key.
pub fn suppression_hash(key: &[u8], id: &str) -> String {
    use hmac::{Hmac, Mac as _};

    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// One user as stored: ids, traits, consent, activity.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserProfile {
    /// The site's id for the user, once identified.
    pub user_id: Option<String>,
    /// Every anonymous id the user was seen with.
    pub anonymous_ids: Vec<String>,
    /// The merged traits.
    pub traits: Value,
    /// The latest consent preferences (category → granted), if any were sent.
    pub consent: Option<Value>,
    /// Every change of consent, oldest first.
    pub consent_history: Vec<ConsentRecord>,
    /// The latest Global Privacy Control signal, if one was seen.
    pub gpc: Option<bool>,
    /// The time of the user's first message.
    pub first_seen: DateTime<Utc>,
    /// The time of the user's latest activity.
    pub last_seen: DateTime<Utc>,
    /// The user's events, oldest first (at most the latest 1,000).
    pub events: Vec<StoredEvent>,
    /// The user's survey responses, oldest first.
    pub responses: Vec<StoredResponse>,
    /// How many records of each kind are stored for the user, counted whatever the
    /// lists above hold: past 1,000 events, `counts.events` exceeds `events`' length.
    pub counts: UserCounts,
}

/// Everything stored of one user: the profile with every event, and every message id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserExport {
    /// Ids, traits, consent, activity and every record.
    #[serde(flatten)]
    pub profile: UserProfile,
    /// The id of every message stored for the user, identifies included, oldest first.
    pub message_ids: Vec<StoredMessageId>,
}

/// The id of a stored message, kept so that the message is not stored again when resent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessageId {
    /// The client's message id, or the one the collector gave a message sent without.
    pub message_id: String,
    /// When the collector received the message.
    pub received_at: DateTime<Utc>,
}

/// How many records of each kind are stored for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserCounts {
    /// Events (track, page, screen, group, alias).
    pub events: u64,
    /// Survey responses.
    pub responses: u64,
    /// Consent records: one per change of consent.
    pub consent_records: u64,
}

/// One stored activity record.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    /// The client's message id.
    pub message_id: String,
    /// `track`, `page`, `screen`, `group` or `alias`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event name of a `track`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The page or screen name (the group id, the previous id for those types).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The event's properties (a group's traits).
    pub properties: Value,
    /// The context as stored (without the IP address unless the environment keeps it).
    pub context: Value,
    /// When it happened (clock-skew corrected).
    pub timestamp: DateTime<Utc>,
    /// When the collector received it.
    pub received_at: DateTime<Utc>,
}

/// One stored survey response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredResponse {
    /// The client's message id.
    pub message_id: String,
    /// The survey answered.
    pub survey_id: String,
    /// The answers as sent.
    pub answers: Value,
    /// When it was given.
    pub timestamp: DateTime<Utc>,
}

/// One change of a user's consent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsentRecord {
    /// The preferences from then on (category → granted).
    pub preferences: Value,
    /// What carried the change: the message type, or the event name of a `track`.
    pub source: String,
    /// When the change happened.
    pub recorded_at: DateTime<Utc>,
}

/// One user in a list: ids, traits, consent and activity span.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserSummary {
    /// The site's id for the user, once identified.
    pub user_id: Option<String>,
    /// One of the user's anonymous ids (the first in text order), if any.
    pub anonymous_id: Option<String>,
    /// The merged traits.
    pub traits: Value,
    /// The latest consent preferences, if any.
    pub consent: Option<Value>,
    /// The time of the first message.
    pub first_seen: DateTime<Utc>,
    /// The time of the latest activity.
    pub last_seen: DateTime<Utc>,
}

/// A background deletion of a segment, with its progress.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Its id.
    pub id: String,
    /// The environment it works in.
    pub environment_id: EnvironmentId,
    /// What it does: `delete_segment`.
    pub kind: String,
    /// `pending`, `running`, `cancelling`, `cancelled`, `done` or `failed`.
    pub status: String,
    /// Users matching when the job was created.
    pub total: u64,
    /// Users deleted so far.
    pub done: u64,
    /// Rows removed so far, per table.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub counts: Counts,
    /// Who asked for it.
    pub requested_by: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// When it was asked for; relative times in its filter count from here.
    pub created_at: DateTime<Utc>,
    /// Its last change.
    pub updated_at: DateTime<Utc>,
}

impl Job {
    /// Whether the job has ended.
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "done" | "cancelled" | "failed")
    }
}

/// How busy the connection pools are, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct PoolUse {
    /// Open connections.
    pub size: u32,
    /// Open connections not in use.
    pub idle: u32,
}

/// The database and the queries on it.
#[derive(Debug, Clone)]
pub enum Store {
    /// Embedded SQLite.
    Sqlite(sqlite::Backend),
    /// PostgreSQL.
    Postgres(postgres::Backend),
}

/// Runs the same call on whichever backend is in use.
macro_rules! on_backend {
    ($store:expr, $backend:ident => $call:expr) => {
        match $store {
            Store::Sqlite($backend) => $call,
            Store::Postgres($backend) => $call,
        }
    };
}

impl Store {
    /// Opens the database at `url` (SQLite unless it starts with `postgres://` or
    /// `postgresql://`) and brings its schema up to date.
    ///
    /// # Errors
    ///
    /// When the URL is malformed, the database cannot be reached, or a migration fails.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(postgres::open(url).await?))
        } else {
            Ok(Self::Sqlite(sqlite::open(url).await?))
        }
    }

    /// The backend's name, for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        on_backend!(self, b => b.close().await)
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        on_backend!(self, b => b.ping().await)
    }

    /// Connection pool use.
    pub fn pool_use(&self) -> PoolUse {
        on_backend!(self, b => b.pool_use())
    }

    /// The environment a write key belongs to, with its settings.
    pub async fn environment_for_write_key(&self, key: &str) -> Result<Option<Environment>> {
        on_backend!(self, b => b.environment_for_write_key(key).await)
    }

    /// The admin token with this hash, if it is one.
    pub async fn admin_token(&self, token_hash: &str) -> Result<Option<AdminToken>> {
        on_backend!(self, b => b.admin_token(token_hash).await)
    }

    /// Every admin token (never the tokens themselves, which are not stored).
    pub async fn admin_tokens(&self) -> Result<Vec<AdminToken>> {
        on_backend!(self, b => b.admin_tokens().await)
    }

    /// Revokes the admin token with this id; false when there is none.
    pub async fn revoke_admin_token(&self, id: &str) -> Result<bool> {
        on_backend!(self, b => b.revoke_admin_token(id).await)
    }

    /// The environment with this id, or failing that with this name.
    pub async fn find_environment(&self, id_or_name: &str) -> Result<Option<Environment>> {
        on_backend!(self, b => b.find_environment(id_or_name).await)
    }

    /// Every environment, by name.
    pub async fn environments(&self) -> Result<Vec<Environment>> {
        on_backend!(self, b => b.environments().await)
    }

    /// The write keys of an environment, oldest first.
    pub async fn write_keys(&self, environment: &EnvironmentId) -> Result<Vec<String>> {
        on_backend!(self, b => b.write_keys(environment).await)
    }

    /// Creates an environment with one write key; with `instance_key`, records its id as
    /// that instance setting in the same transaction.
    pub async fn create_environment(
        &self,
        name: &str,
        write_key: &str,
        instance_key: Option<&str>,
    ) -> Result<Environment> {
        on_backend!(self, b => b.create_environment(name, write_key, instance_key).await)
    }

    /// Applies changes to an environment's settings; returns it as it is now.
    pub async fn update_environment(
        &self,
        id: &EnvironmentId,
        changes: &EnvironmentChanges,
    ) -> Result<Option<Environment>> {
        on_backend!(self, b => b.update_environment(id, changes).await)
    }

    /// Replaces every write key of an environment with `new_key`.
    pub async fn replace_write_keys(&self, id: &EnvironmentId, new_key: &str) -> Result<()> {
        on_backend!(self, b => b.replace_write_keys(id, new_key).await)
    }

    /// An instance-wide setting.
    pub async fn instance_setting(&self, key: &str) -> Result<Option<String>> {
        on_backend!(self, b => b.instance_setting(key).await)
    }

    /// Stores an admin token's hash, unless it is already stored.
    pub async fn add_admin_token(
        &self,
        token_hash: &str,
        scope: &TokenScope,
        label: &str,
    ) -> Result<()> {
        on_backend!(self, b => b.add_admin_token(token_hash, scope, label).await)
    }

    /// How many admin tokens are stored.
    pub async fn admin_token_count(&self) -> Result<i64> {
        on_backend!(self, b => b.admin_token_count().await)
    }

    /// Stores the messages of several requests in one transaction.
    pub async fn store_batches(&self, batches: &[&WriteBatch]) -> Result<Vec<WriteReport>> {
        on_backend!(self, b => b.store_batches(batches).await)
    }

    /// The user known by `id` (a user id, or failing that an anonymous id), with at most
    /// the latest 1,000 events.
    pub async fn user_profile(&self, env: &EnvironmentId, id: &str) -> Result<Option<UserProfile>> {
        on_backend!(self, b => b.user_profile(env, id, Some(1_000)).await)
    }

    /// Everything stored of the user known by `id`, every event and message id included.
    pub async fn user_export(&self, env: &EnvironmentId, id: &str) -> Result<Option<UserExport>> {
        on_backend!(self, b => b.user_export(env, id).await)
    }

    /// Deletes the user known by `id` with every record of them, leaves tombstones for
    /// their ids for `suppression_days`, and records it in the audit log.
    pub async fn delete_user(
        &self,
        env: &EnvironmentId,
        id: &str,
        actor: &Actor,
        suppression_days: u32,
    ) -> Result<Option<Receipt>> {
        on_backend!(self, b => b.delete_user(env, id, actor, suppression_days).await)
    }

    /// Deletes all user data of an environment; keys and settings stay.
    pub async fn purge_environment(&self, env: &EnvironmentId, actor: &Actor) -> Result<Receipt> {
        on_backend!(self, b => b.purge_environment(env, actor).await)
    }

    /// Deletes an environment with all its data, keys and settings.
    pub async fn delete_environment(&self, env: &EnvironmentId, actor: &Actor) -> Result<Receipt> {
        on_backend!(self, b => b.delete_environment(env, actor).await)
    }

    /// Lifts the tombstone of one id, so that the id may be stored again.
    pub async fn lift_suppression(
        &self,
        env: &EnvironmentId,
        id: &str,
        actor: &Actor,
    ) -> Result<bool> {
        on_backend!(self, b => b.lift_suppression(env, id, actor).await)
    }

    /// Appends an entry to the audit log.
    pub async fn audit(
        &self,
        env: Option<&EnvironmentId>,
        actor: &Actor,
        action: &str,
        request: Value,
        counts: Value,
    ) -> Result<AuditEntry> {
        on_backend!(self, b => b.audit(env, actor, action, request, counts).await)
    }

    /// Audit entries, newest first: those before `before` (a sequence number), at most
    /// `limit`, of one environment or of all.
    pub async fn audit_entries(
        &self,
        env: Option<&EnvironmentId>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        on_backend!(self, b => b.audit_entries(env, before, limit).await)
    }

    /// Recomputes the whole audit chain.
    pub async fn verify_audit(&self) -> Result<ChainCheck> {
        on_backend!(self, b => b.verify_audit().await)
    }

    /// What the rule would delete now, and users by days since last seen.
    pub async fn retention_preview(
        &self,
        env: &EnvironmentId,
        rule: &RetentionRule,
        now: DateTime<Utc>,
    ) -> Result<RetentionPreview> {
        on_backend!(self, b => b.retention_preview(env, rule, now).await)
    }

    /// Deletes up to `limit` users the rule makes due at `now`, in one transaction, with
    /// tombstones; returns how many users went and the rows removed.
    pub async fn retention_chunk(
        &self,
        env: &EnvironmentId,
        rule: &RetentionRule,
        now: DateTime<Utc>,
        limit: i64,
        suppression_days: u32,
    ) -> Result<(u64, Counts)> {
        on_backend!(self, b => b.retention_chunk(env, rule, now, limit, suppression_days).await)
    }

    /// Takes the lease `name` for `owner` until `expires_at`, if it is free (or already
    /// `owner`'s) and, with `slot`, if the work has not run in that slot yet.
    pub async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        expires_at: DateTime<Utc>,
        slot: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        on_backend!(self, b => b.acquire_lease(name, owner, expires_at, slot).await)
    }

    /// Gives the lease up; with `slot`, records that the work ran in that slot.
    pub async fn release_lease(
        &self,
        name: &str,
        owner: &str,
        slot: Option<DateTime<Utc>>,
    ) -> Result<()> {
        on_backend!(self, b => b.release_lease(name, owner, slot).await)
    }

    /// How many users of the environment match the filter at `now`.
    pub async fn segment_count(
        &self,
        env: &EnvironmentId,
        filter: &Filter,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        on_backend!(self, b => b.segment_count(env, filter, now).await)
    }

    /// A page of the users matching the filter, most recently seen first.
    pub async fn segment_users(
        &self,
        env: &EnvironmentId,
        filter: &Filter,
        now: DateTime<Utc>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<UserSummary>> {
        on_backend!(self, b => b.segment_users(env, filter, now, limit, offset).await)
    }

    /// Records a job that deletes the segment; a job runner picks it up.
    pub async fn create_job(
        &self,
        env: &EnvironmentId,
        filter: &Filter,
        total: u64,
        actor: &Actor,
    ) -> Result<Job> {
        on_backend!(self, b => b.create_job(env, filter, total, actor).await)
    }

    /// One job of the environment.
    pub async fn job(&self, env: &EnvironmentId, id: &str) -> Result<Option<Job>> {
        on_backend!(self, b => b.job(env, id).await)
    }

    /// The environment's latest jobs, newest first.
    pub async fn jobs(&self, env: &EnvironmentId) -> Result<Vec<Job>> {
        on_backend!(self, b => b.jobs(env).await)
    }

    /// Asks a job to stop after its current chunk.
    pub async fn cancel_job(&self, env: &EnvironmentId, id: &str) -> Result<Option<Job>> {
        on_backend!(self, b => b.cancel_job(env, id).await)
    }

    /// Takes an unfinished job that nobody holds (or whose holder stopped renewing).
    pub async fn claim_job(
        &self,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<Option<(Job, Filter)>> {
        on_backend!(self, b => b.claim_job(owner, until).await)
    }

    /// Deletes the job's next chunk of users; returns how many went.
    pub async fn job_chunk(
        &self,
        job: &Job,
        filter: &Filter,
        owner: &str,
        until: DateTime<Utc>,
        limit: i64,
        suppression_days: u32,
    ) -> Result<u64> {
        on_backend!(self, b => b.job_chunk(job, filter, owner, until, limit, suppression_days).await)
    }

    /// Ends a job that `owner` holds, audits it and forgets its filter.
    ///
    /// # Errors
    ///
    /// `Conflict` when `owner` no longer holds the job (another collector took it over
    /// after the lease ran out) or it has ended already; nothing is written then.
    pub async fn finish_job(
        &self,
        job: &Job,
        owner: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<Job> {
        on_backend!(self, b => b.finish_job(job, owner, status, error).await)
    }

    /// The instance's key for suppression hashes.
    pub fn suppression_key(&self) -> &[u8] {
        on_backend!(self, b => b.suppression_key())
    }
}
