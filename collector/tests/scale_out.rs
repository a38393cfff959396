//! Several collectors on one PostgreSQL database: messages sent to both are stored once,
//! a new user arriving at both at once becomes one user, a deletion through one is
//! suppressed on the other at once, and a segment deletion outlives the collector that
//! started it; and the schema, read from the catalog, can be sharded by environment.
//! These tests always use PostgreSQL, so the test command runs them once, in
//! its PostgreSQL pass (`--include-ignored`).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Collector, TestDb, ADMIN_TOKEN, WRITE_KEY};
use serde_json::{json, Value};

fn pair(db: &TestDb, extra: &[(&str, &str)]) -> (Collector, Collector, Vec<tempfile::TempDir>) {
    let dirs = vec![tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut env = vec![
        ("EBB_WRITE_KEY", WRITE_KEY),
        ("EBB_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    env.extend_from_slice(extra);
    let first = Collector::start_in(dirs[0].path(), db, &env);
    let second = Collector::start_in(dirs[1].path(), db, &env);
    (first, second, dirs)
}

#[tokio::test]
#[ignore = "PostgreSQL only: scripts/test.sh runs it in its PostgreSQL pass"]
async fn messages_sent_to_both_collectors_are_stored_once_and_new_users_are_not_split() {
    let db = TestDb::postgres();
    let (first, second, _dirs) = pair(&db, &[]);

    let sends = (0..40).map(|round| {
        let (first, second) = (&first, &second);
        async move {
            // The same message to both, and a fresh message each, about a user new to both.
            let user = format!("racer-{}", round / 4);
            let same = json!({"batch": [{"type": "track", "userId": user, "event": "Same",
                                         "messageId": format!("same-{round}")}]});
            let own = |side: &str| {
                json!({"batch": [{"type": "track", "userId": user,
                "anonymousId": format!("anon-{}", round / 4), "event": side,
                "messageId": format!("{side}-{round}")}]})
            };
            let (mine, theirs) = (own("first"), own("second"));
            tokio::join!(
                first.post("/v1/batch", &same),
                second.post("/v1/batch", &same),
                first.post("/v1/batch", &mine),
                second.post("/v1/batch", &theirs),
            )
        }
    });
    let answers = futures_util::future::join_all(sends).await;

    for (a, b, c, d) in &answers {
        assert_eq!([a.0, b.0, c.0, d.0], [200; 4], "{a:?} {b:?} {c:?} {d:?}");
    }
    for racer in 0..10 {
        let (status, user) = first.user(&format!("racer-{racer}")).await;
        assert_eq!(status, 200);
        let events = user["events"].as_array().unwrap();
        assert_eq!(
            events.len(),
            12,
            "4 rounds × (1 shared + 2 own) for racer-{racer}"
        );
        assert_eq!(user["anonymousIds"], json!([format!("anon-{racer}")]));
    }
    let (_, everyone) = second
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/preview",
            Some(json!({})),
        )
        .await;
    assert_eq!(everyone["count"], 10, "one user per user id, none split");
}

#[tokio::test]
#[ignore = "PostgreSQL only: scripts/test.sh runs it in its PostgreSQL pass"]
async fn a_user_deleted_through_one_collector_is_suppressed_on_the_other_at_once() {
    let db = TestDb::postgres();
    let (first, second, _dirs) = pair(&db, &[]);
    first
        .post(
            "/v1/identify",
            &json!({"userId": "gone-1", "traits": {"a": 1}}),
        )
        .await;

    let (deleted, _) = first.admin("DELETE", "/admin/v1/users/gone-1", None).await;
    let (status, _) = second
        .post("/v1/track", &json!({"userId": "gone-1", "event": "Late"}))
        .await;
    let metrics = second
        .http
        .get(second.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert_eq!((deleted, status), (200, 200));
    assert_eq!(second.user("gone-1").await.0, 404);
    assert!(
        metrics.contains("ebb_messages_suppressed_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
#[ignore = "PostgreSQL only: scripts/test.sh runs it in its PostgreSQL pass"]
async fn a_segment_deletion_survives_the_collector_that_ran_it_being_killed() {
    const USERS: u64 = 6000;
    let db = TestDb::postgres();
    let temp = tempfile::tempdir().unwrap();
    let env = [
        ("EBB_WRITE_KEY", WRITE_KEY),
        ("EBB_ADMIN_TOKEN", ADMIN_TOKEN),
        ("EBB_JOB_LEASE", "2"),
    ];
    let mut first = Collector::start_in(temp.path(), &db, &env);
    let batch: Vec<Value> = (0..USERS)
        .map(|n| json!({"type": "identify", "userId": format!("bulk-{n}"), "traits": {"plan": "old"}}))
        .collect();
    for chunk in batch.chunks(500) {
        assert_eq!(
            first.post("/v1/batch", &json!({"batch": chunk})).await.0,
            200
        );
    }

    let (_, job) = first
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/delete",
            Some(json!({"filter": {"trait": "plan", "equals": "old"}})),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let path = format!("/admin/v1/environments/default/jobs/{id}");
    // Killed as soon as the job has committed its first chunk, so that it is cut off in
    // the middle however fast this machine deletes.
    let started = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, job) = first.admin("GET", &path, None).await;
        if job["done"].as_u64().unwrap_or(0) > 0 || Instant::now() > started {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.kill();
    let other_dir = tempfile::tempdir().unwrap();
    let second = Collector::start_in(other_dir.path(), &db, &env);
    let (_, interrupted) = second.admin("GET", &path, None).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let (_, job) = second.admin("GET", &path, None).await;
        if job["status"] == "done" || Instant::now() > deadline {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (_, left) = second
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/preview",
            Some(json!({})),
        )
        .await;
    let (_, entries) = second.admin("GET", "/admin/v1/audit", None).await;

    assert!(
        interrupted["done"].as_u64().unwrap() < USERS,
        "the kill came too late: {interrupted}"
    );
    assert_eq!(finished["status"], "done", "{finished}");
    assert_eq!(
        (
            finished["done"].clone(),
            finished["counts"]["users"].clone()
        ),
        (json!(USERS), json!(USERS))
    );
    assert_eq!(left["count"], 0);
    let audits = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "delete_segment")
        .count();
    assert_eq!(audits, 1);
}

/// The tables Citus would replicate to every node rather than shard by environment:
/// instance-wide settings and credentials, leases, and the audit chain, which spans
/// environments and names users only by keyed hashes. None of them may hold a user's
/// id, which [`citus_problems`] checks by column name, so that user data cannot slip into
/// one unnoticed.
const REFERENCE_TABLES: [&str; 6] = [
    "environments",
    "write_keys",
    "admin_tokens",
    "instance_settings",
    "audit_entries",
    "leases",
];

/// Columns that name a user: none may be in a reference table.
const USER_ID_COLUMNS: [&str; 3] = ["user_key", "user_id", "anonymous_id"];

/// What keeps the schema in the database from being sharded by environment, read from
/// the catalog: every user-data table needs a key; each of its keys and unique indexes
/// must start with `environment_id`; a foreign key between user-data tables must start
/// with `environment_id` on both sides; no reference table may point into user data or
/// hold a column naming a user. Also returns how many keys of user data were checked.
async fn citus_problems(connection: &mut sqlx::PgConnection) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let is_reference = |table: &str| REFERENCE_TABLES.contains(&table);
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
           AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut *connection)
    .await
    .unwrap();
    // Each primary key or unique index with its first column.
    let keys: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text, a.attname::text \
         FROM pg_index x \
         JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0] \
         WHERE n.nspname = 'public' AND (x.indisprimary OR x.indisunique) \
           AND t.relname <> '_sqlx_migrations'",
    )
    .fetch_all(&mut *connection)
    .await
    .unwrap();
    // Each foreign key: its table and first column, and those it references.
    let foreign_keys: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT c.conname::text, t.relname::text, a.attname::text, \
                r.relname::text, ra.attname::text \
         FROM pg_constraint c \
         JOIN pg_class t ON t.oid = c.conrelid \
         JOIN pg_class r ON r.oid = c.confrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] \
         JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1] \
         WHERE c.contype = 'f' AND n.nspname = 'public'",
    )
    .fetch_all(&mut *connection)
    .await
    .unwrap();
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public'",
    )
    .fetch_all(&mut *connection)
    .await
    .unwrap();

    for reference in REFERENCE_TABLES {
        if !tables.iter().any(|table| table == reference) {
            problems.push(format!("the reference table {reference} does not exist"));
        }
    }
    for table in tables.iter().filter(|table| !is_reference(table)) {
        if !keys.iter().any(|(keyed, _, _)| keyed == table) {
            problems.push(format!("{table} has no primary key or unique index"));
        }
    }
    let user_keys: Vec<_> = keys
        .iter()
        .filter(|(table, _, _)| !is_reference(table))
        .collect();
    for (table, index, first) in &user_keys {
        if first != "environment_id" {
            problems.push(format!(
                "{table}: {index} does not start with environment_id"
            ));
        }
    }
    for (name, table, first, referenced, referenced_first) in &foreign_keys {
        match (is_reference(table), is_reference(referenced)) {
            // Shards may point at a table every node holds; not the other way round.
            (false, true) | (true, true) => {}
            (true, false) => problems.push(format!(
                "{table}: {name} points from a reference table into user data ({referenced})"
            )),
            (false, false) => {
                if first != "environment_id" || referenced_first != "environment_id" {
                    problems.push(format!(
                        "{table}: {name} ({first}, …) → {referenced} ({referenced_first}, …) \
                         does not start with environment_id on both sides"
                    ));
                }
            }
        }
    }
    for (table, column) in &columns {
        if is_reference(table) && USER_ID_COLUMNS.contains(&column.as_str()) {
            problems.push(format!("the reference table {table} has a column {column}"));
        }
    }
    (problems, user_keys.len())
}

