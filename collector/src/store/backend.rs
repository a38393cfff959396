// The queries of both backends. This file is compiled twice, into `store::sqlite` and
// `store::postgres`, where `Db` names that backend's sqlx database type (see the `store`
// module docs for why). It holds no inner attributes or docs, which `include!` forbids.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use ebb_protocol::{Message, MessageType};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{Pool, Row};

use crate::auth::lookup_hash;
use crate::error::{ApiError, Result};
use crate::store::{
    suppression_hash, Accepted, AdminToken, ConsentRecord, Environment, EnvironmentChanges,
    EnvironmentId, PoolUse, RetentionRule, StoredEvent, StoredMessageId, StoredResponse,
    TokenScope, UserCounts, UserExport, UserProfile, WriteBatch, WriteReport,
};

type Conn = <Db as sqlx::Database>::Connection;
type DbRow = <Db as sqlx::Database>::Row;

macro_rules! environment_select {
    ($rest:literal) => {
        concat!(
            "SELECT e.id, e.name, e.created_at, e.identity_secret, e.allowed_origins, ",
            "e.store_ip, e.retention_days, e.retention_days_without_response ",
            "FROM environments e ",
            $rest
        )
    };
}

/// The connections of one database.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Used for every write. On SQLite it holds one connection, so that two write
    /// transactions never meet and SQLite never answers `SQLITE_BUSY`.
    writer: Pool<Db>,
    /// Used for reads that may run beside the writes.
    reader: Pool<Db>,
    /// The instance's key for the keyed hashes of deleted ids.
    suppression_key: std::sync::Arc<Vec<u8>>,
}

