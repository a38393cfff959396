//! Storage: the database behind the collector, and every query it runs.
//!
//! Writes go through one connection (`writer`) so that SQLite never sees two write
//! transactions at once and never answers `SQLITE_BUSY`; reads use a small pool of their
//! own. Every write of more than one statement runs in one transaction, and every value is a
//! bound parameter. Times are stored as UTC RFC 3339 text with microseconds (see
//! [`db_time`]), so text order is time order.

mod read;
mod write;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

pub use read::{StoredEvent, UserProfile};
pub use write::Accepted;

use crate::error::Result;

/// Ebb's id of an environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvironmentId(String);

impl EnvironmentId {
    /// A fresh random id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// An id read back from storage.
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

/// An environment: a separate space of users with its own write keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// Its id.
    pub id: EnvironmentId,
    /// Its unique, human-chosen name.
    pub name: String,
}

/// Which environments an admin token may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// Every environment.
    All,
    /// Only this one.
    Environment(EnvironmentId),
}

/// The database and the queries on it.
#[derive(Debug, Clone)]
pub struct Store {
    reader: SqlitePool,
    writer: SqlitePool,
}

/// Formats a time the way the database stores it.
pub fn db_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Store {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    ///
    /// # Errors
    ///
    /// When the URL is not an SQLite URL, the file cannot be opened, or a migration fails.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("while reading the database URL `{url}`"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL makes every commit durable before the collector acknowledges it.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));

        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .context("while opening the SQLite database")?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .context("while migrating the SQLite database")?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .context("while opening the SQLite database for reading")?;

        Ok(Self { reader, writer })
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// The environment a write key belongs to.
    pub async fn environment_for_write_key(&self, key: &str) -> Result<Option<EnvironmentId>> {
        let row = sqlx::query("SELECT environment_id FROM write_keys WHERE write_key = ?")
            .bind(key)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|row| EnvironmentId(row.get(0))))
    }

    /// The scope of the admin token with this hash, if it is one.
    pub async fn admin_token_scope(&self, token_hash: &str) -> Result<Option<TokenScope>> {
        let row = sqlx::query("SELECT environment_id FROM admin_tokens WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|row| match row.get::<Option<String>, _>(0) {
            Some(id) => TokenScope::Environment(EnvironmentId(id)),
            None => TokenScope::All,
        }))
    }

    /// The environment with this name.
    pub async fn environment_by_name(&self, name: &str) -> Result<Option<Environment>> {
        let row = sqlx::query("SELECT id, name FROM environments WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|row| Environment {
            id: EnvironmentId(row.get(0)),
            name: row.get(1),
        }))
    }

    /// The environment with this id.
    pub async fn environment(&self, id: &EnvironmentId) -> Result<Option<Environment>> {
        let row = sqlx::query("SELECT id, name FROM environments WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|row| Environment {
            id: EnvironmentId(row.get(0)),
            name: row.get(1),
        }))
    }

    /// The write keys of an environment, oldest first.
    pub async fn write_keys(&self, environment: &EnvironmentId) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT write_key FROM write_keys WHERE environment_id = ? ORDER BY created_at",
        )
        .bind(environment.as_str())
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(|row| row.get(0)).collect())
    }

    /// An instance-wide setting.
    pub async fn instance_setting(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM instance_settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.writer)
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Creates an environment with one write key; with `instance_key`, records it as that
    /// instance setting in the same transaction.
    pub async fn create_environment(
        &self,
        name: &str,
        write_key: &str,
        instance_key: Option<&str>,
    ) -> Result<Environment> {
        let id = EnvironmentId::generate();
        let now = db_time(Utc::now());
        let mut tx = self.writer.begin().await?;

        sqlx::query("INSERT INTO environments (id, name, created_at) VALUES (?, ?, ?)")
            .bind(id.as_str())
            .bind(name)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO write_keys (environment_id, write_key, created_at) VALUES (?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(write_key)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        if let Some(key) = instance_key {
            sqlx::query("INSERT INTO instance_settings (key, value) VALUES (?, ?)")
                .bind(key)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }

        tx.commit().await?;
        Ok(Environment {
            id,
            name: name.to_owned(),
        })
    }

    /// Stores an admin token's hash, unless it is already stored.
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
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(token_hash)
        .bind(environment)
        .bind(label)
        .bind(db_time(Utc::now()))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// How many admin tokens are stored.
    pub async fn admin_token_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM admin_tokens")
            .fetch_one(&self.writer)
            .await?;
        Ok(row.get(0))
    }
}