#[tokio::test]
#[ignore = "PostgreSQL only: scripts/test.sh runs it in its PostgreSQL pass"]
async fn the_schema_can_be_sharded_by_environment() {
    use sqlx::Connection as _;
    let db = TestDb::postgres();
    let collector = Collector::start_in(tempfile::tempdir().unwrap().path(), &db, &[]);
    let mut connection = sqlx::PgConnection::connect(&collector.database_url)
        .await
        .unwrap();

    let (problems, user_keys) = citus_problems(&mut connection).await;

    assert!(
        user_keys >= 8,
        "the catalog names too few keys: {user_keys}"
    );
    assert!(
        problems.is_empty(),
        "not shardable by environment: {problems:#?}"
    );
}

#[tokio::test]
#[ignore = "PostgreSQL only: scripts/test.sh runs it in its PostgreSQL pass"]
async fn the_shardability_check_catches_keyless_tables_foreign_keys_and_user_ids_in_reference_tables(
) {
    use sqlx::Connection as _;
    let db = TestDb::postgres();
    let collector = Collector::start_in(tempfile::tempdir().unwrap().path(), &db, &[]);
    let mut connection = sqlx::PgConnection::connect(&collector.database_url)
        .await
        .unwrap();
    let breaking = [
        "CREATE TABLE notes (environment_id TEXT NOT NULL, user_key TEXT NOT NULL, body TEXT)",
        "CREATE TABLE visits (environment_id TEXT NOT NULL, id TEXT NOT NULL, \
           user_key TEXT NOT NULL, PRIMARY KEY (environment_id, id), \
           CONSTRAINT visits_user FOREIGN KEY (user_key, environment_id) \
             REFERENCES users (id, environment_id))",
        "ALTER TABLE leases ADD COLUMN environment_id TEXT, ADD COLUMN user_key TEXT, \
           ADD CONSTRAINT leases_user FOREIGN KEY (environment_id, user_key) \
             REFERENCES users (environment_id, id)",
    ];
    for statement in breaking {
        sqlx::query(statement)
            .execute(&mut connection)
            .await
            .unwrap();
    }

    let (problems, _) = citus_problems(&mut connection).await;

    let found = |part: &str| problems.iter().any(|problem| problem.contains(part));
    assert!(found("notes has no primary key"), "{problems:#?}");
    assert!(found("visits: visits_user"), "{problems:#?}");
    assert!(
        found("leases: leases_user points from a reference table"),
        "{problems:#?}"
    );
    assert!(
        found("reference table leases has a column user_key"),
        "{problems:#?}"
    );
    assert_eq!(problems.len(), 4, "nothing else: {problems:#?}");
}

