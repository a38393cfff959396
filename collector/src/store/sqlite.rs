//! Embedded SQLite, the default backend: one file in the data folder, no other service.
//!
//! The database runs in WAL mode with `synchronous = FULL`, so a committed transaction
//! survives a crash or power loss before the collector acknowledges it. All writes share
//! one connection (see [`Backend`]); reads use a pool of read-only connections beside it.
//!
//! Copying the WAL back into the database file (a checkpoint) is left to a connection of
//! its own, once every [`CHECKPOINT_EVERY`]. SQLite would otherwise run it inside the
//! commit that fills the WAL past 1,000 pages, on the one writer connection, so that every
//! write waited for it; and a stream of small transactions (a retention sweep's chunks)
//! would copy the same pages again and again.

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// How often the WAL is checkpointed into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// This backend's sqlx database type, for the shared queries.
pub type Db = sqlx::Sqlite;

/// SQLite serialises every write transaction through the one writer connection, so
/// appending to the audit chain needs no lock of its own.
const AUDIT_LOCK: Option<&str> = None;

/// Write transactions take SQLite's write lock at once: a deferred transaction that reads
/// first and writes later fails at once with "database is locked" when another process
/// (an operator command) holds the lock, instead of waiting out the busy timeout.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// Every write transaction holds SQLite's one write lock, so ingest and erasure never
/// overlap and need no lock of their own (see the PostgreSQL backend).
const INGEST_LOCK: Option<&str> = None;
/// See [`INGEST_LOCK`].
const ERASE_LOCK: Option<&str> = None;

/// SQLite's durability is a setting of the connection, which ingest shares, so retention
/// chunks commit durably like everything else (see the PostgreSQL backend).
const BACKGROUND_COMMIT: Option<&str> = None;

/// The texts of the JSON array bound as `$2`, as a one-column subquery (`value`).
const JSON_TEXTS: &str = "SELECT value FROM json_each($2)";

/// A write transaction holds the whole database, so rows need no lock of their own (see
/// the PostgreSQL backend).
const LOCK_ROWS: &str = "";

/// `SELECT {columns}` of the rows of `table` (named `t`) that match `condition` for a text
/// `v.value` of the JSON array bound as `$2`, looked up text by text: `CROSS JOIN` makes
/// SQLite loop over the texts and probe the table's index for each.
fn json_text_probe(columns: &str, table: &str, condition: &str) -> String {
    format!("SELECT {columns} FROM json_each($2) AS v CROSS JOIN {table} AS t WHERE {condition}")
}

// Ingest writes the rows of a group with one statement per table, from a JSON array of
// rows bound as `$2` (each row an array, times as RFC 3339 text), with the environment as
// `$1`. One statement text whatever the number of rows, so it is prepared once. The
// `WHERE true` is SQLite's way to tell an upsert's `ON CONFLICT` from a join's `ON`.

/// Message id rows: message id, user key, received at.
const INSERT_MESSAGE_IDS: &str = "INSERT INTO message_ids (environment_id, message_id, \
     user_key, received_at) \
     SELECT $1, value ->> 0, value ->> 1, value ->> 2 FROM json_each($2) WHERE true \
     ON CONFLICT (environment_id, message_id) DO NOTHING";

/// Event rows: message id, user key, type, event, name, properties, context, time,
/// received at.
const INSERT_EVENTS: &str = "INSERT INTO events (environment_id, message_id, user_key, \
     type, event, name, properties, context, timestamp, received_at) \
     SELECT $1, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
     value -> 5, value -> 6, value ->> 7, value ->> 8 FROM json_each($2) WHERE true \
     ON CONFLICT (environment_id, message_id) DO NOTHING";

/// Response rows: message id, user key, survey id, answers, time, received at.
const INSERT_RESPONSES: &str = "INSERT INTO responses (environment_id, message_id, \
     user_key, survey_id, answers, timestamp, received_at) \
     SELECT $1, value ->> 0, value ->> 1, value ->> 2, value -> 3, value ->> 4, \
     value ->> 5 FROM json_each($2) WHERE true \
     ON CONFLICT (environment_id, message_id) DO NOTHING";

/// SQLite needs no planner settings for ingest (see the PostgreSQL backend).
const INGEST_PLANNER: &[&str] = &[];

