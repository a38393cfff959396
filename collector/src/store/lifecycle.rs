// Deleting and auditing, for both backends. Like backend.rs, this file is compiled into
// each backend module (see the `store` module docs), so it holds no inner attributes.

use crate::store::chain::{self, AuditEntry, ChainCheck, GENESIS};
use crate::store::{Actor, Counts, InactivityBucket, Receipt, RetentionPreview};

/// Bounds of the inactivity histogram, in days since last seen.
const HISTOGRAM_DAYS: [u32; 9] = [0, 7, 14, 30, 60, 90, 180, 365, 730];

/// The tables that hold a user's records, children first, with the name each has in
/// receipts and audit counts.
const USER_TABLES: [(&str, &str); 6] = [
    ("message_ids", "messageIds"),
    ("events", "events"),
    ("responses", "responses"),
    ("consent_records", "consentRecords"),
    ("identities", "identities"),
    ("users", "users"),
];

/// The condition under which a user (`u`) is due for deletion by a retention rule, with
/// `$2` the cut-off for everyone and `$3` the one for users who never responded (either
/// NULL when that part of the rule is off).
macro_rules! retention_due {
    () => {
        "(($2 IS NOT NULL AND u.last_seen < $2) OR ($3 IS NOT NULL AND u.last_seen < $3 \
         AND NOT EXISTS (SELECT 1 FROM responses r \
           WHERE r.environment_id = u.environment_id AND r.user_key = u.id)))"
    };
}

impl Backend {
    pub fn suppression_key(&self) -> &[u8] {
        &self.suppression_key
    }

    pub async fn delete_user(
        &self,
        env: &EnvironmentId,
        id: &str,
        actor: &Actor,
        suppression_days: u32,
    ) -> Result<Option<Receipt>> {
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        lock_environment(&mut tx, ERASE_LOCK, env).await?;

        // Naming both kinds lets the primary key find the id; without them, every id of
        // the environment is read.
        let user_key: Option<String> = sqlx::query_scalar(
            "SELECT user_key FROM identities WHERE environment_id = $1 \
             AND kind IN ('user', 'anonymous') AND value = $2 ORDER BY kind DESC LIMIT 1",
        )
        .bind(env.as_str())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user_key) = user_key else {
            return Ok(None);
        };
        let expires_at = Utc::now() + chrono::Duration::days(i64::from(suppression_days));
        let (counts, id_hashes) =
            erase_users(&mut tx, env, &[user_key], &self.suppression_key, expires_at).await?;
        let request = serde_json::json!({ "idHashes": id_hashes });
        let entry = append_audit(
            &mut tx,
            Some(env),
            actor,
            "delete_user",
            request,
            counts_json(&counts),
        )
        .await?;