// A collector looks its group's message ids up before storing the messages and writes
// the ids at the end. Another collector's transaction holding one of those ids, not yet
// committed when this one looked, must still make the message a duplicate here.
#[tokio::test]
#[ignore = "PostgreSQL only: scripts/test.sh runs it in its PostgreSQL pass"]
async fn a_message_id_stored_elsewhere_while_a_group_is_written_is_not_stored_twice() {
    use sqlx::Connection as _;

    let db = TestDb::postgres();
    let url = db.url().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start_in(
        dir.path(),
        &db,
        &[
            ("EBB_WRITE_KEY", WRITE_KEY),
            ("EBB_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    );
    let (status, _) = collector
        .post("/v1/track", &json!({"userId": "ada", "event": "Before"}))
        .await;
    assert_eq!(status, 200);

    // The other collector: the message id written, the transaction still open.
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut held = other.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO message_ids (environment_id, message_id, user_key, received_at) \
         SELECT environment_id, 'raced', user_key, now() FROM identities \
         WHERE kind = 'user' AND value = 'ada'",
    )
    .execute(&mut *held)
    .await
    .unwrap();
    let batch = json!({"batch": [
        {"type": "track", "userId": "ada", "event": "Raced", "messageId": "raced"},
        {"type": "track", "userId": "ada", "event": "Beside", "messageId": "beside"},
    ]});
    let send = tokio::spawn({
        let url = collector.url("/v1/batch");
        async move {
            reqwest::Client::new()
                .post(url)
                .basic_auth(WRITE_KEY, Some(""))
                .json(&batch)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO message_ids%'";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut probe = sqlx::PgConnection::connect(&url).await.unwrap();
        let blocked: i64 = sqlx::query_scalar(waiting)
            .fetch_one(&mut probe)
            .await
            .unwrap();
        if blocked > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the collector never reached the held id"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    held.commit().await.unwrap();
    let status = send.await.unwrap();

    let (_, user) = collector.user("ada").await;
    let mut events: Vec<&str> = user["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["event"].as_str().unwrap())
        .collect();
    events.sort_unstable();
    assert_eq!(status, 200);
    assert_eq!(
        events,
        ["Before", "Beside"],
        "the raced message is the other's"
    );
}