/// Updates the users keyed by the first text of each of `rows`, with `set` naming a row's
/// texts `a.column1`, `a.column2` and so on: one statement whatever the number of rows,
/// from a JSON array bound as `$2`. (`casts` are PostgreSQL's.)
///
/// The rows are a subquery with `LIMIT -1`, which SQLite materialises and then walks,
/// finding each user by key. Without it SQLite may flatten the subquery and walk the
/// environment's users, reading the JSON once per user. A VALUES list would have the same
/// plan but a bound value per cell: thousands for a large group, each of which SQLite
/// resolves by name when it is bound.
async fn update_users<const N: usize>(
    conn: &mut Conn,
    env: &EnvironmentId,
    set: &str,
    _casts: &[&str; N],
    rows: &[[String; N]],
) -> Result<()> {
    sqlx::query(&update_users_sql(set, N))
        .bind(env.as_str())
        .bind(rows_json(
            &rows.iter().map(|row| &row[..]).collect::<Vec<_>>(),
        )?)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The statement of [`update_users`] for rows of `columns` texts.
fn update_users_sql(set: &str, columns: usize) -> String {
    let columns: Vec<String> = (0..columns)
        .map(|n| format!("value ->> {n} AS column{}", n + 1))
        .collect();
    format!(
        "UPDATE users SET {set} FROM (SELECT {} FROM json_each($2) LIMIT -1) AS a \
         WHERE users.environment_id = $1 AND users.id = a.column1",
        columns.join(", ")
    )
}

/// The dialect segment filters compile to.
const DIALECT: crate::segment::Dialect = crate::segment::Dialect::Sqlite;

include!("backend.rs");
include!("lifecycle.rs");
include!("segments.rs");

/// Opens (creating if needed) the SQLite database at `url` and migrates it.
///
/// # Errors
///
/// When the URL is malformed, the file cannot be opened, or a migration fails.
pub async fn open(url: &str) -> anyhow::Result<Backend> {
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("while reading the SQLite URL `{url}`"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));

    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
        .await
        .context("while opening the SQLite database")?;
    sqlx::migrate!("./migrations/sqlite")
        .run(&writer)
        .await
        .context("while migrating the SQLite database")?;
    let checkpointer = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .context("while opening the SQLite database for checkpoints")?;
    tokio::spawn(checkpoint_until_closed(checkpointer, writer.close_event()));
    let reader = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options.read_only(true))
        .await
        .context("while opening the SQLite database for reading")?;

    let suppression_key = std::sync::Arc::new(load_suppression_key(&writer).await?);
    Ok(Backend {
        writer,
        reader,
        suppression_key,
    })
}

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] until the writer closes. A passive
/// checkpoint waits for nobody: it copies what no reader still needs while the writer goes
/// on appending.
async fn checkpoint_until_closed(checkpointer: sqlx::SqlitePool, closed: sqlx::pool::CloseEvent) {
    tokio::pin!(closed);
    loop {
        tokio::select! {
            () = &mut closed => break,
            () = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&checkpointer)
            .await
        {
            tracing::warn!(error = %error, "WAL checkpoint failed; retrying");
        }
    }
    checkpointer.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan of each `update_users` statement ingest runs, on a migrated database.
    async fn plans(set: &str, columns: usize) -> Vec<String> {
        let folder = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", folder.path().join("ebb.db").display());
        let backend = open(&url).await.unwrap();
        let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!(
            "EXPLAIN QUERY PLAN {}",
            update_users_sql(set, columns)
        ))
        .bind("env")
        .bind(r#"[["a", "b", "c"]]"#)
        .fetch_all(&backend.writer)
        .await
        .unwrap();
        backend.close().await;
        rows.into_iter().map(|row| row.3).collect()
    }

    // Walking the users and reading the JSON for each costs a group's update as many
    // reads as the environment has users.
    #[tokio::test]
    async fn user_updates_find_each_user_by_key() {
        let traits = plans("traits = a.column2", 2).await;
        let activity = plans("first_seen = a.column2, last_seen = a.column3", 3).await;

        for plan in [traits, activity] {
            let users: Vec<&String> = plan
                .iter()
                .filter(|step| step.contains(" users "))
                .collect();
            assert!(
                !users.is_empty()
                    && users
                        .iter()
                        .all(|step| step.contains("(environment_id=? AND id=?)")),
                "users are not found by key: {plan:?}"
            );
        }
    }
}