        tx.commit().await?;
        Ok(Some(receipt(entry, env, id_hashes, counts)))
    }

    pub async fn purge_environment(&self, env: &EnvironmentId, actor: &Actor) -> Result<Receipt> {
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        lock_environment(&mut tx, ERASE_LOCK, env).await?;

        let counts = delete_all_user_rows(&mut tx, env).await?;
        let entry = append_audit(
            &mut tx,
            Some(env),
            actor,
            "purge_environment",
            serde_json::json!({}),
            counts_json(&counts),
        )
        .await?;

        tx.commit().await?;
        Ok(receipt(entry, env, Vec::new(), counts))
    }

    pub async fn delete_environment(&self, env: &EnvironmentId, actor: &Actor) -> Result<Receipt> {
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        lock_environment(&mut tx, ERASE_LOCK, env).await?;

        let mut counts = delete_all_user_rows(&mut tx, env).await?;
        for (table, name) in [
            ("suppressions", "suppressions"),
            ("jobs", "jobs"),
            ("admin_tokens", "adminTokens"),
            ("write_keys", "writeKeys"),
            ("environments", "environments"),
        ] {
            let column = if table == "environments" {
                "id"
            } else {
                "environment_id"
            };
            // Table and column names are constants of this function, never input.
            let sql = format!("DELETE FROM {table} WHERE {column} = $1");
            let done = sqlx::query(&sql)
                .bind(env.as_str())
                .execute(&mut *tx)
                .await?;
            counts.insert(name.to_owned(), done.rows_affected());
        }
        let entry = append_audit(
            &mut tx,
            Some(env),
            actor,
            "delete_environment",
            serde_json::json!({}),
            counts_json(&counts),
        )
        .await?;

        tx.commit().await?;
        Ok(receipt(entry, env, Vec::new(), counts))
    }

    pub async fn retention_preview(
        &self,
        env: &EnvironmentId,
        rule: &RetentionRule,
        now: DateTime<Utc>,
    ) -> Result<RetentionPreview> {
        let (cutoff, silent_cutoff) = rule.cutoffs(now);
        let would_delete: i64 = sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM users u WHERE u.environment_id = $1 AND ",
            retention_due!()
        ))
        .bind(env.as_str())
        .bind(cutoff)
        .bind(silent_cutoff)
        .fetch_one(&self.reader)
        .await?;

        let mut histogram = Vec::new();
        for (index, from_days) in HISTOGRAM_DAYS.iter().enumerate() {
            let to_days = HISTOGRAM_DAYS.get(index + 1).copied();
            let newest = now - chrono::Duration::days(i64::from(*from_days));
            let oldest = to_days.map(|days| now - chrono::Duration::days(i64::from(days)));
            let users: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM users WHERE environment_id = $1 \
                 AND last_seen <= $2 AND ($3 IS NULL OR last_seen > $3)",
            )
            .bind(env.as_str())
            // The newest bucket also takes users "seen" in the future (client clocks).
            .bind(if *from_days == 0 {
                now + chrono::Duration::days(36_500)
            } else {
                newest
            })
            .bind(oldest)
            .fetch_one(&self.reader)
            .await?;
            histogram.push(InactivityBucket {
                from_days: *from_days,
                to_days,
                users: u64::try_from(users).unwrap_or_default(),
            });
        }

        Ok(RetentionPreview {
            would_delete: u64::try_from(would_delete).unwrap_or_default(),
            users: histogram.iter().map(|bucket| bucket.users).sum(),
            histogram,
        })
    }

    pub async fn retention_chunk(
        &self,
        env: &EnvironmentId,
        rule: &RetentionRule,
        now: DateTime<Utc>,
        limit: i64,
        suppression_days: u32,
    ) -> Result<(u64, Counts)> {
        let (cutoff, silent_cutoff) = rule.cutoffs(now);
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        lock_environment(&mut tx, ERASE_LOCK, env).await?;
        if let Some(sql) = BACKGROUND_COMMIT {
            sqlx::query(sql).execute(&mut *tx).await?;
        }

        let due: Vec<String> = sqlx::query_scalar(concat!(
            "SELECT u.id FROM users u WHERE u.environment_id = $1 AND ",
            retention_due!(),
            " LIMIT $4"
        ))
        .bind(env.as_str())
        .bind(cutoff)
        .bind(silent_cutoff)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let expires_at = now + chrono::Duration::days(i64::from(suppression_days));
        let (counts, _) =
            erase_users(&mut tx, env, &due, &self.suppression_key, expires_at).await?;

        tx.commit().await?;
        Ok((due.len() as u64, counts))
    }

    pub async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        expires_at: DateTime<Utc>,
        slot: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let acquired = sqlx::query(
            "INSERT INTO leases (name, owner, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
               expires_at = excluded.expires_at \
             WHERE (leases.expires_at < $4 OR leases.owner = $2) \
               AND ($5 IS NULL OR leases.last_run_at IS NULL OR leases.last_run_at < $5)",
        )
        .bind(name)
        .bind(owner)
        .bind(expires_at)
        .bind(Utc::now())
        .bind(slot)
        .execute(&self.writer)
        .await?;
        Ok(acquired.rows_affected() == 1)
    }

    pub async fn release_lease(
        &self,
        name: &str,
        owner: &str,
        slot: Option<DateTime<Utc>>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE leases SET expires_at = $3, \
               last_run_at = CASE WHEN $4 IS NULL THEN last_run_at ELSE $4 END \
             WHERE name = $1 AND owner = $2",
        )
        .bind(name)
        .bind(owner)
        .bind(DateTime::<Utc>::UNIX_EPOCH)
        .bind(slot)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn lift_suppression(
        &self,
        env: &EnvironmentId,
        id: &str,
        actor: &Actor,
    ) -> Result<bool> {
        let id_hash = suppression_hash(&self.suppression_key, id);
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;

        let lifted =
            sqlx::query("DELETE FROM suppressions WHERE environment_id = $1 AND id_hash = $2")
                .bind(env.as_str())
                .bind(&id_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if lifted > 0 {
            let request = serde_json::json!({ "idHash": id_hash });
            let counts = serde_json::json!({ "suppressions": lifted });
            append_audit(
                &mut tx,
                Some(env),
                actor,
                "lift_suppression",
                request,
                counts,
            )
            .await?;
        }

        tx.commit().await?;
        Ok(lifted > 0)
    }

    pub async fn audit(
        &self,
        env: Option<&EnvironmentId>,
        actor: &Actor,
        action: &str,
        request: Value,
        counts: Value,
    ) -> Result<AuditEntry> {
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        let entry = append_audit(&mut tx, env, actor, action, request, counts).await?;
        tx.commit().await?;
        Ok(entry)
    }

    pub async fn audit_entries(
        &self,
        env: Option<&EnvironmentId>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT seq, environment_id, at, actor, action, request, counts, prev_hash, hash \
             FROM audit_entries \
             WHERE ($1 IS NULL OR environment_id = $1) AND ($2 IS NULL OR seq < $2) \
             ORDER BY seq DESC LIMIT $3",
        )
        .bind(env.map(EnvironmentId::as_str))
        .bind(before)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    pub async fn verify_audit(&self) -> Result<ChainCheck> {
        let rows = sqlx::query(
            "SELECT seq, environment_id, at, actor, action, request, counts, prev_hash, hash \
             FROM audit_entries ORDER BY seq",
        )
        .fetch_all(&self.reader)
        .await?;
        let entries: Vec<AuditEntry> = rows.iter().map(audit_from_row).collect::<Result<_>>()?;
        Ok(chain::verify(&entries))
    }
}