/// The instance-wide key for suppression hashes: created once, by whichever collector
/// gets there first, and read by every other.
async fn load_suppression_key(pool: &Pool<Db>) -> Result<Vec<u8>> {
    let fresh = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    sqlx::query(
        "INSERT INTO instance_settings (key, value) VALUES ('suppression_key', $1) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(fresh)
    .execute(pool)
    .await?;
    let key: String =
        sqlx::query_scalar("SELECT value FROM instance_settings WHERE key = 'suppression_key'")
            .fetch_one(pool)
            .await?;
    Ok(key.into_bytes())
}

fn environment_from_row(row: &DbRow) -> Result<Environment> {
    Ok(Environment {
        id: EnvironmentId::from_stored(row.try_get("id")?),
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        identity_secret: row.try_get("identity_secret")?,
        allowed_origins: row.try_get::<Json<Vec<String>>, _>("allowed_origins")?.0,
        store_ip: row.try_get("store_ip")?,
        retention: RetentionRule {
            days: days_column(row, "retention_days")?,
            days_without_response: days_column(row, "retention_days_without_response")?,
        },
    })
}

fn days_column(row: &DbRow, column: &str) -> Result<Option<u32>> {
    let days: Option<i32> = row.try_get(column)?;
    Ok(days.and_then(|days| u32::try_from(days).ok()))
}

fn admin_token_from_row(row: &DbRow) -> Result<AdminToken> {
    Ok(AdminToken {
        id: row.try_get("id")?,
        label: row.try_get("label")?,
        environment_id: row
            .try_get::<Option<String>, _>("environment_id")?
            .map(EnvironmentId::from_stored),
        created_at: row.try_get("created_at")?,
    })
}

/// Takes `lock` (one of the backend's environment locks) for `env` until the transaction
/// ends; nothing on a backend that needs none.
async fn lock_environment(conn: &mut Conn, lock: Option<&str>, env: &EnvironmentId) -> Result<()> {
    if let Some(sql) = lock {
        sqlx::query(sql)
            .bind(env.as_str())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

impl Backend {
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    pub fn pool_use(&self) -> PoolUse {
        let idle = |pool: &Pool<Db>| u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
        if self.writer.is_closed() {
            return PoolUse { size: 0, idle: 0 };
        }
        PoolUse {
            size: self.writer.size() + self.reader.size(),
            idle: idle(&self.writer) + idle(&self.reader),
        }
    }

    pub async fn environment_for_write_key(&self, key: &str) -> Result<Option<Environment>> {
        let row = sqlx::query(environment_select!(
            "JOIN write_keys k ON k.environment_id = e.id WHERE k.key_hash = $1"
        ))
        .bind(lookup_hash(key))
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(environment_from_row).transpose()
    }

    pub async fn admin_token(&self, token_hash: &str) -> Result<Option<AdminToken>> {
        let row = sqlx::query(
            "SELECT id, label, environment_id, created_at FROM admin_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(admin_token_from_row).transpose()
    }

    pub async fn admin_tokens(&self) -> Result<Vec<AdminToken>> {
        let rows = sqlx::query(
            "SELECT id, label, environment_id, created_at FROM admin_tokens ORDER BY created_at, id",
        )
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(admin_token_from_row).collect()
    }

    pub async fn revoke_admin_token(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM admin_tokens WHERE id = $1")
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn find_environment(&self, id_or_name: &str) -> Result<Option<Environment>> {
        let rows = sqlx::query(environment_select!("WHERE e.id = $1 OR e.name = $1"))
            .bind(id_or_name)
            .fetch_all(&self.writer)
            .await?;
        let environments: Vec<Environment> = rows
            .iter()
            .map(environment_from_row)
            .collect::<Result<_>>()?;
        // An id match wins over a name match, should a name ever look like an id.
        let by_id = environments
            .iter()
            .position(|e| e.id.as_str() == id_or_name);
        Ok(match by_id {
            Some(index) => environments.into_iter().nth(index),
            None => environments.into_iter().next(),
        })
    }

    pub async fn environments(&self) -> Result<Vec<Environment>> {
        let rows = sqlx::query(environment_select!("ORDER BY e.name"))
            .fetch_all(&self.writer)
            .await?;
        rows.iter().map(environment_from_row).collect()
    }

    pub async fn write_keys(&self, environment: &EnvironmentId) -> Result<Vec<String>> {
        let keys = sqlx::query_scalar(
            "SELECT write_key FROM write_keys WHERE environment_id = $1 \
             ORDER BY created_at, write_key",
        )
        .bind(environment.as_str())
        .fetch_all(&self.writer)
        .await?;
        Ok(keys)
    }

    pub async fn create_environment(
        &self,
        name: &str,
        write_key: &str,
        instance_key: Option<&str>,
    ) -> Result<Environment> {
        let environment = Environment {
            id: EnvironmentId::generate(),
            name: name.to_owned(),
            created_at: Utc::now(),
            identity_secret: None,
            allowed_origins: Vec::new(),
            store_ip: false,
            retention: RetentionRule::default(),
        };
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;

        let inserted = sqlx::query(
            "INSERT INTO environments (id, name, created_at, allowed_origins, store_ip) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(environment.id.as_str())
        .bind(name)
        .bind(environment.created_at)
        .bind(Json(&environment.allowed_origins))
        .bind(false)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(error) if unique_violation(&error) => {
                return Err(ApiError::Conflict(format!(
                    "an environment named `{name}` exists"
                )));
            }
            other => other?,
        };
        sqlx::query(
            "INSERT INTO write_keys (environment_id, write_key, key_hash, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(environment.id.as_str())
        .bind(write_key)
        .bind(lookup_hash(write_key))
        .bind(environment.created_at)
        .execute(&mut *tx)
        .await?;
        if let Some(key) = instance_key {
            sqlx::query("INSERT INTO instance_settings (key, value) VALUES ($1, $2)")
                .bind(key)
                .bind(environment.id.as_str())
                .execute(&mut *tx)
                .await?;
        }

        tx.commit().await?;
        Ok(environment)
    }

    pub async fn update_environment(
        &self,
        id: &EnvironmentId,
        changes: &EnvironmentChanges,
    ) -> Result<Option<Environment>> {
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;

        if let Some(name) = &changes.name {
            let renamed = sqlx::query("UPDATE environments SET name = $1 WHERE id = $2")
                .bind(name)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await;
            match renamed {
                Err(error) if unique_violation(&error) => {
                    let message = format!("an environment named `{name}` exists");
                    return Err(ApiError::Conflict(message));
                }
                other => other?,
            };
        }
        if let Some(origins) = &changes.allowed_origins {
            sqlx::query("UPDATE environments SET allowed_origins = $1 WHERE id = $2")
                .bind(Json(origins))
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        if let Some(store_ip) = changes.store_ip {
            sqlx::query("UPDATE environments SET store_ip = $1 WHERE id = $2")
                .bind(store_ip)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        if let Some(rule) = &changes.retention {
            let as_column = |days: Option<u32>| days.and_then(|d| i32::try_from(d).ok());
            sqlx::query(
                "UPDATE environments SET retention_days = $1, \
                 retention_days_without_response = $2 WHERE id = $3",
            )
            .bind(as_column(rule.days))
            .bind(as_column(rule.days_without_response))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        if let Some(secret) = &changes.identity_secret {
            sqlx::query("UPDATE environments SET identity_secret = $1 WHERE id = $2")
                .bind(secret.as_deref())
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(environment_select!("WHERE e.id = $1"))
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;

        tx.commit().await?;
        row.as_ref().map(environment_from_row).transpose()
    }

    pub async fn replace_write_keys(&self, id: &EnvironmentId, new_key: &str) -> Result<()> {
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;

        sqlx::query("DELETE FROM write_keys WHERE environment_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO write_keys (environment_id, write_key, key_hash, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id.as_str())
        .bind(new_key)
        .bind(lookup_hash(new_key))
        .bind(Utc::now())
        .execute(&mut *tx)
        .await?;

        tx.commit().await?;
        Ok(())
    }

    pub async fn instance_setting(&self, key: &str) -> Result<Option<String>> {
        let value = sqlx::query_scalar("SELECT value FROM instance_settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.writer)
            .await?;
        Ok(value)
    }

    pub async fn add_admin_token(
        &self,
        token_hash: &str,
        scope: &TokenScope,
        label: &str,
    ) -> Result<()> {
        let environment = match scope {
            TokenScope::All => None,
            TokenScope::Environment(id) => Some(id.as_str()),
        };
        sqlx::query(
            "INSERT INTO admin_tokens (id, token_hash, environment_id, label, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_hash) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(token_hash)
        .bind(environment)
        .bind(label)
        .bind(Utc::now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn admin_token_count(&self) -> Result<i64> {
        let count = sqlx::query_scalar("SELECT COUNT(*) FROM admin_tokens")
            .fetch_one(&self.writer)
            .await?;
        Ok(count)
    }

    /// Stores a group of requests' messages in one transaction; one report per request.
    ///
    /// A message id is looked up before its message is stored and written with the
    /// others at the end. Another collector on the same database may write the same id
    /// in between; the transaction then finds fewer new ids than it wrote, rolls back and
    /// runs again, and the second time finds the id stored.
    pub async fn store_batches(&self, batches: &[&WriteBatch]) -> Result<Vec<WriteReport>> {
        for _ in 0..STORE_ATTEMPTS {
            if let Some(reports) = self.try_store_batches(batches).await? {
                return Ok(reports);
            }
        }
        Err(ApiError::Internal(format!(
            "message ids kept being stored by another collector in {STORE_ATTEMPTS} attempts"
        )))
    }

    /// One attempt of [`Backend::store_batches`]; `None` when another transaction stored
    /// one of the message ids meanwhile and nothing was committed.
    async fn try_store_batches(&self, batches: &[&WriteBatch]) -> Result<Option<Vec<WriteReport>>> {
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        for setting in INGEST_PLANNER {
            sqlx::query(setting).execute(&mut *tx).await?;
        }
        let mut session = WriteSession::new(&self.suppression_key);
        let mut reports = Vec::with_capacity(batches.len());

        // In one order, so that two groups never wait for each other's locks.
        let mut environments: Vec<&EnvironmentId> =
            batches.iter().map(|batch| &batch.environment).collect();
        environments.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        environments.dedup();
        for env in environments {
            lock_environment(&mut tx, INGEST_LOCK, env).await?;
        }
        session.prefill(&mut tx, batches).await?;

        for batch in batches {
            let mut report = WriteReport::default();
            for accepted in &batch.messages {
                let env = &batch.environment;
                match session
                    .store(&mut tx, env, accepted, batch.received_at)
                    .await?
                {
                    Stored::New => report.stored += 1,
                    Stored::Duplicate => report.duplicates += 1,
                    Stored::Suppressed => report.suppressed += 1,
                }
            }
            reports.push(report);
        }
        if !session.flush(&mut tx).await? || session.raced {
            tx.rollback().await?;
            return Ok(None);
        }
        session.record_activity(&mut tx).await?;

        tx.commit().await?;
        Ok(Some(reports))
    }

    pub async fn user_profile(
        &self,
        env: &EnvironmentId,
        id: &str,
        event_limit: Option<i64>,
    ) -> Result<Option<UserProfile>> {
        let found = self.keyed_profile(env, id, event_limit).await?;
        Ok(found.map(|(_, profile)| profile))
    }

    pub async fn user_export(&self, env: &EnvironmentId, id: &str) -> Result<Option<UserExport>> {
        let Some((user_key, profile)) = self.keyed_profile(env, id, None).await? else {
            return Ok(None);
        };

        let rows = sqlx::query(
            "SELECT message_id, received_at FROM message_ids \
             WHERE environment_id = $1 AND user_key = $2 ORDER BY received_at, message_id",
        )
        .bind(env.as_str())
        .bind(&user_key)
        .fetch_all(&self.reader)
        .await?;
        let message_ids = rows
            .iter()
            .map(|row| {
                Ok(StoredMessageId {
                    message_id: row.try_get("message_id")?,
                    received_at: row.try_get("received_at")?,
                })
            })
            .collect::<Result<_>>()?;

        Ok(Some(UserExport {
            profile,
            message_ids,
        }))
    }

    /// The user known by `id` with their key, at most `event_limit` of the latest events.
    async fn keyed_profile(
        &self,
        env: &EnvironmentId,
        id: &str,
        event_limit: Option<i64>,
    ) -> Result<Option<(String, UserProfile)>> {
        let row = sqlx::query(
            "SELECT u.id, u.user_id, u.traits, u.consent, u.gpc, u.first_seen, u.last_seen \
             FROM identities i JOIN users u \
               ON u.environment_id = i.environment_id AND u.id = i.user_key \
             WHERE i.environment_id = $1 AND i.value = $2 \
             ORDER BY i.kind DESC LIMIT 1",
        )
        .bind(env.as_str())
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user_key: String = row.try_get("id")?;

        let anonymous_ids = sqlx::query_scalar(
            "SELECT value FROM identities \
             WHERE environment_id = $1 AND user_key = $2 AND kind = 'anonymous' ORDER BY value",
        )
        .bind(env.as_str())
        .bind(&user_key)
        .fetch_all(&self.reader)
        .await?;

        let mut events = Vec::new();
        let rows = sqlx::query(
            "SELECT message_id, type, event, name, properties, context, timestamp, received_at \
             FROM events WHERE environment_id = $1 AND user_key = $2 \
             ORDER BY timestamp DESC, message_id DESC LIMIT $3",
        )
        .bind(env.as_str())
        .bind(&user_key)
        .bind(event_limit.unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?;
        for row in rows.iter().rev() {
            events.push(StoredEvent {
                message_id: row.try_get("message_id")?,
                kind: row.try_get("type")?,
                event: row.try_get("event")?,
                name: row.try_get("name")?,
                properties: row.try_get::<Json<Value>, _>("properties")?.0,
                context: row.try_get::<Json<Value>, _>("context")?.0,
                timestamp: row.try_get("timestamp")?,
                received_at: row.try_get("received_at")?,
            });
        }

        let mut responses = Vec::new();
        let rows = sqlx::query(
            "SELECT message_id, survey_id, answers, timestamp FROM responses \
             WHERE environment_id = $1 AND user_key = $2 ORDER BY timestamp, message_id",
        )
        .bind(env.as_str())
        .bind(&user_key)
        .fetch_all(&self.reader)
        .await?;
        for row in &rows {
            responses.push(StoredResponse {
                message_id: row.try_get("message_id")?,
                survey_id: row.try_get("survey_id")?,
                answers: row.try_get::<Json<Value>, _>("answers")?.0,
                timestamp: row.try_get("timestamp")?,
            });
        }

        let mut consent_history = Vec::new();
        let rows = sqlx::query(
            "SELECT preferences, source, recorded_at FROM consent_records \
             WHERE environment_id = $1 AND user_key = $2 ORDER BY recorded_at, id",
        )
        .bind(env.as_str())
        .bind(&user_key)
        .fetch_all(&self.reader)
        .await?;
        for row in &rows {
            consent_history.push(ConsentRecord {
                preferences: row.try_get::<Json<Value>, _>("preferences")?.0,
                source: row.try_get("source")?,
                recorded_at: row.try_get("recorded_at")?,
            });
        }

        // Counted, not taken from the lists: the events listed stop at `event_limit`.
        let (events_count, responses_count, consent_count): (i64, i64, i64) = sqlx::query_as(
            "SELECT \
               (SELECT COUNT(*) FROM events WHERE environment_id = $1 AND user_key = $2), \
               (SELECT COUNT(*) FROM responses WHERE environment_id = $1 AND user_key = $2), \
               (SELECT COUNT(*) FROM consent_records \
                 WHERE environment_id = $1 AND user_key = $2)",
        )
        .bind(env.as_str())
        .bind(&user_key)
        .fetch_one(&self.reader)
        .await?;
        let counts = UserCounts {
            events: u64::try_from(events_count).unwrap_or_default(),
            responses: u64::try_from(responses_count).unwrap_or_default(),
            consent_records: u64::try_from(consent_count).unwrap_or_default(),
        };

        let profile = UserProfile {
            user_id: row.try_get("user_id")?,
            anonymous_ids,
            traits: row.try_get::<Json<Value>, _>("traits")?.0,
            consent: row
                .try_get::<Option<Json<Value>>, _>("consent")?
                .map(|json| json.0),
            consent_history,
            gpc: row.try_get("gpc")?,
            first_seen: row.try_get("first_seen")?,
            last_seen: row.try_get("last_seen")?,
            events,
            responses,
            counts,
        };
        Ok(Some((user_key, profile)))
    }
}

/// Attempts at a group whose message ids another collector keeps storing meanwhile.
const STORE_ATTEMPTS: usize = 3;

/// What became of one message.
enum Stored {
    New,
    Duplicate,
    Suppressed,
}

/// What one write transaction remembers between messages, so that a group of many
/// messages about the same users costs a few reads up front and a few multi-row writes at
/// the end, instead of statements per message.
struct WriteSession<'a> {
    suppression_key: &'a [u8],
    /// (environment, id) → whether the id is suppressed.
    suppressed: HashMap<(EnvironmentId, String), bool>,
    /// (environment, kind, id) → user key, for identities read or written so far.
    identities: HashMap<(EnvironmentId, &'static str, String), String>,
    /// Identities the prefill looked for and did not find.
    unowned: HashSet<(EnvironmentId, &'static str, String)>,
    /// Message ids stored before this transaction or earlier in it.
    message_ids: HashSet<(EnvironmentId, String)>,
    /// (environment, user key) → earliest and latest activity seen in this transaction.
    activity: HashMap<(EnvironmentId, String), (DateTime<Utc>, DateTime<Utc>)>,
    /// (environment, user key) → what this transaction knows of the user's row.
    users: HashMap<(EnvironmentId, String), KnownUser>,
    /// Rows not yet written, per environment.
    pending: BTreeMap<EnvironmentId, PendingRows<'a>>,
    /// Whether another transaction stored one of these message ids after the prefill
    /// looked; this one must then be rolled back and run again.
    raced: bool,
}

/// The columns of a user's row that ingest reads.
struct KnownUser {
    /// Whether `users.user_id` is set.
    named: bool,
    /// `users.consent` and `users.consent_at`.
    consent: Option<Value>,
    consent_at: Option<DateTime<Utc>>,
    /// `users.gpc`.
    gpc: Option<bool>,
    /// `users.traits`, once read; and whether this transaction changed them.
    traits: Option<Map<String, Value>>,
    traits_changed: bool,
}

impl KnownUser {
    /// From a row with the columns `named` (`user_id IS NOT NULL`), `consent`,
    /// `consent_at` and `gpc`.
    fn from_row(row: &DbRow) -> Result<Self> {
        Ok(Self {
            named: row.try_get("named")?,
            consent: row
                .try_get::<Option<Json<Value>>, _>("consent")?
                .map(|json| json.0),
            consent_at: row.try_get("consent_at")?,
            gpc: row.try_get("gpc")?,
            traits: None,
            traits_changed: false,
        })
    }

    /// A user this transaction has just created.
    fn created(named: bool) -> Self {
        Self {
            named,
            consent: None,
            consent_at: None,
            gpc: None,
            traits: Some(Map::new()),
            traits_changed: false,
        }
    }
}

/// The rows one environment's messages add, written together by [`WriteSession::flush`].
#[derive(Default)]
struct PendingRows<'a> {
    message_ids: Vec<MessageIdRow>,
    events: Vec<EventRow<'a>>,
    responses: Vec<ResponseRow<'a>>,
}

/// A `message_ids` row: message id, user key, received at.
#[derive(serde::Serialize)]
struct MessageIdRow(String, String, String);

/// An `events` row: message id, user key, type, event, name, properties, context, time,
/// received at.
#[derive(serde::Serialize)]
struct EventRow<'a>(
    String,
    String,
    &'static str,
    Option<&'a str>,
    Option<&'a str>,
    &'a Map<String, Value>,
    &'a Map<String, Value>,
    String,
    String,
);

/// A user whose traits changed: user key, traits.
type TraitsRow<'r> = (&'r str, &'r Map<String, Value>);

/// A `responses` row: message id, user key, survey id, answers, time, received at.
#[derive(serde::Serialize)]
struct ResponseRow<'a>(String, String, &'a str, &'a Value, String, String);

/// Properties of a message that has none.
static NO_PROPERTIES: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// A time as the shared queries bind it: RFC 3339 text, which SQLite stores as it is
/// (the form sqlx gives a bound time there) and PostgreSQL casts.
fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// Rows as the JSON array the multi-row statements read. (Serialising maps with string
/// keys does not fail in practice.)
fn rows_json(rows: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(rows)
        .map_err(|error| ApiError::Internal(format!("rows could not be encoded: {error}")))
}

impl<'a> WriteSession<'a> {
    fn new(suppression_key: &'a [u8]) -> Self {
        Self {
            suppression_key,
            suppressed: HashMap::new(),
            identities: HashMap::new(),
            unowned: HashSet::new(),
            message_ids: HashSet::new(),
            activity: HashMap::new(),
            users: HashMap::new(),
            pending: BTreeMap::new(),
            raced: false,
        }
    }

    /// Reads up front, a few statements per environment, what the group's messages will
    /// ask: which message ids are stored already, which ids are suppressed, whose they
    /// are, and those users' rows (locked, on PostgreSQL, in key order), with the traits
    /// of those an `identify` will change. The messages then find the answers here
    /// instead of asking the database once each.
    async fn prefill(&mut self, conn: &mut Conn, batches: &[&'a WriteBatch]) -> Result<()> {
        #[derive(Default)]
        struct Asked<'b> {
            /// Every id, for the suppressions.
            ids: Vec<&'b str>,
            /// Ids that may be user ids (`userId`, `previousId`).
            user_ids: Vec<&'b str>,
            /// Ids that may be anonymous ids (`anonymousId`, `previousId`).
            anonymous_ids: Vec<&'b str>,
            /// The ids of `identify` messages, whose users' traits will change.
            identifying: Vec<&'b str>,
            message_ids: Vec<&'b str>,
        }
        let mut by_env: HashMap<&EnvironmentId, Asked> = HashMap::new();
        for batch in batches {
            let asked = by_env.entry(&batch.environment).or_default();
            for accepted in &batch.messages {
                let message = &accepted.message;
                let ids = [
                    message.user_id.as_ref().map(|id| id.as_str()),
                    message.anonymous_id.as_ref().map(|id| id.as_str()),
                    message.previous_id.as_deref(),
                ];
                asked.ids.extend(ids.into_iter().flatten());
                asked
                    .user_ids
                    .extend([ids[0], ids[2]].into_iter().flatten());
                asked
                    .anonymous_ids
                    .extend([ids[1], ids[2]].into_iter().flatten());
                if message.kind == MessageType::Identify {
                    asked.identifying.extend(ids.into_iter().take(2).flatten());
                }
                if let Some(id) = &message.message_id {
                    asked.message_ids.push(id.as_str());
                }
            }
        }
        let mut environments: Vec<_> = by_env.into_iter().collect();
        environments.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));

        for (env, mut asked) in environments {
            if !asked.message_ids.is_empty() {
                let stored: Vec<String> = sqlx::query_scalar(&json_text_probe(
                    "t.message_id",
                    "message_ids",
                    "t.environment_id = $1 AND t.message_id = v.value",
                ))
                .bind(env.as_str())
                .bind(Value::from(asked.message_ids).to_string())
                .fetch_all(&mut *conn)
                .await?;
                self.message_ids
                    .extend(stored.into_iter().map(|id| (env.clone(), id)));
            }

            let ids = &mut asked.ids;
            ids.sort_unstable();
            ids.dedup();
            if ids.is_empty() {
                continue;
            }
            let hashes: Vec<String> = ids
                .iter()
                .map(|id| suppression_hash(self.suppression_key, id))
                .collect();
            let suppressed: HashSet<String> = sqlx::query_scalar(&json_text_probe(
                "t.id_hash",
                "suppressions",
                "t.environment_id = $1 AND t.id_hash = v.value AND t.expires_at > $3",
            ))
            .bind(env.as_str())
            .bind(Value::from(hashes.clone()).to_string())
            .bind(Utc::now())
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
            for (id, hash) in ids.iter().zip(&hashes) {
                self.suppressed
                    .insert((env.clone(), (*id).to_owned()), suppressed.contains(hash));
            }

            let mut user_keys: Vec<String> = Vec::new();
            for (kind, asked_ids) in [
                ("user", &mut asked.user_ids),
                ("anonymous", &mut asked.anonymous_ids),
            ] {
                asked_ids.sort_unstable();
                asked_ids.dedup();
                if asked_ids.is_empty() {
                    continue;
                }
                // The kind is spelled out, not bound, so that each lookup is an equality on
                // every column of the key (see `json_text_probe`).
                let owners: Vec<(String, String)> = sqlx::query_as(&json_text_probe(
                    "t.value, t.user_key",
                    "identities",
                    &format!("t.environment_id = $1 AND t.kind = '{kind}' AND t.value = v.value"),
                ))
                .bind(env.as_str())
                .bind(Value::from(asked_ids.clone()).to_string())
                .fetch_all(&mut *conn)
                .await?;
                for id in asked_ids.iter() {
                    self.unowned.insert((env.clone(), kind, (*id).to_owned()));
                }
                for (value, user_key) in owners {
                    user_keys.push(user_key.clone());
                    self.unowned.remove(&(env.clone(), kind, value.clone()));
                    self.identities.insert((env.clone(), kind, value), user_key);
                }
            }
            user_keys.sort_unstable();
            user_keys.dedup();
            if user_keys.is_empty() {
                continue;
            }

            let select = json_text_probe(
                "t.id, t.user_id IS NOT NULL AS named, t.consent, t.consent_at, t.gpc",
                "users",
                "t.environment_id = $1 AND t.id = v.value",
            );
            let rows = sqlx::query(&format!("{select} ORDER BY t.id {LOCK_ROWS}"))
                .bind(env.as_str())
                .bind(Value::from(user_keys).to_string())
                .fetch_all(&mut *conn)
                .await?;
            for row in &rows {
                let known = KnownUser::from_row(row)?;
                self.users.insert((env.clone(), row.try_get("id")?), known);
            }

            let mut identifying: Vec<&String> = asked
                .identifying
                .iter()
                .filter_map(|id| {
                    ["user", "anonymous"].into_iter().find_map(|kind| {
                        self.identities.get(&(env.clone(), kind, (*id).to_owned()))
                    })
                })
                .collect();
            identifying.sort_unstable();
            identifying.dedup();
            if identifying.is_empty() {
                continue;
            }
            let traits: Vec<(String, Json<Map<String, Value>>)> = sqlx::query_as(&json_text_probe(
                "t.id, t.traits",
                "users",
                "t.environment_id = $1 AND t.id = v.value",
            ))
            .bind(env.as_str())
            .bind(rows_json(&identifying)?)
            .fetch_all(&mut *conn)
            .await?;
            for (user_key, traits) in traits {
                if let Some(user) = self.users.get_mut(&(env.clone(), user_key)) {
                    user.traits = Some(traits.0);
                }
            }
        }
        Ok(())
    }

    /// Whether `id` belongs to a deleted user whose tombstone still stands.
    async fn is_suppressed(
        &mut self,
        conn: &mut Conn,
        env: &EnvironmentId,
        id: &str,
    ) -> Result<bool> {
        let key = (env.clone(), id.to_owned());
        if let Some(known) = self.suppressed.get(&key) {
            return Ok(*known);
        }
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM suppressions \
             WHERE environment_id = $1 AND id_hash = $2 AND expires_at > $3",
        )
        .bind(env.as_str())
        .bind(suppression_hash(self.suppression_key, id))
        .bind(Utc::now())
        .fetch_optional(&mut *conn)
        .await?;
        self.suppressed.insert(key, found.is_some());
        Ok(found.is_some())
    }

    /// Stores one message, unless its message id was stored before or it names a
    /// deleted identity. Its rows are written by [`WriteSession::flush`].
    async fn store(
        &mut self,
        conn: &mut Conn,
        env: &EnvironmentId,
        accepted: &'a Accepted,
        received_at: DateTime<Utc>,
    ) -> Result<Stored> {
        let message = &accepted.message;
        let ids = [
            message.user_id.as_ref().map(|id| id.as_str()),
            message.anonymous_id.as_ref().map(|id| id.as_str()),
            message.previous_id.as_deref(),
        ];
        for id in ids.into_iter().flatten() {
            if self.is_suppressed(conn, env, id).await? {
                return Ok(Stored::Suppressed);
            }
        }

        let user_id = message.user_id.as_ref().map(|id| id.as_str());
        let anonymous_id = message.anonymous_id.as_ref().map(|id| id.as_str());
        let user_key = self
            .resolve_user(conn, env, user_id, anonymous_id, accepted.time)
            .await?;

        // Resolving first lets the message id row name its user, so that deleting the user
        // deletes it too; for a duplicate, resolving changes nothing the original did not.
        let message_id = match &message.message_id {
            Some(id) => id.as_str().to_owned(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        if !self.message_ids.insert((env.clone(), message_id.clone())) {
            return Ok(Stored::Duplicate);
        }
        let received = time_text(received_at);
        let rows = self.pending.entry(env.clone()).or_default();
        rows.message_ids.push(MessageIdRow(
            message_id.clone(),
            user_key.clone(),
            received.clone(),
        ));

        if message.kind == MessageType::Alias {
            if let Some(previous) = message.previous_id.as_deref() {
                self.absorb_previous_identity(conn, env, &user_key, previous)
                    .await?;
            }
        }

        let rows = self.pending.entry(env.clone()).or_default();
        match message.kind {
            MessageType::Identify => {
                if let Some(traits) = message.effective_traits() {
                    self.merge_traits(conn, env, &user_key, traits).await?;
                }
            }
            MessageType::Response => rows.responses.push(ResponseRow(
                message_id,
                user_key.clone(),
                message.survey_id.as_deref().unwrap_or_default(),
                message.answers.as_ref().unwrap_or(&Value::Null),
                time_text(accepted.time),
                received,
            )),
            kind => {
                let (name, properties) = match kind {
                    MessageType::Group => (message.group_id.as_deref(), message.traits.as_ref()),
                    MessageType::Alias => (message.previous_id.as_deref(), None),
                    _ => (message.name.as_deref(), message.properties.as_ref()),
                };
                rows.events.push(EventRow(
                    message_id,
                    user_key.clone(),
                    kind.as_str(),
                    message.event.as_deref(),
                    name,
                    properties.unwrap_or(&NO_PROPERTIES),
                    &message.context,
                    time_text(accepted.time),
                    received,
                ));
            }
        }
        self.record_consent(conn, env, &user_key, message, accepted.time)
            .await?;
        if let Some(Value::Bool(gpc)) = message.context.get("gpc") {
            self.record_gpc(conn, env, &user_key, *gpc).await?;
        }

        // A message sent with `context.active: false` (a server acting for the user) is
        // not a sign of life and must not postpone the user's retention.
        if message.context.get("active") != Some(&Value::Bool(false)) {
            self.note_activity(env, user_key, accepted.time, accepted.time);
        }
        Ok(Stored::New)
    }

    /// Writes the rows gathered since the last flush, a few multi-row statements per
    /// environment, and the traits this transaction changed. Returns false when another
    /// transaction stored one of these message ids since the prefill looked: the caller
    /// must roll back.
    async fn flush(&mut self, conn: &mut Conn) -> Result<bool> {
        for (env, rows) in std::mem::take(&mut self.pending) {
            if !rows.message_ids.is_empty() {
                let inserted = sqlx::query(INSERT_MESSAGE_IDS)
                    .bind(env.as_str())
                    .bind(rows_json(&rows.message_ids)?)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if inserted != rows.message_ids.len() as u64 {
                    return Ok(false);
                }
            }
            if !rows.events.is_empty() {
                sqlx::query(INSERT_EVENTS)
                    .bind(env.as_str())
                    .bind(rows_json(&rows.events)?)
                    .execute(&mut *conn)
                    .await?;
            }
            if !rows.responses.is_empty() {
                sqlx::query(INSERT_RESPONSES)
                    .bind(env.as_str())
                    .bind(rows_json(&rows.responses)?)
                    .execute(&mut *conn)
                    .await?;
            }
        }

        let mut changed: BTreeMap<&EnvironmentId, Vec<TraitsRow>> = BTreeMap::new();
        for ((env, user_key), user) in &mut self.users {
            if let (true, Some(traits)) = (user.traits_changed, &user.traits) {
                user.traits_changed = false;
                changed.entry(env).or_default().push((user_key, traits));
            }
        }
        for (env, mut users) in changed {
            users.sort_unstable_by_key(|(user_key, _)| *user_key);
            let rows: Vec<[String; 2]> = users
                .into_iter()
                .map(|(user_key, traits)| Ok([user_key.to_owned(), rows_json(traits)?]))
                .collect::<Result<_>>()?;
            update_users(conn, env, "traits = a.column2", &["", "::jsonb"], &rows).await?;
        }
        Ok(true)
    }

    fn note_activity(
        &mut self,
        env: &EnvironmentId,
        user_key: String,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
    ) {
        let span = self
            .activity
            .entry((env.clone(), user_key))
            .or_insert((first, last));
        span.0 = span.0.min(first);
        span.1 = span.1.max(last);
    }

    /// Moves first and last seen of every user active in this transaction, in key order.
    async fn record_activity(&mut self, conn: &mut Conn) -> Result<()> {
        let mut spans: Vec<_> = self.activity.drain().collect();
        spans.sort_by(|a, b| (a.0 .0.as_str(), &a.0 .1).cmp(&(b.0 .0.as_str(), &b.0 .1)));
        let mut start = 0;
        while start < spans.len() {
            let env = &spans[start].0 .0;
            let end = spans[start..]
                .iter()
                .position(|((other, _), _)| other != env)
                .map_or(spans.len(), |n| start + n);
            let rows: Vec<[String; 3]> = spans[start..end]
                .iter()
                .map(|((_, user_key), (first, last))| {
                    [user_key.clone(), time_text(*first), time_text(*last)]
                })
                .collect();
            update_users(
                conn,
                env,
                "first_seen = CASE WHEN a.column2 < users.first_seen \
                   THEN a.column2 ELSE users.first_seen END, \
                 last_seen = CASE WHEN a.column3 > users.last_seen \
                   THEN a.column3 ELSE users.last_seen END",
                &["", "::timestamptz", "::timestamptz"],
                &rows,
            )
            .await?;
            start = end;
        }
        Ok(())
    }

    /// The cached row of a user, read if this transaction has not read it yet.
    async fn known_user(
        &mut self,
        conn: &mut Conn,
        env: &EnvironmentId,
        user_key: &str,
    ) -> Result<&mut KnownUser> {
        let cached = (env.clone(), user_key.to_owned());
        if !self.users.contains_key(&cached) {
            let row = sqlx::query(
                "SELECT user_id IS NOT NULL AS named, consent, consent_at, gpc FROM users \
                 WHERE environment_id = $1 AND id = $2",
            )
            .bind(env.as_str())
            .bind(user_key)
            .fetch_one(&mut *conn)
            .await?;
            let known = KnownUser::from_row(&row)?;
            self.users.insert(cached.clone(), known);
        }
        Ok(self
            .users
            .get_mut(&cached)
            .expect("the user was cached just above"))
    }

    /// Adds the given traits to the user's, replacing those of the same name. The
    /// result is written by [`WriteSession::flush`].
    async fn merge_traits(
        &mut self,
        conn: &mut Conn,
        env: &EnvironmentId,
        user_key: &str,
        new: &Map<String, Value>,
    ) -> Result<()> {
        let user = self.known_user(conn, env, user_key).await?;
        if user.traits.is_none() {
            user.traits = Some(read_traits(conn, env, user_key).await?);
        }
        if let Some(traits) = &mut user.traits {
            for (key, value) in new {
                traits.insert(key.clone(), value.clone());
            }
            user.traits_changed = true;
        }
        Ok(())
    }

    /// Keeps the user's Global Privacy Control signal when it changed.
    async fn record_gpc(
        &mut self,
        conn: &mut Conn,
        env: &EnvironmentId,
        user_key: &str,
        gpc: bool,
    ) -> Result<()> {
        let user = self.known_user(conn, env, user_key).await?;
        if user.gpc == Some(gpc) {
            return Ok(());
        }
        user.gpc = Some(gpc);
        sqlx::query("UPDATE users SET gpc = $1 WHERE environment_id = $2 AND id = $3")
            .bind(gpc)
            .bind(env.as_str())
            .bind(user_key)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Keeps `context.consent.categoryPreferences` on the user and appends a consent record
    /// whenever it differs from what was stored. A change older than the stored one (a late
    /// retry) is recorded in the history but does not replace the current state.
    async fn record_consent(
        &mut self,
        conn: &mut Conn,
        env: &EnvironmentId,
        user_key: &str,
        message: &Message,
        time: DateTime<Utc>,
    ) -> Result<()> {
        let preferences = message
            .context
            .get("consent")
            .and_then(|c| c.get("categoryPreferences"));
        let Some(preferences) = preferences.filter(|p| p.is_object()) else {
            return Ok(());
        };

        let user = self.known_user(conn, env, user_key).await?;
        if user.consent.as_ref() == Some(preferences) {
            return Ok(());
        }

        if user.consent_at.is_none_or(|at| time >= at) {
            user.consent = Some(preferences.clone());
            user.consent_at = Some(time);
            sqlx::query(
                "UPDATE users SET consent = $1, consent_at = $2 WHERE environment_id = $3 AND id = $4",
            )
            .bind(Json(preferences))
            .bind(time)
            .bind(env.as_str())
            .bind(user_key)
            .execute(&mut *conn)
            .await?;
        }
        let source = match (message.kind, &message.event) {
            (MessageType::Track, Some(event)) => event.clone(),
            (kind, _) => kind.as_str().to_owned(),
        };
        sqlx::query(
            "INSERT INTO consent_records (environment_id, id, user_key, preferences, source, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(env.as_str())
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(user_key)
        .bind(Json(preferences))
        .bind(source)
        .bind(time)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn find_identity(
        &mut self,
        conn: &mut Conn,
        env: &EnvironmentId,
        kind: &'static str,
        value: &str,
    ) -> Result<Option<String>> {
        let key = (env.clone(), kind, value.to_owned());
        if let Some(user_key) = self.identities.get(&key) {
            return Ok(Some(user_key.clone()));
        }
        if self.unowned.contains(&key) {
            return Ok(None);
        }

        let found: Option<String> = sqlx::query_scalar(
            "SELECT user_key FROM identities \
             WHERE environment_id = $1 AND kind = $2 AND value = $3",
        )
        .bind(env.as_str())
        .bind(kind)
        .bind(value)
        .fetch_optional(&mut *conn)
        .await?;

        if let Some(user_key) = &found {
            self.identities.insert(key, user_key.clone());
        }
        Ok(found)
    }

    /// Gives the identity to `user_key` unless some user has it already; returns that
    /// other user, if any. With several collectors on one database, two may insert the
    /// same new identity at once: the loser's insert does nothing, and it learns the
    /// winner here.
    async fn add_identity(
        &mut self,
        conn: &mut Conn,
        env: &EnvironmentId,
        kind: &'static str,
        value: &str,
        user_key: &str,
    ) -> Result<Option<String>> {
        if let Some(owner) = self.find_identity(conn, env, kind, value).await? {
            return Ok((owner != user_key).then_some(owner));
        }
        let key = (env.clone(), kind, value.to_owned());
        // Whatever the insert finds, the prefill's "no owner" no longer holds.
        self.unowned.remove(&key);
        let inserted = sqlx::query(
            "INSERT INTO identities (environment_id, kind, value, user_key) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (environment_id, kind, value) DO NOTHING",
        )
        .bind(env.as_str())
        .bind(kind)
        .bind(value)
        .bind(user_key)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            self.identities.insert(key, user_key.to_owned());
            return Ok(None);
        }
        Ok(self
            .find_identity(conn, env, kind, value)
            .await?
            .filter(|owner| owner != user_key))
    }

    /// Whether the user has a user id, from the cache when this transaction read the row.
    async fn is_named(
        &mut self,
        conn: &mut Conn,
        env: &EnvironmentId,
        user_key: &str,
    ) -> Result<bool> {
        Ok(self.known_user(conn, env, user_key).await?.named)
    }

    /// Finds the user a message is about, creating or merging users as its ids require.
    ///
    /// An anonymous visitor who identifies becomes that user: when both ids are already
    /// known as two users, the anonymous one is merged into the identified one. An
    /// anonymous id that already belongs to another identified user (a shared browser) is
    /// not merged; the new user id gets a user of its own.
    async fn resolve_user(
        &mut self,
        conn: &mut Conn,
        env: &EnvironmentId,
        user_id: Option<&str>,
        anonymous_id: Option<&str>,
        time: DateTime<Utc>,
    ) -> Result<String> {
        let by_user = match user_id {
            Some(id) => self.find_identity(conn, env, "user", id).await?,
            None => None,
        };
        let by_anonymous = match anonymous_id {
            Some(id) => self.find_identity(conn, env, "anonymous", id).await?,
            None => None,
        };

        let mut created = false;
        let mut user_key = match (by_user, by_anonymous) {
            (Some(known), Some(visitor)) if known != visitor => {
                if !self.is_named(conn, env, &visitor).await? {
                    self.merge_users(conn, env, &visitor, &known).await?;
                }
                known
            }
            (Some(known), _) => known,
            (None, Some(visitor)) if user_id.is_none() => visitor,
            (None, Some(visitor)) => {
                if self.is_named(conn, env, &visitor).await? {
                    created = true;
                    self.create_user(conn, env, time).await?
                } else {
                    visitor
                }
            }
            (None, None) => {
                created = true;
                self.create_user(conn, env, time).await?
            }
        };

        if let Some(id) = user_id {
            if let Some(owner) = self.add_identity(conn, env, "user", id, &user_key).await? {
                // Another collector created this user a moment ago: use theirs.
                if created {
                    self.drop_new_user(conn, env, &user_key).await?;
                    user_key = owner;
                    created = false;
                }
            }
            if !self.is_named(conn, env, &user_key).await? {
                sqlx::query(
                    "UPDATE users SET user_id = $1 \
                     WHERE environment_id = $2 AND id = $3 AND user_id IS NULL",
                )
                .bind(id)
                .bind(env.as_str())
                .bind(&user_key)
                .execute(&mut *conn)
                .await?;
                self.known_user(conn, env, &user_key).await?.named = true;
            }
        }
        if let Some(id) = anonymous_id {
            let owner = self
                .add_identity(conn, env, "anonymous", id, &user_key)
                .await?;
            if let (Some(owner), true) = (owner, created && user_id.is_none()) {
                self.drop_new_user(conn, env, &user_key).await?;
                user_key = owner;
            }
        }
        Ok(user_key)
    }

    async fn create_user(
        &mut self,
        conn: &mut Conn,
        env: &EnvironmentId,
        time: DateTime<Utc>,
    ) -> Result<String> {
        let user_key = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO users (environment_id, id, traits, first_seen, last_seen) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(env.as_str())
        .bind(&user_key)
        .bind(Json(Map::new()))
        .bind(time)
        .bind(time)
        .execute(&mut *conn)
        .await?;
        self.users
            .insert((env.clone(), user_key.clone()), KnownUser::created(false));
        Ok(user_key)
    }

    /// Removes a user this transaction created and that turned out to exist already.
    async fn drop_new_user(
        &mut self,
        conn: &mut Conn,
        env: &EnvironmentId,
        user_key: &str,
    ) -> Result<()> {
        for statement in [
            "DELETE FROM identities WHERE environment_id = $1 AND user_key = $2",
            "DELETE FROM users WHERE environment_id = $1 AND id = $2",
        ] {
            sqlx::query(statement)
                .bind(env.as_str())
                .bind(user_key)
                .execute(&mut *conn)
                .await?;
        }
        self.users.remove(&(env.clone(), user_key.to_owned()));
        self.identities.retain(|_, owner| owner != user_key);
        Ok(())
    }

    /// `alias`: the identity named by `previousId` (an anonymous id or an earlier user
    /// id) now belongs to `user_key`; a user who had it is merged in.
    async fn absorb_previous_identity(
        &mut self,
        conn: &mut Conn,
        env: &EnvironmentId,
        user_key: &str,
        previous: &str,
    ) -> Result<()> {
        for kind in ["anonymous", "user"] {
            match self.find_identity(conn, env, kind, previous).await? {
                Some(other) if other != user_key => {
                    return self.merge_users(conn, env, &other, user_key).await;
                }
                Some(_) => return Ok(()),
                None => {}
            }
        }
        self.add_identity(conn, env, "anonymous", previous, user_key)
            .await?;
        Ok(())
    }

    /// Moves everything of user `from` to user `into` and removes `from`. Traits and
    /// consent of `into` win.
    async fn merge_users(
        &mut self,
        conn: &mut Conn,
        env: &EnvironmentId,
        from: &str,
        into: &str,
    ) -> Result<()> {
        // The rows gathered so far may name `from`; they must be in the tables to move.
        // When another collector stored one of their message ids meanwhile, the
        // transaction will be rolled back, so the merge is not worth doing.
        if !self.flush(conn).await? {
            self.raced = true;
            return Ok(());
        }
        for statement in [
            "UPDATE events SET user_key = $1 WHERE environment_id = $2 AND user_key = $3",
            "UPDATE responses SET user_key = $1 WHERE environment_id = $2 AND user_key = $3",
            "UPDATE consent_records SET user_key = $1 WHERE environment_id = $2 AND user_key = $3",
            "UPDATE identities SET user_key = $1 WHERE environment_id = $2 AND user_key = $3",
            "UPDATE message_ids SET user_key = $1 WHERE environment_id = $2 AND user_key = $3",
        ] {
            sqlx::query(statement)
                .bind(into)
                .bind(env.as_str())
                .bind(from)
                .execute(&mut *conn)
                .await?;
        }

        let row = sqlx::query(
            "SELECT traits, first_seen, last_seen FROM users WHERE environment_id = $1 AND id = $2",
        )
        .bind(env.as_str())
        .bind(from)
        .fetch_one(&mut *conn)
        .await?;
        let from_traits = row.try_get::<Json<Map<String, Value>>, _>("traits")?.0;
        let mut traits = read_traits(conn, env, into).await?;
        for (key, value) in from_traits {
            traits.entry(key).or_insert(value);
        }
        write_traits(conn, env, into, traits).await?;
        sqlx::query("DELETE FROM users WHERE environment_id = $1 AND id = $2")
            .bind(env.as_str())
            .bind(from)
            .execute(&mut *conn)
            .await?;

        // Cached identities may point at the user that is gone, and the cached row of the
        // user merged into is out of date; activity moves along.
        self.identities.clear();
        self.unowned.clear();
        self.users.clear();
        self.note_activity(
            env,
            into.to_owned(),
            row.try_get("first_seen")?,
            row.try_get("last_seen")?,
        );
        if let Some((first, last)) = self.activity.remove(&(env.clone(), from.to_owned())) {
            self.note_activity(env, into.to_owned(), first, last);
        }
        Ok(())
    }
}

async fn read_traits(
    conn: &mut Conn,
    env: &EnvironmentId,
    user_key: &str,
) -> Result<Map<String, Value>> {
    let traits: Json<Map<String, Value>> =
        sqlx::query_scalar("SELECT traits FROM users WHERE environment_id = $1 AND id = $2")
            .bind(env.as_str())
            .bind(user_key)
            .fetch_one(&mut *conn)
            .await?;
    Ok(traits.0)
}

async fn write_traits(
    conn: &mut Conn,
    env: &EnvironmentId,
    user_key: &str,
    traits: Map<String, Value>,
) -> Result<()> {
    sqlx::query("UPDATE users SET traits = $1 WHERE environment_id = $2 AND id = $3")
        .bind(Json(traits))
        .bind(env.as_str())
        .bind(user_key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
