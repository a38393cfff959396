//! PostgreSQL, for several collectors behind a load balancer and for data past one
//! machine's disk. Selected by a `postgres://` or `postgresql://` database URL.
//!
//! Reads and writes share one pool; PostgreSQL handles concurrent transactions itself.
//! Commits are durable under PostgreSQL's default `synchronous_commit = on`.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::PgPoolOptions;

/// This backend's sqlx database type, for the shared queries.
pub type Db = sqlx::Postgres;

/// Appending to the audit chain reads its head and writes after it; this lock makes
/// concurrent appends from several collectors take turns (plain reads still run).
const AUDIT_LOCK: Option<&str> = Some("LOCK TABLE audit_entries IN SHARE ROW EXCLUSIVE MODE");

/// Write transactions start plainly; PostgreSQL locks rows as they are written.
const BEGIN_WRITE: &str = "BEGIN";

/// Ingest and erasure of one environment exclude each other: every ingest transaction
/// holds this lock shared for each environment it writes, and every transaction that
/// erases users holds it exclusively, taken before it reads which users to erase. Without
/// it, an ingest that resolved a user's key just before the user was deleted could commit
/// rows naming that key after the deletion had looked for them. Erasures run in bounded
/// chunks, so ingest of the environment waits at most one chunk. (`1701` names Ebb's
/// class of advisory locks; `hashtext` of the environment id picks the lock: two
/// environments that share one only take turns.)
const INGEST_LOCK: Option<&str> = Some("SELECT pg_advisory_xact_lock_shared(1701, hashtext($1))");
/// See [`INGEST_LOCK`].
const ERASE_LOCK: Option<&str> = Some("SELECT pg_advisory_xact_lock(1701, hashtext($1))");

/// A retention chunk commits without waiting for its WAL to reach the disk: a crash may
/// undo the last chunks, each whole, and the next sweep deletes those users again. The
/// sweep's audit entry commits durably after its chunks, which flushes theirs too, so an
/// audited sweep is a durable one.
const BACKGROUND_COMMIT: Option<&str> = Some("SET LOCAL synchronous_commit = off");

/// The texts of the JSON array bound as `$2`, as a one-column subquery (`value`).
const JSON_TEXTS: &str = "SELECT jsonb_array_elements_text($2::jsonb) AS value";

/// Appended to the read of a group's known users: ingest locks them up front, in key
/// order, so that two collectors' groups touching the same users wait for each other
/// instead of deadlocking over rows each locked in its own order.
const LOCK_ROWS: &str = "FOR UPDATE";

/// `SELECT {columns}` of the rows of `table` (named `t`) that match `condition` for a text
/// `v.value` of the JSON array bound as `$2`, looked up text by text. The lateral subquery
/// with `OFFSET 0` cannot be flattened into a join, so PostgreSQL loops over the texts and
/// probes the table's key for each, whatever it believes of the table's size. Without
/// statistics (no ANALYZE yet, or autovacuum off) it otherwise picks plans that compare
/// every row of the environment with every text: hundreds of milliseconds for a group of a
/// few thousand ids in a table of ten thousand rows.
fn json_text_probe(columns: &str, table: &str, condition: &str) -> String {
    format!(
        "SELECT {columns} FROM jsonb_array_elements_text($2::jsonb) AS v(value) \
         CROSS JOIN LATERAL (SELECT * FROM {table} AS t WHERE {condition} OFFSET 0) AS t"
    )
}

// Ingest writes the rows of a group with one statement per table, from a JSON array of
// rows bound as `$2` (see the SQLite backend).

/// Message id rows: message id, user key, received at.
const INSERT_MESSAGE_IDS: &str = "INSERT INTO message_ids (environment_id, message_id, \
     user_key, received_at) \
     SELECT $1, value ->> 0, value ->> 1, (value ->> 2)::timestamptz \
     FROM jsonb_array_elements($2::jsonb) \
     ON CONFLICT (environment_id, message_id) DO NOTHING";

/// Event rows: message id, user key, type, event, name, properties, context, time,
/// received at.
const INSERT_EVENTS: &str = "INSERT INTO events (environment_id, message_id, user_key, \
     type, event, name, properties, context, timestamp, received_at) \
     SELECT $1, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
     value -> 5, value -> 6, (value ->> 7)::timestamptz, (value ->> 8)::timestamptz \
     FROM jsonb_array_elements($2::jsonb) \
     ON CONFLICT (environment_id, message_id) DO NOTHING";

/// Response rows: message id, user key, survey id, answers, time, received at.
const INSERT_RESPONSES: &str = "INSERT INTO responses (environment_id, message_id, \
     user_key, survey_id, answers, timestamp, received_at) \
     SELECT $1, value ->> 0, value ->> 1, value ->> 2, value -> 3, \
     (value ->> 4)::timestamptz, (value ->> 5)::timestamptz \
     FROM jsonb_array_elements($2::jsonb) \
     ON CONFLICT (environment_id, message_id) DO NOTHING";

/// PostgreSQL needs no planner settings for ingest: its statements find their rows with
/// [`json_text_probe`]-style lookups, whose plan does not depend on statistics.
const INGEST_PLANNER: &[&str] = &[];

/// Updates the users keyed by the first text of each of `rows`, with `set` naming a row's
/// texts `a.column1`, `a.column2` and so on, each cast as `casts` says: one statement
/// whatever the number of rows, from a JSON array bound as `$2`. Each user is found by a
/// key lookup (locked, as ingest locks the users it writes) and updated by its row
/// address, so the plan is the same whatever PostgreSQL believes of the table's size;
/// a join of the rows to `users` would be planned as a scan of the environment's users
/// where there are no statistics.
async fn update_users<const N: usize>(
    conn: &mut Conn,
    env: &EnvironmentId,
    set: &str,
    casts: &[&str; N],
    rows: &[[String; N]],
) -> Result<()> {
    let columns: Vec<String> = casts
        .iter()
        .enumerate()
        .map(|(n, cast)| format!("(v.value ->> {n}){cast} AS column{}", n + 1))
        .collect();
    let sql = format!(
        "UPDATE users SET {set} FROM (SELECT u.ctid AS target, {} \
         FROM jsonb_array_elements($2::jsonb) AS v(value) \
         CROSS JOIN LATERAL (SELECT ctid FROM users AS t \
           WHERE t.environment_id = $1 AND t.id = v.value ->> 0 OFFSET 0 FOR UPDATE) AS u) AS a \
         WHERE users.ctid = a.target AND users.environment_id = $1",
        columns.join(", ")
    );
    sqlx::query(&sql)
        .bind(env.as_str())
        .bind(rows_json(
            &rows.iter().map(|row| &row[..]).collect::<Vec<_>>(),
        )?)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The dialect segment filters compile to.
const DIALECT: crate::segment::Dialect = crate::segment::Dialect::Postgres;

include!("backend.rs");
include!("lifecycle.rs");
include!("segments.rs");

/// Connects to PostgreSQL at `url` and migrates the database.
///
/// # Errors
///
/// When the server cannot be reached or a migration fails.
pub async fn open(url: &str) -> anyhow::Result<Backend> {
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .context("while connecting to PostgreSQL")?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .context("while migrating the PostgreSQL database")?;

    let suppression_key = std::sync::Arc::new(load_suppression_key(&pool).await?);
    Ok(Backend {
        writer: pool.clone(),
        reader: pool,
        suppression_key,
    })
}