fn receipt(
    entry: AuditEntry,
    env: &EnvironmentId,
    id_hashes: Vec<String>,
    removed: Counts,
) -> Receipt {
    Receipt {
        audit_entry: entry.seq,
        environment_id: env.clone(),
        id_hashes,
        removed,
        at: entry.at,
    }
}

fn counts_json(counts: &Counts) -> Value {
    serde_json::to_value(counts).unwrap_or(Value::Null)
}

fn audit_from_row(row: &DbRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        seq: row.try_get("seq")?,
        environment_id: row.try_get("environment_id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        request: row.try_get::<Json<Value>, _>("request")?.0,
        counts: row.try_get::<Json<Value>, _>("counts")?.0,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Appends an entry to the audit chain inside the caller's transaction, so that the entry
/// exists exactly when what it records does.
async fn append_audit(
    conn: &mut Conn,
    env: Option<&EnvironmentId>,
    actor: &Actor,
    action: &str,
    request: Value,
    counts: Value,
) -> Result<AuditEntry> {
    // Appends from several collectors must not read the same head; see AUDIT_LOCK.
    if let Some(lock) = AUDIT_LOCK {
        sqlx::query(lock).execute(&mut *conn).await?;
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let (seq, prev_hash) = match head {
        Some(row) => (
            row.try_get::<i64, _>("seq")? + 1,
            row.try_get::<String, _>("hash")?,
        ),
        None => (1, GENESIS.to_owned()),
    };
    // Stored times keep microseconds; hash what will be read back.
    let now = Utc::now();
    let at = now - chrono::Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos() % 1_000));
    let environment_id = env.map(|id| id.as_str().to_owned());
    let hash = chain::entry_hash(
        &prev_hash,
        seq,
        environment_id.as_deref(),
        at,
        &actor.0,
        action,
        &request,
        &counts,
    );

    sqlx::query(
        "INSERT INTO audit_entries (seq, environment_id, at, actor, action, request, counts, \
         prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(seq)
    .bind(environment_id.as_deref())
    .bind(at)
    .bind(&actor.0)
    .bind(action)
    .bind(Json(&request))
    .bind(Json(&counts))
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut *conn)
    .await?;

    tracing::info!(audit.seq = seq, audit.action = action, env.id = ?environment_id, "audited");
    Ok(AuditEntry {
        seq,
        environment_id,
        at,
        actor: actor.0.clone(),
        action: action.to_owned(),
        request,
        counts,
        prev_hash,
        hash,
    })
}

/// Deletes users with every record of theirs, and leaves a tombstone for each of their ids
/// until `expires_at`. Returns rows removed per table and the ids' keyed hashes.
///
/// The users go together, a few statements for the lot: their keys travel as one JSON
/// array parameter (see [`JSON_TEXTS`]), so that a chunk of a sweep costs about as many
/// statements as one user does.
async fn erase_users(
    conn: &mut Conn,
    env: &EnvironmentId,
    user_keys: &[String],
    suppression_key: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(Counts, Vec<String>)> {
    let mut counts: Counts = Counts::new();
    if user_keys.is_empty() {
        return Ok((counts, Vec::new()));
    }
    let keys = Value::from(user_keys.to_vec()).to_string();

    let ids: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT i.value FROM identities i \
         WHERE i.environment_id = $1 AND i.user_key IN ({JSON_TEXTS})"
    ))
    .bind(env.as_str())
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await?;
    let mut id_hashes: Vec<String> = ids
        .iter()
        .map(|id| suppression_hash(suppression_key, id))
        .collect();
    // The same text may be a user id and an anonymous id; one tombstone covers both.
    id_hashes.sort();
    id_hashes.dedup();
    let hashes = Value::from(id_hashes.clone()).to_string();
    // `WHERE true` tells SQLite's parser that `ON CONFLICT` belongs to the insert.
    sqlx::query(&format!(
        "INSERT INTO suppressions (environment_id, id_hash, created_at, expires_at) \
         SELECT $1, hashes.value, $3, $4 FROM ({JSON_TEXTS}) AS hashes WHERE true \
         ON CONFLICT (environment_id, id_hash) DO UPDATE SET expires_at = excluded.expires_at"
    ))
    .bind(env.as_str())
    .bind(&hashes)
    .bind(Utc::now())
    .bind(expires_at)
    .execute(&mut *conn)
    .await?;

    for (table, name) in USER_TABLES {
        let column = if table == "users" { "id" } else { "user_key" };
        // Table and column names are constants, never input.
        let sql =
            format!("DELETE FROM {table} WHERE environment_id = $1 AND {column} IN ({JSON_TEXTS})");
        let done = sqlx::query(&sql)
            .bind(env.as_str())
            .bind(&keys)
            .execute(&mut *conn)
            .await?;
        counts.insert(name.to_owned(), done.rows_affected());
    }
    Ok((counts, id_hashes))
}

/// Deletes every user row of an environment, children first.
async fn delete_all_user_rows(conn: &mut Conn, env: &EnvironmentId) -> Result<Counts> {
    let mut counts = Counts::new();
    for (table, name) in USER_TABLES {
        // Table names are constants, never input.
        let sql = format!("DELETE FROM {table} WHERE environment_id = $1");
        let done = sqlx::query(&sql)
            .bind(env.as_str())
            .execute(&mut *conn)
            .await?;
        counts.insert(name.to_owned(), done.rows_affected());
    }
    Ok(counts)
}
