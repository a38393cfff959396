//! Plain SQL on either backend, for what the benchmarks do beside the collector: seeding
//! rows in bulk and the raw `DELETE` ceiling.
//!
//! Statements use `$1`-style parameters, which sqlx accepts on both backends; values are
//! always bound, never spliced into the text.

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// A value bound to a statement.
#[derive(Debug, Clone)]
pub enum Value {
    Text(String),
    /// Text or `NULL`.
    OptText(Option<String>),
    Int(i64),
    Time(DateTime<Utc>),
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<i64> for Value {
    fn from(number: i64) -> Self {
        Self::Int(number)
    }
}

impl From<DateTime<Utc>> for Value {
    fn from(time: DateTime<Utc>) -> Self {
        Self::Time(time)
    }
}

/// One statement and its values.
pub type Statement = (String, Vec<Value>);

/// A connection pool to the benchmark's database.
#[derive(Debug, Clone)]
pub enum Sql {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Binds `values` to a query of either backend.
macro_rules! bind_all {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = match value {
                Value::Text(text) => query.bind(text.clone()),
                Value::OptText(text) => query.bind(text.clone()),
                Value::Int(number) => query.bind(*number),
                Value::Time(time) => query.bind(*time),
            };
        }
        query
    }};
}
pub(crate) use bind_all;

/// Runs `statements` in one transaction on `pool`; returns the rows each affected.
macro_rules! in_transaction {
    ($pool:expr, $begin:expr, $statements:expr) => {{
        let mut tx = $pool.begin_with($begin).await?;
        let mut affected = Vec::with_capacity($statements.len());
        for (text, values) in $statements {
            let done = bind_all!(sqlx::query(text.as_str()), values)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("while running `{text}`"))?;
            affected.push(done.rows_affected());
        }
        tx.commit().await?;
        affected
    }};
}

impl Sql {
    /// Connects to the database at `url` (which the collector has created and migrated).
    /// SQLite is opened the way the collector opens it: WAL, `synchronous = FULL`, foreign
    /// keys on.
    ///
    /// # Errors
    ///
    /// When the database cannot be opened.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(60));
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .context("while opening the SQLite database")?;
            Ok(Self::Sqlite(pool))
        } else {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .connect(url)
                .await
                .context("while connecting to PostgreSQL")?;
            Ok(Self::Postgres(pool))
        }
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Runs `statements` in one write transaction; returns the rows each affected.
    ///
    /// # Errors
    ///
    /// When a statement fails; nothing is committed then.
    pub async fn transaction(&self, statements: &[Statement]) -> anyhow::Result<Vec<u64>> {
        Ok(match self {
            // Takes the write lock at once, as the collector's write transactions do.
            Self::Sqlite(pool) => in_transaction!(pool, "BEGIN IMMEDIATE", statements),
            Self::Postgres(pool) => in_transaction!(pool, "BEGIN", statements),
        })
    }

    /// Runs a statement outside any transaction (`ANALYZE`, `VACUUM`).
    ///
    /// # Errors
    ///
    /// When it fails.
    pub async fn maintain(&self, text: &str) -> anyhow::Result<()> {
        match self {
            Self::Sqlite(pool) => sqlx::query(text).execute(pool).await.map(drop)?,
            Self::Postgres(pool) => sqlx::query(text).execute(pool).await.map(drop)?,
        }
        Ok(())
    }

    /// The first column of the first row of a query that returns text, if any.
    ///
    /// # Errors
    ///
    /// When the query fails.
    pub async fn text(&self, text: &str, values: Vec<Value>) -> anyhow::Result<Option<String>> {
        Ok(match self {
            Self::Sqlite(pool) => {
                bind_all!(sqlx::query_scalar(text), &values)
                    .fetch_optional(pool)
                    .await?
            }
            Self::Postgres(pool) => {
                bind_all!(sqlx::query_scalar(text), &values)
                    .fetch_optional(pool)
                    .await?
            }
        })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }
}
