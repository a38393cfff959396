// Segments and segment-deletion jobs, for both backends. Like backend.rs, this file is
// compiled into each backend module (see the `store` module docs).

use crate::segment::{Bind, Filter, SqlFilter};
use crate::store::{Job, UserSummary};

type DbQuery<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>;

/// Binds a compiled filter's values, in order, after those already bound.
fn bind_filter<'q>(mut query: DbQuery<'q>, filter: &'q SqlFilter) -> DbQuery<'q> {
    for bind in &filter.binds {
        query = match bind {
            Bind::Text(value) => query.bind(value.as_str()),
            Bind::Float(value) => query.bind(*value),
            Bind::Int(value) => query.bind(*value),
            Bind::Time(value) => query.bind(*value),
            Bind::Json(value) => query.bind(Json(value)),
        };
    }
    query
}

const JOB_COLUMNS: &str = "id, environment_id, kind, status, total, done, counts, requested_by, \
                           error, created_at, updated_at";

fn job_from_row(row: &DbRow) -> Result<Job> {
    Ok(Job {
        id: row.try_get("id")?,
        environment_id: EnvironmentId::from_stored(row.try_get("environment_id")?),
        kind: row.try_get("kind")?,
        status: row.try_get("status")?,
        total: u64::try_from(row.try_get::<i64, _>("total")?).unwrap_or_default(),
        done: u64::try_from(row.try_get::<i64, _>("done")?).unwrap_or_default(),
        counts: row.try_get::<Json<Counts>, _>("counts")?.0,
        requested_by: row.try_get("requested_by")?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Backend {
    pub async fn segment_count(
        &self,
        env: &EnvironmentId,
        filter: &Filter,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let compiled = filter.to_sql(DIALECT, 2, now);
        let sql = format!(
            "SELECT COUNT(*) AS users FROM users u WHERE u.environment_id = $1 AND ({})",
            compiled.sql
        );
        let query = bind_filter(sqlx::query(&sql).bind(env.as_str()), &compiled);
        let row = query.fetch_one(&self.reader).await?;
        Ok(u64::try_from(row.try_get::<i64, _>("users")?).unwrap_or_default())
    }

    pub async fn segment_users(
        &self,
        env: &EnvironmentId,
        filter: &Filter,
        now: DateTime<Utc>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<UserSummary>> {
        let compiled = filter.to_sql(DIALECT, 2, now);
        let next = compiled.binds.len() + 2;
        let sql = format!(
            "SELECT u.id, u.user_id, u.traits, u.consent, u.first_seen, u.last_seen, \
               (SELECT MIN(i.value) FROM identities i WHERE i.environment_id = u.environment_id \
                  AND i.user_key = u.id AND i.kind = 'anonymous') AS anonymous_id \
             FROM users u WHERE u.environment_id = $1 AND ({}) \
             ORDER BY u.last_seen DESC, u.id LIMIT ${next} OFFSET ${}",
            compiled.sql,
            next + 1
        );
        let query = bind_filter(sqlx::query(&sql).bind(env.as_str()), &compiled);
        let rows = query
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(UserSummary {
                    user_id: row.try_get("user_id")?,
                    anonymous_id: row.try_get("anonymous_id")?,
                    traits: row.try_get::<Json<Value>, _>("traits")?.0,
                    consent: row
                        .try_get::<Option<Json<Value>>, _>("consent")?
                        .map(|j| j.0),
                    first_seen: row.try_get("first_seen")?,
                    last_seen: row.try_get("last_seen")?,
                })
            })
            .collect()
    }

    pub async fn create_job(
        &self,
        env: &EnvironmentId,
        filter: &Filter,
        total: u64,
        actor: &Actor,
    ) -> Result<Job> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = Utc::now();
        sqlx::query(
            "INSERT INTO jobs (environment_id, id, kind, filter, status, total, done, counts, \
             requested_by, created_at, updated_at) \
             VALUES ($1, $2, 'delete_segment', $3, 'pending', $4, 0, $5, $6, $7, $7)",
        )
        .bind(env.as_str())
        .bind(&id)
        .bind(Json(filter))
        .bind(i64::try_from(total).unwrap_or(i64::MAX))
        .bind(Json(Counts::new()))
        .bind(&actor.0)
        .bind(now)
        .execute(&self.writer)
        .await?;
        self.job(env, &id)
            .await?
            .ok_or_else(|| ApiError::Internal("the job vanished".into()))
    }

    pub async fn job(&self, env: &EnvironmentId, id: &str) -> Result<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE environment_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(env.as_str())
            .bind(id)
            .fetch_optional(&self.writer)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    pub async fn jobs(&self, env: &EnvironmentId) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE environment_id = $1 \
             ORDER BY created_at DESC LIMIT 100"
        );
        let rows = sqlx::query(&sql)
            .bind(env.as_str())
            .fetch_all(&self.writer)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub async fn cancel_job(&self, env: &EnvironmentId, id: &str) -> Result<Option<Job>> {
        sqlx::query(
            "UPDATE jobs SET status = 'cancelling', updated_at = $3 \
             WHERE environment_id = $1 AND id = $2 AND status IN ('pending', 'running')",
        )
        .bind(env.as_str())
        .bind(id)
        .bind(Utc::now())
        .execute(&self.writer)
        .await?;
        self.job(env, id).await
    }

    pub async fn claim_job(
        &self,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<Option<(Job, Filter)>> {
        let now = Utc::now();
        let candidates = sqlx::query(
            "SELECT environment_id, id FROM jobs \
             WHERE status IN ('pending', 'running', 'cancelling') \
               AND (lease_owner IS NULL OR lease_expires_at < $1 OR lease_owner = $2) \
             ORDER BY created_at LIMIT 10",
        )
        .bind(now)
        .bind(owner)
        .fetch_all(&self.writer)
        .await?;
        for candidate in candidates {
            let env: String = candidate.try_get("environment_id")?;
            let id: String = candidate.try_get("id")?;
            let claimed = sqlx::query(
                "UPDATE jobs SET lease_owner = $1, lease_expires_at = $2, updated_at = $3, \
                   status = CASE WHEN status = 'pending' THEN 'running' ELSE status END \
                 WHERE environment_id = $4 AND id = $5 \
                   AND status IN ('pending', 'running', 'cancelling') \
                   AND (lease_owner IS NULL OR lease_expires_at < $3 OR lease_owner = $1)",
            )
            .bind(owner)
            .bind(until)
            .bind(now)
            .bind(&env)
            .bind(&id)
            .execute(&self.writer)
            .await?;
            if claimed.rows_affected() == 1 {
                let row =
                    sqlx::query("SELECT filter FROM jobs WHERE environment_id = $1 AND id = $2")
                        .bind(&env)
                        .bind(&id)
                        .fetch_one(&self.writer)
                        .await?;
                let filter = row.try_get::<Json<Value>, _>("filter")?.0;
                let filter = Filter::parse(&filter)
                    .map_err(|error| ApiError::Internal(format!("stored filter: {error}")))?;
                let env = EnvironmentId::from_stored(env);
                if let Some(job) = self.job(&env, &id).await? {
                    return Ok(Some((job, filter)));
                }
            }
        }
        Ok(None)
    }

    /// Deletes the next chunk of a segment job's users and records the progress in the
    /// same transaction, so that a job resumed elsewhere continues exactly where this one
    /// stopped. Returns how many users went.
    #[allow(clippy::too_many_arguments)]
    pub async fn job_chunk(
        &self,
        job: &Job,
        filter: &Filter,
        owner: &str,
        until: DateTime<Utc>,
        limit: i64,
        suppression_days: u32,
    ) -> Result<u64> {
        let env = &job.environment_id;
        let compiled = filter.to_sql(DIALECT, 2, job.created_at);
        let next = compiled.binds.len() + 2;
        let sql = format!(
            "SELECT u.id FROM users u WHERE u.environment_id = $1 AND ({}) LIMIT ${next}",
            compiled.sql
        );
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        lock_environment(&mut tx, ERASE_LOCK, env).await?;

        let owned = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1 \
             WHERE environment_id = $2 AND id = $3 AND lease_owner = $4",
        )
        .bind(until)
        .bind(env.as_str())
        .bind(&job.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if owned.rows_affected() == 0 {
            return Err(ApiError::Conflict(
                "another collector took over this job".into(),
            ));
        }
        let query = bind_filter(sqlx::query(&sql).bind(env.as_str()), &compiled);
        let rows = query.bind(limit).fetch_all(&mut *tx).await?;
        let due: Vec<String> = rows
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        let expires_at = Utc::now() + chrono::Duration::days(i64::from(suppression_days));
        let (counts, _) =
            erase_users(&mut tx, env, &due, &self.suppression_key, expires_at).await?;
        let current: Json<Counts> =
            sqlx::query_scalar("SELECT counts FROM jobs WHERE environment_id = $1 AND id = $2")
                .bind(env.as_str())
                .bind(&job.id)
                .fetch_one(&mut *tx)
                .await?;
        let mut total = current.0;
        for (table, rows) in counts {
            *total.entry(table).or_default() += rows;
        }
        sqlx::query(
            "UPDATE jobs SET done = done + $1, counts = $2, updated_at = $3 \
             WHERE environment_id = $4 AND id = $5",
        )
        .bind(i64::try_from(due.len()).unwrap_or(i64::MAX))
        .bind(Json(&total))
        .bind(Utc::now())
        .bind(env.as_str())
        .bind(&job.id)
        .execute(&mut *tx)
        .await?;

        tx.commit().await?;
        Ok(due.len() as u64)
    }

    /// Ends a job as `done`, `cancelled` or `failed`: writes its one audit entry with the
    /// totals, and forgets its filter, which may name personal data.
    pub async fn finish_job(
        &self,
        job: &Job,
        owner: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<Job> {
        let env = &job.environment_id;
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;

        let counts: Json<Counts> =
            sqlx::query_scalar("SELECT counts FROM jobs WHERE environment_id = $1 AND id = $2")
                .bind(env.as_str())
                .bind(&job.id)
                .fetch_one(&mut *tx)
                .await?;
        // Only the job's holder ends it, once: a collector that stalled past its lease and
        // then tries to finish a job another one took over (and perhaps finished) must not
        // audit it a second time.
        let finished = sqlx::query(
            "UPDATE jobs SET status = $1, error = $2, filter = $3, lease_owner = NULL, \
               lease_expires_at = NULL, updated_at = $4 \
             WHERE environment_id = $5 AND id = $6 AND lease_owner = $7 \
               AND status IN ('running', 'cancelling')",
        )
        .bind(status)
        .bind(error)
        .bind(Json(serde_json::json!({ "forgotten": true })))
        .bind(Utc::now())
        .bind(env.as_str())
        .bind(&job.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if finished.rows_affected() == 0 {
            return Err(ApiError::Conflict(
                "another collector took over this job".into(),
            ));
        }
        let request = serde_json::json!({ "jobId": job.id, "status": status, "requestedBy": job.requested_by });
        let actor = Actor::system("segment-deletion");
        append_audit(
            &mut tx,
            Some(env),
            &actor,
            "delete_segment",
            request,
            counts_json(&counts.0),
        )
        .await?;

        tx.commit().await?;
        self.job(env, &job.id)
            .await?
            .ok_or_else(|| ApiError::Internal("the job vanished".into()))
    }
}
